//! `wasmagent mcp` driven by a real client: the official MCP Python SDK (PyPI `mcp`, installed by `.ci/run` into
//! `target/mcp-venv`) runs `tests/mcp_client.py`, which prints what it saw; this test asserts on it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{sdk_python, upstream_server};

#[test]
fn the_python_sdk_runs_code_searches_docs_and_gets_errors_as_results() {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("timeout.toml");
    std::fs::write(&manifest, "cpu_ms = 300\n").unwrap();
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py");
    let out = Command::new(&python)
        .arg(&client)
        .arg(env!("CARGO_BIN_EXE_wasmagent"))
        .arg(&manifest)
        .arg(wasmagent_mcp::MAX_CODE_BYTES.to_string())
        .env("WASMAGENT_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the client printed no summary ({e}): {stdout}\n{stderr}"));
    let case = |name: &str| -> &Value { &summary[name] };
    let text = |name: &str| case(name)["text"].as_str().unwrap_or_default().to_owned();

    assert_eq!(summary["server_name"], "wasmagent");
    assert_eq!(summary["tools"], json!(["execute_code", "search_docs"]));

    let js = case("js");
    assert_eq!(js["is_error"], false, "{js}");
    assert_eq!(js["structured"]["schema"], "wasmagent.run/v1");
    assert_eq!(js["structured"]["outcome"], "ok");
    assert_eq!(js["structured"]["value"], 2);
    assert_eq!(js["structured"]["stdout"], "hi\n");
    assert!(text("js").contains("value: 2") && text("js").contains("stdout:\nhi"), "{}", text("js"));

    let python = case("python");
    assert_eq!(python["is_error"], false, "{python}");
    assert_eq!(python["structured"]["kernel"], "python");
    assert_eq!(python["structured"]["value"], 10);
    assert_eq!(python["structured"]["stdout"], "hello\n");

    let search = case("search");
    assert_eq!(search["is_error"], false, "{search}");
    assert_eq!(search["structured"]["results"], json!([]));
    assert!(text("search").starts_with("No host tools are available"), "{}", text("search"));

    assert_eq!(case("unknown_language")["is_error"], true);
    assert!(text("unknown_language").contains("unknown language \"cobol\""), "{}", text("unknown_language"));
    assert_eq!(case("unknown_language")["structured"], Value::Null, "nothing ran, so there is no report");

    for syntax in ["js_syntax_error", "python_syntax_error"] {
        let result = case(syntax);
        assert_eq!(result["is_error"], true, "{result}");
        assert_eq!(result["structured"]["outcome"], "error", "{result}");
        assert!(text(syntax).contains("SyntaxError"), "{}", text(syntax));
    }

    assert_eq!(case("oversized")["is_error"], true);
    assert!(text("oversized").contains("accepts at most"), "{}", text("oversized"));
    assert_eq!(case("after_errors")["structured"]["value"], 42, "the session survives every error");

    let looping = case("infinite_loop");
    assert_eq!(looping["is_error"], true, "{looping}");
    assert_eq!(looping["structured"]["outcome"], "timeout", "{looping}");
    assert_eq!(looping["structured"]["manifest"]["cpu_ms"], 300, "--manifest is applied");
    assert!(text("infinite_loop").starts_with("outcome: timeout"), "{}", text("infinite_loop"));
    // Not a performance figure: a run stopped at cpu_ms = 300 that took this long would mean the deadline failed.
    assert!(looping["seconds"].as_f64().unwrap() < 30.0, "{looping}");
}

