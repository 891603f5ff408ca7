//! `wasmagent run --learn` and `wasmagent manifest diff`, driving the built binary. Every HTTP request goes to a
//! loopback server started here (reached through an operator exception) or is refused by the floor before any
//! socket opens.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../../egress/tests/support/server.rs"]
mod server;

use server::TestServer;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use wasmagent::CapabilityManifest;

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
            .output()
            .unwrap()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `learn` from an empty manifest, each time under the previous proposal, until a run has nothing denied.
/// Returns every proposal and the file holding the last one.
fn learn_until_converged(cli: &Cli, dir: &Path, start: &str, run_args: &[&str]) -> (Vec<CapabilityManifest>, PathBuf) {
    let mut proposals = Vec::new();
    let mut manifest = dir.join("proposal-0.toml");
    std::fs::write(&manifest, start).unwrap();
    for round in 1..=8 {
        let mut args = vec!["run", "--learn", "--manifest", manifest.to_str().unwrap()];
        args.extend_from_slice(run_args);
        let out = cli.run(&args);
        let text = stdout(&out);
        let proposal = CapabilityManifest::from_toml_str(&text)
            .unwrap_or_else(|e| panic!("round {round}: not a manifest ({e}): {text}\n{}", stderr(&out)));
        proposals.push(proposal);
        match out.status.code() {
            Some(0) => return (proposals, manifest),
            Some(1) => assert!(
                ["adds", "grants", "raises"].iter().any(|verb| stderr(&out).contains(&format!("learn: {verb} "))),
                "round {round}: {}",
                stderr(&out)
            ),
            other => panic!("round {round}: exit {other:?}: {}", stderr(&out)),
        }
        manifest = dir.join(format!("proposal-{round}.toml"));
        std::fs::write(&manifest, &text).unwrap();
    }
    panic!("learn did not converge in 8 rounds: {proposals:#?}");
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

#[test]
fn learn_converges_on_nested_reads_a_write_two_hosts_and_a_tool() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(root.join("data/sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("out")).unwrap();
    std::fs::create_dir_all(root.join("unrelated")).unwrap();
    std::fs::write(root.join("data/sub/a.txt"), "alpha").unwrap();
    std::fs::write(root.join("data/sub/deeper/b.txt"), "beta").unwrap();
    let (first, second) = (TestServer::start(), TestServer::start());
    let tools = root.join("tools.toml");
    std::fs::write(
        &tools,
        format!(
            "[[http]]\nname = \"lookup\"\ndescription = \"Says hello.\"\nmethod = \"GET\"\nurl = {:?}\n",
            first.url("/hello")
        ),
    )
    .unwrap();
    let script = root.join("job.py");
    let r = root.display();
    std::fs::write(
        &script,
        format!(
            "import urllib.request\nfrom wasmagent import tools\n\
             a = open('{r}/data/sub/a.txt').read()\n\
             b = open('{r}/data/sub/deeper/b.txt').read()\n\
             open('{r}/out/result.txt', 'w').write(a + b)\n\
             one = urllib.request.urlopen({:?}).read().decode()\n\
             two = urllib.request.urlopen({:?}).read().decode()\n\
             [a, b, one, two, tools.call('lookup', {{}})]\n",
            first.url("/hello"),
            second.url("/echo")
        ),
    )
    .unwrap();
    let (host_one, host_two) = (first.host(), second.host());
    let operator = [
        script.to_str().unwrap(),
        "--tools",
        tools.to_str().unwrap(),
        "--allow-private",
        &host_one,
        "--allow-private",
        &host_two,
    ];
    let (proposals, manifest) = learn_until_converged(&cli, &root, "", &operator);
    let last = proposals.last().unwrap();
    assert_eq!(last.allowed_read_paths, [format!("{r}/data/sub")], "the deepest directory holding both reads");
    assert_eq!(last.allowed_write_paths, [format!("{r}/out")], "only the directory written to");
    assert_eq!(set(&last.allowed_hosts), set(&[format!("http://{host_one}"), format!("http://{host_two}")]));
    assert_eq!(last.extra_capabilities, ["tool:lookup"]);
    assert_eq!(last.cpu_ms, None, "no limit stopped the run, so none is raised");
    // Each round added something until the last, which only confirmed the manifest.
    assert_eq!(proposals[proposals.len() - 2], *last);

    let mut args = vec!["run", "--json", "--manifest", manifest.to_str().unwrap()];
    args.extend_from_slice(&operator);
    let out = cli.run(&args);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "ok", "{report}");
    assert_eq!(report["denials"], serde_json::json!([]));
    assert_eq!(report["value"][0], "alpha");
    assert_eq!(report["value"][2], "hello from loopback");
    assert_eq!(report["value"][4], "hello from loopback");
    assert_eq!(std::fs::read_to_string(root.join("out/result.txt")).unwrap(), "alphabeta");
}

#[test]
fn learn_raises_cpu_ms_only_when_the_run_timed_out_until_the_loop_fits() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let code = "const end = Date.now() + 700; while (Date.now() < end) {} 'done'";
    let (proposals, _) = learn_until_converged(&cli, dir.path(), "cpu_ms = 250", &["--lang", "js", "-e", code]);
    assert!(proposals.len() >= 2, "{proposals:?}");
    let mut previous = 250;
    for proposal in &proposals[..proposals.len() - 1] {
        let cpu_ms = proposal.cpu_ms.unwrap();
        assert!(cpu_ms >= 2 * previous && cpu_ms <= 60_000, "{previous} → {cpu_ms}");
        assert!(proposal.allowed_hosts.is_empty() && proposal.allowed_read_paths.is_empty());
        previous = cpu_ms;
    }
    assert!(previous > 700, "the last proposal fits the loop: {previous}");
}

