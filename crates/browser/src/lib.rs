//! Browser host tools: a headless Chromium, driven over the DevTools protocol (chromiumoxide), that guest code
//! uses through `tools.browser.navigate(...)`, `extract`, `evaluate`, `click`, `type`, `wait_for`, `screenshot` and
//! `close`, granted like any other tool (`tool:browser.*`).
//!
//! This crate owns the browser's side of a run: one Chromium process kept warm and started again if it dies, a fresh
//! isolated browser context (no cookies, storage or cache from any other run) per run, opened on the run's first
//! browser call and closed when the run ends whatever its outcome ([`wasmagent_tools::RunContext::on_end`]), and an
//! egress proxy per run ([`proxy`]) that every connection of that context must use: each request is held to the
//! run's `allowed_hosts`, the address floor and the operator's exceptions through
//! [`wasmagent_egress::check_destination`], counted against the HTTP caps, and recorded in the run report
//! (`http_requests`, and `net.http` denials). Chromium resolves no names itself and sends nothing around the proxy
//! (loopback included); only `http:` and `https:` pages may be opened.
//!
//! It must not be a dependency of the sandbox (manifest, kernel, engine, kernel-*, egress, tools): it sits above
//! it, and kernels reach it only as tools. It must not decide policy (the manifest and the egress crate do), give a
//! page any way to reach the network other than the proxy, or run a browser with anyone's profile. SECURITY.md says
//! why the proxy rather than CDP request interception holds the browser to the policy.
//!
//! ```no_run
//! use std::sync::Arc;
//! use wasmagent_browser::{BrowserConfig, BrowserTools};
//! use wasmagent_egress::{EgressConfig, SystemResolver};
//! let mut tools = wasmagent_tools::ToolRegistry::new();
//! let browser = BrowserTools::new(BrowserConfig::default(), EgressConfig::new(), Arc::new(SystemResolver))?;
//! browser.register(&mut tools)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod browser;
mod config;
pub mod proxy;

pub use config::{
    BrowserConfig, BrowserConfigError, EXTRACT_MAX_BYTES, EXTRACT_MAX_BYTES_CEILING, NAVIGATION_TIMEOUT_MS,
    PAGES_PER_RUN, RENDERER_HEAP_MB, RENDERER_HEAP_MB_CEILING, SCREENSHOT_MAX_BYTES, SCREENSHOT_MAX_BYTES_CEILING,
};

use browser::{Browsers, MAX_SELECTORS, MAX_TYPED_CHARS, OpResult, RunBrowser};
use proxy::{Connect, ProxyEnv, RunPolicy, TcpConnect};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use wasmagent_egress::{EgressConfig, Resolve};
use wasmagent_tools::{RegistryError, RunContext, RunRecords, Tool, ToolRegistry, ToolResult};

/// Why the browser tools could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] BrowserConfigError),
    /// The browser's runtime could not start.
    #[error("cannot start the browser runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The browser tools of one process: the warm browser, and the browser of every run in progress. Cheap to clone.
#[derive(Clone)]
pub struct BrowserTools {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BrowserTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserTools").field("config", &self.inner.browsers.config).finish_non_exhaustive()
    }
}

struct Inner {
    browsers: Arc<Browsers>,
    runtime: Option<tokio::runtime::Runtime>,
    runs: Mutex<HashMap<u64, Arc<RunBrowser>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // The browser process is killed when it is dropped, which needs its runtime.
            let guard = runtime.enter();
            self.browsers.stop();
            drop(guard);
            runtime.shutdown_background();
        }
    }
}

impl BrowserTools {
    /// The browser tools, held to the operator's egress configuration (`egress`, the same one the sandbox's
    /// `Egress` uses) and resolving names with `resolver`. Chromium starts on the first call.
    pub fn new(config: BrowserConfig, egress: EgressConfig, resolver: Arc<dyn Resolve>) -> Result<Self, BrowserError> {
        Self::with_connector(config, egress, resolver, Arc::new(TcpConnect))
    }

    /// As [`BrowserTools::new`], with the proxy's connections opened by `connector`.
    pub fn with_connector(
        config: BrowserConfig,
        egress: EgressConfig,
        resolver: Arc<dyn Resolve>,
        connector: Arc<dyn Connect>,
    ) -> Result<Self, BrowserError> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wasmagent-browser")
            .enable_all()
            .build()?;
        let env = ProxyEnv { config: Arc::new(egress), resolver, connector };
        let browsers = Arc::new(Browsers::new(config, env));
        Ok(BrowserTools { inner: Arc::new(Inner { browsers, runtime: Some(runtime), runs: Mutex::default() }) })
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrowserConfig {
        &self.inner.browsers.config
    }

