//! Sessions: state smuggled out of a session through anything shared (the engine's compiled code and snapshot,
//! reused pool slots, the scratch directory's host path) must not reach another session, a fork's parent, or a
//! fresh run. The host-side check that a forked secret leaves no trace in reused memory slots is in
//! `crates/kernel-js/tests/session_memory.rs` (it looks into linear memory, which no public API exposes).

use crate::still_serves;
use serde_json::json;
use std::path::Path;
use wasmagent::{CapabilityManifest, EffectiveManifest, Language, Outcome, RunRequest, Sandbox, SandboxSession};

/// A sandbox of this test's own: sessions hold pool slots between calls, and the suite's shared sandbox keeps its
/// slots for the tests that run many sandboxes at once.
fn sandbox() -> &'static Sandbox {
    static SANDBOX: std::sync::OnceLock<Sandbox> = std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::builder().pool_slots(6).build().unwrap())
}

fn manifest(toml: &str) -> EffectiveManifest {
    sandbox().resolve(&CapabilityManifest::from_toml_str(toml).unwrap(), Path::new("/")).unwrap()
}

fn call(session: &mut SandboxSession, code: &str) -> serde_json::Value {
    let language = session.language();
    let report = session.run(&RunRequest::source("s", language, code)).unwrap();
    assert_eq!(report.outcome, Outcome::Ok, "{code}: {report:?}");
    report.value
}

/// A session poisons what every instance of the engine starts from (prototypes and built-ins, the host glue's
/// captured functions, `builtins`, module attributes and `sys.modules`); later sessions start clean. (Poisoning the
/// modules the Python runner itself uses, such as `json`, breaks only the poisoner's own session.)
#[test]
fn poison_in_one_session_reaches_no_other_session_and_no_fresh_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "SESSION-SECRET-42").unwrap();
    let m = manifest(&format!("allowed_read_paths = [\"{}:/data\"]", dir.path().display()));
    let mut js = sandbox().session_for("adv-js", &m, Language::Js).unwrap();
    call(
        &mut js,
        "var secret = fs.readFile('/data/secret.txt'); Object.prototype.leak = secret; JSON.stringify = () => secret; \
         Array.prototype.map = function () { return [secret]; }; fs.writeFile('/scratch/s', secret); 1",
    );
    let mut forked = js.fork().unwrap();
    assert_eq!(call(&mut forked, "({}).leak"), json!("SESSION-SECRET-42"), "the fork holds the poison");
    drop(forked);
    drop(js);
    let mut py = sandbox().session_for("adv-py", &m, Language::Python).unwrap();
    call(
        &mut py,
        "import builtins, sys, math\nsecret = open('/data/secret.txt').read()\nbuiltins.leak = secret\n\
         sys.modules['math'].pi = secret\nsys.modules['poison'] = secret\nopen('/scratch/s', 'w').write(secret)",
    );
    let mut forked = py.fork().unwrap();
    assert_eq!(call(&mut forked, "import math\n[leak, math.pi]"), json!(["SESSION-SECRET-42", "SESSION-SECRET-42"]));
    drop(forked);
    drop(py);

    let clean = manifest("");
    let mut later_js = sandbox().session_for("adv-later", &clean, Language::Js).unwrap();
    let seen = call(&mut later_js, "[typeof secret, ({}).leak, [1].map(x => x + 1), fs.exists('/scratch/s')]");
    assert_eq!(seen, json!(["undefined", null, [2], false]));
    let mut later_py = sandbox().session_for("adv-later", &clean, Language::Python).unwrap();
    let seen = call(
        &mut later_py,
        "import builtins, math, os, sys\n[hasattr(builtins, 'leak'), math.pi, 'poison' in sys.modules, \
         os.path.exists('/scratch/s')]",
    );
    assert_eq!(seen, json!([false, std::f64::consts::PI, false, false]));
    let fresh =
        sandbox().run(&clean, &RunRequest::source("fresh.js", Language::Js, "[typeof secret, ({}).leak]")).unwrap();
    assert_eq!(fresh.value, json!(["undefined", null]));
    still_serves(Language::Js);
    still_serves(Language::Python);
}
