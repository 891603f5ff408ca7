//! Custom Python engines with declared packages (`wasmagent engine build python --requirements FILE --out FILE`).
//!
//! It owns turning an operator's requirements file into an engine: pip installs the listed packages (every one
//! pinned by hash, pure-Python wheels only, no dependency resolution: the file lists everything) into a temporary
//! directory; the shipped engine is instantiated once with that directory preopened read-only at `/packages`, its
//! `wasmagent-freeze` export imports every module found there (`runner._freeze`), and wasmtime-wizer snapshots the
//! instance again. The result runs exactly like the shipped engine (same bridge, same refusals, no filesystem access
//! for imports) and is loaded with [`wasmagent_kernel_python::PythonEngine::from_file`], pinned by its digest.
//!
//! It must not be depended on by the sandbox crates, and must not run anything but pip (on the operator's machine,
//! at the operator's request) and the shipped engine.

mod freeze;
mod packages;

use std::path::{Path, PathBuf};

pub use packages::Installed;

/// What to build.
#[derive(Debug, Clone)]
pub struct PythonBuild {
    /// A pip requirements file: every requirement pinned (`name==version`) with `--hash=sha256:...`.
    pub requirements: PathBuf,
    /// Install from this directory of wheels only (`pip --no-index --find-links`), for offline builds.
    pub find_links: Option<PathBuf>,
    /// The Python whose pip installs the packages (`python3` by default).
    pub python: PathBuf,
}

/// A built engine.
#[derive(Debug)]
pub struct BuiltEngine {
    /// The engine module.
    pub wasm: Vec<u8>,
    /// `sha256:<hex>` of [`BuiltEngine::wasm`]: what `--python-engine-digest` pins.
    pub digest: String,
    /// The distributions installed (name and version, from their metadata).
    pub installed: Vec<Installed>,
    /// Modules imported into the snapshot.
    pub imported: Vec<String>,
    /// Modules that failed to import (submodules only: a failing top-level module fails the build), with why.
    pub failed: Vec<(String, String)>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// pip refused or failed (an unpinned requirement, a hash mismatch, no pure-Python wheel, no network).
    #[error("pip could not install the requirements: {0}")]
    Pip(String),
    /// A package is not pure Python.
    #[error("{0}")]
    NotPure(String),
    /// Importing the packages into the engine failed.
    #[error("freezing the packages into the engine failed: {0}")]
    Freeze(String),
    /// Reading or writing files.
    #[error("{0}")]
    Io(String),
}

impl BuiltEngine {
    /// The provenance written next to the engine: its digest, the shipped engine it was built from, the
    /// requirements (by digest and as given), what was installed and imported.
    pub fn provenance(&self, build: &PythonBuild, requirements: &str) -> serde_json::Value {
        serde_json::json!({
            "engine_digest": self.digest,
            "base_engine_digest": wasmagent_kernel_python::ENGINE_WASM_DIGEST,
            "requirements_digest": wasmagent_kernel_python::sha256(requirements.as_bytes()),
            "requirements": requirements.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect::<Vec<_>>(),
            "find_links": build.find_links.as_ref().map(|p| p.display().to_string()),
            "installed": self.installed.iter().map(|i| format!("{}=={}", i.name, i.version)).collect::<Vec<_>>(),
            "imported": self.imported,
            "failed": self.failed.iter().map(|(m, why)| serde_json::json!({"module": m, "error": why})).collect::<Vec<_>>(),
            "rebuild": "wasmagent engine build python --requirements FILE --out FILE",
        })
    }
}

/// Builds an engine holding the packages `build` lists.
pub fn build_python_engine(build: &PythonBuild) -> Result<BuiltEngine, BuildError> {
    let packages = tempfile::tempdir().map_err(|e| BuildError::Io(format!("cannot create a directory: {e}")))?;
    let installed = packages::install(build, packages.path())?;
    let frozen = freeze::freeze(wasmagent_kernel_python::ENGINE_WASM, packages.path())?;
    let digest = wasmagent_kernel_python::sha256(&frozen.wasm);
    Ok(BuiltEngine { wasm: frozen.wasm, digest, installed, imported: frozen.imported, failed: frozen.failed })
}

/// `path`, for messages.
fn shown(path: &Path) -> String {
    path.display().to_string()
}
