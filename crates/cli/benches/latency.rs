//! Run latency, measured: `cargo bench -p wasmagent-cli --bench latency`.
//!
//! Prints medians and tails for (1) a fresh sandbox per run of a trivial WASI module in-process (compiled code
//! cached, pooling allocator), (2) the same for a Rust-built WASI command that prints a line, and (3) the
//! `wasmagent` binary end to end with a warm disk cache. Set `BENCH_RUNS` to change the in-process run count.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wasmagent::{CapabilityManifest, Outcome, RunRequest, Sandbox};

const TRIVIAL: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9), at(0.99))
}

fn in_process(label: &str, sandbox: &Sandbox, request: &RunRequest, runs: usize) -> Duration {
    let manifest = sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    for _ in 0..runs / 10 {
        assert_eq!(sandbox.run(&manifest, request).unwrap().outcome, Outcome::Ok);
    }
    let mut samples = Vec::with_capacity(runs);
    let started = Instant::now();
    for _ in 0..runs {
        let t = Instant::now();
        let report = sandbox.run(&manifest, request).unwrap();
        samples.push(t.elapsed());
        assert_eq!(report.outcome, Outcome::Ok);
    }
    let total = started.elapsed();
    let (p50, p90, p99) = percentiles(samples);
    println!(
        "{label:<44} p50 {:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs   {:>8.0} runs/s (1 thread)",
        p50.as_secs_f64() * 1e6,
        p90.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        runs as f64 / total.as_secs_f64()
    );
    p50
}

fn cli_end_to_end(label: &str, args: &[&str], runs: usize) -> Duration {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
            .args(args)
            .env("WASMAGENT_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run(); // fills the disk cache
    let samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed()
        })
        .collect();
    let (p50, p90, p99) = percentiles(samples);
    println!(
        "{label:<44} p50 {:>8.2} ms   p90 {:>8.2} ms   p99 {:>8.2} ms",
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    p50
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported.
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let sandbox = Sandbox::builder().build().unwrap();
    println!("wasmagent latency benchmark ({runs} in-process runs each)");
    let trivial = RunRequest::wasm("trivial.wat", TRIVIAL.as_bytes().to_vec());
    let trivial_p50 = in_process("wasi: trivial module, fresh sandbox per run", &sandbox, &trivial, runs);
    let probe = RunRequest::wasm("probe.wasm", std::fs::read(wasmagent_test_guests::PROBE_MODULE).unwrap())
        .with_args(["hello"]);
    let probe_p50 = in_process("wasi: Rust command printing a line", &sandbox, &probe, runs / 4);

    let dir = tempfile::tempdir().unwrap();
    let trivial_path = dir.path().join("trivial.wat");
    std::fs::write(&trivial_path, TRIVIAL).unwrap();
    let cli_p50 =
        cli_end_to_end("cli: `wasmagent run trivial.wat`, warm cache", &["run", trivial_path.to_str().unwrap()], 50);
    println!(
        "ratios: Rust command / trivial module = {:.2}x; CLI end to end / in-process trivial = {:.0}x",
        probe_p50.as_secs_f64() / trivial_p50.as_secs_f64(),
        cli_p50.as_secs_f64() / trivial_p50.as_secs_f64()
    );
}
