//! The browser tools with a real Chromium, aimed only at loopback: the sites are served by this test on
//! 127.0.0.1, the operator excepts exactly the site's address and port, and every attack aims at a loopback
//! address or port that was not excepted (standing in for private addresses), or at a name only the test's resolver
//! knows (standing in for DNS rebinding). A "victim" listener records every connection that reaches it: a policy bug
//! shows up as a connection there, never as traffic leaving the machine.
//!
//! Without Chromium the tests say so and pass, unless `CI` is set: then its absence is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmagent_browser::{BrowserConfig, BrowserTools};
use wasmagent_egress::{EgressConfig, StaticResolver};
use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};
use wasmagent_tools::{ToolRecords, ToolRegistry, ToolSession};

/// Whether the tests can run: Chromium is installed. Without it they pass with a message, except in CI.
fn chromium_present() -> bool {
    let present = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("chromium").is_file()));
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed, and CI is set: .ci/run installs it (apt-get install chromium)"
        );
        eprintln!("SKIPPED: chromium is not on PATH (install Debian's `chromium` to run the browser tests)");
    }
    present
}

/// A loopback HTTP server answering with `route`, recording every request line it receives.
struct Site {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

type Route = fn(&str, u16) -> Option<Vec<u8>>;

impl Site {
    fn start(address: &str, route: Route) -> Site {
        let listener = TcpListener::bind((address, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || serve(stream, port, route, &log));
            }
        });
        Site { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, port: u16, route: Route, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    log.lock().unwrap().push(line.trim_end().to_owned());
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
    let mut stream = stream;
    if let Some(response) = route(&path, port) {
        let _ = stream.write_all(&response);
    } else {
        // A page that never finishes: headers and a little of the body, then nothing until the client leaves.
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n<p>");
        let _ = stream.flush();
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn html(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The test site. `{PORT}` in a page is its own port; `/attack/...?target` pages aim at the target in the query.
fn site(path: &str, port: u16) -> Option<Vec<u8>> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let target = query.replace("%3A", ":").replace("%2F", "/");
    let page = match path {
        "/" => "<!doctype html><title>Home</title><style>body{margin:0}</style>\
                <h1 id=title>Hello</h1><p class=intro>Intro text</p>\
                <button id=go onclick=\"document.getElementById('out').textContent='clicked'\">Go</button>\
                <div id=out>not yet</div><input id=name>\
                <script>setTimeout(() => { const d = document.createElement('div'); d.id = 'late'; \
                d.textContent = 'late'; document.body.appendChild(d); }, 300)</script>"
            .to_owned(),
        "/tall" => "<!doctype html><title>Tall</title><style>html,body{margin:0}</style>\
                    <div style='width:300px;height:1500px;background:#08f'></div>"
            .to_owned(),
        "/fetch" => format!(
            "<!doctype html><title>Fetch</title><div id=result>pending</div><script>\
             fetch('{target}').then(r => r.text()).then(t => result.textContent = 'got ' + t, \
             e => result.textContent = 'blocked')</script>"
        ),
        "/iframe" => format!("<!doctype html><title>Frame</title><iframe src='{target}'></iframe>"),
        "/redirect" => {
            let response =
                format!("HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return Some(response.into_bytes());
        }
        "/ws" => format!(
            "<!doctype html><title>WS</title><div id=result>pending</div><script>\
             const ws = new WebSocket('{target}'); ws.onopen = () => result.textContent = 'open'; \
             ws.onerror = () => result.textContent = 'blocked';</script>"
        ),
        "/prefetch" => format!("<!doctype html><title>Prefetch</title><link rel=prefetch href='{target}'><p>x"),
        "/popups" => "<!doctype html><title>Popups</title><script>window.opened = [];</script>\
                      <button id=go onclick=\"for (let i = 0; i < 50; i++) opened.push(window.open('/?' + i))\">\
                      open</button><script>setInterval(() => opened.push(window.open('/')), 5)</script>"
            .to_owned(),
        "/store" => "<!doctype html><title>Store</title><script>localStorage.setItem('k', 'v1'); \
                     document.cookie = 'c=v2; path=/';</script>"
            .to_owned(),
        "/throw" => "<!doctype html><title>Throw</title><script>function deep() { throw new Error('boom'); }</script>"
            .to_owned(),
        "/secret" => "secret".to_owned(),
        // Keeps allocating arrays of numbers (V8's own heap, which renderer_heap_mb caps) until the renderer dies.
        "/hog" => "<!doctype html><title>Hog</title><div id=n>0</div><script>const keep = []; let n = 0; \
                   function grow() { for (let i = 0; i < 50; i++) { keep.push(new Array(100000).fill(n + 0.5)); \
                   n++; } document.getElementById('n').textContent = n; setTimeout(grow, 0); } grow();</script>"
            .to_owned(),
        "/never" => return None,
        _ => format!("<!doctype html><title>{port}</title>"),
    };
    Some(html(&page))
}

/// Everything the tests share: one browser (kept warm across runs, as in production), the site, the victims.
struct Harness {
    tools: Arc<ToolRegistry>,
    site: Site,
    /// On 127.0.0.1, a port the operator did not except.
    victim: Site,
    /// On 127.0.0.2, not excepted at all.
    victim2: Site,
}

/// Kills this process's `chromium` children. The harness is a static, which is never dropped, so without this each
/// run of this test binary would leave its browser running after it exits.
extern "C" fn kill_chromium_children() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else { continue };
        for pid in children.split_whitespace().filter_map(|pid| pid.parse::<i32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "chromium"
                && let Some(pid) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // SAFETY: registers a function that only reads /proc and sends signals, run once at process exit.
        #[allow(unsafe_code, reason = "atexit is the only hook that runs when the test binary exits")]
        unsafe {
            libc::atexit(kill_chromium_children);
        }
        let site = Site::start("127.0.0.1", site);
        let victim = Site::start("127.0.0.1", |_, _| Some(html("secret")));
        let victim2 = Site::start("127.0.0.2", |_, _| Some(html("secret")));
        let mut egress = EgressConfig::new();
        egress.allow_private(&format!("127.0.0.1:{}", site.port)).unwrap();
        // The name only this resolver knows, pointing at loopback: DNS rebinding's stand-in.
        let resolver = StaticResolver::new().answer("rebind.test", vec![vec!["127.0.0.1".parse().unwrap()]]);
        let config = BrowserConfig {
            navigation_timeout_ms: 4_000,
            pages_per_run: 3,
            renderer_heap_mb: 256,
            ..BrowserConfig::default()
        };
        let browser = BrowserTools::new(config, egress, Arc::new(resolver)).unwrap();
        let mut tools = ToolRegistry::new();
        browser.register(&mut tools).unwrap();
        Harness { tools: Arc::new(tools), site, victim, victim2 }
    })
}

/// One run: a tool session under a manifest that allows the loopback hosts (the floor is what refuses them).
struct Run {
    session: ToolSession,
}

impl Run {
    fn new() -> Run {
        let manifest = CapabilityManifest {
            allowed_hosts: ["127.0.0.1", "127.0.0.2", "rebind.test"].map(String::from).to_vec(),
            extra_capabilities: vec!["tool:browser.*".into()],
            cpu_ms: Some(40_000),
            ..Default::default()
        }
        .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        Run { session: ToolSession::new(harness().tools.clone(), &manifest, deadline) }
    }

    fn call(&mut self, tool: &str, args: Value) -> Result<Value, String> {
        let bytes = serde_json::to_vec(&args).unwrap();
        self.session.call(Ok(tool.into()), Ok(bytes)).map(|result| serde_json::from_slice(&result).unwrap())
    }

    fn ok(&mut self, tool: &str, args: Value) -> Value {
        self.call(tool, args.clone()).unwrap_or_else(|e| panic!("{tool} {args}: {e}"))
    }

    fn open(&mut self, path: &str) -> Value {
        let url = format!("http://127.0.0.1:{}{path}", harness().site.port);
        self.ok("browser.navigate", json!({ "url": url }))
    }

    /// Polls the text of `selector` until it is no longer `pending` (or 5 s pass).
    fn settled_text(&mut self, selector: &str) -> String {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let text =
                self.ok("browser.extract", json!({"selectors": {"t": selector}}))["t"].as_str().unwrap().to_owned();
            if text != "pending" || Instant::now() > until {
                return text;
            }
        }
    }

    fn end(self) -> ToolRecords {
        self.session.into_records()
    }
}

fn assert_untouched(victim: &Site) {
    assert!(victim.requests().is_empty(), "a refused address was reached: {:?}", victim.requests());
}

fn has_denial(records: &ToolRecords, needle: &str) -> bool {
    records
        .denials
        .iter()
        .any(|d| d.capability == "net.http" && (d.reason.contains(needle) || d.target.contains(needle)))
}

#[test]
fn navigate_extract_click_type_wait_and_screenshot() {
    if !chromium_present() {
        return;
    }
    let mut run = Run::new();
    let page = run.open("/");
    assert_eq!(page["title"], "Home");
    assert_eq!(page["status"], 200);
    assert!(page["url"].as_str().unwrap().ends_with('/'));
    let texts = run.ok("browser.extract", json!({"selectors": {"title": "#title", "intro": "p.intro", "out": "#out"}}));
    assert_eq!(texts, json!({"title": "Hello", "intro": "Intro text", "out": "not yet"}));
    let missing = run.call("browser.extract", json!({"selectors": {"title": "#title", "nothing": ".absent"}}));
    assert!(missing.as_ref().unwrap_err().contains("nothing (.absent)"), "{missing:?}");
    run.ok("browser.click", json!({"selector": "#go"}));
    assert_eq!(run.ok("browser.extract", json!({"selectors": {"out": "#out"}}))["out"], "clicked");
    run.ok("browser.type", json!({"selector": "#name", "text": "Ada Lovelace"}));
    assert_eq!(run.ok("browser.extract", json!({"selectors": {"name": "#name"}}))["name"], "Ada Lovelace");
    let found = run.ok("browser.wait_for", json!({"selector": "#late", "timeout_ms": 3000}));
    assert_eq!(found["found"], "#late");
    let absent = run.call("browser.wait_for", json!({"selector": "#never", "timeout_ms": 200})).unwrap_err();
    assert!(absent.contains("within 200 ms"), "{absent}");
    assert!(run.call("browser.click", json!({"selector": "#absent"})).unwrap_err().contains("#absent"));

    let value = run.ok("browser.evaluate", json!({"expression": "({sum: 1 + 2, text: document.title})"}));
    assert_eq!(value["value"], json!({"sum": 3, "text": "Home"}));
    let awaited = run.ok("browser.evaluate", json!({"expression": "new Promise(r => setTimeout(() => r(42), 10))"}));
    assert_eq!(awaited["value"], 42);
    let thrown = run.call("browser.evaluate", json!({"expression": "(function deep() { throw new Error('boom') })()"}));
    let thrown = thrown.unwrap_err();
    assert!(thrown.contains("boom") && thrown.contains("at deep"), "message and stack: {thrown}");

    run.open("/tall");
    let shot = run.ok("browser.screenshot", json!({"full_page": true}));
    assert_eq!(shot["mime"], "image/png");
    let png = base64_decode(shot["base64"].as_str().unwrap());
    assert_eq!(png.len() as u64, shot["bytes"].as_u64().unwrap());
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let reader = decoder.read_info().unwrap();
    let (width, height) = (reader.info().width, reader.info().height);
    let page_height = run.ok("browser.evaluate", json!({"expression": "document.documentElement.scrollHeight"}));
    assert_eq!(height as u64, page_height["value"].as_u64().unwrap(), "the PNG is as tall as the page");
    assert_eq!(width, 800, "the PNG is as wide as the page's 800-pixel viewport");
    let viewport = run.ok("browser.screenshot", json!({}));
    assert!(viewport["height"].as_u64().unwrap() < height as u64, "without full_page, only the viewport");
    assert_eq!((shot["width"].as_u64(), shot["height"].as_u64()), (Some(width as u64), Some(height as u64)));

    let records = run.end();
    let site = format!("127.0.0.1:{}", harness().site.port);
    // Chromium's own services (autofill when typing into a form) ask for Google hosts through the run's proxy and
    // are refused like anything else; nothing the pages asked for was.
    let loopback = records.denials.iter().filter(|d| d.target.contains("127.0.0.1")).collect::<Vec<_>>();
    assert!(loopback.is_empty(), "{loopback:?}");
    assert!(
        records.http_requests.iter().any(|r| r.url.contains(&site) && r.outcome == "ok"),
        "{:?}",
        records.http_requests
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut bits, mut count) = (0u32, 0);
    for byte in text.bytes().filter(|&b| b != b'=') {
        bits = bits << 6 | ALPHABET.iter().position(|&a| a == byte).unwrap() as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[test]
fn page_requests_to_addresses_not_excepted_are_refused_and_reported() {
    if !chromium_present() {
        return;
    }
    let h = harness();
    let mut run = Run::new();
    // A script fetching another loopback port, and 127.0.0.2.
    run.open(&format!("/fetch?http://127.0.0.1:{}/secret", h.victim.port));
    assert_eq!(run.settled_text("#result"), "blocked");
    run.open(&format!("/fetch?http://127.0.0.2:{}/secret", h.victim2.port));
    assert_eq!(run.settled_text("#result"), "blocked");
    // An iframe to one.
    run.open(&format!("/iframe?http://127.0.0.1:{}/", h.victim.port));
    // A WebSocket to a port that is not allowed.
    run.open(&format!("/ws?ws://127.0.0.1:{}/", h.victim.port));
    assert_eq!(run.settled_text("#result"), "blocked");
    // A prefetch of a host that is not allowed.
    run.open(&format!("/prefetch?http://127.0.0.2:{}/next", h.victim2.port));
    // A name that resolves to 127.0.0.1, on a port with no exception (the site's address and port are excepted,
    // whatever name leads there).
    let rebind = run.call("browser.navigate", json!({"url": format!("http://rebind.test:{}/", h.victim.port)}));
    let rebind = rebind.unwrap_err();
    assert!(rebind.contains("refused by policy") && rebind.contains("rebind.test resolves to 127.0.0.1"), "{rebind}");
    // A redirect chain that ends at an address not excepted.
    let hop = format!("http://127.0.0.1:{}/redirect?http://127.0.0.1:{}/secret", h.site.port, h.victim.port);
    let redirected =
        run.call("browser.navigate", json!({"url": format!("http://127.0.0.1:{}/redirect?{hop}", h.site.port)}));
    let redirected = redirected.unwrap_err();
    assert!(redirected.contains("refused by policy") && redirected.contains("loopback"), "{redirected}");
    let records = run.end();
    assert_untouched(&h.victim);
    assert_untouched(&h.victim2);
    for target in
        [format!("127.0.0.1:{}", h.victim.port), format!("127.0.0.2:{}", h.victim2.port), "rebind.test".into()]
    {
        assert!(has_denial(&records, &target), "no denial for {target}: {:#?}", records.denials);
    }
    assert!(records.http_requests.iter().any(|r| r.outcome == "denied"));
}

#[test]
fn urls_that_are_not_web_pages_are_refused_before_the_browser() {
    if !chromium_present() {
        return;
    }
    let mut run = Run::new();
    for url in ["file:///etc/passwd", "chrome://settings", "data:text/html,<p>x", "javascript:alert(1)", "about:blank"]
    {
        let refused = run.call("browser.navigate", json!({ "url": url })).unwrap_err();
        assert!(refused.contains("refused") && refused.contains("only http and https"), "{url}: {refused}");
    }
    // A page that sends itself to file: stays where it was.
    run.open("/");
    run.ok("browser.evaluate", json!({"expression": "location.href = 'file:///etc/passwd'; 1"}));
    let at = run.ok("browser.evaluate", json!({"expression": "location.protocol"}));
    assert_eq!(at["value"], "http:");
    let records = run.end();
    assert!(has_denial(&records, "file:///etc/passwd") && has_denial(&records, "chrome://settings"));
}

#[test]
fn a_page_that_never_finishes_loading_times_out() {
    if !chromium_present() {
        return;
    }
    let mut run = Run::new();
    let started = Instant::now();
    let error = run.call("browser.navigate", json!({"url": format!("http://127.0.0.1:{}/never", harness().site.port)}));
    let error = error.unwrap_err();
    assert!(error.contains("did not finish loading within 4000 ms"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    // The run's browser still works afterwards.
    assert_eq!(run.open("/")["title"], "Home");
}

#[test]
fn popups_in_a_loop_are_held_to_the_page_limit() {
    if !chromium_present() {
        return;
    }
    let mut run = Run::new();
    run.open("/popups");
    run.ok("browser.click", json!({"selector": "#go"}));
    // The page keeps opening windows; the run's browser keeps working, and popups past the limit (3 pages with
    // the page itself) are closed as they open.
    let count = "opened.filter(w => w && !w.closed).length";
    let until = Instant::now() + Duration::from_secs(5);
    let open = loop {
        let open = run.ok("browser.evaluate", json!({ "expression": count }))["value"].as_u64().unwrap();
        if open <= 2 || Instant::now() > until {
            break open;
        }
    };
    assert!(open <= 2, "{open} popups are open; the limit is 3 pages");
    assert_eq!(run.ok("browser.evaluate", json!({"expression": "document.title"}))["value"], "Popups");
    run.end();
}

#[test]
fn cookies_and_storage_do_not_survive_the_run() {
    if !chromium_present() {
        return;
    }
    let mut first = Run::new();
    first.open("/store");
    let stored = first.ok("browser.evaluate", json!({"expression": "[localStorage.getItem('k'), document.cookie]"}));
    assert_eq!(stored["value"], json!(["v1", "c=v2"]));
    first.end();
    let mut second = Run::new();
    second.open("/");
    let fresh = second.ok("browser.evaluate", json!({"expression": "[localStorage.getItem('k'), document.cookie]"}));
    assert_eq!(fresh["value"], json!([null, ""]), "state leaked from the previous run");
    // browser.close starts over within a run, too.
    second.open("/store");
    second.ok("browser.close", json!({}));
    second.open("/");
    let after = second.ok("browser.evaluate", json!({"expression": "localStorage.getItem('k')"}));
    assert_eq!(after["value"], Value::Null);
}

#[test]
fn a_run_without_the_grant_has_no_browser() {
    if !chromium_present() {
        return;
    }
    let manifest =
        CapabilityManifest::default().resolve(std::path::Path::new("/"), &ManifestCeilings::default()).unwrap();
    let mut session = ToolSession::new(harness().tools.clone(), &manifest, Instant::now() + Duration::from_secs(5));
    let refused = session.call(Ok("browser.navigate".into()), Ok(br#"{"url":"http://127.0.0.1/"}"#.to_vec()));
    assert!(refused.unwrap_err().contains("not granted"));
}

#[test]
fn a_page_that_allocates_until_its_renderer_crashes_ends_with_a_clear_error_and_the_next_run_works() {
    if !chromium_present() {
        return;
    }
    let mut run = Run::new();
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{}/hog", harness().site.port);
    // The crash may come while the page loads or just after; either way an operation ends with it.
    let error = match run.call("browser.navigate", json!({ "url": url })) {
        Err(error) => error,
        Ok(_) => run.call("browser.wait_for", json!({"selector": "#never", "timeout_ms": 30_000})).unwrap_err(),
    };
    assert!(error.contains("renderer crashed") && error.contains("256 MiB"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30), "the crash was not noticed: {error}");
    // The same run goes on in a fresh context, and so does the next run.
    assert_eq!(run.open("/")["title"], "Home");
    run.end();
    let mut next = Run::new();
    assert_eq!(next.open("/")["title"], "Home");
    next.end();
}
