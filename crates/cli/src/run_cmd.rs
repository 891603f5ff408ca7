use crate::args::RunArgs;
use anyhow::{Context, bail};
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use wasmagent::signing::keys::SecretKey;
use wasmagent::signing::record::AuditLog;
use wasmagent::{CapabilityManifest, Error, ErrorKind, Outcome, RunReport, RunRequest, Sandbox, default_cache_dir};

/// Largest module read from standard input; the engine refuses anything larger anyway.
const MAX_STDIN_MODULE: u64 = 64 * 1024 * 1024;

/// `wasmagent run`.
pub(crate) fn run(args: RunArgs) -> anyhow::Result<u8> {
    let manifest = build_manifest(&args)?;
    let (name, code) = read_code(&args.file)?;
    let stdin = match &args.stdin {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read --stdin {}", path.display()))?,
        None => Vec::new(),
    };

    let show_compile = std::io::stderr().is_terminal();
    let compile_name = name.clone();
    let mut builder = Sandbox::builder().cache_dir(default_cache_dir()).on_compile(move || {
        if show_compile {
            eprintln!("wasmagent: compiling {compile_name} (once; later runs load it from the cache)…");
        }
    });
    if let (Some(record), Some(key)) = (&args.record, &args.record_key) {
        builder = builder.audit_log(AuditLog::new(record, SecretKey::from_file(key)?));
    }
    let sandbox = builder.build()?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let manifest = sandbox.resolve(&manifest, &cwd)?;
    let request = RunRequest::wasm(name, code).with_args(args.guest_args.clone()).with_stdin(stdin);
    let (report, record_error) = match sandbox.run(&manifest, &request) {
        Ok(report) => (report, None),
        Err(Error::Record { report, error }) => (*report, Some(error)),
        Err(other) => return Err(other.into()),
    };

    if args.json {
        let line = serde_json::to_string(&report).context("cannot serialize the run report")?;
        println!("{line}");
    } else {
        forward_output(&report)?;
        print_summary(&report);
    }
    if let Some(error) = record_error {
        bail!("the run finished but its audit record could not be written: {error}");
    }
    Ok(exit_status(&report))
}

fn build_manifest(args: &RunArgs) -> anyhow::Result<CapabilityManifest> {
    let mut manifest = match &args.manifest {
        Some(path) => CapabilityManifest::from_path(path)?,
        None => CapabilityManifest::default(),
    };
    manifest.extend(CapabilityManifest {
        allowed_hosts: args.allow_host.clone(),
        allowed_read_paths: args.allow_read.clone(),
        allowed_write_paths: args.allow_write.clone(),
        env: args.env.iter().cloned().collect(),
        cpu_ms: args.cpu_ms,
        fuel: args.fuel,
        memory_limit_bytes: args.memory,
        max_output_bytes: args.max_output,
        max_host_calls: args.max_host_calls,
        extra_capabilities: Vec::new(),
        trusted_keys: args
            .trusted_keys
            .iter()
            .map(|key| crate::signing_cmd::public_key(key).map(|k| k.to_text()))
            .collect::<anyhow::Result<_>>()?,
        require_signature: args.require_signature.then_some(true),
    });
    Ok(manifest)
}

fn read_code(file: &str) -> anyhow::Result<(String, Vec<u8>)> {
    if file == "-" {
        let mut code = Vec::new();
        std::io::stdin()
            .take(MAX_STDIN_MODULE + 1)
            .read_to_end(&mut code)
            .context("cannot read the module from standard input")?;
        return Ok(("stdin.wasm".into(), code));
    }
    let path = Path::new(file);
    if path.is_dir() {
        bail!("{file} is a directory, not a module");
    }
    let code = std::fs::read(path).with_context(|| format!("cannot read {file}"))?;
    let name = path.file_name().map_or_else(|| file.to_owned(), |n| n.to_string_lossy().into_owned());
    Ok((name, code))
}

fn forward_output(report: &RunReport) -> anyhow::Result<()> {
    std::io::stdout().write_all(report.stdout.as_bytes()).context("cannot write to stdout")?;
    std::io::stdout().flush().context("cannot write to stdout")?;
    std::io::stderr().write_all(report.stderr.as_bytes()).context("cannot write to stderr")?;
    Ok(())
}

fn print_summary(report: &RunReport) {
    for denial in &report.denials {
        eprintln!("wasmagent: denied {} {}: {}", denial.capability, denial.target, denial.reason);
    }
    let usage = &report.usage;
    let mut line = format!("wasmagent: {}", report.outcome.as_str());
    if let Some(code) = report.exit_code.filter(|_| report.outcome == Outcome::Exit) {
        line.push_str(&format!(" (exit code {code})"));
    }
    line.push_str(&format!(
        " in {:.2} ms · fuel {} · memory peak {:.1} MiB · {} denial{}",
        usage.wall_ms,
        usage.fuel_consumed,
        usage.memory_peak_bytes as f64 / (1024.0 * 1024.0),
        report.denials.len(),
        if report.denials.len() == 1 { "" } else { "s" }
    ));
    if let Some(error) = &report.error {
        line.push_str(&format!("\nwasmagent: {}", error.message));
    }
    eprintln!("{line}");
}

fn exit_status(report: &RunReport) -> u8 {
    if report.error.as_ref().is_some_and(|e| e.kind == ErrorKind::Signature) {
        crate::EXIT_USAGE
    } else if report.outcome.is_limit() {
        3
    } else if report.succeeded() {
        0
    } else {
        1
    }
}
