//! The egress proxy every browser connection must use: one listener on `127.0.0.1:<ephemeral>` per run (its
//! browser context is created with this proxy), so the proxy knows whose policy a connection is held to.
//!
//! For each `CONNECT host:port` (https, wss) or absolute-form `http://` request it counts the request against
//! `max_http_requests`, checks the host with [`wasmagent_egress::check_destination`] (allow-list, names resolved
//! once with the egress resolver, the address floor, operator exceptions), connects to exactly the checked
//! addresses, relays bytes within the size caps and the time limit, and records the exchange or the refusal for the
//! run report. Plain-HTTP requests are forwarded one per connection (`Connection: close`), so a request to one host
//! can never be sent down a connection checked for another.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use wasmagent_egress::{EgressConfig, Resolve, check_destination};
use wasmagent_kernel::bounds::{REPORT_TEXT_BYTES, RecordList, cut};
use wasmagent_kernel::{Denial, HttpExchange};
use wasmagent_manifest::{EffectiveManifest, HostPattern};
use wasmagent_tools::RunRecords;

/// Longest request head (request line and headers) the proxy reads.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Connections of one run's browser open through the proxy at once; more wait for a place (within their deadline).
const MAX_CONNECTIONS_PER_RUN: usize = 64;

/// A connection in progress to the checked addresses.
pub type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// How the proxy opens a connection to the addresses a destination was checked to have. The real one is TCP
/// ([`TcpConnect`]); tests put a recorder in its place, so a refusal is proven without any socket being opened.
pub trait Connect: Send + Sync + 'static {
    /// A connection to one of `addresses` (tried in order), which passed the egress check.
    fn connect(&self, addresses: Vec<SocketAddr>) -> Connecting;
}

/// Connects over TCP to the first of the addresses that answers.
#[derive(Debug, Default)]
pub struct TcpConnect;

