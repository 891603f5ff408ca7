//! One run's HTTP requests: every hop checked against the manifest's allow-list and the floor, connected to the
//! address that was checked, capped, timed against one deadline per request, and recorded for the run report.
//!
//! What one run can make the host hold here is bounded whatever the guest asks: at most [`MAX_IN_FLIGHT_PER_RUN`]
//! requests of a run are in flight at once, so response bodies buffered for it are at most
//! `MAX_IN_FLIGHT_PER_RUN × max_http_response_bytes`; every request counts against `max_http_requests`, refused
//! ones included, and past that cap requests are refused without being listed; the records kept are at most
//! `REPORT_LISTED_RECORDS` exchanges and denials, each string cut at `REPORT_TEXT_BYTES`.

use crate::config::EgressConfig;
use crate::floor::{self, FloorRefusal};
use crate::resolver::{Resolve, SystemResolver};
use crate::secrets;
use crate::target::{Target, TargetHost};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmagent_kernel::bounds::{REPORT_TEXT_BYTES, RecordList, cut};
use wasmagent_kernel::{Denial, HttpExchange};
use wasmagent_manifest::{EffectiveManifest, HostPattern};

/// Redirects followed per request; one more is refused.
pub const MAX_REDIRECTS: u32 = 5;

/// Longest URL a request (or a redirect's next hop) may have, in bytes; a longer one is refused before it is parsed
/// or copied. Browsers and servers commonly stop at 8 KiB too.
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// Requests of one run in flight at once; more wait for one of them to end (within their own deadline). This bounds
/// the response bodies one run can make the host buffer to `MAX_IN_FLIGHT_PER_RUN × max_http_response_bytes`.
pub const MAX_IN_FLIGHT_PER_RUN: usize = 4;

/// Worker threads of the network runtime every run of an [`Egress`] shares: requests are I/O-bound, so two keep one
/// slow TLS handshake or body copy from delaying every other run's requests, without a thread per core.
const WORKER_THREADS: usize = 2;

/// The egress path shared by every run of a sandbox: operator configuration, resolver and network runtime.
pub struct Egress {
    config: EgressConfig,
    resolver: Arc<dyn Resolve>,
    runtime: Runtime,
}

/// A tokio runtime that may be dropped from any context (servers drop sandboxes inside async code).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A request from guest code.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// `GET`, `POST`, ... (upper-cased by the host).
    pub method: String,
    /// Absolute http or https URL, at most [`MAX_URL_BYTES`].
    pub url: String,
    /// Header names and values, in order. `{{secret:NAME}}` in a value is replaced by the host for bound hosts.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
}

/// The response the guest receives.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The URL of the final response, after redirects.
    pub url: String,
    /// Whether a redirect was followed.
    pub redirected: bool,
    /// Response headers (secret values redacted).
    pub headers: Vec<(String, String)>,
    /// Response body (secret values redacted), at most `max_http_response_bytes`.
    pub body: Vec<u8>,
}

/// Why a request did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    /// True when policy refused the request (it is also in the run's denials); false when it failed on the way
    /// (network, timeout, size cap on the response).
    pub denied: bool,
    /// What the guest is told: `request to URL refused: REASON` or `request to URL failed: REASON` (the URL cut at
    /// `REPORT_TEXT_BYTES`).
    pub message: String,
}

/// What a run's requests left for its report.
#[derive(Debug, Default)]
pub struct EgressRecords {
    /// The first `REPORT_LISTED_RECORDS` requests within `max_http_requests`, in order.
    pub exchanges: Vec<HttpExchange>,
    /// One denial per kind of refusal and host, the first `REPORT_LISTED_RECORDS` of them.
    pub denials: Vec<Denial>,
    /// Requests counted but not listed: past the report bound, or refused past `max_http_requests`.
    pub unlisted_exchanges: u64,
    /// Refusals counted but not listed: unlike every listed denial, once the list is full.
    pub unlisted_denials: u64,
}

