//! What one run leaves behind, and whether the next run (or a concurrent one) on the same sandbox can see it:
//! globals, prototypes, interpreter state, linear memory, tables, files outside write mounts, the environment and
//! output.
//!
//! Proven in `js_kernel.rs` and `python_kernel.rs` and not repeated: a global and `Object.prototype` property in
//! JavaScript, `builtins` and a module attribute in Python, and both engines reseeding their random generators.

use crate::common::{self, manifest, sandbox};
use crate::{still_serves, wasm};
use serde_json::json;
use wasmagent::{EffectiveManifest, Language, Outcome, RunReport, RunRequest};
use wasmagent_test_guests::PROBE_MODULE;

fn probe(manifest: &EffectiveManifest, args: &[&str]) -> RunReport {
    let request =
        RunRequest::wasm("probe.wasm", wasmagent_test_guests::read(PROBE_MODULE)).with_args(args.iter().copied());
    sandbox().run(manifest, &request).unwrap()
}

/// Run N poisons everything a script can reach in QuickJS (prototypes, the built-ins the engine's glue and the host
/// use, statics, pending jobs, finalizers); run N+1 starts from the clean snapshot.
#[test]
fn javascript_poison_from_one_run_is_gone_in_the_next() {
    let m = manifest("");
    let poison = common::run(
        &m,
        Language::Js,
        "poison.js",
        r#"
        globalThis.secret = 'SECRET-GLOBAL';
        Object.defineProperty(Object.prototype, 'then', { get() { for (;;) {} }, configurable: true });
        Array.prototype.push = () => { throw new Error('poisoned'); };
        JSON.stringify = () => '"forged"';
        Error.prepareStackTrace = () => 'forged stack';
        Date.now = () => 0;
        /(SECRET-REGEXP)/.exec('SECRET-REGEXP');
        new FinalizationRegistry(() => console.log('SECRET-LATE')).register({}, 1);
        new Promise(() => {}).then(() => console.log('SECRET-LATE'));
        console.log('SECRET-OUTPUT');
        console.error('SECRET-OUTPUT');
        1
        "#,
    );
    assert_eq!(poison.outcome, Outcome::Ok, "{poison:?}");
    let next = common::run(
        &m,
        Language::Js,
        "next.js",
        r#"
        const a = []; a.push(1);
        let stack; try { null.x } catch (e) { stack = typeof e.stack }
        console.log('clean');
        [typeof secret, Object.getOwnPropertyDescriptor(Object.prototype, 'then') === undefined, a.length,
         JSON.stringify({ k: 1 }), stack, Date.now() > 1e12, String(RegExp.$1 ?? '').includes('SECRET')]
        "#,
    );
    assert_eq!(next.outcome, Outcome::Ok, "{next:?}");
    assert_eq!(next.value, json!(["undefined", true, 1, "{\"k\":1}", "string", true, false]));
    assert_eq!((next.stdout.as_str(), next.stderr.as_str()), ("clean\n", ""));
    still_serves(Language::Js);
}

/// Run N poisons the interpreter (the environment, the recursion limit, `print` and `sys.stdout`, the JSON encoder
/// the engine answers with, the import machinery that refuses escape hatches, `sys.modules`); run N+1 starts from
/// the clean snapshot.
#[test]
fn python_poison_from_one_run_is_gone_in_the_next() {
    let m = manifest("");
    let poison = common::run(
        &m,
        Language::Python,
        "poison.py",
        r#"
import builtins, io, json, os, sys, atexit
print("SECRET-OUTPUT")
print("SECRET-OUTPUT", file=sys.stderr)
os.environ["LEAK"] = "SECRET-ENV"
sys.setrecursionlimit(50)
sys.modules["secret"] = "SECRET-MODULE"
sys.meta_path.clear()
atexit.register(print, "SECRET-LATE")
builtins.print = lambda *args, **kwargs: None
json.dumps = lambda *args, **kwargs: '"forged"'
sys.stdout = io.StringIO()
"#,
    );
    assert!(poison.outcome == Outcome::Ok || poison.outcome == Outcome::Error, "{poison:?}");
    let next = common::run(
        &m,
        Language::Python,
        "next.py",
        r#"
import os, sys
def refused(name):
    try:
        __import__(name)
        return False
    except ImportError as e:
        return "not available in the wasmagent sandbox" in str(e)
print("clean")
def depth(n):
    return n if n >= 200 else depth(n + 1)
[os.environ.get("LEAK"), "secret" in sys.modules, depth(0), refused("ctypes"), {"k": 1}]
"#,
    );
    assert_eq!(next.outcome, Outcome::Ok, "{next:?}");
    assert_eq!(next.value, json!([null, false, 200, true, {"k": 1}]));
    assert_eq!((next.stdout.as_str(), next.stderr.as_str()), ("clean\n", ""));
    still_serves(Language::Python);
}

