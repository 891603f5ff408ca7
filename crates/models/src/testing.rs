//! A scripted model server on loopback, for tests (feature `test-server`): it speaks either wire format over real
//! HTTP with server-sent events, answers each request with the next reply of its script, and validates every
//! request body against the vendor's published JSON Schema for the endpoint (`fixtures/` in this crate, each with
//! its source). Not for anything but tests.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Input tokens every scripted reply reports.
pub const INPUT_TOKENS_PER_REPLY: u64 = 100;
/// Output tokens every scripted reply reports.
pub const OUTPUT_TOKENS_PER_REPLY: u64 = 10;

/// OpenAI's published schema of the Chat Completions request body.
pub const OPENAI_REQUEST_SCHEMA: &str = include_str!("../fixtures/openai-chat-completions-request.schema.json");
/// Anthropic's published schema of the Messages request body.
pub const ANTHROPIC_REQUEST_SCHEMA: &str = include_str!("../fixtures/anthropic-messages-request.schema.json");

/// Which wire format the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Streams this text and finishes.
    Text(String),
    /// Streams `text` (may be empty), then these tool calls (name, raw argument text), and finishes asking for
    /// their results.
    ToolCalls {
        /// Text before the calls.
        text: String,
        /// (tool name, arguments exactly as sent).
        calls: Vec<(String, String)>,
    },
    /// Answers with this status, an optional `Retry-After` and a JSON error body with this message.
    Status {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header value.
        retry_after: Option<String>,
        /// The error message in the body.
        message: String,
    },
    /// Streams this text, then breaks the connection mid-stream.
    CutAfter(String),
    /// Sends the headers, then nothing, forever.
    Hang,
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The JSON body.
    pub body: Value,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// When it arrived.
    pub at: Instant,
    /// Where the body breaks the vendor's schema (empty when valid).
    pub schema_errors: Vec<String>,
}

impl Recorded {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

struct State {
    wire: Wire,
    script: Vec<Reply>,
    validator: jsonschema::Validator,
    requests: Mutex<Vec<Recorded>>,
}

/// A running scripted server. It stops serving when dropped.
pub struct ScriptedServer {
    address: std::net::SocketAddr,
    wire: Wire,
    state: Arc<State>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl ScriptedServer {
    /// Starts a server answering request n with `script[n]`; once the script is spent, the last reply repeats.
    ///
    /// # Panics
    /// When the script is empty or no loopback port can be bound (test set-up errors).
    pub fn start(wire: Wire, script: Vec<Reply>) -> Self {
        Self::start_on(0, wire, script)
    }

    /// [`ScriptedServer::start`] on loopback port `port` (0: any free one).
    ///
    /// # Panics
    /// As [`ScriptedServer::start`], and when `port` is taken.
    pub fn start_on(port: u16, wire: Wire, script: Vec<Reply>) -> Self {
        assert!(!script.is_empty(), "a script needs at least one reply");
        let schema: Value = match wire {
            Wire::OpenAi => serde_json::from_str(OPENAI_REQUEST_SCHEMA),
            Wire::Anthropic => serde_json::from_str(ANTHROPIC_REQUEST_SCHEMA),
        }
        .unwrap_or_else(|e| panic!("the schema fixture is not JSON: {e}"));
        let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("the schema fixture: {e}"));
        let state = Arc::new(State { wire, script, validator, requests: Mutex::new(Vec::new()) });
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind: {e}"));
        listener.set_nonblocking(true).unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap_or_else(|e| panic!("listener: {e}"));
                let path = match served.wire {
                    Wire::OpenAi => "/v1/chat/completions",
                    Wire::Anthropic => "/v1/messages",
                };
                let app = axum::Router::new().route(
                    path,
                    axum::routing::post(move |headers: HeaderMap, body: Bytes| answer(served.clone(), headers, body)),
                );
                let server = axum::serve(listener, app);
                tokio::select! {
                    _ = server => {}
                    _ = stopped => {}
                }
            });
        });
        ScriptedServer { address, wire, state, _shutdown: shutdown }
    }

    /// The base URL to configure the adapter with (`http://127.0.0.1:PORT/v1` for OpenAI, without `/v1` for
    /// Anthropic, as each vendor's clients expect).
    pub fn base_url(&self) -> String {
        match self.wire {
            Wire::OpenAi => format!("http://{}/v1", self.address),
            Wire::Anthropic => format!("http://{}", self.address),
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every schema violation of every request so far, each prefixed with the request's number.
    pub fn schema_errors(&self) -> Vec<String> {
        self.requests()
            .iter()
            .enumerate()
            .flat_map(|(n, r)| r.schema_errors.iter().map(move |e| format!("request {n}: {e}")))
            .collect()
    }
}

async fn answer(state: Arc<State>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| json!({"unparsable body": e.to_string()}));
    let schema_errors = state.validator.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    let headers = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let number = {
        let mut requests = state.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.push(Recorded { body, headers, at: Instant::now(), schema_errors });
        requests.len() - 1
    };
    let reply = state.script[number.min(state.script.len() - 1)].clone();
    let events = match (&reply, state.wire) {
        (Reply::Status { status, retry_after, message }, wire) => {
            let body = match wire {
                Wire::OpenAi => json!({"error": {"message": message, "type": "error", "code": null}}),
                Wire::Anthropic => json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            };
            let mut response = Response::builder()
                .status(StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/json");
            if let Some(wait) = retry_after {
                response = response.header("retry-after", wait);
            }
            return response.body(Body::from(body.to_string())).unwrap_or_default();
        }
        (Reply::Text(text), Wire::OpenAi) => openai_events(number, text, &[], true),
        (Reply::ToolCalls { text, calls }, Wire::OpenAi) => openai_events(number, text, calls, true),
        (Reply::CutAfter(text), Wire::OpenAi) => openai_events(number, text, &[], false),
        (Reply::Text(text), Wire::Anthropic) => anthropic_events(number, text, &[], true),
        (Reply::ToolCalls { text, calls }, Wire::Anthropic) => anthropic_events(number, text, calls, true),
        (Reply::CutAfter(text), Wire::Anthropic) => anthropic_events(number, text, &[], false),
        (Reply::Hang, _) => Vec::new(),
    };
    let chunks = futures_util::stream::iter(events.into_iter().map(|e| Ok::<_, std::io::Error>(Bytes::from(e))));
    let body = match reply {
        Reply::Hang => Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>()),
        // The pause lets hyper flush what came before, so the client sees the cut mid-stream, not before headers.
        Reply::CutAfter(_) => Body::from_stream(chunks.chain(futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Err(std::io::Error::other("the scripted server cuts the stream"))
        }))),
        _ => Body::from_stream(chunks),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_default()
}

