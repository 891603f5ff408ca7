//! Compiled code on disk, so a module is compiled once per machine and not once per process.
//!
//! Entries live under `<cache_dir>/wasmtime-<version>-<engine compatibility hash>/<sha256 of the code>.cwasm`, so
//! an engine with different settings or a different wasmtime never loads another's artifacts. Loading an artifact
//! maps native code into the process, so the directory must be private to the current user (mode 0700, owned by
//! us); if it is not, the disk cache is not used and a warning is logged.
//!
//! Only code its caller accepted (linked against the kernel's imports) is written, so a request whose code is refused
//! after compilation leaves nothing behind. The whole directory (every engine's entries) is held to
//! [`EngineOptions::max_cache_bytes`](crate::EngineOptions::max_cache_bytes), [`DEFAULT_MAX_CACHE_BYTES`] unless the
//! operator sets it: when an entry would not fit, the least recently used entries (by modification time, which a
//! load refreshes) are removed until the directory is at most [`EVICT_TO_PERCENT`]% full with the new entry, so the
//! directory is listed once per tenth of the cap written rather than on every write. Several processes may share the
//! directory: entries appear by rename, a reader whose entry vanishes compiles again, and removing a file another
//! process has mapped leaves its mapping intact. Each process counts the directory again at least every
//! [`RECOUNT_AFTER`], so processes writing at once can pass the cap by what the others wrote since their last count.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
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

/// The default cap on the disk cache, 1 GiB: all entries under the cache directory together, every engine version
/// and setting included. Room for the compiled Python engine (43 MiB) and JavaScript engine (3.8 MiB) of both
/// meterings with about 900 MiB to spare, or about 77,000 entries of a trivial module (13 KiB each).
pub const DEFAULT_MAX_CACHE_BYTES: u64 = 1 << 30;

/// Eviction frees room down to this share of the cap, so the next writes need no listing of the directory.
const EVICT_TO_PERCENT: u64 = 90;

/// How long a process trusts its own count of the bytes on disk (other processes may write to the directory too).
const RECOUNT_AFTER: Duration = Duration::from_secs(10);

/// How long compiling one module may take before it is refused (`None`: no limit, for the engines wasmagent ships).
pub(crate) type CompileLimit = Option<Duration>;

/// Compilations that may run at once, including ones whose caller gave up waiting: wasmtime cannot stop a
/// compilation, so this is what bounds the CPU a stream of slow-to-compile modules can take.
const MAX_CONCURRENT_COMPILES: usize = 2;

pub(crate) struct CodeCache {
    /// `<base>/wasmtime-<version>-<engine hash>`, when the disk cache is usable.
    dir: Option<PathBuf>,
    /// The directory [`Self::max_bytes`] applies to: every engine's entries.
    base: PathBuf,
    max_bytes: u64,
    shared: Arc<Shared>,
}

/// What every cache of one sandbox engine shares: the compile slots, and the count of bytes under the base directory.
#[derive(Default)]
pub(crate) struct Shared {
    compiles: CompileSlots,
    on_disk: Mutex<Option<Counted>>,
}

/// Bytes under the base directory: counted at `at`, plus what this process wrote since.
struct Counted {
    bytes: u64,
    at: Instant,
}

/// Counts compilations in flight.
#[derive(Default)]
struct CompileSlots {
    busy: Mutex<usize>,
    freed: Condvar,
}

