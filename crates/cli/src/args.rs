use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use wasmagent::manifest::ByteSize;

/// Run WebAssembly tools and agent-written code in a sandbox held to a capability manifest.
///
/// Nothing is allowed unless granted: no files, no network, no environment variables, and every limit is finite
/// (cpu_ms 5000, memory 128 MiB, output 1 MiB per stream, 1000 host calls). Flags add to the manifest file.
#[derive(Debug, Parser)]
#[command(name = "wasmagent", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Do not confine the host process (`serve`, `mcp`, `run`): no Landlock, no seccomp filter, no
    /// no_new_privs or limits. Prints a warning; for debugging only.
    #[arg(long = "no-confine", global = true)]
    pub(crate) no_confine: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a WASI module or component, or a JavaScript or Python file or snippet, under a capability manifest.
    ///
    /// The language comes from --lang, else from the file extension (.js, .mjs, .cjs: JavaScript; .py: Python;
    /// anything else: WebAssembly; -e CODE without --lang: JavaScript). Without --json the guest's stdout and stderr are forwarded and a one-line summary (plus one line per
    /// denial) goes to stderr. With --json the run report (schema wasmagent.run/v1) is printed as one JSON object
    /// on stdout.
    ///
    /// Exit status: 0 the guest succeeded; 1 it failed or exited non-zero; 2 usage, manifest or code error
    /// (nothing ran); 3 a limit stopped it (timeout, memory, fuel, output).
    Run(Box<RunArgs>),
    /// An interactive prompt over one session: each entry (JavaScript or Python) runs in the same sandbox, so
    /// variables, functions, imports and files under /scratch stay between entries; also reads piped input.
    ///
    /// Every manifest limit applies to each entry, memory to the session as a whole. A JavaScript entry out of time
    /// is interrupted and the session goes on; an entry that stops the engine (a Python timeout, a memory or output
    /// limit) ends the session, and the prompt says why (exit status 1).
    Repl(Box<crate::repl_cmd::ReplArgs>),
    /// Work with manifest files.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Write a new Ed25519 key pair: KEY (secret, mode 0600) and KEY.pub (`ed25519:<hex>`).
    Keygen {
        /// Path of the secret key; the public key goes to the same path plus `.pub`.
        #[arg(long, short, default_value = "wasmagent.key")]
        out: PathBuf,
    },
    /// Sign a WebAssembly module or component (wasmsign2 format: a custom section, so it stays valid WebAssembly).
    Sign {
        /// The module or component.
        module: PathBuf,
        /// Secret key file.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Where to write the signed module (default: replace MODULE).
        #[arg(long, short, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Check a module's signature against a public key. Exit 0 when it verifies, 1 when it does not.
    Verify {
        /// The module or component.
        module: PathBuf,
        /// Public key file (or `ed25519:<hex>`).
        #[arg(long, value_name = "KEY")]
        pubkey: String,
    },
    /// Work with audit logs written by `run --record`.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Serve the run API over HTTP (POST /v1/runs, GET /v1/runs/{id}, /healthz, /readyz, /metrics,
    /// /openapi.json). Authentication is required unless --dev-insecure-no-auth is given.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: String,
        /// Server configuration (TOML): maximum manifest, keys, rate limits, webhooks.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Development only: accept every request without credentials, as subject `anonymous`.
        #[arg(long = "dev-insecure-no-auth")]
        dev_insecure_no_auth: bool,
        /// Enable the browser tools with this Chromium (default `chromium` on PATH); `[browser]` in the
        /// configuration's tools file sets the limits, and enables them too.
        #[arg(long, value_name = "CHROMIUM", num_args = 0..=1, default_missing_value = "chromium")]
        browser: Option<PathBuf>,
    },
    /// Serve code mode over MCP on standard input and output: the tools `execute_code` (JavaScript or Python in a
    /// fresh sandbox) and `search_docs`. Logs go to standard error; standard output is the protocol.
    ///
    /// Every run is held to --manifest (the default manifest without it). Add to an MCP client as the command
    /// `wasmagent` with the arguments `mcp` (and `--manifest PATH`).
    ///
    /// With --tools, the tools declared in that file (WASM micro-tools, HTTP tools, upstream MCP servers) are
    /// callable from the code as `tools.NAME(...)` when the manifest grants them (`tool:NAME`, `tool:NS.*` in
    /// extra_capabilities).
    Mcp(McpArgs),
    /// Run an agent on TASK: a chat model (OpenAI Chat Completions or Anthropic Messages) that works through the
    /// sandbox, in code mode (execute_code and search_docs, as `wasmagent mcp` offers them) or tool mode (the
    /// granted host tools as function tools), until it answers or a budget runs out.
    ///
    /// Without --json the model's text streams to stdout and one line per step goes to stderr; --json prints the
    /// agent report (schema wasmagent.agent/v1); --events prints every event as a JSON line instead.
    ///
    /// Exit status: 0 answered; 1 the run ended without an answer (max_steps, token_budget, timeout,
    /// model_error, refused); 2 usage or configuration error.
    Agent(Box<AgentArgs>),
    /// Show (`list`) or validate (`check`) a tools file.
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Work with webhook deliveries from a wasmagent server.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Build custom engines.
    #[command(subcommand)]
    Engine(EngineCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum EngineCommand {
    /// Build a Python engine that also holds the pure-Python packages a requirements file declares, imported into
    /// its snapshot (no filesystem access at run time). Every requirement must be pinned with `--hash`; pip
    /// installs wheels tagged py3-none-any only, without resolving dependencies (list them all). Writes OUT and
    /// OUT.json (its provenance) and prints the digest to pass as --python-engine-digest.
    Build {
        /// The engine to build (only `python`).
        #[arg(value_parser = ["python"])]
        kind: String,
        /// The requirements file.
        #[arg(long, value_name = "FILE")]
        requirements: PathBuf,
        /// Where to write the engine.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Install from this directory of wheels only (no index), for offline builds.
        #[arg(long = "find-links", value_name = "DIR")]
        find_links: Option<PathBuf>,
        /// The Python whose pip installs the packages.
        #[arg(long, value_name = "PYTHON", default_value = "python3")]
        python: PathBuf,
    },
}

/// Flags of `wasmagent mcp`.
#[derive(Debug, Args)]
pub(crate) struct McpArgs {
    /// Manifest file (TOML or JSON) every run is held to. Its relative paths are relative to the file.
    #[arg(long, value_name = "PATH")]
    pub(crate) manifest: Option<PathBuf>,
    /// Tools file (TOML) declaring the host tools code may call.
    #[arg(long, value_name = "PATH")]
    pub(crate) tools: Option<PathBuf>,
    /// Also publish every granted tool as a direct MCP tool (code mode stays available).
    #[arg(long = "expose-tools")]
    pub(crate) expose_tools: bool,
    /// Enable the browser tools (`browser.navigate`, `extract`, `evaluate`, `click`, `type`, `wait_for`,
    /// `screenshot`, `close`; granted like any tool) with this Chromium (default `chromium` on PATH); `[browser]` in
    /// the tools file sets the limits, and enables them too.
    #[arg(long, value_name = "CHROMIUM", num_args = 0..=1, default_missing_value = "chromium")]
    pub(crate) browser: Option<PathBuf>,
    /// The most a person may approve: offer the `request_capability` tool, through which the agent asks the
    /// client's user (MCP elicitation) for an access it was refused; approved grants widen the manifest of that
    /// connection only, never beyond this manifest. Without it, nothing can be approved.
    #[arg(long = "max-manifest", value_name = "PATH")]
    pub(crate) max_manifest: Option<PathBuf>,
    /// Append a signed record of every run and every capability request (who was asked, what it grants, what they
    /// decided) to this audit log (JSON Lines). Needs --record-key.
    #[arg(long, value_name = "FILE", requires = "record_key")]
    pub(crate) record: Option<PathBuf>,
    /// Secret key that signs audit records.
    #[arg(long = "record-key", value_name = "KEY", requires = "record")]
    pub(crate) record_key: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) python: PythonEngineArgs,
    #[command(flatten)]
    pub(crate) operator: OperatorArgs,
}

