//! Several `wasmagent serve` processes and one real `redis-server`, all on loopback, serving as one service
//! (`[cluster] redis_url`): a run submitted on one node is read on another; a webhook arrives once with one
//! delivery id; a node killed mid-run loses nothing (its runs are run again or failed, as documented); everything
//! restarted keeps results and dead letters; Redis going away fails async submissions closed (503) while
//! synchronous runs go on, and the service recovers when it returns.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmagent_server::webhook::{DELIVERY_HEADER, SIGNATURE_HEADER, verify};

const ALICE: &str = "wa_alice_key";
const MALLORY: &str = "wa_mallory_key";
const SECRET: &str = "a webhook secret of decent length";
/// How long a silent node keeps its runs before another reclaims them, in these tests.
const RECLAIM_AFTER_MS: u64 = 1_500;
/// A pure run long enough to be killed in the middle (it can act on nothing: run again after a crash).
const LONG_RUN: &str = "const t = Date.now(); while (Date.now() - t < 3000) {} 'slow'";
/// Longer than starting a node plus `shutdown_timeout_ms` (2 s), even on a loaded machine.
const LONGER_RUN: &str = "const t = Date.now(); while (Date.now() - t < 7000) {} 'slow'";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sha256(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A `redis-server` on a loopback port, appending to a file in `dir` (so a restart keeps its data), killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Self {
        let mut redis = Redis { child: None, port: free_port(), dir: dir.to_owned() };
        redis.restart();
        redis
    }

    /// Starts (again) on the same port with the same data.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("these tests need `redis-server` on PATH (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (Redis flushes its append-only file), then waits for the exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-TERM");
            child.wait().unwrap();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal}");
}

/// What the webhook receiver got: (delivery id, run id, body), each signature verified.
type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A webhook receiver on loopback that verifies every request and answers 204.
fn receiver() -> (String, Received) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap();
    let received: Received = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let header = |name: &str| {
                request
                    .headers()
                    .iter()
                    .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                    .map(|h| h.value.as_str().to_owned())
            };
            let (signature, delivery) = (header(SIGNATURE_HEADER), header(DELIVERY_HEADER));
            let mut body = Vec::new();
            request.as_reader().read_to_end(&mut body).unwrap();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            let verified = signature.is_some_and(|s| verify(SECRET.as_bytes(), &s, &body, now, 300).is_ok());
            let code = if verified {
                let body: Value = serde_json::from_slice(&body).unwrap();
                let run = body["run_id"].as_str().unwrap_or_default().to_owned();
                sink.lock().unwrap().push((delivery.unwrap_or_default(), run, body));
                204
            } else {
                401
            };
            let _ = request.respond(tiny_http::Response::empty(code));
        }
    });
    (format!("http://{addr}/hook"), received)
}

