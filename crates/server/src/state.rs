//! Everything a request handler needs, built once from the [`ServerConfig`].

use crate::api::RunStatus;
use crate::auth::{AuthError, Authenticator, Principal};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ratelimit::{Limits, MemoryLimiter, RateLimiter, RedisLimiter};
use crate::webhook::Webhooks;
use axum::http::HeaderMap;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmagent::signing::keys::SecretKey;
use wasmagent::signing::record::AuditLog;
use wasmagent::{EffectiveManifest, EgressConfig, RunReport, Sandbox, ToolRegistry};
use wasmagent_mcp::{CodeModeServer, Escalation, HttpOptions, McpOptions};
use wasmagent_toolbox::{Toolbox, ToolboxOptions};

/// Shared state of a running server.
pub struct AppState {
    pub(crate) sandbox: Arc<Sandbox>,
    /// The MCP server and its transport settings, when `/mcp` is enabled.
    pub(crate) mcp: Option<(CodeModeServer, HttpOptions)>,
    /// Keeps upstream MCP connections of the tools file open.
    _toolbox: Option<Toolbox>,
    pub(crate) max_manifest: EffectiveManifest,
    pub(crate) auth: Authenticator,
    pub(crate) limiter: Box<dyn RateLimiter>,
    pub(crate) limits: Limits,
    pub(crate) run_slots: Arc<Semaphore>,
    pub(crate) queued: AtomicUsize,
    pub(crate) max_queued: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) request_body_timeout: Duration,
    pub(crate) request_header_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) metrics: Metrics,
    pub(crate) store: Mutex<RunStore>,
    pub(crate) webhooks: Option<Webhooks>,
    pub(crate) pending_async: AtomicUsize,
    /// Records runs the kernel refused; the sandbox records the others in the same log.
    pub(crate) audit: Option<Arc<AuditLog>>,
    /// Agent runs (`/v1/agent-runs`): models, their sandbox, the stored runs.
    pub(crate) agents: crate::agent_runs::AgentService,
    /// The cluster store, when `[cluster] redis_url` is set: async runs, results and webhooks go through Redis.
    pub(crate) cluster: Option<crate::cluster::Cluster>,
    /// The second wall around this process, shown by `/healthz`; set once by the front end after start-up.
    pub(crate) confinement: std::sync::OnceLock<wasmagent_confine::Status>,
    /// Live sessions (`/v1/sessions`), each visible only to its owner.
    pub(crate) sessions: crate::sessions::Sessions,
    /// Session snapshots (`POST /v1/sessions/{id}/snapshot`), each visible only to its owner.
    pub(crate) snapshots: crate::snapshots::Snapshots,
    /// What the server may hold of snapshots (`[snapshots]`).
    pub(crate) snapshot_config: crate::snapshots::SnapshotConfig,
    /// What learning a grant needs (`"learn": true`, `POST /v1/approvals`): the egress configuration and the tools.
    pub(crate) learning: crate::learn::Learning,
    /// Whether `POST /v1/runs` takes `"learn": true` (`allow_learn`).
    pub(crate) allow_learn: bool,
    /// Approvals waiting for their subject's next run (`POST /v1/approvals`).
    pub(crate) approvals: crate::approvals::Approvals,
}

/// The operator's session limits, with `max_sessions` kept to the pool slots runs leave free (at least one).
fn session_limits(config: &ServerConfig) -> wasmagent::SessionLimits {
    let free = (config.pool_slots as usize).saturating_sub(config.max_concurrent_runs).max(1);
    wasmagent::SessionLimits { max_sessions: config.sessions.max_sessions.min(free), ..config.sessions }
}

