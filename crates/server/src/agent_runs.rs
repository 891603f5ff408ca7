//! `POST /v1/agent-runs` and what follows it: `GET /v1/agent-runs/{id}` (status and report), `GET
//! /v1/agent-runs/{id}/events` (server-sent events, resumed after `Last-Event-ID`) and `POST
//! /v1/agent-runs/{id}/approvals` (answers a paused tool call).
//!
//! A request is authenticated (scope `agents:run`), admitted by the per-subject limits, its body capped, its task
//! held to `agent.max_task_bytes` (413), its model to the configured ones and its manifest to the server's maximum,
//! all before any model is called. Every accepted run then runs in a task of its own on the `wasmagent-agent`
//! loop; its events are kept in a bounded log (count and bytes) that feeds the SSE answer, reconnections and
//! `GET`. Only the subject that created a run sees it. Finished runs are kept in a store bounded by count and
//! bytes, like async runs. Runs waiting for an approval never hold up other runs (each hears only its own calls),
//! and with `[audit]` every step of every run is appended to the server's audit log.

use crate::auth::{Principal, SCOPE_AGENTS};
use crate::config::AgentRunsConfig;
use crate::error::ApiError;
use crate::runs::{admit, rate_headers, read_body, request_manifest};
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use wasmagent::signing::record::AuditLog;
use wasmagent::{CapabilityManifest, Sandbox, ToolRegistry};
use wasmagent_agent::{Agent, AgentConfig, AgentEvent, Approvals, Budgets, Decision, Mode};
use wasmagent_models::{ApiKey, ChatModel, ModelConfig, ModelSpec};

/// `POST /v1/agent-runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRunRequestBody {
    /// What the agent should do (at most `agent.max_task_bytes`, default 16 KiB).
    pub task: String,
    /// One of the server's `[[agent.models]]` (`openai:MODEL` / `anthropic:MODEL`); the first when omitted.
    #[serde(default)]
    pub model: Option<String>,
    /// `code` (default: `execute_code` and `search_docs`) or `tools` (the granted host tools as function tools).
    #[serde(default)]
    pub mode: Option<String>,
    /// The manifest every code run and tool call is held to; it may only narrow the server's maximum manifest.
    #[serde(default)]
    pub manifest: Option<CapabilityManifest>,
    /// Model turns, at most the server's `agent.max_steps` (its value when omitted).
    #[serde(default)]
    pub max_steps: Option<u32>,
    /// Answer 202 with a status URL at once; the report is kept for `GET` and sent to the webhooks.
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

/// `GET /v1/agent-runs/{id}`, and `202 Accepted` for an async agent run (without the report).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentRunStatus {
    /// The agent run id (the URL's).
    pub id: String,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// This status: `/v1/agent-runs/{id}`.
    pub url: String,
    /// The events as server-sent events: `/v1/agent-runs/{id}/events`.
    pub events_url: String,
    /// The `wasmagent.agent/v1` report, once `done`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub report: Option<Value>,
    /// Why a `failed` run has no report, or why a `done` run's report was not kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Approval ids the run waits for.
    pub pending_approvals: Vec<u64>,
}

/// `POST /v1/agent-runs/{id}/approvals`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAnswer {
    /// The `approval_id` of the `approval_needed` event; may be omitted when the run waits for exactly one.
    #[serde(default)]
    pub approval_id: Option<u64>,
    /// Run the call (true) or decline it (false).
    pub approve: bool,
    /// Why it was declined; the model is told.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The agent runs of one server: its models, the sandbox agent code runs in, the limits and the stored runs.
pub(crate) struct AgentService {
    models: Vec<(String, Arc<dyn ChatModel>)>,
    sandbox: Arc<Sandbox>,
    tools: ToolRegistry,
    /// The approval gate, when tools need approval: each run hears the calls made for it, so runs never wait for
    /// each other.
    approvals: Option<Approvals>,
    /// The server's audit log (`[audit]`), which every agent run appends its steps to.
    audit_log: Option<Arc<AuditLog>>,
    slots: Arc<Semaphore>,
    config: AgentRunsConfig,
    store: Mutex<AgentRunStore>,
}

