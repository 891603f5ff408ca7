//! The Chromium process (started on first use, kept warm, started again if it dies) and each run's browser: an
//! isolated browser context whose every connection goes through the run's own egress proxy, its pages, and what
//! the tools do with them.

use crate::config::BrowserConfig;
use crate::proxy::{Proxy, ProxyEnv, RunPolicy};
use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::inspector::{EnableParams as InspectorEnableParams, EventTargetCrashed};
use chromiumoxide::cdp::browser_protocol::network::SetBypassServiceWorkerParams;
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, GetLayoutMetricsParams, NavigateParams, SetBypassCspParams, StopLoadingParams,
};
use chromiumoxide::cdp::browser_protocol::target::{
    CloseTargetParams, CreateBrowserContextParams, CreateTargetParams, EventTargetCreated, GetTargetsParams,
};
use chromiumoxide::cdp::js_protocol::runtime::{EvaluateParams, TerminateExecutionParams};
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, Page};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use wasmagent_kernel::bounds::{REPORT_TEXT_BYTES, cut};
use wasmagent_tools::ToolImage;

/// Longest the browser may take to start.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How often `wait_for` and a loading page are looked at.
const POLL: Duration = Duration::from_millis(50);
/// Largest page a full-page screenshot may capture, in pixels.
const MAX_SCREENSHOT_PIXELS: f64 = 16.0 * 1024.0 * 1024.0;
/// Longest text `type` sends.
pub(crate) const MAX_TYPED_CHARS: usize = 64 * 1024;
/// Most selectors one `extract` may name.
pub(crate) const MAX_SELECTORS: usize = 256;

/// Flags every Chromium is started with (beside chromiumoxide's `--remote-debugging-port`, `--user-data-dir`,
/// `--headless`, `--no-sandbox` and `--disable-extensions`). The proxy flags are added per process: the browser-wide
/// proxy refuses everything, and each run's context names its own.
const FLAGS: &[&str] = &[
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-dev-shm-usage",
    "--no-pings",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    // Every connection, loopback included, goes to the proxy; Chromium resolves no names itself (the proxy does);
    // WebRTC may not send UDP around the proxy.
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-features=DnsOverHttps,MediaRouter,OptimizationHints",
];

/// Why a browser operation failed: the message the guest sees.
pub(crate) type OpResult = Result<Value, String>;

/// The warm Chromium process.
pub(crate) struct Chromium {
    browser: Browser,
    /// The browser process (a pidfd, so it can never name another process), killed at once when the tools stop:
    /// its renderers and helpers end with it. Dropping `browser` kills it too, but only once every holder has let
    /// go, which a process exiting right after may not wait for.
    process: Option<std::os::fd::OwnedFd>,
    handler: JoinHandle<()>,
    _profile: tempfile::TempDir,
    _refuse_all: Proxy,
}

impl Chromium {
    fn alive(&self) -> bool {
        !self.handler.is_finished()
    }

    async fn launch(config: &BrowserConfig, env: &ProxyEnv) -> Result<Chromium, String> {
        let executable = config.executable()?;
        let mut profile = tempfile::Builder::new();
        profile.prefix("wasmagent-chromium-");
        let profile = match &config.profile_dir {
            Some(dir) => profile.tempdir_in(dir),
            None => profile.tempdir(),
        }
        .map_err(|e| format!("cannot create the browser's profile directory: {e}"))?;
        let home = profile.path().to_string_lossy().into_owned();
        let refuse_all = Proxy::start(Arc::new(RunPolicy::refuse_all(env.clone())))
            .await
            .map_err(|e| format!("cannot start the browser's proxy: {e}"))?;
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--proxy-server={}", refuse_all.url()));
        args.push(format!("--js-flags=--max-old-space-size={}", config.renderer_heap_mb));
        let launch = chromiumoxide::BrowserConfig::builder()
            .chrome_executable(executable)
            .disable_default_args()
            .no_sandbox()
            .respect_https_errors()
            .user_data_dir(profile.path())
            // Nothing of the user's: Chromium's home and temporary files are its fresh profile too.
            .env("HOME", home.clone())
            .env("TMPDIR", home)
            .launch_timeout(LAUNCH_TIMEOUT)
            // chromiumoxide holds a page's next navigation until the previous one loads or this passes: no longer
            // than a navigation may take, so a page that never finishes loading does not hold up the next one.
            .request_timeout(config.navigation_timeout())
            .args(args)
            .build()?;
        let (mut browser, mut events) =
            Browser::launch(launch).await.map_err(|e| format!("cannot start the browser: {e}"))?;
        let process = browser
            .get_mut_child()
            .and_then(|child| child.as_mut_inner().id())
            .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?))
            .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok());
        let handler = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if event.is_err() {
                    // An unreadable message is one message; a closed connection ends the stream.
                    continue;
                }
            }
        });
        Ok(Chromium { browser, process, handler, _profile: profile, _refuse_all: refuse_all })
    }
}

