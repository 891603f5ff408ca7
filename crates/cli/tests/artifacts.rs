//! `wasmagent run --artifacts DIR` and `--json` with artifacts, end to end through the binary.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::{Command, Output};

fn run(cache: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmagent")).args(args).env("WASMAGENT_CACHE_DIR", cache).output().unwrap()
}

const SCRIPT: &str = "display.svg('<svg/>', '../../escape'); display.table([[1, 2]]); \
                      display.image(new Uint8Array([137, 80, 78, 71]), 'image/png'); 'done'";

#[test]
fn artifacts_are_written_to_new_files_named_by_position_and_kind() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = run(cache.path(), &["run", "-e", SCRIPT, "--artifacts", out_dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("wrote 3 artifacts to {}", out_dir.display())), "{stderr}");
    let mut names: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["001-svg.svg", "002-table.json", "003-image.png"]);
    assert_eq!(std::fs::read_to_string(out_dir.join("001-svg.svg")).unwrap(), "<svg/>");
    assert_eq!(std::fs::read(out_dir.join("003-image.png")).unwrap(), [137, 80, 78, 71]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing was written outside the directory");

    // A second run into the same directory replaces nothing and fails.
    let again = run(cache.path(), &["run", "-e", SCRIPT, "--artifacts", out_dir.to_str().unwrap()]);
    assert_ne!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never replaced"));
    assert_eq!(std::fs::read_to_string(out_dir.join("001-svg.svg")).unwrap(), "<svg/>");
}

#[test]
fn json_carries_the_artifacts_and_the_limit_comes_from_the_flag() {
    let cache = tempfile::tempdir().unwrap();
    let out = run(cache.path(), &["run", "-e", SCRIPT, "--json", "--max-artifact-bytes", "8"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["manifest"]["max_artifact_bytes"], 8);
    // The SVG (6 bytes) fits; neither the table (7 bytes) nor the image (4 bytes) fits in the 2 bytes left.
    let kinds: Vec<&str> =
        report["artifacts"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["svg"]);
    assert_eq!(report["artifacts"][0]["title"], "../../escape");
    let denials = report["denials"].as_array().unwrap();
    assert_eq!(denials.iter().filter(|d| d["capability"] == "artifact").count(), 2, "{denials:?}");
}
