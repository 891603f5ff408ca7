//! The host side of the JavaScript engine's imports (`wasmagent.*`).
//!
//! Every pointer and length comes from the guest and is checked against its memory before use; a bad one gets an
//! error, never a panic. Tool calls are checked against the grants, the size caps and `max_host_calls` on the host,
//! whatever the guest-side `tools` object looks like. Responses use a two-step protocol (`tool_call` returns the
//! length, `tool_response` copies the bytes), so the host never calls back into the guest from an import.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;
use wasmagent_kernel::{Denial, ToolCall};
use wasmagent_kernel_wasi::host::ModuleState;
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::ToolRegistry;
use wasmtime::{Caller, Extern, Linker};

/// Longest tool name accepted from a guest.
const MAX_TOOL_NAME_BYTES: usize = 256;
/// Largest tool arguments accepted from a guest (JSON).
pub(crate) const MAX_TOOL_ARGS_BYTES: usize = 1024 * 1024;
/// Largest tool result passed back to a guest (JSON).
pub(crate) const MAX_TOOL_RESULT_BYTES: usize = 1024 * 1024;

/// Per-run state of the bridge.
pub(crate) struct Bridge {
    tools: Arc<ToolRegistry>,
    granted: Vec<String>,
    max_host_calls: u64,
    result_cap: usize,
    host_calls: u64,
    pending: Option<Vec<u8>>,
    result: Option<Result<Vec<u8>, usize>>,
    calls: Vec<ToolCall>,
    denials: Vec<Denial>,
}

impl Bridge {
    pub(crate) fn new(tools: Arc<ToolRegistry>, manifest: &EffectiveManifest) -> Self {
        Bridge {
            granted: tools.granted_names(manifest),
            tools,
            max_host_calls: manifest.max_host_calls(),
            result_cap: usize::try_from(manifest.max_output_bytes()).unwrap_or(usize::MAX),
            host_calls: 0,
            pending: None,
            result: None,
            calls: Vec::new(),
            denials: Vec::new(),
        }
    }

    /// The JSON the guest reported, or `Err(len)` when it was larger than the cap (and not copied).
    pub(crate) fn result(&self) -> Option<Result<&[u8], usize>> {
        self.result.as_ref().map(|r| r.as_ref().map(Vec::as_slice).map_err(|len| *len))
    }

    /// Tool calls, host-call count and denials, for the report.
    pub(crate) fn into_records(self) -> (Vec<ToolCall>, u64, Vec<Denial>) {
        (self.calls, self.host_calls, self.denials)
    }

    /// Runs one tool call and returns the response and whether it is an error.
    fn call(&mut self, name: Result<String, String>, args: Result<Vec<u8>, String>) -> (Vec<u8>, bool) {
        let started = Instant::now();
        let args_digest = match &args {
            Ok(bytes) => format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
            Err(_) => String::new(),
        };
        let name_text = name.clone().unwrap_or_else(|e| e);
        self.host_calls += 1;
        let refusal = if self.host_calls > self.max_host_calls {
            Some((
                "host_call",
                format!(
                    "max_host_calls ({}) reached; the manifest allows no more host calls in this run",
                    self.max_host_calls
                ),
            ))
        } else {
            match &name {
                Err(reason) => Some(("tool", reason.clone())),
                Ok(n) if !self.granted.iter().any(|g| g == n) => Some((
                    "tool",
                    if self.tools.get(n).is_some() {
                        format!("tool {n} is not granted: add `tool:{n}` to extra_capabilities")
                    } else {
                        format!("there is no tool named {n}")
                    },
                )),
                Ok(_) => None,
            }
        };
        if let Some((capability, reason)) = refusal {
            // One denial per distinct refusal, so a loop of refused calls cannot flood the report.
            if !self.denials.iter().any(|d| d.capability == capability && d.target == name_text) {
                self.denials.push(Denial {
                    capability: capability.into(),
                    target: name_text.clone(),
                    reason: reason.clone(),
                });
            }
            self.record(name_text, args_digest, "denied", started, Some(reason.clone()));
            return (reason.into_bytes(), true);
        }
        let outcome = args
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| format!("the arguments are not JSON: {e}")))
            .and_then(|args| match self.tools.get(&name_text) {
                Some(tool) => tool.call(args),
                None => Err(format!("there is no tool named {name_text}")),
            })
            .and_then(|value| {
                let bytes = serde_json::to_vec(&value).map_err(|e| format!("the result is not JSON: {e}"))?;
                if bytes.len() > MAX_TOOL_RESULT_BYTES {
                    Err(format!("the result is {} bytes; the largest accepted is {MAX_TOOL_RESULT_BYTES}", bytes.len()))
                } else {
                    Ok(bytes)
                }
            });
        match outcome {
            Ok(bytes) => {
                self.record(name_text, args_digest, "ok", started, None);
                (bytes, false)
            }
            Err(message) => {
                self.record(name_text, args_digest, "error", started, Some(message.clone()));
                (message.into_bytes(), true)
            }
        }
    }

    fn record(&mut self, name: String, args_digest: String, outcome: &str, started: Instant, error: Option<String>) {
        let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0;
        self.calls.push(ToolCall { name, args_digest, outcome: outcome.into(), duration_ms, error });
    }
}

fn memory<T>(caller: &mut Caller<'_, T>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

/// Copies `len` guest bytes at `ptr`, refusing ranges outside memory or longer than `cap`.
fn read_guest<T>(caller: &mut Caller<'_, T>, ptr: i32, len: i32, cap: usize, what: &str) -> Result<Vec<u8>, String> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    if len > cap {
        return Err(format!("the {what} is {len} bytes; the largest accepted is {cap}"));
    }
    let memory = memory(caller).ok_or("the guest exports no memory")?;
    let end = ptr.checked_add(len).ok_or_else(|| format!("the {what} lies outside guest memory"))?;
    memory
        .data(&*caller)
        .get(ptr..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("the {what} lies outside guest memory"))
}

/// Adds the `wasmagent` imports.
pub(crate) fn add_to_linker(linker: &mut Linker<ModuleState<Bridge>>) -> wasmtime::Result<()> {
    linker.func_wrap("wasmagent", "result", |mut caller: Caller<'_, ModuleState<Bridge>>, ptr: i32, len: i32| {
        let cap = caller.data().ext.result_cap;
        let result = read_guest(&mut caller, ptr, len, cap, "result").map_err(|_| len as u32 as usize);
        caller.data_mut().ext.result = Some(result);
    })?;
    linker.func_wrap(
        "wasmagent",
        "tool_call",
        |mut caller: Caller<'_, ModuleState<Bridge>>, name_ptr: i32, name_len: i32, args_ptr: i32, args_len: i32| {
            let name = read_guest(&mut caller, name_ptr, name_len, MAX_TOOL_NAME_BYTES, "tool name")
                .and_then(|b| String::from_utf8(b).map_err(|_| "the tool name is not UTF-8".to_owned()));
            let args = read_guest(&mut caller, args_ptr, args_len, MAX_TOOL_ARGS_BYTES, "tool arguments");
            let (response, is_error) = caller.data_mut().ext.call(name, args);
            let len = response.len() as i32;
            caller.data_mut().ext.pending = Some(response);
            if is_error { -len } else { len }
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
