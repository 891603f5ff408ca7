//! Host tools: functions the embedding application offers to guest code (`tools.NAME(args)` in JavaScript,
//! `tools.NAME(**kwargs)` in Python), JSON in and JSON out.
//!
//! This crate owns the [`ToolRegistry`] and the grant rule: a tool is visible to a run only when the manifest's
//! `extra_capabilities` grants it (`tool:NAME`, `tool:PREFIX.*` or `tool:*`). It must not know any kernel or guest
//! ABI: kernels carry bytes across their guest boundary and hand each call to a [`ToolSession`], which checks the
//! grant, the size caps and `max_host_calls` and records the call for the run report, the same way for every kernel.
//!
//! ```
//! use wasmagent_tools::{Tool, ToolRegistry};
//! let mut tools = ToolRegistry::new();
//! tools.register(Tool::new("add", "Adds a and b.", serde_json::json!({"type": "object"}), |args| {
//!     Ok(serde_json::json!(args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)))
//! }))?;
//! assert_eq!(tools.get("add").unwrap().call(serde_json::json!({"a": 1, "b": 2}))?, serde_json::json!(3.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod run;
mod session;
mod worker;

pub use run::{RunContext, RunRecords, ToolImage};

pub use session::{
    MAX_TOOL_ARGS_BYTES, MAX_TOOL_ERROR_BYTES, MAX_TOOL_NAME_BYTES, MAX_TOOL_RESULT_BYTES, ToolRecords, ToolSession,
};
pub use worker::MAX_ABANDONED_CALLS;

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use wasmagent_manifest::EffectiveManifest;

/// What a tool handler returns: a JSON result, or an error message the guest sees as an exception.
pub type ToolResult = Result<Value, String>;

/// How a tool answers: a function of its arguments, or one that also sees the run calling it ([`Tool::per_run`]).
enum Handler {
    Plain(Box<dyn Fn(Value) -> ToolResult + Send + Sync>),
    PerRun(Box<PerRunHandler>),
}

type PerRunHandler = dyn Fn(&RunContext, Value) -> ToolResult + Send + Sync;

/// One host tool.
#[derive(Clone)]
pub struct Tool {
    name: String,
    description: String,
    input_schema: Value,
    handler: Arc<Handler>,
}

impl fmt::Debug for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool").field("name", &self.name).field("description", &self.description).finish()
    }
}

impl Tool {
    /// A tool named `name` (letters, digits, `_`, and `.` between namespace parts) with a description, the JSON
    /// schema of its arguments, and the function that answers calls.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
        handler: impl Fn(Value) -> ToolResult + Send + Sync + 'static,
    ) -> Self {
        let handler = Arc::new(Handler::Plain(Box::new(handler)));
        Tool { name: name.into(), description: description.into(), input_schema, handler }
    }

    /// A tool whose calls in one run share state (a browser page): `handler` also receives the [`RunContext`] of
    /// the calling run, whose [`RunContext::on_end`] hooks release that state when the run ends. Such a tool is
    /// called only through a [`ToolSession`].
    pub fn per_run(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
        handler: impl Fn(&RunContext, Value) -> ToolResult + Send + Sync + 'static,
    ) -> Self {
        let handler = Arc::new(Handler::PerRun(Box::new(handler)));
        Tool { name: name.into(), description: description.into(), input_schema, handler }
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// What the tool does.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// JSON schema of the arguments.
    pub fn input_schema(&self) -> &Value {
        &self.input_schema
    }

    /// Calls the handler. A panic in the handler is turned into an error rather than unwinding into the kernel, and
    /// an empty error message into one that names the tool (guests must be able to tell an error from an empty
    /// result, and a blank message tells nobody anything). A [`Tool::per_run`] tool has no run here and refuses.
    pub fn call(&self, args: Value) -> ToolResult {
        call_handler(&self.name, &self.handler, None, args)
    }

    /// The call of this tool with `args`, as a worker runs it: the result as JSON bytes, refused over
    /// [`MAX_TOOL_RESULT_BYTES`].
    pub(crate) fn work(&self, run: &Arc<RunContext>, args: Value) -> worker::Work {
        let (name, handler, run) = (self.name.clone(), self.handler.clone(), run.clone());
        Box::new(move || {
            let value = call_handler(&name, &handler, Some(&run), args)?;
            let bytes = serde_json::to_vec(&value).map_err(|e| format!("the result is not JSON: {e}"))?;
            if bytes.len() > MAX_TOOL_RESULT_BYTES {
                return Err(format!(
                    "the result of tool {name} is {} bytes; the largest accepted is {MAX_TOOL_RESULT_BYTES}",
                    bytes.len()
                ));
            }
            Ok(bytes)
        })
    }
}

fn call_handler(name: &str, handler: &Handler, run: Option<&RunContext>, args: Value) -> ToolResult {
    let call = || match (handler, run) {
        (Handler::Plain(handler), _) => handler(args),
        (Handler::PerRun(handler), Some(run)) => handler(run, args),
        (Handler::PerRun(_), None) => Err(format!("tool {name} keeps state for a run; call it through a ToolSession")),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Err(message)) if message.is_empty() => Err(format!("tool {name} failed without saying why")),
        Ok(result) => result,
        Err(_) => Err(format!("tool {name} failed internally")),
    }
}

/// Why a tool could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is not a valid tool name.
    #[error("invalid tool name {0:?}: use letters, digits and `_`, with `.` between namespace parts")]
    InvalidName(String),
    /// A tool with this name already exists.
    #[error("a tool named {0:?} is already registered")]
    Duplicate(String),
}

