//! The tools offered to the model, served by the MCP crate's own [`CodeModeServer`] in-process: code mode offers
//! exactly its `execute_code` and `search_docs`, tool mode exactly the granted host tools it exposes (each call
//! checked by a `ToolSession` against the manifest, as over MCP). The agent is an MCP client of that server over
//! an in-memory pipe, so the two front ends cannot drift apart.

use crate::Mode;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::RunningService;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use wasmagent::{EffectiveManifest, Sandbox, ToolRegistry};
use wasmagent_mcp::{CodeModeServer, McpOptions};
use wasmagent_models::{ToolCall, ToolSpec};

/// The code-mode tools' names.
pub(crate) const EXECUTE_CODE: &str = "execute_code";
pub(crate) const SEARCH_DOCS: &str = "search_docs";

/// One tool as the model sees it.
struct Offered {
    /// The function name the model calls (letters, digits, `_`, `-`; at most 64).
    function: String,
    /// The MCP tool behind it.
    tool: String,
    spec: ToolSpec,
    validator: Option<jsonschema::Validator>,
}

/// The MCP client and what it offers.
pub(crate) struct Toolbelt {
    client: RunningService<rmcp::RoleClient, ()>,
    offered: Vec<Offered>,
}

/// What became of one tool call.
pub(crate) enum CallOutcome {
    /// Refused before anything ran (unknown tool, arguments that are not JSON or break the schema); the message
    /// tells the model how to fix it.
    Rejected(String),
    /// The tool ran: its text, whether it failed, and its structured content (for `execute_code`, the run report).
    Ran { text: String, is_error: bool, structured: Option<Value> },
}

