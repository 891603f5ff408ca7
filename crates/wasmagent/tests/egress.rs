//! The egress table of cases, run from JavaScript (`fetch`) and Python (`wasmagent.http`, `urllib.request`)
//! against a real HTTP server on loopback that the operator configuration excepts from the floor.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../../egress/tests/support/server.rs"]
mod server;

use serde_json::{Value, json};
use server::TestServer;
use std::path::Path;
use std::sync::OnceLock;
use wasmagent::{
    CapabilityManifest, EffectiveManifest, EgressConfig, Language, Outcome, RunReport, RunRequest, Sandbox,
};

struct Fixture {
    server: TestServer,
    sandbox: Sandbox,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let server = TestServer::start();
        let mut config = EgressConfig::new();
        config.allow_private(&server.host()).unwrap();
        config.secret("TOKEN", "tok-abcdef123".into(), &[&server.host()]).unwrap();
        let sandbox = Sandbox::builder().pool_slots(8).egress(config).build().unwrap();
        Fixture { server, sandbox }
    })
}

fn manifest(extra: &str) -> EffectiveManifest {
    let f = fixture();
    let toml = format!(
        "allowed_hosts = [\"{}\", \"127.0.0.1:9\", \"169.254.169.254\", \"[::ffff:127.0.0.1]\"]\nmax_http_response_bytes = 4096\n{extra}",
        f.server.host()
    );
    f.sandbox.resolve(&CapabilityManifest::from_toml_str(&toml).unwrap(), Path::new("/")).unwrap()
}

/// One request from guest code: method, URL, headers, body.
struct Case {
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
}

fn case(url: String) -> Case {
    Case { method: "GET", url, headers: Vec::new(), body: "" }
}

fn js_code(c: &Case) -> String {
    let headers: serde_json::Map<String, Value> = c.headers.iter().map(|(k, v)| ((*k).into(), json!(v))).collect();
    let init = json!({ "method": c.method, "headers": headers, "body": if c.body.is_empty() { Value::Null } else { json!(c.body) } });
    format!(
        "(async () => {{ try {{ const r = await fetch({url}, {init}); \
         return {{ status: r.status, body: await r.text() }}; }} catch (e) {{ return {{ error: e.message }}; }} }})()",
        url = json!(c.url)
    )
}

fn python_code(c: &Case) -> String {
    let headers: Vec<Value> = c.headers.iter().map(|(k, v)| json!([k, v])).collect();
    format!(
        "import json\nfrom wasmagent import http\ntry:\n    r = http.request({m}, {u}, headers=json.loads({h}), data={b})\n    \
         result = {{'status': r.status, 'body': r.text}}\nexcept http.HTTPRequestError as e:\n    result = {{'error': str(e)}}\nresult",
        m = json!(c.method),
        u = json!(c.url),
        h = json!(Value::Array(headers).to_string()),
        b = json!(c.body),
    )
}

fn run(manifest: &EffectiveManifest, language: Language, code: &str) -> RunReport {
    fixture().sandbox.run(manifest, &RunRequest::source("egress", language, code)).unwrap()
}

/// Runs the case in both script kernels; both must give the same value, which is returned with the JS report.
fn both(manifest: &EffectiveManifest, c: &Case) -> (Value, RunReport) {
    let js = run(manifest, Language::Js, &js_code(c));
    let python = run(manifest, Language::Python, &python_code(c));
    assert_eq!(js.outcome, Outcome::Ok, "{js:?}");
    assert_eq!(python.outcome, Outcome::Ok, "{python:?}");
    let shape = |v: &Value| match v.get("error") {
        Some(e) => json!({ "error": e.as_str().unwrap_or_default().split(": ").take(1).collect::<String>() }),
        None => v.clone(),
    };
    assert_eq!(shape(&js.value), shape(&python.value), "js and python must agree on {}", c.url);
    (js.value.clone(), js)
}

