//! Host patterns: parsing, round trips, `matches` against `covers`.
//! The body and its invariants are `wasmagent_manifest::fuzzing::host_pattern`, which the stable regression tests replay too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmagent_manifest::fuzzing::host_pattern(data));