    /// Adds the `browser.*` tools to `registry`.
    pub fn register(&self, registry: &mut ToolRegistry) -> Result<(), RegistryError> {
        for tool in self.tools() {
            registry.register(tool)?;
        }
        Ok(())
    }

    /// The `browser.*` tools.
    pub fn tools(&self) -> Vec<Tool> {
        let selector =
            json!({"type": "string", "description": "A CSS selector; the first element it matches is used."});
        vec![
            self.tool(
                "browser.navigate",
                "Opens an http(s) URL in this run's browser page and waits until it has loaded. Every request the page \
                 makes is held to the run's allowed_hosts and the network policy. Returns {url, status, title}.",
                json!({"type": "object", "properties": {"url": {"type": "string", "description": "An http or https URL."}},
                       "required": ["url"], "additionalProperties": false}),
                |args| {
                    let url = string(&args, "url")?;
                    Ok(op(move |run, b| async move { run.navigate(&b, &url).await }))
                },
            ),
            self.tool(
                "browser.extract",
                "Reads the text of elements of the current page: {selectors: {NAME: CSS selector}} returns {NAME: text} \
                 (an input's value for form fields). A selector that matches nothing is an error naming it.",
                json!({"type": "object", "properties": {"selectors": {"type": "object",
                       "description": "Names mapped to CSS selectors.", "additionalProperties": {"type": "string"}}},
                       "required": ["selectors"], "additionalProperties": false}),
                |args| {
                    let selectors = args.get("selectors").and_then(Value::as_object).cloned().ok_or("`selectors` must be an object of NAME: CSS selector")?;
                    if selectors.is_empty() || selectors.len() > MAX_SELECTORS || !selectors.values().all(Value::is_string) {
                        return Err(format!("`selectors` must map 1 to {MAX_SELECTORS} names to CSS selector strings"));
                    }
                    Ok(op(move |run, b| async move { run.extract(&b, &selectors).await }))
                },
            ),
            self.tool(
                "browser.evaluate",
                "Evaluates a JavaScript expression in the current page (promises are awaited) and returns {value} as \
                 JSON. An exception in the page is an error with its message and stack.",
                json!({"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"], "additionalProperties": false}),
                |args| {
                    let expression = string(&args, "expression")?;
                    Ok(op(move |run, b| async move { run.evaluate(&b, &expression).await }))
                },
            ),
            self.tool(
                "browser.click",
                "Clicks the element a CSS selector matches (scrolled into view, a real mouse click).",
                json!({"type": "object", "properties": {"selector": selector},
                       "required": ["selector"], "additionalProperties": false}),
                |args| {
                    let selector = string(&args, "selector")?;
                    Ok(op(move |run, b| async move { run.click(&b, &selector).await }))
                },
            ),
            self.tool(
                "browser.type",
                "Focuses the element a CSS selector matches and types text into it, key by key.",
                json!({"type": "object", "properties": {"selector": selector, "text": {"type": "string"}},
                       "required": ["selector", "text"], "additionalProperties": false}),
                |args| {
                    let selector = string(&args, "selector")?;
                    let text = string(&args, "text")?;
                    if text.chars().count() > MAX_TYPED_CHARS {
                        return Err(format!("`text` has more than the {MAX_TYPED_CHARS} characters one call may type"));
                    }
                    Ok(op(move |run, b| async move { run.type_text(&b, &selector, &text).await }))
                },
            ),
            self.tool(
                "browser.wait_for",
                "Waits until an element matches a CSS selector in the current page (default timeout: the navigation \
                 timeout). Returns {found, waited_ms}.",
                json!({"type": "object", "properties": {"selector": selector,
                       "timeout_ms": {"type": "integer", "minimum": 0}},
                       "required": ["selector"], "additionalProperties": false}),
                |args| {
                    let selector = string(&args, "selector")?;
                    let timeout = match args.get("timeout_ms") {
                        None | Some(Value::Null) => None,
                        Some(ms) => Some(Duration::from_millis(ms.as_u64().ok_or("`timeout_ms` must be a whole number of milliseconds")?)),
                    };
                    Ok(op(move |run, b| async move { run.wait_for(&b, &selector, timeout).await }))
                },
            ),
            self.tool(
                "browser.screenshot",
                "Takes a PNG screenshot of the current page (the viewport, or the whole page with full_page). Returns \
                 {mime, base64, width, height, bytes}.",
                json!({"type": "object", "properties": {"full_page": {"type": "boolean"}}, "additionalProperties": false}),
                |args| {
                    let full_page = match args.get("full_page") {
                        None | Some(Value::Null) => false,
                        Some(flag) => flag.as_bool().ok_or("`full_page` must be true or false")?,
                    };
                    Ok(op(move |run, b| async move { run.screenshot(&b, full_page).await }))
                },
            ),
            self.tool(
                "browser.close",
                "Closes this run's browser context and its pages (cookies and storage go with it); the next call opens a \
                 fresh one. The context is closed at the end of the run anyway.",
                json!({"type": "object", "properties": {}, "additionalProperties": false}),
                |_| {
                    Ok(op(|run, _| async move {
                        run.close();
                        Ok(json!({ "closed": true }))
                    }))
                },
            ),
        ]
    }

    /// A per-run tool: `parse` checks the arguments and returns the operation to run on the run's browser.
    fn tool(
        &self,
        name: &'static str,
        description: &'static str,
        schema: Value,
        parse: impl Fn(Value) -> Result<Op, String> + Send + Sync + 'static,
    ) -> Tool {
        // The registry's tools keep the browser: it lives as long as anything can call it.
        let inner = self.inner.clone();
        Tool::per_run(name, description, schema, move |run, args| inner.call(run, parse(args)?))
    }
}

