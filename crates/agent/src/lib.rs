//! The wasmagent agent runtime: a chat model, the sandbox's tools and a budget, run as one task.
//!
//! This crate owns the loop: it composes the system prompt from named fragments ([`PromptFragment`]; debug ones
//! are refused unless the operator allows them), offers the model the code-mode tools (`execute_code`,
//! `search_docs`, exactly the MCP server's, served in-process by `wasmagent-mcp`) or, in tool mode, the granted
//! host tools, runs what the model calls, hands results back delimited as untrusted data and cut to a stated size,
//! and stops on an answer or when a budget runs out: `max_steps` model turns, `max_model_tokens`, a wall-clock
//! deadline (all finite by default), with the manifest's limits on every run. It streams typed [`AgentEvent`]s,
//! pauses tools marked `needs_approval` until [`Approvals::answer`], validates a structured answer against a JSON
//! Schema with bounded repairs, falls back to the next model only when one fails before producing anything, and
//! returns an [`AgentReport`] (`wasmagent.agent/v1`). With [`Agent::with_audit_log`], every step (model call, code
//! run, tool call) and the ending is appended to the signed, hash-chained audit log as it happens; an append that
//! fails stops the run, so the agent never acts unrecorded.
//!
//! It must not speak a vendor's wire format (`wasmagent-models` does), run code itself or decide policy (runs go
//! to [`wasmagent::Sandbox`] under the manifest; grants are the manifest's), and the sandbox crates must never
//! depend on it. Front ends: `wasmagent agent` in the cli crate.

mod approval;
mod prompt;
mod report;
mod run;
mod toolbelt;
mod untrusted;

pub use approval::{ApprovalRequest, Approvals, Decision, UnknownApproval};
pub use prompt::{PromptFragment, load_fragments};
pub use report::{AGENT_SCHEMA, AgentEvent, AgentOutcome, AgentReport, BudgetReport, StepRecord, UsageTotals};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use wasmagent::signing::record::AuditLog;
use wasmagent::{EffectiveManifest, Sandbox, ToolRegistry};
use wasmagent_models::ChatModel;

/// What the model is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `execute_code` and `search_docs`: the model writes programs that call the host tools.
    #[default]
    Code,
    /// The granted host tools as function tools.
    Tools,
}

impl std::str::FromStr for Mode {
    type Err = AgentError;
    fn from_str(mode: &str) -> Result<Self, AgentError> {
        match mode {
            "code" => Ok(Mode::Code),
            "tools" | "tool" => Ok(Mode::Tools),
            other => Err(AgentError::Config(format!("unknown mode {other:?} (code or tools)"))),
        }
    }
}

/// The limits of one run. Every one is finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Model turns.
    pub max_steps: u32,
    /// Input plus output tokens over all model calls, as the servers report them.
    pub max_model_tokens: u64,
    /// Output tokens of one model call.
    pub max_output_tokens: u32,
    /// Wall-clock time for the whole task.
    pub deadline: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_steps: 20,
            max_model_tokens: 200_000,
            max_output_tokens: 4096,
            deadline: Duration::from_secs(600),
        }
    }
}

/// How an agent behaves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Code mode (default) or tool mode.
    pub mode: Mode,
    /// The budgets.
    pub budgets: Budgets,
    /// The operator's prompt fragments, after the built-in ones.
    pub fragments: Vec<PromptFragment>,
    /// Development only: let fragments marked `debug` into the prompt.
    pub allow_debug_fragments: bool,
    /// A JSON Schema the final answer must be valid against.
    pub output_schema: Option<Value>,
    /// How many times a final answer that breaks the schema is sent back for repair.
    pub max_repairs: u32,
    /// The most bytes of one tool result or program output the model sees.
    pub max_tool_output_bytes: usize,
    /// The longest task accepted, in bytes.
    pub max_task_bytes: usize,
    /// The most tool calls one model turn may make; the rest are answered with an error.
    pub max_calls_per_step: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            mode: Mode::Code,
            budgets: Budgets::default(),
            fragments: Vec::new(),
            allow_debug_fragments: false,
            output_schema: None,
            max_repairs: 2,
            max_tool_output_bytes: 16 * 1024,
            max_task_bytes: 16 * 1024,
            max_calls_per_step: 16,
        }
    }
}

/// Why an agent could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A configuration mistake.
    #[error("{0}")]
    Config(String),
}

/// An agent: models (the first primary, the rest fallbacks), the sandbox it runs code in, the manifest every run
/// is held to, and the host tools (the registry the sandbox was built with).
pub struct Agent {
    models: Vec<Arc<dyn ChatModel>>,
    sandbox: Arc<Sandbox>,
    manifest: EffectiveManifest,
    tools: ToolRegistry,
    config: AgentConfig,
    approvals: Option<Approvals>,
    audit_log: Option<Arc<AuditLog>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let models: Vec<String> = self.models.iter().map(|m| m.name()).collect();
        f.debug_struct("Agent").field("models", &models).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent. `models` must not be empty; `tools` should be the registry `sandbox` was built with (gated by
    /// [`Approvals::gate`] when some tools need approval).
    pub fn new(
        models: Vec<Arc<dyn ChatModel>>,
        sandbox: Arc<Sandbox>,
        manifest: EffectiveManifest,
        tools: ToolRegistry,
        config: AgentConfig,
    ) -> Result<Self, AgentError> {
        if models.is_empty() {
            return Err(AgentError::Config("an agent needs at least one model".to_owned()));
        }
        let budgets = &config.budgets;
        if budgets.max_steps == 0 || budgets.max_model_tokens == 0 || budgets.max_output_tokens == 0 {
            return Err(AgentError::Config("max_steps, max_model_tokens and max_output_tokens must be > 0".to_owned()));
        }
        if let Some(schema) = &config.output_schema {
            jsonschema::validator_for(schema)
                .map_err(|e| AgentError::Config(format!("the output schema is not a valid JSON Schema: {e}")))?;
        }
        Ok(Agent { models, sandbox, manifest, tools, config, approvals: None, audit_log: None })
    }

    /// Routes approval requests of tools gated by `approvals` through this agent's runs.
    pub fn with_approvals(mut self, approvals: Approvals) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// Appends a signed record of every step of this agent's runs to `log` (`wasmagent.agent-step/v1`, beside the
    /// run records the sandbox writes for code runs when it has the same log).
    pub fn with_audit_log(mut self, log: Arc<AuditLog>) -> Self {
        self.audit_log = Some(log);
        self
    }

    /// Runs `task` to an answer or a budget, calling `on_event` for each event as it happens.
    pub async fn run(&self, task: &str, on_event: &(dyn Fn(&AgentEvent) + Send + Sync)) -> AgentReport {
        run::run(self, task, on_event).await
    }
}
