use crate::limiter::{GuestLimiter, LimitExceeded};
use crate::output::CappedOutput;
use wasmagent_kernel::{Denial, ErrorInfo, ErrorKind, Outcome};
use wasmagent_manifest::EffectiveManifest;
use wasmtime::Trap;
use wasmtime::component::ResourceTableError;
use wasmtime_wasi::I32Exit;

/// Most WASI handles (open files and directories, streams, pollables) one run may hold at once. Every open file is
/// a host file descriptor, so without a cap one run could take all of the process's and starve every other run.
/// A run that goes past it ends with an error and a `handles` denial.
pub const MAX_OPEN_HANDLES: usize = 1024;

/// How a guest call ended, in report terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    /// The report outcome.
    pub outcome: Outcome,
    /// Exit status, for normal returns and exits.
    pub exit_code: Option<i32>,
    /// The error, for every outcome but `ok` and `exit`.
    pub error: Option<ErrorInfo>,
    /// A denial to record (the memory or table growth that was refused).
    pub denial: Option<Denial>,
}

impl Termination {
    /// The guest returned normally.
    pub fn finished() -> Self {
        Termination { outcome: Outcome::Ok, exit_code: Some(0), error: None, denial: None }
    }

    /// The guest called `exit(code)`.
    pub fn exited(code: i32) -> Self {
        Termination { outcome: Outcome::Exit, exit_code: Some(code), error: None, denial: None }
    }

    /// An error-class ending with no exit status.
    pub fn failed(outcome: Outcome, kind: ErrorKind, message: impl Into<String>) -> Self {
        Termination { outcome, exit_code: None, error: Some(ErrorInfo { kind, message: message.into() }), denial: None }
    }

    /// Classifies an error returned from a guest call. The limiter and output streams are consulted first, because
    /// the trap they cause carries their own message rather than a trap code.
    pub fn from_error(
        error: &wasmtime::Error,
        limiter: &GuestLimiter,
        outputs: [&CappedOutput; 2],
        manifest: &EffectiveManifest,
    ) -> Self {
        if outputs.iter().any(|o| o.overflowed()) {
            return Termination::failed(
                Outcome::OutputLimit,
                ErrorKind::OutputLimit,
                format!(
                    "the guest wrote more than max_output_bytes ({} bytes) to one stream; output was cut there",
                    manifest.max_output_bytes()
                ),
            );
        }
        if let Some(exceeded) = limiter.exceeded() {
            let (target, reason) = match exceeded {
                LimitExceeded::Memory { requested, limit } => (
                    format!("grow linear memory to {requested} bytes"),
                    format!("exceeds memory_limit_bytes ({limit})"),
                ),
                LimitExceeded::Table { requested, limit } => (
                    format!("grow a table to {requested} elements"),
                    format!("exceeds the engine's table limit ({limit} elements)"),
                ),
            };
            let mut t = Termination::failed(
                Outcome::MemoryLimit,
                ErrorKind::MemoryLimit,
                format!("memory limit: refused to {target}: {reason}"),
            );
            t.denial = Some(Denial { capability: "memory".into(), target, reason });
            return t;
        }
        let table_full = |e: &(dyn std::error::Error + 'static)| {
            matches!(e.downcast_ref::<ResourceTableError>(), Some(ResourceTableError::Full))
        };
        if error.chain().any(table_full) {
            let target = format!("hold more than {MAX_OPEN_HANDLES} open files, directories or streams at once");
            let reason = format!("exceeds the per-run handle limit ({MAX_OPEN_HANDLES})");
            let mut t = Termination::failed(
                Outcome::Error,
                ErrorKind::Trap,
                format!("handle limit: refused to {target}: {reason}"),
            );
            t.denial = Some(Denial { capability: "handles".into(), target, reason });
            return t;
        }
        if let Some(exit) = error.downcast_ref::<I32Exit>() {
            return Termination::exited(exit.0);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Termination::failed(
                Outcome::Timeout,
                ErrorKind::Timeout,
                format!("the run exceeded cpu_ms ({} ms of wall-clock time)", manifest.cpu_ms()),
            ),
            Some(Trap::OutOfFuel) => Termination::failed(
                Outcome::FuelExhausted,
                ErrorKind::FuelExhausted,
                format!("the run consumed all of its fuel ({})", manifest.fuel().unwrap_or_default()),
            ),
            _ => Termination::failed(Outcome::Error, ErrorKind::Trap, describe(error)),
        }
    }
}

/// The trap and its causes, root first, then the guest backtrace when there is one.
fn describe(error: &wasmtime::Error) -> String {
    let mut causes: Vec<String> = error
        .chain()
        .map(ToString::to_string)
        .filter(|c| !c.starts_with("error while executing at wasm backtrace"))
        .collect();
    causes.reverse();
    let mut message = causes.join(": ");
    if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        message.push_str("\nwasm backtrace:\n");
        message.push_str(&backtrace.to_string());
    }
    message
}
