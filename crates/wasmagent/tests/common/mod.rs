//! What the script-kernel tests share: one sandbox per test binary (each engine compiled once) offering the same
//! host tools, manifests resolved against it, and running a script to the outcome a test expects.

use serde_json::json;
use std::path::Path;
use std::sync::OnceLock;
use wasmagent::{
    CapabilityManifest, EffectiveManifest, ErrorKind, Language, Outcome, RunReport, RunRequest, Sandbox, Tool,
    ToolRegistry,
};

fn tools() -> ToolRegistry {
    let mut tools = ToolRegistry::new();
    let schema = json!({"type": "object"});
    tools
        .register(Tool::new("add", "Adds a and b.", schema.clone(), |args| {
            Ok(json!(args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)))
        }))
        .unwrap();
    tools.register(Tool::new("echo", "Returns its arguments.", schema.clone(), Ok)).unwrap();
    tools.register(Tool::new("github.search_issues", "A namespaced tool.", schema.clone(), Ok)).unwrap();
    tools
        .register(Tool::new("fail", "Always fails.", schema.clone(), |_| Err("tool failed on purpose".into())))
        .unwrap();
    tools.register(Tool::new("secret", "Never granted.", schema, |_| Ok(json!("leaked")))).unwrap();
    tools
}

/// The sandbox every test in the binary shares.
pub(crate) fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::builder().pool_slots(16).tools(tools()).build().unwrap())
}

/// `toml` resolved against the sandbox's ceilings.
pub(crate) fn manifest(toml: &str) -> EffectiveManifest {
    sandbox().resolve(&CapabilityManifest::from_toml_str(toml).unwrap(), Path::new("/")).unwrap()
}

/// Runs `code` in `language`, named `name` in stack traces.
pub(crate) fn run(manifest: &EffectiveManifest, language: Language, name: &str, code: &str) -> RunReport {
    sandbox().run(manifest, &RunRequest::source(name, language, code)).unwrap()
}

/// The value of a run that must succeed under the default manifest.
pub(crate) fn value_of(language: Language, name: &str, code: &str) -> serde_json::Value {
    let report = run(&manifest(""), language, name, code);
    assert_eq!(report.outcome, Outcome::Ok, "{code}: {report:?}");
    report.value
}

/// The error kind and message of a run that must end with outcome `error`.
pub(crate) fn error_of(
    manifest: &EffectiveManifest,
    language: Language,
    name: &str,
    code: &str,
) -> (ErrorKind, String) {
    let report = run(manifest, language, name, code);
    assert_eq!(report.outcome, Outcome::Error, "{code}: {report:?}");
    let error = report.error.unwrap();
    (error.kind, error.message)
}