impl Connect for TcpConnect {
    fn connect(&self, addresses: Vec<SocketAddr>) -> Connecting {
        Box::pin(async move {
            let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to connect to");
            for address in addresses {
                match TcpStream::connect(address).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }
}

/// What the proxy needs from the operator, shared by every run: exceptions to the floor, the resolver, the
/// connector.
#[derive(Clone)]
pub(crate) struct ProxyEnv {
    pub(crate) config: Arc<EgressConfig>,
    pub(crate) resolver: Arc<dyn Resolve>,
    pub(crate) connector: Arc<dyn Connect>,
}

/// One run's policy and records, as its proxy holds them.
pub(crate) struct RunPolicy {
    env: ProxyEnv,
    allowed: Vec<HostPattern>,
    max_requests: u64,
    max_request_bytes: u64,
    max_response_bytes: u64,
    timeout: Duration,
    deadline: Instant,
    state: Mutex<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    requests: u64,
    exchanges: RecordList<HttpExchange>,
    denials: RecordList<Denial>,
    /// Host and reason of each listed denial: the same refusal is listed once.
    denial_keys: Vec<(String, String)>,
    /// Problems (refusals and failures to connect) so far, and the latest one: a failed navigation says why.
    problems: u64,
    last_problem: Option<Problem>,
}

/// Why a request through the proxy did not get through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Refused by policy (else it failed: a name that does not resolve, a connection refused).
    pub(crate) denied: bool,
    /// What the request was (`host:port` or the URL).
    pub(crate) target: String,
    pub(crate) reason: String,
}

impl RunPolicy {
    /// The policy of a run held to `manifest` with wall-clock deadline `deadline`.
    pub(crate) fn new(env: ProxyEnv, manifest: &EffectiveManifest, deadline: Instant) -> Self {
        RunPolicy {
            env,
            allowed: manifest.allowed_hosts().to_vec(),
            max_requests: manifest.max_http_requests(),
            max_request_bytes: manifest.max_http_request_bytes(),
            max_response_bytes: manifest.max_http_response_bytes(),
            timeout: Duration::from_millis(manifest.http_timeout_ms()),
            deadline,
            state: Mutex::default(),
        }
    }

    /// A policy that refuses everything: the browser-wide proxy, for traffic outside any run's context.
    pub(crate) fn refuse_all(env: ProxyEnv) -> Self {
        RunPolicy {
            env,
            allowed: Vec::new(),
            max_requests: 0,
            max_request_bytes: 0,
            max_response_bytes: 0,
            timeout: Duration::from_secs(1),
            deadline: Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request against `max_http_requests`; past it the request is refused.
    fn count(&self) -> Result<(), String> {
        let mut state = self.lock();
        state.requests += 1;
        if state.requests > self.max_requests {
            return Err(format!(
                "max_http_requests ({}) reached; the manifest allows no more requests in this run",
                self.max_requests
            ));
        }
        Ok(())
    }

    fn record(&self, exchange: HttpExchange) {
        self.lock().exchanges.push(exchange);
    }

    fn problem(&self, denied: bool, target: &str, reason: &str) {
        let mut state = self.lock();
        state.problems += 1;
        state.last_problem =
            Some(Problem { denied, target: cut(target, REPORT_TEXT_BYTES), reason: cut(reason, REPORT_TEXT_BYTES) });
    }

    fn deny(&self, host: &str, target: &str, reason: &str) {
        self.problem(true, target, reason);
        let mut state = self.lock();
        let key = (cut(host, REPORT_TEXT_BYTES), cut(reason, REPORT_TEXT_BYTES));
        if state.denial_keys.contains(&key) {
            return;
        }
        let denial =
            Denial { capability: "net.http".into(), target: cut(target, REPORT_TEXT_BYTES), reason: key.1.clone() };
        if state.denials.push(denial) {
            state.denial_keys.push(key);
        }
    }

    /// Records a refusal decided outside the proxy (a navigation to a URL no request may use).
    pub(crate) fn deny_url(&self, url: &str, reason: &str) {
        self.deny("", url, reason);
    }

    /// How many problems there have been so far (to ask later whether there were new ones).
    pub(crate) fn problems(&self) -> u64 {
        self.lock().problems
    }

    /// The latest problem, if there were any after the first `seen`.
    pub(crate) fn problem_since(&self, seen: u64) -> Option<Problem> {
        let state = self.lock();
        if state.problems > seen { state.last_problem.clone() } else { None }
    }

    /// The records for the run report (taken once; the policy keeps nothing after).
    pub(crate) fn take_records(&self) -> RunRecords {
        let mut state = self.lock();
        let (http_requests, unlisted_http_requests) = std::mem::take(&mut state.exchanges).into_parts();
        let (denials, unlisted_denials) = std::mem::take(&mut state.denials).into_parts();
        RunRecords { http_requests, unlisted_http_requests, denials, unlisted_denials, images: Vec::new() }
    }

    /// When a connection opened now must be closed: `http_timeout_ms` later, or at the run's deadline.
    fn connection_deadline(&self) -> Instant {
        self.deadline.min(Instant::now() + self.timeout)
    }
}

/// A running proxy: its port, and the signal that stops it and every connection it relays.
pub(crate) struct Proxy {
    port: u16,
    stop: watch::Sender<bool>,
}

impl Proxy {
    /// Starts a proxy for `policy` on `127.0.0.1:<ephemeral>` on the current runtime.
    pub(crate) async fn start(policy: Arc<RunPolicy>) -> io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept(listener, policy, stopped));
        Ok(Proxy { port, stop })
    }

    /// `http://127.0.0.1:PORT`, as Chromium's proxy settings take it.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Stops accepting, and ends every connection in flight: nothing of the run is relayed after it ends.
        let _ = self.stop.send(true);
    }
}

async fn accept(listener: TcpListener, policy: Arc<RunPolicy>, mut stopped: watch::Receiver<bool>) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_RUN));
    loop {
        let client = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        let (policy, places, mut stopped) = (policy.clone(), places.clone(), stopped.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => {}
                _ = serve(&policy, &places, client) => {}
            }
        });
    }
}

