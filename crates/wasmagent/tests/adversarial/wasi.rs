//! Hand-written WebAssembly (modules and components, mostly as text assembled with `wat`) trying to wear the host down
//! or slip past the loader.
//!
//! Proven in `wasi_kernel.rs` and `wasi_files.rs` and not repeated: endless loops (`cpu_ms`, `fuel`), the memory
//! bomb (`memory_limit_bytes`), `proc_exit`, traps and runaway recursion, `env`, output floods
//! (`max_output_bytes`), garbage, one bad magic number, a module cut in half, a module without `_start` or with an
//! unknown import, files outside every mount, `..` and symlinks out of a mount, writes to a read-only mount.

use crate::common::{manifest, sandbox};
use crate::{message, still_serves, wasm};
use std::path::Path;
use wasmagent::{CapabilityManifest, Error, ErrorKind, KernelError, Language, Outcome, RunReport, RunRequest, Sandbox};
use wasmagent_test_guests::{PROBE_COMPONENT, PROBE_MODULE};

fn run_wasm(toml: &str, bytes: Vec<u8>) -> RunReport {
    sandbox().run(&manifest(toml), &RunRequest::wasm("attack.wasm", bytes)).unwrap()
}

/// The message of code refused before it runs; panics when the code was not refused that way.
fn refusal(bytes: Vec<u8>) -> String {
    match sandbox().run(&manifest(""), &RunRequest::wasm("attack.wasm", bytes)) {
        Err(Error::Kernel(KernelError::InvalidCode(message))) => message,
        other => panic!("expected the code to be refused as invalid, got {other:?}"),
    }
}

/// WASI preview1 imports and a `print` of one number, shared by the modules below. Memory: 0..64 scratch, 64..96
/// the number's digits, 1024.. the module's own data.
const PRELUDE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $print (param $n i32)
    (local $p i32)
    (local.set $p (i32.const 95))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digits (local.get $n)))
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (i32.sub (i32.const 96) (local.get $p)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
"#;

/// Opens `/data/f` (preopen 3) without closing, up to `$limit` times or until an open fails; prints how many
/// opens succeeded and the errno of the failure (0 when none failed), then spins until `cpu_ms` when `$spin` is set.
fn descriptor_hoarder(limit: u32, spin: bool) -> Vec<u8> {
    wasm(&format!(
        r#"(module {PRELUDE}
          (data (i32.const 1024) "f")
          (func (export "_start")
            (local $count i32) (local $errno i32)
            (block $done
              (loop $open
                (br_if $done (i32.ge_u (local.get $count) (i32.const {limit})))
                (local.set $errno (call $path_open (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const 1)
                  (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16)))
                (br_if $done (local.get $errno))
                (local.set $count (i32.add (local.get $count) (i32.const 1)))
                (br $open)))
            (call $print (local.get $count))
            (call $print (local.get $errno))
            (if (i32.const {spin}) (then (loop $spin (br $spin))))))"#,
        spin = u32::from(spin)
    ))
}

/// Held by the tests that count this process's descriptors, so they do not count each other's.
static DESCRIPTOR_COUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How many descriptors this process holds, or `None` when it cannot open one more to find out.
fn open_descriptors() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}

/// A run that opens a thousand files and never closes them gives every host descriptor back when it ends.
#[test]
fn descriptors_a_run_leaves_open_are_released_when_it_ends() {
    let _counting = DESCRIPTOR_COUNT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let toml = format!("allowed_read_paths = [\"{}:/data\"]", dir.path().display());
    let before = open_descriptors().unwrap();
    let report = run_wasm(&toml, descriptor_hoarder(1000, false));
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.stdout, "1000\n0\n", "{report:?}");
    // Other tests run in parallel and hold a few descriptors each; a leak would be a thousand.
    let after = open_descriptors().unwrap();
    assert!(after < before + 200, "{before} host descriptors before the run, {after} after");
    still_serves(Language::Wasm);
}

