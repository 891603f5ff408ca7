//! Compiled code on disk, so a module is compiled once per machine and not once per process.
//!
//! Entries live under `<cache_dir>/wasmtime-<version>-<engine compatibility hash>/<sha256 of the code>.cwasm`, so
//! an engine with different settings or a different wasmtime never loads another's artifacts. Loading an artifact
//! maps native code into the process, so the directory must be private to the current user (mode 0700, owned by
//! us); if it is not, the disk cache is not used and a warning is logged.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmagent_kernel::KernelError;
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

/// A compiled core module or component.
#[derive(Clone)]
pub enum CompiledCode {
    /// A core WebAssembly module (WASI preview1).
    Module(Module),
    /// A component (WASI preview2).
    Component(Component),
}

/// Rewrites a core module: `Ok(Some(bytes))` replaces it, `Ok(None)` keeps it, `Err(message)` refuses it.
pub type RewriteFn = dyn Fn(&[u8]) -> Result<Option<Vec<u8>>, String>;

/// A rewrite a kernel applies to core modules before they are compiled (for example to add instrumentation).
/// Components are never rewritten.
pub struct ModuleTransform<'a> {
    /// Distinguishes the rewritten code in the disk cache; change it whenever the rewrite changes.
    pub cache_tag: &'a str,
    /// The rewrite.
    pub apply: &'a RewriteFn,
}

/// Where compiled code came from, reported as `usage.code_cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSource {
    /// Already compiled in this process.
    Memory,
    /// Loaded from the disk cache.
    Disk,
    /// Compiled for this run.
    Compiled,
}

impl CacheSource {
    /// `memory`, `disk` or `compiled`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheSource::Memory => "memory",
            CacheSource::Disk => "disk",
            CacheSource::Compiled => "compiled",
        }
    }
}

/// How long compiling one module may take before it is refused (`None`: no limit, for the engines wasmagent ships).
pub(crate) type CompileLimit = Option<Duration>;

/// Compilations that may run at once, including ones whose caller gave up waiting: wasmtime cannot stop a
/// compilation, so this is what bounds the CPU a stream of slow-to-compile modules can take.
const MAX_CONCURRENT_COMPILES: usize = 2;

pub(crate) struct CodeCache {
    dir: Option<PathBuf>,
    compiles: Arc<CompileSlots>,
}

/// Counts compilations in flight.
#[derive(Default)]
pub(crate) struct CompileSlots {
    busy: Mutex<usize>,
    freed: Condvar,
}