/// A module that finds any trace of an earlier run (a global it set, a table entry it filled, a non-zero byte in
/// linear memory, which it fills with 0xAB before it ends) exits non-zero; twenty runs in a row, which reuse the
/// pool's slots, all exit 0.
#[test]
fn webassembly_memory_globals_and_tables_start_fresh_every_run() {
    let detector = wasm(
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (global $g (mut i32) (i32.const 0))
          (memory (export "memory") 1)
          (table $t 1 funcref)
          (func $f)
          (elem declare func $f)
          (func (export "_start")
            (local $i i32) (local $end i32)
            (if (global.get $g) (then (call $exit (i32.const 2))))
            (global.set $g (i32.const 1))
            (if (i32.eqz (ref.is_null (table.get $t (i32.const 0)))) (then (call $exit (i32.const 3))))
            (table.set $t (i32.const 0) (ref.func $f))
            (drop (memory.grow (i32.const 63)))
            (local.set $end (i32.mul (memory.size) (i32.const 65536)))
            (block $clean
              (loop $scan
                (br_if $clean (i32.ge_u (local.get $i) (local.get $end)))
                (if (i64.ne (i64.load (local.get $i)) (i64.const 0)) (then (call $exit (i32.const 4))))
                (local.set $i (i32.add (local.get $i) (i32.const 8)))
                (br $scan)))
            (memory.fill (i32.const 0) (i32.const 0xAB) (local.get $end))
            (call $exit (i32.const 0))))"#,
    );
    let m = manifest("");
    for run in 0..20 {
        let report = sandbox().run(&m, &RunRequest::wasm("detector.wasm", detector.clone())).unwrap();
        assert_eq!((report.outcome, report.exit_code), (Outcome::Exit, Some(0)), "run {run}: {report:?}");
    }
    still_serves(Language::Wasm);
}

/// Writes outside every write mount fail in each kernel, are reported, and leave nothing for the next run or on the
/// host.
#[test]
fn files_written_outside_write_mounts_exist_nowhere_afterwards() {
    let name = format!("wasmagent-adversarial-leak-{}", std::process::id());
    let targets = [format!("/{name}"), format!("/tmp/{name}")];
    let m = manifest("");
    for target in &targets {
        let js = common::run(
            &m,
            Language::Js,
            "w.js",
            &format!("try {{ fs.writeFile({target:?}, 'x'); 'written' }} catch (e) {{ 'denied' }}"),
        );
        let py = common::run(
            &m,
            Language::Python,
            "w.py",
            &format!(
                "try:\n    open({target:?}, 'w').write('x')\n    r = 'written'\nexcept OSError:\n    r = 'denied'\nr"
            ),
        );
        let wasi = probe(&m, &[&format!("write:{target}:x")]);
        assert_eq!((&js.value, &py.value), (&json!("denied"), &json!("denied")), "{js:?} {py:?}");
        assert!(wasi.stdout.starts_with("ERR write"), "{wasi:?}");
        for report in [&js, &py, &wasi] {
            let denial = report.denials.iter().find(|d| d.capability == "fs.write");
            assert!(denial.is_some_and(|d| d.reason.contains("not inside any mount")), "{report:?}");
        }
        let js = common::run(&m, Language::Js, "r.js", &format!("fs.exists({target:?})"));
        let py = common::run(&m, Language::Python, "r.py", &format!("import os\nos.path.exists({target:?})"));
        let wasi = probe(&m, &[&format!("cat:{target}")]);
        assert_eq!((&js.value, &py.value), (&json!(false), &json!(false)));
        assert!(wasi.stdout.starts_with("ERR cat"), "{wasi:?}");
        assert!(!std::path::Path::new(target).exists(), "{target} exists on the host");
    }
    for language in [Language::Js, Language::Python, Language::Wasm] {
        still_serves(language);
    }
}

