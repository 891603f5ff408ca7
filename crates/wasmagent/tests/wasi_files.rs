//! Mounts in the wasi kernel: what a guest can read and write, what it cannot, and that every refusal is reported.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use wasmagent::{CapabilityManifest, Outcome, RunReport, RunRequest, Sandbox};
use wasmagent_test_guests::{PROBE_COMPONENT, PROBE_MODULE};

struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    /// data/ok.txt, data/link → ../outside/secret.txt, outside/secret.txt, work/ (empty).
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir_all(p.join("data/sub")).unwrap();
        std::fs::create_dir_all(p.join("outside")).unwrap();
        std::fs::create_dir_all(p.join("work")).unwrap();
        std::fs::write(p.join("data/ok.txt"), "allowed").unwrap();
        std::fs::write(p.join("outside/secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink("../outside/secret.txt", p.join("data/link")).unwrap();
        std::os::unix::fs::symlink("../../outside", p.join("data/sub/escape")).unwrap();
        Fixture { root }
    }

    fn path(&self, relative: &str) -> String {
        self.root.path().join(relative).display().to_string()
    }

    fn run(&self, guest: &str, extra_toml: &str, actions: &[&str]) -> RunReport {
        let sandbox = Sandbox::builder().pool_slots(4).build().unwrap();
        let toml = format!(
            "allowed_read_paths = [\"{}:/data\"]\nallowed_write_paths = [\"{}:/work\"]\n{extra_toml}",
            self.path("data"),
            self.path("work")
        );
        let manifest = sandbox.resolve(&CapabilityManifest::from_toml_str(&toml).unwrap(), Path::new("/")).unwrap();
        let request =
            RunRequest::wasm("probe.wasm", wasmagent_test_guests::read(guest)).with_args(actions.iter().copied());
        sandbox.run(&manifest, &request).unwrap()
    }
}

/// Whether any line shows the secret file's contents.
fn leaked_secret(report: &RunReport) -> bool {
    report.stdout.lines().any(|l| l.starts_with("OK") && l.ends_with(" secret"))
}

fn line<'a>(report: &'a RunReport, prefix: &str) -> &'a str {
    report
        .stdout
        .lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no line with {prefix:?} in {:?}", report.stdout))
}

fn denial_for<'a>(report: &'a RunReport, capability: &str, target: &str) -> &'a wasmagent::Denial {
    report
        .denials
        .iter()
        .find(|d| d.capability == capability && d.target == target)
        .unwrap_or_else(|| panic!("no {capability} denial for {target} in {:#?}", report.denials))
}

/// Enforces: wasi.allowed_read_paths
#[test]
fn files_inside_a_read_mount_can_be_read_and_listed() {
    let fx = Fixture::new();
    for guest in [PROBE_MODULE, PROBE_COMPONENT] {
        let report = fx.run(guest, "", &["cat:/data/ok.txt", "ls:/data"]);
        assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
        assert_eq!(line(&report, "cat /data/ok.txt"), "OK cat /data/ok.txt allowed");
        assert_eq!(line(&report, "ls /data"), "OK ls /data link,ok.txt,sub");
    }
}

/// Enforces: wasi.allowed_read_paths
#[test]
fn reading_outside_every_mount_is_denied_and_reported() {
    let fx = Fixture::new();
    let outside = fx.path("outside/secret.txt");
    let outside_action = format!("cat:{outside}");
    for guest in [PROBE_MODULE, PROBE_COMPONENT] {
        let report = fx.run(guest, "", &["cat:/etc/passwd", &outside_action, "cat:/data/ok.txt"]);
        assert_eq!(report.outcome, Outcome::Ok, "denials are caught by the guest: {report:?}");
        assert!(line(&report, "cat /etc/passwd").starts_with("ERR"));
        assert!(line(&report, &outside).starts_with("ERR"));
        assert!(!leaked_secret(&report));
        assert_eq!(line(&report, "cat /data/ok.txt"), "OK cat /data/ok.txt allowed", "allowed files still work");
        let d = denial_for(&report, "fs.read", "/etc/passwd");
        assert!(d.reason.contains("not inside any mount"), "{d:?}");
        denial_for(&report, "fs.read", &outside);
    }
}

/// Enforces: wasi.allowed_read_paths
#[test]
fn dot_dot_traversal_out_of_a_mount_is_denied_and_reported() {
    let fx = Fixture::new();
    for guest in [PROBE_MODULE, PROBE_COMPONENT] {
        let report = fx.run(guest, "", &["cat:/data/../outside/secret.txt", "cat:/data/sub/../../outside/secret.txt"]);
        assert!(!report.stdout.contains("OK"), "{report:?}");
        assert!(!leaked_secret(&report));
        assert_eq!(report.denials.len(), 2, "{report:?}");
        for denial in &report.denials {
            assert_eq!(denial.capability, "fs.read");
            assert!(denial.reason.contains("climbs out of mount /data"), "{denial:?}");
        }
    }
}

