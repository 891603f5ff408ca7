//! The host side of the script engines' imports (`wasmagent.*`): the JavaScript engine (`guests/js`) and the Python
//! engine (`guests/python/bridge.c`) import the same functions.
//!
//! Every pointer and length comes from the guest and is checked against its memory before use; a bad one gets an
//! error, never a panic. Tool calls are checked against the grants, the size caps and `max_host_calls` on the host,
//! whatever the guest-side `tools` object looks like ([`wasmagent_tools::ToolSession`]); `fetch` requests go to the
//! run's [`EgressSession`]; `display` artifacts to the run's [`ArtifactSession`] (sized before they are copied).
//! Responses use a two-step protocol (`tool_call` or `http_request` returns the length,
//! `tool_response` copies the bytes), so the host never calls back into the guest from an import.

use crate::artifacts::{ArtifactSession, Displayed};
use crate::host::{ModuleState, guest_bytes};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmagent_egress::{EgressRecords, EgressSession, HttpRequest, HttpResponse};
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::{MAX_TOOL_ARGS_BYTES, MAX_TOOL_NAME_BYTES, ToolRecords, ToolRegistry, ToolSession};
use wasmtime::{Caller, Extern, Instance, Linker, Store};

/// Per-run state of the bridge.
pub struct Bridge {
    tools: ToolSession,
    egress: EgressSession,
    artifacts: ArtifactSession,
    result_cap: usize,
    pending: Option<Vec<u8>>,
    result: Option<Result<Vec<u8>, usize>>,
}

impl Bridge {
    /// The bridge of a run starting now: its tool calls end by the run's `cpu_ms` deadline.
    pub fn new(tools: Arc<ToolRegistry>, manifest: &EffectiveManifest, egress: EgressSession) -> Self {
        let deadline = Instant::now() + Duration::from_millis(manifest.cpu_ms());
        Bridge {
            tools: ToolSession::new(tools, manifest, deadline),
            egress,
            artifacts: ArtifactSession::new(manifest),
            result_cap: usize::try_from(manifest.max_output_bytes()).unwrap_or(usize::MAX),
            pending: None,
            result: None,
        }
    }

    /// The bridge with `result` accepting at most `cap` bytes (by default the manifest's `max_output_bytes`).
    pub fn with_result_cap(mut self, cap: usize) -> Self {
        self.result_cap = cap;
        self
    }

    /// The bridge with its tools told whom the run is for (`RunRequest::caller`).
    pub fn for_caller(mut self, caller: Option<String>) -> Self {
        self.tools = self.tools.with_caller(caller);
        self
    }

    /// The JSON the guest reported, or `Err(len)` when it was larger than the cap (and not copied).
    pub fn result(&self) -> Option<Result<&[u8], usize>> {
        self.result.as_ref().map(|r| r.as_ref().map(Vec::as_slice).map_err(|len| *len))
    }

    /// Tool calls, host-call count and denials, HTTP requests, and artifacts, for the report.
    pub fn into_records(self) -> (ToolRecords, EgressRecords, ArtifactSession) {
        (self.tools.into_records(), self.egress.take_records(), self.artifacts)
    }
}

