//! `server.toml`: what the operator decides. Every field has a safe default, so a server starts without a file.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use wasmagent::{CapabilityManifest, ManifestCeilings};

/// The operator's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The most any request's manifest may ask for; a request may only narrow it. Unset scalar limits in a request
    /// are taken from here. Default: the empty manifest with default limits (no files, no network, no tools).
    pub max_manifest: CapabilityManifest,
    /// Ceilings the maximum manifest itself is checked against.
    pub ceilings: ManifestCeilings,
    /// Largest request body, in bytes (default 64 KiB: room for a script; raise it for WebAssembly modules).
    pub max_body_bytes: usize,
    /// Longest a request may wait for a run slot and run, in milliseconds (default 60 000).
    pub request_timeout_ms: u64,
    /// Runs executing at once on this server (default: the number of CPUs).
    pub max_concurrent_runs: usize,
    /// Requests that may wait for a run slot; beyond it requests get 503 with Retry-After (default 64).
    pub max_queued_runs: usize,
    /// Async runs remembered for `GET /v1/runs/{id}` (default 10 000; the oldest finished ones are dropped).
    pub max_stored_runs: usize,
    /// Bytes the remembered async runs may weigh, each measured as its `GET /v1/runs/{id}` JSON (default 256 MiB;
    /// the oldest finished ones are dropped first; a single report heavier than this is not kept).
    pub max_stored_run_bytes: usize,
    /// Longest the server waits for a request body once the headers are in, in milliseconds (default 10 000):
    /// a client that stalls mid-body gets 408 and its connection closed.
    pub request_body_timeout_ms: u64,
    /// Longest the server waits for a request's line and headers, and for the next request on an idle kept-alive
    /// connection, in milliseconds (default 10 000): past it the connection is closed, so slow or idle clients
    /// cannot hold connections open.
    pub request_header_timeout_ms: u64,
    /// Longest a shutdown (Ctrl-C, SIGTERM) waits for in-flight requests, async runs and webhook deliveries, in
    /// milliseconds (default 30 000); whatever is still running then is abandoned and the process exits.
    pub shutdown_timeout_ms: u64,
    /// Sandbox instance slots reserved in the pooling allocator (default 128; at least `max_concurrent_runs`).
    pub pool_slots: u32,
    /// Authentication.
    pub auth: AuthConfig,
    /// Per-subject rate limits.
    pub rate_limit: RateLimitConfig,
    /// Browser origins allowed by CORS. Empty (default): no CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
    /// Webhooks for async runs.
    pub webhooks: WebhookConfig,
    /// Operator egress configuration file (exceptions and secrets), as for `wasmagent run --egress-config`.
    pub egress_config: Option<PathBuf>,
    /// Private addresses guests (and webhooks) may reach, as `--allow-private`.
    pub allow_private: Vec<String>,
    /// Tools file (`tools.toml`): host tools for runs and for MCP code mode, granted per manifest as usual.
    pub tools: Option<PathBuf>,
    /// The MCP endpoint (`/mcp`, streamable HTTP).
    pub mcp: McpConfig,
    /// The signed audit log of every run (as `wasmagent run --record`).
    pub audit: AuditConfig,
    /// Agent runs (`POST /v1/agent-runs`): the models they may use, the task cap, budgets, approvals, bounds.
    pub agent: AgentRunsConfig,
    /// `[cluster]`: with `redis_url`, async runs, their results and webhook deliveries are shared through Redis by
    /// every server configured with it (README, "Running several servers"); without it, this server works alone.
    pub cluster: wasmagent_cluster::ClusterConfig,
    /// `[sessions]`: session limits (`/v1/sessions` and MCP `execute_code` sessions): idle time, age, calls, scratch
    /// bytes, live sessions per subject and in all. Each live session holds a pool slot, so at most `pool_slots`
    /// minus `max_concurrent_runs` sessions are kept, whatever `max_sessions` says (and at least one).
    pub sessions: wasmagent::SessionLimits,
    /// `[snapshots]`: session snapshots the server holds (`POST /v1/sessions/{id}/snapshot`): per subject, bytes in
    /// all, and how long each is kept.
    pub snapshots: crate::snapshots::SnapshotConfig,
    /// Whether `POST /v1/runs` takes `"learn": true` (default false; a development setting). Learning looks at the
    /// host's files to find the directory to propose for a refused path, so it tells callers which directories
    /// exist; proposals never go beyond `max_manifest`.
    pub allow_learn: bool,
    /// `[python]`: a custom Python engine (`wasmagent engine build python`, with declared packages) in place of the
    /// shipped one, pinned by digest.
    pub python: PythonEngineConfig,
    /// The browser tools (`wasmagent serve --browser`, or `[browser]` in the tools file), set by the front end:
    /// `None` leaves them out.
    #[serde(skip)]
    pub browser: Option<wasmagent_browser::BrowserConfig>,
}

