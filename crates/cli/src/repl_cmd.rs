//! `wasmagent repl --lang js|python [manifest flags]`: an interactive prompt over one session
//! ([`wasmagent::SandboxSession`]), each entry run in the same sandbox, results and denials printed as `run`
//! prints them. Line editing and history come from rustyline on a terminal; piped input is read as entries the
//! same way (a line that opens a block or a bracket continues until the block is closed, or a blank line).

use anyhow::Context;
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use wasmagent::manifest::ByteSize;
use wasmagent::{
    CapabilityManifest, Error, KernelError, Language, ManifestCeilings, Outcome, RunReport, RunRequest, Sandbox,
    SandboxSession, default_cache_dir, default_max_cache_bytes,
};

/// Arguments of `wasmagent repl`.
#[derive(Debug, Args)]
pub(crate) struct ReplArgs {
    #[command(flatten)]
    pub(crate) python: crate::args::PythonEngineArgs,
    /// The session's language.
    #[arg(long, value_name = "LANG", value_parser = ["js", "python"])]
    pub(crate) lang: String,
    /// Manifest file (TOML or JSON); the flags below add to it.
    #[arg(long, value_name = "PATH")]
    pub(crate) manifest: Option<PathBuf>,
    /// Mount a host directory read-only (`HOST` or `HOST:GUEST`).
    #[arg(long = "allow-read", value_name = "PATH")]
    pub(crate) allow_read: Vec<String>,
    /// Mount a host directory read-write (`HOST` or `HOST:GUEST`).
    #[arg(long = "allow-write", value_name = "PATH")]
    pub(crate) allow_write: Vec<String>,
    /// Allow HTTP to hosts matching PATTERN.
    #[arg(long = "allow-host", value_name = "PATTERN")]
    pub(crate) allow_host: Vec<String>,
    /// Set an environment variable in the guest.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,
    /// Time limit of each entry, in milliseconds.
    #[arg(long = "cpu-ms", value_name = "N")]
    pub(crate) cpu_ms: Option<u64>,
    /// Fuel limit of each entry.
    #[arg(long, value_name = "N")]
    pub(crate) fuel: Option<u64>,
    /// Memory limit of the session (e.g. 256MiB).
    #[arg(long, value_name = "SIZE")]
    pub(crate) memory: Option<ByteSize>,
    /// Output limit per stream of each entry.
    #[arg(long = "max-output", value_name = "BYTES")]
    pub(crate) max_output: Option<ByteSize>,
    /// Host calls of each entry.
    #[arg(long = "max-host-calls", value_name = "N")]
    pub(crate) max_host_calls: Option<u64>,
    /// Print each entry's run report as one JSON line on stdout instead of its output and summary.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("expected K=V, got {text:?}"))
}

/// Runs the prompt until end of input; exit status 0, or 1 when the session ended before the input did.
pub(crate) fn repl(args: &ReplArgs) -> anyhow::Result<u8> {
    let language = if args.lang == "python" { Language::Python } else { Language::Js };
    let mut given = match &args.manifest {
        Some(path) => CapabilityManifest::from_path(path)?,
        None => CapabilityManifest::default(),
    };
    given.extend(CapabilityManifest {
        allowed_hosts: args.allow_host.clone(),
        allowed_read_paths: args.allow_read.clone(),
        allowed_write_paths: args.allow_write.clone(),
        env: args.env.iter().cloned().collect(),
        cpu_ms: args.cpu_ms,
        fuel: args.fuel,
        memory_limit_bytes: args.memory,
        max_output_bytes: args.max_output,
        max_host_calls: args.max_host_calls,
        ..CapabilityManifest::default()
    });
    let interactive = std::io::stdin().is_terminal();
    let mut builder = Sandbox::builder();
    if let Some(engine) = args.python.load()? {
        builder = builder.python_engine(engine);
    }
    let sandbox = builder
        .cache_dir(default_cache_dir())
        .max_cache_bytes(default_max_cache_bytes()?)
        .ceilings(ManifestCeilings::default())
        .on_compile(move || {
            if interactive {
                eprintln!("wasmagent: compiling the engine (once per machine; later sessions load it from the cache)…");
            }
        })
        .build()?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let manifest = sandbox.resolve(&given, &cwd)?;
    let mut session = sandbox.session(&manifest, language)?;
    let name = if language == Language::Python { "<repl>.py" } else { "<repl>.js" };
    let prompt = if language == Language::Python { ">>> " } else { "js> " };
    if interactive {
        eprintln!(
            "wasmagent repl ({}): each entry runs in one sandbox; state and files under /scratch stay until you leave \
             (Ctrl-D)",
            args.lang
        );
        let mut editor = rustyline::DefaultEditor::new().context("cannot start line editing")?;
        loop {
            let mut entry = String::new();
            let mut line_prompt = prompt;
            loop {
                match editor.readline(line_prompt) {
                    Ok(line) => {
                        entry.push_str(&line);
                        entry.push('\n');
                        if !continues(language, &entry, &line) {
                            break;
                        }
                        line_prompt = "... ";
                    }
                    Err(rustyline::error::ReadlineError::Interrupted) => {
                        entry.clear();
                        break;
                    }
                    Err(rustyline::error::ReadlineError::Eof) => return Ok(0),
                    Err(e) => return Err(e).context("cannot read the prompt"),
                }
            }
            if entry.trim().is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(entry.trim_end());
            if let Some(status) = run_entry(&mut session, name, language, &entry, args.json)? {
                return Ok(status);
            }
        }
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        let mut entry = String::new();
        let mut ended = true;
        for line in lines.by_ref() {
            let line = line.context("cannot read standard input")?;
            entry.push_str(&line);
            entry.push('\n');
            ended = false;
            if !continues(language, &entry, &line) {
                break;
            }
        }
        if ended && entry.is_empty() {
            return Ok(0);
        }
        if entry.trim().is_empty() {
            continue;
        }
        if let Some(status) = run_entry(&mut session, name, language, &entry, args.json)? {
            return Ok(status);
        }
    }
}

