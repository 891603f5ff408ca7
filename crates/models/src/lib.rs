//! Chat models for wasmagent agents: one trait, [`ChatModel`], and adapters for the two wire formats that cover
//! the hosted and local models an operator points an agent at.
//!
//! - [`Provider::OpenAi`] speaks the OpenAI **Chat Completions** format (`POST {base_url}/chat/completions`), which
//!   also serves DeepSeek, Qwen, Moonshot, Zhipu, MiniMax, Doubao and local servers (llama.cpp's `llama-server`,
//!   vLLM, Ollama) through `base_url`.
//! - [`Provider::Anthropic`] speaks the Anthropic **Messages** format (`POST {base_url}/v1/messages`).
//!
//! Both always stream (server-sent events, parsed by the `eventsource-stream` crate over reqwest's byte stream) and
//! hand text to the caller as it arrives. Every exchange is bounded: a connect timeout, a timeout for the first byte
//! and between chunks, a cap on the whole call, a cap on response bytes, and a bounded number of retries with
//! exponential backoff and jitter on 429, 5xx and connection failures, honouring `Retry-After`. A retry happens only
//! while nothing has been handed to the caller, so streamed text is never duplicated; a failure after that is an
//! error whose [`ModelError::produced_output`] is true. 401, 403 and 404 are not retried and name the model and the
//! base URL, never the key (keys come from the environment or a file, see [`ApiKey`], and are redacted from any
//! server message quoted in an error).
//!
//! Model traffic is the operator's, not the guest's: it does not pass through a manifest's `allowed_hosts` or the
//! egress floor, and this crate must not be used for anything a guest asks for. It must not know about agents,
//! tools' implementations or sandboxes either: it turns a [`ChatRequest`] into a [`ChatResponse`] and nothing else.
//! The agent loop that uses it is `wasmagent-agent`.

mod anthropic;
mod error;
mod http;
mod openai;
#[cfg(feature = "test-server")]
pub mod testing;

pub use error::ModelError;
pub use http::{HttpLimits, RetryPolicy};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

/// Which wire format a model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI Chat Completions, and every server compatible with it.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Provider {
    /// The prefix in a model selection (`openai:`, `anthropic:`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    /// The vendor's own endpoint, used when no base URL is given.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The environment variable the key is read from unless the operator names another.
    pub fn default_api_key_env(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
        }
    }
}

/// A model selection, `PROVIDER:MODEL` (`openai:gpt-4o-mini`, `anthropic:claude-sonnet-4-5`, `openai:qwen2.5`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The wire format.
    pub provider: Provider,
    /// The model name sent to the server.
    pub model: String,
}

impl std::str::FromStr for ModelSpec {
    type Err = ModelError;

    fn from_str(spec: &str) -> Result<Self, ModelError> {
        let invalid =
            |why: &str| ModelError::Config(format!("model {spec:?}: {why} (expected openai:MODEL or anthropic:MODEL)"));
        let (provider, model) = spec.split_once(':').ok_or_else(|| invalid("no provider"))?;
        let provider = match provider {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            _ => return Err(invalid("unknown provider")),
        };
        if model.is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
            return Err(invalid("the model name must be 1 to 256 printable characters"));
        }
        Ok(ModelSpec { provider, model: model.to_owned() })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider.as_str(), self.model)
    }
}

/// An API key. Read only from the environment or a file (never from a manifest or a command line), and never
/// printed: its `Debug` shows only whether it is set.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key in environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, ModelError> {
        match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(ApiKey(key.trim().to_owned())),
            _ => Err(ModelError::Config(format!("the API key variable {var} is not set"))),
        }
    }

    /// The key in the first line of `path`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Config(format!("cannot read the API key file {}: {e}", path.display())))?;
        match text.lines().next().map(str::trim) {
            Some(key) if !key.is_empty() => Ok(ApiKey(key.to_owned())),
            _ => Err(ModelError::Config(format!("the API key file {} is empty", path.display()))),
        }
    }

    /// A key given directly, for library users that hold it elsewhere.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Everything needed to reach one model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Provider and model name.
    pub spec: ModelSpec,
    /// The server, without the endpoint path (`http://127.0.0.1:8080/v1` for llama-server); the provider's own
    /// when unset.
    pub base_url: Option<String>,
    /// The key; local servers usually need none.
    pub api_key: Option<ApiKey>,
    /// Timeouts and the response cap.
    pub limits: HttpLimits,
    /// Retries on 429, 5xx and connection failures.
    pub retry: RetryPolicy,
}

