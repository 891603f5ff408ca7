//! Adversarial: a session's memory must not reach a later session. A session reads a secret from a mount and
//! forks; both are closed; later sessions reuse the engine's pool slots (two slots here, so every slot is reused)
//! and must start from the engine's snapshot, never from what the closed sessions left behind.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::sync::Arc;
use wasmagent_egress::{Egress, EgressConfig, SystemResolver};
use wasmagent_engine::{EngineOptions, SandboxEngine};
use wasmagent_kernel::{Outcome, RunRequest, Session};
use wasmagent_kernel_python::PythonKernel;
use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};
use wasmagent_tools::ToolRegistry;

#[test]
fn a_forked_secret_does_not_survive_its_sessions_in_reused_pool_slots() {
    let engine = SandboxEngine::new(EngineOptions { pool_slots: 2, ..EngineOptions::default() }).unwrap();
    let egress = Egress::with_resolver(EgressConfig::default(), Arc::new(SystemResolver)).unwrap();
    let kernel = PythonKernel::new(engine, Arc::new(ToolRegistry::new()), egress).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = "wasmagent-secret-7f3a9c1e5b2d4f60";
    std::fs::write(dir.path().join("secret.txt"), secret).unwrap();
    let manifest = CapabilityManifest {
        allowed_read_paths: vec![format!("{}:/data", dir.path().display())],
        ..CapabilityManifest::default()
    }
    .resolve(Path::new("/"), &ManifestCeilings::default())
    .unwrap();
    let call = |session: &mut dyn Session, code: &str| {
        let report = session.run(&RunRequest::source("s.py", wasmagent_kernel::Language::Python, code)).unwrap();
        assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
        report.value
    };

    let mut parent = kernel.open_session(&manifest, 1 << 20).unwrap();
    call(&mut parent, "secret = open('/data/secret.txt').read()\nopen('/scratch/s', 'w').write(secret)");
    assert!(parent.memory_contains(secret.as_bytes()), "the check must be able to find the secret");
    let mut child = parent.fork().unwrap();
    assert_eq!(call(child.as_mut(), "secret"), serde_json::json!(secret));
    drop(child);
    drop(parent);

    // Both slots are reused, each several times, by sessions that run code and are looked at before and after.
    for round in 0..4 {
        let mut a = kernel.open_session(&manifest, 1 << 20).unwrap();
        let mut b = kernel.open_session(&manifest, 1 << 20).unwrap();
        for later in [&mut a, &mut b] {
            assert!(!later.memory_contains(secret.as_bytes()), "round {round}: a fresh session holds the secret");
            let seen = call(later, "import os\n['secret' in globals(), os.path.exists('/scratch/s')]");
            assert_eq!(seen, serde_json::json!([false, false]), "round {round}");
            assert!(!later.memory_contains(secret.as_bytes()), "round {round}: the secret appeared after a call");
        }
    }
}
