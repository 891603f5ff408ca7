//! The js kernel through the public API: run semantics, every manifest limit, files, env, and host tools.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{manifest, sandbox};
use serde_json::json;
use std::path::Path;
use std::sync::OnceLock;
use wasmagent::{
    CapabilityManifest, EffectiveManifest, ErrorKind, Language, Outcome, RunReport, RunRequest, Sandbox, Tool,
    ToolRegistry,
};

fn js(manifest: &EffectiveManifest, code: &str) -> RunReport {
    common::run(manifest, Language::Js, "script.js", code)
}

fn ok(code: &str) -> serde_json::Value {
    common::value_of(Language::Js, "script.js", code)
}

fn error(manifest: &EffectiveManifest, code: &str) -> (ErrorKind, String) {
    common::error_of(manifest, Language::Js, "script.js", code)
}

#[test]
fn the_value_is_the_last_expression_as_json() {
    assert_eq!(ok("1 + 1"), json!(2));
    assert_eq!(ok("const xs = [1, 2, 3]; xs.map(x => x * 2)"), json!([2, 4, 6]));
    assert_eq!(ok("({a: 'b', n: null, nested: {t: true}})"), json!({"a": "b", "n": null, "nested": {"t": true}}));
    assert_eq!(ok("let x = 1;"), json!(null));
    assert_eq!(ok("undefined"), json!(null));
}

#[test]
fn promises_are_awaited_and_pending_jobs_drained() {
    assert_eq!(ok("Promise.resolve(41).then(x => x + 1)"), json!(42));
    assert_eq!(ok("(async () => { const a = await Promise.resolve(2); return a * 21; })()"), json!(42));
    let report = js(&manifest(""), "Promise.resolve().then(() => console.log('later')); 'now'");
    assert_eq!((report.value, report.stdout.as_str()), (json!("now"), "later\n"));
    let (kind, message) = error(&manifest(""), "Promise.reject(new Error('nope'))");
    assert_eq!(kind, ErrorKind::Exception);
    assert!(message.contains("nope"), "{message}");
    let (_, message) = error(&manifest(""), "new Promise(() => {})");
    assert!(message.contains("never settles"), "{message}");
}

#[test]
fn values_that_are_not_json_are_serialization_errors() {
    for code in ["(function f() {})", "Symbol('s')", "10n", "const o = {}; o.self = o; o", "({ f: () => 1 })"] {
        let (kind, message) = error(&manifest(""), code);
        assert_eq!(kind, ErrorKind::Serialization, "{code}: {message}");
    }
}

#[test]
fn uncaught_exceptions_carry_message_and_stack_and_syntax_errors_their_line() {
    let (kind, message) = error(&manifest(""), "function inner() { throw new TypeError('bad input'); }\ninner();");
    assert_eq!(kind, ErrorKind::Exception);
    assert!(message.starts_with("TypeError: bad input"), "{message}");
    assert!(message.contains("inner") && message.contains("script.js:1"), "{message}");
    let (kind, message) = error(&manifest(""), "const a = 1;\nconst b = ;\n");
    assert_eq!(kind, ErrorKind::Exception);
    assert!(message.starts_with("SyntaxError") && message.contains("script.js:2"), "{message}");
    let (_, message) = error(&manifest(""), "throw 'a string'");
    assert!(message.contains("a string"), "{message}");
}

/// Enforces: js.max_output_bytes
#[test]
fn console_goes_to_stdout_and_stderr_and_is_capped() {
    let report =
        js(&manifest(""), "console.log('out', 1, {a: [1]}); console.info('i'); console.warn('w'); console.error('e')");
    assert_eq!(report.stdout, "out 1 {\"a\":[1]}\ni\n");
    assert_eq!(report.stderr, "w\ne\n");
    let report = js(&manifest("max_output_bytes = 1000"), "for (;;) console.log('flood')");
    assert_eq!(report.outcome, Outcome::OutputLimit, "{report:?}");
    assert_eq!(report.stdout.len(), 1000);
}

/// Enforces: js.cpu_ms, js.fuel
#[test]
fn an_infinite_loop_ends_at_cpu_ms_and_with_fuel() {
    let report = js(&manifest("cpu_ms = 300"), "for (;;) {}");
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    assert!(report.usage.wall_ms < 600.0, "{}", report.usage.wall_ms);
    let report = js(&manifest("fuel = 5_000_000"), "while (true) {}");
    assert_eq!(report.outcome, Outcome::FuelExhausted, "{report:?}");
    // Catastrophic regex backtracking runs inside the engine's WebAssembly, so the same deadline stops it.
    let report = js(&manifest("cpu_ms = 300"), "/(a+)+$/.test('a'.repeat(64) + '!')");
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
}