/// Every open file of a run is a host descriptor; a run may hold at most 1,024 handles at once, so a run that opens
/// files without end stops there, with an error and a `handles` denial, and other runs still open their mounts.
#[test]
fn a_run_hoarding_descriptors_does_not_starve_other_runs() {
    let _counting = DESCRIPTOR_COUNT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let toml = format!("allowed_read_paths = [\"{}:/data\"]\ncpu_ms = 3000", dir.path().display());
    let hoarder = std::thread::spawn(move || run_wasm(&toml, descriptor_hoarder(u32::MAX, true)));
    // Wait, with a deadline, until the hoarder stops taking descriptors (or this process cannot open any more).
    let probe = wasmagent_test_guests::read(PROBE_MODULE);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    let mut last = open_descriptors();
    let mut stable_since = std::time::Instant::now();
    while last.is_some() && std::time::Instant::now() < deadline && stable_since.elapsed().as_millis() < 300 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = open_descriptors();
        if now != last {
            (last, stable_since) = (now, std::time::Instant::now());
        }
    }
    let other = sandbox().run(&manifest(""), &RunRequest::wasm("probe.wasm", probe).with_args(["hello"]));
    let hoarded = hoarder.join().unwrap();
    let held = last.map_or("every".to_owned(), |n| n.to_string());
    let other = other.unwrap_or_else(|e| panic!("another run failed while {held} descriptors were held: {e}"));
    assert_eq!(other.outcome, Outcome::Ok, "{other:?}");
    assert_eq!(hoarded.outcome, Outcome::Error, "{hoarded:?}");
    assert!(message(&hoarded).contains("handle limit"), "{hoarded:?}");
    assert!(hoarded.denials.iter().any(|d| d.capability == "handles" && d.reason.contains("1024")), "{hoarded:?}");
}

