//! `wasmagent repl` with piped input: entries run in one session (state and /scratch files kept), results and
//! denials printed as `run` prints them, and a session that ended stopping the prompt with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::Write;
use std::process::{Command, Stdio};

fn repl(args: &[&str], input: &str) -> (i32, String, String) {
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmagent"))
        .arg("repl")
        .args(args)
        .env("WASMAGENT_CACHE_DIR", cache.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn javascript_entries_share_one_session_and_denials_are_printed() {
    let input = "var x = 20\nfunction twice(n) {\n  return n * 2;\n}\ntwice(x) + 2\nfs.writeFile('/scratch/a', 'kept'); 1\nfs.readFile('/scratch/a')\nfs.readFile('/etc/hostname')\n";
    let (status, stdout, stderr) = repl(&["--lang", "js"], input);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(stdout, "42\n1\n\"kept\"\n", "{stderr}");
    assert!(stderr.contains("wasmagent: denied fs.read /etc/hostname"), "{stderr}");
}

#[test]
fn python_blocks_imports_and_the_end_of_a_session() {
    let input = "import math\ndef area(r):\n    return math.pi * r * r\n\nround(area(2), 3)\nwhile True: pass\n1\n";
    let (status, stdout, stderr) = repl(&["--lang", "python", "--cpu-ms", "300"], input);
    assert_eq!(stdout, "12.566\n", "{stderr}");
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains("wasmagent: timeout"), "{stderr}");
    assert!(stderr.contains("the session has ended: call 4"), "{stderr}");
}
