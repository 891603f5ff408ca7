//! The MCP handler: the `execute_code` and `search_docs` tools.

use crate::MAX_CODE_BYTES;
use crate::McpOptions;
use crate::admission::{Admission, RunPermit};
use crate::catalog::{self, Catalog};
use crate::escalation::{self, Asking, ConnectionGrants, Escalation};
use rmcp::handler::server::router::tool::{ToolRoute, ToolRouter};
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, Extensions, Implementation, JsonObject, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;
use wasmagent::{
    EffectiveManifest, Error, Language, Outcome, RunReport, RunRequest, Sandbox, ToolRegistry, ToolSession,
};

/// The escalation tool's name, offered only with [`CodeModeServer::with_escalation`].
const REQUEST_CAPABILITY: &str = "request_capability";
/// What `search_docs` returns when the client gives no limit.
const DEFAULT_SEARCH_LIMIT: usize = 5;
/// The most hits one search returns.
const MAX_SEARCH_LIMIT: usize = 50;

/// Arguments of `execute_code`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct ExecuteCode {
    /// "javascript" or "python".
    language: String,
    /// The program. JavaScript: the value of the last expression is the result; host tools are `tools.NAME({...})`.
    /// Python: the value of a final expression is the result; host tools come from `from wasmagent import tools`.
    code: String,
    /// Optional. A name of your choice: calls with the same name run in the same live sandbox (variables,
    /// functions, imports and files under /scratch stay), for this connection only. Without it, each call runs in
    /// a fresh sandbox.
    session: Option<String>,
}

/// Arguments of `request_capability`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct RequestCapability {
    /// The refused access, as execute_code's result names it after "denied": its kind (fs.read, fs.write, net.http
    /// or tool) and its target, e.g. "fs.read /data/in.csv".
    capability: String,
    /// Why the task needs it, in one or two sentences; shown to the person who decides.
    reason: String,
}

/// Arguments of `search_docs`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct SearchDocs {
    /// Words describing what you want to do, e.g. "search github issues".
    query: String,
    /// How many tools to return (default 5, at most 50).
    limit: Option<usize>,
}

/// The code-mode MCP server. Cheap to clone: every connection (stdio, or each HTTP session) gets a clone sharing
/// the sandbox, the manifest and the tools.
#[derive(Clone)]
pub struct CodeModeServer {
    sandbox: Arc<Sandbox>,
    manifest: Arc<EffectiveManifest>,
    tools: Arc<ToolRegistry>,
    catalog: Arc<Catalog>,
    tool_router: ToolRouter<Self>,
    /// Whether every run and direct tool call needs the web server's [`Admission`] (set for HTTP).
    admission_required: bool,
    /// This connection's `execute_code` sessions (a clone, which is another connection, starts with none).
    sessions: crate::sessions::ConnectionSessions,
    /// Whom every fresh run and direct tool call is for (`RunRequest::caller`), when the embedder says.
    caller: Option<String>,
    /// The operator's terms for `request_capability`; without them the tool is not offered.
    escalation: Option<Arc<Escalation>>,
    /// What a person approved for this connection (a clone, which is another connection, starts with none).
    grants: ConnectionGrants,
}

impl std::fmt::Debug for CodeModeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeModeServer").field("tools", &self.catalog.len()).finish_non_exhaustive()
    }
}

