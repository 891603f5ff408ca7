//! The host side of the Python engine's `wasmagent:python/host` import.
//!
//! The component model lifts the guest's strings before they reach the host, so there are no pointers to check
//! here: each call goes straight to the run's [`ToolSession`], which checks the grant, the size caps and
//! `max_host_calls`. The guest receives `err(message)` for a refused or failed call and raises `ToolError`.

use std::sync::Arc;
use wasmagent_kernel_wasi::component_host::ComponentState;
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::{ToolRecords, ToolRegistry, ToolSession};
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

/// The interface the engine imports (see `guests/python/wit/world.wit`).
const HOST_INTERFACE: &str = "wasmagent:python/host@0.1.0";

/// Per-run state of the bridge.
pub(crate) struct Bridge {
    tools: ToolSession,
}

impl Bridge {
    pub(crate) fn new(tools: Arc<ToolRegistry>, manifest: &EffectiveManifest) -> Self {
        Bridge { tools: ToolSession::new(tools, manifest) }
    }

    /// Tool calls, host-call count and denials, for the report.
    pub(crate) fn into_records(self) -> ToolRecords {
        self.tools.into_records()
    }
}

/// Adds `wasmagent:python/host`.
pub(crate) fn add_to_linker(linker: &mut Linker<ComponentState<Bridge>>) -> wasmtime::Result<()> {
    linker.instance(HOST_INTERFACE)?.func_wrap(
        "call-tool",
        |mut store: StoreContextMut<'_, ComponentState<Bridge>>, (name, args): (String, String)| {
            let outcome = store.data_mut().ext.tools.call(Ok(name), Ok(args.into_bytes()));
            // Results are JSON produced by serde_json, so always UTF-8.
            Ok((outcome.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),))
        },
    )?;
    Ok(())
}
