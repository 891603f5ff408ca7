//! `/v1/sessions`: sandboxes kept between calls (`wasmagent::SandboxSession`), each visible only to the subject
//! that created it (404 for everyone else, as for a session that does not exist).
//!
//! `POST /v1/sessions` `{language, manifest?}` opens one (the manifest narrows the server's maximum, as for runs);
//! `POST /v1/sessions/{id}/runs` `{code, name?}` runs code in it and answers with the run report;
//! `POST /v1/sessions/{id}/fork` copies it into a new session; `POST /v1/sessions/{id}/snapshot` keeps a copy on
//! the server that `POST /v1/sessions` `{restore}` opens as a new session ([`crate::snapshots`]); `GET` says what
//! it is; `DELETE` closes it. The
//! live-session caps refuse a new session with 429 (the subject's cap) or 503 (the server's). A session that ended
//! (a trapped call, a session limit) is dropped at once, freeing its instance; its id then answers 410 with the
//! reason for a while (the last [`MAX_ENDED`] ended sessions are remembered).

use crate::auth::{Principal, SCOPE_READ, SCOPE_WRITE};
use crate::error::ApiError;
use crate::ratelimit::WindowState;
use crate::runs::{admit, rate_headers, read_body, request_manifest, server_slot};
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use wasmagent::{KernelError, Language, RunRequest, SandboxSession, SessionError, SessionInfo};

/// Ended sessions whose reason is kept for their owner's next request.
pub(crate) const MAX_ENDED: usize = 1024;

/// How often idle and expired sessions are swept, so an abandoned session does not hold its instance.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The body of `POST /v1/sessions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequestBody {
    /// `js` or `python`; may be left out with `restore` (the snapshot's language).
    pub language: Option<String>,
    /// The session's manifest; it may only narrow the server's maximum. Not with `restore`: a restored session
    /// runs under the manifest of the session its snapshot was taken from.
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<wasmagent::CapabilityManifest>,
    /// A snapshot id (`POST /v1/sessions/{id}/snapshot`): the new session starts with a copy of its state.
    pub restore: Option<String>,
}

/// The body of `POST /v1/sessions/{id}/runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRunBody {
    /// The code to run in the session.
    pub code: String,
    /// The name in stack traces (default `main.js` / `main.py`).
    pub name: Option<String>,
}

/// Ended sessions: id → (owner, why it ended), and their ids oldest first.
#[derive(Default)]
struct Ended {
    reasons: HashMap<String, (String, String)>,
    order: VecDeque<String>,
}

struct Entry {
    owner: String,
    session: Arc<Mutex<SandboxSession>>,
}

/// The server's live sessions, and the reasons of recently ended ones.
#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Entry>>,
    ended: Mutex<Ended>,
    sweeping: std::sync::OnceLock<()>,
}

impl Sessions {
    fn insert(&self, owner: &str, session: SandboxSession) -> SessionInfo {
        let info = session.info();
        let entry = Entry { owner: owner.to_owned(), session: Arc::new(Mutex::new(session)) };
        self.live.lock().unwrap_or_else(PoisonError::into_inner).insert(info.id.clone(), entry);
        info
    }

    /// The session `id` of `owner`; 410 with the reason when it ended, 404 when there is none of theirs.
    fn get(&self, id: &str, owner: &str) -> Result<Arc<Mutex<SandboxSession>>, ApiError> {
        if let Some(entry) = self.live.lock().unwrap_or_else(PoisonError::into_inner).get(id)
            && entry.owner == owner
        {
            return Ok(entry.session.clone());
        }
        let ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        match ended.reasons.get(id) {
            Some((who, reason)) if who == owner => Err(gone(id, reason)),
            _ => Err(not_found(id)),
        }
    }

    /// Drops session `id` (freeing its instance), remembering why it ended.
    fn retire(&self, id: &str, reason: String) {
        let Some(entry) = self.live.lock().unwrap_or_else(PoisonError::into_inner).remove(id) else {
            return;
        };
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        if ended.order.len() >= MAX_ENDED
            && let Some(oldest) = ended.order.pop_front()
        {
            ended.reasons.remove(&oldest);
        }
        ended.reasons.insert(id.to_owned(), (entry.owner, reason));
        ended.order.push_back(id.to_owned());
    }

