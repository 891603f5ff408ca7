//! JavaScript (QuickJS compiled to WebAssembly) trying to reach the host or wear it down.
//!
//! Proven in `js_kernel.rs` and not repeated: `[].constructor.constructor('return this')()`, deleting or nulling
//! `tools`, `env`, `console` and `fs`, regular-expression backtracking (`cpu_ms`), endless loops (`cpu_ms`, `fuel`),
//! string, array and typed-array push bombs (`memory_limit_bytes`), runaway recursion, a `console.log` flood
//! (`max_output_bytes`), a thousand tool calls and `max_host_calls`, results that are functions, symbols, BigInts
//! or cyclic, and the lower-case global names.

use crate::common::{self, manifest};
use crate::{message, still_serves};
use serde_json::json;
use wasmagent::{EffectiveManifest, ErrorKind, Language, Outcome, RunReport};

fn js(manifest: &EffectiveManifest, code: &str) -> RunReport {
    common::run(manifest, Language::Js, "attack.js", code)
}

/// Every way of asking a function constructor for "the global object" gives the sandbox's own global, and no module
/// loader exists to import host modules from.
#[test]
fn function_constructors_of_every_kind_reach_only_the_sandbox_global() {
    let report = js(
        &manifest(""),
        r#"
        const AsyncFunction = (async () => {}).constructor;
        const GeneratorFunction = (function* () {}).constructor;
        const AsyncGeneratorFunction = (async function* () {}).constructor;
        const hostNames = ['process', 'require', 'module', 'std', 'os', 'Deno', 'Bun', 'global', 'wasmagent_run'];
        (async () => {
          const globals = [
            Function('return this')(),
            [].constructor.constructor('return this')(),
            await AsyncFunction('return this')(),
            GeneratorFunction('return this')().next().value,
            (await AsyncGeneratorFunction('return this')().next()).value,
            (0, eval)('this'),
            Reflect.construct(Function, ['return globalThis'])(),
            Object.getPrototypeOf(AsyncGeneratorFunction).constructor('return this')(),
          ];
          const imports = [];
          for (const name of ['os', 'std', 'fs', '/etc/passwd']) {
            try { await import(name); imports.push(name + ': loaded'); } catch (e) { imports.push(String(e)); }
          }
          return {
            same: globals.map((g) => g === globalThis),
            host: globals.flatMap((g) => hostNames.filter((n) => n in g)),
            imports,
          };
        })()
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value["same"], json!([true, true, true, true, true, true, true, true]), "{report:?}");
    assert_eq!(report.value["host"], json!([]), "no host object on any global: {report:?}");
    for (name, outcome) in ["os", "std", "fs", "/etc/passwd"].iter().zip(report.value["imports"].as_array().unwrap()) {
        let outcome = outcome.as_str().unwrap();
        assert!(!outcome.ends_with("loaded"), "import({name}) must fail: {outcome}");
        assert!(outcome.contains("could not load module"), "import({name}): {outcome}");
    }
    assert!(report.denials.is_empty(), "imports never touch the filesystem: {report:?}");
    still_serves(Language::Js);
}

