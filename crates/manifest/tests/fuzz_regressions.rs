//! Replays the committed fuzz inputs (`fuzz/seeds/` and every crash saved in `fuzz/regressions/`) of the targets
//! that exercise this crate, through the same code the fuzz targets run.

use std::path::Path;
use wasmagent_manifest::fuzzing;

fn fuzz_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz"))
}

#[test]
fn manifest_toml_inputs_keep_their_invariants() {
    assert!(fuzzing::replay(fuzz_dir(), "manifest_toml", fuzzing::manifest_toml) > 0, "no inputs found");
}

#[test]
fn manifest_json_inputs_keep_their_invariants() {
    assert!(fuzzing::replay(fuzz_dir(), "manifest_json", fuzzing::manifest_json) > 0, "no inputs found");
}

#[test]
fn host_pattern_inputs_keep_their_invariants() {
    assert!(fuzzing::replay(fuzz_dir(), "host_pattern", fuzzing::host_pattern) > 0, "no inputs found");
}