/// The HTTP requests of one run. Cheap to clone; clones share the run's counters, records and in-flight places.
#[derive(Clone)]
pub struct EgressSession {
    egress: Arc<Egress>,
    allowed: Arc<[HostPattern]>,
    limits: Limits,
    deadline: Instant,
    in_flight: Arc<Semaphore>,
    state: Arc<Mutex<SessionState>>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_requests: u64,
    max_request_bytes: usize,
    max_response_bytes: usize,
    timeout: Duration,
}

/// A run's request count and its bounded records.
#[derive(Default)]
struct SessionState {
    requests: u64,
    exchanges: RecordList<HttpExchange>,
    denials: RecordList<Denial>,
    /// The kind and host of each listed denial: a refusal like one of them is not listed again.
    denial_keys: Vec<(Refusal, String)>,
}

impl SessionState {
    /// Lists a denial unless one of the same kind to the same host is listed already.
    fn deny(&mut self, refusal: Refusal, host: &str, target: &str, reason: &str) {
        if self.denial_keys.iter().any(|(r, h)| *r == refusal && h == host) {
            return;
        }
        let denial = Denial {
            capability: "net.http".into(),
            target: cut(target, REPORT_TEXT_BYTES),
            reason: cut(reason, REPORT_TEXT_BYTES),
        };
        if self.denials.push(denial) {
            self.denial_keys.push((refusal, host.to_owned()));
        }
    }
}

/// The kinds of refusal; denials are listed once per kind and host, so a loop of refused URLs adds few records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_http_requests` reached.
    RequestCount,
    /// Not a URL a request may use (too long, unparsable, another scheme, credentials, a downgrading redirect).
    Url,
    /// A guest-set `Host` header.
    HostHeader,
    /// A body over `max_http_request_bytes`.
    BodySize,
    /// A host the manifest does not allow.
    NotAllowed,
    /// An address under the floor (or a metadata name).
    Floor,
    /// A secret bound to other hosts.
    Secret,
    /// More than [`MAX_REDIRECTS`] redirects.
    Redirects,
}

/// How a request failed: refused by policy (a denial) or failed on the way (network, caps, timeouts).
pub(crate) enum Failure {
    Denied(Refusal, String),
    Failed(String),
}

/// Where a failure happened, as the records show it: the hop's URL (cut) and host (empty before the URL is parsed).
pub(crate) struct Hop {
    url: String,
    host: String,
}

impl Hop {
    fn of(target: &Target) -> Hop {
        Hop { url: cut(target.url.as_str(), REPORT_TEXT_BYTES), host: cut(&target.host_text(), REPORT_TEXT_BYTES) }
    }
}

impl Egress {
    /// The egress path with the system resolver.
    pub fn new(config: EgressConfig) -> std::io::Result<Arc<Self>> {
        Self::with_resolver(config, Arc::new(SystemResolver))
    }

    /// The egress path with another resolver (for tests, or a resolver of the operator's choosing).
    pub fn with_resolver(config: EgressConfig, resolver: Arc<dyn Resolve>) -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("wasmagent-egress")
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Arc::new(Egress { config, resolver, runtime: Runtime(Some(runtime)) }))
    }

    /// The operator configuration in force.
    pub fn config(&self) -> &EgressConfig {
        &self.config
    }

    /// A session for a run starting now, held to `manifest`: its requests end by the run's `cpu_ms` deadline.
    pub fn run_session(self: &Arc<Self>, manifest: &EffectiveManifest) -> EgressSession {
        self.session(manifest, Instant::now() + Duration::from_millis(manifest.cpu_ms()))
    }

    /// A session for one run held to `manifest`, whose wall-clock deadline is `deadline`.
    pub fn session(self: &Arc<Self>, manifest: &EffectiveManifest, deadline: Instant) -> EgressSession {
        let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        EgressSession {
            egress: self.clone(),
            allowed: manifest.allowed_hosts().into(),
            limits: Limits {
                max_requests: manifest.max_http_requests(),
                max_request_bytes: bytes(manifest.max_http_request_bytes()),
                max_response_bytes: bytes(manifest.max_http_response_bytes()),
                timeout: Duration::from_millis(manifest.http_timeout_ms()),
            },
            deadline,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_RUN)),
            state: Arc::default(),
        }
    }
}