/// Run N's environment and output are not in run N+1's report, in any kernel.
///
/// Enforces: wasi.env, js.env, python.env
#[test]
fn environment_and_output_of_one_run_are_absent_from_the_next() {
    let with_secret = manifest("env = { SECRET = \"SECRET-ENV-VALUE\" }");
    let plain = manifest("");

    let first =
        common::run(&with_secret, Language::Js, "a.js", "console.log(env.SECRET); console.error(env.SECRET); 1");
    assert_eq!(first.stdout, "SECRET-ENV-VALUE\n");
    let next = common::run(&plain, Language::Js, "b.js", "console.log('clean'); env");
    assert_eq!((next.value.clone(), next.stdout.as_str(), next.stderr.as_str()), (json!({}), "clean\n", ""));

    let code = "import os, sys\nprint(os.environ.get('SECRET'))\nprint(os.environ.get('SECRET'), file=sys.stderr)";
    let first = common::run(&with_secret, Language::Python, "a.py", code);
    assert_eq!(first.stdout, "SECRET-ENV-VALUE\n");
    let next = common::run(&plain, Language::Python, "b.py", code);
    assert_eq!((next.stdout.as_str(), next.stderr.as_str()), ("None\n", "None\n"));

    let first = probe(&with_secret, &["env", "eprint:10"]);
    assert_eq!(first.stdout, "ENV SECRET=SECRET-ENV-VALUE\n");
    let next = probe(&plain, &["env", "hello"]);
    assert_eq!((next.stdout.as_str(), next.stderr.as_str()), ("hello from wasm\n", ""));
    for language in [Language::Js, Language::Python, Language::Wasm] {
        still_serves(language);
    }
}

/// Threads sharing one sandbox run all three kernels at once; each report holds exactly its own run's output,
/// value and environment, never another's.
#[test]
fn concurrent_runs_on_one_sandbox_never_see_each_others_output() {
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            std::thread::spawn(move || {
                for round in 0..6 {
                    let token = format!("T{thread}R{round}");
                    let m = manifest(&format!("env = {{ TOKEN = \"{token}\" }}"));
                    let (language, report) = match (thread + round) % 3 {
                        0 => (
                            Language::Js,
                            common::run(
                                &m,
                                Language::Js,
                                "c.js",
                                "for (let i = 0; i < 200; i++) { console.log(env.TOKEN); console.error(env.TOKEN); } env.TOKEN",
                            ),
                        ),
                        1 => (
                            Language::Python,
                            common::run(
                                &m,
                                Language::Python,
                                "c.py",
                                "import os, sys\nt = os.environ['TOKEN']\nfor _ in range(200):\n    print(t)\n    print(t, file=sys.stderr)\nt",
                            ),
                        ),
                        _ => {
                            let request = RunRequest::wasm("probe.wasm", wasmagent_test_guests::read(PROBE_MODULE))
                                .with_args(["env", "stdin", "env"])
                                .with_stdin(token.clone());
                            (Language::Wasm, sandbox().run(&m, &request).unwrap())
                        }
                    };
                    assert_eq!(report.outcome, Outcome::Ok, "{language:?} {token}: {report:?}");
                    match language {
                        Language::Wasm => {
                            let line = format!("ENV TOKEN={token}");
                            assert_eq!(report.stdout, format!("{line}\nSTDIN {token}\n{line}\n"), "{report:?}");
                        }
                        _ => {
                            assert_eq!(report.value, json!(token));
                            for stream in [&report.stdout, &report.stderr] {
                                assert_eq!(stream.lines().count(), 200, "{language:?} {token}");
                                assert!(stream.lines().all(|l| l == token), "{language:?} {token}: {stream}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for language in [Language::Js, Language::Python, Language::Wasm] {
        still_serves(language);
    }
}
