//! Session costs, measured: `cargo bench -p wasmagent --bench sessions`.
//!
//! Prints medians for: a call in a JavaScript session and in a Python session (`1+1`) beside a fresh sandbox per
//! run; and forking a JavaScript and a Python session that hold 1 MiB and 100 MiB of data (time to fork, the fork's
//! linear memory, and how much the process's resident memory grew while the fork was alive). `BENCH_RUNS` sets the call
//! count.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::path::Path;
use std::time::{Duration, Instant};
use wasmagent::{CapabilityManifest, Language, Outcome, RunRequest, Sandbox, SandboxSession};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Resident memory of this process, in bytes (Linux `/proc/self/status`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn call(session: &mut SandboxSession, code: &str) {
    let report = session.run(&RunRequest::source("bench", session.language(), code)).unwrap();
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
}

fn calls(sandbox: &Sandbox, language: Language, runs: usize) {
    let manifest = sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    let request = RunRequest::source("bench", language, "1+1");
    let mut fresh = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        assert_eq!(sandbox.run(&manifest, &request).unwrap().outcome, Outcome::Ok);
        fresh.push(t.elapsed());
    }
    let open = Instant::now();
    let mut session = sandbox.session(&manifest, language).unwrap();
    let opened = open.elapsed();
    let mut in_session = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        call(&mut session, "1+1");
        in_session.push(t.elapsed());
    }
    let (fresh, in_session) = (median(fresh), median(in_session));
    println!(
        "{language:?} `1+1`: session call p50 {:>8.1} µs   fresh sandbox p50 {:>8.1} µs   ({:.2}×)   opening a session {:>8.1} µs",
        micros(in_session),
        micros(fresh),
        fresh.as_secs_f64() / in_session.as_secs_f64(),
        micros(opened)
    );
}

fn fork_cost(sandbox: &Sandbox, language: Language, mib: usize, forks: usize) {
    let toml = "memory_limit_bytes = \"256MiB\"\ncpu_ms = 30000";
    let manifest = sandbox.resolve(&CapabilityManifest::from_toml_str(toml).unwrap(), Path::new("/")).unwrap();
    let mut parent = sandbox.session(&manifest, language).unwrap();
    let (fill, check) = match language {
        Language::Js => (
            format!(
                "var data = new Uint8Array({mib} << 20); for (let i = 0; i < data.length; i += 4096) data[i] = i & 255; 1"
            ),
            "data[4096]",
        ),
        _ => (
            format!("data = bytearray({mib} << 20)\nfor i in range(0, len(data), 4096): data[i] = i & 255"),
            "data[4096]",
        ),
    };
    call(&mut parent, &fill);
    let mut times = Vec::with_capacity(forks);
    let mut grown = Vec::with_capacity(forks);
    let mut memory = 0;
    for _ in 0..forks {
        let before = rss_bytes();
        let t = Instant::now();
        let mut child = parent.fork().unwrap();
        times.push(t.elapsed());
        grown.push(rss_bytes().saturating_sub(before));
        let report = child.run(&RunRequest::source("check", language, check)).unwrap();
        assert_eq!(report.value, serde_json::json!(0), "{report:?}");
        memory = report.usage.memory_peak_bytes;
    }
    grown.sort();
    println!(
        "fork of a {language:?} session holding {mib:>3} MiB: p50 {:>9.1} µs   fork's linear memory {:>5.1} MiB   resident memory +{:>5.1} MiB (p50 of {forks})",
        micros(median(times)),
        memory as f64 / (1 << 20) as f64,
        grown[grown.len() / 2] as f64 / (1 << 20) as f64
    );
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let sandbox = Sandbox::builder().pool_slots(8).build().unwrap();
    calls(&sandbox, Language::Js, runs);
    calls(&sandbox, Language::Python, runs / 3);
    for language in [Language::Js, Language::Python] {
        fork_cost(&sandbox, language, 1, 30);
        fork_cost(&sandbox, language, 100, 10);
    }
}
