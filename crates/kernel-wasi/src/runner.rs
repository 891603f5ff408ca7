//! One run of the wasi kernel: a module's `_start` through [`crate::host::run_module`], or a component's
//! `wasi:cli/run`, turned into a [`RunReport`].

use crate::WasiKernel;
use crate::fs_audit::FsAudit;
use crate::fs_audit_p2::{self, AuditedFilesystem};
use crate::host::{GuestIo, WasiEnvironment, run_module};
use crate::prepared::Prepared;
use wasmagent_engine::{CacheSource, GuestLimiter, Metering, ReportParts};
use wasmagent_kernel::{KernelError, RunReport, RunRequest};
use wasmagent_manifest::EffectiveManifest;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Store state for a preview2 component.
pub(crate) struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
    audit: FsAudit,
}

impl AuditedFilesystem for ComponentState {
    fn audit(&mut self) -> &mut FsAudit {
        &mut self.audit
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// The component linker, built once per kernel.
pub(crate) fn component_linker(
    engine: &wasmtime::Engine,
) -> wasmtime::Result<wasmtime::component::Linker<ComponentState>> {
    let mut component = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut component)?;
    fs_audit_p2::add_audit_wrappers(&mut component)?;
    Ok(component)
}

pub(crate) fn run(
    kernel: &WasiKernel,
    prepared: &Prepared,
    cache: CacheSource,
    manifest: &EffectiveManifest,
    request: &RunRequest,
    code_digest: String,
) -> Result<RunReport, KernelError> {
    let io = GuestIo { name: &request.name, args: &request.args, stdin: &request.stdin };
    let run = match prepared {
        Prepared::Module(pre) => {
            run_module(&kernel.engine, &kernel.empty_root, pre, manifest, io, (), |store, instance| {
                instance.get_typed_func::<(), ()>(&mut *store, "_start")?.call(store, ())
            })?
        }
        Prepared::Component(pre) => {
            let mut env = WasiEnvironment::new(&kernel.empty_root, manifest, io)?;
            let state = ComponentState {
                ctx: env.builder.build(),
                table: ResourceTable::new(),
                limiter: kernel.engine.limiter(manifest),
                audit: FsAudit::new(std::mem::take(&mut env.preopens)),
            };
            let active = kernel.engine.start_run();
            let mut store = Store::new(kernel.engine.engine(Metering::for_manifest(manifest)), state);
            store.limiter(|s| &mut s.limiter);
            let fuel_given = kernel.engine.arm(&mut store, manifest)?;
            let result = pre
                .instantiate(&mut store)
                .and_then(|command| command.wasi_cli_run().call_run(&mut store))
                // `run` returning `err` is the component's way of exiting with a failure status.
                .and_then(|status| status.map_err(|()| wasmtime_wasi::I32Exit(1).into()));
            let fuel_consumed = fuel_given.saturating_sub(store.get_fuel().unwrap_or(0));
            let wall_ms = active.elapsed_ms();
            drop(active);
            let state = store.into_data();
            env.conclude(result, &state.limiter, state.audit, fuel_consumed, wall_ms, manifest, ())
        }
    };
    Ok(ReportParts {
        kernel: crate::KERNEL_NAME,
        termination: run.termination,
        value: serde_json::Value::Null,
        stdout: run.stdout,
        stderr: run.stderr,
        denials: run.denials,
        tool_calls: Vec::new(),
        wall_ms: run.wall_ms,
        fuel_consumed: run.fuel_consumed,
        memory_peak_bytes: run.memory_peak_bytes,
        host_calls: 0,
        code_cache: cache,
        manifest,
        code_digest,
    }
    .into_report())
}
