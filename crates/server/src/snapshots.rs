//! Session snapshots over HTTP: `POST /v1/sessions/{id}/snapshot` keeps a copy of a session's state on the server
//! (`wasmagent::SessionSnapshot`), `POST /v1/sessions` `{restore}` opens a new session from it, and
//! `DELETE /v1/snapshots/{id}` drops it. Each snapshot is seen only by the subject that took it (404 for everyone
//! else), and what the server holds is bounded by `[snapshots]`: snapshots per subject (429 past it), their bytes
//! in all (503 past it) and how long each is kept.

use crate::error::ApiError;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmagent::SessionSnapshot;

/// `[snapshots]`: what the server may hold of session snapshots. Every limit is finite.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Snapshots one subject may hold at once (default 4); past it a new one is refused with 429.
    pub max_per_subject: usize,
    /// Bytes of engine memory all held snapshots may weigh together (default 1 GiB); past it 503.
    pub max_bytes: u64,
    /// How long a snapshot is kept after it was taken, in seconds (default 3600); then it is dropped.
    pub ttl_secs: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig { max_per_subject: 4, max_bytes: 1 << 30, ttl_secs: 3600 }
    }
}

impl SnapshotConfig {
    /// Refuses a zero limit, naming it.
    pub fn validate(&self) -> Result<(), String> {
        match [
            ("max_per_subject", self.max_per_subject as u64),
            ("max_bytes", self.max_bytes),
            ("ttl_secs", self.ttl_secs),
        ]
        .iter()
        .find(|(_, value)| *value == 0)
        {
            Some((name, _)) => Err(format!("snapshots.{name} must be at least 1")),
            None => Ok(()),
        }
    }
}

/// What `POST /v1/sessions/{id}/snapshot` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    /// The snapshot's id (`snap-` and 32 hex digits), for `{"restore": id}` and `DELETE /v1/snapshots/{id}`.
    pub id: String,
    /// The session it was taken from.
    pub taken_from: String,
    /// `js` or `python`.
    pub language: String,
    /// Bytes of engine memory it holds (counted against `[snapshots] max_bytes`).
    pub memory_bytes: u64,
    /// Milliseconds until the server drops it.
    pub expires_in_ms: u64,
}

struct Held {
    owner: String,
    snapshot: Arc<SessionSnapshot>,
    bytes: u64,
    taken: Instant,
}

/// The snapshots this server holds.
#[derive(Default)]
pub(crate) struct Snapshots {
    held: Mutex<HashMap<String, Held>>,
}

impl Snapshots {
    /// Keeps `snapshot` for `owner`, or refuses it: 429 past the subject's cap, 503 past the server's bytes.
    pub(crate) fn keep(
        &self,
        config: &SnapshotConfig,
        owner: &str,
        language: &str,
        snapshot: SessionSnapshot,
    ) -> Result<SnapshotInfo, ApiError> {
        let bytes = u64::try_from(snapshot.memory_bytes()).unwrap_or(u64::MAX);
        let ttl = Duration::from_secs(config.ttl_secs);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, h| h.taken.elapsed() < ttl);
        let owned = held.values().filter(|h| h.owner == owner).count();
        if owned >= config.max_per_subject {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_snapshots",
                format!(
                    "you hold {owned} snapshots, the most [snapshots] max_per_subject allows ({}); delete one with \
                     DELETE /v1/snapshots/{{id}}",
                    config.max_per_subject
                ),
            ));
        }
        let total: u64 = held.values().map(|h| h.bytes).sum();
        if total.saturating_add(bytes) > config.max_bytes {
            return Err(ApiError::busy(
                format!(
                    "the server holds {total} bytes of snapshots; this one ({bytes} bytes) would pass [snapshots] \
                     max_bytes ({})",
                    config.max_bytes
                ),
                1,
            ));
        }
        let id = new_id()?;
        let info = SnapshotInfo {
            id: id.clone(),
            taken_from: snapshot.taken_from().to_owned(),
            language: language.to_owned(),
            memory_bytes: bytes,
            expires_in_ms: config.ttl_secs.saturating_mul(1000),
        };
        held.insert(id, Held { owner: owner.to_owned(), snapshot: Arc::new(snapshot), bytes, taken: Instant::now() });
        Ok(info)
    }

    /// The snapshot `id` of `owner` that has not expired; 404 otherwise (whoever else holds it).
    pub(crate) fn get(&self, config: &SnapshotConfig, id: &str, owner: &str) -> Result<Arc<SessionSnapshot>, ApiError> {
        let ttl = Duration::from_secs(config.ttl_secs);
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get(id) {
            Some(h) if h.owner == owner && h.taken.elapsed() < ttl => Ok(h.snapshot.clone()),
            _ => Err(not_found(id)),
        }
    }

    /// Drops the snapshot `id` of `owner`; 404 when there is none of theirs.
    pub(crate) fn remove(&self, id: &str, owner: &str) -> Result<(), ApiError> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get(id) {
            Some(h) if h.owner == owner => {
                held.remove(id);
                Ok(())
            }
            _ => Err(not_found(id)),
        }
    }

    /// Bytes of engine memory held now (for `/metrics`).
    pub(crate) fn bytes(&self) -> u64 {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).values().map(|h| h.bytes).sum()
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no snapshot {id} of yours"))
}

fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::busy(format!("no randomness for a snapshot id: {e}"), 1))?;
    Ok(format!("snap-{}", hex::encode(bytes)))
}
