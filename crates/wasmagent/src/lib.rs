//! wasmagent runs AI agents' tools and agent-written code in WebAssembly sandboxes, all held to one
//! [`CapabilityManifest`]: which files, hosts, environment and tools a run may touch, and how much time, fuel,
//! memory and output it may use. Every run returns a [`RunReport`] (schema `wasmagent.run/v1`) saying what
//! happened, what was refused, and what it used.
//!
//! This crate is the entry point for embedders: [`Sandbox`] owns the engine and the kernels and picks the kernel
//! for each request. It holds no policy of its own (that is [`manifest`]) and no engine code (that is in the kernel
//! crates). The `wasmagent` command-line tool is a thin client of this API.
//!
//! ```no_run
//! use wasmagent::{CapabilityManifest, RunRequest, Sandbox};
//!
//! let sandbox = Sandbox::new()?;
//! let manifest = CapabilityManifest::from_toml_str(r#"
//!     allowed_read_paths = ["/srv/data"]
//!     env = { MODE = "report" }
//!     cpu_ms = 2000
//! "#)?;
//! let manifest = sandbox.resolve(&manifest, std::path::Path::new("."))?;
//! let module = std::fs::read("tool.wasm")?;
//! let report = sandbox.run(&manifest, &RunRequest::wasm("tool.wasm", module).with_args(["--summary"]))?;
//! println!("{} in {} ms, {} denials", report.outcome.as_str(), report.usage.wall_ms, report.denials.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use wasmagent_engine::{EngineOptions, SandboxEngine};
use wasmagent_kernel_wasi::WasiKernel;

pub use wasmagent_kernel::{
    Code, Denial, ErrorInfo, ErrorKind, Kernel, KernelError, Language, Outcome, RunReport, RunRequest, SCHEMA, Usage,
};
pub use wasmagent_manifest::{
    self as manifest, CapabilityManifest, EffectiveManifest, ManifestCeilings, ManifestError,
};

/// Why a run could not start. Nothing ran when one of these is returned; everything that happens once a guest
/// starts is in the [`RunReport`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifest was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The kernel refused the manifest or the code, or could not set up a sandbox.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// No kernel for this language is available in this build.
    #[error("no kernel for {0:?} code is available in this build")]
    LanguageUnavailable(Language),
}

/// Settings for a [`Sandbox`]; start from [`Sandbox::builder`].
#[derive(Default)]
pub struct SandboxBuilder {
    options: EngineOptions,
    on_compile: Option<Box<dyn Fn() + Send + Sync>>,
}

impl SandboxBuilder {
    /// The operator's ceilings: manifests asking for more are refused. Default: [`ManifestCeilings::default`].
    pub fn ceilings(mut self, ceilings: ManifestCeilings) -> Self {
        self.options.ceilings = ceilings;
        self
    }

    /// Where compiled code is cached between processes. Default: none (memory only); see [`default_cache_dir`].
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.options.cache_dir = dir;
        self
    }

    /// How many guest instances may be alive at once. Default 128.
    pub fn pool_slots(mut self, slots: u32) -> Self {
        self.options.pool_slots = slots;
        self
    }

    /// Called before code has to be compiled because no cached copy exists.
    pub fn on_compile(mut self, notify: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_compile = Some(Box::new(notify));
        self
    }

    /// Builds the engine and kernels.
    pub fn build(self) -> Result<Sandbox, Error> {
        let ceilings = self.options.ceilings.clone();
        let engine = SandboxEngine::new(self.options)?;
        let mut wasi = WasiKernel::new(engine)?;
        if let Some(notify) = self.on_compile {
            wasi = wasi.on_compile(notify);
        }
        Ok(Sandbox { wasi, ceilings })
    }
}

/// The entry point: resolves manifests and runs requests on the right kernel. Create one per process and share
/// it across threads; every run gets a fresh sandbox.
pub struct Sandbox {
    wasi: WasiKernel,
    ceilings: ManifestCeilings,
}

impl Sandbox {
    /// A sandbox with default ceilings and an in-memory code cache.
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// Settings for a sandbox.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// The ceilings manifests are held to.
    pub fn ceilings(&self) -> &ManifestCeilings {
        &self.ceilings
    }

    /// Resolves a manifest against this sandbox's ceilings; relative paths are taken from `base`.
    pub fn resolve(&self, manifest: &CapabilityManifest, base: &Path) -> Result<EffectiveManifest, Error> {
        Ok(manifest.resolve(base, &self.ceilings)?)
    }

    /// The kernel that runs `language`.
    pub fn kernel(&self, language: Language) -> Result<&dyn Kernel, Error> {
        match language {
            Language::Wasm => Ok(&self.wasi),
            other => Err(Error::LanguageUnavailable(other)),
        }
    }

    /// Runs `request` in a fresh sandbox held to `manifest`.
    pub fn run(&self, manifest: &EffectiveManifest, request: &RunRequest) -> Result<RunReport, Error> {
        Ok(self.kernel(request.code().language())?.run(manifest, request)?)
    }
}

/// The per-user directory for compiled code: `$WASMAGENT_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmagent`, else
/// `$HOME/.cache/wasmagent`. `None` when none of these is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("WASMAGENT_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("wasmagent")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/wasmagent")))
}