/// Growing a table past the engine's table limit, or declaring one or a memory larger than allowed, ends the run
/// at the limit with a denial naming it.
///
/// Enforces: wasi.memory_limit_bytes
#[test]
fn table_and_memory_bombs_end_at_the_limits_with_a_denial() {
    let grow = wasm(
        r#"(module (table $t 0 funcref) (memory (export "memory") 1)
          (func (export "_start")
            (loop $grow
              (br_if $grow (i32.ne (table.grow $t (ref.null func) (i32.const 100000)) (i32.const -1))))))"#,
    );
    let report = run_wasm("", grow);
    assert_eq!(report.outcome, Outcome::MemoryLimit, "{report:?}");
    assert_eq!(report.error.as_ref().unwrap().kind, ErrorKind::MemoryLimit);
    let denial = report.denials.iter().find(|d| d.capability == "memory").expect("a denial");
    assert!(denial.target.starts_with("grow a table to"), "{denial:?}");
    assert!(denial.reason.contains("table limit"), "{denial:?}");

    let report = run_wasm(
        "memory_limit_bytes = \"16MiB\"",
        wasm(r#"(module (memory (export "memory") 1000) (func (export "_start")))"#),
    );
    assert_eq!(report.outcome, Outcome::MemoryLimit, "{report:?}");
    assert!(message(&report).contains("memory_limit_bytes"), "{report:?}");

    let report = run_wasm(
        "memory_limit_bytes = \"16MiB\"",
        wasm(
            r#"(module (memory (export "memory") 1)
              (func (export "_start") (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))))"#,
        ),
    );
    assert_eq!(report.outcome, Outcome::MemoryLimit, "page-by-page growth too: {report:?}");
    assert!(report.usage.memory_peak_bytes <= 16 << 20);

    for (what, text) in [
        ("a table declared too large", r#"(module (table 2000000 funcref) (func (export "_start")))"#),
        ("two memories", r#"(module (memory 1) (memory 1) (func (export "_start")))"#),
    ] {
        let result = sandbox().run(&manifest(""), &RunRequest::wasm("attack.wasm", wasm(text)));
        match result {
            Ok(report) => {
                assert_ne!(report.outcome, Outcome::Ok, "{what}: {report:?}");
                assert!(!message(&report).is_empty(), "{what}: {report:?}");
            }
            Err(Error::Kernel(KernelError::InvalidCode(message))) => assert!(!message.is_empty()),
            Err(other) => panic!("{what}: {other:?}"),
        }
    }
    still_serves(Language::Wasm);
}

/// Code larger than the engine accepts (64 MiB, binary or text) is refused before it is parsed or compiled.
#[test]
fn code_over_the_size_cap_is_refused_before_compilation() {
    let mut binary = vec![0u8; 64 * 1024 * 1024 + 1];
    binary[..8].copy_from_slice(b"\0asm\x01\0\0\0");
    let started = std::time::Instant::now();
    let message = refusal(binary);
    assert!(message.contains("67108865 bytes") && message.contains("the largest accepted is 67108864"), "{message}");
    let text = format!("(module {} (func (export \"_start\")))", " ".repeat(64 * 1024 * 1024));
    let message = refusal(text.into_bytes());
    assert!(message.contains("the largest accepted is 67108864"), "{message}");
    assert!(started.elapsed().as_secs() < 30, "refusing is cheap: {:?}", started.elapsed());
    still_serves(Language::Wasm);
}

/// Compilation happens before `cpu_ms` starts; the engine's compile limit (`max_compile_ms`) bounds it. This module
/// (about 600 kB: 1,000 functions of 100 additions each) takes seconds to compile in a debug build, so a sandbox with
/// a 200 ms compile limit refuses it then, with an error naming the limit, and does not wait for the compiler.
#[test]
fn a_module_that_is_slow_to_compile_is_stopped_with_a_clear_error() {
    let strict = Sandbox::builder().pool_slots(2).max_compile_ms(200).build().unwrap();
    let m = strict.resolve(&CapabilityManifest::from_toml_str("cpu_ms = 1000").unwrap(), Path::new("/")).unwrap();
    let started = std::time::Instant::now();
    let result = strict.run(&m, &RunRequest::wasm("slow.wasm", slow_to_compile(1000, 100)));
    let elapsed = started.elapsed();
    assert!(elapsed.as_millis() < 1500, "the refusal took {elapsed:?} with a 200 ms compile limit");
    match result {
        Err(Error::Kernel(KernelError::InvalidCode(message))) => {
            assert!(message.contains("compile limit (200 ms)"), "{message}")
        }
        other => panic!("expected a refusal naming the compile limit, got {other:?}"),
    }
    still_serves(Language::Wasm);
}

/// A module of `functions` functions `(param i32) (result i32)`, each adding `additions` constants to its argument,
/// and an empty `_start`: written out directly, since its text form would take longer to parse than to compile.
fn slow_to_compile(functions: u32, additions: u32) -> Vec<u8> {
    fn leb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, payload: Vec<u8>, out: &mut Vec<u8>) {
        out.push(id);
        leb(payload.len() as u64, out);
        out.extend(payload);
    }
    let mut body = vec![0x00, 0x20, 0x00]; // no locals; local.get 0
    for k in 0..additions {
        // i32.const (k % 64, one byte of signed LEB); i32.add; local.tee 0
        body.extend([0x41, (k % 64) as u8, 0x6a, 0x22, 0x00]);
    }
    body.push(0x0b);
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    section(1, vec![0x02, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x00], &mut out);
    let mut declared = Vec::new();
    leb(u64::from(functions) + 1, &mut declared);
    declared.extend(std::iter::repeat_n(0x00, functions as usize));
    declared.push(0x01);
    section(3, declared, &mut out);
    let mut exports = vec![0x01, 0x06];
    exports.extend(b"_start");
    exports.push(0x00);
    leb(u64::from(functions), &mut exports);
    section(7, exports, &mut out);
    let mut code = Vec::new();
    leb(u64::from(functions) + 1, &mut code);
    for _ in 0..functions {
        leb(body.len() as u64, &mut code);
        code.extend(&body);
    }
    code.extend([0x02, 0x00, 0x0b]);
    section(10, code, &mut out);
    out
}