impl CompileSlots {
    /// Takes a slot, waiting until `deadline` at most.
    fn acquire(shared: &Arc<Shared>, deadline: Instant) -> Option<CompileSlot> {
        let slots = &shared.compiles;
        let mut busy = slots.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy >= MAX_CONCURRENT_COMPILES {
            let wait = deadline.checked_duration_since(Instant::now()).filter(|w| !w.is_zero())?;
            busy = slots.freed.wait_timeout(busy, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
        *busy += 1;
        Some(CompileSlot(shared.clone()))
    }
}

struct CompileSlot(Arc<Shared>);

impl Drop for CompileSlot {
    fn drop(&mut self) {
        *self.0.compiles.busy.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        self.0.compiles.freed.notify_one();
    }
}

impl CodeCache {
    /// A cache for `engine`'s code under `base`, holding `base` to `max_bytes`; `shared` is shared by every cache of
    /// one sandbox engine.
    pub(crate) fn new(engine: &Engine, base: Option<PathBuf>, max_bytes: u64, shared: Arc<Shared>) -> Self {
        let dir = base.as_ref().and_then(|base| {
            let mut hasher = DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            let dir = base.join(format!("wasmtime-48.0.8-{:016x}", hasher.finish()));
            match private_dir(base).and_then(|()| private_dir(&dir)) {
                Ok(()) => Some(dir),
                Err(reason) => {
                    tracing::warn!("compiled-code cache disabled: {reason}");
                    None
                }
            }
        });
        CodeCache { dir, base: base.unwrap_or_default(), max_bytes, shared }
    }

    /// Loads `wasm` from the disk cache or compiles it, then hands it to `accept`. Compiled code is written to the
    /// disk cache only when `accept` succeeds; a cached entry `accept` refuses is removed.
    #[allow(clippy::too_many_arguments, reason = "internal; SandboxEngine::load is the interface")]
    pub(crate) fn load<T>(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
        transform: Option<&ModuleTransform<'_>>,
        on_compile: Option<&dyn Fn()>,
        limit: CompileLimit,
        accept: impl FnOnce(&CompiledCode) -> Result<T, KernelError>,
    ) -> Result<(T, CacheSource), KernelError> {
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
                Ok(code) => {
                    let accepted = accept(&code).inspect_err(|_| discard(path));
                    if accepted.is_ok() {
                        touch(path);
                    }
                    return accepted.map(|t| (t, CacheSource::Disk));
                }
                Err(e) => {
                    tracing::warn!("ignoring unusable cache entry {}: {e:#}", path.display());
                    discard(path);
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
            None => compile(engine, &binary, component)?,
            Some(limit) => self.compile_within(engine, binary.into_owned(), component, limit)?,
        };
        let accepted = accept(&code)?;
        if let Some(path) = path
            && let Err(e) = self.keep(&code, &path)
        {
            tracing::warn!("cannot write cache entry {}: {e:#}", path.display());
        }
        Ok((accepted, CacheSource::Compiled))
    }

    /// Compiles on a thread of its own and waits at most `limit` for it (counting the wait for a compile slot).
    /// A compilation that outlives its caller still finishes (wasmtime cannot stop one) and holds its slot until
    /// then; its code is dropped, never cached.
    fn compile_within(
        &self,
        engine: &Engine,
        binary: Vec<u8>,
        component: bool,
        limit: Duration,
    ) -> Result<CompiledCode, KernelError> {
        let refused = || {
            KernelError::InvalidCode(format!(
                "compiling the code took longer than the engine's compile limit ({} ms): it was refused",
                limit.as_millis()
            ))
        };
        let deadline = Instant::now() + limit;
        let slot = CompileSlots::acquire(&self.shared, deadline).ok_or_else(|| {
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
                let _ = send.send(compile(&engine, &binary, component));
            })
            .map_err(|e| KernelError::Unavailable(format!("cannot start a compilation thread: {e}")))?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(wait) {
            Ok(result) => result,
            Err(_) => Err(refused()),
        }
    }

    /// Writes `code` to `path`, first removing the least recently used entries when it would not fit under the
    /// cap. An entry larger than the whole cap is not written.
    fn keep(&self, code: &CompiledCode, path: &Path) -> wasmtime::Result<()> {
        let bytes = match code {
            CompiledCode::Module(m) => m.serialize()?,
            CompiledCode::Component(c) => c.serialize()?,
        };
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let Some(room) = self.max_bytes.checked_sub(size) else {
            tracing::debug!(
                "not caching {}: {size} bytes compiled, more than the whole cache cap ({} bytes)",
                path.display(),
                self.max_bytes
            );
            return Ok(());
        };
        // Held while writing, so this process's writers do not each count the room that one of them takes.
        let mut on_disk = self.shared.on_disk.lock().unwrap_or_else(PoisonError::into_inner);
        let trusted = on_disk.as_ref().filter(|c| c.at.elapsed() < RECOUNT_AFTER && c.bytes <= room);
        if trusted.is_none() {
            let low_water = self.max_bytes / 100 * EVICT_TO_PERCENT;
            let bytes = evict(&self.base, room, low_water.saturating_sub(size));
            *on_disk = Some(Counted { bytes, at: Instant::now() });
        }
        let dir = path.parent().ok_or_else(|| wasmtime::format_err!("cache path has no parent"))?;
        // Write then rename, so a reader never sees a half-written artifact.
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(&bytes)?;
        // The clock's own precision, not the file system's coarser one, so entries written in a burst keep their order.
        file.as_file().set_modified(SystemTime::now())?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        if let Some(counted) = on_disk.as_mut() {
            counted.bytes = counted.bytes.saturating_add(size);
        }
        Ok(())
    }
}

/// One file that counts against the cache cap.
struct Entry {
    path: PathBuf,
    size: u64,
    used: SystemTime,
}

/// Counts the entries under `base` and, when they total more than `room` bytes, removes the least recently used
/// until they total at most `budget` (at most `room`). Returns the bytes left. Entries are the compiled files and
/// unfinished temporary files in `base/wasmtime-*/`; nothing else is touched, and no symbolic link is followed.
fn evict(base: &Path, room: u64, budget: u64) -> u64 {
    let mut entries = cache_entries(base);
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    if total <= room {
        return total;
    }
    entries.sort_by_key(|e| e.used);
    for entry in entries {
        if total <= budget {
            break;
        }
        match std::fs::remove_file(&entry.path) {
            Ok(()) => tracing::debug!("evicted cache entry {} ({} bytes)", entry.path.display(), entry.size),
            // Another process evicted it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!("cannot evict cache entry {}: {e}", entry.path.display());
                continue;
            }
        }
        total = total.saturating_sub(entry.size);
    }
    total
}

/// Every file under `base` that counts against the cap; unreadable directories and files are skipped.
fn cache_entries(base: &Path) -> Vec<Entry> {
    let is_cache_dir = |name: &str| name.starts_with("wasmtime-");
    let is_entry = |name: &str| name.ends_with(".cwasm") || name.ends_with(".ccwasm") || name.starts_with(".tmp");
    let mut entries = Vec::new();
    for dir in read_dir(base) {
        let is_dir = dir.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || !dir.file_name().to_str().is_some_and(is_cache_dir) {
            continue;
        }
        for file in read_dir(&dir.path()) {
            if !file.file_name().to_str().is_some_and(is_entry) {
                continue;
            }
            let Ok(meta) = file.metadata() else { continue };
            if meta.is_file() {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                entries.push(Entry { path: file.path(), size: meta.len(), used });
            }
        }
    }
    entries
}

fn read_dir(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok)
}

