//! `tools.toml` loaded for real: micro-tools run the probe guest under their own manifests, HTTP tools reach a
//! loopback server through the egress policy, upstream MCP servers are a small server written with the official
//! MCP Python SDK (the virtual environment `.ci/run` creates).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../../egress/tests/support/server.rs"]
mod server;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use wasmagent::EgressConfig;
use wasmagent_toolbox::{ToolKind, Toolbox, ToolboxOptions};

fn load(dir: &Path, toml: &str, egress: EgressConfig) -> Result<Toolbox, String> {
    let path = dir.join("tools.toml");
    std::fs::write(&path, toml).unwrap();
    let options = ToolboxOptions { egress, cache_dir: Some(dir.join("cache")), ..ToolboxOptions::default() };
    Toolbox::load(&path, &options).map_err(|e| e.to_string())
}

fn call(toolbox: &Toolbox, name: &str, args: Value) -> Result<Value, String> {
    toolbox.registry().get(name).unwrap_or_else(|| panic!("no tool {name}")).call(args)
}

/// The Python with the MCP SDK: `$WASMAGENT_MCP_PYTHON`, else the virtual environment `.ci/run` creates.
fn sdk_python() -> PathBuf {
    let python = std::env::var_os("WASMAGENT_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-venv/bin/python"));
    assert!(python.exists(), "the MCP Python SDK is missing: no {} (see .ci/run)", python.display());
    python
}

fn upstream_toml(extra: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream_server.py");
    format!(
        "[[mcp]]\nnamespace = \"up\"\ncommand = {:?}\nargs = [{:?}]\ntimeout_ms = 20000\n{extra}",
        sdk_python().display().to_string(),
        script.display().to_string()
    )
}

#[test]
fn micro_tools_get_json_on_stdin_and_only_their_own_permissions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/note.txt"), "for the reader only").unwrap();
    let probe = wasmagent_test_guests::PROBE_MODULE;
    let toolbox = load(
        dir.path(),
        &format!(
            r#"
            [[wasm]]
            name = "text.echo"
            description = "Echoes its arguments."
            module = {probe:?}
            args = ["json-echo"]

            [[wasm]]
            name = "files.reader"
            module = {probe:?}
            args = ["json-cat:/data/note.txt"]
            [wasm.manifest]
            allowed_read_paths = ["data:/data"]

            [[wasm]]
            name = "files.snoop"
            module = {probe:?}
            args = ["json-cat:/data/note.txt"]

            [[wasm]]
            name = "slow"
            module = {probe:?}
            args = ["loop"]
            timeout_ms = 200
            "#
        ),
        EgressConfig::new(),
    )
    .unwrap();

    assert_eq!(call(&toolbox, "text.echo", json!({"a": [1, 2]})).unwrap(), json!({"echo": {"a": [1, 2]}, "bytes": 11}));
    assert_eq!(call(&toolbox, "files.reader", json!({})).unwrap(), json!("for the reader only"));
    // The same module without the grant: its own manifest decides, and it has no mounts.
    let refused = call(&toolbox, "files.snoop", json!({})).unwrap_err();
    assert!(refused.contains("exit code 1") && refused.contains("cannot read /data/note.txt"), "{refused}");
    let slow = call(&toolbox, "slow", json!({})).unwrap_err();
    assert!(slow.contains("outcome timeout"), "{slow}");

    let entries = toolbox.entries();
    let echo = entries.iter().find(|e| e.name == "text.echo").unwrap();
    assert_eq!(echo.kind, ToolKind::Wasm);
    assert!(echo.digest.as_deref().unwrap().starts_with("sha256:"));
}

#[test]
fn a_micro_tool_whose_module_differs_from_its_pin_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let pin = format!("sha256:{}", "0".repeat(64));
    let toml =
        format!("[[wasm]]\nname = \"t\"\nmodule = {:?}\nsha256 = {pin:?}\n", wasmagent_test_guests::PROBE_MODULE);
    let error = load(dir.path(), &toml, EgressConfig::new()).unwrap_err();
    assert!(error.contains("tools.toml") && error.contains("not the pinned"), "{error}");
    let missing = load(dir.path(), "[[wasm]]\nname = \"t\"\nmodule = \"nope.wasm\"\n", EgressConfig::new());
    assert!(missing.unwrap_err().contains("cannot read"), "a missing module is a load error");
}

