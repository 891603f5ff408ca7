//! Exports the stack pointer, the engine's only mutable global besides those in linear memory, so a host that
//! forks a session's instance can copy every piece of mutable state through exports (memory and globals).

fn main() {
    println!("cargo:rustc-link-arg=--export=__stack_pointer");
}
