//! `execute_code` with a `session` name, through a real rmcp client in process: state kept under one name, apart
//! under another, never shared between connections, and a session that ended saying why.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::{RoleClient, RunningService};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use wasmagent::{CapabilityManifest, Sandbox, ToolRegistry};
use wasmagent_mcp::{CodeModeServer, McpOptions};

async fn connect(server: &CodeModeServer) -> RunningService<RoleClient, ()> {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = server.clone();
    tokio::spawn(async move {
        let _ = wasmagent_mcp::serve(server, server_io).await;
    });
    ().serve(client_io).await.unwrap()
}

async fn execute(client: &RunningService<RoleClient, ()>, args: Value) -> CallToolResult {
    let mut params = CallToolRequestParams::new("execute_code");
    params.arguments = Some(serde_json::from_value::<JsonObject>(args).unwrap());
    client.call_tool(params).await.unwrap()
}

fn text(result: &CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_name_keeps_state_within_one_connection_only() {
    let sandbox = Arc::new(Sandbox::builder().pool_slots(8).build().unwrap());
    let manifest =
        sandbox.resolve(&CapabilityManifest::from_toml_str("cpu_ms = 500").unwrap(), Path::new("/")).unwrap();
    let server = CodeModeServer::new(sandbox.clone(), manifest, &ToolRegistry::new(), McpOptions::default());
    let first = connect(&server).await;
    let set = execute(&first, json!({"language": "python", "code": "import json\nseen = [1]", "session": "a"})).await;
    assert_ne!(set.is_error, Some(true), "{}", text(&set));
    let used = execute(&first, json!({"language": "python", "code": "json.dumps(seen)", "session": "a"})).await;
    let report = used.structured_content.clone().unwrap();
    assert_eq!((report["value"].clone(), report["session_call"].clone()), (json!("[1]"), json!(2)), "{report}");
    assert!(report["session_id"].as_str().unwrap().starts_with("s-"));

    // Another name, no name, and the same name on another connection: none of them sees `seen`.
    let other = execute(&first, json!({"language": "python", "code": "'seen' in globals()", "session": "b"})).await;
    assert_eq!(other.structured_content.unwrap()["value"], json!(false));
    let fresh = execute(&first, json!({"language": "python", "code": "'seen' in globals()"})).await;
    assert_eq!(fresh.structured_content.unwrap()["value"], json!(false));
    let second = connect(&server).await;
    let elsewhere =
        execute(&second, json!({"language": "python", "code": "'seen' in globals()", "session": "a"})).await;
    assert_eq!(elsewhere.structured_content.unwrap()["value"], json!(false));

    let wrong = execute(&first, json!({"language": "javascript", "code": "1", "session": "a"})).await;
    assert_eq!(wrong.is_error, Some(true));
    assert!(text(&wrong).contains("session \"a\" runs python"), "{}", text(&wrong));

    let looped = execute(&first, json!({"language": "python", "code": "while True: pass", "session": "loop"})).await;
    assert_eq!(looped.structured_content.unwrap()["outcome"], json!("timeout"));
    let after = execute(&first, json!({"language": "python", "code": "1", "session": "loop"})).await;
    assert_eq!(after.is_error, Some(true));
    assert!(text(&after).contains("has ended") && text(&after).contains("timeout"), "{}", text(&after));

    // Sessions end with their connection: "a" and "b" of the first go, "a" of the second stays.
    assert_eq!(sandbox.live_sessions(), 3);
    first.cancel().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sandbox.live_sessions() != 1 {
        assert!(std::time::Instant::now() < deadline, "{} sessions still alive", sandbox.live_sessions());
        tokio::task::yield_now().await;
    }
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_of_a_connection_end_without_being_called_again() {
    let limits = wasmagent::SessionLimits { session_idle_ms: 100, ..Default::default() };
    let sandbox = Arc::new(Sandbox::builder().pool_slots(4).session_limits(limits).build().unwrap());
    let manifest = sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    let server = CodeModeServer::new(sandbox.clone(), manifest, &ToolRegistry::new(), McpOptions::default());
    let client = connect(&server).await;
    execute(&client, json!({"language": "javascript", "code": "var idle = 1", "session": "idle"})).await;
    assert_eq!(sandbox.live_sessions(), 1);
    // Another session's calls keep coming; the idle one is ended by them once its idle time has passed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        execute(&client, json!({"language": "javascript", "code": "1", "session": "busy"})).await;
        if sandbox.live_sessions() == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the idle session was never ended");
        tokio::task::yield_now().await;
    }
    let after = execute(&client, json!({"language": "javascript", "code": "idle", "session": "idle"})).await;
    assert_eq!(after.is_error, Some(true));
    assert!(text(&after).contains("session_idle_ms (100 ms)"), "{}", text(&after));
}
