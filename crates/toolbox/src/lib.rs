//! `tools.toml`: many host tools declared in one file, each with its own permissions, turned into a
//! [`ToolRegistry`] that every kernel (and the MCP server's code mode) calls through.
//!
//! It owns three kinds of tool:
//! - **WASM micro-tools** (`[[wasm]]`): a WASI module or component reading JSON arguments on stdin and writing a
//!   JSON result on stdout, run in a fresh sandbox under the tool's own manifest. The caller's grants never reach it.
//! - **HTTP tools** (`[[http]]`): a URL template and method, called through the egress policy (floor, caps,
//!   deadline) with only the template's host allowed and the operator's secrets substituted host-side.
//! - **Upstream MCP servers** (`[[mcp]]`): a command speaking MCP on stdio, or a streamable HTTP URL. Their tools
//!   are re-exported as `NAMESPACE.tool`; each has a digest of its description and schema, and a tool that changes
//!   after it was approved is disabled.
//!
//! It must not decide grants (that is `wasmagent-tools`: a run sees a tool only when its manifest grants it) or know
//! any guest ABI or protocol server.

mod file;
mod http_tool;
mod upstream;
pub mod vet;
mod wasm_tool;

pub use file::{DEFAULT_TIMEOUT_MS, HttpToolSpec, MAX_TIMEOUT_MS, ToolsFile, UpstreamSpec, WasmToolSpec};
pub use upstream::{
    MAX_UPSTREAM_DESCRIPTION_BYTES, MAX_UPSTREAM_ERROR_BYTES, MAX_UPSTREAM_NAME_BYTES, MAX_UPSTREAM_SCHEMA_BYTES,
    MAX_UPSTREAM_TOOLS, REFRESH_RETRY,
};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmagent::egress::Egress;
use wasmagent::{EgressConfig, ManifestCeilings, Sandbox, Tool, ToolRegistry};

/// Why a tools file could not be loaded: one message naming the file, the tool and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolboxError {
    message: String,
}

impl ToolboxError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ToolboxError { message: message.into() }
    }

    pub(crate) fn in_file(self, path: &Path) -> Self {
        ToolboxError { message: format!("{}: {}", path.display(), self.message) }
    }
}

/// What a loaded toolbox needs from its host.
#[derive(Debug, Clone, Default)]
pub struct ToolboxOptions {
    /// Ceilings the micro-tools' manifests are held to.
    pub ceilings: ManifestCeilings,
    /// The operator's egress configuration (floor exceptions, secrets) for HTTP tools and micro-tools.
    pub egress: EgressConfig,
    /// Compiled-code cache directory for micro-tools.
    pub cache_dir: Option<PathBuf>,
}

/// The kind of a declared tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// A WebAssembly micro-tool.
    Wasm,
    /// An HTTP tool.
    Http,
    /// A tool of an upstream MCP server.
    Mcp,
}

impl ToolKind {
    /// `wasm`, `http` or `mcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Wasm => "wasm",
            ToolKind::Http => "http",
            ToolKind::Mcp => "mcp",
        }
    }
}

/// One loaded tool, for `wasmagent tools list|check`.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    /// Name guests call it by.
    pub name: String,
    /// Its kind.
    pub kind: ToolKind,
    /// Where it comes from: the module path, `METHOD url`, or the upstream server and tool.
    pub source: String,
    /// What it does.
    pub description: String,
    /// `sha256:` of the module (wasm) or of the description and schema (mcp); none for HTTP tools.
    pub digest: Option<String>,
    /// Why calls are refused right now (an upstream tool changed since its pin, or vetting disabled it), if they
    /// are.
    pub disabled: Option<String>,
    /// What vetting found in an upstream tool's description and schema (none for the file's own tools, which the
    /// operator wrote).
    pub findings: Vec<vet::Finding>,
    /// What the operator's `[vetting]` policy decided for an upstream tool.
    pub decision: Option<vet::Decision>,
}

