//! The python kernel through the public API: run semantics, the standard library, every manifest limit, files,
//! env, host tools, and the escape hatches other Python sandboxes leave open.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{manifest, sandbox};
use serde_json::json;
use wasmagent::{EffectiveManifest, ErrorKind, Language, Outcome, RunReport, RunRequest};

fn py(manifest: &EffectiveManifest, code: &str) -> RunReport {
    common::run(manifest, Language::Python, "script.py", code)
}

fn ok(code: &str) -> serde_json::Value {
    common::value_of(Language::Python, "script.py", code)
}

fn error(manifest: &EffectiveManifest, code: &str) -> (ErrorKind, String) {
    common::error_of(manifest, Language::Python, "script.py", code)
}

#[test]
fn the_value_is_the_final_expression_as_json() {
    assert_eq!(ok("1 + 1"), json!(2));
    assert_eq!(ok("xs = [1, 2, 3]\n[x * 2 for x in xs]"), json!([2, 4, 6]));
    assert_eq!(
        ok("{'a': 'b', 'n': None, 'nested': {'t': True}, 't': (1, 2.5)}"),
        json!({"a": "b", "n": null, "nested": {"t": true}, "t": [1, 2.5]})
    );
    assert_eq!(ok("x = 1"), json!(null));
    assert_eq!(ok("def f():\n    return 3\nf()"), json!(3));
    assert_eq!(ok("if True:\n    5"), json!(null), "only a top-level final expression is the value");
    assert_eq!(ok(""), json!(null));
}

#[test]
fn values_that_are_not_json_are_serialization_errors() {
    for code in ["object()", "lambda: 1", "{1, 2}", "float('nan')", "l = []\nl.append(l)\nl", "b'bytes'"] {
        let (kind, message) = error(&manifest(""), code);
        assert_eq!(kind, ErrorKind::Serialization, "{code}: {message}");
    }
}

#[test]
fn uncaught_exceptions_carry_the_traceback_with_line_numbers() {
    let (kind, message) = error(&manifest(""), "def inner():\n    raise ValueError('bad input')\n\ninner()\n");
    assert_eq!(kind, ErrorKind::Exception);
    assert!(message.starts_with("Traceback (most recent call last):"), "{message}");
    assert!(message.contains("File \"script.py\", line 4") && message.contains("line 2, in inner"), "{message}");
    assert!(message.contains("raise ValueError('bad input')"), "source lines are shown: {message}");
    assert!(message.ends_with("ValueError: bad input"), "{message}");
    assert!(!message.contains("runner.py"), "the engine's own frames are hidden: {message}");
    let (kind, message) = error(&manifest(""), "a = 1\nb = = 2\n");
    assert_eq!(kind, ErrorKind::Exception);
    assert!(message.contains("SyntaxError") && message.contains("line 2"), "{message}");
}

#[test]
fn print_and_stderr_are_captured_and_capped() {
    let report = py(&manifest(""), "import sys\nprint('out', 1, [1])\nprint('err', file=sys.stderr)\n'v'");
    assert_eq!((report.stdout.as_str(), report.stderr.as_str()), ("out 1 [1]\n", "err\n"));
    assert_eq!(report.value, json!("v"));
}

/// Enforces: python.max_output_bytes
#[test]
fn a_flood_of_output_ends_at_max_output_bytes() {
    let report = py(&manifest("max_output_bytes = 1000"), "while True:\n    print('flood')");
    assert_eq!(report.outcome, Outcome::OutputLimit, "{report:?}");
    assert_eq!(report.stdout.len(), 1000);
    let report = py(&manifest("max_output_bytes = 1000"), "'x' * 5000");
    assert_eq!(report.outcome, Outcome::OutputLimit, "a result value is capped too: {report:?}");
}

#[test]
fn sys_exit_is_an_exit_status() {
    let report = py(&manifest(""), "import sys\nprint('bye')\nsys.exit(3)");
    assert_eq!((report.outcome, report.exit_code, report.stdout.as_str()), (Outcome::Exit, Some(3), "bye\n"));
    let report = py(&manifest(""), "import sys\nsys.exit()");
    assert_eq!((report.outcome, report.exit_code), (Outcome::Exit, Some(0)));
    assert!(report.succeeded());
    let report = py(&manifest(""), "import os\nos._exit(0)");
    assert_eq!((report.outcome, report.exit_code), (Outcome::Exit, Some(0)), "{report:?}");
}

