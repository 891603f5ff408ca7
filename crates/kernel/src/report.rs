use serde::{Deserialize, Serialize};

/// Schema name carried by every report.
pub const SCHEMA: &str = "wasmagent.run/v1";

/// What one run did: the single machine-readable result every kernel returns and every front end prints.
///
/// The field names are a public contract (README, "Run report").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The kernel that ran the code (`wasi`, `js`, `python`, `remote`).
    pub kernel: String,
    /// How the run ended.
    pub outcome: Outcome,
    /// The kernel's result value as JSON (for script kernels, the value of the last expression), else null.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// Captured standard output (lossy UTF-8), at most `max_output_bytes`.
    pub stdout: String,
    /// Captured standard error (lossy UTF-8), at most `max_output_bytes`.
    pub stderr: String,
    /// The guest's exit status: 0 when a command returned normally, `n` after `exit(n)`, null when the run ended
    /// any other way.
    pub exit_code: Option<i32>,
    /// What went wrong, for every outcome but `ok` and `exit`.
    pub error: Option<ErrorInfo>,
    /// Every access the host refused, including ones the guest caught and recovered from.
    pub denials: Vec<Denial>,
    /// Every host tool call the guest made, in order.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Every HTTP request the guest made through the egress path, in order (refused ones included).
    #[serde(default)]
    pub http_requests: Vec<HttpExchange>,
    /// What the guest displayed (`display.html`, `display.table`, ...), in order, within `max_artifact_bytes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Records past the report's per-list bound (`REPORT_LISTED_RECORDS`): counted, not listed.
    #[serde(default, skip_serializing_if = "Unlisted::is_empty")]
    pub unlisted: Unlisted,
    /// Resources used.
    pub usage: Usage,
    /// The effective manifest the run was held to.
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    /// `sha256:<hex>` of the canonical effective manifest.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the code as given (module bytes or script text).
    pub code_digest: String,
    /// Key id of the trusted key whose signature on the module verified, or null.
    #[serde(default)]
    pub signer_key_id: Option<String>,
    /// The session this run was a call of; absent for a run in a fresh sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The call's sequence number in its session, from 1; absent outside a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_call: Option<u64>,
    /// Why this call ended its session (a trap leaves the engine unusable, or a session limit was reached); absent
    /// while the session goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ended: Option<String>,
}

/// How many records of each list a report counted but did not list (SECURITY.md, "Bounds of one run").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Unlisted {
    /// Refused accesses not listed in `denials`.
    pub denials: u64,
    /// Tool calls not listed in `tool_calls`.
    pub tool_calls: u64,
    /// HTTP requests not listed in `http_requests`.
    pub http_requests: u64,
    /// Artifacts not listed in `artifacts`.
    #[serde(skip_serializing_if = "is_zero")]
    pub artifacts: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Unlisted {
    /// Whether every list was complete.
    pub fn is_empty(&self) -> bool {
        *self == Unlisted::default()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Finished normally.
    Ok,
    /// The guest threw, trapped, or its result could not be converted.
    Error,
    /// The guest called `exit(n)` (WASI `proc_exit`, Python `sys.exit`).
    Exit,
    /// `cpu_ms` elapsed.
    Timeout,
    /// The guest tried to use more than `memory_limit_bytes`.
    MemoryLimit,
    /// `fuel` ran out.
    FuelExhausted,
    /// The guest wrote more than `max_output_bytes` to one stream; output is cut at the cap.
    OutputLimit,
}

impl Outcome {
    /// Whether the run was stopped by a manifest limit.
    pub fn is_limit(self) -> bool {
        matches!(self, Outcome::Timeout | Outcome::MemoryLimit | Outcome::FuelExhausted | Outcome::OutputLimit)
    }

    /// The name used in reports, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Exit => "exit",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::FuelExhausted => "fuel_exhausted",
            Outcome::OutputLimit => "output_limit",
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorInfo {
    /// Machine-readable class.
    pub kind: ErrorKind,
    /// Human-readable detail (trap message and backtrace, exception message and stack, the limit that was hit).
    pub message: String,
}

/// Classes of [`ErrorInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A WebAssembly trap: unreachable, out-of-bounds access, stack overflow, invalid conversion...
    Trap,
    /// An uncaught exception in a script kernel.
    Exception,
    /// The result value could not be converted to JSON.
    Serialization,
    /// `cpu_ms` elapsed.
    Timeout,
    /// The memory limit was hit.
    MemoryLimit,
    /// Fuel ran out.
    FuelExhausted,
    /// The output cap was hit.
    OutputLimit,
    /// A module signature was missing or did not verify.
    Signature,
    /// A failure of the host itself while running the guest.
    Internal,
    /// The remote server could not be reached, timed out, or was busy (HTTP 503).
    RemoteUnavailable,
    /// The remote server refused the run under its rate limits (HTTP 429).
    RateLimited,
}

/// One access the host refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Denial {
    /// What kind of access: `fs.read`, `fs.write`, `net.connect`, `memory`, `tool`, ...
    pub capability: String,
    /// What was asked for: a guest path, an address, a tool name, a size.
    pub target: String,
    /// Why it was refused, in terms of the manifest.
    pub reason: String,
}