/// One proxy connection: at most one plain-HTTP request, or one tunnel.
async fn serve(policy: &RunPolicy, places: &Semaphore, mut client: TcpStream) {
    let deadline = policy.connection_deadline();
    let Ok(Ok(_place)) = tokio::time::timeout_at(deadline.into(), places.acquire()).await else {
        return;
    };
    let started = Instant::now();
    let mut exchange = Exchange::default();
    let finished = tokio::time::timeout_at(deadline.into(), relay(policy, &mut client, &mut exchange)).await;
    let Some(shown) = exchange.url.take() else {
        return; // nothing that names a destination arrived
    };
    let error = match finished {
        Ok(outcome) => outcome.err(),
        Err(_) => Some(if deadline >= policy.deadline {
            "the run's deadline (cpu_ms) passed while the browser's request was open".into()
        } else {
            format!(
                "the request was still open after http_timeout_ms ({} ms) and was closed",
                policy.timeout.as_millis()
            )
        }),
    };
    policy.record(HttpExchange {
        method: exchange.method,
        url: shown,
        outcome: if exchange.denied {
            "denied"
        } else if error.is_some() {
            "error"
        } else {
            "ok"
        }
        .into(),
        status: exchange.status,
        redirects: 0,
        response_bytes: exchange.response_bytes.load(Ordering::Relaxed),
        duration_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        error: error.map(|e| cut(&e, REPORT_TEXT_BYTES)),
    });
}

/// What one connection did, filled in as it goes (so a connection cut at its deadline is still recorded).
#[derive(Default)]
struct Exchange {
    method: String,
    url: Option<String>,
    status: Option<u16>,
    denied: bool,
    response_bytes: AtomicU64,
}

/// Where a request goes, as the head named it.
struct Request {
    method: String,
    host: String,
    port: u16,
    /// `CONNECT`: a tunnel that may carry http or https (and WebSockets); else one plain-HTTP request whose head,
    /// rewritten to origin form, is this.
    forward: Option<Forward>,
}

struct Forward {
    head: Vec<u8>,
    body_bytes: u64,
}

async fn relay(policy: &RunPolicy, client: &mut TcpStream, exchange: &mut Exchange) -> Result<(), String> {
    let (head, rest) = match read_head(client).await {
        Ok(read) => read,
        Err(reason) => {
            let _ = respond(client, 400, &reason).await;
            return Err(reason);
        }
    };
    let request = match parse_head(&head) {
        Ok(request) => request,
        Err((shown, reason)) => {
            exchange.url = shown;
            if let Some(url) = &exchange.url {
                exchange.denied = true;
                policy.deny("", url, &reason);
            }
            let _ = respond(client, 400, &reason).await;
            return Err(reason);
        }
    };
    let shown = match &request.forward {
        None => format!("{}:{}", request.host, request.port),
        Some(_) => cut(&String::from_utf8_lossy(request_target(&head)), REPORT_TEXT_BYTES),
    };
    exchange.method = request.method.clone();
    exchange.url = Some(shown.clone());
    let refuse = |exchange: &mut Exchange, host: &str, reason: String| {
        exchange.denied = true;
        policy.deny(host, &shown, &reason);
        reason
    };
    let tunnel = request.forward.is_none();
    if let Err(reason) = policy.count() {
        let reason = refuse(exchange, "", reason);
        let _ = refuse_with(client, tunnel, 403, &reason).await;
        return Err(reason);
    }
    if let Some(forward) = &request.forward
        && forward.body_bytes > policy.max_request_bytes
    {
        let reason = format!(
            "the request body is {} bytes; max_http_request_bytes is {}",
            forward.body_bytes, policy.max_request_bytes
        );
        let reason = refuse(exchange, &request.host, reason);
        let _ = refuse_with(client, tunnel, 413, &reason).await;
        return Err(reason);
    }
    let schemes: &[&str] = if request.forward.is_some() { &["http"] } else { &["https", "http"] };
    let env = &policy.env;
    let checked =
        check_destination(&env.config, env.resolver.as_ref(), &policy.allowed, schemes, &request.host, request.port)
            .await;
    let destination = match checked {
        Ok(destination) => destination,
        Err(e) if e.denied => {
            let reason = refuse(exchange, &request.host, e.reason);
            let _ = refuse_with(client, tunnel, 403, &reason).await;
            return Err(reason);
        }
        Err(e) => {
            policy.problem(false, &shown, &e.reason);
            let _ = respond(client, 502, &e.reason).await;
            return Err(e.reason);
        }
    };
    let mut upstream = match env.connector.connect(destination.addresses).await {
        Ok(upstream) => upstream,
        Err(e) => {
            let reason = format!("cannot connect to {}:{}: {e}", destination.host, destination.port);
            policy.problem(false, &shown, &reason);
            let _ = respond(client, 502, &reason).await;
            return Err(reason);
        }
    };
    match request.forward {
        None => {
            exchange.status = Some(200);
            client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await.map_err(|e| e.to_string())?;
            upstream.write_all(&rest).await.map_err(|e| e.to_string())?;
            let (mut client_read, mut client_write) = client.split();
            let (mut upstream_read, mut upstream_write) = upstream.split();
            let sent = AtomicU64::new(rest.len() as u64);
            tokio::try_join!(
                pump(&mut client_read, &mut upstream_write, policy.max_request_bytes, &sent, "max_http_request_bytes"),
                pump(
                    &mut upstream_read,
                    &mut client_write,
                    policy.max_response_bytes,
                    &exchange.response_bytes,
                    "max_http_response_bytes"
                ),
            )?;
            Ok(())
        }
        Some(forward) => {
            upstream.write_all(&forward.head).await.map_err(|e| e.to_string())?;
            let in_head = rest.len().min(usize::try_from(forward.body_bytes).unwrap_or(usize::MAX));
            upstream.write_all(&rest[..in_head]).await.map_err(|e| e.to_string())?;
            let remaining = forward.body_bytes - in_head as u64;
            let copied =
                tokio::io::copy(&mut (&mut *client).take(remaining), &mut upstream).await.map_err(|e| e.to_string())?;
            if copied < remaining {
                return Err("the browser closed the connection before sending the whole request body".into());
            }
            let (_, mut client_write) = client.split();
            let (mut upstream_read, _) = upstream.split();
            let mut first = vec![0; 16 * 1024];
            let n = upstream_read.read(&mut first).await.map_err(|e| e.to_string())?;
            exchange.status = status_of(&first[..n]);
            exchange.response_bytes.store(n as u64, Ordering::Relaxed);
            client_write.write_all(&first[..n]).await.map_err(|e| e.to_string())?;
            if n > 0 {
                pump(
                    &mut upstream_read,
                    &mut client_write,
                    policy.max_response_bytes,
                    &exchange.response_bytes,
                    "max_http_response_bytes",
                )
                .await?;
            }
            Ok(())
        }
    }
}

