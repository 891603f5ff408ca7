//! Default limits and operator ceilings. These constants are policy: they live here, once.
//!
//! Every limit is finite by default. An operator may raise or lower the ceilings ([`ManifestCeilings`]); a manifest
//! that asks for more than a ceiling is refused, never clamped.

use serde::{Deserialize, Serialize};

/// Wall-clock deadline of a run, in milliseconds.
pub const CPU_MS: u64 = 5_000;
/// Memory a guest may use (linear memories and, for the script kernels, the engine heap), in bytes.
pub const MEMORY_LIMIT_BYTES: u64 = 128 * 1024 * 1024;
/// Captured output per stream (stdout and stderr each), in bytes.
pub const MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
/// Calls from guest code into host tools and bridges per run.
pub const MAX_HOST_CALLS: u64 = 1_000;

/// The smallest memory limit accepted: one WebAssembly page.
pub const MIN_MEMORY_LIMIT_BYTES: u64 = 64 * 1024;

/// The most an operator allows any manifest to ask for. A manifest above a ceiling is refused with an error that
/// names the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestCeilings {
    /// Largest `cpu_ms` accepted. Default 60 000 (one minute).
    pub cpu_ms: u64,
    /// Largest `fuel` accepted. Default 10^12 instructions' worth of fuel.
    pub fuel: u64,
    /// Largest `memory_limit_bytes` accepted. Default 1 GiB.
    pub memory_limit_bytes: u64,
    /// Largest `max_output_bytes` accepted. Default 16 MiB.
    pub max_output_bytes: u64,
    /// Largest `max_host_calls` accepted. Default 100 000.
    pub max_host_calls: u64,
}

impl Default for ManifestCeilings {
    fn default() -> Self {
        ManifestCeilings {
            cpu_ms: 60_000,
            fuel: 1_000_000_000_000,
            memory_limit_bytes: 1024 * 1024 * 1024,
            max_output_bytes: 16 * 1024 * 1024,
            max_host_calls: 100_000,
        }
    }
}
