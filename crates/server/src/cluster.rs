//! Several servers, one service: async runs, their results and webhook deliveries through the cluster store
//! (`wasmagent-cluster`, Redis) when `[cluster] redis_url` is set. Without it none of this exists and the server
//! keeps async runs in its own memory ([`crate::state::RunStore`]) and webhooks in [`crate::webhook::Webhooks`].
//!
//! - `POST /v1/runs` with `async: true` is checked here (authentication, limits, the manifest against the maximum)
//!   and queued in Redis with its submitter; `GET /v1/runs/{id}` reads Redis, for that subject only.
//! - Every node runs [`Workers`]: while it has a free run slot it takes a queued run, runs it under its own maximum
//!   manifest, and records the result together with its webhook deliveries in one atomic update. It renews its
//!   claim on the runs it holds every third of `reclaim_after_ms`.
//! - A node that stops renewing (it died, or lost Redis) has its runs reclaimed by another after
//!   `reclaim_after_ms`: a run that never started, or whose manifest grants nothing that can act on the world (no
//!   `allowed_hosts`, no tools or other capabilities, no writable mount), runs again; any other started run is
//!   recorded `failed`, saying why, and never runs twice. A late finish from the silent node is refused.
//! - Webhook deliveries are leased from Redis by any node, retried with backoff, dead-lettered in Redis; a delivery
//!   keeps its id on every attempt from every node (receivers deduplicate with it: delivery is at-least-once).
//! - Sessions stay on the node that opened them; the session directory records which node that is, so another
//!   node answers a session's status and refuses its calls with 421 naming the node, instead of 404.
//! - Redis unreachable: async submissions and reads get 503 with `Retry-After`, `/readyz` says not ready, and
//!   synchronous runs go on (they need Redis only if the rate limiter uses it).

use crate::api::{AsyncAccepted, RunRequestBody, RunStatus};
use crate::error::ApiError;
use crate::ratelimit::RunSlot;
use crate::runs::{execute_with_permit, prepare, webhook_body};
use crate::state::{AppState, ByteCounter};
use crate::webhook::{DeadLetter, delivery_id, unix_now};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use wasmagent::manifest::Access;
use wasmagent::{EffectiveManifest, RunReport, SessionInfo};
use wasmagent_cluster::{
    AbandonedRun, ClaimedRun, ClusterConfig, ClusterError, ClusterStore, Delivery, Finished, Reclaimed, SessionEntry,
};

/// Seconds a client is told to wait before retrying when the cluster store is unavailable or full.
const RETRY_AFTER_SECS: u64 = 1;
/// Wait after a failed call before a worker tries Redis again.
const REDIS_BACKOFF: Duration = Duration::from_millis(200);
/// Deliveries one node leases at once.
const DELIVERY_BATCH: usize = 16;
/// How often a node looks for due webhook deliveries.
const DELIVERY_POLL: Duration = Duration::from_millis(100);

/// This node's handle on the cluster store, and the runs it holds.
pub(crate) struct Cluster {
    store: ClusterStore,
    advertise_url: Option<String>,
    max_stored_run_bytes: usize,
    held: Mutex<HashMap<String, Held>>,
    stopping: AtomicBool,
    stop: Notify,
}

/// A run this node is running.
#[derive(Clone)]
struct Held {
    entry: String,
    attempt: u64,
    may_act: bool,
}

impl Cluster {
    pub(crate) fn new(config: &ClusterConfig, max_stored_run_bytes: usize) -> Result<Self, String> {
        let store = ClusterStore::new(config).map_err(|e| e.to_string())?;
        Ok(Cluster {
            store,
            advertise_url: config.advertise_url.clone(),
            max_stored_run_bytes,
            held: Mutex::default(),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
        })
    }

    /// Queues an async run checked by the caller (its body as received) for any node; 202, or 503.
    pub(crate) async fn submit(
        &self,
        subject: &str,
        body: &[u8],
        manifest: &EffectiveManifest,
    ) -> Result<Response, ApiError> {
        let body = std::str::from_utf8(body).map_err(|_| ApiError::invalid("the request body is not UTF-8"))?;
        let id = self.store.submit(subject, body, may_act(manifest)).await.map_err(unavailable)?;
        let accepted = AsyncAccepted { id: id.clone(), status: "queued".into(), url: format!("/v1/runs/{id}") };
        Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
    }

