//! The `tools.toml` format: what each declared tool is, checked before anything starts.

use crate::ToolboxError;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use wasmagent::manifest::ByteSize;
use wasmagent::{CapabilityManifest, is_valid_tool_name};

/// Longest per-tool timeout a file may declare (10 minutes): every tool call must end.
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Timeout of a tool call when the file gives none (30 s).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// A parsed and checked `tools.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsFile {
    /// WebAssembly micro-tools: JSON arguments on stdin, a JSON result on stdout.
    #[serde(default)]
    pub wasm: Vec<WasmToolSpec>,
    /// HTTP tools: one request through the egress policy per call.
    #[serde(default)]
    pub http: Vec<HttpToolSpec>,
    /// Upstream MCP servers whose tools are re-exported under a namespace.
    #[serde(default)]
    pub mcp: Vec<UpstreamSpec>,
    /// `[browser]`: the browser tools' settings (`wasmagent-browser`'s `BrowserConfig`: `chromium`,
    /// `pages_per_run`, `navigation_timeout_ms`, `screenshot_max_bytes`, `extract_max_bytes`). Present, it enables
    /// them for the front ends that load this file, as `--browser` does; the front end checks it.
    #[serde(default)]
    pub browser: Option<toml::Table>,
    /// `[vetting]`: what happens to an upstream tool whose description or schema the screen flags, per severity
    /// (`high`, `medium`, `low` = `disable` | `approve` | `allow`; default disable, approve, allow).
    #[serde(default)]
    pub vetting: crate::vet::VettingPolicy,
    /// Directory relative paths in the file are resolved against.
    #[serde(skip)]
    pub base: PathBuf,
}

/// `[[wasm]]`: a WASI module or component run in its own sandbox under its own manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmToolSpec {
    /// Tool name (`word_count`, `text.word_count`).
    pub name: String,
    /// What the tool does, for `search_docs` and tool lists.
    #[serde(default)]
    pub description: String,
    /// The module or component, relative to the file.
    pub module: PathBuf,
    /// Expected `sha256:<hex>` of the module; loading fails when it differs.
    pub sha256: Option<String>,
    /// Command-line arguments given to the module.
    #[serde(default)]
    pub args: Vec<String>,
    /// JSON schema of the arguments (default: any object).
    #[serde(default = "object_schema")]
    pub input_schema: Value,
    /// The tool's own capability manifest (default: nothing allowed, default limits). The caller's grants never
    /// reach the tool.
    #[serde(default)]
    pub manifest: CapabilityManifest,
    /// CPU-time deadline of one call in milliseconds, when the tool's manifest sets no `cpu_ms`.
    pub timeout_ms: Option<u64>,
}

/// `[[http]]`: a URL template and method; the call's arguments fill `{placeholders}`, the rest go in the query
/// string (GET, HEAD, DELETE) or a JSON body (POST, PUT, PATCH).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolSpec {
    /// Tool name.
    pub name: String,
    /// What the tool does.
    #[serde(default)]
    pub description: String,
    /// HTTP method (default GET).
    #[serde(default = "get")]
    pub method: String,
    /// `https://api.example.com/v1/items/{id}`: placeholders only in the path and query, never in the host.
    pub url: String,
    /// Request headers; `{{secret:NAME}}` is replaced host-side with a secret the operator bound to this host.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON schema of the arguments (default: an object with one string property per placeholder).
    pub input_schema: Option<Value>,
    /// Deadline of one call, redirects included, in milliseconds (default 30 000).
    pub timeout_ms: Option<u64>,
    /// Largest response body accepted (default: the manifest default, 8 MiB).
    pub max_response_bytes: Option<ByteSize>,
}

/// `[[mcp]]`: an MCP server started (`command`) or reached (`url`) when the tools are loaded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Namespace of its tools: tool `search` of namespace `github` is `github.search`.
    pub namespace: String,
    /// Program to start; it speaks MCP on its standard input and output.
    pub command: Option<String>,
    /// Arguments of `command`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment of `command` (nothing else is inherited but `PATH`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of `command`, relative to the file (default: the file's directory).
    pub cwd: Option<PathBuf>,
    /// Streamable HTTP endpoint, instead of `command`.
    pub url: Option<String>,
    /// Headers sent to `url` (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Only these upstream tools are re-exported (default: all).
    pub tools: Option<Vec<String>>,
    /// Approved digests by upstream tool name (`tools check` prints them). A tool whose description or schema no
    /// longer matches its digest is disabled. Without pins, the digests seen at start-up are the approved ones.
    #[serde(default)]
    pub approved: BTreeMap<String, String>,
    /// Deadline of one call (and of start-up) in milliseconds (default 30 000).
    pub timeout_ms: Option<u64>,
}

