//! The browser tools against a page this example serves on loopback: `cargo run -p wasmagent-browser --example
//! local_page` (needs Debian's `chromium`). The operator excepts exactly the page's address and port; the page also
//! tries to fetch another loopback port, which the run's proxy refuses and the records show.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "example")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmagent_browser::{BrowserConfig, BrowserTools};
use wasmagent_egress::{EgressConfig, SystemResolver};
use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};
use wasmagent_tools::{ToolRegistry, ToolSession};

const PAGE: &str = "<!doctype html><title>Local page</title><h1>Prices</h1><p id=price>42 EUR</p>\
    <div id=probe>pending</div><script>fetch('http://127.0.0.1:8999/').then(() => probe.textContent = 'reached', \
    () => probe.textContent = 'refused')</script>";

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n", PAGE.len());
            let _ = stream.write_all((head + PAGE).as_bytes());
        }
    });

    let mut egress = EgressConfig::new();
    egress.allow_private(&format!("127.0.0.1:{port}")).unwrap();
    let browser = BrowserTools::new(BrowserConfig::default(), egress, Arc::new(SystemResolver)).unwrap();
    let mut tools = ToolRegistry::new();
    browser.register(&mut tools).unwrap();
    let manifest = CapabilityManifest {
        allowed_hosts: vec!["127.0.0.1".into()],
        extra_capabilities: vec!["tool:browser.*".into()],
        ..Default::default()
    }
    .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
    .unwrap();
    let mut run = ToolSession::new(Arc::new(tools), &manifest, Instant::now() + Duration::from_secs(30));
    let mut call = |tool: &str, args: serde_json::Value| {
        let answer = run.call(Ok(tool.into()), Ok(args.to_string().into_bytes()));
        let shown = answer.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        println!("{tool} {args} -> {shown:?}");
    };
    call("browser.navigate", serde_json::json!({ "url": format!("http://127.0.0.1:{port}/") }));
    call("browser.wait_for", serde_json::json!({"selector": "h1"}));
    call("browser.evaluate", serde_json::json!({"expression": "new Promise(r => setTimeout(r, 200))"}));
    call("browser.extract", serde_json::json!({"selectors": {"price": "#price", "probe": "#probe"}}));
    let records = run.into_records();
    for request in &records.http_requests {
        println!("request: {} {} {}", request.method, request.url, request.outcome);
    }
    for denial in &records.denials {
        println!("denial: {} {}: {}", denial.capability, denial.target, denial.reason);
    }
}
