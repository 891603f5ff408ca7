//! The Anthropic Messages wire format (`POST {base_url}/v1/messages`, streamed).

use crate::http::{Client, Parsed, WireError, WireParser};
use crate::openai::{MAX_TOOL_CALLS, excerpt};
use crate::{ChatFuture, ChatModel, ChatRequest, ChatResponse, FinishReason, Message, TextSink, ToolCall, Usage};
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

/// The API version this adapter speaks.
const API_VERSION: &str = "2023-06-01";

/// A model behind a Messages endpoint.
pub(crate) struct AnthropicMessages {
    pub(crate) client: Client,
}

impl ChatModel for AnthropicMessages {
    fn name(&self) -> String {
        self.client.config.spec.to_string()
    }

    fn chat<'a>(&'a self, request: &'a ChatRequest, on_text: TextSink<'a>) -> ChatFuture<'a> {
        Box::pin(async move {
            let body = request_body(&self.client.config.spec.model, request);
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
            headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
            if let Some(key) = &self.client.config.api_key {
                let value = HeaderValue::from_str(key.expose())
                    .map_err(|_| crate::ModelError::Config("the API key is not a valid header value".to_owned()))?;
                headers.insert("x-api-key", value);
            }
            let new_parser = || Box::new(StreamParser::default()) as Box<dyn WireParser>;
            self.client.stream("/v1/messages", headers, &body, &new_parser, on_text).await
        })
    }
}

/// Tool-use ids must match `^[a-zA-Z0-9_-]+$`; ids another server made up are mapped onto that, the same way for
/// the call and its result.
fn tool_use_id(id: &str) -> String {
    let id: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    if id.is_empty() { "call".to_owned() } else { id }
}

/// A text block: the API refuses empty ones.
fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": if text.is_empty() { "(empty)" } else { text }})
}

/// The request body: tool results and user text travel as one user turn, as the API expects after a tool use.
pub(crate) fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, block: Value| match turns.last_mut() {
        Some((last, blocks)) if *last == role => blocks.push(block),
        _ => turns.push((role, vec![block])),
    };
    for message in &request.messages {
        match message {
            Message::User { content } => push("user", text_block(content)),
            Message::Tool { call_id, content, is_error } => push(
                "user",
                json!({"type": "tool_result", "tool_use_id": tool_use_id(call_id), "content": content,
                       "is_error": is_error}),
            ),
            Message::Assistant { content, tool_calls } => {
                if !content.is_empty() {
                    push("assistant", text_block(content));
                }
                for call in tool_calls {
                    let input = match serde_json::from_str::<Value>(&call.arguments) {
                        Ok(Value::Object(input)) => Value::Object(input),
                        _ => Value::Object(Map::new()),
                    };
                    push(
                        "assistant",
                        json!({"type": "tool_use", "id": tool_use_id(&call.id), "name": call.name,
                                             "input": input}),
                    );
                }
            }
        }
    }
    let messages: Vec<Value> =
        turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_output_tokens.max(1),
        "messages": messages,
        "stream": true,
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                let mut schema = match &tool.input_schema {
                    Value::Object(schema) => schema.clone(),
                    _ => Map::new(),
                };
                schema.insert("type".to_owned(), json!("object"));
                json!({"name": tool.name, "description": tool.description, "input_schema": schema})
            })
            .collect();
    }
    body
}

/// A content block being assembled.
enum Block {
    Text,
    ToolUse { id: String, name: String, initial: Value, json: String },
    Other,
}

