//! Denial reporting for WASI preview1 filesystem calls.
//!
//! wasmtime-wasi (through cap-std) is what *enforces* the mounts: a path that climbs out with `..`, follows a
//! symlink out of its mount, or writes into a read-only mount fails inside wasmtime-wasi. This module only
//! *observes*: [`crate::instrument`] makes each path-taking preview1 call report its result to an audit import
//! defined here, and when the result is a permission-class errno the attempt is recorded as a [`Denial`] with the
//! guest path and the reason in manifest terms. Paths outside every mount reach the host through the empty
//! read-only "catch-all" root preopen, so those attempts are seen too. The same import module carries the guard
//! that stops `poll_oneoff` from sleeping past `cpu_ms` ([`crate::clock`]), and the check, before each `path_open`,
//! that refuses FIFOs, sockets and devices ([`crate::special_files`]): for it the audit keeps the host's own handle
//! to each directory descriptor, opened as the guest's was, moved with it by `fd_renumber` and closed with it.

use crate::clock::{HasRunClock, guard_poll_oneoff};
use crate::host::guest_bytes;
use crate::instrument::BEFORE_CALL;
use crate::special_files::{self, SpecialFile};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use wasmagent_engine::MAX_OPEN_HANDLES;
use wasmagent_kernel::Denial;
use wasmagent_kernel::bounds::REPORT_TEXT_BYTES;
use wasmagent_manifest::Access;
use wasmtime::{Caller, Extern, Linker};

/// Import module of the audit functions. Guest modules may not import it themselves ([`crate::instrument`]).
pub(crate) const AUDIT_MODULE: &str = "wasmagent:fs-audit";

// WASI preview1 errno values.
const ERRNO_ACCES: i32 = 2;
const ERRNO_NAMETOOLONG: i32 = 37;
const ERRNO_PERM: i32 = 63;
const ERRNO_ROFS: i32 = 69;
const ERRNO_NOTCAPABLE: i32 = 76;

// Bits of `oflags`, `fs_rights_base` and `fdflags` that mean "this open writes".
const OFLAGS_CREAT: i32 = 1;
const OFLAGS_TRUNC: i32 = 8;
const RIGHT_FD_WRITE: i64 = 1 << 6;
const FDFLAGS_APPEND: i32 = 1;
const LOOKUPFLAGS_SYMLINK_FOLLOW: i32 = 1;

/// Longest path `path_open` is asked to resolve (the host's `PATH_MAX`); a longer one fails with `ENAMETOOLONG`
/// before the host copies it, as the host's own `openat2` would fail it.
const MAX_OPEN_PATH: usize = 4096;

/// Most bytes of a guest path the audit keeps (and a report shows); longer paths are cut and marked with their
/// length, so neither a long path nor a chain of opens (`./././…`, each joined to its parent) grows what is held.
/// Room is left for the marker, so a marked path stays within the report's text bound (and is not cut again).
const MAX_REPORTED_PATH: usize = REPORT_TEXT_BYTES - CUT_MARKER_ROOM;

/// Room for the marker of a cut (`…[cut: N bytes in all]`, at most 44 bytes).
pub(crate) const CUT_MARKER_ROOM: usize = 64;

/// Most directory handles the audit knows at once. Handle numbers are reused after a close and a run holds at most
/// [`MAX_OPEN_HANDLES`] at once, so this is never reached in practice; it bounds the map whatever the numbering.
const MAX_KNOWN_DIRS: usize = 2 * MAX_OPEN_HANDLES;

/// Most refused filesystem accesses one run's report lists; the rest are counted in one closing denial, so a guest
/// looping on refused opens cannot grow the report (or host memory) until `cpu_ms`.
pub(crate) const MAX_LISTED_FS_DENIALS: usize = 100;

/// A guest path as the audit keeps it: its first [`MAX_REPORTED_PATH`] bytes at most, and its whole length when it
/// was longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestPath {
    shown: String,
    /// The whole path's length in bytes when `shown` is only its beginning.
    cut_from: Option<usize>,
    /// Whether the whole path ends with `/` (the end of a cut one is not in `shown`).
    trailing_slash: bool,
}