#[tool_router]
impl CodeModeServer {
    /// A server running code in `sandbox` under `manifest`, documenting `tools` (the registry `sandbox` was built
    /// with). With `options.expose_tools`, every tool `manifest` grants is also published as a direct MCP tool.
    pub fn new(sandbox: Arc<Sandbox>, manifest: EffectiveManifest, tools: &ToolRegistry, options: McpOptions) -> Self {
        let catalog = Arc::new(Catalog::new(tools, &manifest));
        let mut tool_router = Self::tool_router();
        tool_router.remove_route(REQUEST_CAPABILITY);
        if options.expose_tools {
            for name in tools.granted_names(&manifest) {
                let Some(tool) = tools.get(&name) else { continue };
                if tool_router.has_route(&name) {
                    tracing::warn!(tool = %name, "not exposed: the name is taken by a code-mode tool");
                    continue;
                }
                let schema = match tool.input_schema() {
                    Value::Object(map) => map.clone(),
                    _ => JsonObject::from_iter([("type".to_owned(), Value::from("object"))]),
                };
                let attr = rmcp::model::Tool::new(name, tool.description().to_owned(), Arc::new(schema));
                tool_router.add_route(ToolRoute::new_dyn(attr, |context: ToolCallContext<'_, Self>| {
                    Box::pin(async move {
                        let extensions = &context.request_context.extensions;
                        let result = context.service.call_direct(&context.name, context.arguments, extensions).await;
                        Ok(CallToolResponse::Complete(result))
                    })
                }));
            }
        }
        CodeModeServer {
            sandbox,
            manifest: Arc::new(manifest),
            tools: Arc::new(tools.clone()),
            catalog,
            tool_router,
            admission_required: false,
            sessions: crate::sessions::ConnectionSessions::new(),
            caller: None,
            escalation: None,
            grants: ConnectionGrants::new(),
        }
    }

    /// This server offering `request_capability`: an agent refused an access may ask for it, a person approves it
    /// through MCP elicitation, and the grant widens the manifest of that connection only, within `escalation`'s
    /// maximum manifest.
    pub fn with_escalation(mut self, escalation: Arc<Escalation>) -> Self {
        let mut only = Self::tool_router();
        for name in only.list_all().into_iter().map(|tool| tool.name) {
            if name != REQUEST_CAPABILITY {
                only.remove_route(&name);
            }
        }
        self.tool_router.merge(only);
        self.escalation = Some(escalation);
        self
    }

    /// This server with every fresh `execute_code` run and direct tool call made for `caller` (an agent run's id):
    /// the host tools see it in their run context (`RunContext::caller`); the guest never does.
    pub fn for_caller(mut self, caller: impl Into<String>) -> Self {
        self.caller = Some(caller.into());
        self
    }

    /// This server as the HTTP transport serves it: each run and direct tool call waits for the [`Admission`] the
    /// web server puts in its request, and is refused when the request carries none.
    pub(crate) fn admitted_by_web_server(mut self) -> Self {
        self.admission_required = true;
        self
    }

    /// Room for one run or direct tool call, from the admission the request carries (none on stdio), or why not.
    async fn admit(&self, extensions: &Extensions) -> Result<Option<RunPermit>, String> {
        let admission =
            extensions.get::<http::request::Parts>().and_then(|parts| parts.extensions.get::<Admission>()).cloned();
        match admission {
            Some(admission) => admission.admit().await.map(Some),
            None if self.admission_required => {
                Err("refused: the web server gave this request no run admission, so nothing may run".to_owned())
            }
            None => Ok(None),
        }
    }

    /// A classic call of an exposed tool, checked and capped like a call from guest code.
    async fn call_direct(&self, name: &str, arguments: Option<JsonObject>, extensions: &Extensions) -> CallToolResult {
        let permit = match self.admit(extensions).await {
            Ok(permit) => permit,
            Err(message) => return refusal(message),
        };
        let (tools, manifest, name, caller) =
            (self.tools.clone(), self.manifest.clone(), name.to_owned(), self.caller.clone());
        let args = serde_json::to_vec(&Value::Object(arguments.unwrap_or_default()));
        // Tool handlers are synchronous (a micro-tool runs a sandbox, an upstream call waits on its server). The
        // permit is held until the call ends, even if the client goes away first.
        let outcome = tokio::task::spawn_blocking(move || {
            let args = args.map_err(|e| format!("the arguments are not JSON: {e}"));
            // Held to the manifest's cpu_ms, as a call from guest code is.
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(manifest.cpu_ms());
            let result = ToolSession::new(tools, &manifest, deadline).with_caller(caller).call(Ok(name), args);
            drop(permit);
            result
        })
        .await;
        match outcome {
            Ok(Ok(bytes)) => {
                let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
                if value.is_object() {
                    result.structured_content = Some(value);
                }
                result
            }
            Ok(Err(message)) => refusal(message),
            Err(join_error) => {
                tracing::error!(%join_error, "a direct tool call panicked");
                refusal("the tool call failed inside wasmagent (see the server's log)".to_owned())
            }
        }
    }

    /// Runs JavaScript or Python in a fresh WebAssembly sandbox held to this server's capability manifest (no files,
    /// network or environment unless granted; finite time, memory and output), or, given a session name, in that
    /// session's sandbox, which keeps its variables, functions, imports and /scratch files between calls. Returns the result value, stdout,
    /// stderr and one line per error or refused access; the full run report is the structured content. A timeout,
    /// memory limit, exception or syntax error is reported with isError set. Call search_docs first to find the host
    /// tools your code can call and their exact signatures.
    #[tool]
    async fn execute_code(
        &self,
        Parameters(args): Parameters<ExecuteCode>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        // Admitted before anything else, so that every way this call ends gives the room back before it answers.
        let permit = match self.admit(&context.extensions).await {
            Ok(permit) => permit,
            Err(message) => return refusal(message),
        };
        let language = match args.language.trim().to_ascii_lowercase().as_str() {
            "javascript" | "js" => Language::Js,
            "python" | "py" => Language::Python,
            other => {
                return refusal(format!("unknown language {other:?}: execute_code runs \"javascript\" or \"python\""));
            }
        };
        if args.code.len() > MAX_CODE_BYTES {
            return refusal(format!(
                "the code is {} bytes; execute_code accepts at most {MAX_CODE_BYTES} bytes",
                args.code.len()
            ));
        }
        let granted = self.grants.for_run(args.session.is_none());
        let (sandbox, manifest) = (self.sandbox.clone(), granted.unwrap_or_else(|| self.manifest.clone()));
        let name = match language {
            Language::Python => "main.py",
            _ => "main.js",
        };
        let request = RunRequest::source(name, language, args.code).with_caller(self.caller.clone());
        let session = match &args.session {
            Some(session) => match self.sessions.session(session, &sandbox, &manifest, language) {
                Ok(live) => Some(live),
                Err(message) => return refusal(message),
            },
            None => None,
        };
        // Sandbox::run is synchronous and bounded by the manifest's cpu_ms; it must not hold an async worker. The
        // permit is held until the run ends, even if the client goes away first.
        let outcome = tokio::task::spawn_blocking(move || {
            let (outcome, ended) = match session {
                None => (sandbox.run(&manifest, &request), None),
                Some(session) => {
                    let mut session = session.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let outcome = session.run(&request);
                    (outcome, session.info().ended)
                }
            };
            if let Some(permit) = permit {
                permit.finish(match &outcome {
                    Ok(report) => Some(report),
                    Err(Error::Record { report, .. }) => Some(report),
                    Err(_) => None,
                });
            }
            (outcome, ended)
        })
        .await;
        let outcome = outcome.map(|(outcome, ended)| {
            if let (Some(name), Some(reason)) = (&args.session, ended) {
                self.sessions.ended(name, reason);
            }
            outcome
        });
        match outcome {
            Ok(Ok(report)) => report_result(&report, None, self.escalation.is_some()),
            Ok(Err(Error::Record { report, error })) => {
                report_result(&report, Some(error.to_string()), self.escalation.is_some())
            }
            Ok(Err(error)) => refusal(format!("nothing ran: {error}")),
            Err(join_error) => {
                tracing::error!(%join_error, "execute_code: the run panicked");
                refusal("the run failed inside wasmagent (see the server's log)".to_owned())
            }
        }
    }

    /// Asks the person using this client to approve one access execute_code was refused (name it as the result's
    /// "denied" line does, e.g. "fs.read /data/in.csv"). If they approve, for the next run only or for the rest of
    /// this connection, later execute_code runs may do it; sessions already open keep their manifest. Nothing above
    /// the operator's maximum manifest can be approved.
    #[tool]
    async fn request_capability(
        &self,
        Parameters(args): Parameters<RequestCapability>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let Some(escalation) = &self.escalation else {
            return refusal("this server takes no capability requests".to_owned());
        };
        // Who answers: the connection and the client's own name for itself (as it says, cut short).
        let client = context.peer.peer_info().map_or_else(
            || "an unnamed client".to_owned(),
            |info| format!("{} {}", info.client_info.name, info.client_info.version),
        );
        let client: String = client.chars().filter(|c| !c.is_control()).take(120).collect();
        let subject = format!("{} (MCP client {client})", self.sessions.subject());
        let asking = Asking {
            escalation,
            sandbox: &self.sandbox,
            tools: &self.tools,
            server_manifest: &self.manifest,
            grants: &self.grants,
            subject: &subject,
        };
        let answer = asking.request(&args.capability, &args.reason, &context.peer).await;
        if answer.granted {
            CallToolResult::success(vec![ContentBlock::text(answer.text)])
        } else {
            refusal(answer.text)
        }
    }

    /// Searches the host tools code can call inside execute_code, by name, description and parameter names. Each hit
    /// gives the exact call signature in JavaScript and in Python, the parameter schema, and whether this server's
    /// manifest grants the tool.
    #[tool]
    async fn search_docs(&self, Parameters(args): Parameters<SearchDocs>) -> CallToolResult {
        let limit = args.limit.unwrap_or(DEFAULT_SEARCH_LIMIT).min(MAX_SEARCH_LIMIT);
        let hits = self.catalog.search(&args.query, limit);
        let text = catalog::hits_text(&args.query, &hits, self.catalog.len());
        let structured = serde_json::json!({
            "query": args.query,
            "available_tools": self.catalog.len(),
            "results": hits,
        });
        let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
        result.structured_content = Some(structured);
        result
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CodeModeServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("wasmagent", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Run JavaScript or Python with execute_code in a WebAssembly sandbox held to a capability manifest. \
                 Use search_docs to find host tools and their call signatures; call them from your code, then \
                 return only what you need.",
            )
    }
}

