//! Paths that try to leave a mount: a symlink swapped in between a check and a use, symlinks the guest creates
//! itself, and escapes through calls other than reading a file (stat, listing, existence checks).
//!
//! Proven in `wasi_files.rs`, `js_kernel.rs` and `python_kernel.rs` and not repeated: reading `/etc/passwd` or a host
//! path outside every mount, `..` out of a mount, a symlink (to a file or a directory) pointing out of a mount, and
//! writing into a read-only mount.

use crate::common::{self, manifest, sandbox};
use crate::still_serves;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmagent::{Language, Outcome, RunReport, RunRequest};
use wasmagent_test_guests::{PROBE_COMPONENT, PROBE_MODULE};

/// `data/` (mounted read-only at `/data`) holds `flip`, swapped between a file saying `inside` and a symlink to
/// `../outside/secret.txt`, and `dir`, a symlink swapped between `real` (a directory in the mount holding
/// `secret.txt` saying `inside`) and `../outside`. `outside/secret.txt` says `SECRET`. Each swap is one atomic
/// rename, done in a loop by a host thread while the guest reads.
struct Flipper {
    root: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flipper {
    fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        for dir in ["data/real", "outside", "stage"] {
            std::fs::create_dir_all(p.join(dir)).unwrap();
        }
        std::fs::write(p.join("data/real/secret.txt"), "inside").unwrap();
        std::fs::write(p.join("data/flip"), "inside").unwrap();
        std::os::unix::fs::symlink("real", p.join("data/dir")).unwrap();
        std::fs::write(p.join("outside/secret.txt"), "SECRET").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (base, flag) = (p.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let swap = |staged: &Path, into: &str| std::fs::rename(staged, base.join(into)).unwrap();
            let stage = |name: &str| base.join("stage").join(name);
            let mut flips = 0;
            while !flag.load(Ordering::Relaxed) {
                std::fs::write(stage("file"), "inside").unwrap();
                swap(&stage("file"), "data/flip");
                std::os::unix::fs::symlink("../outside/secret.txt", stage("link")).unwrap();
                swap(&stage("link"), "data/flip");
                std::os::unix::fs::symlink("../outside", stage("dir-out")).unwrap();
                swap(&stage("dir-out"), "data/dir");
                std::os::unix::fs::symlink("real", stage("dir-in")).unwrap();
                swap(&stage("dir-in"), "data/dir");
                flips += 1;
            }
            flips
        });
        Flipper { root, stop, thread: Some(thread) }
    }

    fn toml(&self) -> String {
        format!("allowed_read_paths = [\"{}:/data\"]", self.root.path().join("data").display())
    }

    /// Stops the swapping; returns how many full rounds were done.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap()).unwrap_or(0)
    }
}

/// Asserts a guest's tally of reads under the flipper: the secret never, both states seen.
fn assert_contained(tally: &Value, report: &RunReport, what: &str) {
    assert_eq!(report.outcome, Outcome::Ok, "{what}: {report:?}");
    assert_eq!(tally["secret"], 0, "{what} read the file outside the mount: {tally}");
    assert!(tally["inside"].as_u64().unwrap() > 0, "{what} never read the file inside: {tally}");
    assert!(tally["refused"].as_u64().unwrap() > 0, "{what} never met the symlink: {tally}");
    let denial = report.denials.iter().find(|d| d.target == "/data/flip" || d.target == "/data/dir/secret.txt");
    assert!(denial.is_some_and(|d| d.reason.contains("outside mount /data")), "{what}: {:?}", report.denials.first());
}

