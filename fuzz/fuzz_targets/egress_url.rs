//! A guest's URL: WHATWG normalisation, the floor for every spelling of an address, redirects.
//! The body and its invariants are `wasmagent_egress::fuzzing::url`, which the stable regression tests replay too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmagent_egress::fuzzing::url(data));