/// `[agent]`: agent runs over HTTP, behind scope `agents:run`. With no `models` every agent run is refused (403).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentRunsConfig {
    /// The models a request may name (`[[agent.models]]`); the first is used when a request names none.
    pub models: Vec<AgentModelConfig>,
    /// Longest task accepted, in bytes (default 16 KiB); a longer one is 413 before any model is called.
    pub max_task_bytes: usize,
    /// Model turns per run (default 20); a request may ask for fewer, never more (403).
    pub max_steps: u32,
    /// Input plus output model tokens per run (default 200 000).
    pub max_model_tokens: u64,
    /// Wall-clock time per run, in seconds (default 600).
    pub timeout_secs: u64,
    /// Agent runs at once on this server (default 4); beyond it requests get 503 with Retry-After.
    pub max_concurrent_runs: usize,
    /// Host tools (`NAME`, `NS.*` or `*`) whose every call pauses for `POST /v1/agent-runs/{id}/approvals`. The
    /// approval gate has one listener, so with any entry here agent runs go one at a time.
    pub needs_approval: Vec<String>,
    /// How long a call waits for its approval before it is declined, in seconds (default 300).
    pub approval_timeout_secs: u64,
    /// Events kept per run for SSE resumption (default 10 000); past it the oldest are dropped.
    pub max_events_per_run: usize,
    /// Bytes of events (as JSON) kept per run (default 4 MiB); past it the oldest are dropped.
    pub max_event_bytes_per_run: usize,
    /// Agent runs remembered for `GET /v1/agent-runs/{id}` (default 1 000; the oldest finished ones are dropped).
    pub max_stored_runs: usize,
    /// Bytes the remembered finished agent runs may weigh, events and report (default 256 MiB; oldest dropped first).
    pub max_stored_run_bytes: usize,
}

impl Default for AgentRunsConfig {
    fn default() -> Self {
        AgentRunsConfig {
            models: Vec::new(),
            max_task_bytes: 16 * 1024,
            max_steps: 20,
            max_model_tokens: 200_000,
            timeout_secs: 600,
            max_concurrent_runs: 4,
            needs_approval: Vec::new(),
            approval_timeout_secs: 300,
            max_events_per_run: 10_000,
            max_event_bytes_per_run: 4 * 1024 * 1024,
            max_stored_runs: 1_000,
            max_stored_run_bytes: 256 * 1024 * 1024,
        }
    }
}

/// One model agent runs may use. Its key comes from `api_key_env` or `api_key_file`, never from this file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentModelConfig {
    /// `openai:MODEL` (OpenAI Chat Completions and compatible servers) or `anthropic:MODEL`; what requests name.
    pub model: String,
    /// The server, without the endpoint path; the provider's own when unset.
    pub base_url: Option<String>,
    /// Environment variable holding the key (default: the provider's usual one, when it is set).
    pub api_key_env: Option<String>,
    /// File whose first line is the key.
    pub api_key_file: Option<PathBuf>,
}

/// Where the server appends a signed, hash-chained record of every run it executes (the format of `wasmagent run
/// --record`, checked with `wasmagent audit verify`). Runs the kernel refused (invalid code, a manifest it cannot
/// enforce, no sandbox available) are recorded too, with outcome `error`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The log file (JSON Lines, created on the first run). Needs `key_file`.
    pub log: Option<PathBuf>,
    /// The secret key that signs the records (`wasmagent keygen`).
    pub key_file: Option<PathBuf>,
}

/// `/mcp`: code mode over streamable HTTP, behind the same authentication (scope `runs:write`) and per-subject
/// request rate as the run API. Every `execute_code` is held to the maximum manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Serve `/mcp` (default true).
    pub enabled: bool,
    /// Also publish every tool the maximum manifest grants as a direct MCP tool.
    pub expose_tools: bool,
    /// `Host` header values accepted on `/mcp` (DNS-rebinding protection; default: localhost, 127.0.0.1, ::1).
    /// List the names clients use, e.g. `mcp.example.com`; an empty list accepts any host.
    pub allowed_hosts: Vec<String>,
    /// `[mcp.manifest]`: the manifest `/mcp` runs start from, narrower than `max_manifest`. Set, `/mcp` offers
    /// `request_capability`: the client's user may approve (MCP elicitation) one refused access at a time for that
    /// MCP session, up to `max_manifest`. Unset (default): runs are held to `max_manifest` and nothing is asked.
    pub manifest: Option<CapabilityManifest>,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            enabled: true,
            expose_tools: false,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            manifest: None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_manifest: CapabilityManifest::default(),
            ceilings: ManifestCeilings::default(),
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 60_000,
            max_concurrent_runs: std::thread::available_parallelism().map_or(2, usize::from),
            max_queued_runs: 64,
            max_stored_runs: 10_000,
            max_stored_run_bytes: 256 * 1024 * 1024,
            request_body_timeout_ms: 10_000,
            request_header_timeout_ms: 10_000,
            shutdown_timeout_ms: 30_000,
            pool_slots: 128,
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            cors_allowed_origins: Vec::new(),
            webhooks: WebhookConfig::default(),
            egress_config: None,
            allow_private: Vec::new(),
            tools: None,
            mcp: McpConfig::default(),
            audit: AuditConfig::default(),
            agent: AgentRunsConfig::default(),
            cluster: wasmagent_cluster::ClusterConfig::default(),
            sessions: wasmagent::SessionLimits::default(),
            snapshots: crate::snapshots::SnapshotConfig::default(),
            allow_learn: false,
            python: PythonEngineConfig::default(),
            browser: None,
        }
    }
}

