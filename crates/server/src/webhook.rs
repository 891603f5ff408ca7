//! Signed webhooks: the server tells receivers a run finished by POSTing its result, and receivers check that the
//! request came from this server.
//!
//! Every request carries `Wasmagent-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, a
//! random `Wasmagent-Delivery` id that stays the same across the retries of one delivery, and `Wasmagent-Run-Id`,
//! the run it is about. Receivers call [`verify`] (the signature and its time window) and keep a [`ReplayGuard`]
//! (ids already seen).
//!
//! [`Webhooks`] delivers through the egress path ([`wasmagent_egress`]), held to a manifest that allows exactly the
//! receiver's `scheme://host:port`, so a webhook URL can never reach a private or metadata address unless the
//! operator's [`EgressConfig`](wasmagent_egress::EgressConfig) excepts it. Failed deliveries are retried with
//! exponential backoff and end, after the last attempt, in a bounded in-memory dead-letter list. Deliveries in
//! flight are bounded too ([`WebhookConfig::max_pending`]): one past the bound is not sent and goes straight to the
//! dead letters, saying why, so a receiver that is down cannot make the server hold an unbounded backlog of bodies.
//! Nothing is persisted: deliveries still in flight when the process stops are lost, unless the server is part of a
//! cluster (`[cluster]`), where deliveries, retries and dead letters live in Redis (`crate::cluster`).

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subtle::{Choice, ConstantTimeEq};
use wasmagent::manifest::{ByteSize, CapabilityManifest, EffectiveManifest, ManifestCeilings};
use wasmagent_egress::{Egress, HttpRequest};

/// The header that carries the timestamp and the signatures.
pub const SIGNATURE_HEADER: &str = "Wasmagent-Signature";
/// The header that carries the delivery id, the same for every attempt of one delivery.
pub const DELIVERY_HEADER: &str = "Wasmagent-Delivery";
/// The header that names the run a delivery is about (not covered by the signature; the body carries it too).
pub const RUN_ID_HEADER: &str = "Wasmagent-Run-Id";
/// How far a signature's timestamp may be from the receiver's clock, in either direction, by default.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// Attempts per delivery by default (the first one included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Wait before the first retry by default; it doubles for each further retry.
pub const DEFAULT_BASE_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts by default.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest one attempt may take by default (connect to last response byte).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest secret accepted by [`Webhooks::new`]: a shorter HMAC key could be guessed.
pub const MIN_SECRET_BYTES: usize = 16;
/// Dead letters kept; older ones are dropped first.
pub const DEAD_LETTER_CAPACITY: usize = 1000;
/// Deliveries in flight at most by default.
pub const DEFAULT_MAX_PENDING: usize = 1000;

/// Receivers' answers are read only to be discarded; a bigger one fails the attempt.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Longest delivery id a [`ReplayGuard`] remembers (ours have 32 characters).
const MAX_DELIVERY_ID_LEN: usize = 128;
/// Hex digits of an HMAC-SHA256 signature.
const SIGNATURE_HEX_LEN: usize = 64;

/// Why a webhook request was refused by its receiver's checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature header does not follow `t=<unix seconds>,v1=<64 hex digits>[,v1=...]`.
    #[error("malformed {SIGNATURE_HEADER} header: {0}")]
    Malformed(&'static str),
    /// No `v1` signature matches: the secret is wrong, or the body or timestamp was altered.
    #[error("no signature matches: the secret is wrong, or the body or timestamp was altered")]
    Mismatch,
    /// The timestamp is older than the tolerance allows.
    #[error("the signature is {age} s old, more than the {tolerance} s tolerance")]
    Expired {
        /// Seconds between the timestamp and now.
        age: u64,
        /// The tolerance in force.
        tolerance: u64,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error("the signature is dated {ahead} s in the future, more than the {tolerance} s tolerance")]
    Future {
        /// Seconds between now and the timestamp.
        ahead: u64,
        /// The tolerance in force.
        tolerance: u64,
    },
    /// The delivery id is empty, too long, or not printable ASCII.
    #[error("malformed {DELIVERY_HEADER} header: 1 to {MAX_DELIVERY_ID_LEN} printable ASCII characters expected")]
    MalformedDeliveryId,
    /// This delivery id was already received within the tolerance window.
    #[error("delivery {0} was already received")]
    Replayed(String),
    /// The guard holds as many ids as it may; new deliveries are refused until old ones leave the window.
    #[error("more than {0} deliveries within the tolerance window; refusing more until older ones expire")]
    TooManyDeliveries(usize),
}

