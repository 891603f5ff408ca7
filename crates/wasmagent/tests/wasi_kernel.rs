//! The wasi kernel through the public `wasmagent` API: every manifest limit and grant, for preview1 modules and
//! preview2 components.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use wasmagent::{
    CapabilityManifest, EffectiveManifest, Error, ErrorKind, KernelError, Outcome, RunReport, RunRequest, Sandbox,
};
use wasmagent_test_guests::{PROBE_COMPONENT, PROBE_MODULE};

fn sandbox() -> Sandbox {
    Sandbox::builder().pool_slots(16).build().unwrap()
}

fn manifest(sandbox: &Sandbox, toml: &str) -> EffectiveManifest {
    sandbox.resolve(&CapabilityManifest::from_toml_str(toml).unwrap(), Path::new("/")).unwrap()
}

fn probe(sandbox: &Sandbox, manifest: &EffectiveManifest, guest: &str, actions: &[&str]) -> RunReport {
    let request = RunRequest::wasm("probe.wasm", wasmagent_test_guests::read(guest)).with_args(actions.iter().copied());
    sandbox.run(manifest, &request).unwrap()
}

/// Both guest flavours, so every behaviour is checked for modules and components alike.
const GUESTS: [&str; 2] = [PROBE_MODULE, PROBE_COMPONENT];

#[test]
fn a_command_runs_and_reports_its_output_manifest_and_digests() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "");
    for guest in GUESTS {
        let report = probe(&sandbox, &m, guest, &["hello"]);
        assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
        assert_eq!(report.stdout, "hello from wasm\n");
        assert_eq!(report.exit_code, Some(0));
        assert_eq!(report.schema, "wasmagent.run/v1");
        assert_eq!(report.kernel, "wasi");
        assert_eq!(report.manifest_digest, m.digest());
        assert_eq!(report.manifest, serde_json::to_value(&m).unwrap());
        assert!(report.code_digest.starts_with("sha256:"));
        assert!(report.error.is_none() && report.denials.is_empty());
        assert!(report.usage.memory_peak_bytes > 0);
        assert_eq!(report.usage.fuel_consumed, 0, "fuel is metered only when the manifest sets it");
        let metered = probe(&sandbox, &manifest(&sandbox, "fuel = 100_000_000"), guest, &["hello"]);
        assert!(metered.usage.fuel_consumed > 1000, "{metered:?}");
        assert_eq!(report.usage.stdout_bytes, 16);
    }
}

#[test]
fn arguments_and_stdin_come_from_the_request() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "");
    for guest in GUESTS {
        let request = RunRequest::wasm("probe.wasm", wasmagent_test_guests::read(guest))
            .with_args(["args", "stdin"])
            .with_stdin("from the request");
        let report = sandbox.run(&m, &request).unwrap();
        assert_eq!(report.stdout, "ARGS probe.wasm args stdin\nSTDIN from the request\n", "{report:?}");
    }
}

/// Enforces: wasi.cpu_ms
#[test]
fn an_infinite_loop_ends_at_cpu_ms_well_within_twice_the_deadline() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "cpu_ms = 300");
    for guest in GUESTS {
        let report = probe(&sandbox, &m, guest, &["loop"]);
        assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
        assert_eq!(report.error.as_ref().unwrap().kind, ErrorKind::Timeout);
        assert!(report.exit_code.is_none());
        assert!(report.usage.wall_ms >= 300.0 && report.usage.wall_ms < 600.0, "wall_ms {}", report.usage.wall_ms);
    }
}

/// Enforces: wasi.fuel
#[test]
fn an_infinite_loop_ends_when_fuel_runs_out() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "fuel = 2_000_000");
    for guest in GUESTS {
        let report = probe(&sandbox, &m, guest, &["loop"]);
        assert_eq!(report.outcome, Outcome::FuelExhausted, "{report:?}");
        assert_eq!(report.usage.fuel_consumed, 2_000_000);
    }
}

