//! The `js` kernel: runs JavaScript in QuickJS compiled to WebAssembly (`guests/js`, committed pre-initialised as
//! `guests/dist/js.wasm`), one fresh instance of the snapshot per run.
//!
//! It owns the JavaScript run semantics (the value of the last expression, awaited when it is a promise, as JSON;
//! exceptions with their stack; `console`, `env`, `fs`, `tools`, `fetch`, `display`) and the host side of the guest's bridge
//! (`wasmagent.result`, `wasmagent.tool_call`, `wasmagent.tool_response`), which checks every pointer and length,
//! every grant, every size cap and `max_host_calls`. Files, environment, output capture, time, fuel and memory are
//! the wasi kernel's: the engine module runs through [`wasmagent_kernel_wasi::host`], so a script is held to the
//! manifest exactly as a WebAssembly tool is.
//!
//! It must not decide policy, and must not give scripts anything the manifest does not grant.

#[doc(hidden)]
pub mod fuzzing;
mod session;

pub use session::{JsSession, JsSnapshot};

use std::sync::{Arc, OnceLock};
use wasmagent_egress::Egress;
use wasmagent_engine::{CacheSource, CodeTrust, Metering, SandboxEngine, Termination};
use wasmagent_kernel::{Code, ErrorKind, Kernel, KernelError, Language, Outcome, RunReport, RunRequest};
use wasmagent_kernel_wasi::host::{EmptyRoot, GuestIo, ModuleRun, ModuleState, Verdict, module_linker, run_module};
use wasmagent_kernel_wasi::script;
use wasmagent_kernel_wasi::script_bridge::{self as bridge, Bridge, enter};
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::ToolRegistry;
use wasmtime::InstancePre;

/// Name used in reports.
pub const KERNEL_NAME: &str = "js";

/// The pre-initialised QuickJS engine module (see `guests/dist/js.provenance.json`).
pub const ENGINE_WASM: &[u8] = include_bytes!("../../../guests/dist/js.wasm");

/// `sha256:<hex>` of [`ENGINE_WASM`], computed by the build script: the key of its compiled code in the cache.
pub const ENGINE_WASM_DIGEST: &str = env!("ENGINE_WASM_DIGEST");

/// Memory kept outside QuickJS's own heap limit for the engine's snapshot, stack and bookkeeping, so an allocation
/// bomb in JavaScript meets QuickJS's catchable out-of-memory error before the WebAssembly memory limit.
const ENGINE_RESERVE_BYTES: u64 = 6 * 1024 * 1024;

/// The engine module, linked and ready to instantiate.
type EnginePre = InstancePre<ModuleState<Bridge>>;

/// Runs JavaScript. Create one per process and share it.
pub struct JsKernel {
    engine: SandboxEngine,
    tools: Arc<ToolRegistry>,
    egress: Arc<Egress>,
    empty_root: Arc<EmptyRoot>,
    /// Per [`Metering`] (fuel-metered and unmetered code come from separate engines), prepared on first use.
    prepared: [OnceLock<Result<(EnginePre, CacheSource), String>>; 2],
    on_compile: Option<Box<dyn Fn() + Send + Sync>>,
}

impl JsKernel {
    /// A kernel on `engine` offering `tools` (each visible only where the manifest grants it) and `fetch` through
    /// `egress`.
    pub fn new(engine: SandboxEngine, tools: Arc<ToolRegistry>, egress: Arc<Egress>) -> Result<Self, KernelError> {
        Ok(JsKernel {
            engine,
            tools,
            egress,
            empty_root: Arc::new(EmptyRoot::new()?),
            prepared: [OnceLock::new(), OnceLock::new()],
            on_compile: None,
        })
    }

    /// Calls `notify` before the engine module has to be compiled (once per machine; later it loads from the disk
    /// cache), so a front end can say why the first run is slow.
    pub fn on_compile(mut self, notify: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_compile = Some(Box::new(notify));
        self
    }

    /// The engine module, compiled (or loaded from the cache) and linked on first use.
    fn prepared(&self, metering: Metering) -> Result<(&EnginePre, CacheSource), KernelError> {
        let slot = metering.index();
        let prepared = self.prepared[slot].get_or_init(|| {
            let on_compile = self.on_compile.as_deref().map(|f| f as &dyn Fn());
            let (code, source) = self
                .engine
                .load(
                    metering,
                    ENGINE_WASM,
                    ENGINE_WASM_DIGEST,
                    Some(&wasmagent_kernel_wasi::instrument::FS_AUDIT),
                    on_compile,
                    CodeTrust::Shipped,
                    |code| Ok(code.clone()),
                )
                .map_err(|e| e.to_string())?;
            let wasmagent_engine::CompiledCode::Module(module) = code else {
                return Err("the JavaScript engine is not a core module".to_owned());
            };
            let mut linker = module_linker::<Bridge>(self.engine.engine(metering)).map_err(|e| format!("{e:#}"))?;
            bridge::add_to_linker(&mut linker).map_err(|e| format!("{e:#}"))?;
            let pre = linker.instantiate_pre(&module).map_err(|e| format!("{e:#}"))?;
            Ok((pre, source))
        });
        match prepared {
            Ok((pre, source)) => Ok((pre, *source)),
            Err(message) => Err(KernelError::Unavailable(format!("the JavaScript engine cannot be loaded: {message}"))),
        }
    }
}