impl AgentService {
    /// Connects the configured models (their keys read now, so a missing one fails start-up) and, when some tools
    /// need approval, builds the agent's own sandbox over the gated registry with `build_gated`. Agent runs append
    /// their steps to `audit_log`.
    pub(crate) fn new(
        config: &AgentRunsConfig,
        sandbox: &Arc<Sandbox>,
        tools: &ToolRegistry,
        audit_log: Option<Arc<AuditLog>>,
        build_gated: impl FnOnce(&ToolRegistry) -> Result<Sandbox, String>,
    ) -> Result<Self, String> {
        let mut models = Vec::new();
        for (i, model) in config.models.iter().enumerate() {
            let context = |e: wasmagent_models::ModelError| format!("agent.models[{i}]: {e}");
            let spec: ModelSpec = model.model.parse().map_err(context)?;
            let api_key = match (&model.api_key_env, &model.api_key_file) {
                (Some(var), _) => Some(ApiKey::from_env(var).map_err(context)?),
                (None, Some(path)) => Some(ApiKey::from_file(path).map_err(context)?),
                (None, None) => ApiKey::from_env(spec.provider.default_api_key_env()).ok(),
            };
            let mut model_config = ModelConfig::new(spec);
            model_config.base_url = model.base_url.clone();
            model_config.api_key = api_key;
            let connected = wasmagent_models::connect(model_config).map_err(context)?;
            models.push((model.model.clone(), Arc::from(connected)));
        }
        let (sandbox, tools, approvals) = if config.needs_approval.is_empty() {
            (sandbox.clone(), tools.clone(), None)
        } else {
            let approvals = Approvals::new(Duration::from_secs(config.approval_timeout_secs));
            let gated =
                approvals.gate(tools, &config.needs_approval).map_err(|e| format!("agent.needs_approval: {e}"))?;
            let sandbox = Arc::new(build_gated(&gated)?);
            (sandbox, gated, Some(approvals))
        };
        Ok(AgentService {
            models,
            sandbox,
            tools,
            approvals,
            audit_log,
            slots: Arc::new(Semaphore::new(config.max_concurrent_runs)),
            config: config.clone(),
            store: Mutex::new(AgentRunStore::new(config.max_stored_runs, config.max_stored_run_bytes)),
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, AgentRunStore> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored run `id` if `principal` created it, else 404 (whether it exists or not).
    fn owned(&self, id: &str, principal: &Principal) -> Result<Arc<AgentRun>, ApiError> {
        self.store()
            .get(id)
            .filter(|run| run.owner == principal.subject)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no agent run {id} of yours")))
    }
}

/// Runs an agent task: the report as JSON, its events as SSE (`Accept: text/event-stream`), or 202 with `async`.
#[utoipa::path(post, path = "/v1/agent-runs", request_body = AgentRunRequestBody,
    responses(
        (status = 200, description = "The `wasmagent.agent/v1` report as JSON, or with `Accept: text/event-stream` \
            the run's events (each with an id; the last one, `report`, carries the report)", body = Object),
        (status = 202, description = "Accepted (async)", body = AgentRunStatus),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 408, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = state.authorize(&headers, SCOPE_AGENTS)?;
    let (slot, window) = admit(&state, &principal).await?;
    let body = read_body(&state, &headers, body).await.map_err(|e| e.with_headers(rate_headers(&window)))?;
    let request: AgentRunRequestBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not a valid agent run: {e}")))?;
    let service = &state.agents;
    let prepared = prepare(&state, request)?;
    let permit = service.slots.clone().try_acquire_owned().map_err(|_| {
        state.metrics.reject("busy");
        ApiError::busy(
            format!("{} agent runs are running (agent.max_concurrent_runs)", service.config.max_concurrent_runs),
            5,
        )
    })?;
    let run_async = prepared.run_async;
    let run = service.store().insert(&principal.subject, &service.config);
    let id = run.id.clone();
    spawn(state.clone(), run.clone(), prepared, (slot, permit));

    let wants_sse =
        headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("text/event-stream"));
    let mut response = if run_async {
        (StatusCode::ACCEPTED, Json(run.status())).into_response()
    } else if wants_sse {
        sse(run, 0).into_response()
    } else {
        finished(&run).await;
        match run.status() {
            AgentRunStatus { report: Some(report), .. } => Json(report).into_response(),
            AgentRunStatus { error, .. } => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    error.unwrap_or_else(|| "the agent run ended without a report".to_owned()),
                ));
            }
        }
    };
    let location = format!("/v1/agent-runs/{id}");
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().extend(rate_headers(&window));
    Ok(response)
}