/// A tools file with a granted micro-tool, an ungranted one and the toolbox crate's upstream test server, plus a
/// manifest granting `text.*` and `up.*`.
fn tools_fixture(dir: &Path, python: &Path) -> (PathBuf, PathBuf) {
    let probe = wasmagent_test_guests::PROBE_MODULE;
    let upstream = upstream_server();
    let tools = dir.join("tools.toml");
    std::fs::write(
        &tools,
        format!(
            "[[wasm]]\nname = \"text.echo\"\ndescription = \"Echoes its arguments back.\"\nmodule = {probe:?}\n\
             args = [\"json-echo\"]\n\n[[wasm]]\nname = \"files.reader\"\nmodule = {probe:?}\n\n\
             [[mcp]]\nnamespace = \"up\"\ncommand = {:?}\nargs = [{:?}]\ntimeout_ms = 20000\n",
            python.display().to_string(),
            upstream.display().to_string()
        ),
    )
    .unwrap();
    let manifest = dir.join("manifest.toml");
    std::fs::write(&manifest, "extra_capabilities = [\"tool:text.*\", \"tool:up.*\"]\n").unwrap();
    (tools, manifest)
}

fn summary_of(out: &std::process::Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the client printed no summary ({e}): {stdout}\n{stderr}"))
}

/// What both transports must show: micro-tool calls from both languages, and an ungranted tool refused by the host.
fn assert_code_mode_tools(summary: &Value) {
    assert_eq!(summary["server_name"], "wasmagent");
    let search = &summary["search"];
    assert_eq!(search["structured"]["results"][0]["name"], "text.echo", "{search}");
    assert_eq!(search["structured"]["results"][0]["javascript"], "tools.text.echo(args?: object): any", "{search}");
    assert_eq!(summary["js_tool"]["structured"]["value"], 42, "{}", summary["js_tool"]);
    assert_eq!(summary["js_tool"]["structured"]["tool_calls"][0]["name"], "text.echo");
    assert_eq!(summary["python_tool"]["structured"]["value"], 20, "{}", summary["python_tool"]);
    let ungranted = &summary["ungranted"];
    assert_eq!(ungranted["is_error"], true, "{ungranted}");
    assert_eq!(ungranted["structured"]["denials"][0]["target"], "files.reader", "{ungranted}");
    assert!(ungranted["text"].as_str().unwrap().contains("not granted"), "{ungranted}");
}

/// Enforces: js.extra_capabilities
/// Enforces: python.extra_capabilities
#[test]
fn code_mode_calls_micro_tools_and_upstream_servers_over_stdio() {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    let (tools, manifest) = tools_fixture(dir.path(), &python);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_tools_client.py");
    let out = Command::new(&python)
        .arg(&client)
        .args(["stdio", env!("CARGO_BIN_EXE_wasmagent")])
        .args([&tools, &manifest])
        .env("WASMAGENT_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let summary = summary_of(&out);
    assert_code_mode_tools(&summary);
    // --expose-tools: the granted tools are also direct MCP tools; the ungranted one is not.
    assert_eq!(
        summary["tools"],
        json!(["execute_code", "search_docs", "text.echo", "up.add", "up.crash", "up.greet", "up.mutate"])
    );
    assert_eq!(summary["direct"]["structured"], json!({"echo": {"c": 3}, "bytes": 7}), "{}", summary["direct"]);
    assert_eq!(summary["js_upstream"]["structured"]["value"], 5, "{}", summary["js_upstream"]);
    assert_eq!(summary["python_upstream"]["structured"]["value"], 42, "{}", summary["python_upstream"]);
    let died = &summary["upstream_dies"];
    assert_eq!(died["is_error"], true, "{died}");
    assert!(died["text"].as_str().unwrap().contains("up.crash"), "{died}");
    assert!(died["seconds"].as_f64().unwrap() < 60.0, "{died}");
    assert_eq!(summary["after_upstream_died"]["structured"]["value"], 42);
}

#[test]
fn code_mode_over_streamable_http_reuses_the_server_credentials() {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    // Over HTTP the upstream server is left out: the stdio test covers it; this one covers the transport and auth.
    let probe = wasmagent_test_guests::PROBE_MODULE;
    let tools = dir.path().join("http-tools.toml");
    std::fs::write(
        &tools,
        format!(
            "[[wasm]]\nname = \"text.echo\"\ndescription = \"Echoes its arguments back.\"\nmodule = {probe:?}\n\
             args = [\"json-echo\"]\n\n[[wasm]]\nname = \"files.reader\"\nmodule = {probe:?}\n"
        ),
    )
    .unwrap();
    let key = "an-api-key-for-the-mcp-test";
    let key_hash = key_hash(key);
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "tools = {:?}\n[max_manifest]\nextra_capabilities = [\"tool:text.*\"]\n\
             [[auth.api_keys]]\nsubject = \"agent\"\nsha256 = \"{key_hash}\"\nscopes = [\"runs:write\"]\n",
            tools.display().to_string()
        ),
    )
    .unwrap();
    let served = Served::start(&config, dir.path());
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_tools_client.py");
    let out = Command::new(&python).arg(&client).args(["http", &format!("{}/mcp", served.url), key]).output().unwrap();
    let summary = summary_of(&out);
    assert_code_mode_tools(&summary);
    assert_eq!(summary["tools"], json!(["execute_code", "search_docs"]), "no --expose-tools on the server");
    assert_ne!(summary["wrong_key"], "accepted", "the SDK must not get a session with a wrong key");
    assert_eq!(summary["wrong_key_status"], 401);
    assert_eq!(summary["no_key_status"], 401);
}

