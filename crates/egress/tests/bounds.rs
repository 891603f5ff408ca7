//! What one run's requests can make the host hold or wait for: bounded records, refusals that count, one deadline
//! per whole request, in-flight requests per run, and cancellation of dropped requests. Servers are on loopback
//! (reached only through operator exceptions).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::server::TestServer;
use wasmagent_egress::{
    Egress, EgressConfig, EgressRecords, EgressSession, HttpRequest, MAX_IN_FLIGHT_PER_RUN, MAX_URL_BYTES,
};
use wasmagent_kernel::bounds::{REPORT_LISTED_RECORDS, REPORT_TEXT_BYTES};
use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};

fn session(egress: &Arc<Egress>, toml: &str) -> EgressSession {
    let manifest = CapabilityManifest::from_toml_str(toml)
        .unwrap()
        .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
        .unwrap();
    egress.session(&manifest, Instant::now() + Duration::from_secs(60))
}

fn excepting(addr: SocketAddr) -> Arc<Egress> {
    let mut config = EgressConfig::new();
    config.allow_private(&addr.to_string()).unwrap();
    Egress::new(config).unwrap()
}

fn get(url: String) -> HttpRequest {
    HttpRequest { method: "GET".into(), url, ..Default::default() }
}

/// The bytes of every string the records hold.
fn record_bytes(records: &EgressRecords) -> usize {
    let exchanges: usize = records
        .exchanges
        .iter()
        .map(|e| e.method.len() + e.url.len() + e.outcome.len() + e.error.as_ref().map_or(0, String::len))
        .sum();
    let denials: usize = records.denials.iter().map(|d| d.capability.len() + d.target.len() + d.reason.len()).sum();
    exchanges + denials
}

fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn thousands_of_refused_long_urls_leave_bounded_records() {
    let egress = Egress::new(EgressConfig::new()).unwrap();
    let s = session(&egress, "max_http_requests = 1000");
    let path = "a".repeat(512 * 1024);
    for i in 0..2_000 {
        let err = s.fetch_blocking(get(format!("http://h{i}.example/{path}"))).unwrap_err();
        assert!(err.denied, "{}", err.message);
        assert!(err.message.len() < 2 * REPORT_TEXT_BYTES, "the guest's error holds the whole URL");
        let expected = if i < 1_000 { "a request may have" } else { "max_http_requests (1000) reached" };
        assert!(err.message.contains(expected), "request {i}: {}", err.message);
    }
    let records = s.take_records();
    assert_eq!(records.exchanges.len(), REPORT_LISTED_RECORDS);
    assert_eq!(records.exchanges.len() as u64 + records.unlisted_exchanges, 2_000, "every request is counted");
    assert_eq!(records.denials.len(), 2, "one denial for the URLs, one for the cap: {:?}", records.denials);
    let ceiling = 2 * REPORT_LISTED_RECORDS * 4 * (REPORT_TEXT_BYTES + 64);
    let bytes = record_bytes(&records);
    assert!(bytes <= ceiling, "the records hold {bytes} bytes, over {ceiling}");
}

#[test]
fn a_loop_of_distinct_refused_urls_adds_a_bounded_number_of_denials() {
    let egress = Egress::new(EgressConfig::new()).unwrap();
    let s = session(&egress, "allowed_hosts = [\"api.example\"]\nmax_http_requests = 5000");
    for i in 0..1_000 {
        assert!(s.fetch_blocking(get(format!("http://other.example/{i}"))).unwrap_err().denied);
    }
    let records = s.take_records();
    assert_eq!(records.denials.len(), 1, "one host, one kind of refusal: {:?}", records.denials.len());
    assert_eq!(records.unlisted_denials, 0);
    for i in 0..1_000 {
        assert!(s.fetch_blocking(get(format!("http://h{i}.example/"))).unwrap_err().denied);
    }
    let records = s.take_records();
    assert_eq!(records.denials.len(), REPORT_LISTED_RECORDS);
    assert_eq!(records.unlisted_denials, 1_000 - REPORT_LISTED_RECORDS as u64);
    assert!(records.denials.iter().all(|d| d.reason.contains("not in allowed_hosts")));
}

