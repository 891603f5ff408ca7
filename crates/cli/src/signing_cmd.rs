use anyhow::{Context, bail};
use std::path::Path;
use wasmagent::signing::keys::{PublicKey, SecretKey, public_path};
use wasmagent::signing::{SigningError, module, record};

/// A public key given on the command line: `ed25519:<hex>` or a key file.
pub(crate) fn public_key(text_or_path: &str) -> anyhow::Result<PublicKey> {
    if text_or_path.starts_with("ed25519:") {
        Ok(PublicKey::parse(text_or_path.as_bytes())?)
    } else {
        Ok(PublicKey::from_file(Path::new(text_or_path))?)
    }
}

/// `wasmagent keygen`.
pub(crate) fn keygen(out: &Path) -> anyhow::Result<u8> {
    let key = SecretKey::generate();
    key.write(out)?;
    println!("{}", key.public_key().to_text());
    eprintln!(
        "wasmagent: wrote {} (secret) and {} (public); key id {}",
        out.display(),
        public_path(out).display(),
        key.public_key().key_id()
    );
    Ok(0)
}

/// `wasmagent sign`.
pub(crate) fn sign(module_path: &Path, key: &Path, out: Option<&Path>) -> anyhow::Result<u8> {
    let key = SecretKey::from_file(key)?;
    let wasm = std::fs::read(module_path).with_context(|| format!("cannot read {}", module_path.display()))?;
    let signed = module::sign(&wasm, &key)?;
    let out = out.unwrap_or(module_path);
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp = tempfile_in(dir)?;
    std::io::Write::write_all(&mut temp, &signed).context("cannot write the signed module")?;
    temp.persist(out).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wasmagent: signed {} with key {}", out.display(), key.public_key().key_id());
    Ok(0)
}

fn tempfile_in(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot create a file in {}", dir.display()))
}

/// `wasmagent verify`.
pub(crate) fn verify(module_path: &Path, pubkey: &str) -> anyhow::Result<u8> {
    let key = public_key(pubkey)?;
    let wasm = std::fs::read(module_path).with_context(|| format!("cannot read {}", module_path.display()))?;
    match module::verify(&wasm, &[key]) {
        Ok(key_id) => {
            println!("verified: {} is signed by key {key_id}", module_path.display());
            Ok(0)
        }
        Err(error @ (SigningError::Unsigned | SigningError::Untrusted)) => {
            println!("not verified: {}: {error}", module_path.display());
            Ok(1)
        }
        Err(other) => bail!("{}: {other}", module_path.display()),
    }
}

/// `wasmagent audit verify`.
pub(crate) fn audit_verify(file: &Path, pubkey: &str) -> anyhow::Result<u8> {
    let key = public_key(pubkey)?;
    match record::verify_log(file, &key) {
        Ok(verified) => {
            println!(
                "verified: {} records in {}; last record hash {}",
                verified.records,
                file.display(),
                verified.last_record_hash
            );
            Ok(0)
        }
        Err(error) if error.record == 0 => bail!("{}", error.reason),
        Err(error) => {
            println!("not verified: {}: {error}", file.display());
            Ok(1)
        }
    }
}
