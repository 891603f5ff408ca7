//! Installing the declared packages with pip: hash-checked, pure-Python wheels for CPython 3.13, no dependency
//! resolution, into a directory the engine reads once at build time.

use crate::{BuildError, PythonBuild, shown};
use std::path::Path;
use std::process::Command;

/// A distribution pip installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Its name, as its metadata gives it.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// File name endings of native code, which the engine cannot load.
const NATIVE: [&str; 4] = [".so", ".pyd", ".dylib", ".dll"];

/// Installs the requirements into `target`; returns what was installed.
pub(crate) fn install(build: &PythonBuild, target: &Path) -> Result<Vec<Installed>, BuildError> {
    let mut pip = Command::new(&build.python);
    pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", "--no-deps"])
        .args(["--no-compile", "--require-hashes", "--only-binary=:all:", "--implementation", "py"])
        .args(["--python-version", "3.13", "--abi", "none", "--platform", "any", "--target"])
        .arg(target)
        .arg("-r")
        .arg(&build.requirements)
        .env("PIP_CONFIG_FILE", "/dev/null");
    if let Some(links) = &build.find_links {
        pip.arg("--no-index").arg("--find-links").arg(links);
    }
    let output = pip.output().map_err(|e| BuildError::Pip(format!("cannot run {}: {e}", shown(&build.python))))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
        let mut message = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        if message.contains("No matching distribution") {
            message.push_str(
                "\n(only pure-Python wheels, tagged py3-none-any, can be declared: packages with C extensions need \
                 an engine build of their own)",
            );
        }
        return Err(BuildError::Pip(message));
    }
    let mut native = Vec::new();
    find_native(target, target, &mut native)?;
    if !native.is_empty() {
        return Err(BuildError::NotPure(format!(
            "the packages hold native code, which the engine cannot load: {}",
            native.join(", ")
        )));
    }
    let _ = std::fs::remove_dir_all(target.join("bin"));
    installed(target)
}

fn find_native(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), BuildError> {
    let entries = std::fs::read_dir(dir).map_err(|e| BuildError::Io(format!("cannot list {}: {e}", shown(dir))))?;
    for entry in entries {
        let path = entry.map_err(|e| BuildError::Io(e.to_string()))?.path();
        if path.is_dir() {
            find_native(root, &path, out)?;
        } else if NATIVE.iter().any(|ending| path.to_string_lossy().ends_with(ending)) {
            out.push(path.strip_prefix(root).unwrap_or(&path).display().to_string());
        }
    }
    Ok(())
}

/// The distributions in `target`, from their `*.dist-info/METADATA`.
fn installed(target: &Path) -> Result<Vec<Installed>, BuildError> {
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(target).map_err(|e| BuildError::Io(format!("cannot list {}: {e}", shown(target))))?;
    for entry in entries {
        let path = entry.map_err(|e| BuildError::Io(e.to_string()))?.path();
        if !path.to_string_lossy().ends_with(".dist-info") {
            continue;
        }
        let metadata = std::fs::read_to_string(path.join("METADATA")).unwrap_or_default();
        let field = |name: &str| {
            metadata.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).unwrap_or_default()
        };
        found.push(Installed { name: field("Name:"), version: field("Version:") });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}