#[test]
fn refusals_before_the_network_count_against_max_http_requests() {
    let egress = Egress::new(EgressConfig::new()).unwrap();
    let s = session(&egress, "allowed_hosts = [\"api.example\"]\nmax_http_requests = 5\nmax_http_request_bytes = 4");
    let refused = [
        HttpRequest {
            method: "GET".into(),
            url: "http://api.example/".into(),
            headers: vec![("Host".into(), "internal".into())],
            body: Vec::new(),
        },
        HttpRequest {
            method: "POST".into(),
            url: "http://api.example/".into(),
            body: vec![0; 5],
            ..Default::default()
        },
        get("not a url".into()),
        get(format!("http://api.example/{}", "a".repeat(MAX_URL_BYTES))),
    ];
    for n in 0..12 {
        let err = s.fetch_blocking(refused[n % refused.len()].clone()).unwrap_err();
        assert!(err.denied, "{}", err.message);
        assert_eq!(err.message.contains("max_http_requests (5) reached"), n >= 5, "request {n}: {}", err.message);
    }
    let records = s.take_records();
    assert_eq!(records.exchanges.len(), 5, "only requests within the cap are listed");
    assert_eq!(records.unlisted_exchanges, 7);
    let reasons: Vec<&str> = records.denials.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons.len(), 4, "one per kind of refusal: {reasons:?}");
    assert!(reasons.last().unwrap().contains("max_http_requests (5) reached"), "{reasons:?}");
}

#[test]
fn http_timeout_ms_bounds_the_whole_request_redirects_included() {
    let server = TestServer::start();
    let s =
        session(&excepting(server.addr), &format!("allowed_hosts = [\"{}\"]\nhttp_timeout_ms = 700", server.host()));
    // Five hops of 300 ms each: every hop is within 700 ms, the request as a whole is not.
    let started = Instant::now();
    let err = s.fetch_blocking(get(server.url("/slow-redirect/5?ms=300"))).unwrap_err();
    let elapsed = started.elapsed();
    assert!(!err.denied && err.message.contains("http_timeout_ms (700 ms"), "{}", err.message);
    assert!(elapsed >= Duration::from_millis(650), "ended early, after {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_200), "the request ran {elapsed:?}, past its 700 ms");
    let records = s.take_records();
    assert_eq!(records.exchanges[0].outcome, "error");
    assert!(records.exchanges[0].redirects >= 1, "{:?}", records.exchanges[0]);
}

#[test]
fn requests_in_flight_per_run_are_bounded_and_the_rest_wait() {
    let server = TestServer::start();
    let s =
        session(&excepting(server.addr), &format!("allowed_hosts = [\"{}\"]\nhttp_timeout_ms = 20000", server.host()));
    let requests = 3 * MAX_IN_FLIGHT_PER_RUN;
    let start = Arc::new(std::sync::Barrier::new(requests));
    let threads: Vec<_> = (0..requests)
        .map(|_| {
            let (s, url, start) = (s.clone(), server.url("/wait?ms=300"), start.clone());
            std::thread::spawn(move || {
                start.wait();
                s.fetch_blocking(get(url))
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap().unwrap().body, b"waited");
    }
    assert_eq!(server.hits(), requests as u64);
    let peak = server.peak_load();
    assert!(peak <= MAX_IN_FLIGHT_PER_RUN as u64, "{peak} requests of one run were in flight at once");
    assert!(peak >= 2, "the requests never overlapped (peak {peak}), so the bound was not exercised");
}

/// A server that reads each request's head and never answers: it counts connections held and connections the
/// client closed.
struct HoldServer {
    addr: SocketAddr,
    held: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
}

impl HoldServer {
    fn start() -> HoldServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (held, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (h, c) = (held.clone(), closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (held, closed) = (h.clone(), c.clone());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    held.fetch_add(1, Ordering::SeqCst);
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        HoldServer { addr, held, closed }
    }
}

#[test]
fn dropping_a_spawned_fetch_cancels_the_request() {
    let server = HoldServer::start();
    let s =
        session(&excepting(server.addr), &format!("allowed_hosts = [\"{}\"]\nhttp_timeout_ms = 30000", server.addr));
    let response = s.spawn_fetch(get(format!("http://{}/held", server.addr)));
    poll_until("the server holds the request", || server.held.load(Ordering::SeqCst) == 1);
    drop(response);
    poll_until("the connection is closed", || server.closed.load(Ordering::SeqCst) == 1);
    let mut records = s.take_records();
    poll_until("the cancelled request is recorded", || {
        if records.exchanges.is_empty() {
            records = s.take_records();
        }
        !records.exchanges.is_empty()
    });
    let error = records.exchanges[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("cancelled"), "{:?}", records.exchanges[0]);
}
