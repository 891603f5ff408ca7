//! WASI conformance: the preview1 tests of the public WebAssembly/wasi-testsuite (Rust, C and AssemblyScript
//! suites; prebuilt modules pinned in `tests/wasi-testsuite/`, see its PROVENANCE.md and
//! `scripts/wasi-testsuite-import.py`) run through `wasmagent run --json` as the suite's specification says: the
//! arguments, environment and root directory (mounted writable at `/`, copied fresh for each test) from the test's
//! `.json`, then its exit code and output compared with the expectation.
//!
//! A runtime that exits 0 without running anything would pass every test that expects exit 0 and no output, so the
//! count of tests whose expectation such a runtime fails (a non-zero exit code, or output) is checked as well.
//! Every test passes except those in [`EXCEPTIONS`], each with its reason; an exception that starts passing fails
//! the test too, so the list cannot go stale. README.md publishes the count and is checked against it.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Tests known to fail, and why. Empty means every preview1 test passes.
const EXCEPTIONS: &[(&str, &str)] = &[(
    "c/sock_shutdown-invalid_fd",
    "the test calls shutdown(3) assuming descriptor 3 is closed, but every wasmagent run preopens a read-only empty \
     root there (so that paths outside the mounts reach the host and are reported as denials); shutdown on it answers \
     ENOTSOCK, right for a directory, and a descriptor that is really closed answers EBADF: see \
     sock_shutdown_answers_ebadf_for_a_closed_descriptor_and_enotsock_for_the_root",
)];

/// Controls that pass even without their root directory, because they only need some preopened directory and every
/// wasmagent run has one (the empty root at descriptor 3).
const CONTROLS_PASSING_ON_THE_EMPTY_ROOT: &[&str] =
    &["rust/close_preopen", "rust/dangling_symlink", "rust/dir_fd_op_failures", "rust/path_open_nonblock"];

#[derive(Debug, Default, Clone)]
struct Spec {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    root: Option<String>,
    exit_code: i64,
    stdout: Option<String>,
    stderr: Option<String>,
}

struct Case {
    name: String,
    wasm: PathBuf,
    spec: Spec,
}