/// The tools of one file, loaded: modules read, upstream servers connected.
pub struct Toolbox {
    registry: ToolRegistry,
    /// `registry` with the tools vetting sent for approval callable, for a front end that gates them.
    approvable: ToolRegistry,
    /// Upstream tools whose every call needs a person's approval (`[vetting]` decision `approve`).
    needs_approval: Vec<String>,
    entries: Vec<ToolEntry>,
    // Held for their connections; tools hold them too.
    _upstreams: Vec<Arc<upstream::Upstream>>,
    _runtime: Arc<Runtime>,
}

impl fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Toolbox").field("entries", &self.entries).finish_non_exhaustive()
    }
}

impl Toolbox {
    /// Loads the file at `path`: reads and pins modules, resolves manifests, starts upstream servers.
    pub fn load(path: &Path, options: &ToolboxOptions) -> Result<Self, ToolboxError> {
        let file = ToolsFile::from_path(path)?;
        Self::from_file(&file, options).map_err(|e| e.in_file(path))
    }

    /// Loads an already parsed file.
    pub fn from_file(file: &ToolsFile, options: &ToolboxOptions) -> Result<Self, ToolboxError> {
        let runtime = Arc::new(Runtime::new()?);
        let mut registry = ToolRegistry::new();
        let mut approvable = ToolRegistry::new();
        let mut needs_approval = Vec::new();
        let mut entries = Vec::new();
        // Every tool goes in both registries; only a tool that needs approval differs between them.
        let mut register = |tool: Tool, approved: Option<Tool>, entry: ToolEntry| {
            approvable
                .register(approved.unwrap_or_else(|| tool.clone()))
                .map_err(|e| ToolboxError::new(e.to_string()))?;
            registry.register(tool).map_err(|e| ToolboxError::new(e.to_string()))?;
            entries.push(entry);
            Ok::<(), ToolboxError>(())
        };

        if !file.wasm.is_empty() {
            let sandbox = Arc::new(
                Sandbox::builder()
                    .ceilings(options.ceilings.clone())
                    .cache_dir(options.cache_dir.clone())
                    .pool_slots(16)
                    .egress(options.egress.clone())
                    .build()
                    .map_err(|e| ToolboxError::new(format!("cannot start the micro-tool sandbox: {e}")))?,
            );
            for spec in &file.wasm {
                let module = file.path(&spec.module);
                let (tool, digest) =
                    wasm_tool::WasmTool::load(spec, &module, &file.base, &options.ceilings, sandbox.clone())?;
                let entry = ToolEntry {
                    name: spec.name.clone(),
                    kind: ToolKind::Wasm,
                    source: module.display().to_string(),
                    description: spec.description.clone(),
                    digest: Some(digest),
                    disabled: None,
                    findings: Vec::new(),
                    decision: None,
                };
                register(tool.into_tool(spec.description.clone(), spec.input_schema.clone()), None, entry)?;
            }
        }

        if !file.http.is_empty() {
            let egress = Egress::new(options.egress.clone())
                .map_err(|e| ToolboxError::new(format!("cannot start the network runtime: {e}")))?;
            for spec in &file.http {
                let tool = http_tool::HttpTool::new(spec, &file.base, &options.ceilings, egress.clone())?;
                let schema = spec.input_schema.clone().unwrap_or_else(|| http_tool::HttpTool::default_schema(spec));
                let entry = ToolEntry {
                    name: spec.name.clone(),
                    kind: ToolKind::Http,
                    source: format!("{} {}", spec.method.to_ascii_uppercase(), spec.url),
                    description: spec.description.clone(),
                    digest: None,
                    disabled: None,
                    findings: Vec::new(),
                    decision: None,
                };
                register(tool.into_tool(spec.description.clone(), schema), None, entry)?;
            }
        }

        let mut upstreams = Vec::new();
        for spec in &file.mcp {
            let (connected, listed) = runtime
                .block_on({
                    let (spec, base) = (spec.clone(), file.base.clone());
                    async move { upstream::Upstream::connect(&spec, &base).await }
                })
                .map_err(ToolboxError::new)??;
            let connected = Arc::new(connected);
            let source = spec.command.clone().or_else(|| spec.url.clone()).unwrap_or_default();
            for tool in listed {
                let findings = vet::vet(&tool.description, &tool.input_schema);
                let decision = file.vetting.decide(&findings);
                let hold = vetting_hold(&tool.local, &findings, decision);
                let entry = ToolEntry {
                    name: tool.local.clone(),
                    kind: ToolKind::Mcp,
                    source: format!("{source} (tool {})", tool.remote),
                    description: tool.description.clone(),
                    digest: Some(tool.digest.clone()),
                    disabled: connected
                        .disabled_reason(&tool.remote)
                        .or_else(|| hold.clone().filter(|_| decision == vet::Decision::Disable)),
                    findings,
                    decision: Some(decision),
                };
                let (upstream, runtime, remote) = (connected.clone(), runtime.clone(), tool.remote.clone());
                let call = Arc::new(move |args| {
                    let (upstream, remote) = (upstream.clone(), remote.clone());
                    runtime.block_on(async move { upstream.call(&remote, args).await })?
                });
                let make = |hold: Option<String>| {
                    let call = call.clone();
                    let handler = move |args| match &hold {
                        Some(reason) => Err(reason.clone()),
                        None => call(args),
                    };
                    Tool::new(tool.local.clone(), tool.description.clone(), tool.input_schema.clone(), handler)
                };
                let approved = (decision == vet::Decision::Approve).then(|| make(None));
                if approved.is_some() {
                    needs_approval.push(tool.local.clone());
                }
                register(make(hold), approved, entry)?;
            }
            upstreams.push(connected);
        }

        Ok(Toolbox { registry, approvable, needs_approval, entries, _upstreams: upstreams, _runtime: runtime })
    }

