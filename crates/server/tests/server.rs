//! The HTTP service end to end: a real server on loopback, real HTTP clients, real tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
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
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_with(edit: impl FnOnce(&mut ServerConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir);
    edit(&mut config);
    let state = Arc::new(AppState::new(&config, false).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let origins = config.cors_allowed_origins.clone();
    tokio::spawn(async move {
        wasmagent_server::serve(listener, state, &origins, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server { base, stop: Some(stop), _dir: dir }
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
