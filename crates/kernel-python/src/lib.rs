//! The `python` kernel: runs Python in CPython 3.13 built here for WebAssembly (`guests/python`: a static core
//! module linked with `guests/python/bridge.c` and committed pre-initialised as `guests/dist/python.wasm`), one
//! fresh instance of the snapshot per run.
//!
//! It owns the Python run semantics (the value of a final expression statement as JSON, exceptions with their
//! traceback, `sys.exit` as an exit status, `from wasmagent import tools, http, display`, `urllib.request`). The
//! engine imports the same `wasmagent.*` functions as the JavaScript engine, whose host side
//! ([`wasmagent_kernel_wasi::script_bridge`]) checks every pointer and length, and sends tool calls through the shared
//! [`ToolSession`] rules and HTTP requests through the egress path ([`wasmagent_egress`]). Files, environment,
//! output capture, time, fuel and memory are the wasi kernel's: the engine module runs through
//! [`wasmagent_kernel_wasi::host`], so a script is held to the manifest exactly as a WebAssembly tool is.
//!
//! It must not decide policy, and must not give scripts anything the manifest does not grant.
//!
//! [`ToolSession`]: wasmagent_tools::ToolSession

mod engine_file;
mod session;

pub use engine_file::{PythonEngine, sha256};
pub use session::{PythonSession, PythonSnapshot};

use std::sync::{Arc, OnceLock};
use wasmagent_egress::Egress;
use wasmagent_engine::{CacheSource, CodeTrust, CompiledCode, Metering, SandboxEngine, Termination};
use wasmagent_kernel::bounds::{REPORT_ERROR_BYTES, cut};
use wasmagent_kernel::{Code, ErrorKind, Kernel, KernelError, Language, Outcome, RunReport, RunRequest};
use wasmagent_kernel_wasi::host::{EmptyRoot, GuestIo, ModuleRun, ModuleState, Verdict, module_linker, run_module};
use wasmagent_kernel_wasi::script;
use wasmagent_kernel_wasi::script_bridge::{self as bridge, Bridge, enter};
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::ToolRegistry;
use wasmtime::InstancePre;

/// Name used in reports.
pub const KERNEL_NAME: &str = "python";

/// The pre-initialised CPython engine module (see `guests/dist/python.provenance.json`).
pub const ENGINE_WASM: &[u8] = include_bytes!("../../../guests/dist/python.wasm");

/// `sha256:<hex>` of [`ENGINE_WASM`], computed by the build script: the key of its compiled code in the cache.
pub const ENGINE_WASM_DIGEST: &str = env!("ENGINE_WASM_DIGEST");

/// The engine module, linked and ready to instantiate.
type EnginePre = InstancePre<ModuleState<Bridge>>;

/// Runs Python. Create one per process and share it.
pub struct PythonKernel {
    engine: SandboxEngine,
    python: PythonEngine,
    tools: Arc<ToolRegistry>,
    egress: Arc<Egress>,
    empty_root: Arc<EmptyRoot>,
    /// Per [`Metering`] (fuel-metered and unmetered code come from separate engines), prepared on first use.
    prepared: [OnceLock<Result<(EnginePre, CacheSource), String>>; 2],
    on_compile: Option<Box<dyn Fn() + Send + Sync>>,
}

