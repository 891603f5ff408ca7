//! WebAssembly micro-tools: a WASI module or component that reads its JSON arguments on standard input and writes
//! its JSON result on standard output, run in a fresh sandbox under the tool's own manifest on every call.

use crate::ToolboxError;
use crate::file::{DEFAULT_TIMEOUT_MS, WasmToolSpec};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use wasmagent::bounds::cut;
use wasmagent::{EffectiveManifest, ManifestCeilings, Outcome, RunRequest, Sandbox, Tool, ToolResult};

/// Longest part of a failing tool's standard error quoted back to the caller.
const STDERR_EXCERPT_CHARS: usize = 500;
/// Longest part of a failing tool's error message (a trap, an exception) quoted back to the caller.
const ERROR_EXCERPT_BYTES: usize = 4096;
/// Denials of a failing tool quoted back to the caller; the rest are counted.
const DENIALS_QUOTED: usize = 3;

/// A loaded micro-tool: its bytes, digest and resolved manifest.
pub(crate) struct WasmTool {
    name: String,
    request: RunRequest,
    manifest: EffectiveManifest,
    sandbox: Arc<Sandbox>,
}

impl WasmTool {
    /// Reads the module (checking its pin) and resolves the tool's manifest against `ceilings`.
    pub(crate) fn load(
        spec: &WasmToolSpec,
        module: &Path,
        base: &Path,
        ceilings: &ManifestCeilings,
        sandbox: Arc<Sandbox>,
    ) -> Result<(Self, String), ToolboxError> {
        let at = |e: String| ToolboxError::new(format!("[[wasm]] {:?}: {e}", spec.name));
        let bytes = std::fs::read(module).map_err(|e| at(format!("cannot read {}: {e}", module.display())))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if let Some(expected) = spec.sha256.as_deref().filter(|expected| *expected != digest) {
            return Err(at(format!("{} is {digest}, not the pinned {expected}", module.display())));
        }
        let mut manifest = spec.manifest.clone();
        if manifest.cpu_ms.is_none() {
            manifest.cpu_ms = Some(spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        }
        let manifest = manifest.resolve(base, ceilings).map_err(|e| at(format!("its manifest is refused: {e}")))?;
        let file_name = module.file_name().map_or_else(|| spec.name.clone(), |n| n.to_string_lossy().into_owned());
        let request = RunRequest::wasm(file_name, bytes).with_args(spec.args.clone());
        Ok((WasmTool { name: spec.name.clone(), request, manifest, sandbox }, digest))
    }

    /// The tool as the registry holds it.
    pub(crate) fn into_tool(self, description: String, schema: Value) -> Tool {
        let name = self.name.clone();
        Tool::new(name, description, schema, move |args| self.call(&args))
    }

    fn call(&self, args: &Value) -> ToolResult {
        let stdin = serde_json::to_vec(args).map_err(|e| format!("cannot encode the arguments: {e}"))?;
        let request = self.request.clone().with_stdin(stdin);
        let report =
            self.sandbox.run(&self.manifest, &request).map_err(|e| format!("{} did not run: {e}", self.name))?;
        let finished = match report.outcome {
            Outcome::Ok => true,
            Outcome::Exit => report.exit_code == Some(0),
            _ => false,
        };
        if !finished {
            let mut message = format!("{} ended with outcome {}", self.name, report.outcome.as_str());
            if let Some(code) = report.exit_code.filter(|_| report.outcome == Outcome::Exit) {
                message.push_str(&format!(" (exit code {code})"));
            }
            if let Some(error) = &report.error {
                message.push_str(&format!(": {}", cut(error.message.trim_end(), ERROR_EXCERPT_BYTES)));
            }
            for denial in report.denials.iter().take(DENIALS_QUOTED) {
                message.push_str(&format!("; denied {} {}: {}", denial.capability, denial.target, denial.reason));
            }
            let unquoted = (report.denials.len() - report.denials.len().min(DENIALS_QUOTED)) as u64;
            let more = unquoted + report.unlisted.denials;
            if more > 0 {
                message.push_str(&format!("; {more} more denials"));
            }
            let stderr: String = report.stderr.trim().chars().take(STDERR_EXCERPT_CHARS).collect();
            if !stderr.is_empty() {
                message.push_str(&format!("; stderr: {stderr}"));
            }
            return Err(message);
        }
        let output = report.stdout.trim();
        if output.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(output).map_err(|e| {
            let excerpt: String = output.chars().take(STDERR_EXCERPT_CHARS).collect();
            format!("{} wrote a result that is not JSON ({e}): {excerpt}", self.name)
        })
    }
}
