//! The shared limiter: every decision is one Lua script run atomically by Redis, so servers sharing a Redis can
//! never admit more than the limits between them.
//!
//! Keys: `{prefix}:rl:{subject}` is a sorted set of the requests in the window (scored by Redis server time in
//! milliseconds), `{prefix}:run:{subject}` a sorted set of the running slots (scored by their start time). Both
//! expire when idle. Clocks of the servers are never used: the script reads `TIME` on Redis.

use super::{Admission, LimitFuture, LimitReason, LimiterUnavailable, Limits, RateLimiter, RunSlot, WindowState};
use redis::aio::MultiplexedConnection;
use redis::{Script, Value};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;

const WINDOW: Duration = Duration::from_secs(60);

/// A running slot older than this is dropped, so a server that crashed while holding slots cannot leak them forever.
/// Runs must end well within it.
const STALE_SLOT: Duration = Duration::from_secs(15 * 60);

/// Lua numbers are doubles: larger limits are sent as this (exact, and unreachable in practice).
const MAX_SCRIPT_LIMIT: u64 = 1 << 53;

/// KEYS: request log, running slots. ARGV: requests per window, concurrent runs, window ms, stale-slot ms, request id.
/// Replies `{0, message}` after deleting keys of the wrong type (the caller refuses), else `{code, requests in
/// window, ms until the oldest leaves or -1}` with code 1 allowed, 2 over the rate, 3 over concurrency.
const ADMIT_SCRIPT: &str = r"
redis.replicate_commands()
local repaired = {}
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'none' and kind ~= 'zset' then
    redis.call('DEL', key)
    table.insert(repaired, key .. ' (' .. kind .. ')')
  end
end
if #repaired > 0 then
  return {0, 'malformed limiter state, deleted: ' .. table.concat(repaired, ', ')}
end
local rate_limit = tonumber(ARGV[1])
local run_limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local stale = tonumber(ARGV[4])
local id = ARGV[5]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local function reset()
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #oldest == 0 then
    return -1
  end
  return math.floor(tonumber(oldest[2]) + window - now)
end
local count = redis.call('ZCARD', KEYS[1])
if count >= rate_limit then
  return {2, count, reset()}
end
redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], window)
count = count + 1
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - stale)
if redis.call('ZCARD', KEYS[2]) >= run_limit then
  return {3, count, reset()}
end
redis.call('ZADD', KEYS[2], now, id)
redis.call('PEXPIRE', KEYS[2], stale)
return {1, count, reset()}
";

/// Limits shared by every server using the same Redis and prefix.
///
/// Fails closed: an unreachable Redis, a call slower than the configured timeout, or stored state of the wrong type
/// is [`LimiterUnavailable`]. Wrong-type keys are deleted by the same script, so the next request is decided again.
pub struct RedisLimiter {
    redis: Arc<Connection>,
    script: Script,
    prefix: String,
}

impl RedisLimiter {
    /// Connects to `url` (`redis://[:password@]host:port/db` or `unix:///path`; TLS is not built in). Every call to
    /// Redis, this connection included, must complete within `timeout`.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, LimiterUnavailable> {
        if timeout.is_zero() {
            return Err(LimiterUnavailable("the Redis timeout must be greater than zero".into()));
        }
        // The URL may carry a password: errors must not repeat it.
        let client = redis::Client::open(url).map_err(|e| {
            LimiterUnavailable(format!("invalid Redis URL ({:?}): {}", e.kind(), e.detail().unwrap_or("")))
        })?;
        let redis =
            Arc::new(Connection { client, timeout, current: Mutex::default(), connecting: AsyncMutex::default() });
        redis.run("connecting to Redis", |mut c| async move { redis::cmd("PING").exec_async(&mut c).await }).await?;
        Ok(RedisLimiter { redis, script: Script::new(ADMIT_SCRIPT), prefix: prefix.to_owned() })
    }

    async fn decide(&self, subject: &str, limits: Limits) -> Result<Admission, LimiterUnavailable> {
        let id = request_id()?;
        let window_key = format!("{}:rl:{subject}", self.prefix);
        let run_key = format!("{}:run:{subject}", self.prefix);
        let mut invocation = self.script.key(&window_key);
        invocation
            .key(&run_key)
            .arg(limits.requests_per_minute.min(MAX_SCRIPT_LIMIT))
            .arg(limits.concurrent_runs.min(MAX_SCRIPT_LIMIT))
            .arg(millis(WINDOW))
            .arg(millis(STALE_SLOT))
            .arg(&id);
        let invocation = &invocation;
        let reply: Value = self
            .redis
            .run("running the rate-limit script", |mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        let decision = decode(reply)?;
        let window = WindowState {
            limit: limits.requests_per_minute,
            remaining: limits.requests_per_minute.saturating_sub(decision.count),
            reset_secs: reset_secs(decision.reset_ms),
        };
        Ok(match decision.verdict {
            Verdict::Rate => {
                Admission::Limited { reason: LimitReason::Rate, window, retry_after_secs: window.reset_secs.max(1) }
            }
            Verdict::Concurrency => {
                Admission::Limited { reason: LimitReason::Concurrency, window, retry_after_secs: 1 }
            }
            Verdict::Allowed => Admission::Allowed { slot: self.slot(run_key, id), window },
        })
    }

    /// A slot whose drop removes `id` from `run_key` in the background; if that cannot happen, the stale timeout
    /// frees it.
    fn slot(&self, run_key: String, id: String) -> RunSlot {
        let connection = self.redis.clone();
        RunSlot::new(move || {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                tracing::warn!(key = %run_key, "run slot dropped outside a Tokio runtime; the stale timeout frees it");
                return;
            };
            runtime.spawn(async move {
                let mut release = redis::cmd("ZREM");
                release.arg(&run_key).arg(&id);
                let released =
                    connection.run("releasing a run slot", |mut c| async move { release.exec_async(&mut c).await });
                if let Err(e) = released.await {
                    tracing::warn!(key = %run_key, error = %e, "run slot not released; the stale timeout frees it");
                }
            });
        })
    }
}