/// The tools an embedder offers. Shared by every kernel and every run; clones share its worker threads (and the
/// bound on calls abandoned at a deadline, [`MAX_ABANDONED_CALLS`]).
#[derive(Debug, Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Tool>,
    workers: worker::Workers,
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tool.
    pub fn register(&mut self, tool: Tool) -> Result<(), RegistryError> {
        if !is_valid_tool_name(&tool.name) {
            return Err(RegistryError::InvalidName(tool.name));
        }
        if self.tools.contains_key(&tool.name) {
            return Err(RegistryError::Duplicate(tool.name));
        }
        self.tools.insert(tool.name.clone(), tool);
        Ok(())
    }

    /// The tool named `name`.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    /// The worker threads calls run on.
    pub(crate) fn workers(&self) -> &worker::Workers {
        &self.workers
    }

    /// Every registered tool, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Tool> {
        self.tools.values()
    }

    /// Names of the registered tools `manifest` grants, sorted.
    pub fn granted_names(&self, manifest: &EffectiveManifest) -> Vec<String> {
        self.tools.keys().filter(|name| is_granted(manifest, name)).cloned().collect()
    }
}

/// Whether `manifest` grants the tool `name`: `tool:NAME`, `tool:PREFIX.*` (names under `PREFIX.`) or `tool:*`.
pub fn is_granted(manifest: &EffectiveManifest, name: &str) -> bool {
    manifest.extra_capabilities().iter().filter_map(|c| c.strip_prefix("tool:")).any(|grant| {
        grant == name || grant == "*" || grant.strip_suffix(".*").is_some_and(|prefix| is_under(name, prefix))
    })
}

/// Whether the capability `wider` grants every tool the capability `narrower` grants, by the rule of
/// [`is_granted`]: how a server checks that a request's `extra_capabilities` only narrow its maximum's. A capability
/// of another kind covers only itself.
pub fn capability_covers(wider: &str, narrower: &str) -> bool {
    if wider == narrower {
        return true;
    }
    match (wider.strip_prefix("tool:"), narrower.strip_prefix("tool:")) {
        (Some("*"), Some(_)) => true,
        // Whatever `narrower` grants (its name, or the names under it) lies under `prefix.` exactly when it does.
        (Some(wider), Some(narrower)) => wider.strip_suffix(".*").is_some_and(|prefix| is_under(narrower, prefix)),
        _ => false,
    }
}

/// Whether `name` lies under the namespace `prefix` (`github.search` under `github`, not `githubx` or `github`).
fn is_under(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'))
}

/// Whether `name` is a valid tool name: at most 128 bytes of `.`-separated parts, each of letters, digits and `_`
/// and not starting with a digit.
pub fn is_valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.split('.').all(|part| {
            part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};

    fn manifest(grants: &[&str]) -> EffectiveManifest {
        CapabilityManifest { extra_capabilities: grants.iter().map(|g| g.to_string()).collect(), ..Default::default() }
            .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
            .unwrap()
    }

    #[test]
    fn grants_match_names_namespaces_and_everything() {
        assert!(is_granted(&manifest(&["tool:search"]), "search"));
        assert!(!is_granted(&manifest(&["tool:search"]), "search2"));
        assert!(!is_granted(&manifest(&[]), "search"));
        assert!(is_granted(&manifest(&["tool:github.*"]), "github.issues"));
        assert!(!is_granted(&manifest(&["tool:github.*"]), "githubber.issues"));
        assert!(!is_granted(&manifest(&["tool:github.*"]), "github"));
        assert!(is_granted(&manifest(&["tool:*"]), "anything.at_all"));
    }

    #[test]
    fn a_capability_covers_only_what_it_grants() {
        assert!(capability_covers("tool:github.*", "tool:github.search"));
        assert!(capability_covers("tool:github.*", "tool:github.repos.*"));
        assert!(capability_covers("tool:*", "tool:github.*"));
        assert!(capability_covers("net:x", "net:x"));
        assert!(!capability_covers("tool:github.*", "tool:github"));
        assert!(!capability_covers("tool:github.*", "tool:githubx.*"));
        assert!(!capability_covers("tool:github.*", "tool:*"));
        // `tool:github*` grants no tool at all (only `.*` is a wildcard), so it covers no other grant.
        assert!(!capability_covers("tool:github*", "tool:github.*"));
        assert!(!capability_covers("tool:git*", "tool:github.search"));
    }

    #[test]
    fn names_are_validated_and_unique() {
        let mut registry = ToolRegistry::new();
        let tool = |name: &str| Tool::new(name, "", Value::Null, |_| Ok(Value::Null));
        assert!(registry.register(tool("ok_name")).is_ok());
        assert!(registry.register(tool("ns.ok")).is_ok());
        assert_eq!(registry.register(tool("ok_name")), Err(RegistryError::Duplicate("ok_name".into())));
        for bad in ["", "1x", "a-b", "a..b", "a.", "constructor name"] {
            assert!(registry.register(tool(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_panicking_handler_becomes_an_error() {
        let tool = Tool::new("boom", "", Value::Null, |_| panic!("handler bug"));
        assert!(tool.call(Value::Null).unwrap_err().contains("failed internally"));
    }

    #[test]
    fn an_empty_error_message_is_replaced() {
        let tool = Tool::new("quiet", "", Value::Null, |_| Err(String::new()));
        assert_eq!(tool.call(Value::Null).unwrap_err(), "tool quiet failed without saying why");
    }
}
