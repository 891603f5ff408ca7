//! The second wall: the operating system confines the wasmagent host process itself, so that a bug in the first
//! wall (wasmtime, a preopen escape, a host function) does not hand an attacker the machine.
//!
//! It owns the confinement of `wasmagent serve`, `mcp` and `run` on Linux, applied in two steps:
//!
//! 1. [`begin`], while the process still has one thread: `no_new_privs`, resource limits (core dumps off, a finite
//!    number of open files) and a Landlock ruleset built from a [`Plan`] (read only the system files a Rust binary
//!    needs, the binary's directory, the code cache, configured tools and the manifest's mounts; write only the
//!    cache, the audit log, artifact directories and write mounts; execute nothing unless the plan says so). Landlock
//!    binds the calling thread and every thread and process it creates afterwards, which is why it must come first.
//! 2. [`Started::seal`], once every child process the front end needs has been started (upstream MCP servers of a
//!    tools file): a seccomp filter on every thread (`SECCOMP_FILTER_FLAG_TSYNC`), an allow-list of the system calls a
//!    serving process makes, with `execve`, `ptrace`, `mount`, `bpf`, raw and packet sockets, namespaces, keyrings,
//!    module loading and the like refused with `EPERM`.
//!
//! It must not decide what a guest may do (the manifest does) nor read configuration files: the front end (the CLI)
//! turns its configuration into a [`Plan`]. A kernel without Landlock or seccomp degrades to what it has and says
//! so in [`Status`]; nothing is skipped silently. The [`Status`] goes into `/healthz`, `wasmagent --version` and a
//! start-up log line.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
mod seccomp;

use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// The largest number of open files the confined process keeps (the soft and hard `RLIMIT_NOFILE`, lowered to this
/// when higher): enough for a server's connections, runs and cache, finite so a leak cannot exhaust the host.
pub const MAX_OPEN_FILES: u64 = 16_384;

/// What the confined process may touch once [`begin`] returns. Paths that do not exist when the plan is applied
/// are left out (a rule needs an open file); create a directory first when the process must write into it.
#[derive(Debug, Clone)]
pub struct Plan {
    read: BTreeSet<PathBuf>,
    write: BTreeSet<PathBuf>,
    exec: BTreeSet<PathBuf>,
    make_dirs: BTreeSet<PathBuf>,
    spawns_later: Option<String>,
}

/// System paths every confined process may read: the dynamic loader's cache and shared libraries, name resolution
/// and TLS roots, the time zone, the process's own `/proc` entries (wasmtime reads `/proc/self/*` and
/// `/proc/swaps`), CPU and cgroup limits (thread-pool sizing) and the random devices. Nothing else in `/etc`,
/// `/proc`, `/sys` or `/dev`.
pub const SYSTEM_READ_PATHS: &[&str] = &[
    "/usr/lib",
    "/usr/lib64",
    "/usr/share/zoneinfo",
    "/usr/share/ca-certificates",
    "/lib",
    "/lib64",
    "/etc/ld.so.cache",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/proc/self",
    "/proc/swaps",
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/proc/sys/vm/overcommit_memory",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
    "/dev/urandom",
    "/dev/random",
];

/// System paths a confined process may also write: the null device only.
pub const SYSTEM_WRITE_PATHS: &[&str] = &["/dev/null"];

impl Default for Plan {
    fn default() -> Self {
        Self::new()
    }
}

