//! Chromium under the second wall: a process confined with [`Plan::chromium`] (and no seccomp filter, as
//! [`Plan::spawns_after_seal`] leaves it) starts headless Chromium, which renders a page, while the process itself is
//! still refused what lies outside its plan. No libtest harness: the process must have one thread when it confines.
//! Skipped (saying so) where Chromium is not installed, unless `CI` is set.

#[cfg(target_os = "linux")]
fn main() {
    use std::path::Path;
    use wasmagent_confine::{LandlockState, Plan, SeccompState, begin};

    let chromium = Path::new("/usr/lib/chromium/chromium");
    if !chromium.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must have Debian's chromium (.ci/run installs it)");
        println!("chromium is not installed: skipped\n0 passed, 0 failed");
        return;
    }
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut plan = Plan::new();
    plan.chromium(chromium, profile.path());
    let status = begin(&plan).and_then(|s| s.seal()).expect("confinement");
    println!("measured: {status}");
    let mut failed = 0;
    let mut check = |name: &str, ok: bool, detail: String| {
        println!("test chromium::{name} ... {}", if ok { "ok".to_owned() } else { format!("FAILED: {detail}") });
        if !ok {
            failed += 1;
        }
    };
    check("seccomp_is_left_off_and_says_why", status.seccomp == SeccompState::NotInstalled, format!("{status:?}"));
    let out = std::process::Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", "data:text/html,<p id=x>rendered under the wall</p>"])
        .env("TMPDIR", profile.path())
        .env("HOME", profile.path())
        .output();
    match out {
        Ok(out) => {
            let dom = String::from_utf8_lossy(&out.stdout);
            check(
                "chromium_renders_a_page",
                dom.contains("rendered under the wall"),
                format!("status {:?}, stderr {}", out.status, String::from_utf8_lossy(&out.stderr)),
            );
        }
        Err(e) => check("chromium_renders_a_page", false, e.to_string()),
    }
    if status.landlock == LandlockState::Enforced {
        // Chromium inherits the ruleset: as root it would show /etc/shadow's lines (it does unconfined); confined it
        // shows nothing, while a file in its profile directory, which the plan grants, still shows.
        let dump = |url: &str| {
            std::process::Command::new(chromium)
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .args(["--dump-dom", url])
                .env("TMPDIR", profile.path())
                .env("HOME", profile.path())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let granted = profile.path().join("granted.txt");
        let written = std::fs::write(&granted, "granted:line");
        let shown = dump(&format!("file://{}", granted.display()));
        let shadow = dump("file:///etc/shadow");
        check(
            "chromium_inherits_the_wall_and_cannot_read_etc_shadow",
            written.is_ok()
                && shown.as_ref().is_ok_and(|dom| dom.contains("granted:line"))
                && shadow.as_ref().is_ok_and(|dom| !dom.contains("root:")),
            format!("granted file: {shown:?}; /etc/shadow: {shadow:?}"),
        );
        let refused = std::fs::read("/etc/shadow").map_err(|e| e.raw_os_error());
        check("the_process_still_cannot_read_etc_shadow", refused == Err(Some(13)), format!("{refused:?}"));
    }
    println!("{} passed, {failed} failed", 4 - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("0 passed, 0 failed");
}