fn error_text(value: &Value) -> &str {
    value.get("error").and_then(Value::as_str).unwrap_or_else(|| panic!("expected an error, got {value}"))
}

/// Enforces: js.allowed_hosts, python.allowed_hosts
#[test]
fn an_allowed_host_is_reached_from_both_languages() {
    let f = fixture();
    let (value, report) = both(&manifest(""), &case(f.server.url("/hello")));
    assert_eq!(value, json!({ "status": 200, "body": "hello from loopback" }));
    assert_eq!(report.http_requests.len(), 1);
    assert_eq!(report.http_requests[0].outcome, "ok");
    assert!(report.denials.is_empty(), "{report:?}");
}

/// Enforces: js.allowed_hosts, python.allowed_hosts
#[test]
fn unlisted_hosts_and_the_floor_are_refused_with_denials_naming_the_url() {
    for url in [
        "http://example.org/",
        "http://127.0.0.1:9/",
        "http://0x7f.1:9/",
        "http://169.254.169.254/latest/",
        "http://[::ffff:127.0.0.1]/",
    ] {
        let (value, report) = both(&manifest(""), &case(url.into()));
        let error = error_text(&value);
        assert!(error.contains("refused"), "{url}: {error}");
        assert_eq!(report.denials.len(), 1, "{report:?}");
        assert_eq!(report.denials[0].capability, "net.http");
        assert!(report.denials[0].target.starts_with("http://"), "{:?}", report.denials[0]);
        assert_eq!(report.http_requests[0].outcome, "denied");
    }
    let none = fixture().sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    let (value, _) = both(&none, &case(fixture().server.url("/hello")));
    assert!(error_text(&value).contains("allowed_hosts is empty"));
}

/// Enforces: js.allowed_hosts, python.allowed_hosts
#[test]
fn redirect_chains_longer_than_five_hops_are_refused() {
    let f = fixture();
    let (value, _) = both(&manifest(""), &case(f.server.url("/redirect/5")));
    assert_eq!(value, json!({ "status": 200, "body": "arrived" }));
    let (value, _) = both(&manifest(""), &case(f.server.url("/redirect/6")));
    assert!(error_text(&value).contains("more than 5 redirects"));
}

/// Enforces: js.max_http_response_bytes, python.max_http_response_bytes
#[test]
fn an_oversized_response_is_an_error_not_a_truncated_body() {
    let (value, report) = both(&manifest(""), &case(fixture().server.url("/big?n=5000")));
    assert!(error_text(&value).contains("max_http_response_bytes"), "{value}");
    assert_eq!(report.http_requests[0].outcome, "error");
}

/// Enforces: js.max_http_request_bytes, python.max_http_request_bytes
#[test]
fn request_bodies_are_sent_and_capped() {
    let url = fixture().server.url("/echo");
    let post = Case { method: "POST", url: url.clone(), headers: vec![("x-test", "1")], body: "payload" };
    let (value, _) = both(&manifest(""), &post);
    let echo: Value = serde_json::from_str(value["body"].as_str().unwrap()).unwrap();
    assert_eq!((echo["method"].as_str(), echo["body"].as_str()), (Some("POST"), Some("payload")));
    assert_eq!(echo["headers"]["x-test"], "1");
    let big = Case { method: "POST", url, headers: Vec::new(), body: "0123456789abcdef" };
    let (value, _) = both(&manifest("max_http_request_bytes = 8"), &big);
    assert!(error_text(&value).contains("max_http_request_bytes"));
}

/// Enforces: js.http_timeout_ms, python.http_timeout_ms
#[test]
fn a_slow_server_ends_at_the_timeout() {
    let (value, _) = both(&manifest("http_timeout_ms = 300"), &case(fixture().server.url("/slow")));
    assert!(error_text(&value).contains("http_timeout_ms"), "{value}");
}

/// Enforces: js.max_http_requests, python.max_http_requests
#[test]
fn max_http_requests_counts_every_hop() {
    let (value, _) = both(&manifest("max_http_requests = 3"), &case(fixture().server.url("/redirect/3")));
    assert!(error_text(&value).contains("max_http_requests (3)"), "{value}");
}