/// Aborts the spawned request when the future awaiting it is dropped, so a guest that drops a response stops the
/// request (its connection and buffered body) instead of leaving it running to its deadline.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A request counted and under way: recorded as cancelled if it is dropped before it ends.
struct Underway<'a> {
    session: &'a EgressSession,
    method: String,
    url: String,
    started: Instant,
    recorded: bool,
}

impl Underway<'_> {
    fn record(&mut self, exchange: impl FnOnce(String, String, f64) -> HttpExchange) {
        let duration_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let exchange = exchange(std::mem::take(&mut self.method), std::mem::take(&mut self.url), duration_ms);
        self.session.lock().exchanges.push(exchange);
        self.recorded = true;
    }
}

impl Drop for Underway<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(|method, url, duration_ms| HttpExchange {
                method,
                url,
                outcome: "error".into(),
                status: None,
                redirects: 0,
                response_bytes: 0,
                duration_ms,
                error: Some("the request was cancelled: its caller stopped waiting for the response".into()),
            });
        }
    }
}

impl EgressSession {
    /// The run's request-body cap (`max_http_request_bytes`).
    pub fn max_request_bytes(&self) -> u64 {
        self.limits.max_request_bytes as u64
    }

    /// Whether the manifest allows any host at all.
    pub fn enabled(&self) -> bool {
        !self.allowed.is_empty()
    }

    /// Runs one request, blocking the calling thread (guest host calls are synchronous).
    pub fn fetch_blocking(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let Some(runtime) = self.egress.runtime.0.as_ref() else {
            return Err(stopped());
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let session = self.clone();
        runtime.spawn(async move {
            let _ = sender.send(session.fetch(request).await);
        });
        receiver.recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Runs one request on the egress runtime, whatever runtime (if any) polls the returned future. Dropping the
    /// future cancels the request.
    pub fn spawn_fetch(
        &self,
        request: HttpRequest,
    ) -> impl std::future::Future<Output = Result<HttpResponse, FetchError>> + Send + 'static {
        let session = self.clone();
        let task =
            self.egress.runtime.0.as_ref().map(|r| AbortOnDrop(r.spawn(async move { session.fetch(request).await })));
        async move {
            match task {
                Some(mut task) => (&mut task.0).await.unwrap_or_else(|_| Err(stopped())),
                None => Err(stopped()),
            }
        }
    }

    /// Runs one request. Every call counts against `max_http_requests` (each redirect hop too), refused or not;
    /// past the cap a call is refused at once and counted in `unlisted_exchanges` only. The whole request (waiting
    /// for an in-flight place, DNS, every redirect, the body) ends by `http_timeout_ms` after the call, or by the
    /// run's deadline if that comes first.
    pub async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let started = Instant::now();
        let shown_url = cut(&request.url, REPORT_TEXT_BYTES);
        if let Err(reason) = self.count_request() {
            let mut state = self.lock();
            state.exchanges.count_unlisted();
            state.deny(Refusal::RequestCount, "", &shown_url, &reason);
            return Err(FetchError { denied: true, message: format!("request to {shown_url} refused: {reason}") });
        }
        let method = cut(&request.method, REPORT_TEXT_BYTES).to_ascii_uppercase();
        let mut underway = Underway { session: self, method, url: shown_url.clone(), started, recorded: false };
        let deadline = started.checked_add(self.limits.timeout).map_or(self.deadline, |end| end.min(self.deadline));
        let mut redirects = 0;
        let outcome = match tokio::time::timeout_at(deadline.into(), self.run(request, &mut redirects)).await {
            Ok(outcome) => outcome,
            Err(_) => Err((self.timed_out(deadline), Hop { url: shown_url.clone(), host: String::new() })),
        };
        match outcome {
            Ok(response) => {
                let (status, response_bytes) = (response.status, response.body.len() as u64);
                underway.record(|method, url, duration_ms| HttpExchange {
                    method,
                    url,
                    outcome: "ok".into(),
                    status: Some(status),
                    redirects,
                    response_bytes,
                    duration_ms,
                    error: None,
                });
                Ok(response)
            }
            Err((failure, hop)) => {
                let (denied, message) = match failure {
                    Failure::Denied(refusal, reason) => {
                        self.lock().deny(refusal, &hop.host, &hop.url, &reason);
                        (true, format!("request to {shown_url} refused: {reason}"))
                    }
                    Failure::Failed(reason) => (false, format!("request to {shown_url} failed: {reason}")),
                };
                let error = cut(&message, REPORT_TEXT_BYTES);
                underway.record(|method, url, duration_ms| HttpExchange {
                    method,
                    url,
                    outcome: if denied { "denied" } else { "error" }.into(),
                    status: None,
                    redirects,
                    response_bytes: 0,
                    duration_ms,
                    error: Some(error),
                });
                Err(FetchError { denied, message })
            }
        }
    }

