//! Snapshotting the shipped engine again after it imported the packages: wasmtime-wizer instruments the module,
//! this crate's own wasmtime instantiates it with the packages preopened at `/packages` and calls
//! `wasmagent-freeze`, and wizer rewrites the instance's memory and globals into a new module.

use crate::BuildError;
use std::path::Path;
use wasmtime::{Engine, Instance, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

/// The engine's export that imports the packages.
const FREEZE: &str = "wasmagent-freeze";
/// Most output kept from the freeze (its report line, or a traceback).
const MAX_OUTPUT: usize = 4 << 20;

pub(crate) struct Frozen {
    pub(crate) wasm: Vec<u8>,
    pub(crate) imported: Vec<String>,
    pub(crate) failed: Vec<(String, String)>,
}

fn freeze_error(what: &str, error: impl std::fmt::Display) -> BuildError {
    BuildError::Freeze(format!("{what}: {error}"))
}

/// `engine` with every module of the packages in `packages` imported into its snapshot.
pub(crate) fn freeze(engine: &[u8], packages: &Path) -> Result<Frozen, BuildError> {
    let mut wizer = Wizer::new();
    wizer.init_func(FREEZE);
    let (context, instrumented) = wizer.instrument(engine).map_err(|e| freeze_error("instrumenting the engine", e))?;
    let runtime = Engine::default();
    let module = Module::new(&runtime, &instrumented).map_err(|e| freeze_error("compiling the engine", e))?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&runtime);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx| cx).map_err(|e| freeze_error("linking WASI", e))?;
    // The host bridge (`wasmagent.*`) is not there while packages are imported: a package calling it fails the build.
    linker.define_unknown_imports_as_traps(&module).map_err(|e| freeze_error("linking", e))?;
    let (stdout, stderr) = (MemoryOutputPipe::new(MAX_OUTPUT), MemoryOutputPipe::new(MAX_OUTPUT));
    let mut wasi = WasiCtxBuilder::new();
    wasi.preopened_dir(packages, "/packages", FsPerms::ReadOnly)
        .map_err(|e| freeze_error("opening the packages", e))?
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    let mut store = Store::new(&runtime, wasi.build_p1());
    let instance = linker.instantiate(&mut store, &module).map_err(|e| freeze_error("instantiating the engine", e))?;
    let call = instance
        .get_typed_func::<(), ()>(&mut store, FREEZE)
        .map_err(|e| freeze_error("the engine has no freeze entry (is it the shipped engine?)", e))?
        .call(&mut store, ());
    let (out, err) = (String::from_utf8_lossy(&stdout.contents()).into_owned(), stderr.contents());
    let report: serde_json::Value =
        out.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or(serde_json::Value::Null);
    if let Err(error) = call {
        let err = String::from_utf8_lossy(&err);
        let failed = report["failed"].as_object().map(|f| {
            f.iter()
                .filter(|(m, _)| !m.contains('.'))
                .map(|(m, why)| format!("{m}: {}", why.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("; ")
        });
        return Err(BuildError::Freeze(match failed {
            Some(failed) if !failed.is_empty() => format!("a top-level module failed to import: {failed}"),
            _ => format!("{error:#}\n{}", err.trim_end()),
        }));
    }
    let imported = report["imported"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let failed = report["failed"]
        .as_object()
        .map(|f| f.iter().map(|(m, why)| (m.clone(), why.as_str().unwrap_or("").to_owned())).collect())
        .unwrap_or_default();
    let wasm = block_on(wizer.snapshot(&context, &mut Snapshot { store: &mut store, instance }))
        .map_err(|e| freeze_error("snapshotting the engine", e))?;
    wasmagent_kernel_wasi::session::check_forkable(&wasm)
        .map_err(|e| freeze_error("the new engine cannot be forked (its sessions could not be copied)", e))?;
    Ok(Frozen { wasm, imported, failed })
}

/// The instance wizer reads the state from.
struct Snapshot<'a> {
    store: &'a mut Store<WasiP1Ctx>,
    instance: Instance,
}

impl InstanceState for Snapshot<'_> {
    fn global_get(&mut self, name: &str, _type_hint: ValType) -> impl Future<Output = SnapshotVal> + Send {
        let global = self.instance.get_global(&mut *self.store, name);
        let value = match global.map(|g| g.get(&mut *self.store)) {
            Some(wasmtime::Val::I32(v)) => SnapshotVal::I32(v),
            Some(wasmtime::Val::I64(v)) => SnapshotVal::I64(v),
            Some(wasmtime::Val::F32(v)) => SnapshotVal::F32(v),
            Some(wasmtime::Val::F64(v)) => SnapshotVal::F64(v),
            Some(wasmtime::Val::V128(v)) => SnapshotVal::V128(v.as_u128()),
            // Wizer asks only for the globals its instrumentation exported, all of value types.
            other => unreachable_global(name, other.is_some()),
        };
        std::future::ready(value)
    }

    fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) -> impl Future<Output = ()> + Send {
        match self.instance.get_memory(&mut *self.store, name) {
            Some(memory) => contents(memory.data(&*self.store)),
            None => contents(&[]),
        }
        std::future::ready(())
    }
}

/// Wizer's trait has no way to fail; a global it asks for that is missing or not a value means the instrumentation
/// and the instance disagree, which no input can cause.
#[allow(clippy::panic, reason = "InstanceState cannot return an error; see the doc comment")]
fn unreachable_global(name: &str, present: bool) -> SnapshotVal {
    panic!(
        "wizer asked for global {name} (present: {present}), which the instrumented engine does not export as a value"
    )
}

/// Polls a future that never waits on anything external (wizer's snapshot over the ready futures above).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}
