//! Python bindings for wasmagent: the native module `wasmagent._native`, which the pure-Python package
//! `wasmagent` (in `python/`) wraps with typed reports, a tool decorator, exceptions carrying the report and an
//! asyncio variant.
//!
//! This crate owns the crossing between Python and [`wasmagent::Sandbox`]: manifests in (TOML, JSON or a dict,
//! camelCase wasmagent-js names included), reports out (as JSON text the Python layer types), and host tools that
//! are Python callables. It holds no policy (the manifest crate does) and never runs guest code with the GIL held,
//! so other Python threads and the asyncio event loop go on while a guest runs. Built by maturin
//! (`pyproject.toml`), which alone turns on PyO3's `extension-module`; tested by `tests/` with pytest.

// PyO3's macros expand to unsafe FFI glue; this crate writes no unsafe code of its own.
#![allow(unsafe_code, reason = "PyO3's #[pyclass]/#[pymethods]/#[pymodule] expansions")]

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use wasmagent::{
    CapabilityManifest, KernelError, Language, ManifestError as RustManifestError, RunRequest, Tool, ToolRegistry,
};

create_exception!(_native, SandboxError, PyException, "Base class of wasmagent's errors.");
create_exception!(
    _native,
    ManifestError,
    SandboxError,
    "The manifest was refused: malformed, invalid, or above the sandbox's ceilings (`.field` names the field)."
);
create_exception!(
    _native,
    RunError,
    SandboxError,
    "The run did not succeed (`.kind` is the report's error kind, `.report` the report) or could not start \
     (`.kind` is `invalid_code`, `unsupported` or `unavailable`, `.report` is None)."
);

/// A capability manifest as written (not yet resolved against a sandbox's ceilings).
#[pyclass(frozen, module = "wasmagent._native")]
struct Manifest {
    inner: CapabilityManifest,
}

#[pymethods]
impl Manifest {
    /// The deny-all manifest: no files, hosts, environment or tools; default limits.
    #[new]
    fn new() -> Self {
        Manifest { inner: CapabilityManifest::default() }
    }

    /// Parses a TOML manifest.
    #[staticmethod]
    fn from_toml(py: Python<'_>, text: &str) -> PyResult<Self> {
        CapabilityManifest::from_toml_str(text).map(|inner| Manifest { inner }).map_err(|e| manifest_error(py, &e))
    }

    /// Parses a JSON manifest (snake_case or wasmagent-js camelCase names).
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<Self> {
        CapabilityManifest::from_json_str(text).map(|inner| Manifest { inner }).map_err(|e| manifest_error(py, &e))
    }

    /// Reads a manifest from a dict (snake_case or wasmagent-js camelCase names).
    #[staticmethod]
    fn from_dict(py: Python<'_>, value: &Bound<'_, PyDict>) -> PyResult<Self> {
        let text: String = py.import("json")?.call_method1("dumps", (value,))?.extract()?;
        Self::from_json(py, &text)
    }

    /// The manifest as JSON text (snake_case names).
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    fn __repr__(&self) -> String {
        format!("Manifest({})", self.to_json().unwrap_or_default())
    }
}

fn manifest_error(py: Python<'_>, error: &RustManifestError) -> PyErr {
    let err = ManifestError::new_err(error.to_string());
    // The attribute is informational; failing to set it must not hide the refusal itself.
    let _ = err.value(py).setattr("field", error.field());
    err
}

fn run_error(py: Python<'_>, error: wasmagent::Error) -> PyErr {
    let (kind, report) = match &error {
        wasmagent::Error::Manifest(e) => return manifest_error(py, e),
        wasmagent::Error::Kernel(KernelError::InvalidCode(_)) => ("invalid_code", None),
        wasmagent::Error::Kernel(KernelError::Unsupported { .. }) => ("unsupported", None),
        wasmagent::Error::Kernel(KernelError::SessionEnded(_)) => ("session_ended", None),
        wasmagent::Error::Record { report, .. } => ("record", serde_json::to_string(report).ok()),
        wasmagent::Error::Kernel(_) => ("unavailable", None),
        _ => ("unavailable", None),
    };
    let err = RunError::new_err(error.to_string());
    let value = err.value(py);
    let _ = value.setattr("kind", kind);
    let _ = value.setattr("report_json", report);
    err
}

/// Settings fixed when the sandbox is made.
#[derive(Clone)]
struct Settings {
    cache_dir: Option<PathBuf>,
    pool_slots: u32,
}

/// The engine, its kernels and the host tools. The Rust sandbox is built on first use and again after a tool is
/// added (kernels take their tools when built).
#[pyclass(frozen, module = "wasmagent._native")]
struct Sandbox {
    settings: Settings,
    tools: Mutex<Vec<Tool>>,
    built: Mutex<Option<Arc<wasmagent::Sandbox>>>,
}

