//! Node.js bindings for wasmagent: the native addon (`wasmagent.linux-x64-gnu.node`) that the package's
//! `index.cjs`/`index.mjs` wrap with a typed report, errors and the Vercel AI SDK tool.
//!
//! This crate owns the crossing between JavaScript and [`wasmagent::Sandbox`]: manifests in (JSON with snake_case or
//! wasmagent-js camelCase names, or TOML), reports out as JSON text, host tools that are async JavaScript functions.
//! It holds no policy (the manifest crate does) and never runs a guest on Node's main thread or on libuv's thread
//! pool: each run has its own thread and settles a promise, so the event loop (and the JavaScript tools a guest
//! calls, which run on it) go on meanwhile. Built by `@napi-rs/cli` (`npm run build`), tested by `test/` with
//! node's test runner.

// napi-rs's macros expand to unsafe FFI glue; this crate writes no unsafe code of its own.
#![allow(unsafe_code, reason = "napi-rs's #[napi] expansions")]

use napi::bindgen_prelude::{Buffer, Either, Object, Promise};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Env, Error, Status};
use napi_derive::napi;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use wasmagent::{CapabilityManifest, KernelError, Language, RunRequest, Tool, ToolRegistry};

/// Calls a JavaScript tool: JSON arguments in, a promise of `{"ok": value}` or `{"error": message}` as JSON out.
type ToolHandler = ThreadsafeFunction<String, Promise<String>, String, Status, false, true>;

/// Checks a manifest (JSON or TOML) and returns it as JSON with snake_case names; throws its refusal as JSON text
/// `{"kind": "manifest", "message", "field"}`.
#[napi]
pub fn parse_manifest(text: String) -> napi::Result<String> {
    let manifest = CapabilityManifest::from_str_any(&text)
        .map_err(|e| Error::new(Status::InvalidArg, failure(&wasmagent::Error::Manifest(e)).to_string()))?;
    serde_json::to_string(&manifest).map_err(|e| Error::from_reason(e.to_string()))
}

/// The outcome of a run that could not start, as JSON the JavaScript layer turns into an error.
fn failure(error: &wasmagent::Error) -> Value {
    let (kind, field, report) = match error {
        wasmagent::Error::Manifest(e) => ("manifest", e.field().map(str::to_owned), None),
        wasmagent::Error::Kernel(KernelError::InvalidCode(_)) => ("invalid_code", None, None),
        wasmagent::Error::Kernel(KernelError::Unsupported { .. }) => ("unsupported", None, None),
        wasmagent::Error::Kernel(KernelError::SessionEnded(_)) => ("session_ended", None, None),
        wasmagent::Error::Record { report, .. } => ("record", None, serde_json::to_value(report).ok()),
        _ => ("unavailable", None, None),
    };
    json!({ "failure": { "kind": kind, "message": error.to_string(), "field": field, "report": report } })
}

/// Most runs (and session openings) of one sandbox in flight at once by default, each on a thread of its own.
const DEFAULT_MAX_IN_FLIGHT: u32 = 256;

/// Counts the run threads of one sandbox (its sessions' included) against their cap.
struct InFlight {
    count: AtomicUsize,
    max: usize,
}

impl InFlight {
    /// Takes a place, or says why none is left.
    fn enter(self: &Arc<Self>) -> Result<InFlightPlace, String> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .map(|_| InFlightPlace(self.clone()))
            .map_err(|n| format!("{n} runs of this sandbox are in flight; the most is {} (maxInFlight)", self.max))
    }
}

/// One run's place; given back when the run's thread ends.
struct InFlightPlace(Arc<InFlight>);

