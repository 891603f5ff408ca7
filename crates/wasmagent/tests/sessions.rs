//! Sessions through the public API: state kept between calls in both languages, the scratch directory, isolation
//! between sessions and between a fork and its parent, per-call limits, what ends a session, and the live caps.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::json;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use wasmagent::{
    CapabilityManifest, EffectiveManifest, Error, KernelError, Language, Outcome, RunReport, RunRequest, Sandbox,
    SandboxSession, SessionError, SessionLimits, Tool, ToolRegistry,
};

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    // Scratch directories hold at most 64 KiB after a call here, so a test can cross the cap cheaply.
    let limits = SessionLimits { session_scratch_bytes: SCRATCH_LIMIT, ..SessionLimits::default() };
    SANDBOX.get_or_init(|| {
        let mut tools = ToolRegistry::new();
        let whoami = Tool::per_run("whoami", "Says whom the run is for.", json!({"type": "object"}), |run, _| {
            Ok(json!(run.caller()))
        });
        tools.register(whoami).unwrap();
        Sandbox::builder().pool_slots(24).session_limits(limits).tools(tools).build().unwrap()
    })
}

const SCRATCH_LIMIT: u64 = 64 * 1024;

fn manifest(toml: &str) -> EffectiveManifest {
    sandbox().resolve(&CapabilityManifest::from_toml_str(toml).unwrap(), Path::new("/")).unwrap()
}

/// A session of its own subject, so tests running at once never meet each other's per-subject cap.
fn open(subject: &str, language: Language, toml: &str) -> SandboxSession {
    sandbox().session_for(subject, &manifest(toml), language).unwrap()
}

fn call(session: &mut SandboxSession, code: &str) -> RunReport {
    let name = match session.language() {
        Language::Python => "cell.py",
        _ => "cell.js",
    };
    session.run(&RunRequest::source(name, session.language(), code)).unwrap()
}

fn value(session: &mut SandboxSession, code: &str) -> serde_json::Value {
    let report = call(session, code);
    assert_eq!(report.outcome, Outcome::Ok, "{code}: {report:?}");
    report.value
}

/// The reason a session's next call is refused with.
fn refusal(session: &mut SandboxSession) -> String {
    let language = session.language();
    match session.run(&RunRequest::source("next", language, "1")) {
        Err(Error::Kernel(KernelError::SessionEnded(reason))) => reason,
        other => panic!("the session should have ended: {other:?}"),
    }
}

#[test]
fn javascript_globals_and_functions_stay_between_calls_and_reports_name_the_session_and_call() {
    let mut s = open("js-state", Language::Js, "");
    let first = call(&mut s, "var total = 40; let label = 'sum'; function add(n) { total += n; return total; } 1");
    assert_eq!(first.session_id.as_deref(), Some(s.id()));
    assert_eq!(first.session_call, Some(1));
    let second = call(&mut s, "[add(2), label]");
    assert_eq!(second.value, json!([42, "sum"]));
    assert_eq!((second.session_call, second.session_ended), (Some(2), None));
    // An exception is JavaScript's own failure: the session goes on with its state.
    let thrown = call(&mut s, "throw new Error('boom')");
    assert_eq!(thrown.outcome, Outcome::Error);
    assert_eq!(thrown.session_ended, None);
    assert_eq!(value(&mut s, "add(1)"), json!(43));
}

#[test]
fn python_variables_functions_and_imports_stay_between_calls() {
    let mut s = open("py-state", Language::Python, "");
    value(&mut s, "import statistics\ndata = [1, 2, 3, 4]\ndef spread(xs):\n    return max(xs) - min(xs)\n");
    assert_eq!(value(&mut s, "[statistics.mean(data), spread(data)]"), json!([2.5, 3]));
    let failed = call(&mut s, "raise ValueError('nope')");
    assert_eq!(failed.outcome, Outcome::Error);
    assert_eq!(value(&mut s, "data.append(5)\nlen(data)"), json!(5));
}

#[test]
fn each_call_reports_only_its_own_output() {
    let mut s = open("js-output", Language::Js, "max_output_bytes = \"64\"");
    assert_eq!(call(&mut s, "console.log('a'.repeat(40))").stdout.len(), 41);
    // 41 more bytes would cross the cap if output were counted for the session rather than per call.
    let second = call(&mut s, "console.log('b'.repeat(40))");
    assert_eq!((second.outcome, second.stdout.as_str()), (Outcome::Ok, format!("{}\n", "b".repeat(40)).as_str()));
}

