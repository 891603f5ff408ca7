//! Python sessions: one CPython instance kept between calls ([`PythonSession`]).
//!
//! Every call runs in one namespace kept for the instance (the engine's `{"session": true}` requests), so
//! variables, functions, classes and imports one call defines are there in the next.
//!
//! A call that ends with a Python exception or `sys.exit` leaves the interpreter usable. A call that traps
//! (timeout, fuel, memory growth past the limit, output flood, stack overflow) stopped CPython part-way, and
//! wasmtime does not let a component instance that trapped be entered again, so it ends the session: the report
//! says so in `session_ended`, and the next call is refused with that reason.
//!
//! Sessions cannot be forked: the engine is a component, and wasmtime does not expose a component's inner core
//! memories, globals and tables, so there is no honest way to copy its state into a new instance (re-running the
//! session's code would not be a copy: it repeats side effects and may compute different values).

use crate::bridge::Bridge;
use crate::{KERNEL_NAME, PythonKernel, enter, into_report};
use std::sync::Arc;
use wasmagent_egress::Egress;
use wasmagent_engine::{CacheSource, Metering, SandboxEngine};
use wasmagent_kernel::{Code, Kernel, KernelError, Language, RunReport, RunRequest, Session};
use wasmagent_kernel_wasi::host::GuestIo;
use wasmagent_kernel_wasi::script;
use wasmagent_kernel_wasi::session::{ComponentSession, SessionBook, check_scratch_path};
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::ToolRegistry;

/// The program name a session's instance is created with (each call names its own script).
const SESSION_NAME: &str = "session.py";

/// Why a Python session cannot be forked.
const FORK_REFUSED: &str = "the Python engine is a WebAssembly component, and wasmtime does not expose a \
    component's inner memories, globals and tables, so its state cannot be copied into a new instance (re-running \
    the session's code is not a copy, and is never done silently)";

/// A live Python instance kept between calls; see the module documentation.
pub struct PythonSession {
    engine: SandboxEngine,
    tools: Arc<ToolRegistry>,
    egress: Arc<Egress>,
    cache: CacheSource,
    manifest: EffectiveManifest,
    instance: ComponentSession<Bridge>,
    book: SessionBook,
}

impl PythonKernel {
    /// Opens a session under `manifest`: a fresh engine instance and scratch directory (at
    /// [`wasmagent_kernel_wasi::session::SCRATCH_GUEST_PATH`], holding at most `scratch_limit` bytes after a call).
    pub fn open_session(&self, manifest: &EffectiveManifest, scratch_limit: u64) -> Result<PythonSession, KernelError> {
        self.check(manifest)?;
        check_scratch_path(KERNEL_NAME, manifest)?;
        let (pre, cache) = self.prepared(Metering::for_manifest(manifest))?;
        let io = GuestIo { name: SESSION_NAME, args: &[], stdin: &[] };
        let bridge = Bridge::new(self.tools.clone(), manifest, self.egress.run_session(manifest));
        let instance = ComponentSession::open(&self.engine, &self.empty_root, pre, manifest, io, bridge)?;
        Ok(PythonSession {
            engine: self.engine.clone(),
            tools: self.tools.clone(),
            egress: self.egress.clone(),
            cache,
            manifest: manifest.clone(),
            instance,
            book: SessionBook::new(scratch_limit),
        })
    }
}

impl Session for PythonSession {
    fn kernel(&self) -> &'static str {
        KERNEL_NAME
    }

    fn run(&mut self, request: &RunRequest) -> Result<RunReport, KernelError> {
        self.book.next_call()?;
        let Code::Source { language: Language::Python, text } = request.code() else {
            return Err(KernelError::InvalidCode("a Python session runs Python source".into()));
        };
        script::check_source_size(&self.engine, text)?;
        let manifest = &self.manifest;
        let input = serde_json::json!({
            "code": text,
            "name": request.name,
            "args": [],
            "env": manifest.env(),
            "session": true,
        })
        .to_string();
        let bridge = Bridge::new(self.tools.clone(), manifest, self.egress.run_session(manifest))
            .for_caller(request.caller.clone());
        let mut answer = None;
        let call = self.instance.call(&self.engine, manifest, None, bridge, |store, instance| {
            answer = Some(enter(store, instance, &input)?);
            Ok(())
        })?;
        let mut report = into_report(call.run, self.cache, manifest, request, answer.as_deref());
        let scratch = if call.usable { self.instance.scratch_bytes() } else { Ok(0) };
        self.book.finish(&mut report, call.usable, scratch);
        Ok(report)
    }

    fn fork(&mut self) -> Result<Box<dyn Session>, KernelError> {
        self.book.next_call()?;
        Err(KernelError::ForkUnsupported { kernel: KERNEL_NAME, reason: FORK_REFUSED.into() })
    }

    fn snapshot(&mut self) -> Result<Arc<dyn std::any::Any + Send + Sync>, KernelError> {
        self.book.next_call()?;
        Err(KernelError::ForkUnsupported { kernel: KERNEL_NAME, reason: FORK_REFUSED.into() })
    }

    fn end(&mut self, reason: String) {
        self.book.end(reason);
    }

    fn ended(&self) -> Option<&str> {
        self.book.ended()
    }

    fn calls(&self) -> u64 {
        self.book.calls()
    }
}