#[test]
fn the_standard_library_works() {
    let value = ok(r#"
import json, re, math, datetime, collections, itertools, functools, statistics, decimal, fractions, csv, io
import textwrap, dataclasses, typing, hashlib, base64, heapq, bisect, string, random, uuid, operator, asyncio
import pathlib

async def twice(x):
    await asyncio.sleep(0)
    await asyncio.sleep(0.001)
    return x * 2

@dataclasses.dataclass
class Point:
    x: int
    y: int

rows = list(csv.reader(io.StringIO("a,b\n1,2\n")))
{
    "json": json.loads('{"k": [1, 2]}'),
    "re": re.findall(r"\d+", "a1b22c333"),
    "math": math.isqrt(17),
    "date": datetime.date(2026, 11, 29).isoformat(),
    "counter": collections.Counter("abca").most_common(1),
    "perms": len(list(itertools.permutations(range(4)))),
    "reduce": functools.reduce(operator.mul, range(1, 6)),
    "mean": statistics.mean([1, 2, 3, 4]),
    "decimal": str(decimal.Decimal("0.1") + decimal.Decimal("0.2")),
    "fraction": str(fractions.Fraction(1, 3) + fractions.Fraction(1, 6)),
    "csv": rows,
    "wrap": textwrap.wrap("aaa bbb ccc", 7),
    "point": dataclasses.asdict(Point(1, 2)),
    "sha": hashlib.sha256(b"x").hexdigest()[:8],
    "b64": base64.b64encode(b"hi").decode(),
    "heap": heapq.nsmallest(2, [5, 1, 4]),
    "uuid": len(str(uuid.uuid4())),
    "random": 0 <= random.random() < 1,
    "asyncio": asyncio.run(twice(21)),
    "pathlib": pathlib.PurePosixPath("/a/b.txt").suffix,
}
"#);
    assert_eq!(
        value,
        json!({"json": {"k": [1, 2]}, "re": ["1", "22", "333"], "math": 4, "date": "2026-11-29",
               "counter": [["a", 2]], "perms": 24, "reduce": 120, "mean": 2.5, "decimal": "0.3", "fraction": "1/2",
               "csv": [["a", "b"], ["1", "2"]], "wrap": ["aaa bbb", "ccc"], "point": {"x": 1, "y": 2},
               "sha": "2d711642", "b64": "aGk=", "heap": [1, 4], "uuid": 36, "random": true, "asyncio": 42,
               "pathlib": ".txt"})
    );
    let (kind, message) = error(&manifest(""), "import numpy");
    assert_eq!(kind, ErrorKind::Exception);
    assert!(message.contains("ModuleNotFoundError: No module named 'numpy'"), "{message}");
    assert!(report_has_no_denials("import numpy"), "a missing module is not a filesystem access");
}

fn report_has_no_denials(code: &str) -> bool {
    py(&manifest(""), code).denials.is_empty()
}

#[test]
fn escape_hatches_fail_with_a_clear_error() {
    for module in ["js", "pyodide", "ctypes", "subprocess", "socket", "multiprocessing", "_socket", "pyodide.ffi"] {
        let report = py(&manifest(""), &format!("import {module}"));
        let message = report.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
        assert!(message.contains("ImportError"), "import {module}: {report:?}");
        assert!(message.contains("not available in the wasmagent sandbox"), "import {module}: {message}");
    }
    let value = ok(r#"
import os
def attempt(f):
    try:
        f()
        return "ran"
    except Exception as e:
        return type(e).__name__
[hasattr(os, "fork"), hasattr(os, "system") and attempt(lambda: os.system("id")), attempt(lambda: os.execv("/bin/sh", ["sh"]))]
"#);
    assert_eq!(value[0], json!(false), "no os.fork");
    assert_ne!(value[1], json!("ran"), "os.system never runs anything: {value}");
    assert_ne!(value[2], json!("ran"), "os.execv never runs anything: {value}");
}

/// Enforces: python.cpu_ms, python.fuel
#[test]
fn an_infinite_loop_ends_at_cpu_ms_and_with_fuel() {
    let report = py(&manifest("cpu_ms = 300"), "while True:\n    pass");
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    assert!(report.usage.wall_ms < 800.0, "{}", report.usage.wall_ms);
    let report = py(&manifest("fuel = 20_000_000"), "while True:\n    pass");
    assert_eq!(report.outcome, Outcome::FuelExhausted, "{report:?}");
    let report = py(&manifest("cpu_ms = 300"), "import re\nre.match(r'(a+)+$', 'a' * 64 + '!')");
    assert_eq!(report.outcome, Outcome::Timeout, "regex backtracking is bounded too: {report:?}");
}

/// Enforces: python.memory_limit_bytes
#[test]
fn memory_bombs_end_at_the_limit_and_deep_recursion_is_an_error() {
    let m = manifest("memory_limit_bytes = \"64MiB\"");
    for code in ["'x' * 10**9", "a = []\nwhile True:\n    a.append('x' * 65536 + str(len(a)))", "bytearray(1 << 30)"] {
        let report = py(&m, code);
        let out_of_memory = report.outcome == Outcome::MemoryLimit
            || report.error.as_ref().is_some_and(|e| e.message.contains("MemoryError"));
        assert!(out_of_memory, "{code}: {report:?}");
        assert!(report.usage.memory_peak_bytes <= 64 << 20);
    }
    let (kind, message) = error(&manifest(""), "def f(n):\n    return f(n + 1) + 1\nf(0)");
    assert_eq!(kind, ErrorKind::Exception);
    assert!(message.contains("RecursionError"), "{message}");
    let report =
        py(&manifest(""), "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1) + 1\nf(0)");
    assert!(report.outcome != Outcome::Ok, "{report:?}");
    assert_eq!(ok("1 + 1"), json!(2), "the host keeps serving");
}

/// Enforces: python.env
#[test]
fn os_environ_holds_exactly_the_manifest_env_and_argv_the_request() {
    let m = manifest("env = { GREETING = \"hi\", MODE = \"test\" }");
    assert_eq!(py(&m, "import os\ndict(os.environ)").value, json!({"GREETING": "hi", "MODE": "test"}));
    assert_eq!(py(&m, "import os\nos.getenv('GREETING')").value, json!("hi"));
    assert_eq!(ok("import os\ndict(os.environ)"), json!({}));
    let request = RunRequest::source("tool.py", Language::Python, "import sys\nsys.argv").with_args(["--flag", "x"]);
    assert_eq!(sandbox().run(&manifest(""), &request).unwrap().value, json!(["tool.py", "--flag", "x"]));
}

#[test]
fn no_state_is_carried_between_runs() {
    let m = manifest("");
    let first = py(&m, "import builtins, sys, json\nbuiltins.leak = 42\nsys.modules['json'].poisoned = True\nleak");
    assert_eq!(first.value, json!(42));
    let second = py(&m, "import builtins, json\n[hasattr(builtins, 'leak'), hasattr(json, 'poisoned')]");
    assert_eq!(second.value, json!([false, false]));
    let a = py(&m, "import random\nrandom.random()").value;
    let b = py(&m, "import random\nrandom.random()").value;
    assert_ne!(a, b, "each run reseeds random");
    // The engine's build ran warm-up programs before its snapshot was taken: none of them is visible to a run.
    assert_eq!(
        ok("import linecache, sys\n[sorted(linecache.cache), hasattr(sys, 'last_exc'), 'x' in globals()]"),
        json!([["script.py"], false, false])
    );
}

/// Enforces: python.allowed_read_paths, python.allowed_write_paths
#[test]
fn files_work_inside_the_mounts_only_and_refusals_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("data/in.txt"), "hello file").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("../secret.txt", dir.path().join("data/link")).unwrap();
    let m = manifest(&format!(
        "allowed_read_paths = [\"{0}/data:/data\"]\nallowed_write_paths = [\"{0}/out:/out\"]",
        dir.path().display()
    ));
    let report = py(
        &m,
        r#"
import os, pathlib
def attempt(f):
    try:
        f()
        return "allowed"
    except OSError:
        return "denied"
def write(path):
    with open(path, "w") as f:
        f.write("x")
pathlib.Path("/out/result.txt").write_text("done")
{
    "read": open("/data/in.txt").read(),
    "list": sorted(os.listdir("/data")),
    "size": pathlib.Path("/data/in.txt").stat().st_size,
    "outside": attempt(lambda: open("/etc/passwd").read()),
    "climb": attempt(lambda: open("/data/../secret.txt").read()),
    "link": attempt(lambda: open("/data/link").read()),
    "read_only": attempt(lambda: write("/data/new.txt")),
    "written": pathlib.Path("/out/result.txt").read_text(),
}
"#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(
        report.value,
        json!({"read": "hello file", "list": ["in.txt", "link"], "size": 10, "outside": "denied",
               "climb": "denied", "link": "denied", "read_only": "denied", "written": "done"})
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("out/result.txt")).unwrap(), "done");
    assert!(!dir.path().join("data/new.txt").exists());
    let targets: Vec<&str> = report.denials.iter().map(|d| d.target.as_str()).collect();
    for target in ["/etc/passwd", "/data/link", "/data/new.txt"] {
        assert!(targets.iter().any(|t| t.ends_with(target)), "no denial for {target}: {:?}", report.denials);
    }
}

