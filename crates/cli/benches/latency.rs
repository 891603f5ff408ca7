//! Run latency, measured: `cargo bench -p wasmagent-cli --bench latency`.
//!
//! Prints medians and tails, in one run, for: a fresh sandbox per run of a trivial WASI module in-process
//! (compiled code cached, pooling allocator); the same for a Rust-built WASI command that prints a line; the
//! `wasmagent` binary end to end with a warm disk cache; JavaScript `1+1` in a fresh sandbox per run; a CPU-bound
//! script (fib(25) plus summing 1e6 numbers); fresh JavaScript sandboxes per second on every core; and
//! `wasmagent run -e '1+1'` end to end; then the same for Python (`1+1` in a fresh sandbox, the CPU-bound script,
//! `wasmagent run --lang python -e '1+1'`) and a small data script (records to JSON, then a regular expression).
//! When `node` is installed and `npm ci` has been run in `crates/cli/benches/node`, quickjs-emscripten and Pyodide in
//! Node are measured beside them, and so is the python kernel's own engine run by V8 (Node's WASI), which splits the
//! CPU-bound gap to Pyodide into runtime and CPython build. The Python comparison runs in alternating rounds
//! (wasmagent, Pyodide, the engine in V8; the order turns each round) and prints the median and spread of the
//! per-round ratios, because this machine's speed drifts between and within runs. `BENCH_RUNS` sets the in-process
//! run count, `BENCH_ROUNDS` the number of rounds (7); `BENCH_ONLY=python` measures the Python rows only.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wasmagent::{CapabilityManifest, Language, Outcome, RunRequest, Sandbox};

const TRIVIAL: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;
const CPU_BOUND_JS: &str = "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2) } let s = 0; for (let i = 0; i < 1e6; i++) s += i; fib(25) + s";
/// Everyday data work: build 2,000 records, serialise them to JSON, scan the text with a regular expression.
const DATA_SCRIPT_PY: &str = "import json, re\ndata = [{\"id\": i, \"name\": f\"user{i}\"} for i in range(2000)]\ntext = json.dumps(data)\nlen(re.findall(r\"user\\d+\", text))";
const CPU_BOUND_PY: &str = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\ns = 0\nfor i in range(1000000):\n    s += i\nfib(25) + s";

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

/// Fresh JavaScript sandboxes per second with one thread per core, each running `1+1`.
fn js_throughput(sandbox: &Sandbox, seconds: f64) -> f64 {
    let manifest = sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let total: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let request = RunRequest::source("bench.js", Language::Js, "1+1");
                    let mut runs = 0;
                    while Instant::now() < deadline {
                        assert_eq!(sandbox.run(&manifest, &request).unwrap().outcome, Outcome::Ok);
                        runs += 1;
                    }
                    runs
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let rate = total as f64 / started.elapsed().as_secs_f64();
    println!("{:<44} {rate:>8.0} sandboxes/s on {threads} threads", "js: fresh sandboxes per second, `1+1`");
    rate
}

/// A reference engine in Node (`script` next to this benchmark), when its package is installed.
fn node_reference(package: &str, script: &str, cpu_bound: &str) -> Option<serde_json::Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/node");
    if !dir.join("node_modules").join(package).exists() {
        println!("({package} in Node not measured: run `npm ci` in crates/cli/benches/node)");
        return None;
    }
    let out = Command::new("node").current_dir(&dir).args([script, cpu_bound, "2000"]).output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).ok()
}

/// quickjs-emscripten in Node.
fn quickjs_reference() -> Option<serde_json::Value> {
    let value = node_reference("quickjs-emscripten", "quickjs.mjs", CPU_BOUND_JS)?;
    println!(
        "{:<44} p50 {:>8.1} µs   (new runtime + context + eval, Node {})",
        "node: quickjs-emscripten `1+1`",
        value["trivial_p50_ms"].as_f64()? * 1000.0,
        value["node"].as_str().unwrap_or("?")
    );
    println!("{:<44} p50 {:>8.1} ms", "node: quickjs-emscripten fib(25) + sum(1e6)", value["cpu_p50_ms"].as_f64()?);
    Some(value)
}

