//! One agent run: the loop from task to answer or budget.

use crate::report::{AGENT_SCHEMA, AgentEvent, AgentOutcome, AgentReport, BudgetReport, StepRecord, UsageTotals};
use crate::toolbelt::{CallOutcome, EXECUTE_CODE, SEARCH_DOCS, Toolbelt};
use crate::{Agent, Mode, prompt, untrusted};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;
use tokio::time::Instant as Deadline;
use wasmagent::signing::record::{AgentStepRecord, AuditLog};
use wasmagent_models::{ChatRequest, ChatResponse, FinishReason, Message, ToolCall};

/// Text kept in a step record (model text, tool results), and in an event summary.
const MAX_STEP_TEXT: usize = 16 * 1024;
const MAX_SUMMARY: usize = 2 * 1024;

/// The run's state: the report being written, where events go, and the audit log each step is appended to.
struct Recorder<'a> {
    report: AgentReport,
    on_event: &'a (dyn Fn(&AgentEvent) + Send + Sync),
    started: Instant,
    audit_log: Option<Arc<AuditLog>>,
}

impl Recorder<'_> {
    fn emit(&self, event: AgentEvent) {
        (self.on_event)(&event);
    }

    /// Adds `step` to the report and appends its record to the audit log. After a failed append nothing more is
    /// appended; the loop stops at its next check ([`Recorder::unrecorded`]).
    fn push(&mut self, step: StepRecord) {
        if let Some(log) = self.audit_log.as_ref().filter(|_| self.report.record_error.is_none())
            && let Err(error) = log.append_agent_step(step_record(&self.report.run_id, &step))
        {
            self.report.record_error =
                Some(format!("the audit record of step {} could not be written: {error}", step_number(&step)));
        }
        self.report.steps.push(step);
    }

    /// Why the run must stop: a step could not be recorded.
    fn unrecorded(&self) -> Option<String> {
        self.report.record_error.as_ref().map(|error| format!("{error}; the agent stops rather than act unrecorded"))
    }

    fn finish(mut self, outcome: AgentOutcome, error: Option<String>) -> AgentReport {
        self.report.outcome = outcome;
        self.report.error = error;
        self.report.duration_ms = self.started.elapsed().as_millis() as u64;
        if let Some(log) = self.audit_log.as_ref().filter(|_| self.report.record_error.is_none()) {
            let report = &self.report;
            let ending = report.answer.as_deref().or(report.error.as_deref()).unwrap_or("");
            let record = AgentStepRecord::new(
                &report.run_id,
                report.usage.steps,
                "final",
                outcome.as_str(),
                digest(ending.as_bytes()),
                outcome.as_str(),
                (report.usage.input_tokens, report.usage.output_tokens),
                report.duration_ms,
            );
            if let Err(error) = log.append_agent_step(record) {
                self.report.record_error =
                    Some(format!("the audit record of the agent's ending could not be written: {error}"));
            }
        }
        self.emit(AgentEvent::Done { outcome });
        self.report
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn step_number(step: &StepRecord) -> u32 {
    match step {
        StepRecord::ModelCall { step, .. }
        | StepRecord::CodeRun { step, .. }
        | StepRecord::ToolCall { step, .. }
        | StepRecord::Rejected { step, .. } => *step,
    }
}

/// The audit record of one step: what was done, its texts only by digest (a program's digest is its run record's
/// `code_digest`).
fn step_record(agent_run_id: &str, step: &StepRecord) -> AgentStepRecord {
    let ok = |is_error: bool| if is_error { "error" } else { "ok" };
    match step {
        StepRecord::ModelCall {
            step,
            model,
            input_tokens,
            output_tokens,
            duration_ms,
            finish_reason,
            text,
            tool_calls,
            error,
            ..
        } => {
            let carried = serde_json::json!({"text": text, "tool_calls": tool_calls}).to_string();
            let outcome = match (error, finish_reason) {
                (Some(_), _) | (None, None) => "error".to_owned(),
                (None, Some(reason)) => serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "other".to_owned()),
            };
            AgentStepRecord::new(
                agent_run_id,
                *step,
                "model_call",
                model,
                digest(carried.as_bytes()),
                &outcome,
                (*input_tokens, *output_tokens),
                *duration_ms,
            )
        }
        StepRecord::CodeRun { step, language, code, is_error, duration_ms, .. } => AgentStepRecord::new(
            agent_run_id,
            *step,
            "code_run",
            language,
            digest(code.as_bytes()),
            ok(*is_error),
            (0, 0),
            *duration_ms,
        ),
        StepRecord::ToolCall { step, name, arguments, is_error, duration_ms, .. } => AgentStepRecord::new(
            agent_run_id,
            *step,
            "tool_call",
            name,
            digest(arguments.as_bytes()),
            ok(*is_error),
            (0, 0),
            *duration_ms,
        ),
        StepRecord::Rejected { step, name, message, .. } => {
            AgentStepRecord::new(agent_run_id, *step, "rejected", name, digest(message.as_bytes()), "error", (0, 0), 0)
        }
    }
}