fn memory<T>(caller: &mut Caller<'_, T>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

/// Copies `len` guest bytes at `ptr`, refusing ranges outside memory or longer than `cap`.
fn read_guest<T>(caller: &mut Caller<'_, T>, ptr: i32, len: i32, cap: usize, what: &str) -> Result<Vec<u8>, String> {
    let memory = memory(caller).ok_or(NO_MEMORY)?;
    copy_from_guest(memory.data(&*caller), ptr, len, cap, what)
}

const NO_MEMORY: &str = "the guest exports no memory";

/// Copies `len` bytes at `ptr` out of the guest memory `memory`, refusing ranges outside it or longer than `cap`.
pub fn copy_from_guest(memory: &[u8], ptr: i32, len: i32, cap: usize, what: &str) -> Result<Vec<u8>, String> {
    let len = len as u32 as usize;
    if len > cap {
        return Err(format!("the {what} is {len} bytes; the largest accepted is {cap}"));
    }
    guest_bytes(memory, ptr, len).map(<[u8]>::to_vec).ok_or_else(|| format!("the {what} lies outside guest memory"))
}

/// What a `tool_call` reads from guest memory: the tool name (UTF-8) and the arguments (JSON, parsed later).
pub fn tool_call_request(
    memory: &[u8],
    (name_ptr, name_len): (i32, i32),
    (args_ptr, args_len): (i32, i32),
) -> (Result<String, String>, Result<Vec<u8>, String>) {
    let name = copy_from_guest(memory, name_ptr, name_len, MAX_TOOL_NAME_BYTES, "tool name")
        .and_then(|b| String::from_utf8(b).map_err(|_| "the tool name is not UTF-8".to_owned()));
    let args = copy_from_guest(memory, args_ptr, args_len, MAX_TOOL_ARGS_BYTES, "tool arguments");
    (name, args)
}

/// A response the guest collects with `tool_response`: the length `tool_call` or `http_request` returns (negative
/// for an error message) and the bytes kept pending until then.
pub fn pending_response(outcome: Result<Vec<u8>, String>) -> (i32, Vec<u8>) {
    let (bytes, is_error) = match outcome {
        Ok(bytes) => (bytes, false),
        Err(message) => (message.into_bytes(), true),
    };
    let len = bytes.len() as i32;
    (if is_error { -len } else { len }, bytes)
}

/// Largest `fetch` request description (method, URL, headers as JSON) accepted from the guest.
const MAX_HTTP_META_BYTES: usize = 1024 * 1024;

/// The request description the guest's `fetch` sends.
#[derive(serde::Deserialize)]
struct FetchMeta {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
}

/// Sends the guest's request; the response is a `u32` LE length, the metadata JSON, then the body.
fn fetch(
    egress: &EgressSession,
    meta: Result<Vec<u8>, String>,
    body: Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let meta: FetchMeta = serde_json::from_slice(&meta?).map_err(|e| format!("malformed fetch request: {e}"))?;
    let request = HttpRequest { method: meta.method, url: meta.url, headers: meta.headers, body: body? };
    let HttpResponse { status, url, redirected, headers, body } =
        egress.fetch_blocking(request).map_err(|e| e.message)?;
    let meta = serde_json::json!({ "status": status, "url": url, "redirected": redirected, "headers": headers });
    let meta = meta.to_string().into_bytes();
    let mut out = Vec::with_capacity(4 + meta.len() + body.len());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&body);
    if out.len() > i32::MAX as usize {
        return Err("the response is too large to hand to the guest".into());
    }
    Ok(out)
}

/// Largest `display` description (kind, type, title as JSON) accepted from the guest.
const MAX_ARTIFACT_META_BYTES: usize = 64 * 1024;

/// The description the guest's `display.*` functions send with the content.
#[derive(serde::Deserialize)]
struct ArtifactMeta {
    kind: String,
    #[serde(default)]
    mime: String,
    #[serde(default)]
    title: Option<String>,
}

/// Starts a run of a script engine: writes `input` (the request, JSON) into the engine's memory through its
/// `wasmagent_alloc` export and calls `wasmagent_run` on it; the engine answers through `wasmagent.result`.
pub fn enter(store: &mut Store<ModuleState<Bridge>>, instance: Instance, input: &str) -> wasmtime::Result<()> {
    let alloc = instance.get_typed_func::<u32, u32>(&mut *store, "wasmagent_alloc")?;
    let start = instance.get_typed_func::<(u32, u32), ()>(&mut *store, "wasmagent_run")?;
    let len = u32::try_from(input.len()).map_err(|_| wasmtime::format_err!("the script is too large"))?;
    let ptr = alloc.call(&mut *store, len)?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::format_err!("the engine exports no memory"))?;
    memory.write(&mut *store, ptr as usize, input.as_bytes())?;
    start.call(&mut *store, (ptr, len))
}

