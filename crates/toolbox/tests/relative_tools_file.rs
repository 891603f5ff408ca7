//! `--tools tools.toml`, a bare file name as the README writes it: command-based upstream servers start in the
//! file's directory (the current one). Its own test binary, because it changes the process's working directory.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};
use wasmagent_toolbox::{Toolbox, ToolboxOptions};

#[test]
fn a_bare_file_name_starts_upstream_servers_in_the_current_directory() {
    let python = std::env::var_os("WASMAGENT_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-venv/bin/python"));
    assert!(python.exists(), "the MCP Python SDK is missing: no {} (see .ci/run)", python.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream_server.py");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tools.toml"),
        format!(
            "[[mcp]]\nnamespace = \"up\"\ncommand = {:?}\nargs = [{:?}]\ntimeout_ms = 20000\n",
            python.display().to_string(),
            script.display().to_string()
        ),
    )
    .unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let toolbox = Toolbox::load(Path::new("tools.toml"), &ToolboxOptions::default()).map_err(|e| e.to_string());
    let toolbox = toolbox.unwrap();
    assert!(toolbox.entries().iter().any(|e| e.name == "up.add"));
}