    /// Ends and drops every session past one of its limits; a session in a call is looked at next time.
    fn sweep(&self) {
        let entries: Vec<(String, Arc<Mutex<SandboxSession>>)> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, e)| (id.clone(), e.session.clone()))
            .collect();
        for (id, session) in entries {
            let reason = match session.try_lock() {
                Ok(mut session) => session.expire().map(str::to_owned),
                Err(_) => None,
            };
            if let Some(reason) = reason {
                self.retire(&id, reason);
            }
        }
    }

    /// Starts the sweeper (once per server), which stops when the server's state is gone.
    fn start_sweeping(state: &Arc<AppState>) {
        let weak: Weak<AppState> = Arc::downgrade(state);
        state.sessions.sweeping.get_or_init(|| {
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    interval.tick().await;
                    let Some(state) = weak.upgrade() else { return };
                    state.sessions.sweep();
                }
            });
        });
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no session {id} of yours"))
}

fn gone(id: &str, reason: &str) -> ApiError {
    ApiError::new(StatusCode::GONE, "session_ended", format!("session {id} has ended: {reason}"))
}

fn session_error(error: SessionError) -> ApiError {
    match error {
        SessionError::TooManyForSubject(m) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_sessions", m).with_header("retry-after", "1".into())
        }
        SessionError::TooMany(m) => ApiError::busy(m, 1),
        SessionError::Language(_) => ApiError::invalid(error.to_string()),
        SessionError::Kernel(KernelError::Unavailable(m)) => ApiError::busy(m, 1),
        SessionError::Kernel(KernelError::ForkUnsupported { .. }) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "fork_unsupported", error.to_string())
        }
        SessionError::Kernel(e) => ApiError::invalid(e.to_string()),
        other => ApiError::invalid(other.to_string()),
    }
}

fn join_error(join: tokio::task::JoinError) -> ApiError {
    tracing::error!(%join, "a session task failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the session call failed inside the server")
}

/// How a new session starts: empty under a manifest, or from a snapshot.
enum Start {
    Fresh(Box<wasmagent::EffectiveManifest>, Language),
    Restore(Arc<wasmagent::SessionSnapshot>),
}

fn language_name(language: Language) -> &'static str {
    match language {
        Language::Js => "js",
        Language::Python => "python",
        Language::Wasm => "wasm",
    }
}

/// Opens a session, empty or from a snapshot (`restore`).
#[utoipa::path(post, path = "/v1/sessions", request_body = SessionRequestBody,
    responses((status = 201, description = "The new session", body = Object),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = state.authorize(&headers, SCOPE_WRITE)?;
    let (slot, window) = admit(&state, &principal).await?;
    let body = read_body(&state, &headers, body).await.map_err(|e| e.with_headers(rate_headers(&window)))?;
    let request: SessionRequestBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not a valid session request: {e}")))?;
    let language = match request.language.as_deref() {
        Some("js" | "javascript") => Some(Language::Js),
        Some("python") => Some(Language::Python),
        Some(other) => return Err(ApiError::invalid(format!("sessions run js or python, not {other:?}"))),
        None => None,
    };
    let start = match (request.restore, language) {
        (Some(snapshot_id), language) => {
            if request.manifest.is_some() {
                return Err(ApiError::invalid(
                    "a restored session runs under its snapshot's manifest: leave `manifest` out with `restore`",
                ));
            }
            let snapshot = state.snapshots.get(&state.snapshot_config, &snapshot_id, &principal.subject)?;
            if let Some(language) = language
                && language != snapshot.language()
            {
                return Err(ApiError::invalid(format!(
                    "snapshot {snapshot_id} is of a {} session, not {}",
                    language_name(snapshot.language()),
                    language_name(language)
                )));
            }
            Start::Restore(snapshot)
        }
        (None, Some(language)) => {
            let manifest =
                request_manifest(state.sandbox.ceilings(), &state.max_manifest, request.manifest.unwrap_or_default())?;
            Start::Fresh(Box::new(manifest), language)
        }
        (None, None) => return Err(ApiError::invalid("a session needs a `language` (js or python) or a `restore`")),
    };
    Sessions::start_sweeping(&state);
    state.sessions.sweep();
    let sandbox = state.sandbox.clone();
    let subject = principal.subject.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let opened = match start {
            Start::Fresh(manifest, language) => sandbox.session_for(&subject, &manifest, language),
            Start::Restore(snapshot) => sandbox.restore_for(&subject, &snapshot),
        };
        drop(slot);
        opened
    })
    .await
    .map_err(join_error)?
    .map_err(session_error)?;
    let info = state.sessions.insert(&principal.subject, opened);
    crate::cluster::session_opened(&state, &principal.subject, &info).await;
    let mut response = (StatusCode::CREATED, Json(info)).into_response();
    response.headers_mut().extend(rate_headers(&window));
    Ok(response)
}

