//! Builds `guests/test-programs` for wasm32-wasip1 (a core module) and wasm32-wasip2 (a component) with a nested
//! cargo, into this crate's OUT_DIR, and records the artifact paths for `src/lib.rs`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = manifest_dir.join("../../guests/test-programs");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("target");
    println!("cargo:rerun-if-changed={}", guests.join("src").display());
    println!("cargo:rerun-if-changed={}", guests.join("Cargo.toml").display());

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut paths = String::new();
    for (target, constant) in [("wasm32-wasip1", "PROBE_MODULE"), ("wasm32-wasip2", "PROBE_COMPONENT")] {
        let status = Command::new(&cargo)
            .arg("build")
            .arg("--release")
            .arg("--quiet")
            .arg("--target")
            .arg(target)
            .arg("--manifest-path")
            .arg(guests.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            // The host build's flags and wrappers are not meant for the guest.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("cannot run cargo to build the test guests");
        assert!(
            status.success(),
            "building the test guests for {target} failed; is the target installed? (rustup target add {target})"
        );
        let wasm = target_dir.join(target).join("release/probe.wasm");
        paths.push_str(&format!(
            "/// `probe` built for {target}.\npub const {constant}: &str = {:?};\n",
            wasm.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("paths.rs"), paths).expect("cannot write paths.rs");
}
