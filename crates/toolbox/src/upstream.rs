//! Upstream MCP servers: started (stdio) or reached (streamable HTTP) once, their tools listed and re-exported as
//! `NAMESPACE.tool`. Each tool's description and schema are digested; a tool whose digest no longer matches the
//! approved one (pinned in the file, or seen at start-up) is reported and disabled until it is re-approved.
//!
//! Everything an upstream server sends is bounded before it is kept, logged or given to a guest: at most
//! [`MAX_UPSTREAM_TOOLS`] tools, descriptions cut at [`MAX_UPSTREAM_DESCRIPTION_BYTES`], tools with a longer name
//! than [`MAX_UPSTREAM_NAME_BYTES`] or a larger schema than [`MAX_UPSTREAM_SCHEMA_BYTES`] left out, error text
//! cut at [`MAX_UPSTREAM_ERROR_BYTES`] with control characters escaped. A server that announces a changed tool list
//! and then cannot list it is asked again at most once per [`REFRESH_RETRY`].

use crate::ToolboxError;
use crate::file::{DEFAULT_TIMEOUT_MS, UpstreamSpec};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, PaginatedRequestParams, Tool};
use rmcp::service::{NotificationContext, Peer, RunningService};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmagent::bounds::cut;

/// Most tools one upstream server exports; the rest of its list is left out, with a warning.
pub const MAX_UPSTREAM_TOOLS: usize = 512;
/// Longest tool description kept, in bytes; a longer one is cut with a marker giving its length.
pub const MAX_UPSTREAM_DESCRIPTION_BYTES: usize = 8 * 1024;
/// Largest input schema accepted, in bytes of compact JSON; a tool with a larger one is left out, with a warning.
pub const MAX_UPSTREAM_SCHEMA_BYTES: usize = 32 * 1024;
/// Longest upstream tool name accepted, in bytes (MCP names have at most 128 characters); a tool with a longer one
/// is left out, with a warning.
pub const MAX_UPSTREAM_NAME_BYTES: usize = 256;
/// Most upstream error text a guest (and the run report) receives, in bytes; the rest is cut with a marker.
pub const MAX_UPSTREAM_ERROR_BYTES: usize = 4 * 1024;
/// After a failed re-listing of the tools, the next attempt waits at least this long; calls in between use what
/// was listed last.
pub const REFRESH_RETRY: Duration = Duration::from_secs(10);
/// Most `tools/list` pages read in one listing (each page is one message, which the MCP client caps).
const MAX_LIST_PAGES: usize = 64;
/// Most upstream text one log line quotes, in bytes.
const MAX_LOGGED_BYTES: usize = 512;
/// Left-out tools logged one by one; the rest are counted in one line.
const MAX_LOGGED_REFUSALS: usize = 8;

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
    /// The file's `tools = [...]`, applied to every listing.
    only: Option<Vec<String>>,
    /// When re-listing the tools last failed, if the last attempt failed.
    refresh_failed_at: Mutex<Option<Instant>>,
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
        let Listing { tools: listed, refused } =
            list(&peer, &spec.namespace, spec.tools.as_deref(), timeout).await.map_err(at)?;
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
            return Err(at(match refused.get(missing) {
                Some(reason) => format!("tools lists {missing:?}, which is left out: {reason}"),
                None => format!("tools lists {missing:?}, which the server does not offer"),
            }));
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
            only: spec.tools.clone(),
            refresh_failed_at: Mutex::new(None),
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
        if self.tools_changed.load(Ordering::SeqCst)
            && self.refresh_due()
            && self.tools_changed.swap(false, Ordering::SeqCst)
        {
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
            Ok(Err(error)) => Err(format!(
                "{local}: the upstream MCP server failed: {}",
                sanitise(&error.to_string(), MAX_UPSTREAM_ERROR_BYTES, true)
            )),
            Ok(Ok(result)) => result_value(result).map_err(|message| format!("{local}: {message}")),
        }
    }

    /// Whether the tools may be listed again now: the last attempt did not fail within [`REFRESH_RETRY`].
    fn refresh_due(&self) -> bool {
        let failed_at = self.refresh_failed_at.lock().unwrap_or_else(PoisonError::into_inner);
        failed_at.is_none_or(|at| at.elapsed() >= REFRESH_RETRY)
    }

    /// Lists the tools again and reports every digest that changed.
    async fn refresh(&self) {
        match list(&self.peer, &self.namespace, self.only.as_deref(), self.timeout).await {
            Ok(listing) => {
                *self.refresh_failed_at.lock().unwrap_or_else(PoisonError::into_inner) = None;
                let fresh: BTreeMap<String, String> = listing.tools.into_iter().map(|t| (t.remote, t.digest)).collect();
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
                tracing::warn!(
                    namespace = %self.namespace,
                    error = %sanitise(&error, MAX_LOGGED_BYTES, false),
                    retry_in_secs = REFRESH_RETRY.as_secs(),
                    "cannot list the upstream MCP server's tools"
                );
                // Nothing is known to be unchanged: look again, but not before REFRESH_RETRY.
                *self.refresh_failed_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
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
        return listener.serve(transport).await.map_err(|e| format!("the MCP handshake failed: {}", upstream_text(&e)));
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
    listener.serve(transport).await.map_err(|e| format!("the MCP handshake with {url} failed: {}", upstream_text(&e)))
}

/// What one listing kept, and why the tools named in `tools = [...]` that it left out were left out.
struct Listing {
    tools: Vec<Listed>,
    refused: BTreeMap<String, String>,
}

/// Lists the server's tools (only `only`, when given) with their local names and digests, within `timeout`.
async fn list(
    peer: &Peer<RoleClient>,
    namespace: &str,
    only: Option<&[String]>,
    timeout: Duration,
) -> Result<Listing, String> {
    tokio::time::timeout(timeout, list_pages(peer, namespace, only))
        .await
        .map_err(|_| format!("tools/list did not answer within {} ms", timeout.as_millis()))?
}

/// Reads the tool list page by page, keeping at most [`MAX_UPSTREAM_TOOLS`] tools within the caps.
async fn list_pages(peer: &Peer<RoleClient>, namespace: &str, only: Option<&[String]>) -> Result<Listing, String> {
    let mut listing = Listing { tools: Vec::new(), refused: BTreeMap::new() };
    let (mut over_count, mut refusals) = (0usize, 0usize);
    let mut cursor = None;
    for page in 1..=MAX_LIST_PAGES {
        let params = PaginatedRequestParams::default().with_cursor(cursor.take());
        let result = peer
            .list_tools(Some(params))
            .await
            .map_err(|e| format!("tools/list failed: {}", sanitise(&e.to_string(), MAX_UPSTREAM_ERROR_BYTES, true)))?;
        for tool in result.tools {
            if only.is_some_and(|names| !names.iter().any(|n| n == tool.name.as_ref())) {
                continue;
            }
            if listing.tools.len() >= MAX_UPSTREAM_TOOLS {
                over_count += 1;
                continue;
            }
            let name = tool.name.clone();
            match accept(namespace, tool) {
                Ok(listed) => listing.tools.push(listed),
                Err(reason) => {
                    refusals += 1;
                    if refusals <= MAX_LOGGED_REFUSALS {
                        tracing::warn!(%namespace, tool = %sanitise(&name, 120, false), %reason,
                            "an upstream MCP tool is left out");
                    }
                    if only.is_some() {
                        listing.refused.insert(name.into_owned(), reason);
                    }
                }
            }
        }
        cursor = result.next_cursor;
        if cursor.is_none() {
            break;
        }
        if page == MAX_LIST_PAGES {
            tracing::warn!(%namespace, pages = MAX_LIST_PAGES, "the upstream MCP server's tool list has more pages; \
                the rest is left out");
        }
    }
    if refusals > MAX_LOGGED_REFUSALS {
        tracing::warn!(%namespace, more = refusals - MAX_LOGGED_REFUSALS, "more upstream MCP tools are left out");
    }
    if over_count > 0 {
        tracing::warn!(%namespace, kept = MAX_UPSTREAM_TOOLS, left_out = over_count,
            "the upstream MCP server offers more tools than one server may export; the rest are left out");
    }
    Ok(listing)
}

/// One listed tool within the caps, or why it is left out.
fn accept(namespace: &str, tool: Tool) -> Result<Listed, String> {
    if tool.name.len() > MAX_UPSTREAM_NAME_BYTES {
        return Err(format!("its name is {} bytes, over the cap of {MAX_UPSTREAM_NAME_BYTES}", tool.name.len()));
    }
    let input_schema = Value::Object((*tool.input_schema).clone());
    let mut size = SizeCap { written: 0, cap: MAX_UPSTREAM_SCHEMA_BYTES };
    if serde_json::to_writer(&mut size, &input_schema).is_err() {
        return Err(format!("its input schema is over the cap of {MAX_UPSTREAM_SCHEMA_BYTES} bytes"));
    }
    let description = cut(tool.description.as_deref().unwrap_or_default(), MAX_UPSTREAM_DESCRIPTION_BYTES);
    let digest = tool_digest(&tool.name, &description, &input_schema);
    Ok(Listed {
        local: format!("{namespace}.{}", local_name(&tool.name)),
        remote: tool.name.into_owned(),
        description,
        input_schema,
        digest,
    })
}

/// A writer that only counts, and fails once more than `cap` bytes were written: measures JSON without building it.
struct SizeCap {
    written: usize,
    cap: usize,
}

impl std::io::Write for SizeCap {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.written += bytes.len();
        if self.written > self.cap { Err(std::io::Error::other("over the cap")) } else { Ok(bytes.len()) }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An upstream error as a load error names it: control characters escaped, cut at [`MAX_UPSTREAM_ERROR_BYTES`].
fn upstream_text(error: &impl std::fmt::Display) -> String {
    sanitise(&error.to_string(), MAX_UPSTREAM_ERROR_BYTES, false)
}

/// `text` with control characters (and bidirectional overrides) escaped, all of them or all but newlines and tabs
/// (`keep_lines`), cut at about `max` bytes with a marker giving the original length: upstream text can then
/// neither forge log lines nor fill memory.
pub(crate) fn sanitise(text: &str, max: usize, keep_lines: bool) -> String {
    escape(text.chars(), text.len(), max, keep_lines)
}

/// [`sanitise`] of the text `chars` yields, `total` bytes long.
fn escape(chars: impl Iterator<Item = char>, total: usize, max: usize, keep_lines: bool) -> String {
    let mut out = String::with_capacity(total.min(max) + 48);
    for c in chars {
        if out.len() >= max {
            out.push_str(&format!("…[cut: {total} bytes in all]"));
            return out;
        }
        let kept_whitespace = keep_lines && (c == '\n' || c == '\t');
        if (c.is_control() && !kept_whitespace) || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
        if texts.iter().all(|t| t.is_empty()) {
            return Err("the tool reported an error".to_owned());
        }
        // The texts joined by newlines, read only as far as the cap.
        let total = texts.iter().map(|t| t.len()).sum::<usize>() + texts.len() - 1;
        let joined = texts.iter().enumerate().flat_map(|(i, t)| (i > 0).then_some('\n').into_iter().chain(t.chars()));
        return Err(escape(joined, total, MAX_UPSTREAM_ERROR_BYTES, true));
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

    #[test]
    fn upstream_text_is_escaped_and_cut_before_anyone_sees_it() {
        let forged = "failed\n2026-01-01 INFO all good\x1b[2J\u{202e}";
        assert_eq!(sanitise(forged, 100, false), "failed\\n2026-01-01 INFO all good\\u{1b}[2J\\u{202e}");
        assert_eq!(sanitise("line one\nline\ttwo\r", 100, true), "line one\nline\ttwo\\r");
        let huge = "x".repeat(16 << 20);
        let cut = sanitise(&huge, MAX_UPSTREAM_ERROR_BYTES, true);
        assert!(cut.len() < MAX_UPSTREAM_ERROR_BYTES + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("[cut: {} bytes in all]", 16 << 20)), "{}", &cut[cut.len() - 40..]);
    }

    #[test]
    fn error_results_are_cut_across_their_texts() {
        let mut result = CallToolResult::error(vec![
            rmcp::model::ContentBlock::text("first\u{7}"),
            rmcp::model::ContentBlock::text("y".repeat(1 << 20)),
        ]);
        let error = result_value(result.clone()).unwrap_err();
        assert!(error.starts_with("first\\u{7}\nyyy"), "{}", &error[..20]);
        assert!(error.len() < MAX_UPSTREAM_ERROR_BYTES + 64, "{}", error.len());
        assert!(error.ends_with(&format!("[cut: {} bytes in all]", 7 + (1 << 20))), "{error}");
        result.content.clear();
        assert_eq!(result_value(result).unwrap_err(), "the tool reported an error");
    }
}
