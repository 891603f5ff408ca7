//! `POST /v1/runs`, `GET /v1/runs/{id}` and `GET /v1/webhooks/dead-letters`: authenticate, rate-limit, check the
//! manifest against the server's maximum, wait for a run slot (bounded queue), run on the blocking pool, answer.

use crate::api::{AsyncAccepted, RunRequestBody, RunStatus};
use crate::auth::{Principal, SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE};
use crate::error::ApiError;
use crate::policy::{self, PolicyError};
use crate::ratelimit::{Admission, LimitReason, RunSlot, WindowState};
use crate::state::AppState;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::OwnedSemaphorePermit;
use wasmagent::{EffectiveManifest, ErrorInfo, ErrorKind, Language, ManifestCeilings, RunReport, RunRequest};

/// Runs code, or queues it with `"async": true`.
#[utoipa::path(post, path = "/v1/runs", request_body = RunRequestBody,
    responses(
        (status = 200, description = "The run report", body = wasmagent::RunReport),
        (status = 202, description = "Queued (async)", body = AsyncAccepted),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 408, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn create_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Credentials and admission come from the headers alone: nobody makes the server read a body unauthenticated,
    // and an authenticated caller's uploads in progress count against its concurrent runs.
    let principal = state.authorize(&headers, SCOPE_WRITE)?;
    let (slot, window) = admit(&state, &principal).await?;
    let body = read_body(&state, &headers, body).await.map_err(|e| e.with_headers(rate_headers(&window)))?;
    let mut request: RunRequestBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not a valid run: {e}")))?;
    let run_async = request.run_async;
    if request.learn && !state.allow_learn {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "learn_disabled",
            "this server does not learn manifests (the operator has not set allow_learn)",
        ));
    }
    if request.learn && run_async {
        return Err(ApiError::invalid("`learn` is for runs without `async`"));
    }
    // Approvals waiting for this subject (`POST /v1/approvals`) widen this run's manifest, and are used up once it
    // is accepted; a run queued for any node of a cluster does not take them.
    let approved =
        if run_async && state.cluster.is_some() { Vec::new() } else { state.approvals.take(&principal.subject) };
    if !approved.is_empty() {
        request.manifest = Some(crate::approvals::widen(request.manifest.take(), &approved));
    }
    let learn = request.learn.then(|| request.manifest.clone().unwrap_or_default());
    let (manifest, run) = match prepare(state.sandbox.ceilings(), &state.max_manifest, request) {
        Ok(prepared) => prepared,
        Err(error) => {
            state.approvals.restore(&principal.subject, approved);
            return Err(error);
        }
    };
    let used = approved.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(",");
    let mut response = if let Some(given) = learn {
        let report = execute(&state, manifest.clone(), run, slot, true).await?;
        Json(crate::learn::learned(&state, &state.learning, &given, &manifest, &report)?).into_response()
    } else if let (true, Some(cluster)) = (run_async, &state.cluster) {
        // Checked here, queued for any node; this subject's concurrent-run slot ends with the submission.
        drop(slot);
        cluster.submit(&principal.subject, &body, &manifest).await.map_err(|e| e.with_headers(rate_headers(&window)))?
    } else if run_async {
        let id = state.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(&principal.subject);
        let accepted = AsyncAccepted { id: id.clone(), status: "queued".into(), url: format!("/v1/runs/{id}") };
        spawn_async(state.clone(), id, manifest, run, slot);
        (StatusCode::ACCEPTED, Json(accepted)).into_response()
    } else {
        let report = execute(&state, manifest, run, slot, true).await?;
        Json(report).into_response()
    };
    response.headers_mut().extend(rate_headers(&window));
    if let Ok(used) = HeaderValue::from_str(&used)
        && !used.is_empty()
    {
        response.headers_mut().insert("wasmagent-approvals", used);
    }
    Ok(response)
}

/// The request body, at most `max_body_bytes` (413) and all of it within `request_body_timeout` of the headers
/// (408, and the connection is closed).
pub(crate) async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    read_body_within(state, headers, body, state.max_body_bytes).await
}

/// [`read_body`] with another size limit than `max_body_bytes`.
pub(crate) async fn read_body_within(
    state: &AppState,
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::invalid(format!("cannot read the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > limit {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(bytes))
    };
    match tokio::time::timeout(state.request_body_timeout, read).await {
        Ok(read) => read,
        Err(_) => {
            state.metrics.reject("body_timeout");
            let waited = state.request_body_timeout.as_millis();
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request body did not arrive within {waited} ms (request_body_timeout_ms)"),
            )
            .with_header("connection", "close".into()))
        }
    }
}