/// Whether calling the tool `name` runs something (`execute_code`, or a host tool exposed as a direct MCP tool) and
/// so needs the web server's [`Admission`] over HTTP; `search_docs` only reads the catalog.
pub fn is_run_tool(name: &str) -> bool {
    name != "search_docs"
}

/// A request refused before anything ran: an error result without a report.
fn refusal(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// The result of a run: the report as text and as structured content, an error unless the guest finished normally.
fn report_result(report: &RunReport, record_error: Option<String>, can_request: bool) -> CallToolResult {
    let failed = match report.outcome {
        Outcome::Ok => false,
        Outcome::Exit => report.exit_code != Some(0),
        _ => true,
    } || record_error.is_some();
    let mut text = report_text(report);
    if can_request
        && let Some(denial) = report.denials.iter().find(|d| escalation::REQUESTABLE.contains(&d.capability.as_str()))
    {
        let ask = serde_json::json!({"capability": format!("{} {}", denial.capability, denial.target), "reason": "…"});
        let _ = writeln!(
            text,
            "to ask the person using this client for a denied access, call request_capability with its kind and \
             target, e.g. {ask}"
        );
    }
    if let Some(error) = record_error {
        let _ = writeln!(text, "audit: the run finished but its record could not be written: {error}");
    }
    let content = vec![ContentBlock::text(text)];
    let mut result = if failed { CallToolResult::error(content) } else { CallToolResult::success(content) };
    result.structured_content = match serde_json::to_value(report) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(%error, "cannot serialise a run report");
            None
        }
    };
    result
}