/// The `Wasmagent-Signature` header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    format!("t={timestamp},v1={}", hex::encode(tag(secret, &timestamp, body)))
}

/// Checks a `Wasmagent-Signature` header against `body`: some `v1` value must be the HMAC of `"<t>.<body>"` under
/// `secret` (compared in constant time; several values are allowed so that senders can rotate keys), and `t` must
/// be within `tolerance_secs` of `now` (unix seconds), past or future. Unknown schemes (`v0=`, `v2=`) are ignored.
pub fn verify(
    secret: &[u8],
    signature_header: &str,
    body: &[u8],
    now: u64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let header = SignatureHeader::parse(signature_header)?;
    let expected = tag(secret, header.timestamp_text, body);
    let matched = header.signatures.iter().fold(Choice::from(0), |any, candidate| any | candidate.ct_eq(&expected));
    if !bool::from(matched) {
        return Err(VerifyError::Mismatch);
    }
    check_window(header.timestamp, now, tolerance_secs)
}

/// HMAC-SHA256 of `"<timestamp>.<body>"`.
fn tag(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// `Ok` when `timestamp` is at most `tolerance` seconds from `now`.
fn check_window(timestamp: u64, now: u64, tolerance: u64) -> Result<(), VerifyError> {
    if timestamp < now && now - timestamp > tolerance {
        return Err(VerifyError::Expired { age: now - timestamp, tolerance });
    }
    if timestamp > now && timestamp - now > tolerance {
        return Err(VerifyError::Future { ahead: timestamp - now, tolerance });
    }
    Ok(())
}

/// A parsed `Wasmagent-Signature` header.
struct SignatureHeader<'a> {
    /// `t` as written: the signed text is built from it, not from the parsed number.
    timestamp_text: &'a str,
    timestamp: u64,
    signatures: Vec<[u8; 32]>,
}

impl<'a> SignatureHeader<'a> {
    fn parse(header: &'a str) -> Result<Self, VerifyError> {
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in header.split(',').map(str::trim) {
            let (key, value) = item.split_once('=').ok_or(VerifyError::Malformed("every item must be KEY=VALUE"))?;
            match key {
                "t" if timestamp.is_some() => return Err(VerifyError::Malformed("more than one t= value")),
                "t" => timestamp = Some((value, parse_timestamp(value)?)),
                "v1" => signatures.push(parse_signature(value)?),
                "" => return Err(VerifyError::Malformed("an item has an empty key")),
                _ => {}
            }
        }
        let (timestamp_text, timestamp) = timestamp.ok_or(VerifyError::Malformed("no t= timestamp"))?;
        if signatures.is_empty() {
            return Err(VerifyError::Malformed("no v1= signature"));
        }
        Ok(SignatureHeader { timestamp_text, timestamp, signatures })
    }
}

fn parse_timestamp(value: &str) -> Result<u64, VerifyError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::Malformed("t= must be unix seconds in decimal digits"));
    }
    value.parse().map_err(|_| VerifyError::Malformed("t= is out of range"))
}

fn parse_signature(value: &str) -> Result<[u8; 32], VerifyError> {
    let mut signature = [0; 32];
    if value.len() != SIGNATURE_HEX_LEN || hex::decode_to_slice(value, &mut signature).is_err() {
        return Err(VerifyError::Malformed("v1= must be 64 hexadecimal digits"));
    }
    Ok(signature)
}

/// The delivery ids a receiver has accepted within the tolerance window, so that a repeated id is refused.
///
/// Use it after [`verify`] succeeded. Retries of one delivery reuse its id, so [`VerifyError::Replayed`] means
/// "already accepted": answer 2xx without handling the delivery again, and the sender stops retrying. The id is
/// not covered by the signature; against a captured request replayed under a new id, the time window is the bound.
///
/// Memory is bounded: ids leave once their timestamp is outside the window (then [`verify`] refuses them anyway),
/// and when `capacity` ids are inside it, new deliveries are refused rather than old ids forgotten early.
#[derive(Debug)]
pub struct ReplayGuard {
    tolerance_secs: u64,
    capacity: usize,
    seen: HashMap<String, u64>,
    by_time: BTreeSet<(u64, String)>,
}

