//! One run: a fresh WASI context and store built from the manifest, the guest's entry point called once, and the
//! result turned into a [`RunReport`].

use crate::WasiKernel;
use crate::fs_audit::{self, DirInfo, FsAudit, HasFsAudit};
use crate::fs_audit_p2::{self, AuditedFilesystem};
use crate::prepared::Prepared;
use std::sync::{Arc, Mutex, PoisonError};
use wasmagent_engine::{CacheSource, CappedOutput, GuestLimiter, ReportParts, Termination};
use wasmagent_kernel::{Denial, KernelError, RunReport, RunRequest};
use wasmagent_manifest::{Access, EffectiveManifest};
use wasmtime::component::ResourceTable;
use wasmtime::{Linker, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Store state for a preview1 module.
pub(crate) struct ModuleState {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
    audit: FsAudit,
}

impl HasFsAudit for ModuleState {
    fn fs_audit(&mut self) -> &mut FsAudit {
        &mut self.audit
    }
}

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

/// The two linkers, built once per kernel.
pub(crate) struct Linkers {
    pub(crate) module: Linker<ModuleState>,
    pub(crate) component: wasmtime::component::Linker<ComponentState>,
}

impl Linkers {
    pub(crate) fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Self> {
        let mut module = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut module, |s: &mut ModuleState| &mut s.wasi)?;
        fs_audit::add_audit_functions(&mut module)?;
        let mut component = wasmtime::component::Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut component)?;
        fs_audit_p2::add_audit_wrappers(&mut component)?;
        Ok(Linkers { module, component })
    }
}

pub(crate) fn run(
    kernel: &WasiKernel,
    prepared: &Prepared,
    cache: CacheSource,
    manifest: &EffectiveManifest,
    request: &RunRequest,
    code_digest: String,
) -> Result<RunReport, KernelError> {
    let stdout = CappedOutput::new(manifest.max_output_bytes());
    let stderr = CappedOutput::new(manifest.max_output_bytes());
    let net_denials = Arc::new(Mutex::new(Vec::new()));
    let (mut builder, preopens) = context_builder(kernel, manifest, request, &stdout, &stderr, &net_denials)?;
    let limiter = kernel.engine.limiter(manifest);
    let engine = kernel.engine.engine();

    let active = kernel.engine.start_run();
    let (result, fuel_given, fuel_left, limiter, mut denials) = match prepared {
        Prepared::Module(pre) => {
            let state = ModuleState { wasi: builder.build_p1(), limiter, audit: FsAudit::new(preopens) };
            let mut store = Store::new(engine, state);
            store.limiter(|s| &mut s.limiter);
            let fuel_given = kernel.engine.arm(&mut store, manifest)?;
            let result = pre
                .instantiate(&mut store)
                .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
                .and_then(|start| start.call(&mut store, ()));
            let fuel_left = store.get_fuel().unwrap_or(0);
            let state = store.into_data();
            (result, fuel_given, fuel_left, state.limiter, state.audit.denials)
        }
        Prepared::Component(pre) => {
            let state = ComponentState {
                ctx: builder.build(),
                table: ResourceTable::new(),
                limiter,
                audit: FsAudit::new(preopens),
            };
            let mut store = Store::new(engine, state);
            store.limiter(|s| &mut s.limiter);
            let fuel_given = kernel.engine.arm(&mut store, manifest)?;
            let result = pre
                .instantiate(&mut store)
                .and_then(|command| command.wasi_cli_run().call_run(&mut store))
                .and_then(|status| {
                    // `run` returning `err` is the component's way of exiting with a failure status.
                    status.map_err(|()| wasmtime_wasi::I32Exit(1).into())
                });
            let fuel_left = store.get_fuel().unwrap_or(0);
            let state = store.into_data();
            (result, fuel_given, fuel_left, state.limiter, state.audit.denials)
        }
    };
    let wall_ms = active.elapsed_ms();
    drop(active);

    let termination = match &result {
        Ok(()) => Termination::finished(),
        Err(error) => Termination::from_error(error, &limiter, [&stdout, &stderr], manifest),
    };
    denials.extend(net_denials.lock().unwrap_or_else(PoisonError::into_inner).drain(..));
    Ok(ReportParts {
        kernel: crate::KERNEL_NAME,
        termination,
        value: serde_json::Value::Null,
        stdout: stdout.take(),
        stderr: stderr.take(),
        denials,
        wall_ms,
        fuel_consumed: fuel_given.saturating_sub(fuel_left),
        memory_peak_bytes: limiter.memory_peak() as u64,
        host_calls: 0,
        code_cache: cache,
        manifest,
        code_digest,
    }
    .into_report())
}

fn context_builder(
    kernel: &WasiKernel,
    manifest: &EffectiveManifest,
    request: &RunRequest,
    stdout: &CappedOutput,
    stderr: &CappedOutput,
    net_denials: &Arc<Mutex<Vec<Denial>>>,
) -> Result<(WasiCtxBuilder, Vec<DirInfo>), KernelError> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .arg(&request.name)
        .args(&request.args)
        .stdin(MemoryInputPipe::new(request.stdin.clone()))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_blocking_current_thread(true)
        .allow_ip_name_lookup(false);
    for (key, value) in manifest.env() {
        builder.env(key, value);
    }

    let mut preopens = Vec::new();
    for mount in manifest.mounts() {
        let perms = match mount.access {
            Access::ReadOnly => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&mount.host, &mount.guest, perms)
            .map_err(|e| KernelError::Unavailable(format!("cannot open mount {}: {e:#}", mount.host.display())))?;
        preopens.push(DirInfo { guest_path: mount.guest.clone(), mount: Some((mount.guest.clone(), mount.access)) });
    }
    if !manifest.mounts().iter().any(|m| m.guest == "/") {
        builder
            .preopened_dir(kernel.empty_root.path(), "/", FsPerms::ReadOnly)
            .map_err(|e| KernelError::Unavailable(format!("cannot open the empty root: {e:#}")))?;
        preopens.push(DirInfo { guest_path: "/".into(), mount: None });
    }

    // Components may create sockets, but no address is ever allowed; each attempt is reported.
    let denials = net_denials.clone();
    builder.socket_addr_check(move |addr, use_| {
        let capability = match use_ {
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => "net.bind",
            _ => "net.connect",
        };
        denials.lock().unwrap_or_else(PoisonError::into_inner).push(Denial {
            capability: capability.into(),
            target: addr.to_string(),
            reason: "the wasi kernel gives guests no sockets; network access goes through allowed_hosts in a \
                     script kernel"
                .into(),
        });
        Box::pin(async { false })
    });
    Ok((builder, preopens))
}
