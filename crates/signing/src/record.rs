//! The audit log: one signed record per run, in a JSON Lines file.
//!
//! Each line is the RFC 8785 canonical JSON of a [`RunRecord`], for agent runs of an [`AgentStepRecord`] (one
//! per model call, code run or tool call, and one for how the agent run ended), or of an [`ApprovalRecord`] (a
//! request for more capability and what a person decided), told apart by `schema`. A record's
//! `signature` covers every other field of the record; its `prev_record_hash` is the sha256 of the previous line's bytes (the first record points at
//! [`GENESIS`]), so removing, inserting or reordering records breaks the chain at the first affected record.
//! Appends take an exclusive lock on the file, refuse to continue a log whose last line is torn, and write each
//! record with one `write` followed by `fsync`, so a record is either complete or absent.
//!
//! What the chain cannot show on its own: that records were cut off at the *end*. Keep the last record hash that
//! [`verify_log`] prints somewhere else if that matters.

use crate::SigningError;
use crate::keys::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use wasmagent_kernel::{Denial, ErrorKind, Outcome, RunReport, Usage};

/// Schema name of a record.
pub const RECORD_SCHEMA: &str = "wasmagent.record/v1";
/// `prev_record_hash` of the first record in a log.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// One run, as kept in the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// Always [`RECORD_SCHEMA`].
    pub schema: String,
    /// Random id of this run (32 hex digits).
    pub run_id: String,
    /// When the record was written, RFC 3339 UTC.
    pub time: String,
    /// Kernel that ran the code.
    pub kernel: String,
    /// `sha256:` of the code (module bytes or script text).
    pub code_digest: String,
    /// `sha256:` of the effective manifest.
    pub manifest_digest: String,
    /// Key id whose module signature verified, if any.
    pub signer_key_id: Option<String>,
    /// How the run ended.
    pub outcome: Outcome,
    /// Exit status.
    pub exit_code: Option<i32>,
    /// Error class, when the run failed.
    pub error_kind: Option<ErrorKind>,
    /// Resources used.
    pub usage: Usage,
    /// Accesses refused.
    pub denials: Vec<Denial>,
    /// Host tool calls made by the guest.
    pub tool_calls: Vec<ToolCallRecord>,
    /// The session the run was a call of, if any (absent otherwise, so older records verify unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The call's number in its session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_call: Option<u64>,
    /// `sha256:` of the previous record's line, or [`GENESIS`].
    pub prev_record_hash: String,
    /// Signature over the canonical JSON of every other field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<RecordSignature>,
}

/// Schema name of an agent step record.
pub const AGENT_STEP_SCHEMA: &str = "wasmagent.agent-step/v1";

/// One step of an agent run, as kept in the audit log beside the run records of its code runs: what was done and
/// by whom, never the text itself (model text, programs, arguments and answers only by digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStepRecord {
    /// Always [`AGENT_STEP_SCHEMA`].
    pub schema: String,
    /// The agent run (its report's `run_id`).
    pub agent_run_id: String,
    /// The model turn (1-based); for `final`, the last turn started (0 when none was).
    pub step: u32,
    /// When the record was written, RFC 3339 UTC.
    pub time: String,
    /// `model_call`, `code_run`, `tool_call`, `rejected` (a call refused before it ran) or `final`.
    pub kind: String,
    /// The model (`provider:model`), the tool, the program's language, or for `final` the agent's outcome.
    pub name: String,
    /// `sha256:` of what the step carried: the model's text and calls, the program, the arguments, the answer.
    pub digest: String,
    /// `ok` or `error` for calls and runs, the finish reason (or `error`) for model calls, the outcome for `final`.
    pub outcome: String,
    /// Input tokens (a model call's, or the run's total for `final`).
    pub input_tokens: u64,
    /// Output tokens (a model call's, or the run's total for `final`).
    pub output_tokens: u64,
    /// How long the step took.
    pub duration_ms: u64,
    /// `sha256:` of the previous record's line, or [`GENESIS`].
    pub prev_record_hash: String,
    /// Signature over the canonical JSON of every other field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<RecordSignature>,
}

