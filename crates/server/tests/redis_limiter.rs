//! The Redis rate limiter against real `redis-server` processes: shared limits, atomicity, release, fail-closed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmagent_server::ratelimit::{
    Admission, LimitReason, LimiterUnavailable, Limits, RateLimiter, RedisLimiter, WindowState,
};

const TIMEOUT: Duration = Duration::from_millis(500);
const PREFIX: &str = "t";

/// A `redis-server` on a loopback port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(server) = RedisServer::start_on(port) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `None` if the server exited before answering (its port was taken meanwhile).
    fn start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `redis-server` ({e}): these tests need it on PATH (apt-get install redis-server)")
            });
        let mut server = RedisServer { child, port };
        let client = redis::Client::open(server.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if server.child.try_wait().unwrap().is_some() {
                return None;
            }
            let pong = client
                .get_connection_with_timeout(TIMEOUT)
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok_and(|p| p == "PONG") {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {port} did not answer PING within 10 s");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    async fn limiter(&self) -> RedisLimiter {
        RedisLimiter::connect(&self.url(), PREFIX, TIMEOUT).await.unwrap()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal}");
    }

    fn stop(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn limits(requests_per_minute: u64, concurrent_runs: u64) -> Limits {
    Limits { requests_per_minute, concurrent_runs }
}

async fn admit(limiter: &RedisLimiter, subject: &str, limits: Limits) -> Admission {
    limiter.admit(subject, limits).await.unwrap()
}

fn window(admission: &Admission) -> WindowState {
    match admission {
        Admission::Allowed { window, .. } | Admission::Limited { window, .. } => *window,
    }
}

fn refused_for(admission: &Admission) -> Option<LimitReason> {
    match admission {
        Admission::Allowed { .. } => None,
        Admission::Limited { reason, .. } => Some(*reason),
    }
}

async fn zcard(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("ZCARD").arg(key).query_async(connection).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_limit_holds_and_the_headers_are_right() {
    let server = RedisServer::start();
    let limiter = server.limiter().await;
    let mut held = Vec::new();
    for expected_remaining in [2, 1, 0] {
        let admission = admit(&limiter, "alice", limits(3, 10)).await;
        let window = window(&admission);
        assert_eq!(refused_for(&admission), None);
        assert_eq!((window.limit, window.remaining), (3, expected_remaining));
        assert!((58..=60).contains(&window.reset_secs), "reset {}", window.reset_secs);
        held.push(admission);
    }
    let Admission::Limited { reason, window, retry_after_secs } = admit(&limiter, "alice", limits(3, 10)).await else {
        panic!("the fourth request in a minute was allowed")
    };
    assert_eq!(reason, LimitReason::Rate);
    assert_eq!((window.limit, window.remaining), (3, 0));
    assert!((58..=60).contains(&retry_after_secs), "retry after {retry_after_secs}");
    assert_eq!(retry_after_secs, window.reset_secs);

    let mut raw = server.raw().await;
    assert_eq!(zcard(&mut raw, "t:rl:alice").await, 3, "a refused request is not logged");
    assert_eq!(zcard(&mut raw, "t:run:alice").await, 3);
    let ttl: i64 = redis::cmd("PTTL").arg("t:rl:alice").query_async(&mut raw).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "the window key expires when idle (ttl {ttl})");
    assert_eq!(refused_for(&admit(&limiter, "bob", limits(3, 10)).await), None, "subjects are separate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_for_concurrency_still_counts() {
    let server = RedisServer::start();
    let limiter = server.limiter().await;
    let first = admit(&limiter, "carol", limits(5, 1)).await;
    assert_eq!(window(&first).remaining, 4);
    let second = admit(&limiter, "carol", limits(5, 1)).await;
    let Admission::Limited { reason: LimitReason::Concurrency, window, retry_after_secs } = second else {
        panic!("a second concurrent run was allowed: {second:?}")
    };
    assert_eq!((window.remaining, retry_after_secs), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_share_the_limits() {
    let server = RedisServer::start();
    let (a, b) = (server.limiter().await, server.limiter().await);
    let mut held = Vec::new();
    for (node, remaining) in [(&a, 3), (&b, 2), (&a, 1), (&b, 0)] {
        let admission = admit(node, "dave", limits(4, 10)).await;
        assert_eq!(refused_for(&admission), None);
        assert_eq!(window(&admission).remaining, remaining);
        held.push(admission);
    }
    assert_eq!(refused_for(&admit(&a, "dave", limits(4, 10)).await), Some(LimitReason::Rate));
    assert_eq!(refused_for(&admit(&b, "dave", limits(4, 10)).await), Some(LimitReason::Rate));

    let running = admit(&a, "erin", limits(10, 1)).await;
    assert_eq!(refused_for(&running), None);
    assert_eq!(refused_for(&admit(&b, "erin", limits(10, 1)).await), Some(LimitReason::Concurrency));
}

/// 200 requests at once from four "servers": exactly the limit is admitted, for the window and for concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admits_never_exceed_the_limit() {
    let server = RedisServer::start();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(Arc::new(server.limiter().await));
    }
    for (subject, limits, limited_by) in
        [("frank", limits(25, 1000), LimitReason::Rate), ("grace", limits(1000, 25), LimitReason::Concurrency)]
    {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let node = nodes[i % nodes.len()].clone();
                tokio::spawn(async move { node.admit(subject, limits).await })
            })
            .collect();
        let mut admissions = Vec::new();
        for task in tasks {
            admissions.push(task.await.unwrap().unwrap());
        }
        let allowed = admissions.iter().filter(|a| refused_for(a).is_none()).count();
        assert_eq!(allowed, 25, "{subject}");
        assert!(admissions.iter().filter_map(refused_for).all(|reason| reason == limited_by), "{subject}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_slot_releases_the_run() {
    let server = RedisServer::start();
    let limiter = server.limiter().await;
    let mut raw = server.raw().await;
    let running = admit(&limiter, "heidi", limits(10, 1)).await;
    assert_eq!(refused_for(&running), None);
    assert_eq!(refused_for(&admit(&limiter, "heidi", limits(10, 1)).await), Some(LimitReason::Concurrency));
    drop(running);
    let deadline = Instant::now() + Duration::from_secs(10);
    while zcard(&mut raw, "t:run:heidi").await != 0 {
        assert!(Instant::now() < deadline, "the slot was not released within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(refused_for(&admit(&limiter, "heidi", limits(10, 1)).await), None);
}

/// Without a runtime the slot cannot be released from `drop`: it stays taken (the stale timeout frees it), no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_dropped_outside_a_runtime_is_left_to_expire() {
    let server = RedisServer::start();
    let limiter = server.limiter().await;
    let mut raw = server.raw().await;
    let running = admit(&limiter, "mallory", limits(10, 1)).await;
    assert_eq!(refused_for(&running), None);
    std::thread::spawn(move || drop(running)).join().expect("dropping a slot outside a runtime panicked");
    assert_eq!(zcard(&mut raw, "t:run:mallory").await, 1);
    assert_eq!(refused_for(&admit(&limiter, "mallory", limits(10, 1)).await), Some(LimitReason::Concurrency));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_type_key_is_refused_then_repaired() {
    let server = RedisServer::start();
    let limiter = server.limiter().await;
    let mut raw = server.raw().await;
    let setup: [(&str, redis::Cmd); 2] = [
        ("t:rl:ivan", redis::cmd("SET").arg("t:rl:ivan").arg("garbage").clone()),
        ("t:run:ivan", redis::cmd("HSET").arg("t:run:ivan").arg("field").arg("1").clone()),
    ];
    for (key, corrupt) in setup {
        // The previous round's admission may still hold (or be releasing) a slot under this key: start clean.
        redis::cmd("DEL").arg(key).exec_async(&mut raw).await.unwrap();
        corrupt.exec_async(&mut raw).await.unwrap();
        let refused = limiter.admit("ivan", limits(10, 10)).await;
        let Err(LimiterUnavailable(message)) = refused else {
            panic!("a corrupt {key} did not fail closed: {refused:?}")
        };
        assert!(message.contains("malformed") && message.contains(key), "{message}");
        let kind: String = redis::cmd("TYPE").arg(key).query_async(&mut raw).await.unwrap();
        assert_eq!(kind, "none", "{key} was not deleted");
        assert_eq!(refused_for(&admit(&limiter, "ivan", limits(10, 10)).await), None, "after repairing {key}");
    }
}

/// A stopped Redis refuses promptly (connection refused), a frozen one after the timeout; neither allows or hangs,
/// and the limiter works again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_redis_fails_closed_within_the_timeout() {
    let mut server = RedisServer::start();
    let limiter = server.limiter().await;
    let bounded = || async {
        tokio::time::timeout(TIMEOUT * 4, limiter.admit("judy", limits(1000, 1000)))
            .await
            .expect("admit hung past its timeout")
            .map(|admission| refused_for(&admission))
    };
    assert_eq!(bounded().await, Ok(None));

    server.signal("-STOP");
    let frozen = bounded().await;
    assert!(matches!(&frozen, Err(LimiterUnavailable(m)) if m.contains("within")), "{frozen:?}");
    server.signal("-CONT");

    server.stop();
    for _ in 0..3 {
        let refused = bounded().await;
        assert!(refused.is_err(), "a stopped Redis gave {refused:?}");
    }

    let port = server.port;
    let _restarted = RedisServer::start_on(port).expect("redis-server restarts on its port");
    let deadline = Instant::now() + Duration::from_secs(10);
    while bounded().await.is_err() {
        assert!(Instant::now() < deadline, "the limiter did not reconnect within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nothing listening, a listener that never answers, an invalid URL (whose password must not be echoed), and a
/// zero timeout are all refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_fails_closed() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let refused = RedisLimiter::connect(&format!("redis://127.0.0.1:{closed}/"), PREFIX, TIMEOUT).await;
    assert!(refused.is_err(), "nothing listens on {closed}");

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}/", silent.local_addr().unwrap().port());
    let hung = tokio::time::timeout(TIMEOUT * 4, RedisLimiter::connect(&url, PREFIX, TIMEOUT)).await;
    assert!(matches!(&hung, Ok(Err(LimiterUnavailable(m))) if m.contains("within")), "{:?}", hung.map(|r| r.err()));

    let Err(LimiterUnavailable(message)) = RedisLimiter::connect("redis//:hunter2@nowhere", PREFIX, TIMEOUT).await
    else {
        panic!("an invalid URL connected")
    };
    assert!(!message.contains("hunter2"), "the password leaked: {message}");

    let server = RedisServer::start();
    let zero = RedisLimiter::connect(&server.url(), PREFIX, Duration::ZERO).await;
    assert!(matches!(&zero, Err(LimiterUnavailable(m)) if m.contains("greater than zero")), "{:?}", zero.err());
}
