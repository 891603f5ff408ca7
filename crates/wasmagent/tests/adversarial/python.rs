//! Python (CPython compiled to a WebAssembly component) trying to reach the host or wear it down.
//!
//! Proven in `python_kernel.rs` and not repeated: plain `import` of `js`, `pyodide`, `ctypes`, `subprocess`,
//! `socket`, `multiprocessing`; `os.fork` missing and `os.system`/`os.execv` not running anything; `while True`
//! (`cpu_ms`, `fuel`); regular-expression backtracking; `'x' * 10**9`, string-list growth and `bytearray(1 << 30)`
//! (`memory_limit_bytes`); plain deep recursion; `open()` on `/etc/passwd`, `..` and a symlink out of a mount;
//! `os.environ` holding exactly the manifest's `env`; `sys.exit` and `os._exit(0)`; a `print` flood.

use crate::common::{self, manifest};
use crate::{message, still_serves};
use serde_json::json;
use wasmagent::{EffectiveManifest, ErrorKind, Language, Outcome, RunReport};

fn py(manifest: &EffectiveManifest, code: &str) -> RunReport {
    common::run(manifest, Language::Python, "attack.py", code)
}

/// Going around the import refusal (the import machinery itself, references other modules kept, the built-in
/// importer, which hands out `_socket`) reaches at most the standard library's wrappers, and what they would need
/// the host never grants: no process or thread starts, no native code loads, no socket connects or listens, no
/// name resolves.
#[test]
fn escape_hatches_reached_around_the_import_refusal_still_reach_nothing() {
    let out = tempfile::tempdir().unwrap();
    let marker = out.path().join("pwned");
    let m = manifest(&format!("allowed_write_paths = [\"{}:/out\"]", out.path().display()));
    let report = py(
        &m,
        &format!(
            r#"
import sys, importlib, importlib.machinery, importlib.util, os
def attempt(f):
    try:
        return "ran: " + repr(f())[:80]
    except BaseException as e:
        return type(e).__name__ + ": " + str(e)
def builtin(name):
    spec = importlib.machinery.BuiltinImporter.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(name + " is not built in")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
_socket = builtin("_socket")
import asyncio.base_events, asyncio.subprocess
socket = asyncio.base_events.socket
subprocess = asyncio.subprocess.subprocess
def connect(address):
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.connect(address)
    return s
def listen():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("0.0.0.0", 8080))
    s.listen()
    return s
def datagram():
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    return s.sendto(b"x", ("8.8.8.8", 53))
results = {{
    "import_module": attempt(lambda: importlib.import_module("ctypes")),
    "dunder_import": attempt(lambda: __import__("subprocess")),
    "find_spec": attempt(lambda: importlib.util.find_spec("_socket")),
    "builtin_ctypes": attempt(lambda: builtin("_ctypes")),
    "popen": attempt(lambda: subprocess.Popen(["touch", {marker:?}])),
    "run_shell": attempt(lambda: subprocess.run("echo pwned > /out/pwned", shell=True)),
    "connect": attempt(lambda: connect(("1.1.1.1", 53))),
    "connect_loopback": attempt(lambda: connect(("127.0.0.1", 22))),
    "listen": attempt(listen),
    "udp": attempt(datagram),
    "resolve": attempt(lambda: socket.getaddrinfo("example.org", 80)),
    "resolve_raw": attempt(lambda: _socket.getaddrinfo(b"example.org", 80)),
    "thread": attempt(lambda: __import__("threading").Thread(target=print).start()),
    "raw_thread": attempt(lambda: builtin("_thread").start_new_thread(print, ())),
    "system": attempt(lambda: os.system("id")),
    "spawn": attempt(lambda: os.posix_spawn("/bin/sh", ["sh"], {{}})),
    "kill": attempt(lambda: os.kill(1, 9)),
}}
sys.meta_path.clear()
results["no_finders"] = attempt(lambda: __import__("ctypes"))
results
"#
        ),
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    let results = report.value.as_object().unwrap();
    for (what, outcome) in results {
        let outcome = outcome.as_str().unwrap();
        assert!(!outcome.starts_with("ran") && outcome.to_lowercase().contains("error"), "{what}: {outcome}");
    }
    // Reached around the import refusal, a socket cannot even be created: WASI preview 1 has no call that makes one.
    for what in ["connect", "connect_loopback", "listen", "udp"] {
        assert!(results[what].as_str().unwrap().contains("Not supported"), "{what}: {results:?}");
    }
    assert!(results["popen"].as_str().unwrap().contains("does not support processes"), "{results:?}");
    assert!(!marker.exists(), "no process ran: {results:?}");
    assert!(!out.path().join("pwned").exists());
    still_serves(Language::Python);
}

