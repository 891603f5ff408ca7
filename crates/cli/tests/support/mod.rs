//! What several of the cli crate's integration tests need: the Python with the official MCP SDK, and the upstream
//! MCP test server of the toolbox crate.

#![allow(dead_code, reason = "each test binary uses the helpers it needs")]

use std::path::{Path, PathBuf};

/// The Python with the MCP SDK: `$WASMAGENT_MCP_PYTHON`, else the virtual environment `.ci/run` creates.
pub(crate) fn sdk_python() -> PathBuf {
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

/// The toolbox crate's upstream MCP server (official Python SDK; `UPSTREAM_POISONED=1` adds tools vetting catches).
pub(crate) fn upstream_server() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../toolbox/tests/upstream_server.py")
}