/// Enforces: js.memory_limit_bytes
#[test]
fn memory_bombs_end_at_the_limit_and_deep_recursion_is_an_error() {
    let m = manifest("memory_limit_bytes = \"32MiB\"");
    for code in [
        "const a = []; for (;;) a.push('x'.repeat(1 << 16) + a.length)",
        "const a = []; for (let i = 0; ; i++) a.push(String(i).repeat(100000))",
        "const a = []; for (;;) a.push(new Uint8Array(1 << 20))",
    ] {
        let report = js(&m, code);
        let out_of_memory = report.outcome == Outcome::MemoryLimit
            || report.error.as_ref().is_some_and(|e| e.message.contains("out of memory"));
        assert!(out_of_memory, "{code}: {report:?}");
        assert!(report.usage.memory_peak_bytes <= 32 << 20);
    }
    let caught =
        js(&m, "try { const a = []; for (;;) a.push('y'.repeat(1 << 16) + a.length) } catch (e) { 'caught ' + e }");
    assert!(
        caught.outcome != Outcome::Ok || caught.value.as_str().is_some_and(|v| v.contains("out of memory")),
        "{caught:?}"
    );
    // Doubling a string reaches QuickJS's maximum string length (ropes make it cheap): an ordinary exception.
    let (kind, message) = error(&m, "let s = 'x'; for (;;) s = s + s");
    assert_eq!(kind, ErrorKind::Exception, "{message}");
    let (kind, message) = error(&manifest(""), "function f(n) { return f(n + 1) + 1 } f(0)");
    assert_eq!(kind, ErrorKind::Trap);
    assert!(message.starts_with("stack overflow: maximum call stack size exceeded"), "{message}");
    assert_eq!(ok("1 + 1"), json!(2), "the host keeps serving");
}

/// Enforces: js.env
#[test]
fn env_is_a_frozen_object_with_exactly_the_manifest_env() {
    let m = manifest("env = { GREETING = \"hi\", MODE = \"test\" }");
    assert_eq!(js(&m, "env").value, json!({"GREETING": "hi", "MODE": "test"}));
    assert_eq!(
        js(&m, "'use strict'; try { env.GREETING = 'x'; 'mutable' } catch (e) { 'frozen' }").value,
        json!("frozen")
    );
    assert_eq!(ok("env"), json!({}));
}

#[test]
fn there_is_no_ambient_authority() {
    assert_eq!(
        ok(
            "[typeof process, typeof require, typeof Deno, typeof std, typeof os, typeof XMLHttpRequest, typeof WebSocket]"
        ),
        json!(["undefined", "undefined", "undefined", "undefined", "undefined", "undefined", "undefined"])
    );
    // Every global that is not a standard constructor or namespace (those start with a capital letter): the
    // ECMAScript functions, QuickJS's harmless web helpers, and wasmagent's objects (`fetch` goes through the
    // host's egress policy). Nothing else.
    let names = ok("Object.getOwnPropertyNames(globalThis).filter(n => !/^[A-Z]/.test(n)).sort()");
    let expected = json!([
        "atob",
        "btoa",
        "console",
        "decodeURI",
        "decodeURIComponent",
        "display",
        "encodeURI",
        "encodeURIComponent",
        "env",
        "escape",
        "eval",
        "fetch",
        "fs",
        "globalThis",
        "isFinite",
        "isNaN",
        "parseFloat",
        "parseInt",
        "performance",
        "queueMicrotask",
        "tools",
        "undefined",
        "unescape"
    ]);
    assert_eq!(names, expected);
}

#[test]
fn no_state_is_carried_between_runs() {
    let m = manifest("");
    assert_eq!(js(&m, "globalThis.leak = 42; Object.prototype.polluted = true; leak").value, json!(42));
    assert_eq!(js(&m, "[typeof leak, ({}).polluted === undefined]").value, json!(["undefined", true]));
    let a = js(&m, "Math.random()").value;
    let b = js(&m, "Math.random()").value;
    assert_ne!(a, b, "each run reseeds Math.random");
}