    /// The tools, for [`wasmagent::SandboxBuilder::tools`]. A tool vetting disabled or sent for approval refuses
    /// every call here, saying why.
    pub fn registry(&self) -> &ToolRegistry {
        &self.registry
    }

    /// For a front end that asks a person before each call of the named tools: the tools with those that need
    /// approval callable, and their names (gate every one of them).
    pub fn for_approvals(&self) -> (&ToolRegistry, &[String]) {
        (&self.approvable, &self.needs_approval)
    }

    /// Every loaded tool with its kind, source and digest, sorted by name.
    pub fn entries(&self) -> Vec<ToolEntry> {
        let mut entries = self.entries.clone();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }
}

/// Why calls of `name` are refused under vetting's `decision` (none for `allow`), naming the findings; each finding is
/// also logged as an audit line.
fn vetting_hold(name: &str, findings: &[vet::Finding], decision: vet::Decision) -> Option<String> {
    for finding in findings {
        tracing::warn!(
            target: "wasmagent::audit",
            tool = name, severity = finding.severity.as_str(), rule = finding.rule, location = %finding.location,
            matched = %finding.matched, decision = decision.as_str(), "upstream tool vetting"
        );
    }
    let listed = findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    match decision {
        vet::Decision::Allow => None,
        vet::Decision::Disable => Some(format!(
            "tool {name} is disabled: vetting its description and schema found {listed}; the operator's [vetting] \
             policy disables such tools"
        )),
        vet::Decision::Approve => Some(format!(
            "tool {name} needs a person's approval for every call (vetting found {listed}), and this front end \
             cannot ask one; use `wasmagent agent`, or change [vetting] in the tools file"
        )),
    }
}

/// The runtime upstream connections live on. Synchronous tool handlers (called on a guest's thread) hand their
/// call to it and wait, so they work whether or not the caller is inside another tokio runtime.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new() -> Result<Self, ToolboxError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wasmagent-toolbox")
            .enable_all()
            .build()
            .map(|rt| Runtime(Some(rt)))
            .map_err(|e| ToolboxError::new(format!("cannot start the tools runtime: {e}")))
    }

    /// Runs `future` on this runtime and waits for it on the calling thread.
    fn block_on<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> Result<T, String> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let runtime = self.0.as_ref().ok_or("the tools runtime has stopped")?;
        runtime.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver.recv().map_err(|_| "the tools runtime dropped the call".to_owned())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Servers drop toolboxes inside async code, where a blocking shutdown would panic.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