impl ReplayGuard {
    /// A guard for signatures accepted within `tolerance_secs` of now, remembering at most `capacity` ids.
    pub fn new(tolerance_secs: u64, capacity: usize) -> Self {
        ReplayGuard { tolerance_secs, capacity, seen: HashMap::new(), by_time: BTreeSet::new() }
    }

    /// Records `delivery_id`, sent at `timestamp` (unix seconds), against the system clock; refuses an id already
    /// recorded and a timestamp outside the window.
    pub fn check(&mut self, delivery_id: &str, timestamp: u64) -> Result<(), VerifyError> {
        self.check_at(delivery_id, timestamp, unix_now())
    }

    /// [`check`](ReplayGuard::check) at `now` (unix seconds).
    pub fn check_at(&mut self, delivery_id: &str, timestamp: u64, now: u64) -> Result<(), VerifyError> {
        let printable = delivery_id.bytes().all(|b| b.is_ascii_graphic());
        if delivery_id.is_empty() || delivery_id.len() > MAX_DELIVERY_ID_LEN || !printable {
            return Err(VerifyError::MalformedDeliveryId);
        }
        check_window(timestamp, now, self.tolerance_secs)?;
        self.evict(now);
        if let Some(seen_at) = self.seen.get_mut(delivery_id) {
            // A retry carries a newer timestamp: remember the id until that one leaves the window too.
            if timestamp > *seen_at {
                self.by_time.remove(&(*seen_at, delivery_id.to_owned()));
                self.by_time.insert((timestamp, delivery_id.to_owned()));
                *seen_at = timestamp;
            }
            return Err(VerifyError::Replayed(delivery_id.to_owned()));
        }
        if self.seen.len() >= self.capacity {
            return Err(VerifyError::TooManyDeliveries(self.capacity));
        }
        self.seen.insert(delivery_id.to_owned(), timestamp);
        self.by_time.insert((timestamp, delivery_id.to_owned()));
        Ok(())
    }

    /// Forgets the ids whose timestamp is outside the window at `now`.
    fn evict(&mut self, now: u64) {
        while let Some((timestamp, _)) = self.by_time.first()
            && now.saturating_sub(*timestamp) > self.tolerance_secs
        {
            if let Some((_, id)) = self.by_time.pop_first() {
                self.seen.remove(&id);
            }
        }
    }
}

/// Where and how run results are delivered. Start from [`WebhookConfig::new`], which sets the defaults.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Receivers (`http` or `https`); every delivery goes to each of them.
    pub urls: Vec<String>,
    /// The HMAC key shared with the receivers, at least [`MIN_SECRET_BYTES`] long.
    pub secret: Vec<u8>,
    /// Attempts per delivery, the first one included (default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Wait before the first retry, doubled for each further one; up to 10% of random jitter is added so that
    /// retries do not arrive in lockstep (default [`DEFAULT_BASE_BACKOFF`]).
    pub base_backoff: Duration,
    /// Longest wait between attempts, before jitter (default [`DEFAULT_MAX_BACKOFF`]).
    pub max_backoff: Duration,
    /// Longest one attempt may take, at most the ceiling on `http_timeout_ms` (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Deliveries in flight (sending or waiting to retry) at most; past it a delivery is dead-lettered unsent
    /// (default [`DEFAULT_MAX_PENDING`]).
    pub max_pending: usize,
}

