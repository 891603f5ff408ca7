//! `cargo xtask python-v2-snapshot DIST`: pre-initialises Python engine v2 (issue 24; not yet the kernel's
//! engine). Reads `DIST/python-bridge.wasm` (CPython linked with `guests/python-v2/bridge.c` by
//! `scripts/build-cpython-wasi.sh`), runs its `wizer-initialize` once with `DIST` preopened read-only as `/` (the
//! standard library the interpreter imports while starting) and no environment, and writes the snapshot to
//! `DIST/python-v2.wasm`, which `cargo bench -p wasmagent-cli --bench python_v2` measures.

use anyhow::Context;
use std::path::Path;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// Writes `dist/python-v2.wasm`, the pre-initialised snapshot of `dist/python-bridge.wasm`.
pub(crate) fn snapshot(dist: &Path) -> anyhow::Result<()> {
    let input = dist.join("python-bridge.wasm");
    let wasm = std::fs::read(&input).with_context(|| format!("cannot read {}", input.display()))?;
    let engine = wasmtime::Engine::default();
    let mut linker: wasmtime::Linker<wasmtime_wasi::p1::WasiP1Ctx> = wasmtime::Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx| cx)?;
    let mut context = WasiCtxBuilder::new();
    context.preopened_dir(dist, "/", FsPerms::ReadOnly)?;
    let mut store = wasmtime::Store::new(&engine, context.build_p1());
    let wizer = wasmtime_wizer::Wizer::new();
    let future = wizer.run(&mut store, &wasm, async |store, module| linker.instantiate_async(store, module).await);
    let snapshot = crate::block_on(future).map_err(|e| anyhow::anyhow!("pre-initialisation failed: {e:?}"))?;
    let output = dist.join("python-v2.wasm");
    std::fs::write(&output, &snapshot).with_context(|| format!("cannot write {}", output.display()))?;
    println!("{}: {} bytes", output.display(), snapshot.len());
    Ok(())
}