impl AppState {
    /// Builds the state: the sandbox (with the operator's egress configuration), the maximum manifest checked
    /// against the ceilings, the keys, the limiter (connecting to Redis when configured) and the webhooks.
    pub async fn new(config: &ServerConfig, insecure_no_auth: bool) -> Result<Self, String> {
        config.validate()?;
        let egress =
            EgressConfig::load(config.egress_config.as_deref(), &config.allow_private).map_err(|e| e.to_string())?;
        let toolbox = match &config.tools {
            Some(path) => {
                let options = ToolboxOptions {
                    ceilings: config.ceilings.clone(),
                    egress: egress.clone(),
                    cache_dir: wasmagent::default_cache_dir(),
                };
                Some(Toolbox::load(path, &options).map_err(|e| format!("tools: {e}"))?)
            }
            None => None,
        };
        let mut tools = toolbox.as_ref().map_or_else(ToolRegistry::new, |t| t.registry().clone());
        if let Some(browser) = &config.browser {
            wasmagent_browser::BrowserTools::new(
                browser.clone(),
                egress.clone(),
                Arc::new(wasmagent_egress::SystemResolver),
            )
            .map_err(|e| format!("browser: {e}"))?
            .register(&mut tools)
            .map_err(|e| format!("browser: {e}"))?;
        }
        let max_cache_bytes = wasmagent::default_max_cache_bytes().map_err(|e| e.to_string())?;
        let python_engine = match (&config.python.engine, &config.python.engine_digest) {
            (Some(path), Some(digest)) => {
                Some(wasmagent::PythonEngine::from_file(path, digest).map_err(|e| format!("[python] {e}"))?)
            }
            _ => None,
        };
        let sandbox_builder = |tools: &ToolRegistry| {
            let builder = match &python_engine {
                Some(engine) => Sandbox::builder().python_engine(engine.clone()),
                None => Sandbox::builder(),
            };
            builder
                .ceilings(config.ceilings.clone())
                .cache_dir(wasmagent::default_cache_dir())
                .max_cache_bytes(max_cache_bytes)
                .pool_slots(config.pool_slots)
                .session_limits(session_limits(config))
                .egress(egress.clone())
                .tools(tools.clone())
        };
        let mut builder = sandbox_builder(&tools);
        let audit = match (&config.audit.log, &config.audit.key_file) {
            (Some(log), Some(key_file)) => {
                let key = SecretKey::from_file(key_file).map_err(|e| format!("audit.key_file: {e}"))?;
                // Two writers of one file: each append locks the file and chains onto its last line.
                builder = builder.audit_log(AuditLog::new(log, key.clone()));
                Some(Arc::new(AuditLog::new(log, key)))
            }
            _ => None,
        };
        let sandbox = Arc::new(builder.build().map_err(|e| format!("cannot start the sandbox: {e}"))?);
        let max_manifest =
            sandbox.resolve(&config.max_manifest, Path::new("/")).map_err(|e| format!("max_manifest: {e}"))?;
        let mcp = if config.mcp.enabled {
            let options = McpOptions { expose_tools: config.mcp.expose_tools };
            let server = match &config.mcp.manifest {
                None => CodeModeServer::new(sandbox.clone(), max_manifest.clone(), &tools, options),
                Some(given) => {
                    let base = crate::policy::request_manifest(sandbox.ceilings(), &max_manifest, given.clone())
                        .map_err(|e| match e {
                            crate::policy::PolicyError::Invalid(m) => format!("mcp.manifest: {m}"),
                            crate::policy::PolicyError::Exceeds { message, .. } => {
                                format!("mcp.manifest must narrow max_manifest: {message}")
                            }
                        })?;
                    let escalation =
                        Escalation::new(given.clone(), &base, max_manifest.clone(), egress.clone(), PathBuf::from("/"))
                            .map_err(|e| format!("mcp.manifest: {e}"))?;
                    let escalation = match &audit {
                        Some(log) => escalation.audit_log(log.clone()),
                        None => escalation,
                    };
                    CodeModeServer::new(sandbox.clone(), base, &tools, options).with_escalation(Arc::new(escalation))
                }
            };
            let http = HttpOptions { allowed_hosts: config.mcp.allowed_hosts.clone(), ..HttpOptions::default() };
            Some((server, http))
        } else {
            None
        };
        let agents = crate::agent_runs::AgentService::new(&config.agent, &sandbox, &tools, audit.clone(), |gated| {
            // Tools that need approval are gated only for agent runs: their own sandbox, in the same audit log.
            let mut builder = sandbox_builder(gated);
            if let (Some(log), Some(key_file)) = (&config.audit.log, &config.audit.key_file) {
                let key = SecretKey::from_file(key_file).map_err(|e| format!("audit.key_file: {e}"))?;
                builder = builder.audit_log(AuditLog::new(log, key));
            }
            builder.build().map_err(|e| format!("cannot start the agent sandbox: {e}"))
        })?;
        let learning = crate::learn::Learning { egress: egress.clone(), tools: tools.clone() };
        let auth = Authenticator::new(&config.auth, insecure_no_auth)?;
        let limiter: Box<dyn RateLimiter> = match &config.rate_limit.redis_url {
            Some(url) => Box::new(
                RedisLimiter::connect(
                    url,
                    &config.rate_limit.redis_prefix,
                    Duration::from_millis(config.rate_limit.redis_timeout_ms),
                )
                .await
                .map_err(|e| e.to_string())?,
            ),
            None => Box::new(MemoryLimiter::new()),
        };
        let webhooks = if config.webhooks.urls.is_empty() {
            None
        } else {
            let var = config.webhooks.secret_env.as_deref().unwrap_or_default();
            let secret = std::env::var(var).map_err(|_| format!("webhooks.secret_env: {var} is not set"))?;
            let egress = wasmagent::egress::Egress::new(egress).map_err(|e| e.to_string())?;
            let mut webhook_config =
                crate::webhook::WebhookConfig::new(config.webhooks.urls.clone(), secret.into_bytes());
            webhook_config.max_attempts = config.webhooks.max_attempts;
            webhook_config.max_pending = config.webhooks.max_pending_deliveries;
            Some(Webhooks::new(webhook_config, egress).map_err(|e| format!("webhooks: {e}"))?)
        };
        let cluster = match &config.cluster.redis_url {
            Some(_) => Some(crate::cluster::Cluster::new(&config.cluster, config.max_stored_run_bytes)?),
            None => None,
        };
        Ok(AppState {
            sandbox,
            mcp,
            _toolbox: toolbox,
            max_manifest,
            auth,
            limiter,
            limits: Limits {
                requests_per_minute: config.rate_limit.requests_per_minute,
                concurrent_runs: config.rate_limit.concurrent_runs,
            },
            run_slots: Arc::new(Semaphore::new(config.max_concurrent_runs)),
            queued: AtomicUsize::new(0),
            max_queued: config.max_queued_runs,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            request_body_timeout: Duration::from_millis(config.request_body_timeout_ms),
            request_header_timeout: Duration::from_millis(config.request_header_timeout_ms),
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
            max_body_bytes: config.max_body_bytes,
            metrics: Metrics::default(),
            store: Mutex::new(RunStore::new(config.max_stored_runs, config.max_stored_run_bytes)),
            webhooks,
            pending_async: AtomicUsize::new(0),
            audit,
            agents,
            cluster,
            sessions: Default::default(),
            snapshots: Default::default(),
            snapshot_config: config.snapshots,
            learning,
            allow_learn: config.allow_learn,
            approvals: Default::default(),
            confinement: std::sync::OnceLock::new(),
        })
    }