/// Flags of `wasmagent agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The task, in plain words.
    pub(crate) task: String,
    /// The model: openai:MODEL (also DeepSeek, Qwen, llama.cpp, vLLM, Ollama through --base-url) or
    /// anthropic:MODEL.
    #[arg(long, value_name = "PROVIDER:MODEL")]
    pub(crate) model: String,
    /// A model to try when the previous one fails before producing anything (repeatable, in order).
    #[arg(long = "fallback-model", value_name = "PROVIDER:MODEL")]
    pub(crate) fallback_model: Vec<String>,
    /// The server (for example http://127.0.0.1:8080/v1 for llama-server); the provider's own without it.
    #[arg(long = "base-url", value_name = "URL")]
    pub(crate) base_url: Option<String>,
    /// Environment variable holding the API key (default OPENAI_API_KEY or ANTHROPIC_API_KEY; local servers need
    /// none, and a missing default variable is not an error).
    #[arg(long = "api-key-env", value_name = "VAR")]
    pub(crate) api_key_env: Option<String>,
    /// Manifest file (TOML or JSON) every code run and tool call is held to.
    #[arg(long, value_name = "PATH")]
    pub(crate) manifest: Option<PathBuf>,
    /// Tools file (TOML) declaring the host tools.
    #[arg(long, value_name = "PATH")]
    pub(crate) tools: Option<PathBuf>,
    /// code (execute_code and search_docs) or tools (the granted host tools as function tools).
    #[arg(long, default_value = "code", value_name = "MODE")]
    pub(crate) mode: String,
    /// Model turns before the agent stops with max_steps.
    #[arg(long = "max-steps", default_value_t = 20, value_name = "N")]
    pub(crate) max_steps: u32,
    /// Input plus output tokens before the agent stops with token_budget.
    #[arg(long = "max-model-tokens", default_value_t = 200_000, value_name = "N")]
    pub(crate) max_model_tokens: u64,
    /// Wall-clock seconds for the whole task.
    #[arg(long = "timeout", default_value_t = 600, value_name = "SECONDS")]
    pub(crate) timeout_secs: u64,
    /// Tools (NAME, NS.* or *) whose every call waits for your approval on the terminal.
    #[arg(long = "needs-approval", value_name = "TOOL")]
    pub(crate) needs_approval: Vec<String>,
    /// Prompt fragments file (TOML, [[fragment]] name, text, debug), added after the built-in ones.
    #[arg(long = "prompt", value_name = "PATH")]
    pub(crate) prompt: Vec<PathBuf>,
    /// Development only: allow prompt fragments marked debug.
    #[arg(long = "dev-allow-debug-fragments")]
    pub(crate) dev_allow_debug_fragments: bool,
    /// JSON Schema file the final answer must be valid against.
    #[arg(long = "output-schema", value_name = "PATH")]
    pub(crate) output_schema: Option<PathBuf>,
    /// Print the agent report (wasmagent.agent/v1) as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Print every event as a JSON line.
    #[arg(long)]
    pub(crate) events: bool,
    /// Append a signed record of every step (model call, code run, tool call) and of the ending to this audit log
    /// (JSON Lines, checked by `wasmagent audit verify`), with a run record for each code run. Needs --record-key.
    #[arg(long, value_name = "FILE", requires = "record_key")]
    pub(crate) record: Option<PathBuf>,
    /// Secret key that signs audit records.
    #[arg(long = "record-key", value_name = "KEY", requires = "record")]
    pub(crate) record_key: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) operator: OperatorArgs,
}

