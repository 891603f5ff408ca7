use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The languages wasmagent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// A WebAssembly module or component (binary or `.wat` text).
    Wasm,
    /// JavaScript source.
    Js,
    /// Python source.
    Python,
}

/// The code of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// WebAssembly bytes: a core module, a component, or their text format.
    Wasm(Vec<u8>),
    /// Source text of a script language.
    Source {
        /// Which language.
        language: Language,
        /// The program text.
        text: String,
    },
}

impl Code {
    /// The language of this code.
    pub fn language(&self) -> Language {
        match self {
            Code::Wasm(_) => Language::Wasm,
            Code::Source { language, .. } => *language,
        }
    }

    /// The bytes the digest is taken over.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Code::Wasm(bytes) => bytes,
            Code::Source { text, .. } => text.as_bytes(),
        }
    }

    /// `sha256:<hex>` of the code as given.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.bytes())))
    }
}

/// One run: the code, its arguments and its standard input. The manifest travels separately, so one request can be
/// checked against several policies.
///
/// The code's digest is computed once per request and reused, so an embedder that runs the same request many times
/// does not hash the code every time.
#[derive(Debug, Clone)]
pub struct RunRequest {
    code: Code,
    digest: OnceLock<String>,
    /// Program name shown to the guest as `argv[0]` and in stack traces.
    pub name: String,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Bytes the guest reads from standard input.
    pub stdin: Vec<u8>,
    /// Whom the run is for, as the embedder names it (an agent run's id): handed to the host tools through their
    /// run context, never shown to the guest. Default: none.
    pub caller: Option<String>,
}

impl RunRequest {
    /// A request for WebAssembly bytes named `name`, with no arguments and empty stdin.
    pub fn wasm(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self::new(name, Code::Wasm(bytes))
    }

    /// A request for `code` named `name`, with no arguments and empty stdin.
    pub fn new(name: impl Into<String>, code: Code) -> Self {
        RunRequest {
            code,
            digest: OnceLock::new(),
            name: name.into(),
            args: Vec::new(),
            stdin: Vec::new(),
            caller: None,
        }
    }

    /// What to run.
    pub fn code(&self) -> &Code {
        &self.code
    }

    /// `sha256:<hex>` of the code, computed on first use.
    pub fn code_digest(&self) -> &str {
        self.digest.get_or_init(|| self.code.digest())
    }

    /// A request for script source in `language`, named `name` (shown in stack traces).
    pub fn source(name: impl Into<String>, language: Language, text: impl Into<String>) -> Self {
        Self::new(name, Code::Source { language, text: text.into() })
    }

    /// Sets the guest arguments.
    pub fn with_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets standard input.
    pub fn with_stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = stdin.into();
        self
    }

    /// Sets whom the run is for ([`RunRequest::caller`]).
    pub fn with_caller(mut self, caller: Option<String>) -> Self {
        self.caller = caller;
        self
    }
}
