//! A real HTTP server on loopback for egress tests (tiny_http), one thread per request.
//!
//! Routes: `/hello`; `/echo` (method, path, query, headers and body as JSON); `/redirect/N` (a chain of N redirects);
//! `/to?u=URL` (one redirect to URL); `/big?n=BYTES`; `/slow` (answers after 3 s); `/reflect-auth` (the
//! Authorization header, in the body and in `x-auth`); `/wait?ms=MS` (answers after MS ms);
//! `/slow-redirect/N?ms=MS` (a chain of N redirects, each answered after MS ms). It counts the requests it received
//! and the most it was answering at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tiny_http::{Header, Response, Server};

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    #[allow(dead_code, reason = "not every test binary counts requests")]
    hits: Arc<AtomicU64>,
    #[allow(dead_code, reason = "not every test binary counts requests")]
    load: Arc<Load>,
}

/// Requests being answered now, and the most at once.
#[derive(Default)]
struct Load {
    active: AtomicU64,
    peak: AtomicU64,
}

impl TestServer {
    pub(crate) fn start() -> TestServer {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind a loopback test server"));
        let addr = server.server_addr().to_ip().expect("an IP listener");
        let hits = Arc::new(AtomicU64::new(0));
        let load = Arc::new(Load::default());
        let (counter, serving) = (hits.clone(), load.clone());
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                counter.fetch_add(1, Ordering::SeqCst);
                let load = serving.clone();
                let now = load.active.fetch_add(1, Ordering::SeqCst) + 1;
                load.peak.fetch_max(now, Ordering::SeqCst);
                std::thread::spawn(move || {
                    // A request stops counting as active before its response is sent: the client can only release
                    // its in-flight place after that, so the peak seen here never exceeds the client's own count
                    // (counting after the response let a loaded machine see the next request first).
                    handle(request, || {
                        load.active.fetch_sub(1, Ordering::SeqCst);
                    });
                });
            }
        });
        TestServer { addr, hits, load }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The pattern and exception that let a manifest reach this server.
    pub(crate) fn host(&self) -> String {
        self.addr.to_string()
    }

    #[allow(dead_code, reason = "not every test binary counts requests")]
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// The most requests this server was answering at once.
    #[allow(dead_code, reason = "not every test binary counts requests")]
    pub(crate) fn peak_load(&self) -> u64 {
        self.load.peak.load(Ordering::SeqCst)
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

/// Answers `request`; `answered` is called just before the response is sent.
fn handle(mut request: tiny_http::Request, answered: impl FnOnce()) {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let param = |name: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('='))).map(percent_decode)
    };
    let response = match path {
        "/hello" => Response::from_string("hello from loopback").with_header(header("x-served-by", "test")),
        "/echo" => {
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let headers: serde_json::Map<String, serde_json::Value> = request
                .headers()
                .iter()
                .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().into()))
                .collect();
            let echo = serde_json::json!({
                "method": request.method().as_str(), "path": path, "query": query, "headers": headers, "body": body,
            });
            Response::from_string(echo.to_string()).with_header(header("content-type", "application/json"))
        }
        "/big" => {
            let n: usize = param("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            Response::from_string("x".repeat(n))
        }
        "/wait" => {
            let ms = param("ms").and_then(|n| n.parse().ok()).unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Response::from_string("waited")
        }
        "/slow" => {
            std::thread::sleep(std::time::Duration::from_secs(3));
            Response::from_string("finally")
        }
        "/reflect-auth" => {
            let auth = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("authorization"))
                .map(|h| h.value.as_str().to_owned())
                .unwrap_or_default();
            Response::from_string(format!("auth={auth}")).with_header(header("x-auth", &auth))
        }
        "/to" => Response::from_string("")
            .with_status_code(302)
            .with_header(header("location", &param("u").unwrap_or_default())),
        _ if path.starts_with("/slow-redirect/") => {
            let ms = param("ms").and_then(|n| n.parse().ok()).unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            match path.trim_start_matches("/slow-redirect/").parse::<u32>() {
                Ok(0) | Err(_) => Response::from_string("arrived"),
                Ok(n) => Response::from_string("")
                    .with_status_code(302)
                    .with_header(header("location", &format!("/slow-redirect/{}?ms={ms}", n - 1))),
            }
        }
        _ => match path.strip_prefix("/redirect/").and_then(|n| n.parse::<u32>().ok()) {
            Some(0) => Response::from_string("arrived"),
            Some(n) => Response::from_string("")
                .with_status_code(302)
                .with_header(header("location", &format!("/redirect/{}", n - 1))),
            None => Response::from_string("not found").with_status_code(404),
        },
    };
    answered();
    let _ = request.respond(response);
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
