//! JavaScript sessions: one QuickJS instance kept between calls ([`JsSession`]).
//!
//! Each call evaluates its code as a global script in the same context, so `var`, `let`, `const`, functions and
//! properties of `globalThis` defined by one call are there in the next (a second `let x` of the same name is a
//! `SyntaxError`, as in any one global scope). There is no module loader, so there are no imports to keep.
//!
//! A call that ends with a JavaScript exception (including QuickJS's own, catchable out-of-memory error) leaves the
//! engine usable. So does a call that runs out of time while executing JavaScript: QuickJS's interrupt handler stops
//! it a little before `cpu_ms` ([`interrupt_after_ms`]) with an uncatchable exception that unwinds the engine
//! cleanly, and the report says `timeout`. A call that traps (the host's deadline, when the engine could not be
//! interrupted in time, e.g. inside one long built-in; fuel; memory growth past the limit; an output flood; a stack
//! overflow) stopped QuickJS part-way through its own bookkeeping, so it ends the session: the report says so in
//! `session_ended`, and the next call is refused with that reason.

use crate::{ENGINE_WASM, EnginePre, JsKernel, KERNEL_NAME, into_report, request_json};
use std::sync::{Arc, OnceLock};
use wasmagent_egress::Egress;
use wasmagent_engine::{CacheSource, Metering, SandboxEngine};
use wasmagent_kernel::{Code, Kernel, KernelError, Language, RunReport, RunRequest, Session};
use wasmagent_kernel_wasi::host::{EmptyRoot, GuestIo};
use wasmagent_kernel_wasi::script;
use wasmagent_kernel_wasi::script_bridge::{Bridge, enter};
use wasmagent_kernel_wasi::session::{ModuleSession, ModuleSnapshot, SessionBook, check_forkable, check_scratch_path};
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::ToolRegistry;

/// The program name a session's instance is created with (each call names its own script).
const SESSION_NAME: &str = "session.js";

/// A live JavaScript instance kept between calls; see the module documentation.
pub struct JsSession {
    engine: SandboxEngine,
    tools: Arc<ToolRegistry>,
    egress: Arc<Egress>,
    root: Arc<EmptyRoot>,
    pre: EnginePre,
    cache: CacheSource,
    manifest: EffectiveManifest,
    instance: ModuleSession<Bridge>,
    book: SessionBook,
}

impl JsKernel {
    /// Opens a session under `manifest`: a fresh engine instance and scratch directory (at
    /// [`wasmagent_kernel_wasi::session::SCRATCH_GUEST_PATH`], holding at most `scratch_limit` bytes after a call).
    pub fn open_session(&self, manifest: &EffectiveManifest, scratch_limit: u64) -> Result<JsSession, KernelError> {
        self.check(manifest)?;
        check_scratch_path(KERNEL_NAME, manifest)?;
        let (pre, cache) = self.prepared(Metering::for_manifest(manifest))?;
        let io = GuestIo { name: SESSION_NAME, args: &[], stdin: &[] };
        let bridge = Bridge::new(self.tools.clone(), manifest, self.egress.run_session(manifest));
        let instance = ModuleSession::open(&self.engine, &self.empty_root, pre, manifest, io, bridge)?;
        Ok(JsSession {
            engine: self.engine.clone(),
            tools: self.tools.clone(),
            egress: self.egress.clone(),
            root: self.empty_root.clone(),
            pre: pre.clone(),
            cache,
            manifest: manifest.clone(),
            instance,
            book: SessionBook::new(scratch_limit),
        })
    }
}

/// When a session's call is interrupted by QuickJS itself: a tenth of `cpu_ms` (at least 5 ms, at most 200 ms)
/// before the host's deadline, so the engine unwinds cleanly instead of being trapped part-way.
fn interrupt_after_ms(manifest: &EffectiveManifest) -> u64 {
    let cpu_ms = manifest.cpu_ms();
    cpu_ms.saturating_sub((cpu_ms / 10).clamp(5, 200))
}