impl WebhookConfig {
    /// Deliveries to `urls` signed with `secret`, with the default retry policy and timeout.
    pub fn new(urls: Vec<String>, secret: Vec<u8>) -> Self {
        WebhookConfig {
            urls,
            secret,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_backoff: DEFAULT_BASE_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            timeout: DEFAULT_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("urls", &self.urls)
            .field("max_attempts", &self.max_attempts)
            .field("base_backoff", &self.base_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("timeout", &self.timeout)
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

/// Why [`Webhooks::new`] refused a [`WebhookConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("the webhook secret must have at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
    /// `max_attempts` is zero.
    #[error("webhook max_attempts must be at least 1")]
    NoAttempts,
    /// A URL cannot receive webhooks.
    #[error("webhook URL {url:?}: {reason}")]
    Url {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A delivery that failed every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The `Wasmagent-Delivery` id all attempts carried.
    pub delivery_id: String,
    /// The run whose result it was.
    pub run_id: String,
    /// The receiver.
    pub url: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// When the delivery was given up, in unix seconds.
    pub failed_at: u64,
}

/// Delivers run results to the configured receivers in the background. Cheap to clone; clones share the
/// dead-letter list and the count of deliveries in flight.
#[derive(Clone)]
pub struct Webhooks {
    egress: Arc<Egress>,
    secret: Arc<[u8]>,
    receivers: Arc<[Receiver]>,
    max_attempts: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    timeout: Duration,
    max_pending: usize,
    state: Arc<DeliveryState>,
}

/// One receiver and the manifest its requests are held to.
struct Receiver {
    url: String,
    manifest: EffectiveManifest,
}

#[derive(Default)]
struct DeliveryState {
    dead_letters: Mutex<VecDeque<DeadLetter>>,
    pending: AtomicUsize,
}

/// One delivery to one receiver.
struct Delivery {
    id: String,
    run_id: String,
    receiver: usize,
    body: Arc<[u8]>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.receivers.iter().map(|r| r.url.as_str()).collect();
        f.debug_struct("Webhooks")
            .field("urls", &urls)
            .field("max_attempts", &self.max_attempts)
            .field("base_backoff", &self.base_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("timeout", &self.timeout)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Checks `config` and prepares each receiver's manifest; requests go through `egress`.
    pub fn new(config: WebhookConfig, egress: Arc<Egress>) -> Result<Self, WebhookError> {
        if config.secret.len() < MIN_SECRET_BYTES {
            return Err(WebhookError::WeakSecret);
        }
        if config.max_attempts == 0 {
            return Err(WebhookError::NoAttempts);
        }
        let receivers = config.urls.iter().map(|url| receiver(url, config.timeout)).collect::<Result<_, _>>()?;
        Ok(Webhooks {
            egress,
            secret: config.secret.into(),
            receivers,
            max_attempts: config.max_attempts,
            base_backoff: config.base_backoff,
            max_backoff: config.max_backoff.max(config.base_backoff),
            timeout: config.timeout,
            max_pending: config.max_pending,
            state: Arc::default(),
        })
    }

    /// Sends `body` (JSON) about run `run_id` to every receiver, each in its own task on the current tokio runtime,
    /// and returns at once. Outside a runtime, or with `max_pending` deliveries already in flight, nothing is sent:
    /// the delivery goes straight to the dead letters with the reason.
    pub fn deliver(&self, run_id: &str, body: Vec<u8>) {
        let body: Arc<[u8]> = body.into();
        for receiver in 0..self.receivers.len() {
            let id = match delivery_id() {
                Ok(id) => id,
                Err(error) => {
                    let reason = format!("no random delivery id could be drawn: {error}");
                    self.give_up(String::new(), run_id, receiver, 0, reason);
                    continue;
                }
            };
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                self.give_up(id, run_id, receiver, 0, "not sent: no tokio runtime to send it from".into());
                continue;
            };
            let Some(in_flight) = InFlight::start(self.clone()) else {
                let reason = format!(
                    "not sent: {} deliveries were already in flight (max_pending_deliveries)",
                    self.max_pending
                );
                self.give_up(id, run_id, receiver, 0, reason);
                continue;
            };
            let delivery = Delivery { id, run_id: run_id.to_owned(), receiver, body: body.clone() };
            runtime.spawn(async move { in_flight.0.run(delivery).await });
        }
    }

    /// The deliveries that failed every attempt, oldest first (at most [`DEAD_LETTER_CAPACITY`]).
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.state.dead_letters.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// Deliveries in flight: sending, or waiting to retry.
    pub fn pending(&self) -> usize {
        self.state.pending.load(Ordering::SeqCst)
    }

    /// Attempts `delivery` until a 2xx answer or `max_attempts`, then dead-letters it.
    async fn run(&self, delivery: Delivery) {
        let url = &self.receivers[delivery.receiver].url;
        let (id, run) = (&delivery.id, &delivery.run_id);
        let mut last_error = String::new();
        for attempt in 1..=self.max_attempts {
            match self.attempt(&delivery).await {
                Ok(status) => {
                    tracing::info!(delivery = %id, run = %run, %url, attempt, status, "webhook delivered");
                    return;
                }
                Err(error) => {
                    tracing::warn!(delivery = %id, run = %run, %url, attempt, %error, "webhook attempt failed");
                    last_error = error;
                }
            }
            if attempt < self.max_attempts {
                tokio::time::sleep(self.backoff_after(attempt)).await;
            }
        }
        self.give_up(delivery.id, &delivery.run_id, delivery.receiver, self.max_attempts, last_error);
    }

    /// One signed POST through the egress path; `Ok` with the status of a 2xx answer.
    async fn attempt(&self, delivery: &Delivery) -> Result<u16, String> {
        let receiver = &self.receivers[delivery.receiver];
        let request = HttpRequest {
            method: "POST".into(),
            url: receiver.url.clone(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (SIGNATURE_HEADER.into(), sign(&self.secret, unix_now(), &delivery.body)),
                (DELIVERY_HEADER.into(), delivery.id.clone()),
                (RUN_ID_HEADER.into(), delivery.run_id.clone()),
            ],
            body: delivery.body.to_vec(),
        };
        // A deadline past the timeout, so that a slow receiver is reported as one rather than as a run's deadline.
        let deadline = Instant::now() + self.timeout + Duration::from_secs(1);
        let response = self.egress.session(&receiver.manifest, deadline).fetch(request).await.map_err(|e| e.message)?;
        if (200..300).contains(&response.status) {
            Ok(response.status)
        } else {
            Err(format!("the receiver answered HTTP {}", response.status))
        }
    }

    /// One signed attempt of a delivery the cluster store holds (`wasmagent-cluster`), to this node's receiver with
    /// `url`; an error naming the URL when this node has no such receiver.
    pub(crate) async fn attempt_stored(
        &self,
        delivery_id: &str,
        run_id: &str,
        url: &str,
        body: &[u8],
    ) -> Result<u16, String> {
        let receiver = self
            .receivers
            .iter()
            .position(|r| r.url == url)
            .ok_or_else(|| format!("{url} is not among this node's webhooks.urls"))?;
        let delivery = Delivery { id: delivery_id.to_owned(), run_id: run_id.to_owned(), receiver, body: body.into() };
        self.attempt(&delivery).await
    }

    /// The receivers' URLs.
    pub(crate) fn urls(&self) -> impl Iterator<Item = &str> {
        self.receivers.iter().map(|r| r.url.as_str())
    }

    /// Attempts per delivery, the first one included.
    pub(crate) fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Deliveries in flight at most.
    pub(crate) fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Longest one attempt may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The wait after failed attempt number `attempt`: the base doubled per earlier retry, capped, plus up to 10%.
    pub(crate) fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.checked_pow(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        let delay = self.base_backoff.saturating_mul(factor).min(self.max_backoff);
        let jitter = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX) * 0.1;
        delay.saturating_add(delay.mul_f64(jitter))
    }

    fn give_up(&self, delivery_id: String, run_id: &str, receiver: usize, attempts: u32, last_error: String) {
        let url = self.receivers[receiver].url.clone();
        let error = &last_error;
        tracing::error!(delivery = %delivery_id, run = %run_id, %url, attempts, %error, "webhook dead-lettered");
        let letter =
            DeadLetter { delivery_id, run_id: run_id.to_owned(), url, attempts, last_error, failed_at: unix_now() };
        let mut letters = self.state.dead_letters.lock().unwrap_or_else(PoisonError::into_inner);
        if letters.len() >= DEAD_LETTER_CAPACITY {
            letters.pop_front();
        }
        letters.push_back(letter);
    }
}

/// Counts one delivery as pending until dropped, even when its task is cancelled.
struct InFlight(Webhooks);

impl InFlight {
    /// Counts one more delivery in flight, or `None` when `max_pending` already are.
    fn start(webhooks: Webhooks) -> Option<Self> {
        let max = webhooks.max_pending;
        let reserved =
            webhooks.state.pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1));
        // Built only when reserved: dropping an `InFlight` releases a reservation.
        reserved.is_ok().then(move || InFlight(webhooks))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks `url` and builds the manifest of its requests: exactly its `scheme://host:port`, the body cap at the
/// ceiling (the body is the server's own), a small response cap (answers are discarded) and `timeout`.
fn receiver(url: &str, timeout: Duration) -> Result<Receiver, WebhookError> {
    let refuse = |reason: String| WebhookError::Url { url: url.to_owned(), reason };
    let parsed = reqwest::Url::parse(url).map_err(|e| refuse(format!("not a valid URL ({e})")))?;
    let scheme = parsed.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(refuse(format!("the {scheme}: scheme cannot receive webhooks; use http or https")));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse("credentials in the URL are refused".into()));
    }
    let host = parsed.host_str().ok_or_else(|| refuse("the URL has no host".into()))?;
    if host.contains('*') {
        // In `allowed_hosts` a `*` is a wildcard; the receiver's entry must name exactly one host.
        return Err(refuse("the host may not contain `*`".into()));
    }
    let port = parsed.port_or_known_default().ok_or_else(|| refuse("the URL has no port".into()))?;
    let ceilings = ManifestCeilings::default();
    let manifest = CapabilityManifest {
        allowed_hosts: vec![format!("{scheme}://{host}:{port}")],
        http_timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        max_http_request_bytes: Some(ByteSize(ceilings.max_http_request_bytes)),
        max_http_response_bytes: Some(ByteSize(MAX_RESPONSE_BYTES)),
        ..Default::default()
    }
    .resolve(Path::new("/"), &ceilings)
    .map_err(|e| refuse(e.to_string()))?;
    Ok(Receiver { url: url.to_owned(), manifest })
}

/// 16 random bytes in hex.
pub(crate) fn delivery_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a webhook secret of some length";
    const BODY: &[u8] = br#"{"run_id":"r1","outcome":"ok"}"#;
    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_signature_verifies_against_its_body() {
        let header = sign(SECRET, NOW, BODY);
        assert!(header.starts_with(&format!("t={NOW},v1=")), "{header}");
        assert_eq!(verify(SECRET, &header, BODY, NOW, DEFAULT_TOLERANCE_SECS), Ok(()));
        assert_eq!(verify(SECRET, &header, BODY, NOW + 300, 300), Ok(()));
        assert_eq!(verify(SECRET, &header, BODY, NOW - 300, 300), Ok(()));
    }

