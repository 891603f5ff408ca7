//! An upstream MCP server that misbehaves on purpose (tests/upstream_server.py with `UPSTREAM_HOSTILE=1`): what it
//! lists, the errors it sends and a tool list it announces but cannot give are held to the toolbox's caps.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmagent_toolbox::{
    MAX_UPSTREAM_DESCRIPTION_BYTES, MAX_UPSTREAM_ERROR_BYTES, MAX_UPSTREAM_TOOLS, REFRESH_RETRY, Toolbox,
    ToolboxOptions,
};

/// The Python with the MCP SDK: `$WASMAGENT_MCP_PYTHON`, else the virtual environment `.ci/run` creates.
fn sdk_python() -> PathBuf {
    let python = std::env::var_os("WASMAGENT_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-venv/bin/python"));
    assert!(python.exists(), "the MCP Python SDK is missing: no {} (see .ci/run)", python.display());
    python
}

fn hostile_upstream(dir: &Path) -> Toolbox {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream_server.py");
    let toml = format!(
        "[[mcp]]\nnamespace = \"up\"\ncommand = {:?}\nargs = [{:?}]\ntimeout_ms = 20000\n\
         env = {{ UPSTREAM_HOSTILE = \"1\" }}\n",
        sdk_python().display().to_string(),
        script.display().to_string()
    );
    let path = dir.join("tools.toml");
    std::fs::write(&path, toml).unwrap();
    Toolbox::load(&path, &ToolboxOptions::default()).unwrap()
}

fn call(toolbox: &Toolbox, name: &str, args: Value) -> Result<Value, String> {
    toolbox.registry().get(name).unwrap_or_else(|| panic!("no tool {name}")).call(args)
}

#[test]
fn a_hostile_tool_list_is_capped_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let toolbox = hostile_upstream(dir.path());
    let entries = toolbox.entries();
    assert_eq!(entries.len(), MAX_UPSTREAM_TOOLS, "611 listed, the first {MAX_UPSTREAM_TOOLS} kept");
    assert!(entries.iter().any(|e| e.name == "up.greet") && entries.iter().any(|e| e.name == "up.filler_000"));
    assert!(!entries.iter().any(|e| e.name == "up.filler_599"), "tools past the cap are left out");
    assert!(!entries.iter().any(|e| e.name == "up.huge_schema"), "a 100 KiB schema is left out");
    assert!(!entries.iter().any(|e| e.name.starts_with("up.nnnn")), "a 1,000-byte name is left out");
    let described = entries.iter().find(|e| e.name == "up.huge_description").unwrap();
    assert!(described.description.len() < MAX_UPSTREAM_DESCRIPTION_BYTES + 64, "{}", described.description.len());
    assert!(described.description.ends_with("[cut: 102400 bytes in all]"), "{}", &described.description[8000..]);
    assert_eq!(call(&toolbox, "up.add", json!({"a": 2, "b": 3})).unwrap(), json!({"sum": 5}));
}

#[test]
fn upstream_error_text_is_cut_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let toolbox = hostile_upstream(dir.path());
    for tool in ["up.fail_loud", "up.fail_protocol"] {
        let error = call(&toolbox, tool, json!({})).unwrap_err();
        assert!(error.len() < MAX_UPSTREAM_ERROR_BYTES + 200, "{tool}: {} bytes", error.len());
        assert!(error.contains("upstream failure\n"), "{tool}: newlines are kept for the guest: {error}");
        assert!(!error.contains('\x1b') && error.contains("\\u{1b}[2J"), "{tool}: control characters escaped");
        assert!(error.contains(" bytes in all]"), "{tool}: the cut is marked: {error}");
    }
}

#[test]
fn a_tool_list_that_cannot_be_read_is_asked_for_at_most_once_per_retry_interval() {
    let dir = tempfile::tempdir().unwrap();
    let toolbox = hostile_upstream(dir.path());
    let list_calls = || call(&toolbox, "up.list_calls", json!({})).unwrap()["calls"].as_u64().unwrap();
    assert_eq!(list_calls(), 1, "listed once at start-up");
    let broken_at = Instant::now();
    call(&toolbox, "up.break_listing", json!({})).unwrap();
    // The change notice arrives on its own: poll until a call has tried (and failed) to list the tools again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let attempts = loop {
        let calls = list_calls();
        if calls >= 2 {
            break calls;
        }
        assert!(Instant::now() < deadline, "no call re-listed the tools after the change notice");
    };
    assert_eq!(attempts, 2, "one failed attempt, not one per call");
    for _ in 0..5 {
        assert_eq!(call(&toolbox, "up.add", json!({"a": 1, "b": 1})).unwrap(), json!({"sum": 2}));
    }
    assert_eq!(list_calls(), 2, "calls within {REFRESH_RETRY:?} of a failed listing do not list again");
    assert!(broken_at.elapsed() < REFRESH_RETRY, "the calls above ran within the retry interval");
}
