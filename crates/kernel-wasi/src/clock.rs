//! A run's clock: the guest's monotonic clock, and the run's deadline, so that a guest that sleeps cannot outlast
//! `cpu_ms`.
//!
//! `cpu_ms` is an epoch deadline, which interrupts guest code only while it executes. A guest blocked in the host
//! (`poll_oneoff` in preview1, `wasi:io/poll` in preview2: `time.sleep`, `nanosleep`) would otherwise sleep past it
//! for as long as it asked. Preview1 sleeps go through a guard ([`crate::instrument`] calls
//! [`guard_poll_oneoff`] before the real `poll_oneoff`) that ends the run at the deadline instead; preview2 clock
//! subscriptions are cut off just past the deadline ([`add_clock_wrappers`]), and the wait on them ends at the
//! deadline itself, like every wait a component can block in ([`crate::deadline`]). Either way the run ends as
//! `timeout`, at `cpu_ms`: a sleep cut off exactly at the deadline would instead return to the guest, which could
//! finish before its epoch deadline fired.

use crate::deadline::BACKGROUND_GRACE;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{Linker, Resource};
use wasmtime::{StoreContextMut, Trap};
use wasmtime_wasi::HostMonotonicClock;
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;

/// The `wasi:clocks` version wasmtime-wasi 48 implements; older 0.2 imports are linked to it by semver.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// When a run started (the zero of the guest's monotonic clock) and when its `cpu_ms` runs out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunClock {
    origin: Instant,
    deadline: Instant,
}

impl RunClock {
    /// A clock starting now, with `cpu_ms` to run.
    pub(crate) fn start(cpu_ms: u64) -> Self {
        let origin = Instant::now();
        RunClock { origin, deadline: origin + Duration::from_millis(cpu_ms) }
    }

    /// The same clock (the guest's time goes on) with a new deadline `cpu_ms` from now: a session's next call.
    pub(crate) fn restarted(&self, cpu_ms: u64) -> Self {
        RunClock { origin: self.origin, deadline: Instant::now() + Duration::from_millis(cpu_ms) }
    }

    /// The guest's monotonic clock: nanoseconds since the run started.
    pub(crate) fn guest_clock(&self) -> impl HostMonotonicClock + 'static {
        GuestMonotonicClock { origin: self.origin }
    }

    /// When the run's `cpu_ms` runs out.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How long the run has left.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The guest's monotonic time now, in nanoseconds.
    fn guest_now(&self) -> u64 {
        nanos_since(self.origin)
    }
}

fn nanos_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

struct GuestMonotonicClock {
    origin: Instant,
}

impl HostMonotonicClock for GuestMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        nanos_since(self.origin)
    }
}

/// Store state that knows its run's clock.
pub(crate) trait HasRunClock {
    fn run_clock(&self) -> RunClock;
}

// Layout of a preview1 `subscription` (48 bytes): userdata u64, then the tag (u8) at 8 and, for a clock, its id (u32)
// at 16, timeout (u64) at 24, precision (u64) at 32 and flags (u16) at 40.
const SUBSCRIPTION_SIZE: usize = 48;
const TAG_CLOCK: u8 = 0;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const ABSTIME: u16 = 1;

/// How long a preview1 `poll_oneoff` on `subscriptions` would block, or `None` when it returns at once or fails
/// (an fd subscription: stdin is in memory and files are always ready; no subscriptions; a clock it refuses).
pub(crate) fn poll_oneoff_wait(subscriptions: &[u8], clock: &RunClock) -> Option<Duration> {
    let mut wait: Option<u64> = None;
    for sub in subscriptions.chunks_exact(SUBSCRIPTION_SIZE) {
        if sub[8] != TAG_CLOCK {
            return None;
        }
        let id = u32::from_le_bytes(sub[16..20].try_into().ok()?);
        let timeout = u64::from_le_bytes(sub[24..32].try_into().ok()?);
        let absolute = u16::from_le_bytes(sub[40..42].try_into().ok()?) & ABSTIME != 0;
        let nanos = match (id, absolute) {
            (CLOCK_MONOTONIC | CLOCK_REALTIME, false) => timeout,
            (CLOCK_MONOTONIC, true) => timeout.saturating_sub(clock.guest_now()),
            (CLOCK_REALTIME, true) => {
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                timeout.saturating_sub(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX))
            }
            _ => return None,
        };
        wait = Some(wait.map_or(nanos, |w| w.min(nanos)));
    }
    wait.map(Duration::from_nanos)
}

