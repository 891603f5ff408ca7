//! Sessions: one instance of a script engine kept between calls, each call held to the manifest's per-run limits.
//!
//! A session's store lives as long as the session: its memory limiter counts the instance's memory as a whole
//! (`memory_limit_bytes` caps everything the calls together leave behind), while each call gets its own deadline,
//! fuel, output streams and kernel state (tool and HTTP sessions, so `max_host_calls` and `max_http_requests` are
//! per call). Files written to the session's scratch directory (mounted read-write at [`SCRATCH_GUEST_PATH`]) stay
//! for later calls and are removed with the session.
//!
//! A call whose guest code trapped (a timeout, fuel or memory exhaustion, an output flood, a stack overflow)
//! stopped the engine part-way through its own bookkeeping (allocator, garbage collector, interpreter state), so
//! the instance is not entered again: [`CallResult::usable`] is false and the kernel ends the session.
//!
//! [`ModuleSession::fork`] copies a module instance's state into a fresh instance of the same module: its memories
//! and mutable globals (all of which the module must export; [`check_forkable`]) and its scratch directory.
//! Tables are not copied: [`check_forkable`] admits only modules whose tables cannot change after instantiation.

use crate::fs_audit::FsAudit;
use crate::host::{EmptyRoot, GuestIo, ModuleRun, ModuleState, WasiEnvironment};
use crate::sockets_audit;
use std::path::{Path, PathBuf};
use wasmagent_engine::{MAX_OPEN_HANDLES, SandboxEngine};
use wasmagent_kernel::KernelError;
use wasmagent_manifest::EffectiveManifest;
use wasmtime::{Extern, Instance, InstancePre, Mutability, Store};
use wasmtime_wasi::WasiView;

/// Where a session's scratch directory appears to the guest.
pub const SCRATCH_GUEST_PATH: &str = "/scratch";

/// Files and directories a scratch directory may hold (walked after every call to size it, copied by a fork).
const MAX_SCRATCH_ENTRIES: usize = 10_000;

/// A session's scratch directory on the host (a fresh temporary directory, removed when dropped).
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new, empty scratch directory.
    pub fn new() -> Result<Self, KernelError> {
        tempfile::Builder::new()
            .prefix("wasmagent-session-")
            .tempdir()
            .map(Scratch)
            .map_err(|e| KernelError::Unavailable(format!("cannot create the session's scratch directory: {e}")))
    }

    /// The directory on the host.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Bytes the directory holds, or why it cannot be measured (too many entries, an I/O error).
    pub fn bytes(&self) -> Result<u64, String> {
        let mut total = 0u64;
        walk(self.path(), &mut |_, meta| {
            total = total.saturating_add(meta.len());
            Ok(())
        })?;
        Ok(total)
    }

    /// Copies every file and directory into `other` (an empty scratch directory). Symbolic links are not copied.
    fn copy_into(&self, other: &Scratch) -> Result<(), String> {
        let from = self.path().to_path_buf();
        walk(&from, &mut |path, meta| {
            let relative = path.strip_prefix(&from).map_err(|e| e.to_string())?;
            let target = other.path().join(relative);
            if meta.is_dir() {
                std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", relative.display()))
            } else if meta.is_file() {
                std::fs::copy(path, &target).map(|_| ()).map_err(|e| format!("{}: {e}", relative.display()))
            } else {
                Ok(())
            }
        })
    }
}