/// A JavaScript session's state held on the host ([`Session::snapshot`]); [`JsKernel::restore_session`] makes
/// new sessions from it, each a copy.
pub struct JsSnapshot {
    state: ModuleSnapshot,
    manifest: EffectiveManifest,
    scratch_limit: u64,
}

impl JsSnapshot {
    /// Bytes of engine memory the snapshot holds.
    pub fn memory_bytes(&self) -> usize {
        self.state.memory_bytes()
    }
}

impl JsKernel {
    /// A new session holding a copy of `snapshot`'s state, under the manifest the snapshot's session had.
    pub fn restore_session(&self, snapshot: &JsSnapshot) -> Result<JsSession, KernelError> {
        let manifest = &snapshot.manifest;
        let (pre, cache) = self.prepared(Metering::for_manifest(manifest))?;
        let io = GuestIo { name: SESSION_NAME, args: &[], stdin: &[] };
        let bridge = Bridge::new(self.tools.clone(), manifest, self.egress.run_session(manifest));
        let instance =
            ModuleSession::restore(&self.engine, &self.empty_root, pre, manifest, io, bridge, &snapshot.state)?;
        Ok(JsSession {
            engine: self.engine.clone(),
            tools: self.tools.clone(),
            egress: self.egress.clone(),
            root: self.empty_root.clone(),
            pre: pre.clone(),
            cache,
            manifest: manifest.clone(),
            instance,
            book: SessionBook::new(snapshot.scratch_limit),
        })
    }
}

/// Whether the engine module's whole state can be copied through its exports ([`check_forkable`]), decided once.
fn engine_forkable() -> Result<(), String> {
    static VERDICT: OnceLock<Result<(), String>> = OnceLock::new();
    VERDICT.get_or_init(|| check_forkable(ENGINE_WASM)).clone()
}

impl JsSession {
    /// Whether the instance's memory holds `needle` (for tests that look for leaked data).
    #[doc(hidden)]
    pub fn memory_contains(&mut self, needle: &[u8]) -> bool {
        self.instance.memory_contains(needle)
    }
}

impl Session for JsSession {
    fn kernel(&self) -> &'static str {
        KERNEL_NAME
    }

    fn run(&mut self, request: &RunRequest) -> Result<RunReport, KernelError> {
        self.book.next_call()?;
        let Code::Source { language: Language::Js, text } = request.code() else {
            return Err(KernelError::InvalidCode("a JavaScript session runs JavaScript source".into()));
        };
        script::check_source_size(&self.engine, text)?;
        let manifest = &self.manifest;
        let input = request_json(&self.tools, manifest, text, &request.name, Some(interrupt_after_ms(manifest)));
        let bridge = Bridge::new(self.tools.clone(), manifest, self.egress.run_session(manifest))
            .for_caller(request.caller.clone());
        let call =
            self.instance.call(&self.engine, manifest, bridge, |store, instance| enter(store, instance, &input))?;
        let mut report = into_report(call.run, self.cache, manifest, request);
        let scratch = if call.usable { self.instance.scratch_bytes() } else { Ok(0) };
        self.book.finish(&mut report, call.usable, scratch);
        Ok(report)
    }

    fn fork(&mut self) -> Result<Box<dyn Session>, KernelError> {
        self.book.next_call()?;
        engine_forkable().map_err(|reason| KernelError::ForkUnsupported { kernel: KERNEL_NAME, reason })?;
        let manifest = &self.manifest;
        let io = GuestIo { name: SESSION_NAME, args: &[], stdin: &[] };
        let bridge = Bridge::new(self.tools.clone(), manifest, self.egress.run_session(manifest));
        let instance = self.instance.fork(&self.engine, &self.root, &self.pre, manifest, io, bridge)?;
        Ok(Box::new(JsSession {
            engine: self.engine.clone(),
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
        engine_forkable().map_err(|reason| KernelError::ForkUnsupported { kernel: KERNEL_NAME, reason })?;
        let state = self.instance.snapshot()?;
        Ok(Arc::new(JsSnapshot { state, manifest: self.manifest.clone(), scratch_limit: self.book.scratch_limit() }))
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