/// An agent run checked and ready to start.
struct Prepared {
    agent: Agent,
    task: String,
    run_async: bool,
}

/// The request held to the server's configuration: task cap (413), model (403), mode (400), steps (403) and
/// manifest (400 / 403). No model is called here.
fn prepare(state: &AppState, request: AgentRunRequestBody) -> Result<Prepared, ApiError> {
    let service = &state.agents;
    let config = &service.config;
    if request.task.len() > config.max_task_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the task is {} bytes; at most {} are accepted (agent.max_task_bytes)",
                request.task.len(),
                config.max_task_bytes
            ),
        ));
    }
    if request.task.trim().is_empty() {
        return Err(ApiError::invalid("`task` is empty"));
    }
    let configured = || service.models.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", ");
    let model = match &request.model {
        _ if service.models.is_empty() => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "agent runs are not enabled on this server: [agent] names no models",
            ));
        }
        None => service.models[0].1.clone(),
        Some(asked) => match service.models.iter().find(|(name, _)| name == asked) {
            Some((_, model)) => model.clone(),
            None => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("model {asked:?} is not one this server may use (configured: {})", configured()),
                ));
            }
        },
    };
    let mode: Mode = match request.mode.as_deref() {
        None => Mode::Code,
        Some(mode) => mode.parse().map_err(|e: wasmagent_agent::AgentError| ApiError::invalid(e.to_string()))?,
    };
    let max_steps = match request.max_steps {
        None => config.max_steps,
        Some(0) => return Err(ApiError::invalid("max_steps must be at least 1")),
        Some(asked) if asked > config.max_steps => {
            return Err(ApiError::exceeds(
                "max_steps".to_owned(),
                format!("max_steps {asked} is more than the server allows ({})", config.max_steps),
            ));
        }
        Some(asked) => asked,
    };
    let manifest =
        request_manifest(state.sandbox.ceilings(), &state.max_manifest, request.manifest.unwrap_or_default())?;
    let agent_config = AgentConfig {
        mode,
        budgets: Budgets {
            max_steps,
            max_model_tokens: config.max_model_tokens,
            deadline: Duration::from_secs(config.timeout_secs),
            ..Budgets::default()
        },
        max_task_bytes: config.max_task_bytes,
        ..AgentConfig::default()
    };
    let agent = Agent::new(vec![model], service.sandbox.clone(), manifest, service.tools.clone(), agent_config)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let agent = match &service.approvals {
        Some(approvals) => agent.with_approvals(approvals.clone()),
        None => agent,
    };
    let agent = match &service.audit_log {
        Some(log) => agent.with_audit_log(log.clone()),
        None => agent,
    };
    Ok(Prepared { agent, task: request.task, run_async: request.run_async })
}