/// `text` in pieces of a few characters, as models stream it.
fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(7).map(|c| c.iter().collect()).collect()
}

fn openai_events(number: usize, text: &str, calls: &[(String, String)], finish: bool) -> Vec<String> {
    let chunk = |delta: Value, finish_reason: Value| {
        let chunk = json!({"id": format!("chatcmpl-{number}"), "object": "chat.completion.chunk", "created": 0,
                           "model": "scripted", "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]});
        format!("data: {chunk}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    events.extend(pieces(text).into_iter().map(|piece| chunk(json!({"content": piece}), Value::Null)));
    for (i, (name, arguments)) in calls.iter().enumerate() {
        let half = arguments.char_indices().nth(arguments.chars().count() / 2).map_or(0, |(at, _)| at);
        let (head, tail) = arguments.split_at(half);
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "id": format!("call_{number}_{i}"), "type": "function",
                                    "function": {"name": name, "arguments": head}}]}),
            Value::Null,
        ));
        events.push(chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": tail}}]}), Value::Null));
    }
    if finish {
        let reason = if calls.is_empty() { "stop" } else { "tool_calls" };
        events.push(chunk(json!({}), json!(reason)));
        let usage = json!({"id": format!("chatcmpl-{number}"), "object": "chat.completion.chunk", "choices": [],
                           "usage": {"prompt_tokens": INPUT_TOKENS_PER_REPLY, "completion_tokens": OUTPUT_TOKENS_PER_REPLY,
                                     "total_tokens": INPUT_TOKENS_PER_REPLY + OUTPUT_TOKENS_PER_REPLY}});
        events.push(format!("data: {usage}\n\n"));
        events.push("data: [DONE]\n\n".to_owned());
    }
    events
}

fn anthropic_events(number: usize, text: &str, calls: &[(String, String)], finish: bool) -> Vec<String> {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {"id": format!("msg_{number}"), "type": "message",
               "role": "assistant", "content": [], "model": "scripted", "stop_reason": null,
               "usage": {"input_tokens": INPUT_TOKENS_PER_REPLY, "output_tokens": 1}}}),
    )];
    let mut index = 0;
    if !text.is_empty() {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                                                        "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in pieces(text) {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                                                            "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        if !finish {
            return events;
        }
        events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        index = 1;
    }
    events.push(event("ping", json!({"type": "ping"})));
    for (i, (name, arguments)) in calls.iter().enumerate() {
        let at = index + i;
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": at,
            "content_block": {"type": "tool_use", "id": format!("toolu_{number}_{i}"), "name": name, "input": {}}}),
        ));
        let half = arguments.char_indices().nth(arguments.chars().count() / 2).map_or(0, |(at, _)| at);
        for part in [&arguments[..half], &arguments[half..]] {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": at,
                "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": at})));
    }
    if finish {
        let reason = if calls.is_empty() { "end_turn" } else { "tool_use" };
        events.push(event("message_delta", json!({"type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": OUTPUT_TOKENS_PER_REPLY}})));
        events.push(event("message_stop", json!({"type": "message_stop"})));
    }
    events
}
