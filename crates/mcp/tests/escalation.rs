//! `request_capability` through a real rmcp client in process whose elicitation handler approves: a host and a tool
//! are granted for the connection (as `manifest diff` words them), nothing beyond the maximum manifest is put to the
//! handler, and another connection keeps the server's manifest. No request leaves the process: nothing here runs
//! code that uses what was granted.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult,
    ElicitationAction, JsonObject,
};
use rmcp::service::{RequestContext, RoleClient, RunningService};
use rmcp::{ClientHandler, ErrorData, ServiceExt};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmagent::{CapabilityManifest, EgressConfig, Sandbox, Tool, ToolRegistry};
use wasmagent_mcp::{CodeModeServer, Escalation, McpOptions};

/// A client whose user approves every request (for the session, or once), counting them.
#[derive(Clone, Default)]
struct Approver {
    asked: Arc<AtomicUsize>,
    once: bool,
}

impl ClientHandler for Approver {
    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let scope = if self.once { "once" } else { "session" };
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({"approve": scope})))
    }

    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        info.capabilities = ClientCapabilities::builder().enable_elicitation().build();
        info
    }
}

async fn connect(server: &CodeModeServer, client: Approver) -> RunningService<RoleClient, Approver> {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = server.clone();
    tokio::spawn(async move {
        let _ = wasmagent_mcp::serve(server, server_io).await;
    });
    client.serve(client_io).await.unwrap()
}

async fn ask(client: &RunningService<RoleClient, Approver>, capability: &str) -> (bool, String) {
    let mut params = CallToolRequestParams::new("request_capability");
    let args = json!({"capability": capability, "reason": "the task needs it"});
    params.arguments = Some(serde_json::from_value::<JsonObject>(args).unwrap());
    let result: CallToolResult = client.call_tool(params).await.unwrap();
    let text = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>();
    (result.is_error != Some(true), text.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_tools_within_the_maximum_are_granted_to_one_connection_only() {
    let mut tools = ToolRegistry::new();
    tools.register(Tool::new("t.echo", "Echoes.", json!({"type": "object"}), Ok)).unwrap();
    let sandbox = Arc::new(Sandbox::builder().tools(tools.clone()).build().unwrap());
    let given = CapabilityManifest::default();
    let effective = sandbox.resolve(&given, Path::new("/")).unwrap();
    let maximum = CapabilityManifest::from_toml_str(
        "allowed_hosts = [\"https://api.example.com\"]\nextra_capabilities = [\"tool:t.*\"]\n",
    )
    .unwrap();
    let maximum = sandbox.resolve(&maximum, Path::new("/")).unwrap();
    let escalation = Escalation::new(given, &effective, maximum, EgressConfig::new(), PathBuf::from("/")).unwrap();
    let server =
        CodeModeServer::new(sandbox, effective, &tools, McpOptions::default()).with_escalation(Arc::new(escalation));

    let approver = Approver::default();
    let client = connect(&server, approver.clone()).await;
    let (granted, text) = ask(&client, "net.http https://api.example.com/v1/items?page=2").await;
    assert!(granted && text.contains("adds host https://api.example.com:443"), "{text}");
    let (granted, text) = ask(&client, "tool t.echo").await;
    assert!(granted && text.contains("grants tool:t.echo"), "{text}");
    let (granted, text) = ask(&client, "tool t.echo").await;
    assert!(!granted && text.contains("already allows it"), "{text}");
    assert_eq!(approver.asked.load(Ordering::SeqCst), 2);

    let (granted, text) = ask(&client, "net.http https://other.example.com/").await;
    assert!(!granted && text.contains("above the operator's maximum manifest"), "{text}");
    let (granted, text) = ask(&client, "tool nope").await;
    assert!(!granted && text.contains("nothing to approve"), "an undeclared tool: {text}");
    assert_eq!(approver.asked.load(Ordering::SeqCst), 2, "nobody is asked about what cannot be granted");

    // Another connection starts from the server's manifest: the grants were this connection's.
    let other = Approver::default();
    let second = connect(&server, other.clone()).await;
    let (granted, text) = ask(&second, "tool t.echo").await;
    assert!(granted && text.contains("grants tool:t.echo"), "{text}");
    assert_eq!(other.asked.load(Ordering::SeqCst), 1);
}

/// Grants approved once add up until the next fresh run, which has them all; the run after it has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_for_the_next_run_add_up_and_are_used_up_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    for (sub, text) in [("a", "alpha"), ("b", "beta")] {
        std::fs::create_dir(root.join(sub)).unwrap();
        std::fs::write(root.join(sub).join("f.txt"), text).unwrap();
    }
    let sandbox = Arc::new(Sandbox::builder().build().unwrap());
    let given = CapabilityManifest::from_toml_str("cpu_ms = 20000").unwrap();
    let effective = sandbox.resolve(&given, Path::new("/")).unwrap();
    let maximum = CapabilityManifest {
        allowed_read_paths: vec![root.display().to_string()],
        cpu_ms: Some(20_000),
        ..Default::default()
    };
    let maximum = sandbox.resolve(&maximum, Path::new("/")).unwrap();
    let escalation = Escalation::new(given, &effective, maximum, EgressConfig::new(), PathBuf::from("/")).unwrap();
    let server = CodeModeServer::new(sandbox, effective, &ToolRegistry::new(), McpOptions::default())
        .with_escalation(Arc::new(escalation));
    let client = connect(&server, Approver { once: true, ..Approver::default() }).await;
    let (a, b) = (root.join("a/f.txt"), root.join("b/f.txt"));
    assert!(ask(&client, &format!("fs.read {}", a.display())).await.0);
    assert!(ask(&client, &format!("fs.read {}", b.display())).await.0);
    let code = format!("open({:?}).read() + ' ' + open({:?}).read()", a.display().to_string(), b.display().to_string());
    let run = |code: String| {
        let mut params = CallToolRequestParams::new("execute_code");
        let args = json!({"language": "python", "code": code});
        params.arguments = Some(serde_json::from_value::<JsonObject>(args).unwrap());
        client.call_tool(params)
    };
    let first = run(code.clone()).await.unwrap().structured_content.unwrap();
    assert_eq!(first["value"], "alpha beta", "{first}");
    let second = run(code).await.unwrap().structured_content.unwrap();
    assert_eq!(second["denials"][0]["capability"], "fs.read", "{second}");
}