/// Runs code in a session; the answer is the call's run report.
#[utoipa::path(post, path = "/v1/sessions/{id}/runs", request_body = SessionRunBody,
    params(("id" = String, Path, description = "session id")),
    responses((status = 200, description = "The call's run report", body = wasmagent::RunReport),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 410, body = crate::error::ErrorBody), (status = 421, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = state.authorize(&headers, SCOPE_WRITE)?;
    let session = match state.sessions.get(&id, &principal.subject) {
        Ok(session) => session,
        Err(local) => return Err(crate::cluster::session_elsewhere(&state, &id, &principal.subject, local).await),
    };
    let (slot, window) = admit(&state, &principal).await?;
    let body = read_body(&state, &headers, body).await.map_err(|e| e.with_headers(rate_headers(&window)))?;
    let request: SessionRunBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not a valid session call: {e}")))?;
    let permit = server_slot(&state, true).await?;
    let in_flight = state.metrics.start_run();
    let joined = tokio::task::spawn_blocking(move || {
        let Ok(mut session) = session.try_lock() else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "session_busy",
                "a call of this session is still running; a session runs one call at a time",
            ));
        };
        let language = session.language();
        let name = request.name.unwrap_or_else(|| if language == Language::Js { "main.js" } else { "main.py" }.into());
        let result = session.run(&RunRequest::source(name, language, request.code));
        let info = session.info();
        drop((permit, slot, in_flight));
        Ok((result, info))
    })
    .await
    .map_err(join_error)??;
    let (result, info) = joined;
    match info.ended.clone() {
        Some(reason) => {
            state.sessions.retire(&id, reason);
            crate::cluster::session_ended(&state, &id).await;
        }
        // Renews the directory entry, whose TTL is the sessions' idle time.
        None => crate::cluster::session_opened(&state, &principal.subject, &info).await,
    }
    let report = match result {
        Ok(report) => report,
        Err(wasmagent::Error::Kernel(KernelError::SessionEnded(reason))) => return Err(gone(&id, &reason)),
        Err(wasmagent::Error::Kernel(KernelError::Unavailable(m))) => return Err(ApiError::busy(m, 1)),
        Err(wasmagent::Error::Record { report, error }) => {
            tracing::error!(%error, "the session call's audit record could not be written");
            *report
        }
        Err(other) => return Err(ApiError::invalid(other.to_string())),
    };
    state.metrics.record(&report);
    let mut response = Json(report).into_response();
    response.headers_mut().extend(rate_headers(&window));
    Ok(response)
}

