//! The web console (`/console`): one page, embedded in the binary, that runs code through the public API
//! (`POST /v1/runs` with the token a person pastes, or none in dev mode) and shows the report, artifacts as cards.
//! Also the two API endpoints it uses besides runs: `POST /v1/manifests/check` and `POST /v1/render/markdown`.
//!
//! The console can never do more than an API client: it holds no credentials of its own, and every call it makes
//! is authenticated and limited like any other. Its safety rests on the headers served here:
//!
//! - The page: a strict Content-Security-Policy (its own script and style only, no inline code, requests to its own
//!   origin only, frames only from its own origin, never framed itself), `nosniff`, `no-referrer`.
//! - Cards (`/console/frame`): HTML, SVG and Markdown artifacts render in `<iframe sandbox="allow-scripts">`
//!   documents served with their own policy (`default-src 'none'`, inline script and style, `data:` images, and
//!   the CSP `sandbox` directive, so the document is sandboxed even if opened on its own). A card's script runs in
//!   an opaque origin: no cookies or storage of the console, no access to its DOM, no forms, dialogs, popups or top
//!   navigation, no network. The content reaches the frame by `postMessage`, not `srcdoc`: a `srcdoc` document
//!   inherits the page's policy (HTML's policy-container rule for `about:srcdoc`), so either card scripts could not
//!   run or the page would have to allow inline script for itself.
//! - Markdown is rendered by `pulldown-cmark` and sanitised by `ammonia` here, then shown like HTML.

use crate::error::ApiError;
use crate::policy::{self, PolicyError};
use crate::runs::{read_body, read_body_within};
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;
use wasmagent::CapabilityManifest;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");
const FRAME_HTML: &str = include_str!("../console/frame.html");

/// The console page's policy: nothing inline, nothing from elsewhere.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// A card's policy: inline script and style, `data:` images, nothing else, and sandboxed whatever embeds it.
pub const FRAME_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     img-src data:; form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox allow-scripts";

fn asset(content_type: &'static str, csp: Option<&'static str>, body: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin"));
    if let Some(csp) = csp {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    }
    (headers, body).into_response()
}

/// `GET /console`.
pub(crate) async fn page() -> Response {
    let mut response = asset("text/html; charset=utf-8", Some(PAGE_CSP), INDEX_HTML);
    response.headers_mut().insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /console/console.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", None, CONSOLE_JS)
}

/// `GET /console/console.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", None, CONSOLE_CSS)
}

/// `GET /console/frame`: the document every HTML, SVG and Markdown card is shown in.
pub(crate) async fn frame() -> Response {
    asset("text/html; charset=utf-8", Some(FRAME_CSP), FRAME_HTML)
}

/// `POST /v1/manifests/check`: a manifest (TOML or JSON, as text), as parsed and as the server would hold a run
/// to it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ManifestCheck {
    /// The manifest as written, parsed: what a run request's `manifest` field takes.
    pub manifest: CapabilityManifest,
    /// The effective manifest a run with it gets on this server (unset limits from the server's maximum).
    #[schema(value_type = Object)]
    pub effective: serde_json::Value,
    /// `sha256:<hex>` of the effective manifest.
    pub digest: String,
}

/// Checks a manifest against this server's maximum manifest, without running anything.
#[utoipa::path(post, path = "/v1/manifests/check", request_body(content = String, content_type = "text/plain"),
    responses(
        (status = 200, description = "Valid on this server", body = ManifestCheck),
        (status = 400, description = "Malformed or invalid; `field` names the field when known", body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody),
        (status = 403, description = "Asks for more than the server allows", body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn check_manifest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ManifestCheck>, ApiError> {
    state.authorize(&headers, crate::auth::SCOPE_WRITE)?;
    let body = read_body(&state, &headers, body).await?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the manifest is not UTF-8"))?;
    let manifest =
        CapabilityManifest::from_str_any(text).map_err(|e| ApiError::invalid(e.to_string()).with_field(e.field()))?;
    let effective = policy::request_manifest(state.sandbox.ceilings(), &state.max_manifest, manifest.clone()).map_err(
        |e| match e {
            PolicyError::Invalid(message) => ApiError::invalid(message),
            PolicyError::Exceeds { field, message } => ApiError::exceeds(field, message),
        },
    )?;
    Ok(Json(ManifestCheck {
        manifest,
        effective: serde_json::to_value(&effective).unwrap_or(serde_json::Value::Null),
        digest: effective.digest().to_owned(),
    }))
}

/// `POST /v1/render/markdown`: sanitised HTML.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RenderedMarkdown {
    /// The Markdown rendered to HTML (CommonMark with tables and strikethrough), sanitised: no scripts, event
    /// handlers, `javascript:` URLs, styles or frames.
    pub html: String,
}

/// Renders Markdown (a `markdown` artifact) to sanitised HTML; at most the maximum manifest's
/// `max_artifact_bytes`.
#[utoipa::path(post, path = "/v1/render/markdown", request_body(content = String, content_type = "text/markdown"),
    responses(
        (status = 200, body = RenderedMarkdown),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(crate) async fn render_markdown(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RenderedMarkdown>, ApiError> {
    state.authorize(&headers, crate::auth::SCOPE_WRITE)?;
    let limit = usize::try_from(state.max_manifest.max_artifact_bytes()).unwrap_or(usize::MAX);
    let body = read_body_within(&state, &headers, body, limit).await?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the Markdown is not UTF-8"))?;
    Ok(Json(RenderedMarkdown { html: markdown_to_html(text) }))
}

/// CommonMark (with tables and strikethrough) to HTML, sanitised by ammonia's defaults.
pub fn markdown_to_html(text: &str) -> String {
    use pulldown_cmark::{Options, Parser, html};
    let mut unsafe_html = String::with_capacity(text.len() * 3 / 2);
    html::push_html(&mut unsafe_html, Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH));
    ammonia::clean(&unsafe_html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered_and_sanitised() {
        let html = markdown_to_html(
            "# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n\
             [link](javascript:alert(1)) <iframe src=/x></iframe> <b style=\"x\">bold</b>",
        );
        assert!(html.contains("<h1>Title</h1>") && html.contains("<table>") && html.contains("<td>1</td>"), "{html}");
        for bad in ["<script", "onerror", "javascript:", "<iframe", "style="] {
            assert!(!html.contains(bad), "{bad} survived: {html}");
        }
        assert!(html.contains("<b>bold</b>"), "{html}");
    }

    #[test]
    fn the_page_policy_allows_nothing_inline_and_cards_are_sandboxed() {
        assert!(!PAGE_CSP.contains("unsafe"), "{PAGE_CSP}");
        assert!(PAGE_CSP.contains("frame-ancestors 'none'"), "{PAGE_CSP}");
        assert!(FRAME_CSP.starts_with("default-src 'none'") && FRAME_CSP.ends_with("sandbox allow-scripts"));
    }
}
