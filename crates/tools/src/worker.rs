//! Tool handlers run on worker threads, so that a run waits for a call at most until its deadline.
//!
//! A handler is synchronous and may take as long as its own timeout (an upstream MCP server, an HTTP tool, a
//! micro-tool's sandbox), which can be minutes past the calling run's `cpu_ms`. The calling thread hands the call to
//! a worker and waits only until the run's deadline; a call still running then is abandoned: it finishes in the
//! background and its result is dropped. At most [`MAX_ABANDONED_CALLS`] abandoned calls run at once per registry;
//! while that many are running, new calls are refused rather than started, so the work left behind stays bounded.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use std::{fmt, thread};

/// Most calls abandoned at their run's deadline that may still run in the background, per registry.
pub const MAX_ABANDONED_CALLS: usize = 8;

/// How long an idle worker thread waits for another call before it ends.
const IDLE_WORKER_LIFETIME: Duration = Duration::from_secs(30);

/// What a worker computes: the call's result as JSON bytes, or the error message.
pub(crate) type Work = Box<dyn FnOnce() -> Result<Vec<u8>, String> + Send>;

/// Why a call produced no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfinished {
    /// The deadline passed before the call started or while it ran (then it was abandoned).
    DeadlinePassed,
    /// [`MAX_ABANDONED_CALLS`] abandoned calls are still running; the call was not started.
    Busy,
    /// No worker thread could be started.
    NoWorker(String),
}

/// The worker threads of one registry (shared by its clones).
#[derive(Clone)]
pub(crate) struct Workers(Arc<Shared>);

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.0.state);
        f.debug_struct("Workers").field("idle", &state.idle).field("abandoned", &state.abandoned).finish()
    }
}

impl Default for Workers {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel();
        Workers(Arc::new(Shared { state: Mutex::new(State::default()), sender, receiver: Mutex::new(receiver) }))
    }
}

struct Shared {
    state: Mutex<State>,
    /// Jobs for idle workers. Sent only while `state` is locked, so an idle worker that is about to end can tell,
    /// under that lock, whether a job is on its way to it.
    sender: Sender<Job>,
    receiver: Mutex<Receiver<Job>>,
}

#[derive(Default)]
struct State {
    /// Workers waiting for a job, minus the jobs sent to them and not yet taken.
    idle: usize,
    /// Calls abandoned at their deadline and still running.
    abandoned: usize,
}

struct Job {
    work: Work,
    call: Arc<Call>,
}

/// Where a worker leaves a call's result for the waiting caller.
struct Call {
    slot: Mutex<Slot>,
    done: Condvar,
}

enum Slot {
    Running,
    Done(Result<Vec<u8>, String>),
    /// The caller stopped waiting; the result is dropped.
    Abandoned,
}

impl Workers {
    /// Runs `work` on a worker and waits for its result until `deadline`.
    pub(crate) fn run(&self, deadline: Instant, work: Work) -> Result<Result<Vec<u8>, String>, Unfinished> {
        let remaining = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
        let remaining = remaining.ok_or(Unfinished::DeadlinePassed)?;
        let call = Arc::new(Call { slot: Mutex::new(Slot::Running), done: Condvar::new() });
        self.start(Job { work, call: call.clone() })?;
        let slot = lock(&call.slot);
        let (mut slot, _) = call
            .done
            .wait_timeout_while(slot, remaining, |slot| matches!(slot, Slot::Running))
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *slot, Slot::Abandoned) {
            Slot::Done(result) => Ok(result),
            _ => {
                // Counted while `slot` is locked, so the worker (which locks it to deliver) uncounts it after.
                lock(&self.0.state).abandoned += 1;
                Err(Unfinished::DeadlinePassed)
            }
        }
    }

    /// Hands `job` to an idle worker, or to a new one.
    fn start(&self, job: Job) -> Result<(), Unfinished> {
        let mut state = lock(&self.0.state);
        if state.abandoned >= MAX_ABANDONED_CALLS {
            return Err(Unfinished::Busy);
        }
        if state.idle > 0 {
            // The receiver lives as long as `Shared`, so sending cannot fail; if it did, a new worker takes the job.
            match self.0.sender.send(job) {
                Ok(()) => {
                    state.idle -= 1;
                    return Ok(());
                }
                Err(mpsc::SendError(job)) => return self.spawn(job),
            }
        }
        drop(state);
        self.spawn(job)
    }

    fn spawn(&self, job: Job) -> Result<(), Unfinished> {
        let shared = self.0.clone();
        thread::Builder::new()
            .name("wasmagent-tool".into())
            .spawn(move || work(&shared, job))
            .map(drop)
            .map_err(|e| Unfinished::NoWorker(e.to_string()))
    }
}

