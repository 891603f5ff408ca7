//! The audit log: a long chain verifies, and each kind of tampering is detected and named.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use wasmagent_kernel::{ErrorInfo, ErrorKind, RunReport};
use wasmagent_manifest::EffectiveManifest;
use wasmagent_signing::keys::SecretKey;
use wasmagent_signing::record::{AgentStepRecord, ApprovalRecord, AuditLog, GENESIS, verify_log};

fn report(i: usize) -> RunReport {
    let error = ErrorInfo { kind: ErrorKind::Trap, message: format!("run {i}") };
    let mut report = RunReport::refused("wasi", error, &EffectiveManifest::deny_all(), &format!("sha256:{i:064x}"));
    report.usage.wall_ms = i as f64 / 7.0;
    report
}

fn write_log(path: &Path, key: &SecretKey, runs: usize) {
    let log = AuditLog::new(path, key.clone());
    for i in 0..runs {
        log.append(&report(i)).unwrap();
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

#[test]
fn a_thousand_records_verify_and_chain_from_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    write_log(&path, &key, 1000);
    let verified = verify_log(&path, key.public_key()).unwrap();
    assert_eq!(verified.records, 1000);
    let first: serde_json::Value = serde_json::from_str(&lines(&path)[0]).unwrap();
    assert_eq!(first["prev_record_hash"], GENESIS);
    assert_eq!(first["signature"]["alg"], "ed25519");
    assert_eq!(first["schema"], "wasmagent.record/v1");
}

#[test]
fn a_session_call_names_its_session_and_call_and_records_outside_sessions_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    let log = AuditLog::new(&path, key.clone());
    let mut call = report(1);
    call.session_id = Some("s-0123".into());
    call.session_call = Some(3);
    log.append(&report(0)).unwrap();
    log.append(&call).unwrap();
    assert_eq!(verify_log(&path, key.public_key()).unwrap().records, 2);
    let records: Vec<serde_json::Value> = lines(&path).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records[0].get("session_id").is_none(), "{}", records[0]);
    assert_eq!(
        (&records[1]["session_id"], &records[1]["session_call"]),
        (&serde_json::json!("s-0123"), &serde_json::json!(3))
    );
    // The session fields are signed like every other.
    let mut all = lines(&path);
    all[1] = all[1].replace("\"session_call\":3", "\"session_call\":4");
    rewrite(&path, &all);
    assert!(verify_log(&path, key.public_key()).unwrap_err().reason.contains("signature does not verify"));
}

#[test]
fn editing_one_field_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    write_log(&path, &key, 5);
    let mut all = lines(&path);
    all[2] = all[2].replace("\"outcome\":\"error\"", "\"outcome\":\"ok\"");
    rewrite(&path, &all);
    let error = verify_log(&path, key.public_key()).unwrap_err();
    assert_eq!(error.record, 3);
    assert!(error.reason.contains("signature does not verify"), "{error}");
}

#[test]
fn deleting_a_record_is_detected_at_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    write_log(&path, &key, 5);
    let mut all = lines(&path);
    all.remove(1);
    rewrite(&path, &all);
    let error = verify_log(&path, key.public_key()).unwrap_err();
    assert_eq!(error.record, 2);
    assert!(error.reason.contains("removed, inserted or reordered"), "{error}");

    let mut all = lines(&path);
    all.remove(0);
    rewrite(&path, &all);
    let error = verify_log(&path, key.public_key()).unwrap_err();
    assert_eq!(error.record, 1);
    assert!(error.reason.contains("genesis"), "{error}");
}

#[test]
fn swapping_two_records_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    write_log(&path, &key, 5);
    let mut all = lines(&path);
    all.swap(2, 3);
    rewrite(&path, &all);
    let error = verify_log(&path, key.public_key()).unwrap_err();
    assert_eq!(error.record, 3);
    assert!(error.reason.contains("reordered"), "{error}");
}