#[test]
fn execute_code_over_streamable_http_is_admitted_like_v1_runs() {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    let (key, other_key) = ("an-api-key-for-the-admission-test", "another-subject's-key");
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "max_concurrent_runs = 1\nmax_queued_runs = 0\n[max_manifest]\ncpu_ms = 3000\n\
             [rate_limit]\nconcurrent_runs = 1\n\
             [[auth.api_keys]]\nsubject = \"agent\"\nsha256 = \"{}\"\nscopes = [\"runs:write\"]\n\
             [[auth.api_keys]]\nsubject = \"other\"\nsha256 = \"{}\"\nscopes = [\"runs:write\"]\n",
            key_hash(key),
            key_hash(other_key)
        ),
    )
    .unwrap();
    let served = Served::start(&config, dir.path());
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_admission_client.py");
    let out = Command::new(&python).arg(&client).args([&served.url, key, other_key]).output().unwrap();
    let summary = summary_of(&out);
    assert_eq!(summary["in_flight_seen"], true, "a run over /mcp counts as a run in flight: {summary}");
    assert_eq!(summary["same_subject_status"], 429, "the subject's run slot is held for the whole call: {summary}");
    let refused = &summary["other_while_busy"];
    assert_eq!(refused["is_error"], true, "{refused}");
    assert!(refused["text"].as_str().unwrap().contains("every run slot is busy and the queue is full"), "{refused}");
    assert_eq!(summary["still_in_flight"], 1.0, "the refused call ran nothing: {summary}");
    let slow = &summary["slow"];
    assert!(slow["text"].as_str().unwrap().starts_with("outcome: timeout"), "{slow}");
    assert_eq!(summary["other_after"]["structured"]["value"], 42, "the slot is free again: {summary}");
    let metrics = &summary["metrics"];
    assert_eq!(metrics["busy"], 1.0, "{metrics}");
    assert_eq!(metrics["concurrency_limited"], 1.0, "{metrics}");
    assert_eq!(metrics["timeout_runs"], 1.0, "{metrics}");
    assert_eq!(metrics["ok_runs"], 1.0, "{metrics}");
    assert_eq!(metrics["in_flight"], 0.0, "{metrics}");
}

/// The `sha256` of an API key, as the server's configuration lists it.
fn key_hash(key: &str) -> String {
    use std::fmt::Write as _;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes());
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `wasmagent serve` in a child process, killed on drop.
struct Served {
    child: std::process::Child,
    url: String,
}

