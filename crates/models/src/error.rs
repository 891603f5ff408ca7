//! Why a model call failed.

use std::time::Duration;

/// Why a model call failed. Messages name the model and the base URL; never the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The selection or the key is unusable; nothing was sent.
    #[error("{0}")]
    Config(String),
    /// 401 or 403: the server refused the key (or the lack of one).
    #[error("{model} at {base_url}: HTTP {status}: the server refused the credentials (check the API key variable){}", detail(.message))]
    Auth {
        /// `provider:model`.
        model: String,
        /// The base URL.
        base_url: String,
        /// 401 or 403.
        status: u16,
        /// The server's message, with the key redacted.
        message: String,
    },
    /// 404: no such model or endpoint at that base URL.
    #[error("{model} at {base_url}: HTTP 404: the server does not know this model or endpoint (check the model name and the base URL){}", detail(.message))]
    NotFound {
        /// `provider:model`.
        model: String,
        /// The base URL.
        base_url: String,
        /// The server's message, with the key redacted.
        message: String,
    },
    /// Any other error status, or 429/5xx once the retries are spent.
    #[error("{model} at {base_url}: HTTP {status}{}{}", attempts_note(*.attempts), detail(.message))]
    Status {
        /// `provider:model`.
        model: String,
        /// The base URL.
        base_url: String,
        /// The status.
        status: u16,
        /// How many requests were sent.
        attempts: u32,
        /// The server's message, with the key redacted.
        message: String,
    },
    /// The server could not be reached.
    #[error("{model} at {base_url}: cannot connect{}: {message}", attempts_note(*.attempts))]
    Connect {
        /// `provider:model`.
        model: String,
        /// The base URL.
        base_url: String,
        /// How many attempts were made.
        attempts: u32,
        /// What went wrong.
        message: String,
    },
    /// The server took too long: to answer, between two chunks, or for the whole call.
    #[error("{model} at {base_url}: no answer within {} ms ({what})", .after.as_millis())]
    Timeout {
        /// `provider:model`.
        model: String,
        /// The base URL.
        base_url: String,
        /// Which limit.
        what: &'static str,
        /// The limit.
        after: Duration,
        /// Whether text had already been handed to the caller.
        produced_output: bool,
    },
    /// The response was larger than the cap.
    #[error("{model} at {base_url}: the response exceeded {limit} bytes")]
    TooLarge {
        /// `provider:model`.
        model: String,
        /// The base URL.
        base_url: String,
        /// The cap.
        limit: u64,
        /// Whether text had already been handed to the caller.
        produced_output: bool,
    },
    /// The stream ended or broke before the model finished.
    #[error("{model} at {base_url}: the response stream was cut before the model finished ({message})")]
    StreamCut {
        /// `provider:model`.
        model: String,
        /// The base URL.
        base_url: String,
        /// What was seen.
        message: String,
        /// Whether text had already been handed to the caller.
        produced_output: bool,
    },
    /// The server sent something that is not the wire format (bad JSON, an error event, a wrong content type).
    #[error("{model} at {base_url}: {message}")]
    Protocol {
        /// `provider:model`.
        model: String,
        /// The base URL.
        base_url: String,
        /// What was wrong, with the key redacted.
        message: String,
        /// Whether text had already been handed to the caller.
        produced_output: bool,
    },
}

impl ModelError {
    /// Whether text reached the caller before the failure. A fallback model may be tried only when it did not.
    pub fn produced_output(&self) -> bool {
        match self {
            ModelError::Timeout { produced_output, .. }
            | ModelError::TooLarge { produced_output, .. }
            | ModelError::StreamCut { produced_output, .. }
            | ModelError::Protocol { produced_output, .. } => *produced_output,
            _ => false,
        }
    }
}

fn detail(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(": {message}") }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() }
}
