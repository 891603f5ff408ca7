//! The agent loop against scripted model servers on loopback (both wire formats, every request checked against
//! the vendor's published schema) and a real sandbox: code that calls a host tool, malformed calls, endless
//! loops, budgets, approvals, structured output, fallbacks and refused prompt fragments.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmagent::{CapabilityManifest, Sandbox, Tool, ToolRegistry, default_cache_dir};
use wasmagent_agent::{
    Agent, AgentConfig, AgentEvent, AgentOutcome, AgentReport, Approvals, Decision, Mode, PromptFragment,
};
use wasmagent_models::testing::{Reply, ScriptedServer, Wire};
use wasmagent_models::{ChatModel, ModelConfig, RetryPolicy};

fn weather_tools() -> ToolRegistry {
    let mut registry = ToolRegistry::new();
    let schema = json!({"type": "object", "properties": {"city": {"type": "string", "description": "city name"}},
                        "required": ["city"]});
    registry
        .register(Tool::new("weather.today", "Today's temperature in a city.", schema, |args| {
            Ok(json!({"city": args["city"], "temp_c": 21}))
        }))
        .unwrap();
    registry
}

fn model(server: &ScriptedServer, wire: Wire) -> Arc<dyn ChatModel> {
    let spec = match wire {
        Wire::OpenAi => "openai:scripted",
        Wire::Anthropic => "anthropic:scripted",
    };
    let mut config = ModelConfig::new(spec.parse().unwrap());
    config.base_url = Some(server.base_url());
    config.retry =
        RetryPolicy { max_retries: 1, base_delay: Duration::from_millis(10), max_delay: Duration::from_secs(2) };
    Arc::from(wasmagent_models::connect(config).unwrap())
}

fn build(models: Vec<Arc<dyn ChatModel>>, tools: ToolRegistry, config: AgentConfig) -> Agent {
    let sandbox = Sandbox::builder().cache_dir(default_cache_dir()).tools(tools.clone()).build().unwrap();
    let manifest = CapabilityManifest { extra_capabilities: vec!["tool:*".to_owned()], ..Default::default() };
    let manifest = sandbox.resolve(&manifest, std::path::Path::new("/")).unwrap();
    Agent::new(models, Arc::new(sandbox), manifest, tools, config).unwrap()
}

async fn run(agent: &Agent, task: &str) -> (AgentReport, Vec<AgentEvent>) {
    let events = Mutex::new(Vec::new());
    let report = agent.run(task, &|event: &AgentEvent| events.lock().unwrap().push(event.clone())).await;
    (report, events.into_inner().unwrap())
}

fn calls(name: &str, arguments: Value) -> Reply {
    Reply::ToolCalls { text: String::new(), calls: vec![(name.to_owned(), arguments.to_string())] }
}

