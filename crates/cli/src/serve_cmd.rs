//! `wasmagent serve` and `wasmagent webhook verify`.

use anyhow::Context;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmagent_server::{AppState, ServerConfig};

/// Runs the HTTP server until Ctrl-C or SIGTERM, then finishes in-flight runs for at most the configured
/// `shutdown_timeout_ms` and exits, abandoning whatever is still running.
pub(crate) fn serve(
    listen: &str,
    config: Option<&Path>,
    insecure_no_auth: bool,
    no_confine: bool,
    browser: Option<&Path>,
) -> anyhow::Result<u8> {
    let mut config = match config {
        Some(path) => ServerConfig::from_path(path)?,
        None => ServerConfig::default(),
    };
    config.browser = crate::browser_cmd::config(browser, config.tools.as_deref())?;
    let needs = crate::confine_cmd::Needs {
        manifest: Some((&config.max_manifest, Path::new("/"))),
        tools: config.tools.as_deref(),
        read_files: config_files(&config),
        audit_log: config.audit.log.as_deref(),
        browser: config.browser.as_ref().map(crate::browser_cmd::confinement_paths).transpose()?,
        ..Default::default()
    };
    let confinement = crate::confine_cmd::begin(no_confine, &needs)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let shutdown_timeout_ms = config.shutdown_timeout_ms;
    let served = runtime.block_on(async move {
        let state = Arc::new(AppState::new(&config, insecure_no_auth).await.map_err(anyhow::Error::msg)?);
        let confinement = crate::confine_cmd::seal(confinement, true)?;
        state.set_confinement(confinement);
        if insecure_no_auth {
            tracing::warn!("AUTHENTICATION IS OFF (--dev-insecure-no-auth): anyone who can reach {listen} can run code");
            eprintln!("wasmagent: WARNING: authentication is off; never expose this server");
        } else if !state_has_credentials(&config) {
            eprintln!("wasmagent: no credentials are configured, so every request will be refused (401); add auth keys to --config");
        }
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("wasmagent: serving on http://{}", listener.local_addr()?);
        let signal = shutdown_signal(shutdown_timeout_ms);
        wasmagent_server::serve(listener, state, &config.cors_allowed_origins, signal).await?;
        Ok(0)
    });
    // `serve` has already waited out the grace period: a run still on the blocking pool (or a connection task) must
    // not hold the process past it, and dropping the runtime would wait for blocking threads without bound.
    runtime.shutdown_background();
    served
}

/// The files `AppState::new` reads after the confinement has started: keys, the egress configuration.
fn config_files(config: &ServerConfig) -> Vec<&Path> {
    let keys = config.auth.jwt_keys.iter().flat_map(|k| [&k.secret_file, &k.public_key_file, &k.jwks_file]);
    let models = config.agent.models.iter().map(|m| &m.api_key_file);
    [&config.audit.key_file, &config.egress_config, &config.python.engine]
        .into_iter()
        .chain(keys)
        .chain(models)
        .flatten()
        .map(PathBuf::as_path)
        .collect()
}

fn state_has_credentials(config: &ServerConfig) -> bool {
    !config.auth.jwt_keys.is_empty() || !config.auth.api_keys.is_empty()
}

async fn shutdown_signal(timeout_ms: u64) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    eprintln!("wasmagent: shutting down; finishing in-flight runs for at most {timeout_ms} ms");
}

/// Verifies one delivery: exit 0 when the signature is valid and fresh, 1 when not.
pub(crate) fn webhook_verify(secret_env: &str, signature: &str, body: &Path, tolerance: u64) -> anyhow::Result<u8> {
    let secret = std::env::var(secret_env).with_context(|| format!("environment variable {secret_env} is not set"))?;
    let body = if body == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).context("reading the body from standard input")?;
        bytes
    } else {
        std::fs::read(body).with_context(|| format!("cannot read {}", body.display()))?
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match wasmagent_server::webhook::verify(secret.as_bytes(), signature, &body, now, tolerance) {
        Ok(()) => {
            eprintln!("wasmagent: the signature verifies");
            Ok(0)
        }
        Err(error) => {
            eprintln!("wasmagent: the signature does not verify: {error}");
            Ok(1)
        }
    }
}
