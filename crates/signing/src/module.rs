//! Module and component signatures in wasmsign2's format: the signature lives in a custom section at the start of
//! the module and covers every byte after it, so one changed byte anywhere invalidates it.

use crate::SigningError;
use crate::keys::{PublicKey, SecretKey};
use std::io::Cursor;
use wasmsign2::WSError;

/// Signs a module or component with `key`, replacing any earlier signature. The result is still valid WebAssembly.
pub fn sign(wasm: &[u8], key: &SecretKey) -> Result<Vec<u8>, SigningError> {
    let module = wasmsign2::Module::deserialize(&mut Cursor::new(wasm)).map_err(malformed)?;
    let key_id = key.public_key().wasmsign().key_id().cloned();
    let signed = key.wasmsign().sign(module, key_id.as_ref()).map_err(malformed)?;
    let mut out = Vec::with_capacity(wasm.len() + 128);
    signed.serialize(&mut out).map_err(malformed)?;
    Ok(out)
}

/// Checks that one of `trusted` signed exactly these bytes, and returns that key's id.
pub fn verify(wasm: &[u8], trusted: &[PublicKey]) -> Result<String, SigningError> {
    if !is_signed(wasm)? {
        return Err(SigningError::Unsigned);
    }
    let mut set = wasmsign2::PublicKeySet::empty();
    for key in trusted {
        // A duplicate key is harmless: the set already trusts it.
        let _ = set.insert(key.wasmsign().clone());
    }
    match set.verify(&mut Cursor::new(wasm), None) {
        Ok(keys) => keys.iter().filter_map(|k| k.key_id()).map(hex::encode).min().ok_or(SigningError::Untrusted),
        Err(WSError::NoSignatures) => Err(SigningError::Unsigned),
        Err(WSError::VerificationFailed | WSError::VerificationFailedForPredicates | WSError::UnknownPublicKey) => {
            Err(SigningError::Untrusted)
        }
        Err(other) => Err(malformed(other)),
    }
}

/// Whether the module carries a signature section (whoever made it, valid or not).
pub fn is_signed(wasm: &[u8]) -> Result<bool, SigningError> {
    let module = wasmsign2::Module::deserialize(&mut Cursor::new(wasm)).map_err(malformed)?;
    Ok(module.sections.first().is_some_and(|s| s.is_signature_header()))
}

fn malformed(error: WSError) -> SigningError {
    SigningError::Malformed(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // (module (func (export "_start"))) and an empty component.
    const MODULE: &[u8] =
        b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x07\x0a\x01\x06_start\0\0\x0a\x04\x01\x02\0\x0b";
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn signed_modules_and_components_verify_with_the_signing_key_only() {
        let key = SecretKey::generate();
        let other = SecretKey::generate();
        for wasm in [MODULE, COMPONENT] {
            let signed = sign(wasm, &key).unwrap();
            assert_eq!(verify(&signed, &[key.public_key().clone()]).unwrap(), key.public_key().key_id());
            assert!(matches!(verify(&signed, &[other.public_key().clone()]), Err(SigningError::Untrusted)));
            let both = [other.public_key().clone(), key.public_key().clone()];
            assert_eq!(verify(&signed, &both).unwrap(), key.public_key().key_id());
            assert!(matches!(verify(wasm, &[key.public_key().clone()]), Err(SigningError::Unsigned)));
        }
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let key = SecretKey::generate();
        let signed = sign(MODULE, &key).unwrap();
        for i in 0..signed.len() {
            let mut tampered = signed.clone();
            tampered[i] ^= 0x01;
            assert!(verify(&tampered, &[key.public_key().clone()]).is_err(), "byte {i} changed and still verified");
        }
    }

    #[test]
    fn a_stripped_signature_section_reads_as_unsigned() {
        let key = SecretKey::generate();
        let signed = sign(MODULE, &key).unwrap();
        // Re-sign with nothing: rebuild the module from its sections minus the signature header.
        let module = wasmsign2::Module::deserialize(&mut Cursor::new(&signed)).unwrap();
        let stripped_sections: Vec<_> = module.sections.into_iter().filter(|s| !s.is_signature_header()).collect();
        let stripped = wasmsign2::Module { header: module.header, sections: stripped_sections };
        let mut bytes = Vec::new();
        stripped.serialize(&mut bytes).unwrap();
        assert_eq!(bytes, MODULE);
        assert!(matches!(verify(&bytes, &[key.public_key().clone()]), Err(SigningError::Unsigned)));
    }
}
