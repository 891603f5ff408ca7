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
/// HTTP requests per run (redirect hops each count).
pub const MAX_HTTP_REQUESTS: u64 = 100;
/// Largest HTTP request body a guest may send, in bytes.
pub const MAX_HTTP_REQUEST_BYTES: u64 = 1024 * 1024;
/// Largest HTTP response body a guest may receive, in bytes.
pub const MAX_HTTP_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;
/// Longest one HTTP request may take as a whole (waiting for a slot, name resolution, every redirect hop, to the
/// last body byte), in milliseconds. The run's `cpu_ms` deadline still applies: a request never outlives the run.
pub const HTTP_TIMEOUT_MS: u64 = 10_000;
/// Artifacts (`display.*` output of the script kernels) per run, in bytes of content all together.
pub const MAX_ARTIFACT_BYTES: u64 = 4 * 1024 * 1024;

/// A session (a sandbox kept between calls) no call reached for this long ends, in milliseconds.
pub const SESSION_IDLE_MS: u64 = 10 * 60 * 1000;
/// A session ends this long after it was opened, in milliseconds.
pub const SESSION_MAX_MS: u64 = 60 * 60 * 1000;
/// Calls one session may take.
pub const SESSION_MAX_CALLS: u64 = 1_000;
/// Bytes a session's scratch directory may hold after a call.
pub const SESSION_SCRATCH_BYTES: u64 = 64 * 1024 * 1024;
/// Sessions one subject may have alive at once.
pub const MAX_SESSIONS_PER_SUBJECT: usize = 4;
/// Sessions alive at once in one process (each holds one of the engine's instance slots).
pub const MAX_SESSIONS: usize = 32;

/// The smallest memory limit accepted: one WebAssembly page.
pub const MIN_MEMORY_LIMIT_BYTES: u64 = 64 * 1024;

/// The most an operator allows any manifest to ask for. A manifest above a ceiling is refused with an error that
/// names the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    /// Largest `max_http_requests` accepted. Default 10 000.
    pub max_http_requests: u64,
    /// Largest `max_http_request_bytes` accepted. Default 64 MiB.
    pub max_http_request_bytes: u64,
    /// Largest `max_http_response_bytes` accepted. Default 256 MiB.
    pub max_http_response_bytes: u64,
    /// Largest `http_timeout_ms` accepted. Default 300 000 (five minutes).
    pub http_timeout_ms: u64,
    /// Largest `max_artifact_bytes` accepted. Default 64 MiB.
    pub max_artifact_bytes: u64,
    /// Whether a manifest may write `allowed_hosts = ["*"]`: any public host (the egress floor still refuses
    /// private and metadata addresses). Default false.
    pub allow_any_public_host: bool,
}

impl Default for ManifestCeilings {
    fn default() -> Self {
        ManifestCeilings {
            cpu_ms: 60_000,
            fuel: 1_000_000_000_000,
            memory_limit_bytes: 1024 * 1024 * 1024,
            max_output_bytes: 16 * 1024 * 1024,
            max_host_calls: 100_000,
            max_http_requests: 10_000,
            max_http_request_bytes: 64 * 1024 * 1024,
            max_http_response_bytes: 256 * 1024 * 1024,
            http_timeout_ms: 300_000,
            max_artifact_bytes: 64 * 1024 * 1024,
            allow_any_public_host: false,
        }
    }
}

/// Most entries a run report lists per record list (`denials`, `tool_calls`, `http_requests`); later entries are
/// counted in the report's `unlisted` field instead. Together with [`REPORT_TEXT_BYTES`] this bounds what a guest
/// that loops on refused actions can make the host hold.
pub const REPORT_LISTED_RECORDS: usize = 256;
/// Longest text a report keeps in one field of a record (a denial's target or reason, a tool name, a URL, an
/// error the guest received); longer text is cut and marked with its original length.
pub const REPORT_TEXT_BYTES: usize = 2 * 1024;
/// Longest `error.message` a report keeps (a trap's backtrace, an exception's message and stack).
pub const REPORT_ERROR_BYTES: usize = 64 * 1024;
