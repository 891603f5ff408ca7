//! `cpu_ms` as an epoch deadline: one ticker thread advances the engine's epoch once per millisecond of real time,
//! but only while at least one run is active, so an idle process does not wake up a thousand times a second.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// One epoch tick is one millisecond.
const TICK: Duration = Duration::from_millis(1);

/// Epoch ticks that make up `cpu_ms`.
pub(crate) fn ticks_for(cpu_ms: u64) -> u64 {
    cpu_ms
}

pub(crate) struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    active_runs: usize,
    shutdown: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain counters; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EpochTicker {
    pub(crate) fn start(engines: Vec<Engine>) -> Self {
        let shared =
            Arc::new(Shared { state: Mutex::new(State { active_runs: 0, shutdown: false }), wake: Condvar::new() });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wasmagent-epoch".into())
            .spawn(move || tick_while_active(&engines, &thread_shared))
            .ok();
        EpochTicker { shared, thread }
    }

    pub(crate) fn start_run(&self) -> ActiveRun {
        self.shared.lock().active_runs += 1;
        self.shared.wake.notify_one();
        ActiveRun { shared: self.shared.clone(), started: Instant::now() }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn tick_while_active(engines: &[Engine], shared: &Shared) {
    loop {
        {
            let mut state = shared.lock();
            while state.active_runs == 0 && !state.shutdown {
                state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            if state.shutdown {
                return;
            }
        }
        // Count real elapsed milliseconds rather than loop iterations: sleeps overshoot, and a deadline must not
        // drift later because of it.
        let resumed = Instant::now();
        let mut ticked: u128 = 0;
        loop {
            std::thread::sleep(TICK);
            let due = resumed.elapsed().as_millis();
            while ticked < due {
                for engine in engines {
                    engine.increment_epoch();
                }
                ticked += 1;
            }
            let state = shared.lock();
            if state.active_runs == 0 || state.shutdown {
                break;
            }
        }
    }
}

/// Keeps the epoch ticker running for one run; also the run's wall clock.
pub struct ActiveRun {
    shared: Arc<Shared>,
    started: Instant,
}

impl ActiveRun {
    /// Milliseconds since the run started, with microsecond precision.
    pub fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }
}

impl Drop for ActiveRun {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.active_runs = state.active_runs.saturating_sub(1);
    }
}