/// A symlink pointing out of the mount, swapped in (for a file, and for a directory in the middle of the path)
/// between any check and the use, never lets a read through: every open is resolved inside the mount as one
/// operation, in every kernel.
///
/// Enforces: wasi.allowed_read_paths, js.allowed_read_paths, python.allowed_read_paths
#[test]
fn a_symlink_swapped_in_while_the_guest_reads_never_leaves_the_mount() {
    let flipper = Flipper::start();
    let m = manifest(&flipper.toml());

    let js = common::run(
        &m,
        Language::Js,
        "toctou.js",
        r#"
        const tally = { inside: 0, secret: 0, refused: 0 };
        for (let i = 0; i < 50000 && (i < 500 || !tally.inside || !tally.refused); i++) {
          for (const path of ['/data/flip', '/data/dir/secret.txt']) {
            try { tally[fs.readFile(path) === 'SECRET' ? 'secret' : 'inside']++; } catch (e) { tally.refused++; }
          }
        }
        tally
        "#,
    );
    assert_contained(&js.value, &js, "js");

    let python = common::run(
        &m,
        Language::Python,
        "toctou.py",
        r#"
tally = {"inside": 0, "secret": 0, "refused": 0}
i = 0
while i < 50000 and (i < 500 or not tally["inside"] or not tally["refused"]):
    for path in ("/data/flip", "/data/dir/secret.txt"):
        try:
            with open(path) as f:
                tally["secret" if f.read() == "SECRET" else "inside"] += 1
        except OSError:
            tally["refused"] += 1
    i += 1
tally
"#,
    );
    assert_contained(&python.value, &python, "python");

    let reads: Vec<&str> = ["cat:/data/flip", "cat:/data/dir/secret.txt"].repeat(1500);
    for guest in [PROBE_MODULE, PROBE_COMPONENT] {
        let request =
            RunRequest::wasm("probe.wasm", wasmagent_test_guests::read(guest)).with_args(reads.iter().copied());
        let report = sandbox().run(&m, &request).unwrap();
        let lines: Vec<&str> = report.stdout.lines().collect();
        let tally = serde_json::json!({
            "inside": lines.iter().filter(|l| l.starts_with("OK") && l.ends_with(" inside")).count(),
            "secret": lines.iter().filter(|l| l.contains("SECRET")).count(),
            "refused": lines.iter().filter(|l| l.starts_with("ERR")).count(),
        });
        assert_eq!(lines.len(), reads.len(), "{guest}: {report:?}");
        assert_contained(&tally, &report, guest);
    }

    assert!(flipper.stop() > 0, "the host thread swapped the paths");
    for language in [Language::Js, Language::Python, Language::Wasm] {
        still_serves(language);
    }
}

/// Symlinks a guest creates in its write mount (absolute, relative, to a directory, dangling) can be neither read
/// nor written through to anything outside the mount, and renames cannot move files out.
///
/// Enforces: python.allowed_write_paths
#[test]
fn symlinks_a_guest_creates_cannot_carry_reads_or_writes_out_of_the_mount() {
    let root = tempfile::tempdir().unwrap();
    let (work, outside) = (root.path().join("work"), root.path().join("outside"));
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "SECRET").unwrap();
    let m = manifest(&format!("allowed_write_paths = [\"{}:/work\"]", work.display()));
    let report = common::run(
        &m,
        Language::Python,
        "links.py",
        r#"
import os
def attempt(f):
    try:
        return "allowed: " + repr(f())[:40]
    except OSError as e:
        return "refused: " + type(e).__name__
def write(path):
    with open(path, "w") as f:
        f.write("PWNED")
    return "written"
created = {}
for name, target in [("abs", "/etc/passwd"), ("rel", "../outside/secret.txt"), ("dirlink", "../outside"),
                     ("dangling", "../outside/new.txt"), ("absdir", "/")]:
    created[name] = attempt(lambda: os.symlink(target, "/work/" + name))
with open("/work/mine.txt", "w") as f:
    f.write("mine")
{
    "created": created,
    "read_abs": attempt(lambda: open("/work/abs").read()),
    "read_rel": attempt(lambda: open("/work/rel").read()),
    "read_dir": attempt(lambda: open("/work/dirlink/secret.txt").read()),
    "list_dir": attempt(lambda: os.listdir("/work/dirlink")),
    "list_root": attempt(lambda: os.listdir("/work/absdir")),
    "write_dangling": attempt(lambda: write("/work/dangling")),
    "write_dir": attempt(lambda: write("/work/dirlink/new.txt")),
    "overwrite_rel": attempt(lambda: write("/work/rel")),
    "rename_out": attempt(lambda: os.rename("/work/mine.txt", "/work/../outside/mine.txt")),
    "rename_into_link": attempt(lambda: os.rename("/work/mine.txt", "/work/dirlink/mine.txt")),
    "hard_link_out": attempt(lambda: os.link("/work/mine.txt", "/work/dirlink/hard.txt")),
}
"#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    let results = report.value.as_object().unwrap();
    for (what, outcome) in results.iter().filter(|(k, _)| *k != "created") {
        assert!(outcome.as_str().unwrap().starts_with("refused"), "{what}: {outcome} in {results:?}");
    }
    let mut outside_now: Vec<String> =
        std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    outside_now.sort();
    assert_eq!(outside_now, ["secret.txt"], "nothing was created outside the mount");
    assert_eq!(std::fs::read_to_string(outside.join("secret.txt")).unwrap(), "SECRET");
    assert_eq!(std::fs::read_to_string(work.join("mine.txt")).unwrap(), "mine");
    assert!(!report.denials.is_empty(), "the refusals are reported: {report:?}");
    assert!(report.denials.iter().all(|d| d.reason.contains("mount")), "{:?}", report.denials);
    still_serves(Language::Python);
}

