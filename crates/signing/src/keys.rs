//! Ed25519 key pairs: generation, files, the `ed25519:<hex>` text form used in manifests, and key ids.

use crate::SigningError;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A public key, as trusted in manifests and used to verify modules and records.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: wasmsign2::PublicKey,
}

/// A secret key, used to sign modules and records.
#[derive(Clone)]
pub struct SecretKey {
    inner: wasmsign2::SecretKey,
    public: PublicKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(for {})", self.public.key_id())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_text())
    }
}

impl PublicKey {
    /// Parses `ed25519:<64 hex digits>`, or any public-key encoding wasmsign2 reads (raw, PEM, DER, OpenSSH).
    pub fn parse(text_or_bytes: &[u8]) -> Result<Self, SigningError> {
        let text = std::str::from_utf8(text_or_bytes).map(str::trim).unwrap_or("");
        if let Some(hex_part) = text.strip_prefix("ed25519:") {
            let bytes = hex::decode(hex_part).map_err(|_| SigningError::Key("the key is not hexadecimal".into()))?;
            let pk = ed25519_compact::PublicKey::from_slice(&bytes)
                .map_err(|e| SigningError::Key(format!("not an Ed25519 public key: {e}")))?;
            return Ok(PublicKey { inner: wasmsign2::PublicKey { pk, key_id: None }.attach_default_key_id() });
        }
        let inner = wasmsign2::PublicKey::from_any(text_or_bytes)
            .map_err(|e| SigningError::Key(format!("not a public key: {e}")))?;
        Ok(PublicKey { inner: wasmsign2::PublicKey { pk: inner.pk, key_id: None }.attach_default_key_id() })
    }

    /// Reads a public key file (any form [`PublicKey::parse`] accepts).
    pub fn from_file(path: &Path) -> Result<Self, SigningError> {
        Self::parse(&read(path)?)
    }

    /// `ed25519:<hex>`, the form manifests list in `trusted_keys`.
    pub fn to_text(&self) -> String {
        format!("ed25519:{}", hex::encode(self.inner.pk.as_ref()))
    }

    /// The key id stored with signatures: hex of wasmsign2's default id (HMAC-SHA256("key_id", key), 12 bytes).
    pub fn key_id(&self) -> String {
        self.inner.key_id().map(hex::encode).unwrap_or_default()
    }

    pub(crate) fn wasmsign(&self) -> &wasmsign2::PublicKey {
        &self.inner
    }

    pub(crate) fn ed25519(&self) -> &ed25519_compact::PublicKey {
        &self.inner.pk
    }
}

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let pair = wasmsign2::KeyPair::generate();
        let public = PublicKey { inner: pair.pk.attach_default_key_id() };
        SecretKey { inner: pair.sk, public }
    }

    /// Reads a secret key file written by [`SecretKey::write`] (or any form wasmsign2 reads).
    pub fn from_file(path: &Path) -> Result<Self, SigningError> {
        let bytes = read(path)?;
        let inner = wasmsign2::SecretKey::from_any(&bytes)
            .map_err(|e| SigningError::Key(format!("{}: not a secret key: {e}", path.display())))?;
        let pk = inner.sk.public_key();
        let public = PublicKey { inner: wasmsign2::PublicKey { pk, key_id: None }.attach_default_key_id() };
        Ok(SecretKey { inner, public })
    }

    /// Writes the key to `path` (mode 0600, refusing to overwrite) and its public key, as `ed25519:<hex>`, to
    /// `path.pub`.
    pub fn write(&self, path: &Path) -> Result<(), SigningError> {
        let io =
            |p: &Path, e: std::io::Error| SigningError::Io { path: p.display().to_string(), message: e.to_string() };
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| io(path, e))?;
        file.write_all(&self.inner.to_bytes()).map_err(|e| io(path, e))?;
        let public_path = public_path(path);
        let mut public = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&public_path)
            .map_err(|e| io(&public_path, e))?;
        writeln!(public, "{}", self.public.to_text()).map_err(|e| io(&public_path, e))?;
        Ok(())
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub(crate) fn wasmsign(&self) -> &wasmsign2::SecretKey {
        &self.inner
    }

    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.inner.sk.sign(message, None).to_vec()
    }
}

/// `KEY.pub` for `KEY`.
pub fn public_path(secret: &Path) -> std::path::PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    name.into()
}

fn read(path: &Path) -> Result<Vec<u8>, SigningError> {
    std::fs::read(path).map_err(|e| SigningError::Io { path: path.display().to_string(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_files_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer");
        let key = SecretKey::generate();
        key.write(&path).unwrap();
        assert!(key.write(&path).is_err(), "never overwrites a key");
        let loaded = SecretKey::from_file(&path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        let public = PublicKey::from_file(&public_path(&path)).unwrap();
        assert_eq!(&public, key.public_key());
        assert_eq!(PublicKey::parse(public.to_text().as_bytes()).unwrap().key_id(), key.public_key().key_id());
        assert_eq!(key.public_key().key_id().len(), 24);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(PublicKey::parse(b"ed25519:zz").is_err());
        assert!(PublicKey::parse(b"ed25519:abcd").is_err());
        assert!(PublicKey::parse(b"hello").is_err());
    }
}