#[pymethods]
impl Sandbox {
    /// `cache_dir`: where compiled code is kept between processes (None: memory only); `pool_slots`: how many
    /// guests may run at once.
    #[new]
    #[pyo3(signature = (cache_dir=None, pool_slots=128))]
    fn new(cache_dir: Option<PathBuf>, pool_slots: u32) -> Self {
        Sandbox { settings: Settings { cache_dir, pool_slots }, tools: Mutex::new(Vec::new()), built: Mutex::new(None) }
    }

    /// Adds a host tool: `handler(**args)` (or `handler(args)` when the arguments are not an object) answers
    /// calls with a JSON-serialisable value; a coroutine it returns is run to completion; an exception it raises
    /// reaches the guest as an error. A run sees the tool only where its manifest grants `tool:NAME`.
    fn add_tool(&self, name: String, description: String, schema_json: &str, handler: Py<PyAny>) -> PyResult<()> {
        let schema: serde_json::Value =
            serde_json::from_str(schema_json).map_err(|e| PyValueError::new_err(format!("schema: {e}")))?;
        let tool = Tool::new(name, description, schema, move |args| call_handler(&handler, args));
        let mut tools = self.tools.lock().unwrap_or_else(PoisonError::into_inner);
        let mut check = ToolRegistry::new();
        for t in tools.iter().chain([&tool]) {
            check.register(t.clone()).map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
        tools.push(tool);
        *self.built.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    /// Opens a session: one live `language` ("python" or "javascript") sandbox kept between runs, held to
    /// `manifest` (deny-all when None) and the sandbox's session limits.
    #[pyo3(signature = (language, manifest=None, base_dir=None))]
    fn open_session(
        &self,
        py: Python<'_>,
        language: &str,
        manifest: Option<&Manifest>,
        base_dir: Option<PathBuf>,
    ) -> PyResult<Session> {
        let language = match language {
            "python" | "py" => Language::Python,
            "javascript" | "js" => Language::Js,
            other => {
                return Err(PyValueError::new_err(format!(
                    "language {other:?} has no sessions: use \"python\" or \"javascript\""
                )));
            }
        };
        let sandbox = self.sandbox(py)?;
        let opened = py.detach(|| -> Result<wasmagent::SandboxSession, SessionFailure> {
            let manifest = Self::resolve(&sandbox, manifest, base_dir)?;
            Ok(sandbox.session(&manifest, language)?)
        });
        match opened {
            Ok(session) => Ok(Session { id: session.id().to_owned(), language, inner: Mutex::new(Some(session)) }),
            Err(SessionFailure::Run(e)) => Err(run_error(py, e)),
            Err(SessionFailure::Session(e)) => {
                let err = RunError::new_err(e.to_string());
                let _ = err.value(py).setattr("kind", "session");
                let _ = err.value(py).setattr("report_json", py.None());
                Err(err)
            }
        }
    }

    /// Names of the tools added so far.
    fn tool_names(&self) -> Vec<String> {
        self.tools.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|t| t.name().to_owned()).collect()
    }

    /// Runs `code` (`language`: "python", "javascript" or "wasm") held to `manifest` (deny-all when None);
    /// relative paths in the manifest are taken from `base_dir` (the current directory when None). Returns the
    /// run report as JSON text. The GIL is released while the guest runs.
    #[allow(clippy::too_many_arguments, reason = "one per Python keyword argument")]
    #[pyo3(signature = (language, code, manifest=None, stdin=None, args=Vec::new(), base_dir=None))]
    fn run(
        &self,
        py: Python<'_>,
        language: &str,
        code: &Bound<'_, PyAny>,
        manifest: Option<&Manifest>,
        stdin: Option<Vec<u8>>,
        args: Vec<String>,
        base_dir: Option<PathBuf>,
    ) -> PyResult<String> {
        let request = match language {
            "python" | "py" => RunRequest::source("main.py", Language::Python, code.extract::<String>()?),
            "javascript" | "js" => RunRequest::source("main.js", Language::Js, code.extract::<String>()?),
            "wasm" => {
                let bytes = code.cast::<PyBytes>().map_err(PyErr::from)?.as_bytes().to_vec();
                RunRequest::wasm("module.wasm", bytes)
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "language {other:?} is not one of \"python\", \"javascript\", \"wasm\""
                )));
            }
        };
        let request = request.with_args(args);
        let request = match stdin {
            Some(bytes) => request.with_stdin(bytes),
            None => request,
        };
        let sandbox = self.sandbox(py)?;
        let result = py.detach(|| {
            let manifest = Self::resolve(&sandbox, manifest, base_dir)?;
            sandbox.run(&manifest, &request)
        });
        let report = result.map_err(|e| run_error(py, e))?;
        serde_json::to_string(&report).map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

