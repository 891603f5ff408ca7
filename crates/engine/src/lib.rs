//! The wasmtime host that every wasmtime-based kernel (wasi, js, python) shares.
//!
//! This crate owns how untrusted WebAssembly is compiled and held: the [`SandboxEngine`] (wasmtime configured for
//! untrusted code: pooling allocator sized from the operator's ceilings, epoch interruption, fuel when a manifest
//! sets it (see [`Metering`]), no threads), the
//! epoch ticker that turns `cpu_ms` into a deadline, the [`GuestLimiter`] that enforces `memory_limit_bytes`,
//! [`CappedOutput`] for bounded stdout/stderr, the compiled-code cache (on disk, keyed by content and engine
//! compatibility), and [`Termination`], which turns how a call ended into a report outcome.
//!
//! It must not decide policy (that is `wasmagent-manifest`) and must not know any guest language: kernels build
//! their linkers and WASI contexts on top of it. Start with [`SandboxEngine::new`].

mod cache;
mod epoch;
mod limiter;
mod output;
mod report;
mod termination;

pub use cache::{CacheSource, CompiledCode, DEFAULT_MAX_CACHE_BYTES, ModuleTransform, RewriteFn};
pub use epoch::ActiveRun;
pub use limiter::{GuestLimiter, LimitExceeded};
pub use output::{CappedOutput, CapturedOutput};
pub use report::ReportParts;
pub use termination::{MAX_OPEN_HANDLES, Termination};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmagent_kernel::KernelError;
use wasmagent_manifest::{EffectiveManifest, ManifestCeilings};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Store};

/// How the engine is set up. The defaults suit a CLI or a small server; [`EngineOptions::ceilings`] must be the
/// same ceilings manifests are resolved against, because the memory pool is sized from them.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The operator's ceilings. The pool reserves `ceilings.memory_limit_bytes` of address space per memory slot.
    pub ceilings: ManifestCeilings,
    /// How many instances may be alive at once across all runs (pool slots). Default 128.
    pub pool_slots: u32,
    /// Where compiled code is kept between processes. `None` keeps it in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes of compiled code kept under `cache_dir`, all entries together; the least recently used go first.
    /// Default [`DEFAULT_MAX_CACHE_BYTES`] (1 GiB). Writers running at once can each pass it by the entry they
    /// write. 0 writes nothing new.
    pub max_cache_bytes: u64,
    /// Largest module or component accepted, in bytes. Default 64 MiB.
    pub max_code_bytes: usize,
    /// Largest number of elements one table may hold. Default 1 000 000.
    pub max_table_elements: usize,
    /// Longest time compiling one guest module or component may take, in milliseconds; past it the code is
    /// refused. Default 20 000. The engines wasmagent ships (JavaScript, Python) are not held to it.
    pub max_compile_ms: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            ceilings: ManifestCeilings::default(),
            pool_slots: 128,
            cache_dir: None,
            max_cache_bytes: DEFAULT_MAX_CACHE_BYTES,
            max_code_bytes: 64 * 1024 * 1024,
            max_table_elements: 1_000_000,
            max_compile_ms: 20_000,
        }
    }
}

/// Who wrote the code being compiled, which decides whether [`EngineOptions::max_compile_ms`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeTrust {
    /// Code from a run request: held to the compile limit.
    Guest,
    /// An engine shipped with wasmagent (the JavaScript and Python interpreters), compiled once per machine.
    Shipped,
}

/// Whether a run counts fuel. Fuel metering costs 20–50% on CPU-bound code, so it is compiled in only for runs
/// whose manifest sets `fuel`; the two kinds of compiled code need two wasmtime engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metering {
    /// The manifest sets `fuel`: instructions are counted and the budget enforced.
    Fuel,
    /// No fuel budget: only `cpu_ms` bounds the run, and `usage.fuel_consumed` is 0.
    Off,
}

impl Metering {
    /// The metering a manifest asks for.
    pub fn for_manifest(manifest: &EffectiveManifest) -> Self {
        if manifest.fuel().is_some() { Metering::Fuel } else { Metering::Off }
    }

    /// 0 for `Fuel`, 1 for `Off`: the slot of per-metering arrays (engines here, linkers and prepared code in the
    /// kernels).
    pub fn index(self) -> usize {
        match self {
            Metering::Fuel => 0,
            Metering::Off => 1,
        }
    }
}

/// A wasmtime [`Engine`] configured for untrusted code, with its epoch ticker and code cache.
///
/// Cheap to share (`Arc` inside); create one per process.
#[derive(Clone)]
pub struct SandboxEngine {
    inner: Arc<Inner>,
}

