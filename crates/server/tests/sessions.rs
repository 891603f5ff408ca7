//! `/v1/sessions` end to end on loopback: state kept between calls, fork, ownership (404 for every other subject),
//! the live-session caps (429 for a subject's, 503 for the server's), and a session that ended answering 410 with
//! why; snapshots kept on the server and restored as new sessions, bounded per subject and by bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use wasmagent::{CapabilityManifest, SessionLimits};
use wasmagent_server::config::ApiKeyConfig;
use wasmagent_server::{AppState, ServerConfig, SnapshotConfig};

const ALICE: &str = "wa_test_alice_key";
const MALLORY: &str = "wa_test_mallory_key";

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(limits: SessionLimits) -> Server {
    start_with(limits, SnapshotConfig::default()).await
}

async fn start_with(limits: SessionLimits, snapshots: SnapshotConfig) -> Server {
    let key = |subject: &str, key: &str| ApiKeyConfig {
        subject: subject.into(),
        sha256: hex::encode(Sha256::digest(key.as_bytes())),
        scopes: vec!["runs:write".into(), "runs:read".into()],
    };
    let mut config =
        ServerConfig { pool_slots: 10, max_concurrent_runs: 2, sessions: limits, snapshots, ..ServerConfig::default() };
    config.max_manifest = CapabilityManifest::from_toml_str("cpu_ms = 2000").unwrap();
    config.auth.api_keys = vec![key("alice", ALICE), key("mallory", MALLORY)];
    let state = Arc::new(AppState::new(&config, false).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wasmagent_server::serve(listener, state, &[], async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server { base, stop: Some(stop) }
}

async fn send(server: &Server, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", server.base);
    let mut request = match method {
        "GET" => client.get(url),
        "DELETE" => client.delete(url),
        _ => client.post(url),
    }
    .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn open(server: &Server, key: &str, language: &str) -> (u16, Value) {
    send(server, "POST", "/v1/sessions", key, Some(json!({"language": language}))).await
}

async fn run(server: &Server, key: &str, id: &str, code: &str) -> (u16, Value) {
    send(server, "POST", &format!("/v1/sessions/{id}/runs"), key, Some(json!({"code": code}))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_state_fork_and_are_seen_only_by_their_owner() {
    let server = start(SessionLimits::default()).await;
    let (status, opened) = open(&server, ALICE, "js").await;
    assert_eq!(status, 201, "{opened}");
    let id = opened["id"].as_str().unwrap().to_owned();
    assert_eq!(run(&server, ALICE, &id, "var x = 41; 1").await.0, 200);
    let (status, report) = run(&server, ALICE, &id, "x + 1").await;
    assert_eq!((status, &report["value"]), (200, &json!(42)), "{report}");
    assert_eq!((report["session_id"].as_str(), &report["session_call"]), (Some(id.as_str()), &json!(2)));

    let (status, forked) = send(&server, "POST", &format!("/v1/sessions/{id}/fork"), ALICE, None).await;
    assert_eq!(status, 201, "{forked}");
    let child = forked["id"].as_str().unwrap().to_owned();
    assert_eq!(run(&server, ALICE, &child, "x = 1; x").await.1["value"], json!(1));
    assert_eq!(run(&server, ALICE, &id, "x").await.1["value"], json!(41), "the fork's change reached its parent");
    let (_, info) = send(&server, "GET", &format!("/v1/sessions/{child}"), ALICE, None).await;
    assert_eq!((info["calls"].clone(), info["forked_from"].as_str()), (json!(1), Some(id.as_str())), "{info}");

    // Every route answers another subject as if the session did not exist.
    for (method, path, body) in [
        ("GET", format!("/v1/sessions/{id}"), None),
        ("POST", format!("/v1/sessions/{id}/runs"), Some(json!({"code": "x"}))),
        ("POST", format!("/v1/sessions/{id}/fork"), None),
        ("DELETE", format!("/v1/sessions/{id}"), None),
    ] {
        let (status, answer) = send(&server, method, &path, MALLORY, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert_eq!(answer["error"], "not_found");
    }
    assert_eq!(run(&server, ALICE, &id, "x").await.1["value"], json!(41), "the session is untouched");

    let metrics = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wasmagent_session_calls_total{kernel=\"js\"} 5"), "{metrics}");

    assert_eq!(send(&server, "DELETE", &format!("/v1/sessions/{id}"), ALICE, None).await.0, 204);
    let (status, answer) = run(&server, ALICE, &id, "x").await;
    assert_eq!(status, 410, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("closed by its owner"), "{answer}");
    assert_eq!(send(&server, "GET", &format!("/v1/sessions/{id}"), MALLORY, None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_session_forks_and_a_timed_out_call_ends_it() {
    let server = start(SessionLimits::default()).await;
    let (_, opened) = open(&server, ALICE, "python").await;
    let id = opened["id"].as_str().unwrap().to_owned();
    assert_eq!(run(&server, ALICE, &id, "import math\nr = math.sqrt(16)").await.0, 200);
    assert_eq!(run(&server, ALICE, &id, "r").await.1["value"], json!(4.0));
    let (status, forked) = send(&server, "POST", &format!("/v1/sessions/{id}/fork"), ALICE, None).await;
    assert_eq!(status, 201, "{forked}");
    let child = forked["id"].as_str().unwrap().to_owned();
    assert_eq!(run(&server, ALICE, &child, "r = r + 1\nr").await.1["value"], json!(5.0));
    assert_eq!(run(&server, ALICE, &id, "r").await.1["value"], json!(4.0), "the fork's change reached its parent");
    assert_eq!(send(&server, "GET", &format!("/v1/sessions/{child}"), MALLORY, None).await.0, 404);
    let (status, report) = run(&server, ALICE, &id, "while True:\n    pass").await;
    assert_eq!((status, report["outcome"].as_str()), (200, Some("timeout")), "{report}");
    let ended = report["session_ended"].as_str().unwrap().to_owned();
    let (status, answer) = run(&server, ALICE, &id, "r").await;
    assert_eq!(status, 410, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains(&ended), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_session_caps_answer_429_and_503() {
    let limits = SessionLimits { max_sessions_per_subject: 2, max_sessions: 3, ..SessionLimits::default() };
    let server = start(limits).await;
    assert_eq!(open(&server, ALICE, "js").await.0, 201);
    assert_eq!(open(&server, ALICE, "js").await.0, 201);
    let (status, refused) = open(&server, ALICE, "js").await;
    assert_eq!(status, 429, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("max_sessions_per_subject 2"), "{refused}");
    assert_eq!(open(&server, MALLORY, "js").await.0, 201);
    let (status, refused) = open(&server, MALLORY, "js").await;
    assert_eq!(status, 503, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("max_sessions 3"), "{refused}");
    let (status, refused) = open(&server, MALLORY, "wasm").await;
    assert_eq!(status, 400, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_as_a_new_session_seen_only_by_its_owner_and_bounded() {
    let snapshots = SnapshotConfig { max_per_subject: 2, ..SnapshotConfig::default() };
    let server = start_with(SessionLimits::default(), snapshots).await;
    let (_, opened) = open(&server, ALICE, "js").await;
    let id = opened["id"].as_str().unwrap().to_owned();
    assert_eq!(run(&server, ALICE, &id, "var x = 41; 1").await.0, 200);
    let (status, taken) = send(&server, "POST", &format!("/v1/sessions/{id}/snapshot"), ALICE, None).await;
    assert_eq!(status, 201, "{taken}");
    let snap = taken["id"].as_str().unwrap().to_owned();
    assert!(snap.starts_with("snap-") && taken["taken_from"] == json!(id) && taken["language"] == "js", "{taken}");
    assert!(taken["memory_bytes"].as_u64().unwrap() > 0, "{taken}");
    assert_eq!(run(&server, ALICE, &id, "x = 1; x").await.1["value"], json!(1));

    let (status, restored) = send(&server, "POST", "/v1/sessions", ALICE, Some(json!({"restore": snap}))).await;
    assert_eq!(status, 201, "{restored}");
    let copy = restored["id"].as_str().unwrap().to_owned();
    assert_ne!(copy, id);
    assert_eq!(run(&server, ALICE, &copy, "x + 1").await.1["value"], json!(42), "the snapshot's state, not now's");
    assert_eq!(run(&server, ALICE, &copy, "x = 7").await.0, 200);
    assert_eq!(run(&server, ALICE, &id, "x").await.1["value"], json!(1), "the restored session reached its source");
    let metrics = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wasmagent_live_sessions 2"), "{metrics}");
    assert!(!metrics.contains("wasmagent_snapshot_bytes 0"), "{metrics}");

    // Another subject can neither restore nor delete it, and learns nothing from trying.
    let (status, answer) = send(&server, "POST", "/v1/sessions", MALLORY, Some(json!({"restore": snap}))).await;
    assert_eq!((status, answer["error"].as_str()), (404, Some("not_found")), "{answer}");
    assert_eq!(send(&server, "DELETE", &format!("/v1/snapshots/{snap}"), MALLORY, None).await.0, 404);
    let (status, answer) = send(&server, "POST", &format!("/v1/sessions/{id}/snapshot"), MALLORY, None).await;
    assert_eq!(status, 404, "{answer}");

    // A restore takes the snapshot's manifest and language.
    let body = json!({"restore": snap, "manifest": {"cpu_ms": 100}});
    assert_eq!(send(&server, "POST", "/v1/sessions", ALICE, Some(body)).await.0, 400);
    let (status, answer) =
        send(&server, "POST", "/v1/sessions", ALICE, Some(json!({"restore": snap, "language": "python"}))).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("js session, not python"), "{answer}");

    // The subject's cap, then room again after a delete; a deleted snapshot is gone.
    assert_eq!(send(&server, "POST", &format!("/v1/sessions/{id}/snapshot"), ALICE, None).await.0, 201);
    let (status, refused) = send(&server, "POST", &format!("/v1/sessions/{id}/snapshot"), ALICE, None).await;
    assert_eq!((status, refused["error"].as_str()), (429, Some("too_many_snapshots")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("max_per_subject allows (2)"), "{refused}");
    assert_eq!(send(&server, "DELETE", &format!("/v1/snapshots/{snap}"), ALICE, None).await.0, 204);
    assert_eq!(send(&server, "POST", "/v1/sessions", ALICE, Some(json!({"restore": snap}))).await.0, 404);
    assert_eq!(send(&server, "POST", &format!("/v1/sessions/{id}/snapshot"), ALICE, None).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_past_the_servers_bytes_are_refused() {
    let snapshots = SnapshotConfig { max_bytes: 1024, ..SnapshotConfig::default() };
    let server = start_with(SessionLimits::default(), snapshots).await;
    let (_, opened) = open(&server, ALICE, "js").await;
    let id = opened["id"].as_str().unwrap().to_owned();
    let (status, refused) = send(&server, "POST", &format!("/v1/sessions/{id}/snapshot"), ALICE, None).await;
    assert_eq!(status, 503, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("max_bytes (1024)"), "{refused}");
    let (_, opened) = open(&server, ALICE, "python").await;
    let id = opened["id"].as_str().unwrap().to_owned();
    let (status, refused) = send(&server, "POST", &format!("/v1/sessions/{id}/snapshot"), ALICE, None).await;
    assert_eq!(status, 503, "a Python session's snapshot is held to max_bytes too: {refused}");
    assert_eq!(send(&server, "POST", "/v1/sessions", ALICE, Some(json!({}))).await.0, 400);
}
