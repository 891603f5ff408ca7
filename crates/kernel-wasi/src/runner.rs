//! One run of the wasi kernel: a module's `_start` through [`crate::host::run_module`], or a component's
//! `wasi:cli/run` through [`crate::component_host::run_component`] (with `wasi:http` through the egress path),
//! turned into a [`RunReport`]. Modules get no network.

use crate::WasiKernel;
use crate::component_host::run_component;
use crate::host::{GuestIo, Verdict, run_module};
use crate::prepared::Prepared;
use wasmagent_engine::CacheSource;
use wasmagent_kernel::{KernelError, RunReport, RunRequest};
use wasmagent_manifest::EffectiveManifest;

pub(crate) fn run(
    kernel: &WasiKernel,
    prepared: &Prepared,
    cache: CacheSource,
    manifest: &EffectiveManifest,
    request: &RunRequest,
    code_digest: String,
) -> Result<RunReport, KernelError> {
    let io = GuestIo { name: &request.name, args: &request.args, stdin: &request.stdin };
    let mut egress = None;
    let run = match prepared {
        Prepared::Module(pre) => {
            run_module(&kernel.engine, &kernel.empty_root, pre, manifest, io, (), |store, instance| {
                instance.get_typed_func::<(), ()>(&mut *store, "_start")?.call(store, ())
            })?
        }
        Prepared::Component(pre) => {
            let session = kernel.egress.run_session(manifest);
            egress = Some(session.clone());
            run_component(&kernel.engine, &kernel.empty_root, manifest, io, Some(session), (), |store| {
                pre.instantiate(&mut *store)
                    .and_then(|command| command.wasi_cli_run().call_run(&mut *store))
                    // `run` returning `err` is the component's way of exiting with a failure status.
                    .and_then(|status| status.map_err(|()| wasmtime_wasi::I32Exit(1).into()))
            })?
        }
    };
    Ok(run.into_report(crate::KERNEL_NAME, cache, manifest, code_digest, |termination, ()| Verdict {
        termination,
        value: serde_json::Value::Null,
        tools: Default::default(),
        egress: egress.map(|session| session.take_records()).unwrap_or_default(),
        artifacts: None,
    }))
}
