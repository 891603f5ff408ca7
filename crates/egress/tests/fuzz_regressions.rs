//! Replays the committed fuzz inputs (`fuzz/seeds/` and every crash saved in `fuzz/regressions/`) of the targets
//! that exercise this crate, through the same code the fuzz targets run.

use std::path::Path;
use wasmagent_egress::fuzzing;
use wasmagent_manifest::fuzzing::replay;

fn fuzz_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz"))
}

#[test]
fn egress_url_inputs_keep_their_invariants() {
    assert!(replay(fuzz_dir(), "egress_url", fuzzing::url) > 0, "no inputs found");
}

#[test]
fn egress_floor_inputs_keep_their_invariants() {
    assert!(replay(fuzz_dir(), "egress_floor", fuzzing::floor) > 0, "no inputs found");
}
