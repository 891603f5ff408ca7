//! One run's HTTP requests: every hop checked against the manifest's allow-list and the floor, connected to the
//! address that was checked, capped, timed against the run's deadline, and recorded for the run report.

use crate::config::EgressConfig;
use crate::floor::{self, FloorRefusal};
use crate::resolver::{Resolve, SystemResolver};
use crate::secrets;
use crate::target::{Target, TargetHost};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmagent_kernel::{Denial, HttpExchange};
use wasmagent_manifest::{EffectiveManifest, HostPattern};

/// Redirects followed per request; one more is refused.
pub const MAX_REDIRECTS: u32 = 5;

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
    /// Absolute http or https URL.
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
    /// What the guest is told: `request to URL refused: REASON` or `request to URL failed: REASON`.
    pub message: String,
}

/// What a run's requests left for its report.
#[derive(Debug, Default)]
pub struct EgressRecords {
    /// Every request, in order.
    pub exchanges: Vec<HttpExchange>,
    /// One denial per distinct refusal.
    pub denials: Vec<Denial>,
    /// Requests counted but not listed (past the report bound).
    pub unlisted_exchanges: u64,
    /// Denials counted but not listed (past the report bound).
    pub unlisted_denials: u64,
}

/// The HTTP requests of one run. Cheap to clone; clones share the run's counters and records.
#[derive(Clone)]
pub struct EgressSession {
    egress: Arc<Egress>,
    allowed: Arc<[HostPattern]>,
    limits: Limits,
    deadline: Instant,
    state: Arc<Mutex<EgressRecordsAndCount>>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_requests: u64,
    max_request_bytes: usize,
    max_response_bytes: usize,
    timeout: Duration,
}

#[derive(Default)]
struct EgressRecordsAndCount {
    requests: u64,
    records: EgressRecords,
}

/// How a request failed: refused by policy (a denial) or failed on the way (network, caps, timeouts).
pub(crate) enum Failure {
    Denied(String),
    Failed(String),
}

impl Egress {
    /// The egress path with the system resolver.
    pub fn new(config: EgressConfig) -> std::io::Result<Arc<Self>> {
        Self::with_resolver(config, Arc::new(SystemResolver))
    }

    /// The egress path with another resolver (for tests, or a resolver of the operator's choosing).
    pub fn with_resolver(config: EgressConfig, resolver: Arc<dyn Resolve>) -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
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
            state: Arc::default(),
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
        let stopped = || FetchError { denied: false, message: "the network runtime has stopped".into() };
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

