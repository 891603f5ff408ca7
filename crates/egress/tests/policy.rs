//! The egress policy end to end, against real HTTP servers on loopback (reached only through operator exceptions).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::server::TestServer;
use wasmagent_egress::{Egress, EgressConfig, EgressSession, HttpRequest, StaticResolver};
use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};

fn session(egress: &Arc<Egress>, toml: &str) -> EgressSession {
    let manifest = CapabilityManifest::from_toml_str(toml)
        .unwrap()
        .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
        .unwrap();
    egress.session(&manifest, Instant::now() + Duration::from_secs(30))
}

fn get(session: &EgressSession, url: &str) -> Result<wasmagent_egress::HttpResponse, String> {
    fetch(session, HttpRequest { method: "GET".into(), url: url.into(), ..Default::default() })
}

fn fetch(session: &EgressSession, request: HttpRequest) -> Result<wasmagent_egress::HttpResponse, String> {
    session.fetch_blocking(request).map_err(|e| e.message)
}

fn excepting(server: &TestServer) -> Arc<Egress> {
    let mut config = EgressConfig::new();
    config.allow_private(&server.host()).unwrap();
    Egress::new(config).unwrap()
}

#[test]
fn an_allowed_host_is_reached_and_recorded() {
    let server = TestServer::start();
    let s = session(&excepting(&server), &format!("allowed_hosts = [\"{}\"]", server.host()));
    let response = get(&s, &server.url("/hello")).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello from loopback");
    assert!(response.headers.iter().any(|(k, v)| k == "x-served-by" && v == "test"));
    let records = s.take_records();
    assert_eq!(records.exchanges.len(), 1);
    assert_eq!(records.exchanges[0].outcome, "ok");
    assert_eq!(records.exchanges[0].status, Some(200));
    assert!(records.denials.is_empty());
}

#[test]
fn hosts_not_listed_are_refused_with_a_denial() {
    let server = TestServer::start();
    let s = session(&excepting(&server), &format!("allowed_hosts = [\"{}\"]", server.host()));
    let other_port = format!("http://127.0.0.1:{}/hello", server.addr.port() ^ 1);
    for url in [other_port.as_str(), "https://example.org/", "http://localhost/"] {
        let err = get(&s, url).unwrap_err();
        assert!(err.contains("refused") && err.contains("not in allowed_hosts"), "{url}: {err}");
    }
    let empty = session(&excepting(&server), "");
    assert!(get(&empty, &server.url("/hello")).unwrap_err().contains("allowed_hosts is empty"));
    let records = s.take_records();
    assert_eq!(records.denials.len(), 3);
    assert!(records.denials.iter().all(|d| d.capability == "net.http"));
    assert_eq!(server.hits(), 0);
}

#[test]
fn the_floor_refuses_every_private_range_in_every_spelling_even_when_listed() {
    let egress = Egress::new(EgressConfig::new()).unwrap();
    for (url, pattern) in [
        ("http://127.0.0.1:9/", "127.0.0.1"),
        ("http://2130706433:9/", "127.0.0.1"),
        ("http://0x7f000001:9/", "127.0.0.1"),
        ("http://0177.0.0.1:9/", "127.0.0.1"),
        ("http://0x7f.1:9/", "127.0.0.1"),
        ("http://127.1:9/", "127.0.0.1"),
        ("http://10.0.0.1/", "10.0.0.1"),
        ("http://172.16.5.4/", "172.16.5.4"),
        ("http://192.168.0.1/", "192.168.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://169.254.170.2/", "169.254.170.2"),
        ("http://100.100.100.200/", "100.100.100.200"),
        ("http://168.63.129.16/", "168.63.129.16"),
        ("http://100.64.0.1/", "100.64.0.1"),
        ("http://0.0.0.0/", "0.0.0.0"),
        ("http://224.0.0.1/", "224.0.0.1"),
        ("http://255.255.255.255/", "255.255.255.255"),
        ("http://[::1]/", "[::1]"),
        ("http://[::]/", "[::]"),
        ("http://[fc00::1]/", "[fc00::1]"),
        ("http://[fd00:ec2::254]/", "[fd00:ec2::254]"),
        ("http://[fe80::1]/", "[fe80::1]"),
        ("http://[::ffff:127.0.0.1]/", "[::ffff:127.0.0.1]"),
        ("http://[::ffff:7f00:1]/", "[::ffff:127.0.0.1]"),
        ("http://[::ffff:169.254.169.254]/", "[::ffff:169.254.169.254]"),
        ("http://[64:ff9b::a00:1]/", "[64:ff9b::a00:1]"),
        ("http://metadata.google.internal/", "metadata.google.internal"),
    ] {
        let s = session(&egress, &format!("allowed_hosts = [\"{pattern}\"]"));
        let err = get(&s, url).unwrap_err();
        assert!(err.contains("refused"), "{url} must be refused: {err}");
        assert!(err.contains("may not reach") || err.contains("metadata"), "{url}: {err}");
    }
}