impl AgentStepRecord {
    /// An unsigned, unchained step record; [`AuditLog::append_agent_step`] fills in `schema`, `time`, the chain and
    /// the signature.
    #[allow(clippy::too_many_arguments, reason = "a plain record: every field is named at the call")]
    pub fn new(
        agent_run_id: &str,
        step: u32,
        kind: &str,
        name: &str,
        digest: String,
        outcome: &str,
        (input_tokens, output_tokens): (u64, u64),
        duration_ms: u64,
    ) -> Self {
        AgentStepRecord {
            schema: AGENT_STEP_SCHEMA.into(),
            agent_run_id: agent_run_id.to_owned(),
            step,
            time: String::new(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            digest,
            outcome: outcome.to_owned(),
            input_tokens,
            output_tokens,
            duration_ms,
            prev_record_hash: String::new(),
            signature: None,
        }
    }
}

/// Schema name of an approval record.
pub const APPROVAL_SCHEMA: &str = "wasmagent.approval/v1";

/// One request for more capability than a manifest grants, and what was decided: who was asked, what it would
/// have granted, and whether a person approved it. The agent's reason is kept only by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRecord {
    /// Always [`APPROVAL_SCHEMA`].
    pub schema: String,
    /// When the record was written, RFC 3339 UTC.
    pub time: String,
    /// Where the request came from and who answered it: the front end, its connection and the client's name.
    pub subject: String,
    /// The capability as asked for (a denial as the run report names it, e.g. `fs.read /data/in.csv`).
    pub capability: String,
    /// What approving it grants (or would have granted), one sentence each.
    pub grants: Vec<String>,
    /// `sha256:` of the reason the agent gave.
    pub reason_digest: String,
    /// `approved`, `declined`, `cancelled`, `unanswered` (the person did not answer in time), or `refused` (not put
    /// to anyone: above the operator's maximum manifest).
    pub decision: String,
    /// For `approved`: `once` (the next run) or `session` (the rest of the connection); empty otherwise.
    pub scope: String,
    /// `sha256:` of the previous record's line, or [`GENESIS`].
    pub prev_record_hash: String,
    /// Signature over the canonical JSON of every other field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<RecordSignature>,
}

impl ApprovalRecord {
    /// An unsigned, unchained record; [`AuditLog::append_approval`] fills in `schema`, `time`, the chain and the
    /// signature.
    pub fn new(
        subject: &str,
        capability: &str,
        grants: Vec<String>,
        reason: &str,
        decision: &str,
        scope: &str,
    ) -> Self {
        ApprovalRecord {
            schema: APPROVAL_SCHEMA.into(),
            time: String::new(),
            subject: subject.to_owned(),
            capability: capability.to_owned(),
            grants,
            reason_digest: format!("sha256:{}", hex::encode(Sha256::digest(reason.as_bytes()))),
            decision: decision.to_owned(),
            scope: scope.to_owned(),
            prev_record_hash: String::new(),
            signature: None,
        }
    }
}

/// A record that can be chained and signed.
trait Chained: Serialize + Clone {
    fn prev_record_hash(&self) -> &str;
    fn signature(&self) -> Option<&RecordSignature>;
    fn set_signature(&mut self, signature: Option<RecordSignature>);

    /// The bytes the signature covers: the canonical JSON of the record without its signature.
    fn signed_bytes(&self) -> Result<Vec<u8>, SigningError> {
        let mut unsigned = self.clone();
        unsigned.set_signature(None);
        canonical(&unsigned)
    }

    /// Signs the record with `key`.
    fn sign_with(&mut self, key: &SecretKey) -> Result<(), SigningError> {
        let sig = key.sign_bytes(&self.signed_bytes()?);
        self.set_signature(Some(RecordSignature {
            alg: "ed25519".into(),
            key_id: key.public_key().key_id(),
            sig: hex::encode(sig),
        }));
        Ok(())
    }
}

impl Chained for RunRecord {
    fn prev_record_hash(&self) -> &str {
        &self.prev_record_hash
    }
    fn signature(&self) -> Option<&RecordSignature> {
        self.signature.as_ref()
    }
    fn set_signature(&mut self, signature: Option<RecordSignature>) {
        self.signature = signature;
    }
}

impl Chained for AgentStepRecord {
    fn prev_record_hash(&self) -> &str {
        &self.prev_record_hash
    }
    fn signature(&self) -> Option<&RecordSignature> {
        self.signature.as_ref()
    }
    fn set_signature(&mut self, signature: Option<RecordSignature>) {
        self.signature = signature;
    }
}

impl Chained for ApprovalRecord {
    fn prev_record_hash(&self) -> &str {
        &self.prev_record_hash
    }
    fn signature(&self) -> Option<&RecordSignature> {
        self.signature.as_ref()
    }
    fn set_signature(&mut self, signature: Option<RecordSignature>) {
        self.signature = signature;
    }
}

/// A tool call, as recorded: its arguments only by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallRecord {
    /// Tool name.
    pub name: String,
    /// `sha256:` of the canonical JSON arguments.
    pub args_digest: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// The signature of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSignature {
    /// Always `ed25519`.
    pub alg: String,
    /// Id of the signing key (see [`PublicKey::key_id`]).
    pub key_id: String,
    /// The signature, hex.
    pub sig: String,
}

