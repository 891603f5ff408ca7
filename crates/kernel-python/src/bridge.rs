//! The host side of the Python engine's `wasmagent:python/host` import.
//!
//! The component model lifts the guest's strings and records before they reach the host, so there are no pointers
//! to check here: tool calls go straight to the run's [`ToolSession`] (grants, size caps, `max_host_calls`) and
//! HTTP requests to the run's [`EgressSession`] (allow-list, floor, caps, secrets). The guest receives
//! `err(message)` for a refused or failed call and raises `ToolError` or `HTTPRequestError`.

use std::sync::Arc;
use wasmagent_egress::{EgressRecords, EgressSession, HttpRequest};
use wasmagent_kernel_wasi::component_host::ComponentState;
use wasmagent_manifest::EffectiveManifest;
use wasmagent_tools::{ToolRecords, ToolRegistry, ToolSession};
use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Linker, Lower};

/// The interface the engine imports (see `guests/python/wit/world.wit`).
const HOST_INTERFACE: &str = "wasmagent:python/host@0.1.0";

/// Per-run state of the bridge.
pub(crate) struct Bridge {
    tools: ToolSession,
    egress: EgressSession,
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
    pub(crate) fn new(tools: Arc<ToolRegistry>, manifest: &EffectiveManifest, egress: EgressSession) -> Self {
        Bridge { tools: ToolSession::new(tools, manifest), egress }
    }

    /// Tool calls, host-call count and denials, and HTTP requests, for the report.
    pub(crate) fn into_records(self) -> (ToolRecords, EgressRecords) {
        (self.tools.into_records(), self.egress.take_records())
    }
}

/// Adds `wasmagent:python/host`.
pub(crate) fn add_to_linker(linker: &mut Linker<ComponentState<Bridge>>) -> wasmtime::Result<()> {
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap(
        "call-tool",
        |mut store: StoreContextMut<'_, ComponentState<Bridge>>, (name, args): (String, String)| {
            let outcome = store.data_mut().ext.tools.call(Ok(name), Ok(args.into_bytes()));
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
    Ok(())
}
