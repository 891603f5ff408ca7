//! Limits on sessions (a live sandbox kept between calls): how long one may stay idle, how long it may live, how
//! many calls it may take, how much its scratch directory may hold, and how many may be alive at once. These are
//! the operator's, not a manifest's: every call of a session is still held to its manifest's per-run limits.

use crate::defaults;
use serde::{Deserialize, Serialize};

/// The operator's session limits. Every one is finite; the defaults are the `SESSION_*` constants in
/// [`defaults`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionLimits {
    /// A session no call reached for this long ends, in milliseconds.
    pub session_idle_ms: u64,
    /// A session ends this long after it was opened, in milliseconds, whatever it is doing.
    pub session_max_ms: u64,
    /// Calls one session may take; the call after the last ends it.
    pub session_max_calls: u64,
    /// Bytes the session's scratch directory may hold after a call; past it the session ends.
    pub session_scratch_bytes: u64,
    /// Sessions one subject may have alive at once.
    pub max_sessions_per_subject: usize,
    /// Sessions alive at once on one server (each holds an instance slot of the engine's pool).
    pub max_sessions: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            session_idle_ms: defaults::SESSION_IDLE_MS,
            session_max_ms: defaults::SESSION_MAX_MS,
            session_max_calls: defaults::SESSION_MAX_CALLS,
            session_scratch_bytes: defaults::SESSION_SCRATCH_BYTES,
            max_sessions_per_subject: defaults::MAX_SESSIONS_PER_SUBJECT,
            max_sessions: defaults::MAX_SESSIONS,
        }
    }
}

impl SessionLimits {
    /// Refuses a zero limit (which would make every session end at once or never start), naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let fields: [(&str, u64); 6] = [
            ("session_idle_ms", self.session_idle_ms),
            ("session_max_ms", self.session_max_ms),
            ("session_max_calls", self.session_max_calls),
            ("session_scratch_bytes", self.session_scratch_bytes),
            ("max_sessions_per_subject", self.max_sessions_per_subject as u64),
            ("max_sessions", self.max_sessions as u64),
        ];
        match fields.iter().find(|(_, value)| *value == 0) {
            Some((name, _)) => Err(format!("session limit `{name}` must be at least 1")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_finite_and_valid_and_zero_is_refused_by_name() {
        let limits = SessionLimits::default();
        assert_eq!(limits.validate(), Ok(()));
        assert!(limits.session_idle_ms < u64::MAX && limits.session_max_calls < u64::MAX);
        let zero = SessionLimits { session_max_calls: 0, ..limits };
        assert_eq!(zero.validate(), Err("session limit `session_max_calls` must be at least 1".into()));
        let parsed: SessionLimits = serde_json::from_str(r#"{"session_idle_ms": 5}"#).unwrap();
        assert_eq!((parsed.session_idle_ms, parsed.session_max_ms), (5, defaults::SESSION_MAX_MS));
    }
}