    /// `GET /v1/runs/{id}` from Redis: 404 for a run of someone else, as for a missing one.
    pub(crate) async fn status(&self, id: &str, subject: &str) -> Result<RunStatus, ApiError> {
        let record = self.store.status(id, subject).await.map_err(unavailable)?;
        let record =
            record.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no run {id} of yours")))?;
        let report = match record.report.as_deref().map(serde_json::from_str::<RunReport>) {
            None => None,
            Some(Ok(report)) => Some(report),
            Some(Err(error)) => {
                tracing::error!(run = %id, %error, "a stored report does not parse");
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("the stored report of run {id} is malformed"),
                ));
            }
        };
        Ok(RunStatus { id: id.to_owned(), status: record.status, report, error: record.error })
    }

    /// The dead letters in Redis, oldest first.
    pub(crate) async fn dead_letters(&self) -> Result<Vec<serde_json::Value>, ApiError> {
        let letters = self.store.dead_letters().await.map_err(unavailable)?;
        Ok(letters.iter().filter_map(|letter| serde_json::from_str(letter).ok()).collect())
    }

    /// `Ok` when Redis answers.
    pub(crate) async fn ready(&self) -> Result<(), ClusterError> {
        self.store.ping().await
    }

    fn hold(&self, id: &str, held: Held) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_owned(), held);
    }

    fn release(&self, id: &str) {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    fn held(&self) -> Vec<(String, Held)> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Records (or renews) session `info` of `owner` in the session directory as held by this node, for the sessions'
/// idle time; nothing without a cluster. A failure only costs other nodes the routing hint, so it is logged.
pub(crate) async fn session_opened(state: &AppState, owner: &str, info: &SessionInfo) {
    let Some(cluster) = &state.cluster else { return };
    let ttl = Duration::from_millis(state.sandbox.session_limits().session_idle_ms);
    let stored = serde_json::to_string(info).map_err(|e| ClusterError::Malformed(e.to_string()));
    let url = cluster.advertise_url.as_deref().unwrap_or_default();
    let registered = match stored {
        Ok(stored) => cluster.store.register_session(&info.id, owner, url, &stored, ttl).await,
        Err(error) => Err(error),
    };
    if let Err(error) = registered {
        tracing::warn!(session = %info.id, %error, "cluster: the session directory was not updated");
    }
}

/// Removes session `id` from the directory; nothing without a cluster.
pub(crate) async fn session_ended(state: &AppState, id: &str) {
    let Some(cluster) = &state.cluster else { return };
    if let Err(error) = cluster.store.forget_session(id).await {
        tracing::warn!(session = %id, %error, "cluster: the session stays in the directory until its TTL");
    }
}

/// The answer to a call for session `id` this node does not hold (`local`, a 404): 421 naming the node that
/// holds it when the directory says another node does (for the same owner), else `local`.
pub(crate) async fn session_elsewhere(state: &AppState, id: &str, owner: &str, local: ApiError) -> ApiError {
    if local.status() != StatusCode::NOT_FOUND {
        return local;
    }
    match held_elsewhere(state, id, owner).await {
        Ok(Some(entry)) => {
            let place = if entry.url.is_empty() { entry.node.clone() } else { entry.url.clone() };
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                format!(
                    "session {id} lives on node {} ({place}); a session's calls go to the node that holds its instance",
                    entry.node
                ),
            )
            .with_header("wasmagent-session-node", place)
        }
        Ok(None) => local,
        Err(error) => error,
    }
}

/// The status of session `id` this node does not hold (`local`, a 404), as the node holding it last recorded it.
pub(crate) async fn session_status_elsewhere(
    state: &AppState,
    id: &str,
    owner: &str,
    local: ApiError,
) -> Result<SessionInfo, ApiError> {
    if local.status() != StatusCode::NOT_FOUND {
        return Err(local);
    }
    let Some(entry) = held_elsewhere(state, id, owner).await? else { return Err(local) };
    serde_json::from_str(&entry.info).map_err(|e| {
        tracing::error!(session = %id, error = %e, "a session directory entry does not parse");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the directory entry of {id} is malformed"),
        )
    })
}