/// The state of one streamed message.
#[derive(Default)]
struct StreamParser {
    text: String,
    blocks: Vec<(u64, Block)>,
    stop_reason: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

impl WireParser for StreamParser {
    fn event(&mut self, event: &str, data: &str) -> Result<Parsed, WireError> {
        let value: Value = serde_json::from_str(data).map_err(|e| WireError {
            message: format!("a stream event is not JSON ({e}): {}", excerpt(data)),
            retryable: false,
        })?;
        let kind = if event.is_empty() { value.get("type").and_then(Value::as_str).unwrap_or("") } else { event };
        let count = |usage: &Value, field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                if let Some(usage) = value.pointer("/message/usage") {
                    let input = count(usage, "input_tokens")
                        .saturating_add(count(usage, "cache_creation_input_tokens"))
                        .saturating_add(count(usage, "cache_read_input_tokens"));
                    self.usage = Some(Usage { input_tokens: input, output_tokens: count(usage, "output_tokens") });
                }
            }
            "content_block_start" => {
                let index = value.get("index").and_then(Value::as_u64).unwrap_or(self.blocks.len() as u64);
                let block = value.get("content_block").unwrap_or(&Value::Null);
                let block = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("").to_owned();
                        self.add_block(index, Block::Text)?;
                        self.text.push_str(&text);
                        return Ok(Parsed::Continue(Some(text)));
                    }
                    Some("tool_use") => Block::ToolUse {
                        id: block.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                        name: block.get("name").and_then(Value::as_str).unwrap_or("").to_owned(),
                        initial: block.get("input").cloned().unwrap_or(Value::Null),
                        json: String::new(),
                    },
                    _ => Block::Other,
                };
                self.add_block(index, block)?;
            }
            "content_block_delta" => {
                let index = value.get("index").and_then(Value::as_u64);
                let delta = value.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("").to_owned();
                        self.text.push_str(&text);
                        return Ok(Parsed::Continue(Some(text)));
                    }
                    Some("input_json_delta") => {
                        let partial = delta.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        let block = self.blocks.iter_mut().find(|(i, _)| Some(*i) == index);
                        match block {
                            Some((_, Block::ToolUse { json, .. })) => json.push_str(partial),
                            _ => {
                                return Err(WireError {
                                    message: "an input_json_delta for a block that is not a tool use".to_owned(),
                                    retryable: false,
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_owned());
                }
                if let Some(usage) = value.get("usage") {
                    let total = self.usage.get_or_insert_default();
                    if let Some(output) = usage.get("output_tokens").and_then(Value::as_u64) {
                        total.output_tokens = output;
                    }
                    if let Some(input) = usage.get("input_tokens").and_then(Value::as_u64) {
                        total.input_tokens = input;
                    }
                }
            }
            "message_stop" => {
                self.done = true;
                return Ok(Parsed::Done);
            }
            "error" => {
                let error_type = value.pointer("/error/type").and_then(Value::as_str).unwrap_or("error");
                let message = value.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
                return Err(WireError {
                    message: format!("the server reported {error_type}: {message}"),
                    retryable: matches!(error_type, "overloaded_error" | "api_error" | "rate_limit_error"),
                });
            }
            _ => {}
        }
        Ok(Parsed::Continue(None))
    }

    fn finish(self: Box<Self>) -> Result<ChatResponse, String> {
        if !self.done && self.stop_reason.is_none() {
            return Err("it ended without message_stop".to_owned());
        }
        let tool_calls: Vec<ToolCall> = self
            .blocks
            .into_iter()
            .filter_map(|(_, block)| match block {
                Block::ToolUse { id, name, initial, json } => {
                    Some(ToolCall { id, name, arguments: if json.is_empty() { initial.to_string() } else { json } })
                }
                _ => None,
            })
            .collect();
        let finish_reason = match self.stop_reason.as_deref() {
            Some("end_turn" | "stop_sequence") | None => FinishReason::Stop,
            Some("tool_use") => FinishReason::ToolCalls,
            Some("max_tokens") => FinishReason::Length,
            Some("refusal") => FinishReason::Refusal,
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
    fn add_block(&mut self, index: u64, block: Block) -> Result<(), WireError> {
        if self.blocks.len() >= MAX_TOOL_CALLS {
            return Err(WireError {
                message: format!("the response has more than {MAX_TOOL_CALLS} content blocks"),
                retryable: false,
            });
        }
        self.blocks.push((index, block));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(events: &[(&str, &str)]) -> Result<ChatResponse, String> {
        let mut parser = Box::new(StreamParser::default());
        for (event, data) in events {
            match parser.event(event, data) {
                Ok(Parsed::Done) => break,
                Ok(Parsed::Continue(_)) => {}
                Err(error) => return Err(error.message),
            }
        }
        parser.finish()
    }

    #[test]
    fn text_and_tool_use_are_assembled_with_usage() {
        let response = parse(&[
            ("message_start", r#"{"type":"message_start","message":{"usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":1}}}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Running."}}"#),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            ("content_block_start", r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"execute_code","input":{}}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"language\":"}}"#),
            ("content_block_delta", r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"js\"}"}}"#),
            ("ping", r#"{"type":"ping"}"#),
            ("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ])
        .unwrap();
        assert_eq!(response.text, "Running.");
        assert_eq!(response.tool_calls[0].arguments, r#"{"language":"js"}"#);
        assert_eq!(response.finish_reason, FinishReason::ToolCalls);
        assert_eq!(response.usage, Usage { input_tokens: 25, output_tokens: 9 });
    }

    #[test]
    fn errors_and_cut_streams_are_reported() {
        let overloaded = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert!(parse(&[("error", overloaded)]).unwrap_err().contains("overloaded_error"));
        let start = r#"{"type":"message_start","message":{"usage":{"input_tokens":1}}}"#;
        assert!(parse(&[("message_start", start)]).unwrap_err().contains("message_stop"));
    }

    #[test]
    fn ids_are_mapped_onto_the_accepted_alphabet() {
        assert_eq!(tool_use_id("call:1/x"), "call_1_x");
        assert_eq!(tool_use_id(""), "call");
    }
}