/// Calls `visit` on every entry under `dir` (directories before their contents), at most
/// [`MAX_SCRATCH_ENTRIES`]; symbolic links are visited but not followed.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &std::fs::Metadata) -> Result<(), String>) -> Result<(), String> {
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(current) = stack.pop() {
        let entries = std::fs::read_dir(&current).map_err(|e| format!("cannot read {}: {e}", current.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", current.display()))?;
            seen += 1;
            if seen > MAX_SCRATCH_ENTRIES {
                return Err(format!("the scratch directory holds more than {MAX_SCRATCH_ENTRIES} entries"));
            }
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            visit(&path, &meta)?;
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Refuses a manifest with a mount at or under [`SCRATCH_GUEST_PATH`], which the session's scratch directory
/// would hide.
pub fn check_scratch_path(kernel: &'static str, manifest: &EffectiveManifest) -> Result<(), KernelError> {
    let clash = manifest.mounts().iter().find(|m| {
        m.guest == SCRATCH_GUEST_PATH || m.guest.strip_prefix(SCRATCH_GUEST_PATH).is_some_and(|r| r.starts_with('/'))
    });
    match clash {
        Some(mount) => Err(KernelError::Unsupported {
            kernel,
            field: "mounts",
            reason: format!(
                "a session mounts its scratch directory at {SCRATCH_GUEST_PATH}, and the manifest mounts {} at {}",
                mount.host.display(),
                mount.guest
            ),
        }),
        None => Ok(()),
    }
}

/// What one call of a session produced, and whether the instance may be entered again.
pub struct CallResult<E> {
    /// The call's output, denials, usage and kernel state, as a fresh run reports them.
    pub run: ModuleRun<E>,
    /// False when the guest trapped: the engine stopped part-way and must not be entered again.
    pub usable: bool,
}

/// The error for a store that could not get an instance.
fn instantiation_error(error: wasmtime::Error) -> KernelError {
    if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        KernelError::Unavailable(format!("every sandbox slot is in use: {error}"))
    } else {
        KernelError::Unavailable(format!("cannot instantiate the engine: {error:#}"))
    }
}

/// A preview1 module instance kept between calls (the JavaScript engine's).
pub struct ModuleSession<E: 'static> {
    store: Store<ModuleState<E>>,
    instance: Instance,
    env: WasiEnvironment,
    scratch: Scratch,
}

impl<E: Send + 'static> ModuleSession<E> {
    /// Instantiates `pre` in a store held to `manifest`, with a new scratch directory. `ext` is the kernel state
    /// during instantiation (each call brings its own).
    pub fn open(
        engine: &SandboxEngine,
        root: &EmptyRoot,
        pre: &InstancePre<ModuleState<E>>,
        manifest: &EffectiveManifest,
        io: GuestIo<'_>,
        ext: E,
    ) -> Result<Self, KernelError> {
        Self::open_with(engine, root, pre, manifest, io, ext, Scratch::new()?)
    }

    fn open_with(
        engine: &SandboxEngine,
        root: &EmptyRoot,
        pre: &InstancePre<ModuleState<E>>,
        manifest: &EffectiveManifest,
        io: GuestIo<'_>,
        ext: E,
        scratch: Scratch,
    ) -> Result<Self, KernelError> {
        let mut env = WasiEnvironment::new(root, manifest, io, Some(scratch.path()))?;
        let mut wasi = env.builder.build_p1();
        wasi.ctx().table.set_max_capacity(MAX_OPEN_HANDLES);
        let state = ModuleState {
            wasi,
            limiter: engine.limiter(manifest),
            audit: FsAudit::new(std::mem::take(&mut env.preopens)),
            clock: env.clock,
            ext,
        };
        let mut store = Store::new(pre.module().engine(), state);
        store.limiter(|s| &mut s.limiter);
        engine.arm(&mut store, manifest)?;
        let active = engine.start_run();
        let instance = pre.instantiate(&mut store).map_err(instantiation_error)?;
        drop(active);
        Ok(ModuleSession { store, instance, env, scratch })
    }

    /// Runs one call: `entry` enters the instance with `ext` as the kernel state, under a fresh deadline, fuel and
    /// output caps.
    pub fn call(
        &mut self,
        engine: &SandboxEngine,
        manifest: &EffectiveManifest,
        ext: E,
        entry: impl FnOnce(&mut Store<ModuleState<E>>, Instance) -> wasmtime::Result<()>,
    ) -> Result<CallResult<E>, KernelError> {
        self.env.stdout.restart();
        self.env.stderr.restart();
        drop(sockets_audit::take(&self.env.net_denials));
        let data = self.store.data_mut();
        data.clock = data.clock.restarted(manifest.cpu_ms());
        let idle = std::mem::replace(&mut data.ext, ext);
        let fuel_given = engine.arm(&mut self.store, manifest)?;
        let active = engine.start_run();
        let result = entry(&mut self.store, self.instance);
        let fuel_consumed = fuel_given.saturating_sub(self.store.get_fuel().unwrap_or(0));
        let wall_ms = active.elapsed_ms();
        drop(active);
        let usable = result.is_ok();
        let data = self.store.data_mut();
        let used = std::mem::replace(&mut data.ext, idle);
        let denials = data.audit.take_denials();
        let run = self.env.conclude(result, &data.limiter, denials, fuel_consumed, wall_ms, manifest, used)?;
        Ok(CallResult { run, usable })
    }

    /// Bytes the scratch directory holds now.
    pub fn scratch_bytes(&self) -> Result<u64, String> {
        self.scratch.bytes()
    }

    /// Whether any of the instance's exported memories holds `needle` (for tests that look for leaked data).
    #[doc(hidden)]
    pub fn memory_contains(&mut self, needle: &[u8]) -> bool {
        let memories: Vec<wasmtime::Memory> =
            self.instance.exports(&mut self.store).filter_map(|e| e.into_extern().into_memory()).collect();
        !needle.is_empty()
            && memories.iter().any(|memory| memory.data(&self.store).windows(needle.len()).any(|w| w == needle))
    }

    /// A new session in a fresh instance of `pre` (the module this session runs), holding a copy of this
    /// session's memories, mutable globals and scratch files. Only call it between calls, on a module that
    /// [`check_forkable`] admitted.
    pub fn fork(
        &mut self,
        engine: &SandboxEngine,
        root: &EmptyRoot,
        pre: &InstancePre<ModuleState<E>>,
        manifest: &EffectiveManifest,
        io: GuestIo<'_>,
        ext: E,
    ) -> Result<Self, KernelError> {
        let scratch = Scratch::new()?;
        self.scratch.copy_into(&scratch).map_err(scratch_copy_error)?;
        let mut child = Self::open_with(engine, root, pre, manifest, io, ext, scratch)?;
        for (name, export) in self.state_exports() {
            match export {
                Extern::Memory(memory) => child.load_memory(&name, memory.data(&self.store))?,
                Extern::Global(global) => child.load_global(&name, global.get(&mut self.store))?,
                _ => {}
            }
        }
        Ok(child)
    }

    /// A copy of this session's state held on the host (memories, mutable globals, scratch files), from which
    /// [`ModuleSession::restore`] makes new sessions. Only between calls, on a module [`check_forkable`] admitted.
    pub fn snapshot(&mut self) -> Result<ModuleSnapshot, KernelError> {
        let scratch = Scratch::new()?;
        self.scratch.copy_into(&scratch).map_err(scratch_copy_error)?;
        let mut snapshot = ModuleSnapshot { memories: Vec::new(), globals: Vec::new(), scratch };
        for (name, export) in self.state_exports() {
            match export {
                Extern::Memory(memory) => snapshot.memories.push((name, memory.data(&self.store).to_vec())),
                Extern::Global(global) => snapshot.globals.push((name, global.get(&mut self.store))),
                _ => {}
            }
        }
        Ok(snapshot)
    }

    /// A new session in a fresh instance of `pre` holding `snapshot`'s state (a copy: the snapshot can be restored
    /// again).
    pub fn restore(
        engine: &SandboxEngine,
        root: &EmptyRoot,
        pre: &InstancePre<ModuleState<E>>,
        manifest: &EffectiveManifest,
        io: GuestIo<'_>,
        ext: E,
        snapshot: &ModuleSnapshot,
    ) -> Result<Self, KernelError> {
        let scratch = Scratch::new()?;
        snapshot.scratch.copy_into(&scratch).map_err(scratch_copy_error)?;
        let mut session = Self::open_with(engine, root, pre, manifest, io, ext, scratch)?;
        for (name, bytes) in &snapshot.memories {
            session.load_memory(name, bytes)?;
        }
        for (name, value) in &snapshot.globals {
            session.load_global(name, *value)?;
        }
        Ok(session)
    }

    /// The exported memories and mutable globals: everything [`check_forkable`] guarantees a copy needs.
    fn state_exports(&mut self) -> Vec<(String, Extern)> {
        let exports: Vec<(String, Extern)> =
            self.instance.exports(&mut self.store).map(|e| (e.name().to_owned(), e.into_extern())).collect();
        exports
            .into_iter()
            .filter(|(_, export)| match export {
                Extern::Memory(_) => true,
                Extern::Global(global) => global.ty(&self.store).mutability() == Mutability::Var,
                _ => false,
            })
            .collect()
    }

    /// Grows exported memory `name` to hold `bytes` and writes them from its start (a fresh instance's memory is
    /// never larger than a copy of the same module's, which only grew).
    fn load_memory(&mut self, name: &str, bytes: &[u8]) -> Result<(), KernelError> {
        let Some(target) = self.instance.get_memory(&mut self.store, name) else {
            return Err(KernelError::Unavailable(format!("the new instance has no memory {name:?}")));
        };
        let pages = u64::try_from(bytes.len()).unwrap_or(u64::MAX).div_ceil(target.page_size(&self.store));
        let have = target.size(&self.store);
        if pages > have {
            target.grow(&mut self.store, pages - have).map_err(|e| state_error("memory", e))?;
        }
        let memory = target.data_mut(&mut self.store);
        let Some(dest) = memory.get_mut(..bytes.len()) else {
            return Err(KernelError::Unavailable("the new instance's memory is smaller than the copy".into()));
        };
        dest.copy_from_slice(bytes);
        if let Some(rest) = memory.get_mut(bytes.len()..) {
            rest.fill(0);
        }
        Ok(())
    }

    /// Sets exported global `name` to `value`.
    fn load_global(&mut self, name: &str, value: wasmtime::Val) -> Result<(), KernelError> {
        let Some(target) = self.instance.get_global(&mut self.store, name) else {
            return Err(KernelError::Unavailable(format!("the new instance has no global {name:?}")));
        };
        target.set(&mut self.store, value).map_err(|e| state_error("globals", e))
    }
}