/// The suite's legacy specification; absent fields take their defaults (no arguments, exit 0, any output).
fn spec(json: &serde_json::Value) -> Spec {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    Spec {
        args: json["args"].as_array().map(|a| a.iter().filter_map(text).collect()).unwrap_or_default(),
        env: json["env"]
            .as_object()
            .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), text(v)?))).collect())
            .unwrap_or_default(),
        root: text(&json["root"]),
        exit_code: json["exit_code"].as_i64().unwrap_or(0),
        stdout: text(&json["stdout"]),
        stderr: text(&json["stderr"]),
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wasi-testsuite")
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for suite in ["rust", "c", "assemblyscript"] {
        let dir = fixture().join(suite);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let wasm = entry.unwrap().path();
            if wasm.extension().and_then(|e| e.to_str()) != Some("wasm") {
                continue;
            }
            let stem = wasm.file_stem().unwrap().to_string_lossy().into_owned();
            let spec = match std::fs::read_to_string(wasm.with_extension("json")) {
                Ok(text) => spec(&serde_json::from_str(&text).unwrap_or_else(|e| panic!("{suite}/{stem}.json: {e}"))),
                Err(_) => Spec::default(),
            };
            cases.push(Case { name: format!("{suite}/{stem}"), wasm, spec });
        }
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs one case; `Err` says how the result differed from the expectation.
fn run(case: &Case, cache: &Path) -> Result<(), String> {
    let scratch = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmagent"));
    command.arg("run").arg(&case.wasm).arg("--json").env("WASMAGENT_CACHE_DIR", cache);
    if let Some(root) = &case.spec.root {
        let copy = scratch.path().join(root);
        copy_dir(&case.wasm.parent().unwrap().join(root), &copy);
        command.arg("--allow-write").arg(format!("{}:/", copy.display()));
    }
    for (key, value) in &case.spec.env {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command.arg("--").args(&case.spec.args);
    let out = command.output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("no report ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr)))?;
    let exit = report["exit_code"].as_i64();
    if exit != Some(case.spec.exit_code) {
        return Err(format!(
            "exit code {exit:?}, expected {}; outcome {}, error {}, stderr {:?}",
            case.spec.exit_code, report["outcome"], report["error"], report["stderr"]
        ));
    }
    for (stream, expected) in [("stdout", &case.spec.stdout), ("stderr", &case.spec.stderr)] {
        if let Some(expected) = expected
            && report[stream].as_str() != Some(expected.as_str())
        {
            return Err(format!("{stream} {:?}, expected {expected:?}", report[stream]));
        }
    }
    Ok(())
}

/// OWASP: ASI05
#[test]
fn the_wasi_testsuite_preview1_tests_pass() {
    let cases = cases();
    assert!(cases.len() >= 70, "the fixture lost tests: {}", cases.len());
    let cache = tempfile::tempdir().unwrap();
    let results: Mutex<Vec<(String, Result<(), String>)>> = Mutex::new(Vec::new());
    let next = Mutex::new(cases.iter());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let Some(case) = next.lock().unwrap().next() else { break };
                    let result = run(case, cache.path());
                    results.lock().unwrap().push((case.name.clone(), result));
                }
            });
        }
    });
    let results: BTreeMap<String, Result<(), String>> = results.into_inner().unwrap().into_iter().collect();
    let mut unexpected = Vec::new();
    for (name, result) in &results {
        let excepted = EXCEPTIONS.iter().any(|(n, _)| n == name);
        match (result, excepted) {
            (Ok(()), true) => unexpected.push(format!("{name}: passes now; remove it from EXCEPTIONS")),
            (Err(why), false) => unexpected.push(format!("{name}: {why}")),
            _ => {}
        }
    }
    let passed = results.values().filter(|r| r.is_ok()).count();
    // Negative controls: a runtime that ran nothing would pass most of the suite (exit 0, no output expected), so
    // each passing test that takes arguments, an environment or a root directory runs again without them, and must
    // then fail: the module really reads them.
    let controls: Vec<&Case> = cases
        .iter()
        .filter(|c| results.get(&c.name).is_some_and(Result::is_ok))
        .filter(|c| !c.spec.args.is_empty() || !c.spec.env.is_empty() || c.spec.root.is_some())
        .collect();
    let still_passing: Vec<&str> = controls
        .iter()
        .filter(|c| {
            let bare = Case {
                name: c.name.clone(),
                wasm: c.wasm.clone(),
                spec: Spec { args: Vec::new(), env: BTreeMap::new(), root: None, ..c.spec.clone() },
            };
            run(&bare, cache.path()).is_ok()
        })
        .map(|c| c.name.as_str())
        .collect();
    println!(
        "wasi-testsuite preview1: {passed} of {} passed; {} of {} controls failed without their arguments, \
         environment or root: {still_passing:?} still passed",
        cases.len(),
        controls.len() - still_passing.len(),
        controls.len()
    );
    assert!(unexpected.is_empty(), "{} unexpected results:\n{}", unexpected.len(), unexpected.join("\n"));
    assert_eq!(still_passing, CONTROLS_PASSING_ON_THE_EMPTY_ROOT, "controls that did not fail without their inputs");
    assert!(controls.len() >= 50, "only {} controls", controls.len());
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let published = format!("WASI testsuite (preview1): {passed} of {} tests pass", cases.len());
    assert!(readme.contains(&published), "README.md must say {published:?}");
}

/// The one exception, checked at the system-call level: `sock_shutdown` on a closed descriptor is `EBADF` (8), on
/// the preopened root (descriptor 3) `ENOTSOCK` (57).
#[test]
fn sock_shutdown_answers_ebadf_for_a_closed_descriptor_and_enotsock_for_the_root() {
    let dir = tempfile::tempdir().unwrap();
    for (fd, errno) in [(99, 8), (3, 57)] {
        let wat = dir.path().join(format!("shutdown{fd}.wat"));
        std::fs::write(
            &wat,
            format!(
                r#"(module
                     (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
                     (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                     (memory (export "memory") 1)
                     (func (export "_start") (call $exit (call $shutdown (i32.const {fd}) (i32.const 1)))))"#
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
            .arg("run")
            .arg(&wat)
            .arg("--json")
            .env("WASMAGENT_CACHE_DIR", dir.path())
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["exit_code"], errno, "descriptor {fd}: {report}");
    }
}
