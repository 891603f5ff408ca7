//! The HTTP exchange both adapters share: one streamed POST, bounded in time and size, retried while nothing has
//! reached the caller.

use crate::{ChatResponse, ModelConfig, ModelError, TextSink};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Timeouts and the response cap of one model call. Every one is finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// To open a connection.
    pub connect_timeout: Duration,
    /// For the response headers, and between two chunks of the stream (a local model may think a while before its
    /// first token).
    pub idle_timeout: Duration,
    /// For the whole call, retries and their waits included.
    pub call_timeout: Duration,
    /// Bytes of one response (the whole event stream, or an error body).
    pub max_response_bytes: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            call_timeout: Duration::from_secs(600),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Retries on 408, 409, 429, 5xx, connection failures and streams cut before any text: exponential backoff from
/// `base_delay`, doubled each time up to `max_delay`, with jitter; a `Retry-After` (or `retry-after-ms`) from the
/// server replaces the computed delay, and one longer than `max_delay` ends the retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first delay.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 3, base_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based) when the server gave no `Retry-After`: half the exponential
    /// delay plus up to the other half at random, so clients that failed together do not retry together.
    fn backoff(&self, retry: u32) -> Duration {
        let exponential = self.base_delay.saturating_mul(1u32 << retry.saturating_sub(1).min(16)).min(self.max_delay);
        let half = exponential / 2;
        let jitter = getrandom::u32().unwrap_or(0) as f64 / u32::MAX as f64;
        half + half.mul_f64(jitter)
    }
}

/// What a wire format does with the events of one response.
pub(crate) trait WireParser: Send {
    /// Handles one server-sent event, returning text for the caller, or whether the stream is complete.
    fn event(&mut self, event: &str, data: &str) -> Result<Parsed, WireError>;
    /// The response once the stream ended, or why it is incomplete.
    fn finish(self: Box<Self>) -> Result<ChatResponse, String>;
}

/// What one event produced.
pub(crate) enum Parsed {
    /// Text to hand over, if any; more events follow.
    Continue(Option<String>),
    /// The model finished; the stream may be closed.
    Done,
}

/// An error the server reported inside the stream.
pub(crate) struct WireError {
    pub(crate) message: String,
    /// Whether trying again may help (an overloaded server).
    pub(crate) retryable: bool,
}

/// The HTTP client of one model.
pub(crate) struct Client {
    pub(crate) config: ModelConfig,
    http: reqwest::Client,
}

/// How one attempt failed.
enum Failure {
    Retry { error: ModelError, retry_after: Option<Duration> },
    Fatal(ModelError),
}