/// A custom Python engine (`wasmagent engine build python`), pinned by digest.
#[derive(Debug, Args, Default)]
pub(crate) struct PythonEngineArgs {
    /// Run Python on this engine (a build with declared packages) instead of the shipped one. Needs
    /// --python-engine-digest.
    #[arg(long = "python-engine", value_name = "FILE", requires = "python_engine_digest")]
    pub(crate) python_engine: Option<PathBuf>,
    /// The engine's SHA-256 (`sha256:<hex>`, as `engine build` prints it): a file with another digest is refused.
    #[arg(long = "python-engine-digest", value_name = "DIGEST", requires = "python_engine")]
    pub(crate) python_engine_digest: Option<String>,
}

impl PythonEngineArgs {
    /// The engine named by the flags, read and checked (before the process is confined), if any.
    pub(crate) fn load(&self) -> anyhow::Result<Option<wasmagent::PythonEngine>> {
        match (&self.python_engine, &self.python_engine_digest) {
            (Some(path), Some(digest)) => Ok(Some(wasmagent::PythonEngine::from_file(path, digest)?)),
            _ => Ok(None),
        }
    }
}

/// Operator settings shared by commands that reach the network.
#[derive(Debug, Args)]
pub(crate) struct OperatorArgs {
    /// Operator: let guests and HTTP tools reach this private address, network or host (IP, IP:PORT, CIDR, NAME,
    /// NAME:PORT) when their manifest lists it. Metadata endpoints can never be allowed. Repeatable.
    #[arg(long = "allow-private", value_name = "ADDR")]
    pub(crate) allow_private: Vec<String>,
    /// Operator: egress configuration file (TOML: allow_private, secrets bound to hosts).
    #[arg(long = "egress-config", value_name = "PATH")]
    pub(crate) egress_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ToolsCommand {
    /// List the declared tools: name, kind, source and whether --manifest grants each.
    List {
        /// The tools file.
        #[arg(long, default_value = "tools.toml", value_name = "PATH")]
        tools: PathBuf,
        /// Show whether this manifest grants each tool.
        #[arg(long, value_name = "PATH")]
        manifest: Option<PathBuf>,
    },
    /// Load the file as `mcp --tools` would (read and pin modules, resolve manifests, start upstream servers and
    /// list their tools) and print each tool with its digest. Exit 0 when everything loads and no upstream tool
    /// differs from its pinned digest, 1 otherwise.
    Check {
        /// The tools file.
        #[arg(long, default_value = "tools.toml", value_name = "PATH")]
        tools: PathBuf,
        #[command(flatten)]
        operator: OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WebhookCommand {
    /// Check a delivery's `Wasmagent-Signature` header against its body. Exit 0 when it verifies, 1 when not.
    Verify {
        /// Environment variable holding the shared secret.
        #[arg(long = "secret-env", value_name = "VAR")]
        secret_env: String,
        /// The `Wasmagent-Signature` header value.
        #[arg(long, value_name = "HEADER")]
        signature: String,
        /// File holding the exact request body (`-` for standard input).
        #[arg(long, value_name = "PATH")]
        body: PathBuf,
        /// Accepted clock difference, in seconds.
        #[arg(long, default_value_t = 300)]
        tolerance: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check every record's signature and the hash chain. Exit 0 when intact; 1 naming the first record that was
    /// edited, removed, reordered, forged or torn.
    Verify {
        /// The audit log (JSON Lines).
        file: PathBuf,
        /// Public key file (or `ed25519:<hex>`) of the key that signs the records.
        #[arg(long, value_name = "KEY")]
        pubkey: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ManifestCommand {
    /// Validate a manifest (TOML or JSON) and print the effective manifest, defaults applied, as JSON.
    ///
    /// Exit status 0 when valid, 2 with a message naming the field when not.
    Check {
        /// The manifest file.
        file: PathBuf,
    },
    /// Say what manifest B grants beyond manifest A, one sentence per grant ("adds read access to /srv/data",
    /// "adds host https://api.example.com:443", "raises cpu_ms from 5000 to 20000"), then what B takes away.
    ///
    /// Both are compared as effective manifests (defaults applied, mounts resolved on this machine).
    /// Exit status: 0 when B grants nothing beyond A; 1 when it does; 2 when a manifest is not valid.
    Diff {
        /// The manifest reviewed against (for example the one in use).
        a: PathBuf,
        /// The manifest under review (for example a proposal from `run --learn`).
        b: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) python: PythonEngineArgs,

    /// The module or component (.wasm binary or .wat text) or script; `-` reads it from standard input.
    #[arg(value_name = "FILE|-", required_unless_present = "eval", conflicts_with = "eval")]
    pub(crate) file: Option<String>,

    /// Run this code instead of a file (JavaScript unless --lang says otherwise).
    #[arg(short = 'e', long = "eval", value_name = "CODE")]
    pub(crate) eval: Option<String>,

    /// The language of the code: wasm, js or python.
    #[arg(long, value_name = "LANG", value_parser = ["wasm", "js", "python"])]
    pub(crate) lang: Option<String>,

    /// Manifest file (TOML or JSON). Its relative paths are relative to the file.
    #[arg(long, value_name = "PATH")]
    pub(crate) manifest: Option<PathBuf>,

    /// Grant read access to a host directory (HOST or HOST:GUEST). Repeatable.
    #[arg(long = "allow-read", value_name = "PATH")]
    pub(crate) allow_read: Vec<String>,

    /// Grant read-write access to a host directory (HOST or HOST:GUEST). Repeatable.
    #[arg(long = "allow-write", value_name = "PATH")]
    pub(crate) allow_write: Vec<String>,

    /// Allow network access to a host pattern ([scheme://]host[:port], *.domain). Repeatable.
    #[arg(long = "allow-host", value_name = "PATTERN")]
    pub(crate) allow_host: Vec<String>,

    /// Operator: let guests reach this private address, network or host (IP, IP:PORT, CIDR, NAME, NAME:PORT) when
    /// their manifest lists it in allowed_hosts. Metadata endpoints can never be allowed. Repeatable.
    #[arg(long = "allow-private", value_name = "ADDR")]
    pub(crate) allow_private: Vec<String>,

    /// Operator: egress configuration file (TOML: allow_private, secrets bound to hosts).
    #[arg(long = "egress-config", value_name = "PATH")]
    pub(crate) egress_config: Option<PathBuf>,

    /// Operator: let manifests write allowed_hosts = ["*"] (any public host; the private-address floor still
    /// applies).
    #[arg(long = "allow-any-public-host")]
    pub(crate) allow_any_public_host: bool,

    /// Set a guest environment variable. Repeatable. The host environment is never passed through.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,

    /// Wall-clock deadline in milliseconds.
    #[arg(long = "cpu-ms", value_name = "N")]
    pub(crate) cpu_ms: Option<u64>,

    /// Deterministic instruction budget.
    #[arg(long, value_name = "N")]
    pub(crate) fuel: Option<u64>,

    /// Memory limit, in bytes or with a unit (64MiB, 1GiB).
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory: Option<ByteSize>,

    /// Captured output per stream, in bytes or with a unit.
    #[arg(long = "max-output", value_name = "BYTES")]
    pub(crate) max_output: Option<ByteSize>,

    /// Calls into host tools allowed per run.
    #[arg(long = "max-host-calls", value_name = "N")]
    pub(crate) max_host_calls: Option<u64>,

    /// Artifacts (`display.*` output of scripts) per run, all together, in bytes or with a unit.
    #[arg(long = "max-artifact-bytes", value_name = "BYTES")]
    pub(crate) max_artifact_bytes: Option<ByteSize>,

    /// Trust module signatures by this public key (file or `ed25519:<hex>`). Repeatable.
    #[arg(long = "trusted-key", value_name = "KEY")]
    pub(crate) trusted_keys: Vec<String>,

    /// Refuse modules not signed by a trusted key (exit 2, error kind `signature`).
    #[arg(long = "require-signature")]
    pub(crate) require_signature: bool,

    /// Append a signed record of the run to this audit log (JSON Lines). Needs --record-key.
    #[arg(long, value_name = "FILE", requires = "record_key")]
    pub(crate) record: Option<PathBuf>,

    /// Secret key that signs audit records.
    #[arg(long = "record-key", value_name = "KEY", requires = "record")]
    pub(crate) record_key: Option<PathBuf>,

    /// File whose contents the guest reads as standard input (default: empty; the terminal is never passed).
    #[arg(long, value_name = "PATH")]
    pub(crate) stdin: Option<PathBuf>,

    /// Send the run to a wasmagent server (`wasmagent serve`) instead of running it here; the server enforces the
    /// manifest. The token comes from --token or $WASMAGENT_TOKEN.
    #[arg(long, value_name = "URL")]
    pub(crate) remote: Option<String>,

    /// Bearer token (JWT or API key) for --remote.
    #[arg(long, value_name = "TOKEN", requires = "remote")]
    pub(crate) token: Option<String>,

    /// Print the run report as one JSON object on stdout instead of forwarding the guest's output.
    #[arg(long)]
    pub(crate) json: bool,

    /// Run, then print on stdout a manifest (TOML, for --manifest) that adds to the given one the narrowest
    /// entries that would have allowed each denial: a mount, a host, a tool, or a limit that stopped the run
    /// raised ×2. Never anything under the egress floor. The guest's output and the explanations go to stderr.
    /// Exit status 0 when nothing was denied and no limit stopped the run, 1 otherwise.
    #[arg(long, conflicts_with = "json")]
    pub(crate) learn: bool,

    /// Tools file (TOML) declaring the host tools the code may call (each only where the manifest grants it).
    #[arg(long, value_name = "PATH")]
    pub(crate) tools: Option<PathBuf>,
    /// Enable the browser tools (`browser.navigate`, `extract`, `evaluate`, `click`, `type`, `wait_for`,
    /// `screenshot`, `close`; granted like any tool) with this Chromium (default `chromium` on PATH); `[browser]` in
    /// the tools file sets the limits, and enables them too.
    #[arg(long, value_name = "CHROMIUM", num_args = 0..=1, default_missing_value = "chromium")]
    pub(crate) browser: Option<PathBuf>,

    /// Write each artifact the run displayed to a new file in this directory (created if missing), named from its
    /// position and kind: `001-html.html`, `002-table.json`, `003-image.png`. Existing files are never replaced.
    #[arg(long, value_name = "DIR")]
    pub(crate) artifacts: Option<PathBuf>,

    /// Arguments passed to the guest after its name.
    #[arg(last = true, value_name = "GUEST_ARGS")]
    pub(crate) guest_args: Vec<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}
