//! The WASI context an engine is pre-initialised in: seeded randomness and clocks that read the same times in every
//! build, so that a rebuild from the same inputs gives the same bytes (`cargo xtask guests --check --rebuild`).

use sha2::{Digest, Sha256};
use wasmtime_wasi::WasiCtxBuilder;

/// What seeds the randomness of `guest`'s build.
fn seed_label(guest: &str) -> String {
    format!("wasmagent {guest} engine build")
}

/// The context as the provenance records it.
pub(crate) fn describe(guest: &str) -> String {
    format!(
        "randomness cycling SHA-256(\"{}\") and clocks that start at 2026-01-01 and advance 1 µs per reading \
         (xtask/src/build_context.rs)",
        seed_label(guest)
    )
}

/// A context with no files and no environment whose randomness cycles SHA-256 of `guest`'s [`seed_label`] and whose
/// clocks are [`BuildClock`]s. A fixed seed gives away no secret: the engine is public, and each run reseeds what it
/// seeded.
pub(crate) fn deterministic(guest: &str) -> WasiCtxBuilder {
    let seed = Sha256::digest(seed_label(guest)).to_vec();
    let mut context = WasiCtxBuilder::new();
    context.secure_random(wasmtime_wasi::Deterministic::new(seed.clone()));
    context.insecure_random(wasmtime_wasi::Deterministic::new(seed));
    context.insecure_random_seed(0);
    // Fixed clocks too (modules such as Python's `logging` keep the time they were imported at).
    context.wall_clock(BuildClock::default());
    context.monotonic_clock(BuildClock::default());
    context
}

/// The build's clocks: the wall clock starts at 2026-01-01T00:00:00Z and both advance 1 µs per reading, so time
/// moves (code waiting for it ends) but the same build reads the same times.
#[derive(Default)]
struct BuildClock(std::sync::atomic::AtomicU64);

/// 2026-01-01T00:00:00Z, in nanoseconds since the Unix epoch.
const BUILD_EPOCH_NANOS: u64 = 1_767_225_600_000_000_000;

impl BuildClock {
    fn tick(&self) -> u64 {
        self.0.fetch_add(1_000, std::sync::atomic::Ordering::Relaxed) + 1_000
    }
}

impl wasmtime_wasi::HostWallClock for BuildClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_micros(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(BUILD_EPOCH_NANOS + self.tick())
    }
}

impl wasmtime_wasi::HostMonotonicClock for BuildClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.tick()
    }
}
