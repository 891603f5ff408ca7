//! The `wasi` kernel: runs WASI preview1 command modules and WASI preview2 command components on wasmtime, under
//! an [`EffectiveManifest`].
//!
//! It owns the translation of a manifest into a WASI context: preopens from the mounts (read-only or read-write,
//! enforced by wasmtime-wasi and cap-std), the environment from `env` only, arguments and stdin from the request,
//! stdout and stderr captured up to `max_output_bytes`, and no sockets. Components may import `wasi:http`, whose
//! requests go through the egress path ([`wasmagent_egress`]: `allowed_hosts`, the address floor, the HTTP caps);
//! modules get no network. Time, fuel and memory limits come from
//! [`wasmagent_engine`]. `proc_exit(n)` becomes outcome `exit` with `exit_code` n; it never exits the host.
//!
//! It must not decide policy: it applies an effective manifest.
//!
//! Guests see an empty read-only directory at `/` unless a mount is placed there, so that an access outside every
//! mount reaches the host and is reported in `denials` instead of failing silently inside the guest's libc.

pub mod artifacts;
mod clock;
pub mod component_host;
mod deadline;
mod fs_audit;
mod fs_audit_p2;
pub mod host;
mod http_hooks;
pub mod instrument;
mod prepared;
mod runner;
pub mod script;
pub mod script_bridge;
pub mod session;
mod sockets_audit;
mod special_files;

use std::sync::{Arc, Mutex};
use wasmagent_egress::Egress;
use wasmagent_engine::{Metering, SandboxEngine};
use wasmagent_kernel::{Code, Kernel, KernelError, RunReport, RunRequest};
use wasmagent_manifest::EffectiveManifest;

/// Name used in reports.
pub const KERNEL_NAME: &str = "wasi";

/// Runs WebAssembly modules and components. Create one per process and share it; runs are independent.
pub struct WasiKernel {
    engine: SandboxEngine,
    /// Per [`Metering`]: fuel-metered code and unmetered code live in separate wasmtime engines.
    module_linkers: [wasmtime::Linker<host::ModuleState<()>>; 2],
    component_linkers: [wasmtime::component::Linker<component_host::ComponentState<()>>; 2],
    prepared: Mutex<prepared::PreparedCache>,
    empty_root: host::EmptyRoot,
    egress: Arc<Egress>,
    on_compile: Option<Box<dyn Fn() + Send + Sync>>,
}

impl WasiKernel {
    /// A kernel on `engine`; components' `wasi:http` requests go through `egress`.
    pub fn new(engine: SandboxEngine, egress: Arc<Egress>) -> Result<Self, KernelError> {
        let setup = |e: wasmtime::Error| KernelError::Unavailable(format!("cannot set up WASI: {e:#}"));
        let module_linkers = [
            host::module_linker(engine.engine(Metering::Fuel)).map_err(setup)?,
            host::module_linker(engine.engine(Metering::Off)).map_err(setup)?,
        ];
        let component_linkers = [
            component_host::component_linker(engine.engine(Metering::Fuel)).map_err(setup)?,
            component_host::component_linker(engine.engine(Metering::Off)).map_err(setup)?,
        ];
        let empty_root = host::EmptyRoot::new()?;
        Ok(WasiKernel {
            engine,
            module_linkers,
            component_linkers,
            prepared: Mutex::new(prepared::PreparedCache::new(64)),
            empty_root,
            egress,
            on_compile: None,
        })
    }

    /// Calls `notify` before a module has to be compiled (not found in memory or on disk), so a front end can say
    /// why this run is slower.
    pub fn on_compile(mut self, notify: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_compile = Some(Box::new(notify));
        self
    }
}

impl Kernel for WasiKernel {
    fn name(&self) -> &'static str {
        KERNEL_NAME
    }

    fn check(&self, _manifest: &EffectiveManifest) -> Result<(), KernelError> {
        Ok(())
    }

    fn run(&self, manifest: &EffectiveManifest, request: &RunRequest) -> Result<RunReport, KernelError> {
        self.check(manifest)?;
        let Code::Wasm(bytes) = request.code() else {
            return Err(KernelError::InvalidCode(format!(
                "the wasi kernel runs WebAssembly, not {:?} source",
                request.code().language()
            )));
        };
        let digest = request.code_digest().to_owned();
        let (prepared, cache) = self.prepare(bytes, &digest, Metering::for_manifest(manifest))?;
        runner::run(self, &prepared, cache, manifest, request, digest)
    }
}