impl RunRecord {
    /// The unsigned record of `report`, chained after `prev_record_hash`.
    pub fn from_report(report: &RunReport, prev_record_hash: String) -> Self {
        RunRecord {
            schema: RECORD_SCHEMA.into(),
            run_id: random_id(),
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            kernel: report.kernel.clone(),
            code_digest: report.code_digest.clone(),
            manifest_digest: report.manifest_digest.clone(),
            signer_key_id: report.signer_key_id.clone(),
            outcome: report.outcome,
            exit_code: report.exit_code,
            error_kind: report.error.as_ref().map(|e| e.kind),
            usage: report.usage.clone(),
            denials: report.denials.clone(),
            tool_calls: report
                .tool_calls
                .iter()
                .map(|call| ToolCallRecord {
                    name: call.name.clone(),
                    args_digest: call.args_digest.clone(),
                    outcome: call.outcome.clone(),
                })
                .collect(),
            session_id: report.session_id.clone(),
            session_call: report.session_call,
            prev_record_hash,
            signature: None,
        }
    }

    /// Signs the record with `key`.
    pub fn sign(&mut self, key: &SecretKey) -> Result<(), SigningError> {
        self.sign_with(key)
    }
}

fn canonical<T: Serialize>(value: &T) -> Result<Vec<u8>, SigningError> {
    serde_jcs::to_vec(value).map_err(|e| SigningError::Malformed(format!("cannot canonicalise a record: {e}")))
}

fn hash_line(line: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(line)))
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The id only has to be unique; if the OS generator fails, fall back to time and a counter.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    hex::encode(bytes)
}

/// An append-only audit log file, signing each record with one key. Share one per file across threads.
pub struct AuditLog {
    path: PathBuf,
    key: SecretKey,
    writer: Mutex<()>,
}

impl AuditLog {
    /// A log at `path` (created on first append) signed with `key`.
    pub fn new(path: impl Into<PathBuf>, key: SecretKey) -> Self {
        AuditLog { path: path.into(), key, writer: Mutex::new(()) }
    }

    /// Appends the signed record of `report` and returns it.
    pub fn append(&self, report: &RunReport) -> Result<RunRecord, SigningError> {
        self.append_with(|prev| RunRecord::from_report(report, prev))
    }

    /// Appends `step` (its time, chain and signature filled in here) and returns it as written.
    pub fn append_agent_step(&self, step: AgentStepRecord) -> Result<AgentStepRecord, SigningError> {
        self.append_with(|prev| AgentStepRecord {
            schema: AGENT_STEP_SCHEMA.into(),
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            prev_record_hash: prev,
            signature: None,
            ..step
        })
    }

    /// Appends `approval` (its time, chain and signature filled in here) and returns it as written.
    pub fn append_approval(&self, approval: ApprovalRecord) -> Result<ApprovalRecord, SigningError> {
        self.append_with(|prev| ApprovalRecord {
            schema: APPROVAL_SCHEMA.into(),
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            prev_record_hash: prev,
            signature: None,
            ..approval
        })
    }

    /// Appends the record `make` builds on the hash of the last line, signed, under the file lock.
    fn append_with<R: Chained>(&self, make: impl FnOnce(String) -> R) -> Result<R, SigningError> {
        let _guard = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let io = |e: std::io::Error| SigningError::Io { path: self.path.display().to_string(), message: e.to_string() };
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&self.path).map_err(io)?;
        // Other processes appending to the same file wait here.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| io(std::io::Error::from(e)))?;
        let prev = last_line_hash(&mut file, &self.path)?;
        let mut record = make(prev);
        record.sign_with(&self.key)?;
        let mut line = canonical(&record)?;
        line.push(b'\n');
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(record)
    }
}

/// The hash of the last line of the log, or [`GENESIS`] for an empty log. A last line without its newline is a
/// torn write: refuse to chain onto it.
fn last_line_hash(file: &mut std::fs::File, path: &Path) -> Result<String, SigningError> {
    let io = |e: std::io::Error| SigningError::Io { path: path.display().to_string(), message: e.to_string() };
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    if len == 0 {
        return Ok(GENESIS.into());
    }
    // Read backwards in chunks until the newline before the last line is found.
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        let chunk = (64 * 1024u64).min(start);
        start -= chunk;
        let mut buf = vec![0u8; chunk as usize];
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        file.read_exact(&mut buf).map_err(io)?;
        buf.extend_from_slice(&tail);
        tail = buf;
        if tail.last() != Some(&b'\n') {
            return Err(SigningError::Malformed(format!(
                "the last record of {} is incomplete (a torn write); run `wasmagent audit verify` on it",
                path.display()
            )));
        }
        let body = &tail[..tail.len() - 1];
        if let Some(newline) = body.iter().rposition(|b| *b == b'\n') {
            return Ok(hash_line(&body[newline + 1..]));
        }
        if start == 0 {
            return Ok(hash_line(body));
        }
    }
}

