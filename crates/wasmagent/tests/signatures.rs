//! Signed modules through the `Sandbox`: verified before compilation, refused when required and not trusted, and
//! the signer recorded in the report.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use wasmagent::signing::keys::SecretKey;
use wasmagent::signing::module::sign;
use wasmagent::signing::record::{AuditLog, verify_log};
use wasmagent::{CapabilityManifest, EffectiveManifest, ErrorKind, Outcome, RunRequest, Sandbox};
use wasmagent_test_guests::{PROBE_COMPONENT, PROBE_MODULE};

fn manifest(sandbox: &Sandbox, keys: &[&SecretKey], required: bool) -> EffectiveManifest {
    let manifest = CapabilityManifest {
        trusted_keys: keys.iter().map(|k| k.public_key().to_text()).collect(),
        require_signature: Some(required),
        ..Default::default()
    };
    sandbox.resolve(&manifest, Path::new("/")).unwrap()
}

fn run(sandbox: &Sandbox, manifest: &EffectiveManifest, wasm: Vec<u8>) -> wasmagent::RunReport {
    sandbox.run(manifest, &RunRequest::wasm("probe.wasm", wasm).with_args(["hello"])).unwrap()
}

/// Enforces: wasi.trusted_keys, wasi.require_signature
#[test]
fn signed_modules_and_components_run_and_report_their_signer() {
    let sandbox = Sandbox::builder().pool_slots(4).build().unwrap();
    let key = SecretKey::generate();
    let m = manifest(&sandbox, &[&key], true);
    for guest in [PROBE_MODULE, PROBE_COMPONENT] {
        let signed = sign(&wasmagent_test_guests::read(guest), &key).unwrap();
        let report = run(&sandbox, &m, signed);
        assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
        assert_eq!(report.stdout, "hello from wasm\n");
        assert_eq!(report.signer_key_id.as_deref(), Some(key.public_key().key_id().as_str()));
    }
}

/// Enforces: wasi.trusted_keys, wasi.require_signature
#[test]
fn unsigned_untrusted_and_tampered_modules_are_refused_before_compilation() {
    // Nothing is compiled for a refused module: the cache stays empty.
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::builder().pool_slots(4).cache_dir(Some(cache.path().into())).build().unwrap();
    let key = SecretKey::generate();
    let stranger = SecretKey::generate();
    let m = manifest(&sandbox, &[&key], true);
    let module = wasmagent_test_guests::read(PROBE_MODULE);
    let mut tampered = sign(&module, &key).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    for (what, wasm) in [
        ("unsigned", module.clone()),
        ("signed by an unknown key", sign(&module, &stranger).unwrap()),
        ("changed after signing", tampered),
    ] {
        // Twice: the second verdict comes from the sandbox's verdict cache and must refuse just the same.
        let first = run(&sandbox, &m, wasm.clone());
        let report = run(&sandbox, &m, wasm);
        assert_eq!(first.error, report.error, "{what}");
        assert_eq!(report.outcome, Outcome::Error, "{what}");
        let error = report.error.unwrap();
        assert_eq!(error.kind, ErrorKind::Signature, "{what}");
        assert!(error.message.contains("refused before compilation"), "{what}: {}", error.message);
        assert!(report.stdout.is_empty());
    }
    let compiled = walk_files(cache.path());
    assert_eq!(compiled, 0, "refused modules must not be compiled");
}

fn walk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() { walk_files(&path) } else { 1 }
        })
        .sum()
}

/// Enforces: wasi.trusted_keys
#[test]
fn without_require_signature_unsigned_modules_run_and_no_signer_is_claimed() {
    let sandbox = Sandbox::builder().pool_slots(4).build().unwrap();
    let key = SecretKey::generate();
    let stranger = SecretKey::generate();
    let m = manifest(&sandbox, &[&key], false);
    let module = wasmagent_test_guests::read(PROBE_MODULE);
    let report = run(&sandbox, &m, module.clone());
    assert_eq!((report.outcome, report.signer_key_id), (Outcome::Ok, None));
    let report = run(&sandbox, &m, sign(&module, &stranger).unwrap());
    assert_eq!((report.outcome, report.signer_key_id), (Outcome::Ok, None));
}

#[test]
fn every_run_appends_a_verifiable_record_when_an_audit_log_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("audit.jsonl");
    let record_key = SecretKey::generate();
    let sandbox =
        Sandbox::builder().pool_slots(4).audit_log(AuditLog::new(&log_path, record_key.clone())).build().unwrap();
    let m = sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    let module = wasmagent_test_guests::read(PROBE_MODULE);
    for action in ["hello", "trap", "cat:/etc/passwd"] {
        sandbox.run(&m, &RunRequest::wasm("probe.wasm", module.clone()).with_args([action])).unwrap();
    }
    assert_eq!(verify_log(&log_path, record_key.public_key()).unwrap().records, 3);
    let text = std::fs::read_to_string(&log_path).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records[1]["outcome"], "error");
    assert_eq!(records[1]["error_kind"], "trap");
    assert_eq!(records[2]["denials"][0]["target"], "/etc/passwd");
    assert_eq!(records[0]["manifest_digest"], m.digest());
}
