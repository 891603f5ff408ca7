//! Replays the committed inputs of the `guest_call` fuzz target (`fuzz/seeds/` and every crash saved in
//! `fuzz/regressions/`) through the same code the target runs.

use std::path::Path;
use wasmagent_kernel_js::fuzzing;
use wasmagent_manifest::fuzzing::replay;

#[test]
fn guest_call_inputs_keep_their_invariants() {
    let fuzz_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz"));
    assert!(replay(fuzz_dir, "guest_call", fuzzing::guest_call) > 0, "no inputs found");
}
