use crate::cache::CacheSource;
use crate::output::CapturedOutput;
use crate::termination::Termination;
use wasmagent_kernel::{Denial, HttpExchange, RunReport, SCHEMA, ToolCall, Unlisted, Usage};
use wasmagent_manifest::EffectiveManifest;

/// Everything a wasmtime kernel gathered about one run, to be turned into the [`RunReport`].
pub struct ReportParts<'a> {
    /// Kernel name.
    pub kernel: &'static str,
    /// How the run ended.
    pub termination: Termination,
    /// The kernel's result value.
    pub value: serde_json::Value,
    /// Captured stdout.
    pub stdout: CapturedOutput,
    /// Captured stderr.
    pub stderr: CapturedOutput,
    /// Accesses refused during the run (the termination's own denial is appended).
    pub denials: Vec<Denial>,
    /// Host tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// HTTP requests through the egress path.
    pub http_requests: Vec<HttpExchange>,
    /// Records the sessions counted but did not keep.
    pub unlisted: Unlisted,
    /// Wall-clock time of instantiation and execution.
    pub wall_ms: f64,
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Peak linear memory.
    pub memory_peak_bytes: u64,
    /// Host calls made.
    pub host_calls: u64,
    /// Where the compiled code came from.
    pub code_cache: CacheSource,
    /// The manifest the run was held to.
    pub manifest: &'a EffectiveManifest,
    /// Digest of the code.
    pub code_digest: String,
}

impl ReportParts<'_> {
    /// Assembles the report, within the report bounds ([`RunReport::enforce_bounds`]).
    pub fn into_report(self) -> RunReport {
        let mut denials = self.denials;
        denials.extend(self.termination.denial);
        let mut report = RunReport {
            schema: SCHEMA.into(),
            kernel: self.kernel.into(),
            outcome: self.termination.outcome,
            value: self.value,
            stdout: String::from_utf8_lossy(&self.stdout.data).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr.data).into_owned(),
            exit_code: self.termination.exit_code,
            error: self.termination.error,
            denials,
            tool_calls: self.tool_calls,
            http_requests: self.http_requests,
            artifacts: Vec::new(),
            unlisted: self.unlisted,
            usage: Usage {
                wall_ms: (self.wall_ms * 1000.0).round() / 1000.0,
                fuel_consumed: self.fuel_consumed,
                memory_peak_bytes: self.memory_peak_bytes,
                host_calls: self.host_calls,
                stdout_bytes: self.stdout.written,
                stderr_bytes: self.stderr.written,
                code_cache: self.code_cache.as_str().into(),
            },
            manifest: serde_json::to_value(self.manifest).unwrap_or(serde_json::Value::Null),
            manifest_digest: self.manifest.digest().into(),
            code_digest: self.code_digest,
            signer_key_id: None,
            session_id: None,
            session_call: None,
            session_ended: None,
        };
        report.enforce_bounds();
        report
    }
}