#[test]
fn metadata_endpoints_stay_refused_inside_an_operator_exception() {
    let mut config = EgressConfig::new();
    config.allow_private("169.254.0.0/16").unwrap();
    let s = session(&Egress::new(config).unwrap(), "allowed_hosts = [\"169.254.169.254\", \"169.254.1.1\"]");
    assert!(get(&s, "http://169.254.169.254/").unwrap_err().contains("metadata"));
}

#[test]
fn names_are_resolved_once_and_private_answers_are_refused() {
    let server = TestServer::start();
    let port = server.addr.port();
    let public: IpAddr = "203.0.113.7".parse().unwrap();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let resolver = Arc::new(
        StaticResolver::new()
            .answer("rebind.test", vec![vec![public], vec![loopback]])
            .answer("mixed.test", vec![vec![public, loopback]])
            .answer("private.test", vec![vec!["10.1.2.3".parse().unwrap()]]),
    );
    let egress = Egress::with_resolver(EgressConfig::new(), resolver.clone()).unwrap();
    let s = session(
        &egress,
        &format!(
            "allowed_hosts = [\"rebind.test:{port}\", \"mixed.test:{port}\", \"private.test:{port}\"]\nhttp_timeout_ms = 1500"
        ),
    );
    // Rebinding: the checked (public) answer is the one connected to; the later private answer is never asked for
    // or used, so the loopback server is never reached.
    let err = get(&s, &format!("http://rebind.test:{port}/hello")).unwrap_err();
    assert!(err.contains("failed"), "{err}");
    assert_eq!(resolver.lookups(), 1);
    assert_eq!(server.hits(), 0);
    for name in ["mixed.test", "private.test"] {
        let err = get(&s, &format!("http://{name}:{port}/hello")).unwrap_err();
        assert!(err.contains("resolves to") && err.contains("may not reach"), "{name}: {err}");
    }
    assert_eq!(server.hits(), 0);
}

#[test]
fn connections_go_to_the_pinned_address_of_a_name_only_the_resolver_knows() {
    let server = TestServer::start();
    let port = server.addr.port();
    // `.invalid` names never resolve in the DNS (RFC 6761): only the test resolver can send this request anywhere.
    let name = "pinned.test-only.invalid";
    let resolver = Arc::new(StaticResolver::new().answer(name, vec![vec!["127.0.0.1".parse().unwrap()]]));
    let mut config = EgressConfig::new();
    config.allow_private(&format!("{name}:{port}")).unwrap();
    let egress = Egress::with_resolver(config, resolver.clone()).unwrap();
    let s = session(&egress, &format!("allowed_hosts = [\"{name}:{port}\"]"));
    let response = get(&s, &format!("http://{name}:{port}/echo")).unwrap();
    let echo: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(echo["headers"]["host"], format!("{name}:{port}"), "the server saw the request for the name");
    assert_eq!(server.hits(), 1, "the loopback server at the pinned address got the connection");
    assert_eq!(resolver.lookups(), 1, "the name was resolved once, by the test resolver");
}

#[test]
fn redirects_are_followed_and_rechecked_hop_by_hop() {
    let server = TestServer::start();
    let toml = format!("allowed_hosts = [\"{}\", \"10.1.2.3\"]", server.host());
    let s = session(&excepting(&server), &toml);
    let ok = get(&s, &server.url("/redirect/5")).unwrap();
    assert_eq!((ok.status, ok.redirected, ok.body.as_slice()), (200, true, b"arrived".as_slice()));
    let err = get(&s, &server.url("/redirect/6")).unwrap_err();
    assert!(err.contains("more than 5 redirects"), "{err}");
    let err = get(&s, &server.url("/to?u=http%3A%2F%2Fexample.org%2F")).unwrap_err();
    assert!(err.contains("not in allowed_hosts"), "{err}");
    let err = get(&s, &server.url("/to?u=http%3A%2F%2F10.1.2.3%2F")).unwrap_err();
    assert!(err.contains("may not reach"), "{err}");
    let err = get(&s, &server.url("/to?u=http%3A%2F%2Fuser%3Apw%4010.1.2.3%2F")).unwrap_err();
    assert!(err.contains("credentials"), "{err}");
    let records = s.take_records();
    assert_eq!(records.exchanges[0].redirects, 5);
}