#[test]
fn learn_never_proposes_a_metadata_endpoint_or_a_private_address_and_says_why() {
    let cli = Cli::new();
    let code = "Promise.allSettled([fetch('http://169.254.169.254/latest/meta-data/'), fetch('http://10.1.2.3:8080/')])\
                .then(r => r.map(x => x.status))";
    let out = cli.run(&["run", "--learn", "--lang", "js", "-e", code]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let proposal = CapabilityManifest::from_toml_str(&stdout(&out)).unwrap();
    assert_eq!(proposal, CapabilityManifest::default(), "nothing proposed: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("169.254.169.254 is a cloud metadata endpoint") && err.contains("no exception can lift it"));
    assert!(err.contains("10.1.2.3 is a private address (10.0.0.0/8)") && err.contains("--allow-private"), "{err}");
    assert!(err.contains("nothing can be proposed"), "{err}");
    // The run's own output went to stderr too: the promise's value.
    assert!(err.contains(r#"["rejected","rejected"]"#), "{err}");
}

#[test]
fn manifest_diff_says_what_b_grants_beyond_a_and_exits_1_only_then() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let a = root.join("a.toml");
    let b = root.join("b.toml");
    std::fs::write(&a, "cpu_ms = 5000\n").unwrap();
    std::fs::write(
        &b,
        "allowed_read_paths = [\"data\"]\nallowed_hosts = [\"https://api.example.com\"]\n\
         extra_capabilities = [\"tool:github.*\"]\ncpu_ms = 20000\n",
    )
    .unwrap();
    let (a_path, b_path) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = cli.run(&["manifest", "diff", a_path, b_path]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let data: PathBuf = root.join("data");
    for line in [
        format!("adds read access to {}", data.display()),
        "adds host https://api.example.com".to_owned(),
        "grants tool:github.*".to_owned(),
        "raises cpu_ms from 5000 to 20000".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} missing from:\n{text}");
    }
    let back = cli.run(&["manifest", "diff", b_path, a_path]);
    assert_eq!(back.status.code(), Some(0), "narrowing only: {}", stdout(&back));
    assert!(
        stdout(&back).contains("grants nothing beyond") && stdout(&back).contains("lowers cpu_ms from 20000 to 5000")
    );
    let same = cli.run(&["manifest", "diff", a_path, a_path]);
    assert_eq!(same.status.code(), Some(0));
    std::fs::write(&b, "cpu_ms = \"fast\"\n").unwrap();
    assert_eq!(cli.run(&["manifest", "diff", a_path, b_path]).status.code(), Some(2));
}
