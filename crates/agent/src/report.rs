//! The agent report (`wasmagent.agent/v1`) and the event stream.

use crate::Mode;
use serde::Serialize;
use serde_json::Value;
use wasmagent_models::{FinishReason, ToolCall};

/// The report's schema name.
pub const AGENT_SCHEMA: &str = "wasmagent.agent/v1";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentOutcome {
    /// The model gave a final answer (valid against the output schema, when there is one).
    Answered,
    /// `max_steps` model turns passed without a final answer.
    MaxSteps,
    /// The model tokens reached `max_model_tokens`.
    TokenBudget,
    /// The deadline passed.
    Timeout,
    /// A model call failed (and every fallback, where one could be tried), or the answer never matched the schema.
    ModelError,
    /// Refused before any model call (a debug fragment, a task too large, tools that would not start), the model
    /// refused the task, or a step could not be written to the audit log (the agent does not act unrecorded).
    Refused,
}

impl AgentOutcome {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentOutcome::Answered => "answered",
            AgentOutcome::MaxSteps => "max_steps",
            AgentOutcome::TokenBudget => "token_budget",
            AgentOutcome::Timeout => "timeout",
            AgentOutcome::ModelError => "model_error",
            AgentOutcome::Refused => "refused",
        }
    }
}

/// The budgets a run was held to.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetReport {
    /// Model turns.
    pub max_steps: u32,
    /// Input plus output tokens over all model calls.
    pub max_model_tokens: u64,
    /// Output tokens of one model call.
    pub max_output_tokens: u32,
    /// Wall-clock time for the whole task.
    pub deadline_ms: u64,
}

/// Totals over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UsageTotals {
    /// Model turns started.
    pub steps: u32,
    /// Model calls made (a fallback is a second call in the same step).
    pub model_calls: u32,
    /// Input tokens, as the servers reported them.
    pub input_tokens: u64,
    /// Output tokens, as the servers reported them.
    pub output_tokens: u64,
    /// Input plus output.
    pub total_tokens: u64,
    /// `execute_code` runs.
    pub code_runs: u32,
    /// Other tool calls (`search_docs`, host tools in tool mode), and rejected calls.
    pub tool_calls: u32,
}

/// One recorded step.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepRecord {
    /// A model call.
    ModelCall {
        /// The model turn (1-based).
        step: u32,
        /// `provider:model`.
        model: String,
        /// Input tokens.
        input_tokens: u64,
        /// Output tokens.
        output_tokens: u64,
        /// Whether the server reported usage (when not, the tokens are 0 and the token budget cannot see them).
        usage_reported: bool,
        /// How long it took.
        duration_ms: u64,
        /// Why the model stopped; absent when the call failed.
        finish_reason: Option<FinishReason>,
        /// Its text (cut to the step text limit).
        text: String,
        /// The calls it proposed.
        tool_calls: Vec<ToolCall>,
        /// Why the call failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An `execute_code` run.
    CodeRun {
        /// The model turn.
        step: u32,
        /// The call's id.
        call_id: String,
        /// "javascript" or "python", as asked.
        language: String,
        /// The program.
        code: String,
        /// Whether it failed.
        is_error: bool,
        /// How long it took.
        duration_ms: u64,
        /// The full run report (`wasmagent.run/v1`); absent when nothing ran.
        report: Option<Value>,
        /// What the model was told, when nothing ran.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Any other tool call.
    ToolCall {
        /// The model turn.
        step: u32,
        /// The call's id.
        call_id: String,
        /// The tool's name.
        name: String,
        /// The arguments as the model wrote them.
        arguments: String,
        /// Whether it failed.
        is_error: bool,
        /// How long it took.
        duration_ms: u64,
        /// The result text (cut to the step text limit).
        result: String,
    },
    /// A call refused before it ran; the message went back to the model.
    Rejected {
        /// The model turn.
        step: u32,
        /// The call's id.
        call_id: String,
        /// The name the model used.
        name: String,
        /// What the model was told.
        message: String,
    },
}

/// What one agent run did: `wasmagent.agent/v1`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    /// `wasmagent.agent/v1`.
    pub schema: &'static str,
    /// Random id of this run.
    pub run_id: String,
    /// How it ended.
    pub outcome: AgentOutcome,
    /// The final answer's text.
    pub answer: Option<String>,
    /// The final answer as JSON, when an output schema was given.
    pub structured_answer: Option<Value>,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Code or tool mode.
    pub mode: Mode,
    /// The models, the first one primary.
    pub models: Vec<String>,
    /// The prompt fragments the system prompt was made of.
    pub prompt_fragments: Vec<String>,
    /// The budgets.
    pub budgets: BudgetReport,
    /// Every model call, code run and tool call, in order.
    pub steps: Vec<StepRecord>,
    /// Totals.
    pub usage: UsageTotals,
    /// Wall-clock time.
    pub duration_ms: u64,
    /// Why a record could not be appended to the audit log, when one could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
}

/// What a running agent reports as it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A model turn starts.
    StepStart {
        /// The turn (1-based).
        step: u32,
        /// The model asked.
        model: String,
    },
    /// Text from the model, as it streams.
    TextDelta {
        /// The turn.
        step: u32,
        /// The text.
        text: String,
    },
    /// The model proposed a tool call.
    ToolCallProposed {
        /// The turn.
        step: u32,
        /// The call's id.
        call_id: String,
        /// The tool.
        name: String,
        /// Its arguments as written.
        arguments: String,
    },
    /// A tool call or code run finished (or was refused).
    ToolResult {
        /// The turn.
        step: u32,
        /// The call's id.
        call_id: String,
        /// The tool.
        name: String,
        /// Whether it failed.
        is_error: bool,
        /// The start of the result.
        summary: String,
    },
    /// A call waits for [`crate::Approvals::answer`].
    ApprovalNeeded {
        /// The id to answer.
        approval_id: u64,
        /// The tool.
        tool: String,
        /// Its arguments.
        arguments: Value,
    },
    /// Something failed (a model call, before a fallback is tried).
    Error {
        /// The turn.
        step: u32,
        /// What failed.
        message: String,
    },
    /// Tokens after a model call.
    Usage {
        /// The turn.
        step: u32,
        /// Input tokens of this call.
        input_tokens: u64,
        /// Output tokens of this call.
        output_tokens: u64,
        /// All tokens so far.
        total_tokens: u64,
    },
    /// The final answer.
    FinalAnswer {
        /// Its text.
        answer: String,
    },
    /// The run ended.
    Done {
        /// How.
        outcome: AgentOutcome,
    },
}
