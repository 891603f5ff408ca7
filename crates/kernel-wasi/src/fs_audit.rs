//! Denial reporting for WASI preview1 filesystem calls.
//!
//! wasmtime-wasi (through cap-std) is what *enforces* the mounts: a path that climbs out with `..`, follows a
//! symlink out of its mount, or writes into a read-only mount fails inside wasmtime-wasi. This module only
//! *observes*: [`crate::instrument`] makes each path-taking preview1 call report its result to an audit import
//! defined here, and when the result is a permission-class errno the attempt is recorded as a [`Denial`] with the
//! guest path and the reason in manifest terms. Paths outside every mount reach the host through the empty
//! read-only "catch-all" root preopen, so those attempts are seen too. The same import module carries the guard
//! that stops `poll_oneoff` from sleeping past `cpu_ms` ([`crate::clock`]).

use crate::clock::{HasRunClock, guard_poll_oneoff};
use crate::host::guest_bytes;
use std::collections::HashMap;
use wasmagent_kernel::Denial;
use wasmagent_manifest::Access;
use wasmtime::{Caller, Extern, Linker};

/// Import module of the audit functions. Guest modules may not import it themselves ([`crate::instrument`]).
pub(crate) const AUDIT_MODULE: &str = "wasmagent:fs-audit";

// WASI preview1 errno values.
const ERRNO_ACCES: i32 = 2;
const ERRNO_PERM: i32 = 63;
const ERRNO_ROFS: i32 = 69;
const ERRNO_NOTCAPABLE: i32 = 76;

// Bits of `oflags`, `fs_rights_base` and `fdflags` that mean "this open writes".
const OFLAGS_CREAT: i32 = 1;
const OFLAGS_TRUNC: i32 = 8;
const RIGHT_FD_WRITE: i64 = 1 << 6;
const FDFLAGS_APPEND: i32 = 1;

/// Longest path read back from guest memory for a report.
const MAX_REPORTED_PATH: usize = 4096;

/// Most refused filesystem accesses one run's report lists; the rest are counted in one closing denial, so a guest
/// looping on refused opens cannot grow the report (or host memory) until `cpu_ms`.
pub(crate) const MAX_LISTED_FS_DENIALS: usize = 100;

