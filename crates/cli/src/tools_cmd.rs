//! `wasmagent tools list` and `wasmagent tools check`.

use crate::args::OperatorArgs;
use crate::mcp_cmd::{egress_config, load_tools};
use anyhow::Context;
use std::path::Path;
use wasmagent::{CapabilityManifest, ManifestCeilings, is_granted};
use wasmagent_toolbox::ToolsFile;
use wasmagent_toolbox::vet::Decision;

/// Prints what the file declares, without starting anything: one entry per tool and per upstream server.
pub(crate) fn list(path: &Path, manifest: Option<&Path>) -> anyhow::Result<u8> {
    let file = ToolsFile::from_path(path)?;
    let manifest = match manifest {
        Some(manifest_path) => {
            let raw = CapabilityManifest::from_path(manifest_path)?;
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            Some(raw.resolve(&cwd, &ManifestCeilings::default())?)
        }
        None => None,
    };
    let grant = |name: &str| match &manifest {
        Some(m) if is_granted(m, name) => "  (granted)",
        Some(_) => "  (not granted)",
        None => "",
    };
    for tool in &file.wasm {
        println!("{}  wasm  {}{}", tool.name, file.base.join(&tool.module).display(), grant(&tool.name));
        print_description(&tool.description);
    }
    for tool in &file.http {
        println!("{}  http  {} {}{}", tool.name, tool.method.to_ascii_uppercase(), tool.url, grant(&tool.name));
        print_description(&tool.description);
    }
    for upstream in &file.mcp {
        let command = upstream.command.iter().chain(&upstream.args).cloned().collect::<Vec<_>>().join(" ");
        let source = if command.is_empty() { upstream.url.clone().unwrap_or_default() } else { command };
        // Whether the namespace as a whole is granted: a grant of one upstream tool is not known before it starts.
        let namespace_grant = grant(&format!("{}.{}", upstream.namespace, "__any_tool__"));
        println!("{}.*  mcp  {source}{namespace_grant}", upstream.namespace);
        println!("    its tools are listed when the server starts: `wasmagent tools check` shows them");
    }
    if file.wasm.is_empty() && file.http.is_empty() && file.mcp.is_empty() {
        eprintln!("wasmagent: {} declares no tools", path.display());
    }
    Ok(0)
}

fn print_description(description: &str) {
    if !description.is_empty() {
        println!("    {description}");
    }
}

/// Loads everything and prints each tool with its digest and what vetting found in it; exit 1 when an upstream tool
/// is disabled (changed since its pin, or by the `[vetting]` policy).
pub(crate) fn check(path: &Path, operator: &OperatorArgs) -> anyhow::Result<u8> {
    let egress = egress_config(operator)?;
    let toolbox = load_tools(path, &egress)?;
    let entries = toolbox.entries();
    let (mut disabled, mut held) = (0, 0);
    for entry in &entries {
        println!("{}  {}  {}", entry.name, entry.kind.as_str(), entry.source);
        if let Some(digest) = &entry.digest {
            println!("    digest {digest}");
        }
        for finding in &entry.findings {
            println!("    vetting: {finding}");
        }
        match entry.decision {
            Some(Decision::Approve) if entry.disabled.is_none() => {
                println!("    NEEDS APPROVAL: every call waits for a person ([vetting] in the tools file)");
                held += 1;
            }
            Some(Decision::Allow) if !entry.findings.is_empty() => println!("    allowed by [vetting]"),
            _ => {}
        }
        if let Some(reason) = &entry.disabled {
            println!("    DISABLED: {reason}");
            disabled += 1;
        }
    }
    eprintln!(
        "wasmagent: {}: {} tools loaded, {disabled} disabled, {held} needing approval",
        path.display(),
        entries.len()
    );
    Ok(if disabled == 0 { 0 } else { 1 })
}