#[test]
fn http_tools_fill_the_template_and_go_through_the_egress_policy() {
    let server = server::TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
        [[http]]
        name = "echo.get"
        url = "{base}/echo?fixed=1"
        headers = {{ Authorization = "Bearer {{{{secret:TOKEN}}}}" }}

        [[http]]
        name = "echo.post"
        method = "post"
        url = "{base}/echo?id={{id}}"

        [[http]]
        name = "missing"
        url = "{base}/nothing-here"
        "#,
        base = server.url("")
    );
    let mut egress = EgressConfig::new();
    egress.allow_private(&server.host()).unwrap();
    egress.secret("TOKEN", "s3cret-value".into(), &[&server.host()]).unwrap();
    let toolbox = load(dir.path(), &toml, egress).unwrap();

    let got = call(&toolbox, "echo.get", json!({"q": "a b", "n": 2})).unwrap();
    assert_eq!(got["method"], "GET");
    let query = got["query"].as_str().unwrap();
    assert!(query.starts_with("fixed=1&") && query.contains("q=a+b") && query.contains("n=2"), "{query}");
    // The secret reached the server, and is redacted from what the caller sees.
    assert!(!got.to_string().contains("s3cret-value"), "{got}");
    assert_ne!(got["headers"]["authorization"], "Bearer {{secret:TOKEN}}", "{got}");

    let posted = call(&toolbox, "echo.post", json!({"id": "x/1", "title": "hi"})).unwrap();
    assert_eq!(posted["method"], "POST");
    assert_eq!(posted["query"], "id=x%2F1");
    assert_eq!(serde_json::from_str::<Value>(posted["body"].as_str().unwrap()).unwrap(), json!({"title": "hi"}));
    assert!(call(&toolbox, "echo.post", json!({})).unwrap_err().contains("missing argument \"id\""));

    // A 404 is an error naming the status.
    let missing = call(&toolbox, "missing", json!({})).unwrap_err();
    assert!(missing.contains("HTTP 404"), "{missing}");

    // Without the operator's exception the floor refuses loopback.
    let floor = load(dir.path(), &toml, EgressConfig::new()).unwrap();
    let refused = call(&floor, "echo.get", json!({})).unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
}

/// OWASP: ASI02, ASI04
#[test]
fn upstream_tools_are_namespaced_digested_and_disabled_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let toolbox = load(dir.path(), &upstream_toml(""), EgressConfig::new()).unwrap();
    let names: Vec<String> = toolbox.entries().iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, ["up.add", "up.crash", "up.greet", "up.mutate"]);
    assert!(toolbox.entries().iter().all(|e| e.kind == ToolKind::Mcp && e.disabled.is_none()));

    assert_eq!(call(&toolbox, "up.greet", json!({"name": "ada"})).unwrap(), json!({"result": "hello ada"}));
    assert_eq!(call(&toolbox, "up.add", json!({"a": 2, "b": 3})).unwrap(), json!({"sum": 5}));
    // The upstream server's own errors come back as errors.
    assert!(call(&toolbox, "up.add", json!({"a": "x"})).is_err());

    // The server changes greet's description after start-up: greet is disabled, the rest keeps working.
    call(&toolbox, "up.mutate", json!({})).unwrap();
    let disabled = call(&toolbox, "up.greet", json!({"name": "ada"})).unwrap_err();
    assert!(disabled.contains("up.greet is disabled") && disabled.contains("changed"), "{disabled}");
    assert_eq!(call(&toolbox, "up.add", json!({"a": 1, "b": 1})).unwrap(), json!({"sum": 2}));

    // The server dies in the middle of a call: an error, not a hang; later calls fail fast.
    let started = std::time::Instant::now();
    let crashed = call(&toolbox, "up.crash", json!({})).unwrap_err();
    assert!(crashed.contains("up.crash"), "{crashed}");
    assert!(call(&toolbox, "up.add", json!({"a": 1, "b": 1})).is_err());
    assert!(started.elapsed().as_secs() < 20, "a dead upstream must not hang callers");
}

