//! The web console in a real browser: Debian's Chromium, headless, driven over CDP (chromiumoxide), against a
//! server on 127.0.0.1 in dev mode. Every request goes to 127.0.0.1: "external" URLs in hostile cards point at a
//! loopback listener the test serves, which counts connections and must see none.
//!
//! Without Chromium the tests say so and pass, except in CI (`CI=true`), where a missing browser is a failure.
//! `WASMAGENT_CONSOLE_SCREENSHOT=docs/console.png` also writes the screenshot of a run there (`scripts/console-screenshot.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use chromiumoxide::cdp::browser_protocol::page::EventJavascriptDialogOpening;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmagent_server::{AppState, ServerConfig};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Long enough for a first run to compile an engine into the (shared) code cache.
const RUN_DEADLINE: Duration = Duration::from_secs(180);
const DEADLINE: Duration = Duration::from_secs(20);

/// Chromium, or `None` (after saying why) when it is missing outside CI.
fn chromium() -> Option<&'static str> {
    if Path::new(CHROMIUM).exists() {
        return Some(CHROMIUM);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{CHROMIUM} is missing: CI must run the browser tests");
    eprintln!("skipping: {CHROMIUM} is missing (apt-get install chromium)");
    None
}

struct Harness {
    base: String,
    page: Page,
    browser: Browser,
    _handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
    /// Connections to the "external" listener, and the paths asked for on them.
    external: Arc<AtomicUsize>,
    requested: Arc<std::sync::Mutex<Vec<String>>>,
    external_base: String,
}