    #[test]
    fn a_tampered_body_or_a_wrong_secret_does_not_verify() {
        let header = sign(SECRET, NOW, BODY);
        let tampered = br#"{"run_id":"r1","outcome":"no"}"#;
        assert_eq!(verify(SECRET, &header, tampered, NOW, 300), Err(VerifyError::Mismatch));
        assert_eq!(verify(b"another secret entirely", &header, BODY, NOW, 300), Err(VerifyError::Mismatch));
        let retimed = header.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert_eq!(verify(SECRET, &retimed, BODY, NOW, 300), Err(VerifyError::Mismatch));
    }

    #[test]
    fn timestamps_outside_the_window_are_refused_both_ways() {
        let old = sign(SECRET, NOW - 301, BODY);
        assert_eq!(verify(SECRET, &old, BODY, NOW, 300), Err(VerifyError::Expired { age: 301, tolerance: 300 }));
        let future = sign(SECRET, NOW + 301, BODY);
        assert_eq!(verify(SECRET, &future, BODY, NOW, 300), Err(VerifyError::Future { ahead: 301, tolerance: 300 }));
        assert!(verify(SECRET, &old, BODY, NOW, 300).unwrap_err().to_string().contains("301 s old"));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let v1 = &sign(SECRET, NOW, BODY)[format!("t={NOW},").len()..];
        for header in [
            String::new(),
            "garbage".into(),
            v1.to_string(),
            format!("t={NOW}"),
            format!("t=,{v1}"),
            format!("t=-5,{v1}"),
            format!("t=+5,{v1}"),
            format!("t=99999999999999999999999,{v1}"),
            format!("t={NOW},t={NOW},{v1}"),
            format!("t={NOW},v1=abc"),
            format!("t={NOW},v1={}", "zz".repeat(32)),
            format!("t={NOW},{v1},"),
            format!("t={NOW},=x,{v1}"),
        ] {
            assert!(
                matches!(verify(SECRET, &header, BODY, NOW, 300), Err(VerifyError::Malformed(_))),
                "{header:?} should be malformed"
            );
        }
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let current = sign(SECRET, NOW, BODY);
        let current_v1 = current.rsplit_once("v1=").unwrap().1;
        let previous = sign(b"the previous secret, rotated out", NOW, BODY);
        let previous_v1 = previous.rsplit_once("v1=").unwrap().1;
        let both = format!("t={NOW},v1={previous_v1},v1={current_v1},v0=legacy");
        assert_eq!(verify(SECRET, &both, BODY, NOW, 300), Ok(()));
        assert_eq!(verify(b"the previous secret, rotated out", &both, BODY, NOW, 300), Ok(()));
        assert_eq!(verify(b"neither of the two secrets", &both, BODY, NOW, 300), Err(VerifyError::Mismatch));
    }