fn object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

fn get() -> String {
    "GET".to_owned()
}

impl ToolsFile {
    /// Reads and checks the file at `path`.
    pub fn from_path(path: &Path) -> Result<Self, ToolboxError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ToolboxError::new(format!("cannot read {}: {e}", path.display())))?;
        // A bare file name (`--tools tools.toml`) has the empty path as its parent, which is no working directory.
        let base =
            path.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Self::from_toml_str(&text, &base).map_err(|e| e.in_file(path))
    }

    /// Parses and checks `text`; relative paths are relative to `base`.
    pub fn from_toml_str(text: &str, base: &Path) -> Result<Self, ToolboxError> {
        let mut file: ToolsFile = toml::from_str(text).map_err(|e| ToolboxError::new(e.to_string()))?;
        file.base = base.to_path_buf();
        file.check()?;
        Ok(file)
    }

    /// Checks what can be checked without starting anything: names, URLs, timeouts, exclusive fields.
    fn check(&self) -> Result<(), ToolboxError> {
        let mut names = BTreeSet::new();
        let namespaces: BTreeSet<&str> = self.mcp.iter().map(|m| m.namespace.as_str()).collect();
        let declared = self
            .wasm
            .iter()
            .map(|t| ("wasm", t.name.as_str(), t.timeout_ms))
            .chain(self.http.iter().map(|t| ("http", t.name.as_str(), t.timeout_ms)));
        for (kind, name, timeout) in declared {
            let at = format!("[[{kind}]] {name:?}");
            if !is_valid_tool_name(name) {
                return Err(ToolboxError::new(format!(
                    "{at}: invalid name: use letters, digits and `_`, with `.` between namespace parts"
                )));
            }
            if !names.insert(name) {
                return Err(ToolboxError::new(format!("{at}: a tool with this name is declared twice")));
            }
            if let Some(ns) = namespaces.iter().find(|ns| name.strip_prefix(**ns).is_some_and(|r| r.starts_with('.'))) {
                return Err(ToolboxError::new(format!(
                    "{at}: the name is inside the namespace of [[mcp]] {ns:?}; rename one of them"
                )));
            }
            check_timeout(&at, timeout)?;
        }
        for tool in &self.http {
            crate::http_tool::UrlTemplate::parse(&tool.url)
                .map_err(|e| ToolboxError::new(format!("[[http]] {:?}: url: {e}", tool.name)))?;
            crate::http_tool::method(&tool.method)
                .map_err(|e| ToolboxError::new(format!("[[http]] {:?}: method: {e}", tool.name)))?;
        }
        let mut seen_namespaces = BTreeSet::new();
        for upstream in &self.mcp {
            let at = format!("[[mcp]] {:?}", upstream.namespace);
            if !is_valid_tool_name(&upstream.namespace) || upstream.namespace.contains('.') {
                return Err(ToolboxError::new(format!(
                    "{at}: invalid namespace: use letters, digits and `_`, starting with a letter or `_`"
                )));
            }
            if !seen_namespaces.insert(&upstream.namespace) {
                return Err(ToolboxError::new(format!("{at}: the namespace is declared twice")));
            }
            match (&upstream.command, &upstream.url) {
                (Some(_), Some(_)) => {
                    return Err(ToolboxError::new(format!("{at}: give either `command` or `url`, not both")));
                }
                (None, None) => {
                    return Err(ToolboxError::new(format!(
                        "{at}: give `command` (a server on stdio) or `url` (streamable HTTP)"
                    )));
                }
                (None, Some(url)) => match url::Url::parse(url) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                    Ok(_) => return Err(ToolboxError::new(format!("{at}: url must be http or https"))),
                    Err(e) => return Err(ToolboxError::new(format!("{at}: url {url:?}: {e}"))),
                },
                (Some(command), None) if command.trim().is_empty() => {
                    return Err(ToolboxError::new(format!("{at}: command is empty")));
                }
                (Some(_), None) => {}
            }
            for (tool, digest) in &upstream.approved {
                if !is_digest(digest) {
                    return Err(ToolboxError::new(format!(
                        "{at}: approved.{tool} = {digest:?} is not a digest; copy it from `wasmagent tools check`"
                    )));
                }
            }
            check_timeout(&at, upstream.timeout_ms)?;
        }
        for tool in &self.wasm {
            if let Some(digest) = tool.sha256.as_deref().filter(|d| !is_digest(d)) {
                return Err(ToolboxError::new(format!(
                    "[[wasm]] {:?}: sha256 = {digest:?} is not `sha256:` followed by 64 hex digits",
                    tool.name
                )));
            }
        }
        Ok(())
    }

    /// A path from the file, made absolute against its directory.
    pub(crate) fn path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base.join(path) }
    }
}

