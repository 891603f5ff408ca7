//! The host side of the JavaScript engine's imports (`wasmagent.*`).
//!
//! Every pointer and length comes from the guest and is checked against its memory before use; a bad one gets an
//! error, never a panic. Tool calls are checked against the grants, the size caps and `max_host_calls` on the host,
//! whatever the guest-side `tools` object looks like ([`wasmagent_tools::ToolSession`]). Responses use a two-step protocol (`tool_call` returns the
//! length, `tool_response` copies the bytes), so the host never calls back into the guest from an import.

use std::sync::Arc;
use wasmagent_kernel_wasi::host::ModuleState;
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::{MAX_TOOL_ARGS_BYTES, MAX_TOOL_NAME_BYTES, ToolRecords, ToolRegistry, ToolSession};
use wasmtime::{Caller, Extern, Linker};

/// Per-run state of the bridge.
pub(crate) struct Bridge {
    tools: ToolSession,
    result_cap: usize,
    pending: Option<Vec<u8>>,
    result: Option<Result<Vec<u8>, usize>>,
}

impl Bridge {
    pub(crate) fn new(tools: Arc<ToolRegistry>, manifest: &EffectiveManifest) -> Self {
        Bridge {
            tools: ToolSession::new(tools, manifest),
            result_cap: usize::try_from(manifest.max_output_bytes()).unwrap_or(usize::MAX),
            pending: None,
            result: None,
        }
    }

    /// The JSON the guest reported, or `Err(len)` when it was larger than the cap (and not copied).
    pub(crate) fn result(&self) -> Option<Result<&[u8], usize>> {
        self.result.as_ref().map(|r| r.as_ref().map(Vec::as_slice).map_err(|len| *len))
    }

    /// Tool calls, host-call count and denials, for the report.
    pub(crate) fn into_records(self) -> ToolRecords {
        self.tools.into_records()
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
            let (response, is_error) = match caller.data_mut().ext.tools.call(name, args) {
                Ok(result) => (result, false),
                Err(message) => (message.into_bytes(), true),
            };
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