    #[test]
    fn the_replay_guard_refuses_a_repeated_id() {
        let mut guard = ReplayGuard::new(300, 100);
        assert_eq!(guard.check_at("d1", NOW, NOW), Ok(()));
        assert_eq!(guard.check_at("d1", NOW + 10, NOW + 10), Err(VerifyError::Replayed("d1".into())));
        assert_eq!(guard.check_at("d2", NOW, NOW + 10), Ok(()));
        assert_eq!(guard.check_at("d3", NOW - 400, NOW), Err(VerifyError::Expired { age: 400, tolerance: 300 }));
        for bad in ["", "has space", &"x".repeat(129)] {
            assert_eq!(guard.check_at(bad, NOW, NOW), Err(VerifyError::MalformedDeliveryId), "{bad:?}");
        }
        assert_eq!(guard.check(&delivery_id().unwrap(), unix_now()), Ok(()));
    }

    #[test]
    fn the_replay_guard_forgets_ids_outside_the_window_and_refuses_when_full() {
        let mut guard = ReplayGuard::new(300, 2);
        assert_eq!(guard.check_at("old", NOW, NOW), Ok(()));
        assert_eq!(guard.check_at("newer", NOW + 200, NOW + 200), Ok(()));
        assert_eq!(guard.check_at("third", NOW + 200, NOW + 200), Err(VerifyError::TooManyDeliveries(2)));
        // At NOW + 301 "old" has left the window: its place is free, and replaying it fails on its timestamp.
        assert_eq!(guard.check_at("third", NOW + 301, NOW + 301), Ok(()));
        assert_eq!(guard.check_at("old", NOW, NOW + 301), Err(VerifyError::Expired { age: 301, tolerance: 300 }));
        assert_eq!(guard.check_at("newer", NOW + 301, NOW + 301), Err(VerifyError::Replayed("newer".into())));
        // That retry, dated NOW + 301, keeps "newer" remembered past the window of its first timestamp.
        assert_eq!(guard.check_at("newer", NOW + 550, NOW + 550), Err(VerifyError::Replayed("newer".into())));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_ten_percent_jitter() {
        let egress = Egress::new(wasmagent_egress::EgressConfig::new()).unwrap();
        let mut config = WebhookConfig::new(vec!["https://hooks.example.com/x".into()], SECRET.to_vec());
        config.base_backoff = Duration::from_secs(1);
        config.max_backoff = Duration::from_secs(5);
        let webhooks = Webhooks::new(config, egress).unwrap();
        for (attempt, base) in [(1, 1), (2, 2), (3, 4), (4, 5), (40, 5)] {
            let wait = webhooks.backoff_after(attempt);
            let base = Duration::from_secs(base);
            assert!(wait >= base && wait <= base.mul_f64(1.1), "attempt {attempt}: {wait:?}");
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        let egress = Egress::new(wasmagent_egress::EgressConfig::new()).unwrap();
        let config = |url: &str, secret: &[u8]| WebhookConfig::new(vec![url.into()], secret.to_vec());
        let new = |config| Webhooks::new(config, egress.clone()).map(|_| ()).unwrap_err();
        assert_eq!(new(config("https://a.example/", b"short")), WebhookError::WeakSecret);
        let mut no_attempts = config("https://a.example/", SECRET);
        no_attempts.max_attempts = 0;
        assert_eq!(new(no_attempts), WebhookError::NoAttempts);
        let mut slow = config("https://a.example/", SECRET);
        slow.timeout = Duration::from_secs(3600);
        assert!(matches!(new(slow), WebhookError::Url { reason, .. } if reason.contains("http_timeout_ms")));
        for url in ["ftp://a.example/", "https://u:p@a.example/", "not a url", "file:///etc/passwd", "http://*.x/"] {
            assert!(matches!(new(config(url, SECRET)), WebhookError::Url { .. }), "{url}");
        }
        assert!(!format!("{:?}", config("https://a.example/", SECRET)).contains("webhook secret"));
    }
}
