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
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmagent::{EffectiveManifest, EgressConfig, RunReport, Sandbox, ToolRegistry};
use wasmagent_mcp::{CodeModeServer, HttpOptions, McpOptions};
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
    pub(crate) max_body_bytes: usize,
    pub(crate) metrics: Metrics,
    pub(crate) store: Mutex<RunStore>,
    pub(crate) webhooks: Option<Webhooks>,
    pub(crate) pending_async: AtomicUsize,
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
        let tools = toolbox.as_ref().map_or_else(ToolRegistry::new, |t| t.registry().clone());
        let sandbox = Arc::new(
            Sandbox::builder()
                .ceilings(config.ceilings.clone())
                .cache_dir(wasmagent::default_cache_dir())
                .pool_slots(config.pool_slots)
                .egress(egress.clone())
                .tools(tools.clone())
                .build()
                .map_err(|e| format!("cannot start the sandbox: {e}"))?,
        );
        let max_manifest =
            sandbox.resolve(&config.max_manifest, Path::new("/")).map_err(|e| format!("max_manifest: {e}"))?;
        let mcp = config.mcp.enabled.then(|| {
            let options = McpOptions { expose_tools: config.mcp.expose_tools };
            let server = CodeModeServer::new(sandbox.clone(), max_manifest.clone(), &tools, options);
            let http = HttpOptions { allowed_hosts: config.mcp.allowed_hosts.clone(), ..HttpOptions::default() };
            (server, http)
        });
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
            Some(Webhooks::new(webhook_config, egress).map_err(|e| format!("webhooks: {e}"))?)
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
            max_body_bytes: config.max_body_bytes,
            metrics: Metrics::default(),
            store: Mutex::new(RunStore::new(config.max_stored_runs)),
            webhooks,
            pending_async: AtomicUsize::new(0),
        })
    }

    /// The caller, holding `scope`, or 401/403.
    pub(crate) fn authorize(&self, headers: &HeaderMap, scope: &str) -> Result<Principal, ApiError> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.auth.authorize(text("authorization"), text("x-api-key"), scope).map_err(|e: AuthError| e.into())
    }
}

/// Async runs by id, each visible only to its owner; the oldest finished runs are dropped beyond the cap.
pub(crate) struct RunStore {
    runs: HashMap<String, (String, RunStatus)>,
    order: VecDeque<String>,
    cap: usize,
}

impl RunStore {
    fn new(cap: usize) -> Self {
        RunStore { runs: HashMap::new(), order: VecDeque::new(), cap: cap.max(1) }
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
        while self.order.len() >= self.cap {
            let evictable = self
                .order
                .iter()
                .position(|id| self.runs.get(id).is_some_and(|(_, s)| s.status == "done" || s.status == "failed"));
            match evictable.and_then(|i| self.order.remove(i)) {
                Some(old) => {
                    self.runs.remove(&old);
                }
                None => break,
            }
        }
        let status = RunStatus { id: id.clone(), status: "queued".into(), report: None, error: None };
        self.runs.insert(id.clone(), (owner.to_owned(), status));
        self.order.push_back(id.clone());
        id
    }

    pub(crate) fn set_running(&mut self, id: &str) {
        if let Some((_, status)) = self.runs.get_mut(id) {
            status.status = "running".into();
        }
    }

    pub(crate) fn finish(&mut self, id: &str, outcome: Result<RunReport, ApiError>) {
        if let Some((_, status)) = self.runs.get_mut(id) {
            match outcome {
                Ok(report) => {
                    status.status = "done".into();
                    status.report = Some(report);
                }
                Err(error) => {
                    status.status = "failed".into();
                    status.error = Some(error.message().to_owned());
                }
            }
        }
    }

    pub(crate) fn get(&self, id: &str, owner: &str) -> Option<RunStatus> {
        self.runs.get(id).filter(|(o, _)| o == owner).map(|(_, s)| s.clone())
    }
}