/// A worker: runs jobs until it has been idle for [`IDLE_WORKER_LIFETIME`].
fn work(shared: &Shared, mut job: Job) {
    loop {
        let result = catch_unwind(AssertUnwindSafe(job.work))
            .unwrap_or_else(|_| Err("the tool call failed inside wasmagent".to_owned()));
        // Counted idle before the caller sees the result, so the caller's next call reuses this worker.
        lock(&shared.state).idle += 1;
        job.call.deliver(result, shared);
        match next_job(shared) {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// The next job for an idle worker, or `None` when none came for [`IDLE_WORKER_LIFETIME`] (the worker then ends).
fn next_job(shared: &Shared) -> Option<Job> {
    let receiver = lock(&shared.receiver);
    match receiver.recv_timeout(IDLE_WORKER_LIFETIME) {
        Ok(job) => Some(job),
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
            // Jobs are sent under the state lock: holding it, either one is already queued or none will come.
            let mut state = lock(&shared.state);
            match receiver.try_recv() {
                Ok(job) => Some(job),
                Err(_) => {
                    state.idle = state.idle.saturating_sub(1);
                    None
                }
            }
        }
    }
}

impl Call {
    fn deliver(&self, result: Result<Vec<u8>, String>, shared: &Shared) {
        let mut slot = lock(&self.slot);
        if matches!(*slot, Slot::Abandoned) {
            drop(slot);
            let mut state = lock(&shared.state);
            state.abandoned = state.abandoned.saturating_sub(1);
        } else {
            *slot = Slot::Done(result);
            self.done.notify_one();
        }
    }
}

/// Locks `mutex`; no code panics while holding these locks, so a poisoned one holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(value: &'static [u8]) -> Work {
        Box::new(move || Ok(value.to_vec()))
    }

    #[test]
    fn sequential_calls_reuse_one_worker() {
        let workers = Workers::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        for _ in 0..50 {
            assert_eq!(workers.run(deadline, quick(b"1")), Ok(Ok(b"1".to_vec())));
        }
        // The worker counted itself idle before delivering, so no call needed a second thread.
        assert_eq!(lock(&workers.0.state).idle, 1);
    }

    #[test]
    fn a_panicking_job_is_an_error_and_its_worker_goes_on() {
        let workers = Workers::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        let outcome = workers.run(deadline, Box::new(|| panic!("job bug")));
        assert_eq!(outcome, Ok(Err("the tool call failed inside wasmagent".to_owned())));
        assert_eq!(workers.run(deadline, quick(b"2")), Ok(Ok(b"2".to_vec())));
    }

    #[test]
    fn a_passed_deadline_starts_nothing() {
        let workers = Workers::default();
        let started = Arc::new(Mutex::new(false));
        let flag = started.clone();
        let outcome = workers.run(
            Instant::now(),
            Box::new(move || {
                *lock(&flag) = true;
                Ok(Vec::new())
            }),
        );
        assert_eq!(outcome, Err(Unfinished::DeadlinePassed));
        assert!(!*lock(&started));
    }
}