/// Runs one entry and prints what it did; `Some(status)` when the session has ended and the prompt must stop.
fn run_entry(
    session: &mut SandboxSession,
    name: &str,
    language: Language,
    code: &str,
    json: bool,
) -> anyhow::Result<Option<u8>> {
    let report = match session.run(&RunRequest::source(name, language, code)) {
        Ok(report) => report,
        Err(Error::Kernel(KernelError::SessionEnded(reason))) => {
            eprintln!("wasmagent: the session has ended: {reason}");
            return Ok(Some(1));
        }
        Err(Error::Kernel(KernelError::InvalidCode(message))) => {
            eprintln!("wasmagent: not run: {message}");
            return Ok(None);
        }
        Err(other) => return Err(other.into()),
    };
    if json {
        println!("{}", serde_json::to_string(&report).context("cannot serialize the run report")?);
    } else {
        print_report(&report)?;
    }
    match &report.session_ended {
        Some(reason) => {
            eprintln!("wasmagent: the session has ended: {reason}");
            Ok(Some(1))
        }
        None => Ok(None),
    }
}

/// The entry's output, its value, its denials, and what went wrong, as `wasmagent run` prints them.
fn print_report(report: &RunReport) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout();
    stdout.write_all(report.stdout.as_bytes()).context("cannot write to stdout")?;
    if !report.value.is_null() {
        writeln!(stdout, "{}", report.value).context("cannot write to stdout")?;
    }
    stdout.flush().context("cannot write to stdout")?;
    std::io::stderr().write_all(report.stderr.as_bytes()).context("cannot write to stderr")?;
    for denial in &report.denials {
        eprintln!("wasmagent: denied {} {}: {}", denial.capability, denial.target, denial.reason);
    }
    if report.outcome != Outcome::Ok {
        let message = report.error.as_ref().map_or("", |e| e.message.as_str());
        eprintln!("wasmagent: {} in {:.2} ms\n{message}", report.outcome.as_str(), report.usage.wall_ms);
    }
    Ok(())
}

/// Whether an entry goes on after `line`: an open bracket, a trailing backslash, or (Python) a line opening a
/// block, until a blank line ends it.
fn continues(language: Language, entry: &str, line: &str) -> bool {
    let open = |text: &str| {
        let mut depth = 0i64;
        let mut quote: Option<char> = None;
        let mut escaped = false;
        for c in text.chars() {
            match quote {
                Some(q) => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    '\'' | '"' | '`' => quote = Some(c),
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' => depth -= 1,
                    _ => {}
                },
            }
        }
        depth > 0
    };
    if line.trim_end().ends_with('\\') || open(entry) {
        return true;
    }
    if language == Language::Python {
        let multi_line = entry.trim_end_matches('\n').contains('\n');
        return line.trim_end().ends_with(':') || (multi_line && !line.trim().is_empty());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_continue_while_a_block_or_bracket_is_open() {
        assert!(!continues(Language::Js, "1 + 1\n", "1 + 1"));
        assert!(continues(Language::Js, "function f() {\n", "function f() {"));
        assert!(!continues(Language::Js, "function f() {\n  return '}';\n}\n", "}"));
        assert!(continues(Language::Python, "def f():\n", "def f():"));
        assert!(continues(Language::Python, "def f():\n    return 1\n", "    return 1"));
        assert!(!continues(Language::Python, "def f():\n    return 1\n\n", ""));
        assert!(!continues(Language::Python, "x = 1\n", "x = 1"));
        assert!(continues(Language::Python, "xs = [\n", "xs = ["));
    }
}