struct Inner {
    /// Indexed by [`Metering::index`].
    engines: [Engine; 2],
    caches: [cache::CodeCache; 2],
    ticker: epoch::EpochTicker,
    options: EngineOptions,
}

impl SandboxEngine {
    /// Builds the engine. Fails only if wasmtime rejects the configuration (for example a pool too large for the
    /// address space).
    pub fn new(options: EngineOptions) -> Result<Self, KernelError> {
        let scanning = pagemap_scan_is_safe();
        // Operators explaining per-run latency need to know which reset a host got (`WASMAGENT_LOG=info`).
        let kept_mib = keep_resident_bytes(scanning) >> 20;
        if scanning {
            tracing::info!(
                "memory slots reset with PAGEMAP_SCAN: only pages a run dirtied, {kept_mib} MiB kept resident"
            );
        } else {
            tracing::info!(
                "memory slots reset without PAGEMAP_SCAN (swap, or no kernel support): {kept_mib} MiB kept resident"
            );
        }
        let build = |metering| {
            Engine::new(&engine_config(&options, metering, scanning))
                .map_err(|e| KernelError::Unavailable(format!("cannot configure the WebAssembly engine: {e:#}")))
        };
        let engines = [build(Metering::Fuel)?, build(Metering::Off)?];
        let shared = Arc::new(cache::Shared::default());
        let caches = engines.clone().map(|engine| {
            cache::CodeCache::new(&engine, options.cache_dir.clone(), options.max_cache_bytes, shared.clone())
        });
        let ticker = epoch::EpochTicker::start(engines.to_vec());
        Ok(SandboxEngine { inner: Arc::new(Inner { engines, caches, ticker, options }) })
    }

    /// The wasmtime engine for `metering`, for building linkers.
    pub fn engine(&self, metering: Metering) -> &Engine {
        &self.inner.engines[metering.index()]
    }

    /// The options the engine was built with.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// Compiles (or loads from the disk cache) a module or component and passes it to `accept`, which links it (or
    /// otherwise decides whether the kernel can run it) and returns what the kernel keeps. `wasm` may be binary or
    /// text format; a core module is first passed through `transform` when one is given. `on_compile` is called
    /// just before a real compilation starts, so front ends can tell the user why the first run is slow.
    /// [`CodeTrust::Guest`] code is refused when compiling it takes longer than [`EngineOptions::max_compile_ms`].
    ///
    /// Compiled code reaches the disk cache only once `accept` returns `Ok`, so refused code leaves no entry (and
    /// a cached entry `accept` refuses is removed).
    #[allow(clippy::too_many_arguments, reason = "each argument is one decision of the caller's")]
    pub fn load<T>(
        &self,
        metering: Metering,
        wasm: &[u8],
        digest: &str,
        transform: Option<&ModuleTransform<'_>>,
        on_compile: Option<&dyn Fn()>,
        trust: CodeTrust,
        accept: impl FnOnce(&CompiledCode) -> Result<T, KernelError>,
    ) -> Result<(T, CacheSource), KernelError> {
        if wasm.len() > self.inner.options.max_code_bytes {
            return Err(KernelError::InvalidCode(format!(
                "the code is {} bytes; the largest accepted is {} bytes",
                wasm.len(),
                self.inner.options.max_code_bytes
            )));
        }
        let i = metering.index();
        let limit = match trust {
            CodeTrust::Guest => Some(Duration::from_millis(self.inner.options.max_compile_ms)),
            CodeTrust::Shipped => None,
        };
        self.inner.caches[i].load(&self.inner.engines[i], wasm, digest, transform, on_compile, limit, accept)
    }

    /// Marks a run as started: the epoch ticker runs while at least one run is active. Keep the guard alive for
    /// the whole run.
    pub fn start_run(&self) -> ActiveRun {
        self.inner.ticker.start_run()
    }

    /// A limiter enforcing the manifest's memory limit and the engine's table limit.
    pub fn limiter(&self, manifest: &EffectiveManifest) -> GuestLimiter {
        GuestLimiter::new(
            usize::try_from(manifest.memory_limit_bytes()).unwrap_or(usize::MAX),
            self.inner.options.max_table_elements,
        )
    }

