//! The in-process limiter: an exact sliding log of request times and a counter of running runs per subject.

use super::{Admission, LimitFuture, LimitReason, LimiterUnavailable, Limits, RateLimiter, RunSlot, WindowState};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Limits for one process. Subjects idle for a whole window are forgotten.
#[derive(Default)]
pub struct MemoryLimiter {
    subjects: Arc<Mutex<HashMap<String, Subject>>>,
}

#[derive(Default)]
struct Subject {
    requests: VecDeque<Instant>,
    running: u64,
}

impl MemoryLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        MemoryLimiter::default()
    }

    fn decide(&self, subject: &str, limits: Limits, now: Instant) -> Admission {
        let mut subjects = self.subjects.lock().unwrap_or_else(PoisonError::into_inner);
        if subjects.len() > 10_000 {
            subjects.retain(|_, s| s.running > 0 || s.requests.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        let state = subjects.entry(subject.to_owned()).or_default();
        while state.requests.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            state.requests.pop_front();
        }
        let reset = |state: &Subject| {
            state.requests.front().map_or(0, |t| (WINDOW.saturating_sub(now.duration_since(*t))).as_secs().max(1))
        };
        if state.requests.len() as u64 >= limits.requests_per_minute {
            let window = WindowState { limit: limits.requests_per_minute, remaining: 0, reset_secs: reset(state) };
            return Admission::Limited {
                reason: LimitReason::Rate,
                window,
                retry_after_secs: window.reset_secs.max(1),
            };
        }
        state.requests.push_back(now);
        let window = WindowState {
            limit: limits.requests_per_minute,
            remaining: limits.requests_per_minute - state.requests.len() as u64,
            reset_secs: reset(state),
        };
        if state.running >= limits.concurrent_runs {
            return Admission::Limited { reason: LimitReason::Concurrency, window, retry_after_secs: 1 };
        }
        state.running += 1;
        let subjects = self.subjects.clone();
        let name = subject.to_owned();
        let slot = RunSlot::new(move || {
            if let Some(s) = subjects.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&name) {
                s.running = s.running.saturating_sub(1);
            }
        });
        Admission::Allowed { slot, window }
    }
}

impl RateLimiter for MemoryLimiter {
    fn admit<'a>(&'a self, subject: &'a str, limits: Limits) -> LimitFuture<'a, Result<Admission, LimiterUnavailable>> {
        let decision = self.decide(subject, limits, Instant::now());
        Box::pin(async move { Ok(decision) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { requests_per_minute: 3, concurrent_runs: 1 };

    #[test]
    fn the_window_slides_and_concurrency_is_released_on_drop() {
        let limiter = MemoryLimiter::new();
        let start = Instant::now();
        let Admission::Allowed { slot, window } = limiter.decide("a", LIMITS, start) else { panic!("first") };
        assert_eq!(window.remaining, 2);
        assert!(matches!(
            limiter.decide("a", LIMITS, start),
            Admission::Limited { reason: LimitReason::Concurrency, .. }
        ));
        drop(slot);
        let Admission::Allowed { .. } = limiter.decide("a", LIMITS, start) else { panic!("after release") };
        let Admission::Limited { reason, retry_after_secs, .. } = limiter.decide("a", LIMITS, start) else {
            panic!("fourth")
        };
        assert_eq!(reason, LimitReason::Rate);
        assert!(retry_after_secs >= 59);
        assert!(matches!(limiter.decide("b", LIMITS, start), Admission::Allowed { .. }), "subjects are separate");
        assert!(matches!(limiter.decide("a", LIMITS, start + WINDOW), Admission::Allowed { .. }), "the window slid");
    }
}
