//! `POST /v1/runs`, `GET /v1/runs/{id}` and `GET /v1/webhooks/dead-letters`: authenticate, rate-limit, check the
//! manifest against the server's maximum, wait for a run slot (bounded queue), run on the blocking pool, answer.

use crate::api::{AsyncAccepted, RunRequestBody, RunStatus};
use crate::auth::{Principal, SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE};
use crate::error::ApiError;
use crate::policy::{self, PolicyError};
use crate::ratelimit::{Admission, LimitReason, RunSlot, WindowState};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::OwnedSemaphorePermit;
use wasmagent::{EffectiveManifest, Language, ManifestCeilings, RunReport, RunRequest};

/// Runs code, or queues it with `"async": true`.
#[utoipa::path(post, path = "/v1/runs", request_body = RunRequestBody,
    responses(
        (status = 200, description = "The run report", body = wasmagent::RunReport),
        (status = 202, description = "Queued (async)", body = AsyncAccepted),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn create_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_request" };
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body is larger than {} bytes", state.max_body_bytes)
        } else {
            rejection.body_text()
        };
        ApiError::new(status, code, message)
    })?;
    let principal = state.authorize(&headers, SCOPE_WRITE)?;
    let (slot, window) = admit(&state, &principal).await?;
    let request: RunRequestBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not a valid run: {e}")))?;
    let run_async = request.run_async;
    let (manifest, run) = prepare(state.sandbox.ceilings(), &state.max_manifest, request)?;
    let mut response = if run_async {
        let id = state.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(&principal.subject);
        let accepted = AsyncAccepted { id: id.clone(), status: "queued".into(), url: format!("/v1/runs/{id}") };
        spawn_async(state.clone(), id, manifest, run, slot);
        (StatusCode::ACCEPTED, Json(accepted)).into_response()
    } else {
        let report = execute(&state, manifest, run, slot, true).await?;
        Json(report).into_response()
    };
    response.headers_mut().extend(rate_headers(&window));
    Ok(response)
}

/// The status of an async run (only its owner sees it).
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = RunStatus), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RunStatus>, ApiError> {
    let principal = state.authorize(&headers, SCOPE_READ)?;
    let store = state.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    store
        .get(&id, &principal.subject)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no run {id} of yours")))
}

/// Webhook deliveries that failed every attempt (scope `admin`: the URLs may carry tokens).
#[utoipa::path(get, path = "/v1/webhooks/dead-letters",
    responses((status = 200, description = "Failed deliveries", body = Object), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn dead_letters(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.authorize(&headers, SCOPE_ADMIN)?;
    let letters = state.webhooks.as_ref().map(|w| w.dead_letters()).unwrap_or_default();
    Ok(Json(letters).into_response())
}

/// The per-subject limits: a concurrent-run slot, or 429 / 503.
pub(crate) async fn admit(state: &AppState, principal: &Principal) -> Result<(RunSlot, WindowState), ApiError> {
    match state.limiter.admit(&principal.subject, state.limits).await {
        Ok(Admission::Allowed { slot, window }) => Ok((slot, window)),
        Ok(Admission::Limited { reason, window, retry_after_secs }) => {
            let (what, metric) = match reason {
                LimitReason::Rate => (format!("more than {} requests per minute", window.limit), "rate_limited"),
                LimitReason::Concurrency => {
                    (format!("more than {} runs at once", state.limits.concurrent_runs), "concurrency_limited")
                }
            };
            state.metrics.reject(metric);
            Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("rate limit: {what}"))
                .with_headers(rate_headers(&window))
                .with_header("retry-after", retry_after_secs.max(1).to_string()))
        }
        Err(unavailable) => {
            state.metrics.reject("limiter_unavailable");
            tracing::warn!(%unavailable, "refusing a request: the rate limiter cannot decide");
            Err(ApiError::busy(format!("{unavailable}; the request was refused, not run"), 1))
        }
    }
}

pub(crate) fn rate_headers(window: &WindowState) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("ratelimit-limit", window.limit),
        ("ratelimit-remaining", window.remaining),
        ("ratelimit-reset", window.reset_secs),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    headers
}

