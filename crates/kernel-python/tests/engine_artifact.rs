//! The committed engine component is the one its sources build: its provenance records the digest of `guests/python`,
//! and the embedded bytes are the recorded artifact. Rebuild with `cargo xtask guests` when this fails.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../../../xtask/src/source_digest.rs"]
mod source_digest;

use sha2::{Digest, Sha256};
use std::path::Path;

fn provenance() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/dist/python.provenance.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn the_committed_engine_was_built_from_the_current_sources() {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/python");
    let digest = source_digest::source_digest(&sources).unwrap();
    assert_eq!(
        provenance()["source_digest"],
        digest,
        "guests/python changed since guests/dist/python.wasm was built: run `cargo xtask guests` and commit the result"
    );
}

#[test]
fn the_embedded_engine_is_the_recorded_artifact() {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(wasmagent_kernel_python::ENGINE_WASM)));
    assert_eq!(provenance()["artifact_digest"], digest);
    // The build script's digest is the compiled-code cache key: a stale one would load another engine's code.
    assert_eq!(wasmagent_kernel_python::ENGINE_WASM_DIGEST, digest);
}