/// Adds the `wasmagent` imports.
pub fn add_to_linker(linker: &mut Linker<ModuleState<Bridge>>) -> wasmtime::Result<()> {
    linker.func_wrap("wasmagent", "result", |mut caller: Caller<'_, ModuleState<Bridge>>, ptr: i32, len: i32| {
        let cap = caller.data().ext.result_cap;
        let result = read_guest(&mut caller, ptr, len, cap, "result").map_err(|_| len as u32 as usize);
        caller.data_mut().ext.result = Some(result);
    })?;
    linker.func_wrap(
        "wasmagent",
        "tool_call",
        |mut caller: Caller<'_, ModuleState<Bridge>>, name_ptr: i32, name_len: i32, args_ptr: i32, args_len: i32| {
            let (name, args) = match memory(&mut caller) {
                Some(memory) => tool_call_request(memory.data(&caller), (name_ptr, name_len), (args_ptr, args_len)),
                None => (Err(NO_MEMORY.to_owned()), Err(NO_MEMORY.to_owned())),
            };
            let tools = &mut caller.data_mut().ext.tools;
            let outcome = tools.call(name, args);
            // A call cut short by the run's deadline ends the run as timed out, as the deadline would a moment later.
            if outcome.is_err() && tools.deadline_passed() {
                return Err(wasmtime::Trap::Interrupt.into());
            }
            let (len, response) = pending_response(outcome);
            caller.data_mut().ext.pending = Some(response);
            Ok(len)
        },
    )?;
    linker.func_wrap(
        "wasmagent",
        "http_request",
        |mut caller: Caller<'_, ModuleState<Bridge>>, meta_ptr: i32, meta_len: i32, body_ptr: i32, body_len: i32| {
            let meta = read_guest(&mut caller, meta_ptr, meta_len, MAX_HTTP_META_BYTES, "fetch request");
            // The body already lies in guest memory, which the memory limit bounds; the egress session refuses
            // bodies over max_http_request_bytes with a denial.
            let body = read_guest(&mut caller, body_ptr, body_len, usize::MAX, "fetch body");
            let (len, response) = pending_response(fetch(&caller.data().ext.egress, meta, body));
            caller.data_mut().ext.pending = Some(response);
            len
        },
    )?;
    linker.func_wrap(
        "wasmagent",
        "artifact",
        |mut caller: Caller<'_, ModuleState<Bridge>>, meta_ptr: i32, meta_len: i32, body_ptr: i32, body_len: i32| {
            // 0: added; 1: refused by a limit (a denial says why); negative: minus the length of the error
            // message, collected with `tool_response`.
            let outcome = (|| {
                let meta = read_guest(&mut caller, meta_ptr, meta_len, MAX_ARTIFACT_META_BYTES, "display request")?;
                let meta: ArtifactMeta =
                    serde_json::from_slice(&meta).map_err(|e| format!("malformed display request: {e}"))?;
                let memory = memory(&mut caller).ok_or(NO_MEMORY)?;
                let (data, bridge) = memory.data_and_store_mut(&mut caller);
                let len = body_len as u32 as usize;
                let content = || copy_from_guest(data, body_ptr, body_len, usize::MAX, "display content");
                bridge.ext.artifacts.display(&meta.kind, &meta.mime, meta.title.as_deref(), len, content)
            })();
            match outcome {
                Ok(Displayed::Added) => 0,
                Ok(Displayed::Refused) => 1,
                Err(message) => {
                    let (len, response) = pending_response(Err(message));
                    caller.data_mut().ext.pending = Some(response);
                    len
                }
            }
        },
    )?;
    linker.func_wrap(
        "wasmagent",
        "tool_response",
        |mut caller: Caller<'_, ModuleState<Bridge>>, ptr: i32, len: i32| {
            let Some(response) = caller.data_mut().ext.pending.take() else {
                return -1;
            };
            if response.len() != len as u32 as usize {
                return -1;
            }
            let Some(memory) = memory(&mut caller) else {
                return -1;
            };
            match memory.write(&mut caller, ptr as u32 as usize, &response) {
                Ok(()) => 0,
                Err(_) => -1,
            }
        },
    )?;
    Ok(())
}