/// Enforces: js.allowed_read_paths, js.allowed_write_paths
#[test]
fn fs_works_inside_the_mounts_only_and_refusals_are_reported() {
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
    let report = js(
        &m,
        r#"
        const attempt = (f) => { try { return f(); } catch (e) { return 'denied'; } };
        ({
          read: fs.readFile('/data/in.txt'),
          list: fs.readdir('/data'),
          stat: fs.stat('/data/in.txt').size,
          exists: [fs.exists('/data/in.txt'), fs.exists('/data/nope')],
          outside: attempt(() => fs.readFile('/etc/passwd')),
          climb: attempt(() => fs.readFile('/data/../secret.txt')),
          link: attempt(() => fs.readFile('/data/link')),
          readOnly: attempt(() => fs.writeFile('/data/new.txt', 'x')),
          written: (fs.writeFile('/out/result.txt', 'done'), fs.readFile('/out/result.txt')),
        })
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(
        report.value,
        json!({"read": "hello file", "list": ["in.txt", "link"], "stat": 10, "exists": [true, false],
               "outside": "denied", "climb": "denied", "link": "denied", "readOnly": "denied", "written": "done"})
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("out/result.txt")).unwrap(), "done");
    let targets: Vec<&str> = report.denials.iter().map(|d| d.target.as_str()).collect();
    for target in ["/etc/passwd", "/data/../secret.txt", "/data/link", "/data/new.txt"] {
        assert!(targets.contains(&target), "no denial for {target}: {:?}", report.denials);
    }
}

/// Enforces: js.allowed_read_paths
#[test]
fn reading_a_fifo_in_a_mount_is_refused_at_once_instead_of_blocking_the_host() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let status = std::process::Command::new("mkfifo").arg(dir.path().join("data/pipe")).status().unwrap();
    assert!(status.success());
    let m = manifest(&format!("cpu_ms = 2000\nallowed_read_paths = [\"{}/data:/data\"]", dir.path().display()));
    // Nothing ever writes to the FIFO: if the open waited for a writer, the run would never end, so it runs on a
    // thread of its own and the test fails instead of hanging.
    let (sent, received) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let code = "try { fs.readFile('/data/pipe'); 'read' } catch (e) { 'denied' }";
        let _ = sent.send(js(&m, code));
    });
    let report = received.recv_timeout(std::time::Duration::from_secs(20)).expect("the run did not end within 20 s");
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_millis(1500), "the run took {elapsed:?}");
    assert_eq!((report.outcome, report.value.clone()), (Outcome::Ok, json!("denied")), "{report:?}");
    let denial = report.denials.iter().find(|d| d.target == "/data/pipe").expect("a denial for /data/pipe");
    assert_eq!(denial.capability, "fs");
    assert!(denial.reason.contains("FIFO"), "{denial:?}");
}

/// Enforces: js.extra_capabilities
#[test]
fn granted_tools_are_called_synchronously_and_recorded() {
    let m = manifest("extra_capabilities = [\"tool:add\", \"tool:echo\", \"tool:fail\"]");
    let report =
        js(&m, "const r = tools.add({a: 2, b: 3}); [r, tools.echo({deep: {x: [1]}}), Object.keys(tools).sort()]");
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value, json!([5, {"deep": {"x": [1]}}, ["add", "echo", "fail"]]));
    assert_eq!(report.usage.host_calls, 2);
    assert_eq!(report.tool_calls.len(), 2);
    assert_eq!((report.tool_calls[0].name.as_str(), report.tool_calls[0].outcome.as_str()), ("add", "ok"));
    assert!(report.tool_calls[0].args_digest.starts_with("sha256:"));

    let report = js(&m, "try { tools.fail({}) } catch (e) { 'caught: ' + e.message }");
    assert_eq!(report.value, json!("caught: tool fail: tool failed on purpose"));
    assert_eq!(report.tool_calls[0].outcome, "error");
}

/// Enforces: js.extra_capabilities
#[test]
fn ungranted_tools_are_invisible_and_refused_by_the_host() {
    let m = manifest("extra_capabilities = [\"tool:add\"]");
    assert_eq!(js(&m, "[typeof tools.secret, typeof tools.echo]").value, json!(["undefined", "undefined"]));
    assert_eq!(ok("Object.keys(tools)"), json!([]));
}

/// Enforces: js.max_host_calls
#[test]
fn a_thousand_tool_calls_run_in_one_run_and_max_host_calls_holds() {
    let m = manifest("extra_capabilities = [\"tool:add\"]\nmax_host_calls = 1000");
    let report = js(&m, "let s = 0; for (let i = 0; i < 1000; i++) s = tools.add({a: s, b: 1}); s");
    assert_eq!(report.value, json!(1000), "{report:?}");
    assert_eq!(report.usage.host_calls, 1000);
    let report = js(
        &m,
        "let s = 0; for (let i = 0; i < 1000; i++) s = tools.add({a: s, b: 1}); try { tools.add({a: 1, b: 1}) } catch (e) { e.message }",
    );
    assert!(report.value.as_str().unwrap().contains("max_host_calls"), "{report:?}");
    assert_eq!(report.denials.iter().filter(|d| d.capability == "host_call").count(), 1);
}

