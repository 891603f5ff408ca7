//! `cargo xtask owasp [--check]`: writes `docs/security/owasp-agentic.md`, the OWASP Top 10 for Agentic
//! Applications (2026) mapped to what wasmagent does about each risk, from the test suite. Each risk names its
//! mechanism and what is not covered ([`RISKS`], the one hand-written part), the manifest fields that address it (each
//! must be proven by at least one test of the enforcement matrix: a `/// Enforces:` or `/// Refuses:` line), and the
//! tests tagged `/// OWASP: ASI01, ...` right above them (in `crates/*/tests` or in unit tests under `crates/*/src`).
//! A risk without a proving test, a field no test proves or a tag naming an unknown risk fails the task; `--check`
//! also fails when the committed file differs.

use anyhow::bail;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

struct Risk {
    id: &'static str,
    name: &'static str,
    mechanism: &'static str,
    fields: &'static [&'static str],
    not_covered: &'static str,
}

const RISKS: &[Risk] = &[
    Risk {
        id: "ASI01",
        name: "Agent Goal Hijack",
        mechanism: "Whatever the model is talked into, code runs under the capability manifest: nothing is allowed that it \
                    does not grant (hosts, paths, tools, environment). The agent loop hands tool and page output back \
                    as untrusted data in a delimited block with a per-run nonce it cannot close, cut to a stated size.",
        fields: &["allowed_hosts", "allowed_read_paths", "allowed_write_paths", "extra_capabilities"],
        not_covered: "Detecting the injection itself: a hijacked agent can still do anything its grants allow, with the \
                      hosts, files and tools it was given.",
    },
    Risk {
        id: "ASI02",
        name: "Tool Misuse and Exploitation",
        mechanism: "Tools are granted per run by name (`extra_capabilities`, `tool:NAME`), every call is counted against \
                    `max_host_calls` and recorded in the run report; HTTP tools and guest requests pass the one egress \
                    path (allow-list, address floor, caps); upstream MCP tools are namespaced and disabled when their \
                    description or schema changes after approval; tool mode can wait for a human approval.",
        fields: &["extra_capabilities", "max_host_calls", "max_http_requests", "max_http_response_bytes"],
        not_covered: "Semantic misuse of a granted tool within its limits (a granted `send_email` can send a bad email); \
                      what an upstream MCP server does with the arguments it receives.",
    },
    Risk {
        id: "ASI03",
        name: "Identity and Privilege Abuse",
        mechanism: "Every HTTP request is authenticated (JWT or API key, per-route scopes) and may only narrow the \
                    server's maximum manifest; secrets stay host-side, bound to hosts by the operator and never in a \
                    guest's environment (which starts empty); the host process runs with `no_new_privs`.",
        fields: &["env"],
        not_covered: "Per-end-user delegation: runs act with the operator's credentials for upstream tools, not the \
                      caller's; no OAuth token exchange.",
    },
    Risk {
        id: "ASI04",
        name: "Agentic Supply Chain Vulnerabilities",
        mechanism: "Modules can be required to carry an Ed25519 signature from `trusted_keys` (`require_signature`, \
                    checked before compilation); tools.toml pins modules by `sha256` and upstream MCP tools by digest; \
                    the runtime is pinned to a patched wasmtime and CI checks advisories and licences offline \
                    (`.ci/deny`).",
        fields: &["trusted_keys", "require_signature"],
        not_covered: "The code of upstream MCP servers and of the model provider; packages a guest imports are whatever \
                      its code contains (no package manager runs in a guest).",
    },
    Risk {
        id: "ASI05",
        name: "Unexpected Code Execution (RCE)",
        mechanism: "Two walls. Agent-written code runs only inside a wasmtime sandbox held to the manifest (mounts, \
                    time, memory, output, fuel); the host process itself is confined by the kernel (Landlock, a seccomp \
                    allow-list refusing execve and raw sockets, `no_new_privs`, limits) so that an escape from the first \
                    wall meets the second. WASI conformance is checked against the public wasi-testsuite.",
        fields: &["allowed_read_paths", "allowed_write_paths", "cpu_ms", "memory_limit_bytes", "fuel"],
        not_covered: "Kernel bugs (both walls rely on Linux); with the browser tools Chromium runs outside the seccomp \
                      filter (Landlock and `no_new_privs` still hold); non-Linux hosts have the first wall only.",
    },
    Risk {
        id: "ASI06",
        name: "Memory and Context Poisoning",
        mechanism: "Each run starts from a fresh sandbox; a session keeps state only within its bounds (idle time, age, \
                    calls, scratch bytes) and is visible only to its owner; output and reports are bounded, and \
                    untrusted output goes back to the model delimited and cut.",
        fields: &["max_output_bytes", "report_bounds", "session_max_ms", "session_scratch_bytes"],
        not_covered: "What the model does with content it fetched from a host it was allowed to reach; no long-term \
                      memory store is kept or validated by wasmagent.",
    },
    Risk {
        id: "ASI07",
        name: "Insecure Inter-Agent Communication",
        mechanism: "Agents and clients reach wasmagent over authenticated HTTP (`/v1/runs`, `/v1/agent-runs`, `/mcp` \
                    behind the same authentication); webhooks are HMAC-signed with a timestamp and verified; remote \
                    runs go through the same server-side checks.",
        fields: &[],
        not_covered: "TLS termination (put a reverse proxy in front); agent-to-agent protocols other than MCP and HTTP.",
    },
    Risk {
        id: "ASI08",
        name: "Cascading Failures",
        mechanism: "Every limit is finite: CPU time, memory, output, host calls, HTTP requests and time-outs per run; the \
                    server bounds concurrency with a queue that answers 503 when full and rate-limits per subject (429); \
                    the agent loop stops at its step, token and time budgets.",
        fields: &["cpu_ms", "memory_limit_bytes", "http_timeout_ms", "max_sessions"],
        not_covered: "Failures of external services a granted tool calls, beyond the per-call time-outs; load shedding \
                      across a cluster beyond each node's own bounds.",
    },
    Risk {
        id: "ASI09",
        name: "Human-Agent Trust Exploitation",
        mechanism: "Tool mode can pause for a human approval (over a channel, or over HTTP for agent runs); every run \
                    reports each denial, tool call and HTTP request; runs and agent steps can be appended to a signed, \
                    hash-chained audit log that `wasmagent audit verify` checks.",
        fields: &[],
        not_covered: "Whether the human reads what they approve: wasmagent shows what was asked, not whether it is wise.",
    },
    Risk {
        id: "ASI10",
        name: "Rogue Agents",
        mechanism: "Deny by default and finite budgets bound what any agent can do; the audit log records it; the host \
                    process is confined by the kernel, so a compromised run cannot take over the host or persist \
                    outside the cache, the audit log and write mounts.",
        fields: &["max_host_calls", "cpu_ms"],
        not_covered: "Behavioural detection of an agent pursuing the wrong goal within its grants.",
    },
];

