//! The cluster store against a real `redis-server` on loopback: the queue, owners, reclaiming, fencing, webhook
//! leases and dead letters, and an unreachable Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wasmagent_cluster::{ClusterConfig, ClusterError, ClusterStore, Delivery, Finished, Reclaimed};

/// A `redis-server` on a loopback port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("these tests need `redis-server` on PATH (apt-get install redis-server)");
            let mut server = RedisServer { child, port };
            let client = redis::Client::open(server.url()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && server.child.try_wait().unwrap().is_none() {
                let pong = client
                    .get_connection_with_timeout(Duration::from_millis(200))
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
                if pong.is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn store(&self, node: &str, reclaim_after_ms: u64) -> ClusterStore {
        let config = ClusterConfig {
            redis_url: Some(self.url()),
            prefix: "t".into(),
            node_id: Some(node.into()),
            timeout_ms: 200,
            reclaim_after_ms,
            poll_ms: 50,
            max_pending_runs: 3,
            max_dead_letters: 2,
            ..ClusterConfig::default()
        };
        ClusterStore::new(&config).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn done(report: &str) -> Finished {
    Finished { status: "done", report: Some(report.into()), error: None }
}

#[tokio::test]
async fn a_run_queued_by_one_node_is_taken_finished_and_read_by_others_only_for_its_owner() {
    let redis = RedisServer::start();
    let (a, b) = (redis.store("a", 60_000), redis.store("b", 60_000));
    a.ensure_group().await.unwrap();
    b.ensure_group().await.unwrap();
    let id = a.submit("alice", r#"{"code":"1"}"#, false).await.unwrap();
    assert_eq!(b.status(&id, "alice").await.unwrap().unwrap().status, "queued");
    assert_eq!(b.status(&id, "mallory").await.unwrap(), None, "another subject sees nothing");
    let run = b.next_run().await.unwrap().expect("b takes the queued run");
    assert_eq!((run.id.as_str(), run.owner.as_str(), run.attempt), (id.as_str(), "alice", 1));
    assert_eq!(run.request, r#"{"code":"1"}"#);
    assert_eq!(a.next_run().await.unwrap(), None, "a run is taken by one node only");
    assert_eq!(a.status(&id, "alice").await.unwrap().unwrap().status, "running");
    let delivery = Delivery {
        id: "d1".into(),
        run_id: id.clone(),
        url: "http://127.0.0.1:9/".into(),
        body: "{}".into(),
        attempts: 0,
        last_error: String::new(),
    };
    assert!(b.finish(&run.id, &run.entry, run.attempt, &done("R"), &[delivery]).await.unwrap());
    let record = a.status(&id, "alice").await.unwrap().unwrap();
    assert_eq!((record.status.as_str(), record.report.as_deref()), ("done", Some("R")));
    assert!(!b.finish(&run.id, &run.entry, run.attempt, &done("again"), &[]).await.unwrap(), "finished once");
    assert_eq!(a.pending_deliveries().await.unwrap(), 1, "the delivery was queued with the result");
    assert_eq!(a.status("not-hex!", "alice").await.unwrap(), None);
}

#[tokio::test]
async fn a_silent_nodes_runs_are_run_again_if_they_cannot_have_acted_and_failed_if_they_may_have() {
    let redis = RedisServer::start();
    let (dead, live) = (redis.store("dead", 600), redis.store("live", 600));
    dead.ensure_group().await.unwrap();
    let pure = dead.submit("alice", "pure", false).await.unwrap();
    let acting = dead.submit("alice", "acting", true).await.unwrap();
    let queued = dead.submit("alice", "queued", true).await.unwrap();
    let first = dead.next_run().await.unwrap().unwrap();
    let second = dead.next_run().await.unwrap().unwrap();
    // `dead` also read the third entry but never started it (it died between the read and the start).
    let mut read = redis::cmd("XREADGROUP");
    read.arg("GROUP").arg("runners").arg("dead").arg("COUNT").arg(1).arg("STREAMS").arg("t:runs").arg(">");
    let mut raw = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: redis::Value = read.query_async(&mut raw).await.unwrap();
    assert_eq!((first.id.as_str(), second.id.as_str()), (pure.as_str(), acting.as_str()));
    assert_eq!(live.reclaim().await.unwrap(), None, "nothing is reclaimed before reclaim_after");
    let started = Instant::now();
    let mut found = Vec::new();
    while found.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "reclaimed only {found:?}");
        match live.reclaim().await.unwrap() {
            Some(reclaimed) => found.push(reclaimed),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(500), "reclaimed after {:?}", started.elapsed());
    let mut reran = Vec::new();
    for reclaimed in found {
        match reclaimed {
            Reclaimed::Run(run) => {
                assert_eq!(run.attempt, if run.id == pure { 2 } else { 1 }, "{run:?}");
                reran.push(run.id.clone());
                assert!(live.finish(&run.id, &run.entry, run.attempt, &done("again"), &[]).await.unwrap());
            }
            Reclaimed::Abandoned(run) => {
                assert_eq!((run.id.as_str(), run.node.as_str()), (acting.as_str(), "dead"));
                let failed = Finished { status: "failed", report: None, error: Some("node died".into()) };
                assert!(live.finish(&run.id, &run.entry, run.attempt, &failed, &[]).await.unwrap());
            }
        }
    }
    reran.sort();
    let mut expected = vec![pure.clone(), queued.clone()];
    expected.sort();
    assert_eq!(reran, expected, "the pure run and the never-started one ran again");
    let record = live.status(&acting, "alice").await.unwrap().unwrap();
    assert_eq!((record.status.as_str(), record.error.as_deref()), ("failed", Some("node died")));
    // The silent node comes back: its late finishes are refused, the recorded outcomes stand.
    assert!(!dead.finish(&first.id, &first.entry, first.attempt, &done("late"), &[]).await.unwrap());
    assert!(!dead.finish(&second.id, &second.entry, second.attempt, &done("late"), &[]).await.unwrap());
    assert_eq!(live.status(&pure, "alice").await.unwrap().unwrap().report.as_deref(), Some("again"));
}

#[tokio::test]
async fn renewed_claims_are_not_reclaimed_and_handed_back_runs_are_queued_again() {
    let redis = RedisServer::start();
    let (holder, other) = (redis.store("holder", 600), redis.store("other", 600));
    holder.ensure_group().await.unwrap();
    let id = holder.submit("alice", "x", true).await.unwrap();
    let run = holder.next_run().await.unwrap().unwrap();
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        holder.renew(std::slice::from_ref(&run.entry)).await.unwrap();
        assert_eq!(other.reclaim().await.unwrap(), None, "a renewed claim is never reclaimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(holder.hand_back(&run.id, &run.entry, run.attempt).await.unwrap());
    let again = other.next_run().await.unwrap().expect("the handed-back run is queued again");
    assert_eq!((again.id.as_str(), again.attempt), (id.as_str(), 2));
    assert!(!holder.finish(&run.id, &run.entry, run.attempt, &done("late"), &[]).await.unwrap());
}

#[tokio::test]
async fn the_queue_is_bounded() {
    let redis = RedisServer::start();
    let store = redis.store("a", 600);
    for _ in 0..3 {
        store.submit("alice", "x", false).await.unwrap();
    }
    assert_eq!(store.submit("alice", "x", false).await, Err(ClusterError::Full(3)));
}

#[tokio::test]
async fn deliveries_are_leased_retried_and_dead_lettered_with_their_id() {
    let redis = RedisServer::start();
    let (a, b) = (redis.store("a", 600), redis.store("b", 600));
    a.ensure_group().await.unwrap();
    let id = a.submit("alice", "x", false).await.unwrap();
    let run = a.next_run().await.unwrap().unwrap();
    let deliveries: Vec<Delivery> = (1..=3)
        .map(|n| Delivery {
            id: format!("d{n}"),
            run_id: id.clone(),
            url: format!("http://127.0.0.1:9/{n}"),
            body: format!("body {n}"),
            attempts: 0,
            last_error: String::new(),
        })
        .collect();
    assert!(a.finish(&run.id, &run.entry, run.attempt, &done("R"), &deliveries).await.unwrap());
    let leased = a.lease_deliveries(10, Duration::from_millis(300)).await.unwrap();
    assert_eq!(leased, deliveries);
    assert_eq!(b.lease_deliveries(10, Duration::from_secs(1)).await.unwrap(), vec![], "leased to a");
    a.delivered("d1").await.unwrap();
    a.retry_later("d2", 1, "HTTP 500", Duration::from_secs(60)).await.unwrap();
    // a stops answering for d3: once the lease has passed, b attempts it, with the same id.
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        let leased = b.lease_deliveries(10, Duration::from_secs(1)).await.unwrap();
        if !leased.is_empty() {
            break leased;
        }
        assert!(Instant::now() < deadline, "the expired lease was never taken over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(again.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["d3"]);
    for (n, letter) in ["one", "two", "three"].iter().enumerate() {
        b.dead_letter(&format!("d{}", n + 2), letter).await.unwrap();
    }
    assert_eq!(a.dead_letters().await.unwrap(), ["two", "three"], "bounded, oldest dropped first");
    assert_eq!(a.pending_deliveries().await.unwrap(), 0);
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_within_the_timeout() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = ClusterConfig {
        redis_url: Some(format!("redis://:secret-password@127.0.0.1:{port}/")),
        timeout_ms: 200,
        ..ClusterConfig::default()
    };
    let store = ClusterStore::new(&config).unwrap();
    let started = Instant::now();
    let error = store.submit("alice", "x", false).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(matches!(&error, ClusterError::Unavailable(_)), "{error}");
    assert!(!error.to_string().contains("secret-password"), "{error}");
    assert!(store.ping().await.is_err());
}

#[tokio::test]
async fn the_session_directory_tells_any_node_where_a_session_lives_for_its_owner_only() {
    let redis = RedisServer::start();
    let (holder, other) = (redis.store("holder", 600), redis.store("other", 600));
    holder
        .register_session("s1", "alice", "http://10.0.0.1:8080", r#"{"calls":0}"#, Duration::from_secs(60))
        .await
        .unwrap();
    let entry = other.session("s1", "alice").await.unwrap().expect("any node finds it");
    assert_eq!(
        (entry.node.as_str(), entry.url.as_str(), entry.info.as_str()),
        ("holder", "http://10.0.0.1:8080", r#"{"calls":0}"#)
    );
    assert_eq!(other.session("s1", "mallory").await.unwrap(), None, "another subject sees nothing");
    holder.register_session("s2", "alice", "http://10.0.0.1:8080", "{}", Duration::from_millis(100)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while other.session("s2", "alice").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the entry outlived its TTL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.forget_session("s1").await.unwrap();
    assert_eq!(other.session("s1", "alice").await.unwrap(), None);
}