/// Runs the agent in a task of its own (a client that goes away does not stop it; it can reconnect), holding the
/// subject's concurrency slot and the server's agent slot until it ends; then stores the report and, for an async
/// run, delivers it to the webhooks.
fn spawn<G: Send + 'static>(state: Arc<AppState>, run: Arc<AgentRun>, prepared: Prepared, guards: G) {
    let run_async = prepared.run_async;
    if run_async {
        state.pending_async.fetch_add(1, Ordering::SeqCst);
    }
    tokio::spawn(async move {
        run.set_running();
        let on_event = |event: &AgentEvent| run.record(event);
        let report = prepared.agent.run(&prepared.task, &on_event).await;
        let outcome =
            serde_json::to_value(&report).map_err(|e| format!("the agent report could not be serialised: {e}"));
        let body = match (&state.webhooks, run_async) {
            (Some(_), true) => webhook_body(&run.id, &outcome),
            _ => None,
        };
        let weight = run.finish(outcome);
        state.agents.store().finished(&run.id, weight);
        drop(guards);
        if let (Some(webhooks), Some(body)) = (&state.webhooks, body) {
            webhooks.deliver(&run.id, body);
        }
        if run_async {
            state.pending_async.fetch_sub(1, Ordering::SeqCst);
        }
    });
}

/// What a webhook delivery says about a finished async agent run.
fn webhook_body(id: &str, outcome: &Result<Value, String>) -> Option<Vec<u8>> {
    let body = match outcome {
        Ok(report) => serde_json::json!({"agent_run_id": id, "status": "done", "report": report}),
        Err(error) => serde_json::json!({"agent_run_id": id, "status": "failed", "error": error}),
    };
    serde_json::to_vec(&body).ok()
}

/// The status of an agent run (only its creator sees it).
#[utoipa::path(get, path = "/v1/agent-runs/{id}", params(("id" = String, Path, description = "agent run id")),
    responses((status = 200, body = AgentRunStatus), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<AgentRunStatus>, ApiError> {
    let principal = state.authorize(&headers, SCOPE_AGENTS)?;
    Ok(Json(state.agents.owned(&id, &principal)?.status()))
}

/// The run's events as server-sent events, from the one after `Last-Event-ID` (all of them without it), ending
/// with the `report` event.
#[utoipa::path(get, path = "/v1/agent-runs/{id}/events", params(("id" = String, Path, description = "agent run id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event")),
    responses((status = 200, description = "text/event-stream", body = String),
              (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(&headers, SCOPE_AGENTS)?;
    let run = state.agents.owned(&id, &principal)?;
    let after = match headers.get("last-event-id").map(|v| v.to_str().map(|s| s.trim().parse::<u64>())) {
        None => 0,
        Some(Ok(Ok(id))) => id,
        Some(_) => return Err(ApiError::invalid("Last-Event-ID must be an event id (a number)")),
    };
    Ok(sse(run, after).into_response())
}

/// Answers an approval the run waits for.
#[utoipa::path(post, path = "/v1/agent-runs/{id}/approvals", request_body = ApprovalAnswer,
    params(("id" = String, Path, description = "agent run id")),
    responses((status = 204, description = "Answered"), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn approve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let principal = state.authorize(&headers, SCOPE_AGENTS)?;
    let run = state.agents.owned(&id, &principal)?;
    let body = read_body(&state, &headers, body).await?;
    let answer: ApprovalAnswer = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not a valid approval answer: {e}")))?;
    let Some(approvals) = &state.agents.approvals else {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "no tool needs approval on this server"));
    };
    let pending = run.pending_approvals();
    let approval_id = match answer.approval_id {
        Some(asked) if pending.contains(&asked) => asked,
        Some(asked) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("agent run {id} does not wait for approval {asked} (waiting for {pending:?})"),
            ));
        }
        None if pending.len() == 1 => pending[0],
        None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("agent run {id} waits for {} approvals {pending:?}; name one with approval_id", pending.len()),
            ));
        }
    };
    let decision = if answer.approve {
        Decision::Approve
    } else {
        Decision::Decline { reason: answer.reason.unwrap_or_default() }
    };
    run.answered(approval_id);
    approvals
        .answer(approval_id, decision)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The run's events after event `after` as an SSE stream that ends with the report.
