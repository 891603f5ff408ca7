//! `"learn": true` on `POST /v1/runs`: the run's report with the narrowest manifest that would have allowed what it
//! was refused, as `wasmagent run --learn` proposes it, cut to this server's maximum manifest.
//!
//! Off unless the operator sets `allow_learn` (a development setting): to propose a mount, learning looks at the
//! host's files for the deepest directory that holds a refused path, which tells the caller which directories exist.

use crate::error::ApiError;
use crate::policy::{self, PolicyError};
use crate::state::AppState;
use serde_json::{Value, json};
use std::path::Path;
use wasmagent::learn::{LearnOptions, propose};
use wasmagent::{CapabilityManifest, EffectiveManifest, EgressConfig, RunReport, ToolRegistry};

/// What learning a grant needs from the server: the operator's egress configuration and the tools.
pub(crate) struct Learning {
    pub(crate) egress: EgressConfig,
    pub(crate) tools: ToolRegistry,
}

/// Limits learning may raise, as the policy names them.
const LIMIT_FIELDS: [&str; 6] =
    ["cpu_ms", "fuel", "memory_limit_bytes", "max_output_bytes", "max_host_calls", "max_http_requests"];

/// `report` as JSON with a `learn` object: the proposed manifest (JSON and TOML), what it adds, what was not
/// proposed and why, and whether the run needed nothing more.
pub(crate) fn learned(
    state: &AppState,
    learning: &Learning,
    given: &CapabilityManifest,
    effective: &EffectiveManifest,
    report: &RunReport,
) -> Result<Value, ApiError> {
    let options = LearnOptions {
        ceilings: state.sandbox.ceilings(),
        egress: &learning.egress,
        tools: &learning.tools,
        base: Path::new("/"),
    };
    let mut proposal = propose(given, effective, report, &options).map_err(|e| ApiError::invalid(e.to_string()))?;
    let ceilings = state.sandbox.ceilings();
    let max = &state.max_manifest;
    let within = |manifest: CapabilityManifest| policy::request_manifest(ceilings, max, manifest).is_ok();
    let mut beyond = Vec::new();
    let mut keep = |list: &mut Vec<String>, given: &[String], single: &dyn Fn(String) -> CapabilityManifest| {
        list.retain(|entry| {
            let kept = given.contains(entry) || within(single(entry.clone()));
            if !kept {
                beyond.push(entry.clone());
            }
            kept
        });
    };
    let m = &mut proposal.manifest;
    keep(&mut m.allowed_read_paths, &given.allowed_read_paths, &|e| CapabilityManifest {
        allowed_read_paths: vec![e],
        ..Default::default()
    });
    keep(&mut m.allowed_write_paths, &given.allowed_write_paths, &|e| CapabilityManifest {
        allowed_write_paths: vec![e],
        ..Default::default()
    });
    keep(&mut m.allowed_hosts, &given.allowed_hosts, &|e| CapabilityManifest {
        allowed_hosts: vec![e],
        ..Default::default()
    });
    keep(&mut m.extra_capabilities, &given.extra_capabilities, &|e| CapabilityManifest {
        extra_capabilities: vec![e],
        ..Default::default()
    });
    let mut refused = std::mem::take(&mut proposal.refused);
    refused.append(&mut proposal.already_allowed);
    refused.extend(beyond.iter().map(|entry| format!("{entry}: above this server's maximum manifest")));
    proposal.added.retain(|line| !beyond.iter().any(|entry| names(line, entry)));
    // A raised limit above the maximum is left to the maximum's value.
    for _ in 0..LIMIT_FIELDS.len() {
        match policy::request_manifest(ceilings, max, proposal.manifest.clone()) {
            Err(PolicyError::Exceeds { field, .. }) if LIMIT_FIELDS.contains(&field.as_str()) => {
                clear_limit(&mut proposal.manifest, &field);
                proposal.added.retain(|line| !names(line, &field));
                refused.push(format!("{field}: raising it would go above this server's maximum manifest"));
            }
            _ => break,
        }
    }
    proposal.refused = refused;
    let toml = proposal.to_toml().map_err(|e| ApiError::invalid(e.to_string()))?;
    let converged = report.denials.is_empty() && report.unlisted.denials == 0 && !report.outcome.is_limit();
    let mut value = serde_json::to_value(report).map_err(|e| ApiError::invalid(e.to_string()))?;
    if let Value::Object(map) = &mut value {
        map.insert(
            "learn".into(),
            json!({
                "manifest": proposal.manifest,
                "toml": toml,
                "added": proposal.added,
                "refused": proposal.refused,
                "converged": converged,
            }),
        );
    }
    Ok(value)
}

/// Whether an explanation line of learn names `entry` (as a whole word: `/data` is not named by `/data2`); a mount
/// written `HOST:GUEST` is named by its host path.
fn names(line: &str, entry: &str) -> bool {
    let entry = entry.split_once(':').filter(|_| entry.starts_with('/')).map_or(entry, |(host, _)| host);
    line.match_indices(entry).any(|(at, _)| {
        let after = line[at + entry.len()..].chars().next();
        let before = line[..at].chars().next_back();
        after.is_none_or(|c| c == ' ' || c == ')') && before.is_none_or(|c| c == ' ' || c == '(')
    })
}

fn clear_limit(manifest: &mut CapabilityManifest, field: &str) {
    match field {
        "cpu_ms" => manifest.cpu_ms = None,
        "fuel" => manifest.fuel = None,
        "memory_limit_bytes" => manifest.memory_limit_bytes = None,
        "max_output_bytes" => manifest.max_output_bytes = None,
        "max_host_calls" => manifest.max_host_calls = None,
        _ => manifest.max_http_requests = None,
    }
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn explanation_lines_are_matched_by_whole_entries() {
        let line = "adds read access to /data2 (fs.read /data2/a was denied)";
        assert!(!names(line, "/data"));
        assert!(names(line, "/data2"));
        assert!(names("adds read access to /srv (seen by the guest as /in) (x)", "/srv:/in"));
        assert!(names("grants tool:t.echo (a call to t.echo was denied)", "tool:t.echo"));
        assert!(names("raises cpu_ms from 1 to 2: ...", "cpu_ms"));
    }
}