/// The directory entry of session `id` of `owner` when another node holds it.
async fn held_elsewhere(state: &AppState, id: &str, owner: &str) -> Result<Option<SessionEntry>, ApiError> {
    let Some(cluster) = &state.cluster else { return Ok(None) };
    let entry = cluster.store.session(id, owner).await.map_err(unavailable)?;
    Ok(entry.filter(|entry| entry.node != cluster.store.node()))
}

/// A cluster-store failure as the HTTP answer: 503 with `Retry-After`, saying what failed.
fn unavailable(error: ClusterError) -> ApiError {
    tracing::warn!(%error, "refusing a request: the cluster store cannot answer");
    ApiError::busy(format!("{error}; nothing was queued or read, retry later"), RETRY_AFTER_SECS)
}

/// Whether a run under `manifest` may act on the world beyond its own report: it can reach the network, call host
/// tools (or hold any other capability), or write to a mounted directory. Such a run is never run twice.
fn may_act(manifest: &EffectiveManifest) -> bool {
    !manifest.allowed_hosts().is_empty()
        || !manifest.extra_capabilities().is_empty()
        || manifest.mounts().iter().any(|m| m.access == Access::ReadWrite)
}

/// The background tasks of a node in a cluster. [`Workers::stop`] ends them.
pub(crate) struct Workers {
    state: Arc<AppState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Starts taking runs, renewing claims and attempting webhook deliveries; `None` without a cluster.
    pub(crate) fn start(state: &Arc<AppState>) -> Option<Self> {
        let cluster = state.cluster.as_ref()?;
        tracing::info!(node = cluster.store.node(), "cluster: taking async runs from the shared queue");
        let mut tasks = vec![tokio::spawn(take_runs(state.clone())), tokio::spawn(renew_claims(state.clone()))];
        if state.webhooks.is_some() {
            tasks.push(tokio::spawn(deliver_webhooks(state.clone())));
        }
        Some(Workers { state: state.clone(), tasks })
    }

    /// Stops taking runs, waits until `deadline` for the runs this node holds, then hands back those that cannot
    /// have acted (another node runs them at once) and records the others `failed`, saying why.
    pub(crate) async fn stop(self, deadline: tokio::time::Instant) {
        let Some(cluster) = self.state.cluster.as_ref() else { return };
        cluster.stopping.store(true, Ordering::SeqCst);
        cluster.stop.notify_waiters();
        // The taker first: it may be between taking a run and holding it.
        if let Some(taker) = self.tasks.first() {
            while !taker.is_finished() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        while !cluster.held().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (id, held) in cluster.held() {
            let outcome = if held.may_act {
                let reason = "the server running it shut down before it ended (shutdown_timeout_ms); it may have \
                              acted (its manifest grants network, tools or writable mounts), so it is not run again";
                finish(&self.state, &id, &held, &Err(failure(reason))).await.map(|_| "failed")
            } else {
                cluster.store.hand_back(&id, &held.entry, held.attempt).await.map(|_| "handed back")
            };
            match outcome {
                Ok(what) => tracing::warn!(run = %id, what, "shutdown: a run still running was not finished here"),
                Err(error) => tracing::error!(run = %id, %error, "shutdown: left for another node to reclaim"),
            }
        }
        for task in self.tasks {
            task.abort();
        }
    }
}

fn failure(reason: &str) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", reason)
}