    /// Applies the manifest's time and fuel limits to a fresh store (created on the engine for
    /// [`Metering::for_manifest`]). Returns the fuel given (0 when unmetered). Call right before entering the guest.
    pub fn arm<T>(&self, store: &mut Store<T>, manifest: &EffectiveManifest) -> Result<u64, KernelError> {
        let fuel = manifest.fuel().unwrap_or(0);
        if manifest.fuel().is_some() {
            store.set_fuel(fuel).map_err(|e| KernelError::Unavailable(format!("cannot set fuel: {e:#}")))?;
        }
        // The epoch ticker can run a few milliseconds behind and then catch up in one burst; so when the epoch
        // deadline arrives, check the real clock and extend by what is left rather than stop a run early.
        let deadline = Instant::now() + Duration::from_millis(manifest.cpu_ms());
        store.set_epoch_deadline(epoch::ticks_for(manifest.cpu_ms()));
        store.epoch_deadline_callback(move |_| {
            let now = Instant::now();
            if now >= deadline {
                Err(wasmtime::Trap::Interrupt.into())
            } else {
                let left_ms = u64::try_from(deadline.duration_since(now).as_millis()).unwrap_or(u64::MAX);
                Ok(wasmtime::UpdateDeadline::Continue(epoch::ticks_for(left_ms.max(1))))
            }
        });
        Ok(fuel)
    }
}

/// Core instances one component may instantiate. A CPython component built by componentize-py (CPython, libc, the
/// WASI adapter and their shims) instantiates 14 core modules.
const CORE_INSTANCES_PER_COMPONENT: u32 = 20;
/// Linear memories one component may define (such a component defines 1).
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables one component may define (such a component defines 2).
const TABLES_PER_COMPONENT: u32 = 4;

/// Whether memory slots may be reset with `PAGEMAP_SCAN`: the kernel supports it and the host has no swap.
///
/// wasmtime 48's scan resets only dirty pages that are *present*: a page a run wrote that the kernel then swapped
/// out is neither reset nor decommitted, so the next run in the slot would read it back (the cross-run leak described
/// in wasmtime PR #14357). So the scan is used only when the host has no swap at all; otherwise (or when that cannot
/// be told) slots are reset the slower way, which resets every page that may have been written.
fn pagemap_scan_is_safe() -> bool {
    no_swap(std::fs::read_to_string("/proc/swaps").ok().as_deref())
        && PoolingAllocationConfig::is_pagemap_scan_available()
}

/// Whether `/proc/swaps` (its text, `None` when unreadable) lists no swap device.
fn no_swap(proc_swaps: Option<&str>) -> bool {
    proc_swaps.is_some_and(|text| text.lines().skip(1).all(|line| line.trim().is_empty()))
}

/// How much of a reused memory slot is reset in place rather than decommitted: up to 32 MiB when only the pages a
/// run dirtied are reset (`scanning`), else 4 MiB, since without the scan every kept byte is reset on every run.
fn keep_resident_bytes(scanning: bool) -> usize {
    if scanning { 32 << 20 } else { 4 << 20 }
}

/// `scanning`: whether memory slots are reset with `PAGEMAP_SCAN` ([`pagemap_scan_is_safe`]).
fn engine_config(options: &EngineOptions, metering: Metering, scanning: bool) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let slots = options.pool_slots.max(1);
    let memory_ceiling = usize::try_from(options.ceilings.memory_limit_bytes).unwrap_or(usize::MAX);
    // Each pool slot can hold one component with all of its core instances, memories and tables, so `pool_slots`
    // runs of any kernel can be alive at once.
    pool.total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(slots.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(slots)
        .total_component_instances(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(memory_ceiling)
        .table_elements(options.max_table_elements)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_unused_warm_slots(slots / 4);
    // Reset a reused memory slot in place instead of discarding it: a pre-initialised engine touches hundreds of
    // pages of its snapshot per run, and re-faulting them cost more than half of a JavaScript run. With
    // PAGEMAP_SCAN (Linux 6.7+) only the pages a run dirtied are reset, so up to 32 MiB (the whole snapshot of the
    // Python engine) can stay resident; without it every kept byte is reset on every run, so only 4 MiB are kept
    // (measured in one benchmark run, 4 MiB without the scan → 32 MiB with it: JavaScript `1+1` 129 µs → 33 µs,
    // Python `1+1` 2.67 ms → 2.08 ms).
    pool.pagemap_scan(if scanning { Enabled::Yes } else { Enabled::No })
        .linear_memory_keep_resident(keep_resident_bytes(scanning));

    // Shared memories and threads are not compiled into this build (wasmtime's `threads` feature is off), so a
    // guest can never spawn host threads or share memory across runs.
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .consume_fuel(metering == Metering::Fuel)
        .cranelift_opt_level(OptLevel::Speed)
        .parallel_compilation(true)
        .wasm_component_model(true)
        .max_wasm_stack(1 << 20);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pagemap_scan_is_used_only_on_hosts_without_swap() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(no_swap(Some(header)));
        let with_swap = format!("{header}/dev/zram0                              partition\t8388604\t\t0\t\t100\n");
        assert!(!no_swap(Some(&with_swap)));
        assert!(!no_swap(None), "unknown: assume swap");
    }
}