impl CompileSlots {
    /// Takes a slot, waiting until `deadline` at most.
    fn acquire(self: &Arc<Self>, deadline: Instant) -> Option<CompileSlot> {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy >= MAX_CONCURRENT_COMPILES {
            let wait = deadline.checked_duration_since(Instant::now()).filter(|w| !w.is_zero())?;
            busy = self.freed.wait_timeout(busy, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
        *busy += 1;
        Some(CompileSlot(self.clone()))
    }
}

struct CompileSlot(Arc<CompileSlots>);

impl Drop for CompileSlot {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        self.0.freed.notify_one();
    }
}

impl CodeCache {
    /// A cache for `engine`'s code under `base`; `compiles` is shared by every cache of one sandbox engine.
    pub(crate) fn new(engine: &Engine, base: Option<PathBuf>, compiles: Arc<CompileSlots>) -> Self {
        let dir = base.and_then(|base| {
            let mut hasher = DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            let dir = base.join(format!("wasmtime-48.0.8-{:016x}", hasher.finish()));
            match private_dir(&base).and_then(|()| private_dir(&dir)) {
                Ok(()) => Some(dir),
                Err(reason) => {
                    tracing::warn!("compiled-code cache disabled: {reason}");
                    None
                }
            }
        });
        CodeCache { dir, compiles }
    }

    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
        transform: Option<&ModuleTransform<'_>>,
        on_compile: Option<&dyn Fn()>,
        limit: CompileLimit,
    ) -> Result<(CompiledCode, CacheSource), KernelError> {
        let mut binary = to_binary(wasm)?;
        let component = wasmparser::Parser::is_component(&binary);
        let key = digest.strip_prefix("sha256:").unwrap_or(digest);
        let file_name = match transform.filter(|_| !component) {
            Some(t) => format!("{key}-{}.cwasm", t.cache_tag),
            None => format!("{key}.{}", if component { "ccwasm" } else { "cwasm" }),
        };
        let path = self.dir.as_ref().map(|d| d.join(file_name));
        if let Some(path) = path.as_deref().filter(|p| p.is_file()) {
            match deserialize(engine, path, component) {
                Ok(code) => return Ok((code, CacheSource::Disk)),
                Err(e) => {
                    tracing::warn!("ignoring unusable cache entry {}: {e:#}", path.display());
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        if let Some(notify) = on_compile {
            notify();
        }
        if let Some(transform) = transform.filter(|_| !component)
            && let Some(rewritten) = (transform.apply)(&binary).map_err(KernelError::InvalidCode)?
        {
            binary = std::borrow::Cow::Owned(rewritten);
        }
        let code = match limit {
            None => compile_and_keep(engine, &binary, component, path.as_deref())?,
            Some(limit) => self.compile_within(engine, binary.into_owned(), component, path, limit)?,
        };
        Ok((code, CacheSource::Compiled))
    }

    /// Compiles on a thread of its own and waits at most `limit` for it (counting the wait for a compile slot).
    /// A compilation that outlives its caller still finishes (wasmtime cannot stop one) and is kept in the disk
    /// cache, but it holds its slot until then.
    fn compile_within(
        &self,
        engine: &Engine,
        binary: Vec<u8>,
        component: bool,
        path: Option<PathBuf>,
        limit: Duration,
    ) -> Result<CompiledCode, KernelError> {
        let refused = || {
            KernelError::InvalidCode(format!(
                "compiling the code took longer than the engine's compile limit ({} ms): it was refused",
                limit.as_millis()
            ))
        };
        let deadline = Instant::now() + limit;
        let slot = self.compiles.acquire(deadline).ok_or_else(|| {
            KernelError::Unavailable(format!(
                "{MAX_CONCURRENT_COMPILES} other compilations are in progress; none finished within the compile \
                 limit ({} ms)",
                limit.as_millis()
            ))
        })?;
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("wasmagent-compile".into())
            .spawn(move || {
                let _slot = slot;
                let _ = send.send(compile_and_keep(&engine, &binary, component, path.as_deref()));
            })
            .map_err(|e| KernelError::Unavailable(format!("cannot start a compilation thread: {e}")))?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(wait) {
            Ok(result) => result,
            Err(_) => Err(refused()),
        }
    }
}

/// Compiles `binary` and writes it to the disk cache at `path`, if given.
fn compile_and_keep(
    engine: &Engine,
    binary: &[u8],
    component: bool,
    path: Option<&Path>,
) -> Result<CompiledCode, KernelError> {
    let code = if component {
        Component::new(engine, binary).map(CompiledCode::Component)
    } else {
        Module::new(engine, binary).map(CompiledCode::Module)
    }
    .map_err(|e| KernelError::InvalidCode(format!("{e:#}")))?;
    if let Some(path) = path
        && let Err(e) = store(&code, path)
    {
        tracing::warn!("cannot write cache entry {}: {e:#}", path.display());
    }
    Ok(code)
}

fn to_binary(wasm: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, KernelError> {
    if wasm.starts_with(b"\0asm") {
        return Ok(std::borrow::Cow::Borrowed(wasm));
    }
    wat::parse_bytes(wasm).map_err(|e| {
        KernelError::InvalidCode(format!(
            "not a WebAssembly binary (no \\0asm header) and not valid WebAssembly text: {e}"
        ))
    })
}

#[allow(
    unsafe_code,
    reason = "loading precompiled code is unsafe by nature; see the module docs for why it is safe here"
)]
fn deserialize(engine: &Engine, path: &Path, component: bool) -> wasmtime::Result<CompiledCode> {
    // SAFETY: the file was written by `store` below into a directory that only the current user can write
    // (checked by `private_dir`), and wasmtime checks the artifact's header against this engine's configuration.
    unsafe {
        if component {
            Component::deserialize_file(engine, path).map(CompiledCode::Component)
        } else {
            Module::deserialize_file(engine, path).map(CompiledCode::Module)
        }
    }
}

fn store(code: &CompiledCode, path: &Path) -> wasmtime::Result<()> {
    let bytes = match code {
        CompiledCode::Module(m) => m.serialize()?,
        CompiledCode::Component(c) => c.serialize()?,
    };
    let dir = path.parent().ok_or_else(|| wasmtime::format_err!("cache path has no parent"))?;
    // Write then rename, so a reader never sees a half-written artifact.
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(&bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn private_dir(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!("{} is owned by another user", dir.display()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!("{} is writable by other users", dir.display()));
    }
    Ok(())
}
