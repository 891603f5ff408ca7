//! The wasmtime host that every wasmtime-based kernel (wasi, js, python) shares.
//!
//! This crate owns how untrusted WebAssembly is compiled and held: the [`SandboxEngine`] (wasmtime configured for
//! untrusted code: pooling allocator sized from the operator's ceilings, epoch interruption, fuel, no threads), the
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

pub use cache::{CacheSource, CompiledCode, ModuleTransform, RewriteFn};
pub use epoch::ActiveRun;
pub use limiter::{GuestLimiter, LimitExceeded};
pub use output::{CappedOutput, CapturedOutput};
pub use report::ReportParts;
pub use termination::Termination;

use std::path::PathBuf;
use std::sync::Arc;
use wasmagent_kernel::KernelError;
use wasmagent_manifest::{EffectiveManifest, ManifestCeilings};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Store};

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
    /// Largest module or component accepted, in bytes. Default 64 MiB.
    pub max_code_bytes: usize,
    /// Largest number of elements one table may hold. Default 1 000 000.
    pub max_table_elements: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            ceilings: ManifestCeilings::default(),
            pool_slots: 128,
            cache_dir: None,
            max_code_bytes: 64 * 1024 * 1024,
            max_table_elements: 1_000_000,
        }
    }
}

/// Fuel given to a run whose manifest sets none: effectively unbounded, so only `cpu_ms` stops it, while
/// `usage.fuel_consumed` is still measured.
const UNMETERED_FUEL: u64 = u64::MAX / 2;

/// A wasmtime [`Engine`] configured for untrusted code, with its epoch ticker and code cache.
///
/// Cheap to share (`Arc` inside); create one per process.
#[derive(Clone)]
pub struct SandboxEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    ticker: epoch::EpochTicker,
    cache: cache::CodeCache,
    options: EngineOptions,
}

impl SandboxEngine {
    /// Builds the engine. Fails only if wasmtime rejects the configuration (for example a pool too large for the
    /// address space).
    pub fn new(options: EngineOptions) -> Result<Self, KernelError> {
        let engine = Engine::new(&engine_config(&options))
            .map_err(|e| KernelError::Unavailable(format!("cannot configure the WebAssembly engine: {e:#}")))?;
        let cache = cache::CodeCache::new(&engine, options.cache_dir.clone());
        let ticker = epoch::EpochTicker::start(engine.clone());
        Ok(SandboxEngine { inner: Arc::new(Inner { engine, ticker, cache, options }) })
    }

    /// The wasmtime engine, for building linkers.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The options the engine was built with.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// Compiles (or loads from the disk cache) a module or component. `wasm` may be binary or text format; a
    /// core module is first passed through `transform` when one is given. `on_compile` is called just before a real compilation starts, so front ends can tell the user why the
    /// first run is slow.
    pub fn load(
        &self,
        wasm: &[u8],
        digest: &str,
        transform: Option<&ModuleTransform<'_>>,
        on_compile: Option<&dyn Fn()>,
    ) -> Result<(CompiledCode, CacheSource), KernelError> {
        if wasm.len() > self.inner.options.max_code_bytes {
            return Err(KernelError::InvalidCode(format!(
                "the code is {} bytes; the largest accepted is {} bytes",
                wasm.len(),
                self.inner.options.max_code_bytes
            )));
        }
        self.inner.cache.load(&self.inner.engine, wasm, digest, transform, on_compile)
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

    /// Applies the manifest's time and fuel limits to a fresh store. Call right before entering the guest.
    pub fn arm<T>(&self, store: &mut Store<T>, manifest: &EffectiveManifest) -> Result<u64, KernelError> {
        let fuel = manifest.fuel().unwrap_or(UNMETERED_FUEL);
        store.set_fuel(fuel).map_err(|e| KernelError::Unavailable(format!("cannot set fuel: {e:#}")))?;
        store.set_epoch_deadline(epoch::ticks_for(manifest.cpu_ms()));
        store.epoch_deadline_trap();
        Ok(fuel)
    }
}

fn engine_config(options: &EngineOptions) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let slots = options.pool_slots.max(1);
    let memory_ceiling = usize::try_from(options.ceilings.memory_limit_bytes).unwrap_or(usize::MAX);
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .total_stacks(slots)
        .total_component_instances(slots)
        .max_memory_size(memory_ceiling)
        .table_elements(options.max_table_elements)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_unused_warm_slots(slots / 4);

    // Shared memories and threads are not compiled into this build (wasmtime's `threads` feature is off), so a
    // guest can never spawn host threads or share memory across runs.
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .consume_fuel(true)
        .cranelift_opt_level(OptLevel::Speed)
        .parallel_compilation(true)
        .wasm_component_model(true)
        .max_wasm_stack(1 << 20);
    config
}
