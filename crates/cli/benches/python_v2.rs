//! Python engine v2 (issue 24), first milestone, measured against the current engine:
//! `scripts/build-cpython-wasi.sh` then `cargo bench -p wasmagent-cli --bench python_v2`.
//!
//! v2 is CPython built here for wasm32-wasi as a static, non-PIC core module, run by wasmtime's WASI preview 1 with
//! its standard library (and bytecode) in a read-only preopened directory; it has no wasmagent bridge and no
//! pre-initialised snapshot yet, so every fresh instance runs CPython's whole start-up. The current engine is the
//! python kernel's componentize-py component, run through the public `Sandbox` API exactly as `--bench latency`
//! does. Both are measured in alternating rounds (current, v2, current, v2, …): per round, the median of a few fresh
//! runs of `1+1` and of the CPU-bound script (fib(25) plus summing 1e6 numbers), then the median and spread of the
//! per-round ratios v2 / current (also for the CPU-bound time less the same round's `1+1`, the script's own
//! cost). Also printed: v2's first compile, a fresh v2 instance without running `_start`
//! (the floor a snapshot approaches) and a check that v2 computes `sum(range(10**6))` correctly. With the
//! pre-initialised snapshot in the build (`cargo xtask python-v2-snapshot DIST`), a second set of alternating rounds
//! runs `1+1` and the CPU-bound script in fresh instances of it (the interpreter already started).
//! `CPYTHON_WASI_DIST` points at the build's `dist/` (default `target/cpython-wasi/dist`); `BENCH_ROUNDS` sets the
//! round count (default 7). Without a build, it says how to make one and exits.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmagent::{CapabilityManifest, Language, Outcome, RunRequest, Sandbox};
use wasmtime::{Config, Engine, InstancePre, Linker, Module, OptLevel, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

const CPU_BOUND_PY: &str = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\ns = 0\nfor i in range(1000000):\n    s += i\nfib(25) + s";

/// A compiled v2 interpreter, ready to be instantiated fresh for every run; with its pre-initialised snapshot when
/// `python-v2.wasm` is in the build (`cargo xtask python-v2-snapshot DIST`).
struct V2 {
    pre: InstancePre<WasiP1Ctx>,
    snapshot: Option<InstancePre<WasiP1Ctx>>,
    engine: Engine,
    dist: PathBuf,
}

impl V2 {
    fn load(dist: &Path) -> (Self, Duration) {
        // The kernel's code-generation settings (crates/engine): epoch interruption on (its checks are in the
        // generated code whatever the deadline), optimised for speed, a 1 MiB wasm stack. Not its pooling
        // allocator: v2's instantiation is measured with wasmtime's default (on-demand) one.
        let mut config = Config::new();
        config.epoch_interruption(true).cranelift_opt_level(OptLevel::Speed).max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).unwrap();
        let started = Instant::now();
        let module = Module::from_file(&engine, dist.join("python.wasm")).unwrap();
        let compile = started.elapsed();
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx).unwrap();
        let pre = linker.instantiate_pre(&module).unwrap();
        let snapshot_file = dist.join("python-v2.wasm");
        let snapshot = snapshot_file
            .is_file()
            .then(|| linker.instantiate_pre(&Module::from_file(&engine, &snapshot_file).unwrap()).unwrap());
        (Self { pre, snapshot, engine, dist: dist.to_path_buf() }, compile)
    }

    /// A fresh instance of the snapshot runs `code` (the interpreter already started); returns what it printed.
    fn run_snapshot(&self, snapshot: &InstancePre<WasiP1Ctx>, code: &str) -> String {
        let stdout = MemoryOutputPipe::new(1 << 20);
        let mut store = self.store(code, stdout.clone());
        let instance = snapshot.instantiate(&mut store).unwrap();
        let buffer = instance.get_typed_func::<u32, u32>(&mut store, "code_buffer").unwrap();
        let run = instance.get_typed_func::<(u32, u32), u32>(&mut store, "run").unwrap();
        let len = u32::try_from(code.len()).unwrap();
        let at = buffer.call(&mut store, len).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        memory.write(&mut store, at as usize, code.as_bytes()).unwrap();
        assert_eq!(run.call(&mut store, (at, len)).unwrap(), 0, "the snapshot's run raised");
        String::from_utf8(stdout.contents().to_vec()).unwrap()
    }

    fn store(&self, code: &str, stdout: MemoryOutputPipe) -> Store<WasiP1Ctx> {
        let mut wasi = WasiCtxBuilder::new();
        // -S: no `site` (v2 will freeze declared packages instead of reading site-packages); -I: isolated mode.
        wasi.args(&["python", "-S", "-I", "-c", code]).env("PYTHONHOME", "/").stdout(stdout);
        wasi.preopened_dir(&self.dist, "/", FsPerms::ReadOnly).unwrap();
        let mut store = Store::new(&self.engine, wasi.build_p1());
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    /// A fresh instance runs `code` to completion; returns what it printed.
    fn run(&self, code: &str) -> String {
        let stdout = MemoryOutputPipe::new(1 << 20);
        let mut store = self.store(code, stdout.clone());
        let instance = self.pre.instantiate(&mut store).unwrap();
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start").unwrap();
        match start.call(&mut store, ()) {
            Ok(()) => {}
            Err(e) => {
                let code = e.downcast_ref::<I32Exit>().map(|exit| exit.0);
                assert_eq!(code, Some(0), "python.wasm failed: {e:?}");
            }
        }
        String::from_utf8(stdout.contents().to_vec()).unwrap()
    }

    /// A fresh instance, not started: what instantiation alone costs.
    fn instantiate_only(&self) {
        let mut store = self.store("pass", MemoryOutputPipe::new(16));
        self.pre.instantiate(&mut store).unwrap();
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and range of per-round ratios.
fn ratio_summary(label: &str, ratios: &mut [f64]) {
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio {label:<44} median {:>6.2}x   spread {:.2}x..{:.2}x over {} rounds",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len()
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dist = std::env::var_os("CPYTHON_WASI_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/cpython-wasi/dist"));
    if !dist.join("python.wasm").is_file() {
        println!("no {}: build it with scripts/build-cpython-wasi.sh first", dist.join("python.wasm").display());
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);

    let (v2, compile) = V2::load(&dist);
    println!("v2: python.wasm first compile (cranelift, this machine)   {:>8.1} ms", ms(compile));
    let printed = v2.run("print(sum(range(10**6)))");
    assert_eq!(printed.trim(), "499999500000", "v2 computed the wrong sum");
    let printed = v2.run(&format!("{CPU_BOUND_PY}\nprint(fib(25) + s)"));
    assert_eq!(printed.trim(), "499999575025", "v2 computed the wrong CPU-bound result");
    println!("v2: print(sum(range(10**6))) = {}", 499_999_500_000_u64);

    let sandbox = Sandbox::builder().build().unwrap();
    let manifest = sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    let one = RunRequest::source("bench.py", Language::Python, "1+1");
    let cpu = RunRequest::source("bench.py", Language::Python, CPU_BOUND_PY);
    let mut current_one = || assert_eq!(sandbox.run(&manifest, &one).unwrap().outcome, Outcome::Ok);
    let mut current_cpu = || assert_eq!(sandbox.run(&manifest, &cpu).unwrap().outcome, Outcome::Ok);
    let cpu_v2 = format!("{CPU_BOUND_PY}\n");
    // Warm both (code caches, page faults) before the first round.
    timed(3, &mut current_one);
    timed(1, &mut current_cpu);
    timed(2, || drop(v2.run("1+1")));

    let (mut start_ratios, mut cpu_ratios, mut compute_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cur_start, mut v2_start, mut v2_inst, mut cur_cpu, mut v2_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let a = timed(20, &mut current_one);
        let b = timed(5, || drop(v2.run("1+1")));
        let c = timed(3, &mut current_cpu);
        let d = timed(3, || drop(v2.run(&cpu_v2)));
        v2_inst.push(timed(20, || v2.instantiate_only()));
        start_ratios.push(b.as_secs_f64() / a.as_secs_f64());
        cpu_ratios.push(d.as_secs_f64() / c.as_secs_f64());
        // The script's own time: the CPU-bound run less a `1+1` run of the same engine in the same round.
        compute_ratios.push(d.saturating_sub(b).as_secs_f64() / c.saturating_sub(a).as_secs_f64());
        cur_start.push(a);
        v2_start.push(b);
        cur_cpu.push(c);
        v2_cpu.push(d);
    }
    println!("current: `1+1`, fresh sandbox (median of round medians)   {:>8.2} ms", ms(median(cur_start)));
    println!("v2:      `1+1`, fresh instance, full CPython start-up     {:>8.2} ms", ms(median(v2_start)));
    println!("v2:      fresh instance, instantiation only (no _start)   {:>8.3} ms", ms(median(v2_inst)));
    println!("current: fib(25) + sum(1e6), fresh sandbox                {:>8.1} ms", ms(median(cur_cpu)));
    println!("v2:      fib(25) + sum(1e6), fresh instance               {:>8.1} ms", ms(median(v2_cpu)));
    if let Some(snapshot) = &v2.snapshot {
        let printed = v2.run_snapshot(snapshot, &format!("{CPU_BOUND_PY}\nprint(fib(25) + s)"));
        assert_eq!(printed.trim(), "499999575025", "the v2 snapshot computed the wrong CPU-bound result");
        timed(3, || drop(v2.run_snapshot(snapshot, "1+1")));
        let (mut one_ratios, mut cpu_ratios, mut snap_one, mut snap_cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let a = timed(20, &mut current_one);
            let b = timed(20, || drop(v2.run_snapshot(snapshot, "1+1")));
            let c = timed(3, &mut current_cpu);
            let d = timed(3, || drop(v2.run_snapshot(snapshot, &cpu_v2)));
            one_ratios.push(b.as_secs_f64() / a.as_secs_f64());
            cpu_ratios.push(d.as_secs_f64() / c.as_secs_f64());
            snap_one.push(b);
            snap_cpu.push(d);
        }
        println!(
            "v2 snapshot: `1+1`, fresh instance of the pre-initialised interpreter {:>8.3} ms",
            ms(median(snap_one))
        );
        println!("v2 snapshot: fib(25) + sum(1e6), fresh instance                  {:>8.1} ms", ms(median(snap_cpu)));
        ratio_summary("snapshot `1+1` v2 / current", &mut one_ratios);
        ratio_summary("snapshot CPU-bound v2 / current", &mut cpu_ratios);
    }
    ratio_summary("fresh `1+1` v2 / current", &mut start_ratios);
    ratio_summary("CPU-bound v2 / current (start-up included)", &mut cpu_ratios);
    ratio_summary("CPU-bound less `1+1`, v2 / current", &mut compute_ratios);
}