/// While this node has a free run slot: reclaim a silent node's run, else take a queued one, and run it.
async fn take_runs(state: Arc<AppState>) {
    let Some(cluster) = state.cluster.as_ref() else { return };
    let mut group_ready = false;
    let mut last_reclaim = tokio::time::Instant::now();
    let reclaim_every = cluster.store.reclaim_after() / 4;
    while !cluster.stopping.load(Ordering::SeqCst) {
        let permit = tokio::select! {
            permit = state.run_slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = cluster.stop.notified() => return,
        };
        if !group_ready {
            match cluster.store.ensure_group().await {
                Ok(()) => group_ready = true,
                Err(error) => {
                    tracing::warn!(%error, "cluster: cannot create the run queue; retrying");
                    tokio::time::sleep(REDIS_BACKOFF).await;
                    continue;
                }
            }
        }
        let mut taken = Ok(None);
        if last_reclaim.elapsed() >= reclaim_every {
            taken = cluster.store.reclaim().await;
            if matches!(taken, Ok(None)) {
                last_reclaim = tokio::time::Instant::now();
            }
        }
        if matches!(taken, Ok(None)) {
            taken = cluster.store.next_run().await.map(|run| run.map(Reclaimed::Run));
        }
        match taken {
            Ok(Some(Reclaimed::Run(run))) => {
                if cluster.stopping.load(Ordering::SeqCst) {
                    // Taken while stopping: straight back to the queue, for another node.
                    if let Err(error) = cluster.store.hand_back(&run.id, &run.entry, run.attempt).await {
                        tracing::warn!(run = %run.id, %error, "cluster: a run taken while stopping waits for reclaim");
                    }
                    return;
                }
                spawn_run(state.clone(), run, permit);
            }
            Ok(Some(Reclaimed::Abandoned(run))) => {
                drop(permit);
                record_abandoned(&state, run).await;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cluster: cannot take runs from the queue; retrying");
                // A Redis that restarted empty has lost the consumer group too.
                group_ready = false;
                drop(permit);
                tokio::time::sleep(REDIS_BACKOFF).await;
            }
        }
    }
}

/// Records a reclaimed run that may have acted as failed (with its webhook deliveries).
async fn record_abandoned(state: &Arc<AppState>, run: AbandonedRun) {
    let reason = format!(
        "the server running it ({}) stopped answering before it ended; it may have acted (its manifest grants \
         network, tools or writable mounts), so it was not run again",
        run.node
    );
    tracing::warn!(run = %run.id, node = %run.node, "cluster: a reclaimed run that may have acted is failed");
    let held = Held { entry: run.entry, attempt: run.attempt, may_act: true };
    if let Err(error) = finish(state, &run.id, &held, &Err(failure(&reason))).await {
        tracing::warn!(run = %run.id, %error, "cluster: the failure was not recorded; another node reclaims it");
    }
}

/// Runs `run` in this node's slot `permit` and records how it ended.
fn spawn_run(state: Arc<AppState>, run: ClaimedRun, permit: OwnedSemaphorePermit) {
    let Some(cluster) = state.cluster.as_ref() else { return };
    let prepared = serde_json::from_str::<RunRequestBody>(&run.request)
        .map_err(|e| ApiError::invalid(format!("the stored request is not a valid run: {e}")))
        .and_then(|request| prepare(state.sandbox.ceilings(), &state.max_manifest, request));
    let may_act = prepared.as_ref().is_ok_and(|(manifest, _)| may_act(manifest));
    let held = Held { entry: run.entry.clone(), attempt: run.attempt, may_act };
    // Held before the task starts, so a shutdown that follows at once knows about it.
    cluster.hold(&run.id, held.clone());
    tokio::spawn(async move {
        let Some(cluster) = state.cluster.as_ref() else { return };
        let outcome = match prepared {
            Ok((manifest, request)) => {
                execute_with_permit(&state, permit, manifest, request, RunSlot::new(|| {})).await
            }
            Err(error) => Err(error),
        };
        // Redis may be briefly away: retry until the result is recorded, or the run is no longer ours.
        loop {
            match finish(&state, &run.id, &held, &outcome).await {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(run = %run.id, %error, "cluster: cannot record a result yet; retrying");
                    tokio::time::sleep(REDIS_BACKOFF).await;
                }
            }
        }
        cluster.release(&run.id);
    });
}

