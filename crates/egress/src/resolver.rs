//! Name resolution for egress. Each request resolves its host once; the addresses that pass the floor are the
//! only ones the connection may use, so a DNS answer that changes between check and connect changes nothing.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::net::ToSocketAddrs;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

/// A resolution in progress.
pub type Resolving = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Resolves host names for egress. Implement it to plug in another resolver (tests use [`StaticResolver`]).
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (a lower-case DNS name).
    fn resolve(&self, host: &str) -> Resolving;
}

/// System-resolver lookups in flight at once, in the whole process. `getaddrinfo` cannot be cancelled: a lookup
/// whose request timed out keeps its blocking thread, and its place here, until the name server answers. This bound
/// keeps a slow name server from tying up the blocking pool; a lookup that gets no place before its request's
/// deadline fails with the request.
pub const MAX_SYSTEM_LOOKUPS: usize = 8;

static SYSTEM_LOOKUPS: Semaphore = Semaphore::const_new(MAX_SYSTEM_LOOKUPS);

/// The operating system's resolver (`getaddrinfo`, on tokio's blocking pool, at most [`MAX_SYSTEM_LOOKUPS`] at once).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str) -> Resolving {
        let host = host.to_owned();
        Box::pin(bounded_lookup(&SYSTEM_LOOKUPS, move || {
            Ok((host.as_str(), 0).to_socket_addrs()?.map(|a| a.ip()).collect())
        }))
    }
}

/// Runs the blocking `lookup` on the blocking pool once it has a place in `places`, which it keeps until `lookup`
/// returns, even when the caller stops waiting.
async fn bounded_lookup<F>(places: &'static Semaphore, lookup: F) -> io::Result<Vec<IpAddr>>
where
    F: FnOnce() -> io::Result<Vec<IpAddr>> + Send + 'static,
{
    let place = places.acquire().await.map_err(|_| io::Error::other("the resolver has stopped"))?;
    tokio::task::spawn_blocking(move || {
        let _place = place;
        lookup()
    })
    .await
    .map_err(io::Error::other)?
}

/// A resolver with fixed answers, for tests: each name has a list of answers given in turn (the last one repeats),
/// which is how a DNS-rebinding server behaves. Unknown names do not resolve.
#[derive(Debug, Default)]
pub struct StaticResolver {
    answers: Mutex<HashMap<String, Answers>>,
    lookups: AtomicU64,
}

/// A name's answers, and which one the next lookup gets.
#[derive(Debug)]
struct Answers {
    answers: Vec<Vec<IpAddr>>,
    next: usize,
}

impl StaticResolver {
    /// A resolver that knows no names.
    pub fn new() -> Self {
        StaticResolver::default()
    }

    /// Adds answers for `name`, given in turn on successive lookups.
    pub fn answer(self, name: &str, answers: Vec<Vec<IpAddr>>) -> Self {
        if let Ok(mut map) = self.answers.lock() {
            map.insert(name.to_owned(), Answers { answers, next: 0 });
        }
        self
    }

    /// How many lookups were made.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, host: &str) -> Resolving {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let answer = self.answers.lock().ok().and_then(|mut map| {
            let entry = map.get_mut(host)?;
            let answer = entry.answers.get(entry.next).or(entry.answers.last()).cloned();
            entry.next += 1;
            answer
        });
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host in the static resolver"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, mpsc};
    use std::time::{Duration, Instant};

    /// Lookups past the bound wait and fail at their deadline without starting, while lookups whose callers
    /// stopped waiting keep their places until they return.
    #[test]
    fn lookups_past_the_bound_wait_and_fail_at_their_deadline() {
        static PLACES: Semaphore = Semaphore::const_new(2);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
        let started = Arc::new(AtomicU64::new(0));
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let slow = || {
            let (started, released) = (started.clone(), released.clone());
            move || {
                started.fetch_add(1, Ordering::SeqCst);
                let _ = released.lock().map(|r| r.recv());
                Ok(vec![IpAddr::from([127, 0, 0, 1])])
            }
        };
        runtime.block_on(async {
            for _ in 0..3 {
                let lookup = tokio::time::timeout(Duration::from_millis(200), bounded_lookup(&PLACES, slow()));
                assert!(lookup.await.is_err(), "a hung lookup must time out for its caller");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while started.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(started.load(Ordering::SeqCst), 2, "the third lookup must not start while two hold places");
        assert_eq!(PLACES.available_permits(), 0, "timed-out lookups keep their places until they return");
        release.send(()).unwrap();
        release.send(()).unwrap();
        drop(release);
        let answer = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), bounded_lookup(&PLACES, slow())).await });
        assert_eq!(answer.unwrap().unwrap(), vec![IpAddr::from([127, 0, 0, 1])]);
    }
}
