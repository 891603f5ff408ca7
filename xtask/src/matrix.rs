//! `cargo xtask matrix [--check]`: writes `docs/enforcement-matrix.md`, kernel × manifest field, from the test
//! suite. A test proves a cell by a doc line right above `#[test]`: `/// Enforces: KERNEL.FIELD, ...` (the test
//! shows the kernel holding a guest to that field) or `/// Refuses: KERNEL.FIELD, ...` (the kernel refuses the field
//! at configuration time). Cells where a field cannot apply say why, in `NOT_APPLICABLE` below; any other cell
//! without a test is printed as **not covered**. `--check` fails when the committed file differs.

use anyhow::bail;
use std::collections::BTreeMap;
use std::path::Path;

const KERNELS: &[&str] = &["wasi", "js", "python"];

const FIELDS: &[&str] = &[
    "allowed_hosts",
    "allowed_read_paths",
    "allowed_write_paths",
    "env",
    "cpu_ms",
    "fuel",
    "memory_limit_bytes",
    "max_output_bytes",
    "max_host_calls",
    "max_http_requests",
    "max_http_request_bytes",
    "max_http_response_bytes",
    "http_timeout_ms",
    "max_artifact_bytes",
    "extra_capabilities",
    "trusted_keys",
    "require_signature",
    // Not a manifest field: the fixed bounds on what one run can make the host hold (SECURITY.md, "Bounds of one
    // run"), proven per kernel like the fields.
    "report_bounds",
    // Not manifest fields either: the operator's session limits (`SessionLimits`, README "Sessions").
    "session_idle_ms",
    "session_max_ms",
    "session_max_calls",
    "session_scratch_bytes",
    "max_sessions_per_subject",
    "max_sessions",
    // Not a manifest field: every request a page opened by the browser tools makes, held to `allowed_hosts`, the
    // address floor and the operator's exceptions (README, "Browser tools").
    "browser",
];

/// Why no session limit applies to WebAssembly tools.
const NO_SESSIONS: &str = "WebAssembly tools always run in a fresh sandbox: there are no wasi sessions";

/// Cells where the field has nothing to act on, and why.
const NOT_APPLICABLE: &[(&str, &str, &str)] = &[
    ("wasi", "max_host_calls", "WebAssembly tools get no host-tool imports, so they make no host calls"),
    ("wasi", "extra_capabilities", "WebAssembly tools get no host-tool imports, so no grant can apply"),
    (
        "wasi",
        "max_artifact_bytes",
        "WebAssembly tools get no display import, so they make no artifacts (files they write go to write mounts)",
    ),
    ("wasi", "session_idle_ms", NO_SESSIONS),
    ("wasi", "session_max_ms", NO_SESSIONS),
    ("wasi", "session_max_calls", NO_SESSIONS),
    ("wasi", "session_scratch_bytes", NO_SESSIONS),
    ("wasi", "max_sessions_per_subject", NO_SESSIONS),
    ("wasi", "max_sessions", NO_SESSIONS),
    ("wasi", "browser", "WebAssembly tools get no host-tool imports, so they cannot call the browser tools"),
    ("js", "trusted_keys", "scripts carry no signature; only WebAssembly code is verified"),
    ("python", "trusted_keys", "scripts carry no signature; only WebAssembly code is verified"),
];

#[derive(Default)]
struct Cell {
    enforced: Vec<String>,
    refused: Vec<String>,
}

pub(crate) fn matrix(root: &Path, check: bool) -> anyhow::Result<()> {
    let mut cells: BTreeMap<(String, String), Cell> = BTreeMap::new();
    let crates = root.join("crates");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&crates)? {
        let tests = entry?.path().join("tests");
        if tests.is_dir() {
            rust_files(&tests, &mut files)?;
        }
    }
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let relative = path.strip_prefix(root)?.display().to_string();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            let (kind, list) = if let Some(list) = line.strip_prefix("/// Enforces:") {
                ("enforces", list)
            } else if let Some(list) = line.strip_prefix("/// Refuses:") {
                ("refuses", list)
            } else {
                continue;
            };
            let Some(name) = lines[i + 1..]
                .iter()
                .take(4)
                .find_map(|l| l.trim().strip_prefix("fn ").and_then(|r| r.split('(').next()))
            else {
                bail!("{relative}:{}: an annotation must sit above a test function", i + 1);
            };
            let test = format!("`{name}` ({relative})");
            for item in list.split(',').map(str::trim) {
                let Some((kernel, field)) = item.split_once('.') else {
                    bail!("{relative}:{}: write KERNEL.FIELD, not {item:?}", i + 1);
                };
                if !KERNELS.contains(&kernel) || !FIELDS.contains(&field) {
                    bail!("{relative}:{}: unknown kernel or field in {item:?}", i + 1);
                }
                let cell = cells.entry((kernel.to_owned(), field.to_owned())).or_default();
                if kind == "enforces" { &mut cell.enforced } else { &mut cell.refused }.push(test.clone());
            }
        }
    }

    let mut out = String::from(
        "# Enforcement matrix\n\nGenerated by `cargo xtask matrix` from the test suite; do not edit. Each cell names the tests that \
         prove it (a `/// Enforces:` or `/// Refuses:` line above the test). CI regenerates this file and fails if it differs, \
         and runs every test named here. `report_bounds` is not a manifest field: it is the fixed bound on what one run's \
         records and report can make the host hold (SECURITY.md, \"Bounds of one run\"). The `session_*` and \
         `max_sessions*` rows are the operator's session limits (README, \"Sessions\"). The `browser` row is the traffic of \
         pages opened by the browser tools, held to the run's `allowed_hosts`, the address floor and the operator's \
         exceptions (README, \"Browser tools\").\n\n",
    );
    for kernel in KERNELS {
        out.push_str(&format!("## `{kernel}` kernel\n\n| field | status | proven by |\n| --- | --- | --- |\n"));
        for field in FIELDS {
            let cell = cells.get(&(kernel.to_string(), field.to_string()));
            let na = NOT_APPLICABLE.iter().find(|(k, f, _)| k == kernel && f == field);
            let (status, proof) = match (cell, na) {
                (Some(c), _) if !c.refused.is_empty() => ("refused at configuration time", c.refused.join("<br>")),
                (Some(c), _) if !c.enforced.is_empty() => ("enforced", c.enforced.join("<br>")),
                (_, Some((_, _, reason))) => ("not applicable", reason.to_string()),
                _ => ("**not covered**", String::new()),
            };
            out.push_str(&format!("| `{field}` | {status} | {proof} |\n"));
        }
        out.push('\n');
    }

    let path = root.join("docs/enforcement-matrix.md");
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != out {
            bail!("docs/enforcement-matrix.md is out of date: run `cargo xtask matrix` and commit it");
        }
        println!("docs/enforcement-matrix.md is up to date");
    } else {
        std::fs::create_dir_all(path.parent().unwrap_or(root))?;
        std::fs::write(&path, out)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Every `.rs` file under `dir`, subdirectories included (test modules such as `tests/adversarial/*.rs`).
fn rust_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
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
