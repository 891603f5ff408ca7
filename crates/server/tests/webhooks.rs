//! Webhook delivery end to end: signed POSTs through the egress path to real HTTP receivers on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmagent_egress::{Egress, EgressConfig};
use wasmagent_server::webhook::{DEFAULT_TOLERANCE_SECS, DeadLetter, ReplayGuard, WebhookConfig, Webhooks, verify};

const SECRET: &[u8] = b"the shared webhook secret";

/// One request as the receiver saw it.
struct Received {
    method: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A loopback HTTP server that answers with the scripted statuses in turn (the last one repeated) and records
/// every request.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(statuses: &[u16]) -> Receiver {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let statuses = statuses.to_vec();
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = Vec::new();
                request.as_reader().read_to_end(&mut body).unwrap();
                let headers =
                    request.headers().iter().map(|h| (h.field.to_string(), h.value.as_str().to_owned())).collect();
                let mut log = log.lock().unwrap();
                let status = *statuses.get(log.len()).or(statuses.last()).unwrap();
                log.push(Received { method: request.method().to_string(), headers, body });
                drop(log);
                let _ = request.respond(tiny_http::Response::from_string("ok").with_status_code(status));
            }
        });
        Receiver { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/runs", self.addr)
    }

    fn hits(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Egress that lets requests reach this receiver (loopback is otherwise refused by the floor).
    fn egress(&self) -> Arc<Egress> {
        let mut config = EgressConfig::new();
        config.allow_private(&self.addr.to_string()).unwrap();
        Egress::new(config).unwrap()
    }
}

fn webhooks(url: String, egress: Arc<Egress>, max_attempts: u32) -> Webhooks {
    let mut config = WebhookConfig::new(vec![url], SECRET.to_vec());
    config.max_attempts = max_attempts;
    config.base_backoff = Duration::from_millis(20);
    config.max_backoff = Duration::from_millis(100);
    config.timeout = Duration::from_secs(5);
    Webhooks::new(config, egress).unwrap()
}

/// Polls until no delivery is in flight, for at most 20 s.
async fn settle(webhooks: &Webhooks) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while webhooks.pending() > 0 {
        assert!(Instant::now() < deadline, "deliveries still pending after 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn the_only_dead_letter(webhooks: &Webhooks) -> DeadLetter {
    let letters = webhooks.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    letters.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_delivery_arrives_signed_with_its_body_intact() {
    let receiver = Receiver::start(&[200]);
    let webhooks = webhooks(receiver.url(), receiver.egress(), 5);
    let body = br#"{"run_id":"run-1","outcome":"ok","stdout":"h\u00e9llo"}"#.to_vec();
    webhooks.deliver("run-1", body.clone());
    settle(&webhooks).await;

    assert!(webhooks.dead_letters().is_empty());
    let received = receiver.received.lock().unwrap();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.body, body);
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("wasmagent-run-id"), Some("run-1"), "a delivery names its run");
    let delivery = request.header("wasmagent-delivery").unwrap();
    assert!(delivery.len() == 32 && delivery.bytes().all(|b| b.is_ascii_hexdigit()), "{delivery}");
    let signature = request.header("wasmagent-signature").unwrap();
    assert_eq!(verify(SECRET, signature, &request.body, unix_now(), DEFAULT_TOLERANCE_SECS), Ok(()));
    assert!(verify(b"some other secret", signature, &request.body, unix_now(), 300).is_err());

    let timestamp: u64 = signature.strip_prefix("t=").unwrap().split(',').next().unwrap().parse().unwrap();
    let mut guard = ReplayGuard::new(DEFAULT_TOLERANCE_SECS, 100);
    assert_eq!(guard.check(delivery, timestamp), Ok(()));
    assert!(guard.check(delivery, timestamp).is_err(), "a replayed delivery must be refused");
}

#[tokio::test]
async fn failed_attempts_are_retried_until_one_succeeds() {
    let receiver = Receiver::start(&[500, 500, 200]);
    let webhooks = webhooks(receiver.url(), receiver.egress(), 5);
    webhooks.deliver("run-2", b"{}".to_vec());
    settle(&webhooks).await;

    assert_eq!(receiver.hits(), 3);
    assert!(webhooks.dead_letters().is_empty());
    let received = receiver.received.lock().unwrap();
    let ids: Vec<_> = received.iter().map(|r| r.header("wasmagent-delivery").unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "retries keep the delivery id: {ids:?}");
    for request in received.iter() {
        let signature = request.header("wasmagent-signature").unwrap();
        assert_eq!(verify(SECRET, signature, &request.body, unix_now(), 300), Ok(()));
    }
}

#[tokio::test]
async fn a_receiver_that_always_fails_ends_in_the_dead_letters() {
    let receiver = Receiver::start(&[503]);
    let webhooks = webhooks(receiver.url(), receiver.egress(), 3);
    webhooks.deliver("run-3", b"{}".to_vec());
    settle(&webhooks).await;

    assert_eq!(receiver.hits(), 3);
    let letter = the_only_dead_letter(&webhooks);
    assert_eq!(letter.run_id, "run-3");
    assert_eq!(letter.url, receiver.url());
    assert_eq!(letter.attempts, 3);
    assert!(letter.last_error.contains("503"), "{}", letter.last_error);
    let sent = receiver.received.lock().unwrap()[0].header("wasmagent-delivery").unwrap().to_owned();
    assert_eq!(letter.delivery_id, sent);
    let json = serde_json::to_value(&letter).unwrap();
    assert_eq!(json["attempts"], 3);
    assert!(json["failed_at"].as_u64().unwrap() >= unix_now() - 60);
}

#[tokio::test]
async fn a_private_address_without_an_exception_is_never_contacted() {
    let receiver = Receiver::start(&[200]);
    let webhooks = webhooks(receiver.url(), Egress::new(EgressConfig::new()).unwrap(), 2);
    webhooks.deliver("run-4", b"{}".to_vec());
    settle(&webhooks).await;

    assert_eq!(receiver.hits(), 0);
    let letter = the_only_dead_letter(&webhooks);
    assert_eq!(letter.attempts, 2);
    assert!(
        letter.last_error.contains("refused") && letter.last_error.contains("loopback"),
        "the floor's refusal should be the error: {}",
        letter.last_error
    );
}

#[tokio::test]
async fn deliveries_past_max_pending_go_straight_to_the_dead_letters() {
    // A receiver that accepts connections (the kernel's backlog) but never answers: deliveries stay in flight.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let mut egress = EgressConfig::new();
    egress.allow_private(&addr.to_string()).unwrap();
    let mut config = WebhookConfig::new(vec![format!("http://{addr}/hook")], SECRET.to_vec());
    config.max_attempts = 1;
    config.timeout = Duration::from_secs(1);
    config.max_pending = 2;
    let webhooks = Webhooks::new(config, Egress::new(egress).unwrap()).unwrap();
    for run in ["run-a", "run-b", "run-c"] {
        webhooks.deliver(run, b"{}".to_vec());
    }
    assert_eq!(webhooks.pending(), 2, "in flight at most max_pending: {:?}", webhooks.dead_letters());
    let letter = the_only_dead_letter(&webhooks);
    assert_eq!((letter.run_id.as_str(), letter.attempts), ("run-c", 0));
    assert!(letter.last_error.contains("max_pending_deliveries"), "{}", letter.last_error);
    settle(&webhooks).await;
    assert_eq!(webhooks.dead_letters().len(), 3, "the two sent ones time out and are dead-lettered too");
    drop(silent);
}