impl Served {
    fn start(config: &Path, dir: &Path) -> Served {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("WASMAGENT_CACHE_DIR", dir.join("cache"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("serve exited before listening").unwrap();
            if let Some(url) = line.strip_prefix("wasmagent: serving on ") {
                break url.to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Served { child, url }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `request_capability` with the official SDK's elicitation: approvals for the session and once widen only what
/// they name, a declined one changes nothing, a request above `--max-manifest` or on the floor is refused without
/// asking, a client without elicitation is refused, and every decision is a signed record in the audit log.
///
/// Enforces: python.allowed_read_paths
#[test]
fn request_capability_asks_the_person_and_widens_only_that_connection_within_the_maximum() {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let data_file = root.join("data/in.txt");
    std::fs::write(&data_file, "42\n").unwrap();
    let manifest = root.join("manifest.toml");
    std::fs::write(&manifest, "cpu_ms = 20000\n").unwrap();
    let maximum = root.join("max.toml");
    std::fs::write(&maximum, format!("cpu_ms = 20000\nallowed_read_paths = [{:?}]\n", root.join("data"))).unwrap();
    let (key, audit_log) = (root.join("audit.key"), root.join("audit.jsonl"));
    let bin = env!("CARGO_BIN_EXE_wasmagent");
    assert!(Command::new(bin).args(["keygen", "--out", key.to_str().unwrap()]).status().unwrap().success());
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_escalation_client.py");
    let out = Command::new(&python)
        .arg(&client)
        .args([bin.as_ref(), manifest.as_os_str(), maximum.as_os_str(), audit_log.as_os_str(), key.as_os_str()])
        .arg(&data_file)
        .env("WASMAGENT_CACHE_DIR", root.join("cache"))
        .output()
        .unwrap();
    let summary = summary_of(&out);
    let text = |v: &Value| v["text"].as_str().unwrap_or_default().to_owned();

    let session = &summary["session"];
    assert_eq!(session["tools"], json!(["execute_code", "request_capability", "search_docs"]));
    assert_eq!(session["before"]["is_error"], true, "{session}");
    let hint = text(&session["before"]);
    assert!(hint.contains("denied fs.read") && hint.contains("request_capability"), "{hint}");
    assert_eq!(session["request"]["is_error"], false, "{session}");
    assert!(text(&session["request"]).contains("approved for this connection"), "{session}");
    let asked = session["asked"][0]["message"].as_str().unwrap();
    assert!(asked.contains(&format!("adds read access to {}", root.join("data").display())), "{asked}");
    assert!(asked.contains("sum the numbers"), "the person sees the agent's reason: {asked}");
    assert_eq!(session["after"]["structured"]["value"], "42", "{session}");
    assert_eq!(session["again"]["structured"]["value"], "42", "a session grant lasts: {session}");

    let once = &summary["once"];
    assert_eq!(once["after"]["structured"]["value"], "42", "{once}");
    assert_eq!(once["again"]["is_error"], true, "a grant for once is used up by one run: {once}");
    assert_eq!(once["again"]["structured"]["denials"][0]["capability"], "fs.read", "{once}");

    let declined = &summary["declined"];
    assert_eq!(declined["request"]["is_error"], true, "{declined}");
    assert!(text(&declined["request"]).contains("declined"), "{declined}");
    assert_eq!(declined["after"]["structured"]["denials"][0]["capability"], "fs.read", "{declined}");

    let beyond = &summary["beyond"];
    assert_eq!(beyond["asked"], 0, "nobody is asked about what cannot be granted: {beyond}");
    let above = text(&beyond["above_maximum"]);
    assert!(above.contains("above the operator's maximum manifest") && above.contains("/etc"), "{above}");
    let floor = text(&beyond["floor"]);
    assert!(floor.contains("nothing to approve") && floor.contains("169.254.169.254"), "{floor}");
    assert!(text(&beyond["malformed"]).contains("fs.read, fs.write, net.http, tool"), "{beyond}");
    let refused = text(&summary["no_elicitation"]["request"]);
    assert!(refused.contains("does not support elicitation"), "{refused}");

    let pubkey = format!("{}.pub", key.display());
    let verify = Command::new(bin).args(["audit", "verify", audit_log.to_str().unwrap(), "--pubkey", &pubkey]).output();
    let verify = verify.unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let approvals: Vec<Value> = std::fs::read_to_string(&audit_log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|record| record["schema"] == "wasmagent.approval/v1")
        .collect();
    let decisions: Vec<(&str, &str)> =
        approvals.iter().map(|r| (r["decision"].as_str().unwrap(), r["scope"].as_str().unwrap())).collect();
    assert_eq!(decisions, [("approved", "session"), ("approved", "once"), ("declined", ""), ("refused", "")]);
    let by_client = |r: &Value| r["subject"].as_str().unwrap().starts_with("mcp-connection-");
    assert!(approvals.iter().all(|r| by_client(r) && r["subject"].as_str().unwrap().contains("(MCP client ")));
    assert_eq!(approvals[0]["capability"], format!("fs.read {}", data_file.display()));
}

/// `wasmagent tools check` shows what vetting found in each upstream tool, with the decision, and exits 1 when the
/// policy disabled one.
#[test]
fn tools_check_prints_vetting_findings_and_fails_on_a_disabled_tool() {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    let upstream = upstream_server();
    let tools = dir.path().join("tools.toml");
    let declare = |vetting: &str| {
        let text = format!(
            "[[mcp]]\nnamespace = \"up\"\ncommand = {:?}\nargs = [{:?}]\nenv = {{ UPSTREAM_POISONED = \"1\" }}\n\
             timeout_ms = 20000\n{vetting}",
            python.display().to_string(),
            upstream.display().to_string()
        );
        std::fs::write(&tools, text).unwrap();
    };
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_wasmagent"))
            .args(["tools", "check", "--tools", tools.to_str().unwrap()])
            .env("WASMAGENT_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap()
    };
    declare("");
    let out = check();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let multiply = stdout.split_once("up.poisoned_multiply  mcp").map_or("", |(_, rest)| rest);
    assert!(multiply.contains("vetting: high instruction-injection in description: \""), "{stdout}");
    assert!(multiply.contains("DISABLED: tool up.poisoned_multiply is disabled: vetting"), "{stdout}");
    assert!(stdout.contains("NEEDS APPROVAL"), "{stdout}");
    assert!(stderr.contains("1 disabled, 1 needing approval"), "{stderr}");

    declare("[vetting]\nhigh = \"allow\"\nmedium = \"allow\"\n");
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("allowed by [vetting]") && !stdout.contains("DISABLED"), "{stdout}");
}

/// `/mcp` on `wasmagent serve` with `[mcp.manifest]`: runs start from that manifest, a person approves one access for
/// the MCP session through elicitation (within `max_manifest`), and the next MCP session starts without it.
#[test]
fn mcp_over_http_with_a_starting_manifest_offers_request_capability_per_session() {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let data_file = root.join("data/in.txt");
    std::fs::write(&data_file, "42\n").unwrap();
    let key = "an-api-key-for-escalation";
    let config = root.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[max_manifest]\nallowed_read_paths = [{:?}]\n[mcp.manifest]\ncpu_ms = 2000\n\
             [[auth.api_keys]]\nsubject = \"agent\"\nsha256 = \"{}\"\nscopes = [\"runs:write\"]\n",
            root.join("data"),
            key_hash(key)
        ),
    )
    .unwrap();
    let served = Served::start(&config, &root);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_escalation_client.py");
    let url = format!("{}/mcp", served.url);
    let out = Command::new(&python).arg(&client).args(["http", &url, key]).arg(&data_file).output().unwrap();
    let summary = summary_of(&out);
    assert_eq!(summary["tools"], json!(["execute_code", "request_capability", "search_docs"]));
    assert_eq!(summary["before"]["structured"]["denials"][0]["capability"], "fs.read", "{summary}");
    assert_eq!(summary["request"]["is_error"], false, "{summary}");
    assert_eq!(summary["after"]["structured"]["value"], "42", "{summary}");
    assert_eq!(summary["next_session"]["structured"]["denials"][0]["capability"], "fs.read", "{summary}");
    assert_eq!(summary["asked"], 1);
}