/// `[python]`: the Python engine runs use. Both fields or neither.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PythonEngineConfig {
    /// The engine file (relative to the configuration file).
    pub engine: Option<PathBuf>,
    /// Its SHA-256 (`sha256:<hex>`): a file with another digest is refused at start-up.
    pub engine_digest: Option<String>,
}

/// How callers prove who they are. With no keys configured every request is refused (401), unless the server
/// was started with the development flag.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Required `iss` of every JWT, when set.
    pub issuer: Option<String>,
    /// Accepted `aud` values (a token's `aud`, string or list, must contain one), when set.
    pub audience: Vec<String>,
    /// JWT verification keys, each pinned to one algorithm.
    pub jwt_keys: Vec<JwtKeyConfig>,
    /// Static API keys, stored as SHA-256 hashes.
    pub api_keys: Vec<ApiKeyConfig>,
}

/// One JWT key (or a JWKS file of keys) and the one algorithm it verifies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// `HS256`, `RS256` or `EdDSA`.
    pub alg: String,
    /// Key id a token's `kid` header must match, when set.
    pub kid: Option<String>,
    /// HS256: environment variable holding the shared secret.
    pub secret_env: Option<String>,
    /// HS256: file holding the shared secret.
    pub secret_file: Option<PathBuf>,
    /// RS256 / EdDSA: PEM public key file.
    pub public_key_file: Option<PathBuf>,
    /// RS256 / EdDSA: JWKS file; every key in it of a matching type is loaded, with its `kid`.
    pub jwks_file: Option<PathBuf>,
}

/// One static API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The subject requests with this key run as (rate limits and run ownership are per subject).
    pub subject: String,
    /// Hex SHA-256 of the key (`printf %s KEY | sha256sum`); the key itself is never stored.
    pub sha256: String,
    /// Granted scopes: `runs:write`, `runs:read`.
    pub scopes: Vec<String>,
}

/// Per-subject limits and where they are counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per sliding minute (default 600).
    pub requests_per_minute: u64,
    /// Runs executing at once per subject (default 8).
    pub concurrent_runs: u64,
    /// Count in this Redis (shared by every server using it) instead of in memory.
    pub redis_url: Option<String>,
    /// Key prefix in Redis (default `wasmagent`).
    pub redis_prefix: String,
    /// Longest a Redis call may take before the request is refused, in milliseconds (default 250).
    pub redis_timeout_ms: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_minute: 600,
            concurrent_runs: 8,
            redis_url: None,
            redis_prefix: "wasmagent".into(),
            redis_timeout_ms: 250,
        }
    }
}

/// Where finished async runs are posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// URLs that receive every finished async run's report.
    pub urls: Vec<String>,
    /// Environment variable holding the signing secret (required when `urls` is set).
    pub secret_env: Option<String>,
    /// Attempts per delivery before it goes to the dead-letter list (default 5).
    pub max_attempts: u32,
    /// Deliveries in flight (sending or waiting to retry) at most; a delivery past it is not sent and goes
    /// straight to the dead-letter list, saying why (default 1000).
    pub max_pending_deliveries: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            secret_env: None,
            max_attempts: 5,
            max_pending_deliveries: crate::webhook::DEFAULT_MAX_PENDING,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("server configuration {path}: {message}")]
