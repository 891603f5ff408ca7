use crate::limiter::{GuestLimiter, LimitExceeded};
use crate::output::CappedOutput;
use std::fmt::{self, Write as _};
use wasmagent_kernel::bounds::{REPORT_ERROR_BYTES, cut};
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

/// Longest function or module name a trap's backtrace shows: the guest chose them (the name section), so longer
/// ones are cut.
const MAX_FRAME_NAME_BYTES: usize = 256;

/// The trap and its causes, root first, then the guest backtrace when there is one; at most
/// [`REPORT_ERROR_BYTES`] and a marker, however long the guest's names are.
fn describe(error: &wasmtime::Error) -> String {
    let mut causes: Vec<String> = error
        .chain()
        .map(|cause| bounded(cause, REPORT_ERROR_BYTES))
        .filter(|c| !c.starts_with("error while executing at wasm backtrace"))
        .collect();
    causes.reverse();
    let mut message = cut(&causes.join(": "), REPORT_ERROR_BYTES);
    if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        message.push_str("\nwasm backtrace:\n");
        let room = REPORT_ERROR_BYTES.saturating_sub(message.len());
        if has_short_names(backtrace) {
            message.push_str(&bounded(backtrace, room));
        } else {
            message.push_str(&plain_backtrace(backtrace, room));
        }
    }
    message
}

/// Whether every name in `backtrace` is at most [`MAX_FRAME_NAME_BYTES`], so wasmtime's own rendering (demangled,
/// with source lines when enabled) can be shown.
fn has_short_names(backtrace: &wasmtime::WasmBacktrace) -> bool {
    let short = |name: Option<&str>| name.is_none_or(|n| n.len() <= MAX_FRAME_NAME_BYTES);
    backtrace.frames().iter().all(|frame| {
        short(frame.func_name())
            && short(frame.module().name())
            && frame.symbols().iter().all(|s| short(s.name()) && short(s.file()))
    })
}

/// `backtrace` with each name cut at [`MAX_FRAME_NAME_BYTES`] (not demangled: a cut name no longer demangles),
/// at most `limit` bytes and a marker.
fn plain_backtrace(backtrace: &wasmtime::WasmBacktrace, limit: usize) -> String {
    let mut text = String::new();
    for (i, frame) in backtrace.frames().iter().enumerate() {
        let module = cut(frame.module().name().unwrap_or("<unknown>"), MAX_FRAME_NAME_BYTES);
        let function = match frame.func_name() {
            Some(name) => cut(name, MAX_FRAME_NAME_BYTES),
            None => format!("<wasm function {}>", frame.func_index()),
        };
        let line = format!("{}  {i:>3}: {module}!{function}", if i > 0 { "\n" } else { "" });
        if text.len() + line.len() > limit {
            text.push_str(&format!("\n…[{} more frames]", backtrace.frames().len() - i));
            break;
        }
        text.push_str(&line);
    }
    text
}

/// `value` as text, at most `limit` bytes and a marker: formatting stops at the limit, so a long rendering is
/// never built whole.
fn bounded(value: &(impl fmt::Display + ?Sized), limit: usize) -> String {
    let mut out = BoundedText { text: String::new(), limit, full: false };
    let _ = write!(out, "{value}");
    if out.full {
        out.text.push_str("…[cut]");
    }
    out.text
}

/// A `fmt::Write` that keeps at most `limit` bytes, then fails (which ends the formatting).
struct BoundedText {
    text: String,
    limit: usize,
    full: bool,
}

impl fmt::Write for BoundedText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.limit.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        self.full = true;
        Err(fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trap under 20 frames of a function whose name (in the name section, which the guest writes) is 1 MiB.
    fn trap_with_long_names() -> wasmtime::Error {
        let name = "f".repeat(1 << 20);
        let wat = format!(
            r#"(module $m (func ${name} (param i32) (if (local.get 0) (then (call ${name} (i32.sub (local.get 0)
               (i32.const 1)))) (else unreachable))) (func (export "run") (call ${name} (i32.const 100))))"#
        );
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wat).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let run = instance.get_typed_func::<(), ()>(&mut store, "run").unwrap();
        run.call(&mut store, ()).unwrap_err()
    }

    #[test]
    fn guest_chosen_frame_names_are_cut_and_the_message_bounded() {
        let error = trap_with_long_names();
        let message = describe(&error);
        assert!(message.len() <= REPORT_ERROR_BYTES + 64, "a {}-byte trap message", message.len());
        assert!(message.contains("unreachable"), "{}", &message[..message.len().min(300)]);
        let frame = message.lines().find(|l| l.contains("!fff")).unwrap_or_default();
        assert!(frame.len() <= MAX_FRAME_NAME_BYTES + 64, "a {}-byte frame line", frame.len());
        assert!(frame.contains(&format!("[cut: {} bytes in all]", 1 << 20)), "{frame}");
    }

    #[test]
    fn short_names_keep_wasmtime_s_rendering() {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, r#"(module (func (export "run") unreachable))"#).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let run = instance.get_typed_func::<(), ()>(&mut store, "run").unwrap();
        let error = run.call(&mut store, ()).unwrap_err();
        let message = describe(&error);
        let backtrace = error.downcast_ref::<wasmtime::WasmBacktrace>().unwrap().to_string();
        assert!(message.ends_with(&backtrace), "{message}");
    }

    #[test]
    fn bounded_formatting_stops_at_its_limit() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded(&"é".repeat(4), 5), "éé…[cut]");
    }
}