/// OWASP: ASI04
#[test]
fn a_pinned_digest_that_no_longer_matches_disables_the_tool_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = load(dir.path(), &upstream_toml(""), EgressConfig::new()).unwrap();
    let add = first.entries().into_iter().find(|e| e.name == "up.add").unwrap().digest.unwrap();
    drop(first);
    let pins = format!("approved = {{ add = {add:?}, greet = \"sha256:{}\" }}\n", "1".repeat(64));
    let toolbox = load(dir.path(), &upstream_toml(&pins), EgressConfig::new()).unwrap();
    let entries = toolbox.entries();
    let greet = entries.iter().find(|e| e.name == "up.greet").unwrap();
    assert!(greet.disabled.as_deref().unwrap().contains("changed since it was approved"), "{greet:?}");
    assert!(entries.iter().find(|e| e.name == "up.add").unwrap().disabled.is_none());
    assert!(call(&toolbox, "up.greet", json!({"name": "x"})).unwrap_err().contains("disabled"));
    assert_eq!(call(&toolbox, "up.add", json!({"a": 1, "b": 2})).unwrap(), json!({"sum": 3}));

    let only = load(dir.path(), &upstream_toml("tools = [\"add\", \"nope\"]\n"), EgressConfig::new()).unwrap_err();
    assert!(only.contains("\"nope\", which the server does not offer"), "{only}");
}

/// OWASP: ASI02, ASI04
#[test]
fn vetting_disables_poisoned_upstream_tools_and_holds_those_that_ask_for_secrets_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let poisoned = "env = { UPSTREAM_POISONED = \"1\" }\n";
    let toolbox = load(dir.path(), &upstream_toml(poisoned), EgressConfig::new()).unwrap();
    let entries = toolbox.entries();
    let entry = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
    let multiply = entry("up.poisoned_multiply");
    assert_eq!(multiply.decision.map(|d| d.as_str()), Some("disable"));
    let rules: Vec<&str> = multiply.findings.iter().map(|f| f.rule).collect();
    assert!(rules.contains(&"instruction-injection") && rules.contains(&"file-request"), "{rules:?}");
    assert!(multiply.findings.iter().any(|f| f.matched.contains("~/.ssh/id_rsa")), "{:?}", multiply.findings);
    let refused = call(&toolbox, "up.poisoned_multiply", json!({"a": 2, "b": 3})).unwrap_err();
    assert!(refused.contains("is disabled: vetting") && refused.contains("file-request"), "{refused}");

    let login = entry("up.check_login");
    assert_eq!((login.decision.map(|d| d.as_str()), login.disabled.is_none()), (Some("approve"), true));
    let held = call(&toolbox, "up.check_login", json!({"user": "ada"})).unwrap_err();
    assert!(held.contains("needs a person's approval") && held.contains("secret-request"), "{held}");
    let (approvable, names) = toolbox.for_approvals();
    assert_eq!(names, ["up.check_login"]);
    let answer = approvable.get("up.check_login").unwrap().call(json!({"user": "ada"})).unwrap();
    assert_eq!(answer, json!({"user": "ada", "ok": false}));
    assert!(approvable.get("up.poisoned_multiply").unwrap().call(json!({"a": 1, "b": 1})).is_err());
    assert_eq!(entry("up.add").decision.map(|d| d.as_str()), Some("allow"));
    assert!(entry("up.add").findings.is_empty());
    drop(toolbox);

    // The operator's policy decides: allowed, the poisoned tool works (its findings stay in the entries).
    let policy = format!("{poisoned}[vetting]\nhigh = \"allow\"\nmedium = \"allow\"\n");
    let toolbox = load(dir.path(), &upstream_toml(&policy), EgressConfig::new()).unwrap();
    assert_eq!(call(&toolbox, "up.poisoned_multiply", json!({"a": 2, "b": 3})).unwrap(), json!({"product": 6}));
    assert!(!toolbox.entries().iter().find(|e| e.name == "up.poisoned_multiply").unwrap().findings.is_empty());
    drop(toolbox);
    let bad = load(dir.path(), &upstream_toml("[vetting]\nhigh = \"ignore\"\n"), EgressConfig::new()).unwrap_err();
    assert!(bad.contains("unknown variant `ignore`"), "{bad}");
}

#[test]
fn an_upstream_that_cannot_start_is_a_clear_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let error =
        load(dir.path(), "[[mcp]]\nnamespace = \"x\"\ncommand = \"/nonexistent/server\"\n", EgressConfig::new())
            .unwrap_err();
    assert!(error.contains("[[mcp]] \"x\"") && error.contains("cannot start"), "{error}");
    let silent = load(
        dir.path(),
        "[[mcp]]\nnamespace = \"x\"\ncommand = \"sleep\"\nargs = [\"30\"]\ntimeout_ms = 500\n",
        EgressConfig::new(),
    )
    .unwrap_err();
    assert!(silent.contains("no MCP handshake within 500 ms"), "{silent}");
}
