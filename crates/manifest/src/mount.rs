use crate::error::ManifestError;
use std::path::{Component, Path, PathBuf};

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Canonical absolute host path (symlinks resolved).
    pub host: PathBuf,
    /// Absolute path under which the guest sees it.
    pub guest: String,
    /// What the guest may do there.
    pub access: Access,
}

/// What a guest may do inside a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// List, stat and read; no creation, modification or removal.
    ReadOnly,
    /// Everything `ReadOnly` allows, plus create, write, rename and remove.
    ReadWrite,
}

/// Host directories that are never mounted: they expose the host kernel and devices rather than data.
const REFUSED_HOST_DIRS: &[&str] = &["/proc", "/sys", "/dev"];

impl Mount {
    /// The mount written back as a manifest entry: `HOST` when the guest path is the same, else `HOST:GUEST`.
    pub fn spec(&self) -> String {
        let host = self.host.display().to_string();
        if host == self.guest { host } else { format!("{host}:{}", self.guest) }
    }

    /// The host path an `allowed_*_paths` entry names, joined to `base` as written: no lookup, no normalisation.
    /// A caller that must check an entry against its own grants before [`CapabilityManifest::resolve`] touches the
    /// filesystem starts from this.
    ///
    /// [`CapabilityManifest::resolve`]: crate::CapabilityManifest::resolve
    pub fn written_host(spec: &str, base: &Path) -> PathBuf {
        base.join(split_spec(spec).0)
    }

    /// Resolves one `allowed_*_paths` entry. `field` names it in errors; relative host paths are taken from `base`.
    pub(crate) fn resolve(spec: &str, access: Access, field: &str, base: &Path) -> Result<Mount, ManifestError> {
        let invalid = |message: String| ManifestError::invalid(field, message);
        let (host_text, guest_text) = split_spec(spec);
        if host_text.is_empty() {
            return Err(invalid(format!("{spec:?} has an empty host path")));
        }
        let written = Self::written_host(spec, base);
        let lexical = normalize_lexically(&written);
        let metadata = std::fs::metadata(&written)
            .map_err(|e| invalid(format!("host path {} cannot be used: {e}", written.display())))?;
        if !metadata.is_dir() {
            return Err(invalid(format!(
                "host path {} is not a directory; mount the directory that holds it",
                written.display()
            )));
        }
        let canonical = std::fs::canonicalize(&written)
            .map_err(|e| invalid(format!("host path {} cannot be resolved: {e}", written.display())))?;
        if access == Access::ReadWrite && canonical != lexical {
            return Err(invalid(format!(
                "host path {} resolves through a symlink to {}; grant write access to the real directory instead",
                lexical.display(),
                canonical.display()
            )));
        }
        if access == Access::ReadWrite && canonical == Path::new("/") {
            return Err(invalid("write access to the host's root directory is never granted".into()));
        }
        if let Some(dir) = REFUSED_HOST_DIRS.iter().find(|d| canonical.starts_with(d)) {
            return Err(invalid(format!(
                "{} is inside {dir}, which exposes the host kernel or devices and is never mounted",
                canonical.display()
            )));
        }
        let guest = match guest_text {
            Some(g) => validate_guest_path(g).map_err(|m| invalid(format!("guest path {g:?} {m}")))?,
            None => {
                let text = lexical.to_str().ok_or_else(|| {
                    invalid(format!("host path {} is not UTF-8; give a guest path with HOST:GUEST", lexical.display()))
                })?;
                validate_guest_path(text).map_err(|m| invalid(format!("guest path {text:?} {m}")))?
            }
        };
        Ok(Mount { host: canonical, guest, access })
    }
}

/// Splits `HOST:GUEST` at the last `:` that is followed by `/`; without one, the whole text is the host path.
pub(crate) fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.rmatch_indices(":/").next() {
        Some((i, _)) if i > 0 => (&spec[..i], Some(&spec[i + 1..])),
        _ => (spec, None),
    }
}

fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn validate_guest_path(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("must be absolute");
    }
    if path.contains('\0') {
        return Err("must not contain NUL");
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err("must not contain `.` or `..` segments");
    }
    Ok(format!("/{}", segments.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_and_guest_at_the_last_colon_slash() {
        assert_eq!(split_spec("/data"), ("/data", None));
        assert_eq!(split_spec("/data:/mnt"), ("/data", Some("/mnt")));
        assert_eq!(split_spec("./rel:/g/h"), ("./rel", Some("/g/h")));
        assert_eq!(split_spec("/odd:name"), ("/odd:name", None));
        assert_eq!(Mount::written_host("./rel:/g", Path::new("/base")), Path::new("/base/./rel"));
        assert_eq!(Mount::written_host("/abs", Path::new("/base")), Path::new("/abs"));
    }

    #[test]
    fn guest_paths_are_normalised_and_must_not_climb() {
        assert_eq!(validate_guest_path("/a//b/"), Ok("/a/b".into()));
        assert_eq!(validate_guest_path("/"), Ok("/".into()));
        assert!(validate_guest_path("a/b").is_err());
        assert!(validate_guest_path("/a/../b").is_err());
    }

    #[test]
    fn write_grant_through_a_symlink_is_refused_but_read_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let base = Path::new("/");
        let spec = link.to_str().unwrap();
        let err = Mount::resolve(spec, Access::ReadWrite, "allowed_write_paths[0]", base).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        let canonical_real = std::fs::canonicalize(&real).unwrap();
        let read = Mount::resolve(spec, Access::ReadOnly, "allowed_read_paths[0]", base).unwrap();
        assert_eq!(read.host, canonical_real);
        assert_eq!(read.guest, spec);
    }

    #[test]
    fn missing_paths_files_and_kernel_dirs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let base = Path::new("/");
        for (spec, access) in [
            (dir.path().join("absent").display().to_string(), Access::ReadOnly),
            (file.display().to_string(), Access::ReadOnly),
            ("/proc".to_string(), Access::ReadOnly),
            ("/".to_string(), Access::ReadWrite),
        ] {
            assert!(Mount::resolve(&spec, access, "f", base).is_err(), "{spec}");
        }
    }
}
