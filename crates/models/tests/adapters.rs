//! Both adapters against a scripted model server on loopback: real HTTP, real server-sent events, and every
//! request checked against the vendor's published schema.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;
use wasmagent_models::testing::{Reply, ScriptedServer, Wire};
use wasmagent_models::{
    ApiKey, ChatModel, ChatRequest, FinishReason, HttpLimits, Message, ModelConfig, ModelError, RetryPolicy, ToolSpec,
    Usage,
};

const KEY: &str = "sk-test-do-not-print-0123456789";

fn model(server: &ScriptedServer, spec: &str, limits: HttpLimits) -> Box<dyn ChatModel> {
    let mut config = ModelConfig::new(spec.parse().unwrap());
    config.base_url = Some(server.base_url());
    config.api_key = Some(ApiKey::new(KEY));
    config.limits = limits;
    config.retry =
        RetryPolicy { max_retries: 2, base_delay: Duration::from_millis(10), max_delay: Duration::from_secs(5) };
    wasmagent_models::connect(config).unwrap()
}

fn limits() -> HttpLimits {
    HttpLimits { idle_timeout: Duration::from_secs(20), ..HttpLimits::default() }
}

fn request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        system: "You are a test.".to_owned(),
        messages,
        tools: vec![ToolSpec {
            name: "search_docs".to_owned(),
            description: "Searches the host tools.".to_owned(),
            input_schema: serde_json::json!({"type": "object", "properties": {"query": {"type": "string"}},
                                             "required": ["query"]}),
        }],
        max_output_tokens: 512,
    }
}

async fn chat(
    model: &dyn ChatModel,
    request: &ChatRequest,
) -> (Result<wasmagent_models::ChatResponse, ModelError>, String) {
    let mut streamed = String::new();
    let mut sink = |text: &str| streamed.push_str(text);
    let result = model.chat(request, &mut sink).await;
    (result, streamed)
}

