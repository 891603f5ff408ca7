//! Sessions: a sandbox kept between calls ([`SandboxSession`], opened with [`crate::Sandbox::session`]).
//!
//! A session is one live JavaScript or Python instance created under a manifest. Each [`SandboxSession::run`] runs
//! code in it and returns an ordinary [`RunReport`] carrying `session_id` and `session_call`; every manifest limit
//! applies per call, and memory to the instance as a whole. The operator's [`SessionLimits`] bound how long a
//! session may stay idle or live, how many calls it may take, what its scratch directory may hold, and how many
//! sessions may be alive at once (per subject and in all).

use crate::{Error, Sandbox};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmagent_kernel::{KernelError, Language, RunReport, RunRequest, Session};
use wasmagent_manifest::{EffectiveManifest, SessionLimits};
use wasmagent_signing::record::AuditLog;

/// Why a session could not be opened or forked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The subject has as many sessions alive as `max_sessions_per_subject` allows.
    #[error("{0}")]
    TooManyForSubject(String),
    /// As many sessions are alive in this process as `max_sessions` allows.
    #[error("{0}")]
    TooMany(String),
    /// The language has no sessions (WebAssembly tools always run in a fresh sandbox).
    #[error("sessions run JavaScript or Python; {0} code always runs in a fresh sandbox")]
    Language(&'static str),
    /// The kernel refused or could not open (or fork) the session.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Live sessions, counted per subject and in all; shared by a [`Sandbox`] and every session it opened.
#[derive(Default)]
pub(crate) struct LiveSessions {
    by_subject: Mutex<HashMap<String, usize>>,
}

impl LiveSessions {
    /// Takes a place for one more session of `subject`, or says which cap refused it.
    fn admit(self: &Arc<Self>, subject: &str, limits: &SessionLimits) -> Result<Place, SessionError> {
        let mut counts = self.by_subject.lock().unwrap_or_else(PoisonError::into_inner);
        let total: usize = counts.values().sum();
        if total >= limits.max_sessions {
            return Err(SessionError::TooMany(format!(
                "{total} sessions are alive, the most this server keeps (max_sessions {}); close one or retry later",
                limits.max_sessions
            )));
        }
        let mine = counts.entry(subject.to_owned()).or_insert(0);
        if *mine >= limits.max_sessions_per_subject {
            return Err(SessionError::TooManyForSubject(format!(
                "this subject has {mine} sessions alive, the most allowed (max_sessions_per_subject {}); close one first",
                limits.max_sessions_per_subject
            )));
        }
        *mine += 1;
        Ok(Place { live: self.clone(), subject: subject.to_owned() })
    }

    /// Sessions alive now, in all.
    pub(crate) fn count(&self) -> usize {
        self.by_subject.lock().unwrap_or_else(PoisonError::into_inner).values().sum()
    }
}

/// One session's place among the live ones, given back when the session is dropped.
struct Place {
    live: Arc<LiveSessions>,
    subject: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.live.by_subject.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.subject) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.subject);
            }
        }
    }
}

/// What a session is, for listings and `GET /v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// The session's id.
    pub id: String,
    /// `js` or `python`.
    pub language: String,
    /// Calls run so far.
    pub calls: u64,
    /// Why the session ended, or null while it is usable.
    pub ended: Option<String>,
    /// Milliseconds since it was opened.
    pub age_ms: u64,
    /// Milliseconds since its last call (or since it was opened).
    pub idle_ms: u64,
    /// The id of the session it was forked from, or whose snapshot it was restored from, if any.
    pub forked_from: Option<String>,
}

/// A session's state at one moment, held on the host ([`SandboxSession::snapshot`]); [`Sandbox::restore_for`] makes
/// new sessions from it, each a copy. Cheap to clone (shared, never changed).
#[derive(Clone)]
pub struct SessionSnapshot {
    language: Language,
    state: Arc<dyn std::any::Any + Send + Sync>,
    taken_from: String,
}

impl std::fmt::Debug for SessionSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSnapshot").field("taken_from", &self.taken_from).finish_non_exhaustive()
    }
}

impl SessionSnapshot {
    /// The id of the session the snapshot was taken from.
    pub fn taken_from(&self) -> &str {
        &self.taken_from
    }

    /// The language of the session it was taken from.
    pub fn language(&self) -> Language {
        self.language
    }