impl RateLimiter for RedisLimiter {
    fn admit<'a>(&'a self, subject: &'a str, limits: Limits) -> LimitFuture<'a, Result<Admission, LimiterUnavailable>> {
        Box::pin(self.decide(subject, limits))
    }
}

/// One multiplexed connection shared by all calls, dropped after any failure so the next call reconnects. (A
/// connection that stopped answering is never reused: waiting for TCP to notice could take many minutes.)
struct Connection {
    client: redis::Client,
    timeout: Duration,
    /// The connection and its generation, which tells a failed call whether the connection it used is still current.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Held while connecting, so an outage does not make every waiting request open its own connection; counts the
    /// connections made.
    connecting: AsyncMutex<u64>,
}

impl Connection {
    /// Runs `call` on the connection (connecting first if needed) within the timeout. Errors and timeouts become
    /// [`LimiterUnavailable`] and retire the connection.
    async fn run<T, F, Fut>(&self, what: &str, call: F) -> Result<T, LimiterUnavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut used = None;
        let attempt = async {
            let (generation, connection) = self.get().await?;
            used = Some(generation);
            call(connection).await
        };
        let failure = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => format!("{what}: {e}"),
            Err(_) => format!("{what}: no answer from Redis within {:?}", self.timeout),
        };
        if let Some(generation) = used {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
            }
        }
        Err(LimiterUnavailable(failure))
    }

    async fn get(&self) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut generations = self.connecting.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let connection = self.client.get_multiplexed_async_connection().await?;
        *generations += 1;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((*generations, connection.clone()));
        Ok((*generations, connection))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// 128 random bits in hex: the request's entry in the window and, if admitted, its slot.
fn request_id() -> Result<String, LimiterUnavailable> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| LimiterUnavailable(format!("no randomness for a request id: {e}")))?;
    Ok(hex::encode(bytes))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whole seconds until the oldest request leaves the window, at least 1 while the window is not empty (as
/// [`super::MemoryLimiter`] reports it), never more than the window.
fn reset_secs(reset_ms: Option<u64>) -> u64 {
    reset_ms.map_or(0, |ms| (ms / 1000).clamp(1, WINDOW.as_secs()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Rate,
    Concurrency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    verdict: Verdict,
    /// Requests in the window, this one included if it was counted.
    count: u64,
    /// Milliseconds until the oldest request leaves the window; `None` when the window is empty.
    reset_ms: Option<u64>,
}

/// Reads the script's reply; anything but the documented shapes is [`LimiterUnavailable`].
fn decode(reply: Value) -> Result<Decision, LimiterUnavailable> {
    let malformed = || LimiterUnavailable("the rate-limit script returned a malformed reply".into());
    let Value::Array(items) = reply else { return Err(malformed()) };
    match items.as_slice() {
        [Value::Int(0), Value::BulkString(message)] => {
            Err(LimiterUnavailable(String::from_utf8_lossy(message).into_owned()))
        }
        [Value::Int(code), Value::Int(count), Value::Int(reset_ms)] => {
            let verdict = match code {
                1 => Verdict::Allowed,
                2 => Verdict::Rate,
                3 => Verdict::Concurrency,
                _ => return Err(malformed()),
            };
            let count = u64::try_from(*count).map_err(|_| malformed())?;
            let reset_ms = match reset_ms {
                -1 => None,
                ms => Some(u64::try_from(*ms).unwrap_or(0)),
            };
            Ok(Decision { verdict, count, reset_ms })
        }
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode_and_anything_else_is_unavailable() {
        let reply = |items: Vec<Value>| decode(Value::Array(items));
        assert_eq!(
            reply(vec![Value::Int(1), Value::Int(3), Value::Int(59_500)]),
            Ok(Decision { verdict: Verdict::Allowed, count: 3, reset_ms: Some(59_500) })
        );
        assert_eq!(
            reply(vec![Value::Int(2), Value::Int(0), Value::Int(-1)]),
            Ok(Decision { verdict: Verdict::Rate, count: 0, reset_ms: None })
        );
        assert_eq!(
            reply(vec![Value::Int(3), Value::Int(1), Value::Int(-5)]).map(|d| d.reset_ms),
            Ok(Some(0)),
            "a negative reset (clock step) is clamped, not an error"
        );
        let message = reply(vec![Value::Int(0), Value::BulkString(b"malformed limiter state, deleted: k".to_vec())]);
        assert_eq!(message, Err(LimiterUnavailable("malformed limiter state, deleted: k".into())));
        for bad in [
            Value::Nil,
            Value::Okay,
            Value::Int(1),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(4), Value::Int(1), Value::Int(1)]),
            Value::Array(vec![Value::Int(1), Value::Int(-1), Value::Int(1)]),
            Value::Array(vec![Value::Int(1), Value::BulkString(b"1".to_vec()), Value::Int(1)]),
            Value::Array(vec![Value::Int(1), Value::Int(1), Value::Int(1), Value::Int(1)]),
        ] {
            assert!(decode(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reset_is_whole_seconds_within_the_window() {
        assert_eq!(reset_secs(None), 0);
        assert_eq!(reset_secs(Some(0)), 1);
        assert_eq!(reset_secs(Some(59_999)), 59);
        assert_eq!(reset_secs(Some(600_000)), 60);
    }
}