impl ModelConfig {
    /// `spec` at its provider's endpoint with default limits and no key.
    pub fn new(spec: ModelSpec) -> Self {
        ModelConfig {
            spec,
            base_url: None,
            api_key: None,
            limits: HttpLimits::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// The base URL in use, without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.base_url.as_deref().unwrap_or(self.spec.provider.default_base_url()).trim_end_matches('/')
    }
}

/// One message of a conversation, in the agent's terms; the adapters translate it to their wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// The user (the task, or a note from the agent loop such as a repair request).
    User {
        /// The text.
        content: String,
    },
    /// A previous answer of the model: text and the tool calls it made.
    Assistant {
        /// Its text (may be empty).
        content: String,
        /// Its tool calls, answered by the [`Message::Tool`] messages that follow.
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call.
    Tool {
        /// The call's id.
        call_id: String,
        /// The result, as text the model reads.
        content: String,
        /// Whether the call failed.
        is_error: bool,
    },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Its name: letters, digits, `_` and `-`, at most 64 characters (what both wire formats accept).
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its arguments (an object schema).
    pub input_schema: Value,
}

/// A tool call proposed by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The id the result must carry.
    pub id: String,
    /// The tool's name, as the model wrote it (it may name no tool).
    pub name: String,
    /// The arguments exactly as the model wrote them: JSON text that may not parse.
    pub arguments: String,
}

/// One model call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The system prompt.
    pub system: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// The tools offered.
    pub tools: Vec<ToolSpec>,
    /// The most tokens the model may generate in this call.
    pub max_output_tokens: u32,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// It finished its answer.
    Stop,
    /// It wants its tool calls answered.
    ToolCalls,
    /// It hit the output-token limit.
    Length,
    /// The provider refused or filtered the answer.
    Refusal,
    /// Anything else the server said, verbatim.
    Other(String),
}

/// Tokens as the server reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (for Anthropic including cache reads and writes).
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A finished model call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// All text, as streamed.
    pub text: String,
    /// The tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Tokens used; zero when the server did not say.
    pub usage: Usage,
    /// Whether the server reported usage at all.
    pub usage_reported: bool,
}

/// What a model hands to the caller while it streams.
pub type TextSink<'a> = &'a mut (dyn FnMut(&str) + Send);

/// The future a [`ChatModel`] returns.
pub type ChatFuture<'a> = Pin<Box<dyn Future<Output = Result<ChatResponse, ModelError>> + Send + 'a>>;

/// A chat model with tool calls and streaming. Implemented by the two adapters ([`connect`]) and by anything else a
/// library user brings (a test double, another vendor).
pub trait ChatModel: Send + Sync {
    /// `provider:model`, for reports.
    fn name(&self) -> String;

    /// Runs one call, handing each piece of text to `on_text` as it arrives. Text handed over is final: an
    /// implementation must not retry after it has called `on_text`.
    fn chat<'a>(&'a self, request: &'a ChatRequest, on_text: TextSink<'a>) -> ChatFuture<'a>;
}

/// The adapter for `config`'s provider.
pub fn connect(config: ModelConfig) -> Result<Box<dyn ChatModel>, ModelError> {
    let client = http::Client::new(config)?;
    Ok(match client.config.spec.provider {
        Provider::OpenAi => Box::new(openai::OpenAiChat { client }),
        Provider::Anthropic => Box::new(anthropic::AnthropicMessages { client }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_selections_parse_and_refuse_what_is_not_one() {
        let spec: ModelSpec = "openai:qwen2.5:7b".parse().unwrap();
        assert_eq!((spec.provider, spec.model.as_str()), (Provider::OpenAi, "qwen2.5:7b"));
        assert_eq!(spec.to_string(), "openai:qwen2.5:7b");
        assert_eq!("anthropic:claude-x".parse::<ModelSpec>().unwrap().provider, Provider::Anthropic);
        for bad in ["gpt-4o", "mistral:large", "openai:", "openai:a\nb"] {
            let error = bad.parse::<ModelSpec>().unwrap_err().to_string();
            assert!(error.contains("expected openai:MODEL"), "{bad}: {error}");
        }
    }

    #[test]
    fn keys_are_never_printed() {
        let key = ApiKey::new("sk-secret");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        let mut config = ModelConfig::new("openai:m".parse().unwrap());
        config.api_key = Some(key);
        assert!(!format!("{config:?}").contains("sk-secret"));
    }
}