#[test]
fn scratch_files_stay_in_their_session_and_nowhere_else() {
    for (language, write, read, exists) in [
        (
            Language::Js,
            "fs.writeFile('/scratch/notes.txt', 'kept'); 1",
            "fs.readFile('/scratch/notes.txt')",
            "fs.exists('/scratch/notes.txt')",
        ),
        (
            Language::Python,
            "open('/scratch/notes.txt', 'w').write('kept')",
            "open('/scratch/notes.txt').read()",
            "import os\nos.path.exists('/scratch/notes.txt')",
        ),
    ] {
        let mut a = open(&format!("scratch-a-{language:?}"), language, "");
        let mut b = open(&format!("scratch-b-{language:?}"), language, "");
        call(&mut a, write);
        assert_eq!(value(&mut a, read), json!("kept"), "{language:?}");
        assert_eq!(value(&mut b, exists), json!(false), "{language:?}: another session sees the file");
        // A fresh run has no scratch directory at all.
        let fresh = sandbox().run(&manifest(""), &RunRequest::source("x", language, exists)).unwrap();
        assert_eq!(fresh.value, json!(false), "{language:?}");
    }
}

#[test]
fn two_sessions_do_not_see_each_others_globals() {
    let mut a = open("iso-a", Language::Js, "");
    let mut b = open("iso-b", Language::Js, "");
    call(&mut a, "globalThis.secret = 'only a'; 1");
    assert_eq!(value(&mut b, "typeof secret"), json!("undefined"));
    let mut p = open("iso-p", Language::Python, "");
    let mut q = open("iso-q", Language::Python, "");
    call(&mut p, "secret = 'only p'");
    assert_eq!(value(&mut q, "'secret' in globals()"), json!(false));
}

#[test]
fn a_fork_starts_with_its_parents_state_and_shares_nothing_afterwards() {
    let mut parent = open("fork", Language::Js, "");
    call(&mut parent, "var counter = 1; var big = 'x'.repeat(100000); fs.writeFile('/scratch/f', 'from parent'); 1");
    let mut child = parent.fork().unwrap();
    assert_ne!(child.id(), parent.id());
    assert_eq!(child.info().forked_from.as_deref(), Some(parent.id()));
    assert_eq!(
        value(&mut child, "[counter, big.length, fs.readFile('/scratch/f')]"),
        json!([1, 100000, "from parent"])
    );
    call(&mut child, "counter = 2; var only_child = true; fs.writeFile('/scratch/f', 'from child'); 1");
    call(&mut parent, "counter = 3; var only_parent = true; 1");
    assert_eq!(
        value(&mut parent, "[counter, typeof only_child, fs.readFile('/scratch/f')]"),
        json!([3, "undefined", "from parent"])
    );
    assert_eq!(
        value(&mut child, "[counter, typeof only_parent, fs.readFile('/scratch/f')]"),
        json!([2, "undefined", "from child"])
    );
    // The fork's calls are numbered from 1: it is a session of its own.
    assert_eq!(call(&mut child, "1").session_call, Some(4));
}

#[test]
fn a_snapshot_restores_into_independent_copies_of_that_moment() {
    let mut s = open("snapshot", Language::Js, "");
    call(&mut s, "var n = 1; fs.writeFile('/scratch/f', 'at snapshot'); 1");
    let snapshot = s.snapshot().unwrap();
    assert_eq!(snapshot.taken_from(), s.id());
    assert!(snapshot.memory_bytes() > 1 << 20, "{}", snapshot.memory_bytes());
    call(&mut s, "n = 2; fs.writeFile('/scratch/f', 'later'); 1");
    let mut a = sandbox().restore_for("snapshot-a", &snapshot).unwrap();
    let mut b = sandbox().restore_for("snapshot-b", &snapshot).unwrap();
    assert_eq!(value(&mut a, "[n, fs.readFile('/scratch/f')]"), json!([1, "at snapshot"]));
    call(&mut a, "n = 10; 1");
    assert_eq!(value(&mut b, "[n, fs.readFile('/scratch/f')]"), json!([1, "at snapshot"]), "restores share state");
    assert_eq!(value(&mut s, "n"), json!(2));
    drop(s);
    // A snapshot outlives its session.
    let mut c = sandbox().restore_for("snapshot-c", &snapshot).unwrap();
    assert_eq!(value(&mut c, "n"), json!(1));
}

