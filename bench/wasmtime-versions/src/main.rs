//! The Python engine (`guests/dist/python.wasm`) on wasmtime 48.0.10 and on wasmtime 51, configured as the runtime
//! configures it (pooling allocator, epoch interruption, copy-on-write memory images), in alternating rounds: a fresh
//! instance per run of `1+1` and of the CPU-bound script. Prints each round and the median and spread of the per-round
//! ratios (51 / 48). `ROUNDS` (7) and `RUNS` (`1+1` runs per round, 2000) change the counts. `ENGINES=A.wasm,B.wasm`
//! compares two engine files instead, both on wasmtime 48 (printed as 48 for A and 51 for B; ratios are B / A).
//!
//! The WASI preview 1 functions a run calls are written here (an empty environment, no arguments, no preopened
//! directories, output counted and dropped); any other import traps, which would show as a failed run.

use std::time::Instant;

const CPU_BOUND: &str = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\ns = 0\nfor i in range(1000000):\n    s += i\nfib(25) + s";

macro_rules! engine {
    ($name:ident, $wasmtime:ident) => {
        mod $name {
            use $wasmtime::{Caller, Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, Store};

            pub struct Runner {
                engine: Engine,
                pre: InstancePre<State>,
            }

            pub struct State {
                random: u64,
                answer: Vec<u8>,
            }

            fn memory(caller: &mut Caller<'_, State>) -> $wasmtime::Memory {
                caller.get_export("memory").unwrap().into_memory().unwrap()
            }

            fn write(caller: &mut Caller<'_, State>, ptr: i32, bytes: &[u8]) {
                let memory = memory(caller);
                memory.write(caller, ptr as u32 as usize, bytes).unwrap();
            }

            fn read_u32(caller: &mut Caller<'_, State>, ptr: u32) -> u32 {
                let memory = memory(caller);
                let mut word = [0u8; 4];
                memory.read(&*caller, ptr as usize, &mut word).unwrap();
                u32::from_le_bytes(word)
            }

            /// The WASI preview 1 functions a run calls.
            fn add_wasi(linker: &mut Linker<State>) {
                let m = "wasi_snapshot_preview1";
                linker
                    .func_wrap(m, "random_get", |mut caller: Caller<'_, State>, ptr: i32, len: i32| -> i32 {
                        let mut bytes = vec![0u8; len as u32 as usize];
                        for byte in &mut bytes {
                            let x = &mut caller.data_mut().random;
                            *x ^= *x << 13;
                            *x ^= *x >> 7;
                            *x ^= *x << 17;
                            *byte = *x as u8;
                        }
                        write(&mut caller, ptr, &bytes);
                        0
                    })
                    .unwrap();
                linker
                    .func_wrap(
                        m,
                        "clock_time_get",
                        |mut caller: Caller<'_, State>, _id: i32, _precision: i64, out: i32| -> i32 {
                            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                            write(&mut caller, out, &(now.as_nanos() as u64).to_le_bytes());
                            0
                        },
                    )
                    .unwrap();
                for name in ["environ_sizes_get", "args_sizes_get"] {
                    linker
                        .func_wrap(m, name, |mut caller: Caller<'_, State>, count: i32, size: i32| -> i32 {
                            write(&mut caller, count, &0u32.to_le_bytes());
                            write(&mut caller, size, &0u32.to_le_bytes());
                            0
                        })
                        .unwrap();
                }
                for name in ["environ_get", "args_get"] {
                    linker.func_wrap(m, name, |_: Caller<'_, State>, _: i32, _: i32| -> i32 { 0 }).unwrap();
                }
                linker
                    .func_wrap(
                        m,
                        "fd_write",
                        |mut caller: Caller<'_, State>, _fd: i32, iovs: i32, n: i32, out: i32| -> i32 {
                            let mut total = 0u32;
                            for i in 0..n as u32 {
                                total += read_u32(&mut caller, iovs as u32 + 8 * i + 4);
                            }
                            write(&mut caller, out, &total.to_le_bytes());
                            0
                        },
                    )
                    .unwrap();
                linker.func_wrap(m, "fd_prestat_get", |_: Caller<'_, State>, _: i32, _: i32| -> i32 { 8 }).unwrap();
                linker
                    .func_wrap(m, "fd_fdstat_get", |mut caller: Caller<'_, State>, fd: i32, out: i32| -> i32 {
                        if fd > 2 {
                            return 8;
                        }
                        let mut stat = [0u8; 24];
                        stat[0] = 2; // character device
                        write(&mut caller, out, &stat);
                        0
                    })
                    .unwrap();
            }

            impl Runner {
                pub fn new(wasm: &[u8]) -> Runner {
                    let mut config = Config::new();
                    config.epoch_interruption(true);
                    config.allocation_strategy(InstanceAllocationStrategy::pooling());
                    let engine = Engine::new(&config).unwrap();
                    let module = Module::new(&engine, wasm).unwrap();
                    let mut linker: Linker<State> = Linker::new(&engine);
                    add_wasi(&mut linker);
                    linker
                        .func_wrap("wasmagent", "result", |mut caller: Caller<'_, State>, ptr: i32, len: i32| {
                            let memory = caller.get_export("memory").unwrap().into_memory().unwrap();
                            let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
                            let bytes = memory.data(&caller)[ptr..ptr + len].to_vec();
                            caller.data_mut().answer = bytes;
                        })
                        .unwrap();
                    linker.define_unknown_imports_as_traps(&module).unwrap();
                    let pre = linker.instantiate_pre(&module).unwrap();
                    Runner { engine, pre }
                }

                /// Runs `code` in a fresh instance; returns the engine's answer.
                pub fn run(&self, code: &str) -> String {
                    let mut store =
                        Store::new(&self.engine, State { random: 0x9e37_79b9_7f4a_7c15, answer: Vec::new() });
                    store.set_epoch_deadline(1_000_000);
                    let instance = self.pre.instantiate(&mut store).unwrap();
                    let request = format!(r#"{{"code":{},"name":"bench.py","args":[],"env":{{}}}}"#, json_string(code));
                    let alloc = instance.get_typed_func::<u32, u32>(&mut store, "wasmagent_alloc").unwrap();
                    let run = instance.get_typed_func::<(u32, u32), ()>(&mut store, "wasmagent_run").unwrap();
                    let ptr = alloc.call(&mut store, request.len() as u32).unwrap();
                    let memory = instance.get_memory(&mut store, "memory").unwrap();
                    memory.write(&mut store, ptr as usize, request.as_bytes()).unwrap();
                    run.call(&mut store, (ptr, request.len() as u32)).unwrap();
                    String::from_utf8(std::mem::take(&mut store.data_mut().answer)).unwrap()
                }
            }

            fn json_string(text: &str) -> String {
                let mut out = String::from("\"");
                for c in text.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
                out.push('"');
                out
            }
        }
    };
}