/// The end-to-end task: find the tool, write code that calls it, answer from the result.
async fn code_calling_a_host_tool(wire: Wire) {
    let code = "const r = tools.weather.today({city: 'Paris'}); `${r.city}: ${r.temp_c}`";
    let server = ScriptedServer::start(
        wire,
        vec![
            calls("search_docs", json!({"query": "weather today"})),
            calls("execute_code", json!({"language": "javascript", "code": code})),
            Reply::Text("It is 21 °C in Paris.".to_owned()),
        ],
    );
    let agent = build(vec![model(&server, wire)], weather_tools(), AgentConfig::default());
    let (report, events) = run(&agent, "How warm is it in Paris today?").await;
    assert_eq!(report.outcome, AgentOutcome::Answered, "{:?}", report.error);
    assert_eq!(report.answer.as_deref(), Some("It is 21 °C in Paris."));
    assert_eq!(server.schema_errors(), Vec::<String>::new());

    let report_json = serde_json::to_value(&report).unwrap();
    assert_eq!(report_json["schema"], "wasmagent.agent/v1");
    assert_eq!(report_json["mode"], "code");
    let steps = report_json["steps"].as_array().unwrap();
    let types: Vec<&str> = steps.iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["model_call", "tool_call", "model_call", "code_run", "model_call"]);
    assert_eq!(steps[1]["name"], "search_docs");
    let run = &steps[3]["report"];
    assert_eq!(run["schema"], "wasmagent.run/v1");
    assert_eq!(run["outcome"], "ok");
    assert_eq!(run["value"], "Paris: 21");
    assert_eq!(run["tool_calls"][0]["name"], "weather.today");
    assert_eq!(steps[0]["input_tokens"], 100);
    assert_eq!(steps[0]["output_tokens"], 10);
    assert_eq!(report_json["usage"]["total_tokens"], 330);
    assert_eq!(report_json["usage"]["code_runs"], 1);
    assert_eq!(report_json["usage"]["steps"], 3);

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let system = requests[0].body.to_string();
    assert!(system.contains("tools.weather.today(args: { city: string }): any"), "the guide has the signatures");
    let second = requests[1].body.to_string();
    assert!(second.contains("<tool-output source=\\\"search_docs\\\" nonce="), "{second}");
    assert!(requests[2].body.to_string().contains("Paris: 21"));

    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            AgentEvent::StepStart { .. } => "step",
            AgentEvent::TextDelta { .. } => "text",
            AgentEvent::ToolCallProposed { .. } => "proposed",
            AgentEvent::ToolResult { .. } => "result",
            AgentEvent::Usage { .. } => "usage",
            AgentEvent::FinalAnswer { .. } => "answer",
            AgentEvent::Done { .. } => "done",
            _ => "other",
        })
        .filter(|k| *k != "text")
        .collect();
    assert_eq!(
        kinds,
        [
            "step", "usage", "proposed", "result", "step", "usage", "proposed", "result", "step", "usage", "answer",
            "done"
        ]
    );
    let streamed: String = events
        .iter()
        .filter_map(|e| if let AgentEvent::TextDelta { text, .. } = e { Some(text.as_str()) } else { None })
        .collect();
    assert_eq!(streamed, "It is 21 °C in Paris.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_code_mode_answers_with_code_that_calls_a_host_tool() {
    code_calling_a_host_tool(Wire::OpenAi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_code_mode_answers_with_code_that_calls_a_host_tool() {
    code_calling_a_host_tool(Wire::Anthropic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_tool_call_goes_back_to_the_model_with_a_hint() {
    let server = ScriptedServer::start(
        Wire::OpenAi,
        vec![
            Reply::ToolCalls {
                text: String::new(),
                calls: vec![("execute_code".to_owned(), "{\"language\": ".to_owned())],
            },
            calls("execute_code", json!({"language": "javascript"})),
            calls("no_such_tool", json!({})),
            Reply::Text("giving up".to_owned()),
        ],
    );
    let agent = build(vec![model(&server, Wire::OpenAi)], weather_tools(), AgentConfig::default());
    let (report, _) = run(&agent, "Do something.").await;
    assert_eq!(report.outcome, AgentOutcome::Answered);
    let steps = serde_json::to_value(&report.steps).unwrap();
    let rejected: Vec<&Value> = steps.as_array().unwrap().iter().filter(|s| s["type"] == "rejected").collect();
    assert_eq!(rejected.len(), 3);
    let requests = server.requests();
    let answer_to = |n: usize| requests[n].body["messages"].as_array().unwrap().last().unwrap()["content"].to_string();
    assert!(answer_to(1).contains("are not valid JSON") && answer_to(1).contains("JSON Schema"), "{}", answer_to(1));
    assert!(answer_to(2).contains("do not match its schema") && answer_to(2).contains("code"), "{}", answer_to(2));
    assert!(answer_to(3).contains("there is no tool named") && answer_to(3).contains("execute_code"));
    assert_eq!(server.schema_errors(), Vec::<String>::new());
}

/// OWASP: ASI08, ASI10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_tool_loop_stops_at_max_steps() {
    let server = ScriptedServer::start(Wire::Anthropic, vec![calls("search_docs", json!({"query": "again"}))]);
    let mut config = AgentConfig::default();
    config.budgets.max_steps = 3;
    let agent = build(vec![model(&server, Wire::Anthropic)], weather_tools(), config);
    let (report, events) = run(&agent, "Loop.").await;
    assert_eq!(report.outcome, AgentOutcome::MaxSteps);
    assert_eq!(server.requests().len(), 3);
    assert_eq!(report.usage.total_tokens, 330);
    assert_eq!(events.last(), Some(&AgentEvent::Done { outcome: AgentOutcome::MaxSteps }));
    assert_eq!(server.schema_errors(), Vec::<String>::new());
}

/// OWASP: ASI08
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_budget_stops_the_run() {
    let server = ScriptedServer::start(Wire::OpenAi, vec![calls("search_docs", json!({"query": "again"}))]);
    let mut config = AgentConfig::default();
    config.budgets.max_model_tokens = 150;
    let agent = build(vec![model(&server, Wire::OpenAi)], weather_tools(), config);
    let (report, _) = run(&agent, "Loop.").await;
    assert_eq!(report.outcome, AgentOutcome::TokenBudget);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.requests()[1].body["max_tokens"], 40, "a call may only use what is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_stops_a_silent_model() {
    let server = ScriptedServer::start(Wire::OpenAi, vec![Reply::Hang]);
    let mut config = AgentConfig::default();
    config.budgets.deadline = Duration::from_millis(800);
    let agent = build(vec![model(&server, Wire::OpenAi)], weather_tools(), config);
    let (report, _) = run(&agent, "Wait.").await;
    assert_eq!(report.outcome, AgentOutcome::Timeout, "{:?}", report.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_fragment_is_refused_before_any_model_call_unless_allowed() {
    let server = ScriptedServer::start(Wire::OpenAi, vec![Reply::Text("hello".to_owned())]);
    let echo = PromptFragment { name: "echo_inputs".to_owned(), text: "Repeat every input.".to_owned(), debug: true };
    let mut config = AgentConfig { fragments: vec![echo], ..AgentConfig::default() };
    let refused = build(vec![model(&server, Wire::OpenAi)], weather_tools(), config.clone());
    let (report, _) = run(&refused, "Hi.").await;
    assert_eq!(report.outcome, AgentOutcome::Refused);
    assert!(report.error.as_deref().unwrap().contains("\"echo_inputs\" is marked debug"), "{:?}", report.error);
    assert_eq!(server.requests().len(), 0, "no model was called");

    config.allow_debug_fragments = true;
    let allowed = build(vec![model(&server, Wire::OpenAi)], weather_tools(), config);
    let (report, _) = run(&allowed, "Hi.").await;
    assert_eq!(report.outcome, AgentOutcome::Answered);
    assert!(report.prompt_fragments.contains(&"echo_inputs".to_owned()));
    assert!(server.requests()[0].body["messages"][0]["content"].as_str().unwrap().ends_with("Repeat every input."));
}

/// OWASP: ASI02, ASI09
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_mode_pauses_for_approval_and_the_answer_decides() {
    let sent = Arc::new(AtomicU32::new(0));
    let mut registry = weather_tools();
    let counter = sent.clone();
    let schema = json!({"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]});
    registry
        .register(Tool::new("mail.send", "Sends mail.", schema, move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(json!("sent"))
        }))
        .unwrap();
    let approvals = Approvals::new(Duration::from_secs(30));
    let gated = approvals.gate(&registry, &["mail.send".to_owned()]).unwrap();
    for (decision, expect_sent, expect_text) in [
        (Decision::Approve, 1, "sent"),
        (Decision::Decline { reason: "not now".to_owned() }, 1, "declined the call of mail.send: not now"),
    ] {
        let server = ScriptedServer::start(
            Wire::Anthropic,
            vec![calls("mail__send", json!({"to": "bob"})), Reply::Text("done".to_owned())],
        );
        let config = AgentConfig { mode: Mode::Tools, ..AgentConfig::default() };
        let agent =
            build(vec![model(&server, Wire::Anthropic)], gated.clone(), config).with_approvals(approvals.clone());
        let asked = Mutex::new(Vec::new());
        let report = agent
            .run("Mail bob.", &|event: &AgentEvent| {
                if let AgentEvent::ApprovalNeeded { approval_id, tool, arguments } = event {
                    asked.lock().unwrap().push((tool.clone(), arguments.clone()));
                    approvals.answer(*approval_id, decision.clone()).unwrap();
                }
            })
            .await;
        assert_eq!(report.outcome, AgentOutcome::Answered);
        assert_eq!(asked.into_inner().unwrap(), [("mail.send".to_owned(), json!({"to": "bob"}))]);
        assert_eq!(sent.load(Ordering::SeqCst), expect_sent);
        let requests = server.requests();
        let tools: Vec<&str> =
            requests[0].body["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(tools, ["mail__send", "weather__today"], "tool mode offers the granted host tools");
        assert!(requests[1].body.to_string().contains(expect_text), "{}", requests[1].body);
        assert_eq!(server.schema_errors(), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structured_answer_is_repaired_within_its_bound() {
    let schema = json!({"type": "object", "properties": {"temp_c": {"type": "number"}}, "required": ["temp_c"]});
    let server = ScriptedServer::start(
        Wire::OpenAi,
        vec![Reply::Text("twenty-one".to_owned()), Reply::Text("```json\n{\"temp_c\": 21}\n```".to_owned())],
    );
    let config = AgentConfig { output_schema: Some(schema.clone()), ..AgentConfig::default() };
    let agent = build(vec![model(&server, Wire::OpenAi)], weather_tools(), config);
    let (report, _) = run(&agent, "Temperature?").await;
    assert_eq!(report.outcome, AgentOutcome::Answered);
    assert_eq!(report.structured_answer, Some(json!({"temp_c": 21})));
    assert!(server.requests()[1].body.to_string().contains("is not valid: it is not JSON"));

    let server = ScriptedServer::start(Wire::OpenAi, vec![Reply::Text("{\"temp_c\": \"warm\"}".to_owned())]);
    let config = AgentConfig { output_schema: Some(schema), max_repairs: 1, ..AgentConfig::default() };
    let agent = build(vec![model(&server, Wire::OpenAi)], weather_tools(), config);
    let (report, _) = run(&agent, "Temperature?").await;
    assert_eq!(report.outcome, AgentOutcome::ModelError);
    assert!(report.error.as_deref().unwrap().contains("after 1 repairs"), "{:?}", report.error);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_model_is_used_only_when_the_first_failed_before_producing_anything() {
    let primary = ScriptedServer::start(
        Wire::OpenAi,
        vec![Reply::Status { status: 404, retry_after: None, message: "model not found".to_owned() }],
    );
    let fallback = ScriptedServer::start(Wire::Anthropic, vec![Reply::Text("from the fallback".to_owned())]);
    let models = vec![model(&primary, Wire::OpenAi), model(&fallback, Wire::Anthropic)];
    let (report, events) = run(&build(models, weather_tools(), AgentConfig::default()), "Hi.").await;
    assert_eq!(report.outcome, AgentOutcome::Answered);
    assert_eq!(report.answer.as_deref(), Some("from the fallback"));
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Error { message, .. } if message.contains("HTTP 404"))));
    assert_eq!((primary.requests().len(), fallback.requests().len()), (1, 1));

    let primary = ScriptedServer::start(Wire::OpenAi, vec![Reply::CutAfter("half an ans".to_owned())]);
    let fallback = ScriptedServer::start(Wire::Anthropic, vec![Reply::Text("from the fallback".to_owned())]);
    let models = vec![model(&primary, Wire::OpenAi), model(&fallback, Wire::Anthropic)];
    let (report, _) = run(&build(models, weather_tools(), AgentConfig::default()), "Hi.").await;
    assert_eq!(report.outcome, AgentOutcome::ModelError);
    assert!(report.error.as_deref().unwrap().contains("cut"), "{:?}", report.error);
    assert_eq!(fallback.requests().len(), 0, "text was already streamed: no fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_is_appended_to_the_audit_log_and_an_unwritable_log_stops_the_run() {
    use wasmagent::signing::keys::SecretKey;
    use wasmagent::signing::record::{AuditLog, verify_log};
    let script = || {
        vec![calls("execute_code", json!({"language": "javascript", "code": "6 * 7"})), Reply::Text("42".to_owned())]
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    let server = ScriptedServer::start(Wire::OpenAi, script());
    let agent = build(vec![model(&server, Wire::OpenAi)], weather_tools(), AgentConfig::default())
        .with_audit_log(Arc::new(AuditLog::new(&path, key.clone())));
    let (report, _) = run(&agent, "Six times seven?").await;
    assert_eq!(report.outcome, AgentOutcome::Answered, "{:?}", report.error);
    assert_eq!(report.record_error, None);
    assert_eq!(verify_log(&path, key.public_key()).unwrap().records, 4);
    let records: Vec<Value> =
        std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<(&str, &str)> =
        records.iter().map(|r| (r["kind"].as_str().unwrap(), r["outcome"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [("model_call", "tool_calls"), ("code_run", "ok"), ("model_call", "stop"), ("final", "answered")]
    );
    assert!(
        records.iter().all(|r| r["agent_run_id"] == report.run_id.as_str() && r["schema"] == "wasmagent.agent-step/v1")
    );
    let code_run = &serde_json::to_value(&report).unwrap()["steps"][1]["report"];
    assert_eq!(
        records[1]["digest"], code_run["code_digest"],
        "a code run's record names the program its run record names"
    );

    let server = ScriptedServer::start(Wire::OpenAi, script());
    let agent = build(vec![model(&server, Wire::OpenAi)], weather_tools(), AgentConfig::default())
        .with_audit_log(Arc::new(AuditLog::new(dir.path(), key)));
    let (report, _) = run(&agent, "Six times seven?").await;
    assert_eq!(report.outcome, AgentOutcome::Refused);
    let error = report.error.unwrap();
    assert!(error.contains("could not be written") && error.contains("rather than act unrecorded"), "{error}");
    assert!(report.record_error.is_some());
    assert_eq!(report.usage.code_runs, 0, "the proposed code never ran");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_call_from_python_code_is_heard_by_its_own_run_only() {
    let sent = Arc::new(AtomicU32::new(0));
    let mut registry = weather_tools();
    let counter = sent.clone();
    let schema = json!({"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]});
    registry
        .register(Tool::new("mail.send", "Sends mail.", schema, move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(json!("sent"))
        }))
        .unwrap();
    let approvals = Approvals::new(Duration::from_secs(30));
    let gated = approvals.gate(&registry, &["mail.send".to_owned()]).unwrap();
    let code = "from wasmagent import tools\ntools.mail.send(to='bob')";
    let mailing = ScriptedServer::start(
        Wire::OpenAi,
        vec![calls("execute_code", json!({"language": "python", "code": code})), Reply::Text("sent".to_owned())],
    );
    // A second run listening on the same gate the whole time, its model silent until the first run is done.
    let idle = ScriptedServer::start(Wire::OpenAi, vec![Reply::Hang]);
    let config = || AgentConfig {
        budgets: wasmagent_agent::Budgets { deadline: Duration::from_secs(60), ..Default::default() },
        ..AgentConfig::default()
    };
    let mailer = build(vec![model(&mailing, Wire::OpenAi)], gated.clone(), config()).with_approvals(approvals.clone());
    let bystander = build(vec![model(&idle, Wire::OpenAi)], gated.clone(), config()).with_approvals(approvals.clone());
    let heard_by_bystander = Mutex::new(0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let on_bystander_event = |event: &AgentEvent| {
        if matches!(event, AgentEvent::ApprovalNeeded { .. }) {
            *heard_by_bystander.lock().unwrap() += 1;
        }
    };
    let bystanding = async {
        tokio::select! {
            _ = bystander.run("Wait.", &on_bystander_event) => {}
            _ = stopped => {}
        }
    };
    let mailing_run = async {
        let asked = Mutex::new(Vec::new());
        let report = mailer
            .run("Mail bob.", &|event: &AgentEvent| {
                if let AgentEvent::ApprovalNeeded { approval_id, tool, .. } = event {
                    asked.lock().unwrap().push(tool.clone());
                    approvals.answer(*approval_id, Decision::Approve).unwrap();
                }
            })
            .await;
        let _ = stop.send(());
        (report, asked.into_inner().unwrap())
    };
    let (_, (report, asked)) = tokio::join!(bystanding, mailing_run);
    assert_eq!(report.outcome, AgentOutcome::Answered, "{:?}", report.error);
    assert_eq!(asked, ["mail.send"]);
    assert_eq!(*heard_by_bystander.lock().unwrap(), 0, "the other run heard nothing");
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    let run = &serde_json::to_value(&report).unwrap()["steps"][1]["report"];
    assert_eq!(
        (run["kernel"].as_str(), run["tool_calls"][0]["outcome"].as_str()),
        (Some("python"), Some("ok")),
        "{run}"
    );
}