impl Kernel for JsKernel {
    fn name(&self) -> &'static str {
        KERNEL_NAME
    }

    fn check(&self, manifest: &EffectiveManifest) -> Result<(), KernelError> {
        script::check_manifest(KERNEL_NAME, manifest)
    }

    fn run(&self, manifest: &EffectiveManifest, request: &RunRequest) -> Result<RunReport, KernelError> {
        self.check(manifest)?;
        let Code::Source { language: Language::Js, text } = request.code() else {
            return Err(KernelError::InvalidCode("the js kernel runs JavaScript source".into()));
        };
        script::check_source_size(&self.engine, text)?;
        let (pre, cache) = self.prepared(Metering::for_manifest(manifest))?;
        let input = request_json(&self.tools, manifest, text, &request.name, None);
        let bridge = Bridge::new(self.tools.clone(), manifest, self.egress.run_session(manifest))
            .for_caller(request.caller.clone());
        let io = GuestIo { name: &request.name, args: &request.args, stdin: &request.stdin };
        let run = run_module(&self.engine, &self.empty_root, pre, manifest, io, bridge, |store, instance| {
            enter(store, instance, &input)
        })?;
        Ok(into_report(run, cache, manifest, request))
    }
}

/// The JSON request `wasmagent_run` reads. `interrupt_after_ms`: when QuickJS interrupts the call itself (a
/// session's call, which must leave the engine usable), before the host's deadline would trap it.
fn request_json(
    tools: &ToolRegistry,
    manifest: &EffectiveManifest,
    code: &str,
    name: &str,
    interrupt_after_ms: Option<u64>,
) -> String {
    serde_json::json!({
        "code": code,
        "name": name,
        "tools": tools.granted_names(manifest),
        "memory_limit": manifest.memory_limit_bytes().saturating_sub(ENGINE_RESERVE_BYTES).max(1 << 20),
        "interrupt_after_ms": interrupt_after_ms,
    })
    .to_string()
}

/// The report of a run or a session's call.
fn into_report(
    run: ModuleRun<Bridge>,
    cache: CacheSource,
    manifest: &EffectiveManifest,
    request: &RunRequest,
) -> RunReport {
    run.into_report(KERNEL_NAME, cache, manifest, request.code_digest().to_owned(), |termination, bridge| {
        let (termination, value) = match termination.outcome {
            Outcome::Ok => outcome_of(bridge.result(), manifest),
            _ => (script::explain_stack_overflow(termination, STACK_OVERFLOW), serde_json::Value::Null),
        };
        let (tools, egress, artifacts) = bridge.into_records();
        Verdict { termination, value, tools, egress, artifacts: Some(artifacts) }
    })
}

/// Runaway recursion exhausts the engine's WebAssembly stack: said in JavaScript terms.
const STACK_OVERFLOW: &str = "stack overflow: maximum call stack size exceeded (recursion too deep; not catchable)";

/// The guest's verdict, as sent through `wasmagent.result`: `{"value": ...}` or `{"error": {kind, message, stack}}`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum GuestOutcome {
    Value(serde_json::Value),
    Error { kind: String, message: String, stack: Option<String> },
}

fn outcome_of(result: Option<Result<&[u8], usize>>, manifest: &EffectiveManifest) -> (Termination, serde_json::Value) {
    let internal = |message: String| Termination::failed(Outcome::Error, ErrorKind::Internal, message);
    let bytes = match result {
        None => return (internal("the JavaScript engine returned no result".into()), serde_json::Value::Null),
        Some(Err(len)) => return (script::result_too_large(len, manifest), serde_json::Value::Null),
        Some(Ok(bytes)) => bytes,
    };
    match serde_json::from_slice::<GuestOutcome>(bytes) {
        Ok(GuestOutcome::Value(value)) => (Termination { exit_code: None, ..Termination::finished() }, value),
        Ok(GuestOutcome::Error { kind, message, stack }) => {
            let message = match stack.filter(|s| !s.trim().is_empty()) {
                Some(stack) => format!("{message}\n{}", stack.trim_end()),
                None => message,
            };
            if kind == "timeout" {
                // The engine interrupted a session's call at its own deadline, just before the host's.
                let message = format!(
                    "the run exceeded cpu_ms ({} ms of wall-clock time); the engine was interrupted cleanly and the \
                     session goes on",
                    manifest.cpu_ms()
                );
                return (Termination::failed(Outcome::Timeout, ErrorKind::Timeout, message), serde_json::Value::Null);
            }
            (Termination::failed(Outcome::Error, script::guest_error_kind(&kind), message), serde_json::Value::Null)
        }
        Err(e) => (internal(format!("the JavaScript engine sent a malformed result: {e}")), serde_json::Value::Null),
    }
}