/// Runs `operation` on the caller's session `id` on a blocking thread, under a run slot (which it gives back when
/// the operation ends): 404 or 421 when the session is not here, 409 while a call of it runs, 410 with the reason
/// when it has ended. Also returns the caller's rate window, for the response's headers.
async fn with_session<T: Send + 'static>(
    state: &Arc<AppState>,
    principal: &Principal,
    id: String,
    operation: impl FnOnce(&mut SandboxSession) -> Result<T, SessionError> + Send + 'static,
) -> Result<(T, WindowState), ApiError> {
    let session = match state.sessions.get(&id, &principal.subject) {
        Ok(session) => session,
        Err(local) => return Err(crate::cluster::session_elsewhere(state, &id, &principal.subject, local).await),
    };
    let (slot, window) = admit(state, principal).await?;
    let done = tokio::task::spawn_blocking(move || {
        let Ok(mut session) = session.try_lock() else {
            return Err(ApiError::new(StatusCode::CONFLICT, "session_busy", "a call of this session is still running"));
        };
        let done = operation(&mut session);
        drop(slot);
        done.map_err(|e| match e {
            SessionError::Kernel(KernelError::SessionEnded(reason)) => gone(&id, &reason),
            other => session_error(other),
        })
    })
    .await
    .map_err(join_error)??;
    Ok((done, window))
}

/// Forks a session: a new session holding a copy of its state (JavaScript only).
#[utoipa::path(post, path = "/v1/sessions/{id}/fork", params(("id" = String, Path, description = "session id")),
    responses((status = 201, description = "The new session", body = Object),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 410, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn fork(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(&headers, SCOPE_WRITE)?;
    let (forked, window) = with_session(&state, &principal, id, SandboxSession::fork).await?;
    let info = state.sessions.insert(&principal.subject, forked);
    crate::cluster::session_opened(&state, &principal.subject, &info).await;
    let mut response = (StatusCode::CREATED, Json(info)).into_response();
    response.headers_mut().extend(rate_headers(&window));
    Ok(response)
}

/// Keeps a copy of a session's state on the server, for `POST /v1/sessions` `{restore}` (JavaScript only).
#[utoipa::path(post, path = "/v1/sessions/{id}/snapshot", params(("id" = String, Path, description = "session id")),
    responses((status = 201, description = "The snapshot", body = crate::snapshots::SnapshotInfo),
        (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody), (status = 410, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn snapshot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(&headers, SCOPE_WRITE)?;
    let ((language, snapshot), window) =
        with_session(&state, &principal, id, |session| Ok((session.language(), session.snapshot()?))).await?;
    let info = state.snapshots.keep(&state.snapshot_config, &principal.subject, language_name(language), snapshot)?;
    let mut response = (StatusCode::CREATED, Json(info)).into_response();
    response.headers_mut().extend(rate_headers(&window));
    Ok(response)
}

/// Drops a snapshot.
#[utoipa::path(delete, path = "/v1/snapshots/{id}", params(("id" = String, Path, description = "snapshot id")),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn drop_snapshot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let principal = state.authorize(&headers, SCOPE_WRITE)?;
    state.snapshots.remove(&id, &principal.subject)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a session is: its calls, age, idle time, and why it ended.
#[utoipa::path(get, path = "/v1/sessions/{id}", params(("id" = String, Path, description = "session id")),
    responses((status = 200, body = Object), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 410, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    let principal = state.authorize(&headers, SCOPE_READ)?;
    let session = match state.sessions.get(&id, &principal.subject) {
        Ok(session) => session,
        Err(local) => {
            return crate::cluster::session_status_elsewhere(&state, &id, &principal.subject, local).await.map(Json);
        }
    };
    let info = match session.try_lock() {
        Ok(session) => session.info(),
        Err(_) => return Err(ApiError::new(StatusCode::CONFLICT, "session_busy", "a call of this session is running")),
    };
    Ok(Json(info))
}

/// Closes a session and frees its instance.
#[utoipa::path(delete, path = "/v1/sessions/{id}", params(("id" = String, Path, description = "session id")),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn close(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let principal = state.authorize(&headers, SCOPE_WRITE)?;
    match state.sessions.get(&id, &principal.subject) {
        Ok(_) => {
            state.sessions.retire(&id, "closed by its owner".into());
            crate::cluster::session_ended(&state, &id).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(local) => Err(crate::cluster::session_elsewhere(&state, &id, &principal.subject, local).await),
    }
}