impl Plan {
    /// The baseline: [`SYSTEM_READ_PATHS`], [`SYSTEM_WRITE_PATHS`] and the directory of the running binary.
    pub fn new() -> Self {
        let mut plan = Plan {
            read: SYSTEM_READ_PATHS.iter().map(PathBuf::from).collect(),
            write: SYSTEM_WRITE_PATHS.iter().map(PathBuf::from).collect(),
            exec: BTreeSet::new(),
            make_dirs: BTreeSet::new(),
            spawns_later: None,
        };
        if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
            plan.read(dir);
        }
        plan
    }

    /// Lets the process list and read `path` (a directory and everything below it, or one file).
    pub fn read(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.read.insert(path.into());
        self
    }

    /// Lets the process read, create, change and remove files in `path` (or read and write one file). Never
    /// execute.
    pub fn write(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.write.insert(path.into());
        self
    }

    /// Lets the process read and execute the programs in `path` (a child process it starts, such as an upstream
    /// MCP server, inherits the whole ruleset and needs its program and libraries here).
    pub fn exec(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.exec.insert(path.into());
        self
    }

    /// Lets the process create, list and remove directories in `path`, but not create, read or write files there
    /// (the sandbox's empty guest root is a fresh directory in the temporary directory).
    pub fn make_dirs(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.make_dirs.insert(path.into());
        self
    }

    /// Declares that the process must start programs after [`Started::seal`] (the browser tools start Chromium on
    /// first use and again when it dies). The seccomp filter is then not installed, because it refuses `execve`
    /// and Chromium's own process model; Landlock (with the programs given to [`Plan::exec`]) and `no_new_privs`
    /// still hold, and [`Status`] says why seccomp is off.
    pub fn spawns_after_seal(&mut self, reason: impl Into<String>) -> &mut Self {
        self.spawns_later = Some(reason.into());
        self
    }

    /// Adds what headless Chromium (started by the browser tools after the seal) needs when it inherits this
    /// ruleset: its program directory (`chromium` is the binary in it, not a wrapper script) executable with the
    /// system libraries, fonts and shared data readable, the whole of `/proc` and `/sys` readable (it inspects its
    /// own child processes and the hardware), and `profile` plus `/dev/shm` writable. Start Chromium with
    /// `TMPDIR`, `HOME` and `--user-data-dir` inside `profile`. Also declares [`Plan::spawns_after_seal`], because
    /// Chromium is started on first use and again when it dies.
    pub fn chromium(&mut self, chromium: &Path, profile: &Path) -> &mut Self {
        if let Some(dir) = chromium.parent() {
            self.exec(dir);
        }
        for libraries in ["/usr/lib", "/usr/lib64", "/lib", "/lib64"] {
            self.exec(libraries);
        }
        for shared in ["/usr/share", "/etc/fonts", "/etc/chromium", "/etc/chromium.d", "/proc", "/sys"] {
            self.read(shared);
        }
        self.write(profile).write("/dev/shm").spawns_after_seal("the browser tools (Chromium)")
    }

    /// The paths readable under this plan (for messages and tests).
    pub fn readable(&self) -> impl Iterator<Item = &Path> {
        self.read.iter().chain(&self.write).chain(&self.exec).map(PathBuf::as_path)
    }
}

/// How far Landlock holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockState {
    /// Every requested restriction is enforced.
    Enforced,
    /// The kernel's Landlock is older than the ruleset: the rights it knows are enforced, newer ones are not.
    Partial,
    /// The kernel has no Landlock (not built in, or not enabled at boot): the file system is not confined.
    Unsupported,
    /// Not applied (`--no-confine`, or not Linux).
    Off,
}

/// How far the seccomp filter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompState {
    /// The allow-list is installed on every thread.
    Enforced,
    /// Not installed because the process starts programs later ([`Plan::spawns_after_seal`]).
    NotInstalled,
    /// The kernel refused the filter.
    Unsupported,
    /// Not applied (`--no-confine`, not Linux, or [`Started::seal`] not reached yet).
    Off,
}

/// What the second wall holds, for `/healthz`, `--version` and the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Whether confinement was asked for (false with `--no-confine`).
    pub enabled: bool,
    /// Landlock's state.
    pub landlock: LandlockState,
    /// The Landlock ABI of the running kernel (0 when it has none).
    pub landlock_abi: u32,
    /// The seccomp filter's state.
    pub seccomp: SeccompState,
    /// `PR_SET_NO_NEW_PRIVS` is set: no exec can gain privileges (setuid, file capabilities).
    pub no_new_privs: bool,
    /// The open-files limit now in force, when it was set.
    pub max_open_files: Option<u64>,
    /// Core dumps are off (`RLIMIT_CORE` 0), so a crash does not write guest data or secrets to disk.
    pub core_dumps_off: bool,
    /// Why a part is weaker than asked (kernel without Landlock, browser, ...), empty when nothing is.
    pub notes: Vec<String>,
}

impl Status {
    /// The status of a process that was not confined (`--no-confine`).
    pub fn disabled() -> Self {
        Status {
            enabled: false,
            landlock: LandlockState::Off,
            landlock_abi: kernel_landlock_abi(),
            seccomp: SeccompState::Off,
            no_new_privs: false,
            max_open_files: None,
            core_dumps_off: false,
            notes: vec!["confinement turned off with --no-confine".to_owned()],
        }
    }