fn sse(run: Arc<AgentRun>, after: u64) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let changed = run.changed.subscribe();
    let cursor = Cursor { run, after, changed, queue: VecDeque::new(), ended: false };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.queue.pop_front() {
                return Some((Ok(event), cursor));
            }
            if cursor.ended {
                return None;
            }
            cursor.changed.borrow_and_update();
            let (events, last, end) = cursor.run.since(cursor.after);
            cursor.after = last;
            cursor.queue.extend(events);
            if let Some(end) = end {
                cursor.queue.push_back(end);
                cursor.ended = true;
            }
            // Nothing new: wait for the run to record something. The run holds the sender, and this stream the run.
            if cursor.queue.is_empty() && cursor.changed.changed().await.is_err() {
                return None;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

struct Cursor {
    run: Arc<AgentRun>,
    after: u64,
    changed: watch::Receiver<u64>,
    queue: VecDeque<Event>,
    ended: bool,
}

/// Waits until `run` has ended.
async fn finished(run: &AgentRun) {
    let mut changed = run.changed.subscribe();
    loop {
        changed.borrow_and_update();
        if run.is_finished() || changed.changed().await.is_err() {
            return;
        }
    }
}

/// One agent run: its owner, its bounded event log and how it ended.
pub(crate) struct AgentRun {
    id: String,
    owner: String,
    log: Mutex<RunLog>,
    /// Bumped on every change of `log`.
    changed: watch::Sender<u64>,
    max_events: usize,
    max_event_bytes: usize,
}

struct RunLog {
    events: VecDeque<Logged>,
    /// Bytes the kept events weigh (their JSON).
    bytes: usize,
    /// The id the next event gets (ids start at 1).
    next_id: u64,
    /// Events dropped from the front to stay within the bounds.
    dropped: u64,
    pending_approvals: Vec<u64>,
    state: RunState,
}

struct Logged {
    id: u64,
    kind: String,
    data: String,
}

enum RunState {
    Queued,
    Running,
    Done(Value),
    /// The report could not be kept (or made); why.
    Failed(String),
}

impl AgentRun {
    fn log(&self) -> std::sync::MutexGuard<'_, RunLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_running(&self) {
        self.log().state = RunState::Running;
        self.changed.send_modify(|n| *n += 1);
    }

    /// Appends `event`, dropping the oldest events past the count or byte bound.
    fn record(&self, event: &AgentEvent) {
        let Ok(value) = serde_json::to_value(event) else { return };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("event").to_owned();
        let data = value.to_string();
        {
            let mut log = self.log();
            if let AgentEvent::ApprovalNeeded { approval_id, .. } = event {
                log.pending_approvals.push(*approval_id);
            }
            let id = log.next_id;
            log.next_id += 1;
            log.bytes += data.len();
            log.events.push_back(Logged { id, kind, data });
            while log.events.len() > self.max_events || log.bytes > self.max_event_bytes {
                match log.events.pop_front() {
                    Some(old) => {
                        log.bytes -= old.data.len();
                        log.dropped += 1;
                    }
                    None => break,
                }
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Records how the run ended; returns what the run weighs now (events and report).
    fn finish(&self, outcome: Result<Value, String>) -> usize {
        let weight = {
            let mut log = self.log();
            log.pending_approvals.clear();
            log.state = match outcome {
                Ok(report) => RunState::Done(report),
                Err(error) => RunState::Failed(error),
            };
            log.bytes + log.state_bytes()
        };
        self.changed.send_modify(|n| *n += 1);
        weight
    }

    /// Drops the report (it alone is heavier than the store may hold), saying so.
    fn drop_report(&self, why: String) -> usize {
        let mut log = self.log();
        log.state = RunState::Failed(why);
        log.bytes + log.state_bytes()
    }

    fn is_finished(&self) -> bool {
        matches!(self.log().state, RunState::Done(_) | RunState::Failed(_))
    }

    fn pending_approvals(&self) -> Vec<u64> {
        self.log().pending_approvals.clone()
    }

    fn answered(&self, approval_id: u64) {
        self.log().pending_approvals.retain(|id| *id != approval_id);
    }

    fn status(&self) -> AgentRunStatus {
        let log = self.log();
        let (status, report, error) = match &log.state {
            RunState::Queued => ("queued", None, None),
            RunState::Running => ("running", None, None),
            RunState::Done(report) => ("done", Some(report.clone()), None),
            RunState::Failed(error) => ("failed", None, Some(error.clone())),
        };
        AgentRunStatus {
            id: self.id.clone(),
            status: status.to_owned(),
            url: format!("/v1/agent-runs/{}", self.id),
            events_url: format!("/v1/agent-runs/{}/events", self.id),
            report,
            error,
            pending_approvals: log.pending_approvals.clone(),
        }
    }

    /// The kept events after `after` as SSE events, the last id among them, and the closing event once the run has
    /// ended (`report` with the report, or `error`; its id follows the last event's). A gap (events dropped before
    /// the client saw them) is announced by an `events_dropped` event first.
    fn since(&self, after: u64) -> (Vec<Event>, u64, Option<Event>) {
        let log = self.log();
        let mut out = Vec::new();
        let first_kept = log.dropped + 1;
        if after + 1 < first_kept {
            let lost = first_kept - after - 1;
            out.push(Event::default().event("events_dropped").data(format!(
                "{{\"dropped\":{lost},\"reason\":\"the run's event log keeps at most {} events and {} bytes\"}}",
                self.max_events, self.max_event_bytes
            )));
        }
        let mut last = after;
        for logged in log.events.iter().filter(|e| e.id > after) {
            out.push(Event::default().id(logged.id.to_string()).event(&logged.kind).data(&logged.data));
            last = logged.id;
        }
        let end_id = log.next_id.to_string();
        let end = match &log.state {
            RunState::Done(report) if after < log.next_id => {
                Some(Event::default().id(end_id).event("report").data(report.to_string()))
            }
            RunState::Failed(error) if after < log.next_id => {
                Some(Event::default().id(end_id).event("error").data(serde_json::json!({"error": error}).to_string()))
            }
            RunState::Done(_) | RunState::Failed(_) => Some(Event::default().comment("ended")),
            RunState::Queued | RunState::Running => None,
        };
        (out, last, end)
    }
}

impl RunLog {
    fn state_bytes(&self) -> usize {
        match &self.state {
            RunState::Done(report) => serialized_len(report),
            RunState::Failed(error) => error.len(),
            RunState::Queued | RunState::Running => 0,
        }
    }
}

fn serialized_len(value: &Value) -> usize {
    let mut counter = crate::state::ByteCounter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX / 2,
    }
}

/// Agent runs by id. Bounded by count (`agent.max_stored_runs`) and by the bytes finished runs weigh (events and
/// report, `agent.max_stored_run_bytes`): past either bound the oldest finished runs are dropped. Running runs are
/// never dropped; there are at most `agent.max_concurrent_runs` of them, each holding at most
/// `agent.max_event_bytes_per_run` of events.
struct AgentRunStore {
    runs: HashMap<String, Arc<AgentRun>>,
    order: VecDeque<String>,
    /// What each finished run weighs.
    weights: HashMap<String, usize>,
    cap: usize,
    max_bytes: usize,
    bytes: usize,
}

impl AgentRunStore {
    fn new(cap: usize, max_bytes: usize) -> Self {
        AgentRunStore {
            runs: HashMap::new(),
            order: VecDeque::new(),
            weights: HashMap::new(),
            cap: cap.max(1),
            max_bytes,
            bytes: 0,
        }
    }

    /// A new queued run of `owner`.
    fn insert(&mut self, owner: &str, config: &AgentRunsConfig) -> Arc<AgentRun> {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            bytes = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                .to_le_bytes();
        }
        let id = hex::encode(bytes);
        self.make_room(1);
        let run = Arc::new(AgentRun {
            id: id.clone(),
            owner: owner.to_owned(),
            log: Mutex::new(RunLog {
                events: VecDeque::new(),
                bytes: 0,
                next_id: 1,
                dropped: 0,
                pending_approvals: Vec::new(),
                state: RunState::Queued,
            }),
            changed: watch::Sender::new(0),
            max_events: config.max_events_per_run,
            max_event_bytes: config.max_event_bytes_per_run,
        });
        self.runs.insert(id.clone(), run.clone());
        self.order.push_back(id);
        run
    }

    fn get(&self, id: &str) -> Option<Arc<AgentRun>> {
        self.runs.get(id).cloned()
    }

    /// Counts run `id`, now finished and weighing `weight`, against the byte bound; a run heavier than the whole
    /// bound keeps its events but not its report.
    fn finished(&mut self, id: &str, mut weight: usize) {
        let Some(run) = self.runs.get(id).cloned() else { return };
        if weight > self.max_bytes {
            weight = run.drop_report(format!(
                "the agent run ({weight} bytes of events and report) is larger than agent.max_stored_run_bytes ({} \
                 bytes); its report was not kept",
                self.max_bytes
            ));
        }
        self.weights.insert(id.to_owned(), weight);
        self.bytes += weight;
        self.make_room(0);
    }

    /// Drops the oldest finished runs until `entries` more fit under the count bound and the finished runs under the
    /// byte bound, or no finished run is left to drop.
    fn make_room(&mut self, entries: usize) {
        while self.order.len() + entries > self.cap || self.bytes > self.max_bytes {
            let oldest = self.order.iter().position(|id| self.weights.contains_key(id));
            match oldest.and_then(|i| self.order.remove(i)) {
                Some(old) => {
                    self.runs.remove(&old);
                    if let Some(weight) = self.weights.remove(&old) {
                        self.bytes -= weight;
                    }
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_events: usize, max_event_bytes: usize) -> AgentRunsConfig {
        AgentRunsConfig {
            max_events_per_run: max_events,
            max_event_bytes_per_run: max_event_bytes,
            ..AgentRunsConfig::default()
        }
    }

    fn text(n: usize) -> AgentEvent {
        AgentEvent::TextDelta { step: 1, text: "x".repeat(n) }
    }

    #[test]
    fn the_event_log_keeps_the_newest_events_within_both_bounds_and_announces_the_gap() {
        let mut store = AgentRunStore::new(10, 1 << 20);
        let run = store.insert("alice", &config(3, 1 << 20));
        for _ in 0..5 {
            run.record(&text(10));
        }
        let (events, last, end) = run.since(0);
        assert_eq!((events.len(), last), (4, 5), "a gap event and events 3, 4, 5");
        assert!(end.is_none());
        let (events, last, _) = run.since(3);
        assert_eq!((events.len(), last), (2, 5), "no gap after 3");

        let run = store.insert("alice", &config(100, 200));
        for _ in 0..10 {
            run.record(&text(50));
        }
        assert!(run.log().bytes <= 200, "{} bytes kept", run.log().bytes);
        assert!(run.log().events.len() < 10);
    }

    #[test]
    fn finished_runs_are_dropped_oldest_first_and_running_ones_never() {
        let mut store = AgentRunStore::new(2, 1 << 20);
        let c = config(100, 1 << 20);
        let running = store.insert("alice", &c);
        let first = store.insert("alice", &c);
        let weight = first.finish(Ok(serde_json::json!({"answer": "a"})));
        store.finished(&first.id, weight);
        let second = store.insert("alice", &c);
        assert!(store.get(&first.id).is_none(), "the finished run made room");
        assert!(store.get(&running.id).is_some() && store.get(&second.id).is_some());

        let mut store = AgentRunStore::new(10, 1000);
        let big = store.insert("alice", &c);
        let weight = big.finish(Ok(serde_json::json!({"answer": "y".repeat(5000)})));
        store.finished(&big.id, weight);
        let status = store.get(&big.id).map(|r| r.status());
        assert_eq!(status.as_ref().map(|s| s.status.as_str()), Some("failed"));
        assert!(status.and_then(|s| s.error).is_some_and(|e| e.contains("max_stored_run_bytes")));
    }
}