impl GuestPath {
    /// `path`, cut at [`MAX_REPORTED_PATH`] bytes.
    pub(crate) fn new(path: &str) -> Self {
        let mut shown = path.to_owned();
        let cut_from = truncate(&mut shown, MAX_REPORTED_PATH).then_some(path.len());
        GuestPath { shown, cut_from, trailing_slash: path.ends_with('/') }
    }

    /// A path given as bytes in guest memory (read lossily; only its first [`MAX_REPORTED_PATH`] bytes are copied).
    fn from_bytes(bytes: &[u8]) -> Self {
        let mut shown = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_REPORTED_PATH)]).into_owned();
        let cut = truncate(&mut shown, MAX_REPORTED_PATH) || bytes.len() > MAX_REPORTED_PATH;
        GuestPath { shown, cut_from: cut.then_some(bytes.len()), trailing_slash: bytes.last() == Some(&b'/') }
    }

    /// The whole path's length in bytes.
    fn len(&self) -> usize {
        self.cut_from.unwrap_or(self.shown.len())
    }

    /// What this path shows: all of it, or its beginning (which a longer path's components start with).
    fn shown(&self) -> &str {
        &self.shown
    }

    /// `relative` resolved lexically from this directory (not normalised: `..` stays as the guest wrote it).
    fn join(&self, relative: &GuestPath) -> GuestPath {
        if relative.shown.starts_with('/') {
            return relative.clone();
        }
        if relative.cut_from.is_none() && (relative.shown.is_empty() || relative.shown == ".") {
            return self.clone();
        }
        let separator = if self.trailing_slash { "" } else { "/" };
        let len = self.len().saturating_add(separator.len()).saturating_add(relative.len());
        let trailing_slash = relative.trailing_slash;
        if self.cut_from.is_some() {
            return GuestPath { shown: self.shown.clone(), cut_from: Some(len), trailing_slash };
        }
        let room = MAX_REPORTED_PATH.saturating_sub(self.shown.len() + separator.len());
        let mut end = relative.shown.len().min(room);
        while !relative.shown.is_char_boundary(end) {
            end -= 1;
        }
        let mut shown = format!("{}{separator}{}", self.shown, &relative.shown[..end]);
        let cut = truncate(&mut shown, MAX_REPORTED_PATH) || end < relative.shown.len() || relative.cut_from.is_some();
        GuestPath { shown, cut_from: cut.then_some(len), trailing_slash }
    }

    /// The path for a report: whole, or its beginning marked with its length (as [`wasmagent_kernel::bounds::cut`]
    /// marks cut text).
    fn render(&self) -> String {
        match self.cut_from {
            None => self.shown.clone(),
            Some(len) => format!("{}…[cut: {len} bytes in all]", self.shown),
        }
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary; returns whether anything was cut.
fn truncate(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// The host's own handle to what a preview1 descriptor names, to see what a path names before the guest opens it.
#[derive(Debug, Clone)]
pub(crate) enum HostDir {
    /// A directory, opened by the host as the guest's descriptor was.
    Open(Arc<File>),
    /// Not a directory: opens from it fail.
    NotADirectory,
    /// Not known (the host could not open it, or preview2, which has the descriptor table instead): preview1 opens
    /// from it are refused.
    Unknown,
}

/// What the host knows about one guest directory descriptor.
#[derive(Debug, Clone)]
pub(crate) struct DirInfo {
    /// Guest path of the directory.
    pub(crate) guest_path: GuestPath,
    /// Guest path of the mount it lies in, and that mount's access; `None` for the catch-all root.
    pub(crate) mount: Option<(String, Access)>,
    /// How many directory levels below its mount's root it lies, resolved lexically.
    pub(crate) depth: usize,
    /// The host's handle to it.
    pub(crate) host: HostDir,
}

impl DirInfo {
    /// A preopened directory: the root of `mount`, or of the catch-all root when `None`, at `host` on the host.
    pub(crate) fn preopen(guest_path: &str, mount: Option<Access>, host: HostDir) -> Self {
        DirInfo {
            guest_path: GuestPath::new(guest_path),
            mount: mount.map(|access| (guest_path.to_owned(), access)),
            depth: 0,
            host,
        }
    }

    /// A preopened directory whose host handle is opened from `host_path`.
    pub(crate) fn open_preopen(guest_path: &str, mount: Option<Access>, host_path: &Path) -> std::io::Result<Self> {
        let host = HostDir::Open(Arc::new(File::open(host_path)?));
        Ok(DirInfo::preopen(guest_path, mount, host))
    }
}

/// Per-run audit state: directory handle (a preview1 descriptor or a preview2 resource) → directory, plus the
/// denials seen.
#[derive(Debug, Default)]
pub(crate) struct FsAudit {
    preopens: Vec<DirInfo>,
    dirs: HashMap<u32, DirInfo>,
    denials: Vec<Denial>,
    /// Refusals past [`MAX_LISTED_FS_DENIALS`], counted but not listed.
    unlisted: u64,
}

/// Whether a refused call read or wrote.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Read,
    Write,
}

impl FsAudit {
    /// Starts an audit for these preopens. Preview1 numbers them from descriptor 3 in this order; preview2 hands
    /// them out through `get-directories`, reported with [`FsAudit::preopened`].
    pub(crate) fn new(preopens: Vec<DirInfo>) -> Self {
        let dirs = preopens.iter().cloned().enumerate().map(|(i, info)| (3 + i as u32, info)).collect();
        FsAudit { preopens, dirs, denials: Vec::new(), unlisted: 0 }
    }

    /// A preview2 preopen was handed to the guest as `handle`.
    pub(crate) fn preopened(&mut self, handle: u32, guest_path: &str) {
        let guest_path = GuestPath::new(guest_path);
        if let Some(info) = self.preopens.iter().find(|p| p.guest_path == guest_path) {
            let info = info.clone();
            self.know(handle, info);
        }
    }

    /// `relative`, opened from directory `dir`, is now `handle`, which the host knows as `host`.
    pub(crate) fn opened(&mut self, dir: u32, handle: u32, relative: &GuestPath, host: HostDir) {
        if let Some(base) = self.dirs.get(&dir) {
            let info = DirInfo {
                guest_path: base.guest_path.join(relative),
                mount: base.mount.clone(),
                depth: depth_after(base.depth, relative.shown()),
                host,
            };
            self.know(handle, info);
        }
    }

    /// The host's handle to what `path`, just opened by the guest from preview1 descriptor `dir`, names.
    fn host_after_open(&self, dir: u32, path: &Path, follow_symlinks: bool) -> HostDir {
        match self.dirs.get(&dir).map(|info| &info.host) {
            Some(HostDir::Open(base)) => match special_files::directory(base, path, follow_symlinks) {
                Ok(Some(opened)) => HostDir::Open(Arc::new(opened)),
                Ok(None) => HostDir::NotADirectory,
                Err(()) => HostDir::Unknown,
            },
            _ => HostDir::Unknown,
        }
    }

    /// Whether a preview1 open of `path` from descriptor `dir` must be refused before it is made, recording why:
    /// the path is a FIFO, socket or device, or the host does not know what `dir` is.
    fn refuse_open(&mut self, dir: u32, path: &Path, follow_symlinks: bool, relative: &GuestPath) -> bool {
        let reason = match self.dirs.get(&dir).map(|info| &info.host) {
            // Not a descriptor the audit knows: no mount nor root, so the open fails as a bad descriptor.
            None | Some(HostDir::NotADirectory) => return false,
            Some(HostDir::Open(base)) => match special_files::special_file(base, path, follow_symlinks) {
                None => return false,
                Some(kind) => kind.reason(),
            },
            Some(HostDir::Unknown) => "the host could not see what the directory it is opened from is, so it cannot \
                                      check that the path is a regular file or a directory"
                .to_owned(),
        };
        self.refused(dir, relative, reason);
        true
    }

    /// Preview1 descriptor `fd` was closed.
    pub(crate) fn closed(&mut self, fd: u32) {
        self.dirs.remove(&fd);
    }

    /// Preview1 descriptor `from` is now `to` (`fd_renumber`).
    pub(crate) fn renumbered(&mut self, from: u32, to: u32) {
        match self.dirs.remove(&from) {
            Some(info) => {
                self.dirs.insert(to, info);
            }
            None => {
                self.dirs.remove(&to);
            }
        }
    }

    /// An open of `relative` from directory `dir` was refused by the host itself: it names a `kind` file.
    pub(crate) fn refused_special(&mut self, dir: u32, relative: &GuestPath, kind: SpecialFile) {
        self.refused(dir, relative, kind.reason());
    }

    fn refused(&mut self, dir: u32, relative: &GuestPath, reason: String) {
        let target = match self.dirs.get(&dir) {
            Some(info) => info.guest_path.join(relative).render(),
            None => relative.render(),
        };
        self.record(Denial { capability: "fs".into(), target, reason });
    }

    fn know(&mut self, handle: u32, info: DirInfo) {
        if self.dirs.len() < MAX_KNOWN_DIRS || self.dirs.contains_key(&handle) {
            self.dirs.insert(handle, info);
        }
    }

    /// A call on `relative` from directory `dir` failed; record it when it was a refusal. `permission_error` says
    /// whether the error was of the permission class (as opposed to, say, a file that does not exist).
    pub(crate) fn failed(&mut self, dir: u32, want: Want, relative: &GuestPath, permission_error: bool) {
        let Some(dir) = self.dirs.get(&dir) else {
            return;
        };
        let capability = match want {
            Want::Read => "fs.read",
            Want::Write => "fs.write",
        };
        let target = dir.guest_path.join(relative).render();
        let reason = match &dir.mount {
            // Nothing exists in the catch-all root, so every failure there is an access outside the mounts.
            None => "not inside any mount: the manifest grants no allowed_read_paths or allowed_write_paths entry \
                     for it"
                .to_owned(),
            Some(_) if !permission_error => return,
            Some((mount, _)) if climbs_out(dir.depth, relative.shown()) => {
                format!("the path climbs out of mount {mount} with `..`")
            }
            Some((mount, Access::ReadOnly)) if want == Want::Write => {
                format!("mount {mount} is read-only (granted by allowed_read_paths)")
            }
            Some((mount, _)) => {
                format!("the path resolves outside mount {mount} (through a symlink or an absolute link)")
            }
        };
        self.record(Denial { capability: capability.into(), target, reason });
    }

    fn record(&mut self, denial: Denial) {
        if self.denials.contains(&denial) {
            return;
        }
        if self.denials.len() < MAX_LISTED_FS_DENIALS {
            self.denials.push(denial);
        } else {
            self.unlisted += 1;
        }
    }

    /// The refusals so far, as [`FsAudit::into_denials`] gives them, leaving the open directories known (for the
    /// next call of a session).
    pub(crate) fn take_denials(&mut self) -> Vec<Denial> {
        let finished = FsAudit {
            preopens: Vec::new(),
            dirs: HashMap::new(),
            denials: std::mem::take(&mut self.denials),
            unlisted: std::mem::take(&mut self.unlisted),
        };
        finished.into_denials()
    }

    /// The refusals for the report: each distinct one once, at most [`MAX_LISTED_FS_DENIALS`] of them, then one
    /// denial that counts the rest.
    pub(crate) fn into_denials(self) -> Vec<Denial> {
        let mut denials = self.denials;
        if self.unlisted > 0 {
            denials.push(Denial {
                capability: "fs".into(),
                target: format!("{} more refused filesystem accesses", self.unlisted),
                reason: format!("a report lists at most {MAX_LISTED_FS_DENIALS} distinct refused filesystem accesses"),
            });
        }
        denials
    }
}

/// Store state that carries an [`FsAudit`] and its run's clock.
pub(crate) trait HasFsAudit: HasRunClock {
    fn fs_audit(&mut self) -> &mut FsAudit;
}

/// Defines the audit imports that [`crate::instrument`] routes every path-taking preview1 call through. Each
/// receives the errno the real WASI function returned followed by that function's own arguments, and runs with the
/// guest as its caller, so guest memory can be read to name the path.
pub(crate) fn add_audit_functions<T: HasFsAudit + Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap(
        AUDIT_MODULE,
        "path_open",
        |mut caller: Caller<'_, T>,
         errno: i32,
         fd: i32,
         dirflags: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         rights_base: i64,
         _rights_inheriting: i64,
         fdflags: i32,
         opened: i32|
         -> i32 {
            let writes = oflags & (OFLAGS_CREAT | OFLAGS_TRUNC) != 0
                || rights_base & RIGHT_FD_WRITE != 0
                || fdflags & FDFLAGS_APPEND != 0;
            let want = if writes { Want::Write } else { Want::Read };
            let follow_symlinks = dirflags & LOOKUPFLAGS_SYMLINK_FOLLOW != 0;
            let relative = read_string(&mut caller, path, path_len);
            if errno == BEFORE_CALL {
                if path_len as u32 as usize > MAX_OPEN_PATH {
                    return ERRNO_NAMETOOLONG;
                }
                // An unreadable path fails the call itself (EFAULT), before anything is opened.
                let Some(whole) = read_path(&mut caller, path, path_len) else {
                    return 0;
                };
                let refused = caller.data_mut().fs_audit().refuse_open(fd as u32, &whole, follow_symlinks, &relative);
                return if refused { ERRNO_ACCES } else { 0 };
            }
            if errno == 0 {
                if let Some(new_fd) = read_i32(&mut caller, opened) {
                    let whole = read_path(&mut caller, path, path_len);
                    let audit = caller.data_mut().fs_audit();
                    let host = match whole {
                        Some(whole) => audit.host_after_open(fd as u32, &whole, follow_symlinks),
                        None => HostDir::Unknown,
                    };
                    audit.opened(fd as u32, new_fd as u32, &relative, host);
                }
            } else {
                record(&mut caller, errno, want, fd, &relative);
            }
            0
        },
    )?;

    // A closed descriptor's entry (and the host's handle with it) goes at once, so the host holds no more
    // handles than the guest.
    linker.func_wrap(AUDIT_MODULE, "fd_close", |mut caller: Caller<'_, T>, errno: i32, fd: i32| {
        if errno == 0 {
            caller.data_mut().fs_audit().closed(fd as u32);
        }
    })?;

    linker.func_wrap(AUDIT_MODULE, "fd_renumber", |mut caller: Caller<'_, T>, errno: i32, from: i32, to: i32| {
        if errno == 0 {
            caller.data_mut().fs_audit().renumbered(from as u32, to as u32);
        }
    })?;

    macro_rules! audited {
        ($name:literal, $want:expr, ($($arg:ident: $ty:ty),*), |$caller:ident| $target:expr) => {
            linker.func_wrap(AUDIT_MODULE, $name, |mut $caller: Caller<'_, T>, errno: i32, $($arg: $ty),*| {
                let _ = ($($arg,)*);
                if errno != 0 {
                    let (fd, relative): (i32, GuestPath) = $target;
                    record(&mut $caller, errno, $want, fd, &relative);
                }
            })?;
        };
    }

    audited!("path_create_directory", Want::Write, (fd: i32, p: i32, l: i32), |caller| (
        fd,
        read_string(&mut caller, p, l)
    ));
    audited!("path_remove_directory", Want::Write, (fd: i32, p: i32, l: i32), |caller| (
        fd,
        read_string(&mut caller, p, l)
    ));
    audited!("path_unlink_file", Want::Write, (fd: i32, p: i32, l: i32), |caller| (
        fd,
        read_string(&mut caller, p, l)
    ));
    audited!("path_filestat_get", Want::Read, (fd: i32, flags: i32, p: i32, l: i32, buf: i32), |caller| (
        fd,
        read_string(&mut caller, p, l)
    ));
    audited!(
        "path_filestat_set_times",
        Want::Write,
        (fd: i32, flags: i32, p: i32, l: i32, atim: i64, mtim: i64, fst: i32),
        |caller| (fd, read_string(&mut caller, p, l))
    );
    audited!("path_readlink", Want::Read, (fd: i32, p: i32, l: i32, buf: i32, len: i32, used: i32), |caller| (
        fd,
        read_string(&mut caller, p, l)
    ));
    audited!(
        "path_rename",
        Want::Write,
        (fd: i32, p: i32, l: i32, new_fd: i32, np: i32, nl: i32),
        |caller| (new_fd, read_string(&mut caller, np, nl))
    );
    audited!(
        "path_link",
        Want::Write,
        (fd: i32, flags: i32, p: i32, l: i32, new_fd: i32, np: i32, nl: i32),
        |caller| (new_fd, read_string(&mut caller, np, nl))
    );
    audited!("path_symlink", Want::Write, (p: i32, l: i32, fd: i32, np: i32, nl: i32), |caller| (
        fd,
        read_string(&mut caller, np, nl)
    ));

    // Called before the real `poll_oneoff`, not after: a sleep past `cpu_ms` ends the run at the deadline.
    linker.func_wrap(
        AUDIT_MODULE,
        "poll_oneoff",
        |mut caller: Caller<'_, T>, subs: i32, _events: i32, count: i32, _returned: i32| {
            let clock = caller.data().run_clock();
            let Some(mem) = memory(&mut caller) else {
                return Ok(());
            };
            guard_poll_oneoff(mem.data(&caller), subs, count, &clock)
        },
    )?;
    Ok(())
}

