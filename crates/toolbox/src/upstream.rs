//! Upstream MCP servers: started (stdio) or reached (streamable HTTP) once, their tools listed and re-exported as
//! `NAMESPACE.tool`. Each tool's description and schema are digested; a tool whose digest no longer matches the
//! approved one (pinned in the file, or seen at start-up) is reported and disabled until it is re-approved.

use crate::ToolboxError;
use crate::file::{DEFAULT_TIMEOUT_MS, UpstreamSpec};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::service::{NotificationContext, Peer, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One upstream tool as listed.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    /// Name in the upstream server.
    pub(crate) remote: String,
    /// `NAMESPACE.name`, made a valid tool name.
    pub(crate) local: String,
    pub(crate) description: String,
    pub(crate) input_schema: Value,
    /// `sha256:` of the canonical JSON of name, description and input schema.
    pub(crate) digest: String,
}

/// The client side of one upstream connection: notes when the server says its tools changed.
#[derive(Clone)]
struct Listener {
    tools_changed: Arc<AtomicBool>,
}

impl ClientHandler for Listener {
    fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) -> impl Future<Output = ()> + Send + '_ {
        self.tools_changed.store(true, Ordering::SeqCst);
        std::future::ready(())
    }

    fn get_info(&self) -> ClientConfig {
        let mut info = ClientConfig::default();
        info.client_info.name = "wasmagent".into();
        info.client_info.version = env!("CARGO_PKG_VERSION").into();
        info
    }
}

/// A connected upstream server.
pub(crate) struct Upstream {
    namespace: String,
    peer: Peer<RoleClient>,
    /// Keeps the connection (and a child process) alive; dropping it closes them.
    _service: RunningService<RoleClient, Listener>,
    tools_changed: Arc<AtomicBool>,
    timeout: Duration,
    /// Approved digest by upstream tool name.
    approved: BTreeMap<String, String>,
    /// Latest digest by upstream tool name, refreshed when the server announces a change.
    current: Mutex<BTreeMap<String, String>>,
}

impl Upstream {
    /// Connects, lists the tools and fixes the approved digests: the file's pins, else what is listed now.
    pub(crate) async fn connect(spec: &UpstreamSpec, base: &Path) -> Result<(Upstream, Vec<Listed>), ToolboxError> {
        let at = |e: String| ToolboxError::new(format!("[[mcp]] {:?}: {e}", spec.namespace));
        let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        let tools_changed = Arc::new(AtomicBool::new(false));
        let listener = Listener { tools_changed: tools_changed.clone() };
        let service = tokio::time::timeout(timeout, start(spec, base, listener))
            .await
            .map_err(|_| at(format!("no MCP handshake within {} ms", timeout.as_millis())))?
            .map_err(at)?;
        let peer = service.peer().clone();
        let listed = list(&peer, &spec.namespace, spec.tools.as_deref(), timeout).await.map_err(at)?;
        let mut seen = BTreeMap::new();
        for tool in &listed {
            if let Some(other) = seen.insert(tool.local.clone(), tool.remote.clone()) {
                return Err(at(format!(
                    "tools {other:?} and {:?} both become {:?}; export one of them with `tools = [...]`",
                    tool.remote, tool.local
                )));
            }
        }
        if let Some(wanted) = &spec.tools
            && let Some(missing) = wanted.iter().find(|w| !listed.iter().any(|t| &t.remote == *w))
        {
            return Err(at(format!("tools lists {missing:?}, which the server does not offer")));
        }
        let current: BTreeMap<String, String> = listed.iter().map(|t| (t.remote.clone(), t.digest.clone())).collect();
        let mut approved = current.clone();
        approved.extend(spec.approved.iter().map(|(k, v)| (k.clone(), v.clone())));
        let upstream = Upstream {
            namespace: spec.namespace.clone(),
            peer,
            _service: service,
            tools_changed,
            timeout,
            approved,
            current: Mutex::new(current),
        };
        Ok((upstream, listed))
    }