/// Thousands of imports: unknown ones are refused at link time naming the first, a component's are refused the
/// same way, and thousands of real WASI imports (each one wrapped by the audit rewrite) still run and report.
#[test]
fn thousands_of_imports_are_refused_or_run_with_a_clear_outcome() {
    let unknown: String = (0..5000).map(|i| format!("(import \"env\" \"f{i}\" (func))")).collect();
    let message = refusal(wasm(&format!("(module {unknown} (func (export \"_start\")))")));
    assert!(message.contains("cannot link the module") && message.contains("env::f0"), "{message}");

    let component_imports: String = (0..5000).map(|i| format!("(import \"f{i}\" (func))")).collect();
    let message = refusal(wasm(&format!("(component {component_imports})")));
    assert!(message.contains("cannot link the component") && message.contains("f0"), "{message}");

    let opens: String = (0..5000)
        .map(|i| {
            format!(
                "(import \"wasi_snapshot_preview1\" \"path_open\" (func $open{i} \
                 (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"
            )
        })
        .collect();
    let report = run_wasm(
        "",
        wasm(&format!(
            r#"(module {opens}
              (memory (export "memory") 1)
              (data (i32.const 1024) "etc/passwd")
              (func (export "_start")
                (drop (call $open4999 (i32.const 3) (i32.const 0) (i32.const 1024) (i32.const 10)
                  (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16)))))"#
        )),
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.denials.len(), 1, "{report:?}");
    assert_eq!((report.denials[0].capability.as_str(), report.denials[0].target.as_str()), ("fs.read", "/etc/passwd"));
    still_serves(Language::Wasm);
}

/// A module may not import the audit functions (it could forge denial records) nor the script engines' bridges
/// (tools, HTTP, artifacts): both are refused before anything runs.
#[test]
fn imports_of_the_hosts_private_interfaces_are_refused() {
    let message = refusal(wasm(
        r#"(module (import "wasmagent:fs-audit" "path_open"
             (func (param i32 i32 i32 i32 i32 i32 i64 i64 i32 i32)))
           (memory (export "memory") 1) (func (export "_start")))"#,
    ));
    assert!(message.contains("reserved module \"wasmagent:fs-audit\""), "{message}");
    for import in ["tool_call", "http_request", "artifact", "result"] {
        let message = refusal(wasm(&format!(
            r#"(module (import "wasmagent" "{import}" (func)) (memory (export "memory") 1) (func (export "_start")))"#
        )));
        assert!(message.contains("cannot link the module") && message.contains(import), "{message}");
    }
    still_serves(Language::Wasm);
}

/// Malformed binaries of every kind (bad magic or version, every truncation of a valid module, cut components,
/// absurd section sizes and counts) are refused as invalid code, naming the problem, before anything runs.
#[test]
fn malformed_binaries_are_refused_with_a_message_before_anything_runs() {
    // No names and no data section, so the code section comes last and every cut of it leaves a module that
    // cannot run (a cut between whole sections could otherwise still be a valid module).
    let valid = wasm(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (i32.store16 (i32.const 16) (i32.const 0x0a37))
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 2))
            (drop (call 0 (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    );
    let report = run_wasm("", valid.clone());
    assert_eq!(report.stdout, "7\n", "the whole module runs: {report:?}");
    for len in 0..valid.len() {
        let message = refusal(valid[..len].to_vec());
        assert!(!message.is_empty(), "cut at {len}");
    }

    let component = wasmagent_test_guests::read(PROBE_COMPONENT);
    for cut in [8, component.len() / 4, component.len() / 2, component.len() - 1] {
        let message = refusal(component[..cut].to_vec());
        assert!(!message.is_empty(), "component cut at {cut}");
    }

    for (what, bytes, expected) in [
        ("nothing", b"".to_vec(), "not valid WebAssembly text"),
        ("magic only", b"\0asm".to_vec(), "unexpected end-of-file"),
        ("a header and nothing else", b"\0asm\x01\0\0\0".to_vec(), "exports no `_start`"),
        ("upper-case magic", b"\0ASM\x01\0\0\0".to_vec(), "not a WebAssembly binary"),
        ("unknown version", b"\0asm\x02\0\0\0".to_vec(), "unknown binary version"),
        ("unknown component layer", b"\0asm\x0d\0\x02\0".to_vec(), "unknown binary version"),
        ("a 4 GiB section", b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\x0f".to_vec(), "unexpected end-of-file"),
        ("four billion types", b"\0asm\x01\0\0\0\x01\x05\xff\xff\xff\xff\x0f".to_vec(), "unexpected end-of-file"),
        ("an over-long LEB", b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\xff\xff\x01".to_vec(), "too long"),
    ] {
        let message = refusal(bytes);
        assert!(message.contains(expected), "{what}: {message}");
    }
    still_serves(Language::Wasm);
}

/// `poll_oneoff` with a clock subscription blocks in the host, where the epoch deadline cannot interrupt it; a
/// guard runs first, so a module asking to sleep past `cpu_ms` ends at `cpu_ms` as `timeout`. A short sleep still
/// sleeps.
///
/// Enforces: wasi.cpu_ms
#[test]
fn sleeping_in_poll_oneoff_ends_at_cpu_ms() {
    let sleeper = wasm(
        r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            ;; One relative clock subscription: monotonic clock, 3 s.
            (i64.store (i32.const 0) (i64.const 1))
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 3000000000))
            (drop (call $poll (i32.const 0) (i32.const 128) (i32.const 1) (i32.const 256)))))"#,
    );
    let report = run_wasm("cpu_ms = 300", sleeper.clone());
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    assert!(report.usage.wall_ms < 1000.0, "the run took {} ms", report.usage.wall_ms);
    let report = run_wasm("cpu_ms = 5000", sleeper);
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert!(report.usage.wall_ms >= 3000.0, "a sleep within cpu_ms sleeps: {} ms", report.usage.wall_ms);
}

