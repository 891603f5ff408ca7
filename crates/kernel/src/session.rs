//! The [`Session`] trait: one live sandbox instance that keeps its state between calls.

use crate::{KernelError, RunReport, RunRequest};

/// A live sandbox instance of a script kernel, opened under one manifest. Each [`Session::run`] runs code in the
/// same instance, held to the manifest's per-run limits (time, output, host calls, HTTP requests); memory is held
/// to the manifest's limit for the instance as a whole. Globals, functions, imports and the files of the session's
/// scratch directory stay from one call to the next; nothing is shared with any other session.
pub trait Session: Send {
    /// The kernel's name (`js`, `python`).
    fn kernel(&self) -> &'static str;

    /// Runs `request` in the session's instance. The report carries `session_call`; a call that leaves the engine
    /// unusable (a trap) ends the session and says why in `session_ended`. `Err` means nothing ran: the request
    /// was refused, or the session had ended ([`KernelError::SessionEnded`], with the reason).
    fn run(&mut self, request: &RunRequest) -> Result<RunReport, KernelError>;

    /// A new session whose state is a copy of this one's now (no state shared afterwards), or why this kernel
    /// cannot copy it.
    fn fork(&mut self) -> Result<Box<dyn Session>, KernelError>;

    /// A copy of the session's state now, held on the host, from which the kernel can restore new sessions (each
    /// a copy), or why this kernel cannot copy it. What the value holds is the kernel's own.
    fn snapshot(&mut self) -> Result<std::sync::Arc<dyn std::any::Any + Send + Sync>, KernelError>;

    /// Ends the session now: later calls are refused with `reason`.
    fn end(&mut self, reason: String);

    /// Why the session ended, or `None` while it is usable.
    fn ended(&self) -> Option<&str>;

    /// Calls run so far.
    fn calls(&self) -> u64;
}
