//! `POST /v1/approvals`: for applications with their own UI, a person approves one access for a subject's next run.
//!
//! The approver (a token with scope `approvals:write`) names the subject and the access as a run report's denial
//! names it (`fs.read /srv/data/in.csv`); the server turns it into the narrowest grant `run --learn` would propose,
//! refuses it when it goes beyond `max_manifest` (403) or cannot be granted at all (400), keeps it, and adds it to
//! the manifest of that subject's next `POST /v1/runs`, which uses it up. Approvals are bounded: at most
//! [`MAX_PER_SUBJECT`] pending per subject (429), each kept [`APPROVAL_TTL`]. Each one is a signed approval record
//! in the `[audit]` log when there is one; one that cannot be recorded is not kept.

use crate::auth::SCOPE_APPROVALS;
use crate::error::ApiError;
use crate::runs::read_body;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmagent::CapabilityManifest;
use wasmagent::learn::{LearnOptions, add_grants, propose_for_denials, requested_denial};
use wasmagent::signing::record::ApprovalRecord;

/// Pending approvals one subject may have.
pub(crate) const MAX_PER_SUBJECT: usize = 16;
/// How long an approval waits for its subject's next run.
pub(crate) const APPROVAL_TTL: Duration = Duration::from_secs(600);
/// Longest subject, capability and reason accepted, in bytes.
const MAX_FIELD_BYTES: usize = 2048;

/// `POST /v1/approvals`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalRequestBody {
    /// Whose next run gets the access (the subject of its token or API key).
    pub(crate) subject: String,
    /// The access, as a run report's denial names it: `fs.read PATH`, `fs.write PATH`, `net.http URL` or
    /// `tool NAME`.
    pub(crate) capability: String,
    /// Why, for the audit log (kept only by digest).
    #[serde(default)]
    pub(crate) reason: String,
}

/// `201 Created` for an approval.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ApprovalInfo {
    /// The approval's id (`apr-` and 32 hex digits); the run that uses it names it in `wasmagent-approvals`.
    pub(crate) id: String,
    /// Whose next run gets it.
    pub(crate) subject: String,
    /// The access as asked for.
    pub(crate) capability: String,
    /// What it grants, one sentence each.
    pub(crate) grants: Vec<String>,
    /// How long it waits for the subject's next run.
    pub(crate) expires_in_ms: u64,
}

struct Pending {
    id: String,
    grant: CapabilityManifest,
    expires: Instant,
}

/// Pending approvals by subject.
#[derive(Default)]
pub(crate) struct Approvals(Mutex<HashMap<String, Vec<Pending>>>);

impl Approvals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Pending>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps an approval for `subject`, or refuses it when the subject has too many pending.
    fn add(&self, subject: &str, pending: Pending) -> Result<(), ApiError> {
        let mut all = self.lock();
        let now = Instant::now();
        all.retain(|_, list| {
            list.retain(|p| p.expires > now);
            !list.is_empty()
        });
        let list = all.entry(subject.to_owned()).or_default();
        if list.len() >= MAX_PER_SUBJECT {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_approvals",
                format!("{subject:?} already has {MAX_PER_SUBJECT} approvals waiting for its next run"),
            ));
        }
        list.push(pending);
        Ok(())
    }

    /// Takes every live approval of `subject` (put them back with [`Approvals::restore`] if the run does not start).
    pub(crate) fn take(&self, subject: &str) -> Vec<(String, CapabilityManifest)> {
        let now = Instant::now();
        let taken = self.lock().remove(subject).unwrap_or_default();
        taken.into_iter().filter(|p| p.expires > now).map(|p| (p.id, p.grant)).collect()
    }

    /// Puts back approvals taken for a run that did not start.
    pub(crate) fn restore(&self, subject: &str, taken: Vec<(String, CapabilityManifest)>) {
        let expires = Instant::now() + APPROVAL_TTL;
        let mut all = self.lock();
        let list = all.entry(subject.to_owned()).or_default();
        list.extend(taken.into_iter().map(|(id, grant)| Pending { id, grant, expires }));
    }
}

/// `manifest` with the grants of `approved` added.
pub(crate) fn widen(
    manifest: Option<CapabilityManifest>,
    approved: &[(String, CapabilityManifest)],
) -> CapabilityManifest {
    let mut manifest = manifest.unwrap_or_default();
    for (_, grant) in approved {
        add_grants(&mut manifest, grant);
    }
    manifest
}

/// Approves one access for a subject's next run.
#[utoipa::path(post, path = "/v1/approvals", request_body = ApprovalRequestBody,
    responses((status = 201, body = ApprovalInfo),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let approver = state.authorize(&headers, SCOPE_APPROVALS)?;
    let body = read_body(&state, &headers, body).await?;
    let request: ApprovalRequestBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not a valid approval: {e}")))?;
    for (name, value) in
        [("subject", &request.subject), ("capability", &request.capability), ("reason", &request.reason)]
    {
        if value.len() > MAX_FIELD_BYTES || value.chars().any(|c| c.is_control() && c != '\n') {
            return Err(ApiError::invalid(format!(
                "`{name}` must be at most {MAX_FIELD_BYTES} bytes without control characters"
            )));
        }
    }
    if request.subject.is_empty() {
        return Err(ApiError::invalid("`subject` names whose next run gets the access"));
    }
    let denial = requested_denial(&request.capability).map_err(ApiError::invalid)?;
    let nothing = CapabilityManifest::default();
    let base = state.sandbox.resolve(&nothing, Path::new("/")).map_err(|e| ApiError::invalid(e.to_string()))?;
    let options = LearnOptions {
        ceilings: state.sandbox.ceilings(),
        egress: &state.learning.egress,
        tools: &state.learning.tools,
        base: Path::new("/"),
    };
    let proposal =
        propose_for_denials(&nothing, &base, &[denial], &options).map_err(|e| ApiError::invalid(e.to_string()))?;
    if proposal.adds_nothing() {
        let why = proposal.refused.iter().chain(&proposal.already_allowed).cloned().collect::<Vec<_>>().join("; ");
        return Err(ApiError::invalid(format!("nothing can be approved for {:?}: {why}", request.capability)));
    }
    let widened =
        crate::runs::request_manifest(state.sandbox.ceilings(), &state.max_manifest, proposal.manifest.clone())?;
    let grants = wasmagent::manifest_diff::diff(&base, &widened).widens;
    if let Some(log) = &state.audit {
        let subject = format!("{} for {}", approver.subject, request.subject);
        let record =
            ApprovalRecord::new(&subject, &request.capability, grants.clone(), &request.reason, "approved", "next-run");
        if let Err(error) = log.append_approval(record) {
            tracing::error!(%error, "cannot write an approval record to the audit log");
            return Err(ApiError::busy("the approval could not be written to the audit log, so it is not kept", 1));
        }
    }
    let id = new_id()?;
    let pending = Pending { id: id.clone(), grant: proposal.manifest, expires: Instant::now() + APPROVAL_TTL };
    state.approvals.add(&request.subject, pending)?;
    tracing::info!(
        target: "wasmagent::audit", approver = %approver.subject, subject = %request.subject,
        capability = %request.capability, grants = %grants.join("; "), "approval"
    );
    let info = ApprovalInfo {
        id,
        subject: request.subject,
        capability: request.capability,
        grants,
        expires_in_ms: APPROVAL_TTL.as_millis() as u64,
    };
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// A fresh approval id.
fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::busy(format!("no randomness for an approval id: {e}"), 1))?;
    Ok(format!("apr-{}", hex::encode(bytes)))
}