/// Every kind of socket the code above asks for fails inside the engine: it is a WASI preview 1 module, and preview 1
/// has no call that creates or connects a socket, so no attempt reaches the host (there is nothing to grant, and no
/// denial to report), however many times it is asked for. The egress path is the only way out.
///
/// Enforces: python.allowed_hosts
#[test]
fn sockets_cannot_be_created_in_the_engine() {
    let report = py(
        &manifest(""),
        r#"
import importlib.machinery, importlib.util
spec = importlib.machinery.BuiltinImporter.find_spec("_socket")
_socket = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_socket)
errors = set()
for _ in range(100):
    for family, kind in [(_socket.AF_INET, _socket.SOCK_STREAM), (_socket.AF_INET6, _socket.SOCK_DGRAM)]:
        try:
            _socket.socket(family, kind).connect(("1.1.1.1", 53))
            errors.add("connected")
        except OSError as error:
            errors.add(f"{type(error).__name__}: {error.strerror}")
sorted(errors)
"#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value, json!(["OSError: Not supported"]), "{report:?}");
    assert!(report.http_requests.is_empty() && report.denials.is_empty(), "{report:?}");
}

/// With the recursion limit raised out of the way, recursion (in Python code, in `repr`, and in the JSON encoder
/// turning the result into JSON) ends at the memory limit (Python frames live in linear memory), at the engine's
/// stack (a trap the report explains in Python's terms) or as a `RecursionError`: never in the host.
#[test]
fn recursion_past_a_raised_limit_ends_at_a_limit_the_report_names() {
    let m = manifest("memory_limit_bytes = \"48MiB\"");
    for code in [
        "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1) + 1\nf(0)",
        "import sys\nsys.setrecursionlimit(10**6)\nclass A:\n    def __repr__(self):\n        return repr(self)\nrepr(A())",
        "import sys\nsys.setrecursionlimit(10**6)\na = []\nfor _ in range(10**6):\n    a = [a]\na",
    ] {
        let report = py(&m, code);
        assert!(report.outcome == Outcome::Error || report.outcome == Outcome::MemoryLimit, "{code}: {report:?}");
        let error = report.error.as_ref().unwrap();
        let named = match error.kind {
            ErrorKind::MemoryLimit => error.message.contains("memory_limit_bytes"),
            ErrorKind::Trap => error.message.starts_with("stack overflow: the interpreter's stack is exhausted"),
            ErrorKind::Exception | ErrorKind::Serialization => error.message.contains("RecursionError"),
            _ => false,
        };
        assert!(named, "{code}: {error:?}");
    }
    still_serves(Language::Python);
}

/// Allocations far past the limit (more than 32-bit WebAssembly can address, or more than the manifest allows),
/// at once or by growth, end at the limit or as an ordinary Python error; host memory stays within the limit.
///
/// Enforces: python.memory_limit_bytes
#[test]
fn ten_gigabyte_requests_and_unbounded_growth_end_at_the_memory_limit() {
    let m = manifest("memory_limit_bytes = \"64MiB\"");
    for code in [
        "'x' * 10**10",
        "b'x' * 10**10",
        "[0] * 10**10",
        "bytearray(10**10)",
        "list(range(10**9))",
        "a = []\nwhile True:\n    a.append(len(a))",
        "d = {}\nwhile True:\n    d[len(d)] = str(len(d))",
        "s = 'x'\nwhile True:\n    s = s + s",
    ] {
        let report = py(&m, code);
        let contained = report.outcome == Outcome::MemoryLimit
            || ["MemoryError", "OverflowError"].iter().any(|e| message(&report).contains(e));
        assert!(contained, "{code}: {report:?}");
        assert!(report.usage.memory_peak_bytes <= 64 << 20, "{code}: {}", report.usage.memory_peak_bytes);
        if report.outcome == Outcome::MemoryLimit {
            assert!(message(&report).contains("memory_limit_bytes"), "{code}: {report:?}");
        }
    }
    still_serves(Language::Python);
}

