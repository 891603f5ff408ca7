//! The Python engine (`guests/python`): CPython built for `wasm32-wasi` by `scripts/build-cpython-wasi.sh` (its
//! output, the "kit", in `target/cpython-wasi/dist`), linked here with the embedding `guests/python/bridge.c` into a
//! static, non-PIC WASI reactor, then pre-initialised with wasmtime-wizer: `wizer-initialize` starts the
//! interpreter and imports `runner` (the standard library and the `wasmagent` package come from the kit and the
//! guest's directory, preopened read-only for that step only), and the snapshot is the engine.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use wasmtime_wasi::FsPerms;

/// Where `scripts/build-cpython-wasi.sh` leaves its output.
pub(crate) const KIT: &str = "target/cpython-wasi/dist";
/// The script, whose digest the provenance records (a change to it means a different interpreter).
pub(crate) const BUILD_SCRIPT: &str = "scripts/build-cpython-wasi.sh";
/// The kit's CPython is compiled with clang-22 (its profile-guided optimisation for wasm32), as LLVM bitcode under
/// LTO: the embedding is compiled and linked with the same LLVM.
const CLANG: &str = "clang-22";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// Compiler and linker arguments (after `clang-22`), with `<kit>`, `<repo>` and `<out>` for paths.
fn compile_args() -> Vec<String> {
    let args = "--target=wasm32-wasi -Wno-deprecated --sysroot=<kit>/sysroot -O3 -flto=full -I<kit>/include/python3.13 \
        -c <repo>/guests/python/bridge.c -o <out>/python-bridge.o";
    args.split(' ').map(str::to_owned).collect()
}

fn link_args() -> Vec<String> {
    // As CPython links python.wasm (its Makefile's LDFLAGS and LIBS, recorded in the kit's link/), with the
    // embedding for Programs/python.o, as a reactor, and the stack pointer exported so sessions can be forked.
    let args = "--target=wasm32-wasi -Wno-deprecated --sysroot=<kit>/sysroot -mexec-model=reactor -O3 -flto=full \
        -z stack-size=8388608 -Wl,--stack-first -Wl,--initial-memory=20971520 -Wl,--export=__stack_pointer \
        -Wl,-mllvm,-hot-callsite-threshold=325 -o <out>/python-bridge.wasm <out>/python-bridge.o <kit>/link/libpython3.13.a -ldl -lwasi-emulated-signal \
        -lwasi-emulated-getpid -lwasi-emulated-process-clocks -lm -lz <kit>/link/libmpdec.a \
        <kit>/link/libHacl_Hash_SHA2.a <kit>/link/libexpat.a";
    args.split(' ').map(str::to_owned).collect()
}

fn expand(args: &[String], root: &Path, out: &Path) -> Vec<String> {
    let kit = root.join(KIT);
    args.iter()
        .map(|a| {
            a.replace("<kit>", &kit.display().to_string())
                .replace("<repo>", &root.display().to_string())
                .replace("<out>", &out.display().to_string())
        })
        .collect()
}

/// The kit, built by the script first when it is missing.
fn kit(root: &Path) -> anyhow::Result<PathBuf> {
    let kit = root.join(KIT);
    if !kit.join("link/libpython3.13.a").exists() {
        if std::env::var_os("WASI_LIBC_GIT").is_none() {
            bail!(
                "{KIT} is missing: set WASI_LIBC_GIT to a git directory of the wasi-libc repository (tag wasi-sdk-24) \
                 so {BUILD_SCRIPT} can build CPython (about 8 minutes on 2 cores)"
            );
        }
        let status = Command::new("bash").arg(root.join(BUILD_SCRIPT)).status().context("running the script")?;
        if !status.success() {
            bail!("{BUILD_SCRIPT} failed");
        }
    }
    Ok(kit)
}

fn run(program: &str, args: &[String]) -> anyhow::Result<()> {
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    let status =
        Command::new(program).args(args).env("PATH", path).status().with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {} failed", args.join(" "));
    }
    Ok(())
}

/// Links and pre-initialises the engine; returns the snapshot.
pub(crate) fn build(root: &Path) -> anyhow::Result<Vec<u8>> {
    let kit = kit(root)?;
    let out = root.join("target/guests");
    std::fs::create_dir_all(&out)?;
    run(CLANG, &expand(&compile_args(), root, &out))?;
    run(CLANG, &expand(&link_args(), root, &out))?;
    let linked = out.join("python-bridge.wasm");
    run(&format!("{LLVM_BIN}/llvm-strip"), &["--strip-debug".into(), linked.display().to_string()])?;
    let wasm = std::fs::read(&linked)?;
    // CPython's hash secret and the snapshot's `random` state come from the seed (each run reseeds `random`).
    let mut context = crate::build_context::deterministic("python");
    context.preopened_dir(&kit, "/", FsPerms::ReadOnly)?;
    context.preopened_dir(root.join("guests/python"), "/guest", FsPerms::ReadOnly)?;
    let snapshot = crate::preinitialize_with(&wasm, context)?;
    crate::remove_pycache(&root.join("guests/python"))?;
    Ok(snapshot)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
}

/// The digest of the build script, recorded in the provenance and checked by `cargo xtask guests --check`.
pub(crate) fn build_script_digest(root: &Path) -> anyhow::Result<String> {
    sha256_file(&root.join(BUILD_SCRIPT))
}

/// Toolchain and commands for the provenance file.
pub(crate) fn provenance(root: &Path) -> anyhow::Result<(serde_json::Value, serde_json::Value, serde_json::Value)> {
    let kit: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join(KIT).join("provenance.json"))?)?;
    let placeholders = |args: Vec<String>| {
        args.iter()
            .map(|a| a.replace("<kit>", KIT).replace("<out>", "target/guests").replace("<repo>/", ""))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let toolchain = serde_json::json!({
        "clang": crate::version(CLANG, "--version"),
        "wasmtime-wizer": "48.0.8",
        "cpython": kit["cpython"],
        "wasi-libc": kit["wasi_libc"],
    });
    let commands = serde_json::json!([
        "apt-get install clang-19 lld-19 llvm-19 libclang-rt-19-dev-wasm32 clang-22 lld-22 llvm-22 libclang-rt-22-dev-wasm32",
        format!("WASI_LIBC_GIT=<wasi-libc git directory> {BUILD_SCRIPT}   # the kit in {KIT}"),
        format!("{CLANG} {}", placeholders(compile_args())),
        format!("{CLANG} {}", placeholders(link_args())),
        "llvm-strip-22 --strip-debug target/guests/python-bridge.wasm",
        format!(
            "wasmtime-wizer 48.0.8: Wizer::new() (init func `wizer-initialize`) over target/guests/python-bridge.wasm \
                 with {KIT} preopened read-only at / and guests/python at /guest, no environment, and WASI {}",
            crate::build_context::describe("python")
        ),
    ]);
    let inputs = serde_json::json!({
        "build_script": BUILD_SCRIPT,
        "build_script_digest": build_script_digest(root)?,
        "kit": kit,
    });
    Ok((toolchain, commands, inputs))
}