/// Enforces: wasi.memory_limit_bytes
#[test]
fn a_memory_bomb_stops_at_the_limit_and_is_reported_as_a_denial() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "memory_limit_bytes = \"32MiB\"");
    for guest in GUESTS {
        let report = probe(&sandbox, &m, guest, &["alloc:8", "bomb"]);
        assert_eq!(report.outcome, Outcome::MemoryLimit, "{report:?}");
        assert!(report.stdout.starts_with("OK alloc 8"), "allocations under the limit work: {report:?}");
        assert!(report.usage.memory_peak_bytes <= 32 << 20);
        let denial = report.denials.iter().find(|d| d.capability == "memory").expect("a memory denial");
        assert!(denial.reason.contains("memory_limit_bytes"), "{denial:?}");
    }
}

#[test]
fn proc_exit_becomes_outcome_exit_with_its_code() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "");
    for guest in GUESTS {
        let report = probe(&sandbox, &m, guest, &["hello", "exit:7", "hello"]);
        assert_eq!(report.outcome, Outcome::Exit, "{report:?}");
        // wasi:cli/exit@0.2 carries only success or failure, so a component's non-zero status reads as 1.
        assert_eq!(report.exit_code, Some(if guest == PROBE_MODULE { 7 } else { 1 }));
        assert_eq!(report.stdout, "hello from wasm\n", "nothing runs after exit");
        assert!(!report.succeeded());
        let zero = probe(&sandbox, &m, guest, &["exit:0"]);
        assert_eq!((zero.outcome, zero.exit_code), (Outcome::Exit, Some(0)));
        assert!(zero.succeeded());
    }
}

#[test]
fn traps_and_stack_overflow_are_errors_and_the_host_keeps_going() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "");
    for guest in GUESTS {
        let report = probe(&sandbox, &m, guest, &["trap"]);
        assert_eq!(report.outcome, Outcome::Error, "{report:?}");
        let error = report.error.unwrap();
        assert_eq!(error.kind, ErrorKind::Trap);
        assert!(error.message.contains("unreachable"), "{}", error.message);

        // Rust keeps its stack in linear memory: overflowing it is an out-of-bounds trap.
        let report = probe(&sandbox, &m, guest, &["recurse"]);
        assert_eq!(report.outcome, Outcome::Error, "{report:?}");
        assert!(report.error.unwrap().message.starts_with("wasm trap: out of bounds memory access"));

        assert_eq!(probe(&sandbox, &m, guest, &["hello"]).outcome, Outcome::Ok);
    }
    let runaway =
        RunRequest::wasm("r.wat", b"(module (func $f (call $f)) (func (export \"_start\") (call $f)))".to_vec());
    let report = sandbox.run(&m, &runaway).unwrap();
    assert_eq!(report.outcome, Outcome::Error);
    assert!(report.error.unwrap().message.starts_with("wasm trap: call stack exhausted"));
}

/// Enforces: wasi.env
#[test]
fn the_environment_is_exactly_the_manifest_env() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "env = { GREETING = \"hi\", MODE = \"test\" }");
    assert!(std::env::var_os("PATH").is_some(), "the host has variables that must not leak");
    for guest in GUESTS {
        let report = probe(&sandbox, &m, guest, &["env"]);
        assert_eq!(report.stdout, "ENV GREETING=hi\nENV MODE=test\n", "{report:?}");
        let empty = probe(&sandbox, &manifest(&sandbox, ""), guest, &["env"]);
        assert_eq!(empty.stdout, "");
    }
}

/// Enforces: wasi.max_output_bytes
#[test]
fn output_over_the_cap_is_cut_and_ends_the_run() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "max_output_bytes = 1000");
    for guest in GUESTS {
        let report = probe(&sandbox, &m, guest, &["print:100000", "hello"]);
        assert_eq!(report.outcome, Outcome::OutputLimit, "{report:?}");
        assert_eq!(report.stdout.len(), 1000);
        assert!(report.usage.stdout_bytes > 1000);
        assert!(!report.stdout.contains("hello"));

        let report = probe(&sandbox, &m, guest, &["eprint:5000"]);
        assert_eq!(report.outcome, Outcome::OutputLimit, "stderr is capped too: {report:?}");
        assert_eq!(report.stderr.len(), 1000);
    }
}

