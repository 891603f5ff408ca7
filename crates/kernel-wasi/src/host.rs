//! Running preview1 modules for any kernel: the WASI environment built from a manifest, a store with every limit
//! armed, and what came out. The wasi kernel runs `_start` through it; script kernels (js, python) run their
//! engine module through it with their own imports, so a script is held to the manifest exactly as a module is.

use crate::clock::{HasRunClock, RunClock};
use crate::fs_audit::{self, DirInfo, FsAudit, HasFsAudit};
use crate::sockets_audit::{self, NetDenials, SOCKETS_REFUSED, record};
use std::path::Path;
use wasmagent_egress::EgressRecords;
use wasmagent_engine::{
    CacheSource, CappedOutput, CapturedOutput, GuestLimiter, MAX_OPEN_HANDLES, ReportParts, SandboxEngine, Termination,
};
use wasmagent_kernel::{Denial, KernelError, RunReport, Unlisted};
use wasmagent_manifest::{Access, EffectiveManifest};
use wasmagent_tools::ToolRecords;
use wasmtime::{Instance, InstancePre, Linker, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder, WasiView};

/// The `len` bytes at `ptr` in a guest's linear memory `memory`, or `None` unless all of them lie inside it. `ptr` is
/// a wasm32 address as the guest passed it (an `i32` read as unsigned). Every host import that reads guest memory
/// goes through here, so a bad pointer or length is an error, never a panic.
pub fn guest_bytes(memory: &[u8], ptr: i32, len: usize) -> Option<&[u8]> {
    let start = ptr as u32 as usize;
    memory.get(start..start.checked_add(len)?)
}

/// Store state of a preview1 run: WASI, the memory limiter, the filesystem audit, and the kernel's own state `E`.
pub struct ModuleState<E> {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: GuestLimiter,
    pub(crate) audit: FsAudit,
    pub(crate) clock: RunClock,
    /// The embedding kernel's per-run state (its host functions reach it through `Caller::data_mut`).
    pub ext: E,
}

impl<E> HasRunClock for ModuleState<E> {
    fn run_clock(&self) -> RunClock {
        self.clock
    }
}

impl<E> HasFsAudit for ModuleState<E> {
    fn fs_audit(&mut self) -> &mut FsAudit {
        &mut self.audit
    }
}

/// A linker with WASI preview1 and the filesystem audit imports. Kernels add their own imports to it.
pub fn module_linker<E: Send + 'static>(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<ModuleState<E>>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut ModuleState<E>| &mut s.wasi)?;
    fs_audit::add_audit_functions(&mut linker)?;
    Ok(linker)
}

/// The empty, read-only directory every guest sees at `/` (unless a mount is placed there), so that accesses
/// outside every mount reach the host and are reported. The process holds a lock on it while it lives, so another
/// process can tell a root left by a process that was killed.
pub struct EmptyRoot {
    dir: tempfile::TempDir,
    _lock: std::fs::File,
}

/// How an empty root's name starts.
const ROOT_PREFIX: &str = "wasmagent-root-";
/// A root younger than this is never swept: its process may be between creating and locking it.
const SWEEP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

