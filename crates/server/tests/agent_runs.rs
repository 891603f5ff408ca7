//! `POST /v1/agent-runs` end to end: a real server on loopback, real tokens, and a scripted loopback model server
//! speaking the OpenAI or the Anthropic wire format (`wasmagent-models`' test server, which counts and schema-checks every request).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmagent::CapabilityManifest;
use wasmagent_models::testing::{Reply, ScriptedServer, Wire};
use wasmagent_server::config::{AgentModelConfig, ApiKeyConfig, JwtKeyConfig};
use wasmagent_server::{AppState, ServerConfig};

const HS_SECRET: &str = "a test secret that is at least 32 bytes long";
const ALICE_KEY: &str = "wa_test_alice_agents";
const BOB_KEY: &str = "wa_test_bob_agents";
const RUNS_ONLY_KEY: &str = "wa_test_runs_only";

struct Server {
    base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// A server whose `[agent]` uses the scripted `model` server; `edit` may change anything else.
async fn start(model: &ScriptedServer, edit: impl FnOnce(&mut ServerConfig, &std::path::Path)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs.secret");
    std::fs::write(&secret, HS_SECRET).unwrap();
    let mut c = ServerConfig { pool_slots: 8, max_concurrent_runs: 2, max_queued_runs: 4, ..ServerConfig::default() };
    c.max_manifest = CapabilityManifest::from_toml_str("cpu_ms = 2000\nextra_capabilities = []").unwrap();
    c.auth.issuer = Some("https://issuer.test".into());
    c.auth.audience = vec!["wasmagent".into()];
    c.auth.jwt_keys = vec![JwtKeyConfig {
        alg: "HS256".into(),
        kid: None,
        secret_env: None,
        secret_file: Some(secret),
        public_key_file: None,
        jwks_file: None,
    }];
    let key = |subject: &str, key: &str, scopes: &[&str]| ApiKeyConfig {
        subject: subject.into(),
        sha256: hex::encode(Sha256::digest(key.as_bytes())),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
    };
    c.auth.api_keys = vec![
        key("alice", ALICE_KEY, &["agents:run"]),
        key("bob", BOB_KEY, &["agents:run"]),
        key("carol", RUNS_ONLY_KEY, &["runs:write", "runs:read"]),
    ];
    c.agent.models = vec![AgentModelConfig {
        model: "openai:scripted".into(),
        base_url: Some(model.base_url()),
        api_key_env: None,
        api_key_file: None,
    }];
    edit(&mut c, dir.path());
    let state = Arc::new(AppState::new(&c, false).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wasmagent_server::serve(listener, state, &[], async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server { base, _stop: stop, _dir: dir }
}

fn calls(name: &str, arguments: Value) -> Reply {
    Reply::ToolCalls { text: String::new(), calls: vec![(name.to_owned(), arguments.to_string())] }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post_run(server: &Server, key: &str, body: Value) -> (u16, Value) {
    let response =
        client().post(format!("{}/v1/agent-runs", server.base)).bearer_auth(key).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(server: &Server, key: &str, path: &str) -> (u16, Value) {
    let response = client().get(format!("{}{path}", server.base)).bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `GET path` as `key` until `done` holds for the body, or panics after 60 s.
async fn poll(server: &Server, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(server, key, path).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One server-sent event: its id, name and JSON data.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// Parses whole events out of `buffer`, leaving an incomplete one in it. Comments (keep-alives) are skipped.
fn parse_events(buffer: &mut String) -> Vec<Sse> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            events.push(Sse { id, event, data: serde_json::from_str(&data).unwrap() });
        }
    }
    events
}

/// Reads `response` as SSE until it ends, or until `stop_after` events when given (then the connection is dropped).
async fn read_sse(mut response: reqwest::Response, stop_after: Option<usize>) -> Vec<Sse> {
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let (mut buffer, mut events) = (String::new(), Vec::new());
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), response.chunk()).await.unwrap().unwrap() {
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        events.extend(parse_events(&mut buffer));
        if stop_after.is_some_and(|n| events.len() >= n) {
            events.truncate(stop_after.unwrap_or_default());
            return events;
        }
    }
    events
}

/// The end-to-end script: search the docs, run code, answer.
fn code_script() -> Vec<Reply> {
    vec![
        calls("search_docs", json!({"query": "anything"})),
        calls("execute_code", json!({"language": "javascript", "code": "6 * 7"})),
        Reply::Text("The answer is 42.".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_answered_end_to_end_with_steps_and_run_reports() {
    let model = ScriptedServer::start(Wire::OpenAi, code_script());
    let server = start(&model, |_, _| {}).await;
    let (status, report) = post_run(&server, ALICE_KEY, json!({"task": "What is six times seven?"})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["schema"], "wasmagent.agent/v1");
    assert_eq!(report["outcome"], "answered", "{report}");
    assert_eq!(report["answer"], "The answer is 42.");
    assert_eq!(report["models"], json!(["openai:scripted"]));
    let types: Vec<&str> = report["steps"].as_array().unwrap().iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["model_call", "tool_call", "model_call", "code_run", "model_call"]);
    let run = &report["steps"][3]["report"];
    assert_eq!((run["schema"].as_str(), run["outcome"].as_str()), (Some("wasmagent.run/v1"), Some("ok")), "{run}");
    assert_eq!(run["value"], 42);
    assert_eq!(run["manifest"]["cpu_ms"], 2000, "the code ran under the server's maximum manifest");
    assert_eq!(report["usage"]["code_runs"], 1);
    assert_eq!(model.requests().len(), 3);
    assert_eq!(model.schema_errors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_model_answers_over_the_messages_api_with_streamed_events() {
    let model = ScriptedServer::start(Wire::Anthropic, code_script());
    let server = start(&model, |c, _| {
        c.agent.models = vec![AgentModelConfig {
            model: "anthropic:scripted".into(),
            base_url: Some(model.base_url()),
            api_key_env: None,
            api_key_file: None,
        }];
    })
    .await;
    let response = client()
        .post(format!("{}/v1/agent-runs", server.base))
        .bearer_auth(ALICE_KEY)
        .header("accept", "text/event-stream")
        .json(&json!({"task": "What is six times seven?", "model": "anthropic:scripted"}))
        .send()
        .await
        .unwrap();
    let events = read_sse(response, None).await;
    let report = &events.last().unwrap().data;
    assert_eq!(events.last().unwrap().event, "report");
    assert_eq!(report["outcome"], "answered", "{report}");
    assert_eq!(report["answer"], "The answer is 42.");
    assert_eq!(report["models"], json!(["anthropic:scripted"]));
    assert_eq!(report["steps"][3]["report"]["value"], 42, "{report}");
    assert_eq!(report["usage"]["total_tokens"], 330);
    let deltas: String =
        events.iter().filter(|e| e.event == "text_delta").map(|e| e.data["text"].as_str().unwrap()).collect();
    assert_eq!(deltas, "The answer is 42.", "the Messages stream's text arrives as text_delta events");
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.body["stream"], true, "every call streams");
        assert!(request.header("anthropic-version").is_some());
    }
    assert_eq!(requests[2].body["messages"].as_array().unwrap().len(), 5, "task, two tool calls and their results");
    assert_eq!(model.schema_errors(), Vec::<String>::new(), "every request matches Anthropic's published schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_before_any_model_call() {
    let model = ScriptedServer::start(Wire::OpenAi, code_script());
    let server = start(&model, |c, _| c.agent.max_task_bytes = 1024).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token = |exp: u64, scope: &str| {
        let claims =
            json!({"sub": "alice", "exp": exp, "iss": "https://issuer.test", "aud": "wasmagent", "scope": scope});
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(HS_SECRET.as_bytes()))
            .unwrap()
    };
    let task = json!({"task": "What is six times seven?"});
    let (status, body) = post_run(&server, &token(now - 600, "agents:run"), task.clone()).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthenticated")), "{body}");
    let (status, body) = post_run(&server, &token(now + 300, "runs:write"), task.clone()).await;
    assert_eq!(status, 403, "runs:write is not agents:run: {body}");
    let (status, _) = post_run(&server, RUNS_ONLY_KEY, task.clone()).await;
    assert_eq!(status, 403);
    let (status, body) = post_run(&server, ALICE_KEY, json!({"task": "x".repeat(2000)})).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("payload_too_large")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("max_task_bytes"), "{body}");
    let (status, body) = post_run(&server, ALICE_KEY, json!({"task": "hi", "model": "openai:gpt-unlisted"})).await;
    assert_eq!(status, 403);
    assert!(body["message"].as_str().unwrap().contains("\"openai:gpt-unlisted\" is not one this server may use"));
    let (status, body) = post_run(&server, ALICE_KEY, json!({"task": "hi", "max_steps": 500})).await;
    assert_eq!((status, body["field"].as_str()), (403, Some("max_steps")), "{body}");
    let (status, body) =
        post_run(&server, ALICE_KEY, json!({"task": "hi", "manifest": {"extra_capabilities": ["tool:*"]}})).await;
    assert_eq!(status, 403, "the manifest may only narrow the server's: {body}");
    assert_eq!(model.requests().len(), 0, "no refused request reached the model server");

    let (status, report) = post_run(&server, &token(now + 300, "agents:run"), task).await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("answered")), "{report}");
    assert_eq!(model.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_with_ids_and_a_reconnection_resumes_after_the_last_one_seen() {
    let model = ScriptedServer::start(Wire::OpenAi, code_script());
    let server = start(&model, |_, _| {}).await;
    let response = client()
        .post(format!("{}/v1/agent-runs", server.base))
        .bearer_auth(ALICE_KEY)
        .header("accept", "text/event-stream")
        .json(&json!({"task": "What is six times seven?"}))
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let first = read_sse(response, Some(3)).await;
    assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), [Some(1), Some(2), Some(3)]);
    assert_eq!(first[0].event, "step_start");
    assert_eq!(first[0].data["type"], "step_start");

    let resumed = read_sse(
        client()
            .get(format!("{}{location}/events", server.base))
            .bearer_auth(ALICE_KEY)
            .header("last-event-id", "3")
            .send()
            .await
            .unwrap(),
        None,
    )
    .await;
    let all = read_sse(
        client().get(format!("{}{location}/events", server.base)).bearer_auth(ALICE_KEY).send().await.unwrap(),
        None,
    )
    .await;
    let mut joined = first.clone();
    joined.extend(resumed.clone());
    assert_eq!(joined, all, "the first three and the resumed ones are every event, once");
    let ids: Vec<u64> = all.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids, (1..=all.len() as u64).collect::<Vec<_>>(), "ids count up from 1");
    let last = all.last().unwrap();
    assert_eq!(last.event, "report");
    assert_eq!(
        (last.data["schema"].as_str(), last.data["outcome"].as_str()),
        (Some("wasmagent.agent/v1"), Some("answered"))
    );
    let names: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    for name in ["tool_call_proposed", "tool_result", "usage", "text_delta", "final_answer", "done"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let (status, _) = get(&server, BOB_KEY, &format!("{location}/events")).await;
    assert_eq!(status, 404, "another subject cannot read the events");
    assert_eq!(model.requests().len(), 3, "reconnections do not run the task again");
}

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A loopback HTTP endpoint recording each request's path and JSON body, answering `{"ok": true}`.
fn receiver() -> (String, Received) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap().to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = Vec::new();
            request.as_reader().read_to_end(&mut body).unwrap();
            log.lock().unwrap().push((request.url().to_owned(), serde_json::from_slice(&body).unwrap_or(Value::Null)));
            let json = tiny_http::Header::from_bytes("content-type", "application/json").unwrap();
            let _ = request.respond(tiny_http::Response::from_string("{\"ok\": true}").with_header(json));
        }
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_waits_for_an_approval_answered_over_http() {
    let (addr, received) = receiver();
    let model = ScriptedServer::start(
        Wire::OpenAi,
        vec![calls("notes__add", json!({"text": "buy milk"})), Reply::Text("Noted.".to_owned())],
    );
    let server = start(&model, |c, dir| {
        let tools = dir.join("tools.toml");
        let toml = format!(
            "[[http]]\nname = \"notes.add\"\ndescription = \"Adds a note.\"\nmethod = \"POST\"\nurl = \"http://{addr}/notes\"\n\
             input_schema = {{ type = \"object\", properties = {{ text = {{ type = \"string\" }} }}, required = [\"text\"] }}\n"
        );
        std::fs::write(&tools, toml).unwrap();
        c.tools = Some(tools);
        c.allow_private = vec![addr.clone()];
        c.max_manifest =
            CapabilityManifest::from_toml_str("cpu_ms = 2000\nextra_capabilities = [\"tool:notes.add\"]").unwrap();
        c.agent.needs_approval = vec!["notes.add".into()];
    })
    .await;
    let body = json!({"task": "Note: buy milk.", "mode": "tools", "async": true,
                      "manifest": {"extra_capabilities": ["tool:notes.add"]}});
    let (status, accepted) = post_run(&server, ALICE_KEY, body).await;
    assert_eq!(status, 202, "{accepted}");
    let url = accepted["url"].as_str().unwrap().to_owned();
    let waiting = poll(&server, ALICE_KEY, &url, |s| !s["pending_approvals"].as_array().unwrap().is_empty()).await;
    assert_eq!(waiting["status"], "running");
    assert!(received.lock().unwrap().is_empty(), "nothing is sent before the approval");

    let approvals = format!("{}{url}/approvals", server.base);
    let answer = |key: &'static str, body: Value| client().post(&approvals).bearer_auth(key).json(&body).send();
    assert_eq!(answer(BOB_KEY, json!({"approve": true})).await.unwrap().status().as_u16(), 404, "not bob's run");
    let wrong = answer(ALICE_KEY, json!({"approval_id": 999_999, "approve": true})).await.unwrap();
    assert_eq!(wrong.status().as_u16(), 409);
    let approval_id = waiting["pending_approvals"][0].as_u64().unwrap();
    let answered = answer(ALICE_KEY, json!({"approval_id": approval_id, "approve": true})).await.unwrap();
    assert_eq!(answered.status().as_u16(), 204);

    let done = poll(&server, ALICE_KEY, &url, |s| s["status"] == "done").await;
    let report = &done["report"];
    assert_eq!(report["outcome"], "answered", "{report}");
    let call = report["steps"].as_array().unwrap().iter().find(|s| s["type"] == "tool_call").unwrap();
    assert_eq!((call["name"].as_str(), call["is_error"].as_bool()), (Some("notes.add"), Some(false)), "{call}");
    assert_eq!(received.lock().unwrap().as_slice(), [("/notes".to_owned(), json!({"text": "buy milk"}))]);
    let events = read_sse(
        client().get(format!("{}{url}/events", server.base)).bearer_auth(ALICE_KEY).send().await.unwrap(),
        None,
    )
    .await;
    let needed = events.iter().find(|e| e.event == "approval_needed").unwrap();
    assert_eq!(
        (needed.data["approval_id"].as_u64(), needed.data["tool"].as_str()),
        (Some(approval_id), Some("notes.add"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_approval_does_not_hold_up_another_run() {
    let (addr, received) = receiver();
    let code = "tools.notes.add({text: 'buy milk'}); 'noted'";
    let waiting_model = ScriptedServer::start(
        Wire::OpenAi,
        vec![calls("execute_code", json!({"language": "javascript", "code": code})), Reply::Text("Noted.".to_owned())],
    );
    let other_model = ScriptedServer::start(Wire::OpenAi, code_script());
    let server = start(&waiting_model, |c, dir| {
        let tools = dir.join("tools.toml");
        let toml = format!(
            "[[http]]\nname = \"notes.add\"\ndescription = \"Adds a note.\"\nmethod = \"POST\"\nurl = \"http://{addr}/notes\"\n\
             input_schema = {{ type = \"object\", properties = {{ text = {{ type = \"string\" }} }}, required = [\"text\"] }}\n"
        );
        std::fs::write(&tools, toml).unwrap();
        c.tools = Some(tools);
        c.allow_private = vec![addr.clone()];
        // Long enough that the waiting call outlives the other run by far.
        c.max_manifest =
            CapabilityManifest::from_toml_str("cpu_ms = 30000\nextra_capabilities = [\"tool:notes.add\"]").unwrap();
        c.agent.needs_approval = vec!["notes.add".into()];
        c.agent.models.push(AgentModelConfig {
            model: "openai:other".into(),
            base_url: Some(other_model.base_url()),
            api_key_env: None,
            api_key_file: None,
        });
    })
    .await;
    // Code mode: the call comes from guest code, through the kernel, and is routed to this run.
    let body = json!({"task": "Note: buy milk.", "async": true,
                      "manifest": {"cpu_ms": 30000, "extra_capabilities": ["tool:notes.add"]}});
    let (status, accepted) = post_run(&server, ALICE_KEY, body).await;
    assert_eq!(status, 202, "{accepted}");
    let url = accepted["url"].as_str().unwrap().to_owned();
    let waiting = poll(&server, ALICE_KEY, &url, |s| !s["pending_approvals"].as_array().unwrap().is_empty()).await;

    let started = Instant::now();
    let other = tokio::time::timeout(
        Duration::from_secs(20),
        post_run(&server, BOB_KEY, json!({"task": "What is six times seven?", "model": "openai:other"})),
    )
    .await
    .expect("the other run finished while the first one waited for its approval");
    let (status, report) = other;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("answered")), "{report}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!report.to_string().contains("approval"), "the other run heard nothing of the first one's approval");
    let still = poll(&server, ALICE_KEY, &url, |_| true).await;
    assert_eq!(
        (still["status"].as_str(), &still["pending_approvals"]),
        (Some("running"), &waiting["pending_approvals"])
    );
    assert!(received.lock().unwrap().is_empty(), "nothing is sent before the approval");

    let approval_id = waiting["pending_approvals"][0].as_u64().unwrap();
    let answered = client()
        .post(format!("{}{url}/approvals", server.base))
        .bearer_auth(ALICE_KEY)
        .json(&json!({"approval_id": approval_id, "approve": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status().as_u16(), 204);
    let done = poll(&server, ALICE_KEY, &url, |s| s["status"] == "done").await;
    let report = &done["report"];
    assert_eq!(report["outcome"], "answered", "{report}");
    let run = &report["steps"].as_array().unwrap().iter().find(|s| s["type"] == "code_run").unwrap()["report"];
    assert_eq!((run["outcome"].as_str(), run["value"].as_str()), (Some("ok"), Some("noted")), "{run}");
    assert_eq!(run["tool_calls"][0]["outcome"], "ok", "{run}");
    assert_eq!(received.lock().unwrap().as_slice(), [("/notes".to_owned(), json!({"text": "buy milk"}))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_run_steps_are_appended_to_the_servers_audit_log() {
    let model = ScriptedServer::start(Wire::OpenAi, code_script());
    let key = wasmagent::signing::keys::SecretKey::generate();
    let log = Arc::new(Mutex::new(std::path::PathBuf::new()));
    let (log_path, key_for_config) = (log.clone(), key.clone());
    let server = start(&model, move |c, dir| {
        let key_file = dir.join("audit.key");
        key_for_config.write(&key_file).unwrap();
        let path = dir.join("audit.jsonl");
        c.audit.log = Some(path.clone());
        c.audit.key_file = Some(key_file);
        *log_path.lock().unwrap() = path;
    })
    .await;
    let (status, report) = post_run(&server, ALICE_KEY, json!({"task": "What is six times seven?"})).await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("answered")), "{report}");
    let path = log.lock().unwrap().clone();
    let verified = wasmagent::signing::record::verify_log(&path, key.public_key()).unwrap();
    let records: Vec<Value> =
        std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> =
        records.iter().map(|r| r["kind"].as_str().unwrap_or(r["schema"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        ["model_call", "tool_call", "model_call", "wasmagent.record/v1", "code_run", "model_call", "final"],
        "every step, and the code run's own record"
    );
    assert_eq!(verified.records, 7);
    assert!(records.iter().filter(|r| r["kind"].is_string()).all(|r| r["agent_run_id"] == report["run_id"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_runs_are_seen_by_their_creator_only_and_delivered_to_the_webhooks() {
    let (addr, received) = receiver();
    let model = ScriptedServer::start(Wire::OpenAi, code_script());
    let server = start(&model, |c, _| {
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        // Any variable of 16 bytes or more will do as the secret; cargo always sets this one for tests.
        c.webhooks.secret_env = Some("CARGO_MANIFEST_DIR".into());
        c.allow_private = vec![addr.clone()];
    })
    .await;
    let (status, accepted) = post_run(&server, ALICE_KEY, json!({"task": "Six times seven?", "async": true})).await;
    assert_eq!(status, 202, "{accepted}");
    let url = accepted["url"].as_str().unwrap().to_owned();
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/v1/agent-runs/{id}"));
    let (status, body) = get(&server, BOB_KEY, &url).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    let (status, _) = get(&server, RUNS_ONLY_KEY, &url).await;
    assert_eq!(status, 403);
    let done = poll(&server, ALICE_KEY, &url, |s| s["status"] == "done").await;
    assert_eq!(done["report"]["outcome"], "answered");
    let (status, _) = get(&server, BOB_KEY, &url).await;
    assert_eq!(status, 404, "still not bob's once done");

    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no webhook delivery");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (path, delivered) = received.lock().unwrap()[0].clone();
    assert_eq!(path, "/hook");
    assert_eq!((delivered["agent_run_id"].as_str(), delivered["status"].as_str()), (Some(id.as_str()), Some("done")));
    assert_eq!(delivered["report"]["answer"], "The answer is 42.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_the_agent_routes() {
    let model = ScriptedServer::start(Wire::OpenAi, code_script());
    let server = start(&model, |_, _| {}).await;
    let document: Value =
        client().get(format!("{}/openapi.json", server.base)).send().await.unwrap().json().await.unwrap();
    for path in ["/v1/agent-runs", "/v1/agent-runs/{id}", "/v1/agent-runs/{id}/events", "/v1/agent-runs/{id}/approvals"]
    {
        assert!(document["paths"].get(path).is_some(), "{path} in {}", document["paths"]);
    }
    assert!(document["components"]["schemas"].get("AgentRunRequestBody").is_some());
}
