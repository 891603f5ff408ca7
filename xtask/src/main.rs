//! `cargo xtask matrix [--check]`: regenerates `docs/enforcement-matrix.md` from the test suite (see `matrix.rs`).
//!
//! `cargo xtask owasp [--check]`: regenerates `docs/security/owasp-agentic.md`, the OWASP Top 10 for Agentic
//! Applications mapped to mechanisms and the tests that prove them (see `owasp.rs`).
//!
//! `cargo xtask guests [--check]`: builds the guest engines under `guests/` and writes them, with a provenance
//! file, to `guests/dist/`.
//!
//! The JavaScript engine: `cargo build --release --target wasm32-wasip1` (QuickJS's C code compiled by Debian's
//! clang-19 against Debian's wasi-libc, through a sysroot laid out the way clang expects), then pre-initialisation
//! with wasmtime-wizer (`wizer-initialize`). The Python engine: CPython built from source by
//! `scripts/build-cpython-wasi.sh`, linked with `guests/python/bridge.c` and pre-initialised with wasmtime-wizer
//! (`python.rs`); its provenance also records the script's digest, which `--check` compares.
//! Each is written to `guests/dist/<name>.wasm` with `guests/dist/<name>.provenance.json`:
//! the digest of the guest's sources and lockfile, the toolchain versions, the exact commands, and the artifact's
//! digest. With `--check`, nothing is written and nothing is built: the task fails when the committed provenance
//! does not match the sources (the artifact is stale) or the committed artifact does not match its provenance, which
//! is what CI runs, so it does not rebuild engines whose recorded source digests match. `--check --rebuild` also
//! rebuilds each engine into a temporary directory and says whether the result is byte-identical to the committed
//! one. `WASMAGENT_GUESTS=python` (a comma-separated list of names) limits the task to those guests.

use anyhow::{Context, bail};
use source_digest::source_digest;

mod build_context;
mod matrix;
mod owasp;
mod python;
mod source_digest;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment for building C code in guests: see ../shared/notes/guest-builds.md.
const CLANG: &str = "clang-19";
const LLVM_AR: &str = "llvm-ar-19";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["guests"] => guests(&root, Mode::Write),
        ["guests", "--check"] => guests(&root, Mode::Check),
        ["guests", "--check", "--rebuild"] => guests(&root, Mode::CheckAndRebuild),
        ["matrix"] => matrix::matrix(&root, false),
        ["matrix", "--check"] => matrix::matrix(&root, true),
        ["owasp"] => owasp::owasp(&root, false),
        ["owasp", "--check"] => owasp::owasp(&root, true),
        _ => bail!(
            "usage: cargo xtask guests [--check [--rebuild]] | cargo xtask matrix [--check] | cargo xtask owasp [--check]"
        ),
    }
}

struct Guest {
    /// Name of the artifact under guests/dist/.
    name: &'static str,
    /// Source directory under guests/.
    dir: &'static str,
    /// How it is built.
    kind: GuestKind,
}

enum GuestKind {
    /// A Rust crate built for wasm32-wasip1 into this cdylib, then pre-initialised with wasmtime-wizer.
    Wizer { wasm: &'static str },
    /// CPython built from source and linked with the guest's embedding (`python.rs`).
    CPython,
}

const GUESTS: &[Guest] = &[
    Guest { name: "js", dir: "js", kind: GuestKind::Wizer { wasm: "wasmagent_js_guest.wasm" } },
    Guest { name: "python", dir: "python", kind: GuestKind::CPython },
];

/// What `cargo xtask guests` does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Build every engine and write it with its provenance to guests/dist/.
    Write,
    /// Check the committed engines against their sources and provenance, building nothing.
    Check,
    /// Check, and also rebuild each engine to compare it with the committed one.
    CheckAndRebuild,
}