#[test]
fn a_torn_last_line_is_reported_and_not_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    write_log(&path, &key, 3);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let error = verify_log(&path, key.public_key()).unwrap_err();
    assert_eq!(error.record, 3);
    assert!(error.reason.contains("torn"), "{error}");
    let appended = AuditLog::new(&path, key.clone()).append(&report(9));
    assert!(appended.unwrap_err().to_string().contains("torn"));
}

#[test]
fn re_signing_with_another_key_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    let forger = SecretKey::generate();
    write_log(&path, &key, 2);
    // The forger appends a record of their own, correctly chained.
    AuditLog::new(&path, forger.clone()).append(&report(7)).unwrap();
    let error = verify_log(&path, key.public_key()).unwrap_err();
    assert_eq!(error.record, 3);
    assert!(error.reason.contains("re-signed or forged"), "{error}");
    assert!(verify_log(&path, forger.public_key()).unwrap_err().record == 1);
}

#[test]
fn concurrent_appends_never_interleave_or_lose_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    let log = std::sync::Arc::new(AuditLog::new(&path, key.clone()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    log.append(&report(t * 100 + i)).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(verify_log(&path, key.public_key()).unwrap().records, 200);
}

#[test]
fn agent_steps_chain_between_run_records_and_edits_to_them_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    let log = AuditLog::new(&path, key.clone());
    let step = |kind: &str, name: &str, outcome: &str| {
        AgentStepRecord::new("a1b2", 1, kind, name, format!("sha256:{:064x}", 7), outcome, (100, 10), 5)
    };
    let written = log.append_agent_step(step("model_call", "openai:local", "tool_calls")).unwrap();
    assert_eq!((written.schema.as_str(), written.prev_record_hash.as_str()), ("wasmagent.agent-step/v1", GENESIS));
    assert!(written.signature.is_some() && !written.time.is_empty());
    log.append(&report(1)).unwrap();
    log.append_agent_step(step("code_run", "javascript", "ok")).unwrap();
    log.append_agent_step(step("final", "answered", "answered")).unwrap();
    assert_eq!(verify_log(&path, key.public_key()).unwrap().records, 4);

    let mut all = lines(&path);
    let original = all.clone();
    all[2] = all[2].replace("\"outcome\":\"ok\"", "\"outcome\":\"error\"");
    assert_ne!(all[2], original[2]);
    rewrite(&path, &all);
    let error = verify_log(&path, key.public_key()).unwrap_err();
    assert_eq!((error.record, error.run_id.as_deref()), (3, Some("a1b2")), "{error}");
    assert!(error.reason.contains("signature does not verify"), "{error}");

    let mut all = original.clone();
    all.remove(1);
    rewrite(&path, &all);
    let error = verify_log(&path, key.public_key()).unwrap_err();
    assert_eq!(error.record, 2, "removing the run record between two steps breaks the chain: {error}");
}

#[test]
fn approvals_chain_with_run_records_and_an_edited_decision_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = SecretKey::generate();
    let log = AuditLog::new(&path, key.clone());
    log.append(&report(1)).unwrap();
    let grants = vec!["adds read access to /srv/data".to_owned()];
    let asked =
        ApprovalRecord::new("mcp (connection 3)", "fs.read /srv/data/a.csv", grants, "to sum it", "declined", "");
    let written = log.append_approval(asked).unwrap();
    assert_eq!(written.schema, "wasmagent.approval/v1");
    assert!(written.signature.is_some() && !written.time.is_empty() && written.reason_digest.starts_with("sha256:"));
    assert_eq!(verify_log(&path, key.public_key()).unwrap().records, 2);

    let mut all = lines(&path);
    all[1] = all[1].replace("\"decision\":\"declined\"", "\"decision\":\"approved\"");
    rewrite(&path, &all);
    let error = verify_log(&path, key.public_key()).unwrap_err();
    assert_eq!((error.record, error.run_id.as_deref()), (2, Some("fs.read /srv/data/a.csv")), "{error}");
    assert!(error.reason.contains("signature does not verify"), "{error}");
}
