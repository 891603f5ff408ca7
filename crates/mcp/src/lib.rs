//! wasmagent as an MCP server: the front end that gives an agent (any Model Context Protocol client) "code mode",
//! a sandbox to run code in and the host tools that code may call.
//!
//! This crate owns the MCP side only, built on the official `rmcp` SDK: the two code-mode tools and how their
//! answers read.
//! - `execute_code` {`language`, `code`, `session`?} runs JavaScript or Python in a fresh sandbox through
//!   [`wasmagent::Sandbox`], held to the one manifest the server was started with; with a `session` name, in that
//!   name's live sandbox, kept for the client connection. Every way a run can end (timeout,
//!   memory limit, exception, syntax error, refused code) is a normal tool result with `isError` set, never a
//!   protocol error; the full `wasmagent.run/v1` report is the structured content.
//! - `request_capability` {`capability`, `reason`}, offered only when the embedder sets an [`Escalation`]: asks the
//!   client's user, through MCP elicitation, to approve one refused access for the next run or the connection,
//!   within the operator's maximum manifest.
//! - `search_docs` {`query`, `limit`} ranks the host tools (BM25 over names, descriptions and parameters) and gives
//!   each hit's call signature inside `execute_code` in both languages.
//!
//! It must not hold policy or engine code: grants, limits and what a run may touch are the manifest's (tools are
//! granted by its `extra_capabilities`, as everywhere), and running is the kernels'. The command that starts it is
//! `wasmagent mcp` in the cli crate.

mod admission;
mod bm25;
mod catalog;
mod escalation;
mod http;
mod server;
mod sessions;
mod signature;

pub use admission::{Admission, AdmitFuture, RunAdmission, RunPermit};
pub use escalation::Escalation;
pub use http::{HttpOptions, http_service};
pub use server::{CodeModeServer, is_run_tool};

use std::sync::Arc;
use wasmagent::{EffectiveManifest, Sandbox, ToolRegistry};

/// How the server presents the host tools.
#[derive(Debug, Clone, Copy, Default)]
pub struct McpOptions {
    /// Also publish every granted host tool as a direct MCP tool, for clients that prefer classic tool calls. Code
    /// mode (`execute_code`, `search_docs`) is always there.
    pub expose_tools: bool,
}

/// The largest `code` `execute_code` accepts, in bytes. Far below rmcp's 16 MiB cap on one stdio message, which
/// drops longer messages unanswered; larger code is refused with an error result instead.
pub const MAX_CODE_BYTES: usize = 1024 * 1024;

/// Why the server stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The client never completed the MCP handshake.
    #[error("the MCP session did not start: {0}")]
    Start(Box<rmcp::service::ServerInitializeError>),
    /// The session's task failed.
    #[error("the MCP session failed: {0}")]
    Session(#[from] tokio::task::JoinError),
}

impl From<rmcp::service::ServerInitializeError> for McpError {
    fn from(error: rmcp::service::ServerInitializeError) -> Self {
        McpError::Start(Box::new(error))
    }
}

/// Serves the code-mode tools over standard input and output until the client closes the connection.
///
/// Every `execute_code` run uses `sandbox` held to `manifest`; `search_docs` documents `tools`, which should be the
/// registry `sandbox` was built with. Standard output carries the protocol, so nothing else may write to it while
/// this runs.
pub async fn serve_stdio(
    sandbox: Arc<Sandbox>,
    manifest: EffectiveManifest,
    tools: &ToolRegistry,
    options: McpOptions,
) -> Result<(), McpError> {
    serve_server_stdio(CodeModeServer::new(sandbox, manifest, tools, options)).await
}

/// Serves `server` (built and configured by the embedder) over standard input and output until the client closes
/// the connection.
pub async fn serve_server_stdio(server: CodeModeServer) -> Result<(), McpError> {
    serve(server, rmcp::transport::stdio()).await
}

/// Serves `server` on any rmcp transport (a pipe, an in-memory duplex) until the peer closes it.
pub async fn serve<T, E, A>(server: CodeModeServer, transport: T) -> Result<(), McpError>
where
    T: rmcp::transport::IntoTransport<rmcp::RoleServer, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    use rmcp::ServiceExt;
    let service = server.serve(transport).await?;
    let reason = service.waiting().await?;
    tracing::debug!(?reason, "the MCP session ended");
    Ok(())
}