    /// Whether both Landlock and seccomp are fully in force.
    pub fn is_full(&self) -> bool {
        self.landlock == LandlockState::Enforced && self.seccomp == SeccompState::Enforced && self.no_new_privs
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.enabled {
            return write!(f, "confinement OFF (--no-confine): the host process is not confined by the kernel");
        }
        write!(
            f,
            "confinement: landlock {} (kernel ABI {}), seccomp {}, no_new_privs {}, open files {}, core dumps {}",
            self.landlock,
            self.landlock_abi,
            self.seccomp,
            if self.no_new_privs { "on" } else { "off" },
            self.max_open_files.map_or_else(|| "unchanged".to_owned(), |n| n.to_string()),
            if self.core_dumps_off { "off" } else { "unchanged" },
        )?;
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

impl fmt::Display for LandlockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enforced => "enforced",
            Self::Partial => "partial",
            Self::Unsupported => "unsupported",
            Self::Off => "off",
        })
    }
}

impl fmt::Display for SeccompState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enforced => "enforced",
            Self::NotInstalled => "not installed",
            Self::Unsupported => "unsupported",
            Self::Off => "off",
        })
    }
}

/// Why confinement could not be applied. Each is fatal: a process that asked for the wall does not serve without
/// it, except where the kernel lacks a feature (that degrades, and [`Status`] says so).
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// Landlock binds only the calling thread and its descendants: applied later, other threads would escape it.
    #[error("confinement must start while the process has one thread, but it has {threads}")]
    Threaded {
        /// Threads found in `/proc/self/task`.
        threads: usize,
    },
    /// A system call that sets up the wall failed.
    #[error("cannot confine the process: {what}: {source}")]
    Setup {
        /// The step that failed.
        what: &'static str,
        /// The error the kernel gave.
        source: std::io::Error,
    },
    /// The Landlock ruleset could not be built or applied.
    #[error("cannot apply the Landlock ruleset: {0}")]
    Landlock(String),
    /// The seccomp filter could not be built.
    #[error("cannot build the seccomp filter: {0}")]
    Seccomp(String),
}

/// The first step done: Landlock, `no_new_privs` and the limits hold; [`Started::seal`] adds the seccomp filter.
#[derive(Debug)]
#[must_use = "seal() installs the seccomp filter"]
pub struct Started {
    status: Status,
    spawns_later: Option<String>,
}

impl Started {
    /// The status so far (seccomp `off` until sealed).
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Installs the seccomp filter on every thread of the process, unless the plan declared that programs start
    /// later. Call it once every child process has been started.
    pub fn seal(self) -> Result<Status, ConfineError> {
        let mut status = self.status;
        if let Some(reason) = self.spawns_later {
            status.seccomp = SeccompState::NotInstalled;
            status.notes.push(format!("seccomp not installed: programs are started after start-up by {reason}"));
            return Ok(status);
        }
        #[cfg(target_os = "linux")]
        {
            status.seccomp = seccomp::install()?;
            if status.seccomp == SeccompState::Unsupported {
                status.notes.push("this kernel refused the seccomp filter".to_owned());
            }
        }
        Ok(status)
    }
}

/// Applies the first step of `plan`. Must be called before the process starts any thread.
pub fn begin(plan: &Plan) -> Result<Started, ConfineError> {
    #[cfg(target_os = "linux")]
    {
        let status = linux::begin(plan)?;
        Ok(Started { status, spawns_later: plan.spawns_later.clone() })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = plan;
        let mut status = Status::disabled();
        status.enabled = true;
        status.notes = vec!["the second wall exists on Linux only".to_owned()];
        Ok(Started { status, spawns_later: None })
    }
}

/// The Landlock ABI of the running kernel, 0 when it has none (for `--version`; does not confine anything).
pub fn kernel_landlock_abi() -> u32 {
    #[cfg(target_os = "linux")]
    {
        linux::kernel_abi()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn begin_refuses_a_process_that_already_has_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let result = begin(&Plan::new());
        let _ = tx.send(());
        let _ = other.join();
        match result {
            Err(ConfineError::Threaded { threads }) => assert!(threads >= 2, "{threads}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_baseline_plan_reads_no_secrets_and_writes_only_the_null_device() {
        let plan = Plan::new();
        assert!(plan.write.iter().all(|p| p == Path::new("/dev/null")), "{:?}", plan.write);
        assert!(plan.exec.is_empty());
        for forbidden in ["/etc", "/etc/shadow", "/root", "/home", "/proc", "/"] {
            assert!(!plan.read.contains(Path::new(forbidden)), "{forbidden} is readable");
        }
    }

    #[test]
    fn disabled_status_says_so() {
        let status = Status::disabled();
        assert!(!status.enabled && !status.is_full());
        assert!(status.to_string().contains("--no-confine"), "{status}");
    }
}