#[derive(Default)]
struct Proofs {
    /// Tests proving each manifest field, any kernel.
    fields: BTreeMap<String, BTreeSet<String>>,
    /// Tests tagged with each risk.
    risks: BTreeMap<String, BTreeSet<String>>,
}

pub(crate) fn owasp(root: &Path, check: bool) -> anyhow::Result<()> {
    let proofs = collect(root)?;
    let mut out = String::from(
        "# OWASP Top 10 for Agentic Applications: what wasmagent does\n\nGenerated by `cargo xtask owasp` from the test \
         suite and `xtask/src/owasp.rs`; do not edit. For each risk: the mechanism, the manifest fields that address it \
         (rows of the [enforcement matrix](../enforcement-matrix.md), each proven there by tests), the tests tagged \
         `/// OWASP: ASInn` that prove the rest, and what is not covered. CI regenerates this file and fails if it \
         differs, if a field loses its last test or if a risk has no test. See also [SECURITY.md](../../SECURITY.md).\n\n",
    );
    for risk in RISKS {
        out.push_str(&format!("## {} {}\n\n{}\n\n", risk.id, risk.name, risk.mechanism));
        if !risk.fields.is_empty() {
            let mut cells = Vec::new();
            for field in risk.fields {
                // The count is checked, not printed, so that adding a test elsewhere does not change this file.
                if proofs.fields.get(*field).is_none_or(BTreeSet::is_empty) {
                    bail!("{}: no test proves manifest field `{field}` (an Enforces: or Refuses: line)", risk.id);
                }
                cells.push(format!("`{field}`"));
            }
            out.push_str(&format!("- Manifest fields: {}\n", cells.join(", ")));
        }
        match proofs.risks.get(risk.id) {
            Some(tests) => {
                out.push_str("- Tests:\n");
                for test in tests {
                    out.push_str(&format!("  - {test}\n"));
                }
            }
            None => bail!("{}: no test is tagged `/// OWASP: {}`", risk.id, risk.id),
        }
        out.push_str(&format!("- Not covered: {}\n\n", risk.not_covered));
    }

    let path = root.join("docs/security/owasp-agentic.md");
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != out {
            bail!("docs/security/owasp-agentic.md is out of date: run `cargo xtask owasp` and commit it");
        }
        println!("docs/security/owasp-agentic.md is up to date");
    } else {
        std::fs::create_dir_all(path.parent().unwrap_or(root))?;
        std::fs::write(&path, out)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn collect(root: &Path) -> anyhow::Result<Proofs> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("crates"))? {
        let dir = entry?.path();
        for sub in ["tests", "src"] {
            if dir.join(sub).is_dir() {
                rust_files(&dir.join(sub), &mut files)?;
            }
        }
    }
    files.sort();
    let mut proofs = Proofs::default();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let relative = path.strip_prefix(root)?.display().to_string();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            let (list, is_risk) = if let Some(list) = line.strip_prefix("/// OWASP:") {
                (list, true)
            } else if let Some(list) = line.strip_prefix("/// Enforces:").or_else(|| line.strip_prefix("/// Refuses:"))
            {
                (list, false)
            } else {
                continue;
            };
            let Some(name) = lines[i + 1..]
                .iter()
                .take(4)
                .find_map(|l| l.trim().split("fn ").nth(1).and_then(|r| r.split('(').next()))
            else {
                bail!("{relative}:{}: an annotation must sit above a test function", i + 1);
            };
            let test = format!("`{name}` ({relative})");
            for item in list.split(',').map(str::trim) {
                if is_risk {
                    if !RISKS.iter().any(|r| r.id == item) {
                        bail!("{relative}:{}: unknown OWASP risk {item:?}", i + 1);
                    }
                    proofs.risks.entry(item.to_owned()).or_default().insert(test.clone());
                } else if let Some((_, field)) = item.split_once('.') {
                    proofs.fields.entry(field.to_owned()).or_default().insert(test.clone());
                }
            }
        }
    }
    Ok(proofs)
}

/// Every `.rs` file under `dir`, subdirectories included.
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}
