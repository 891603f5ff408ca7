//! `request_capability`: the agent asks for one access its manifest refused, a person answers through MCP
//! elicitation, and an approved grant widens the manifest of that client connection only.
//!
//! What may be granted is bounded twice: the request is turned into manifest entries by the same rules as
//! `run --learn` ([`propose_for_denials`]: the narrowest mount, host pattern or tool grant, never the floor), and the
//! widened manifest must stay within the operator's maximum manifest; a request above it is refused without asking
//! anyone. Every decision (approved, declined, unanswered, refused) is logged, and written to the signed audit log
//! when there is one; an approval that cannot be recorded is not granted.

use rmcp::RoleServer;
use rmcp::model::{ElicitRequestParams, ElicitationAction, ElicitationSchema, EnumSchema};
use rmcp::service::{ElicitationMode, Peer};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use wasmagent::learn::{LearnOptions, add_grants, propose_for_denials, requested_denial};
use wasmagent::manifest_diff::diff;
use wasmagent::signing::record::{ApprovalRecord, AuditLog};
use wasmagent::{CapabilityManifest, EffectiveManifest, EgressConfig, Sandbox, ToolRegistry};

/// The kinds of denial `request_capability` can ask a person about.
pub(crate) use wasmagent::learn::REQUESTABLE;
/// Longest `capability` accepted, in bytes.
const MAX_CAPABILITY_BYTES: usize = 2048;
/// Longest `reason` accepted, in bytes (it is shown to a person).
const MAX_REASON_BYTES: usize = 1000;
/// Requests one connection may make; later ones are refused without asking.
const MAX_REQUESTS_PER_CONNECTION: u32 = 32;
/// How long a person has to answer, unless the embedder says otherwise.
const DEFAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// The operator's terms for escalation: the manifest connections start from, the most any approval may reach, and
/// where decisions are recorded. Without it, the server offers no `request_capability` tool.
pub struct Escalation {
    given: CapabilityManifest,
    maximum: EffectiveManifest,
    egress: EgressConfig,
    base: PathBuf,
    audit: Option<Arc<AuditLog>>,
    answer_timeout: Duration,
}

impl Escalation {
    /// Escalation from `given` (the manifest as written, which resolves to `effective`) up to `maximum`, with
    /// relative paths taken from `base`. Refused when `given` already grants something `maximum` does not.
    pub fn new(
        given: CapabilityManifest,
        effective: &EffectiveManifest,
        maximum: EffectiveManifest,
        egress: EgressConfig,
        base: PathBuf,
    ) -> Result<Self, String> {
        let beyond = diff(&maximum, effective).widens;
        if !beyond.is_empty() {
            return Err(format!(
                "the maximum manifest must grant at least what the manifest grants; the manifest {}",
                beyond.join("; ")
            ));
        }
        Ok(Escalation { given, maximum, egress, base, audit: None, answer_timeout: DEFAULT_ANSWER_TIMEOUT })
    }

    /// Writes every decision to `log` as a signed approval record.
    pub fn audit_log(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// How long a person has to answer before the request counts as unanswered.
    pub fn answer_timeout(mut self, timeout: Duration) -> Self {
        self.answer_timeout = timeout;
        self
    }
}

impl std::fmt::Debug for Escalation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escalation").field("audit", &self.audit.is_some()).finish_non_exhaustive()
    }
}

/// What one connection has been granted beyond the server's manifest.
#[derive(Default)]
struct Granted {
    /// For the rest of the connection: the manifest as written and as resolved.
    session: Option<(CapabilityManifest, Arc<EffectiveManifest>)>,
    /// For the next fresh run only: everything approved for it (and for the session), as written and resolved.
    once: Option<(CapabilityManifest, Arc<EffectiveManifest>)>,
    /// Requests made so far.
    requests: u32,
    /// Whether a person is being asked now.
    asking: bool,
}

/// One connection's grants. Cloning gives a new connection's: none.
pub(crate) struct ConnectionGrants(Mutex<Granted>);