pub struct ConfigError {
    path: String,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

impl ServerConfig {
    /// Reads `server.toml`; relative paths in it are made relative to the file's directory.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, e.to_string()))?;
        let mut config: ServerConfig =
            toml::from_str(&text).map_err(|e| ConfigError::new(&name, e.to_string().trim_end().to_owned()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.rebase(base);
        config.validate().map_err(|m| ConfigError::new(&name, m))?;
        Ok(config)
    }

    fn rebase(&mut self, base: &Path) {
        self.max_manifest.rebase_relative_paths(base);
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for key in &mut self.auth.jwt_keys {
            for path in [&mut key.secret_file, &mut key.public_key_file, &mut key.jwks_file].into_iter().flatten() {
                fix(path);
            }
        }
        let paths = [
            self.egress_config.as_mut(),
            self.tools.as_mut(),
            self.audit.log.as_mut(),
            self.audit.key_file.as_mut(),
            self.python.engine.as_mut(),
        ];
        for path in paths.into_iter().flatten() {
            fix(path);
        }
        for model in &mut self.agent.models {
            if let Some(path) = model.api_key_file.as_mut() {
                fix(path);
            }
        }
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.python.engine.is_some() != self.python.engine_digest.is_some() {
            return Err("[python] needs both engine and engine_digest (the engine is pinned by its digest)".into());
        }
        if self.max_concurrent_runs == 0 {
            return Err("max_concurrent_runs must be at least 1".into());
        }
        if (self.pool_slots as usize) < self.max_concurrent_runs {
            return Err("pool_slots must be at least max_concurrent_runs".into());
        }
        if self.rate_limit.requests_per_minute == 0 || self.rate_limit.concurrent_runs == 0 {
            return Err("rate_limit values must be at least 1".into());
        }
        if !self.webhooks.urls.is_empty() && self.webhooks.secret_env.is_none() {
            return Err("webhooks.urls needs webhooks.secret_env (deliveries are always signed)".into());
        }
        if self.cors_allowed_origins.iter().any(|o| o == "*") {
            return Err("cors_allowed_origins may not contain `*`: list the origins".into());
        }
        cors_origins(&self.cors_allowed_origins)?;
        self.snapshots.validate()?;
        if self.max_stored_run_bytes == 0
            || self.request_body_timeout_ms == 0
            || self.request_header_timeout_ms == 0
            || self.shutdown_timeout_ms == 0
        {
            return Err("max_stored_run_bytes, request_body_timeout_ms, request_header_timeout_ms and \
                 shutdown_timeout_ms must be at least 1"
                .into());
        }
        if self.audit.log.is_some() != self.audit.key_file.is_some() {
            return Err("audit.log and audit.key_file go together: records are always signed".into());
        }
        if self.cluster.redis_url.is_some() {
            self.cluster.validate()?;
        }
        let agent = &self.agent;
        if agent.max_task_bytes == 0
            || agent.max_steps == 0
            || agent.max_model_tokens == 0
            || agent.timeout_secs == 0
            || agent.max_concurrent_runs == 0
            || agent.approval_timeout_secs == 0
            || agent.max_events_per_run == 0
            || agent.max_event_bytes_per_run == 0
            || agent.max_stored_run_bytes == 0
        {
            return Err("agent limits must be at least 1".into());
        }
        if agent.max_stored_runs < agent.max_concurrent_runs {
            return Err("agent.max_stored_runs must be at least agent.max_concurrent_runs".into());
        }
        for (i, model) in agent.models.iter().enumerate() {
            model.model.parse::<wasmagent_models::ModelSpec>().map_err(|e| format!("agent.models[{i}]: {e}"))?;
            if model.api_key_env.is_some() && model.api_key_file.is_some() {
                return Err(format!("agent.models[{i}]: api_key_env and api_key_file are exclusive"));
            }
        }
        Ok(())
    }
}

/// The `Origin` header values of `origins`, or which one is not an origin. A browser sends exactly
/// `scheme://host[:port]` (no path, no trailing slash), so anything else could never match and is refused rather than
/// silently ignored.
pub(crate) fn cors_origins(origins: &[String]) -> Result<Vec<axum::http::HeaderValue>, String> {
    origins
        .iter()
        .enumerate()
        .map(|(i, origin)| {
            let refuse = |why: &str| {
                format!("cors_allowed_origins[{i}] {origin:?} is not an origin ({why}); write scheme://host[:port]")
            };
            let url = reqwest::Url::parse(origin).map_err(|e| refuse(&e.to_string()))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(refuse("the scheme must be http or https"));
            }
            if url.origin().ascii_serialization() != *origin {
                return Err(refuse("it has more than scheme, host and port, or is not in canonical form"));
            }
            axum::http::HeaderValue::from_str(origin).map_err(|e| refuse(&e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_cors_origins_are_refused_naming_the_entry() {
        let config = |origins: &[&str]| ServerConfig {
            cors_allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            ..ServerConfig::default()
        };
        assert_eq!(config(&["https://app.example", "http://localhost:3000"]).validate(), Ok(()));
        for bad in ["https://app.example/", "app.example", "https://app.example/path", "ftp://x.example", "https://a b"]
        {
            let error = config(&["https://ok.example", bad]).validate().unwrap_err();
            assert!(error.contains("cors_allowed_origins[1]") && error.contains(bad), "{bad}: {error}");
        }
    }
}