/// What [`verify_log`] found in a log that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLog {
    /// Number of records.
    pub records: usize,
    /// Hash of the last record, to keep elsewhere and compare later.
    pub last_record_hash: String,
}

/// The first problem found in a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record}{}: {reason}", run_id.as_ref().map(|id| format!(" (run {id})")).unwrap_or_default())]
pub struct LogError {
    /// 1-based position of the record in the file.
    pub record: usize,
    /// The record's run id, when it could be read.
    pub run_id: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks every record of the log at `path` against `key`: canonical form, signature, key and chain. Returns the
/// first record that was edited, removed, reordered, forged or torn.
pub fn verify_log(path: &Path, key: &PublicKey) -> Result<VerifiedLog, LogError> {
    let bytes = std::fs::read(path).map_err(|e| LogError {
        record: 0,
        run_id: None,
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let mut expected_prev = GENESIS.to_owned();
    let mut records = 0;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let number = records + 1;
        let fail =
            |run_id: Option<&str>, reason: String| LogError { record: number, run_id: run_id.map(Into::into), reason };
        let Some(body) = line.strip_suffix(b"\n") else {
            return Err(fail(None, "incomplete last line (a torn write)".into()));
        };
        let not_valid = |e: serde_json::Error| fail(None, format!("not a valid record (edited or corrupted): {e}"));
        let schema = serde_json::from_slice::<SchemaOnly>(body).map_err(not_valid)?.schema;
        match schema.as_str() {
            AGENT_STEP_SCHEMA => {
                let record: AgentStepRecord = serde_json::from_slice(body).map_err(not_valid)?;
                check_record(&record, &record.agent_run_id, body, key, (number, &expected_prev), &fail)?;
            }
            APPROVAL_SCHEMA => {
                let record: ApprovalRecord = serde_json::from_slice(body).map_err(not_valid)?;
                check_record(&record, &record.capability, body, key, (number, &expected_prev), &fail)?;
            }
            _ => {
                let record: RunRecord = serde_json::from_slice(body).map_err(not_valid)?;
                check_record(&record, &record.run_id, body, key, (number, &expected_prev), &fail)?;
            }
        }
        expected_prev = hash_line(body);
        records = number;
    }
    Ok(VerifiedLog { records, last_record_hash: expected_prev })
}

/// The `schema` field of a line, to tell its kind of record.
#[derive(Deserialize)]
struct SchemaOnly {
    schema: String,
}

/// Checks one parsed record (`body` its line): canonical form, signature, key and chain.
fn check_record<R: Chained>(
    record: &R,
    id: &str,
    body: &[u8],
    key: &PublicKey,
    (number, expected_prev): (usize, &str),
    fail: &dyn Fn(Option<&str>, String) -> LogError,
) -> Result<(), LogError> {
    let run_id = Some(id);
    if canonical(record).ok().as_deref() != Some(body) {
        return Err(fail(run_id, "not in canonical form (edited)".into()));
    }
    let Some(signature) = record.signature() else {
        return Err(fail(run_id, "unsigned".into()));
    };
    if signature.alg != "ed25519" || signature.key_id != key.key_id() {
        return Err(fail(
            run_id,
            format!(
                "signed by key {} with {}, not by the given key {} (re-signed or forged)",
                signature.key_id,
                signature.alg,
                key.key_id()
            ),
        ));
    }
    let verified = hex::decode(&signature.sig)
        .ok()
        .and_then(|sig| ed25519_compact::Signature::from_slice(&sig).ok())
        .zip(record.signed_bytes().ok())
        .is_some_and(|(sig, message)| key.ed25519().verify(message, &sig).is_ok());
    if !verified {
        return Err(fail(run_id, "the signature does not verify (the record was edited or forged)".into()));
    }
    if record.prev_record_hash() != expected_prev {
        let reason = if number == 1 {
            "prev_record_hash is not the genesis hash: records before it were removed".to_owned()
        } else {
            format!(
                "prev_record_hash does not match record {}: a record was removed, inserted or reordered",
                number - 1
            )
        };
        return Err(fail(run_id, reason));
    }
    Ok(())
}