/// An operation on a run's browser.
type Op = Box<dyn FnOnce(Arc<RunBrowser>, Arc<Browsers>) -> BoxedOp + Send>;
type BoxedOp = std::pin::Pin<Box<dyn Future<Output = OpResult> + Send>>;

fn op<F, Fut>(operation: F) -> Op
where
    F: FnOnce(Arc<RunBrowser>, Arc<Browsers>) -> Fut + Send + 'static,
    Fut: Future<Output = OpResult> + Send + 'static,
{
    Box::new(move |run, browsers| Box::pin(operation(run, browsers)))
}

/// The string argument `name`.
fn string(args: &Value, name: &str) -> Result<String, String> {
    args.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| format!("`{name}` must be a string"))
}

impl Inner {
    fn runtime(&self) -> Result<&tokio::runtime::Runtime, String> {
        self.runtime.as_ref().ok_or_else(|| "the browser runtime has stopped".to_owned())
    }

    /// Runs `operation` on `run`'s browser (one operation of a run at a time), blocking the calling thread (tool
    /// calls are synchronous; the session stops waiting at the run's deadline).
    fn call(self: &Arc<Self>, run: &RunContext, operation: Op) -> ToolResult {
        let browser = self.run_browser(run)?;
        let browsers = self.browsers.clone();
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.runtime()?.spawn(async move {
            let _one_at_a_time = browser.busy.lock().await;
            let result = browser.unless_crashed(&browsers, operation(browser.clone(), browsers.clone())).await;
            let _ = sender.send(result);
        });
        receiver.recv().unwrap_or_else(|_| Err("the browser runtime has stopped".into()))
    }

    /// The browser of `run`, created (without opening anything yet) on its first call, with the hook that ends it
    /// when the run ends.
    fn run_browser(self: &Arc<Self>, run: &RunContext) -> Result<Arc<RunBrowser>, String> {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(browser) = runs.get(&run.id()) {
            return Ok(browser.clone());
        }
        let policy = Arc::new(RunPolicy::new(self.browsers.env.clone(), run.manifest(), run.deadline()));
        let browser = Arc::new(RunBrowser::new(policy, run.deadline(), run.manifest().max_artifact_bytes()));
        let (inner, id, ending) = (Arc::downgrade(self), run.id(), browser.clone());
        if !run.on_end(move || end_run(&inner, id, &ending)) {
            return Err("the run has ended".into());
        }
        runs.insert(run.id(), browser.clone());
        Ok(browser)
    }
}

/// Ends a run's browser: its proxy stops at once (nothing more is relayed for it), its context and pages are
/// closed, and its requests and refusals go to the run report.
fn end_run(inner: &Weak<Inner>, id: u64, browser: &RunBrowser) -> RunRecords {
    if let Some(inner) = inner.upgrade() {
        inner.runs.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        if let Ok(runtime) = inner.runtime() {
            let _entered = runtime.enter();
            browser.end();
        }
    }
    let mut records = browser.policy.take_records();
    records.images = browser.take_screenshots();
    records
}
