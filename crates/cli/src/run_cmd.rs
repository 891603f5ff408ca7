use crate::args::RunArgs;
use anyhow::{Context, bail};
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use wasmagent::learn::LearnOptions;
use wasmagent::signing::keys::SecretKey;
use wasmagent::signing::record::AuditLog;
use wasmagent::{
    CapabilityManifest, Code, EffectiveManifest, EgressConfig, Error, ErrorKind, Language, ManifestCeilings, Outcome,
    RunReport, RunRequest, Sandbox, ToolRegistry, default_cache_dir, default_max_cache_bytes,
};

/// Largest module read from standard input; the engine refuses anything larger anyway.
const MAX_STDIN_MODULE: u64 = 64 * 1024 * 1024;

/// `wasmagent run`.
pub(crate) fn run(args: RunArgs, no_confine: bool) -> anyhow::Result<u8> {
    let given = build_manifest(&args)?;
    let (name, code) = read_code(&args)?;
    let stdin = match &args.stdin {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read --stdin {}", path.display()))?,
        None => Vec::new(),
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let browser = crate::browser_cmd::config(args.browser.as_deref(), args.tools.as_deref())?;
    let needs = crate::confine_cmd::Needs {
        manifest: Some((&given, &cwd)),
        tools: args.tools.as_deref(),
        read_files: [&args.record_key, &args.egress_config].into_iter().flatten().map(|p| p.as_path()).collect(),
        audit_log: args.record.as_deref().filter(|_| args.record_key.is_some()),
        write_dirs: args.artifacts.as_deref().into_iter().collect(),
        browser: browser.as_ref().map(crate::browser_cmd::confinement_paths).transpose()?,
    };
    let python_engine = args.python.load()?;
    let confinement = crate::confine_cmd::begin(no_confine, &needs)?;

    let show_compile = std::io::stderr().is_terminal();
    let compile_name = match code.language() {
        Language::Wasm => name.clone(),
        Language::Js => "the JavaScript engine".to_owned(),
        Language::Python => "the Python engine".to_owned(),
    };
    let mut builder = Sandbox::builder()
        .cache_dir(default_cache_dir())
        .max_cache_bytes(default_max_cache_bytes()?)
        .on_compile(move || {
            if show_compile {
                eprintln!("wasmagent: compiling {compile_name} (once per machine; later runs load it from the cache)…");
            }
        });
    if let (Some(record), Some(key)) = (&args.record, &args.record_key) {
        builder = builder.audit_log(AuditLog::new(record, SecretKey::from_file(key)?));
    }
    let egress = EgressConfig::load(args.egress_config.as_deref(), &args.allow_private)?;
    let toolbox = args.tools.as_deref().map(|path| crate::mcp_cmd::load_tools(path, &egress)).transpose()?;
    let mut tools = toolbox.as_ref().map_or_else(ToolRegistry::new, |t| t.registry().clone());
    if let Some(browser) = browser {
        crate::browser_cmd::register(browser, &egress, &mut tools)?;
    }
    let ceilings =
        ManifestCeilings { allow_any_public_host: args.allow_any_public_host, ..ManifestCeilings::default() };
    builder = builder.egress(egress.clone()).tools(tools.clone()).ceilings(ceilings.clone());
    if let Some(engine) = python_engine {
        builder = builder.python_engine(engine);
    }
    let sandbox = builder.build()?;
    crate::confine_cmd::seal(confinement, false)?;
    let manifest = sandbox.resolve(&given, &cwd)?;
    let request = RunRequest::new(name, code).with_args(args.guest_args.clone()).with_stdin(stdin);
    let outcome = match &args.remote {
        Some(url) => {
            let token = args.token.clone().or_else(|| std::env::var("WASMAGENT_TOKEN").ok());
            let remote = wasmagent_kernel_remote::RemoteKernel::new(url, token)?;
            wasmagent::Kernel::run(&remote, &manifest, &request).map_err(Error::from)
        }
        None => sandbox.run(&manifest, &request),
    };
    let (report, record_error) = match outcome {
        Ok(report) => (report, None),
        Err(Error::Record { report, error }) => (*report, Some(error)),
        Err(other) => return Err(other.into()),
    };

    if args.learn {
        if let Some(error) = record_error {
            bail!("the run finished but its audit record could not be written: {error}");
        }
        let options = LearnOptions { ceilings: &ceilings, egress: &egress, tools: &tools, base: &cwd };
        return print_learned(&given, &manifest, &report, &options);
    }
    if args.json {
        let line = serde_json::to_string(&report).context("cannot serialize the run report")?;
        println!("{line}");
    } else {
        forward_output(&report)?;
        print_summary(&report);
    }
    if let Some(dir) = &args.artifacts {
        let written = crate::artifacts::write_all(dir, &report.artifacts)?;
        if !args.json {
            eprintln!(
                "wasmagent: wrote {written} artifact{} to {}",
                if written == 1 { "" } else { "s" },
                dir.display()
            );
        }
    }
    if let Some(error) = record_error {
        bail!("the run finished but its audit record could not be written: {error}");
    }
    Ok(exit_status(&report))
}

/// `run --learn`: the proposal on stdout; the run's output, its denials and the explanations on stderr.
fn print_learned(
    given: &CapabilityManifest,
    effective: &EffectiveManifest,
    report: &RunReport,
    options: &LearnOptions<'_>,
) -> anyhow::Result<u8> {
    let mut stderr = std::io::stderr();
    stderr.write_all(report.stdout.as_bytes()).context("cannot write to stderr")?;
    if !report.value.is_null() {
        writeln!(stderr, "{}", report.value).context("cannot write to stderr")?;
    }
    stderr.write_all(report.stderr.as_bytes()).context("cannot write to stderr")?;
    print_summary(report);
    let proposal = wasmagent::learn::propose(given, effective, report, options)?;
    for line in &proposal.added {
        eprintln!("wasmagent: learn: {line}");
    }
    for line in proposal.refused.iter().chain(&proposal.already_allowed) {
        eprintln!("wasmagent: learn: not proposed: {line}");
    }
    let converged = report.denials.is_empty() && report.unlisted.denials == 0 && !report.outcome.is_limit();
    if converged {
        eprintln!("wasmagent: learn: nothing was denied and no limit stopped the run; this manifest is enough");
    } else if proposal.adds_nothing() {
        eprintln!("wasmagent: learn: nothing can be proposed; the manifest below is the one given");
    } else {
        eprintln!(
            "wasmagent: learn: run again with the manifest below as --manifest, instead of the manifest flags given \
             here (it holds them), to check that nothing is denied"
        );
    }
    print!("{}", proposal.to_toml()?);
    std::io::stdout().flush().context("cannot write to stdout")?;
    Ok(if converged { 0 } else { 1 })
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
        max_http_requests: None,
        max_http_request_bytes: None,
        max_http_response_bytes: None,
        http_timeout_ms: None,
        max_artifact_bytes: args.max_artifact_bytes,
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

fn language_of(args: &RunArgs, file: Option<&str>) -> Language {
    match (args.lang.as_deref(), file) {
        (Some("js"), _) => Language::Js,
        (Some("python"), _) => Language::Python,
        (Some(_), _) => Language::Wasm,
        (None, None) => Language::Js,
        (None, Some(file)) => match Path::new(file).extension().and_then(|e| e.to_str()) {
            Some("js" | "mjs" | "cjs") => Language::Js,
            Some("py") => Language::Python,
            _ => Language::Wasm,
        },
    }
}

fn read_code(args: &RunArgs) -> anyhow::Result<(String, Code)> {
    let file = args.file.as_deref();
    let language = language_of(args, file);
    let (name, bytes) = match (file, &args.eval) {
        (_, Some(code)) => {
            (if language == Language::Python { "<eval>.py" } else { "<eval>.js" }.to_owned(), code.clone().into_bytes())
        }
        (Some("-"), None) => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(MAX_STDIN_MODULE + 1)
                .read_to_end(&mut bytes)
                .context("cannot read the code from standard input")?;
            ("stdin".to_owned(), bytes)
        }
        (Some(file), None) => {
            let path = Path::new(file);
            if path.is_dir() {
                bail!("{file} is a directory, not a module or script");
            }
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {file}"))?;
            let name = path.file_name().map_or_else(|| file.to_owned(), |n| n.to_string_lossy().into_owned());
            (name, bytes)
        }
        (None, None) => bail!("give a FILE or -e CODE"),
    };
    let code = match language {
        Language::Wasm => Code::Wasm(bytes),
        language => Code::Source {
            language,
            text: String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{name} is not UTF-8 text"))?,
        },
    };
    Ok((name, code))
}

fn forward_output(report: &RunReport) -> anyhow::Result<()> {
    std::io::stdout().write_all(report.stdout.as_bytes()).context("cannot write to stdout")?;
    // A script's result value follows its own output, as a REPL would print it.
    if !report.value.is_null() {
        println!("{}", report.value);
    }
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
