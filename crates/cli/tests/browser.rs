//! The browser tools through the front ends, with Debian's real Chromium on a loopback page this test serves:
//! `wasmagent run --browser` from JavaScript and Python code, `[browser]` in the tools file, a run without the grant,
//! and `wasmagent mcp --browser` driven by the official MCP Python SDK. Each run is confined (the default), so these
//! also prove that the host's second wall lets Chromium start. The page's attempt to reach another loopback port
//! (not excepted) is refused and reported.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// A page on 127.0.0.1 whose script tries a loopback port that is not excepted; returns its port.
fn serve_page() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A port nothing listens on, never excepted: the proxy refuses it before any connection.
    let probe = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let page = format!(
        "<!doctype html><title>Local page</title><h1 id=title>Hello</h1><p id=price>42 EUR</p>\
         <script>fetch('http://127.0.0.1:{probe}/').catch(() => {{}})</script>"
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let page = page.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
            });
        }
    });
    port
}

struct Setup {
    dir: tempfile::TempDir,
    port: u16,
}

impl Setup {
    fn new(manifest: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.toml"), manifest).unwrap();
        Setup { dir, port: serve_page() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// `wasmagent run --json` with the manifest, the page's address excepted, and `extra` flags; the report.
    fn run(&self, extra: &[&str], code: &str) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
            .args(["run", "--json", "--manifest"])
            .arg(self.path("m.toml"))
            .args(["--allow-private", &format!("127.0.0.1:{}", self.port)])
            .args(extra)
            .args(["-e", code])
            .env("WASMAGENT_CACHE_DIR", self.path("cache"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("no report ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

const GRANTED: &str = "allowed_hosts = [\"127.0.0.1\"]\nextra_capabilities = [\"tool:browser.*\"]\ncpu_ms = 30000\n";

fn decode_base64(text: &str) -> Vec<u8> {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text).unwrap()
}

fn requested(report: &Value) -> Vec<String> {
    report["http_requests"].as_array().unwrap().iter().map(|r| r["url"].as_str().unwrap().to_owned()).collect()
}

/// Enforces: js.browser
#[test]
fn javascript_code_drives_the_browser_and_the_pages_traffic_is_held_to_the_policy() {
    if !chromium_present() {
        return;
    }
    let setup = Setup::new(GRANTED);
    let code = format!(
        "const page = tools.browser.navigate({{url: {:?}}}); \
         tools.browser.wait_for({{selector: '#price'}}); \
         const shot = tools.browser.screenshot({{}}); \
         JSON.stringify([page.status, page.title, tools.browser.extract({{selectors: {{price: '#price'}}}}).price, \
         shot.width, shot.height, shot.artifact])",
        setup.url()
    );
    let report = setup.run(&["--browser"], &code);
    assert_eq!(report["outcome"], "ok", "{report}");
    let value: Value = serde_json::from_str(report["value"].as_str().unwrap()).unwrap();
    assert_eq!(value.as_array().unwrap()[..3], [Value::from(200), "Local page".into(), "42 EUR".into()], "{report}");
    assert_eq!(value[5], true, "{report}");
    // The screenshot is an artifact of the report: a PNG of the page's size.
    let artifacts = report["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1, "{report}");
    assert_eq!((&artifacts[0]["kind"], &artifacts[0]["mime"]), (&"image".into(), &"image/png".into()));
    assert!(artifacts[0]["title"].as_str().unwrap().contains(&setup.url()), "{}", artifacts[0]["title"]);
    let png = decode_base64(artifacts[0]["base64"].as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (width, height) =
        (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((Value::from(width), Value::from(height)), (value[3].clone(), value[4].clone()), "{report}");
    assert!(width > 100 && height > 100, "{width}x{height}");
    assert!(requested(&report).contains(&setup.url()), "{report}");
    let denials = report["denials"].as_array().unwrap();
    assert!(
        denials.iter().any(|d| d["capability"] == "net.http"
            && d["target"].as_str().is_some_and(|r| r.starts_with("http://127.0.0.1:"))
            && !d["target"].as_str().unwrap().contains(&setup.port.to_string())),
        "the page's fetch to another loopback port was not refused: {report}"
    );
}

/// Enforces: python.browser
#[test]
fn python_code_drives_the_browser_enabled_by_the_tools_files_browser_table() {
    if !chromium_present() {
        return;
    }
    let setup = Setup::new(GRANTED);
    // `[browser]` alone enables the tools (no --browser), with its limits: 4 bytes of extracted text.
    std::fs::write(setup.path("tools.toml"), "[browser]\nextract_max_bytes = 4\n").unwrap();
    let tools = setup.path("tools.toml");
    let code = format!(
        "from wasmagent import tools\npage = tools.browser.navigate(url={:?})\n\
         title = tools.browser.evaluate(expression='document.title.length')['value']\n\
         try:\n    tools.browser.extract(selectors={{'price': '#price'}})\n    cut = 'no'\n\
         except Exception as e:\n    cut = str(e)\n[page['status'], title, cut]",
        setup.url()
    );
    let report = setup.run(&["--lang", "python", "--tools", tools.to_str().unwrap()], &code);
    assert_eq!(report["outcome"], "ok", "{report}");
    assert_eq!(report["value"][0], 200, "{report}");
    assert_eq!(report["value"][1], 10, "{report}");
    assert!(report["value"][2].as_str().unwrap().contains("more than the 4 bytes one extract may return"), "{report}");
    assert!(requested(&report).contains(&setup.url()), "{report}");
    assert!(
        report["denials"].as_array().unwrap().iter().any(|d| d["capability"] == "net.http"
            && d["target"].as_str().is_some_and(|t| !t.contains(&setup.port.to_string()))),
        "the page's fetch to another loopback port was not refused: {report}"
    );
}

#[test]
fn without_the_grant_a_run_has_no_browser_tools() {
    if !chromium_present() {
        return;
    }
    let setup = Setup::new("allowed_hosts = [\"127.0.0.1\"]\ncpu_ms = 30000\n");
    let report = setup.run(&["--browser"], "typeof tools.browser");
    assert_eq!((&report["outcome"], &report["value"]), (&"ok".into(), &"undefined".into()), "{report}");
    let report = setup.run(&["--browser"], &format!("tools.call('browser.navigate', {{url: {:?}}})", setup.url()));
    assert_eq!(report["outcome"], "error", "{report}");
    assert!(requested(&report).is_empty(), "{report}");
}

#[test]
fn a_browser_flag_naming_a_missing_chromium_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
        .args(["run", "--browser=/nonexistent/chromium", "-e", "1"])
        .env("WASMAGENT_CACHE_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--browser") && stderr.contains("/nonexistent/chromium"), "{stderr}");
}

#[test]
fn the_mcp_server_offers_the_browser_tools_to_code_and_search_docs() {
    if !chromium_present() {
        return;
    }
    let python = support::sdk_python();
    let setup = Setup::new(GRANTED);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_browser_client.py");
    let out = Command::new(&python)
        .arg(&client)
        .arg(env!("CARGO_BIN_EXE_wasmagent"))
        .arg(setup.path("m.toml"))
        .arg(format!("127.0.0.1:{}", setup.port))
        .arg(setup.url())
        .env("WASMAGENT_CACHE_DIR", setup.path("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the client printed no summary ({e}): {stdout}\n{stderr}"));
    let search = summary["search"]["text"].as_str().unwrap();
    for tool in ["browser.navigate", "browser.extract", "browser.screenshot"] {
        assert!(search.contains(tool), "search_docs does not list {tool}: {search}");
    }
    // The signatures code is written against, in both languages.
    let results = summary["search"]["structured"]["results"].as_array().unwrap();
    let navigate = results.iter().find(|r| r["name"] == "browser.navigate").unwrap();
    assert_eq!(navigate["javascript"], "tools.browser.navigate(args: { url: string }): any", "{navigate}");
    assert_eq!(navigate["python"], "tools.browser.navigate(*, url: str)", "{navigate}");
    assert_eq!(navigate["granted"], true, "{navigate}");
    assert_eq!(summary["js"]["is_error"], false, "{summary}");
    assert_eq!(summary["js"]["structured"]["value"], "[\"Local page\",\"42 EUR\"]", "{summary}");
    assert_eq!(summary["python"]["is_error"], false, "{summary}");
    assert_eq!(summary["python"]["structured"]["value"], "Local page", "{summary}");
}

/// `wasmagent serve --browser`: a run posted to `/v1/runs` drives the browser, held to the request's manifest.
#[test]
fn the_http_server_offers_the_browser_tools_to_runs() {
    if !chromium_present() {
        return;
    }
    let setup = Setup::new(GRANTED);
    let config = setup.path("server.toml");
    std::fs::write(&config, format!("allow_private = [\"127.0.0.1:{}\"]\n\n[max_manifest]\n{GRANTED}", setup.port))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
        .args(["serve", "--listen", "127.0.0.1:0", "--dev-insecure-no-auth", "--browser", "--config"])
        .arg(&config)
        .env("WASMAGENT_CACHE_DIR", setup.path("cache"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve exited before listening").unwrap();
        if let Some(addr) = line.strip_prefix("wasmagent: serving on http://") {
            break addr.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let code = format!("tools.browser.navigate({{url: {:?}}}).title", setup.url());
    let body = serde_json::json!({
        "language": "javascript",
        "code": code,
        "manifest": {"allowed_hosts": ["127.0.0.1"], "extra_capabilities": ["tool:browser.*"], "cpu_ms": 30000},
    })
    .to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /v1/runs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    // SIGTERM, as an operator stops it: the server shuts down and takes Chromium with it (SIGKILL would leave the
    // browser behind, as SECURITY.md says).
    let stopped = Command::new("kill").arg(child.id().to_string()).status().unwrap();
    assert!(stopped.success());
    assert!(child.wait().unwrap().success(), "serve did not exit cleanly on SIGTERM");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    let report: Value = serde_json::from_str(body).unwrap();
    assert_eq!((&report["outcome"], &report["value"]), (&"ok".into(), &"Local page".into()), "{report}");
    assert!(requested(&report).contains(&setup.url()), "{report}");
}