impl Toolbelt {
    /// Starts the in-process server for `mode`, its runs and calls made for agent run `run_id`, and lists its tools.
    pub(crate) async fn start(
        sandbox: Arc<Sandbox>,
        manifest: EffectiveManifest,
        tools: &ToolRegistry,
        mode: Mode,
        run_id: &str,
    ) -> Result<Self, String> {
        let options = McpOptions { expose_tools: mode == Mode::Tools };
        // Every run and call is made for this agent run, so the approval gate asks this run and no other.
        let server = CodeModeServer::new(sandbox, manifest, tools, options).for_caller(run_id);
        let (server_io, client_io) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            if let Err(error) = wasmagent_mcp::serve(server, server_io).await {
                tracing::warn!(%error, "the agent's in-process MCP server stopped");
            }
        });
        let client = ().serve(client_io).await.map_err(|e| format!("cannot start the tool server: {e}"))?;
        let listed = client.list_all_tools().await.map_err(|e| format!("cannot list the tools: {e}"))?;
        let mut offered: Vec<Offered> = Vec::new();
        for tool in listed {
            let name = tool.name.to_string();
            let code_mode_tool = name == EXECUTE_CODE || name == SEARCH_DOCS;
            if code_mode_tool != (mode == Mode::Code) {
                continue;
            }
            let schema = Value::Object((*tool.input_schema).clone());
            let function = function_name(&name, offered.iter().map(|o| o.function.as_str()));
            offered.push(Offered {
                spec: ToolSpec {
                    name: function.clone(),
                    description: tool.description.map(|d| d.to_string()).unwrap_or_default(),
                    input_schema: schema.clone(),
                },
                validator: jsonschema::validator_for(&schema).ok(),
                function,
                tool: name,
            });
        }
        Ok(Toolbelt { client, offered })
    }

    /// The tools as the model is offered them.
    pub(crate) fn specs(&self) -> Vec<ToolSpec> {
        self.offered.iter().map(|o| o.spec.clone()).collect()
    }

    /// The MCP tool a function name stands for.
    pub(crate) fn tool_name(&self, function: &str) -> Option<&str> {
        self.offered.iter().find(|o| o.function == function).map(|o| o.tool.as_str())
    }

    /// The host tools' signatures, as `search_docs` gives them (for the code-mode guide).
    pub(crate) async fn signatures(&self, tools: &ToolRegistry) -> String {
        let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
        let query = if names.is_empty() { "tools".to_owned() } else { names.join(" ") };
        let mut arguments = JsonObject::new();
        arguments.insert("query".to_owned(), Value::from(query));
        arguments.insert("limit".to_owned(), Value::from(50));
        match self.raw_call(SEARCH_DOCS, arguments).await {
            Ok(result) => {
                let mut text = text_of(&result);
                if names.len() > 50 {
                    text.push_str(&format!("({} more: use search_docs to find them)\n", names.len() - 50));
                }
                text
            }
            Err(error) => format!("(search_docs failed: {error})"),
        }
    }

    /// Checks and runs one call.
    pub(crate) async fn call(&self, call: &ToolCall) -> CallOutcome {
        let Some(offered) = self.offered.iter().find(|o| o.function == call.name) else {
            let names: Vec<&str> = self.offered.iter().map(|o| o.function.as_str()).collect();
            return CallOutcome::Rejected(format!(
                "there is no tool named {:?}; the tools are: {}",
                call.name.chars().take(100).collect::<String>(),
                names.join(", ")
            ));
        };
        let arguments = if call.arguments.trim().is_empty() { "{}" } else { call.arguments.as_str() };
        let hint = || format!("Send a JSON object valid against this JSON Schema: {}", offered.spec.input_schema);
        let arguments = match serde_json::from_str::<Value>(arguments) {
            Ok(Value::Object(arguments)) => arguments,
            Ok(other) => {
                return CallOutcome::Rejected(format!(
                    "the arguments of {} must be a JSON object, not {}. {}",
                    offered.function,
                    kind(&other),
                    hint()
                ));
            }
            Err(error) => {
                return CallOutcome::Rejected(format!(
                    "the arguments of {} are not valid JSON ({error}). {}",
                    offered.function,
                    hint()
                ));
            }
        };
        if let Some(validator) = &offered.validator {
            let instance = Value::Object(arguments.clone());
            let errors: Vec<String> = validator
                .iter_errors(&instance)
                .take(5)
                .map(|e| format!("{e} at {:?}", e.instance_path().to_string()))
                .collect();
            if !errors.is_empty() {
                return CallOutcome::Rejected(format!(
                    "the arguments of {} do not match its schema: {}. {}",
                    offered.function,
                    errors.join("; "),
                    hint()
                ));
            }
        }
        match self.raw_call(&offered.tool, arguments).await {
            Ok(result) => CallOutcome::Ran {
                text: text_of(&result),
                is_error: result.is_error == Some(true),
                structured: result.structured_content,
            },
            Err(error) => {
                CallOutcome::Ran { text: format!("the call failed: {error}"), is_error: true, structured: None }
            }
        }
    }

    async fn raw_call(&self, tool: &str, arguments: JsonObject) -> Result<CallToolResult, rmcp::ServiceError> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = Some(arguments);
        self.client.call_tool(params).await
    }
}

fn text_of(result: &CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.as_str())).collect::<Vec<_>>().join("\n")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The function name for tool `name`: both wire formats accept `^[a-zA-Z0-9_-]{1,64}$`, so `.` becomes `__`, and a
/// name that is then too long or already taken gets a digest suffix.
fn function_name<'a>(name: &str, taken: impl Iterator<Item = &'a str> + Clone) -> String {
    let plain: String =
        name.replace('.', "__").chars().filter(|c| c.is_ascii_alphanumeric() || "_-".contains(*c)).collect();
    if !plain.is_empty() && plain.len() <= 64 && !taken.clone().any(|t| t == plain) {
        return plain;
    }
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    let head: String = plain.chars().take(55).collect();
    format!("{head}_{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_become_function_names_both_wire_formats_accept() {
        assert_eq!(function_name("github.search_issues", [].into_iter()), "github__search_issues");
        let taken = ["a__b"];
        let renamed = function_name("a.b", taken.into_iter());
        assert!(renamed.starts_with("a__b_") && renamed.len() == 13, "{renamed}");
        let long = format!("n.{}", "x".repeat(100));
        let renamed = function_name(&long, [].into_iter());
        assert!(renamed.len() <= 64, "{renamed}");
    }
}