/// Records how run `id` ended and queues its webhook deliveries, in one update; `Ok(false)` when another node has
/// taken the run over meanwhile (the result is dropped).
async fn finish(
    state: &AppState,
    id: &str,
    held: &Held,
    outcome: &Result<RunReport, ApiError>,
) -> Result<bool, ClusterError> {
    let Some(cluster) = state.cluster.as_ref() else { return Ok(false) };
    let body = state.webhooks.as_ref().and_then(|_| webhook_body(id, outcome));
    let finished = match outcome {
        Ok(report) => stored_report(report, cluster.max_stored_run_bytes),
        Err(error) => Finished { status: "failed", report: None, error: Some(error.message().to_owned()) },
    };
    let mut deliveries = Vec::new();
    if let (Some(webhooks), Some(body)) = (&state.webhooks, body) {
        let body = String::from_utf8_lossy(&body).into_owned();
        for url in webhooks.urls() {
            let delivery = delivery_id().map_err(|e| ClusterError::Unavailable(format!("no delivery id: {e}")))?;
            deliveries.push(Delivery {
                id: delivery,
                run_id: id.to_owned(),
                url: url.to_owned(),
                body: body.clone(),
                attempts: 0,
                last_error: String::new(),
            });
        }
    }
    // The cluster holds at most max_pending_deliveries (checked just before, so a burst may pass it by a few):
    // past it the deliveries are dead-lettered unsent, saying why, as on one server.
    let mut overflow = Vec::new();
    if let (Some(webhooks), false) = (&state.webhooks, deliveries.is_empty()) {
        let pending = cluster.store.pending_deliveries().await?;
        if pending.saturating_add(deliveries.len() as u64) > webhooks.max_pending() as u64 {
            overflow = std::mem::take(&mut deliveries);
        }
    }
    let recorded = cluster.store.finish(id, &held.entry, held.attempt, &finished, &deliveries).await?;
    if !recorded {
        tracing::warn!(run = %id, "cluster: another node took this run over; this result is dropped");
        return Ok(false);
    }
    for delivery in overflow {
        let max = state.webhooks.as_ref().map_or(0, |w| w.max_pending());
        let letter = DeadLetter {
            delivery_id: delivery.id.clone(),
            run_id: id.to_owned(),
            url: delivery.url,
            attempts: 0,
            last_error: format!(
                "not sent: {max} deliveries were already pending in the cluster (max_pending_deliveries)"
            ),
            failed_at: unix_now(),
        };
        // The run's result is recorded: a letter that cannot be stored now is only logged.
        let stored = serde_json::to_string(&letter).map_err(|e| ClusterError::Malformed(e.to_string()));
        let letter_id = &delivery.id;
        if let Err(error) = async { cluster.store.dead_letter(letter_id, &stored?).await }.await {
            tracing::error!(delivery = %letter_id, run = %id, %error, "a delivery past the bound was not dead-lettered");
        }
    }
    Ok(true)
}

/// A finished run as stored: its report, unless it alone weighs more than `max_bytes` as JSON (then `done` with
/// an error saying so, as the in-memory store does).
fn stored_report(report: &RunReport, max_bytes: usize) -> Finished {
    let mut counter = ByteCounter(0);
    let weight = serde_json::to_writer(&mut counter, report).map_or(usize::MAX, |()| counter.0);
    match serde_json::to_string(report) {
        Ok(json) if weight <= max_bytes => Finished { status: "done", report: Some(json), error: None },
        _ => Finished {
            status: "done",
            report: None,
            error: Some(format!(
                "the report ({weight} bytes as JSON) is larger than max_stored_run_bytes ({max_bytes} bytes) and was \
                 not kept"
            )),
        },
    }
}

/// Renews this node's claims every third of `reclaim_after_ms`, so live nodes never lose their runs.
async fn renew_claims(state: Arc<AppState>) {
    let Some(cluster) = state.cluster.as_ref() else { return };
    let every = cluster.store.reclaim_after() / 3;
    loop {
        tokio::time::sleep(every).await;
        let entries: Vec<String> = cluster.held().into_iter().map(|(_, held)| held.entry).collect();
        if let Err(error) = cluster.store.renew(&entries).await {
            tracing::warn!(%error, held = entries.len(), "cluster: claims not renewed; other nodes may reclaim them");
        }
    }
}