impl Drop for InFlightPlace {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The engine, its kernels and the host tools. The Rust sandbox is built on first use and again after a tool is
/// added (kernels take their tools when built).
#[napi]
pub struct NativeSandbox {
    cache_dir: Option<PathBuf>,
    pool_slots: u32,
    in_flight: Arc<InFlight>,
    tools: Mutex<Vec<Tool>>,
    built: Arc<Mutex<Option<Arc<wasmagent::Sandbox>>>>,
}

#[napi]
impl NativeSandbox {
    /// `cacheDir`: where compiled code is kept between processes (none: memory only); `poolSlots`: how many
    /// guests may be instantiated at once (default 128); `maxInFlight`: how many runs may be in flight at once
    /// (default 256; past it a run fails at once with kind `unavailable`).
    #[napi(constructor)]
    pub fn new(cache_dir: Option<String>, pool_slots: Option<u32>, max_in_flight: Option<u32>) -> Self {
        let max = max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        NativeSandbox {
            cache_dir: cache_dir.map(PathBuf::from),
            pool_slots: pool_slots.unwrap_or(128),
            in_flight: Arc::new(InFlight {
                count: AtomicUsize::new(0),
                max: usize::try_from(max).unwrap_or(usize::MAX),
            }),
            tools: Mutex::new(Vec::new()),
            built: Arc::new(Mutex::new(None)),
        }
    }

    /// Adds a host tool answered by `handler(argsJson)`, which resolves to `{"ok": value}` or `{"error": message}`
    /// as JSON text. A run sees the tool only where its manifest grants `tool:NAME`.
    #[napi]
    pub fn add_tool(
        &self,
        name: String,
        description: String,
        schema_json: String,
        handler: ToolHandler,
    ) -> napi::Result<()> {
        let schema: Value =
            serde_json::from_str(&schema_json).map_err(|e| Error::new(Status::InvalidArg, format!("schema: {e}")))?;
        let handler = Arc::new(handler);
        let tool = Tool::new(name, description, schema, move |args| call_handler(&handler, args));
        let mut tools = self.tools.lock().unwrap_or_else(PoisonError::into_inner);
        let mut check = ToolRegistry::new();
        for t in tools.iter().chain([&tool]) {
            check.register(t.clone()).map_err(|e| Error::new(Status::InvalidArg, e.to_string()))?;
        }
        tools.push(tool);
        *self.built.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    /// Names of the tools added so far.
    #[napi]
    pub fn tool_names(&self) -> Vec<String> {
        self.tools.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|t| t.name().to_owned()).collect()
    }