/// Calls that only look (stat, size, existence, listing, directory walks) cannot see through `..` or a symlink out
/// of a mount either: the file outside is never described.
#[test]
fn stat_listing_and_existence_checks_cannot_see_out_of_a_mount() {
    let root = tempfile::tempdir().unwrap();
    let p = root.path();
    std::fs::create_dir_all(p.join("data/sub")).unwrap();
    std::fs::create_dir_all(p.join("outside/inner")).unwrap();
    std::fs::write(p.join("outside/secret.txt"), "SECRET-WITH-A-LENGTH-OF-31-BYTE").unwrap();
    std::os::unix::fs::symlink("../outside/secret.txt", p.join("data/link")).unwrap();
    std::os::unix::fs::symlink("../../outside", p.join("data/sub/escape")).unwrap();
    let m = manifest(&format!("allowed_read_paths = [\"{}:/data\"]", p.join("data").display()));

    let js = common::run(
        &m,
        Language::Js,
        "look.js",
        r#"
        const attempt = (f) => { try { return JSON.stringify(f()); } catch (e) { return 'refused'; } };
        [
          attempt(() => fs.stat('/data/link').size),
          attempt(() => fs.stat('/data/../outside/secret.txt').size),
          attempt(() => fs.readdir('/data/sub/escape')),
          attempt(() => fs.readdir('/data/..')),
          attempt(() => fs.readFile('/data//link/')),
          attempt(() => fs.readFile('/data/./sub/../../outside/secret.txt')),
          String(fs.exists('/data/link')),
          String(fs.exists('/data/sub/escape/secret.txt')),
        ]
        "#,
    );
    assert_eq!(js.outcome, Outcome::Ok, "{js:?}");
    assert_eq!(
        js.value,
        serde_json::json!(["refused", "refused", "refused", "refused", "refused", "refused", "false", "false"])
    );

    let python = common::run(
        &m,
        Language::Python,
        "look.py",
        r#"
import os, pathlib, glob
def attempt(f):
    try:
        return repr(f())
    except OSError:
        return "refused"
[
    attempt(lambda: os.stat("/data/link").st_size),
    attempt(lambda: os.path.getsize("/data/sub/escape/secret.txt")),
    attempt(lambda: os.listdir("/data/sub/escape")),
    attempt(lambda: [e.name for e in os.scandir("/data/..")]),
    attempt(lambda: sorted(os.walk("/data", followlinks=True))[-1]),
    attempt(lambda: pathlib.Path("/data/sub/escape/inner").is_dir() or "absent"),
    repr(os.path.exists("/data/link")),
    repr(glob.glob("/data/sub/escape/*")),
]
"#,
    );
    assert_eq!(python.outcome, Outcome::Ok, "{python:?}");
    let described = python.value.to_string();
    assert!(
        !described.contains("31") && !described.contains("secret.txt") && !described.contains("inner"),
        "{described}"
    );
    assert_eq!(python.value[6], "False");
    assert_eq!(python.value[7], "[]");
    for report in [&js, &python] {
        assert!(report.denials.iter().any(|d| d.target == "/data/link"), "{:?}", report.denials);
    }
    for language in [Language::Js, Language::Python] {
        still_serves(language);
    }
}

/// A loop of refused opens adds one denial per attempt, each holding the path (up to 4 KiB) the guest named, so a
/// run grows host memory and its report without bound until `cpu_ms`.
#[test]
fn a_flood_of_refused_opens_does_not_grow_the_report_without_bound() {
    let report = common::run(
        &manifest("cpu_ms = 1000"),
        Language::Js,
        "flood.js",
        "const pad = 'x'.repeat(4000); for (let i = 0; ; i++) { try { fs.readFile('/etc/' + i + pad) } catch (e) {} }",
    );
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    let bytes: usize = report.denials.iter().map(|d| d.target.len() + d.reason.len()).sum();
    assert!(report.denials.len() <= 1000, "{} denials ({bytes} bytes) from one run", report.denials.len());
}
