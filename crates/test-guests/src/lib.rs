//! Paths of the guest programs the integration tests run, built from `guests/test-programs` by this crate's build
//! script. Test-only: nothing in the product depends on it.

include!(concat!(env!("OUT_DIR"), "/paths.rs"));

/// Reads a built guest.
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read test guest {path}: {e}"))
}