impl PythonKernel {
    /// A kernel on `engine` offering `tools` (each callable only where the manifest grants it) and HTTP through
    /// `egress`.
    pub fn new(engine: SandboxEngine, tools: Arc<ToolRegistry>, egress: Arc<Egress>) -> Result<Self, KernelError> {
        Ok(PythonKernel {
            engine,
            python: PythonEngine::shipped(),
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

    /// The kernel running `python` instead of the shipped engine (a custom build with declared packages).
    pub fn with_engine(mut self, python: PythonEngine) -> Self {
        self.python = python;
        self.prepared = [OnceLock::new(), OnceLock::new()];
        self
    }

    /// The engine this kernel runs.
    pub fn python_engine(&self) -> &PythonEngine {
        &self.python
    }

    /// The engine module, compiled (or loaded from the cache) and linked on first use.
    fn prepared(&self, metering: Metering) -> Result<(&EnginePre, CacheSource), KernelError> {
        let prepared = self.prepared[metering.index()].get_or_init(|| {
            let on_compile = self.on_compile.as_deref().map(|f| f as &dyn Fn());
            let (code, source) = self
                .engine
                .load(
                    metering,
                    self.python.wasm(),
                    self.python.digest(),
                    Some(&wasmagent_kernel_wasi::instrument::FS_AUDIT),
                    on_compile,
                    CodeTrust::Shipped,
                    |code| Ok(code.clone()),
                )
                .map_err(|e| e.to_string())?;
            let CompiledCode::Module(module) = code else {
                return Err("the Python engine is not a core module".to_owned());
            };
            let mut linker = module_linker::<Bridge>(self.engine.engine(metering)).map_err(|e| format!("{e:#}"))?;
            bridge::add_to_linker(&mut linker).map_err(|e| format!("{e:#}"))?;
            let pre = linker.instantiate_pre(&module).map_err(|e| format!("{e:#}"))?;
            Ok((pre, source))
        });
        match prepared {
            Ok((pre, source)) => Ok((pre, *source)),
            Err(message) => Err(KernelError::Unavailable(format!("the Python engine cannot be loaded: {message}"))),
        }
    }
}

/// A bridge whose `result` takes an answer holding a value up to `max_output_bytes` (sized precisely by
/// [`outcome_of`]) or an error message up to [`MAX_ERROR_ANSWER_BYTES`].
fn new_bridge(tools: &Arc<ToolRegistry>, egress: &Arc<Egress>, manifest: &EffectiveManifest) -> Bridge {
    let value_cap = usize::try_from(manifest.max_output_bytes()).unwrap_or(usize::MAX);
    let cap = value_cap.saturating_add(VALUE_PREFIX.len() + 1).max(MAX_ERROR_ANSWER_BYTES);
    Bridge::new(tools.clone(), manifest, egress.run_session(manifest)).with_result_cap(cap)
}

/// The largest answer taken from the engine whatever `max_output_bytes` is, so that an exception's message reaches
/// the report (cut there to its bound) instead of counting as output.
const MAX_ERROR_ANSWER_BYTES: usize = 16 << 20;

/// The JSON request `runner._entry` reads.
fn request_json(code: &str, name: &str, args: &[String], manifest: &EffectiveManifest, session: bool) -> String {
    serde_json::json!({ "code": code, "name": name, "args": args, "env": manifest.env(), "session": session })
        .to_string()
}

impl Kernel for PythonKernel {
    fn name(&self) -> &'static str {
        KERNEL_NAME
    }

    fn check(&self, manifest: &EffectiveManifest) -> Result<(), KernelError> {
        script::check_manifest(KERNEL_NAME, manifest)
    }

    fn run(&self, manifest: &EffectiveManifest, request: &RunRequest) -> Result<RunReport, KernelError> {
        self.check(manifest)?;
        let Code::Source { language: Language::Python, text } = request.code() else {
            return Err(KernelError::InvalidCode("the python kernel runs Python source".into()));
        };
        script::check_source_size(&self.engine, text)?;
        let (pre, cache) = self.prepared(Metering::for_manifest(manifest))?;
        let input = request_json(text, &request.name, &request.args, manifest, false);
        let bridge = new_bridge(&self.tools, &self.egress, manifest).for_caller(request.caller.clone());
        let io = GuestIo { name: &request.name, args: &request.args, stdin: &request.stdin };
        let run = run_module(&self.engine, &self.empty_root, pre, manifest, io, bridge, |store, instance| {
            enter(store, instance, &input)
        })?;
        Ok(into_report(run, cache, manifest, request))
    }
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

/// Recursion past CPython's own limit (raised with `sys.setrecursionlimit`) exhausts the engine's WebAssembly
/// stack: said in Python terms.
const STACK_OVERFLOW: &str = "stack overflow: the interpreter's stack is exhausted (recursion too deep; not catchable)";

/// The engine's answer: `{"value": ...}`, `{"exit": n}` or `{"error": {kind, message}}`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum GuestOutcome {
    Value(serde_json::Value),
    Exit(i64),
    Error { kind: String, message: String },
}

/// The engine's answer is `{"value":` and the value's compact JSON and `}`: 10 bytes around the value.
const VALUE_PREFIX: &str = "{\"value\":";

fn outcome_of(answer: Option<Result<&[u8], usize>>, manifest: &EffectiveManifest) -> (Termination, serde_json::Value) {
    let internal = |message: String| Termination::failed(Outcome::Error, ErrorKind::Internal, message);
    let answer = match answer {
        None => return (internal("the Python engine returned no result".into()), serde_json::Value::Null),
        // Larger than the bridge takes: not copied out of the engine's memory.
        Some(Err(len)) => {
            let len = len.saturating_sub(VALUE_PREFIX.len() + 1);
            return (script::result_too_large(len, manifest), serde_json::Value::Null);
        }
        Some(Ok(answer)) => answer,
    };
    // Sized before it is parsed: a value over the cap is refused without building its JSON tree on the host.
    if answer.starts_with(VALUE_PREFIX.as_bytes()) {
        let len = answer.len().saturating_sub(VALUE_PREFIX.len() + 1);
        if len as u64 > manifest.max_output_bytes() {
            return (script::result_too_large(len, manifest), serde_json::Value::Null);
        }
    }
    match serde_json::from_slice::<GuestOutcome>(answer) {
        Ok(GuestOutcome::Value(value)) => (Termination { exit_code: None, ..Termination::finished() }, value),
        // Exit statuses are 32-bit, as WASI's are; CPython's `sys.exit` accepts any integer.
        Ok(GuestOutcome::Exit(code)) => {
            (Termination::exited(i32::try_from(code).unwrap_or(1)), serde_json::Value::Null)
        }
        Ok(GuestOutcome::Error { kind, message }) => {
            // The guest chose the message (an exception's text and traceback): kept to the report's bound.
            let message = cut(&message, REPORT_ERROR_BYTES);
            (Termination::failed(Outcome::Error, script::guest_error_kind(&kind), message), serde_json::Value::Null)
        }
        Err(e) => (internal(format!("the Python engine sent a malformed result: {e}")), serde_json::Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmagent_manifest::{ByteSize, CapabilityManifest, ManifestCeilings};

    fn manifest(max_output_bytes: u64) -> EffectiveManifest {
        CapabilityManifest { max_output_bytes: Some(ByteSize(max_output_bytes)), ..Default::default() }
            .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
            .unwrap()
    }

    #[test]
    fn a_value_over_max_output_bytes_is_refused_before_it_is_parsed() {
        // Nested past serde_json's recursion limit: parsing it would fail as a malformed answer, not a size.
        let value = format!("{}\"{}\"{}", "[".repeat(200), "x".repeat(4096), "]".repeat(200));
        let (termination, value_out) =
            outcome_of(Some(Ok(format!("{VALUE_PREFIX}{value}}}").as_bytes())), &manifest(1024));
        assert_eq!(termination.outcome, Outcome::OutputLimit, "{termination:?}");
        let message = termination.error.map(|e| e.message).unwrap_or_default();
        assert!(message.contains(&format!("{} bytes of JSON", value.len())), "{message}");
        assert_eq!(value_out, serde_json::Value::Null);
        let (fits, parsed) = outcome_of(Some(Ok(br#"{"value":[1,"two"]}"#)), &manifest(12));
        assert_eq!((fits.outcome, parsed), (Outcome::Ok, serde_json::json!([1, "two"])));
    }

    #[test]
    fn an_exception_message_is_cut_at_the_report_bound() {
        let message = "m".repeat(10 << 20);
        let answer = serde_json::json!({"error": {"kind": "exception", "message": message}}).to_string();
        let (termination, _) = outcome_of(Some(Ok(answer.as_bytes())), &manifest(1024));
        let kept = termination.error.map(|e| e.message).unwrap_or_default();
        assert!(kept.len() <= REPORT_ERROR_BYTES + 40, "a {}-byte message was kept", kept.len());
        assert!(kept.ends_with(&format!("[cut: {} bytes in all]", 10 << 20)), "{}", &kept[kept.len() - 40..]);
    }
}
