//! The second wall through the binary: `serve`, `mcp` and `run` confine themselves by default (the kernel shows
//! the seccomp filter, `no_new_privs` and the limits on the real process), `/healthz`, `--version` and the start-up
//! line say so, `--no-confine` turns it off with a warning, and a confined run still uses its cache, audit log and
//! write mount. What the wall refuses is proved from inside a confined process by `crates/confine/tests/wall.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};

fn wasmagent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmagent"))
}

/// Whether this kernel has Landlock, per `--version`. On CI's kind of machine it must (ABI 7 was measured there).
fn landlock_expected() -> bool {
    let out = wasmagent().arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let has = text.contains("Landlock ABI");
    assert!(has || std::env::var_os("CI").is_none(), "CI's kernel has no Landlock: {text}");
    has
}

struct Served {
    child: Child,
    addr: String,
    startup: Vec<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(cache: &std::path::Path, extra: &[&str]) -> Served {
    let mut child = wasmagent()
        .args(extra)
        .args(["serve", "--listen", "127.0.0.1:0", "--dev-insecure-no-auth"])
        .env("WASMAGENT_CACHE_DIR", cache)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut startup = Vec::new();
    let addr = loop {
        let line = lines.next().expect("serve exited before listening").unwrap();
        if let Some(url) = line.strip_prefix("wasmagent: serving on http://") {
            break url.to_owned();
        }
        startup.push(line);
    };
    std::thread::spawn(move || lines.for_each(drop));
    Served { child, addr, startup }
}

fn healthz(addr: &str) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

/// A `Field:` line of `/proc/<pid>/<file>`.
fn proc_field(pid: u32, file: &str, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_else(|| panic!("no {field} in {text}")).trim().to_owned()
}

#[test]
fn version_says_confinement_is_on_by_default_and_what_the_kernel_offers() {
    let out = wasmagent().arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("host confinement (serve, mcp, run): on by default"), "{text}");
    assert!(text.contains("Landlock ABI") || text.contains("no Landlock"), "{text}");
}

/// OWASP: ASI05, ASI10
#[test]
fn serve_is_confined_and_healthz_and_the_kernel_say_so() {
    let landlock = landlock_expected();
    let cache = tempfile::tempdir().unwrap();
    let served = serve(cache.path(), &[]);
    let line = served.startup.iter().find(|l| l.contains("confinement:")).expect("a start-up confinement line");
    let health = healthz(&served.addr);
    assert_eq!(health["status"], "ok");
    let confinement = &health["confinement"];
    assert_eq!(confinement["enabled"], true, "{health}");
    assert_eq!(confinement["seccomp"], "enforced", "{health}");
    assert_eq!(confinement["no_new_privs"], true, "{health}");
    assert_eq!(confinement["core_dumps_off"], true, "{health}");
    if landlock {
        assert_eq!(confinement["landlock"], "enforced", "{health}");
        assert!(line.contains("landlock enforced"), "{line}");
    }
    // The kernel's own view of the serving process.
    let pid = served.child.id();
    assert_eq!(proc_field(pid, "status", "Seccomp:"), "2");
    assert_eq!(proc_field(pid, "status", "NoNewPrivs:"), "1");
    let core = proc_field(pid, "limits", "Max core file size");
    assert!(core.starts_with("0 ") && core.split_whitespace().nth(1) == Some("0"), "{core}");
    let files = proc_field(pid, "limits", "Max open files");
    let soft: u64 = files.split_whitespace().next().unwrap().parse().unwrap();
    assert!(soft <= 16_384, "{files}");
}

#[test]
fn no_confine_warns_and_leaves_the_process_unconfined() {
    let cache = tempfile::tempdir().unwrap();
    let served = serve(cache.path(), &["--no-confine"]);
    assert!(served.startup.iter().any(|l| l.contains("WARNING: --no-confine")), "{:?}", served.startup);
    let health = healthz(&served.addr);
    assert_eq!(health["confinement"]["enabled"], false, "{health}");
    assert_eq!(health["confinement"]["landlock"], "off", "{health}");
    assert_eq!(proc_field(served.child.id(), "status", "Seccomp:"), "0");
}

/// OWASP: ASI05
#[test]
fn a_confined_run_uses_its_cache_audit_log_and_write_mount() {
    let landlock = landlock_expected();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mount = dir.path().join("mount");
    std::fs::create_dir(&mount).unwrap();
    let key = dir.path().join("records.key");
    let log = dir.path().join("records.jsonl");
    let out = wasmagent().args(["keygen", "--out", key.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let code = "open('/out/result.txt', 'w').write('written under confinement'); 6 * 7";
    let write = format!("{}:/out", mount.display());
    let out = wasmagent()
        .args(["run", "--lang", "python", "-e", code, "--allow-write", &write, "--json"])
        .args(["--record", log.to_str().unwrap(), "--record-key", key.to_str().unwrap()])
        .env("WASMAGENT_CACHE_DIR", &cache)
        .env("WASMAGENT_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["value"], 42, "{report}");
    assert!(stderr.contains("seccomp enforced"), "{stderr}");
    if landlock {
        assert!(stderr.contains("landlock enforced"), "{stderr}");
    }
    assert_eq!(std::fs::read_to_string(mount.join("result.txt")).unwrap(), "written under confinement");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1, "one audit record");
    let cached = walk(&cache);
    assert!(cached.iter().any(|p| p.ends_with("cwasm")), "the engine was cached: {cached:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}