    /// Records how the host process is confined (`wasmagent_confine`), for `/healthz`. Only the first call counts.
    pub fn set_confinement(&self, status: wasmagent_confine::Status) {
        let _ = self.confinement.set(status);
    }

    /// The caller, holding `scope`, or 401/403.
    pub(crate) fn authorize(&self, headers: &HeaderMap, scope: &str) -> Result<Principal, ApiError> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.auth.authorize(text("authorization"), text("x-api-key"), scope).map_err(|e: AuthError| e.into())
    }
}

/// Async runs by id, each visible only to its owner. Bounded by count (`max_stored_runs`) and by bytes
/// (`max_stored_run_bytes`, a finished run weighing the length of its `GET /v1/runs/{id}` JSON): past either bound
/// the oldest finished runs are dropped first. Queued and running entries are never dropped; they weigh only their
/// id and owner until they finish.
pub(crate) struct RunStore {
    runs: HashMap<String, StoredRun>,
    order: VecDeque<String>,
    cap: usize,
    max_bytes: usize,
    bytes: usize,
}

struct StoredRun {
    owner: String,
    status: RunStatus,
    /// What this entry counts against `max_bytes`.
    bytes: usize,
}

/// What a queued or running entry weighs: its status JSON without a report is well under this.
const PENDING_ENTRY_BYTES: usize = 256;

impl RunStore {
    pub(crate) fn new(cap: usize, max_bytes: usize) -> Self {
        RunStore { runs: HashMap::new(), order: VecDeque::new(), cap: cap.max(1), max_bytes, bytes: 0 }
    }

