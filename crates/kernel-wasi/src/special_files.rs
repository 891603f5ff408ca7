//! Only regular files and directories may be opened in a mount.
//!
//! Opening a FIFO (named pipe) for reading waits for a writer, and for writing waits for a reader; reading a FIFO, a
//! socket or a terminal waits for data. wasmtime-wasi does these opens and reads on the guest's thread, where the
//! run's deadline cannot reach, so a mount holding one could hang a host thread forever. Before each guest open the
//! host therefore looks at what the path names, resolved exactly as wasmtime-wasi resolves it (beneath the
//! directory, symlinks followed only when the guest asks), through a handle opened with `O_PATH` — which never
//! blocks, never runs a device's open, and needs no read permission — and refuses anything else than a regular
//! file, a directory or a symlink (which the open itself then follows or refuses).

use std::fs::File;
use std::path::Path;

/// A kind of file a guest may not open in a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpecialFile {
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl SpecialFile {
    /// The reason a refusal gives, naming what the path is.
    pub(crate) fn reason(self) -> String {
        let what = match self {
            SpecialFile::Fifo => "a FIFO (named pipe)",
            SpecialFile::Socket => "a Unix socket",
            SpecialFile::CharDevice => "a character device",
            SpecialFile::BlockDevice => "a block device",
        };
        format!(
            "the path is {what}: only regular files and directories may be opened in a mount, because opening or \
             reading anything else can block the host past the run's deadline"
        )
    }
}

/// What `path` beneath the directory `dir` is when it is a [`SpecialFile`]; `None` for anything else, including a
/// path that cannot be opened (the guest's own open then fails the same way, and reports it).
pub(crate) fn special_file(dir: &File, path: &Path, follow_symlinks: bool) -> Option<SpecialFile> {
    let file = open_path(dir, path, follow_symlinks)?;
    kind(&file.metadata().ok()?.file_type())
}

/// `path` beneath `dir` as a directory handle, when it is a directory; `Err` when it cannot be opened at all.
pub(crate) fn directory(dir: &File, path: &Path, follow_symlinks: bool) -> Result<Option<File>, ()> {
    let file = open_path(dir, path, follow_symlinks).ok_or(())?;
    Ok(file.metadata().map_err(|_| ())?.is_dir().then_some(file))
}

#[cfg(unix)]
fn open_path(dir: &File, path: &Path, follow_symlinks: bool) -> Option<File> {
    use cap_primitives::fs::{FollowSymlinks, OpenOptions, OpenOptionsExt};
    let mut options = OpenOptions::new();
    options.read(true);
    // O_PATH on Linux: a handle to the name only. Elsewhere O_NONBLOCK, so that opening a FIFO cannot wait.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    options.custom_flags(rustix::fs::OFlags::PATH.bits() as i32);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    // cap-primitives' own spelling of `cap_fs_ext::OpenOptionsFollowExt::follow`.
    options._cap_fs_ext_follow(if follow_symlinks { FollowSymlinks::Yes } else { FollowSymlinks::No });
    cap_primitives::fs::open(dir, path, &options).ok()
}

#[cfg(not(unix))]
fn open_path(_dir: &File, _path: &Path, _follow_symlinks: bool) -> Option<File> {
    None
}

#[cfg(unix)]
fn kind(file_type: &std::fs::FileType) -> Option<SpecialFile> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        Some(SpecialFile::Fifo)
    } else if file_type.is_socket() {
        Some(SpecialFile::Socket)
    } else if file_type.is_char_device() {
        Some(SpecialFile::CharDevice)
    } else if file_type.is_block_device() {
        Some(SpecialFile::BlockDevice)
    } else {
        None
    }
}

#[cfg(not(unix))]
fn kind(_file_type: &std::fs::FileType) -> Option<SpecialFile> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn fifos_sockets_and_devices_are_special_and_files_directories_and_symlinks_are_not() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("file.txt"), "x").unwrap();
        std::os::unix::fs::symlink("file.txt", p.join("link")).unwrap();
        std::os::unix::fs::symlink("/dev/null", p.join("null")).unwrap();
        let status = std::process::Command::new("mkfifo").arg(p.join("pipe")).status().unwrap();
        assert!(status.success());
        let _socket = std::os::unix::net::UnixListener::bind(p.join("socket")).unwrap();
        let dir = File::open(p).unwrap();
        let of = |path: &str, follow: bool| special_file(&dir, Path::new(path), follow);
        assert_eq!(of("pipe", false), Some(SpecialFile::Fifo));
        assert_eq!(of("socket", true), Some(SpecialFile::Socket));
        assert_eq!(of("file.txt", true), None);
        assert_eq!(of("sub", true), None);
        assert_eq!(of("link", false), None, "the symlink itself");
        assert_eq!(of("missing", true), None);
        // A symlink out of the directory is not followed even to learn what it names.
        assert_eq!(of("null", true), None);
        assert!(directory(&dir, Path::new("sub"), true).unwrap().is_some());
        assert!(directory(&dir, Path::new("file.txt"), true).unwrap().is_none());
        assert!(directory(&dir, Path::new("missing"), true).is_err());
    }
}
