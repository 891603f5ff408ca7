//! wasmagent over HTTP (`wasmagent serve`): `POST /v1/runs` (sync or async), `GET /v1/runs/{id}`, `/mcp` (code
//! mode over streamable HTTP), `/v1/agent-runs` (agent tasks: JSON, SSE with resumption, approvals, async),
//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.
//!
//! It owns the service around the sandbox: configuration (`server.toml`), authentication (JWT, API keys), the
//! operator's maximum manifest that every request may only narrow, per-subject rate limits (memory or Redis, both
//! failing closed), a bounded run queue, async runs with signed webhooks, metrics, CORS and graceful shutdown.
//!
//! It must not run guest code itself or decide what a manifest means: runs go to [`wasmagent::Sandbox`], manifests
//! to `wasmagent-manifest`.

mod agent_runs;
mod api;
mod approvals;
mod auth;
mod cluster;
pub mod config;
pub mod console;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod learn;
mod listen;
mod mcp;
mod metrics;
mod policy;
pub mod ratelimit;
mod runs;
mod sessions;
mod snapshots;
mod state;
pub mod webhook;

pub use agent_runs::{AgentRunRequestBody, AgentRunStatus, ApprovalAnswer};
pub use api::{AsyncAccepted, RunRequestBody, RunStatus, openapi_json};
pub use auth::{
    AuthError, Authenticator, Principal, SCOPE_ADMIN, SCOPE_AGENTS, SCOPE_APPROVALS, SCOPE_READ, SCOPE_WRITE,
};
pub use config::{AgentModelConfig, AgentRunsConfig, AuditConfig, McpConfig, ServerConfig};
pub use error::ErrorBody;
pub use sessions::{SessionRequestBody, SessionRunBody};
pub use snapshots::{SnapshotConfig, SnapshotInfo};
pub use state::AppState;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Liveness, and how the host process is confined: `{"status":"ok","confinement":{...}}` (`null` when the front
/// end did not confine it, as in tests that build the state directly).
async fn healthz(State(state): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok", "confinement": state.confinement.get() }))
}

/// The application's routes over `state`, or which of `cors_allowed_origins` is not an origin.
pub fn router(state: Arc<AppState>, cors_allowed_origins: &[String]) -> Result<Router, String> {
    let origins = config::cors_origins(cors_allowed_origins)?;
    let mut router = Router::new()
        .route("/v1/runs", post(runs::create_run))
        .route("/v1/approvals", post(approvals::create))
        .route("/v1/runs/{id}", get(runs::get_run))
        .route("/v1/webhooks/dead-letters", get(runs::dead_letters))
        .route("/v1/manifests/check", post(console::check_manifest))
        .route("/v1/render/markdown", post(console::render_markdown))
        .route("/console", get(console::page))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/console/frame", get(console::frame))
        .route("/v1/sessions", post(sessions::create))
        .route("/v1/sessions/{id}", get(sessions::status).delete(sessions::close))
        .route("/v1/sessions/{id}/runs", post(sessions::run))
        .route("/v1/sessions/{id}/fork", post(sessions::fork))
        .route("/v1/sessions/{id}/snapshot", post(sessions::snapshot))
        .route("/v1/snapshots/{id}", delete(sessions::drop_snapshot))
        .route("/v1/agent-runs", post(agent_runs::create))
        .route("/v1/agent-runs/{id}", get(agent_runs::status))
        .route("/v1/agent-runs/{id}/events", get(agent_runs::events))
        .route("/v1/agent-runs/{id}/approvals", post(agent_runs::approve))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi_json()) }))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state.clone());
    if let Some((server, options)) = &state.mcp {
        let service = wasmagent_mcp::http_service(server.clone(), options);
        router = router.merge(
            Router::new()
                .nest_service("/mcp", service)
                .layer(axum::middleware::from_fn_with_state(state.clone(), mcp::gate))
                // The MCP service reads its own bodies: each wait for more of one ends after the body timeout.
                .layer(RequestBodyTimeoutLayer::new(state.request_body_timeout)),
        );
    }
    if !origins.is_empty() {
        // Never a wildcard, never credentials: only the listed origins, with bearer tokens sent explicitly.
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .allow_credentials(false),
        );
    }
    Ok(router)
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some(cluster) = &state.cluster
        && let Err(error) = cluster.ready().await
    {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {error}"));
    }
    if state.run_slots.available_permits() == 0 && state.queued.load(Ordering::SeqCst) >= state.max_queued {
        (StatusCode::SERVICE_UNAVAILABLE, "busy".to_owned())
    } else {
        (StatusCode::OK, "ready".to_owned())
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.encode(state.sandbox.live_sessions(), state.snapshots.bytes()),
    )
}

/// Serves `state` on `listener` until `shutdown` completes, then stops accepting connections and lets in-flight
/// requests, async runs and webhook deliveries finish, for at most `shutdown_timeout_ms` from the signal in all.
/// Whatever is still running then is abandoned: this returns, and the caller exits (runs still on the blocking
/// pool end with the process, and async runs not yet finished are lost, as documented). A cluster node
/// (`[cluster]`) first stops taking runs and hands back or fails the runs it still holds (`cluster::Workers::stop`).
/// A connection whose request headers (or, kept alive, whose next request) do not arrive within
/// `request_header_timeout_ms` is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    cors_allowed_origins: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone(), cors_allowed_origins)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // In a cluster, this node takes queued runs and webhook deliveries from Redis until shutdown.
    let workers = cluster::Workers::start(&state);
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<tokio::time::Instant>();
    let server = listen::serve_http1(listener, app, state.request_header_timeout, async move {
        shutdown.await;
        let _ = signalled.send(tokio::time::Instant::now());
    });
    let mut server = std::pin::pin!(server);
    let deadline = tokio::select! {
        () = &mut server => tokio::time::Instant::now() + state.shutdown_timeout,
        Ok(at) = on_signal => {
            let deadline = at + state.shutdown_timeout;
            match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(()) => {}
                Err(_) => tracing::warn!(
                    timeout_ms = state.shutdown_timeout.as_millis() as u64,
                    "shutdown: requests still in flight after shutdown_timeout_ms are abandoned"
                ),
            }
            deadline
        }
    };
    // A cluster node stops taking runs, finishes those it holds or hands them back (deliveries stay in Redis).
    if let Some(workers) = workers {
        workers.stop(deadline).await;
    }
    // Async runs, then the webhook deliveries they started (including retries), within what is left.
    let pending = |state: &AppState| {
        state.pending_async.load(Ordering::SeqCst) + state.webhooks.as_ref().map_or(0, |w| w.pending())
    };
    while pending(&state) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if pending(&state) > 0 {
        tracing::warn!(pending = pending(&state), "shutdown: async runs and webhook deliveries still pending are lost");
    }
    Ok(())
}