#[test]
fn a_python_fork_starts_with_its_parents_state_and_shares_nothing_afterwards() {
    let mut parent = open("py-fork", Language::Python, "");
    call(
        &mut parent,
        "import statistics\ncounter = 1\nbig = 'x' * 100000\ndef double(n): return 2 * n\n\
         open('/scratch/f', 'w').write('from parent')",
    );
    let mut child = parent.fork().unwrap();
    assert_eq!(child.info().forked_from.as_deref(), Some(parent.id()));
    let read = "open('/scratch/f').read()";
    assert_eq!(
        value(&mut child, &format!("[counter, len(big), double(21), statistics.mean([1, 3]), {read}]")),
        json!([1, 100000, 42, 2, "from parent"])
    );
    call(&mut child, "counter = 2\nonly_child = True\nopen('/scratch/f', 'w').write('from child')");
    call(&mut parent, "counter = 3\nonly_parent = True");
    assert_eq!(
        value(&mut parent, &format!("[counter, 'only_child' in globals(), {read}]")),
        json!([3, false, "from parent"])
    );
    assert_eq!(
        value(&mut child, &format!("[counter, 'only_parent' in globals(), {read}]")),
        json!([2, false, "from child"])
    );
}

#[test]
fn a_python_snapshot_restores_into_independent_copies_of_that_moment() {
    let mut s = open("py-snapshot", Language::Python, "cpu_ms = 500");
    call(&mut s, "n = 1\nopen('/scratch/f', 'w').write('at snapshot')");
    let snapshot = s.snapshot().unwrap();
    assert_eq!(snapshot.language(), Language::Python);
    assert!(snapshot.memory_bytes() > 1 << 20, "{}", snapshot.memory_bytes());
    call(&mut s, "n = 2");
    let mut a = sandbox().restore_for("py-snapshot-a", &snapshot).unwrap();
    let mut b = sandbox().restore_for("py-snapshot-b", &snapshot).unwrap();
    assert_eq!(value(&mut a, "[n, open('/scratch/f').read()]"), json!([1, "at snapshot"]));
    call(&mut a, "n = 10");
    assert_eq!(value(&mut b, "n"), json!(1), "restores share state");
    assert_eq!(value(&mut s, "n"), json!(2));
    // A fork of a session that ended is refused with the reason it ended.
    let ended = call(&mut s, "while True: pass");
    assert!(ended.session_ended.is_some(), "{ended:?}");
    let Err(refused) = s.fork() else { panic!("a session that ended was forked") };
    assert!(refused.to_string().contains("timeout"), "{refused}");
}

/// JavaScript: QuickJS interrupts a looping call just before `cpu_ms`, cleanly, so the session goes on with its
/// state, even when the loop tried to catch the interruption.
#[test]
fn a_javascript_call_that_times_out_leaves_the_session_usable() {
    let mut s = open("timeout-js", Language::Js, "cpu_ms = 300");
    value(&mut s, "var kept = 41; 1");
    for looping in ["for (;;) {}", "for (;;) { try { for (;;) {} } catch (e) {} }"] {
        let started = Instant::now();
        let report = call(&mut s, looping);
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert_eq!(report.outcome, Outcome::Timeout, "{looping}: {report:?}");
        let message = report.error.unwrap().message;
        assert!(message.contains("cpu_ms (300 ms") && message.contains("session goes on"), "{message}");
        assert_eq!(report.session_ended, None);
    }
    assert_eq!(value(&mut s, "kept + 1"), json!(42));
}

/// Python: CPython cannot be interrupted from inside, so a looping call is trapped at `cpu_ms`, and a trapped
/// component instance is never entered again: the session ends and says why.
#[test]
fn a_python_call_that_times_out_ends_the_session_with_the_reason() {
    let mut s = open("timeout-py", Language::Python, "cpu_ms = 300");
    value(&mut s, "1");
    let started = Instant::now();
    let report = call(&mut s, "while True:\n    pass");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(report.outcome, Outcome::Timeout);
    let ended = report.session_ended.expect("a trapped call ends its session");
    assert!(ended.contains("call 2") && ended.contains("timeout"), "{ended}");
    assert_eq!(refusal(&mut s), ended);
    assert_eq!(s.info().ended.as_deref(), Some(ended.as_str()));
}