/// Nothing of the host's environment reaches the guest by any route: not `os.environ` or `os.environb`, not
/// `/proc/self/environ`, not the working directory or `sys` paths.
///
/// Enforces: python.env
#[test]
fn the_host_environment_is_invisible_by_every_route() {
    let host_values: Vec<String> = std::env::vars().map(|(_, v)| v).filter(|v| v.len() >= 8).collect();
    assert!(!host_values.is_empty(), "the test process has environment values to look for");
    let report = py(
        &manifest("env = { ONLY = \"granted\" }"),
        r#"
import os, sys
def attempt(f):
    try:
        return repr(f())
    except OSError as e:
        return "denied: " + type(e).__name__
blob = [
    repr(dict(os.environ)), repr(dict(os.environb)), os.getcwd(), repr(sys.argv), repr(sys.path),
    repr(sys.executable), repr(sys.prefix), repr(os.listdir("/")),
    attempt(lambda: open("/proc/self/environ", "rb").read()),
    attempt(lambda: open("/proc/1/environ", "rb").read()),
]
{"env": dict(os.environ), "blob": "\n".join(blob), "path": os.getenv("PATH"), "home": os.getenv("HOME")}
"#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value["env"], json!({"ONLY": "granted"}));
    assert_eq!((&report.value["path"], &report.value["home"]), (&json!(null), &json!(null)));
    let blob = report.value["blob"].as_str().unwrap();
    for value in &host_values {
        assert!(!blob.contains(value.as_str()), "host value {value:?} is visible to the guest: {blob}");
    }
    assert!(blob.contains("denied"), "{blob}");
    let targets: Vec<&str> = report.denials.iter().map(|d| d.target.as_str()).collect();
    assert!(targets.contains(&"/proc/self/environ"), "{:?}", report.denials);
    still_serves(Language::Python);
}

/// Every way of ending the process ends only the run, with an outcome and status that say how.
#[test]
fn exits_aborts_and_signals_end_only_the_run() {
    let m = manifest("");
    for (code, outcome, exit_code) in [
        ("import os\nprint('before', flush=True)\nos._exit(7)", Outcome::Exit, Some(7)),
        ("raise SystemExit('goodbye')", Outcome::Exit, Some(1)),
        ("import sys\nsys.exit(2**40)", Outcome::Exit, Some(1)),
        ("import os\nos.abort()", Outcome::Error, None),
        ("raise KeyboardInterrupt", Outcome::Error, None),
    ] {
        let report = py(&m, code);
        assert_eq!((report.outcome, report.exit_code), (outcome, exit_code), "{code}: {report:?}");
        if outcome == Outcome::Error {
            assert!(!message(&report).is_empty(), "{code}: {report:?}");
        }
    }
    let report = py(&m, "raise SystemExit('goodbye')");
    assert_eq!(report.stderr, "goodbye\n");
    still_serves(Language::Python);
}

/// Output written around `print` (a single huge write, `os.write` on the descriptor, the original `sys.__stdout__`,
/// stderr) is capped the same way.
///
/// Enforces: python.max_output_bytes
#[test]
fn output_written_around_print_ends_at_max_output_bytes() {
    let m = manifest("max_output_bytes = 1000");
    for (code, stream) in [
        ("print('x' * 10**7)", "stdout"),
        ("import os\nos.write(1, b'x' * 10**6)", "stdout"),
        ("import os\nwhile True:\n    os.write(2, b'y' * 4096)", "stderr"),
        ("import sys\nsys.stdout = None\nwhile True:\n    sys.__stdout__.write('z' * 4096)", "stdout"),
        ("import sys\nwhile True:\n    sys.stderr.buffer.write(b'w' * 4096)", "stderr"),
    ] {
        let report = py(&m, code);
        assert_eq!(report.outcome, Outcome::OutputLimit, "{code}: {report:?}");
        assert!(message(&report).contains("max_output_bytes"), "{code}: {report:?}");
        let captured = if stream == "stdout" { &report.stdout } else { &report.stderr };
        assert_eq!(captured.len(), 1000, "{code}: {report:?}");
    }
    still_serves(Language::Python);
}

/// `time.sleep` blocks in the host (`wasi:io/poll` on a `wasi:clocks` subscription), where the epoch deadline cannot
/// interrupt it; the subscription is cut off at the run's deadline, so a sleep past `cpu_ms` ends at `cpu_ms`.
///
/// Enforces: python.cpu_ms
#[test]
fn sleeping_past_cpu_ms_ends_at_cpu_ms() {
    let report = py(&manifest("cpu_ms = 300"), "import time\ntime.sleep(3)");
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    assert!(report.usage.wall_ms < 1000.0, "the run took {} ms", report.usage.wall_ms);
}

/// Tool calls with 2 MiB names and no tool granted: each is refused with its size, read without copying the name
/// out of guest memory, and the report stays small (it held every name whole before).
///
/// Enforces: python.report_bounds
#[test]
fn tool_calls_with_huge_names_leave_the_report_small() {
    let report = py(
        &manifest(""),
        r#"
from wasmagent import tools, ToolError
name = "n" * (2 << 20)
refused = []
for i in range(100):
    try:
        tools.call(name, {})
    except ToolError as error:
        refused.append(str(error))
[len(refused), refused[0]]
"#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{}", message(&report));
    assert_eq!(report.value[0], json!(100));
    let refused = report.value[1].as_str().unwrap();
    assert_eq!(refused, "the tool name is 2097152 bytes; the largest accepted is 256");
    let size = serde_json::to_vec(&report).unwrap().len();
    assert!(size < 2 << 20, "the report is {size} bytes");
    assert_eq!(report.usage.host_calls, 100);
    for call in &report.tool_calls {
        assert!(call.name.len() <= 300, "a {}-byte tool name was recorded", call.name.len());
    }
    for denial in &report.denials {
        assert!(denial.target.len() <= 300, "a {}-byte denial target was recorded", denial.target.len());
    }
    still_serves(Language::Python);
}

/// A result over `max_output_bytes` is refused by its size before the host parses it: here one nested deeper than
/// the host's JSON parser accepts, which parsing first turned into an internal error.
///
/// Enforces: python.max_output_bytes
#[test]
fn a_huge_result_is_refused_at_max_output_bytes_before_it_is_parsed() {
    let report = py(&manifest("max_output_bytes = 100000"), "v = 'x' * 200000\nfor _ in range(200):\n    v = [v]\nv");
    assert_eq!(report.outcome, Outcome::OutputLimit, "{}", message(&report));
    assert_eq!(report.error.as_ref().unwrap().kind, ErrorKind::OutputLimit);
    assert!(message(&report).contains("200402 bytes of JSON, more than max_output_bytes (100000)"), "{report:?}");
    assert_eq!(report.value, json!(null));
    still_serves(Language::Python);
}

/// An exception whose message is 10 MiB ends the run with the message cut, its length given.
///
/// Enforces: python.report_bounds
#[test]
fn a_ten_mebibyte_exception_message_is_cut() {
    let report = py(&manifest(""), "raise ValueError('x' * (10 << 20))");
    assert_eq!(report.outcome, Outcome::Error, "{report:?}");
    let kept = message(&report);
    assert!(kept.len() <= wasmagent::bounds::REPORT_ERROR_BYTES + 64, "a {}-byte message", kept.len());
    assert!(kept.starts_with("Traceback") || kept.contains("ValueError"), "{}", &kept[..200]);
    assert!(kept.ends_with("bytes in all]"), "{}", &kept[kept.len() - 64..]);
    still_serves(Language::Python);
}

/// A host tool that answers after minutes holds the run only until its deadline (see the JavaScript case).
///
/// Enforces: python.cpu_ms
#[test]
fn a_tool_call_past_cpu_ms_ends_the_run_at_cpu_ms() {
    let code = "from wasmagent import tools\ntools.slow()";
    let (report, elapsed) = crate::js::run_calling_the_slow_tool(Language::Python, code);
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    assert!(elapsed < std::time::Duration::from_millis(2000), "the run took {elapsed:?} with cpu_ms = 500");
    let call = &report.tool_calls[0];
    assert_eq!(call.outcome, "error", "{report:?}");
    assert!(call.error.as_deref().unwrap_or_default().contains("deadline (cpu_ms) passed"), "{report:?}");
    still_serves(Language::Python);
}
