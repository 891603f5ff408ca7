//! Host memory one hostile run can make the host hold, read from the process's own peak resident set.
//!
//! Each case is an attack that, before the report bounds (issue 28), made the host hold far more than the guest's
//! `memory_limit_bytes`: refused requests with huge URLs, tool calls with huge names. The peak resident set
//! (`VmHWM`, reset through `/proc/self/clear_refs` before each case) must stay within the bound SECURITY.md states
//! ("Bounds of one run"): the guest's memory limit, the report's ceiling and a fixed allowance for the engine.
//! Everything runs in one test so that no other run in this process moves the peak.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[allow(dead_code, reason = "this binary uses only part of the shared helpers")]
mod common;

use std::time::Instant;
use wasmagent::{Language, Outcome, RunReport, RunRequest};

const MIB: u64 = 1024 * 1024;
/// What the host itself may add around a run (engine instance, stacks, allocator slack), beyond the guest's memory
/// and the report.
const ENGINE_ALLOWANCE: u64 = 96 * MIB;

/// A field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Resets the peak resident set to the current one (Linux 4.0+).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Runs `code` under `toml` and returns the report with the growth of the peak resident set it caused.
fn measured(toml: &str, language: Language, code: &str) -> (RunReport, u64, f64) {
    let manifest = common::manifest(toml);
    let request = RunRequest::source("attack", language, code);
    reset_peak();
    let before = status_bytes("VmRSS:");
    let started = Instant::now();
    let report = common::sandbox().run(&manifest, &request).unwrap();
    let serialized = serde_json::to_vec(&report).unwrap();
    let peak = status_bytes("VmHWM:");
    drop(serialized);
    (report, peak.saturating_sub(before), started.elapsed().as_secs_f64())
}

/// The ceiling SECURITY.md states for one report: three output-sized fields (stdout, stderr, value), three record
/// lists of bounded records, and the error message.
fn report_ceiling(max_output_bytes: u64) -> u64 {
    let record = 4 * wasmagent::bounds::REPORT_TEXT_BYTES as u64 + 1024;
    3 * max_output_bytes
        + 3 * wasmagent::bounds::REPORT_LISTED_RECORDS as u64 * record
        + wasmagent::bounds::REPORT_ERROR_BYTES as u64
        + 64 * 1024
}

/// Enforces: js.report_bounds, python.report_bounds, wasi.report_bounds
#[test]
fn hostile_runs_stay_within_the_stated_host_memory_bound() {
    // Compile both engines first: compilation is bounded separately (max_compile_ms, two at once) and is not what
    // these cases measure.
    assert_eq!(common::value_of(Language::Js, "warm", "1"), serde_json::json!(1));
    assert_eq!(common::value_of(Language::Python, "warm", "1"), serde_json::json!(1));

    let toml = "cpu_ms = 10000\n";
    let memory_limit = common::manifest(toml).memory_limit_bytes();
    let max_output = common::manifest(toml).max_output_bytes();
    let cases = [
        (
            "JavaScript: 1,500 refused fetches of 512 KiB URLs",
            Language::Js,
            r#"
            (async () => {
              const base = 'http://example.org/' + 'a'.repeat(512 * 1024);
              let refused = 0;
              for (let i = 0; i < 1500; i++) {
                try { await fetch(base + i); } catch (e) { refused++; }
              }
              return refused;
            })()
            "#,
        ),
        (
            "Python: tool calls with 2 MiB names, no tool granted",
            Language::Python,
            r#"
from wasmagent import tools, ToolError
name = "t" * (2 * 1024 * 1024)
refused = 0
for i in range(200):
    try:
        tools.call(name, {})
    except Exception:
        refused += 1
refused
"#,
        ),
        (
            "Python: refused http.get on 512 KiB URLs",
            Language::Python,
            r#"
from wasmagent import http
base = "http://example.org/" + "a" * (512 * 1024)
refused = 0
for i in range(1500):
    try:
        http.get(base + str(i))
    except Exception:
        refused += 1
refused
"#,
        ),
    ];
    // WASI: a component asks for 200 files by 64 KiB paths outside every mount (each refusal is recorded).
    let long = "a".repeat(64 * 1024);
    let args: Vec<String> = (0..200).map(|i| format!("cat:/{i}{long}")).collect();
    let probe = wasmagent_test_guests::read(wasmagent_test_guests::PROBE_COMPONENT);
    let manifest = common::manifest("cpu_ms = 10000\nmax_output_bytes = \"16MiB\"");
    assert_eq!(
        common::sandbox().run(&manifest, &RunRequest::wasm("warm", probe.clone())).unwrap().outcome,
        Outcome::Ok
    );
    reset_peak();
    let before = status_bytes("VmRSS:");
    let report = common::sandbox().run(&manifest, &RunRequest::wasm("attack", probe).with_args(args)).unwrap();
    let report_bytes = serde_json::to_vec(&report).unwrap().len() as u64;
    let growth = status_bytes("VmHWM:").saturating_sub(before);
    eprintln!(
        "WASI: 200 refused reads of 64 KiB paths: report {report_bytes} bytes, peak RSS growth {} MiB",
        growth / MIB
    );
    assert_eq!(report.outcome, Outcome::Ok, "{:?}", report.error);
    // At most 100 refused filesystem accesses are listed, then one denial counts the rest.
    assert_eq!(report.denials.len(), 101, "{:?}", report.denials.last());
    assert!(report.denials.iter().all(|d| d.target.len() <= wasmagent::bounds::REPORT_TEXT_BYTES + 48));
    let bound = manifest.memory_limit_bytes() + report_ceiling(manifest.max_output_bytes()) + ENGINE_ALLOWANCE;
    assert!(growth <= bound, "WASI: the host's peak grew by {} MiB, over {} MiB", growth / MIB, bound / MIB);

    for (name, language, code) in cases {
        let (report, growth, seconds) = measured(toml, language, code);
        let report_bytes = serde_json::to_vec(&report).unwrap().len() as u64;
        eprintln!(
            "{name}: outcome {}, report {report_bytes} bytes, peak RSS growth {} MiB, {seconds:.1} s",
            report.outcome.as_str(),
            growth / MIB
        );
        assert!(
            matches!(report.outcome, Outcome::Ok | Outcome::Timeout),
            "{name}: {:?} {:?}",
            report.outcome,
            report.error
        );
        assert!(
            report_bytes <= report_ceiling(max_output),
            "{name}: the report is {report_bytes} bytes, over its ceiling {}",
            report_ceiling(max_output)
        );
        let bound = memory_limit + report_ceiling(max_output) + ENGINE_ALLOWANCE;
        assert!(
            growth <= bound,
            "{name}: the host's peak grew by {} MiB, over the bound {} MiB",
            growth / MIB,
            bound / MIB
        );
        assert!(
            seconds < 10.0 + 2.0,
            "{name}: the run took {seconds:.1} s, past its cpu_ms (10 s) and the stated grace (2 s)"
        );
    }
}