async fn start(executable: &str) -> Harness {
    let config = ServerConfig { pool_slots: 4, max_concurrent_runs: 2, ..ServerConfig::default() };
    let state = Arc::new(AppState::new(&config, true).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wasmagent_server::serve(listener, state, &[], async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });

    let external = Arc::new(AtomicUsize::new(0));
    let requested = Arc::new(std::sync::Mutex::new(Vec::new()));
    let counter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let external_base = format!("http://{}", counter.local_addr().unwrap());
    let (count, paths) = (external.clone(), requested.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = counter.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let paths = paths.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = [0u8; 4096];
                let read = stream.read(&mut buffer).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buffer[..read]).into_owned();
                if let Some(path) = head.split(' ').nth(1) {
                    paths.lock().unwrap().push(path.to_owned());
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
            });
        }
    });

    let profile = tempfile::tempdir().unwrap();
    let launch = BrowserConfig::builder()
        .chrome_executable(executable)
        .disable_default_args()
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(1280, 1000)
        .viewport(None)
        .args([
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .build()
        .unwrap();
    let (browser, mut events) = Browser::launch(launch).await.unwrap();
    let handler = tokio::spawn(async move { while events.next().await.is_some() {} });
    let page = browser.new_page(format!("{base}/console")).await.unwrap();
    let harness = Harness {
        base,
        page,
        browser,
        _handler: handler,
        _profile: profile,
        _stop: stop,
        external,
        requested,
        external_base,
    };
    harness.wait("document.readyState === 'complete' && !!document.getElementById('run')", DEADLINE).await;
    harness
}

impl Harness {
    async fn eval<T: DeserializeOwned>(&self, script: &str) -> T {
        // A page that stops answering (blocked by a dialog, say) fails the test instead of hanging it.
        let result = tokio::time::timeout(DEADLINE, self.page.evaluate(script))
            .await
            .unwrap_or_else(|_| panic!("the page did not answer within {DEADLINE:?} (a dialog?): {script}"))
            .unwrap_or_else(|e| panic!("{script}: {e}"));
        result.into_value().unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Polls `condition` (a JavaScript expression) until it is true.
    async fn wait(&self, condition: &str, deadline: Duration) {
        let start = Instant::now();
        loop {
            if self.eval::<bool>(&format!("!!({condition})")).await {
                return;
            }
            assert!(start.elapsed() < deadline, "still false after {deadline:?}: {condition}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `code` and `manifest`, runs with Ctrl+Enter and waits for the `n`th history entry.
    async fn run(&self, language: &str, code: &str, manifest: &str, n: usize) {
        let set = format!(
            "document.getElementById('language').value = {};
             document.getElementById('code').value = {};
             document.getElementById('manifest').value = {};
             document.dispatchEvent(new KeyboardEvent('keydown', {{ key: 'Enter', ctrlKey: true, bubbles: true }}));
             true",
            serde_json::to_string(language).unwrap(),
            serde_json::to_string(code.trim()).unwrap(),
            serde_json::to_string(manifest).unwrap(),
        );
        assert!(self.eval::<bool>(&set).await);
        let done = format!(
            "document.querySelectorAll('#history li').length === {n} || !document.getElementById('run-error').hidden"
        );
        self.wait(&done, RUN_DEADLINE).await;
        let error: String = self.eval("document.getElementById('run-error').textContent").await;
        assert!(error.is_empty(), "the run failed: {error}");
    }

    async fn text(&self, id: &str) -> String {
        self.eval(&format!("document.getElementById({}).textContent", serde_json::to_string(id).unwrap())).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_runs_javascript_and_python_and_shows_reports_and_cards() {
    let Some(executable) = chromium() else { return };
    let h = start(executable).await;

    // The page's own headers.
    let response = reqwest::get(format!("{}/console", h.base)).await.unwrap();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let csp = header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");

    // JavaScript: a chart, a table, a refused file read and a value.
    let js = r##"
const runs = [['Mon', 3], ['Tue', 7], ['Wed', 5], ['Thu', 9], ['Fri', 4]];
const bars = runs.map(([day, n], i) =>
  `<rect x="${20 + i * 50}" y="${110 - n * 10}" width="36" height="${n * 10}" fill="#2d6cdf"/>` +
  `<text x="${38 + i * 50}" y="128" font-size="12" text-anchor="middle">${day}</text>`).join('');
display.svg(`<svg xmlns="http://www.w3.org/2000/svg" width="280" height="135">${bars}</svg>`, 'Runs per day');
display.table(runs.map(([day, n]) => ({ day, runs: n, note: '<img src=x onerror=alert(1)>' })), 'Runs');
try { fs.readFile('/etc/passwd'); } catch (e) { console.log('refused'); }
console.log('total', runs.reduce((s, [, n]) => s + n, 0));
runs.length * 6
"##;
    h.run("js", js, "", 1).await;
    assert_eq!(h.text("outcome").await, "ok");
    assert_eq!(h.text("value").await, "30");
    assert_eq!(h.text("stdout").await, "refused\ntotal 28\n");
    let denials: Vec<Vec<String>> = h
        .eval(
            "[...document.querySelectorAll('#denials tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent))",
        )
        .await;
    assert!(denials.iter().any(|d| d[0] == "fs.read" && d[1] == "/etc/passwd"), "{denials:?}");
    let kinds: Vec<String> =
        h.eval("[...document.querySelectorAll('#artifacts .card')].map((c) => c.dataset.kind)").await;
    assert_eq!(kinds, ["svg", "table"]);
    // The table's cells are text: the markup in them is not an element.
    let cells: Vec<String> = h
        .eval("[...document.querySelectorAll('#artifacts table tbody tr:first-child td')].map((c) => c.textContent)")
        .await;
    assert_eq!(cells, ["Mon", "3", "<img src=x onerror=alert(1)>"]);
    assert!(h.eval::<bool>("document.querySelector('#artifacts img') === null").await);
    // The chart's frame was shown (it reported its height).
    h.wait("document.querySelector('#artifacts iframe').style.height !== ''", DEADLINE).await;
    let screenshot = h.page.screenshot(ScreenshotParams::builder().build()).await.unwrap();
    check_not_blank(&screenshot);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::write(&target, &screenshot).unwrap();
    if let Ok(path) = std::env::var("WASMAGENT_CONSOLE_SCREENSHOT") {
        std::fs::write(&path, &screenshot).unwrap();
    }

    // Python: Markdown (rendered on the server, sanitised) and JSON, and a value.
    let python = r##"
from wasmagent import display
display.markdown("# Report\n\n*three* runs\n\n<script>parent.postMessage('x', '*')</script>")
display.json({"runs": [3, 7, 5]}, title="raw")
sum([3, 7, 5])
"##;
    h.run("python", python, "", 2).await;
    assert_eq!(h.text("outcome").await, "ok");
    assert_eq!(h.text("value").await, "15");
    let kinds: Vec<String> =
        h.eval("[...document.querySelectorAll('#artifacts .card')].map((c) => c.dataset.kind)").await;
    assert_eq!(kinds, ["markdown", "json"]);
    assert_eq!(
        h.eval::<String>("document.querySelector('#artifacts .card[data-kind=json] pre').textContent").await,
        "{\n  \"runs\": [\n    3,\n    7,\n    5\n  ]\n}"
    );
    h.wait("document.querySelector('#artifacts iframe') && document.querySelector('#artifacts iframe').style.height !== ''", DEADLINE)
        .await;
    let history: Vec<String> =
        h.eval("[...document.querySelectorAll('#history li')].map((li) => li.textContent)").await;
    assert!(
        history.len() == 2 && history[0].starts_with("#2 python · ok") && history[1].starts_with("#1 js · ok"),
        "{history:?}"
    );

    // A typo in the manifest: the error is shown next to the editor and nothing runs.
    let set = "document.getElementById('manifest').value = 'cpu_msx = 5';
               document.getElementById('run').click(); true";
    assert!(h.eval::<bool>(set).await);
    h.wait("!document.getElementById('manifest-error').hidden", DEADLINE).await;
    let error = h.text("manifest-error").await;
    assert!(error.contains("cpu_msx") && error.starts_with("HTTP 400"), "{error}");
    assert!(h.eval::<bool>("document.getElementById('manifest').nextElementSibling.id === 'manifest-error'").await);
    assert!(h.eval::<bool>("document.getElementById('manifest').getAttribute('aria-invalid') === 'true'").await);
    h.wait("!document.getElementById('run').disabled", DEADLINE).await;
    assert_eq!(h.eval::<usize>("document.querySelectorAll('#history li').length").await, 2);
    // A manifest asking for more than the server allows names the field.
    assert!(h.eval::<bool>("document.getElementById('manifest').value = 'cpu_ms = 3600000'; document.getElementById('run').click(); true").await);
    h.wait("document.getElementById('manifest-error').textContent.includes('cpu_ms')", DEADLINE).await;
    drop(h.browser);
}

/// A PNG of the console with a chart: decodes, and is not one flat colour; the chart's bar colour is in it.
fn check_not_blank(png_bytes: &[u8]) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let pixels = &pixels[..info.buffer_size()];
    let mut counts = std::collections::HashMap::new();
    let mut bars = 0;
    for pixel in pixels.chunks(channels) {
        *counts.entry(pixel[..3].to_vec()).or_insert(0usize) += 1;
        if pixel[0].abs_diff(0x2d) < 8 && pixel[1].abs_diff(0x6c) < 8 && pixel[2].abs_diff(0xdf) < 8 {
            bars += 1;
        }
    }
    let total = pixels.len() / channels;
    let most = counts.values().copied().max().unwrap_or(0);
    assert!(counts.len() > 50 && most < total * 9 / 10, "the screenshot is blank: {} colours", counts.len());
    assert!(bars > 1000, "the chart's bars are not in the screenshot ({bars} pixels)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cards_are_harmless() {
    let Some(executable) = chromium() else { return };
    let h = start(executable).await;
    let mut dialogs = h.page.event_listener::<EventJavascriptDialogOpening>().await.unwrap();
    // Secrets of the console's origin, and a listener for what the cards report about themselves.
    let setup = "document.cookie = 'console_secret=c00kie; path=/';
                 localStorage.setItem('console_secret', 'st0rage');
                 window.probes = [];
                 addEventListener('message', (e) => { if (e.data && e.data.probe) window.probes.push(e.data.probe); });
                 true";
    assert!(h.eval::<bool>(setup).await);
    let x = &h.external_base;
    let probe = r#"
      const r = {};
      try { r.cookie = document.cookie; } catch (e) { r.cookie = 'threw ' + e.name; }
      try { r.storage = String(localStorage.getItem('console_secret')); } catch (e) { r.storage = 'threw ' + e.name; }
      try { r.parent = String(parent.document.cookie); } catch (e) { r.parent = 'threw ' + e.name; }
      try { r.topHref = String(top.location.href); } catch (e) { r.topHref = 'threw ' + e.name; }
    "#;
    let html = format!(
        r#"<form id="f" action="{x}/form" method="post"><input name="q" value="1"></form>
<img src="{x}/img.png"><link rel="stylesheet" href="{x}/style.css"><script src="{x}/script.js"></script>
<p>hostile</p>
<script>
{probe}
  try {{ document.getElementById('f').submit(); r.submit = 'returned'; }} catch (e) {{ r.submit = 'threw ' + e.name; }}
  const t0 = Date.now();
  try {{ alert('boo'); r.alert = 'returned'; }} catch (e) {{ r.alert = 'threw ' + e.name; }}
  r.alertMs = Date.now() - t0;
  try {{ top.location.href = '{x}/top'; r.top = 'assigned'; }} catch (e) {{ r.top = 'threw ' + e.name; }}
  try {{ fetch('{x}/fetch').catch(() => {{}}); }} catch (e) {{}}
  try {{ new Image().src = '{x}/img2.png'; }} catch (e) {{}}
  try {{ window.open('{x}/popup'); }} catch (e) {{}}
  r.kind = 'html';
  setTimeout(() => {{
    parent.postMessage({{ wasmagentHeight: 1e9 }}, '*');
    for (const junk of ['900px', NaN, Infinity, null, {{}}, [5]]) parent.postMessage({{ wasmagentHeight: junk }}, '*');
    parent.postMessage({{ probe: r }}, '*');
  }}, 300);
</script>"#
    );
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="40" onload="parent.postMessage({{probe: {{kind: 'svg-onload', parent: (() => {{ try {{ return String(parent.document.cookie); }} catch (e) {{ return 'threw ' + e.name; }} }})()}}}}, '*')">
<image href="{x}/svg-image.png" width="10" height="10"/>
<script>{probe} try {{ fetch('{x}/svg-fetch').catch(() => {{}}); }} catch (e) {{}} r.kind = 'svg-script'; parent.postMessage({{ probe: r }}, '*');</script>
<rect width="100" height="40" fill="#c00"/></svg>"##
    );
    let markdown =
        format!("# Hi\n\n<script>parent.postMessage({{probe: {{kind: 'md'}}}}, '*')</script>\n\n![x]({x}/md.png)\n");
    let code = format!(
        "display.html({}); display.svg({}); display.markdown({}); 'shown'",
        serde_json::to_string(&html).unwrap(),
        serde_json::to_string(&svg).unwrap(),
        serde_json::to_string(&markdown).unwrap()
    );
    h.run("js", &code, "", 1).await;
    assert_eq!(h.text("outcome").await, "ok");
    h.wait("['html', 'svg-onload', 'svg-script'].every((k) => window.probes.some((p) => p.kind === k))", DEADLINE)
        .await;
    let probes: Vec<serde_json::Value> = h.eval("window.probes").await;
    for probe in &probes {
        let text = probe.to_string();
        assert!(!text.contains("c00kie") && !text.contains("st0rage"), "a card read the console's secrets: {text}");
        if probe["kind"] == "html" || probe["kind"] == "svg-script" {
            assert!(probe["cookie"] == "" || probe["cookie"] == "threw SecurityError", "{text}");
            assert_eq!(probe["storage"], "threw SecurityError", "{text}");
            assert_eq!(probe["parent"], "threw SecurityError", "{text}");
            assert_eq!(probe["topHref"], "threw SecurityError", "{text}");
        }
        if probe["kind"] == "svg-onload" {
            assert_eq!(probe["parent"], "threw SecurityError", "{text}");
        }
        assert_ne!(probe["kind"], "md", "the Markdown's script ran: {text}");
    }
    let html_probe = probes.iter().find(|p| p["kind"] == "html").unwrap();
    assert!(html_probe["alertMs"].as_u64().unwrap() < 1000, "{html_probe}");
    // The fake heights: the huge one clamped, the others ignored.
    let html_height: String =
        h.eval("document.querySelector('#artifacts .card[data-kind=html] iframe').style.height").await;
    assert_eq!(html_height, "2000px");
    // A height message from something that is not a card is ignored.
    assert!(h.eval::<bool>("postMessage({ wasmagentHeight: 77 }, '*'); true").await);

    // Nothing reached the "external" listener: a request of the test's own shows it counts.
    assert_eq!(h.external.load(Ordering::SeqCst), 0, "a card reached the network");
    let control = h.browser.new_page(format!("{}/control", h.external_base)).await.unwrap();
    let start = Instant::now();
    while !h.requested.lock().unwrap().iter().any(|p| p == "/control") {
        assert!(start.elapsed() < DEADLINE, "the listener never saw the control request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    control.close().await.unwrap();
    // Chromium may open spare connections and ask for a favicon for the control page; nothing a card named.
    let requested = h.requested.lock().unwrap().clone();
    assert!(requested.iter().all(|p| p == "/control" || p == "/favicon.ico"), "{requested:?}");
    // The console is where it was, no dialog opened, and its secrets are intact.
    let url = h.page.url().await.unwrap().unwrap_or_default();
    assert_eq!(url, format!("{}/console", h.base));
    assert!(futures_util::FutureExt::now_or_never(dialogs.next()).is_none(), "a card opened a dialog");
    assert_eq!(h.eval::<String>("localStorage.getItem('console_secret')").await, "st0rage");
    assert_eq!(
        h.eval::<String>("document.querySelector('#artifacts .card[data-kind=html] iframe').style.height").await,
        "2000px"
    );
}

/// The console's two API endpoints need the same credentials as runs, and answer as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_check_and_markdown_rendering_need_credentials_and_answer_as_documented() {
    async fn serve(insecure_no_auth: bool) -> (String, tokio::sync::oneshot::Sender<()>) {
        let mut config = ServerConfig { pool_slots: 2, max_concurrent_runs: 1, ..ServerConfig::default() };
        config.max_manifest = wasmagent::CapabilityManifest::from_toml_str("max_artifact_bytes = \"4KiB\"").unwrap();
        let state = Arc::new(AppState::new(&config, insecure_no_auth).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            wasmagent_server::serve(listener, state, &[], async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        (base, stop)
    }
    let client = reqwest::Client::new();
    let post = |base: &str, path: &str, body: &str| client.post(format!("{base}{path}")).body(body.to_owned()).send();

    let (closed, _stop_closed) = serve(false).await;
    for path in ["/v1/manifests/check", "/v1/render/markdown"] {
        assert_eq!(post(&closed, path, "cpu_ms = 100").await.unwrap().status(), 401, "{path}");
    }
    assert_eq!(client.get(format!("{closed}/console")).send().await.unwrap().status(), 200);

    let (open, _stop_open) = serve(true).await;
    let checked: serde_json::Value = post(&open, "/v1/manifests/check", "cpu_ms = 100\nmax_artifact_bytes = \"1KiB\"")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checked["manifest"]["cpu_ms"], 100);
    assert_eq!(checked["effective"]["max_artifact_bytes"], 1024);
    let wider = post(&open, "/v1/manifests/check", "max_artifact_bytes = \"8KiB\"").await.unwrap();
    assert_eq!(wider.status(), 403);
    assert!(checked["digest"].as_str().unwrap().starts_with("sha256:"));
    let typo = post(&open, "/v1/manifests/check", "cpu_msx = 1").await.unwrap();
    assert_eq!(typo.status(), 400);
    assert!(typo.text().await.unwrap().contains("cpu_msx"));
    let above = post(&open, "/v1/manifests/check", "max_artifact_bytes = \"1GiB\"").await.unwrap();
    let above: serde_json::Value = above.json().await.unwrap();
    assert_eq!(above["field"], "max_artifact_bytes", "{above}");
    let rendered: serde_json::Value =
        post(&open, "/v1/render/markdown", "**b** <script>x</script>").await.unwrap().json().await.unwrap();
    assert_eq!(rendered["html"], "<p><strong>b</strong> </p>\n");
    // Markdown is bounded by the maximum manifest's max_artifact_bytes (4 KiB here).
    let too_big = "x".repeat(4097);
    assert_eq!(post(&open, "/v1/render/markdown", &too_big).await.unwrap().status(), 413);
}
