//! Running WASI preview2 components for any kernel: the same WASI environment as modules get, a store with every
//! limit armed, and what came out. The wasi kernel runs `wasi:cli/run` through it; the python kernel runs its
//! engine component's `run` export through it with its own imports.

use crate::clock::{self, ComponentClock, HasRunClock, RunClock};
use crate::deadline;
use crate::fs_audit::FsAudit;
use crate::fs_audit_p2::{self, AuditedFilesystem};
use crate::host::{EmptyRoot, GuestIo, ModuleRun, WasiEnvironment};
use crate::http_hooks::EgressHooks;
use crate::sockets_audit::{self, HasNetDenials, NetDenials};
use wasmagent_egress::EgressSession;
use wasmagent_engine::{GuestLimiter, MAX_OPEN_HANDLES, Metering, SandboxEngine};
use wasmagent_kernel::KernelError;
use wasmagent_manifest::EffectiveManifest;
use wasmtime::Store;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Store state of a component run: WASI, the memory limiter, the filesystem audit, and the kernel's own state `E`.
pub struct ComponentState<E> {
    pub(crate) ctx: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: GuestLimiter,
    pub(crate) audit: FsAudit,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: EgressHooks,
    pub(crate) clock: RunClock,
    pub(crate) net_denials: NetDenials,
    /// The embedding kernel's per-run state (its host functions reach it through the store).
    pub ext: E,
}

impl<E: Send + 'static> AuditedFilesystem for ComponentState<E> {
    fn audit(&mut self) -> &mut FsAudit {
        &mut self.audit
    }
}

impl<E: Send + 'static> HasRunClock for ComponentState<E> {
    fn run_clock(&self) -> RunClock {
        self.clock
    }
}

impl<E: Send + 'static> HasNetDenials for ComponentState<E> {
    fn net_denials(&self) -> &NetDenials {
        &self.net_denials
    }
}

impl<E: Send + 'static> ComponentClock for ComponentState<E> {
    fn clocks(&mut self) -> WasiClocksCtxView<'_> {
        WasiClocksCtxView { ctx: self.ctx.clocks(), table: &mut self.table }
    }
}

impl<E: Send> WasiView for ComponentState<E> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

impl<E: Send> WasiHttpView for ComponentState<E> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// A component linker with WASI preview2 (filesystem path functions report refusals) and `wasi:http` (through the
/// run's egress session). Kernels add their own imports to it.
pub fn component_linker<E: Send + 'static>(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<ComponentState<E>>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)?;
    fs_audit_p2::add_audit_wrappers(&mut linker)?;
    clock::add_clock_wrappers(&mut linker)?;
    deadline::add_deadline_wrappers(&mut linker)?;
    sockets_audit::add_socket_wrappers(&mut linker)?;
    Ok(linker)
}

/// A resource table that holds at most [`MAX_OPEN_HANDLES`] entries.
pub(crate) fn handle_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_OPEN_HANDLES);
    table
}

/// Creates a fresh store held to `manifest` (on the engine its metering needs) and calls `entry` once, which
/// instantiates the component and calls into it. `wasi:http` requests go to `egress`; with none, they are refused.
#[allow(clippy::too_many_arguments, reason = "each argument is one distinct input of a run")]
pub fn run_component<E: Send + 'static>(
    engine: &SandboxEngine,
    root: &EmptyRoot,
    manifest: &EffectiveManifest,
    io: GuestIo<'_>,
    egress: Option<EgressSession>,
    ext: E,
    entry: impl FnOnce(&mut Store<ComponentState<E>>) -> wasmtime::Result<()>,
) -> Result<ModuleRun<E>, KernelError> {
    let mut env = WasiEnvironment::new(root, manifest, io, None)?;
    let state = ComponentState {
        ctx: env.builder.build(),
        table: handle_table(),
        limiter: engine.limiter(manifest),
        audit: FsAudit::new(std::mem::take(&mut env.preopens)),
        http: WasiHttpCtx::new(),
        hooks: EgressHooks::new(egress, env.clock.deadline()),
        clock: env.clock,
        net_denials: env.net_denials.clone(),
        ext,
    };
    let active = engine.start_run();
    let mut store = Store::new(engine.engine(Metering::for_manifest(manifest)), state);
    store.limiter(|s| &mut s.limiter);
    let fuel_given = engine.arm(&mut store, manifest)?;
    let result = entry(&mut store);
    let fuel_consumed = fuel_given.saturating_sub(store.get_fuel().unwrap_or(0));
    let wall_ms = active.elapsed_ms();
    drop(active);
    let state = store.into_data();
    env.conclude(result, &state.limiter, state.audit.into_denials(), fuel_consumed, wall_ms, manifest, state.ext)
}
