//! The host side of the Python engine's `wasmagent:python/host` import.
//!
//! The component model lifts the guest's strings and records before they reach the host, so there are no pointers
//! to check here: tool calls go straight to the run's [`ToolSession`] (grants, size caps, `max_host_calls`) and
//! HTTP requests to the run's [`EgressSession`] (allow-list, floor, caps, secrets), `display` artifacts to the run's
//! [`ArtifactSession`]. The guest receives `err(message)` for a refused or failed call and raises `ToolError` or
//! `HTTPRequestError`.
//!
//! A tool call's name and arguments are read lazily ([`WasmStr`]): their size is checked against the caps before
//! they are copied out of guest memory, as the JavaScript kernel does; so is an artifact's content
//! ([`WasmList`]), against `max_artifact_bytes`.

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmagent_egress::{EgressRecords, EgressSession, HttpRequest};
use wasmagent_kernel_wasi::artifacts::{ArtifactSession, Displayed};
use wasmagent_kernel_wasi::component_host::ComponentState;
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::{MAX_TOOL_ARGS_BYTES, MAX_TOOL_NAME_BYTES, ToolRecords, ToolRegistry, ToolSession};
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, Lower, WasmList, WasmStr};

/// The interface the engine imports (see `guests/python/wit/world.wit`).
const HOST_INTERFACE: &str = "wasmagent:python/host@0.1.0";

/// Per-run state of the bridge.
pub(crate) struct Bridge {
    tools: ToolSession,
    egress: EgressSession,
    artifacts: ArtifactSession,
}

/// `http-request` of the WIT world.
#[derive(ComponentType, Lift)]
#[component(record)]
struct WitHttpRequest {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// `http-response` of the WIT world.
#[derive(ComponentType, Lower)]
#[component(record)]
struct WitHttpResponse {
    status: u16,
    url: String,
    redirected: bool,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Bridge {
    /// The bridge of a run starting now: its tool calls end by the run's `cpu_ms` deadline.
    pub(crate) fn new(tools: Arc<ToolRegistry>, manifest: &EffectiveManifest, egress: EgressSession) -> Self {
        let deadline = Instant::now() + Duration::from_millis(manifest.cpu_ms());
        Bridge { tools: ToolSession::new(tools, manifest, deadline), egress, artifacts: ArtifactSession::new(manifest) }
    }

    /// The bridge with its tools told whom the run is for (`RunRequest::caller`).
    pub(crate) fn for_caller(mut self, caller: Option<String>) -> Self {
        self.tools = self.tools.with_caller(caller);
        self
    }

    /// Tool calls, host-call count and denials, HTTP requests, and artifacts, for the report.
    pub(crate) fn into_records(self) -> (ToolRecords, EgressRecords, ArtifactSession) {
        (self.tools.into_records(), self.egress.take_records(), self.artifacts)
    }
}

/// The guest string `text`, copied only when it is at most `cap` bytes (as UTF-8); otherwise why not, in the words
/// the JavaScript kernel uses.
fn read_bounded(
    text: &WasmStr,
    store: &StoreContextMut<'_, ComponentState<Bridge>>,
    cap: usize,
    what: &str,
) -> Result<String, String> {
    // CPython's strings cross as UTF-8, which `to_str` borrows from guest memory without copying.
    let text = text.to_str(store).map_err(|_| format!("the {what} is not valid Unicode"))?;
    if text.len() > cap {
        return Err(format!("the {what} is {} bytes; the largest accepted is {cap}", text.len()));
    }
    Ok(text.into_owned())
}

/// Adds `wasmagent:python/host`.
pub(crate) fn add_to_linker(linker: &mut Linker<ComponentState<Bridge>>) -> wasmtime::Result<()> {
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap(
        "call-tool",
        |mut store: StoreContextMut<'_, ComponentState<Bridge>>, (name, args): (WasmStr, WasmStr)| {
            let name = read_bounded(&name, &store, MAX_TOOL_NAME_BYTES, "tool name");
            let args = read_bounded(&args, &store, MAX_TOOL_ARGS_BYTES, "tool arguments").map(String::into_bytes);
            let tools = &mut store.data_mut().ext.tools;
            let outcome = tools.call(name, args);
            // A call cut short by the run's deadline ends the run as timed out, as the deadline would a moment later.
            if outcome.is_err() && tools.deadline_passed() {
                return Err(wasmtime::Trap::Interrupt.into());
            }
            // Results are JSON produced by serde_json, so always UTF-8.
            Ok((outcome.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),))
        },
    )?;
    host.func_wrap(
        "http-fetch",
        |store: StoreContextMut<'_, ComponentState<Bridge>>, (request,): (WitHttpRequest,)| {
            let request =
                HttpRequest { method: request.method, url: request.url, headers: request.headers, body: request.body };
            let outcome =
                store.data().ext.egress.fetch_blocking(request).map_err(|e| e.message).map(|r| WitHttpResponse {
                    status: r.status,
                    url: r.url,
                    redirected: r.redirected,
                    headers: r.headers,
                    body: r.body,
                });
            Ok((outcome,))
        },
    )?;
    host.func_wrap(
        "display",
        |mut store: StoreContextMut<'_, ComponentState<Bridge>>,
         (kind, mime, title, content): (WasmStr, WasmStr, Option<WasmStr>, WasmList<u8>)| {
            let text = |s: &WasmStr, what| read_bounded(s, &store, MAX_DISPLAY_FIELD_BYTES, what);
            let request = (|| {
                let (kind, mime) = (text(&kind, "artifact kind")?, text(&mime, "artifact type")?);
                let title = title.as_ref().map(|t| text(t, "artifact title")).transpose()?;
                Ok::<_, String>((kind, mime, title))
            })();
            let outcome = request.and_then(|(kind, mime, title)| {
                // Admitted first, so content over the limit is never copied out of guest memory.
                match store.data_mut().ext.artifacts.admit(&kind, &mime, content.len())? {
                    None => Ok(Displayed::Refused),
                    Some(admitted) => {
                        let bytes = content.as_le_slice(&store).to_vec();
                        let artifacts = &mut store.data_mut().ext.artifacts;
                        artifacts.add(admitted, title.as_deref(), bytes).map(|()| Displayed::Added)
                    }
                }
            });
            Ok((outcome.map(|displayed| displayed == Displayed::Added),))
        },
    )?;
    Ok(())
}

/// Longest artifact kind, type or title accepted from the guest.
const MAX_DISPLAY_FIELD_BYTES: usize = 64 * 1024;