impl ConnectionGrants {
    pub(crate) fn new() -> Self {
        ConnectionGrants(Mutex::new(Granted::default()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Granted> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The manifest a run holds to: a grant for the next fresh run (used up now), else the connection's widened
    /// manifest, else none (the server's).
    pub(crate) fn for_run(&self, fresh: bool) -> Option<Arc<EffectiveManifest>> {
        let mut granted = self.lock();
        if fresh && let Some((_, once)) = granted.once.take() {
            return Some(once);
        }
        granted.session.as_ref().map(|(_, effective)| effective.clone())
    }
}

impl Clone for ConnectionGrants {
    /// A new connection's grants: none. Grants are never shared between connections.
    fn clone(&self) -> Self {
        ConnectionGrants::new()
    }
}

/// Everything `request_capability` needs from the server.
pub(crate) struct Asking<'a> {
    pub(crate) escalation: &'a Escalation,
    pub(crate) sandbox: &'a Sandbox,
    pub(crate) tools: &'a ToolRegistry,
    pub(crate) server_manifest: &'a Arc<EffectiveManifest>,
    pub(crate) grants: &'a ConnectionGrants,
    /// Who is asking, for the record: the connection.
    pub(crate) subject: &'a str,
}

/// The answer to one request: a message for the agent, and whether it is a refusal.
pub(crate) struct Answer {
    pub(crate) text: String,
    pub(crate) granted: bool,
}

impl Answer {
    fn refused(text: String) -> Self {
        Answer { text, granted: false }
    }
}

impl Asking<'_> {
    /// Handles `request_capability {capability, reason}` from `peer`'s agent.
    pub(crate) async fn request(&self, capability: &str, reason: &str, peer: &Peer<RoleServer>) -> Answer {
        let capability = capability.trim();
        if capability.len() > MAX_CAPABILITY_BYTES || reason.len() > MAX_REASON_BYTES {
            return Answer::refused(format!(
                "capability is at most {MAX_CAPABILITY_BYTES} bytes and reason at most {MAX_REASON_BYTES} bytes"
            ));
        }
        let denial = match requested_denial(capability) {
            Ok(denial) => denial,
            Err(grammar) => return Answer::refused(grammar),
        };
        {
            let mut granted = self.grants.lock();
            if granted.requests >= MAX_REQUESTS_PER_CONNECTION {
                return Answer::refused(format!(
                    "refused: this connection has made {MAX_REQUESTS_PER_CONNECTION} requests, the most allowed"
                ));
            }
            granted.requests += 1;
        }
        let (current, current_effective) = self.current();
        let options = LearnOptions {
            ceilings: self.sandbox.ceilings(),
            egress: &self.escalation.egress,
            tools: self.tools,
            base: &self.escalation.base,
        };
        let proposal = match propose_for_denials(&current, &current_effective, &[denial], &options) {
            Ok(proposal) => proposal,
            Err(error) => return Answer::refused(format!("refused: {error}")),
        };
        if proposal.adds_nothing() {
            let why = if proposal.refused.is_empty() {
                "this connection's manifest already allows it; a run refused it for another reason (see the \
                 denial's reason)"
                    .to_owned()
            } else {
                proposal.refused.join("; ")
            };
            return Answer::refused(format!("nothing to approve for {capability:?}: {why}"));
        }
        let widened = match self.sandbox.resolve(&proposal.manifest, &self.escalation.base) {
            Ok(widened) => widened,
            Err(error) => return Answer::refused(format!("refused: the widened manifest does not resolve: {error}")),
        };
        let grants = diff(&current_effective, &widened).widens;
        let beyond = diff(&self.escalation.maximum, &widened).widens;
        if !beyond.is_empty() {
            let text = format!(
                "refused without asking anyone: {capability:?} is above the operator's maximum manifest (it {})",
                beyond.join("; ")
            );
            self.record(capability, &grants, reason, "refused", "");
            return Answer::refused(text);
        }
        if !peer.supported_elicitation_modes().contains(&ElicitationMode::Form) {
            return Answer::refused(
                "refused: this MCP client does not support elicitation, so no person can be asked to approve; \
                 ask the operator to widen the manifest instead"
                    .to_owned(),
            );
        }
        if std::mem::replace(&mut self.grants.lock().asking, true) {
            return Answer::refused("refused: a person is already being asked about another request".to_owned());
        }
        // Cleared however the wait ends, also when the client cancels the call and this future is dropped.
        struct Asked<'a>(&'a ConnectionGrants);
        impl Drop for Asked<'_> {
            fn drop(&mut self) {
                self.0.lock().asking = false;
            }
        }
        let asked = Asked(self.grants);
        let decision = self.ask(peer, capability, &grants, reason).await;
        drop(asked);
        let (decision, scope) = match decision {
            Ok(scope) => ("approved", scope),
            Err(decision) => (decision, ""),
        };
        if !self.record(capability, &grants, reason, decision, scope) && decision == "approved" {
            return Answer::refused(
                "refused: the approval could not be written to the audit log, so it is not granted".to_owned(),
            );
        }
        if decision != "approved" {
            return Answer::refused(format!("not granted: the person {decision} the request"));
        }
        let mut granted = self.grants.lock();
        // The next fresh run holds everything approved for it so far, and what the session gains meanwhile.
        let pending_once = granted.once.take().map(|(written, _)| written);
        if scope == "once" || pending_once.is_some() {
            let mut next_run = pending_once.unwrap_or_else(|| proposal.manifest.clone());
            add_grants(&mut next_run, &proposal.manifest);
            match self.sandbox.resolve(&next_run, &self.escalation.base) {
                Ok(resolved) => granted.once = Some((next_run, Arc::new(resolved))),
                Err(error) => {
                    return Answer::refused(format!("refused: the widened manifest does not resolve: {error}"));
                }
            }
        }
        let text = if scope == "once" {
            format!("approved for the next execute_code run without a session name: {}", grants.join("; "))
        } else {
            granted.session = Some((proposal.manifest, Arc::new(widened)));
            format!("approved for this connection (fresh runs and sessions opened from now on): {}", grants.join("; "))
        };
        Answer { text, granted: true }
    }

    /// The connection's manifest now, as written and resolved.
    fn current(&self) -> (CapabilityManifest, Arc<EffectiveManifest>) {
        match &self.grants.lock().session {
            Some((written, effective)) => (written.clone(), effective.clone()),
            None => (self.escalation.given.clone(), self.server_manifest.clone()),
        }
    }

    /// Asks the person; `Ok` with the scope they approved, or `Err` with what they did instead.
    async fn ask(
        &self,
        peer: &Peer<RoleServer>,
        capability: &str,
        grants: &[String],
        reason: &str,
    ) -> Result<&'static str, &'static str> {
        let message = format!(
            "Code run by an agent was refused {capability}. Approving would give it:\n- {}\n\nThe agent's reason \
             (its own words, unverified): {}\n\nApprove it once (the next run only) or for this session?",
            grants.join("\n- "),
            reason.chars().filter(|c| !c.is_control() || *c == '\n').collect::<String>()
        );
        let choice = EnumSchema::builder(vec!["once".to_owned(), "session".to_owned()]).build();
        let Ok(schema) = ElicitationSchema::builder().required_enum_schema("approve", choice).build() else {
            return Err("unanswered");
        };
        let params = ElicitRequestParams::FormElicitationParams { meta: None, message, requested_schema: schema };
        let result = match peer.create_elicitation_with_timeout(params, Some(self.escalation.answer_timeout)).await {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!(%error, "request_capability: the elicitation failed");
                return Err("unanswered");
            }
        };
        match result.action {
            ElicitationAction::Accept => {
                match result.content.as_ref().and_then(|c| c.get("approve")).and_then(|v| v.as_str()) {
                    Some("once") => Ok("once"),
                    Some("session") => Ok("session"),
                    _ => Err("unanswered"),
                }
            }
            ElicitationAction::Decline => Err("declined"),
            ElicitationAction::Cancel => Err("cancelled"),
            _ => Err("unanswered"),
        }
    }

    /// Logs a decision and writes it to the audit log when there is one; `false` if that write failed.
    fn record(&self, capability: &str, grants: &[String], reason: &str, decision: &str, scope: &str) -> bool {
        tracing::info!(
            target: "wasmagent::audit",
            subject = self.subject, capability, decision, scope, grants = %grants.join("; "),
            "request_capability"
        );
        let Some(log) = &self.escalation.audit else { return true };
        let record = ApprovalRecord::new(self.subject, capability, grants.to_vec(), reason, decision, scope);
        match log.append_approval(record) {
            Ok(_) => true,
            Err(error) => {
                tracing::error!(%error, "cannot write an approval record to the audit log");
                false
            }
        }
    }
}