    /// Runs `code` (`language`: "javascript", "python" or "wasm") held to `manifest` (JSON or TOML; deny-all when
    /// absent) on a thread of its own. Resolves to `{"report": ...}` or `{"failure": ...}` as JSON text.
    #[napi(ts_return_type = "Promise<string>")]
    #[allow(clippy::too_many_arguments, reason = "one per option of the JavaScript call")]
    pub fn run<'env>(
        &self,
        env: &'env Env,
        language: String,
        code: Either<String, Buffer>,
        manifest: Option<String>,
        stdin: Option<Buffer>,
        args: Option<Vec<String>>,
        base_dir: Option<String>,
    ) -> napi::Result<Object<'env>> {
        let request = match (language.as_str(), code) {
            ("javascript" | "js", Either::A(text)) => RunRequest::source("main.js", Language::Js, text),
            ("python" | "py", Either::A(text)) => RunRequest::source("main.py", Language::Python, text),
            ("wasm", Either::B(bytes)) => RunRequest::wasm("module.wasm", bytes.to_vec()),
            (other, _) => {
                return Err(Error::new(
                    Status::InvalidArg,
                    format!(
                        "language {other:?} with this code: use \"javascript\" or \"python\" with a string, \"wasm\" \
                         with a Buffer"
                    ),
                ));
            }
        };
        let request = request.with_args(args.unwrap_or_default());
        let request = match stdin {
            Some(bytes) => request.with_stdin(bytes.to_vec()),
            None => request,
        };
        let base = match base_dir {
            Some(dir) => PathBuf::from(dir),
            None => std::env::current_dir().map_err(|e| Error::from_reason(format!("current directory: {e}")))?,
        };
        let tools = self.tools.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let (built, cache_dir, pool_slots) = (self.built.clone(), self.cache_dir.clone(), self.pool_slots);
        settle_on_thread(env, &self.in_flight, move || {
            let sandbox = sandbox(&built, tools, cache_dir, pool_slots)?;
            let manifest = sandbox.resolve(&parse(manifest)?, &base)?;
            let report = sandbox.run(&manifest, &request)?;
            Ok(json!({ "report": report }))
        })
    }

    /// Opens a session: one live `language` ("javascript" or "python") sandbox kept between runs, held to
    /// `manifest` (deny-all when absent) and the session limits. Resolves to the session, or rejects with a
    /// failure as JSON text.
    #[napi(ts_return_type = "Promise<NativeSession>")]
    pub fn open_session<'env>(
        &self,
        env: &'env Env,
        language: String,
        manifest: Option<String>,
        base_dir: Option<String>,
    ) -> napi::Result<Object<'env>> {
        let language = match language.as_str() {
            "javascript" | "js" => Language::Js,
            "python" | "py" => Language::Python,
            other => {
                return Err(Error::new(
                    Status::InvalidArg,
                    format!("language {other:?} has no sessions: use \"javascript\" or \"python\""),
                ));
            }
        };
        let base = match base_dir {
            Some(dir) => PathBuf::from(dir),
            None => std::env::current_dir().map_err(|e| Error::from_reason(format!("current directory: {e}")))?,
        };
        let tools = self.tools.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let (built, cache_dir, pool_slots) = (self.built.clone(), self.cache_dir.clone(), self.pool_slots);
        let (deferred, promise) = env.create_deferred::<Either<NativeSession, String>, _>()?;
        let in_flight = self.in_flight.clone();
        let place = match in_flight.enter() {
            Ok(place) => place,
            Err(message) => {
                let failure =
                    json!({ "failure": { "kind": "unavailable", "message": message, "field": null, "report": null } });
                deferred.resolve(settled(Either::B(failure.to_string())));
                return Ok(promise);
            }
        };
        let spawned = std::thread::Builder::new().name("wasmagent-session".into()).spawn(move || {
            let opened = (|| -> Result<wasmagent::SandboxSession, Value> {
                let sandbox = sandbox(&built, tools, cache_dir, pool_slots).map_err(|e| failure(&e))?;
                let manifest = parse(manifest).and_then(|m| sandbox.resolve(&m, &base)).map_err(|e| failure(&e))?;
                sandbox.session(&manifest, language).map_err(|e| {
                    json!({ "failure": { "kind": "session", "message": e.to_string(), "field": null, "report": null } })
                })
            })();
            let answer = match opened {
                Ok(session) => Either::A(NativeSession {
                    id: session.id().to_owned(),
                    language,
                    in_flight: in_flight.clone(),
                    inner: Arc::new(Mutex::new(Some(session))),
                }),
                Err(failure) => Either::B(failure.to_string()),
            };
            drop(place);
            deferred.resolve(settled(answer));
        });
        spawned.map_err(|e| Error::from_reason(format!("cannot start a session thread: {e}")))?;
        Ok(promise)
    }
}

/// A live sandbox kept between runs: definitions and state carry over from one run to the next. Runs in one
/// session happen one at a time.
#[napi]
pub struct NativeSession {
    id: String,
    language: Language,
    in_flight: Arc<InFlight>,
    inner: Arc<Mutex<Option<wasmagent::SandboxSession>>>,
}