/// Runs the probe component with `args` under `toml` on another thread, and returns its report with how long it
/// took; fails (instead of hanging the suite) when the run has not returned within `cpu_ms` + 5 s. The component is
/// compiled first, outside that time (compilation has its own limit).
fn run_component_guarded(toml: &str, cpu_ms: u64, args: Vec<String>) -> (RunReport, std::time::Duration) {
    let probe = wasmagent_test_guests::read(PROBE_COMPONENT);
    let warm = sandbox().run(&manifest(""), &RunRequest::wasm("probe.wasm", probe.clone()).with_args(["hello"]));
    assert_eq!(warm.unwrap().stdout, "hello from wasm\n");
    let request = RunRequest::wasm("probe.wasm", probe).with_args(args);
    let manifest = manifest(toml);
    let (sender, receiver) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let _ = sender.send(sandbox().run(&manifest, &request));
    });
    let limit = std::time::Duration::from_millis(cpu_ms + 5000);
    let report = receiver
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the run still holds its thread {limit:?} after it started (cpu_ms = {cpu_ms})"));
    (report.unwrap(), started.elapsed())
}

/// A component can block in the host on a wait that never ends on its own: writing a request body before handing
/// the request over (nothing reads it yet), or waiting for the response to a request whose body it never finishes.
/// `wasi:http` is linked for every component, so this needs no grant. Each wait ends at `cpu_ms` as `timeout`, and
/// the host thread is free again. With no host allowed, the body is not waited for at all: the request is refused.
///
/// Enforces: wasi.cpu_ms
#[test]
fn a_component_blocked_on_an_http_body_or_response_ends_at_cpu_ms() {
    // The requests never leave the host: the body is never finished, so nothing is sent.
    let toml = "cpu_ms = 500\nallowed_hosts = [\"127.0.0.1:9\"]";
    for action in ["http-stall", "http-unfinished"] {
        let (report, elapsed) = run_component_guarded(toml, 500, vec![format!("{action}:127.0.0.1:9/x")]);
        assert_eq!(report.outcome, Outcome::Timeout, "{action}: {report:?}");
        assert_eq!(report.error.as_ref().unwrap().kind, ErrorKind::Timeout, "{action}: {report:?}");
        assert!(message(&report).contains("cpu_ms"), "{action}: {report:?}");
        assert!(elapsed.as_millis() < 1500, "{action}: the run took {elapsed:?} with cpu_ms = 500");
        assert!(report.http_requests.is_empty(), "{action}: nothing was sent: {report:?}");
    }

    // The body is dropped unread: the guest's write to it fails, or (when it wrote first) the response is a refusal.
    let (report, elapsed) = run_component_guarded("cpu_ms = 5000", 5000, vec!["http-unfinished:127.0.0.1:9/x".into()]);
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    let refused = ["ERR http-unfinished StreamError::Closed\n", "ERR http-unfinished ErrorCode::HttpRequestDenied\n"];
    assert!(refused.contains(&report.stdout.as_str()), "{report:?}");
    assert!(elapsed.as_millis() < 2500, "refused without waiting for the body: {elapsed:?}");
    let denial = report.denials.iter().find(|d| d.capability == "net.http").expect("a denial");
    assert!(denial.reason.contains("allowed_hosts is empty"), "{denial:?}");
    still_serves(Language::Wasm);
}