fn memory<T>(caller: &mut Caller<'_, T>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

/// Reads a guest path for reporting: at most [`MAX_REPORTED_PATH`] bytes of it are copied. Out-of-bounds ranges
/// (which the real call refused with `EFAULT`) give a placeholder, never a panic.
fn read_string<T>(caller: &mut Caller<'_, T>, ptr: i32, len: i32) -> GuestPath {
    let unreadable = || GuestPath::new("<unreadable path>");
    let Some(mem) = memory(caller) else {
        return unreadable();
    };
    guest_bytes(mem.data(&*caller), ptr, len as u32 as usize).map_or_else(unreadable, GuestPath::from_bytes)
}

/// A whole guest path of at most [`MAX_OPEN_PATH`] bytes, as the host resolves it.
fn read_path<T>(caller: &mut Caller<'_, T>, ptr: i32, len: i32) -> Option<std::path::PathBuf> {
    let mem = memory(caller)?;
    let bytes = guest_bytes(mem.data(&*caller), ptr, len as u32 as usize)?;
    if bytes.len() > MAX_OPEN_PATH {
        return None;
    }
    #[cfg(unix)]
    let path = std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes));
    #[cfg(not(unix))]
    let path = std::path::PathBuf::from(std::str::from_utf8(bytes).ok()?);
    Some(path)
}