/// A module session's state held on the host: its memories and mutable globals, and a copy of its scratch files.
pub struct ModuleSnapshot {
    memories: Vec<(String, Vec<u8>)>,
    globals: Vec<(String, wasmtime::Val)>,
    scratch: Scratch,
}

impl ModuleSnapshot {
    /// Bytes of linear memory the snapshot holds.
    pub fn memory_bytes(&self) -> usize {
        self.memories.iter().map(|(_, bytes)| bytes.len()).sum()
    }
}

fn scratch_copy_error(error: String) -> KernelError {
    KernelError::Unavailable(format!("cannot copy the session's scratch directory: {error}"))
}

fn state_error(what: &str, error: wasmtime::Error) -> KernelError {
    KernelError::Unavailable(format!("cannot copy the session's {what} into the new instance: {error:#}"))
}

/// Whether a fresh instance of `wasm` can be given another instance's complete state through its exports alone:
/// every memory and every mutable global is exported, and no table can change after instantiation (each has a
/// maximum equal to its minimum, none is imported or exported, and no code writes one). Anything else would make a
/// fork silently differ from its parent.
pub fn check_forkable(wasm: &[u8]) -> Result<(), String> {
    use wasmparser::{ExternalKind, Operator, Parser, Payload, TypeRef, ValType};
    let mut memories = 0u32;
    let mut mutable_globals = Vec::new();
    let mut exported_memories = 0u32;
    let mut exported_globals = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| e.to_string())? {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| e.to_string())?;
                    match import.ty {
                        TypeRef::Memory(_) | TypeRef::Global(_) | TypeRef::Table(_) => {
                            return Err(format!("the module imports {}::{}", import.module, import.name));
                        }
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(reader) => memories += reader.count(),
            Payload::TableSection(reader) => {
                for table in reader {
                    let table = table.map_err(|e| e.to_string())?;
                    if table.ty.maximum != Some(table.ty.initial) {
                        return Err("a table of the module can grow".into());
                    }
                }
            }
            Payload::GlobalSection(reader) => {
                for (index, global) in reader.into_iter().enumerate() {
                    let ty = global.map_err(|e| e.to_string())?.ty;
                    if ty.mutable {
                        if !matches!(ty.content_type, ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64) {
                            return Err(format!("mutable global {index} holds a reference or vector"));
                        }
                        mutable_globals.push(index as u32);
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| e.to_string())?;
                    match export.kind {
                        ExternalKind::Memory => exported_memories += 1,
                        ExternalKind::Global => exported_globals.push(export.index),
                        ExternalKind::Table => return Err(format!("the module exports table {:?}", export.name)),
                        _ => {}
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut reader = body.get_operators_reader().map_err(|e| e.to_string())?;
                while !reader.eof() {
                    match reader.read().map_err(|e| e.to_string())? {
                        Operator::TableSet { .. }
                        | Operator::TableGrow { .. }
                        | Operator::TableFill { .. }
                        | Operator::TableCopy { .. }
                        | Operator::TableInit { .. } => return Err("the module's code writes a table".into()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if exported_memories < memories {
        return Err("a memory of the module is not exported".into());
    }
    if let Some(global) = mutable_globals.iter().find(|g| !exported_globals.contains(g)) {
        return Err(format!("mutable global {global} of the module is not exported"));
    }
    Ok(())
}

/// A session's bookkeeping shared by the script kernels: the call count, whether (and why) the session ended, and
/// the scratch directory's cap.
#[derive(Debug, Clone)]
pub struct SessionBook {
    calls: u64,
    ended: Option<String>,
    scratch_limit: u64,
}

impl SessionBook {
    /// A session with no calls yet whose scratch directory may hold `scratch_limit` bytes after a call.
    pub fn new(scratch_limit: u64) -> Self {
        SessionBook { calls: 0, ended: None, scratch_limit }
    }

    /// The next call's sequence number (from 1), or why the session cannot take one.
    pub fn next_call(&self) -> Result<u64, KernelError> {
        match &self.ended {
            Some(reason) => Err(KernelError::SessionEnded(reason.clone())),
            None => Ok(self.calls + 1),
        }
    }

    /// Records a finished call in its report (`session_call`, and `session_ended` when this call ended the
    /// session: the guest trapped, or the scratch directory is over its cap).
    pub fn finish(&mut self, report: &mut wasmagent_kernel::RunReport, usable: bool, scratch: Result<u64, String>) {
        self.calls += 1;
        report.session_call = Some(self.calls);
        if !usable {
            let why = report.error.as_ref().map(|e| e.message.as_str()).unwrap_or("the guest trapped");
            let why = wasmagent_kernel::bounds::cut(why, 512);
            self.end(format!(
                "call {} stopped the engine part-way ({}: {why}); its state may be inconsistent, so it is not \
                 entered again",
                self.calls,
                report.outcome.as_str()
            ));
        } else {
            match scratch {
                Ok(bytes) if bytes > self.scratch_limit => self.end(format!(
                    "after call {} the scratch directory holds {bytes} bytes, more than session_scratch_bytes ({})",
                    self.calls, self.scratch_limit
                )),
                Ok(_) => {}
                Err(e) => self.end(format!("after call {} the scratch directory cannot be measured: {e}", self.calls)),
            }
        }
        report.session_ended = self.ended.clone();
    }

    /// Ends the session: later calls are refused with `reason` (the first reason stays).
    pub fn end(&mut self, reason: String) {
        self.ended.get_or_insert(reason);
    }

    /// Why the session ended, if it has.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// Calls run so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The cap on the scratch directory.
    pub fn scratch_limit(&self) -> u64 {
        self.scratch_limit
    }
}