impl Client {
    pub(crate) fn new(config: ModelConfig) -> Result<Self, ModelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.limits.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ModelError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { config, http })
    }

    fn model(&self) -> String {
        self.config.spec.to_string()
    }

    fn base_url(&self) -> String {
        self.config.base_url().to_owned()
    }

    /// Replaces the key wherever a server echoed it, and keeps messages short.
    fn redact(&self, text: &str) -> String {
        let mut text = text.trim().to_owned();
        if let Some(key) = &self.config.api_key
            && !key.expose().is_empty()
        {
            text = text.replace(key.expose(), "<redacted>");
        }
        if text.len() > 500 {
            let mut end = 500;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        text
    }

    /// POSTs `body` to `{base_url}{path}` and streams the answer through `parser`, retrying per the policy while
    /// nothing has reached `on_text`.
    pub(crate) async fn stream(
        &self,
        path: &str,
        headers: HeaderMap,
        body: &Value,
        new_parser: &(dyn Fn() -> Box<dyn WireParser> + Send + Sync),
        on_text: TextSink<'_>,
    ) -> Result<ChatResponse, ModelError> {
        let limit = self.config.limits.call_timeout;
        let mut produced = false;
        let attempts = async {
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                match self.attempt(path, &headers, body, new_parser(), &mut *on_text, &mut produced, attempt).await {
                    Ok(response) => return Ok(response),
                    Err(Failure::Retry { error, retry_after })
                        if !produced && attempt <= self.config.retry.max_retries =>
                    {
                        let wait = match retry_after {
                            Some(wait) if wait > self.config.retry.max_delay => return Err(error),
                            Some(wait) => wait,
                            None => self.config.retry.backoff(attempt),
                        };
                        tracing::debug!(model = %self.model(), attempt, ?wait, %error, "retrying a model call");
                        tokio::time::sleep(wait).await;
                    }
                    Err(Failure::Retry { error, .. } | Failure::Fatal(error)) => return Err(error),
                }
            }
        };
        match tokio::time::timeout(limit, attempts).await {
            Ok(result) => result,
            Err(_) => Err(ModelError::Timeout {
                model: self.model(),
                base_url: self.base_url(),
                what: "the whole call",
                after: limit,
                produced_output: produced,
            }),
        }
    }

    #[allow(clippy::too_many_arguments, reason = "one attempt of `stream`, which owns all of these")]
    async fn attempt(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &Value,
        mut parser: Box<dyn WireParser>,
        on_text: TextSink<'_>,
        produced: &mut bool,
        attempt: u32,
    ) -> Result<ChatResponse, Failure> {
        let (model, base_url) = (self.model(), self.base_url());
        let idle = self.config.limits.idle_timeout;
        let cap = self.config.limits.max_response_bytes;
        let request = self
            .http
            .post(format!("{base_url}{path}"))
            .headers(headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send();
        let response = match tokio::time::timeout(idle, request).await {
            Err(_) => {
                let error = ModelError::Timeout {
                    model,
                    base_url,
                    what: "the response headers",
                    after: idle,
                    produced_output: false,
                };
                return Err(Failure::Retry { error, retry_after: None });
            }
            Ok(Err(error)) => {
                let message = self.redact(&error_chain(&error));
                return Err(Failure::Retry {
                    error: ModelError::Connect { model, base_url, attempts: attempt, message },
                    retry_after: None,
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after = retry_after(response.headers());
            let message = self.redact(&error_message(&read_capped(response, 64 * 1024, idle).await));
            let error = match status {
                401 | 403 => ModelError::Auth { model, base_url, status, message },
                404 => ModelError::NotFound { model, base_url, message },
                _ => ModelError::Status { model, base_url, status, attempts: attempt, message },
            };
            return Err(match status {
                408 | 409 | 429 | 500..=599 => Failure::Retry { error, retry_after },
                _ => Failure::Fatal(error),
            });
        }
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            let message = format!("expected a text/event-stream response, got content-type {content_type:?}");
            return Err(Failure::Fatal(ModelError::Protocol { model, base_url, message, produced_output: false }));
        }

        let mut received: u64 = 0;
        let bytes = response.bytes_stream().map(move |chunk| {
            let chunk = chunk?;
            received = received.saturating_add(chunk.len() as u64);
            Ok::<_, reqwest::Error>((chunk, received))
        });
        // The cap is checked on the raw bytes, before the SSE parser buffers anything.
        let mut too_large = false;
        let capped = bytes.map(|item| match item {
            Ok((_, total)) if total > cap => Err(StreamFault::TooLarge),
            Ok((chunk, _)) => Ok(chunk),
            Err(error) => Err(StreamFault::Read(error_chain(&error))),
        });
        let mut events = capped.eventsource();
        loop {
            let next = match tokio::time::timeout(idle, events.next()).await {
                Err(_) => {
                    let error = ModelError::Timeout {
                        model,
                        base_url,
                        what: "the next chunk of the stream",
                        after: idle,
                        produced_output: *produced,
                    };
                    return Err(Failure::Retry { error, retry_after: None });
                }
                Ok(next) => next,
            };
            let event = match next {
                None => break,
                Some(Ok(event)) => event,
                Some(Err(eventsource_stream::EventStreamError::Transport(StreamFault::TooLarge))) => {
                    too_large = true;
                    break;
                }
                Some(Err(eventsource_stream::EventStreamError::Transport(StreamFault::Read(message)))) => {
                    let error = ModelError::StreamCut {
                        model,
                        base_url,
                        message: self.redact(&message),
                        produced_output: *produced,
                    };
                    return Err(Failure::Retry { error, retry_after: None });
                }
                Some(Err(error)) => {
                    let message = format!("the event stream is malformed: {error}");
                    return Err(Failure::Fatal(ModelError::Protocol {
                        model,
                        base_url,
                        message,
                        produced_output: *produced,
                    }));
                }
            };
            match parser.event(&event.event, &event.data) {
                Ok(Parsed::Continue(Some(text))) if !text.is_empty() => {
                    *produced = true;
                    on_text(&text);
                }
                Ok(Parsed::Continue(_)) => {}
                Ok(Parsed::Done) => break,
                Err(WireError { message, retryable }) => {
                    let error = ModelError::Protocol {
                        model,
                        base_url,
                        message: self.redact(&message),
                        produced_output: *produced,
                    };
                    return Err(if retryable {
                        Failure::Retry { error, retry_after: None }
                    } else {
                        Failure::Fatal(error)
                    });
                }
            }
        }
        if too_large {
            return Err(Failure::Fatal(ModelError::TooLarge {
                model,
                base_url,
                limit: cap,
                produced_output: *produced,
            }));
        }
        parser.finish().map_err(|message| Failure::Retry {
            error: ModelError::StreamCut { model, base_url, message, produced_output: *produced },
            retry_after: None,
        })
    }
}

/// Why the byte stream under the SSE parser stopped.
#[derive(Debug)]
enum StreamFault {
    TooLarge,
    Read(String),
}

impl std::fmt::Display for StreamFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamFault::TooLarge => f.write_str("the response is too large"),
            StreamFault::Read(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for StreamFault {}

/// An error and its causes, one line (reqwest's own message alone is often just "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The wait a 429 or 503 asks for: `retry-after-ms`, else `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |value: &HeaderValue| value.to_str().ok().map(str::trim).map(str::to_owned);
    if let Some(ms) = headers.get("retry-after-ms").and_then(text).and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get(RETRY_AFTER).and_then(text)?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(&value).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// At most `cap` bytes of an error body, as text.
async fn read_capped(response: reqwest::Response, cap: usize, idle: Duration) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(idle, stream.next()).await {
        let room = cap.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= cap {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The message inside an error body: `error.message` in both vendors' formats, else the body itself.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| {
            let error = value.get("error")?;
            error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| error.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_every_form() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        headers.insert("retry-after-ms", HeaderValue::from_static("soon"));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("whenever"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let policy = RetryPolicy::default();
        for retry in 1..40 {
            let wait = policy.backoff(retry);
            let full = policy.base_delay.saturating_mul(1 << (retry - 1).min(16)).min(policy.max_delay);
            assert!(wait >= full / 2 && wait <= full, "retry {retry}: {wait:?}");
        }
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(error_message(r#"{"error":{"message":"no such model","type":"x"}}"#), "no such model");
        assert_eq!(error_message(r#"{"type":"error","error":{"type":"x","message":"slow down"}}"#), "slow down");
        assert_eq!(error_message("plain text"), "plain text");
    }
}
