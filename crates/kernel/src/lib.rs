//! What every kernel shares: the [`Kernel`] trait, the [`RunRequest`] a kernel receives, the [`RunReport`] it
//! returns (schema `wasmagent.run/v1`), and [`KernelError`] for runs refused before they start.
//!
//! This crate owns the *contract* between front ends (CLI, server, MCP) and kernels. It must not depend on wasmtime
//! or any engine: kernels live in their own crates (`wasmagent-kernel-wasi`, ...), and the `wasmagent` facade
//! picks one per request. Policy types come from `wasmagent-manifest`; this crate never interprets policy itself.

pub mod bounds;
mod error;
mod report;
mod request;
mod session;

pub use error::KernelError;
pub use report::{
    Artifact, ArtifactKind, Denial, ErrorInfo, ErrorKind, HttpExchange, Outcome, RunReport, SCHEMA, ToolCall, Unlisted,
    Usage,
};
pub use request::{Code, Language, RunRequest};
pub use session::Session;
pub use wasmagent_manifest as manifest;

use wasmagent_manifest::EffectiveManifest;

/// An engine that runs one kind of code under an [`EffectiveManifest`].
///
/// A kernel must enforce every manifest field it accepts. A field it cannot enforce is refused by
/// [`Kernel::check`] before anything runs ([`KernelError::Unsupported`]), never silently ignored.
pub trait Kernel: Send + Sync {
    /// Short stable name used in reports and metrics (`wasi`, `js`, `python`, `remote`).
    fn name(&self) -> &'static str;

    /// Refuses a manifest this kernel cannot enforce. Called by [`Kernel::run`] implementations and by front ends
    /// that want to fail early.
    fn check(&self, manifest: &EffectiveManifest) -> Result<(), KernelError>;

    /// Runs `request` in a fresh sandbox. Everything that happens once the guest starts (traps, limits, exits,
    /// denials) is in the returned report; `Err` means nothing ran.
    fn run(&self, manifest: &EffectiveManifest, request: &RunRequest) -> Result<RunReport, KernelError>;
}
