//! `wasmagent agent` against a scripted OpenAI-compatible server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

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