/// Every property name on the global object and up its prototype chain (strings and symbols) is a standard
/// ECMAScript or QuickJS name or one of wasmagent's documented objects, whose own members are pinned too; and no
/// object reachable from the global carries the engine bridge's native functions.
#[test]
fn the_global_object_and_its_prototype_chain_hold_only_allow_listed_names() {
    let report = js(
        &manifest("extra_capabilities = [\"tool:echo\"]"),
        r#"
        const names = new Set();
        for (let o = globalThis; o !== null; o = Object.getPrototypeOf(o)) {
          for (const k of Object.getOwnPropertyNames(o)) names.add(k);
          for (const k of Reflect.ownKeys(o)) names.add(typeof k === 'symbol' ? k.toString() : k);
        }
        const members = {};
        for (const name of ['console', 'fs', 'env', 'tools', 'performance', 'display']) {
          members[name] = Reflect.ownKeys(globalThis[name]).map(String).sort();
        }
        // Walk everything reachable through data properties and prototypes, never calling a getter.
        const seen = new Set(), queue = [globalThis], everywhere = new Set();
        while (queue.length) {
          const o = queue.pop();
          if ((typeof o !== 'object' && typeof o !== 'function') || o === null || seen.has(o)) continue;
          seen.add(o);
          queue.push(Object.getPrototypeOf(o));
          for (const k of Reflect.ownKeys(o)) {
            everywhere.add(String(k));
            const d = Object.getOwnPropertyDescriptor(o, k);
            if (d && 'value' in d) queue.push(d.value);
          }
        }
        const bridge = ['toolCall', 'httpFetch', 'fsRead', 'fsWrite', 'fsReaddir', 'fsStat', 'fsExists', 'utf8',
                        'serialize', 'setup', 'wasmagent_run', 'wasmagent_alloc', 'tool_call', 'http_request',
                        'artifact'];
        ({ names: [...names].sort(), members, bridge: bridge.filter((n) => everywhere.has(n)), objects: seen.size })
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    let names: Vec<&str> = report.value["names"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let unexpected: Vec<&str> = names.iter().copied().filter(|n| !GLOBAL_ALLOW_LIST.contains(n)).collect();
    assert!(unexpected.is_empty(), "names on the global chain outside the allow-list: {unexpected:?}");
    for name in
        ["console", "env", "fetch", "fs", "tools", "display", "Headers", "Response", "Object", "JSON", "__proto__"]
    {
        assert!(names.contains(&name), "{name} is missing from {names:?}");
    }
    assert_eq!(
        report.value["members"],
        json!({
            "console": ["debug", "error", "info", "log", "warn"],
            "fs": ["exists", "readFile", "readdir", "stat", "writeFile"],
            "env": [],
            "tools": ["echo"],
            "performance": ["now", "timeOrigin"],
            "display": ["html", "image", "json", "markdown", "svg", "table"],
        })
    );
    assert_eq!(report.value["bridge"], json!([]), "the bridge's natives are reachable: {report:?}");
    assert!(report.value["objects"].as_u64().unwrap() > 100, "the walk reached the built-ins: {report:?}");
    still_serves(Language::Js);
}

/// Every name on the global object and `Object.prototype` today: standard ECMAScript, QuickJS's helpers, and
/// wasmagent's own (`console`, `env`, `fetch`, `fs`, `tools`, `display`, `Headers`, `Response`). A new name fails
/// the test until it is reviewed and added here.
const GLOBAL_ALLOW_LIST: &[&str] = &[
    // wasmagent's own
    "console",
    "env",
    "fetch",
    "fs",
    "tools",
    "display",
    "Headers",
    "Response",
    // QuickJS's web helpers and its own error class
    "atob",
    "btoa",
    "performance",
    "queueMicrotask",
    "DOMException",
    "InternalError",
    // ECMAScript values and functions
    "globalThis",
    "undefined",
    "NaN",
    "Infinity",
    "eval",
    "isFinite",
    "isNaN",
    "parseFloat",
    "parseInt",
    "decodeURI",
    "decodeURIComponent",
    "encodeURI",
    "encodeURIComponent",
    "escape",
    "unescape",
    // ECMAScript constructors and namespaces
    "AggregateError",
    "Array",
    "ArrayBuffer",
    "AsyncDisposableStack",
    "BigInt",
    "BigInt64Array",
    "BigUint64Array",
    "Boolean",
    "DataView",
    "Date",
    "DisposableStack",
    "Error",
    "EvalError",
    "FinalizationRegistry",
    "Float16Array",
    "Float32Array",
    "Float64Array",
    "Function",
    "Int16Array",
    "Int32Array",
    "Int8Array",
    "Iterator",
    "JSON",
    "Map",
    "Math",
    "Number",
    "Object",
    "Promise",
    "Proxy",
    "RangeError",
    "ReferenceError",
    "Reflect",
    "RegExp",
    "Set",
    "SharedArrayBuffer",
    "String",
    "SuppressedError",
    "Symbol",
    "Symbol(Symbol.toStringTag)",
    "SyntaxError",
    "TypeError",
    "URIError",
    "Uint16Array",
    "Uint32Array",
    "Uint8Array",
    "Uint8ClampedArray",
    "WeakMap",
    "WeakRef",
    "WeakSet",
    // Object.prototype
    "__proto__",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
    "constructor",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toLocaleString",
    "toString",
    "valueOf",
];

/// `Error.prepareStackTrace` hands guest code the function of every frame on the stack, including frames of the
/// engine's own glue and of the host's serialization of the result. Captured from inside every path into the
/// bridge (tools, files, console, fetch) and from the host's final serialization, the only native functions it
/// reveals are built-ins already reachable from the global object, never the bridge's; frames name no host path.
#[test]
fn stack_traces_reveal_no_function_beyond_the_built_ins_and_the_glue() {
    let report = js(
        &manifest("extra_capabilities = [\"tool:fail\"]"),
        r#"
        const reachable = new Set(), queue = [globalThis];
        while (queue.length) {
          const o = queue.pop();
          if ((typeof o !== 'object' && typeof o !== 'function') || o === null || reachable.has(o)) continue;
          reachable.add(o);
          queue.push(Object.getPrototypeOf(o));
          for (const k of Reflect.ownKeys(o)) {
            const d = Object.getOwnPropertyDescriptor(o, k);
            queue.push(d.value, d.get, d.set);
          }
        }
        Error.prepareStackTrace = (error, sites) => sites;
        const sites = [];
        const capture = () => { sites.push(...new Error().stack); };
        const attempt = (f) => { try { f(); } catch (e) { if (Array.isArray(e.stack)) sites.push(...e.stack); } };
        attempt(() => tools.fail({}));
        attempt(() => tools.fail({ toJSON() { capture(); return {}; } }));
        attempt(() => fs.readFile({ toString() { capture(); return '/nowhere'; } }));
        attempt(() => console.log({ toJSON() { capture(); return 1; } }));
        fetch({ get url() { capture(); return 'http://example.org/'; } }).catch(() => {});
        const describe = (s) => ({
          native: s.isNative(),
          builtIn: reachable.has(s.getFunction()),
          file: String(s.getFileName()),
          name: String(s.getFunctionName()),
        });
        // The value is serialized by the host's glue: capture once more from inside that.
        ({ toJSON() { capture(); return sites.map(describe); } })
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    let sites = report.value.as_array().unwrap();
    let named = |name: &str| sites.iter().any(|s| s["name"] == name && s["file"] == "eval_script");
    assert!(named("readFile") && named("fetch") && named("serialize"), "the glue's frames are captured: {sites:?}");
    for site in sites {
        if site["native"] == true {
            assert_eq!(site["builtIn"], true, "a native function outside the built-ins: {site}");
        } else {
            assert!(site["file"] == "attack.js" || site["file"] == "eval_script", "{site}");
        }
    }
    let mut denied: Vec<&str> = report.denials.iter().map(|d| d.target.as_str()).collect();
    denied.sort();
    assert_eq!(denied, ["/nowhere", "http://example.org/"], "only what the script asked for: {:?}", report.denials);
    still_serves(Language::Js);
}

/// The kernel reads an uncaught error's `name`, `message` and `stack` to report it, which can run guest code: a
/// getter that never returns ends at `cpu_ms`, one that throws or a thrown non-Error still gives a clear error.
#[test]
fn hostile_errors_thrown_to_the_host_end_with_a_clear_outcome() {
    let m = manifest("cpu_ms = 300");
    let report =
        js(&m, "const e = new Error('boom'); Object.defineProperty(e, 'stack', { get() { for (;;) {} } }); throw e");
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    assert!(message(&report).contains("cpu_ms"), "{report:?}");

    for (code, expected) in [
        ("Error.prepareStackTrace = () => ({ toString() { throw 1 } }); throw new Error('boom')", "boom"),
        ("Error.prepareStackTrace = () => { throw new Error('inner') }; throw new Error('boom')", "boom"),
        ("const e = new Error('boom'); Object.defineProperty(e, 'name', { get() { throw 1 } }); throw e", "boom"),
        ("throw new Proxy({}, { get() { throw new Error('trap') } })", "a non-Error value was thrown"),
        ("throw { toString() { return 'custom' } }", "uncaught: custom"),
        ("throw Symbol('s')", "uncaught"),
    ] {
        let (kind, message) = common::error_of(&m, Language::Js, "attack.js", code);
        assert_eq!(kind, ErrorKind::Exception, "{code}: {message}");
        assert!(message.contains(expected), "{code}: {message}");
    }
    still_serves(Language::Js);
}

/// Replacing `fetch`, `Headers`, `Response` or the built-ins the guard code uses changes nothing the host decides:
/// the guards stay, and a request the manifest does not allow is refused and reported all the same.
#[test]
fn sabotaged_guards_and_built_ins_cannot_skip_the_host_checks() {
    let report = js(
        &manifest("extra_capabilities = [\"tool:echo\"]"),
        r#"
        const original = fetch;
        const kept = [];
        for (const name of ['fetch', 'Headers', 'Response', 'tools', 'env']) {
          try { globalThis[name] = () => 'forged'; } catch (e) {}
          try { delete globalThis[name]; } catch (e) {}
          try { Object.defineProperty(globalThis, name, { value: 'forged' }); } catch (e) {}
          kept.push(typeof globalThis[name] !== 'string' && globalThis[name] !== undefined);
        }
        try { tools.secret = () => 'forged'; } catch (e) {}
        try { Object.defineProperty(tools, 'echo', { value: () => 'forged' }); } catch (e) {}
        JSON.stringify = () => '{"url": "http://example.org/"}';
        JSON.parse = () => ({ forged: true });
        String.prototype.toLowerCase = () => 'x';
        Array.prototype.filter = () => [];
        Array.isArray = () => { throw new Error('sabotaged'); };
        Object.entries = () => { throw new Error('sabotaged'); };
        (async () => {
          let fetched;
          try { await fetch('http://169.254.169.254/latest/meta-data/'); fetched = 'reached'; }
          catch (e) { fetched = e.message; }
          return { kept, same: fetch === original, fetched, echo: tools.echo({ a: 1 }), secret: typeof tools.secret };
        })()
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value["kept"], json!([true, true, true, true, true]), "{report:?}");
    assert_eq!(report.value["same"], json!(true));
    assert_eq!(report.value["echo"], json!({"a": 1}), "tool results are parsed by the guard's own JSON: {report:?}");
    assert_eq!(report.value["secret"], json!("undefined"));
    let fetched = report.value["fetched"].as_str().unwrap();
    assert!(fetched.contains("refused") && fetched.contains("allowed_hosts"), "{fetched}");
    let denial = report.denials.iter().find(|d| d.capability == "net.http").expect("a network denial");
    assert!(denial.target.starts_with("http://169.254.169.254/"), "{denial:?}");
    assert_eq!(report.http_requests.len(), 1);
    assert_eq!(report.http_requests[0].outcome, "denied");
    still_serves(Language::Js);
}

/// A tool result carrying `__proto__` or `constructor.prototype` keys becomes ordinary own properties of the parsed
/// result; `Object.prototype` stays clean in this run and the next.
#[test]
fn prototype_pollution_through_a_tool_result_stays_inside_the_result() {
    let m = manifest("extra_capabilities = [\"tool:echo\"]");
    let report = js(
        &m,
        r#"
        const payload = JSON.parse('{"__proto__": {"polluted": 1}, "constructor": {"prototype": {"polluted": 2}}}');
        const r = tools.echo(payload);
        ({
          own: Object.keys(r).sort(),
          protoIsObject: Object.getPrototypeOf(r) === Object.prototype,
          polluted: [({}).polluted, Object.prototype.polluted, [].polluted, r.polluted],
          hasOwn: Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'),
        })
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(
        report.value,
        json!({"own": ["__proto__", "constructor"], "protoIsObject": true, "polluted": [null, null, null, null],
               "hasOwn": false})
    );
    assert_eq!(report.tool_calls.len(), 1);
    assert_eq!(report.tool_calls[0].outcome, "ok");
    let next = js(&m, "[({}).polluted === undefined, Object.prototype.hasOwnProperty('polluted')]");
    assert_eq!(next.value, json!([true, false]), "{next:?}");
    still_serves(Language::Js);
}

/// One allocation far past the limit (an `ArrayBuffer`, a typed array, a dense array, a repeated string, a joined
/// array) fails inside the engine or at the memory limit; the host's memory stays within the limit.
///
/// Enforces: js.memory_limit_bytes
#[test]
fn single_huge_allocations_end_at_the_memory_limit() {
    let m = manifest("memory_limit_bytes = \"32MiB\"");
    for code in [
        "new ArrayBuffer(2 ** 31)",
        "new Uint8Array(1e9).length",
        "new Float64Array(2 ** 27).fill(1).length",
        "new Array(2 ** 26).fill(0).length",
        "'x'.repeat(2 ** 29).length",
        "Array.from({ length: 2 ** 22 }, (_, i) => 'item' + i).join(',').length",
        "JSON.stringify(new Array(2 ** 24).fill('abcdefgh')).length",
    ] {
        let report = js(&m, code);
        let out_of_memory = report.outcome == Outcome::MemoryLimit
            || message(&report).contains("out of memory")
            || message(&report).contains("RangeError");
        assert!(out_of_memory, "{code}: {report:?}");
        assert!(report.usage.memory_peak_bytes <= 32 << 20, "{code}: {}", report.usage.memory_peak_bytes);
        if report.outcome == Outcome::MemoryLimit {
            let denial = report.denials.iter().find(|d| d.capability == "memory").expect("a memory denial");
            assert!(denial.reason.contains("memory_limit_bytes"), "{denial:?}");
        }
    }
    still_serves(Language::Js);
}

/// Output that goes around `console.log` line by line (one huge line, `console.error`, a huge result value) is
/// capped the same way.
///
/// Enforces: js.max_output_bytes
#[test]
fn huge_lines_stderr_floods_and_huge_results_end_at_max_output_bytes() {
    let m = manifest("max_output_bytes = 1000");
    let report = js(&m, "console.log('x'.repeat(5_000_000)); 'after'");
    assert_eq!(report.outcome, Outcome::OutputLimit, "{report:?}");
    assert_eq!((report.stdout.len(), report.value.clone()), (1000, json!(null)));
    assert!(message(&report).contains("max_output_bytes"), "{report:?}");

    let report = js(&m, "for (;;) console.error('flood')");
    assert_eq!(report.outcome, Outcome::OutputLimit, "{report:?}");
    assert_eq!(report.stderr.len(), 1000);

    let report = js(&m, "'y'.repeat(1_000_000)");
    assert_eq!(report.outcome, Outcome::OutputLimit, "{report:?}");
    assert_eq!(report.error.as_ref().unwrap().kind, ErrorKind::OutputLimit);
    assert!(message(&report).contains("result value"), "{report:?}");
    assert_eq!(report.value, json!(null));
    still_serves(Language::Js);
}

/// Ten thousand tool calls fit in one run when the manifest allows them; the next call, and every call after it,
/// is refused, with one denial naming `max_host_calls`.
///
/// Enforces: js.max_host_calls
#[test]
fn ten_thousand_host_calls_run_and_the_next_one_is_refused() {
    let m = manifest("extra_capabilities = [\"tool:add\"]\nmax_host_calls = 10000");
    let report = js(&m, "let s = 0; for (let i = 0; i < 10000; i++) s = tools.add({a: s, b: 1}); s");
    assert_eq!((report.outcome, report.value.clone()), (Outcome::Ok, json!(10000)), "{report:?}");
    assert_eq!(report.usage.host_calls, 10000);
    assert!(report.denials.is_empty());

    let report = js(
        &m,
        r#"
        for (let i = 0; i < 10000; i++) tools.add({a: 1, b: 1});
        const refused = [];
        for (let i = 0; i < 100; i++) { try { tools.add({a: 1, b: 1}); } catch (e) { refused.push(e.message); } }
        [refused.length, refused[0]]
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value[0], json!(100), "every call past the cap is refused: {report:?}");
    assert!(report.value[1].as_str().unwrap().contains("max_host_calls (10000) reached"), "{report:?}");
    let denials: Vec<_> = report.denials.iter().filter(|d| d.capability == "host_call").collect();
    assert_eq!(denials.len(), 1, "one denial, not one per refused call: {:?}", report.denials);
    still_serves(Language::Js);
}

/// Calls past `max_host_calls` are refused, but each still adds a record to `tool_calls` on the host, so a loop of
/// refused calls grows host memory and the report without bound until `cpu_ms`.
#[test]
fn refused_calls_past_max_host_calls_do_not_grow_the_report_without_bound() {
    let m = manifest("extra_capabilities = [\"tool:add\"]\nmax_host_calls = 10\ncpu_ms = 1000");
    let report = js(&m, "for (;;) { try { tools.add({a: 1, b: 1}); } catch (e) {} }");
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    assert!(report.tool_calls.len() <= 11, "{} tool_calls records from a cap of 10", report.tool_calls.len());
}

/// Results the host cannot turn into JSON without running guest code or recursing without end: each ends with a
/// clear outcome.
#[test]
fn results_that_fight_serialization_end_with_a_clear_outcome() {
    let m = manifest("cpu_ms = 500");
    for (code, outcome, kind, expected) in [
        ("({ toJSON() { for (;;) {} } })", Outcome::Timeout, ErrorKind::Timeout, "cpu_ms"),
        ("({ get x() { throw new Error('getter') } })", Outcome::Error, ErrorKind::Serialization, "getter"),
        ("({ toJSON() { return 10n } })", Outcome::Error, ErrorKind::Serialization, "bigint"),
        ("new Proxy({}, { ownKeys() { throw new Error('keys') } })", Outcome::Error, ErrorKind::Serialization, "keys"),
        ("({ a: [{ b: Symbol('deep') }] })", Outcome::Error, ErrorKind::Serialization, "symbol"),
        ("let a = []; for (let i = 0; i < 1e5; i++) a = [a]; a", Outcome::Error, ErrorKind::Trap, "stack overflow"),
        ("new Proxy({}, { get(t, k, r) { return r[k] } })", Outcome::Error, ErrorKind::Trap, "stack overflow"),
        ("Promise.reject(new Proxy({}, {}))", Outcome::Error, ErrorKind::Exception, "uncaught"),
    ] {
        let report = js(&m, code);
        assert_eq!(report.outcome, outcome, "{code}: {report:?}");
        assert_eq!(report.error.as_ref().unwrap().kind, kind, "{code}: {report:?}");
        assert!(message(&report).contains(expected), "{code}: {}", message(&report));
    }
    still_serves(Language::Js);
}

/// A sandbox offering `slow`, a tool that takes 10 s to answer (as an upstream server may, up to its own timeout),
/// shared by the JavaScript and Python cases.
pub(crate) fn slow_tool_sandbox() -> &'static wasmagent::Sandbox {
    static SANDBOX: std::sync::OnceLock<wasmagent::Sandbox> = std::sync::OnceLock::new();
    SANDBOX.get_or_init(|| {
        let mut tools = wasmagent::ToolRegistry::new();
        let slow = wasmagent::Tool::new("slow", "Answers after 10 s.", json!({"type": "object"}), |_| {
            std::thread::sleep(std::time::Duration::from_secs(10));
            Ok(json!("late"))
        });
        tools.register(slow).unwrap();
        wasmagent::Sandbox::builder().pool_slots(2).tools(tools).build().unwrap()
    })
}

/// Runs `code` in `language` on [`slow_tool_sandbox`] with `cpu_ms = 500` and `slow` granted; returns the report and
/// the wall-clock time the run took.
pub(crate) fn run_calling_the_slow_tool(language: Language, code: &str) -> (RunReport, std::time::Duration) {
    let sandbox = slow_tool_sandbox();
    let raw = wasmagent::CapabilityManifest::from_toml_str("cpu_ms = 500\nextra_capabilities = [\"tool:slow\"]");
    let manifest = sandbox.resolve(&raw.unwrap(), std::path::Path::new("/")).unwrap();
    // Compiled first: compilation is bounded by max_compile_ms, not cpu_ms, and is not what is timed here.
    let warm = sandbox.run(&manifest, &wasmagent::RunRequest::source("warm", language, "1")).unwrap();
    assert_eq!(warm.outcome, Outcome::Ok, "{warm:?}");
    let started = std::time::Instant::now();
    let report = sandbox.run(&manifest, &wasmagent::RunRequest::source("attack", language, code)).unwrap();
    (report, started.elapsed())
}

/// A host tool that answers after minutes holds the run only until its deadline: the call is abandoned at `cpu_ms`
/// and the run ends as timed out, not when the tool answers.
///
/// Enforces: js.cpu_ms
#[test]
fn a_tool_call_past_cpu_ms_ends_the_run_at_cpu_ms() {
    let (report, elapsed) = run_calling_the_slow_tool(Language::Js, "tools.slow({})");
    assert_eq!(report.outcome, Outcome::Timeout, "{report:?}");
    assert!(elapsed < std::time::Duration::from_millis(2000), "the run took {elapsed:?} with cpu_ms = 500");
    let call = &report.tool_calls[0];
    assert_eq!(call.outcome, "error", "{report:?}");
    assert!(call.error.as_deref().unwrap_or_default().contains("deadline (cpu_ms) passed"), "{report:?}");
    still_serves(Language::Js);
}