    /// Bytes of engine memory the snapshot holds.
    pub fn memory_bytes(&self) -> usize {
        if let Some(js) = self.state.downcast_ref::<wasmagent_kernel_js::JsSnapshot>() {
            return js.memory_bytes();
        }
        self.state.downcast_ref::<wasmagent_kernel_python::PythonSnapshot>().map_or(0, |s| s.memory_bytes())
    }
}

/// A live sandbox kept between calls. Dropping it (or [`SandboxSession::close`]) frees the instance and removes
/// its scratch directory.
pub struct SandboxSession {
    id: String,
    language: Language,
    inner: Box<dyn Session>,
    limits: SessionLimits,
    opened: Instant,
    last_used: Instant,
    forked_from: Option<String>,
    audit_log: Option<Arc<AuditLog>>,
    live: Arc<LiveSessions>,
    subject: String,
    _place: Place,
}

/// A new random session id: `s-` and 32 hex digits.
fn new_id() -> Result<String, KernelError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| KernelError::Unavailable(format!("no randomness for a session id: {e}")))?;
    Ok(format!("s-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Sandbox {
    /// Opens a session for `subject` (the caller the live-session caps count it against) running `language`
    /// under `manifest`, held to this sandbox's [`SessionLimits`].
    pub fn session_for(
        &self,
        subject: &str,
        manifest: &EffectiveManifest,
        language: Language,
    ) -> Result<SandboxSession, SessionError> {
        let limits = self.session_limits;
        let place = self.live_sessions.admit(subject, &limits)?;
        let inner: Box<dyn Session> = match language {
            Language::Js => Box::new(self.js.open_session(manifest, limits.session_scratch_bytes)?),
            Language::Python => Box::new(self.python.open_session(manifest, limits.session_scratch_bytes)?),
            Language::Wasm => return Err(SessionError::Language("WebAssembly")),
        };
        let now = Instant::now();
        Ok(SandboxSession {
            id: new_id()?,
            language,
            inner,
            limits,
            opened: now,
            last_used: now,
            forked_from: None,
            audit_log: self.audit_log.clone(),
            live: self.live_sessions.clone(),
            subject: subject.to_owned(),
            _place: place,
        })
    }

    /// Opens a session for the local caller (subject `local`); see [`Sandbox::session_for`].
    pub fn session(&self, manifest: &EffectiveManifest, language: Language) -> Result<SandboxSession, SessionError> {
        self.session_for("local", manifest, language)
    }

    /// A new session for `subject` holding a copy of `snapshot`'s state (under the manifest its session had),
    /// counted against the live-session caps like any other.
    pub fn restore_for(&self, subject: &str, snapshot: &SessionSnapshot) -> Result<SandboxSession, SessionError> {
        let limits = self.session_limits;
        let place = self.live_sessions.admit(subject, &limits)?;
        let state = &snapshot.state;
        let inner: Box<dyn Session> = if let Some(js) = state.downcast_ref::<wasmagent_kernel_js::JsSnapshot>() {
            Box::new(self.js.restore_session(js)?)
        } else if let Some(python) = state.downcast_ref::<wasmagent_kernel_python::PythonSnapshot>() {
            Box::new(self.python.restore_session(python)?)
        } else {
            return Err(SessionError::Kernel(KernelError::Unavailable(
                "the snapshot is not one this sandbox's kernels took".into(),
            )));
        };
        let now = Instant::now();
        Ok(SandboxSession {
            id: new_id()?,
            language: snapshot.language,
            inner,
            limits,
            opened: now,
            last_used: now,
            forked_from: Some(snapshot.taken_from.clone()),
            audit_log: self.audit_log.clone(),
            live: self.live_sessions.clone(),
            subject: subject.to_owned(),
            _place: place,
        })
    }

    /// Sessions alive now in this process.
    pub fn live_sessions(&self) -> usize {
        self.live_sessions.count()
    }
}

impl SandboxSession {
    /// The session's id (`s-` and 32 hex digits), in every report of its calls.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session's language.
    pub fn language(&self) -> Language {
        self.language
    }

    /// Holds this session to `limits` where they are narrower than the ones it has (idle time, age, calls; the
    /// scratch cap and the live-session caps stay the operator's).
    pub fn narrow_limits(mut self, limits: &SessionLimits) -> Self {
        self.limits.session_idle_ms = self.limits.session_idle_ms.min(limits.session_idle_ms);
        self.limits.session_max_ms = self.limits.session_max_ms.min(limits.session_max_ms);
        self.limits.session_max_calls = self.limits.session_max_calls.min(limits.session_max_calls);
        self
    }

    /// Ends the session when one of its limits has run out (idle time, age, calls); returns why it has ended, if
    /// it has. Holders of many sessions call it to sweep idle ones.
    pub fn expire(&mut self) -> Option<&str> {
        if self.inner.ended().is_none() {
            let now = Instant::now();
            let idle = now.duration_since(self.last_used);
            let age = now.duration_since(self.opened);
            if idle > Duration::from_millis(self.limits.session_idle_ms) {
                self.inner.end(format!(
                    "idle for {} ms, longer than session_idle_ms ({} ms)",
                    millis(idle),
                    self.limits.session_idle_ms
                ));
            } else if age > Duration::from_millis(self.limits.session_max_ms) {
                self.inner.end(format!(
                    "open for {} ms, longer than session_max_ms ({} ms)",
                    millis(age),
                    self.limits.session_max_ms
                ));
            } else if self.inner.calls() >= self.limits.session_max_calls {
                self.inner.end(format!("it took session_max_calls ({}) calls", self.limits.session_max_calls));
            }
        }
        self.inner.ended()
    }

    /// Runs `request` in the session. With an audit log, a signed record of the call is appended (its report names
    /// the session and the call). `Err` means nothing ran: the session had ended (the error says why), or the
    /// request was refused.
    pub fn run(&mut self, request: &RunRequest) -> Result<RunReport, Error> {
        if let Some(reason) = self.expire() {
            return Err(Error::Kernel(KernelError::SessionEnded(reason.to_owned())));
        }
        let mut report = self.inner.run(request)?;
        self.last_used = Instant::now();
        report.session_id = Some(self.id.clone());
        if report.session_ended.is_none() && self.inner.calls() >= self.limits.session_max_calls {
            self.inner.end(format!("it took session_max_calls ({}) calls", self.limits.session_max_calls));
            report.session_ended = self.inner.ended().map(str::to_owned);
        }
        report.enforce_bounds();
        match &self.audit_log {
            Some(log) => match log.append(&report) {
                Ok(_) => Ok(report),
                Err(error) => Err(Error::Record { report: Box::new(report), error }),
            },
            None => Ok(report),
        }
    }

    /// A new session (a new id, counted against the same caps) whose state is a copy of this one's now: its
    /// memory, globals and scratch files. Nothing is shared afterwards. Python sessions cannot be forked (the
    /// error says why).
    pub fn fork(&mut self) -> Result<SandboxSession, SessionError> {
        if let Some(reason) = self.expire() {
            return Err(SessionError::Kernel(KernelError::SessionEnded(reason.to_owned())));
        }
        let place = self.live.admit(&self.subject, &self.limits)?;
        let inner = self.inner.fork()?;
        self.last_used = Instant::now();
        let now = Instant::now();
        Ok(SandboxSession {
            id: new_id()?,
            language: self.language,
            inner,
            limits: self.limits,
            opened: now,
            last_used: now,
            forked_from: Some(self.id.clone()),
            audit_log: self.audit_log.clone(),
            live: self.live.clone(),
            subject: self.subject.clone(),
            _place: place,
        })
    }

    /// A copy of the session's state now, kept on the host for [`Sandbox::restore_for`]. Python sessions cannot be
    /// copied (the error says why).
    pub fn snapshot(&mut self) -> Result<SessionSnapshot, SessionError> {
        if let Some(reason) = self.expire() {
            return Err(SessionError::Kernel(KernelError::SessionEnded(reason.to_owned())));
        }
        let state = self.inner.snapshot()?;
        self.last_used = Instant::now();
        Ok(SessionSnapshot { language: self.language, state, taken_from: self.id.clone() })
    }

    /// What the session is now.
    pub fn info(&self) -> SessionInfo {
        let now = Instant::now();
        SessionInfo {
            id: self.id.clone(),
            language: match self.language {
                Language::Js => "js",
                Language::Python => "python",
                Language::Wasm => "wasm",
            }
            .to_owned(),
            calls: self.inner.calls(),
            ended: self.inner.ended().map(str::to_owned),
            age_ms: millis(now.duration_since(self.opened)),
            idle_ms: millis(now.duration_since(self.last_used)),
            forked_from: self.forked_from.clone(),
        }
    }

    /// Ends the session and frees its instance and scratch directory.
    pub fn close(self) {}
}
