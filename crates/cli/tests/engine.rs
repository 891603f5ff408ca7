//! `wasmagent engine build python`: declared packages, pinned by hash, frozen into a custom engine that `run`
//! accepts only with its digest. Offline: pip installs from the wheels `.ci/run` downloads into
//! `target/engine-wheels` (`--find-links`), so the test sends no network traffic.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wheels() -> PathBuf {
    let dir = repo().join("target/engine-wheels");
    assert!(
        dir.is_dir(),
        "no {}: download the test wheels as .ci/run does (pip download --no-deps --only-binary=:all: \
         --require-hashes -r crates/engine-build/tests/requirements.txt -d target/engine-wheels)",
        dir.display()
    );
    dir
}

fn wasmagent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmagent")).args(args).env("WASMAGENT_CACHE_DIR", cache()).output().unwrap()
}

/// One code cache for the test binary: the built engine is compiled once.
fn cache() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path().to_owned()
}

fn build(requirements: &Path, out: &Path) -> Output {
    let python = support::sdk_python();
    let wheels = wheels();
    wasmagent(&[
        "engine",
        "build",
        "python",
        "--requirements",
        requirements.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--find-links",
        wheels.to_str().unwrap(),
        "--python",
        python.to_str().unwrap(),
    ])
}

fn run_python(engine: Option<(&Path, &str)>, code: &str) -> (Option<i32>, serde_json::Value, String) {
    let mut args = vec!["run", "--json", "--lang", "python", "-e", code];
    let engine_path;
    if let Some((path, digest)) = engine {
        engine_path = path.to_str().unwrap().to_owned();
        args.extend(["--python-engine", &engine_path, "--python-engine-digest", digest]);
    }
    let out = wasmagent(&args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), report, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_built_engine_holds_its_declared_packages_and_runs_only_with_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("dates.wasm");
    let requirements = repo().join("crates/engine-build/tests/requirements.txt");
    let out = build(&requirements, &engine);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    let provenance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dates.wasm.json")).unwrap()).unwrap();
    assert_eq!(provenance["engine_digest"], json!(digest));
    assert_eq!(provenance["installed"], json!(["python-dateutil==2.9.0.post0", "six==1.17.0"]), "{provenance}");
    let imported = provenance["imported"].as_array().unwrap();
    for module in ["dateutil", "dateutil.parser", "dateutil.relativedelta", "dateutil.tz", "six"] {
        assert!(imported.contains(&json!(module)), "{module} not imported: {provenance}");
    }

    // The packages are in the snapshot: imported with no filesystem access (no mount is granted).
    let code = "from dateutil import parser, relativedelta\nimport six\n\
                d = parser.parse('2024-01-31T10:00:00') + relativedelta.relativedelta(months=1)\n\
                [d.isoformat(), six.PY3]";
    let (status, report, stderr) = run_python(Some((&engine, &digest)), code);
    assert_eq!(status, Some(0), "{stderr} {report}");
    assert_eq!(report["value"], json!(["2024-02-29T10:00:00", true]), "{report}");
    assert!(report["denials"].as_array().unwrap().is_empty(), "{report}");
    // Everything else stays as on the shipped engine: refusals, and modules not declared do not exist.
    let (_, report, _) = run_python(Some((&engine, &digest)), "import subprocess");
    assert!(
        report["error"]["message"].as_str().unwrap().contains("not available in the wasmagent sandbox"),
        "{report}"
    );
    let (_, report, _) = run_python(Some((&engine, &digest)), "import yaml");
    assert!(report["error"]["message"].as_str().unwrap().contains("No module named 'yaml'"), "{report}");

    // Pinned: another digest is refused before anything runs.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (status, _, stderr) = run_python(Some((&engine, &wrong)), "1");
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("not the pinned") && stderr.contains(&digest), "{stderr}");
    // The shipped engine does not have the packages.
    let (_, report, _) = run_python(None, "import dateutil");
    assert!(report["error"]["message"].as_str().unwrap().contains("No module named 'dateutil'"), "{report}");

    // `serve` takes it from `[python]` in its configuration, pinned the same way.
    let config = dir.path().join("server.toml");
    std::fs::write(&config, format!("[python]\nengine = \"dates.wasm\"\nengine_digest = \"{digest}\"\n")).unwrap();
    let served = Served::start(&config).unwrap();
    let out = wasmagent(&[
        "run",
        "--remote",
        &served.1,
        "--json",
        "--lang",
        "python",
        "-e",
        "import dateutil\ndateutil.__version__",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(report["value"], json!("2.9.0.post0"), "{report}");
    drop(served);
    std::fs::write(&config, format!("[python]\nengine = \"dates.wasm\"\nengine_digest = \"{wrong}\"\n")).unwrap();
    let refused = Served::start(&config).err().unwrap();
    assert!(refused.contains("not the pinned"), "{refused}");
}

/// `wasmagent serve` in a child process, killed on drop.
struct Served(std::process::Child, String);

impl Served {
    /// Starts a server with `config`; `Err` with its error output when it exits instead of serving.
    fn start(config: &Path) -> Result<Served, String> {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
            .args(["serve", "--listen", "127.0.0.1:0", "--dev-insecure-no-auth", "--config"])
            .arg(config)
            .env("WASMAGENT_CACHE_DIR", cache())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.wait();
                return Err(seen);
            };
            if let Some(url) = line.strip_prefix("wasmagent: serving on ") {
                std::thread::spawn(move || lines.for_each(drop));
                return Ok(Served(child, url.to_owned()));
            }
            seen.push_str(&line);
            seen.push('\n');
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn requirements_without_hashes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let requirements = dir.path().join("requirements.txt");
    std::fs::write(&requirements, "six==1.17.0\n").unwrap();
    let out = build(&requirements, &dir.path().join("engine.wasm"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("pip could not install") && stderr.contains("hash"), "{stderr}");
    assert!(!dir.path().join("engine.wasm").exists());
}
