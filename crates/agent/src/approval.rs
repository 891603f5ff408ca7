//! Human approval for tools the operator marks `needs_approval`.
//!
//! [`Approvals::gate`] wraps those tools in the registry the sandbox is built with, so a call from code (code mode)
//! and a direct call (tool mode) both stop at the same place: the call's thread sends an [`ApprovalRequest`] to
//! the running agent, which emits an `approval_needed` event, and then waits on a channel for
//! [`Approvals::answer`]. Nothing polls; a call nobody answers within the approval timeout is declined.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use wasmagent::{Tool, ToolRegistry, capability_covers};
use wasmagent_tools::RegistryError;

/// An approval the agent is waiting for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRequest {
    /// What [`Approvals::answer`] takes.
    pub id: u64,
    /// The tool.
    pub tool: String,
    /// The arguments it would be called with.
    pub arguments: Value,
}

/// The answer to an approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Run the call.
    Approve,
    /// Refuse it; the model is told the reason.
    Decline {
        /// Why.
        #[serde(default)]
        reason: String,
    },
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no approval {0} is pending (it was answered, timed out, or never existed)")]
pub struct UnknownApproval(pub u64);

/// The approval gate of one agent. Cheap to clone; one agent run listens at a time.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    next: AtomicU64,
    timeout: Duration,
    pending: Mutex<HashMap<u64, mpsc::Sender<Decision>>>,
    listener: Mutex<Option<UnboundedSender<ApprovalRequest>>>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").field("timeout", &self.inner.timeout).finish_non_exhaustive()
    }
}

impl Approvals {
    /// A gate whose requests are declined when nobody answers within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Approvals {
            inner: Arc::new(Inner {
                next: AtomicU64::new(1),
                timeout,
                pending: Mutex::new(HashMap::new()),
                listener: Mutex::new(None),
            }),
        }
    }

    /// `registry` with every tool matching one of `patterns` (`name`, `namespace.*` or `*`, as in grants) wrapped
    /// so that each call waits for approval. Build the sandbox with the result.
    pub fn gate(&self, registry: &ToolRegistry, patterns: &[String]) -> Result<ToolRegistry, RegistryError> {
        let mut gated = ToolRegistry::new();
        for tool in registry.iter() {
            let needs =
                patterns.iter().any(|p| capability_covers(&format!("tool:{p}"), &format!("tool:{}", tool.name())));
            if !needs {
                gated.register(tool.clone())?;
                continue;
            }
            let (inner, gate) = (tool.clone(), self.clone());
            gated.register(Tool::new(tool.name(), tool.description(), tool.input_schema().clone(), move |args| {
                match gate.wait(inner.name(), &args) {
                    Decision::Approve => inner.call(args),
                    Decision::Decline { reason } if reason.is_empty() => {
                        Err(format!("the operator declined the call of {}", inner.name()))
                    }
                    Decision::Decline { reason } => {
                        Err(format!("the operator declined the call of {}: {reason}", inner.name()))
                    }
                }
            }))?;
        }
        Ok(gated)
    }

    /// Answers request `id`.
    pub fn answer(&self, id: u64, decision: Decision) -> Result<(), UnknownApproval> {
        let sender = self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        match sender {
            Some(sender) => sender.send(decision).map_err(|_| UnknownApproval(id)),
            None => Err(UnknownApproval(id)),
        }
    }

    /// Makes the calling agent run the one that hears requests.
    pub(crate) fn listen(&self) -> UnboundedReceiver<ApprovalRequest> {
        let (sender, receiver) = unbounded_channel();
        *self.inner.listener.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
        receiver
    }

    /// Blocks the calling (tool) thread until the request is answered or times out.
    fn wait(&self, tool: &str, arguments: &Value) -> Decision {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel();
        self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, sender);
        let request = ApprovalRequest { id, tool: tool.to_owned(), arguments: arguments.clone() };
        let heard = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|listener| listener.send(request).is_ok());
        let decision = if heard {
            receiver.recv_timeout(self.inner.timeout).unwrap_or_else(|_| Decision::Decline {
                reason: format!("no approval within {} s", self.inner.timeout.as_secs()),
            })
        } else {
            Decision::Decline { reason: "it needs approval and no agent run is listening".to_owned() }
        };
        self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> ToolRegistry {
        let mut registry = ToolRegistry::new();
        registry.register(Tool::new("mail.send", "Sends mail.", json!({}), |_| Ok(json!("sent")))).unwrap();
        registry.register(Tool::new("mail.read", "Reads mail.", json!({}), |_| Ok(json!("read")))).unwrap();
        registry
    }

    #[test]
    fn a_gated_call_waits_for_the_answer_on_a_channel() {
        let approvals = Approvals::new(Duration::from_secs(30));
        let gated = approvals.gate(&registry(), &["mail.send".to_owned()]).unwrap();
        let mut requests = approvals.listen();
        assert_eq!(gated.get("mail.read").unwrap().call(json!({})), Ok(json!("read")), "ungated tools run at once");
        let tool = gated.get("mail.send").unwrap().clone();
        let call = std::thread::spawn(move || tool.call(json!({"to": "x"})));
        let request = requests.blocking_recv().unwrap();
        assert_eq!((request.tool.as_str(), &request.arguments), ("mail.send", &json!({"to": "x"})));
        approvals.answer(request.id, Decision::Approve).unwrap();
        assert_eq!(call.join().unwrap(), Ok(json!("sent")));
        assert_eq!(approvals.answer(request.id, Decision::Approve), Err(UnknownApproval(request.id)));

        let tool = gated.get("mail.send").unwrap().clone();
        let call = std::thread::spawn(move || tool.call(json!({})));
        let request = requests.blocking_recv().unwrap();
        approvals.answer(request.id, Decision::Decline { reason: "not today".to_owned() }).unwrap();
        assert_eq!(call.join().unwrap(), Err("the operator declined the call of mail.send: not today".to_owned()));
    }

    #[test]
    fn unanswered_and_unheard_requests_are_declined() {
        let approvals = Approvals::new(Duration::from_millis(50));
        let gated = approvals.gate(&registry(), &["mail.*".to_owned()]).unwrap();
        let unheard = gated.get("mail.read").unwrap().call(json!({})).unwrap_err();
        assert!(unheard.contains("no agent run is listening"), "{unheard}");
        let _requests = approvals.listen();
        let timed_out = gated.get("mail.read").unwrap().call(json!({})).unwrap_err();
        assert!(timed_out.contains("no approval within"), "{timed_out}");
    }
}
