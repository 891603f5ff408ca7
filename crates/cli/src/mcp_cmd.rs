//! `wasmagent mcp`.

use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use wasmagent::{CapabilityManifest, Sandbox, ToolRegistry, default_cache_dir};

/// Serves code mode over MCP on standard input and output until the client disconnects. Nothing but the protocol
/// may be written to standard output: messages go to standard error.
pub(crate) fn mcp(manifest: Option<&Path>) -> anyhow::Result<u8> {
    let manifest = match manifest {
        Some(path) => CapabilityManifest::from_path(path)?,
        None => CapabilityManifest::default(),
    };
    let tools = ToolRegistry::new();
    let sandbox = Sandbox::builder()
        .cache_dir(default_cache_dir())
        .on_compile(|| {
            eprintln!("wasmagent: compiling an engine (once per machine; later runs load it from the cache)…")
        })
        .tools(tools.clone())
        .build()?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let manifest = sandbox.resolve(&manifest, &cwd)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(wasmagent_mcp::serve_stdio(Arc::new(sandbox), manifest, &tools))?;
    Ok(0)
}