fn guests(root: &Path, mode: Mode) -> anyhow::Result<()> {
    let dist = root.join("guests/dist");
    let mut failures = Vec::new();
    let only = std::env::var("WASMAGENT_GUESTS").ok();
    for guest in GUESTS.iter().filter(|g| only.as_deref().is_none_or(|o| o.split(',').any(|n| n == g.name))) {
        let source_digest = source_digest(&root.join("guests").join(guest.dir))?;
        let wasm_path = dist.join(format!("{}.wasm", guest.name));
        let provenance_path = dist.join(format!("{}.provenance.json", guest.name));
        if mode == Mode::Check {
            failures.extend(committed_mismatches(root, guest, &source_digest, &wasm_path, &provenance_path)?);
            println!(
                "{}: checked against its sources and provenance (not rebuilt; `--check --rebuild` rebuilds)",
                guest.name
            );
            continue;
        }
        let built = build(root, guest)?;
        let artifact_digest = format!("sha256:{}", hex::encode(Sha256::digest(&built)));
        let provenance = provenance(root, guest, &source_digest, &artifact_digest, built.len())?;
        if mode == Mode::CheckAndRebuild {
            failures.extend(committed_mismatches(root, guest, &source_digest, &wasm_path, &provenance_path)?);
            let committed_digest = format!("sha256:{}", hex::encode(Sha256::digest(std::fs::read(&wasm_path)?)));
            let committed: serde_json::Value = serde_json::from_slice(&std::fs::read(&provenance_path)?)?;
            let reproducible = committed_digest == artifact_digest;
            println!(
                "{}: sources {}; rebuilt artifact {} the committed one",
                guest.name,
                if committed["source_digest"] == source_digest.as_str() { "match" } else { "CHANGED" },
                if reproducible { "is byte-identical to" } else { "differs from" }
            );
        } else {
            std::fs::create_dir_all(&dist)?;
            std::fs::write(&wasm_path, &built)?;
            std::fs::write(&provenance_path, serde_json::to_string_pretty(&provenance)? + "\n")?;
            println!("wrote {} ({} bytes, {artifact_digest})", wasm_path.display(), built.len());
        }
    }
    if failures.is_empty() { Ok(()) } else { bail!("{}", failures.join("\n")) }
}

/// Why the committed `wasm_path` and its provenance do not fit `source_digest` (stale sources, or an artifact that
/// is not the one its provenance names); empty when they fit.
fn committed_mismatches(
    root: &Path,
    guest: &Guest,
    source_digest: &str,
    wasm_path: &Path,
    provenance_path: &Path,
) -> anyhow::Result<Vec<String>> {
    let committed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(provenance_path).with_context(|| format!("reading {}", provenance_path.display()))?,
    )?;
    let committed_artifact = std::fs::read(wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    let committed_digest = format!("sha256:{}", hex::encode(Sha256::digest(&committed_artifact)));
    let mut failures = Vec::new();
    if committed["source_digest"] != source_digest {
        failures.push(format!(
            "{}: the sources changed since guests/dist/{}.wasm was built; run `cargo xtask guests`",
            guest.name, guest.name
        ));
    }
    if let GuestKind::CPython = guest.kind {
        let script = python::build_script_digest(root)?;
        if committed["inputs"]["build_script_digest"] != script.as_str() {
            failures.push(format!(
                "{}: {} changed since guests/dist/{}.wasm was built; run `cargo xtask guests`",
                guest.name,
                python::BUILD_SCRIPT,
                guest.name
            ));
        }
    }
    if committed["artifact_digest"] != committed_digest.as_str() {
        failures.push(format!("{}: guests/dist/{}.wasm does not match its provenance", guest.name, guest.name));
    }
    Ok(failures)
}

fn cargo_command(root: &Path, guest: &Guest, sysroot: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root.join("guests").join(guest.dir))
        .args(["build", "--release", "--locked", "--target", "wasm32-wasip1", "--target-dir"])
        .arg(target_dir)
        .env("RQUICKJS_SYS_NO_WASI_SDK", "1")
        .env("CC_wasm32_wasip1", CLANG)
        .env("AR_wasm32_wasip1", LLVM_AR)
        .env("CFLAGS_wasm32_wasip1", format!("--sysroot={}", sysroot.display()))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

/// Debian ships wasi-libc for the old `wasm32-wasi` triple; clang looks for `wasm32-wasip1`.
fn sysroot(root: &Path) -> anyhow::Result<PathBuf> {
    let sysroot = root.join("target/wasi-sysroot");
    if !sysroot.join("lib/wasm32-wasip1").exists() {
        std::fs::create_dir_all(sysroot.join("lib"))?;
        for (link, target) in [("include", "/usr/include/wasm32-wasi"), ("lib/wasm32-wasip1", "/usr/lib/wasm32-wasi")] {
            if !Path::new(target).exists() {
                bail!("{target} is missing: apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32");
            }
            let _ = std::fs::remove_file(sysroot.join(link));
            std::os::unix::fs::symlink(target, sysroot.join(link))?;
        }
    }
    Ok(sysroot)
}

