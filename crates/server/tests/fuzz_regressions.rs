//! Replays the committed inputs of the `run_request` fuzz target (`fuzz/seeds/` and every crash saved in
//! `fuzz/regressions/`) through the same code the target runs.

use std::path::Path;
use wasmagent::manifest::fuzzing::replay;
use wasmagent_server::fuzzing;

#[test]
fn run_request_inputs_keep_their_invariants() {
    let fuzz_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz"));
    assert!(replay(fuzz_dir, "run_request", fuzzing::run_request) > 0, "no inputs found");
}