/// What the host knows about one guest directory descriptor.
#[derive(Debug, Clone)]
pub(crate) struct DirInfo {
    /// Guest path of the directory.
    pub(crate) guest_path: String,
    /// Guest path of the mount it lies in, and that mount's access; `None` for the catch-all root.
    pub(crate) mount: Option<(String, Access)>,
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
        if let Some(info) = self.preopens.iter().find(|p| p.guest_path == guest_path) {
            self.dirs.insert(handle, info.clone());
        }
    }

    /// `relative`, opened from directory `dir`, is now `handle`.
    pub(crate) fn opened(&mut self, dir: u32, handle: u32, relative: &str) {
        if let Some(base) = self.dirs.get(&dir) {
            let info = DirInfo { guest_path: join(&base.guest_path, relative), mount: base.mount.clone() };
            self.dirs.insert(handle, info);
        }
    }

    /// A call on `relative` from directory `dir` failed; record it when it was a refusal. `permission_error` says
    /// whether the error was of the permission class (as opposed to, say, a file that does not exist).
    pub(crate) fn failed(&mut self, dir: u32, want: Want, relative: &str, permission_error: bool) {
        let Some(dir) = self.dirs.get(&dir) else {
            return;
        };
        let capability = match want {
            Want::Read => "fs.read",
            Want::Write => "fs.write",
        };
        let target = join(&dir.guest_path, relative);
        let reason = match &dir.mount {
            // Nothing exists in the catch-all root, so every failure there is an access outside the mounts.
            None => "not inside any mount: the manifest grants no allowed_read_paths or allowed_write_paths entry \
                     for it"
                .to_owned(),
            Some(_) if !permission_error => return,
            Some((mount, _)) if climbs_out(depth_below(mount, &dir.guest_path), relative) => {
                format!("the path climbs out of mount {mount} with `..`")
            }
            Some((mount, Access::ReadOnly)) if want == Want::Write => {
                format!("mount {mount} is read-only (granted by allowed_read_paths)")
            }
            Some((mount, _)) => {
                format!("the path resolves outside mount {mount} (through a symlink or an absolute link)")
            }
        };
        let denial = Denial { capability: capability.into(), target, reason };
        if self.denials.contains(&denial) {
            return;
        }
        if self.denials.len() < MAX_LISTED_FS_DENIALS {
            self.denials.push(denial);
        } else {
            self.unlisted += 1;
        }
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
         _dirflags: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         rights_base: i64,
         _rights_inheriting: i64,
         fdflags: i32,
         opened: i32| {
            let writes = oflags & (OFLAGS_CREAT | OFLAGS_TRUNC) != 0
                || rights_base & RIGHT_FD_WRITE != 0
                || fdflags & FDFLAGS_APPEND != 0;
            let want = if writes { Want::Write } else { Want::Read };
            let relative = read_string(&mut caller, path, path_len);
            if errno == 0 {
                if let Some(new_fd) = read_i32(&mut caller, opened) {
                    caller.data_mut().fs_audit().opened(fd as u32, new_fd as u32, &relative);
                }
            } else {
                record(&mut caller, errno, want, fd, &relative);
            }
        },
    )?;

    macro_rules! audited {
        ($name:literal, $want:expr, ($($arg:ident: $ty:ty),*), |$caller:ident| $target:expr) => {
            linker.func_wrap(AUDIT_MODULE, $name, |mut $caller: Caller<'_, T>, errno: i32, $($arg: $ty),*| {
                let _ = ($($arg,)*);
                if errno != 0 {
                    let (fd, relative): (i32, String) = $target;
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

/// Reads a guest string for reporting. Out-of-bounds or oversized ranges give a placeholder, never a panic.
fn read_string<T>(caller: &mut Caller<'_, T>, ptr: i32, len: i32) -> String {
    let len = len as u32 as usize;
    let Some(mem) = memory(caller) else {
        return "<unreadable path>".into();
    };
    let shown = len.min(MAX_REPORTED_PATH);
    match guest_bytes(mem.data(&*caller), ptr, shown) {
        Some(bytes) => {
            let mut text = String::from_utf8_lossy(bytes).into_owned();
            if shown < len {
                text.push('…');
            }
            text
        }
        None => "<unreadable path>".into(),
    }
}

fn read_i32<T>(caller: &mut Caller<'_, T>, ptr: i32) -> Option<i32> {
    let mem = memory(caller)?;
    let bytes = guest_bytes(mem.data(&*caller), ptr, 4)?;
    Some(i32::from_le_bytes(bytes.try_into().ok()?))
}

fn join(dir: &str, relative: &str) -> String {
    if relative.starts_with('/') {
        return relative.to_owned();
    }
    if relative.is_empty() || relative == "." {
        return dir.to_owned();
    }
    if dir.ends_with('/') { format!("{dir}{relative}") } else { format!("{dir}/{relative}") }
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

fn depth_below(mount: &str, dir: &str) -> usize {
    let rest = dir.strip_prefix(mount).unwrap_or("");
    rest.split('/').filter(|s| !s.is_empty() && *s != ".").count()
}

fn record<T: HasFsAudit>(caller: &mut Caller<'_, T>, errno: i32, want: Want, fd: i32, relative: &str) {
    let permission_error = matches!(errno, ERRNO_ACCES | ERRNO_PERM | ERRNO_ROFS | ERRNO_NOTCAPABLE);
    caller.data_mut().fs_audit().failed(fd as u32, want, relative, permission_error);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_lexical_escapes_relative_to_the_mount_root() {
        assert!(climbs_out(0, "../etc/passwd"));
        assert!(climbs_out(1, "a/../../.."));
        assert!(!climbs_out(1, ".."));
        assert!(!climbs_out(0, "a/../b"));
        assert_eq!(depth_below("/data", "/data/x/y"), 2);
        assert_eq!(depth_below("/", "/x"), 1);
    }

    #[test]
    fn joins_guest_paths() {
        assert_eq!(join("/data", "a.txt"), "/data/a.txt");
        assert_eq!(join("/", "etc/passwd"), "/etc/passwd");
        assert_eq!(join("/data", "."), "/data");
    }
}