fn read_i32<T>(caller: &mut Caller<'_, T>, ptr: i32) -> Option<i32> {
    let mem = memory(caller)?;
    let bytes = guest_bytes(mem.data(&*caller), ptr, 4)?;
    Some(i32::from_le_bytes(bytes.try_into().ok()?))
}

/// Whether `relative`, resolved lexically from a directory `depth` levels below its mount root, climbs above it.
fn climbs_out(depth: usize, relative: &str) -> bool {
    let mut level = depth as i64;
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                level -= 1;
                if level < 0 {
                    return true;
                }
            }
            _ => level += 1,
        }
    }
    false
}

/// How many levels below its mount's root a directory lies after opening `relative` from one `depth` levels below
/// it (an open that would climb out of the mount fails, so the count stops at the root).
fn depth_after(depth: usize, relative: &str) -> usize {
    relative.split('/').fold(depth, |level, part| match part {
        "" | "." => level,
        ".." => level.saturating_sub(1),
        _ => level.saturating_add(1),
    })
}

fn record<T: HasFsAudit>(caller: &mut Caller<'_, T>, errno: i32, want: Want, fd: i32, relative: &GuestPath) {
    let permission_error = matches!(errno, ERRNO_ACCES | ERRNO_PERM | ERRNO_ROFS | ERRNO_NOTCAPABLE);
    caller.data_mut().fs_audit().failed(fd as u32, want, relative, permission_error);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> GuestPath {
        GuestPath::new(text)
    }

    impl FsAudit {
        /// Bytes of guest paths the audit holds.
        fn held_path_bytes(&self) -> usize {
            let dirs: usize = self.dirs.values().map(|d| d.guest_path.shown.capacity()).sum();
            dirs + self.denials.iter().map(|d| d.target.capacity()).sum::<usize>()
        }
    }

    fn data_mount() -> FsAudit {
        FsAudit::new(vec![
            DirInfo::preopen("/data", Some(Access::ReadOnly), HostDir::Unknown),
            DirInfo::preopen("/", None, HostDir::Unknown),
        ])
    }

    #[test]
    fn detects_lexical_escapes_relative_to_the_mount_root() {
        assert!(climbs_out(0, "../etc/passwd"));
        assert!(climbs_out(1, "a/../../.."));
        assert!(!climbs_out(1, ".."));
        assert!(!climbs_out(0, "a/../b"));
        assert_eq!(depth_after(0, "x/y"), 2);
        assert_eq!(depth_after(2, "./z/../.."), 1);
    }

    #[test]
    fn joins_guest_paths() {
        assert_eq!(path("/data").join(&path("a.txt")).render(), "/data/a.txt");
        assert_eq!(path("/").join(&path("etc/passwd")).render(), "/etc/passwd");
        assert_eq!(path("/data").join(&path(".")).render(), "/data");
        assert_eq!(path("/data").join(&path("/abs")).render(), "/abs");
    }

    #[test]
    fn long_paths_are_kept_cut_and_marked_with_their_length() {
        let long = "a".repeat(1 << 20);
        let joined = path("/data").join(&path(&long));
        assert_eq!(joined.shown.len(), MAX_REPORTED_PATH);
        assert_eq!(
            joined.render(),
            format!("/data/{}…[cut: {} bytes in all]", &long[..MAX_REPORTED_PATH - 6], 6 + long.len())
        );
        // Joining below a cut directory keeps its beginning and counts the rest.
        assert_eq!(
            joined.join(&path("b")).render(),
            format!("{}…[cut: {} bytes in all]", joined.shown, joined.len() + 2)
        );
        // A path read from guest memory: only its beginning is copied, cut on a character boundary.
        let read = GuestPath::from_bytes(format!("{}/", "€".repeat(MAX_REPORTED_PATH)).as_bytes());
        assert_eq!(read.shown, "€".repeat(MAX_REPORTED_PATH / 3));
        assert!(read.render().ends_with(&format!("€…[cut: {} bytes in all]", 3 * MAX_REPORTED_PATH + 1)));
        assert_eq!(read.join(&path("x")).len(), 3 * MAX_REPORTED_PATH + 2, "the whole path ends with a slash");
    }

    /// Opening `./.` from the last directory opened (and closing the one before, so two handle numbers take turns),
    /// ten thousand times, keeps the audit's paths at the cap: each open is joined to its parent, so the paths would
    /// otherwise grow by four bytes an open.
    #[test]
    fn a_chain_of_opens_does_not_grow_the_audit() {
        let mut audit = data_mount();
        let (mut from, mut to) = (3, 5);
        for _ in 0..10_000 {
            audit.opened(from, to, &path("./."), HostDir::Unknown);
            (from, to) = (to, if to == 5 { 6 } else { 5 });
        }
        let deepest = &audit.dirs[&from].guest_path;
        assert_eq!(deepest.len(), "/data".len() + 10_000 * "/./.".len());
        assert!(audit.held_path_bytes() <= 4 * (MAX_REPORTED_PATH + 64), "{}", audit.held_path_bytes());
        audit.failed(from, Want::Write, &path("new.txt"), true);
        let denials = audit.into_denials();
        assert_eq!(denials.len(), 1);
        assert!(denials[0].target.len() <= REPORT_TEXT_BYTES, "{}", denials[0].target.len());
        assert!(
            denials[0].target.ends_with(&format!("[cut: {} bytes in all]", 5 + 40_000 + 8)),
            "{}",
            &denials[0].target[2000..]
        );
        assert_eq!(denials[0].reason, "mount /data is read-only (granted by allowed_read_paths)");
    }

    /// Distinct refusals of 1 MiB paths are held cut, and the audit knows at most a fixed number of directories
    /// whatever handle numbers it is told about.
    #[test]
    fn long_refused_paths_and_many_handles_hold_bounded_memory() {
        let mut audit = data_mount();
        for i in 0..(2 * MAX_OPEN_HANDLES as u32 + 500) {
            audit.opened(3, 10 + i, &path(&format!("{i}/{}", "d".repeat(4096))), HostDir::Unknown);
        }
        assert_eq!(audit.dirs.len(), MAX_KNOWN_DIRS);
        for i in 0..150u8 {
            let mut long = "x".repeat(1 << 20);
            long.push(char::from(b'0' + i % 10));
            long.push(char::from(b'a' + i / 10));
            audit.failed(4, Want::Read, &path(&long), false);
        }
        let per_path = MAX_REPORTED_PATH + 64;
        assert!(
            audit.held_path_bytes() <= (MAX_KNOWN_DIRS + MAX_LISTED_FS_DENIALS) * per_path,
            "{}",
            audit.held_path_bytes()
        );
    }

    /// Preview1 opens are checked against the host's handle to the very directory the guest opens from: one it
    /// opened below a mount, and one it moved with `fd_renumber` onto another's number.
    #[cfg(unix)]
    #[test]
    fn fifos_are_refused_below_opened_directories_and_after_a_renumber() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["a", "b"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        std::fs::write(root.path().join("b/x"), "regular").unwrap();
        let status = std::process::Command::new("mkfifo").arg(root.path().join("a/x")).status().unwrap();
        assert!(status.success());
        let mut audit = FsAudit::new(vec![
            DirInfo::open_preopen("/data", Some(Access::ReadOnly), root.path()).unwrap(),
            DirInfo::preopen("/", None, HostDir::Unknown),
        ]);
        let x = Path::new("x");
        for (fd, name) in [(10, "a"), (11, "b")] {
            let host = audit.host_after_open(3, Path::new(name), true);
            assert!(matches!(host, HostDir::Open(_)), "{name}: {host:?}");
            audit.opened(3, fd, &path(name), host);
        }
        assert!(audit.refuse_open(10, x, true, &path("x")), "a/x is a FIFO");
        assert!(!audit.refuse_open(11, x, true, &path("x")), "b/x is a regular file");
        assert!(!audit.refuse_open(3, Path::new("b/x"), true, &path("b/x")));
        assert!(audit.refuse_open(3, Path::new("a/x"), true, &path("a/x")));
        // Descriptor 10 (a/) renumbered onto 11: an open from 11 now opens a/x.
        audit.renumbered(10, 11);
        assert!(audit.refuse_open(11, x, true, &path("x")), "the handle moved with the descriptor");
        assert!(!audit.refuse_open(10, x, true, &path("x")), "10 is closed: the open fails as a bad descriptor");
        audit.closed(11);
        assert!(!audit.refuse_open(11, x, true, &path("x")), "closed, and its handle with it");
        assert!(!audit.dirs.contains_key(&11));
        // A file's descriptor is no directory; one the host could not open is refused rather than unchecked.
        let file = audit.host_after_open(3, Path::new("b/x"), true);
        assert!(matches!(file, HostDir::NotADirectory), "{file:?}");
        audit.opened(3, 12, &path("gone"), HostDir::Unknown);
        assert!(audit.refuse_open(12, x, true, &path("x")));
        let denials = audit.into_denials();
        // The three refusals of /data/a/x are one denial.
        assert_eq!(denials.len(), 2, "{denials:#?}");
        assert_eq!((denials[0].capability.as_str(), denials[0].target.as_str()), ("fs", "/data/a/x"));
        assert!(denials[0].reason.contains("FIFO"), "{denials:#?}");
        assert_eq!(denials[1].target, "/data/gone/x");
        assert!(denials[1].reason.contains("could not see"), "{denials:#?}");
    }
}
