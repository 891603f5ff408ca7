//! The OpenAI Chat Completions wire format (`POST {base_url}/chat/completions`, streamed).

use crate::http::{Client, Parsed, WireError, WireParser};
use crate::{ChatFuture, ChatModel, ChatRequest, ChatResponse, FinishReason, Message, TextSink, ToolCall, Usage};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// The most tool calls one response may carry; more is a protocol error rather than unbounded memory.
pub(crate) const MAX_TOOL_CALLS: usize = 128;

/// A model behind a Chat Completions endpoint.
pub(crate) struct OpenAiChat {
    pub(crate) client: Client,
}

impl ChatModel for OpenAiChat {
    fn name(&self) -> String {
        self.client.config.spec.to_string()
    }

    fn chat<'a>(&'a self, request: &'a ChatRequest, on_text: TextSink<'a>) -> ChatFuture<'a> {
        Box::pin(async move {
            let official = self.client.config.base_url() == crate::Provider::OpenAi.default_base_url();
            let body = request_body(&self.client.config.spec.model, request, official);
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
            if let Some(key) = &self.client.config.api_key {
                let value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| crate::ModelError::Config("the API key is not a valid header value".to_owned()))?;
                headers.insert(AUTHORIZATION, value);
            }
            let new_parser = || Box::new(StreamParser::default()) as Box<dyn WireParser>;
            self.client.stream("/chat/completions", headers, &body, &new_parser, on_text).await
        })
    }
}

/// The request body. OpenAI's own endpoint takes `max_completion_tokens` (its reasoning models refuse the older
/// `max_tokens`); compatible servers (llama.cpp, Ollama, vLLM) all read `max_tokens`.
pub(crate) fn request_body(model: &str, request: &ChatRequest, official_endpoint: bool) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for message in &request.messages {
        messages.push(match message {
            Message::User { content } => json!({"role": "user", "content": content}),
            Message::Assistant { content, tool_calls } => {
                let mut message = json!({"role": "assistant", "content": content});
                if !tool_calls.is_empty() {
                    if content.is_empty() {
                        message["content"] = Value::Null;
                    }
                    message["tool_calls"] = tool_calls
                        .iter()
                        .map(|call| {
                            json!({"id": call.id, "type": "function",
                                   "function": {"name": call.name, "arguments": call.arguments}})
                        })
                        .collect();
                }
                message
            }
            Message::Tool { call_id, content, .. } => {
                json!({"role": "tool", "tool_call_id": call_id, "content": content})
            }
        });
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let limit_field = if official_endpoint { "max_completion_tokens" } else { "max_tokens" };
    body[limit_field] = json!(request.max_output_tokens);
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": tool.name, "description": tool.description, "parameters": tool.input_schema}})
            })
            .collect();
    }
    body
}

/// A tool call being assembled from deltas.
#[derive(Default)]
struct PartialCall {
    index: u64,
    id: String,
    name: String,
    arguments: String,
}