#[test]
fn malformed_code_is_refused_before_anything_runs() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "");
    let mut truncated = wasmagent_test_guests::read(PROBE_MODULE);
    truncated.truncate(truncated.len() / 2);
    for (what, bytes) in [
        ("garbage", b"definitely not wasm".to_vec()),
        ("bad magic", b"\0asn\x01\0\0\0".to_vec()),
        ("truncated", truncated),
        ("no _start", b"(module (func (export \"f\")))".to_vec()),
        ("unknown import", b"(module (import \"env\" \"f\" (func)) (func (export \"_start\")))".to_vec()),
    ] {
        let result = sandbox.run(&m, &RunRequest::wasm("bad.wasm", bytes));
        assert!(matches!(result, Err(Error::Kernel(KernelError::InvalidCode(_)))), "{what}: {result:?}");
    }
}

#[test]
fn compiled_code_is_reused_from_memory_and_from_the_disk_cache() {
    let cache = tempfile::tempdir().unwrap();
    let build = || Sandbox::builder().pool_slots(4).cache_dir(Some(cache.path().into())).build().unwrap();
    let first = build();
    let m = manifest(&first, "");
    assert_eq!(probe(&first, &m, PROBE_MODULE, &["hello"]).usage.code_cache, "compiled");
    assert_eq!(probe(&first, &m, PROBE_MODULE, &["hello"]).usage.code_cache, "memory");
    let second = build();
    assert_eq!(probe(&second, &m, PROBE_MODULE, &["hello"]).usage.code_cache, "disk");
    assert_eq!(probe(&second, &m, PROBE_COMPONENT, &["hello"]).usage.code_cache, "compiled");
    assert_eq!(
        build().run(&m, &RunRequest::wasm("p", wasmagent_test_guests::read(PROBE_COMPONENT))).unwrap().usage.code_cache,
        "disk"
    );
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { found.extend(files_under(&path)) } else { found.push(path) }
    }
    found
}

#[test]
fn code_refused_after_compilation_leaves_nothing_in_the_disk_cache() {
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::builder().pool_slots(4).cache_dir(Some(cache.path().into())).build().unwrap();
    let m = manifest(&sandbox, "");
    for (what, code) in [
        ("an import the host does not provide", "(module (import \"env\" \"f\" (func)) (func (export \"_start\")))"),
        ("no _start", "(module (func (export \"f\")))"),
        (
            "a component that is not a command",
            "(component (core module $m (func (export \"f\"))) (core instance (instantiate $m)))",
        ),
    ] {
        let result = sandbox.run(&m, &RunRequest::wasm("refused.wasm", code.as_bytes().to_vec()));
        assert!(matches!(result, Err(Error::Kernel(KernelError::InvalidCode(_)))), "{what}: {result:?}");
        assert_eq!(files_under(cache.path()), Vec::<std::path::PathBuf>::new(), "after {what}");
    }
    // The same cache keeps code that runs.
    assert_eq!(probe(&sandbox, &m, PROBE_MODULE, &["hello"]).usage.code_cache, "compiled");
    assert_eq!(files_under(cache.path()).len(), 1);
}

/// Resident set size of this process, from /proc.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_thousand_runs_in_a_row_do_not_grow_host_memory() {
    let sandbox = sandbox();
    let m = manifest(&sandbox, "");
    let request =
        RunRequest::wasm("probe.wasm", wasmagent_test_guests::read(PROBE_MODULE)).with_args(["hello", "alloc:1"]);
    for _ in 0..200 {
        assert_eq!(sandbox.run(&m, &request).unwrap().outcome, Outcome::Ok);
    }
    let before = rss_bytes();
    for _ in 0..1000 {
        assert_eq!(sandbox.run(&m, &request).unwrap().outcome, Outcome::Ok);
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 8 << 20, "host RSS grew by {grown} bytes over 1,000 runs");
}
