//! `execute_code`'s sessions: a `session` name continues one live sandbox within one client connection.
//!
//! Each connection has its own names ([`ConnectionSessions`]: every clone of the server, which is one connection,
//! starts with none), so two clients using the same name never meet. Sessions end with the connection: dropping
//! the server's clone drops them. The sandbox's session limits apply (idle time, age, calls, live sessions), with
//! each connection counted as its own subject.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use wasmagent::{EffectiveManifest, Language, Sandbox, SandboxSession};

/// Longest session name accepted, in bytes.
pub(crate) const MAX_SESSION_NAME_BYTES: usize = 128;
/// Session names one connection may use (ended ones included, so their reasons can be told).
const MAX_NAMES_PER_CONNECTION: usize = 64;

/// One name's session: live, or the reason it ended.
enum Named {
    Live(Arc<Mutex<SandboxSession>>),
    Ended(String),
}

/// One connection's sessions by name. Cloning gives a new connection's: empty, with its own subject.
pub(crate) struct ConnectionSessions {
    subject: String,
    names: Mutex<HashMap<String, Named>>,
}

impl ConnectionSessions {
    pub(crate) fn new() -> Self {
        static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
        ConnectionSessions {
            subject: format!("mcp-connection-{}", CONNECTIONS.fetch_add(1, Ordering::Relaxed)),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Who this connection is, for logs and records.
    pub(crate) fn subject(&self) -> String {
        self.subject.clone()
    }

    /// The live session called `name` (opened now when the name is new), or why there is none.
    pub(crate) fn session(
        &self,
        name: &str,
        sandbox: &Sandbox,
        manifest: &EffectiveManifest,
        language: Language,
    ) -> Result<Arc<Mutex<SandboxSession>>, String> {
        if name.is_empty() || name.len() > MAX_SESSION_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(format!(
                "session names are 1 to {MAX_SESSION_NAME_BYTES} bytes without control characters; {} bytes given",
                name.len()
            ));
        }
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        // Sessions past their idle time or age end now, freeing their instances, not only when next called.
        for entry in names.values_mut() {
            let expired = match entry {
                Named::Live(session) => session.try_lock().ok().and_then(|mut s| s.expire().map(str::to_owned)),
                Named::Ended(_) => None,
            };
            if let Some(reason) = expired {
                *entry = Named::Ended(reason);
            }
        }
        match names.get(name) {
            Some(Named::Live(session)) => {
                let found = session.lock().unwrap_or_else(PoisonError::into_inner).language();
                if found != language {
                    return Err(format!(
                        "session {name:?} runs {}; use another session name for {}",
                        language_name(found),
                        language_name(language)
                    ));
                }
                return Ok(session.clone());
            }
            Some(Named::Ended(reason)) => {
                return Err(format!("session {name:?} has ended: {reason}; use another session name to start anew"));
            }
            None => {}
        }
        if names.len() >= MAX_NAMES_PER_CONNECTION {
            return Err(format!(
                "this connection has used {MAX_NAMES_PER_CONNECTION} session names, the most allowed; reconnect to \
                 start over"
            ));
        }
        let opened = sandbox.session_for(&self.subject, manifest, language).map_err(|e| e.to_string())?;
        let session = Arc::new(Mutex::new(opened));
        names.insert(name.to_owned(), Named::Live(session.clone()));
        Ok(session)
    }

    /// Marks `name`'s session ended with `reason`, dropping its instance.
    pub(crate) fn ended(&self, name: &str, reason: String) {
        self.names.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_owned(), Named::Ended(reason));
    }
}

impl Clone for ConnectionSessions {
    /// A new connection's sessions: none. Sessions are never shared between connections.
    fn clone(&self) -> Self {
        ConnectionSessions::new()
    }
}

fn language_name(language: Language) -> &'static str {
    match language {
        Language::Python => "python",
        _ => "javascript",
    }
}