fn cut(text: &str, limit: usize) -> String {
    let (head, note) = untrusted::truncate(text, limit);
    format!("{head}{note}")
}

pub(crate) async fn run(agent: &Agent, task: &str, on_event: &(dyn Fn(&AgentEvent) + Send + Sync)) -> AgentReport {
    let config = &agent.config;
    let budgets = config.budgets;
    let started = Instant::now();
    let deadline = Deadline::now() + budgets.deadline;
    let mut recorder = Recorder {
        report: AgentReport {
            schema: AGENT_SCHEMA,
            run_id: run_id(),
            outcome: AgentOutcome::Refused,
            answer: None,
            structured_answer: None,
            error: None,
            mode: config.mode,
            models: agent.models.iter().map(|m| m.name()).collect(),
            prompt_fragments: Vec::new(),
            budgets: BudgetReport {
                max_steps: budgets.max_steps,
                max_model_tokens: budgets.max_model_tokens,
                max_output_tokens: budgets.max_output_tokens,
                deadline_ms: budgets.deadline.as_millis() as u64,
            },
            steps: Vec::new(),
            usage: UsageTotals::default(),
            duration_ms: 0,
            record_error: None,
        },
        on_event,
        started,
        audit_log: agent.audit_log.clone(),
    };

    if task.len() > config.max_task_bytes {
        let error = format!("the task is {} bytes; at most {} are accepted", task.len(), config.max_task_bytes);
        return recorder.finish(AgentOutcome::Refused, Some(error));
    }
    if task.trim().is_empty() {
        return recorder.finish(AgentOutcome::Refused, Some("the task is empty".to_owned()));
    }
    // Operator fragments are checked before anything starts, so a refused debug fragment costs nothing.
    if let Err(refusal) = prompt::compose(Vec::new(), &config.fragments, config.allow_debug_fragments) {
        return recorder.finish(AgentOutcome::Refused, Some(refusal));
    }

    let run_id = recorder.report.run_id.clone();
    let start = Toolbelt::start(agent.sandbox.clone(), agent.manifest.clone(), &agent.tools, config.mode, &run_id);
    let toolbelt = match tokio::time::timeout_at(deadline, start).await {
        Ok(Ok(toolbelt)) => toolbelt,
        Ok(Err(error)) => return recorder.finish(AgentOutcome::Refused, Some(error)),
        Err(_) => return recorder.finish(AgentOutcome::Timeout, Some("the tools did not start in time".to_owned())),
    };
    let mut built_in = vec![prompt::base()];
    built_in.push(match config.mode {
        Mode::Code => prompt::code_mode(&toolbelt.signatures(&agent.tools).await),
        Mode::Tools => prompt::tool_mode(),
    });
    if let Some(schema) = &config.output_schema {
        built_in.push(prompt::output_schema(schema));
    }
    let system = match prompt::compose(built_in, &config.fragments, config.allow_debug_fragments) {
        Ok((system, names)) => {
            recorder.report.prompt_fragments = names;
            system
        }
        Err(refusal) => return recorder.finish(AgentOutcome::Refused, Some(refusal)),
    };
    let validator = config.output_schema.as_ref().and_then(|schema| jsonschema::validator_for(schema).ok());
    let (_listening, mut approvals) = match &agent.approvals {
        Some(gate) => {
            let (listening, requests) = gate.listen(&run_id);
            (Some(listening), Some(requests))
        }
        None => (None, None),
    };
    let mut messages = vec![Message::User { content: task.to_owned() }];
    let tools = toolbelt.specs();
    let mut repairs = 0;

    for step in 1..=budgets.max_steps {
        if let Some(error) = recorder.unrecorded() {
            return recorder.finish(AgentOutcome::Refused, Some(error));
        }
        let usage = &recorder.report.usage;
        if usage.total_tokens >= budgets.max_model_tokens {
            let error = format!("{} model tokens used of {}", usage.total_tokens, budgets.max_model_tokens);
            return recorder.finish(AgentOutcome::TokenBudget, Some(error));
        }
        let remaining = budgets.max_model_tokens - usage.total_tokens;
        let request = ChatRequest {
            system: system.clone(),
            messages: messages.clone(),
            tools: tools.clone(),
            max_output_tokens: budgets.max_output_tokens.min(u32::try_from(remaining).unwrap_or(u32::MAX)).max(1),
        };
        recorder.report.usage.steps = step;
        let response = match call_models(agent, &mut recorder, step, &request, deadline).await {
            Ok(response) => response,
            Err(ending) => return ending.finish(recorder),
        };
        let usage = &recorder.report.usage;
        recorder.emit(AgentEvent::Usage {
            step,
            input_tokens: response.usage.input_tokens,
            output_tokens: response.usage.output_tokens,
            total_tokens: usage.total_tokens,
        });

        if response.tool_calls.is_empty() {
            if response.finish_reason == FinishReason::Refusal {
                let error = format!("the model refused: {}", cut(&response.text, MAX_SUMMARY));
                return recorder.finish(AgentOutcome::Refused, Some(error));
            }
            let Some(validator) = &validator else {
                recorder.emit(AgentEvent::FinalAnswer { answer: response.text.clone() });
                recorder.report.answer = Some(response.text);
                return recorder.finish(AgentOutcome::Answered, None);
            };
            match structured(&response.text, validator) {
                Ok(value) => {
                    recorder.emit(AgentEvent::FinalAnswer { answer: response.text.clone() });
                    recorder.report.answer = Some(response.text);
                    recorder.report.structured_answer = Some(value);
                    return recorder.finish(AgentOutcome::Answered, None);
                }
                Err(problem) if repairs < config.max_repairs => {
                    repairs += 1;
                    messages.push(Message::Assistant { content: response.text, tool_calls: Vec::new() });
                    messages.push(Message::User {
                        content: format!(
                            "Your final answer is not valid: {problem}. Reply with only the corrected JSON value \
                             (repair {repairs} of {}).",
                            config.max_repairs
                        ),
                    });
                    continue;
                }
                Err(problem) => {
                    let error = format!(
                        "the final answer did not match the output schema after {} repairs: {problem}",
                        config.max_repairs
                    );
                    recorder.report.answer = Some(response.text);
                    return recorder.finish(AgentOutcome::ModelError, Some(error));
                }
            }
        }

        messages.push(Message::Assistant { content: response.text.clone(), tool_calls: response.tool_calls.clone() });
        for (n, call) in response.tool_calls.iter().enumerate() {
            if let Some(error) = recorder.unrecorded() {
                return recorder.finish(AgentOutcome::Refused, Some(error));
            }
            recorder.emit(AgentEvent::ToolCallProposed {
                step,
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments: cut(&call.arguments, MAX_SUMMARY),
            });
            let outcome = if n >= config.max_calls_per_step {
                CallOutcome::Rejected(format!(
                    "at most {} tool calls are run per turn; make this call again in the next turn",
                    config.max_calls_per_step
                ))
            } else {
                let began = Instant::now();
                let running = toolbelt.call(call);
                let outcome = tokio::select! {
                    outcome = forward_approvals(running, &mut approvals, &recorder) => outcome,
                    () = tokio::time::sleep_until(deadline) => {
                        let error = format!("the deadline passed during the call of {}", call.name);
                        return recorder.finish(AgentOutcome::Timeout, Some(error));
                    }
                };
                record_call(&mut recorder, &toolbelt, step, call, &outcome, began);
                outcome
            };
            let (content, is_error) = match outcome {
                CallOutcome::Rejected(message) => {
                    if n >= config.max_calls_per_step {
                        record_call(
                            &mut recorder,
                            &toolbelt,
                            step,
                            call,
                            &CallOutcome::Rejected(message.clone()),
                            Instant::now(),
                        );
                    }
                    (format!("error: {message}"), true)
                }
                CallOutcome::Ran { text, is_error, .. } => (text, is_error),
            };
            recorder.emit(AgentEvent::ToolResult {
                step,
                call_id: call.id.clone(),
                name: call.name.clone(),
                is_error,
                summary: cut(&content, MAX_SUMMARY),
            });
            let source = toolbelt.tool_name(&call.name).unwrap_or("unknown_tool");
            messages.push(Message::Tool {
                call_id: call.id.clone(),
                content: untrusted::wrap(source, &content, config.max_tool_output_bytes),
                is_error,
            });
        }
    }
    let error = format!("no final answer after {} model turns", budgets.max_steps);
    recorder.finish(AgentOutcome::MaxSteps, Some(error))
}

