//! `wasmagent mcp` driven by a real client: the official MCP Python SDK (PyPI `mcp`, installed by `.ci/run` into
//! `target/mcp-venv`) runs `tests/mcp_client.py`, which prints what it saw; this test asserts on it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python with the MCP SDK: `$WASMAGENT_MCP_PYTHON`, else the virtual environment `.ci/run` creates.
fn sdk_python() -> PathBuf {
    let python = std::env::var_os("WASMAGENT_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-venv/bin/python"));
    assert!(
        python.exists(),
        "the MCP Python SDK is missing: no {}. Create it as .ci/run does (python3 -m venv target/mcp-venv && \
         target/mcp-venv/bin/pip install mcp==2.3.0) or set WASMAGENT_MCP_PYTHON to a python that has it",
        python.display()
    );
    python
}

#[test]
fn the_python_sdk_runs_code_searches_docs_and_gets_errors_as_results() {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("timeout.toml");
    std::fs::write(&manifest, "cpu_ms = 300\n").unwrap();
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py");
    let out = Command::new(&python)
        .arg(&client)
        .arg(env!("CARGO_BIN_EXE_wasmagent"))
        .arg(&manifest)
        .arg(wasmagent_mcp::MAX_CODE_BYTES.to_string())
        .env("WASMAGENT_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the client printed no summary ({e}): {stdout}\n{stderr}"));
    let case = |name: &str| -> &Value { &summary[name] };
    let text = |name: &str| case(name)["text"].as_str().unwrap_or_default().to_owned();

    assert_eq!(summary["server_name"], "wasmagent");
    assert_eq!(summary["tools"], json!(["execute_code", "search_docs"]));

    let js = case("js");
    assert_eq!(js["is_error"], false, "{js}");
    assert_eq!(js["structured"]["schema"], "wasmagent.run/v1");
    assert_eq!(js["structured"]["outcome"], "ok");
    assert_eq!(js["structured"]["value"], 2);
    assert_eq!(js["structured"]["stdout"], "hi\n");
    assert!(text("js").contains("value: 2") && text("js").contains("stdout:\nhi"), "{}", text("js"));

    let python = case("python");
    assert_eq!(python["is_error"], false, "{python}");
    assert_eq!(python["structured"]["kernel"], "python");
    assert_eq!(python["structured"]["value"], 10);
    assert_eq!(python["structured"]["stdout"], "hello\n");

    let search = case("search");
    assert_eq!(search["is_error"], false, "{search}");
    assert_eq!(search["structured"]["results"], json!([]));
    assert!(text("search").starts_with("No host tools are available"), "{}", text("search"));

    assert_eq!(case("unknown_language")["is_error"], true);
    assert!(text("unknown_language").contains("unknown language \"cobol\""), "{}", text("unknown_language"));
    assert_eq!(case("unknown_language")["structured"], Value::Null, "nothing ran, so there is no report");

    for syntax in ["js_syntax_error", "python_syntax_error"] {
        let result = case(syntax);
        assert_eq!(result["is_error"], true, "{result}");
        assert_eq!(result["structured"]["outcome"], "error", "{result}");
        assert!(text(syntax).contains("SyntaxError"), "{}", text(syntax));
    }

    assert_eq!(case("oversized")["is_error"], true);
    assert!(text("oversized").contains("accepts at most"), "{}", text("oversized"));
    assert_eq!(case("after_errors")["structured"]["value"], 42, "the session survives every error");

    let looping = case("infinite_loop");
    assert_eq!(looping["is_error"], true, "{looping}");
    assert_eq!(looping["structured"]["outcome"], "timeout", "{looping}");
    assert_eq!(looping["structured"]["manifest"]["cpu_ms"], 300, "--manifest is applied");
    assert!(text("infinite_loop").starts_with("outcome: timeout"), "{}", text("infinite_loop"));
    // Not a performance figure: a run stopped at cpu_ms = 300 that took this long would mean the deadline failed.
    assert!(looping["seconds"].as_f64().unwrap() < 30.0, "{looping}");
}
