//! The HTTP service end to end: a real server on loopback, real HTTP clients, real tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmagent::{CapabilityManifest, Kernel, RunRequest};
use wasmagent_server::config::{ApiKeyConfig, JwtKeyConfig};
use wasmagent_server::{AppState, ServerConfig};

const HS_SECRET: &str = "a test secret that is at least 32 bytes long";
const WRITE_KEY: &str = "wa_test_write_key";
const READ_KEY: &str = "wa_test_read_key";

fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn config(secret_dir: &tempfile::TempDir) -> ServerConfig {
    let secret = secret_dir.path().join("hs.secret");
    std::fs::write(&secret, HS_SECRET).unwrap();
    let mut c = ServerConfig { pool_slots: 8, max_concurrent_runs: 2, max_queued_runs: 4, ..ServerConfig::default() };
    c.max_manifest = CapabilityManifest::from_toml_str("cpu_ms = 2000\nextra_capabilities = []").unwrap();
    c.auth.issuer = Some("https://issuer.test".into());
    c.auth.audience = vec!["wasmagent".into()];
    let key = |alg: &str| JwtKeyConfig {
        alg: alg.into(),
        kid: None,
        secret_env: None,
        secret_file: None,
        public_key_file: None,
        jwks_file: None,
    };
    c.auth.jwt_keys = vec![
        JwtKeyConfig { secret_file: Some(secret), ..key("HS256") },
        JwtKeyConfig { public_key_file: Some(keys_dir().join("rsa-public.pem")), ..key("RS256") },
        JwtKeyConfig { public_key_file: Some(keys_dir().join("ed25519-public.pem")), ..key("EdDSA") },
    ];
    let api_key = |subject: &str, key: &str, scopes: &[&str]| ApiKeyConfig {
        subject: subject.into(),
        sha256: sha(key),
        scopes: scopes.iter().map(|s| (*s).into()).collect(),
    };
    c.auth.api_keys =
        vec![api_key("writer", WRITE_KEY, &["runs:write", "runs:read"]), api_key("reader", READ_KEY, &["runs:read"])];
    c.cors_allowed_origins = vec!["https://app.example".into()];
    c
}

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_with(edit: impl FnOnce(&mut ServerConfig)) -> Server {
    start_in(tempfile::tempdir().unwrap(), |c, _| edit(c)).await
}

