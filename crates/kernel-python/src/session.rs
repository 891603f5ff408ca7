//! Python sessions: one CPython instance kept between calls ([`PythonSession`]), which can be forked and
//! snapshotted.
//!
//! Every call runs in one namespace kept for the instance (the engine's `{"session": true}` requests), so
//! variables, functions, classes and imports one call defines are there in the next.
//!
//! A call that ends with a Python exception or `sys.exit` leaves the interpreter usable. A call that traps
//! (timeout, fuel, memory growth past the limit, output flood, stack overflow) stopped CPython part-way through its
//! own bookkeeping, and CPython has no way to be interrupted cleanly from outside its one thread, so it ends the
//! session: the report says so in `session_ended`, and the next call is refused with that reason.
//!
//! A fork or snapshot copies the engine module's whole state (its memory and exported mutable globals; its table
//! never changes after instantiation: `check_forkable`) into a fresh instance of the same engine, and the
//! scratch directory's files into a new one; nothing is shared afterwards.

use crate::{EnginePre, KERNEL_NAME, PythonEngine, PythonKernel, into_report, new_bridge, request_json};
use std::sync::Arc;
use wasmagent_egress::Egress;
use wasmagent_engine::{CacheSource, Metering, SandboxEngine};
use wasmagent_kernel::{Code, Kernel, KernelError, Language, RunReport, RunRequest, Session};
use wasmagent_kernel_wasi::host::{EmptyRoot, GuestIo};
use wasmagent_kernel_wasi::script;
use wasmagent_kernel_wasi::script_bridge::{Bridge, enter};
use wasmagent_kernel_wasi::session::{ModuleSession, ModuleSnapshot, SessionBook, check_scratch_path};
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::ToolRegistry;

/// The program name a session's instance is created with (each call names its own script).
const SESSION_NAME: &str = "session.py";

/// A live Python instance kept between calls; see the module documentation.
pub struct PythonSession {
    engine: SandboxEngine,
    python: PythonEngine,
    tools: Arc<ToolRegistry>,
    egress: Arc<Egress>,
    root: Arc<EmptyRoot>,
    pre: EnginePre,
    cache: CacheSource,
    manifest: EffectiveManifest,
    instance: ModuleSession<Bridge>,
    book: SessionBook,
}

/// A Python session's state held on the host ([`Session::snapshot`]); [`PythonKernel::restore_session`] makes new
/// sessions from it, each a copy.
pub struct PythonSnapshot {
    state: ModuleSnapshot,
    /// The digest of the engine it was taken from: only that engine's instances can hold it.
    engine: String,
    manifest: EffectiveManifest,
    scratch_limit: u64,
}

impl PythonSnapshot {
    /// Bytes of engine memory the snapshot holds.
    pub fn memory_bytes(&self) -> usize {
        self.state.memory_bytes()
    }
}

impl PythonKernel {
    /// Opens a session under `manifest`: a fresh engine instance and scratch directory (at
    /// [`wasmagent_kernel_wasi::session::SCRATCH_GUEST_PATH`], holding at most `scratch_limit` bytes after a call).
    pub fn open_session(&self, manifest: &EffectiveManifest, scratch_limit: u64) -> Result<PythonSession, KernelError> {
        self.check(manifest)?;
        check_scratch_path(KERNEL_NAME, manifest)?;
        let (pre, cache) = self.prepared(Metering::for_manifest(manifest))?;
        let io = GuestIo { name: SESSION_NAME, args: &[], stdin: &[] };
        let bridge = new_bridge(&self.tools, &self.egress, manifest);
        let instance = ModuleSession::open(&self.engine, &self.empty_root, pre, manifest, io, bridge)?;
        Ok(self.session(pre, cache, manifest, instance, scratch_limit))
    }

    /// A new session holding a copy of `snapshot`'s state, under the manifest the snapshot's session had.
    pub fn restore_session(&self, snapshot: &PythonSnapshot) -> Result<PythonSession, KernelError> {
        if snapshot.engine != self.python.digest() {
            return Err(KernelError::Unavailable(format!(
                "the snapshot was taken from the Python engine {}, and this kernel runs {}",
                snapshot.engine,
                self.python.digest()
            )));
        }
        let manifest = &snapshot.manifest;
        let (pre, cache) = self.prepared(Metering::for_manifest(manifest))?;
        let io = GuestIo { name: SESSION_NAME, args: &[], stdin: &[] };
        let bridge = new_bridge(&self.tools, &self.egress, manifest);
        let instance =
            ModuleSession::restore(&self.engine, &self.empty_root, pre, manifest, io, bridge, &snapshot.state)?;
        Ok(self.session(pre, cache, manifest, instance, snapshot.scratch_limit))
    }

    fn session(
        &self,
        pre: &EnginePre,
        cache: CacheSource,
        manifest: &EffectiveManifest,
        instance: ModuleSession<Bridge>,
        scratch_limit: u64,
    ) -> PythonSession {
        PythonSession {
            engine: self.engine.clone(),
            python: self.python.clone(),
            tools: self.tools.clone(),
            egress: self.egress.clone(),
            root: self.empty_root.clone(),
            pre: pre.clone(),
            cache,
            manifest: manifest.clone(),
            instance,
            book: SessionBook::new(scratch_limit),
        }
    }
}

impl PythonSession {
    /// Whether the instance's memory holds `needle` (for tests that look for leaked data).
    #[doc(hidden)]
    pub fn memory_contains(&mut self, needle: &[u8]) -> bool {
        self.instance.memory_contains(needle)
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
        let input = request_json(text, &request.name, &[], manifest, true);
        let bridge = new_bridge(&self.tools, &self.egress, manifest).for_caller(request.caller.clone());
        let call =
            self.instance.call(&self.engine, manifest, bridge, |store, instance| enter(store, instance, &input))?;
        let mut report = into_report(call.run, self.cache, manifest, request);
        let scratch = if call.usable { self.instance.scratch_bytes() } else { Ok(0) };
        self.book.finish(&mut report, call.usable, scratch);
        Ok(report)
    }

    fn fork(&mut self) -> Result<Box<dyn Session>, KernelError> {
        self.book.next_call()?;
        self.python.forkable().map_err(|reason| KernelError::ForkUnsupported { kernel: KERNEL_NAME, reason })?;
        let manifest = &self.manifest;
        let io = GuestIo { name: SESSION_NAME, args: &[], stdin: &[] };
        let bridge = new_bridge(&self.tools, &self.egress, manifest);
        let instance = self.instance.fork(&self.engine, &self.root, &self.pre, manifest, io, bridge)?;
        Ok(Box::new(PythonSession {
            engine: self.engine.clone(),
            python: self.python.clone(),
            tools: self.tools.clone(),
            egress: self.egress.clone(),
            root: self.root.clone(),
            pre: self.pre.clone(),
            cache: self.cache,
            manifest: manifest.clone(),
            instance,
            book: SessionBook::new(self.book.scratch_limit()),
        }))
    }

    fn snapshot(&mut self) -> Result<Arc<dyn std::any::Any + Send + Sync>, KernelError> {
        self.book.next_call()?;
        self.python.forkable().map_err(|reason| KernelError::ForkUnsupported { kernel: KERNEL_NAME, reason })?;
        let state = self.instance.snapshot()?;
        Ok(Arc::new(PythonSnapshot {
            state,
            engine: self.python.digest().to_owned(),
            manifest: self.manifest.clone(),
            scratch_limit: self.book.scratch_limit(),
        }))
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
