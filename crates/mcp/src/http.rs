//! MCP over streamable HTTP: a tower service for a web server to mount (`/mcp` on `wasmagent serve`). The web
//! server authenticates requests before they reach it and puts its [`Admission`](crate::Admission) in each one's
//! extensions; this speaks the protocol, and runs nothing a request's admission has not let in.

use crate::CodeModeServer;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;

/// Settings of the HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `Host` header values accepted (DNS-rebinding protection), e.g. `localhost`, `mcp.example.com:8080`. Empty:
    /// any host (only behind a proxy that checks it).
    pub allowed_hosts: Vec<String>,
    /// Largest request body, in bytes.
    pub max_request_body_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            max_request_body_bytes: crate::MAX_CODE_BYTES + 64 * 1024,
        }
    }
}

/// The streamable HTTP service for `server`: each MCP session gets a clone of it. Every `execute_code` and direct
/// tool call waits for the [`Admission`](crate::Admission) in its HTTP request's extensions and holds it until it
/// ends; a request without one is refused.
pub fn http_service(
    server: CodeModeServer,
    options: &HttpOptions,
) -> StreamableHttpService<CodeModeServer, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default().with_max_request_body_bytes(options.max_request_body_bytes);
    config = if options.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(options.allowed_hosts.clone())
    };
    let server = server.admitted_by_web_server();
    StreamableHttpService::new(move || Ok(server.clone()), Arc::new(LocalSessionManager::default()), config)
}