/// The state of one streamed completion.
#[derive(Default)]
struct StreamParser {
    text: String,
    calls: Vec<PartialCall>,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

impl WireParser for StreamParser {
    fn event(&mut self, _event: &str, data: &str) -> Result<Parsed, WireError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Parsed::Done);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| WireError {
            message: format!("a stream chunk is not JSON ({e}): {}", excerpt(data)),
            retryable: false,
        })?;
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_owned);
            return Err(WireError { message: format!("the server reported an error: {message}"), retryable: false });
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
            self.usage =
                Some(Usage { input_tokens: count("prompt_tokens"), output_tokens: count("completion_tokens") });
        }
        let Some(choice) = chunk.get("choices").and_then(Value::as_array).and_then(|c| c.first()) else {
            return Ok(Parsed::Continue(None));
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(reason.to_owned());
        }
        let Some(delta) = choice.get("delta") else { return Ok(Parsed::Continue(None)) };
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for (position, call) in calls.iter().enumerate() {
                self.tool_call_delta(position, call)?;
            }
        }
        let text = delta.get("content").and_then(Value::as_str).map(str::to_owned);
        if let Some(text) = &text {
            self.text.push_str(text);
        }
        Ok(Parsed::Continue(text))
    }

    fn finish(self: Box<Self>) -> Result<ChatResponse, String> {
        if !self.done && self.finish.is_none() {
            return Err("it ended without a finish_reason or [DONE]".to_owned());
        }
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .enumerate()
            .map(|(n, call)| ToolCall {
                id: if call.id.is_empty() { format!("call_{n}") } else { call.id },
                name: call.name,
                arguments: call.arguments,
            })
            .collect();
        let finish_reason = match self.finish.as_deref() {
            Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
            Some("length") => FinishReason::Length,
            Some("content_filter") => FinishReason::Refusal,
            Some("stop") | None if !tool_calls.is_empty() => FinishReason::ToolCalls,
            Some("stop") | None => FinishReason::Stop,
            Some(other) => FinishReason::Other(other.to_owned()),
        };
        Ok(ChatResponse {
            text: self.text,
            tool_calls,
            finish_reason,
            usage: self.usage.unwrap_or_default(),
            usage_reported: self.usage.is_some(),
        })
    }
}

impl StreamParser {
    fn tool_call_delta(&mut self, position: usize, delta: &Value) -> Result<(), WireError> {
        let index = delta.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
        let slot = match self.calls.iter().position(|call| call.index == index) {
            Some(slot) => slot,
            None if self.calls.len() >= MAX_TOOL_CALLS => {
                return Err(WireError {
                    message: format!("the response has more than {MAX_TOOL_CALLS} tool calls"),
                    retryable: false,
                });
            }
            None => {
                self.calls.push(PartialCall { index, ..PartialCall::default() });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[slot];
        if let Some(id) = delta.get("id").and_then(Value::as_str) {
            call.id = id.to_owned();
        }
        if let Some(function) = delta.get("function") {
            if let Some(name) = function.get("name").and_then(Value::as_str) {
                call.name.push_str(name);
            }
            if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                call.arguments.push_str(arguments);
            }
        }
        Ok(())
    }
}

/// The start of `data`, for error messages.
pub(crate) fn excerpt(data: &str) -> String {
    data.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(events: &[&str]) -> Result<ChatResponse, String> {
        let mut parser = Box::new(StreamParser::default());
        for data in events {
            match parser.event("", data) {
                Ok(Parsed::Done) => break,
                Ok(Parsed::Continue(_)) => {}
                Err(error) => return Err(error.message),
            }
        }
        parser.finish()
    }

    #[test]
    fn tool_calls_are_assembled_from_deltas() {
        let response = parse(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Let me "}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"look."}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"search_docs","arguments":"{\"qu"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ery\":\"x\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#,
            "[DONE]",
        ])
        .unwrap();
        assert_eq!(response.text, "Let me look.");
        assert_eq!(response.tool_calls.len(), 1);
        assert_eq!(response.tool_calls[0].id, "call_a");
        assert_eq!(response.tool_calls[0].arguments, r#"{"query":"x"}"#);
        assert_eq!(response.finish_reason, FinishReason::ToolCalls);
        assert_eq!(response.usage, Usage { input_tokens: 11, output_tokens: 7 });
    }

    #[test]
    fn a_stream_without_an_end_is_incomplete_and_garbage_is_an_error() {
        assert!(parse(&[r#"{"choices":[{"index":0,"delta":{"content":"half"}}]}"#]).unwrap_err().contains("[DONE]"));
        assert!(parse(&["{not json"]).unwrap_err().contains("not JSON"));
        assert!(parse(&[r#"{"error":{"message":"boom"}}"#]).unwrap_err().contains("boom"));
        let many: Vec<String> = (0..200)
            .map(|i| {
                format!(r#"{{"choices":[{{"delta":{{"tool_calls":[{{"index":{i},"function":{{"name":"f"}}}}]}}}}]}}"#)
            })
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(parse(&many).unwrap_err().contains("more than 128"));
    }
}
