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

pub mod learn;
pub mod manifest_diff;
mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmagent_egress::Egress;
use wasmagent_engine::{EngineOptions, SandboxEngine};
use wasmagent_kernel_js::JsKernel;
pub use wasmagent_kernel_python::PythonEngine;
use wasmagent_kernel_python::PythonKernel;
use wasmagent_kernel_wasi::WasiKernel;
use wasmagent_signing::keys::PublicKey;
use wasmagent_signing::record::AuditLog;

pub use session::{SandboxSession, SessionError, SessionInfo, SessionSnapshot};
pub use wasmagent_egress::{self as egress, EgressConfig, Resolve, StaticResolver};
pub use wasmagent_engine::DEFAULT_MAX_CACHE_BYTES;
pub use wasmagent_kernel::{
    Artifact, ArtifactKind, Code, Denial, ErrorInfo, ErrorKind, Kernel, KernelError, Language, Outcome, RunReport,
    RunRequest, SCHEMA, Session, Unlisted, Usage, bounds,
};
pub use wasmagent_manifest::{
    self as manifest, CapabilityManifest, EffectiveManifest, ManifestCeilings, ManifestError, SessionLimits,
};
pub use wasmagent_signing as signing;
pub use wasmagent_tools::{
    Tool, ToolRegistry, ToolResult, ToolSession, capability_covers, is_granted, is_valid_tool_name,
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
    /// The run happened, but its record could not be appended to the audit log.
    #[error("the run finished but its audit record could not be written: {error}")]
    Record {
        /// The run's report.
        report: Box<RunReport>,
        /// Why the record was not written.
        error: wasmagent_signing::SigningError,
    },
}

/// Settings for a [`Sandbox`]; start from [`Sandbox::builder`].
#[derive(Default)]
pub struct SandboxBuilder {
    options: EngineOptions,
    on_compile: Option<Arc<dyn Fn() + Send + Sync>>,
    audit_log: Option<Arc<AuditLog>>,
    tools: ToolRegistry,
    egress: EgressConfig,
    resolver: Option<Arc<dyn Resolve>>,
    session_limits: SessionLimits,
    python_engine: Option<PythonEngine>,
}

impl SandboxBuilder {
    /// The operator's session limits ([`Sandbox::session`]). Default: [`SessionLimits::default`].
    pub fn session_limits(mut self, limits: SessionLimits) -> Self {
        self.session_limits = limits;
        self
    }

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

    /// Most bytes of compiled code kept in the cache directory; past it the least recently used entries are
    /// removed. Default [`DEFAULT_MAX_CACHE_BYTES`] (1 GiB); see [`default_max_cache_bytes`].
    pub fn max_cache_bytes(mut self, bytes: u64) -> Self {
        self.options.max_cache_bytes = bytes;
        self
    }

    /// How many guest instances may be alive at once. Default 128.
    pub fn pool_slots(mut self, slots: u32) -> Self {
        self.options.pool_slots = slots;
        self
    }

    /// Largest module or component accepted, in bytes. Default 64 MiB.
    pub fn max_code_bytes(mut self, bytes: usize) -> Self {
        self.options.max_code_bytes = bytes;
        self
    }

    /// Longest time compiling one module or component from a request may take; past it the run is refused with
    /// [`KernelError::InvalidCode`]. Default 20 s. The JavaScript and Python engines are not held to it.
    pub fn max_compile_ms(mut self, ms: u64) -> Self {
        self.options.max_compile_ms = ms;
        self
    }

    /// Called before code has to be compiled because no cached copy exists.
    pub fn on_compile(mut self, notify: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_compile = Some(Arc::new(notify));
        self
    }

    /// Host tools guest code may call (each only where the manifest grants `tool:NAME`). Default: none.
    pub fn tools(mut self, tools: ToolRegistry) -> Self {
        self.tools = tools;
        self
    }

    /// The operator's egress configuration: private hosts guests may reach (still only those their manifest's
    /// `allowed_hosts` lists) and secrets bound to hosts. Default: none.
    pub fn egress(mut self, config: EgressConfig) -> Self {
        self.egress = config;
        self
    }

    /// Resolves host names for egress with `resolver` instead of the system resolver.
    pub fn egress_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Runs Python on `engine` (a custom build with declared packages, `wasmagent engine build python`) instead of
    /// the shipped engine.
    pub fn python_engine(mut self, engine: PythonEngine) -> Self {
        self.python_engine = Some(engine);
        self
    }

    /// Appends a signed record of every run to `log`.
    pub fn audit_log(mut self, log: AuditLog) -> Self {
        self.audit_log = Some(Arc::new(log));
        self
    }

    /// Appends a signed record of every run to `log`, which the embedder also writes other records to.
    pub fn shared_audit_log(mut self, log: Arc<AuditLog>) -> Self {
        self.audit_log = Some(log);
        self
    }

    /// Builds the engine and kernels.
    pub fn build(self) -> Result<Sandbox, Error> {
        self.session_limits.validate().map_err(KernelError::Unavailable)?;
        let ceilings = self.options.ceilings.clone();
        let engine = SandboxEngine::new(self.options)?;
        let tools = Arc::new(self.tools);
        let resolver = self.resolver.unwrap_or_else(|| Arc::new(wasmagent_egress::SystemResolver));
        let egress = Egress::with_resolver(self.egress, resolver)
            .map_err(|e| KernelError::Unavailable(format!("cannot start the network runtime: {e}")))?;
        let mut wasi = WasiKernel::new(engine.clone(), egress.clone())?;
        let mut js = JsKernel::new(engine.clone(), tools.clone(), egress.clone())?;
        let mut python = PythonKernel::new(engine, tools, egress)?;
        if let Some(custom) = self.python_engine {
            python = python.with_engine(custom);
        }
        if let Some(notify) = self.on_compile {
            let (for_js, for_python) = (notify.clone(), notify.clone());
            wasi = wasi.on_compile(move || notify());
            js = js.on_compile(move || for_js());
            python = python.on_compile(move || for_python());
        }
        Ok(Sandbox {
            wasi,
            js,
            python,
            ceilings,
            audit_log: self.audit_log,
            verdicts: Default::default(),
            session_limits: self.session_limits,
            live_sessions: Default::default(),
        })
    }
}