/// The effective manifest (resolved against `ceilings`, narrowing `max`) and the run request, or why not (400 / 403).
pub(crate) fn prepare(
    ceilings: &ManifestCeilings,
    max: &EffectiveManifest,
    request: RunRequestBody,
) -> Result<(EffectiveManifest, RunRequest), ApiError> {
    let manifest =
        policy::request_manifest(ceilings, max, request.manifest.unwrap_or_default()).map_err(|e| match e {
            PolicyError::Invalid(m) => ApiError::invalid(m),
            PolicyError::Exceeds { field, message } => ApiError::exceeds(field, message),
        })?;
    let source = |language: Language, default_name: &str| {
        let code = request.code.clone().ok_or_else(|| ApiError::invalid("`code` is required for this language"))?;
        if request.module.is_some() {
            return Err(ApiError::invalid("`module` is only for language wasm"));
        }
        Ok(RunRequest::source(request.name.clone().unwrap_or_else(|| default_name.into()), language, code))
    };
    let run = match request.language.as_str() {
        "js" | "javascript" => source(Language::Js, "main.js")?,
        "python" => source(Language::Python, "main.py")?,
        "wasm" => {
            if request.code.is_some() {
                return Err(ApiError::invalid("language wasm takes `module` (base64), not `code`"));
            }
            let module = request.module.as_deref().ok_or_else(|| ApiError::invalid("`module` (base64) is required"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(module)
                .map_err(|e| ApiError::invalid(format!("`module` is not valid base64: {e}")))?;
            RunRequest::wasm(request.name.clone().unwrap_or_else(|| "module.wasm".into()), bytes)
        }
        other => return Err(ApiError::invalid(format!("unknown language {other:?}; use js, python or wasm"))),
    };
    let run = run.with_args(request.args).with_stdin(request.stdin.unwrap_or_default().into_bytes());
    Ok((manifest, run))
}

/// A server-wide run slot: at once if one is free, else after waiting in the bounded queue, else 503. Accepted
/// async runs (`queue_bound` false) always wait their turn, up to the request timeout.
async fn server_slot(state: &AppState, queue_bound: bool) -> Result<OwnedSemaphorePermit, ApiError> {
    if let Ok(permit) = state.run_slots.clone().try_acquire_owned() {
        return Ok(permit);
    }
    if state.queued.fetch_add(1, Ordering::SeqCst) >= state.max_queued && queue_bound {
        state.queued.fetch_sub(1, Ordering::SeqCst);
        state.metrics.reject("busy");
        return Err(ApiError::busy("every run slot is busy and the queue is full", 1));
    }
    let waited = tokio::time::timeout(state.request_timeout, state.run_slots.clone().acquire_owned()).await;
    state.queued.fetch_sub(1, Ordering::SeqCst);
    match waited {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            state.metrics.reject("busy");
            Err(ApiError::busy("no run slot became free in time", 1))
        }
    }
}

/// Runs to the end on the blocking pool.
async fn execute(
    state: &Arc<AppState>,
    manifest: EffectiveManifest,
    run: RunRequest,
    slot: RunSlot,
    queue_bound: bool,
) -> Result<RunReport, ApiError> {
    let permit = server_slot(state, queue_bound).await?;
    let in_flight = state.metrics.start_run();
    let sandbox = state.sandbox.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let result = sandbox.run(&manifest, &run);
        drop((permit, slot, in_flight));
        result
    })
    .await;
    let report = match joined {
        Ok(Ok(report)) => report,
        Ok(Err(wasmagent::Error::Kernel(wasmagent::KernelError::Unavailable(m)))) => {
            return Err(ApiError::busy(m, 1));
        }
        Ok(Err(wasmagent::Error::Record { report, error })) => {
            tracing::error!(%error, "the run's audit record could not be written");
            *report
        }
        Ok(Err(other)) => return Err(ApiError::invalid(other.to_string())),
        Err(join) => {
            tracing::error!(%join, "a run task failed");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the run failed inside the server",
            ));
        }
    };
    state.metrics.record(&report);
    Ok(report)
}

fn spawn_async(state: Arc<AppState>, id: String, manifest: EffectiveManifest, run: RunRequest, slot: RunSlot) {
    state.pending_async.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        state.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).set_running(&id);
        let outcome = execute(&state, manifest, run, slot, false).await;
        let body = match &outcome {
            Ok(report) => serde_json::to_vec(report).ok(),
            Err(_) => None,
        };
        state.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).finish(&id, outcome);
        if let (Some(webhooks), Some(body)) = (&state.webhooks, body) {
            webhooks.deliver(&id, body);
        }
        state.pending_async.fetch_sub(1, Ordering::SeqCst);
    });
}
