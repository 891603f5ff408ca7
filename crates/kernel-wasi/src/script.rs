//! What the script kernels (js, python) share on top of [`crate::host`] and [`crate::component_host`]: the manifest
//! fields a script cannot be held to, the source-size check, and the words for how an engine's run ended.

use wasmagent_engine::{SandboxEngine, Termination};
use wasmagent_kernel::{ErrorKind, KernelError, Outcome};
use wasmagent_manifest::EffectiveManifest;

/// Refuses what no script kernel can enforce: `require_signature` (scripts carry no signature).
pub fn check_manifest(kernel: &'static str, manifest: &EffectiveManifest) -> Result<(), KernelError> {
    if manifest.require_signature() {
        return Err(KernelError::Unsupported {
            kernel,
            field: "require_signature",
            reason: "scripts carry no signature; with require_signature only signed WebAssembly runs".into(),
        });
    }
    Ok(())
}

/// Refuses source text larger than the engine accepts for code.
pub fn check_source_size(engine: &SandboxEngine, text: &str) -> Result<(), KernelError> {
    let max_code = engine.options().max_code_bytes;
    if text.len() > max_code {
        return Err(KernelError::InvalidCode(format!(
            "the script is {} bytes; the largest accepted is {max_code} bytes",
            text.len()
        )));
    }
    Ok(())
}

/// Recursion that exhausts an engine's WebAssembly stack is a trap; `explanation` says so in the language's
/// terms, ahead of the trap message.
pub fn explain_stack_overflow(mut termination: Termination, explanation: &str) -> Termination {
    if let Some(error) = termination.error.as_mut().filter(|e| e.message.starts_with("wasm trap: call stack exhausted"))
    {
        error.message = format!("{explanation}\n{}", error.message);
    }
    termination
}

/// The error kind for the `kind` an engine reports (`exception`, `serialization`; anything else is `internal`).
pub fn guest_error_kind(kind: &str) -> ErrorKind {
    match kind {
        "exception" => ErrorKind::Exception,
        "serialization" => ErrorKind::Serialization,
        _ => ErrorKind::Internal,
    }
}

/// The ending of a run whose result value, `len` bytes of JSON, is larger than `max_output_bytes`.
pub fn result_too_large(len: usize, manifest: &EffectiveManifest) -> Termination {
    let message = format!(
        "the result value is {len} bytes of JSON, more than max_output_bytes ({})",
        manifest.max_output_bytes()
    );
    Termination::failed(Outcome::OutputLimit, ErrorKind::OutputLimit, message)
}