/// A request body the guest drops unfinished is an error of that request, not a body "over the cap" (which the host
/// once made up by allocating `max_http_request_bytes` + 1 bytes); nothing is sent and nothing is refused.
#[test]
fn a_request_body_dropped_unfinished_fails_that_request_only() {
    let toml = "allowed_hosts = [\"127.0.0.1:9\"]";
    let (report, _) = run_component_guarded(toml, 5000, vec!["http-dropped-body:127.0.0.1:9/x".into()]);
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.stdout, "ERR http-dropped-body ErrorCode::HttpProtocolError\n", "{report:?}");
    assert!(report.denials.is_empty(), "{report:?}");
    assert!(report.http_requests.is_empty(), "{report:?}");
}

/// Asserts that the report's first filesystem denial names a path of `whole_len` bytes, cut within the report's
/// text bound and marked with that length.
fn assert_target_cut(report: &RunReport, whole_len: usize) {
    let denial = report.denials.iter().find(|d| d.capability.starts_with("fs.")).expect("a filesystem denial");
    assert!(denial.target.len() <= wasmagent::bounds::REPORT_TEXT_BYTES, "{} bytes", denial.target.len());
    let end = &denial.target[denial.target.len().saturating_sub(60)..];
    assert!(end.ends_with(&format!("…[cut: {whole_len} bytes in all]")), "{end}");
}

/// A preview1 module opens `./.` from the directory it opened last, ten thousand times (closing the previous one),
/// then tries to create a file in the read-only mount from there: the refusal names the path cut at the report's
/// bound with its whole length, and the audit held no more than that along the way.
#[test]
fn a_chain_of_ten_thousand_directory_opens_is_reported_cut() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("allowed_read_paths = [\"{}:/data\"]", dir.path().display());
    let module = wasm(&format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
          {PRELUDE}
          (data (i32.const 1024) "./.")
          (data (i32.const 1040) "new")
          (func (export "_start")
            (local $fd i32) (local $i i32) (local $errno i32)
            (local.set $fd (i32.const 3))
            (loop $chain
              (local.set $errno (call $path_open (local.get $fd) (i32.const 0) (i32.const 1024) (i32.const 3)
                (i32.const 2) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 16)))
              (if (local.get $errno) (then (call $print (local.get $errno)) (return)))
              (if (i32.ne (local.get $fd) (i32.const 3)) (then (drop (call $fd_close (local.get $fd)))))
              (local.set $fd (i32.load (i32.const 16)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $chain (i32.lt_u (local.get $i) (i32.const 10000))))
            (call $print (local.get $i))
            (drop (call $path_open (local.get $fd) (i32.const 0) (i32.const 1040) (i32.const 3)
              (i32.const 1) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 16)))))"#
    ));
    let report = run_wasm(&toml, module);
    assert_eq!((report.outcome, report.stdout.as_str()), (Outcome::Ok, "10000\n"), "{report:?}");
    assert_target_cut(&report, "/data".len() + 10_000 * "/./.".len() + "/new".len());
    still_serves(Language::Wasm);
}

/// A component asks for files by 1 MiB paths outside every mount: each refusal names the path cut at the report's
/// bound with its whole length.
#[test]
fn megabyte_paths_from_a_component_are_reported_cut() {
    let long = "a".repeat(1 << 20);
    let args = (0..3).map(|i| format!("cat:/{i}{long}")).collect();
    // The probe prints each path it could not read.
    let (report, _) = run_component_guarded("max_output_bytes = \"8MiB\"", 5000, args);
    assert_eq!(report.outcome, Outcome::Ok, "{}", message(&report));
    assert_eq!(report.denials.len(), 3, "{:?}", report.denials.iter().map(|d| d.target.len()).collect::<Vec<_>>());
    assert_target_cut(&report, 2 + long.len());
}