/// Enforces: wasi.allowed_read_paths
#[test]
fn a_symlink_inside_a_mount_pointing_outside_is_denied_and_reported() {
    let fx = Fixture::new();
    for guest in [PROBE_MODULE, PROBE_COMPONENT] {
        let report = fx.run(guest, "", &["cat:/data/link", "cat:/data/sub/escape/secret.txt"]);
        assert!(line(&report, "cat /data/link ").starts_with("ERR"), "{report:?}");
        assert!(line(&report, "cat /data/sub/escape").starts_with("ERR"), "{report:?}");
        assert!(!leaked_secret(&report));
        let d = denial_for(&report, "fs.read", "/data/link");
        assert!(d.reason.contains("outside mount /data"), "{d:?}");
    }
}

/// Enforces: wasi.allowed_write_paths
#[test]
fn writing_needs_a_write_grant() {
    let fx = Fixture::new();
    for guest in [PROBE_MODULE, PROBE_COMPONENT] {
        let report = fx.run(
            guest,
            "",
            &["write:/data/new.txt:x", "mkdir:/data/d", "rm:/data/ok.txt", "write:/work/out.txt:hello"],
        );
        assert!(line(&report, "write /data/new.txt").starts_with("ERR"), "{report:?}");
        assert!(line(&report, "mkdir /data/d").starts_with("ERR"));
        assert!(line(&report, "rm /data/ok.txt").starts_with("ERR"));
        assert_eq!(line(&report, "write /work/out.txt"), "OK write /work/out.txt");
        assert!(!Path::new(&fx.path("data/new.txt")).exists());
        assert!(Path::new(&fx.path("data/ok.txt")).exists());
        assert_eq!(std::fs::read_to_string(fx.path("work/out.txt")).unwrap(), "hello");
        let d = denial_for(&report, "fs.write", "/data/new.txt");
        assert!(d.reason.contains("read-only"), "{d:?}");
        denial_for(&report, "fs.write", "/data/d");
        denial_for(&report, "fs.write", "/data/ok.txt");
        std::fs::remove_file(fx.path("work/out.txt")).unwrap();
    }
}

#[test]
fn a_mount_without_a_guest_path_appears_at_its_host_path() {
    let fx = Fixture::new();
    let sandbox = Sandbox::builder().pool_slots(4).build().unwrap();
    let data = fx.path("data");
    let manifest = CapabilityManifest { allowed_read_paths: vec![data.clone()], ..Default::default() };
    let manifest = sandbox.resolve(&manifest, Path::new("/")).unwrap();
    let action = format!("cat:{data}/ok.txt");
    let request = RunRequest::wasm("probe.wasm", wasmagent_test_guests::read(PROBE_MODULE)).with_args([action]);
    let report = sandbox.run(&manifest, &request).unwrap();
    assert!(report.stdout.starts_with("OK cat"), "{report:?}");
}

/// Makes a FIFO (named pipe) at `path` with mkfifo(1).
fn mkfifo(path: &str) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {path}: {status}");
}

/// Enforces: wasi.allowed_read_paths, wasi.allowed_write_paths
#[test]
fn a_fifo_in_a_mount_is_refused_at_once_instead_of_blocking_the_host() {
    let fx = std::sync::Arc::new(Fixture::new());
    mkfifo(&fx.path("data/pipe"));
    mkfifo(&fx.path("work/pipe"));
    for guest in [PROBE_MODULE, PROBE_COMPONENT] {
        // No process ever opens the other end: opening either FIFO would wait forever, whatever cpu_ms says, so the
        // run goes on a thread of its own and the test fails (rather than hangs) if it does not end.
        let (sent, received) = std::sync::mpsc::channel();
        let started = std::time::Instant::now();
        let fixture = fx.clone();
        std::thread::spawn(move || {
            let actions = ["cat:/data/pipe", "write:/work/pipe:x", "cat:/data/ok.txt"];
            let _ = sent.send(fixture.run(guest, "cpu_ms = 2000", &actions));
        });
        let report = received
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{guest}: the run did not end within 20 s (cpu_ms is 2 s)"));
        let elapsed = started.elapsed();
        assert!(elapsed < std::time::Duration::from_millis(1500), "{guest}: the run took {elapsed:?}: {report:?}");
        assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
        assert!(line(&report, "cat /data/pipe").starts_with("ERR"), "{report:?}");
        assert!(line(&report, "write /work/pipe").starts_with("ERR"), "{report:?}");
        assert_eq!(line(&report, "cat /data/ok.txt"), "OK cat /data/ok.txt allowed", "regular files still open");
        for target in ["/data/pipe", "/work/pipe"] {
            let d = denial_for(&report, "fs", target);
            assert!(d.reason.contains("FIFO") && d.reason.contains("regular files and directories"), "{d:?}");
        }
    }
}