/// How a run ended early inside a model call.
struct Ending(AgentOutcome, String);

impl Ending {
    fn finish(self, recorder: Recorder<'_>) -> AgentReport {
        recorder.finish(self.0, Some(self.1))
    }
}

/// One model turn: the primary model, then each fallback while the failure came before any output.
async fn call_models(
    agent: &Agent,
    recorder: &mut Recorder<'_>,
    step: u32,
    request: &ChatRequest,
    deadline: Deadline,
) -> Result<ChatResponse, Ending> {
    let count = agent.models.len();
    for (n, model) in agent.models.iter().enumerate() {
        let name = model.name();
        recorder.emit(AgentEvent::StepStart { step, model: name.clone() });
        let began = Instant::now();
        let on_event = recorder.on_event;
        let mut on_text = |text: &str| on_event(&AgentEvent::TextDelta { step, text: text.to_owned() });
        let result = tokio::time::timeout_at(deadline, model.chat(request, &mut on_text)).await;
        recorder.report.usage.model_calls += 1;
        let duration_ms = began.elapsed().as_millis() as u64;
        let mut record = |response: Option<&ChatResponse>, error: Option<String>| {
            let usage = response.map(|r| r.usage).unwrap_or_default();
            let totals = &mut recorder.report.usage;
            totals.input_tokens = totals.input_tokens.saturating_add(usage.input_tokens);
            totals.output_tokens = totals.output_tokens.saturating_add(usage.output_tokens);
            totals.total_tokens = totals.input_tokens.saturating_add(totals.output_tokens);
            recorder.push(StepRecord::ModelCall {
                step,
                model: name.clone(),
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                usage_reported: response.is_some_and(|r| r.usage_reported),
                duration_ms,
                finish_reason: response.map(|r| r.finish_reason.clone()),
                text: response.map(|r| cut(&r.text, MAX_STEP_TEXT)).unwrap_or_default(),
                tool_calls: response.map(|r| r.tool_calls.clone()).unwrap_or_default(),
                error,
            });
        };
        match result {
            Ok(Ok(response)) => {
                record(Some(&response), None);
                return Ok(response);
            }
            Err(_) => {
                record(None, Some("the deadline passed".to_owned()));
                return Err(Ending(AgentOutcome::Timeout, format!("the deadline passed while {name} was answering")));
            }
            Ok(Err(error)) => {
                let message = error.to_string();
                record(None, Some(message.clone()));
                recorder.emit(AgentEvent::Error { step, message: message.clone() });
                if error.produced_output() || n + 1 == count {
                    return Err(Ending(AgentOutcome::ModelError, message));
                }
            }
        }
    }
    Err(Ending(AgentOutcome::ModelError, "no model to call".to_owned()))
}