/// The report as a model reads it: outcome, value, output, then one line per error, denial and tool call.
fn report_text(report: &RunReport) -> String {
    let mut text = format!("outcome: {} ({} ms)\n", report.outcome.as_str(), report.usage.wall_ms);
    if let Some(code) = report.exit_code.filter(|_| report.outcome == Outcome::Exit) {
        let _ = writeln!(text, "exit code: {code}");
    }
    let _ = writeln!(text, "value: {}", report.value);
    if !report.stdout.is_empty() {
        let _ = writeln!(text, "stdout:\n{}", report.stdout.trim_end_matches('\n'));
    }
    if !report.stderr.is_empty() {
        let _ = writeln!(text, "stderr:\n{}", report.stderr.trim_end_matches('\n'));
    }
    if let Some(error) = &report.error {
        let kind = serde_json::to_value(error.kind).ok().and_then(|k| k.as_str().map(str::to_owned));
        let _ = writeln!(text, "error ({}): {}", kind.as_deref().unwrap_or("error"), error.message.trim_end());
    }
    for denial in &report.denials {
        let _ = writeln!(text, "denied {} {}: {}", denial.capability, denial.target, denial.reason);
    }
    for call in &report.tool_calls {
        let _ = writeln!(text, "tool call {}: {}", call.name, call.outcome);
    }
    text
}