    /// What the run's requests left for its report (the records are moved out).
    pub fn take_records(&self) -> EgressRecords {
        let mut state = self.lock();
        let (exchanges, unlisted_exchanges) = std::mem::take(&mut state.exchanges).into_parts();
        let (denials, unlisted_denials) = std::mem::take(&mut state.denials).into_parts();
        state.denial_keys.clear();
        EgressRecords { exchanges, denials, unlisted_exchanges, unlisted_denials }
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why a request that reached `deadline` failed: the run's deadline or `http_timeout_ms`.
    fn timed_out(&self, deadline: Instant) -> Failure {
        if deadline >= self.deadline {
            return deadline_passed();
        }
        Failure::Failed(format!(
            "no complete response within http_timeout_ms ({} ms, redirects included)",
            self.limits.timeout.as_millis()
        ))
    }

    /// Checks what needs no network, then waits for an in-flight place and follows the request's redirects.
    async fn run(&self, request: HttpRequest, redirects: &mut u32) -> Result<HttpResponse, (Failure, Hop)> {
        let HttpRequest { method, url, headers, body } = request;
        let early = |failure| (failure, Hop { url: cut(&url, REPORT_TEXT_BYTES), host: String::new() });
        if url.len() > MAX_URL_BYTES {
            let reason = format!("the URL has {} bytes, more than the {MAX_URL_BYTES} a request may have", url.len());
            return Err(early(Failure::Denied(Refusal::Url, reason)));
        }
        if let Some((name, _)) = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")) {
            let reason = format!("the {name} header is set by the host, never by guest code");
            return Err(early(Failure::Denied(Refusal::HostHeader, reason)));
        }
        if body.len() > self.limits.max_request_bytes {
            let reason = format!(
                "the request body is larger than max_http_request_bytes ({} bytes)",
                self.limits.max_request_bytes
            );
            return Err(early(Failure::Denied(Refusal::BodySize, reason)));
        }
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            early(Failure::Failed(format!("{:?} is not a valid method", cut(&method, REPORT_TEXT_BYTES))))
        })?;
        let target = Target::parse(&url).map_err(|r| early(Failure::Denied(Refusal::Url, r)))?;
        let _place = self.in_flight.acquire().await.map_err(|_| early(Failure::Failed(stopped().message)))?;
        self.follow(target, method, headers, body, redirects).await
    }

    /// Follows redirects; on failure also returns the hop that failed.
    async fn follow(
        &self,
        mut target: Target,
        mut method: reqwest::Method,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        redirects: &mut u32,
    ) -> Result<HttpResponse, (Failure, Hop)> {
        let mut body = Some(body);
        loop {
            let hop = |failure| (failure, Hop::of(&target));
            if *redirects > 0 {
                self.count_request().map_err(|r| hop(Failure::Denied(Refusal::RequestCount, r)))?;
            }
            self.check_allowed(&target).map_err(hop)?;
            let sent_headers = secrets::substitute(self.egress.config.secrets(), &headers, &target)
                .map_err(|r| hop(Failure::Denied(Refusal::Secret, r)))?;
            let addresses = self.resolve_checked(&target).await.map_err(hop)?;
            let response = self
                .send(&target, addresses, method.clone(), &sent_headers, body.clone().unwrap_or_default())
                .await
                .map_err(hop)?;
            let location = response.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone());
            match (response.status, location) {
                (301 | 302 | 303 | 307 | 308, Some(location)) => {
                    *redirects += 1;
                    if *redirects > MAX_REDIRECTS {
                        let reason = format!("more than {MAX_REDIRECTS} redirects");
                        return Err(hop(Failure::Denied(Refusal::Redirects, reason)));
                    }
                    let next = redirect_target(&target, &location)?;
                    if response.status == 303
                        || (matches!(response.status, 301 | 302) && method == reqwest::Method::POST)
                    {
                        method = reqwest::Method::GET;
                        body = None;
                    }
                    target = next;
                }
                _ => {
                    let mut response = response;
                    response.redirected = *redirects > 0;
                    secrets::redact(self.egress.config.secrets(), &mut response);
                    return Ok(response);
                }
            }
        }
    }

    /// Counts one request (or redirect hop), or says why `max_http_requests` refuses it.
    fn count_request(&self) -> Result<(), String> {
        let mut state = self.lock();
        if state.requests >= self.limits.max_requests {
            return Err(format!(
                "max_http_requests ({}) reached; the manifest allows no more requests in this run",
                self.limits.max_requests
            ));
        }
        state.requests += 1;
        Ok(())
    }

    fn check_allowed(&self, target: &Target) -> Result<(), Failure> {
        let host = target.host_text();
        if self.allowed.iter().any(|p| p.matches(target.scheme, &host, target.port)) {
            return Ok(());
        }
        let reason = if self.allowed.is_empty() {
            "the manifest allows no network access (allowed_hosts is empty)".to_owned()
        } else {
            format!("{}://{host}:{} is not in allowed_hosts", target.scheme, target.port)
        };
        Err(Failure::Denied(Refusal::NotAllowed, reason))
    }

    /// The addresses this hop may connect to: the host's every address must pass the floor (or an operator
    /// exception), else the request is refused. Names are resolved exactly once, within the request's deadline.
    async fn resolve_checked(&self, target: &Target) -> Result<Vec<SocketAddr>, Failure> {
        let host = target.host_text();
        let ips: Vec<IpAddr> = match &target.host {
            TargetHost::Ip(ip) => vec![*ip],
            TargetHost::Name(name) => {
                if floor::is_metadata_name(name) {
                    return Err(Failure::Denied(
                        Refusal::Floor,
                        format!("{name} is a cloud metadata service, which is never reachable"),
                    ));
                }
                match self.egress.resolver.resolve(name).await {
                    Ok(ips) if !ips.is_empty() => ips,
                    Ok(_) => return Err(Failure::Failed(format!("{name} has no addresses"))),
                    Err(e) => return Err(Failure::Failed(format!("cannot resolve {name}: {e}"))),
                }
            }
        };
        for ip in &ips {
            let refusal = match floor::check(*ip) {
                None => continue,
                Some(FloorRefusal::Private(_)) if self.egress.config.excepts(&host, *ip, target.port) => continue,
                Some(refusal) => refusal,
            };
            let reason = match &target.host {
                TargetHost::Ip(_) => format!("{ip} is {}", refusal.describe()),
                TargetHost::Name(name) => format!("{name} resolves to {ip}: {}", refusal.describe()),
            };
            return Err(Failure::Denied(Refusal::Floor, reason));
        }
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, target.port)).collect())
    }

    /// Sends one hop to exactly `addresses` and reads the body up to the cap (the caller bounds the time).
    async fn send(
        &self,
        target: &Target,
        addresses: Vec<SocketAddr>,
        method: reqwest::Method,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<HttpResponse, Failure> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(Pinned(addresses)))
            .user_agent(concat!("wasmagent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Failed(format!("cannot build the HTTP client: {e}")))?;
        let mut builder = client.request(method, target.url.clone());
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding") {
                continue; // the client frames the body itself
            }
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Failure::Failed(format!("{:?} is not a valid header name", cut(name, 256))))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| Failure::Failed(format!("the value of header {name} is not valid")))?;
            builder = builder.header(name, value);
        }
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let cap = self.limits.max_response_bytes;
        let mut response = builder.send().await.map_err(|e| Failure::Failed(describe(&e)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| Failure::Failed(describe(&e)))? {
            if body.len() + chunk.len() > cap {
                return Err(Failure::Failed(format!(
                    "the response body is larger than max_http_response_bytes ({cap} bytes); it was cut off"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status, url: response.url().to_string(), redirected: false, headers, body })
    }
}

fn stopped() -> FetchError {
    FetchError { denied: false, message: "the network runtime has stopped".into() }
}

/// The next hop of a redirect from `from` to `location`: a valid http(s) URL of at most [`MAX_URL_BYTES`] that does
/// not downgrade https.
pub(crate) fn redirect_target(from: &Target, location: &str) -> Result<Target, (Failure, Hop)> {
    let next = from.url.join(location).map_err(|e| {
        let reason = format!("bad redirect location {:?}: {e}", cut(location, REPORT_TEXT_BYTES));
        (Failure::Failed(reason), Hop::of(from))
    })?;
    let shown = cut(next.as_str(), REPORT_TEXT_BYTES);
    let next_hop = |failure| (failure, Hop { url: shown.clone(), host: String::new() });
    if next.as_str().len() > MAX_URL_BYTES {
        let reason = format!("the redirect's URL has more than the {MAX_URL_BYTES} bytes a request may have");
        return Err(next_hop(Failure::Denied(Refusal::Url, reason)));
    }
    let next = Target::from_url(next).map_err(|r| next_hop(Failure::Denied(Refusal::Url, r)))?;
    if from.scheme == "https" && next.scheme == "http" {
        let reason = "a redirect from https to http would downgrade the connection".into();
        return Err((Failure::Denied(Refusal::Url, reason), Hop::of(&next)));
    }
    Ok(next)
}

fn deadline_passed() -> Failure {
    Failure::Failed("the run's deadline (cpu_ms) passed while waiting for the network".into())
}

/// The causes of a client error, without its first line (which repeats the URL the guest already knows).
fn describe(error: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        causes.push(e.to_string());
        source = e.source();
    }
    if causes.is_empty() { error.to_string() } else { causes.join(": ") }
}

/// Hands the client exactly the addresses that passed the floor, whatever name it asks for.
struct Pinned(Vec<SocketAddr>);

impl reqwest::dns::Resolve for Pinned {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addresses = self.0.clone();
        Box::pin(async move { Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(from: &str, location: &str) -> Result<String, String> {
        let from = Target::parse(from).unwrap();
        redirect_target(&from, location).map(|t| t.url.to_string()).map_err(|(failure, hop)| match failure {
            Failure::Denied(_, r) => format!("denied {}: {r}", hop.url),
            Failure::Failed(r) => format!("failed {}: {r}", hop.url),
        })
    }

    #[test]
    fn redirects_resolve_relative_locations_and_refuse_downgrades() {
        assert_eq!(hop("https://a.example/x/y", "../z").unwrap(), "https://a.example/z");
        assert_eq!(hop("http://a.example/", "https://b.example/").unwrap(), "https://b.example/");
        let err = hop("https://a.example/", "http://a.example/").unwrap_err();
        assert!(err.starts_with("denied http://a.example/") && err.contains("downgrade"), "{err}");
        assert!(hop("https://a.example/", "file:///etc/passwd").unwrap_err().starts_with("denied"));
        assert!(hop("https://a.example/", "https://u:p@b.example/").unwrap_err().contains("credentials"));
    }
}
