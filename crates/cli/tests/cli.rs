//! The `wasmagent` binary end to end: flags, manifest files, output modes and exit statuses.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../../egress/tests/support/server.rs"]
mod server;

use server::TestServer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use wasmagent_test_guests::PROBE_MODULE;

fn workspace_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

struct Cli {
    cache: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Cli { cache: tempfile::tempdir().unwrap() }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_wasmagent"))
            .args(args)
            .env("WASMAGENT_CACHE_DIR", self.cache.path())
            .env("SECRET_HOST_VARIABLE", "must-not-leak")
            .output()
            .unwrap()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

#[test]
fn the_readme_example_runs_and_prints_its_greeting() {
    let cli = Cli::new();
    let hello = workspace_file("examples/hello.wat");
    let manifest = workspace_file("examples/hello.toml");
    let out = cli.run(&["run", hello.to_str().unwrap(), "--manifest", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello from the manifest\n");
    assert!(stderr(&out).contains("wasmagent: ok"), "{}", stderr(&out));

    let bare = cli.run(&["run", hello.to_str().unwrap()]);
    assert_eq!(stdout(&bare), "hello from a sandboxed module\n", "no env unless granted");
}

#[test]
fn json_mode_prints_one_report_with_flags_merged_into_the_manifest() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "file contents").unwrap();
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, "env = { FROM_FILE = \"1\" }\ncpu_ms = 4000").unwrap();
    let stdin = dir.path().join("stdin.txt");
    std::fs::write(&stdin, "piped").unwrap();
    let mount = format!("{}:/in", dir.path().display());
    let out = cli.run(&[
        "run",
        PROBE_MODULE,
        "--json",
        "--manifest",
        manifest.to_str().unwrap(),
        "--env",
        "FROM_FLAG=2",
        "--allow-read",
        &mount,
        "--cpu-ms",
        "3000",
        "--memory",
        "64MiB",
        "--stdin",
        stdin.to_str().unwrap(),
        "--",
        "env",
        "cat:/in/in.txt",
        "stdin",
        "args",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["schema"], "wasmagent.run/v1");
    assert_eq!(report["outcome"], "ok");
    assert_eq!(
        report["stdout"],
        "ENV FROM_FILE=1\nENV FROM_FLAG=2\nOK cat /in/in.txt file contents\nSTDIN piped\n\
         ARGS probe.wasm env cat:/in/in.txt stdin args\n"
    );
    assert_eq!(report["manifest"]["cpu_ms"], 3000, "flags override the file");
    assert_eq!(report["manifest"]["memory_limit_bytes"], 64 << 20);
    assert!(report["manifest_digest"].as_str().unwrap().starts_with("sha256:"));
    for field in ["wall_ms", "fuel_consumed", "memory_peak_bytes", "host_calls", "stdout_bytes", "stderr_bytes"] {
        assert!(report["usage"][field].is_number(), "usage.{field}");
    }
    assert!(!stdout(&out).contains("must-not-leak"));
}

#[test]
fn exit_statuses_distinguish_success_failure_usage_and_limits() {
    let cli = Cli::new();
    assert_eq!(cli.run(&["run", PROBE_MODULE, "--", "hello"]).status.code(), Some(0));
    assert_eq!(cli.run(&["run", PROBE_MODULE, "--", "exit:0"]).status.code(), Some(0));
    let exit = cli.run(&["run", PROBE_MODULE, "--json", "--", "exit:5"]);
    assert_eq!(exit.status.code(), Some(1));
    assert_eq!(json(&exit)["exit_code"], 5);
    assert_eq!(cli.run(&["run", PROBE_MODULE, "--", "trap"]).status.code(), Some(1));

    let timeout = cli.run(&["run", PROBE_MODULE, "--json", "--cpu-ms", "200", "--", "loop"]);
    assert_eq!(timeout.status.code(), Some(3));
    assert_eq!(json(&timeout)["outcome"], "timeout");
    let memory = cli.run(&["run", PROBE_MODULE, "--memory", "16MiB", "--", "bomb"]);
    assert_eq!(memory.status.code(), Some(3));
    assert!(stderr(&memory).contains("memory_limit"), "{}", stderr(&memory));
    let output = cli.run(&["run", PROBE_MODULE, "--max-output", "100", "--", "print:1000"]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(output.stdout.len(), 100);
    let fuel = cli.run(&["run", PROBE_MODULE, "--fuel", "10000", "--", "loop"]);
    assert_eq!(fuel.status.code(), Some(3));
}

#[test]
fn malformed_modules_and_manifests_exit_2_with_a_clear_message_and_run_nothing() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0\x99garbage").unwrap();
    let out = cli.run(&["run", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid code"), "{}", stderr(&out));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "cpu_ms = 100\nallowed_read_path = [\"/tmp\"]\n").unwrap();
    let out = cli.run(&["run", PROBE_MODULE, "--manifest", bad.to_str().unwrap(), "--", "hello"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("allowed_read_path"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "nothing ran");

    let out = cli.run(&["run", PROBE_MODULE, "--cpu-ms", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cpu_ms"), "{}", stderr(&out));
    let out = cli.run(&["run", PROBE_MODULE, "--allow-write", "/definitely/missing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("allowed_write_paths[0]"), "{}", stderr(&out));
    let out = cli.run(&["run", PROBE_MODULE, "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cli.run(&["run", PROBE_MODULE, "--allow-host", "*"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("allowed_hosts[0]"), "{}", stderr(&out));
    let out = cli.run(&["run", PROBE_MODULE, "--allow-private", "169.254.169.254"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("metadata"), "{}", stderr(&out));
}

#[test]
fn denials_are_listed_on_stderr() {
    let cli = Cli::new();
    let out = cli.run(&["run", PROBE_MODULE, "--", "cat:/etc/passwd"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("ERR cat /etc/passwd"));
    assert!(stderr(&out).contains("denied fs.read /etc/passwd"), "{}", stderr(&out));
}

#[test]
fn manifest_check_prints_the_effective_manifest_or_names_the_bad_field() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let good = dir.path().join("m.json");
    std::fs::write(&good, r#"{"allowedReadPaths": ["data"], "cpuMs": 250}"#).unwrap();
    let out = cli.run(&["manifest", "check", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let effective = json(&out);
    assert_eq!(effective["cpu_ms"], 250);
    assert_eq!(effective["memory_limit_bytes"], 128 << 20);
    let data = std::fs::canonicalize(dir.path().join("data")).unwrap();
    assert_eq!(effective["allowed_read_paths"][0], data.display().to_string(), "relative to the manifest file");
    assert!(stderr(&out).contains("sha256:"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "memory_limit_bytes = \"1TB\"").unwrap();
    let out = cli.run(&["manifest", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("memory_limit_bytes") && stderr(&out).contains("ceiling"), "{}", stderr(&out));
}

#[test]
fn a_module_can_be_read_from_standard_input() {
    use std::io::Write;
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
        .args(["run", "-", "--json"])
        .env("WASMAGENT_CACHE_DIR", cache.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(workspace_file("examples/hello.wat")).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["stdout"], "hello from a sandboxed module\n");
}

/// OWASP: ASI04
#[test]
fn keygen_sign_verify_and_run_with_required_signatures() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signer.key");
    let out = cli.run(&["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("ed25519:"));
    let public = dir.path().join("signer.key.pub");
    assert_eq!(std::fs::read_to_string(&public).unwrap(), stdout(&out));

    let module = dir.path().join("probe.wasm");
    std::fs::copy(PROBE_MODULE, &module).unwrap();
    let unsigned = dir.path().join("unsigned.wasm");
    std::fs::copy(PROBE_MODULE, &unsigned).unwrap();
    let (module, unsigned, key, public) =
        (module.to_str().unwrap(), unsigned.to_str().unwrap(), key.to_str().unwrap(), public.to_str().unwrap());
    assert_eq!(cli.run(&["sign", module, "--key", key]).status.code(), Some(0));
    let verified = cli.run(&["verify", module, "--pubkey", public]);
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
    assert_eq!(cli.run(&["verify", unsigned, "--pubkey", public]).status.code(), Some(1));

    let ok = cli.run(&["run", module, "--json", "--require-signature", "--trusted-key", public, "--", "hello"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(json(&ok)["signer_key_id"].as_str().unwrap().len(), 24);

    let refused = cli.run(&["run", unsigned, "--json", "--require-signature", "--trusted-key", public, "--", "hello"]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(json(&refused)["error"]["kind"], "signature");
    assert_eq!(json(&refused)["stdout"], "");
}

/// OWASP: ASI09, ASI10
#[test]
fn run_records_are_appended_and_audit_verify_names_a_tampered_record() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("records.key");
    assert_eq!(cli.run(&["keygen", "--out", key.to_str().unwrap()]).status.code(), Some(0));
    let log = dir.path().join("audit.jsonl");
    let (key, log_s) = (key.to_str().unwrap(), log.to_str().unwrap());
    for action in ["hello", "exit:3", "hello"] {
        let out = cli.run(&["run", PROBE_MODULE, "--record", log_s, "--record-key", key, "--", action]);
        assert!(out.status.code() == Some(0) || out.status.code() == Some(1), "{}", stderr(&out));
    }
    let public = format!("{key}.pub");
    let ok = cli.run(&["audit", "verify", log_s, "--pubkey", &public]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("3 records"));

    let text = std::fs::read_to_string(&log).unwrap().replace("\"exit_code\":3", "\"exit_code\":0");
    std::fs::write(&log, text).unwrap();
    let bad = cli.run(&["audit", "verify", log_s, "--pubkey", &public]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stdout(&bad).contains("record 2"), "{}", stdout(&bad));

    let missing_key = cli.run(&["run", PROBE_MODULE, "--record", log_s]);
    assert_eq!(missing_key.status.code(), Some(2), "--record needs --record-key");
}

#[test]
fn javascript_runs_from_a_file_or_from_eval() {
    let cli = Cli::new();
    let out = cli.run(&["run", "--lang", "js", "-e", "console.log('hi'); [1, 2].map(x => x * 21)"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n[21,42]\n");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.js");
    std::fs::write(&script, "env.GREETING + ' ' + JSON.stringify(tools)").unwrap();
    let out = cli.run(&["run", script.to_str().unwrap(), "--json", "--env", "GREETING=hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["value"], "hello {}");
    assert_eq!(json(&out)["kernel"], "js");
    let thrown = cli.run(&["run", "-e", "throw new Error('boom')"]);
    assert_eq!(thrown.status.code(), Some(1));
    assert!(stderr(&thrown).contains("Error: boom"), "{}", stderr(&thrown));
    let looping = cli.run(&["run", "-e", "for (;;) {}", "--cpu-ms", "200"]);
    assert_eq!(looping.status.code(), Some(3));
    // The engine was compiled by the first of these processes; every later one loads it from the disk cache.
    let cached = cli.run(&["run", "-e", "1", "--json"]);
    assert_eq!(json(&cached)["usage"]["code_cache"], "disk");
}

#[test]
fn python_runs_from_a_file_or_from_eval() {
    let cli = Cli::new();
    let out = cli.run(&["run", "--lang", "python", "-e", "print('hi')\n[x * 21 for x in (1, 2)]"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n[21,42]\n");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.py");
    std::fs::write(&script, "import os\nos.environ['GREETING'] + ' ' + str(sorted(os.environ))").unwrap();
    let out = cli.run(&["run", script.to_str().unwrap(), "--json", "--env", "GREETING=hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["value"], "hello ['GREETING']", "the host environment never leaks");
    assert_eq!(json(&out)["kernel"], "python");
    let exited = cli.run(&["run", "--lang", "python", "-e", "import sys; sys.exit(4)"]);
    assert_eq!(exited.status.code(), Some(1));
    assert!(stderr(&exited).contains("exit (exit code 4)"), "{}", stderr(&exited));
    let looping = cli.run(&["run", "--lang", "python", "-e", "while True: pass", "--cpu-ms", "200"]);
    assert_eq!(looping.status.code(), Some(3));
    // The engine was compiled by the first of these processes; every later one loads it from the disk cache.
    let cached = cli.run(&["run", "--lang", "python", "-e", "1", "--json"]);
    assert_eq!(json(&cached)["usage"]["code_cache"], "disk");
}

/// OWASP: ASI01, ASI02
#[test]
fn fetch_reaches_a_private_host_only_with_an_operator_exception() {
    let server = TestServer::start();
    let cli = Cli::new();
    let code = format!("fetch({:?}).then(r => r.text())", server.url("/hello"));
    let host = server.host();
    let out = cli.run(&["run", "--lang", "js", "-e", &code, "--allow-host", &host, "--allow-private", &host, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["value"], "hello from loopback");
    assert_eq!(json(&out)["http_requests"][0]["status"], 200);
    let out = cli.run(&["run", "--lang", "js", "-e", &code, "--allow-host", &host]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("denied net.http") && stderr(&out).contains("loopback"), "{}", stderr(&out));
}

/// `wasmagent serve` in a child process, killed on drop.
struct Served(std::process::Child, String);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(cli: &Cli, extra: &[&str]) -> Served {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("WASMAGENT_CACHE_DIR", cli.cache.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("serve exited before listening").unwrap();
        if let Some(url) = line.strip_prefix("wasmagent: serving on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Served(child, url)
}

#[test]
fn serve_and_run_remote_and_refuse_without_credentials() {
    let cli = Cli::new();
    let open = serve(&cli, &["--dev-insecure-no-auth"]);
    let out = cli.run(&["run", "--remote", &open.1, "-e", "6 * 7", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["value"], 42);
    let closed = serve(&cli, &[]);
    let out = cli.run(&["run", "--remote", &closed.1, "-e", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("401") && stderr(&out).contains("credentials"), "{}", stderr(&out));
    let out = cli.run(&["run", "--remote", "http://127.0.0.1:9", "-e", "1", "--json"]);
    assert_eq!(json(&out)["error"]["kind"], "remote_unavailable");
}

/// OWASP: ASI07
#[test]
fn webhook_verify_accepts_a_fresh_signature_and_refuses_a_tampered_body() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, br#"{"outcome":"ok"}"#).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let secret = "a webhook secret of enough length";
    let signature = wasmagent_server::webhook::sign(secret.as_bytes(), now, br#"{"outcome":"ok"}"#);
    let verify = |signature: &str| {
        Command::new(env!("CARGO_BIN_EXE_wasmagent"))
            .args(["webhook", "verify", "--secret-env", "HOOK_SECRET", "--signature", signature, "--body"])
            .arg(&body)
            .env("HOOK_SECRET", secret)
            .output()
            .unwrap()
    };
    assert_eq!(verify(&signature).status.code(), Some(0));
    std::fs::write(&body, br#"{"outcome":"error"}"#).unwrap();
    let out = verify(&signature);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
}

#[test]
fn tools_list_shows_the_file_and_tools_check_loads_it_with_digests() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.toml");
    std::fs::write(
        &tools,
        format!(
            "[[wasm]]\nname = \"text.echo\"\ndescription = \"Echoes.\"\nmodule = {:?}\nargs = [\"json-echo\"]\n\n\
             [[http]]\nname = \"weather.today\"\nurl = \"https://api.example.com/v1/{{city}}\"\n",
            wasmagent_test_guests::PROBE_MODULE
        ),
    )
    .unwrap();
    let manifest = dir.path().join("m.toml");
    std::fs::write(&manifest, "extra_capabilities = [\"tool:text.*\"]\n").unwrap();
    let tools_arg = tools.to_str().unwrap();

    let out = cli.run(&["tools", "list", "--tools", tools_arg, "--manifest", manifest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("text.echo  wasm") && listed.contains("(granted)"), "{listed}");
    assert!(listed.contains("weather.today  http  GET https://api.example.com/v1/{city}  (not granted)"), "{listed}");

    let out = cli.run(&["tools", "check", "--tools", tools_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let checked = String::from_utf8_lossy(&out.stdout);
    assert!(checked.contains("text.echo  wasm") && checked.contains("digest sha256:"), "{checked}");

    std::fs::write(&tools, "[[http]]\nname = \"bad\"\nurl = \"https://{host}/x\"\n").unwrap();
    for command in ["list", "check"] {
        let out = cli.run(&["tools", command, "--tools", tools_arg]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("tools.toml: [[http]] \"bad\": url:") && stderr(&out).contains("host"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn an_upstream_mcp_server_over_http_is_reexported_under_its_namespace() {
    // The upstream is wasmagent's own /mcp, reached over streamable HTTP with an API key.
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let key = "an-upstream-api-key";
    let digest = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes());
    let key_hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!("[[auth.api_keys]]\nsubject = \"agent\"\nsha256 = \"{key_hash}\"\nscopes = [\"runs:write\"]\n"),
    )
    .unwrap();
    let served = serve(&cli, &["--config", config.to_str().unwrap()]);
    let tools = dir.path().join("tools.toml");
    std::fs::write(
        &tools,
        format!("[[mcp]]\nnamespace = \"remote\"\nurl = \"{}/mcp\"\nheaders = {{ x-api-key = \"{key}\" }}\n", served.1),
    )
    .unwrap();
    let out = cli.run(&["tools", "check", "--tools", tools.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let checked = String::from_utf8_lossy(&out.stdout);
    assert!(checked.contains("remote.execute_code  mcp") && checked.contains("remote.search_docs  mcp"), "{checked}");

    std::fs::write(&tools, format!("[[mcp]]\nnamespace = \"remote\"\nurl = \"{}/mcp\"\n", served.1)).unwrap();
    let out = cli.run(&["tools", "check", "--tools", tools.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "without the key the upstream refuses: {}", stderr(&out));
    assert!(stderr(&out).contains("[[mcp]] \"remote\""), "{}", stderr(&out));
}
