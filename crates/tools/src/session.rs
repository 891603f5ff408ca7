//! One run's use of the registry: every call checked against the grants, the size caps and `max_host_calls`, and
//! recorded for the run report. Kernels own the guest ABI (how bytes cross the boundary); this owns what a call
//! means, so that every kernel grants, refuses, counts and records tool calls the same way.

use crate::ToolRegistry;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;
use wasmagent_kernel::{Denial, ToolCall};
use wasmagent_manifest::EffectiveManifest;

/// Longest tool name accepted from a guest.
pub const MAX_TOOL_NAME_BYTES: usize = 256;
/// Largest tool arguments accepted from a guest (JSON).
pub const MAX_TOOL_ARGS_BYTES: usize = 1024 * 1024;
/// Largest tool result passed back to a guest (JSON).
pub const MAX_TOOL_RESULT_BYTES: usize = 1024 * 1024;

/// The tool calls of one run.
pub struct ToolSession {
    tools: Arc<ToolRegistry>,
    granted: Vec<String>,
    max_host_calls: u64,
    host_calls: u64,
    calls: Vec<ToolCall>,
    denials: Vec<Denial>,
}

/// What a run's tool calls left for its report.
#[derive(Debug, Default)]
pub struct ToolRecords {
    /// Every call, in order, up to the first one refused past `max_host_calls`.
    pub calls: Vec<ToolCall>,
    /// Calls counted against `max_host_calls`, refused ones included.
    pub host_calls: u64,
    /// One denial per distinct refusal.
    pub denials: Vec<Denial>,
    /// Calls counted but not listed (past the report bound).
    pub unlisted_calls: u64,
    /// Denials counted but not listed (past the report bound).
    pub unlisted_denials: u64,
}

impl ToolSession {
    /// A session for one run held to `manifest`.
    pub fn new(tools: Arc<ToolRegistry>, manifest: &EffectiveManifest) -> Self {
        ToolSession {
            granted: tools.granted_names(manifest),
            tools,
            max_host_calls: manifest.max_host_calls(),
            host_calls: 0,
            calls: Vec::new(),
            denials: Vec::new(),
        }
    }

    /// Names of the tools this run may call, sorted.
    pub fn granted(&self) -> &[String] {
        &self.granted
    }

    /// Runs one call. `name` and `args` are what the guest sent, or why the kernel could not read them (a bad
    /// pointer, a size over the cap). Returns the result as JSON bytes, or the error message the guest receives.
    pub fn call(&mut self, name: Result<String, String>, args: Result<Vec<u8>, String>) -> Result<Vec<u8>, String> {
        let started = Instant::now();
        let args_digest = match &args {
            Ok(bytes) => format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
            Err(_) => String::new(),
        };
        let name_text = name.clone().unwrap_or_else(|e| e);
        self.host_calls += 1;
        if let Some((capability, reason)) = self.refusal(&name) {
            // Past `max_host_calls`, only the first refused call is recorded; the rest are counted in `host_calls`,
            // so a guest looping on refused calls cannot grow the report (or host memory) until `cpu_ms`.
            if self.host_calls > self.max_host_calls.saturating_add(1) {
                return Err(reason);
            }
            // One denial per distinct refusal, so a loop of refused calls cannot flood the report.
            if !self.denials.iter().any(|d| d.capability == capability && d.target == name_text) {
                self.denials.push(Denial {
                    capability: capability.into(),
                    target: name_text.clone(),
                    reason: reason.clone(),
                });
            }
            self.record(name_text, args_digest, "denied", started, Some(reason.clone()));
            return Err(reason);
        }
        let outcome = args
            .and_then(|bytes| {
                if bytes.len() > MAX_TOOL_ARGS_BYTES {
                    return Err(format!(
                        "the tool arguments are {} bytes; the largest accepted is {MAX_TOOL_ARGS_BYTES}",
                        bytes.len()
                    ));
                }
                serde_json::from_slice(&bytes).map_err(|e| format!("the arguments are not JSON: {e}"))
            })
            .and_then(|args| match self.tools.get(&name_text) {
                Some(tool) => tool.call(args),
                None => Err(format!("there is no tool named {name_text}")),
            })
            .and_then(|value| {
                let bytes = serde_json::to_vec(&value).map_err(|e| format!("the result is not JSON: {e}"))?;
                if bytes.len() > MAX_TOOL_RESULT_BYTES {
                    Err(format!("the result is {} bytes; the largest accepted is {MAX_TOOL_RESULT_BYTES}", bytes.len()))
                } else {
                    Ok(bytes)
                }
            });
        match &outcome {
            Ok(_) => self.record(name_text, args_digest, "ok", started, None),
            Err(message) => self.record(name_text, args_digest, "error", started, Some(message.clone())),
        }
        outcome
    }

