//! The `wasmagent` command-line tool: a thin client of the `wasmagent` library.
//!
//! It owns argument parsing, turning flags into a manifest, printing reports and choosing the exit status. It must
//! not contain policy or engine logic; everything it runs goes through [`wasmagent::Sandbox`].
//!
//! Exit status: 0 the guest succeeded; 1 the guest failed or exited non-zero; 2 usage, manifest or code error
//! (nothing ran); 3 a manifest limit stopped the run.

mod agent_cmd;
mod args;
mod artifacts;
mod browser_cmd;
mod confine_cmd;
mod engine_cmd;
mod manifest_cmd;
mod mcp_cmd;
mod repl_cmd;
mod run_cmd;
mod serve_cmd;
mod signing_cmd;
mod tools_cmd;

use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

/// Exit status for usage, manifest and code errors: nothing ran.
pub(crate) const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMAGENT_LOG")
                // chromiumoxide logs every DevTools event its typed protocol does not know (new Chromium releases
                // add some) and the connection's end when the browser is stopped: noise to a user (the browser
                // tools report their own failures), kept for WASMAGENT_LOG.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,chromiumoxide=off")),
        )
        .init();
    // Built once per process; clap keeps it for the life of the program.
    let long_version: &'static str = format!("{}\n{}", env!("CARGO_PKG_VERSION"), confine_cmd::kernel_support()).leak();
    let cli = match args::Cli::from_arg_matches(&args::Cli::command().long_version(long_version).get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let no_confine = cli.no_confine;
    let result = match cli.command {
        args::Command::Run(run) => run_cmd::run(*run, no_confine),
        args::Command::Repl(repl) => repl_cmd::repl(&repl),
        args::Command::Manifest(args::ManifestCommand::Check { file }) => manifest_cmd::check(&file),
        args::Command::Manifest(args::ManifestCommand::Diff { a, b }) => manifest_cmd::diff(&a, &b),
        args::Command::Keygen { out } => signing_cmd::keygen(&out),
        args::Command::Sign { module, key, out } => signing_cmd::sign(&module, &key, out.as_deref()),
        args::Command::Verify { module, pubkey } => signing_cmd::verify(&module, &pubkey),
        args::Command::Audit(args::AuditCommand::Verify { file, pubkey }) => signing_cmd::audit_verify(&file, &pubkey),
        args::Command::Serve { listen, config, dev_insecure_no_auth, browser } => {
            serve_cmd::serve(&listen, config.as_deref(), dev_insecure_no_auth, no_confine, browser.as_deref())
        }
        args::Command::Mcp(mcp) => mcp_cmd::mcp(&mcp, no_confine),
        args::Command::Agent(agent) => agent_cmd::agent(&agent),
        args::Command::Tools(args::ToolsCommand::List { tools, manifest }) => {
            tools_cmd::list(&tools, manifest.as_deref())
        }
        args::Command::Tools(args::ToolsCommand::Check { tools, operator }) => tools_cmd::check(&tools, &operator),
        args::Command::Engine(args::EngineCommand::Build { kind: _, requirements, out, find_links, python }) => {
            engine_cmd::build_python(&requirements, &out, find_links, python)
        }
        args::Command::Webhook(args::WebhookCommand::Verify { secret_env, signature, body, tolerance }) => {
            serve_cmd::webhook_verify(&secret_env, &signature, &body, tolerance)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("wasmagent: error: {error:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