/// Enforces: python.extra_capabilities
#[test]
fn granted_tools_are_called_synchronously_and_recorded() {
    let m = manifest("extra_capabilities = [\"tool:add\", \"tool:echo\", \"tool:fail\", \"tool:github.*\"]");
    let report = py(
        &m,
        "from wasmagent import tools\n[tools.add(a=2, b=3), tools.call('echo', {'deep': {'x': [1]}}), \
         tools.github.search_issues(q='bug')]",
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value, json!([5.0, {"deep": {"x": [1]}}, {"q": "bug"}]));
    assert_eq!(report.usage.host_calls, 3);
    let names: Vec<&str> = report.tool_calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["add", "echo", "github.search_issues"]);
    assert!(report.tool_calls.iter().all(|c| c.outcome == "ok" && c.args_digest.starts_with("sha256:")));

    let report = py(
        &m,
        "from wasmagent import tools, ToolError\ntry:\n    tools.fail()\nexcept ToolError as e:\n    r = 'caught: ' + str(e)\nr",
    );
    assert_eq!(report.value, json!("caught: tool failed on purpose"));
    assert_eq!(report.tool_calls[0].outcome, "error");
}

/// Enforces: python.extra_capabilities
#[test]
fn ungranted_tools_are_refused_by_the_host_and_reported() {
    let m = manifest("extra_capabilities = [\"tool:add\"]");
    let report = py(
        &m,
        "from wasmagent import tools, ToolError\ntry:\n    tools.secret()\nexcept ToolError as e:\n    r = str(e)\nr",
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert!(report.value.as_str().unwrap().contains("not granted"), "{report:?}");
    assert_eq!(report.tool_calls[0].outcome, "denied");
    assert_eq!((report.denials[0].capability.as_str(), report.denials[0].target.as_str()), ("tool", "secret"));
    let (kind, message) = error(&m, "from wasmagent import tools\ntools.secret()");
    assert_eq!(kind, ErrorKind::Exception);
    assert!(message.contains("ToolError"), "an uncaught refusal is an exception: {message}");
}

/// Enforces: python.max_host_calls
#[test]
fn a_thousand_tool_calls_run_in_one_run_and_max_host_calls_holds() {
    let m = manifest("extra_capabilities = [\"tool:add\"]\nmax_host_calls = 1000");
    let report = py(&m, "from wasmagent import tools\ns = 0\nfor i in range(1000):\n    s = tools.add(a=s, b=1)\ns");
    assert_eq!(report.value, json!(1000.0), "{report:?}");
    assert_eq!(report.usage.host_calls, 1000);
    let report = py(
        &m,
        "from wasmagent import tools, ToolError\nfor i in range(1000):\n    tools.add(a=1, b=1)\ntry:\n    tools.add(a=1, b=1)\nexcept ToolError as e:\n    r = str(e)\nr",
    );
    assert!(report.value.as_str().unwrap().contains("max_host_calls"), "{report:?}");
    assert_eq!(report.denials.iter().filter(|d| d.capability == "host_call").count(), 1);
}

#[test]
fn oversized_scripts_are_refused_before_anything_runs() {
    let huge = "1\n".repeat(33 * 1024 * 1024);
    let result = sandbox().run(&manifest(""), &RunRequest::source("big.py", Language::Python, huge));
    assert!(matches!(result, Err(wasmagent::Error::Kernel(wasmagent::KernelError::InvalidCode(_)))), "{result:?}");
}

/// Refuses: python.require_signature
#[test]
fn fields_the_python_kernel_cannot_enforce_are_refused_before_anything_runs() {
    let key = format!("ed25519:{}", "11".repeat(32));
    let toml = format!("trusted_keys = [\"{key}\"]\nrequire_signature = true");
    let result = sandbox().run(&manifest(&toml), &RunRequest::source("s.py", Language::Python, "1"));
    match result {
        Err(wasmagent::Error::Kernel(wasmagent::KernelError::Unsupported { field, .. })) => {
            assert_eq!(field, "require_signature")
        }
        other => panic!("expected a configuration-time refusal, got {other:?}"),
    }
}