/// A runner of either wasmtime version.
trait Run {
    fn run(&self, code: &str) -> String;
}

impl Run for v48::Runner {
    fn run(&self, code: &str) -> String {
        v48::Runner::run(self, code)
    }
}

impl Run for v51::Runner {
    fn run(&self, code: &str) -> String {
        v51::Runner::run(self, code)
    }
}

engine!(v48, wasmtime48);
engine!(v51, wasmtime51);

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The median time of `runs` calls of `run`, in milliseconds.
fn timed(runs: usize, mut run: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&mut samples)
}

fn main() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (rounds, runs) = (env("ROUNDS", 7), env("RUNS", 2000));
    let wasm = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/dist/python.wasm")).unwrap();
    // ENGINES=A.wasm,B.wasm: two engine files, both on wasmtime 48 ("48" below is A, "51" is B).
    let engines = std::env::var("ENGINES").ok().map(|pair| {
        let (a, b) = pair.split_once(',').expect("ENGINES=A.wasm,B.wasm");
        (std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), pair.clone())
    });
    let t = Instant::now();
    let old = v48::Runner::new(engines.as_ref().map_or(&wasm, |(a, _, _)| a));
    let compile48 = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let new: Box<dyn Run> = match &engines {
        Some((_, b, _)) => Box::new(v48::Runner::new(b)),
        None => Box::new(v51::Runner::new(&wasm)),
    };
    let compile51 = t.elapsed().as_secs_f64();
    match &engines {
        Some((_, _, pair)) => println!("comparing {pair} on wasmtime 48: below, 48 is the first and 51 the second"),
        None => println!("first compile: wasmtime 48 {compile48:.2} s, wasmtime 51 {compile51:.2} s"),
    }
    assert_eq!(old.run("1+1"), r#"{"value":2}"#);
    assert_eq!(new.run("1+1"), r#"{"value":2}"#);
    let (mut trivial, mut cpu) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let measure = |first_is_48: bool| {
            let one = |use48: bool| {
                if use48 {
                    (timed(runs, || drop(old.run("1+1"))), timed(5, || drop(old.run(CPU_BOUND))))
                } else {
                    (timed(runs, || drop(new.run("1+1"))), timed(5, || drop(new.run(CPU_BOUND))))
                }
            };
            let a = one(first_is_48);
            let b = one(!first_is_48);
            if first_is_48 { (a, b) } else { (b, a) }
        };
        let ((t48, c48), (t51, c51)) = measure(round % 2 == 0);
        println!(
            "round {}: `1+1` 48 {:.3} ms, 51 {:.3} ms · CPU-bound 48 {:.1} ms, 51 {:.1} ms",
            round + 1,
            t48,
            t51,
            c48,
            c51
        );
        trivial.push(t51 / t48);
        cpu.push(c51 / c48);
    }
    for (label, ratios) in [("`1+1`, fresh instance", &mut trivial), ("CPU-bound script", &mut cpu)] {
        let m = median(ratios);
        println!(
            "ratio 51 / 48, {label}: {m:.2}x (spread {:.2}-{:.2}x over {rounds} rounds)",
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}
