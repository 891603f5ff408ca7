//! `wasmagent mcp`.

use crate::args::{McpArgs, OperatorArgs};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use wasmagent::signing::keys::SecretKey;
use wasmagent::signing::record::AuditLog;
use wasmagent::{
    CapabilityManifest, EgressConfig, ManifestCeilings, Sandbox, SandboxBuilder, ToolRegistry, default_cache_dir,
    default_max_cache_bytes,
};
use wasmagent_mcp::{CodeModeServer, Escalation, McpOptions};
use wasmagent_toolbox::{Toolbox, ToolboxOptions};

/// Serves code mode over MCP on standard input and output until the client disconnects. Nothing but the protocol
/// may be written to standard output: messages go to standard error.
pub(crate) fn mcp(args: &McpArgs, no_confine: bool) -> anyhow::Result<u8> {
    let manifest = match &args.manifest {
        Some(path) => CapabilityManifest::from_path(path)?,
        None => CapabilityManifest::default(),
    };
    let maximum = args.max_manifest.as_deref().map(CapabilityManifest::from_path).transpose()?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let browser = crate::browser_cmd::config(args.browser.as_deref(), args.tools.as_deref())?;
    let needs = crate::confine_cmd::Needs {
        // The most any run may reach: the maximum manifest, when approvals may widen the manifest up to it.
        manifest: Some((maximum.as_ref().unwrap_or(&manifest), &cwd)),
        tools: args.tools.as_deref(),
        read_files: [&args.record_key, &args.operator.egress_config]
            .into_iter()
            .flatten()
            .map(|p| p.as_path())
            .collect(),
        audit_log: args.record.as_deref().filter(|_| args.record_key.is_some()),
        browser: browser.as_ref().map(crate::browser_cmd::confinement_paths).transpose()?,
        ..Default::default()
    };
    let python_engine = args.python.load()?;
    let confinement = crate::confine_cmd::begin(no_confine, &needs)?;
    let egress = egress_config(&args.operator)?;
    let toolbox = args.tools.as_deref().map(|path| load_tools(path, &egress)).transpose()?;
    let mut tools = toolbox.as_ref().map_or_else(ToolRegistry::new, |t| t.registry().clone());
    if let Some(browser) = browser {
        crate::browser_cmd::register(browser, &egress, &mut tools)?;
    }
    let audit_log = match (&args.record, &args.record_key) {
        (Some(record), Some(key)) => Some(Arc::new(AuditLog::new(record, SecretKey::from_file(key)?))),
        _ => None,
    };
    let mut builder = tool_sandbox_builder(tools.clone(), egress.clone())?;
    if let Some(log) = &audit_log {
        builder = builder.shared_audit_log(log.clone());
    }
    if let Some(engine) = python_engine {
        builder = builder.python_engine(engine);
    }
    let sandbox = builder.build()?;
    crate::confine_cmd::seal(confinement, true)?;
    let effective = sandbox.resolve(&manifest, &cwd)?;
    let options = McpOptions { expose_tools: args.expose_tools };
    let mut server = CodeModeServer::new(Arc::new(sandbox), effective.clone(), &tools, options);
    if let Some(maximum) = maximum {
        let maximum = maximum.resolve(&cwd, &ManifestCeilings::default()).context("--max-manifest")?;
        let mut escalation = Escalation::new(manifest, &effective, maximum, egress, cwd)
            .map_err(|e| anyhow::anyhow!("--max-manifest: {e}"))?;
        if let Some(log) = audit_log {
            escalation = escalation.audit_log(log);
        }
        server = server.with_escalation(Arc::new(escalation));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(wasmagent_mcp::serve_server_stdio(server))?;
    drop(toolbox);
    Ok(0)
}

/// The settings of a long-lived front end's sandbox (`mcp`, `agent`): the user's compiled-code cache within its
/// cap, a note on standard error when an engine is compiled, `tools` and the operator's egress configuration.
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

/// The operator's egress configuration from `--egress-config` and `--allow-private`.
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