#[napi]
impl NativeSession {
    /// The session's id.
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// Runs `code` in the session on a thread of its own. Resolves to `{"report": ...}` or `{"failure": ...}` as
    /// JSON text.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn run<'env>(&self, env: &'env Env, code: String, stdin: Option<Buffer>) -> napi::Result<Object<'env>> {
        let name = if self.language == Language::Python { "main.py" } else { "main.js" };
        let request = RunRequest::source(name, self.language, code);
        let request = match stdin {
            Some(bytes) => request.with_stdin(bytes.to_vec()),
            None => request,
        };
        let inner = self.inner.clone();
        settle_on_thread(env, &self.in_flight, move || {
            let report = match inner.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                Some(session) => session.run(&request)?,
                None => return Err(KernelError::SessionEnded("it was closed".into()).into()),
            };
            Ok(json!({ "report": report }))
        })
    }

    /// Ends the session and frees its sandbox; later runs fail with kind `session_ended`.
    #[napi]
    pub fn close(&self) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// Runs `work` on a thread of its own (when the sandbox has a place left in flight) and settles the returned promise with its answer as JSON text.
fn settle_on_thread<'env>(
    env: &'env Env,
    in_flight: &Arc<InFlight>,
    work: impl FnOnce() -> Result<Value, wasmagent::Error> + Send + 'static,
) -> napi::Result<Object<'env>> {
    let (deferred, promise) = env.create_deferred::<String, _>()?;
    let place = match in_flight.enter() {
        Ok(place) => place,
        Err(message) => {
            let failure =
                json!({ "failure": { "kind": "unavailable", "message": message, "field": null, "report": null } });
            deferred.resolve(settled(failure.to_string()));
            return Ok(promise);
        }
    };
    let spawned = std::thread::Builder::new().name("wasmagent-run".into()).spawn(move || {
        let text = work().unwrap_or_else(|e| failure(&e)).to_string();
        // The place is given back before the promise settles, so code awaiting the run can start another at once.
        drop(place);
        deferred.resolve(settled(text));
    });
    spawned.map_err(|e| Error::from_reason(format!("cannot start a run thread: {e}")))?;
    Ok(promise)
}

/// What settles a deferred promise with `value` (one closure type for every place that settles it).
fn settled<T>(value: T) -> impl FnOnce(Env) -> napi::Result<T> {
    move |_| Ok(value)
}

/// The manifest a run asked for (JSON or TOML), or deny-all.
fn parse(manifest: Option<String>) -> Result<CapabilityManifest, wasmagent::Error> {
    Ok(match manifest {
        Some(text) => CapabilityManifest::from_str_any(&text)?,
        None => CapabilityManifest::default(),
    })
}

/// The built Rust sandbox, building it when there is none (off the main thread).
fn sandbox(
    built: &Mutex<Option<Arc<wasmagent::Sandbox>>>,
    tools: Vec<Tool>,
    cache_dir: Option<PathBuf>,
    pool_slots: u32,
) -> Result<Arc<wasmagent::Sandbox>, wasmagent::Error> {
    if let Some(sandbox) = built.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
        return Ok(sandbox.clone());
    }
    let mut registry = ToolRegistry::new();
    for tool in tools {
        registry.register(tool).map_err(|e| KernelError::Unavailable(e.to_string()))?;
    }
    let sandbox =
        Arc::new(wasmagent::Sandbox::builder().cache_dir(cache_dir).pool_slots(pool_slots).tools(registry).build()?);
    // Another run may have built one meanwhile: keep the first, so all runs share one code cache.
    Ok(built.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(sandbox).clone())
}

/// Calls a JavaScript tool from a tool worker thread and waits for its promise.
fn call_handler(handler: &ToolHandler, args: Value) -> Result<Value, String> {
    let text = futures::executor::block_on(async {
        let promise = handler.call_async(args.to_string()).await?;
        promise.await
    })
    .map_err(|e| format!("the JavaScript tool could not be called: {}", e.reason))?;
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("the tool's answer is not JSON: {e}"))?;
    match (answer.get("ok"), answer.get("error")) {
        (_, Some(Value::String(message))) => Err(message.clone()),
        (Some(value), _) => Ok(value.clone()),
        _ => Err("the tool's answer has neither a result nor an error".into()),
    }
}

/// The package version: the workspace's.
#[napi]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