/// The median of `samples` (sorted in place).
fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// wasmagent's Python against Pyodide (and its own engine in V8) on the CPU-bound script, in alternating rounds:
/// each round measures every engine once (5 runs, median; wasmagent with a fresh sandbox per run, the Node engines
/// loaded once per round and warmed up), in an order that turns each round; the per-round ratios' median and
/// spread are printed.
fn python_rounds(sandbox: &Sandbox, rounds: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/node");
    if !dir.join("node_modules/pyodide").exists() {
        println!("(Pyodide in Node not measured: run `npm ci` in crates/cli/benches/node)");
        return;
    }
    let manifest = sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    let request = RunRequest::source("bench.py", Language::Python, CPU_BOUND_PY);
    let wasmagent = || {
        let mut samples: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                assert_eq!(sandbox.run(&manifest, &request).unwrap().outcome, Outcome::Ok);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        median(&mut samples)
    };
    let node = |script: &str| -> f64 {
        let out = Command::new("node").current_dir(&dir).args([script, CPU_BOUND_PY, "200"]).output().unwrap();
        let value: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap_or_else(|e| {
            panic!("{script}: {e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        value["cpu_p50_ms"].as_f64().unwrap()
    };
    let (mut ours, mut pyodide, mut v8) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut measured = [0.0; 3];
        for step in 0..3 {
            let engine = (round + step) % 3;
            measured[engine] = match engine {
                0 => wasmagent(),
                1 => node("pyodide.mjs"),
                _ => node("python-engine.mjs"),
            };
        }
        println!(
            "  round {}: wasmagent {:.1} ms · Pyodide {:.1} ms · the engine in V8 {:.1} ms",
            round + 1,
            measured[0],
            measured[1],
            measured[2]
        );
        ours.push(measured[0]);
        pyodide.push(measured[1]);
        v8.push(measured[2]);
    }
    let ratio = |a: &[f64], b: &[f64]| {
        let mut ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
        let median = median(&mut ratios);
        (median, ratios[0], ratios[ratios.len() - 1])
    };
    let report = |label: &str, (median, low, high): (f64, f64, f64)| {
        println!("{label:<60} {median:.2}x (spread {low:.2}-{high:.2}x over {rounds} rounds)");
    };
    println!(
        "{:<44} p50 {:>8.1} ms (medians of the rounds; Pyodide {:.1} ms, the engine in V8 {:.1} ms)",
        "python: fib(25) + sum(1e6), in rounds",
        median(&mut ours.clone()),
        median(&mut pyodide.clone()),
        median(&mut v8.clone())
    );
    report("ratio: CPU-bound, wasmagent / Pyodide", ratio(&ours, &pyodide));
    report("ratio: CPU-bound, same engine, wasmtime / V8 (runtime)", ratio(&ours, &v8));
    report("ratio: CPU-bound, same V8, python.wasm / Pyodide (CPython build)", ratio(&v8, &pyodide));
}

/// The first Python run of the CLI with an empty code cache: the engine is compiled, then run once.
fn first_compile() {
    let cache = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
        .args(["run", "--lang", "python", "-e", "1+1"])
        .env("WASMAGENT_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("{:<44} {:>12.2} s", "cli: first python run, empty code cache", t.elapsed().as_secs_f64());
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported.
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let sandbox = Sandbox::builder().build().unwrap();
    println!("wasmagent latency benchmark ({runs} in-process runs each)");
    if std::env::var("BENCH_ONLY").as_deref() != Ok("python") {
        everything_but_python(&sandbox, runs);
    }
    python(&sandbox, runs);
}

/// The WASI and JavaScript rows.
fn everything_but_python(sandbox: &Sandbox, runs: usize) {
    let trivial = RunRequest::wasm("trivial.wat", TRIVIAL.as_bytes().to_vec());
    let trivial_p50 = in_process("wasi: trivial module, fresh sandbox per run", sandbox, &trivial, runs);
    let probe = RunRequest::wasm("probe.wasm", std::fs::read(wasmagent_test_guests::PROBE_MODULE).unwrap())
        .with_args(["hello"]);
    let probe_p50 = in_process("wasi: Rust command printing a line", sandbox, &probe, runs / 4);

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

    let js_one = RunRequest::source("bench.js", Language::Js, "1+1");
    let js_p50 = in_process("js: `1+1`, fresh sandbox per run", sandbox, &js_one, runs / 4);
    let cpu = RunRequest::source("bench.js", Language::Js, CPU_BOUND_JS);
    let cpu_p50 = in_process("js: fib(25) + sum(1e6), fresh sandbox", sandbox, &cpu, 10);
    js_throughput(sandbox, 3.0);
    cli_end_to_end("cli: `wasmagent run -e '1+1'`, warm cache", &["run", "-e", "1+1"], 50);
    if let Some(node) = quickjs_reference() {
        let node_trivial = node["trivial_p50_ms"].as_f64().unwrap_or(f64::NAN);
        let node_cpu = node["cpu_p50_ms"].as_f64().unwrap_or(f64::NAN);
        println!(
            "ratios: js `1+1` wasmagent / quickjs-emscripten = {:.2}x; CPU-bound wasmagent / quickjs-emscripten = {:.2}x",
            js_p50.as_secs_f64() * 1000.0 / node_trivial,
            cpu_p50.as_secs_f64() * 1000.0 / node_cpu
        );
    }
}

/// The Python rows.
fn python(sandbox: &Sandbox, runs: usize) {
    let py_one = RunRequest::source("bench.py", Language::Python, "1+1");
    in_process("python: `1+1`, fresh sandbox per run", sandbox, &py_one, runs / 10);
    let py_cpu = RunRequest::source("bench.py", Language::Python, CPU_BOUND_PY);
    in_process("python: fib(25) + sum(1e6), fresh sandbox", sandbox, &py_cpu, 10);
    let py_data = RunRequest::source("bench.py", Language::Python, DATA_SCRIPT_PY);
    in_process("python: 2,000 records to JSON + regex, fresh", sandbox, &py_data, runs / 10);
    cli_end_to_end("cli: `wasmagent run --lang python -e '1+1'`", &["run", "--lang", "python", "-e", "1+1"], 50);
    first_compile();
    let rounds = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    python_rounds(sandbox, rounds);
}
