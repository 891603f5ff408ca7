//! Soak: many fresh sandboxes in one process, and the host's memory must not creep:
//! `cargo bench -p wasmagent-cli --bench soak`.
//!
//! Runs 100,000 JavaScript sandboxes, then 20,000 Python sandboxes, one after another on one `Sandbox` (as a
//! server does), each a fresh instance running a small script that varies with the run (`1+1`, building an
//! object, a loop, printing, throwing). The host's resident set size (`VmRSS` in `/proc/self/status`) is sampled
//! every 1% of a kernel's runs. After a warm-up (the first 10% of the runs, which load the engine and fill the
//! instance pool), the RSS at that point is the reference; the drift is how far the largest later sample rises
//! above it. Prints a table and exits 1 when a drift exceeds 5%.
//!
//! `SOAK_JS` and `SOAK_PY` set the run counts (e.g. `SOAK_JS=1000 SOAK_PY=200` for a quick check).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::path::Path;
use std::time::Instant;
use wasmagent::{CapabilityManifest, EffectiveManifest, Language, Outcome, RunRequest, Sandbox};

/// The most the RSS may rise above its post-warm-up reference, in percent.
const MAX_DRIFT_PERCENT: f64 = 5.0;

/// The host's resident set size in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (the soak needs Linux)");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    let kib: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

/// Run `i`'s script and the outcome it must end with.
fn js_script(i: usize) -> (String, Outcome) {
    match i % 5 {
        0 => ("1+1".into(), Outcome::Ok),
        1 => (format!("({{n: {i}, xs: [{i}, {i} * 2, {i} * 3], s: 'v' + {i}, nested: {{ok: true}}}})"), Outcome::Ok),
        2 => (format!("let s = 0; for (let k = 0; k < {}; k++) s += k * k; s", i % 200), Outcome::Ok),
        3 => (format!("console.log('run {i}'); [{i}].map(x => x + 1)"), Outcome::Ok),
        _ => (format!("throw new Error('run {i} fails on purpose')"), Outcome::Error),
    }
}

fn python_script(i: usize) -> (String, Outcome) {
    match i % 5 {
        0 => ("1+1".into(), Outcome::Ok),
        1 => (
            format!("{{'n': {i}, 'xs': [{i}, {i} * 2, {i} * 3], 's': 'v%d' % {i}, 'nested': {{'ok': True}}}}"),
            Outcome::Ok,
        ),
        2 => (format!("sum(k * k for k in range({}))", i % 200), Outcome::Ok),
        3 => (format!("print('run {i}')\n[x + 1 for x in [{i}]]"), Outcome::Ok),
        _ => (format!("raise ValueError('run {i} fails on purpose')"), Outcome::Error),
    }
}

/// One kernel's soak figures.
struct Soak {
    label: &'static str,
    runs: usize,
    /// Runs per second after the warm-up.
    rate: f64,
    reference: u64,
    max: u64,
    last: u64,
}

impl Soak {
    /// How far the largest post-warm-up sample rose above the reference, in percent.
    fn drift_percent(&self) -> f64 {
        (self.max as f64 - self.reference as f64) / self.reference as f64 * 100.0
    }
}

fn soak(
    label: &'static str,
    sandbox: &Sandbox,
    manifest: &EffectiveManifest,
    language: Language,
    script: fn(usize) -> (String, Outcome),
    runs: usize,
) -> Soak {
    let warm_up = (runs / 10).max(1);
    let every = (runs / 100).max(1);
    let mut warmed = Instant::now();
    let mut reference = 0;
    let mut max = 0;
    for i in 0..runs {
        let (code, expected) = script(i);
        let request = RunRequest::source(format!("soak-{i}"), language, code);
        let report = sandbox.run(manifest, &request).unwrap();
        assert_eq!(report.outcome, expected, "run {i}: {:?}", report.error);
        let done = i + 1;
        if done == warm_up {
            reference = rss_bytes();
            max = reference;
            warmed = Instant::now();
        } else if done > warm_up && (done % every == 0 || done == runs) {
            max = max.max(rss_bytes());
        }
    }
    let rate = (runs - warm_up) as f64 / warmed.elapsed().as_secs_f64();
    Soak { label, runs, rate, reference, max, last: rss_bytes() }
}

fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name} must be a number of runs, not {text:?}")),
        Err(_) => default,
    }
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported.
    let js_runs = env_count("SOAK_JS", 100_000);
    let py_runs = env_count("SOAK_PY", 20_000);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let sandbox = Sandbox::builder().build().unwrap();
    let manifest = sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    println!(
        "wasmagent soak: {js_runs} JavaScript and {py_runs} Python sandboxes; host RSS at start {:.1} MiB",
        mib(rss_bytes())
    );

    let mut results = Vec::new();
    if js_runs > 0 {
        results.push(soak("js", &sandbox, &manifest, Language::Js, js_script, js_runs));
    }
    if py_runs > 0 {
        results.push(soak("python", &sandbox, &manifest, Language::Python, python_script, py_runs));
    }

    println!(
        "{:<8} {:>8} {:>9} {:>18} {:>18} {:>12} {:>8}",
        "kernel", "runs", "runs/s", "RSS after warm-up", "max after warm-up", "final RSS", "drift"
    );
    let mut failed = false;
    for soak in &results {
        let drift = soak.drift_percent();
        failed |= drift > MAX_DRIFT_PERCENT;
        println!(
            "{:<8} {:>8} {:>9.0} {:>14.1} MiB {:>14.1} MiB {:>8.1} MiB {:>+7.2}%",
            soak.label,
            soak.runs,
            soak.rate,
            mib(soak.reference),
            mib(soak.max),
            mib(soak.last),
            drift
        );
    }
    if failed {
        eprintln!("soak failed: host RSS rose more than {MAX_DRIFT_PERCENT}% above its post-warm-up reference");
        std::process::exit(1);
    }
    println!("ok: every drift is within {MAX_DRIFT_PERCENT}%");
}
