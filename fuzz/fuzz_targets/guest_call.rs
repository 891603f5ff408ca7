//! The guest→host call ABI: `tool_call` with arbitrary pointers, lengths and guest memory.
//! The body and its invariants are `wasmagent_kernel_js::fuzzing::guest_call`, which the stable regression tests replay too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmagent_kernel_js::fuzzing::guest_call(data));