/// Copies `from` to `to` until `from` ends, counting into `total`; more than `cap` bytes ends the connection.
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    cap: u64,
    total: &AtomicU64,
    cap_name: &str,
) -> Result<(), String> {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let n = from.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        if total.fetch_add(n as u64, Ordering::Relaxed) + n as u64 > cap {
            return Err(format!("more than {cap_name} ({cap} bytes) went through one connection; it was closed"));
        }
        to.write_all(&buffer[..n]).await.map_err(|e| e.to_string())?;
    }
}

/// The request head (up to and including the blank line) and whatever arrived after it.
async fn read_head(client: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0; 4096];
    loop {
        let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before a request arrived".into());
        }
        let searched_from = buffer.len().saturating_sub(3);
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = buffer[searched_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = searched_from + end + 4;
            let rest = buffer.split_off(end);
            return Ok((buffer, rest));
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(format!("the request head is longer than {MAX_HEAD_BYTES} bytes"));
        }
    }
}

/// The request target of a head (what follows the method), as sent.
fn request_target(head: &[u8]) -> &[u8] {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.splitn(3, |&b| b == b' ');
    parts.nth(1).unwrap_or_default()
}

/// Reads a request head: `CONNECT host:port` or an absolute `http://` URL. An error carries the URL to record, when
/// the head named one, and the reason.
fn parse_head(head: &[u8]) -> Result<Request, (Option<String>, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err((None, "not an HTTP request".into())),
    }
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err((None, "not an HTTP request".into()));
    };
    let shown = Some(cut(target, REPORT_TEXT_BYTES));
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = target
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or((shown, "CONNECT needs host:port".to_owned()))?;
        return Ok(Request { method: "CONNECT".into(), host: host.to_owned(), port, forward: None });
    }
    let url = url::Url::parse(target).map_err(|e| (shown.clone(), format!("not a URL the proxy can forward: {e}")))?;
    if url.scheme() != "http" {
        let reason = format!("the {}: scheme is not allowed; only http and https", url.scheme());
        return Err((shown, reason));
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err((shown, "the URL has no host".into()));
    };
    let mut body_bytes = 0;
    let mut forwarded =
        format!("{method} {} HTTP/1.1\r\n", &url[url::Position::BeforePath..url::Position::AfterQuery]).into_bytes();
    for header in parsed.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        match name.as_str() {
            "transfer-encoding" => {
                return Err((shown, "chunked request bodies cannot go through the browser's proxy".into()));
            }
            "content-length" => {
                body_bytes = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or((shown.clone(), "the Content-Length header is not a number".to_owned()))?;
            }
            "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive" | "upgrade" | "te" => continue,
            _ => {}
        }
        forwarded.extend_from_slice(header.name.as_bytes());
        forwarded.extend_from_slice(b": ");
        forwarded.extend_from_slice(header.value);
        forwarded.extend_from_slice(b"\r\n");
    }
    forwarded.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Request {
        method: method.to_ascii_uppercase(),
        host: host.to_owned(),
        port,
        forward: Some(Forward { head: forwarded, body_bytes }),
    })
}