/// Attempts the webhook deliveries that are due, from any node's runs.
async fn deliver_webhooks(state: Arc<AppState>) {
    let (Some(cluster), Some(webhooks)) = (state.cluster.as_ref(), state.webhooks.as_ref()) else { return };
    // Past the lease another node attempts the delivery again: longer than one attempt may take.
    let lease = webhooks.timeout() + Duration::from_secs(5);
    loop {
        let leased = match cluster.store.lease_deliveries(DELIVERY_BATCH, lease).await {
            Ok(leased) => leased,
            Err(error) => {
                tracing::warn!(%error, "cluster: cannot lease webhook deliveries; retrying");
                tokio::time::sleep(REDIS_BACKOFF).await;
                continue;
            }
        };
        if leased.is_empty() {
            tokio::time::sleep(DELIVERY_POLL).await;
            continue;
        }
        let attempts = leased.into_iter().map(|delivery| attempt_delivery(&state, delivery));
        futures_util::future::join_all(attempts).await;
    }
}

/// One attempt of a leased delivery, then its record: delivered, retried later, or dead-lettered.
async fn attempt_delivery(state: &AppState, delivery: Delivery) {
    let (Some(cluster), Some(webhooks)) = (state.cluster.as_ref(), state.webhooks.as_ref()) else { return };
    let (id, run, url) = (&delivery.id, &delivery.run_id, &delivery.url);
    let attempt = delivery.attempts + 1;
    let recorded = match webhooks.attempt_stored(id, run, url, delivery.body.as_bytes()).await {
        Ok(status) => {
            tracing::info!(delivery = %id, run = %run, %url, attempt, status, "webhook delivered");
            cluster.store.delivered(id).await
        }
        Err(error) if attempt >= webhooks.max_attempts() => {
            tracing::error!(delivery = %id, run = %run, %url, attempt, %error, "webhook dead-lettered");
            let letter = DeadLetter {
                delivery_id: id.clone(),
                run_id: run.clone(),
                url: url.clone(),
                attempts: attempt,
                last_error: error,
                failed_at: unix_now(),
            };
            match serde_json::to_string(&letter) {
                Ok(letter) => cluster.store.dead_letter(id, &letter).await,
                Err(error) => Err(ClusterError::Malformed(error.to_string())),
            }
        }
        Err(error) => {
            tracing::warn!(delivery = %id, run = %run, %url, attempt, %error, "webhook attempt failed");
            cluster.store.retry_later(id, attempt, &error, webhooks.backoff_after(attempt)).await
        }
    };
    if let Err(error) = recorded {
        tracing::warn!(delivery = %id, %error, "cluster: the attempt was not recorded; it is attempted again later");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmagent::{CapabilityManifest, ManifestCeilings};

    fn manifest(toml: &str) -> EffectiveManifest {
        CapabilityManifest::from_toml_str(toml)
            .and_then(|m| m.resolve(std::path::Path::new("/"), &ManifestCeilings::default()))
            .unwrap_or_else(|e| panic!("{toml}: {e}"))
    }

    #[test]
    fn only_runs_granted_network_capabilities_or_writable_mounts_may_act() {
        assert!(!may_act(&manifest("")));
        assert!(!may_act(&manifest("cpu_ms = 100")));
        assert!(may_act(&manifest(r#"allowed_hosts = ["https://api.example.com"]"#)));
        assert!(may_act(&manifest(r#"extra_capabilities = ["tool:search"]"#)));
        let dir = std::env::temp_dir();
        let dir = dir.display();
        assert!(!may_act(&manifest(&format!("allowed_read_paths = [\"{dir}\"]"))));
        assert!(may_act(&manifest(&format!("allowed_write_paths = [\"{dir}\"]"))));
    }

    #[test]
    fn a_report_larger_than_the_bound_is_not_stored() {
        let manifest = EffectiveManifest::deny_all();
        let error = wasmagent::ErrorInfo { kind: wasmagent::ErrorKind::Internal, message: String::new() };
        let mut report = RunReport::refused("js", error, &manifest, "sha256:00");
        let small = stored_report(&report, 100_000);
        assert_eq!(small.report.map(|r| serde_json::from_str::<RunReport>(&r).ok()), Some(Some(report.clone())));
        report.stdout = "x".repeat(200_000);
        let big = stored_report(&report, 100_000);
        assert_eq!((big.status, big.report), ("done", None));
        assert!(big.error.is_some_and(|e| e.contains("max_stored_run_bytes")));
    }
}
