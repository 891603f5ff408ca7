//! A TOML manifest, parsed and resolved against the default ceilings.
//! The body and its invariants are `wasmagent_manifest::fuzzing::manifest_toml`, which the stable regression tests replay too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmagent_manifest::fuzzing::manifest_toml(data));
