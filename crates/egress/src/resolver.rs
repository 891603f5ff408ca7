//! Name resolution for egress. Each request resolves its host once; the addresses that pass the floor are the
//! only ones the connection may use, so a DNS answer that changes between check and connect changes nothing.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A resolution in progress.
pub type Resolving = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Resolves host names for egress. Implement it to plug in another resolver (tests use [`StaticResolver`]).
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (a lower-case DNS name).
    fn resolve(&self, host: &str) -> Resolving;
}

/// The operating system's resolver (`getaddrinfo`, on tokio's blocking pool).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str) -> Resolving {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    }
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