#[test]
fn secrets_reach_their_host_but_never_the_guest() {
    let with_secret = Case {
        method: "GET",
        url: fixture().server.url("/reflect-auth"),
        headers: vec![("authorization", "Bearer {{secret:TOKEN}}")],
        body: "",
    };
    let (value, _) = both(&manifest(""), &with_secret);
    assert_eq!(value["body"], "auth=Bearer [redacted:TOKEN]");
    let elsewhere = Case { url: "http://169.254.169.254/".into(), ..with_secret };
    let (value, _) = both(&manifest(""), &elsewhere);
    assert!(error_text(&value).contains("refused"));
}

#[test]
fn python_urllib_goes_through_the_same_path() {
    let f = fixture();
    let code = format!(
        "import urllib.request, urllib.error\nok = urllib.request.urlopen({ok}).read().decode()\n\
         try:\n    urllib.request.urlopen('http://example.org/')\n    refused = None\n\
         except urllib.error.URLError as e:\n    refused = str(e.reason)\n\
         try:\n    urllib.request.urlopen({missing})\n    status = None\n\
         except urllib.error.HTTPError as e:\n    status = e.code\n[ok, refused, status]",
        ok = json!(f.server.url("/hello")),
        missing = json!(f.server.url("/missing")),
    );
    let report = run(&manifest(""), Language::Python, &code);
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value[0], "hello from loopback");
    assert!(report.value[1].as_str().unwrap().contains("not in allowed_hosts"), "{report:?}");
    assert_eq!(report.value[2], 404);
}

#[test]
fn js_responses_offer_headers_json_and_array_buffers() {
    let f = fixture();
    let code = format!(
        "(async () => {{ const r = await fetch({url}, {{ method: 'POST', body: new Uint8Array([104, 105]), headers: new Headers({{ 'X-A': 'b' }}) }}); \
         const j = await r.json(); const again = await fetch({hello}); const buf = await again.arrayBuffer(); \
         return [r.ok, r.headers.get('Content-Type'), j.body, j.headers['x-a'], buf.byteLength, again.bodyUsed]; }})()",
        url = json!(f.server.url("/echo")),
        hello = json!(f.server.url("/hello")),
    );
    let report = run(&manifest(""), Language::Js, &code);
    assert_eq!(report.value, json!([true, "application/json", "hi", "b", 19, true]), "{report:?}");
}

fn probe(manifest: &EffectiveManifest, guest: &str, url: &str) -> RunReport {
    probe_action(manifest, guest, format!("get:{url}"))
}

fn probe_action(manifest: &EffectiveManifest, guest: &str, action: String) -> RunReport {
    let request = RunRequest::wasm("probe", wasmagent_test_guests::read(guest)).with_args([action]);
    fixture().sandbox.run(manifest, &request).unwrap()
}

/// Enforces: wasi.max_http_request_bytes
#[test]
fn component_request_bodies_are_sent_and_capped() {
    let url = fixture().server.url("/echo");
    let component = wasmagent_test_guests::PROBE_COMPONENT;
    let report = probe_action(&manifest(""), component, format!("post:3000:{url}"));
    assert!(report.stdout.starts_with("OK post 200 "), "{report:?}");
    let echo: Value = serde_json::from_str(report.stdout.trim_end().splitn(4, ' ').nth(3).unwrap()).unwrap();
    assert_eq!((echo["method"].as_str(), echo["body"].as_str().map(str::len)), (Some("POST"), Some(3000)));
    let report = probe_action(&manifest("max_http_request_bytes = 100"), component, format!("post:5000:{url}"));
    // The host refuses as soon as the body passes the cap, so the guest sees either the refusal or its body
    // stream closed under it, depending on how far it got.
    assert!(report.stdout.starts_with("ERR post "), "{report:?}");
    assert!(report.denials[0].reason.contains("max_http_request_bytes"), "{report:?}");
}