/// The status of an async run (only its owner sees it).
#[utoipa::path(get, path = "/v1/runs/{id}", params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = RunStatus), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RunStatus>, ApiError> {
    let principal = state.authorize(&headers, SCOPE_READ)?;
    if let Some(cluster) = &state.cluster {
        return cluster.status(&id, &principal.subject).await.map(Json);
    }
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
    if let Some(cluster) = &state.cluster {
        return Ok(Json(cluster.dead_letters().await?).into_response());
    }
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
    let manifest = request_manifest(ceilings, max, request.manifest.unwrap_or_default())?;
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

/// A request's manifest resolved against `ceilings`, narrowing `max`, or why not (400 / 403 naming the field).
pub(crate) fn request_manifest(
    ceilings: &ManifestCeilings,
    max: &EffectiveManifest,
    manifest: wasmagent::CapabilityManifest,
) -> Result<EffectiveManifest, ApiError> {
    policy::request_manifest(ceilings, max, manifest).map_err(|e| match e {
        PolicyError::Invalid(m) => ApiError::invalid(m),
        PolicyError::Exceeds { field, message } => ApiError::exceeds(field, message),
    })
}

/// A server-wide run slot: at once if one is free, else after waiting in the bounded queue, else 503. Accepted
/// async runs (`queue_bound` false) always wait their turn, up to the request timeout. `/mcp` runs take theirs here
/// too.
pub(crate) async fn server_slot(state: &AppState, queue_bound: bool) -> Result<OwnedSemaphorePermit, ApiError> {
    if let Ok(permit) = state.run_slots.clone().try_acquire_owned() {
        return Ok(permit);
    }
    if state.queued.fetch_add(1, Ordering::SeqCst) >= state.max_queued && queue_bound {
        state.queued.fetch_sub(1, Ordering::SeqCst);
        state.metrics.reject("busy");
        return Err(ApiError::busy("every run slot is busy and the queue is full", 1));
    }
    // Leaves the queue however the wait ends, also when the caller goes away and this future is dropped.
    struct Queued<'a>(&'a AppState);
    impl Drop for Queued<'_> {
        fn drop(&mut self) {
            self.0.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let queued = Queued(state);
    let waited = tokio::time::timeout(state.request_timeout, state.run_slots.clone().acquire_owned()).await;
    drop(queued);
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
    execute_with_permit(state, permit, manifest, run, slot).await
}

/// [`execute`] in a server-wide slot already taken.
pub(crate) async fn execute_with_permit(
    state: &Arc<AppState>,
    permit: OwnedSemaphorePermit,
    manifest: EffectiveManifest,
    run: RunRequest,
    slot: RunSlot,
) -> Result<RunReport, ApiError> {
    let in_flight = state.metrics.start_run();
    let sandbox = state.sandbox.clone();
    let audit = state.audit.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let result = sandbox.run(&manifest, &run);
        // The sandbox records every run that produced a report; one the kernel refused is recorded here.
        if let (Err(wasmagent::Error::Kernel(error)), Some(log)) = (&result, &audit) {
            let kernel = sandbox.kernel(run.code().language()).name();
            let info = ErrorInfo {
                kind: ErrorKind::Internal,
                message: format!("the {kernel} kernel refused the run: {error}"),
            };
            let report = RunReport::refused(kernel, info, &manifest, run.code_digest());
            if let Err(record) = log.append(&report) {
                tracing::error!(%record, %error, "the audit record of a run the kernel refused could not be written");
            }
        }
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
        let body = state.webhooks.as_ref().and_then(|_| webhook_body(&id, &outcome));
        state.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner).finish(&id, outcome);
        if let (Some(webhooks), Some(body)) = (&state.webhooks, body) {
            webhooks.deliver(&id, body);
        }
        state.pending_async.fetch_sub(1, Ordering::SeqCst);
    });
}

/// What a webhook delivery says about an async run: `GET /v1/runs/{id}`'s answer, with the id as `run_id`.
#[derive(Serialize)]
struct RunFinished<'a> {
    run_id: &'a str,
    /// `done` (with the report) or `failed` (the run could not start or the kernel refused it; with the error).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<&'a RunReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

pub(crate) fn webhook_body(id: &str, outcome: &Result<RunReport, ApiError>) -> Option<Vec<u8>> {
    let finished = match outcome {
        Ok(report) => RunFinished { run_id: id, status: "done", report: Some(report), error: None },
        Err(error) => RunFinished { run_id: id, status: "failed", report: None, error: Some(error.message()) },
    };
    match serde_json::to_vec(&finished) {
        Ok(body) => Some(body),
        Err(error) => {
            tracing::error!(run = %id, %error, "the webhook body could not be serialised; nothing is delivered");
            None
        }
    }
}