    /// Records a queued run of `owner`; returns its new id.
    pub(crate) fn insert(&mut self, owner: &str) -> String {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            bytes = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                .to_le_bytes();
        }
        let id = hex::encode(bytes);
        let weight = PENDING_ENTRY_BYTES + owner.len();
        self.make_room(1, weight);
        let status = RunStatus { id: id.clone(), status: "queued".into(), report: None, error: None };
        self.runs.insert(id.clone(), StoredRun { owner: owner.to_owned(), status, bytes: weight });
        self.bytes += weight;
        self.order.push_back(id.clone());
        id
    }

    pub(crate) fn set_running(&mut self, id: &str) {
        if let Some(run) = self.runs.get_mut(id) {
            run.status.status = "running".into();
        }
    }

    /// Records how run `id` ended. A report that alone weighs more than `max_stored_run_bytes` is not kept: the
    /// run is `done` with an `error` saying so (its webhook delivery still carries it).
    pub(crate) fn finish(&mut self, id: &str, outcome: Result<RunReport, ApiError>) {
        let Some(mut run) = self.runs.remove(id) else {
            return;
        };
        self.bytes -= run.bytes;
        match outcome {
            Ok(report) => {
                run.status.status = "done".into();
                run.status.report = Some(report);
            }
            Err(error) => {
                run.status.status = "failed".into();
                run.status.error = Some(error.message().to_owned());
            }
        }
        let mut weight = serialized_len(&run.status) + run.owner.len();
        if weight > self.max_bytes {
            let error = format!(
                "the report ({weight} bytes as JSON) is larger than max_stored_run_bytes ({} bytes) and was not kept",
                self.max_bytes
            );
            run.status.report = None;
            run.status.error = Some(error);
            weight = serialized_len(&run.status) + run.owner.len();
        }
        // Put the entry back before making room, so that it can never be its own victim.
        run.bytes = weight;
        self.bytes += weight;
        self.runs.insert(id.to_owned(), run);
        self.make_room(0, 0);
    }

    pub(crate) fn get(&self, id: &str, owner: &str) -> Option<RunStatus> {
        self.runs.get(id).filter(|run| run.owner == owner).map(|run| run.status.clone())
    }

    /// Drops the oldest finished runs until `entries` more entries weighing `bytes` fit under both bounds, or no
    /// finished run is left to drop (the last one finished is dropped last).
    fn make_room(&mut self, entries: usize, bytes: usize) {
        while self.order.len() + entries > self.cap || self.bytes + bytes > self.max_bytes {
            let finished = self.order.iter().position(|id| {
                self.runs.get(id).is_some_and(|r| r.status.status == "done" || r.status.status == "failed")
            });
            match finished.and_then(|i| self.order.remove(i)) {
                Some(old) => {
                    if let Some(run) = self.runs.remove(&old) {
                        self.bytes -= run.bytes;
                    }
                }
                None => break,
            }
        }
    }

    /// Bytes the stored runs weigh now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

fn serialized_len(status: &RunStatus) -> usize {
    // Serialising plain data into a byte counter cannot fail; if it ever did, count the entry as too big to keep.
    let mut counter = ByteCounter(0);
    match serde_json::to_writer(&mut counter, status) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX / 2,
    }
}

/// Counts what is written to it, so a report is measured without holding a second copy of it.
pub(crate) struct ByteCounter(pub(crate) usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stdout_bytes: usize) -> RunReport {
        let manifest = wasmagent::EffectiveManifest::deny_all();
        let error = wasmagent::ErrorInfo { kind: wasmagent::ErrorKind::Internal, message: String::new() };
        let mut report = RunReport::refused("js", error, &manifest, "sha256:00");
        report.stdout = "x".repeat(stdout_bytes);
        report
    }

    #[test]
    fn finished_runs_are_dropped_oldest_first_past_the_byte_bound() {
        let mut store = RunStore::new(10_000, 100_000);
        let ids: Vec<String> = (0..5).map(|_| store.insert("alice")).collect();
        for id in &ids {
            store.finish(id, Ok(report(30_000)));
        }
        assert!(store.bytes() <= 100_000, "{} bytes kept", store.bytes());
        assert!(store.get(&ids[0], "alice").is_none() && store.get(&ids[1], "alice").is_none(), "oldest dropped");
        for id in &ids[2..] {
            let run = store.get(id, "alice").unwrap_or_else(|| panic!("{id} was dropped"));
            assert_eq!(run.report.map(|r| r.stdout.len()), Some(30_000));
        }
    }

    #[test]
    fn queued_runs_are_never_dropped_and_a_report_larger_than_the_bound_is_not_kept() {
        let mut store = RunStore::new(10_000, 50_000);
        let queued = store.insert("alice");
        let big = store.insert("alice");
        store.finish(&big, Ok(report(60_000)));
        let run = store.get(&big, "alice").unwrap_or_else(|| panic!("the run itself is kept"));
        assert_eq!(run.status, "done");
        assert!(run.report.is_none());
        assert!(run.error.as_deref().is_some_and(|e| e.contains("max_stored_run_bytes")), "{:?}", run.error);
        assert_eq!(store.get(&queued, "alice").map(|r| r.status), Some("queued".into()));
        assert!(store.bytes() <= 50_000);
    }
}