/// Marks an entry as just used, so eviction keeps it longest.
fn touch(path: &Path) {
    if let Err(e) = std::fs::File::open(path).and_then(|f| f.set_modified(SystemTime::now())) {
        tracing::debug!("cannot refresh cache entry {}: {e}", path.display());
    }
}

/// Removes an entry that is unusable or whose code was refused.
fn discard(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove cache entry {}: {e}", path.display());
    }
}

fn compile(engine: &Engine, binary: &[u8], component: bool) -> Result<CompiledCode, KernelError> {
    if component {
        Component::new(engine, binary).map(CompiledCode::Component)
    } else {
        Module::new(engine, binary).map(CompiledCode::Module)
    }
    .map_err(|e| KernelError::InvalidCode(format!("{e:#}")))
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
    // SAFETY: the file was written by `CodeCache::keep` into a directory that only the current user can write
    // (checked by `private_dir`), and wasmtime checks the artifact's header against this engine's configuration.
    unsafe {
        if component {
            Component::deserialize_file(engine, path).map(CompiledCode::Component)
        } else {
            Module::deserialize_file(engine, path).map(CompiledCode::Module)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under the cache's engine directories: (name, size).
    fn files(base: &Path) -> Vec<(String, u64)> {
        let mut found = Vec::new();
        for dir in std::fs::read_dir(base).unwrap() {
            for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                let file = file.unwrap();
                found.push((file.file_name().to_string_lossy().into_owned(), file.metadata().unwrap().len()));
            }
        }
        found.sort();
        found
    }

    /// A distinct module per `n`, and its digest.
    fn module(n: usize) -> (Vec<u8>, String) {
        let wat = format!("(module (func (export \"f\") (result i32) i32.const {n}))");
        (wat.into_bytes(), format!("sha256:{n:064x}"))
    }

    fn load(cache: &CodeCache, engine: &Engine, n: usize) -> CacheSource {
        let (wasm, digest) = module(n);
        cache.load(engine, &wasm, &digest, None, None, None, |_| Ok(())).unwrap().1
    }

    fn cached(base: &Path, n: usize) -> bool {
        let name = format!("{}.cwasm", &module(n).1["sha256:".len()..]);
        files(base).iter().any(|(file, _)| *file == name)
    }

    #[test]
    fn the_disk_cache_stays_under_its_cap_and_keeps_the_most_recently_used_entries() {
        let base = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        // One entry's size, to set the cap to three and a half entries.
        let probe = tempfile::tempdir().unwrap();
        let probe_cache = CodeCache::new(&engine, Some(probe.path().into()), u64::MAX, Arc::default());
        load(&probe_cache, &engine, 1_000);
        let entry = files(probe.path())[0].1;
        let cap = entry * 7 / 2;

        let cache = CodeCache::new(&engine, Some(base.path().into()), cap, Arc::default());
        for n in 0..3 {
            assert_eq!(load(&cache, &engine, n), CacheSource::Compiled);
        }
        // Using entry 0 again makes entry 1 the least recently used.
        assert_eq!(load(&cache, &engine, 0), CacheSource::Disk);
        assert_eq!(load(&cache, &engine, 3), CacheSource::Compiled);
        assert!(cached(base.path(), 0) && !cached(base.path(), 1), "{:?}", files(base.path()));
        for n in 4..12 {
            assert_eq!(load(&cache, &engine, n), CacheSource::Compiled);
            let total: u64 = files(base.path()).iter().map(|(_, size)| size).sum();
            assert!(total <= cap, "{total} bytes cached after module {n}, cap {cap}: {:?}", files(base.path()));
        }
        let kept: Vec<usize> = (0..12).filter(|&n| cached(base.path(), n)).collect();
        assert_eq!(kept, [9, 10, 11]);
    }

    #[test]
    fn a_directory_filled_by_another_process_is_brought_under_the_cap_at_the_first_write() {
        let base = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let other = CodeCache::new(&engine, Some(base.path().into()), u64::MAX, Arc::default());
        for n in 0..6 {
            load(&other, &engine, n);
        }
        let entry = files(base.path())[0].1;
        let cap = entry * 7 / 2;
        let cache = CodeCache::new(&engine, Some(base.path().into()), cap, Arc::default());
        load(&cache, &engine, 6);
        let kept: Vec<usize> = (0..7).filter(|&n| cached(base.path(), n)).collect();
        assert_eq!(kept, [4, 5, 6]);
    }

    #[test]
    fn an_entry_larger_than_the_whole_cap_is_not_written_and_evicts_nothing() {
        let base = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CodeCache::new(&engine, Some(base.path().into()), u64::MAX, Arc::default());
        load(&cache, &engine, 0);
        let small = CodeCache::new(&engine, Some(base.path().into()), 16, Arc::default());
        assert_eq!(load(&small, &engine, 1), CacheSource::Compiled);
        assert!(cached(base.path(), 0) && !cached(base.path(), 1), "{:?}", files(base.path()));
    }

    #[test]
    fn code_its_caller_refuses_leaves_no_entry_and_a_refused_entry_is_removed() {
        let base = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CodeCache::new(&engine, Some(base.path().into()), u64::MAX, Arc::default());
        let (wasm, digest) = module(0);
        let refuse = |_: &CompiledCode| Err::<(), _>(KernelError::InvalidCode("cannot link the module".into()));
        let refused = cache.load(&engine, &wasm, &digest, None, None, None, refuse);
        assert!(matches!(refused, Err(KernelError::InvalidCode(_))), "{:?}", refused.err());
        assert_eq!(files(base.path()), []);

        // An entry written before (by an accepting caller, or an older version) goes once its code is refused.
        load(&cache, &engine, 0);
        assert!(cached(base.path(), 0));
        let refused = cache.load(&engine, &wasm, &digest, None, None, None, refuse);
        assert!(refused.is_err());
        assert_eq!(files(base.path()), []);
    }

    #[test]
    fn code_refused_by_the_compile_limit_is_not_cached_when_its_compilation_finishes() {
        let base = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let shared = Arc::new(Shared::default());
        let cache = CodeCache::new(&engine, Some(base.path().into()), u64::MAX, shared.clone());
        let (wasm, digest) = module(0);
        let refused = cache.load(&engine, &wasm, &digest, None, None, Some(Duration::ZERO), |_| Ok(()));
        let Err(KernelError::InvalidCode(message)) = refused else { panic!("not refused: {:?}", refused.err()) };
        assert!(message.contains("compile limit (0 ms)"), "{message}");
        // The compilation goes on in the background; it gives its slot back when it ends.
        let deadline = Instant::now() + Duration::from_secs(60);
        while *shared.compiles.busy.lock().unwrap() > 0 {
            assert!(Instant::now() < deadline, "the compilation did not end");
            std::thread::yield_now();
        }
        assert_eq!(files(base.path()), []);
    }
}