/// Enforces: wasi.allowed_hosts
#[test]
fn components_reach_allowed_hosts_through_wasi_http_and_the_same_floor() {
    let f = fixture();
    let report = probe(&manifest(""), wasmagent_test_guests::PROBE_COMPONENT, &f.server.url("/hello"));
    assert_eq!(report.stdout, "OK get 200 hello from loopback\n", "{report:?}");
    assert_eq!(report.http_requests.len(), 1);
    for url in ["http://example.org/", "http://127.0.0.1:9/", "http://169.254.169.254/"] {
        let report = probe(&manifest(""), wasmagent_test_guests::PROBE_COMPONENT, url);
        assert_eq!(report.stdout, "ERR get ErrorCode::HttpRequestDenied\n", "{url}: {report:?}");
        assert_eq!(report.denials.len(), 1, "{report:?}");
        assert_eq!(report.denials[0].capability, "net.http");
    }
    let report = probe(&manifest(""), wasmagent_test_guests::PROBE_COMPONENT, &f.server.url("/redirect/6"));
    assert_eq!(report.stdout, "ERR get ErrorCode::HttpRequestDenied\n", "{report:?}");
    assert!(report.denials[0].reason.contains("more than 5 redirects"));
}

/// Enforces: wasi.max_http_response_bytes
#[test]
fn component_responses_are_capped() {
    let report = probe(&manifest(""), wasmagent_test_guests::PROBE_COMPONENT, &fixture().server.url("/big?n=5000"));
    assert!(report.stdout.starts_with("ERR get ErrorCode::InternalError"), "{report:?}");
    assert!(report.stdout.contains("max_http_response_bytes"), "{report:?}");
}

/// Enforces: wasi.http_timeout_ms
#[test]
fn component_requests_end_at_the_timeout() {
    let m = manifest("http_timeout_ms = 300");
    let report = probe(&m, wasmagent_test_guests::PROBE_COMPONENT, &fixture().server.url("/slow"));
    assert!(report.stdout.contains("http_timeout_ms"), "{report:?}");
}

/// Enforces: wasi.max_http_requests
#[test]
fn component_requests_are_counted() {
    let m = manifest("max_http_requests = 2");
    let report = probe(&m, wasmagent_test_guests::PROBE_COMPONENT, &fixture().server.url("/redirect/2"));
    assert_eq!(report.stdout, "ERR get ErrorCode::HttpRequestDenied\n", "{report:?}");
    assert!(report.denials[0].reason.contains("max_http_requests (2)"), "{report:?}");
}

/// A component that keeps responses without reading them cannot make the host buffer more than
/// `MAX_IN_FLIGHT_PER_RUN` of them: the next request waits for a place until the run's deadline, and is never sent.
///
/// Enforces: wasi.report_bounds
#[test]
fn a_component_holds_at_most_four_unread_responses() {
    let m = manifest("cpu_ms = 1500");
    let url = fixture().server.url("/hello");
    let held = probe_action(&m, wasmagent_test_guests::PROBE_COMPONENT, format!("http-hold:4:{}", &url[7..]));
    assert_eq!(held.stdout, "OK http-hold 4\n", "{held:?}");
    let started = std::time::Instant::now();
    let report = probe_action(&m, wasmagent_test_guests::PROBE_COMPONENT, format!("http-hold:6:{}", &url[7..]));
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    assert_eq!(report.http_requests.len(), wasmagent::egress::MAX_IN_FLIGHT_PER_RUN, "{report:?}");
    assert!(started.elapsed().as_millis() < 3500, "ends at cpu_ms: {:?}", started.elapsed());
}

#[test]
fn modules_have_no_network_whatever_the_manifest_says() {
    let report = probe(&manifest(""), wasmagent_test_guests::PROBE_MODULE, &fixture().server.url("/hello"));
    assert_eq!(report.stdout, "ERR get modules have no network\n", "{report:?}");
    assert!(report.http_requests.is_empty());
}