fn check_timeout(at: &str, timeout: Option<u64>) -> Result<(), ToolboxError> {
    match timeout {
        Some(0) => Err(ToolboxError::new(format!("{at}: timeout_ms must be at least 1"))),
        Some(ms) if ms > MAX_TIMEOUT_MS => {
            Err(ToolboxError::new(format!("{at}: timeout_ms = {ms} is over the maximum of {MAX_TIMEOUT_MS}")))
        }
        _ => Ok(()),
    }
}

/// `sha256:` followed by 64 lower-case hex digits.
pub(crate) fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ToolsFile, String> {
        ToolsFile::from_toml_str(text, Path::new("/tools")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_file_parses_with_defaults() {
        let file = parse(
            r#"
            [[wasm]]
            name = "text.count"
            module = "count.wasm"
            [wasm.manifest]
            memory_limit_bytes = "16MiB"

            [[http]]
            name = "weather"
            url = "https://api.example.com/v1/{city}"
            headers = { Authorization = "Bearer {{secret:KEY}}" }

            [[mcp]]
            namespace = "github"
            command = "github-mcp"
            approved = { search = "sha256:0000000000000000000000000000000000000000000000000000000000000000" }
            "#,
        )
        .unwrap();
        assert_eq!(file.wasm[0].input_schema, serde_json::json!({"type": "object"}));
        assert_eq!(file.path(&file.wasm[0].module), PathBuf::from("/tools/count.wasm"));
        assert_eq!(file.http[0].method, "GET");
        assert_eq!(file.mcp[0].approved.len(), 1);
    }

    #[test]
    fn mistakes_are_named_with_the_tool_and_field() {
        let cases = [
            ("[[wasm]]\nname = \"a-b\"\nmodule = \"x.wasm\"", "invalid name"),
            ("[[wasm]]\nname = \"a\"\nmodule = \"x\"\n[[http]]\nname = \"a\"\nurl = \"https://x\"", "declared twice"),
            ("[[http]]\nname = \"a\"\nurl = \"https://{host}/x\"", "host"),
            ("[[http]]\nname = \"a\"\nurl = \"ftp://x/\"", "http or https"),
            ("[[http]]\nname = \"a\"\nurl = \"https://x/{\"", "placeholder"),
            ("[[http]]\nname = \"a\"\nmethod = \"BREW\"\nurl = \"https://x/\"", "method"),
            ("[[http]]\nname = \"a\"\nurl = \"https://x/\"\ntimeout_ms = 0", "timeout_ms"),
            ("[[mcp]]\nnamespace = \"gh\"", "give `command`"),
            ("[[mcp]]\nnamespace = \"gh\"\ncommand = \"x\"\nurl = \"http://x\"", "not both"),
            ("[[mcp]]\nnamespace = \"g.h\"\ncommand = \"x\"", "invalid namespace"),
            ("[[mcp]]\nnamespace = \"gh\"\ncommand = \"x\"\napproved = { a = \"abc\" }", "not a digest"),
            (
                "[[mcp]]\nnamespace = \"gh\"\ncommand = \"x\"\n[[http]]\nname = \"gh.a\"\nurl = \"https://x/\"",
                "namespace",
            ),
            ("[[wasm]]\nname = \"a\"\nmodule = \"x\"\nsha256 = \"md5:1\"", "sha256"),
            ("[[wasm]]\nname = \"a\"\nmodule = \"x\"\nbogus = 1", "unknown field"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}\n=> {error}");
        }
    }
}
