//! Per-subject rate limits: a sliding window of requests per minute and a cap on concurrent runs.
//!
//! Two backends implement [`RateLimiter`]: [`MemoryLimiter`] (one process) and [`RedisLimiter`] (many servers
//! sharing one Redis, with an atomic server-side script). Both fail closed: a backend that cannot answer
//! ([`LimiterUnavailable`]) means the request is refused with 503, never allowed.

mod memory;
mod redis;

pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;

use std::future::Future;
use std::pin::Pin;

/// A future returned by a [`RateLimiter`].
pub type LimitFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The limits one subject is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests accepted per sliding 60-second window.
    pub requests_per_minute: u64,
    /// Runs one subject may have executing at once.
    pub concurrent_runs: u64,
}

/// The answer for one request.
#[derive(Debug)]
pub enum Admission {
    /// Go ahead; drop the slot when the run ends (that frees one concurrent run).
    Allowed {
        /// The concurrent-run slot taken.
        slot: RunSlot,
        /// The window after this request.
        window: WindowState,
    },
    /// Over a limit.
    Limited {
        /// Which limit.
        reason: LimitReason,
        /// The window after this request.
        window: WindowState,
        /// Seconds after which a retry may succeed.
        retry_after_secs: u64,
    },
}

/// Which limit refused the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReason {
    /// `requests_per_minute`.
    Rate,
    /// `concurrent_runs`.
    Concurrency,
}

/// The sliding window after this request, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    /// `requests_per_minute`.
    pub limit: u64,
    /// Requests left in the current window.
    pub remaining: u64,
    /// Seconds until the oldest request in the window leaves it.
    pub reset_secs: u64,
}

/// The limiter could not decide (backend down, timeout, malformed state). The request must be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the rate limiter is unavailable: {0}")]
pub struct LimiterUnavailable(pub String);

/// A held concurrent-run slot; dropping it gives the slot back.
pub struct RunSlot(Option<Box<dyn FnOnce() + Send>>);

impl RunSlot {
    /// A slot that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + 'static) -> Self {
        RunSlot(Some(Box::new(release)))
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

impl std::fmt::Debug for RunSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunSlot")
    }
}

/// Decides, per subject, whether a request may run now.
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `subject` against the window and, if it fits, takes a concurrent-run slot. A request
    /// refused for concurrency still counts against the window (it was a request).
    fn admit<'a>(&'a self, subject: &'a str, limits: Limits) -> LimitFuture<'a, Result<Admission, LimiterUnavailable>>;
}