/// Called before a preview1 `poll_oneoff` with its arguments: when the poll would sleep past the run's deadline,
/// sleeps until the deadline and ends the run there (as `timeout`); otherwise returns and the real call runs.
pub(crate) fn guard_poll_oneoff(memory: &[u8], subs: i32, count: i32, clock: &RunClock) -> wasmtime::Result<()> {
    let Some(len) = (count as u32 as usize).checked_mul(SUBSCRIPTION_SIZE) else {
        return Ok(());
    };
    // A bad pointer is the real call's to refuse (with EFAULT).
    let Some(subscriptions) = crate::host::guest_bytes(memory, subs, len) else {
        return Ok(());
    };
    match poll_oneoff_wait(subscriptions, clock) {
        Some(wait) if wait > clock.remaining() => {
            std::thread::sleep(clock.remaining());
            Err(Trap::Interrupt.into())
        }
        _ => Ok(()),
    }
}

/// Store state of a component run, for the clock wrappers.
pub(crate) trait ComponentClock: HasRunClock + 'static {
    fn clocks(&mut self) -> WasiClocksCtxView<'_>;
}

/// Replaces `subscribe-duration` and `subscribe-instant` of `wasi:clocks/monotonic-clock` with wrappers that call
/// wasmtime-wasi's own implementation with the wait cut off [`BACKGROUND_GRACE`] past the run's deadline (the wait
/// on it ends the run at the deadline).
pub(crate) fn add_clock_wrappers<T: ComponentClock>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clocks = linker.instance(MONOTONIC_CLOCK)?;
    clocks.func_wrap("subscribe-duration", |mut store: StoreContextMut<'_, T>, (nanos,): (u64,)| {
        let limit = store.data().run_clock().remaining() + BACKGROUND_GRACE;
        let capped = Duration::from_nanos(nanos).min(limit);
        subscribe(&mut store, capped)
    })?;
    clocks.func_wrap("subscribe-instant", |mut store: StoreContextMut<'_, T>, (when,): (u64,)| {
        let clock = store.data().run_clock();
        let limit = clock.remaining() + BACKGROUND_GRACE;
        let capped = Duration::from_nanos(when.saturating_sub(clock.guest_now())).min(limit);
        subscribe(&mut store, capped)
    })?;
    Ok(())
}

fn subscribe<T: ComponentClock>(
    store: &mut StoreContextMut<'_, T>,
    wait: Duration,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
    Ok((monotonic_clock::Host::subscribe_duration(&mut store.data_mut().clocks(), nanos)?,))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock_subscription(id: u32, timeout: u64, flags: u16) -> Vec<u8> {
        let mut sub = vec![0u8; SUBSCRIPTION_SIZE];
        sub[8] = TAG_CLOCK;
        sub[16..20].copy_from_slice(&id.to_le_bytes());
        sub[24..32].copy_from_slice(&timeout.to_le_bytes());
        sub[40..42].copy_from_slice(&flags.to_le_bytes());
        sub
    }

    #[test]
    fn the_shortest_clock_decides_how_long_a_poll_waits() {
        let clock = RunClock::start(1000);
        let mut subs = clock_subscription(CLOCK_MONOTONIC, 5_000_000_000, 0);
        subs.extend(clock_subscription(CLOCK_REALTIME, 2_000_000, 0));
        assert_eq!(poll_oneoff_wait(&subs, &clock), Some(Duration::from_millis(2)));
        let absolute = clock_subscription(CLOCK_MONOTONIC, 60_000_000_000, ABSTIME);
        let wait = poll_oneoff_wait(&absolute, &clock).unwrap();
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60), "{wait:?}");
    }

    #[test]
    fn polls_that_return_at_once_are_not_waits() {
        let clock = RunClock::start(1000);
        let mut fd = vec![0u8; SUBSCRIPTION_SIZE];
        fd[8] = 1;
        let mut subs = clock_subscription(CLOCK_MONOTONIC, 5_000_000_000, 0);
        subs.extend(fd);
        assert_eq!(poll_oneoff_wait(&subs, &clock), None);
        assert_eq!(poll_oneoff_wait(&[], &clock), None);
        assert_eq!(poll_oneoff_wait(&clock_subscription(2, 5_000_000_000, 0), &clock), None, "process CPU clock");
    }

    #[test]
    fn a_sleep_past_the_deadline_ends_the_run_at_the_deadline() {
        let clock = RunClock::start(50);
        let memory = clock_subscription(CLOCK_MONOTONIC, 10_000_000_000, 0);
        let started = Instant::now();
        let error = guard_poll_oneoff(&memory, 0, 1, &clock).unwrap_err();
        assert_eq!(error.downcast_ref::<Trap>(), Some(&Trap::Interrupt));
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        let short = clock_subscription(CLOCK_MONOTONIC, 1_000, 0);
        assert!(guard_poll_oneoff(&short, 0, 1, &RunClock::start(1000)).is_ok());
        assert!(guard_poll_oneoff(&short, 40, 1, &clock).is_ok(), "out of bounds: the real call refuses it");
    }
}