/// The configuration every node shares.
fn write_config(dir: &Path, redis: &Redis, hook: &str, reclaim_after_ms: u64) -> PathBuf {
    let hook_addr = hook.trim_start_matches("http://").trim_end_matches("/hook");
    let dead_hook = format!("http://127.0.0.1:{}/never", free_port());
    let config = format!(
        r#"
max_concurrent_runs = 2
shutdown_timeout_ms = 2000
allow_private = ["{hook_addr}"]

[max_manifest]
cpu_ms = 20000
allowed_hosts = ["https://example.com"]

[cluster]
redis_url = "{redis}"
prefix = "t"
timeout_ms = 300
reclaim_after_ms = {reclaim_after_ms}
poll_ms = 200

[webhooks]
urls = ["{hook}", "{dead_hook}"]
secret_env = "WA_TEST_HOOK_SECRET"
max_attempts = 1

[[auth.api_keys]]
subject = "alice"
sha256 = "{alice}"
scopes = ["runs:write", "runs:read", "admin"]

[[auth.api_keys]]
subject = "mallory"
sha256 = "{mallory}"
scopes = ["runs:write", "runs:read"]
"#,
        redis = redis.url(),
        alice = sha256(ALICE),
        mallory = sha256(MALLORY),
    );
    let path = dir.join("server.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// One `wasmagent serve` process on a loopback port, killed on drop.
struct Node {
    child: Option<Child>,
    addr: String,
}

impl Node {
    fn start(name: &str, config: &Path, cache: &Path) -> Self {
        Node::start_on(name, config, cache, "127.0.0.1:0")
    }

    fn start_on(name: &str, config: &Path, cache: &Path, listen: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
            .args(["serve", "--listen", listen, "--config"])
            .arg(config)
            .env("WASMAGENT_CACHE_DIR", cache)
            .env("WA_TEST_HOOK_SECRET", SECRET)
            .env("WASMAGENT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let name = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("serving on http://").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
                eprintln!("[{name}] {line}");
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("the node did not start serving within 60 s");
        Node { child: Some(child), addr }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM: a graceful shutdown, waited for.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-TERM");
            let status = child.wait().unwrap();
            assert!(status.success(), "a graceful shutdown exits 0: {status}");
        }
    }

    fn call(&self, method: &str, path: &str, key: &str, body: Option<&Value>) -> Reply {
        http(&self.addr, method, path, key, body)
    }

    fn submit(&self, key: &str, body: Value) -> String {
        let reply = self.call("POST", "/v1/runs", key, Some(&body));
        assert_eq!(reply.status, 202, "{}", reply.body);
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    /// Polls `GET /v1/runs/{id}` until its status is one of `statuses`.
    fn wait_for(&self, id: &str, statuses: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.call("GET", &format!("/v1/runs/{id}"), ALICE, None);
            let run = reply.json();
            if reply.status == 200 && statuses.contains(&run["status"].as_str().unwrap_or_default()) {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} never reached {statuses:?}: {} {}", reply.status, reply.body);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on its own connection.
fn http(addr: &str, method: &str, path: &str, key: &str, body: Option<&Value>) -> Reply {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_owned() };
    Reply { status, headers, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    body
}

fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_nodes_serve_as_one_service_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(dir.path());
    let (hook, received) = receiver();
    let config = write_config(dir.path(), &redis, &hook, RECLAIM_AFTER_MS);
    let mut a = Node::start("a", &config, cache.path());
    let mut b = Node::start("b", &config, cache.path());
    let mut c = Node::start("c", &config, cache.path());

    // Submitted on A, read on B, invisible to another subject on C.
    let id = a.submit(ALICE, json!({"language": "js", "code": "6 * 7", "async": true}));
    let run = b.wait_for(&id, &["done", "failed"]);
    assert_eq!((run["status"].as_str(), run["report"]["value"].as_i64()), (Some("done"), Some(42)), "{run}");
    let theirs = c.call("GET", &format!("/v1/runs/{id}"), MALLORY, None);
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    // Its webhook: received, signed, with one delivery id; the other receiver's delivery is a dead letter that
    // any node lists.
    poll("the webhook", || received.lock().unwrap().iter().any(|(_, run, _)| *run == id).then_some(()));
    let letters = poll("the dead letter", || {
        let reply = c.call("GET", "/v1/webhooks/dead-letters", ALICE, None);
        let letters = reply.json();
        letters.as_array().is_some_and(|l| l.iter().any(|d| d["run_id"] == id.as_str())).then_some(letters)
    });
    assert!(letters[0]["url"].as_str().unwrap().ends_with("/never"), "{letters}");
    assert_eq!(letters[0]["attempts"], 1);

    // B and C shut down gracefully; A takes two long runs, one that cannot act and one that may (it is granted a
    // host), and is killed in the middle of both.
    b.stop();
    c.stop();
    let pure = a.submit(ALICE, json!({"language": "js", "code": LONG_RUN, "async": true}));
    let acting = a.submit(
        ALICE,
        json!({"language": "js", "code": LONG_RUN, "async": true,
               "manifest": {"allowed_hosts": ["https://example.com"]}}),
    );
    a.wait_for(&pure, &["running"]);
    a.wait_for(&acting, &["running"]);
    a.kill();
    let killed = Instant::now();

    // Everything restarts, Redis included.
    redis.stop();
    redis.restart();
    let a = Node::start("a2", &config, cache.path());
    let b = Node::start("b2", &config, cache.path());
    let c = Node::start("c2", &config, cache.path());
    let rerun = b.wait_for(&pure, &["done", "failed"]);
    assert_eq!((rerun["status"].as_str(), rerun["report"]["value"].as_str()), (Some("done"), Some("slow")), "{rerun}");
    assert!(killed.elapsed() >= Duration::from_millis(RECLAIM_AFTER_MS), "reclaimed after {:?}", killed.elapsed());
    let failed = c.wait_for(&acting, &["done", "failed"]);
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["error"].as_str().unwrap();
    assert!(reason.contains("may have acted") && reason.contains("not run again"), "{reason}");
    // Results and dead letters from before the restart are still there.
    let before = a.call("GET", &format!("/v1/runs/{id}"), ALICE, None);
    assert_eq!((before.status, before.json()["report"]["value"].as_i64()), (200, Some(42)), "{}", before.body);
    let letters = b.call("GET", "/v1/webhooks/dead-letters", ALICE, None).json();
    assert!(letters.as_array().unwrap().iter().any(|d| d["run_id"] == id.as_str()), "{letters}");
    // The failed run's webhook says so; every run was delivered once, each under one id.
    poll("the failed run's webhook", || {
        let received = received.lock().unwrap();
        received.iter().find(|(_, run, _)| *run == acting).map(|(_, _, body)| body["status"].clone())
    });
    poll("the re-run's webhook", || received.lock().unwrap().iter().any(|(_, run, _)| *run == pure).then_some(()));
    let received = received.lock().unwrap();
    for run in [&id, &pure, &acting] {
        let ids: Vec<&str> = received.iter().filter(|(_, r, _)| r == run).map(|(d, _, _)| d.as_str()).collect();
        assert_eq!(ids.len(), 1, "run {run} delivered {ids:?}");
        assert_eq!(ids[0].len(), 32, "{ids:?}");
    }
}

#[test]
fn redis_going_away_fails_async_runs_closed_keeps_sync_runs_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(dir.path());
    let (hook, _received) = receiver();
    let config = write_config(dir.path(), &redis, &hook, RECLAIM_AFTER_MS);
    let node = Node::start("n", &config, cache.path());
    assert_eq!(node.call("GET", "/readyz", ALICE, None).status, 200);
    let id = node.submit(ALICE, json!({"language": "js", "code": "1 + 1", "async": true}));
    node.wait_for(&id, &["done"]);

    redis.stop();
    let refused = node.call("POST", "/v1/runs", ALICE, Some(&json!({"language": "js", "code": "1", "async": true})));
    assert_eq!((refused.status, refused.header("retry-after")), (503, Some("1")), "{}", refused.body);
    assert!(refused.body.contains("unavailable"), "{}", refused.body);
    let read = node.call("GET", &format!("/v1/runs/{id}"), ALICE, None);
    assert_eq!(read.status, 503, "{}", read.body);
    let ready = node.call("GET", "/readyz", ALICE, None);
    assert_eq!(ready.status, 503, "{}", ready.body);
    let sync = node.call("POST", "/v1/runs", ALICE, Some(&json!({"language": "js", "code": "2 + 3"})));
    assert_eq!((sync.status, sync.json()["value"].as_i64()), (200, Some(5)), "{}", sync.body);

    redis.restart();
    poll("ready again", || (node.call("GET", "/readyz", ALICE, None).status == 200).then_some(()));
    let after = node.submit(ALICE, json!({"language": "js", "code": "3 * 3", "async": true}));
    let run = node.wait_for(&after, &["done", "failed"]);
    assert_eq!(run["report"]["value"].as_i64(), Some(9), "{run}");
    assert_eq!(node.call("GET", &format!("/v1/runs/{id}"), ALICE, None).json()["report"]["value"], 2);
}

#[test]
fn a_node_shutting_down_hands_back_runs_that_cannot_act_and_fails_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let (hook, _received) = receiver();
    // No reclaiming within this test: only the shutdown itself can give the runs back.
    let config = write_config(dir.path(), &redis, &hook, 600_000);
    let mut leaving = Node::start("leaving", &config, cache.path());
    let pure = leaving.submit(ALICE, json!({"language": "js", "code": LONGER_RUN, "async": true}));
    let acting = leaving.submit(
        ALICE,
        json!({"language": "js", "code": LONGER_RUN, "async": true,
               "manifest": {"allowed_hosts": ["https://example.com"]}}),
    );
    leaving.wait_for(&pure, &["running"]);
    leaving.wait_for(&acting, &["running"]);
    let staying = Node::start("staying", &config, cache.path());
    // Both runs outlast the start of `staying` and shutdown_timeout_ms (2 s).
    leaving.stop();
    let failed = staying.wait_for(&acting, &["done", "failed"]);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("shut down"), "{failed}");
    let rerun = staying.wait_for(&pure, &["done", "failed"]);
    assert_eq!(rerun["report"]["value"].as_str(), Some("slow"), "{rerun}");
}

#[test]
fn a_session_lives_on_its_node_and_other_nodes_answer_its_status_and_name_that_node() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let (hook, _received) = receiver();
    let (a_addr, b_addr) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let config = |name: &str, addr: &str| {
        let node_dir = dir.path().join(name);
        std::fs::create_dir_all(&node_dir).unwrap();
        let path = write_config(&node_dir, &redis, &hook, RECLAIM_AFTER_MS);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("[cluster]\n", &format!("[cluster]\nadvertise_url = \"http://{addr}\"\n"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let a = Node::start_on("a", &config("a", &a_addr), cache.path(), &a_addr);
    let b = Node::start_on("b", &config("b", &b_addr), cache.path(), &b_addr);

    let opened = a.call("POST", "/v1/sessions", ALICE, Some(&json!({"language": "js"})));
    assert_eq!(opened.status, 201, "{}", opened.body);
    let id = opened.json()["id"].as_str().unwrap().to_owned();
    let call = json!({"code": "globalThis.n = (globalThis.n || 0) + 1; n"});
    let first = a.call("POST", &format!("/v1/sessions/{id}/runs"), ALICE, Some(&call));
    assert_eq!((first.status, first.json()["value"].as_i64()), (200, Some(1)), "{}", first.body);

    // B does not hold it: it says where it lives instead of 404, answers its status, and hides it from others.
    let misdirected = b.call("POST", &format!("/v1/sessions/{id}/runs"), ALICE, Some(&call));
    assert_eq!(misdirected.status, 421, "{}", misdirected.body);
    let a_url = format!("http://{a_addr}");
    assert_eq!(misdirected.header("wasmagent-session-node"), Some(a_url.as_str()));
    assert!(misdirected.body.contains(&a_url), "{}", misdirected.body);
    let status = b.call("GET", &format!("/v1/sessions/{id}"), ALICE, None);
    assert_eq!((status.status, status.json()["calls"].as_u64()), (200, Some(1)), "{}", status.body);
    assert_eq!(b.call("GET", &format!("/v1/sessions/{id}"), MALLORY, None).status, 404);
    assert_eq!(b.call("POST", &format!("/v1/sessions/{id}/runs"), MALLORY, Some(&call)).status, 404);
    let second = a.call("POST", &format!("/v1/sessions/{id}/runs"), ALICE, Some(&call));
    assert_eq!(second.json()["value"].as_i64(), Some(2), "{}", second.body);

    // Closed on A: gone from the directory too.
    assert_eq!(a.call("DELETE", &format!("/v1/sessions/{id}"), ALICE, None).status, 204);
    assert_eq!(b.call("GET", &format!("/v1/sessions/{id}"), ALICE, None).status, 404);
    assert_eq!(b.call("POST", &format!("/v1/sessions/{id}/runs"), ALICE, Some(&call)).status, 404);
}

#[test]
fn deliveries_past_the_clusters_bound_are_dead_lettered_unsent() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let (hook, received) = receiver();
    let path = write_config(dir.path(), &redis, &hook, RECLAIM_AFTER_MS);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("max_attempts = 1\n", "max_attempts = 1\nmax_pending_deliveries = 1\n");
    std::fs::write(&path, text).unwrap();
    let node = Node::start("n", &path, cache.path());
    // Two receivers: the run's two deliveries would make two pending, past the bound of one.
    let id = node.submit(ALICE, json!({"language": "js", "code": "1", "async": true}));
    node.wait_for(&id, &["done"]);
    let letters = poll("the dead letters", || {
        let letters = node.call("GET", "/v1/webhooks/dead-letters", ALICE, None).json();
        (letters.as_array().map_or(0, Vec::len) == 2).then_some(letters)
    });
    for letter in letters.as_array().unwrap() {
        assert_eq!((letter["run_id"].as_str(), letter["attempts"].as_u64()), (Some(id.as_str()), Some(0)), "{letter}");
        assert!(letter["last_error"].as_str().unwrap().contains("max_pending_deliveries"), "{letter}");
    }
    assert!(received.lock().unwrap().is_empty(), "nothing was sent");
}
