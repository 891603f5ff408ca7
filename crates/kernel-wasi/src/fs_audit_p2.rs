//! Denial reporting for WASI preview2 filesystem calls.
//!
//! The component linker's `wasi:filesystem` path functions are replaced by thin wrappers that call wasmtime-wasi's
//! own implementation unchanged and report refusals to the run's [`FsAudit`]. Unlike preview1, component host
//! functions receive their arguments already lifted (the path is a `String`), so no guest rewrite is needed.
//! `get-directories` is wrapped too, to learn which resource handle stands for which mount. Paths are kept cut at
//! the report's bound ([`GuestPath`]), however long the guest's.

use crate::fs_audit::{FsAudit, GuestPath, HostDir, Want};
use crate::special_files::special_file;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::FsError;
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::p2::bindings::sync::filesystem::types::{
    self as fs, Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, NewTimestamp, OpenFlags, PathFlags,
};

/// The `wasi:filesystem` version wasmtime-wasi 48 implements; components importing older 0.2 versions are linked to
/// it by semver, so wrapping this one covers them.
const TYPES: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

/// Store state that carries an [`FsAudit`] and a WASI filesystem.
pub(crate) trait AuditedFilesystem: WasiFilesystemView + 'static {
    fn audit(&mut self) -> &mut FsAudit;
}

fn is_permission_error(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly)
}

/// Turns wasmtime-wasi's error into the guest-visible error code, recording a refusal; a trap stays a trap.
fn settle<T: AuditedFilesystem, R>(
    store: &mut StoreContextMut<'_, T>,
    result: Result<R, FsError>,
    dir: u32,
    want: Want,
    path: &GuestPath,
) -> wasmtime::Result<(Result<R, ErrorCode>,)> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(error) => {
            let code = fs::Host::convert_error_code(&mut store.data_mut().filesystem(), error)?;
            store.data_mut().audit().failed(dir, want, path, is_permission_error(code));
            Ok((Err(code),))
        }
    }
}

/// Replaces the path-taking `wasi:filesystem` functions of `linker` with auditing wrappers.
pub(crate) fn add_audit_wrappers<T: AuditedFilesystem>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(PREOPENS)?.func_wrap("get-directories", |mut store: StoreContextMut<'_, T>, (): ()| {
        let dirs = preopens::Host::get_directories(&mut store.data_mut().filesystem())?;
        for (handle, path) in &dirs {
            store.data_mut().audit().preopened(handle.rep(), path);
        }
        Ok((dirs,))
    })?;

    let mut types = linker.instance(TYPES)?;
    types.func_wrap(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, T>,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            let dir = fd.rep();
            let want = if oflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE)
                || flags.intersects(DescriptorFlags::WRITE | DescriptorFlags::MUTATE_DIRECTORY)
            {
                Want::Write
            } else {
                Want::Read
            };
            let shown = GuestPath::new(&path);
            // Only regular files and directories may be opened: a FIFO, socket or device could block this thread.
            let host_dir = match store.data_mut().filesystem().table.get(&fd) {
                Ok(wasmtime_wasi::filesystem::Descriptor::Dir(d)) => Some(d.dir.clone()),
                _ => None,
            };
            let follow_symlinks = path_flags.contains(PathFlags::SYMLINK_FOLLOW);
            if let Some(kind) = host_dir.and_then(|d| special_file(&d, std::path::Path::new(&path), follow_symlinks)) {
                store.data_mut().audit().refused_special(dir, &shown, kind);
                return Ok((Err(ErrorCode::Access),));
            }
            let result =
                HostDescriptor::open_at(&mut store.data_mut().filesystem(), fd, path_flags, path, oflags, flags);
            if let Ok(opened) = &result {
                let handle = opened.rep();
                store.data_mut().audit().opened(dir, handle, &shown, HostDir::Unknown);
            }
            settle(&mut store, result, dir, want, &shown)
        },
    )?;

    macro_rules! audited {
        ($name:literal, $method:ident, $want:expr, ($($arg:ident: $ty:ty),*), $path:ident, $dir:ident) => {
            types.func_wrap(
                $name,
                |mut store: StoreContextMut<'_, T>, (fd, $($arg),*): (Resource<Descriptor>, $($ty),*)| {
                    let (dir, target) = audited!(@target fd, $dir, $path);
                    let result = HostDescriptor::$method(&mut store.data_mut().filesystem(), fd, $($arg),*);
                    settle(&mut store, result, dir, $want, &target)
                },
            )?;
        };
        (@target $fd:ident, fd, $path:ident) => { ($fd.rep(), GuestPath::new(&$path)) };
        (@target $fd:ident, $dir:ident, $path:ident) => { ($dir.rep(), GuestPath::new(&$path)) };
    }

    audited!("[method]descriptor.create-directory-at", create_directory_at, Want::Write, (path: String), path, fd);
    audited!("[method]descriptor.remove-directory-at", remove_directory_at, Want::Write, (path: String), path, fd);
    audited!("[method]descriptor.unlink-file-at", unlink_file_at, Want::Write, (path: String), path, fd);
    audited!("[method]descriptor.readlink-at", readlink_at, Want::Read, (path: String), path, fd);
    audited!("[method]descriptor.stat-at", stat_at, Want::Read, (flags: PathFlags, path: String), path, fd);
    audited!(
        "[method]descriptor.set-times-at",
        set_times_at,
        Want::Write,
        (flags: PathFlags, path: String, atim: NewTimestamp, mtim: NewTimestamp),
        path,
        fd
    );
    audited!("[method]descriptor.symlink-at", symlink_at, Want::Write, (old: String, path: String), path, fd);
    audited!(
        "[method]descriptor.rename-at",
        rename_at,
        Want::Write,
        (old: String, new_dir: Resource<Descriptor>, path: String),
        path,
        new_dir
    );
    audited!(
        "[method]descriptor.link-at",
        link_at,
        Want::Write,
        (flags: PathFlags, old: String, new_dir: Resource<Descriptor>, path: String),
        path,
        new_dir
    );
    Ok(())
}
