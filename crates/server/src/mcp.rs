//! The gate in front of `/mcp`: the same credentials (scope `runs:write`), per-subject request rate and run
//! admission as `POST /v1/runs`; the MCP protocol itself is `wasmagent-mcp`'s.
//!
//! Every POST (one MCP message) is counted against the caller's rate and takes one of its concurrent-run slots.
//! A tool call that runs something (`execute_code`, or a direct tool call) keeps that slot for the whole call and
//! also waits for a server-wide run slot (the bounded queue, then refused as busy), with the run counted in the
//! metrics; any other message gives its slot back when its answer starts.

use crate::auth::{Principal, SCOPE_WRITE};
use crate::ratelimit::RunSlot;
use crate::runs::{admit, rate_headers, read_body_within, server_slot};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::{Arc, Mutex, PoisonError};
use wasmagent_mcp::{Admission, AdmitFuture, RunAdmission, RunPermit};

/// Authenticates every request; admits each POST, and hands a tool call that runs the admission it holds.
pub(crate) async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let principal = match state.authorize(request.headers(), SCOPE_WRITE) {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (slot, window) = match admit(&state, &principal).await {
        Ok(admitted) => admitted,
        Err(error) => return error.into_response(),
    };
    let (parts, body) = request.into_parts();
    let limit = state.mcp.as_ref().map_or(state.max_body_bytes, |(_, options)| options.max_request_body_bytes);
    let body = match read_body_within(&state, &parts.headers, body, limit).await {
        Ok(body) => body,
        Err(error) => return error.with_headers(rate_headers(&window)).into_response(),
    };
    let runs = starts_run(&body);
    let mut request = Request::from_parts(parts, Body::from(body));
    let mut response = if runs {
        let slot = Arc::new(Mutex::new(Some(slot)));
        request.extensions_mut().insert(Admission::new(McpAdmission { state: state.clone(), principal, slot }));
        next.run(request).await
    } else {
        let response = next.run(request).await;
        drop(slot);
        response
    };
    response.headers_mut().extend(rate_headers(&window));
    response
}

/// Whether the MCP message `body` is a tool call that runs something. A body that is not a readable message counts
/// as one: whatever the MCP service makes of it, nothing runs unadmitted.
fn starts_run(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Message {
        method: Option<String>,
        params: Option<Params>,
    }
    #[derive(Deserialize)]
    struct Params {
        name: Option<String>,
    }
    match serde_json::from_slice::<Message>(body) {
        Ok(Message { method: Some(method), params }) => {
            method == "tools/call" && params.and_then(|p| p.name).is_none_or(|name| wasmagent_mcp::is_run_tool(&name))
        }
        Ok(Message { method: None, .. }) => false,
        Err(_) => true,
    }
}

/// One tool call's admission: the concurrent-run slot the gate took for its POST, and the server's run slots.
struct McpAdmission {
    state: Arc<AppState>,
    principal: Principal,
    /// Taken by the call's run; should one message start a second run, that one is admitted afresh.
    slot: Arc<Mutex<Option<RunSlot>>>,
}

impl RunAdmission for McpAdmission {
    fn admit(&self) -> AdmitFuture<'_> {
        Box::pin(async move {
            let taken = self.slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            let slot = match taken {
                Some(slot) => slot,
                None => admit(&self.state, &self.principal).await.map_err(|e| e.message().to_owned())?.0,
            };
            let permit = server_slot(&self.state, true).await.map_err(|e| format!("refused: {}", e.message()))?;
            let in_flight = self.state.metrics.start_run();
            let state = self.state.clone();
            Ok(RunPermit::new(move |report| {
                if let Some(report) = report {
                    state.metrics.record(report);
                }
                drop((permit, slot, in_flight));
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::starts_run;

    #[test]
    fn only_tool_calls_that_run_something_keep_their_slot() {
        let call =
            |name: &str| format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"{name}"}}}}"#);
        assert!(starts_run(call("execute_code").as_bytes()));
        assert!(starts_run(call("text.echo").as_bytes()), "a direct tool call runs the tool");
        assert!(!starts_run(call("search_docs").as_bytes()));
        assert!(!starts_run(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#));
        assert!(!starts_run(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#));
        assert!(!starts_run(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#), "a response to the server");
        assert!(starts_run(b"[not json"), "unreadable: admitted, whatever becomes of it");
    }
}
