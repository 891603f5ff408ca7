//! The gate in front of `/mcp`: the same credentials (scope `runs:write`) and per-subject request rate as
//! `POST /v1/runs`; the MCP protocol itself is `wasmagent-mcp`'s.

use crate::auth::SCOPE_WRITE;
use crate::runs::{admit, rate_headers};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Authenticates every request; counts each POST (one MCP message) against the caller's rate limit.
pub(crate) async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let principal = match state.authorize(request.headers(), SCOPE_WRITE) {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    match admit(&state, &principal).await {
        Ok((slot, window)) => {
            let mut response = next.run(request).await;
            drop(slot);
            response.headers_mut().extend(rate_headers(&window));
            response
        }
        Err(error) => error.into_response(),
    }
}
