//! Hashes the embedded JavaScript engine at build time: its SHA-256 is the key of its compiled code in the cache, and
//! hashing it in every process before the first run cost more than the rest of a CLI run.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let engine = manifest_dir.join("../../guests/dist/js.wasm");
    println!("cargo:rerun-if-changed={}", engine.display());
    let bytes = std::fs::read(&engine).unwrap_or_else(|e| panic!("cannot read {}: {e}", engine.display()));
    println!("cargo:rustc-env=ENGINE_WASM_DIGEST=sha256:{}", hex::encode(Sha256::digest(&bytes)));
}