/// Waits for `running`, turning each approval request that arrives meanwhile into an event.
async fn forward_approvals(
    running: impl std::future::Future<Output = CallOutcome>,
    approvals: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::ApprovalRequest>>,
    recorder: &Recorder<'_>,
) -> CallOutcome {
    tokio::pin!(running);
    loop {
        let Some(receiver) = approvals.as_mut() else { return running.await };
        tokio::select! {
            outcome = &mut running => return outcome,
            request = receiver.recv() => match request {
                Some(request) => recorder.emit(AgentEvent::ApprovalNeeded {
                    approval_id: request.id,
                    tool: request.tool,
                    arguments: request.arguments,
                }),
                None => *approvals = None,
            },
        }
    }
}

fn record_call(
    recorder: &mut Recorder<'_>,
    toolbelt: &Toolbelt,
    step: u32,
    call: &ToolCall,
    outcome: &CallOutcome,
    began: Instant,
) {
    let duration_ms = began.elapsed().as_millis() as u64;
    let usage = &mut recorder.report.usage;
    let record = match outcome {
        CallOutcome::Rejected(message) => {
            usage.tool_calls += 1;
            StepRecord::Rejected { step, call_id: call.id.clone(), name: call.name.clone(), message: message.clone() }
        }
        CallOutcome::Ran { text, is_error, structured } if toolbelt.tool_name(&call.name) == Some(EXECUTE_CODE) => {
            usage.code_runs += 1;
            let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
            let field = |name: &str| arguments.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
            let report = structured.clone().filter(|r| r.get("schema").is_some());
            StepRecord::CodeRun {
                step,
                call_id: call.id.clone(),
                language: field("language"),
                code: field("code"),
                is_error: *is_error,
                duration_ms,
                message: if report.is_none() { Some(cut(text, MAX_STEP_TEXT)) } else { None },
                report,
            }
        }
        CallOutcome::Ran { text, is_error, .. } => {
            usage.tool_calls += 1;
            let name = toolbelt.tool_name(&call.name).unwrap_or(SEARCH_DOCS).to_owned();
            StepRecord::ToolCall {
                step,
                call_id: call.id.clone(),
                name,
                arguments: cut(&call.arguments, MAX_STEP_TEXT),
                is_error: *is_error,
                duration_ms,
                result: cut(text, MAX_STEP_TEXT),
            }
        }
    };
    recorder.push(record);
}

/// The final answer as JSON valid against the schema: the text itself, or the inside of one fenced block.
fn structured(text: &str, validator: &jsonschema::Validator) -> Result<Value, String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed);
    let value: Value = serde_json::from_str(body.trim()).map_err(|e| format!("it is not JSON ({e})"))?;
    let errors: Vec<String> =
        validator.iter_errors(&value).take(5).map(|e| format!("{e} at {:?}", e.instance_path().to_string())).collect();
    if errors.is_empty() { Ok(value) } else { Err(errors.join("; ")) }
}

fn run_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = now.as_nanos().to_le_bytes();
    }
    hex::encode(bytes)
}
