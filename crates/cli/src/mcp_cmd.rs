//! `wasmagent mcp`.

use crate::args::{McpArgs, OperatorArgs};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use wasmagent::{
    CapabilityManifest, EgressConfig, ManifestCeilings, Sandbox, SandboxBuilder, ToolRegistry, default_cache_dir,
    default_max_cache_bytes,
};
use wasmagent_mcp::McpOptions;
use wasmagent_toolbox::{Toolbox, ToolboxOptions};

/// Serves code mode over MCP on standard input and output until the client disconnects. Nothing but the protocol
/// may be written to standard output: messages go to standard error.
pub(crate) fn mcp(args: &McpArgs, no_confine: bool) -> anyhow::Result<u8> {
    let manifest = match &args.manifest {
        Some(path) => CapabilityManifest::from_path(path)?,
        None => CapabilityManifest::default(),
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let browser = crate::browser_cmd::config(args.browser.as_deref(), args.tools.as_deref())?;
    let needs = crate::confine_cmd::Needs {
        manifest: Some((&manifest, &cwd)),
        tools: args.tools.as_deref(),
        read_files: args.operator.egress_config.as_deref().into_iter().collect(),
        browser: browser.as_ref().map(crate::browser_cmd::confinement_paths).transpose()?,
        ..Default::default()
    };
    let confinement = crate::confine_cmd::begin(no_confine, &needs)?;
    let egress = egress_config(&args.operator)?;
    let toolbox = args.tools.as_deref().map(|path| load_tools(path, &egress)).transpose()?;
    let mut tools = toolbox.as_ref().map_or_else(ToolRegistry::new, |t| t.registry().clone());
    if let Some(browser) = browser {
        crate::browser_cmd::register(browser, &egress, &mut tools)?;
    }
    let sandbox = tool_sandbox(tools.clone(), egress)?;
    crate::confine_cmd::seal(confinement, true)?;
    let manifest = sandbox.resolve(&manifest, &cwd)?;
    let options = McpOptions { expose_tools: args.expose_tools };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(wasmagent_mcp::serve_stdio(Arc::new(sandbox), manifest, &tools, options))?;
    drop(toolbox);
    Ok(0)
}

/// The operator's egress configuration from `--egress-config` and `--allow-private`.
/// The sandbox of a long-lived front end (`mcp`, `agent`): the user's compiled-code cache within its cap, a note
/// on standard error when an engine is compiled, `tools` and the operator's egress configuration.
pub(crate) fn tool_sandbox(tools: ToolRegistry, egress: EgressConfig) -> anyhow::Result<Sandbox> {
    Ok(tool_sandbox_builder(tools, egress)?.build()?)
}

/// [`tool_sandbox`]'s settings, for a front end that adds to them.
pub(crate) fn tool_sandbox_builder(tools: ToolRegistry, egress: EgressConfig) -> anyhow::Result<SandboxBuilder> {
    Ok(Sandbox::builder()
        .cache_dir(default_cache_dir())
        .max_cache_bytes(default_max_cache_bytes()?)
        .on_compile(|| {
            eprintln!("wasmagent: compiling an engine (once per machine; later runs load it from the cache)…")
        })
        .tools(tools)
        .egress(egress))
}

pub(crate) fn egress_config(operator: &OperatorArgs) -> anyhow::Result<EgressConfig> {
    Ok(EgressConfig::load(operator.egress_config.as_deref(), &operator.allow_private)?)
}

/// Loads a tools file with the default ceilings and the machine's code cache.
pub(crate) fn load_tools(path: &Path, egress: &EgressConfig) -> anyhow::Result<Toolbox> {
    let options = ToolboxOptions {
        ceilings: ManifestCeilings::default(),
        egress: egress.clone(),
        cache_dir: default_cache_dir(),
    };
    Ok(Toolbox::load(path, &options)?)
}