impl EmptyRoot {
    /// Creates the directory (removed when dropped) and locks it, after removing the unlocked roots other
    /// processes left (a process killed, or one that exited without dropping its kernels, cannot remove its own).
    pub fn new() -> Result<Self, KernelError> {
        let unavailable =
            |e: std::io::Error| KernelError::Unavailable(format!("cannot create the empty root directory: {e}"));
        sweep_stale_roots(&std::env::temp_dir());
        let dir = tempfile::Builder::new().prefix(ROOT_PREFIX).tempdir().map_err(unavailable)?;
        let lock = std::fs::File::open(dir.path()).map_err(unavailable)?;
        lock.lock().map_err(unavailable)?;
        Ok(EmptyRoot { dir, _lock: lock })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the empty roots in `dir` that no process holds locked and that are old enough not to be in the middle
/// of being created. Only empty directories are removed (`rmdir`); errors leave things as they are.
fn sweep_stale_roots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten().take(100_000) {
        if !entry.file_name().to_str().is_some_and(|name| name.starts_with(ROOT_PREFIX)) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= SWEEP_MIN_AGE);
        let Ok(handle) = std::fs::File::open(entry.path()) else { continue };
        if old && handle.try_lock().is_ok() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The guest's program name, arguments and standard input.
#[derive(Debug, Clone, Copy)]
pub struct GuestIo<'a> {
    /// `argv[0]`.
    pub name: &'a str,
    /// Arguments after the name.
    pub args: &'a [String],
    /// Standard input.
    pub stdin: &'a [u8],
}

/// What a module or component run produced.
pub struct ModuleRun<E> {
    /// How the entry call ended.
    pub termination: Termination,
    /// Captured stdout.
    pub stdout: CapturedOutput,
    /// Captured stderr.
    pub stderr: CapturedOutput,
    /// Accesses the host refused.
    pub denials: Vec<Denial>,
    /// Refused accesses counted but not listed (past the report bound).
    pub unlisted_denials: u64,
    /// Wall-clock time of instantiation and execution.
    pub wall_ms: f64,
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Peak linear memory.
    pub memory_peak_bytes: u64,
    /// The kernel's state, as the run left it.
    pub ext: E,
}

/// What a kernel concluded from a finished run, from how the guest call ended and the kernel's own state.
pub struct Verdict {
    /// How the run ended, in report terms.
    pub termination: Termination,
    /// The run's result value.
    pub value: serde_json::Value,
    /// The run's host tool calls.
    pub tools: ToolRecords,
    /// The run's HTTP requests.
    pub egress: EgressRecords,
    /// What the guest's `display` calls produced (script kernels; `None` for WASI tools).
    pub artifacts: Option<crate::artifacts::ArtifactSession>,
}

impl<E> ModuleRun<E> {
    /// The run report: `verdict` turns how the guest call ended and the kernel's state into the kernel's
    /// conclusion; everything else (output, denials, usage, digests) is reported the same way for every kernel.
    pub fn into_report(
        self,
        kernel: &'static str,
        code_cache: CacheSource,
        manifest: &EffectiveManifest,
        code_digest: String,
        verdict: impl FnOnce(Termination, E) -> Verdict,
    ) -> RunReport {
        let Verdict { termination, value, tools, egress, artifacts } = verdict(self.termination, self.ext);
        let mut denials = self.denials;
        denials.extend(tools.denials);
        let mut http_requests = egress.exchanges;
        // Requests per-run tools (the browser) made for the run are the run's requests too.
        http_requests.extend(tools.http_requests);
        let images = tools.images;
        denials.extend(egress.denials);
        let mut report = ReportParts {
            kernel,
            termination,
            value,
            stdout: self.stdout,
            stderr: self.stderr,
            denials,
            tool_calls: tools.calls,
            http_requests,
            unlisted: Unlisted {
                denials: self.unlisted_denials + tools.unlisted_denials + egress.unlisted_denials,
                tool_calls: tools.unlisted_calls,
                http_requests: egress.unlisted_exchanges + tools.unlisted_http_requests,
                artifacts: 0,
            },
            wall_ms: self.wall_ms,
            fuel_consumed: self.fuel_consumed,
            memory_peak_bytes: self.memory_peak_bytes,
            host_calls: tools.host_calls,
            code_cache,
            manifest,
            code_digest,
        }
        .into_report();
        match artifacts {
            Some(mut artifacts) => {
                // Images tools made for the run (browser screenshots) are its artifacts too, within the same limits.
                for image in images {
                    if let Ok(Some(admitted)) = artifacts.admit("image", &image.mime, image.bytes.len()) {
                        let _ = artifacts.add(admitted, image.title.as_deref(), image.bytes);
                    }
                }
                artifacts.finish(&mut report);
            }
            None => drop(images),
        }
        report
    }
}

/// Everything a WASI context is built from, shared by modules and components.
pub(crate) struct WasiEnvironment {
    pub(crate) builder: WasiCtxBuilder,
    pub(crate) preopens: Vec<DirInfo>,
    pub(crate) stdout: CappedOutput,
    pub(crate) stderr: CappedOutput,
    pub(crate) net_denials: NetDenials,
    pub(crate) clock: RunClock,
}

impl WasiEnvironment {
    /// `scratch`: a session's scratch directory, mounted read-write at [`crate::session::SCRATCH_GUEST_PATH`].
    pub(crate) fn new(
        root: &EmptyRoot,
        manifest: &EffectiveManifest,
        io: GuestIo<'_>,
        scratch: Option<&Path>,
    ) -> Result<Self, KernelError> {
        let stdout = CappedOutput::new(manifest.max_output_bytes());
        let stderr = CappedOutput::new(manifest.max_output_bytes());
        let clock = RunClock::start(manifest.cpu_ms());
        let mut builder = WasiCtxBuilder::new();
        builder
            .monotonic_clock(clock.guest_clock())
            .arg(io.name)
            .args(io.args)
            .stdin(MemoryInputPipe::new(io.stdin.to_vec()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_blocking_current_thread(true)
            .allow_ip_name_lookup(false);
        for (key, value) in manifest.env() {
            builder.env(key, value);
        }

        let mut preopens = Vec::new();
        for mount in manifest.mounts() {
            let perms = match mount.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            builder
                .preopened_dir(&mount.host, &mount.guest, perms)
                .map_err(|e| KernelError::Unavailable(format!("cannot open mount {}: {e:#}", mount.host.display())))?;
            preopens.push(
                DirInfo::open_preopen(&mount.guest, Some(mount.access), &mount.host).map_err(|e| {
                    KernelError::Unavailable(format!("cannot open mount {}: {e:#}", mount.host.display()))
                })?,
            );
        }
        if let Some(scratch) = scratch {
            let guest = crate::session::SCRATCH_GUEST_PATH;
            builder
                .preopened_dir(scratch, guest, FsPerms::ReadWrite)
                .map_err(|e| KernelError::Unavailable(format!("cannot open the session's scratch directory: {e:#}")))?;
            preopens.push(DirInfo::open_preopen(guest, Some(Access::ReadWrite), scratch).map_err(|e| {
                KernelError::Unavailable(format!("cannot open the session's scratch directory: {e:#}"))
            })?);
        }
        if !manifest.mounts().iter().any(|m| m.guest == "/") {
            builder
                .preopened_dir(root.path(), "/", FsPerms::ReadOnly)
                .map_err(|e| KernelError::Unavailable(format!("cannot open the empty root: {e:#}")))?;
            preopens.push(
                DirInfo::open_preopen("/", None, root.path())
                    .map_err(|e| KernelError::Unavailable(format!("cannot open the empty root: {e:#}")))?,
            );
        }

        // Sockets stay off (the default; see crate::sockets_audit), and behind that no address is ever allowed.
        let net_denials = NetDenials::default();
        let denials = net_denials.clone();
        builder.socket_addr_check(move |addr, use_| {
            let capability = match use_ {
                SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => "net.bind",
                _ => "net.connect",
            };
            let reason = SOCKETS_REFUSED.into();
            record(&denials, Denial { capability: capability.into(), target: addr.to_string(), reason });
            Box::pin(async { false })
        });
        Ok(WasiEnvironment { builder, preopens, stdout, stderr, net_denials, clock })
    }

    /// Gathers what a finished guest call left behind into a [`ModuleRun`]. A run that could not get an instance
    /// slot never started: that is [`KernelError::Unavailable`], so servers can answer "busy" rather than blame
    /// the guest.
    #[allow(clippy::too_many_arguments, reason = "each argument is one distinct piece of a finished run")]
    pub(crate) fn conclude<E>(
        &self,
        result: wasmtime::Result<()>,
        limiter: &GuestLimiter,
        mut denials: Vec<Denial>,
        fuel_consumed: u64,
        wall_ms: f64,
        manifest: &EffectiveManifest,
        ext: E,
    ) -> Result<ModuleRun<E>, KernelError> {
        if let Err(error) = &result
            && error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some()
        {
            return Err(KernelError::Unavailable(format!("every sandbox slot is in use: {error}")));
        }
        let termination = match &result {
            Ok(()) => Termination::finished(),
            Err(error) => Termination::from_error(error, limiter, [&self.stdout, &self.stderr], manifest),
        };
        let (mut net_denials, unlisted_denials) = sockets_audit::take(&self.net_denials);
        denials.append(&mut net_denials);
        Ok(ModuleRun {
            termination,
            stdout: self.stdout.take(),
            stderr: self.stderr.take(),
            denials,
            unlisted_denials,
            wall_ms,
            fuel_consumed,
            memory_peak_bytes: limiter.memory_peak() as u64,
            ext,
        })
    }
}

/// Instantiates `pre` in a fresh store held to `manifest` and calls `entry` on it once.
pub fn run_module<E: Send + 'static>(
    engine: &SandboxEngine,
    root: &EmptyRoot,
    pre: &InstancePre<ModuleState<E>>,
    manifest: &EffectiveManifest,
    io: GuestIo<'_>,
    ext: E,
    entry: impl FnOnce(&mut Store<ModuleState<E>>, Instance) -> wasmtime::Result<()>,
) -> Result<ModuleRun<E>, KernelError> {
    let mut env = WasiEnvironment::new(root, manifest, io, None)?;
    let mut wasi = env.builder.build_p1();
    wasi.ctx().table.set_max_capacity(MAX_OPEN_HANDLES);
    let state = ModuleState {
        wasi,
        limiter: engine.limiter(manifest),
        audit: FsAudit::new(std::mem::take(&mut env.preopens)),
        clock: env.clock,
        ext,
    };
    let active = engine.start_run();
    let mut store = Store::new(pre.module().engine(), state);
    store.limiter(|s| &mut s.limiter);
    let fuel_given = engine.arm(&mut store, manifest)?;
    let result = pre.instantiate(&mut store).and_then(|instance| entry(&mut store, instance));
    let fuel_consumed = fuel_given.saturating_sub(store.get_fuel().unwrap_or(0));
    let wall_ms = active.elapsed_ms();
    drop(active);
    let state = store.into_data();
    env.conclude(result, &state.limiter, state.audit.into_denials(), fuel_consumed, wall_ms, manifest, state.ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlocked_old_roots_are_removed_and_locked_young_or_full_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).unwrap();
            let old = std::time::SystemTime::now() - SWEEP_MIN_AGE * 2;
            std::fs::File::open(&path).unwrap().set_modified(old).unwrap();
            path
        };
        let (left, held, full) =
            (make("wasmagent-root-left"), make("wasmagent-root-held"), make("wasmagent-root-full"));
        let other = make("wasmagent-empty-root-old");
        std::fs::write(full.join("file"), "x").unwrap();
        std::fs::File::open(&full).unwrap().set_modified(std::time::SystemTime::now() - SWEEP_MIN_AGE * 2).unwrap();
        let lock = std::fs::File::open(&held).unwrap();
        lock.lock().unwrap();
        let young = dir.path().join("wasmagent-root-young");
        std::fs::create_dir(&young).unwrap();
        sweep_stale_roots(dir.path());
        assert!(!left.exists(), "an old root nobody holds is removed");
        assert!(held.exists() && young.exists() && full.exists() && other.exists());
        drop(lock);
        let root = EmptyRoot::new().unwrap();
        assert!(root.path().exists());
    }
}