#[test]
fn cpu_ms_is_per_call_not_per_session() {
    let mut s = open("per-call-time", Language::Js, "cpu_ms = 400");
    // Three calls of ~250 ms each: 750 ms in all, past cpu_ms for a session, within it for each call.
    for _ in 0..3 {
        let report = call(&mut s, "{ const t = Date.now(); while (Date.now() - t < 250) {} } 1");
        assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    }
}

#[test]
fn memory_kept_across_calls_is_held_to_the_memory_limit() {
    let limit: u64 = 48 << 20;
    let mut s = open("memory-js", Language::Js, &format!("memory_limit_bytes = {limit}"));
    call(&mut s, "var keep = []; 1");
    let mut stopped = None;
    for n in 1..=20 {
        let report = call(&mut s, "keep.push(new Uint8Array(8 << 20).fill(1)); keep.length");
        assert!(report.usage.memory_peak_bytes <= limit, "{report:?}");
        if report.outcome != Outcome::Ok {
            stopped = Some((n, report));
            break;
        }
    }
    let (n, report) = stopped.expect("20 × 8 MiB kept in a 48 MiB session");
    assert!(n <= 6, "stopped only at call {n}");
    let message = report.error.unwrap().message;
    assert!(message.contains("out of memory") || message.contains("memory limit"), "{message}");

    let mut p = open("memory-py", Language::Python, &format!("memory_limit_bytes = {}", 96u64 << 20));
    call(&mut p, "keep = []");
    let mut stopped = false;
    for _ in 0..20 {
        let report = call(&mut p, "keep.append(bytearray(8 << 20))\nlen(keep)");
        assert!(report.usage.memory_peak_bytes <= 96 << 20, "{report:?}");
        if report.outcome != Outcome::Ok {
            let message = report.error.map(|e| e.message).unwrap_or_default();
            assert!(message.contains("MemoryError") || message.contains("memory limit"), "{message}");
            stopped = true;
            break;
        }
    }
    assert!(stopped, "20 × 8 MiB kept in a 96 MiB session");
}

/// Polls `expire` until the session ends (within 10 s) and returns the reason its next call is refused with.
fn wait_until_expired(s: &mut SandboxSession) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.expire().is_none() {
        assert!(Instant::now() < deadline, "the session never expired");
        std::thread::yield_now();
    }
    refusal(s)
}

/// Enforces: js.session_idle_ms, python.session_idle_ms
#[test]
fn an_idle_session_ends() {
    for language in [Language::Js, Language::Python] {
        let idle = SessionLimits { session_idle_ms: 50, ..Default::default() };
        let mut s = open(&format!("idle-{language:?}"), language, "").narrow_limits(&idle);
        value(&mut s, "1");
        let reason = wait_until_expired(&mut s);
        assert!(reason.contains("session_idle_ms (50 ms)"), "{reason}");
    }
}

/// Enforces: js.session_max_ms, python.session_max_ms
#[test]
fn a_session_ends_at_its_maximum_age_even_while_busy() {
    for (language, busy) in [
        (Language::Js, "{ const t = Date.now(); while (Date.now() - t < 20) {} } 1"),
        (Language::Python, "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.02:\n    pass\n1"),
    ] {
        let age = SessionLimits { session_max_ms: 300, ..Default::default() };
        let mut s = open(&format!("age-{language:?}"), language, "").narrow_limits(&age);
        // Calls keep it from being idle; its age ends it all the same.
        let deadline = Instant::now() + Duration::from_secs(10);
        let reason = loop {
            assert!(Instant::now() < deadline, "the session never reached its maximum age");
            match s.run(&RunRequest::source("tick", language, busy)) {
                Ok(report) => assert_eq!(report.outcome, Outcome::Ok),
                Err(Error::Kernel(KernelError::SessionEnded(reason))) => break reason,
                Err(other) => panic!("{other}"),
            }
        };
        assert!(reason.contains("session_max_ms (300 ms)"), "{reason}");
    }
}

