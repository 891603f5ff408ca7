//! Every error answer: a status, a machine-readable `error` code and a message saying why, as JSON.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// `unauthenticated`, `forbidden`, `invalid_request`, `payload_too_large`, `rate_limited`, `busy`,
    /// `unavailable`, `not_found`, `timeout` or `internal`.
    pub error: String,
    /// What was wrong, in words.
    pub message: String,
    /// The manifest field a 403 is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer (boxed: handlers return it in `Result`s on every path).
#[derive(Debug)]
pub(crate) struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    body: ErrorBody,
    headers: HeaderMap,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError(Box::new(Inner {
            status,
            body: ErrorBody { error: code.into(), message: message.into(), field: None },
            headers: HeaderMap::new(),
        }))
    }

    /// 400.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 403 about a manifest field.
    pub(crate) fn exceeds(field: String, message: String) -> Self {
        let mut error = Self::new(StatusCode::FORBIDDEN, "forbidden", message);
        error.0.body.field = Some(field);
        error
    }

    /// Names the manifest field the error is about.
    pub(crate) fn with_field(mut self, field: Option<&str>) -> Self {
        self.0.body.field = field.map(str::to_owned);
        self
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.0.status
    }

    /// 503 with Retry-After.
    pub(crate) fn busy(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
            .with_header("retry-after", retry_after_secs.to_string())
    }

    /// Adds a response header.
    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Self {
        if let Ok(value) = HeaderValue::from_str(&value) {
            self.0.headers.insert(HeaderName::from_static(name), value);
        }
        self
    }

    /// What went wrong, in words.
    pub(crate) fn message(&self) -> &str {
        &self.0.body.message
    }

    /// Adds several response headers.
    pub(crate) fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.0.headers.extend(headers);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let inner = *self.0;
        (inner.status, inner.headers, axum::Json(inner.body)).into_response()
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(error: crate::auth::AuthError) -> Self {
        match error {
            crate::auth::AuthError::Unauthenticated(m) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
                .with_header("www-authenticate", "Bearer".into()),
            crate::auth::AuthError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
        }
    }
}