#[test]
fn caps_on_size_time_and_count_hold() {
    let server = TestServer::start();
    let egress = excepting(&server);
    let s = session(
        &egress,
        &format!(
            "allowed_hosts = [\"{}\"]\nmax_http_response_bytes = 1000\nmax_http_request_bytes = 10\nhttp_timeout_ms = 500\nmax_http_requests = 4",
            server.host()
        ),
    );
    assert_eq!(get(&s, &server.url("/big?n=1000")).unwrap().body.len(), 1000);
    let err = get(&s, &server.url("/big?n=5000")).unwrap_err();
    assert!(err.contains("max_http_response_bytes"), "{err}");
    let started = Instant::now();
    let err = get(&s, &server.url("/slow")).unwrap_err();
    assert!(err.contains("http_timeout_ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "the timeout must end the request");
    let post =
        HttpRequest { method: "POST".into(), url: server.url("/echo"), body: vec![b'x'; 11], ..Default::default() };
    assert!(fetch(&s, post).unwrap_err().contains("max_http_request_bytes"));
    let err = get(&s, &server.url("/hello")).unwrap_err();
    assert!(err.contains("max_http_requests (4)"), "refused requests count too: {err}");
}

#[test]
fn the_run_deadline_bounds_every_request() {
    let server = TestServer::start();
    let manifest = CapabilityManifest::from_toml_str(&format!("allowed_hosts = [\"{}\"]", server.host()))
        .unwrap()
        .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
        .unwrap();
    let s = excepting(&server).session(&manifest, Instant::now() + Duration::from_millis(300));
    let started = Instant::now();
    let err = get(&s, &server.url("/slow")).unwrap_err();
    assert!(err.contains("deadline"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn secrets_are_sent_only_to_their_hosts_and_never_shown_to_the_guest() {
    let server = TestServer::start();
    let mut config = EgressConfig::new();
    config.allow_private(&server.host()).unwrap();
    config.secret("TOKEN", "tok-abcdef123".into(), &[&server.host()]).unwrap();
    let localhost = format!("localhost:{}", server.addr.port());
    config.allow_private(&localhost).unwrap();
    let egress = Egress::with_resolver(
        config,
        Arc::new(StaticResolver::new().answer("localhost", vec![vec!["127.0.0.1".parse().unwrap()]])),
    )
    .unwrap();
    let s = session(&egress, &format!("allowed_hosts = [\"{}\", \"{localhost}\"]", server.host()));
    let with_secret = |url: String| HttpRequest {
        method: "GET".into(),
        url,
        headers: vec![("Authorization".into(), "Bearer {{secret:TOKEN}}".into())],
        body: Vec::new(),
    };
    let response = fetch(&s, with_secret(server.url("/reflect-auth"))).unwrap();
    assert_eq!(String::from_utf8_lossy(&response.body), "auth=Bearer [redacted:TOKEN]");
    assert!(response.headers.iter().any(|(k, v)| k == "x-auth" && v == "Bearer [redacted:TOKEN]"));
    let hits = server.hits();
    let err = fetch(&s, with_secret(format!("http://{localhost}/reflect-auth"))).unwrap_err();
    assert!(err.contains("may not be sent to localhost"), "{err}");
    assert_eq!(server.hits(), hits, "a refused secret must not leave the host");
    assert!(s.take_records().denials.iter().any(|d| d.reason.contains("TOKEN")));
}

#[test]
fn guest_host_headers_and_bad_methods_are_refused() {
    let server = TestServer::start();
    let s = session(&excepting(&server), &format!("allowed_hosts = [\"{}\"]", server.host()));
    let request = HttpRequest {
        method: "GET".into(),
        url: server.url("/echo"),
        headers: vec![("Host".into(), "internal.example".into())],
        body: Vec::new(),
    };
    assert!(fetch(&s, request).unwrap_err().contains("Host header"));
    let request = HttpRequest { method: "GE T".into(), url: server.url("/echo"), ..Default::default() };
    assert!(fetch(&s, request).is_err());
    let request = HttpRequest {
        method: "post".into(),
        url: server.url("/echo"),
        headers: vec![("x-custom".into(), "1".into())],
        body: b"payload".to_vec(),
    };
    let echo: serde_json::Value = serde_json::from_slice(&fetch(&s, request).unwrap().body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["headers"]["x-custom"], "1");
}