/// One call from guest code to a host tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// `sha256:<hex>` of the arguments as the guest sent them.
    pub args_digest: String,
    /// `ok`, `error` (the tool failed) or `denied` (not granted, unknown, over a cap or over `max_host_calls`).
    pub outcome: String,
    /// How long the host spent on the call, in milliseconds.
    pub duration_ms: f64,
    /// The error the guest received, for `error` and `denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One HTTP request from guest code, as the egress path handled it (redirects followed inside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HttpExchange {
    /// The request method.
    pub method: String,
    /// The URL the guest asked for.
    pub url: String,
    /// `ok` (a response arrived, whatever its status), `error` (the network or a cap failed it) or `denied`.
    pub outcome: String,
    /// The final response status, when one arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Redirects followed.
    #[serde(default)]
    pub redirects: u32,
    /// Response body bytes delivered to the guest.
    #[serde(default)]
    pub response_bytes: u64,
    /// How long the host spent on the request, in milliseconds.
    pub duration_ms: f64,
    /// The error the guest received, for `error` and `denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Rich output from guest code (`display.*`): shown as a card by the console, written to a file by
/// `wasmagent run --artifacts DIR`. Exactly one of `text` and `base64` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Artifact {
    /// What the content is, which decides how it is shown.
    pub kind: ArtifactKind,
    /// Its media type: `text/html`, `image/svg+xml`, `text/markdown`, `application/json`, `image/png`, ...
    pub mime: String,
    /// The title the guest gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The content, for every kind but `image`: HTML, SVG or Markdown source, or JSON (a table's rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The content of an `image`, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// Size of the content in bytes (of `text` as UTF-8, or of the decoded image); what counts against
    /// `max_artifact_bytes`.
    pub bytes: u64,
}

/// Kinds of [`Artifact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// An HTML document (shown in a sandboxed frame: scripts without any origin, no network).
    Html,
    /// An SVG image (shown like HTML).
    Svg,
    /// Markdown source (the console renders it to sanitised HTML).
    Markdown,
    /// Rows as JSON: an array of arrays, or of objects whose keys are the columns.
    Table,
    /// A raster image: PNG, JPEG, GIF or WebP.
    Image,
    /// Any JSON value.
    Json,
}

impl ArtifactKind {
    /// The name used in reports and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Html => "html",
            ArtifactKind::Svg => "svg",
            ArtifactKind::Markdown => "markdown",
            ArtifactKind::Table => "table",
            ArtifactKind::Image => "image",
            ArtifactKind::Json => "json",
        }
    }
}

/// Resources a run used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Wall-clock time of the run itself (instantiation and execution, not compilation), in milliseconds.
    pub wall_ms: f64,
    /// Fuel consumed (roughly, WebAssembly instructions executed).
    pub fuel_consumed: u64,
    /// Largest total linear memory the guest held, in bytes.
    pub memory_peak_bytes: u64,
    /// Calls into host tools and bridges.
    pub host_calls: u64,
    /// Bytes the guest wrote to stdout, including any part cut by the cap.
    pub stdout_bytes: u64,
    /// Bytes the guest wrote to stderr, including any part cut by the cap.
    pub stderr_bytes: u64,
    /// Where the compiled code came from: `memory`, `disk` or `compiled`.
    pub code_cache: String,
}

impl RunReport {
    /// The report of a run refused before the guest started (for example an unsigned module when signatures are
    /// required): outcome `error` with `error`, nothing used.
    pub fn refused(
        kernel: &str,
        error: ErrorInfo,
        manifest: &wasmagent_manifest::EffectiveManifest,
        code_digest: &str,
    ) -> Self {
        RunReport {
            schema: SCHEMA.into(),
            kernel: kernel.into(),
            outcome: Outcome::Error,
            value: serde_json::Value::Null,
            stdout: String::new(),
            stderr: String::new(),
            exit_code: None,
            error: Some(error),
            denials: Vec::new(),
            tool_calls: Vec::new(),
            http_requests: Vec::new(),
            artifacts: Vec::new(),
            unlisted: Unlisted::default(),
            usage: Usage { code_cache: "none".into(), ..Usage::default() },
            manifest: serde_json::to_value(manifest).unwrap_or(serde_json::Value::Null),
            manifest_digest: manifest.digest().into(),
            code_digest: code_digest.into(),
            signer_key_id: None,
            session_id: None,
            session_call: None,
            session_ended: None,
        }
    }

    /// Whether the guest finished successfully: outcome `ok`, or `exit` with status 0.
    pub fn succeeded(&self) -> bool {
        match self.outcome {
            Outcome::Ok => true,
            Outcome::Exit => self.exit_code == Some(0),
            _ => false,
        }
    }
}