/// Enforces: js.session_scratch_bytes, python.session_scratch_bytes
#[test]
fn a_scratch_directory_over_its_cap_ends_the_session() {
    for (language, fill) in [
        (Language::Js, "fs.writeFile('/scratch/big', 'x'.repeat(100000)); 1"),
        (Language::Python, "open('/scratch/big', 'w').write('x' * 100000)"),
    ] {
        let mut s = open(&format!("scratch-cap-{language:?}"), language, "");
        let report = call(&mut s, fill);
        assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
        let ended = report.session_ended.expect("100,000 bytes in a 64 KiB scratch directory");
        let cap = format!("session_scratch_bytes ({SCRATCH_LIMIT})");
        assert!(ended.contains("100000 bytes") && ended.contains(&cap), "{ended}");
        assert_eq!(refusal(&mut s), ended);
    }
}

/// Enforces: js.session_max_calls, python.session_max_calls
#[test]
fn session_max_calls_ends_the_session_after_its_last_call() {
    for language in [Language::Js, Language::Python] {
        let calls = SessionLimits { session_max_calls: 2, ..Default::default() };
        let mut s = open(&format!("max-calls-{language:?}"), language, "").narrow_limits(&calls);
        assert_eq!(call(&mut s, "1").session_ended, None);
        let last = call(&mut s, "2");
        assert_eq!(last.value, json!(2));
        let ended = last.session_ended.unwrap();
        assert!(ended.contains("session_max_calls (2)"), "{ended}");
        assert_eq!(refusal(&mut s), ended);
    }
}

/// Enforces: js.max_sessions_per_subject, python.max_sessions_per_subject, js.max_sessions, python.max_sessions
#[test]
fn the_live_session_caps_refuse_with_a_clear_message() {
    let limits = SessionLimits { max_sessions_per_subject: 2, max_sessions: 3, ..Default::default() };
    let sandbox = Sandbox::builder().pool_slots(6).session_limits(limits).build().unwrap();
    let m = sandbox.resolve(&CapabilityManifest::default(), Path::new("/")).unwrap();
    let a1 = sandbox.session_for("alice", &m, Language::Js).unwrap();
    let mut a2 = sandbox.session_for("alice", &m, Language::Python).unwrap();
    for language in [Language::Js, Language::Python] {
        let Err(SessionError::TooManyForSubject(message)) = sandbox.session_for("alice", &m, language) else {
            panic!("a third session for alice was opened");
        };
        assert!(message.contains("max_sessions_per_subject 2"), "{message}");
    }
    // A fork is refused by the cap before the kernel is asked.
    assert!(matches!(a2.fork(), Err(SessionError::TooManyForSubject(_))));
    let _b1 = sandbox.session_for("bob", &m, Language::Js).unwrap();
    for language in [Language::Js, Language::Python] {
        let Err(SessionError::TooMany(message)) = sandbox.session_for("carol", &m, language) else {
            panic!("a fourth session was opened");
        };
        assert!(message.contains("max_sessions 3"), "{message}");
    }
    assert_eq!(sandbox.live_sessions(), 3);
    a1.close();
    assert_eq!(sandbox.live_sessions(), 2);
    sandbox.session_for("carol", &m, Language::Python).unwrap();
}

#[test]
fn webassembly_has_no_sessions_and_a_scratch_mount_clash_is_refused() {
    let Err(SessionError::Language(_)) = sandbox().session_for("wasm", &manifest(""), Language::Wasm) else {
        panic!("a WebAssembly session was opened");
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("allowed_read_paths = [\"{}:/scratch/data\"]", dir.path().display());
    let Err(SessionError::Kernel(KernelError::Unsupported { field, reason, .. })) =
        sandbox().session_for("clash", &manifest(&toml), Language::Js)
    else {
        panic!("a mount under /scratch was accepted");
    };
    assert_eq!(field, "mounts");
    assert!(reason.contains("/scratch"), "{reason}");
}

#[test]
fn each_call_tells_its_tools_whom_it_is_for() {
    for (language, code) in
        [(Language::Js, "tools.whoami({})"), (Language::Python, "from wasmagent import tools\ntools.whoami()")]
    {
        let mut s = open(&format!("caller-{language:?}"), language, "extra_capabilities = [\"tool:whoami\"]");
        for caller in ["agent-7", "agent-8"] {
            let request = RunRequest::source("c", language, code).with_caller(Some(caller.into()));
            let report = s.run(&request).unwrap();
            assert_eq!(report.value, json!(caller), "{language:?}: {report:?}");
        }
    }
}
