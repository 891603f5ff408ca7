//! `wasmagent agent` against a scripted OpenAI-compatible server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use serde_json::{Value, json};
use std::process::Command;
use wasmagent_models::testing::{Reply, ScriptedServer, Wire};

fn script() -> Vec<Reply> {
    let code = "[1, 2, 3].map(x => x * x).reduce((a, b) => a + b)";
    vec![
        Reply::ToolCalls {
            text: "Computing.".to_owned(),
            calls: vec![("execute_code".to_owned(), json!({"language": "javascript", "code": code}).to_string())],
        },
        Reply::Text("The sum of squares is 14.".to_owned()),
    ]
}

fn agent(server: &ScriptedServer, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmagent"))
        .args(["agent", "What is 1² + 2² + 3²?", "--model", "openai:local", "--base-url", &server.base_url()])
        .args(extra)
        .env("WASMAGENT_TEST_KEY", "sk-from-the-environment")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap()
}

#[test]
fn the_agent_command_runs_code_and_prints_the_report() {
    let server = ScriptedServer::start(Wire::OpenAi, script());
    let output = agent(&server, &["--json", "--api-key-env", "WASMAGENT_TEST_KEY"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["schema"], "wasmagent.agent/v1");
    assert_eq!(report["outcome"], "answered");
    assert_eq!(report["answer"], "The sum of squares is 14.");
    assert_eq!(report["steps"][1]["type"], "code_run");
    assert_eq!(report["steps"][1]["report"]["value"], 14);
    assert_eq!(report["usage"]["total_tokens"], 220);
    let requests = server.requests();
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk-from-the-environment"));
    assert_eq!(server.schema_errors(), Vec::<String>::new());
}

#[test]
fn events_are_json_lines_and_text_streams_without_json() {
    let server = ScriptedServer::start(Wire::OpenAi, script());
    let output = agent(&server, &["--events"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let types: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["type"].as_str().unwrap().to_owned())
        .filter(|t| t != "text_delta")
        .collect();
    assert_eq!(
        types,
        ["step_start", "usage", "tool_call_proposed", "tool_result", "step_start", "usage", "final_answer", "done"]
    );
    assert_eq!(server.requests()[0].header("authorization"), None, "no key unless one is configured");

    let server = ScriptedServer::start(Wire::OpenAi, script());
    let output = agent(&server, &[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "Computing.The sum of squares is 14.\n");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("[step 1] calls execute_code") && stderr.contains("answered in 2 steps"), "{stderr}");
}

#[test]
fn a_missing_key_and_a_run_without_an_answer_have_their_exit_statuses() {
    let server = ScriptedServer::start(Wire::OpenAi, script());
    let output = agent(&server, &["--api-key-env", "WASMAGENT_NO_SUCH_VARIABLE"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("WASMAGENT_NO_SUCH_VARIABLE is not set"));
    assert!(server.requests().is_empty());

    let output = agent(&server, &["--max-steps", "1", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["outcome"], "max_steps");
}

#[test]
fn an_anthropic_model_is_spoken_to_over_the_messages_api() {
    let server = ScriptedServer::start(Wire::Anthropic, script());
    let output = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
        .args(["agent", "What is 1² + 2² + 3²?", "--model", "anthropic:claude-test", "--base-url", &server.base_url()])
        .args(["--json", "--api-key-env", "WASMAGENT_TEST_KEY"])
        .env("WASMAGENT_TEST_KEY", "sk-ant-from-the-environment")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (report["outcome"].as_str(), report["answer"].as_str()),
        (Some("answered"), Some("The sum of squares is 14."))
    );
    assert_eq!(report["models"], json!(["anthropic:claude-test"]));
    assert_eq!(report["steps"][1]["report"]["value"], 14, "{report}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].header("x-api-key"), Some("sk-ant-from-the-environment"));
    assert_eq!(requests[0].header("authorization"), None, "the Messages API takes the key in x-api-key");
    assert_eq!(
        (requests[0].body["model"].as_str(), requests[0].body["stream"].as_bool()),
        (Some("claude-test"), Some(true))
    );
    assert_eq!(server.schema_errors(), Vec::<String>::new(), "every request matches Anthropic's published schema");
}

#[test]
fn record_appends_every_step_to_the_audit_log_and_audit_verify_checks_the_chain() {
    let bin = env!("CARGO_BIN_EXE_wasmagent");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("records.key");
    let keygen = Command::new(bin).args(["keygen", "--out", key.to_str().unwrap()]).output().unwrap();
    assert_eq!(keygen.status.code(), Some(0));
    let log = dir.path().join("audit.jsonl");
    let (key_s, log_s) = (key.to_str().unwrap(), log.to_str().unwrap());
    let server = ScriptedServer::start(Wire::OpenAi, script());
    let output = agent(&server, &["--json", "--record", log_s, "--record-key", key_s]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    let records: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> =
        records.iter().map(|r| r["kind"].as_str().unwrap_or(r["schema"].as_str().unwrap())).collect();
    assert_eq!(kinds, ["model_call", "wasmagent.record/v1", "code_run", "model_call", "final"], "{records:?}");
    assert_eq!(
        records[1]["code_digest"], records[2]["digest"],
        "the code run's run record and its step name one program"
    );
    assert_eq!(records[4]["agent_run_id"], report["run_id"]);
    let public = format!("{key_s}.pub");
    let verify = Command::new(bin).args(["audit", "verify", log_s, "--pubkey", &public]).output().unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stdout));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("5 records"));

    let text = std::fs::read_to_string(&log).unwrap().replacen("\"kind\":\"code_run\"", "\"kind\":\"tool_call\"", 1);
    std::fs::write(&log, text).unwrap();
    let verify = Command::new(bin).args(["audit", "verify", log_s, "--pubkey", &public]).output().unwrap();
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("record 3"),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let missing_key = agent(&server, &["--record", log_s]);
    assert_eq!(missing_key.status.code(), Some(2), "--record needs --record-key");
}

/// In tool mode, an upstream tool that `[vetting]` sends for approval runs only once the person on the terminal says
/// yes, and one it disables is refused, whatever the model asks.
#[test]
fn tools_vetting_holds_are_asked_about_on_the_terminal_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.toml");
    let declared = format!(
        "[[mcp]]\nnamespace = \"up\"\ncommand = {:?}\nargs = [{:?}]\nenv = {{ UPSTREAM_POISONED = \"1\" }}\n\
         timeout_ms = 20000\n",
        support::sdk_python().display().to_string(),
        support::upstream_server().display().to_string()
    );
    std::fs::write(&tools, declared).unwrap();
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(&manifest, "extra_capabilities = [\"tool:up.*\"]\n").unwrap();
    let calls = vec![
        ("up__check_login".to_owned(), json!({"user": "ada"}).to_string()),
        ("up__poisoned_multiply".to_owned(), json!({"a": 2, "b": 3}).to_string()),
    ];
    let script = vec![Reply::ToolCalls { text: "Checking.".to_owned(), calls }, Reply::Text("Done.".to_owned())];
    let server = ScriptedServer::start(Wire::OpenAi, script);
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
        .args(["agent", "Check ada's login.", "--model", "openai:local", "--base-url", &server.base_url()])
        .args(["--api-key-env", "WASMAGENT_TEST_KEY", "--mode", "tools", "--json"])
        .args(["--tools", tools.to_str().unwrap(), "--manifest", manifest.to_str().unwrap()])
        .env("WASMAGENT_TEST_KEY", "sk-test")
        .env("WASMAGENT_CACHE_DIR", dir.path().join("cache"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"y\n").unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("approve the call of up.check_login"), "{stderr}");
    assert!(!stderr.contains("approve the call of up.poisoned_multiply"), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let step = |name: &str| {
        report["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null)
    };
    let login = step("up.check_login");
    assert_eq!(login["is_error"], false, "approved on the terminal: {report}");
    assert!(login["result"].as_str().unwrap().contains("ada"), "{login}");
    let multiply = step("up.poisoned_multiply");
    assert_eq!(multiply["is_error"], true, "{report}");
    assert!(multiply["result"].as_str().unwrap().contains("disabled: vetting"), "{multiply}");
}