/// The entry point: resolves manifests and runs requests on the right kernel. Create one per process and share
/// it across threads; every run gets a fresh sandbox.
pub struct Sandbox {
    wasi: WasiKernel,
    js: JsKernel,
    python: PythonKernel,
    ceilings: ManifestCeilings,
    audit_log: Option<Arc<AuditLog>>,
    session_limits: SessionLimits,
    live_sessions: Arc<session::LiveSessions>,
    /// Signature verdicts by code digest and trusted keys: the key id that verified, or why none did.
    verdicts: std::sync::Mutex<std::collections::HashMap<String, Result<String, String>>>,
}

/// Signature verdicts kept before the cache starts over.
const MAX_CACHED_VERDICTS: usize = 1024;

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

    /// The operator's session limits.
    pub fn session_limits(&self) -> &SessionLimits {
        &self.session_limits
    }

    /// The kernel that runs `language`.
    pub fn kernel(&self, language: Language) -> &dyn Kernel {
        match language {
            Language::Wasm => &self.wasi,
            Language::Js => &self.js,
            Language::Python => &self.python,
        }
    }

    /// Runs `request` in a fresh sandbox held to `manifest`.
    ///
    /// WebAssembly code is checked against the manifest's `trusted_keys` first: with `require_signature`, code that
    /// no trusted key signed is refused before it is compiled (outcome `error`, error kind `signature`); otherwise a
    /// verified signer is recorded in `signer_key_id`. With an audit log, a signed record of the run is appended.
    pub fn run(&self, manifest: &EffectiveManifest, request: &RunRequest) -> Result<RunReport, Error> {
        let kernel = self.kernel(request.code().language());
        kernel.check(manifest)?;
        let report = match self.check_signature(kernel, manifest, request) {
            Err(refusal) => *refusal,
            Ok(signer) => {
                let mut report = kernel.run(manifest, request)?;
                report.signer_key_id = signer;
                report.enforce_bounds();
                report
            }
        };
        match &self.audit_log {
            Some(log) => match log.append(&report) {
                Ok(_) => Ok(report),
                Err(error) => Err(Error::Record { report: Box::new(report), error }),
            },
            None => Ok(report),
        }
    }

    /// The id of the trusted key that signed the code, `None` when unsigned or untrusted and signatures are
    /// optional, or the refusal report when they are required.
    fn check_signature(
        &self,
        kernel: &dyn Kernel,
        manifest: &EffectiveManifest,
        request: &RunRequest,
    ) -> Result<Option<String>, Box<RunReport>> {
        let Code::Wasm(bytes) = request.code() else {
            return Ok(None);
        };
        if manifest.trusted_keys().is_empty() {
            return Ok(None);
        }
        // The same code under the same trusted keys always verifies the same way: remember the verdict, so a
        // module run many times is hashed for its signature once.
        let key = format!("{}|{}", request.code_digest(), manifest.trusted_keys().join(","));
        let cached = self.verdicts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned();
        let verified = match cached {
            Some(verdict) => verdict,
            None => {
                let keys: Result<Vec<PublicKey>, _> =
                    manifest.trusted_keys().iter().map(|k| PublicKey::parse(k.as_bytes())).collect();
                let verdict =
                    keys.and_then(|keys| wasmagent_signing::module::verify(bytes, &keys)).map_err(|e| e.to_string());
                let mut verdicts = self.verdicts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if verdicts.len() >= MAX_CACHED_VERDICTS {
                    verdicts.clear();
                }
                verdicts.insert(key, verdict.clone());
                verdict
            }
        };
        match verified {
            Ok(key_id) => Ok(Some(key_id)),
            Err(_) if !manifest.require_signature() => Ok(None),
            Err(error) => Err(Box::new(RunReport::refused(
                kernel.name(),
                ErrorInfo {
                    kind: ErrorKind::Signature,
                    message: format!("refused before compilation: {error} (require_signature is set)"),
                },
                manifest,
                request.code_digest(),
            ))),
        }
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

/// The cap on the compiled-code cache set by the operator: `$WASMAGENT_CACHE_MAX_BYTES` (a whole number of bytes;
/// 0 writes nothing new), else [`DEFAULT_MAX_CACHE_BYTES`] (1 GiB).
pub fn default_max_cache_bytes() -> Result<u64, InvalidCacheCap> {
    match std::env::var_os("WASMAGENT_CACHE_MAX_BYTES").filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_MAX_CACHE_BYTES),
        Some(value) => value
            .to_str()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| InvalidCacheCap { value: value.to_string_lossy().into_owned() }),
    }
}

/// `$WASMAGENT_CACHE_MAX_BYTES` is not a number of bytes.
#[derive(Debug, thiserror::Error)]
#[error("WASMAGENT_CACHE_MAX_BYTES is {value:?}: expected a whole number of bytes")]
pub struct InvalidCacheCap {
    /// The value found.
    pub value: String,
}