impl Sandbox {
    /// Resolves `manifest` from `base_dir` (the current directory when None).
    fn resolve(
        sandbox: &wasmagent::Sandbox,
        manifest: Option<&Manifest>,
        base_dir: Option<PathBuf>,
    ) -> Result<wasmagent::EffectiveManifest, wasmagent::Error> {
        let manifest = manifest.map(|m| m.inner.clone()).unwrap_or_default();
        let base = match base_dir {
            Some(dir) => dir,
            None => std::env::current_dir()
                .map_err(|e| KernelError::Unavailable(format!("the current directory is unknown: {e}")))?,
        };
        sandbox.resolve(&manifest, &base)
    }

    /// The built Rust sandbox, building it (without the GIL) when there is none.
    fn sandbox(&self, py: Python<'_>) -> PyResult<Arc<wasmagent::Sandbox>> {
        if let Some(built) = self.built.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            return Ok(built.clone());
        }
        let tools = self.tools.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let settings = self.settings.clone();
        let built = py.detach(|| {
            let mut registry = ToolRegistry::new();
            for tool in tools {
                registry.register(tool).map_err(|e| KernelError::Unavailable(e.to_string()))?;
            }
            wasmagent::Sandbox::builder()
                .cache_dir(settings.cache_dir)
                .pool_slots(settings.pool_slots)
                .tools(registry)
                .build()
                .map(Arc::new)
        });
        let built = built.map_err(|e| run_error(py, e))?;
        let mut slot = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have built one meanwhile: keep the first, so all runs share one code cache.
        Ok(slot.get_or_insert(built).clone())
    }
}

/// Why a session could not be opened.
enum SessionFailure {
    Run(wasmagent::Error),
    Session(wasmagent::SessionError),
}

impl From<wasmagent::Error> for SessionFailure {
    fn from(e: wasmagent::Error) -> Self {
        SessionFailure::Run(e)
    }
}

impl From<wasmagent::SessionError> for SessionFailure {
    fn from(e: wasmagent::SessionError) -> Self {
        SessionFailure::Session(e)
    }
}

/// A live sandbox kept between runs: definitions and state carry over from one run to the next.
#[pyclass(frozen, module = "wasmagent._native")]
struct Session {
    id: String,
    language: Language,
    inner: Mutex<Option<wasmagent::SandboxSession>>,
}

#[pymethods]
impl Session {
    /// The session's id.
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// Runs `code` in the session; returns the report as JSON text. The GIL is released while the guest runs.
    #[pyo3(signature = (code, stdin=None))]
    fn run(&self, py: Python<'_>, code: String, stdin: Option<Vec<u8>>) -> PyResult<String> {
        let request = match self.language {
            Language::Python => RunRequest::source("main.py", Language::Python, code),
            _ => RunRequest::source("main.js", Language::Js, code),
        };
        let request = match stdin {
            Some(bytes) => request.with_stdin(bytes),
            None => request,
        };
        let result = py.detach(|| match self.inner.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            Some(session) => session.run(&request),
            None => Err(KernelError::SessionEnded("it was closed".into()).into()),
        });
        let report = result.map_err(|e| run_error(py, e))?;
        serde_json::to_string(&report).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Ends the session and frees its sandbox; later runs raise `RunError` (kind `session_ended`).
    fn close(&self) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// Calls a Python tool handler from a tool worker thread: JSON in, JSON out, exceptions as error messages.
fn call_handler(handler: &Py<PyAny>, args: serde_json::Value) -> Result<serde_json::Value, String> {
    Python::attach(|py| {
        let call = || -> PyResult<String> {
            let json = py.import("json")?;
            let value = json.call_method1("loads", (args.to_string(),))?;
            let handler = handler.bind(py);
            let mut result = match value.cast::<PyDict>() {
                Ok(kwargs) => handler.call((), Some(kwargs))?,
                Err(_) => handler.call1((value,))?,
            };
            if py.import("inspect")?.call_method1("iscoroutine", (&result,))?.is_truthy()? {
                result = py.import("asyncio")?.call_method1("run", (result,))?;
            }
            json.call_method1("dumps", (result,))?.extract()
        };
        let text = call().map_err(|e| describe(py, &e))?;
        serde_json::from_str(&text).map_err(|e| format!("the tool's result is not JSON: {e}"))
    })
}

fn describe(py: Python<'_>, error: &PyErr) -> String {
    let name = error.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    format!("{name}: {}", error.value(py))
}

/// The native half of the `wasmagent` package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Manifest>()?;
    m.add_class::<Sandbox>()?;
    m.add_class::<Session>()?;
    m.add("SandboxError", m.py().get_type::<SandboxError>())?;
    m.add("ManifestError", m.py().get_type::<ManifestError>())?;
    m.add("RunError", m.py().get_type::<RunError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