    /// Runs one request on the egress runtime, whatever runtime (if any) polls the returned future.
    pub fn spawn_fetch(
        &self,
        request: HttpRequest,
    ) -> impl std::future::Future<Output = Result<HttpResponse, FetchError>> + Send + 'static {
        let session = self.clone();
        let handle = self.egress.runtime.0.as_ref().map(|r| r.spawn(async move { session.fetch(request).await }));
        async move {
            let stopped = || FetchError { denied: false, message: "the network runtime has stopped".into() };
            match handle {
                Some(handle) => handle.await.unwrap_or_else(|_| Err(stopped())),
                None => Err(stopped()),
            }
        }
    }

    /// Runs one request.
    pub async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let started = Instant::now();
        let method = request.method.to_ascii_uppercase();
        let url = request.url.clone();
        let mut redirects = 0;
        let outcome = self.follow(request, &mut redirects).await;
        let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (result, exchange) = match outcome {
            Ok(response) => {
                let exchange = HttpExchange {
                    method,
                    url,
                    outcome: "ok".into(),
                    status: Some(response.status),
                    redirects,
                    response_bytes: response.body.len() as u64,
                    duration_ms,
                    error: None,
                };
                (Ok(response), exchange)
            }
            Err((failure, target)) => {
                let (denied, message) = match failure {
                    Failure::Denied(reason) => {
                        let denial = Denial { capability: "net.http".into(), target, reason: reason.clone() };
                        if !state.records.denials.contains(&denial) {
                            state.records.denials.push(denial);
                        }
                        (true, format!("request to {url} refused: {reason}"))
                    }
                    Failure::Failed(reason) => (false, format!("request to {url} failed: {reason}")),
                };
                let exchange = HttpExchange {
                    method,
                    url: url.clone(),
                    outcome: if denied { "denied" } else { "error" }.into(),
                    status: None,
                    redirects,
                    response_bytes: 0,
                    duration_ms,
                    error: Some(message.clone()),
                };
                (Err(FetchError { denied, message }), exchange)
            }
        };
        state.records.exchanges.push(exchange);
        result
    }

    /// What the run's requests left for its report (the records are moved out).
    pub fn take_records(&self) -> EgressRecords {
        std::mem::take(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner).records)
    }

    /// Follows redirects; on failure also returns the URL of the hop that failed.
    async fn follow(&self, request: HttpRequest, redirects: &mut u32) -> Result<HttpResponse, (Failure, String)> {
        let HttpRequest { method, url, headers, body } = request;
        let fail = |failure, url: &str| (failure, url.to_owned());
        let mut method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| fail(Failure::Failed(format!("{method:?} is not a valid method")), &url))?;
        if let Some((name, _)) = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")) {
            return Err(fail(
                Failure::Denied(format!("the {name} header is set by the host, never by guest code")),
                &url,
            ));
        }
        if body.len() > self.limits.max_request_bytes {
            let reason = format!(
                "the request body is larger than max_http_request_bytes ({} bytes)",
                self.limits.max_request_bytes
            );
            return Err(fail(Failure::Denied(reason), &url));
        }
        let mut body = Some(body);
        let mut target = Target::parse(&url).map_err(|r| fail(Failure::Denied(r), &url))?;
        loop {
            let hop_url = target.url.to_string();
            self.count_request().map_err(|f| fail(f, &hop_url))?;
            self.check_allowed(&target).map_err(|f| fail(f, &hop_url))?;
            let sent_headers = secrets::substitute(self.egress.config.secrets(), &headers, &target)
                .map_err(|f| fail(Failure::Denied(f), &hop_url))?;
            let addresses = self.resolve_checked(&target).await.map_err(|f| fail(f, &hop_url))?;
            let response = self
                .send(&target, addresses, method.clone(), &sent_headers, body.clone().unwrap_or_default())
                .await
                .map_err(|f| fail(f, &hop_url))?;
            let location = response.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone());
            match (response.status, location) {
                (301 | 302 | 303 | 307 | 308, Some(location)) => {
                    *redirects += 1;
                    if *redirects > MAX_REDIRECTS {
                        let reason = format!("more than {MAX_REDIRECTS} redirects");
                        return Err(fail(Failure::Denied(reason), &hop_url));
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

    fn count_request(&self) -> Result<(), Failure> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.requests >= self.limits.max_requests {
            return Err(Failure::Denied(format!(
                "max_http_requests ({}) reached; the manifest allows no more requests in this run",
                self.limits.max_requests
            )));
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
        Err(Failure::Denied(reason))
    }

    /// The addresses this hop may connect to: the host's every address must pass the floor (or an operator
    /// exception), else the request is refused. Names are resolved exactly once.
    async fn resolve_checked(&self, target: &Target) -> Result<Vec<SocketAddr>, Failure> {
        let host = target.host_text();
        let ips: Vec<IpAddr> = match &target.host {
            TargetHost::Ip(ip) => vec![*ip],
            TargetHost::Name(name) => {
                if floor::is_metadata_name(name) {
                    return Err(Failure::Denied(format!(
                        "{name} is a cloud metadata service, which is never reachable"
                    )));
                }
                let remaining = self.remaining().ok_or_else(deadline_passed)?;
                match tokio::time::timeout(remaining.min(self.limits.timeout), self.egress.resolver.resolve(name)).await
                {
                    Ok(Ok(ips)) if !ips.is_empty() => ips,
                    Ok(Ok(_)) => return Err(Failure::Failed(format!("{name} has no addresses"))),
                    Ok(Err(e)) => return Err(Failure::Failed(format!("cannot resolve {name}: {e}"))),
                    Err(_) => return Err(Failure::Failed(format!("resolving {name} timed out"))),
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
            return Err(Failure::Denied(reason));
        }
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, target.port)).collect())
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Sends one hop to exactly `addresses` and reads the body up to the cap, all within the timeout.
    async fn send(
        &self,
        target: &Target,
        addresses: Vec<SocketAddr>,
        method: reqwest::Method,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<HttpResponse, Failure> {
        let remaining = self.remaining().ok_or_else(deadline_passed)?;
        let timeout = remaining.min(self.limits.timeout);
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
                .map_err(|_| Failure::Failed(format!("{name:?} is not a valid header name")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| Failure::Failed(format!("the value of header {name} is not valid")))?;
            builder = builder.header(name, value);
        }
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let cap = self.limits.max_response_bytes;
        let exchange = async move {
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
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) if timeout < self.limits.timeout => Err(deadline_passed()),
            Err(_) => Err(Failure::Failed(format!(
                "no complete response within http_timeout_ms ({} ms)",
                self.limits.timeout.as_millis()
            ))),
        }
    }
}

/// The next hop of a redirect from `from` to `location`: a valid http(s) URL that does not downgrade https.
pub(crate) fn redirect_target(from: &Target, location: &str) -> Result<Target, (Failure, String)> {
    let next = from
        .url
        .join(location)
        .map_err(|e| (Failure::Failed(format!("bad redirect location {location:?}: {e}")), from.url.to_string()))?;
    let next_url = next.to_string();
    let next = Target::from_url(next).map_err(|r| (Failure::Denied(r), next_url.clone()))?;
    if from.scheme == "https" && next.scheme == "http" {
        let reason = "a redirect from https to http would downgrade the connection".into();
        return Err((Failure::Denied(reason), next_url));
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
        redirect_target(&from, location).map(|t| t.url.to_string()).map_err(|(failure, url)| match failure {
            Failure::Denied(r) => format!("denied {url}: {r}"),
            Failure::Failed(r) => format!("failed {url}: {r}"),
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
