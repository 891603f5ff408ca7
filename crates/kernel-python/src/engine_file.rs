//! Which CPython engine a kernel runs ([`PythonEngine`]): the one shipped in the binary, or an operator's custom
//! build (`wasmagent engine build python`, with declared packages frozen into its snapshot) loaded from a file and
//! pinned by its digest.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use wasmagent_kernel::KernelError;
use wasmagent_kernel_wasi::session::check_forkable;

/// A Python engine module and its digest (the key of its compiled code in the cache). Cheap to clone.
#[derive(Clone)]
pub struct PythonEngine {
    wasm: Arc<[u8]>,
    digest: Arc<str>,
    forkable: Arc<OnceLock<Result<(), String>>>,
}

impl std::fmt::Debug for PythonEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonEngine").field("digest", &self.digest).field("bytes", &self.wasm.len()).finish()
    }
}

/// Largest engine file accepted.
const MAX_ENGINE_BYTES: u64 = 256 << 20;

impl PythonEngine {
    /// The engine shipped in the binary (`guests/dist/python.wasm`).
    pub fn shipped() -> Self {
        PythonEngine::new(crate::ENGINE_WASM.into(), crate::ENGINE_WASM_DIGEST)
    }

    fn new(wasm: Arc<[u8]>, digest: &str) -> Self {
        PythonEngine { wasm, digest: digest.into(), forkable: Arc::default() }
    }

    /// A custom engine read from `path`, accepted only when its SHA-256 is `expected` (`sha256:<hex>`).
    pub fn from_file(path: &Path, expected: &str) -> Result<Self, KernelError> {
        let unavailable = |message: String| KernelError::Unavailable(message);
        let size = std::fs::metadata(path)
            .map_err(|e| unavailable(format!("cannot read the Python engine {}: {e}", path.display())))?
            .len();
        if size > MAX_ENGINE_BYTES {
            return Err(unavailable(format!(
                "the Python engine {} is {size} bytes; the largest accepted is {MAX_ENGINE_BYTES}",
                path.display()
            )));
        }
        let wasm = std::fs::read(path)
            .map_err(|e| unavailable(format!("cannot read the Python engine {}: {e}", path.display())))?;
        let digest = sha256(&wasm);
        if !digest.eq_ignore_ascii_case(expected.trim()) {
            return Err(unavailable(format!(
                "the Python engine {} has digest {digest}, not the pinned {}: refusing it",
                path.display(),
                expected.trim()
            )));
        }
        if !wasm.starts_with(b"\0asm\x01\0\0\0") {
            return Err(unavailable(format!("{} is not a WebAssembly core module", path.display())));
        }
        Ok(PythonEngine::new(wasm.into(), &digest))
    }

    /// The module's bytes.
    pub fn wasm(&self) -> &[u8] {
        &self.wasm
    }

    /// `sha256:<hex>` of the module.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether the module's whole state can be copied through its exports ([`check_forkable`]), decided once.
    pub(crate) fn forkable(&self) -> Result<(), String> {
        self.forkable.get_or_init(|| check_forkable(&self.wasm)).clone()
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
