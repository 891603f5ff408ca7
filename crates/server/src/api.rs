//! The request and response types of the HTTP API, and the OpenAPI 3.1 document generated from them.

use crate::error::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use wasmagent::{CapabilityManifest, RunReport};

/// `POST /v1/runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequestBody {
    /// `js` (or `javascript`), `python` or `wasm`.
    pub language: String,
    /// Source code, for `js` and `python`.
    #[serde(default)]
    pub code: Option<String>,
    /// A WebAssembly module or component, base64, for `wasm`.
    #[serde(default)]
    pub module: Option<String>,
    /// The program's name in stack traces and `argv[0]`.
    #[serde(default)]
    pub name: Option<String>,
    /// Standard input (UTF-8 text).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Arguments after the name.
    #[serde(default)]
    pub args: Vec<String>,
    /// The run's manifest; it may only narrow the server's maximum manifest. Omitted: the maximum's limits and no
    /// grants.
    #[serde(default)]
    pub manifest: Option<CapabilityManifest>,
    /// Answer 202 with a run id at once instead of the report when the run ends.
    #[serde(default, rename = "async")]
    pub run_async: bool,
    /// Also propose the narrowest manifest that would have allowed what the run was refused, as `wasmagent run
    /// --learn` does, within the server's maximum manifest: the report gains a `learn` object (`manifest`, `toml`,
    /// `added`, `refused`, `converged`). Only where the operator sets `allow_learn`; not with `async`.
    #[serde(default)]
    pub learn: bool,
}

/// `202 Accepted` for an async run.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AsyncAccepted {
    /// The run id.
    pub id: String,
    /// Always `queued`.
    pub status: String,
    /// Where to poll: `/v1/runs/{id}`.
    pub url: String,
}

/// `GET /v1/runs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunStatus {
    /// The run id.
    pub id: String,
    /// `queued`, `running`, `done` or `failed` (the run could not start, or the kernel refused it; see `error`).
    pub status: String,
    /// The report, once `done`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReport>,
    /// Why a `failed` run could not start, or why a `done` run's report was not kept (it alone weighed more than
    /// `max_stored_run_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "wasmagent", description = "Run untrusted code in WebAssembly sandboxes under a capability manifest."),
    paths(crate::runs::create_run, crate::runs::get_run, crate::runs::dead_letters, crate::approvals::create,
          crate::console::check_manifest, crate::console::render_markdown, crate::agent_runs::create,
          crate::agent_runs::status, crate::agent_runs::events, crate::agent_runs::approve,
          crate::sessions::create, crate::sessions::run, crate::sessions::fork, crate::sessions::snapshot, crate::sessions::drop_snapshot, crate::sessions::status,
          crate::sessions::close),
    components(schemas(RunRequestBody, AsyncAccepted, RunStatus, ErrorBody, RunReport, CapabilityManifest,
                       crate::approvals::ApprovalRequestBody, crate::approvals::ApprovalInfo,
                       crate::console::ManifestCheck, crate::console::RenderedMarkdown,
                       crate::agent_runs::AgentRunRequestBody, crate::agent_runs::AgentRunStatus,
                       crate::agent_runs::ApprovalAnswer, crate::sessions::SessionRequestBody,
                       crate::sessions::SessionRunBody, crate::snapshots::SnapshotInfo)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into())
}