    /// Why `remote` may not be called now, if it may not: its digest differs from the approved one.
    pub(crate) fn disabled_reason(&self, remote: &str) -> Option<String> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let local = format!("{}.{}", self.namespace, remote);
        match (self.approved.get(remote), current.get(remote)) {
            (Some(approved), Some(now)) if approved == now => None,
            (Some(approved), Some(now)) => Some(format!(
                "tool {local} is disabled: its description or input schema changed since it was approved \
                 ({approved} -> {now}); review it, then pin the new digest in tools.toml ([[mcp]] approved) or \
                 restart to approve what the server offers now"
            )),
            (_, None) => Some(format!("tool {local} is no longer offered by the upstream MCP server")),
            (None, Some(_)) => Some(format!("tool {local} was not approved")),
        }
    }

    /// Calls `remote` with `args`, within the server's timeout.
    pub(crate) async fn call(&self, remote: &str, args: Value) -> Result<Value, String> {
        if self.tools_changed.swap(false, Ordering::SeqCst) {
            self.refresh().await;
        }
        if let Some(reason) = self.disabled_reason(remote) {
            return Err(reason);
        }
        let arguments = match args {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            _ => return Err(format!("{}.{remote} takes an object of named arguments", self.namespace)),
        };
        let mut params = CallToolRequestParams::new(remote.to_owned());
        params.arguments = Some(arguments);
        let local = format!("{}.{remote}", self.namespace);
        match tokio::time::timeout(self.timeout, self.peer.call_tool(params)).await {
            Err(_) => {
                Err(format!("{local}: the upstream MCP server did not answer within {} ms", self.timeout.as_millis()))
            }
            Ok(Err(error)) => Err(format!("{local}: the upstream MCP server failed: {error}")),
            Ok(Ok(result)) => result_value(result).map_err(|message| format!("{local}: {message}")),
        }
    }

    /// Lists the tools again and reports every digest that changed.
    async fn refresh(&self) {
        match list(&self.peer, &self.namespace, None, self.timeout).await {
            Ok(listed) => {
                let fresh: BTreeMap<String, String> = listed.into_iter().map(|t| (t.remote, t.digest)).collect();
                let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
                for (name, approved) in &self.approved {
                    if fresh.get(name) != Some(approved) && current.get(name) == Some(approved) {
                        tracing::warn!(
                            namespace = %self.namespace, tool = %name,
                            "an upstream MCP tool changed its description or schema (or went away); it is disabled"
                        );
                    }
                }
                *current = fresh;
            }
            Err(error) => {
                tracing::warn!(namespace = %self.namespace, %error, "cannot list the upstream MCP server's tools");
                // Nothing is known to be unchanged: look again on the next call.
                self.tools_changed.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Starts the transport named by `spec` and completes the MCP handshake.
async fn start(
    spec: &UpstreamSpec,
    base: &Path,
    listener: Listener,
) -> Result<RunningService<RoleClient, Listener>, String> {
    if let Some(command) = &spec.command {
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(&spec.args)
            .env_clear()
            .current_dir(spec.cwd.as_ref().map_or_else(|| base.to_path_buf(), |c| base.join(c)));
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(&spec.env).kill_on_drop(true);
        let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {command:?}: {e}"))?;
        return listener.serve(transport).await.map_err(|e| format!("the MCP handshake failed: {e}"));
    }
    let url = spec.url.as_deref().ok_or("no command and no url")?;
    // The HTTP client is built without a TLS provider of its own; use the one the rest of wasmagent uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    let mut custom = std::collections::HashMap::new();
    for (name, value) in &spec.headers {
        if name.eq_ignore_ascii_case("authorization")
            && let Some(token) = value.strip_prefix("Bearer ")
        {
            config = config.auth_header(token.to_owned());
            continue;
        }
        let name = http::HeaderName::try_from(name.as_str()).map_err(|e| format!("header {name:?}: {e}"))?;
        let value = http::HeaderValue::try_from(value.as_str()).map_err(|e| format!("header {name}: {e}"))?;
        custom.insert(name, value);
    }
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config.custom_headers(custom));
    listener.serve(transport).await.map_err(|e| format!("the MCP handshake with {url} failed: {e}"))
}

/// Lists the server's tools (only `only`, when given) with their local names and digests.
async fn list(
    peer: &Peer<RoleClient>,
    namespace: &str,
    only: Option<&[String]>,
    timeout: Duration,
) -> Result<Vec<Listed>, String> {
    let tools = tokio::time::timeout(timeout, peer.list_all_tools())
        .await
        .map_err(|_| format!("tools/list did not answer within {} ms", timeout.as_millis()))?
        .map_err(|e| format!("tools/list failed: {e}"))?;
    Ok(tools
        .into_iter()
        .filter(|tool| only.is_none_or(|names| names.iter().any(|n| n == tool.name.as_ref())))
        .map(|tool| {
            let description = tool.description.as_deref().unwrap_or_default().to_owned();
            let input_schema = Value::Object((*tool.input_schema).clone());
            let digest = tool_digest(&tool.name, &description, &input_schema);
            Listed {
                local: format!("{namespace}.{}", local_name(&tool.name)),
                remote: tool.name.into_owned(),
                description,
                input_schema,
                digest,
            }
        })
        .collect())
}

/// `sha256:` of the RFC 8785 canonical JSON of what a model is shown of a tool.
pub(crate) fn tool_digest(name: &str, description: &str, input_schema: &Value) -> String {
    let shown = serde_json::json!({"name": name, "description": description, "input_schema": input_schema});
    let canonical = serde_jcs::to_vec(&shown).unwrap_or_else(|_| shown.to_string().into_bytes());
    format!("sha256:{}", hex::encode(Sha256::digest(canonical)))
}

/// An upstream tool name as one part of a tool name: other characters become `_`, a leading digit gets a `_`.
fn local_name(remote: &str) -> String {
    let mut name: String =
        remote.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name.truncate(100);
    name
}

/// What a call returned, as the guest receives it: the structured content, else the text (parsed when it is
/// JSON); an error result becomes an error.
fn result_value(result: CallToolResult) -> Result<Value, String> {
    let texts: Vec<&str> = result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.as_str()).collect();
    if result.is_error == Some(true) {
        let message = texts.join("\n");
        return Err(if message.is_empty() { "the tool reported an error".to_owned() } else { message });
    }
    if let Some(structured) = result.structured_content {
        return Ok(structured);
    }
    match texts.as_slice() {
        [] => Ok(Value::Null),
        [one] => Ok(serde_json::from_str(one).unwrap_or_else(|_| Value::String((*one).to_owned()))),
        many => Ok(Value::Array(many.iter().map(|t| Value::String((*t).to_owned())).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_become_tool_name_parts() {
        assert_eq!(local_name("search_issues"), "search_issues");
        assert_eq!(local_name("get-file.v2"), "get_file_v2");
        assert_eq!(local_name("2fa"), "_2fa");
    }

    #[test]
    fn digests_ignore_key_order_but_see_every_change() {
        let a = tool_digest("t", "d", &serde_json::json!({"type": "object", "properties": {"q": {}}}));
        let b = tool_digest("t", "d", &serde_json::json!({"properties": {"q": {}}, "type": "object"}));
        assert_eq!(a, b);
        assert!(crate::file::is_digest(&a));
        assert_ne!(a, tool_digest("t", "d ", &serde_json::json!({"type": "object", "properties": {"q": {}}})));
    }
}