/// A tool call, its result sent back, then an answer: the conversation both wire formats must carry.
async fn tool_call_then_answer(wire: Wire, spec: &str) -> ScriptedServer {
    let server = ScriptedServer::start(
        wire,
        vec![
            Reply::ToolCalls {
                text: "Searching.".to_owned(),
                calls: vec![("search_docs".to_owned(), r#"{"query":"weather in Paris"}"#.to_owned())],
            },
            Reply::Text("It is sunny in Paris.".to_owned()),
        ],
    );
    let model = model(&server, spec, limits());
    let mut messages = vec![Message::User { content: "Weather?".to_owned() }];
    let (first, streamed) = chat(model.as_ref(), &request(messages.clone())).await;
    let first = first.unwrap();
    assert_eq!((first.text.as_str(), streamed.as_str()), ("Searching.", "Searching."));
    assert_eq!(first.finish_reason, FinishReason::ToolCalls);
    assert_eq!(first.tool_calls.len(), 1);
    assert_eq!(first.tool_calls[0].name, "search_docs");
    assert_eq!(first.tool_calls[0].arguments, r#"{"query":"weather in Paris"}"#);
    assert_eq!(first.usage, Usage { input_tokens: 100, output_tokens: 10 });
    assert!(first.usage_reported);
    messages.push(Message::Assistant { content: first.text.clone(), tool_calls: first.tool_calls.clone() });
    messages.push(Message::Tool {
        call_id: first.tool_calls[0].id.clone(),
        content: "weather.today(city) -> forecast".to_owned(),
        is_error: false,
    });
    messages.push(Message::User { content: "Answer in one sentence.".to_owned() });
    let (second, streamed) = chat(model.as_ref(), &request(messages)).await;
    let second = second.unwrap();
    assert_eq!((second.text.as_str(), streamed.as_str()), ("It is sunny in Paris.", "It is sunny in Paris."));
    assert_eq!(second.finish_reason, FinishReason::Stop);
    assert!(second.tool_calls.is_empty());
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.schema_errors(), Vec::<String>::new());
    server
}

#[tokio::test]
async fn openai_streams_text_and_tool_calls_and_every_request_matches_the_published_schema() {
    let server = tool_call_then_answer(Wire::OpenAi, "openai:local-model").await;
    let requests = server.requests();
    assert_eq!(requests[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    let body = &requests[1].body;
    assert_eq!(body["model"], "local-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 512, "a compatible server gets max_tokens");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][2]["tool_calls"][0]["function"]["name"], "search_docs");
    assert_eq!(body["messages"][3]["role"], "tool");
    assert_eq!(body["messages"][3]["tool_call_id"], body["messages"][2]["tool_calls"][0]["id"]);
}

#[tokio::test]
async fn anthropic_streams_text_and_tool_use_and_every_request_matches_the_published_schema() {
    let server = tool_call_then_answer(Wire::Anthropic, "anthropic:claude-test").await;
    let requests = server.requests();
    assert_eq!(requests[0].header("x-api-key"), Some(KEY));
    assert_eq!(requests[0].header("anthropic-version"), Some("2023-06-01"));
    let body = &requests[1].body;
    assert_eq!(body["system"], "You are a test.");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "tool result and note are one user turn: {messages:?}");
    assert_eq!(messages[1]["content"][1]["type"], "tool_use");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["tool_use_id"], messages[1]["content"][1]["id"]);
    assert_eq!(messages[2]["content"][1]["type"], "text");
}

#[tokio::test]
async fn a_429_is_retried_after_the_wait_its_retry_after_names() {
    for wire in [Wire::OpenAi, Wire::Anthropic] {
        let server = ScriptedServer::start(
            wire,
            vec![
                Reply::Status { status: 429, retry_after: Some("1".to_owned()), message: "slow down".to_owned() },
                Reply::Text("fine".to_owned()),
            ],
        );
        let spec = if wire == Wire::OpenAi { "openai:m" } else { "anthropic:m" };
        let (result, streamed) = chat(model(&server, spec, limits()).as_ref(), &request(vec![user()])).await;
        assert_eq!(result.unwrap().text, "fine");
        assert_eq!(streamed, "fine");
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        let waited = requests[1].at.duration_since(requests[0].at);
        assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, before Retry-After: 1");
    }
}

fn user() -> Message {
    Message::User { content: "hello".to_owned() }
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let server = ScriptedServer::start(
        Wire::OpenAi,
        vec![Reply::Status { status: 503, retry_after: None, message: "overloaded".to_owned() }],
    );
    let (result, _) = chat(model(&server, "openai:m", limits()).as_ref(), &request(vec![user()])).await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("HTTP 503 after 3 attempts: overloaded"), "{error}");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn auth_and_not_found_errors_name_the_model_and_base_url_but_never_the_key() {
    for (status, wire, spec, expect) in [
        (401, Wire::OpenAi, "openai:gpt-test", "refused the credentials"),
        (403, Wire::Anthropic, "anthropic:claude-test", "refused the credentials"),
        (404, Wire::OpenAi, "openai:no-such-model", "does not know this model"),
    ] {
        let message = format!("Incorrect API key provided: {KEY}");
        let server = ScriptedServer::start(wire, vec![Reply::Status { status, retry_after: None, message }]);
        let (result, _) = chat(model(&server, spec, limits()).as_ref(), &request(vec![user()])).await;
        let error = result.unwrap_err();
        assert!(!error.produced_output());
        let text = error.to_string();
        assert!(text.contains(spec) && text.contains(&server.base_url()), "{text}");
        assert!(text.contains(expect) && text.contains(&format!("HTTP {status}")), "{text}");
        assert!(!text.contains(KEY) && text.contains("<redacted>"), "{text}");
        assert_eq!(server.requests().len(), 1, "{status} is not retried");
    }
}

#[tokio::test]
async fn a_stream_cut_before_any_text_is_retried_and_one_cut_after_text_is_not() {
    for (wire, spec) in [(Wire::OpenAi, "openai:m"), (Wire::Anthropic, "anthropic:m")] {
        let server = ScriptedServer::start(wire, vec![Reply::CutAfter(String::new()), Reply::Text("whole".to_owned())]);
        let (result, streamed) = chat(model(&server, spec, limits()).as_ref(), &request(vec![user()])).await;
        assert_eq!(result.unwrap().text, "whole");
        assert_eq!((streamed.as_str(), server.requests().len()), ("whole", 2));

        let server = ScriptedServer::start(wire, vec![Reply::CutAfter("a partial answer".to_owned())]);
        let (result, streamed) = chat(model(&server, spec, limits()).as_ref(), &request(vec![user()])).await;
        let error = result.unwrap_err();
        assert!(matches!(error, ModelError::StreamCut { .. }), "{error}");
        assert!(error.produced_output());
        assert_eq!(streamed, "a partial answer", "streamed text is never repeated");
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test]
async fn responses_are_capped_in_size_and_silence_in_time() {
    let server = ScriptedServer::start(Wire::OpenAi, vec![Reply::Text("x".repeat(20_000))]);
    let small = HttpLimits { max_response_bytes: 4096, ..limits() };
    let (result, _) = chat(model(&server, "openai:m", small).as_ref(), &request(vec![user()])).await;
    assert!(matches!(result, Err(ModelError::TooLarge { limit: 4096, .. })), "{result:?}");

    let server = ScriptedServer::start(Wire::Anthropic, vec![Reply::Hang]);
    let quick = HttpLimits { idle_timeout: Duration::from_millis(300), ..limits() };
    let (result, _) = chat(model(&server, "anthropic:m", quick).as_ref(), &request(vec![user()])).await;
    let error = result.unwrap_err();
    assert!(matches!(error, ModelError::Timeout { .. }), "{error}");
    assert_eq!(server.requests().len(), 3, "a silent stream is retried like a cut one");
}