/// A sandbox whose tools exercise how dotted names nest: a tool that is also a namespace (`a`, `a.b`), two tools in
/// one namespace, and parts named like the properties prototype pollution goes through. Each tool answers with
/// the name the host was called with and the arguments it received.
fn namespaced() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let mut tools = ToolRegistry::new();
        for name in
            ["a", "a.b", "github.search_issues", "github.delete_repo", "__proto__", "p.__proto__.x", "p.constructor"]
        {
            let tool = Tool::new(name, "Says who was called.", json!({"type": "object"}), move |args| {
                Ok(json!({"tool": name, "args": args}))
            });
            tools.register(tool).unwrap();
        }
        Sandbox::builder().pool_slots(4).tools(tools).build().unwrap()
    })
}

fn namespaced_js(grants: &[&str], code: &str) -> RunReport {
    let toml = format!("extra_capabilities = {}", json!(grants));
    let manifest = namespaced().resolve(&CapabilityManifest::from_toml_str(&toml).unwrap(), Path::new("/")).unwrap();
    let report = namespaced().run(&manifest, &RunRequest::source("script.js", Language::Js, code)).unwrap();
    assert_eq!(report.outcome, Outcome::Ok, "{code}: {report:?}");
    report
}

fn called(report: &RunReport) -> Vec<&str> {
    report.tool_calls.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn dotted_tool_names_are_nested_namespaces_called_by_their_full_name() {
    let m = manifest("extra_capabilities = [\"tool:add\", \"tool:github.*\"]");
    let report = js(
        &m,
        "[tools.github.search_issues({q: 'x'}), tools.add({a: 1, b: 2}), typeof tools['github.search_issues'], \
         Object.keys(tools).sort(), Object.keys(tools.github)]",
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value, json!([{"q": "x"}, 3, "undefined", ["add", "github"], ["search_issues"]]));
    assert_eq!(called(&report), ["github.search_issues", "add"], "the host sees the full name");
    assert!(report.tool_calls.iter().all(|c| c.outcome == "ok"), "{report:?}");
}

#[test]
fn tool_namespaces_are_frozen_and_have_no_prototype() {
    let m = manifest("extra_capabilities = [\"tool:github.*\"]");
    let report = js(
        &m,
        r#"
        const strict = (f) => { try { f(); return 'no error'; } catch (e) { return e.constructor.name; } };
        const ns = tools.github;
        ns.extra = 1;
        ns.search_issues = () => 'replaced';
        delete ns.search_issues;
        ({
          frozen: [Object.isFrozen(tools), Object.isFrozen(ns), Object.isFrozen(ns.search_issues)],
          assigned: typeof ns.extra,
          kept: ns.search_issues({q: 'still the tool'}),
          strictAssign: strict(() => { 'use strict'; ns.extra = 1; }),
          strictDefine: strict(() => Object.defineProperty(ns, 'extra', {value: 1})),
          reprototype: strict(() => Object.setPrototypeOf(ns, {extra: 1})),
          prototypes: [Object.getPrototypeOf(tools) === null, Object.getPrototypeOf(ns) === null],
          inherited: [typeof tools.__proto__, typeof ns.__proto__, typeof ns.constructor, typeof ns.toString, typeof ns.extra],
        })
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(
        report.value,
        json!({"frozen": [true, true, true], "assigned": "undefined", "kept": {"q": "still the tool"},
               "strictAssign": "TypeError", "strictDefine": "TypeError", "reprototype": "TypeError",
               "prototypes": [true, true],
               "inherited": ["undefined", "undefined", "undefined", "undefined", "undefined"]})
    );
}

#[test]
fn an_ungranted_tool_in_a_granted_namespace_is_absent() {
    let report = namespaced_js(
        &["tool:github.search_issues"],
        "[Object.keys(tools), Object.keys(tools.github), typeof tools.github.delete_repo, \
         tools.github.search_issues({q: 'x'})]",
    );
    assert_eq!(
        report.value,
        json!([["github"], ["search_issues"], "undefined", {"tool": "github.search_issues", "args": {"q": "x"}}])
    );
    let report = namespaced_js(&["tool:github.*"], "Object.keys(tools.github).sort()");
    assert_eq!(report.value, json!(["delete_repo", "search_issues"]));
}

#[test]
fn parts_named_proto_or_constructor_are_plain_members_and_reach_no_prototype() {
    let report = namespaced_js(
        &["tool:__proto__", "tool:p.*"],
        r#"
        ({
          top: tools.__proto__({n: 1}),
          nested: tools.p.__proto__.x({n: 2}),
          constructor: tools.p.constructor({n: 3}),
          prototypes: [tools, tools.p, tools.p.__proto__].map((o) => Object.getPrototypeOf(o) === null),
          keys: [Object.keys(tools).sort(), Object.keys(tools.p).sort()],
          clean: [typeof ({}).x, typeof Object.prototype.x, ({}).__proto__ === Object.prototype],
        })
        "#,
    );
    assert_eq!(
        report.value,
        json!({"top": {"tool": "__proto__", "args": {"n": 1}},
               "nested": {"tool": "p.__proto__.x", "args": {"n": 2}},
               "constructor": {"tool": "p.constructor", "args": {"n": 3}},
               "prototypes": [true, true, true],
               "keys": [["__proto__", "p"], ["__proto__", "constructor"]],
               "clean": ["undefined", "undefined", true]})
    );
    assert_eq!(called(&report), ["__proto__", "p.__proto__.x", "p.constructor"]);
}

#[test]
fn a_tool_that_is_also_a_namespace_is_a_function_carrying_its_members() {
    let report = namespaced_js(
        &["tool:a", "tool:a.*"],
        "[tools.a({n: 1}), tools.a.b({n: 2}), typeof tools.a, Object.isFrozen(tools.a), Object.keys(tools.a)]",
    );
    assert_eq!(
        report.value,
        json!([{"tool": "a", "args": {"n": 1}}, {"tool": "a.b", "args": {"n": 2}}, "function", true, ["b"]])
    );
    assert_eq!(called(&report), ["a", "a.b"]);
    let report = namespaced_js(&["tool:a.b"], "[typeof tools.a, tools.a.b({})]");
    assert_eq!(report.value, json!(["object", {"tool": "a.b", "args": {}}]), "only the namespace is granted");
    let report = namespaced_js(&["tool:a"], "[typeof tools.a, typeof tools.a.b]");
    assert_eq!(report.value, json!(["function", "undefined"]), "only the tool is granted");
}

#[test]
fn constructor_chains_reach_only_the_sandbox_global_and_guards_cannot_be_replaced() {
    let m = manifest("extra_capabilities = [\"tool:echo\"]");
    let report = js(
        &m,
        r#"
        const g = [].constructor.constructor('return this')();
        const AsyncFunction = (async () => {}).constructor;
        const GeneratorFunction = (function* () {}).constructor;
        const attempts = [];
        for (const name of ['tools', 'env', 'console', 'fs']) {
          try { globalThis[name] = null; } catch (e) {}
          try { delete globalThis[name]; } catch (e) {}
          attempts.push(typeof globalThis[name]);
        }
        ({
          same: g === globalThis,
          process: typeof g.process,
          asyncFn: typeof AsyncFunction('return 1'),
          generator: typeof GeneratorFunction('yield 1'),
          guards: attempts,
          echo: tools.echo({__proto__: {polluted: true}, ok: 1}),
          clean: ({}).polluted === undefined,
        })
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(
        report.value,
        json!({"same": true, "process": "undefined", "asyncFn": "function", "generator": "function",
               "guards": ["object", "object", "object", "object"], "echo": {"ok": 1}, "clean": true})
    );
}

#[test]
fn oversized_scripts_are_refused_before_anything_runs() {
    let huge = "1;".repeat(33 * 1024 * 1024);
    let result = sandbox().run(&manifest(""), &RunRequest::source("big.js", Language::Js, huge));
    assert!(matches!(result, Err(wasmagent::Error::Kernel(wasmagent::KernelError::InvalidCode(_)))), "{result:?}");
}

/// Refuses: js.require_signature
#[test]
fn fields_the_js_kernel_cannot_enforce_are_refused_before_anything_runs() {
    let key = format!("ed25519:{}", "11".repeat(32));
    let toml = format!("trusted_keys = [\"{key}\"]\nrequire_signature = true");
    let result = sandbox().run(&manifest(&toml), &RunRequest::source("s.js", Language::Js, "1"));
    match result {
        Err(wasmagent::Error::Kernel(wasmagent::KernelError::Unsupported { field, .. })) => {
            assert_eq!(field, "require_signature")
        }
        other => panic!("expected a configuration-time refusal, got {other:?}"),
    }
}
