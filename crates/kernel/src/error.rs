/// Why a run was refused before the guest started. Nothing ran when a kernel returns one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The manifest asks for something this kernel cannot enforce.
    #[error("the {kernel} kernel cannot enforce manifest field `{field}`: {reason}")]
    Unsupported {
        /// Kernel name.
        kernel: &'static str,
        /// The manifest field.
        field: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The code is not something this kernel can run (malformed module, wrong language, too large).
    #[error("invalid code: {0}")]
    InvalidCode(String),
    /// No sandbox could be set up (resource pool exhausted, host I/O failure while preparing mounts).
    #[error("cannot start the sandbox: {0}")]
    Unavailable(String),
    /// The session was closed or ended earlier (a trap, a session limit); the reason says which.
    #[error("the session has ended: {0}")]
    SessionEnded(String),
    /// The kernel cannot copy a session's state into a new session (fork, snapshot).
    #[error("the {kernel} kernel cannot fork or snapshot a session: {reason}")]
    ForkUnsupported {
        /// Kernel name.
        kernel: &'static str,
        /// Why.
        reason: String,
    },
}
