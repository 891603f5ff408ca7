//! Signatures for wasmagent: "only the tools I approved run" and "I can prove afterwards what ran".
//!
//! This crate owns two things. [`keys`] and [`module`]: Ed25519 key pairs, and module and component signatures in
//! the WebAssembly module-signature format of the `wasmsign2` crate (a custom section, so a signed module is still
//! valid WebAssembly). [`record`]: the audit log, one signed record per run, canonicalised with RFC 8785 and chained
//! by the hash of the previous record, with a verifier that names the first record that was edited, removed,
//! reordered, forged or torn.
//!
//! It decides nothing about *whether* a signature is required (that is the manifest's `require_signature`) and runs
//! nothing; the `wasmagent` facade calls [`module::verify`] before any code is compiled.

pub mod keys;
pub mod module;
pub mod record;

/// Why a key, a signature or a record was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// A key file or key text could not be used.
    #[error("invalid key: {0}")]
    Key(String),
    /// The module carries no signature section.
    #[error("the module is not signed")]
    Unsigned,
    /// The module is signed, but by none of the trusted keys, or it changed after signing.
    #[error("no trusted key's signature verifies for this module (signed by an unknown key, or changed after signing)")]
    Untrusted,
    /// The bytes are not a WebAssembly module or component, or the signature section is malformed.
    #[error("cannot read the module's signature: {0}")]
    Malformed(String),
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's message.
        message: String,
    },
}
