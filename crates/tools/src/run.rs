//! The run a tool call belongs to, for the few tools that keep state across one run's calls (a browser page) and
//! must let it go when the run ends, whatever the outcome. Most tools ignore it ([`crate::Tool::new`]); a tool built
//! with [`crate::Tool::per_run`] is handed it with every call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;
use wasmagent_kernel::{Denial, HttpExchange};
use wasmagent_manifest::EffectiveManifest;

/// What a tool reports for its run when the run ends: network requests it made on the run's behalf (they are the
/// run's `http_requests`) and what policy refused it (the run's denials).
#[derive(Debug, Default)]
pub struct RunRecords {
    /// Requests made for the run, in order.
    pub http_requests: Vec<HttpExchange>,
    /// Requests made but not listed (past the tool's own bound).
    pub unlisted_http_requests: u64,
    /// Refusals.
    pub denials: Vec<Denial>,
    /// Refusals counted but not listed.
    pub unlisted_denials: u64,
    /// Images the tool made for the run (a browser screenshot), for its report's artifacts; the kernel holds them to
    /// the run's `max_artifact_bytes` and artifact count like the guest's own `display` calls.
    pub images: Vec<ToolImage>,
}

/// An image a tool made for its run's report.
#[derive(Debug, Clone)]
pub struct ToolImage {
    /// Its media type (`image/png`).
    pub mime: String,
    /// Its title.
    pub title: Option<String>,
    /// The encoded image.
    pub bytes: Vec<u8>,
}

type EndHook = Box<dyn FnOnce() -> RunRecords + Send>;

/// One run as its tools see it: an identity unique in the process, the manifest and deadline it is held to, and
/// the hooks that end per-run state. The session that owns it runs the hooks once, when the run's records are taken
/// or when the session is dropped, so state cannot outlive its run.
pub struct RunContext {
    id: u64,
    caller: Option<String>,
    manifest: EffectiveManifest,
    deadline: Instant,
    /// `None` once the run has ended.
    ends: Mutex<Option<Vec<EndHook>>>,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext").field("id", &self.id).field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

impl RunContext {
    pub(crate) fn new(manifest: &EffectiveManifest, deadline: Instant) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        RunContext {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            caller: None,
            manifest: manifest.clone(),
            deadline,
            ends: Mutex::new(Some(Vec::new())),
        }
    }

    /// This run's identity, never reused in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whom the run is for, as its embedder named it (`RunRequest::caller`; an agent run's id), if anyone.
    pub fn caller(&self) -> Option<&str> {
        self.caller.as_deref()
    }

    pub(crate) fn set_caller(&mut self, caller: Option<String>) {
        self.caller = caller;
    }

    /// The manifest the run is held to.
    pub fn manifest(&self) -> &EffectiveManifest {
        &self.manifest
    }

    /// The run's wall-clock deadline (its `cpu_ms`): nothing done for it should outlast this.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs `hook` when the run ends; what it returns joins the run's report. Returns `false` (and drops the hook
    /// unrun) when the run has already ended: a call abandoned at the deadline that creates state afterwards must
    /// release it itself.
    pub fn on_end(&self, hook: impl FnOnce() -> RunRecords + Send + 'static) -> bool {
        match self.ends.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            Some(hooks) => {
                hooks.push(Box::new(hook));
                true
            }
            None => false,
        }
    }

    /// Whether the run has ended.
    pub fn ended(&self) -> bool {
        self.ends.lock().unwrap_or_else(PoisonError::into_inner).is_none()
    }

    /// Ends the run: runs every hook once, in the order they were added, and returns what they reported. Later
    /// calls return nothing.
    pub(crate) fn end(&self) -> Vec<RunRecords> {
        let hooks = self.ends.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_default();
        hooks
            .into_iter()
            .map(|hook| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).unwrap_or_else(|_| RunRecords::default())
            })
            .collect()
    }
}
