//! The `remote` kernel: sends a run to a wasmagent server (`POST /v1/runs`) and returns the server's report.
//!
//! It owns the client side of the run protocol: the request body, the bearer token, the timeout, and turning every
//! way the server can fail to answer into a clear outcome: connection errors, timeouts and 503 become an `error`
//! report of kind `remote_unavailable`, 429 one of kind `rate_limited`; a refusal of the request itself (400, 401,
//! 403, 413) is a [`KernelError`] naming the server's reason. It never hangs: every call has a deadline.
//!
//! It must not enforce anything locally: the server holds the run to the manifest (narrowed by its own maximum).

use base64::Engine as _;
use std::time::Duration;
use wasmagent_kernel::{Code, ErrorInfo, ErrorKind, Kernel, KernelError, Language, RunReport, RunRequest};
use wasmagent_manifest::EffectiveManifest;

/// Name used in reports and errors.
pub const KERNEL_NAME: &str = "remote";

/// Time allowed on top of the manifest's `cpu_ms` for the network and the server's queue.
const SLACK: Duration = Duration::from_secs(30);

/// Runs code on a wasmagent server.
pub struct RemoteKernel {
    endpoint: String,
    token: Option<String>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl RemoteKernel {
    /// A kernel sending runs to the server at `base_url` (for example `http://127.0.0.1:8080`), authenticating
    /// with `token` (a JWT or API key) when given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, KernelError> {
        let unavailable = |e: String| KernelError::Unavailable(format!("remote kernel: {e}"));
        let base = base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(unavailable(format!("{base_url:?} is not an http(s) URL")));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wasmagent-remote")
            .enable_all()
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(RemoteKernel { endpoint: format!("{base}/v1/runs"), token, client, runtime })
    }

    fn body(manifest: &EffectiveManifest, request: &RunRequest) -> serde_json::Value {
        let mut body = serde_json::json!({
            "name": request.name,
            "args": request.args,
            "stdin": String::from_utf8_lossy(&request.stdin),
            "manifest": manifest,
        });
        match request.code() {
            Code::Wasm(bytes) => {
                body["language"] = "wasm".into();
                body["module"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
            }
            Code::Source { language, text } => {
                body["language"] = match language {
                    Language::Python => "python",
                    _ => "js",
                }
                .into();
                body["code"] = text.clone().into();
            }
        }
        body
    }

    /// Sends on the kernel's own runtime and waits on a channel, so it works from any thread, inside an async
    /// runtime or not.
    fn send(&self, body: serde_json::Value, timeout: Duration) -> Result<Answer, String> {
        let mut request = self.client.post(&self.endpoint).json(&body).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let answer = async {
                let response = request.send().await.map_err(|e| describe(&e))?;
                let status = response.status().as_u16();
                let text = response.text().await.map_err(|e| describe(&e))?;
                Ok(Answer { status, text })
            };
            let _ = sender.send(answer.await);
        });
        receiver.recv().unwrap_or_else(|_| Err("the client runtime stopped".into()))
    }
}

struct Answer {
    status: u16,
    text: String,
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "the server did not answer in time".into();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The `message` of a server's JSON error body, or the body itself.
fn server_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(500).collect())
}

impl Kernel for RemoteKernel {
    fn name(&self) -> &'static str {
        KERNEL_NAME
    }

    fn check(&self, _manifest: &EffectiveManifest) -> Result<(), KernelError> {
        Ok(())
    }

    fn run(&self, manifest: &EffectiveManifest, request: &RunRequest) -> Result<RunReport, KernelError> {
        let timeout = Duration::from_millis(manifest.cpu_ms()) + SLACK;
        let body = Self::body(manifest, request);
        let failed = |kind: ErrorKind, message: String| {
            RunReport::refused(KERNEL_NAME, ErrorInfo { kind, message }, manifest, request.code_digest())
        };
        let answer = match self.send(body, timeout) {
            Ok(answer) => answer,
            Err(e) => {
                return Ok(failed(ErrorKind::RemoteUnavailable, format!("cannot reach {}: {e}", self.endpoint)));
            }
        };
        match answer.status {
            200 => serde_json::from_str(&answer.text)
                .map_err(|e| KernelError::Unavailable(format!("remote kernel: the server's report is malformed: {e}"))),
            429 => Ok(failed(
                ErrorKind::RateLimited,
                format!("the server is rate limiting: {}", server_message(&answer.text)),
            )),
            502..=504 => Ok(failed(
                ErrorKind::RemoteUnavailable,
                format!("the server is unavailable ({}): {}", answer.status, server_message(&answer.text)),
            )),
            400 | 413 => Err(KernelError::InvalidCode(format!(
                "the server refused the run ({}): {}",
                answer.status,
                server_message(&answer.text)
            ))),
            status => Err(KernelError::Unavailable(format!(
                "remote kernel: the server refused the run ({status}): {}",
                server_message(&answer.text)
            ))),
        }
    }
}
