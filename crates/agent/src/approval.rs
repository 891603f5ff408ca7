//! Human approval for tools the operator marks `needs_approval`.
//!
//! [`Approvals::gate`] wraps those tools in the registry the sandbox is built with, so a call from code (code mode)
//! and a direct call (tool mode) both stop at the same place: the call's thread sends an [`ApprovalRequest`] to
//! the agent run the call is for (the run's `RunContext::caller`, which the agent sets to its run id), which emits
//! an `approval_needed` event, and then waits on a channel for [`Approvals::answer`]. Each agent run listens for
//! its own calls only, so runs sharing one gate never wait for each other. Nothing polls; a call nobody answers
//! within the approval timeout, or before its run's deadline, is declined and never runs.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};
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

/// The approval gate of one agent (or of every agent run of a server). Cheap to clone; any number of agent runs
/// listen at once, each for the calls made for it.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    next: AtomicU64,
    timeout: Duration,
    pending: Mutex<HashMap<u64, mpsc::Sender<Decision>>>,
    /// The listening agent runs, by run id.
    listeners: Mutex<HashMap<String, UnboundedSender<ApprovalRequest>>>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").field("timeout", &self.inner.timeout).finish_non_exhaustive()
    }
}

/// An agent run listening for its approval requests; it stops listening when dropped.
pub(crate) struct Listening {
    inner: Arc<Inner>,
    run_id: String,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.inner.listeners.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.run_id);
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
                listeners: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `registry` with every tool matching one of `patterns` (`name`, `namespace.*` or `*`, as in grants) wrapped
    /// so that each call waits for approval by the agent run it is for. Build the sandbox with the result.
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
            let schema = tool.input_schema().clone();
            gated.register(Tool::per_run(tool.name(), tool.description(), schema, move |run, args| {
                match gate.wait(run.caller(), inner.name(), &args, run.deadline()) {
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

    /// Makes agent run `run_id` the one that hears requests of calls made for it, until the guard is dropped.
    pub(crate) fn listen(&self, run_id: &str) -> (Listening, UnboundedReceiver<ApprovalRequest>) {
        let (sender, receiver) = unbounded_channel();
        self.inner.listeners.lock().unwrap_or_else(PoisonError::into_inner).insert(run_id.to_owned(), sender);
        (Listening { inner: self.inner.clone(), run_id: run_id.to_owned() }, receiver)
    }

    /// Blocks the calling (tool) thread until the request is answered, the approval timeout passes or the calling
    /// run's `deadline` does (its call is abandoned then, so it must not run later).
    fn wait(&self, caller: Option<&str>, tool: &str, arguments: &Value, deadline: Instant) -> Decision {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel();
        self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, sender);
        let request = ApprovalRequest { id, tool: tool.to_owned(), arguments: arguments.clone() };
        let heard = caller.is_some_and(|caller| {
            let listeners = self.inner.listeners.lock().unwrap_or_else(PoisonError::into_inner);
            listeners.get(caller).is_some_and(|listener| listener.send(request).is_ok())
        });
        let decision = if heard {
            let left = deadline.saturating_duration_since(Instant::now());
            let by_deadline = left < self.inner.timeout;
            receiver.recv_timeout(left.min(self.inner.timeout)).unwrap_or_else(|_| Decision::Decline {
                reason: if by_deadline {
                    "no approval before the run's deadline (its manifest's cpu_ms)".to_owned()
                } else {
                    format!("no approval within {} s", self.inner.timeout.as_secs())
                },
            })
        } else {
            Decision::Decline { reason: "it needs approval and no agent run is listening for this run".to_owned() }
        };
        self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasmagent::{CapabilityManifest, ManifestCeilings};
    use wasmagent_tools::ToolSession;

    fn registry() -> ToolRegistry {
        let mut registry = ToolRegistry::new();
        registry.register(Tool::new("mail.send", "Sends mail.", json!({}), |_| Ok(json!("sent")))).unwrap();
        registry.register(Tool::new("mail.read", "Reads mail.", json!({}), |_| Ok(json!("read")))).unwrap();
        registry
    }

    /// Calls `name` as a run made for `caller` would, with `cpu_ms` to its deadline.
    fn call_for(tools: &ToolRegistry, caller: Option<&str>, name: &str, cpu_ms: u64) -> Result<Value, String> {
        let manifest = CapabilityManifest { extra_capabilities: vec!["tool:*".to_owned()], ..Default::default() };
        let manifest = manifest.resolve(std::path::Path::new("/"), &ManifestCeilings::default()).unwrap();
        let deadline = Instant::now() + Duration::from_millis(cpu_ms);
        let mut session =
            ToolSession::new(Arc::new(tools.clone()), &manifest, deadline).with_caller(caller.map(str::to_owned));
        session
            .call(Ok(name.to_owned()), Ok(b"{\"to\": \"x\"}".to_vec()))
            .map(|bytes| serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn a_gated_call_waits_for_the_answer_on_a_channel() {
        let approvals = Approvals::new(Duration::from_secs(30));
        let gated = approvals.gate(&registry(), &["mail.send".to_owned()]).unwrap();
        let (_listening, mut requests) = approvals.listen("run-1");
        assert_eq!(call_for(&gated, Some("run-1"), "mail.read", 5000), Ok(json!("read")), "ungated tools run at once");
        let tools = gated.clone();
        let call = std::thread::spawn(move || call_for(&tools, Some("run-1"), "mail.send", 30_000));
        let request = requests.blocking_recv().unwrap();
        assert_eq!((request.tool.as_str(), &request.arguments), ("mail.send", &json!({"to": "x"})));
        approvals.answer(request.id, Decision::Approve).unwrap();
        assert_eq!(call.join().unwrap(), Ok(json!("sent")));
        assert_eq!(approvals.answer(request.id, Decision::Approve), Err(UnknownApproval(request.id)));

        let tools = gated.clone();
        let call = std::thread::spawn(move || call_for(&tools, Some("run-1"), "mail.send", 30_000));
        let request = requests.blocking_recv().unwrap();
        approvals.answer(request.id, Decision::Decline { reason: "not today".to_owned() }).unwrap();
        let declined = call.join().unwrap().unwrap_err();
        assert!(declined.contains("the operator declined the call of mail.send: not today"), "{declined}");
    }

    #[test]
    fn each_run_hears_only_its_own_calls_and_unheard_or_late_ones_are_declined() {
        let approvals = Approvals::new(Duration::from_secs(30));
        let gated = approvals.gate(&registry(), &["mail.*".to_owned()]).unwrap();
        let unheard = call_for(&gated, Some("run-1"), "mail.read", 5000).unwrap_err();
        assert!(unheard.contains("no agent run is listening"), "{unheard}");
        let (_one, mut one) = approvals.listen("run-1");
        let (two_listening, mut two) = approvals.listen("run-2");
        let anonymous = call_for(&gated, None, "mail.read", 5000).unwrap_err();
        assert!(anonymous.contains("no agent run is listening"), "a run made for nobody is heard by nobody");

        let tools = gated.clone();
        let call = std::thread::spawn(move || call_for(&tools, Some("run-2"), "mail.send", 30_000));
        let request = two.blocking_recv().unwrap();
        assert!(one.try_recv().is_err(), "run-1 does not hear run-2's call");
        approvals.answer(request.id, Decision::Approve).unwrap();
        assert_eq!(call.join().unwrap(), Ok(json!("sent")));

        drop(two_listening);
        let gone = call_for(&gated, Some("run-2"), "mail.read", 5000).unwrap_err();
        assert!(gone.contains("no agent run is listening"), "{gone}");

        let late = call_for(&gated, Some("run-1"), "mail.read", 100).unwrap_err();
        assert!(one.try_recv().is_ok(), "run-1 heard the request");
        assert!(late.contains("deadline"), "{late}");
        // The abandoned call stops waiting at the run's deadline, not after the 30 s timeout: an answer given after
        // the run ended cannot make the tool run.
        let waiting_until = Instant::now() + Duration::from_secs(10);
        while !approvals.inner.pending.lock().unwrap().is_empty() {
            assert!(Instant::now() < waiting_until, "the late call still waits for an answer");
            std::thread::sleep(Duration::from_millis(10));
        }

        let approvals = Approvals::new(Duration::from_millis(50));
        let gated = approvals.gate(&registry(), &["mail.*".to_owned()]).unwrap();
        let (_listening, _requests) = approvals.listen("run-3");
        let timed_out = call_for(&gated, Some("run-3"), "mail.read", 30_000).unwrap_err();
        assert!(timed_out.contains("no approval within"), "{timed_out}");
    }
}