/// The status code of a response whose first bytes are `start`.
fn status_of(start: &[u8]) -> Option<u16> {
    let line = start.split(|&b| b == b'\r').next()?;
    let code = line.split(|&b| b == b' ').nth(1)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Answers a refused request. A tunnel gets an error status (Chromium reports the tunnel failed); a plain-HTTP
/// request gets its connection closed with no response, so that a refusal is a network error for the page and for
/// `browser.navigate` rather than a page of the proxy's that the browser would show as the site's.
async fn refuse_with(client: &mut TcpStream, tunnel: bool, status: u16, reason: &str) -> io::Result<()> {
    if tunnel { respond(client, status, reason).await } else { client.shutdown().await }
}

async fn respond(client: &mut TcpStream, status: u16, reason: &str) -> io::Result<()> {
    let text = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        413 => "Content Too Large",
        _ => "Bad Gateway",
    };
    let body = format!("wasmagent egress: {}\n", cut(reason, REPORT_TEXT_BYTES));
    let response = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use wasmagent_egress::StaticResolver;
    use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};

    /// Records the addresses it is asked to connect to and opens nothing.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<SocketAddr>>>);

    impl Connect for Recorder {
        fn connect(&self, addresses: Vec<SocketAddr>) -> Connecting {
            self.0.lock().unwrap().push(addresses);
            Box::pin(async { Err(io::Error::other("the recorder opens no connection")) })
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// A proxy whose resolver knows a public, a private and a metadata name, allowed to reach them all.
    async fn proxy(recorder: Arc<Recorder>) -> (Proxy, Arc<RunPolicy>) {
        let resolver = StaticResolver::new()
            .answer("public.test", vec![vec![ip("93.184.216.34")], vec![ip("10.0.0.1")]])
            .answer("private.test", vec![vec![ip("10.1.2.3")]])
            .answer("metadata.test", vec![vec![ip("169.254.169.254")]])
            .answer("mixed.test", vec![vec![ip("93.184.216.34"), ip("192.168.1.1")]]);
        let env = ProxyEnv { config: Arc::default(), resolver: Arc::new(resolver), connector: recorder };
        let manifest = CapabilityManifest {
            allowed_hosts: ["*.test", "169.254.169.254", "10.1.2.3", "[fd00:ec2::254]", "100.100.100.200"]
                .map(String::from)
                .to_vec(),
            max_http_requests: Some(20),
            ..Default::default()
        }
        .resolve(std::path::Path::new("/"), &ManifestCeilings { allow_any_public_host: true, ..Default::default() })
        .unwrap();
        let policy = Arc::new(RunPolicy::new(env, &manifest, Instant::now() + Duration::from_secs(30)));
        (Proxy::start(policy.clone()).await.unwrap(), policy)
    }

    async fn ask(proxy: &Proxy, head: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn metadata_and_private_destinations_are_refused_before_any_connection() {
        let recorder = Arc::new(Recorder::default());
        let (proxy, policy) = proxy(recorder.clone()).await;
        for head in [
            "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
            "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
            "CONNECT metadata.test:443 HTTP/1.1\r\n\r\n",
            "CONNECT metadata.google.internal:80 HTTP/1.1\r\n\r\n",
            "CONNECT [fd00:ec2::254]:80 HTTP/1.1\r\n\r\n",
            "CONNECT 100.100.100.200:80 HTTP/1.1\r\n\r\n",
            "CONNECT private.test:443 HTTP/1.1\r\n\r\n",
            "CONNECT 10.1.2.3:443 HTTP/1.1\r\n\r\n",
            "CONNECT mixed.test:443 HTTP/1.1\r\n\r\n",
            "CONNECT 0x7f.1:443 HTTP/1.1\r\n\r\n",
            "CONNECT elsewhere.example:443 HTTP/1.1\r\n\r\n",
            "GET ftp://public.test/ HTTP/1.1\r\n\r\n",
            "GET file:///etc/passwd HTTP/1.1\r\n\r\n",
        ] {
            let answer = ask(&proxy, head).await;
            let refused = match head.starts_with("CONNECT") {
                true => answer.starts_with("HTTP/1.1 403"),
                false => answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            };
            assert!(refused, "{head}: {answer}");
        }
        assert!(recorder.0.lock().unwrap().is_empty(), "a refused destination reached the connect step");
        let records = policy.take_records();
        assert!(records.denials.len() >= 11, "{:?}", records.denials);
        assert!(records.denials.iter().all(|d| d.capability == "net.http"));
        let reasons: Vec<_> = records.denials.iter().map(|d| d.reason.as_str()).collect();
        assert!(reasons.iter().filter(|r| r.contains("metadata")).count() >= 5, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("private.test resolves to 10.1.2.3")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("mixed.test resolves to 192.168.1.1")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("not in allowed_hosts")), "{reasons:?}");
        assert!(records.http_requests.iter().all(|e| e.outcome == "denied"));
    }

    #[tokio::test]
    async fn an_allowed_name_is_resolved_once_and_connected_to_the_checked_address() {
        let recorder = Arc::new(Recorder::default());
        let (proxy, policy) = proxy(recorder.clone()).await;
        // The resolver answers a private address on a second lookup (DNS rebinding): there is none.
        let answer = ask(&proxy, "CONNECT public.test:443 HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        let answer = ask(&proxy, "GET http://public.test:8080/x?y=1 HTTP/1.1\r\nHost: public.test:8080\r\n\r\n").await;
        assert!(answer.is_empty(), "the second lookup rebinds to 10.0.0.1: {answer}");
        let connects = recorder.0.lock().unwrap().clone();
        assert_eq!(connects, [vec!["93.184.216.34:443".parse::<SocketAddr>().unwrap()]]);
        let records = policy.take_records();
        assert_eq!(records.http_requests.len(), 2);
        assert_eq!(records.http_requests[0].url, "public.test:443");
        assert_eq!(records.http_requests[0].outcome, "error");
        assert_eq!(records.http_requests[1].url, "http://public.test:8080/x?y=1");
    }

    #[tokio::test]
    async fn requests_past_max_http_requests_are_refused() {
        let recorder = Arc::new(Recorder::default());
        let (proxy, policy) = proxy(recorder.clone()).await;
        for _ in 0..25 {
            ask(&proxy, "CONNECT elsewhere.example:443 HTTP/1.1\r\n\r\n").await;
        }
        let answer = ask(&proxy, "CONNECT public.test:443 HTTP/1.1\r\n\r\n").await;
        assert!(answer.contains("max_http_requests (20)"), "{answer}");
        assert!(recorder.0.lock().unwrap().is_empty());
        let records = policy.take_records();
        assert_eq!(records.http_requests.len(), 26);
    }

    #[test]
    fn heads_are_parsed_and_rewritten_to_origin_form() {
        let head = b"POST http://a.test:81/p?q HTTP/1.1\r\nHost: a.test:81\r\nProxy-Connection: keep-alive\r\n\
                     Content-Length: 3\r\n\r\n";
        let request = parse_head(head).unwrap_or_else(|(_, e)| panic!("{e}"));
        assert_eq!((request.host.as_str(), request.port), ("a.test", 81));
        let forward = request.forward.unwrap();
        assert_eq!(forward.body_bytes, 3);
        let text = String::from_utf8(forward.head).unwrap();
        assert_eq!(text, "POST /p?q HTTP/1.1\r\nHost: a.test:81\r\nContent-Length: 3\r\nConnection: close\r\n\r\n");
        let tunnel = parse_head(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n").unwrap_or_else(|(_, e)| panic!("{e}"));
        assert_eq!((tunnel.host.as_str(), tunnel.port), ("[::1]", 443));
        assert!(parse_head(b"GET http://a.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert_eq!(status_of(b"HTTP/1.1 404 Not Found\r\n"), Some(404));
    }
}