/// The browser shared by every run, started on first use.
pub(crate) struct Browsers {
    pub(crate) config: BrowserConfig,
    pub(crate) env: ProxyEnv,
    process: tokio::sync::Mutex<Option<Arc<Chromium>>>,
}

impl Browsers {
    pub(crate) fn new(config: BrowserConfig, env: ProxyEnv) -> Self {
        Browsers { config, env, process: tokio::sync::Mutex::new(None) }
    }

    /// Drops the browser process (killing it); must be called within the browser's runtime.
    pub(crate) fn stop(&self) {
        if let Ok(mut process) = self.process.try_lock()
            && let Some(chromium) = process.take()
            && let Some(process) = &chromium.process
        {
            // It may have exited already: then there is nothing to kill.
            let _ = rustix::process::pidfd_send_signal(process, rustix::process::Signal::KILL);
        }
    }

    /// The running browser, started (again) if there is none or it died.
    async fn chromium(&self) -> Result<Arc<Chromium>, String> {
        let mut process = self.process.lock().await;
        if let Some(chromium) = process.as_ref().filter(|c| c.alive()) {
            return Ok(chromium.clone());
        }
        let chromium = Arc::new(Chromium::launch(&self.config, &self.env).await?);
        *process = Some(chromium.clone());
        Ok(chromium)
    }
}

/// One run's browser: its policy (and records) for the whole run, and the context while one is open.
pub(crate) struct RunBrowser {
    pub(crate) policy: Arc<RunPolicy>,
    deadline: Instant,
    ended: AtomicBool,
    context: Mutex<Option<Context>>,
    /// Serialises the run's operations: one page, one thing at a time.
    pub(crate) busy: tokio::sync::Mutex<()>,
    /// The run's screenshots, for its report's artifacts, and the bytes they may weigh in all (the run's
    /// `max_artifact_bytes`): a screenshot past it is still returned to the guest but not kept.
    screenshots: Mutex<(Vec<ToolImage>, u64)>,
    /// Set when a renderer of the run's context crashes (the page ran out of memory, or was killed).
    crash: Arc<CrashWatch>,
}

/// Whether a run's page crashed, and a wake-up for whoever waits on an operation when it does.
#[derive(Default)]
pub(crate) struct CrashWatch {
    crashed: AtomicBool,
    notify: tokio::sync::Notify,
}

