//! `wasmagent agent`.

use crate::args::AgentArgs;
use crate::mcp_cmd::{egress_config, load_tools, tool_sandbox_builder};
use anyhow::Context;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use wasmagent::signing::keys::SecretKey;
use wasmagent::signing::record::AuditLog;
use wasmagent::{CapabilityManifest, ToolRegistry};
use wasmagent_agent::{Agent, AgentConfig, AgentEvent, AgentOutcome, Approvals, Budgets, Decision};
use wasmagent_models::{ApiKey, ChatModel, ModelConfig, ModelSpec};

/// How long a call that needs approval waits for an answer on the terminal.
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs one agent task and prints its text, events or report. Exit status 0 when it answered (and, with --record,
/// every record was written), 1 otherwise.
pub(crate) fn agent(args: &AgentArgs) -> anyhow::Result<u8> {
    let mut models: Vec<Arc<dyn ChatModel>> = Vec::new();
    for spec in std::iter::once(&args.model).chain(&args.fallback_model) {
        models.push(Arc::from(wasmagent_models::connect(model_config(spec, args)?)?));
    }
    let manifest = match &args.manifest {
        Some(path) => CapabilityManifest::from_path(path)?,
        None => CapabilityManifest::default(),
    };
    let egress = egress_config(&args.operator)?;
    let toolbox = args.tools.as_deref().map(|path| load_tools(path, &egress)).transpose()?;
    // Upstream tools that vetting sent for approval are gated with those the user named.
    let (tools, vetted) = toolbox.as_ref().map_or_else(
        || (ToolRegistry::new(), Vec::new()),
        |t| {
            let (tools, names) = t.for_approvals();
            (tools.clone(), names.to_vec())
        },
    );
    let gated: Vec<String> = args.needs_approval.iter().chain(&vetted).cloned().collect();
    let approvals = Approvals::new(APPROVAL_TIMEOUT);
    let tools = if gated.is_empty() { tools } else { approvals.gate(&tools, &gated)? };
    let mut builder = tool_sandbox_builder(tools.clone(), egress)?;
    let audit_log = match (&args.record, &args.record_key) {
        (Some(record), Some(key)) => {
            let key = SecretKey::from_file(key)?;
            // The sandbox appends a run record for each code run, the agent a step record for each step.
            builder = builder.audit_log(AuditLog::new(record, key.clone()));
            Some(Arc::new(AuditLog::new(record, key)))
        }
        _ => None,
    };
    let sandbox = builder.build()?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let manifest = sandbox.resolve(&manifest, &cwd)?;

    let mut fragments = Vec::new();
    for path in &args.prompt {
        fragments.extend(wasmagent_agent::load_fragments(path)?);
    }
    let output_schema = match &args.output_schema {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the output schema {}", path.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?)
        }
        None => None,
    };
    let config = AgentConfig {
        mode: args.mode.parse()?,
        budgets: Budgets {
            max_steps: args.max_steps,
            max_model_tokens: args.max_model_tokens,
            deadline: Duration::from_secs(args.timeout_secs),
            ..Budgets::default()
        },
        fragments,
        allow_debug_fragments: args.dev_allow_debug_fragments,
        output_schema,
        ..AgentConfig::default()
    };
    let mut agent = Agent::new(models, Arc::new(sandbox), manifest, tools, config)?.with_approvals(approvals.clone());
    if let Some(log) = audit_log {
        agent = agent.with_audit_log(log);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let (events, json) = (args.events, args.json);
    let on_event = move |event: &AgentEvent| {
        if events {
            if let Ok(line) = serde_json::to_string(event) {
                println!("{line}");
            }
        } else if !json {
            print_progress(event);
        }
        if let AgentEvent::ApprovalNeeded { approval_id, tool, arguments } = event {
            ask_approval(&approvals, *approval_id, tool, arguments);
        }
    };
    let report = runtime.block_on(agent.run(&args.task, &on_event));
    drop(toolbox);
    if json {
        println!("{}", serde_json::to_string(&report).context("cannot serialize the agent report")?);
    } else if !events {
        if report.outcome != AgentOutcome::Answered {
            eprintln!(
                "wasmagent: agent {}: {}",
                report.outcome.as_str(),
                report.error.as_deref().unwrap_or("no answer")
            );
        }
        eprintln!(
            "wasmagent: {} in {} steps, {} model tokens ({} in, {} out), {} code runs, {} tool calls, {} ms",
            report.outcome.as_str(),
            report.usage.steps,
            report.usage.total_tokens,
            report.usage.input_tokens,
            report.usage.output_tokens,
            report.usage.code_runs,
            report.usage.tool_calls,
            report.duration_ms
        );
    }
    if let Some(error) = &report.record_error {
        eprintln!("wasmagent: {error}");
        return Ok(1);
    }
    Ok(if report.outcome == AgentOutcome::Answered { 0 } else { 1 })
}

/// One model's configuration: the key from --api-key-env (required when given), else from the provider's usual
/// variable when it is set; local servers need none.
fn model_config(spec: &str, args: &AgentArgs) -> anyhow::Result<ModelConfig> {
    let spec: ModelSpec = spec.parse()?;
    let api_key = match &args.api_key_env {
        Some(var) => Some(ApiKey::from_env(var)?),
        None => ApiKey::from_env(spec.provider.default_api_key_env()).ok(),
    };
    let mut config = ModelConfig::new(spec);
    config.base_url = args.base_url.clone();
    config.api_key = api_key;
    Ok(config)
}

/// The terminal view: streamed text on stdout, one line per step on stderr.
fn print_progress(event: &AgentEvent) {
    match event {
        AgentEvent::StepStart { step, model } => eprintln!("[step {step}] waiting for {model}…"),
        AgentEvent::TextDelta { text, .. } => {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        AgentEvent::ToolCallProposed { step, name, .. } => eprintln!("\n[step {step}] calls {name}"),
        AgentEvent::ToolResult { step, name, is_error, .. } => {
            eprintln!("[step {step}] {name}: {}", if *is_error { "error" } else { "ok" })
        }
        AgentEvent::Error { step, message } => eprintln!("[step {step}] error: {message}"),
        AgentEvent::FinalAnswer { .. } => println!(),
        _ => {}
    }
}

/// Asks on the terminal, on a thread of its own so the agent keeps serving events meanwhile.
fn ask_approval(approvals: &Approvals, id: u64, tool: &str, arguments: &serde_json::Value) {
    eprintln!("wasmagent: approve the call of {tool} with {arguments}? [y/N] ");
    let approvals = approvals.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        let decision = match std::io::stdin().read_line(&mut line) {
            Ok(_) if matches!(line.trim(), "y" | "Y" | "yes") => Decision::Approve,
            _ => Decision::Decline { reason: "declined on the terminal".to_owned() },
        };
        if let Err(error) = approvals.answer(id, decision) {
            eprintln!("wasmagent: {error}");
        }
    });
}
