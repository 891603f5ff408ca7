//! The JSON body of `POST /v1/runs`, parsed and narrowed under the server's maximum manifest.
//! The body and its invariants are `wasmagent_server::fuzzing::run_request`, which the stable regression tests replay too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmagent_server::fuzzing::run_request(data));