/// A server whose configuration `edit` may point into `dir` (kept as long as the server).
async fn start_in(dir: tempfile::TempDir, edit: impl FnOnce(&mut ServerConfig, &std::path::Path)) -> Server {
    let mut config = config(&dir);
    edit(&mut config, dir.path());
    let state = Arc::new(AppState::new(&config, false).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let origins = config.cors_allowed_origins.clone();
    let served = tokio::spawn(async move {
        wasmagent_server::serve(listener, state, &origins, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server { base, stop: Some(stop), served: Some(served), dir }
}

async fn start() -> Server {
    start_with(|_| {}).await
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> Value {
    json!({ "sub": "alice", "exp": now() + 300, "iss": "https://issuer.test", "aud": "wasmagent", "scope": "runs:write runs:read" })
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(HS_SECRET.as_bytes()))
        .unwrap()
}

fn signed(alg: Algorithm, claims: &Value) -> String {
    let pem = |name: &str| std::fs::read(keys_dir().join(name)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem("ed25519-private.pem")).unwrap(),
        _ => unreachable!(),
    };
    jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
}

async fn post(server: &Server, token: Option<&str>, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().post(format!("{}/v1/runs", server.base)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn js(code: &str) -> Value {
    json!({ "language": "js", "code": code })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_need_credentials_and_return_the_report() {
    let server = start().await;
    let (status, _, body) = post(&server, None, js("1+1")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthenticated");
    let (status, headers, body) = post(&server, Some(WRITE_KEY), js("1+1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"], 2);
    assert_eq!(body["kernel"], "js");
    assert!(headers.contains_key("ratelimit-remaining"));
    let (status, _, body) = post(&server, Some(READ_KEY), js("1+1")).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    let py = json!({ "language": "python", "code": "sum(range(10))" });
    assert_eq!(post(&server, Some(WRITE_KEY), py).await.2["value"], 45);
    let health = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// OWASP: ASI03, ASI07
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_matrix() {
    let server = start().await;
    let server = &server;
    let ok = |token: String| async move { post(server, Some(&token), js("7")).await };
    assert_eq!(ok(hs256(&claims())).await.0, 200);
    assert_eq!(ok(signed(Algorithm::RS256, &claims())).await.0, 200);
    assert_eq!(ok(signed(Algorithm::EdDSA, &claims())).await.0, 200);
    let mut aud_list = claims();
    aud_list["aud"] = json!(["other", "wasmagent"]);
    assert_eq!(ok(hs256(&aud_list)).await.0, 200, "aud may be a list");

    let mut refused: Vec<(&str, String)> = Vec::new();
    let mut bad = hs256(&claims());
    bad.push('x');
    refused.push(("bad signature", bad));
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    refused.push(("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims()))));
    // HS/RS confusion: an HS256 token whose "secret" is the server's RSA public key.
    let public_pem = std::fs::read(keys_dir().join("rsa-public.pem")).unwrap();
    let confused =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(&public_pem))
            .unwrap();
    refused.push(("HS/RS confusion", confused));
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        hs256(&c)
    };
    refused.push(("expired", with(&|c| c["exp"] = json!(now() - 10))));
    refused.push(("non-numeric exp", with(&|c| c["exp"] = json!("tomorrow"))));
    refused.push(("nbf in the future", with(&|c| c["nbf"] = json!(now() + 600))));
    refused.push(("missing sub", with(&|c| drop(c.as_object_mut().unwrap().remove("sub")))));
    refused.push(("empty sub", with(&|c| c["sub"] = json!(""))));
    refused.push(("missing exp", with(&|c| drop(c.as_object_mut().unwrap().remove("exp")))));
    refused.push(("wrong iss", with(&|c| c["iss"] = json!("https://evil.test"))));
    refused.push(("wrong aud", with(&|c| c["aud"] = json!("someone-else"))));
    for (case, token) in refused {
        let (status, _, body) = ok(token).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert!(body["message"].as_str().unwrap().contains("not valid"), "{case}: {body}");
    }
    let (status, _, body) = ok(with(&|c| c["scope"] = json!("runs:read"))).await;
    assert_eq!(status, 403, "missing scope: {body}");
    let (status, _, _) = ok(with(&|c| c["nbf"] = json!(now() + 30))).await;
    assert_eq!(status, 200, "nbf within 60 s is accepted");
}

/// OWASP: ASI03
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_may_only_narrow_the_servers_and_bodies_are_capped() {
    let server = start().await;
    let body = json!({ "language": "js", "code": "1", "manifest": { "cpu_ms": 5000 } });
    let (status, _, body) = post(&server, Some(WRITE_KEY), body).await;
    assert_eq!((status, body["field"].as_str()), (403, Some("cpu_ms")), "{body}");
    let body = json!({ "language": "js", "code": "1", "manifest": { "allowed_hosts": ["example.com"] } });
    let (status, _, body) = post(&server, Some(WRITE_KEY), body).await;
    assert_eq!((status, body["field"].as_str()), (403, Some("allowed_hosts[0]")), "{body}");
    let body = json!({ "language": "js", "code": "1", "manifest": { "cpu_ms": 500 } });
    let (status, _, report) = post(&server, Some(WRITE_KEY), body).await;
    assert_eq!(status, 200);
    assert_eq!(report["manifest"]["cpu_ms"], 500);
    let (_, _, report) = post(&server, Some(WRITE_KEY), js("1")).await;
    assert_eq!(report["manifest"]["cpu_ms"], 2000, "unset limits are the server's maximum");

    let big = "x".repeat(70 * 1024);
    let (status, _, body) = post(&server, Some(WRITE_KEY), js(&format!("'{big}'"))).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("payload_too_large")), "{body}");
    let (status, _, body) = post(&server, Some(WRITE_KEY), json!({ "language": "cobol", "code": "1" })).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = post(&server, Some(WRITE_KEY), json!({ "language": "js", "code": "1", "extra": 1 })).await;
    assert_eq!(status, 400);
}

/// OWASP: ASI08
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let server = start_with(|c| c.rate_limit.requests_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(post(&server, Some(WRITE_KEY), js("1")).await.0, 200);
    }
    let (status, headers, body) = post(&server, Some(WRITE_KEY), js("1")).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(headers["ratelimit-remaining"], "0");
    let metrics = reqwest::get(format!("{}/metrics", server.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wasmagent_rejected_requests_total{reason=\"rate_limited\"} 1"), "{metrics}");
    assert!(metrics.contains("wasmagent_runs_total{kernel=\"js\",outcome=\"ok\"} 3"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_runs_are_polled_by_their_owner_only() {
    let server = start().await;
    let mut body = js("6*7");
    body["async"] = json!(true);
    let (status, _, accepted) = post(&server, Some(WRITE_KEY), body).await;
    assert_eq!(status, 202, "{accepted}");
    let url = format!("{}{}", server.base, accepted["url"].as_str().unwrap());
    let client = reqwest::Client::new();
    let mut run = Value::Null;
    for _ in 0..200 {
        run = client.get(&url).bearer_auth(WRITE_KEY).send().await.unwrap().json().await.unwrap();
        if run["status"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(run["report"]["value"], 42, "{run}");
    let other = client.get(&url).bearer_auth(READ_KEY).send().await.unwrap();
    assert_eq!(other.status(), 404, "another subject cannot see the run");
}

/// OWASP: ASI08
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_requests_get_only_200_202_429_or_503_and_no_async_run_is_lost() {
    let server = start_with(|c| {
        c.rate_limit.concurrent_runs = 1000;
        c.rate_limit.requests_per_minute = 600;
    })
    .await;
    let base = Arc::new(server.base.clone());
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (client, base) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let code = if i % 10 == 0 { "let s = 0; for (let i = 0; i < 1e5; i++) s += i; s" } else { "1" };
            let mut body = js(code);
            body["async"] = json!(i % 5 == 0);
            let response =
                client.post(format!("{base}/v1/runs")).bearer_auth(WRITE_KEY).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let id = if status == 202 {
                let accepted: Value = response.json().await.unwrap();
                Some(accepted["id"].as_str().unwrap().to_owned())
            } else {
                None
            };
            (status, id)
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    let mut ids = Vec::new();
    for task in tasks {
        let (status, id) = task.await.unwrap();
        *counts.entry(status).or_insert(0) += 1;
        ids.extend(id);
    }
    assert!(counts.keys().all(|s| [200, 202, 429, 503].contains(s)), "{counts:?}");
    assert_eq!(counts.get(&429).copied().unwrap_or(0), 400, "exactly the requests over 600/min: {counts:?}");
    assert!(!ids.is_empty() && counts.get(&200).copied().unwrap_or(0) > 0, "{counts:?}");
    for id in ids {
        let mut run = Value::Null;
        for _ in 0..500 {
            run = client
                .get(format!("{base}/v1/runs/{id}"))
                .bearer_auth(WRITE_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if run["status"] == "done" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(run["status"], "done", "async run {id} was lost: {run}");
        assert_eq!(run["report"]["outcome"], "ok", "{run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_cors_and_readiness() {
    let server = start().await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", server.base)).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert!(doc["paths"]["/v1/runs"]["post"].is_object());
    assert!(doc["components"]["schemas"]["RunReport"].is_object());
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/runs", server.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    assert!(!allowed.headers().contains_key("access-control-allow-credentials"));
    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    assert_eq!(reqwest::get(format!("{}/readyz", server.base)).await.unwrap().status(), 200);
}

#[test]
fn the_remote_kernel_runs_on_a_server_and_reports_unavailability_clearly() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(start_with(|c| c.rate_limit.requests_per_minute = 2));
    let manifest = wasmagent::CapabilityManifest::default()
        .resolve(std::path::Path::new("/"), &wasmagent::ManifestCeilings::default())
        .unwrap();
    let limited = wasmagent::CapabilityManifest { cpu_ms: Some(1000), ..Default::default() }
        .resolve(std::path::Path::new("/"), &wasmagent::ManifestCeilings::default())
        .unwrap();
    let remote = wasmagent_kernel_remote::RemoteKernel::new(&server.base, Some(WRITE_KEY.into())).unwrap();
    let request = RunRequest::source("r.js", wasmagent::Language::Js, "[1, 2].map(x => x * 2)");
    let report = remote.run(&limited, &request).unwrap();
    assert_eq!(report.value, json!([2, 4]), "{report:?}");
    // The server's maximum cpu_ms is 2000: a wider manifest is refused by the server, naming the field.
    let err = remote.run(&manifest, &request).unwrap_err();
    assert!(err.to_string().contains("cpu_ms"), "{err}");
    let report = remote.run(&limited, &request).unwrap();
    assert_eq!(report.error.unwrap().kind, wasmagent::ErrorKind::RateLimited);
    let nowhere = wasmagent_kernel_remote::RemoteKernel::new("http://127.0.0.1:9", None).unwrap();
    let report = nowhere.run(&limited, &request).unwrap();
    assert_eq!(report.error.unwrap().kind, wasmagent::ErrorKind::RemoteUnavailable);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_are_selected_by_kid() {
    let server = start_with(|c| {
        c.auth.jwt_keys = vec![JwtKeyConfig {
            alg: "RS256".into(),
            kid: None,
            secret_env: None,
            secret_file: None,
            public_key_file: None,
            jwks_file: Some(keys_dir().join("jwks.json")),
        }];
    })
    .await;
    let key = EncodingKey::from_rsa_pem(&std::fs::read(keys_dir().join("rsa-private.pem")).unwrap()).unwrap();
    let token = |kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims(), &key).unwrap()
    };
    assert_eq!(post(&server, Some(&token("test-rsa")), js("1")).await.0, 200);
    let (status, _, body) = post(&server, Some(&token("someone-else")), js("1")).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = post(&server, Some(&hs256(&claims())), js("1")).await;
    assert_eq!(status, 401, "no HS256 key is configured any more");
}

/// Polls `check` every 20 ms until it holds, for at most `within`.
async fn eventually<F: std::future::Future<Output = bool>>(within: Duration, mut check: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Sends `head` (and `body_start`) on a raw connection and never the rest; returns what the server answered before
/// it closed the connection (or what came within `within`) and when the answer ended.
async fn stalled_upload(base: &str, head: &str, body_start: &[u8], within: Duration) -> (String, Duration, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_start).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed(), closed)
}

fn upload_head(authorization: Option<&str>, content_length: usize) -> String {
    let auth = authorization.map(|a| format!("Authorization: Bearer {a}\r\n")).unwrap_or_default();
    format!(
        "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {content_length}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_body_gets_408_and_a_closed_connection_within_the_body_timeout() {
    let server = start_with(|c| c.request_body_timeout_ms = 500).await;
    let head = upload_head(Some(WRITE_KEY), 1000);
    let (answer, elapsed, closed) =
        stalled_upload(&server.base, &head, b"{\"language\":", Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?} after {elapsed:?}");
    assert!(answer.contains("request_body_timeout_ms"), "{answer}");
    assert!(closed, "the connection must be closed after the 408");
    assert!(elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3), "answered after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_in_its_headers_or_idles_kept_alive_is_disconnected_within_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_with(|c| c.request_header_timeout_ms = 500).await;
    let window = |elapsed: Duration| elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3);
    // Half a request line, then half the headers: each connection is closed about when the timeout ends.
    for partial in ["POST /v1/ru", "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"] {
        let (answer, elapsed, closed) = stalled_upload(&server.base, partial, b"", Duration::from_secs(10)).await;
        assert!(closed, "{partial:?}: still open after {elapsed:?}");
        assert!(window(elapsed), "{partial:?}: closed after {elapsed:?}");
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{partial:?}: {answer:?}");
    }
    // A whole request is answered, and the connection, kept alive but idle, is closed within the timeout too.
    let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut answered_at = None;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                answered_at.get_or_insert_with(Instant::now);
            }
            Err(_) => break false,
        }
    };
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"status\":\"ok\""), "{answer:?}");
    let idle = answered_at.map(|at| at.elapsed()).unwrap_or_default();
    assert!(closed && window(idle), "the idle kept-alive connection was closed: {closed}, after {idle:?}");
    // Ordinary clients are unaffected.
    let health = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_valid_credentials_is_refused_before_its_body_is_read() {
    let server = start_with(|c| c.request_body_timeout_ms = 30_000).await;
    for authorization in [None, Some("not-a-key")] {
        let head = upload_head(authorization, 60_000);
        let (answer, elapsed, _) = stalled_upload(&server.base, &head, &[b' '; 100], Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{authorization:?}: {answer:?} after {elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{authorization:?}: the 401 took {elapsed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_its_timeout_even_with_a_run_in_flight() {
    let mut server = start_with(|c| {
        c.shutdown_timeout_ms = 300;
        c.max_manifest = CapabilityManifest::from_toml_str("cpu_ms = 4000").unwrap();
    })
    .await;
    let (base, client) = (server.base.clone(), reqwest::Client::new());
    let run = client.post(format!("{base}/v1/runs")).bearer_auth(WRITE_KEY).json(&js("for (;;) {}")).send();
    let _run = tokio::spawn(run);
    let in_flight = eventually(Duration::from_secs(20), || async {
        let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        metrics.contains("wasmagent_runs_in_flight 1")
    })
    .await;
    assert!(in_flight, "the run never started");
    let started = Instant::now();
    let _ = server.stop.take().unwrap().send(());
    server.served.take().unwrap().await.unwrap();
    let elapsed = started.elapsed();
    // The run itself would end at its cpu_ms, 4 s: the server must not wait for it past shutdown_timeout_ms.
    assert!(elapsed < Duration::from_secs(2), "serve returned {elapsed:?} after the signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_paths_outside_the_servers_are_refused_before_they_are_looked_up() {
    let server = start().await;
    let body = json!({ "language": "js", "code": "1", "manifest": { "allowed_read_paths": ["/definitely/not/here"] } });
    let (status, _, body) = post(&server, Some(WRITE_KEY), body).await;
    assert_eq!((status, body["field"].as_str()), (403, Some("allowed_read_paths[0]")), "{body}");
    assert!(!body["message"].as_str().unwrap().contains("cannot be used"), "the path was looked up: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_jwks_keys_and_cors_origins_fail_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut jwks: Value = serde_json::from_slice(&std::fs::read(keys_dir().join("jwks.json")).unwrap()).unwrap();
    let mut broken = jwks["keys"][0].clone();
    broken["kid"] = json!("broken");
    broken["n"] = json!("not base64url!");
    jwks["keys"].as_array_mut().unwrap().push(broken);
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let mut config = config(&dir);
    config.auth.jwt_keys = vec![JwtKeyConfig {
        alg: "RS256".into(),
        kid: None,
        secret_env: None,
        secret_file: None,
        public_key_file: None,
        jwks_file: Some(jwks_file),
    }];
    let error = AppState::new(&config, false).await.err().expect("a JWKS key that cannot be used must fail start-up");
    assert!(error.contains("key 1") && error.contains("\"broken\""), "{error}");

    let mut config = self::config(&dir);
    config.cors_allowed_origins = vec!["https://app.example".into(), "https://app.example/".into()];
    let error = AppState::new(&config, false).await.err().expect("an origin that can never match must fail start-up");
    assert!(error.contains("cors_allowed_origins[1]"), "{error}");

    let mut config = self::config(&dir);
    config.mcp.manifest = Some(CapabilityManifest { allowed_hosts: vec!["example.com".into()], ..Default::default() });
    let error =
        AppState::new(&config, false).await.err().expect("[mcp.manifest] beyond max_manifest must fail start-up");
    assert!(error.contains("mcp.manifest must narrow max_manifest") && error.contains("allowed_hosts"), "{error}");
}

/// Deliveries a receiver got: each one's headers (names in lower case) and JSON body.
type Deliveries = Arc<Mutex<Vec<(Vec<(String, String)>, Value)>>>;

/// A loopback webhook receiver recording each delivery.
fn receiver() -> (String, Deliveries) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap().to_string();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = Vec::new();
            request.as_reader().read_to_end(&mut body).unwrap();
            let headers =
                request.headers().iter().map(|h| (h.field.to_string().to_lowercase(), h.value.to_string())).collect();
            log.lock().unwrap().push((headers, serde_json::from_slice(&body).unwrap_or(Value::Null)));
            let _ = request.respond(tiny_http::Response::from_string("ok"));
        }
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_name_their_run_and_failed_async_runs_are_delivered_with_their_error() {
    let (addr, received) = receiver();
    let server = start_with(|c| {
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        // Any variable of 16 bytes or more will do as the secret; cargo always sets this one for tests.
        c.webhooks.secret_env = Some("CARGO_MANIFEST_DIR".into());
        c.allow_private = vec![addr.clone()];
    })
    .await;
    let mut ids = Vec::new();
    for body in [json!({ "language": "js", "code": "6*7" }), json!({ "language": "wasm", "module": "AAAA" })] {
        let mut body = body;
        body["async"] = json!(true);
        let (status, _, accepted) = post(&server, Some(WRITE_KEY), body).await;
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["id"].as_str().unwrap().to_owned());
    }
    assert!(eventually(Duration::from_secs(30), || async { received.lock().unwrap().len() >= 2 }).await);
    let received = received.lock().unwrap();
    let delivery = |id: &str| {
        received.iter().find(|(_, body)| body["run_id"] == id).unwrap_or_else(|| panic!("no delivery for {id}"))
    };
    for id in &ids {
        let (headers, _) = delivery(id);
        assert!(headers.contains(&("wasmagent-run-id".into(), id.clone())), "{headers:?}");
    }
    let (_, done) = delivery(&ids[0]);
    assert_eq!((done["status"].as_str(), &done["report"]["value"]), (Some("done"), &json!(42)), "{done}");
    let (_, failed) = delivery(&ids[1]);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().unwrap().contains("invalid code"), "{failed}");
}

/// OWASP: ASI09, ASI10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_writes_the_signed_audit_log_including_runs_the_kernel_refused() {
    use wasmagent::signing::keys::SecretKey;
    use wasmagent::signing::record::verify_log;
    let key = SecretKey::generate();
    let server = start_in(tempfile::tempdir().unwrap(), |c, dir| {
        key.write(&dir.join("audit.key")).unwrap();
        c.audit.log = Some(dir.join("audit.jsonl"));
        c.audit.key_file = Some(dir.join("audit.key"));
    })
    .await;
    assert_eq!(post(&server, Some(WRITE_KEY), js("1")).await.0, 200);
    let (status, _, body) = post(&server, Some(WRITE_KEY), json!({ "language": "wasm", "module": "AAAA" })).await;
    assert_eq!(status, 400, "{body}");
    let log = server.dir.path().join("audit.jsonl");
    let verified = verify_log(&log, key.public_key()).unwrap();
    assert_eq!(verified.records, 2);
    let records: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((records[0]["kernel"].as_str(), records[0]["outcome"].as_str()), (Some("js"), Some("ok")));
    assert_eq!((records[1]["kernel"].as_str(), records[1]["outcome"].as_str()), (Some("wasi"), Some("error")));
    assert_eq!(records[1]["error_kind"], "internal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_async_runs_are_bounded_by_bytes() {
    let server = start_with(|c| c.max_stored_run_bytes = 40_000).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut body = js("console.log('x'.repeat(15000)); 1");
        body["async"] = json!(true);
        let (status, _, accepted) = post(&server, Some(WRITE_KEY), body).await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["id"].as_str().unwrap().to_owned();
        let url = format!("{}/v1/runs/{id}", server.base);
        let done = eventually(Duration::from_secs(20), || async {
            let run: Value = client.get(&url).bearer_auth(WRITE_KEY).send().await.unwrap().json().await.unwrap();
            run["status"] == "done"
        })
        .await;
        assert!(done, "run {id} did not finish");
        ids.push(url);
    }
    // Three reports of about 15 kB cannot all fit in 40 kB: the oldest is gone, the newest kept whole.
    let status = |url: &String| client.get(url).bearer_auth(WRITE_KEY).send();
    assert_eq!(status(&ids[0]).await.unwrap().status(), 404);
    let newest: Value = status(&ids[2]).await.unwrap().json().await.unwrap();
    assert!(newest["report"]["stdout"].as_str().unwrap().len() > 15_000, "{newest}");
}

/// `"learn": true`: refused by default; where the operator allows it, the report carries the narrowest manifest
/// within the server's maximum (what lies beyond it is named, not proposed), and a run under it is not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_proposes_a_manifest_within_the_servers_maximum_only_where_the_operator_allows_it() {
    let code = |data: &std::path::Path| {
        format!(
            "def read(p):\n    try:\n        return open(p).read().strip()\n    except OSError as e:\n        \
             return type(e).__name__\n[read({:?}), read('/etc/hostname')]\n",
            data.join("sub/a.txt")
        )
    };
    let server = start().await;
    let body = json!({ "language": "python", "code": "1", "learn": true });
    let (status, _, body) = post(&server, Some(WRITE_KEY), body).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("learn_disabled")), "{body}");

    let server = start_in(tempfile::tempdir().unwrap(), |c, dir| {
        let data = std::fs::canonicalize(dir).unwrap().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("sub/a.txt"), "forty-two").unwrap();
        c.max_manifest.allowed_read_paths = vec![data.display().to_string()];
        c.allow_learn = true;
    })
    .await;
    let data = std::fs::canonicalize(server.dir.path()).unwrap().join("data");
    let body = json!({ "language": "python", "code": code(&data), "learn": true, "async": true });
    assert_eq!(post(&server, Some(WRITE_KEY), body).await.0, 400, "learn is not for async runs");
    let body = json!({ "language": "python", "code": code(&data), "learn": true });
    let (status, _, report) = post(&server, Some(WRITE_KEY), body).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["value"], json!(["FileNotFoundError", "FileNotFoundError"]), "{report}");
    let learn = &report["learn"];
    assert_eq!(learn["manifest"]["allowed_read_paths"], json!([data.join("sub").display().to_string()]), "{learn}");
    assert_eq!(learn["converged"], false);
    assert!(learn["toml"].as_str().unwrap().contains("allowed_read_paths"), "{learn}");
    let refused = learn["refused"].to_string();
    assert!(refused.contains("/etc: above this server's maximum manifest"), "{refused}");

    let body = json!({ "language": "python", "code": code(&data), "manifest": learn["manifest"], "learn": true });
    let (status, _, again) = post(&server, Some(WRITE_KEY), body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["value"], json!(["forty-two", "FileNotFoundError"]), "{again}");
    assert_eq!(again["learn"]["manifest"], learn["manifest"], "nothing more within the maximum: {again}");
}

/// `POST /v1/approvals`: a token with `approvals:write` approves one access for a subject's next run (within the
/// maximum manifest); that run has it (and names the approval), the run after it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_widens_the_subjects_next_run_only() {
    const APPROVER_KEY: &str = "an-approver-key";
    let server = start_in(tempfile::tempdir().unwrap(), |c, dir| {
        let data = std::fs::canonicalize(dir).unwrap().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("sub/a.txt"), "forty-two").unwrap();
        c.max_manifest.allowed_read_paths = vec![data.display().to_string()];
        c.auth.api_keys.push(ApiKeyConfig {
            subject: "approver".into(),
            sha256: sha(APPROVER_KEY),
            scopes: vec!["approvals:write".into()],
        });
    })
    .await;
    let file = std::fs::canonicalize(server.dir.path()).unwrap().join("data/sub/a.txt");
    let read = json!({ "language": "python", "code": format!("open({:?}).read()", file.display().to_string()) });
    let approve = |key: &'static str, body: Value| {
        let url = format!("{}/v1/approvals", server.base);
        async move {
            let response = reqwest::Client::new().post(url).header("x-api-key", key).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let ask = |capability: String| json!({ "subject": "writer", "capability": capability, "reason": "the report" });

    let (_, _, denied) = post(&server, Some(WRITE_KEY), read.clone()).await;
    assert_eq!(denied["denials"][0]["capability"], "fs.read", "{denied}");
    let (status, body) = approve(WRITE_KEY, ask(format!("fs.read {}", file.display()))).await;
    assert_eq!(status, 403, "runs:write cannot approve: {body}");
    let (status, body) = approve(APPROVER_KEY, ask("fs.read /etc/hostname".into())).await;
    assert_eq!(status, 403, "beyond the maximum: {body}");
    let (status, body) = approve(APPROVER_KEY, ask("root please".into())).await;
    assert_eq!(status, 400, "{body}");

    let (status, approval) = approve(APPROVER_KEY, ask(format!("fs.read {}", file.display()))).await;
    assert_eq!(status, 201, "{approval}");
    assert!(approval["id"].as_str().unwrap().starts_with("apr-"));
    assert!(approval["grants"][0].as_str().unwrap().starts_with("adds read access to"), "{approval}");
    let (status, headers, report) = post(&server, Some(WRITE_KEY), read.clone()).await;
    assert_eq!((status, report["value"].as_str()), (200, Some("forty-two")), "{report}");
    assert_eq!(headers["wasmagent-approvals"].to_str().unwrap(), approval["id"].as_str().unwrap());
    let (_, headers, again) = post(&server, Some(WRITE_KEY), read).await;
    assert_eq!(again["denials"][0]["capability"], "fs.read", "used up by one run: {again}");
    assert!(!headers.contains_key("wasmagent-approvals"));
}