fn build(root: &Path, guest: &Guest) -> anyhow::Result<Vec<u8>> {
    match guest.kind {
        GuestKind::Wizer { wasm } => {
            let sysroot = sysroot(root)?;
            let target_dir = root.join("target/guests");
            let status = cargo_command(root, guest, &sysroot, &target_dir).status().context("running cargo")?;
            if !status.success() {
                bail!("building guest {} failed", guest.name);
            }
            let wasm = std::fs::read(target_dir.join("wasm32-wasip1/release").join(wasm))?;
            preinitialize(&wasm, guest.name)
        }
        GuestKind::CPython => python::build(root),
    }
}

pub(crate) fn remove_pycache(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n == "__pycache__") {
            std::fs::remove_dir_all(&path)?;
        } else if path.is_dir() {
            remove_pycache(&path)?;
        }
    }
    Ok(())
}

/// Runs `wizer-initialize` once and snapshots the instance, in a context with no files and no environment, and
/// randomness and clocks that are the same in every build (`build_context`).
fn preinitialize(wasm: &[u8], guest: &str) -> anyhow::Result<Vec<u8>> {
    preinitialize_with(wasm, build_context::deterministic(guest))
}

/// Runs `wizer-initialize` once in `context` and snapshots the instance.
pub(crate) fn preinitialize_with(wasm: &[u8], mut context: wasmtime_wasi::WasiCtxBuilder) -> anyhow::Result<Vec<u8>> {
    let engine = wasmtime::Engine::default();
    let mut linker: wasmtime::Linker<wasmtime_wasi::p1::WasiP1Ctx> = wasmtime::Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx| cx)?;
    let mut store = wasmtime::Store::new(&engine, context.build_p1());
    let wizer = wasmtime_wizer::Wizer::new();
    let future = wizer.run(&mut store, wasm, async |store, module| {
        // The host bridge (`wasmagent.*`) is not available during initialisation; calling it there traps.
        let mut linker = linker.clone();
        linker.define_unknown_imports_as_traps(module)?;
        linker.instantiate_async(store, module).await
    });
    let snapshot = block_on(future).map_err(|e| anyhow::anyhow!("pre-initialisation failed: {e:?}"))?;
    Ok(snapshot)
}

/// Polls a future that never waits on anything external (wasmtime's async API with no async host calls).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

pub(crate) fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_else(|| format!("{program}: not found"))
}

fn provenance(
    root: &Path,
    guest: &Guest,
    source_digest: &str,
    artifact_digest: &str,
    size: usize,
) -> anyhow::Result<serde_json::Value> {
    let (toolchain, commands) = match guest.kind {
        GuestKind::Wizer { wasm } => {
            let sysroot = root.join("target/wasi-sysroot");
            let command = cargo_command(root, guest, &sysroot, &root.join("target/guests"));
            let env: Vec<String> = command
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
                .map(|line| line.replace(&root.display().to_string(), "<repo>"))
                .collect();
            (
                serde_json::json!({
                    "rustc": version("rustc", "--version"),
                    "cargo": version("cargo", "--version"),
                    "clang": version(CLANG, "--version"),
                    "wasi-libc": "Debian package wasi-libc (/usr/lib/wasm32-wasi)",
                    "wasmtime-wizer": "48.0.8",
                }),
                serde_json::json!([
                    "apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32",
                    "rustup target add wasm32-wasip1",
                    format!(
                        "cd guests/{} && {} cargo build --release --locked --target wasm32-wasip1 --target-dir <repo>/target/guests",
                        guest.dir,
                        env.join(" ")
                    ),
                    format!(
                        "wasmtime-wizer 48.0.8: Wizer::new() (init func `wizer-initialize`) over target/guests/wasm32-wasip1/release/{wasm} with a WASI preview1 context with no files and no environment, {}",
                        build_context::describe(guest.name)
                    ),
                ]),
            )
        }
        GuestKind::CPython => {
            let (toolchain, commands, inputs) = python::provenance(root)?;
            return Ok(serde_json::json!({
                "guest": guest.name,
                "source": format!("guests/{}", guest.dir),
                "source_digest": source_digest,
                "inputs": inputs,
                "artifact": format!("guests/dist/{}.wasm", guest.name),
                "artifact_digest": artifact_digest,
                "artifact_bytes": size,
                "toolchain": toolchain,
                "commands": commands,
                "rebuild": "cargo xtask guests (WASMAGENT_GUESTS=python for this engine only)",
            }));
        }
    };
    Ok(serde_json::json!({
        "guest": guest.name,
        "source": format!("guests/{}", guest.dir),
        "source_digest": source_digest,
        "artifact": format!("guests/dist/{}.wasm", guest.name),
        "artifact_digest": artifact_digest,
        "artifact_bytes": size,
        "toolchain": toolchain,
        "commands": commands,
        "rebuild": "cargo xtask guests",
    }))
}
