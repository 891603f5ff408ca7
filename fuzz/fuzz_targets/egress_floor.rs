//! Raw IPv4 and IPv6 addresses against the egress floor, in every spelling and wrapping.
//! The body and its invariants are `wasmagent_egress::fuzzing::floor`, which the stable regression tests replay too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmagent_egress::fuzzing::floor(data));