impl CrashWatch {
    fn signal(&self) {
        self.crashed.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Waits until a crash is signalled (at once if one was).
    async fn crashed(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.crashed.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// An open browser context: the run's proxy, its pages, and the task that closes popups past the limit.
struct Context {
    chromium: Arc<Chromium>,
    id: BrowserContextId,
    page: Page,
    _proxy: Proxy,
    popups: JoinHandle<()>,
}

impl Context {
    /// Closes the context (and every page in it) and stops its proxy, so nothing of it is relayed any more.
    fn close(self) {
        self.popups.abort();
        let (chromium, id) = (self.chromium, self.id);
        tokio::spawn(async move {
            let _ = chromium.browser.dispose_browser_context(id).await;
        });
    }
}

impl RunBrowser {
    pub(crate) fn new(policy: Arc<RunPolicy>, deadline: Instant, max_artifact_bytes: u64) -> Self {
        RunBrowser {
            policy,
            deadline,
            ended: AtomicBool::new(false),
            context: Mutex::new(None),
            busy: tokio::sync::Mutex::new(()),
            screenshots: Mutex::new((Vec::new(), max_artifact_bytes)),
            crash: Arc::new(CrashWatch::default()),
        }
    }

    /// Runs `operation` unless the run's page crashes first. After a crash the context is closed (the run's next
    /// call opens a fresh one) and the error says what happened.
    pub(crate) async fn unless_crashed(
        &self,
        browsers: &Browsers,
        operation: impl Future<Output = OpResult>,
    ) -> OpResult {
        let result = tokio::select! {
            result = operation => result,
            () = self.crash.crashed() => Err(String::new()),
        };
        if !self.crash.crashed.swap(false, Ordering::SeqCst) {
            return result;
        }
        self.close();
        Err(format!(
            "the page's renderer crashed (it ran out of memory: each page may use {} MiB of JavaScript heap, \
             renderer_heap_mb; or it was killed); its browser context is closed, and the next browser call opens a \
             fresh one",
            browsers.config.renderer_heap_mb
        ))
    }

    /// Keeps `png` as an artifact of the run if it fits what is left of `max_artifact_bytes`; whether it was kept.
    fn keep_screenshot(&self, png: &[u8], title: String) -> bool {
        let mut kept = self.screenshots.lock().unwrap_or_else(PoisonError::into_inner);
        let size = png.len() as u64;
        if size > kept.1 {
            return false;
        }
        kept.1 -= size;
        kept.0.push(ToolImage { mime: "image/png".into(), title: Some(title), bytes: png.to_vec() });
        true
    }

    /// The screenshots kept for the run's report.
    pub(crate) fn take_screenshots(&self) -> Vec<ToolImage> {
        std::mem::take(&mut self.screenshots.lock().unwrap_or_else(PoisonError::into_inner).0)
    }

    fn context(&self) -> std::sync::MutexGuard<'_, Option<Context>> {
        self.context.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the run's browser: no context is opened after this, and the open one is closed. Must be called on
    /// the browser's runtime.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.close();
    }

    /// Closes the open context, if any (`browser.close`); a later call opens a fresh one.
    pub(crate) fn close(&self) {
        if let Some(context) = self.context().take() {
            context.close();
        }
    }

    /// The run's page, opening a fresh context for it when there is none.
    async fn page(&self, browsers: &Browsers) -> Result<Page, String> {
        if let Some(context) = self.context().as_ref() {
            return Ok(context.page.clone());
        }
        let chromium = browsers.chromium().await?;
        let proxy = Proxy::start(self.policy.clone()).await.map_err(|e| format!("cannot start the proxy: {e}"))?;
        let params = CreateBrowserContextParams::builder()
            .dispose_on_detach(true)
            .proxy_server(proxy.url())
            .proxy_bypass_list("<-loopback>")
            .build();
        let id = chromium
            .browser
            .create_browser_context(params)
            .await
            .map_err(|e| format!("cannot create a browser context: {e}"))?;
        let page = match open_page(&chromium, &id, &self.crash).await {
            Ok(page) => page,
            Err(e) => {
                let _ = chromium.browser.dispose_browser_context(id).await;
                return Err(e);
            }
        };
        let popups = tokio::spawn(limit_pages(chromium.clone(), id.clone(), browsers.config.pages_per_run));
        let context = Context { chromium, id, page: page.clone(), _proxy: proxy, popups };
        let mut slot = self.context();
        if self.ended.load(Ordering::SeqCst) {
            drop(slot);
            context.close();
            return Err("the run has ended".into());
        }
        if let Some(previous) = slot.replace(context) {
            previous.close();
        }
        Ok(page)
    }

    /// The deadline of an operation that may take `limit`: that long from now, or the run's deadline.
    fn deadline(&self, limit: Duration) -> Instant {
        self.deadline.min(Instant::now() + limit)
    }

    pub(crate) async fn navigate(&self, browsers: &Browsers, url: &str) -> OpResult {
        let parsed = url::Url::parse(url).map_err(|e| format!("{:?} is not a URL: {e}", cut(url, 512)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            let reason =
                format!("the {}: scheme is not allowed; only http and https pages may be opened", parsed.scheme());
            self.policy.deny_url(url, &reason);
            return Err(format!("navigation to {} refused: {reason}", cut(url, 512)));
        }
        let page = self.page(browsers).await?;
        let timeout = browsers.config.navigation_timeout();
        let deadline = self.deadline(timeout);
        let problems = self.policy.problems();
        let shown = cut(parsed.as_str(), 512);
        let navigated = tokio::time::timeout_at(deadline.into(), page.execute(NavigateParams::new(parsed.as_str())));
        let failure = match navigated.await {
            Err(_) => Some(None),
            Ok(Err(e)) => Some(Some(e.to_string())),
            Ok(Ok(response)) => response.result.error_text.clone().map(Some),
        };
        if let Some(failure) = failure {
            if failure.is_none() {
                // A navigation that never loaded stays queued in the CDP client: the run goes on in a fresh page
                // of the same context (its cookies and storage kept).
                self.replace_page(&page).await;
            } else {
                let _ = page.execute(StopLoadingParams::default()).await;
            }
            return Err(match (self.policy.problem_since(problems), failure) {
                (Some(problem), _) if problem.denied => {
                    format!("navigation to {shown} refused by policy: {} ({})", problem.reason, problem.target)
                }
                (Some(problem), _) => format!("navigation to {shown} failed: {} ({})", problem.reason, problem.target),
                (None, Some(error)) => format!("navigation to {shown} failed: {error}"),
                (None, None) => self.timed_out(&shown, deadline, timeout),
            });
        }
        loop {
            let state = evaluate_value(&page, "document.readyState").await;
            if state.as_ref().is_ok_and(|s| s == "complete") {
                break;
            }
            if Instant::now() + POLL >= deadline {
                self.replace_page(&page).await;
                return Err(self.timed_out(&shown, deadline, timeout));
            }
            tokio::time::sleep(POLL).await;
        }
        let script = "(() => { const n = performance.getEntriesByType('navigation')[0]; \
                      return {url: location.href.slice(0, 8192), title: document.title.slice(0, 2048), \
                      status: (n && n.responseStatus) || null}; })()";
        let summary = evaluate_value(&page, script).await?;
        Ok(json!({"url": summary["url"], "status": summary["status"], "title": summary["title"]}))
    }

    /// Puts a fresh page of the same context in place of `stuck`, and closes `stuck`.
    async fn replace_page(&self, stuck: &Page) {
        let Some((chromium, id)) = self.context().as_ref().map(|c| (c.chromium.clone(), c.id.clone())) else {
            return;
        };
        let _ = stuck.execute(StopLoadingParams::default()).await;
        if let Ok(fresh) = open_page(&chromium, &id, &self.crash).await {
            if let Some(context) = self.context().as_mut() {
                context.page = fresh;
            }
            let _ = chromium.browser.execute(CloseTargetParams::new(stuck.target_id().clone())).await;
        }
    }

    fn timed_out(&self, shown: &str, deadline: Instant, timeout: Duration) -> String {
        if deadline >= self.deadline {
            format!("navigation to {shown} did not finish before the run's deadline (cpu_ms)")
        } else {
            format!("navigation to {shown} did not finish loading within {} ms", timeout.as_millis())
        }
    }

    pub(crate) async fn extract(&self, browsers: &Browsers, selectors: &serde_json::Map<String, Value>) -> OpResult {
        let page = self.page(browsers).await?;
        let max = browsers.config.extract_max_bytes;
        let script = format!(
            "((selectors, max) => {{ const out = {{}}, missing = []; let total = 0; \
               for (const [name, selector] of Object.entries(selectors)) {{ let element; \
                 try {{ element = document.querySelector(selector); }} \
                 catch (e) {{ return {{invalid: name, message: String(e && e.message).slice(0, 1024)}}; }} \
                 if (element === null) {{ missing.push(name); continue; }} \
                 const text = element.matches('input, textarea, select') ? String(element.value) \
                   : String(element.innerText ?? element.textContent ?? ''); \
                 total += new TextEncoder().encode(text).length; \
                 if (total > max) return {{too_big: name, total}}; \
                 out[name] = text; }} \
               return missing.length ? {{missing}} : {{out}}; }})({}, {max})",
            Value::Object(selectors.clone())
        );
        let answer = self.bounded(&page, &script, browsers.config.navigation_timeout()).await?;
        if let Some(out) = answer.get("out") {
            return Ok(out.clone());
        }
        if let Some(missing) = answer.get("missing").and_then(Value::as_array) {
            let named: Vec<String> = missing
                .iter()
                .filter_map(Value::as_str)
                .map(|name| format!("{name} ({})", selectors.get(name).and_then(Value::as_str).unwrap_or_default()))
                .collect();
            return Err(format!("no element matches selector {}", named.join(", ")));
        }
        if let Some(name) = answer.get("invalid").and_then(Value::as_str) {
            let message = answer["message"].as_str().unwrap_or_default();
            return Err(format!("selector {name} is not a valid CSS selector: {message}"));
        }
        if let Some(name) = answer.get("too_big").and_then(Value::as_str) {
            return Err(format!(
                "the text extracted up to selector {name} is more than the {max} bytes one extract may return"
            ));
        }
        Err("the page answered the extraction with something unexpected".into())
    }

    pub(crate) async fn evaluate(&self, browsers: &Browsers, expression: &str) -> OpResult {
        let page = self.page(browsers).await?;
        let max = browsers.config.extract_max_bytes;
        let script = format!(
            "(async () => {{ let value; \
               try {{ value = await (0, eval)({}); }} \
               catch (e) {{ return {{thrown: {{ \
                 message: String(e && e.message !== undefined ? e.message : e).slice(0, 8192), \
                 stack: String(e && e.stack || e).slice(0, 16384)}}}}; }} \
               if (value === undefined) return {{json: 'null'}}; \
               let json; try {{ json = JSON.stringify(value); }} \
               catch (e) {{ return {{unserializable: String(e && e.message || e).slice(0, 2048)}}; }} \
               if (json === undefined) return {{json: 'null'}}; \
               if (json.length > {max}) return {{too_big: json.length}}; \
               return {{json}}; }})()",
            Value::String(expression.to_owned())
        );
        let answer = self.bounded(&page, &script, browsers.config.navigation_timeout()).await?;
        if let Some(json) = answer.get("json").and_then(Value::as_str) {
            let value: Value = serde_json::from_str(json).map_err(|e| format!("the value is not JSON: {e}"))?;
            return Ok(json!({ "value": value }));
        }
        if let Some(thrown) = answer.get("thrown") {
            let message = thrown["message"].as_str().unwrap_or_default();
            let stack = thrown["stack"].as_str().unwrap_or_default();
            return Err(format!("the page threw: {message}\n{stack}"));
        }
        if let Some(reason) = answer.get("unserializable").and_then(Value::as_str) {
            return Err(format!("the value cannot be turned into JSON: {reason}"));
        }
        if let Some(length) = answer.get("too_big") {
            return Err(format!("the value is {length} characters of JSON; at most {max} may be returned"));
        }
        Err("the page answered the evaluation with something unexpected".into())
    }

    pub(crate) async fn click(&self, browsers: &Browsers, selector: &str) -> OpResult {
        let page = self.page(browsers).await?;
        let limit = browsers.config.navigation_timeout();
        let done = async {
            let element = page.find_element(selector).await.map_err(|e| no_element(selector, &e))?;
            element.click().await.map_err(|e| format!("cannot click {selector}: {e}"))?;
            Ok(json!({ "clicked": selector }))
        };
        self.within(&page, limit, done).await
    }

    pub(crate) async fn type_text(&self, browsers: &Browsers, selector: &str, text: &str) -> OpResult {
        let page = self.page(browsers).await?;
        let limit = browsers.config.navigation_timeout();
        let done = async {
            let element = page.find_element(selector).await.map_err(|e| no_element(selector, &e))?;
            element.click().await.map_err(|e| format!("cannot focus {selector}: {e}"))?;
            element.type_str(text).await.map_err(|e| format!("cannot type into {selector}: {e}"))?;
            Ok(json!({ "typed": text.chars().count() }))
        };
        self.within(&page, limit, done).await
    }

    pub(crate) async fn wait_for(&self, browsers: &Browsers, selector: &str, timeout: Option<Duration>) -> OpResult {
        let page = self.page(browsers).await?;
        let limit = timeout.unwrap_or(browsers.config.navigation_timeout());
        let deadline = self.deadline(limit);
        let started = Instant::now();
        let probe = format!(
            "(() => {{ try {{ return document.querySelector({}) !== null; }} \
               catch (e) {{ return String(e && e.message).slice(0, 1024); }} }})()",
            Value::String(selector.to_owned())
        );
        loop {
            match evaluate_value(&page, &probe).await {
                Ok(Value::Bool(true)) => {
                    let waited_ms = started.elapsed().as_millis() as u64;
                    return Ok(json!({ "found": selector, "waited_ms": waited_ms }));
                }
                Ok(Value::String(message)) => return Err(format!("{selector} is not a valid CSS selector: {message}")),
                // Not there yet, or the page is between documents.
                Ok(_) | Err(_) => {}
            }
            if Instant::now() + POLL >= deadline {
                return Err(if deadline >= self.deadline {
                    format!("no element matched {selector} before the run's deadline (cpu_ms)")
                } else {
                    format!("no element matched {selector} within {} ms", limit.as_millis())
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub(crate) async fn screenshot(&self, browsers: &Browsers, full_page: bool) -> OpResult {
        let page = self.page(browsers).await?;
        let max = browsers.config.screenshot_max_bytes;
        let limit = browsers.config.navigation_timeout();
        let done = async {
            if full_page {
                let metrics = page.execute(GetLayoutMetricsParams::default()).await.map_err(|e| e.to_string())?;
                let size = &metrics.result.css_content_size;
                if size.width * size.height > MAX_SCREENSHOT_PIXELS {
                    return Err(format!(
                        "the page is {:.0}×{:.0} pixels; a full-page screenshot may have at most {MAX_SCREENSHOT_PIXELS} \
                         pixels",
                        size.width, size.height
                    ));
                }
            }
            let params = ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).full_page(full_page).build();
            let png = page.screenshot(params).await.map_err(|e| format!("cannot take the screenshot: {e}"))?;
            if png.len() as u64 > max {
                return Err(format!(
                    "the screenshot is {} bytes; screenshot_max_bytes is {max} (try without full_page)",
                    png.len()
                ));
            }
            let (width, height) = png_size(&png).ok_or("the browser's screenshot is not a PNG")?;
            let title = page.url().await.ok().flatten().unwrap_or_default();
            let artifact = self.keep_screenshot(&png, format!("screenshot of {}", cut_title(&title)));
            Ok(json!({
                "mime": "image/png",
                "base64": base64::engine::general_purpose::STANDARD.encode(&png),
                "width": width,
                "height": height,
                "bytes": png.len(),
                "artifact": artifact,
            }))
        };
        self.within(&page, limit, done).await
    }

    /// Runs `script` (one of the tools' own, which bound what they return) in the page within `limit`.
    async fn bounded(&self, page: &Page, script: &str, limit: Duration) -> OpResult {
        self.within(page, limit, evaluate_value(page, script)).await
    }

    /// Runs `operation` until `limit` from now or the run's deadline; past it, script still running in the page
    /// is stopped.
    async fn within(&self, page: &Page, limit: Duration, operation: impl Future<Output = OpResult>) -> OpResult {
        let deadline = self.deadline(limit);
        match tokio::time::timeout_at(deadline.into(), operation).await {
            Ok(result) => result,
            Err(_) => {
                let _ = page.execute(TerminateExecutionParams::default()).await;
                Err(if deadline >= self.deadline {
                    "the run's deadline (cpu_ms) passed before the page answered".into()
                } else {
                    format!("the page did not answer within {} ms", limit.as_millis())
                })
            }
        }
    }
}

fn no_element(selector: &str, error: &chromiumoxide::error::CdpError) -> String {
    format!("no element matches selector {selector} ({})", cut(&error.to_string(), 1024))
}

/// Evaluates `script` in the page's main frame and returns its value (the tools' own scripts return JSON).
async fn evaluate_value(page: &Page, script: &str) -> OpResult {
    let params = EvaluateParams::builder()
        .expression(script)
        .return_by_value(true)
        .await_promise(true)
        .build()
        .map_err(|e| format!("cannot evaluate: {e}"))?;
    let response = page.execute(params).await.map_err(|e| format!("the page cannot be reached: {e}"))?;
    if let Some(exception) = &response.result.exception_details {
        let text = exception.exception.as_ref().and_then(|e| e.description.clone()).unwrap_or(exception.text.clone());
        return Err(format!("the page threw: {}", cut(&text, REPORT_TEXT_BYTES)));
    }
    Ok(response.result.result.value.clone().unwrap_or(Value::Null))
}

/// A blank page in context `id`, ready for the tools; `crash` is signalled if its renderer crashes.
async fn open_page(chromium: &Chromium, id: &BrowserContextId, crash: &Arc<CrashWatch>) -> Result<Page, String> {
    let target = CreateTargetParams::builder()
        .url("about:blank")
        .browser_context_id(id.clone())
        .build()
        .map_err(|e| format!("cannot open a page: {e}"))?;
    let page = chromium.browser.new_page(target).await.map_err(|e| format!("cannot open a page: {e}"))?;
    // The tools' own scripts (and `evaluate`) must run whatever the page's Content-Security-Policy says; requests
    // skip service workers (whose own traffic goes through the context's proxy all the same).
    let prepare = |e: chromiumoxide::error::CdpError| format!("cannot prepare the page: {e}");
    page.execute(SetBypassCspParams::new(true)).await.map_err(prepare)?;
    page.execute(SetBypassServiceWorkerParams::new(true)).await.map_err(prepare)?;
    let mut crashes = page.event_listener::<EventTargetCrashed>().await.map_err(prepare)?;
    page.execute(InspectorEnableParams::default()).await.map_err(prepare)?;
    let crash = crash.clone();
    // Ends with the page (its event stream closes).
    tokio::spawn(async move {
        if crashes.next().await.is_some() {
            crash.signal();
        }
    });
    Ok(page)
}

/// Closes pages of context `id` past `limit` as they open (popups in a loop end here).
async fn limit_pages(chromium: Arc<Chromium>, id: BrowserContextId, limit: u32) {
    let Ok(mut created) = chromium.browser.event_listener::<EventTargetCreated>().await else {
        return;
    };
    while let Some(event) = created.next().await {
        let info = &event.target_info;
        if info.r#type != "page" || info.browser_context_id.as_ref() != Some(&id) {
            continue;
        }
        let Ok(targets) = chromium.browser.execute(GetTargetsParams::default()).await else {
            continue;
        };
        let open = targets
            .result
            .target_infos
            .iter()
            .filter(|t| t.r#type == "page" && t.browser_context_id.as_ref() == Some(&id))
            .count();
        if open > limit as usize {
            let _ = chromium.browser.execute(CloseTargetParams::new(info.target_id.clone())).await;
        }
    }
}

/// Width and height of a PNG, from its header.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let word = |at: usize| png.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
    Some((word(16)?, word(20)?))
}

/// A page URL short enough for an artifact's title.
fn cut_title(url: &str) -> &str {
    let mut end = url.len().min(200);
    while !url.is_char_boundary(end) {
        end -= 1;
    }
    &url[..end]
}