    /// Why a call to `name` is refused before the tool runs, if it is.
    fn refusal(&self, name: &Result<String, String>) -> Option<(&'static str, String)> {
        if self.host_calls > self.max_host_calls {
            return Some((
                "host_call",
                format!(
                    "max_host_calls ({}) reached; the manifest allows no more host calls in this run",
                    self.max_host_calls
                ),
            ));
        }
        match name {
            Err(reason) => Some(("tool", reason.clone())),
            Ok(n) if n.len() > MAX_TOOL_NAME_BYTES => Some((
                "tool",
                format!("the tool name is {} bytes; the longest accepted is {MAX_TOOL_NAME_BYTES}", n.len()),
            )),
            Ok(n) if !self.granted.iter().any(|g| g == n) => Some((
                "tool",
                if self.tools.get(n).is_some() {
                    format!("tool {n} is not granted: add `tool:{n}` to extra_capabilities")
                } else {
                    format!("there is no tool named {n}")
                },
            )),
            Ok(_) => None,
        }
    }

    fn record(&mut self, name: String, args_digest: String, outcome: &str, started: Instant, error: Option<String>) {
        let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0;
        self.calls.push(ToolCall { name, args_digest, outcome: outcome.into(), duration_ms, error });
    }

    /// The calls, the host-call count and the denials, for the report.
    pub fn into_records(self) -> ToolRecords {
        ToolRecords { calls: self.calls, host_calls: self.host_calls, denials: self.denials, ..ToolRecords::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tool;
    use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};

    fn session(grants: &[&str], max_host_calls: u64) -> ToolSession {
        let mut tools = ToolRegistry::new();
        tools.register(Tool::new("echo", "", serde_json::Value::Null, Ok)).unwrap();
        tools.register(Tool::new("secret", "", serde_json::Value::Null, Ok)).unwrap();
        let manifest = CapabilityManifest {
            extra_capabilities: grants.iter().map(|g| g.to_string()).collect(),
            max_host_calls: Some(max_host_calls),
            ..Default::default()
        }
        .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
        .unwrap();
        ToolSession::new(Arc::new(tools), &manifest)
    }

    #[test]
    fn granted_calls_run_and_others_are_denied_once_each() {
        let mut session = session(&["tool:echo"], 10);
        assert_eq!(session.call(Ok("echo".into()), Ok(b"{\"a\":1}".to_vec())).unwrap(), b"{\"a\":1}");
        for _ in 0..3 {
            let refused = session.call(Ok("secret".into()), Ok(b"{}".to_vec())).unwrap_err();
            assert!(refused.contains("not granted"), "{refused}");
        }
        assert!(session.call(Ok("echo".into()), Ok(b"not json".to_vec())).unwrap_err().contains("not JSON"));
        let records = session.into_records();
        assert_eq!(records.host_calls, 5);
        let outcomes: Vec<_> = records.calls.iter().map(|c| c.outcome.as_str()).collect();
        assert_eq!(outcomes, ["ok", "denied", "denied", "denied", "error"]);
        assert_eq!(records.denials.len(), 1);
        assert_eq!(records.denials[0].target, "secret");
    }

    #[test]
    fn max_host_calls_is_enforced() {
        let mut session = session(&["tool:echo"], 2);
        assert!(session.call(Ok("echo".into()), Ok(b"1".to_vec())).is_ok());
        assert!(session.call(Ok("echo".into()), Ok(b"2".to_vec())).is_ok());
        let refused = session.call(Ok("echo".into()), Ok(b"3".to_vec())).unwrap_err();
        assert!(refused.contains("max_host_calls (2)"), "{refused}");
        for _ in 0..100 {
            session.call(Ok("echo".into()), Ok(b"4".to_vec())).unwrap_err();
        }
        let records = session.into_records();
        assert_eq!(records.denials[0].capability, "host_call");
        assert_eq!(records.host_calls, 103, "every attempt is counted");
        assert_eq!(records.calls.len(), 3, "only the first refused call past the cap is recorded");
    }
}
