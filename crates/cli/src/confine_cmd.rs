//! The second wall for `serve`, `mcp` and `run`: the paths each command needs turned into a
//! [`wasmagent_confine::Plan`], applied before the command starts any thread, sealed once its child processes run.

use anyhow::Context;
use std::path::{Path, PathBuf};
use wasmagent::CapabilityManifest;
use wasmagent::manifest::Mount;
use wasmagent_confine::{Plan, Started, Status};
use wasmagent_toolbox::ToolsFile;

/// A command's confinement: started (Landlock, `no_new_privs`, limits), or off (`--no-confine`).
pub(crate) enum Confinement {
    Started(Started),
    Off,
}

/// What one command reads and writes beyond the baseline.
#[derive(Default)]
pub(crate) struct Needs<'a> {
    /// The manifest whose mounts the runs may use, and the directory its relative paths are taken from.
    pub(crate) manifest: Option<(&'a CapabilityManifest, &'a Path)>,
    /// The tools file.
    pub(crate) tools: Option<&'a Path>,
    /// Files read after start-up (keys, the egress configuration).
    pub(crate) read_files: Vec<&'a Path>,
    /// The audit log (created now, so that only the file itself need be writable).
    pub(crate) audit_log: Option<&'a Path>,
    /// Directories written after the run (`--artifacts`), created now.
    pub(crate) write_dirs: Vec<&'a Path>,
    /// The browser tools' Chromium and profile directory (`--browser`): Chromium is started after the seal and
    /// inherits the ruleset, so the plan lets it run (and leaves seccomp off, which would refuse its `execve`).
    pub(crate) browser: Option<(PathBuf, PathBuf)>,
}

/// Starts the confinement of a command, or warns that it is off. Must run before the command starts a thread.
pub(crate) fn begin(no_confine: bool, needs: &Needs<'_>) -> anyhow::Result<Confinement> {
    if no_confine {
        eprintln!(
            "wasmagent: WARNING: --no-confine: the host process is not confined by the kernel (no Landlock, no \
             seccomp); a sandbox escape would reach everything this user can"
        );
        return Ok(Confinement::Off);
    }
    let plan = plan(needs)?;
    let started = wasmagent_confine::begin(&plan).context("confining the host process (--no-confine turns it off)")?;
    Ok(Confinement::Started(started))
}

/// Installs the seccomp filter (when started) and reports the state in one line on standard error: always for a
/// long-lived front end (`announce`: `serve`, `mcp`), otherwise (`run`) only when anything is weaker than the full
/// wall, else at `info`.
pub(crate) fn seal(confinement: Confinement, announce: bool) -> anyhow::Result<Status> {
    let status = match confinement {
        Confinement::Off => Status::disabled(),
        Confinement::Started(started) => {
            started.seal().context("confining the host process (--no-confine turns it off)")?
        }
    };
    if !status.enabled {
        // `begin` has warned already.
    } else if !status.is_full() {
        eprintln!("wasmagent: WARNING: {status}");
    } else if announce {
        eprintln!("wasmagent: {status}");
    } else {
        tracing::info!("wasmagent: {status}");
    }
    Ok(status)
}

/// One line for `wasmagent --version`: the second wall's default and what this kernel offers it.
pub(crate) fn kernel_support() -> String {
    let abi = wasmagent_confine::kernel_landlock_abi();
    let landlock = match abi {
        0 => "no Landlock".to_owned(),
        6.. => "Landlock ABI 6 or newer (every right the ruleset uses)".to_owned(),
        older => format!("Landlock ABI {older} (older than the ruleset's 6: newer rights are not enforced)"),
    };
    format!("host confinement (serve, mcp, run): on by default, --no-confine turns it off; this kernel: {landlock}")
}

fn plan(needs: &Needs<'_>) -> anyhow::Result<Plan> {
    let mut plan = Plan::new();
    plan.make_dirs(std::env::temp_dir());
    // A cache directory that cannot be created is left out: the sandbox then warns and keeps code in memory, as
    // it does unconfined.
    if let Some(cache) = wasmagent::default_cache_dir().filter(|c| std::fs::create_dir_all(c).is_ok()) {
        plan.write(cache);
    }
    if let Some((manifest, base)) = needs.manifest {
        mounts(&mut plan, manifest, base);
    }
    for file in &needs.read_files {
        plan.read(*file);
    }
    if let Some(log) = needs.audit_log {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open the audit log {}", log.display()))?;
        plan.write(log);
    }
    for dir in &needs.write_dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        plan.write(*dir);
    }
    if let Some(path) = needs.tools {
        tools(&mut plan, path)?;
    }
    if let Some((chromium, profiles)) = &needs.browser {
        plan.chromium(chromium, profiles);
    }
    Ok(plan)
}

fn mounts(plan: &mut Plan, manifest: &CapabilityManifest, base: &Path) {
    for spec in &manifest.allowed_read_paths {
        plan.read(Mount::written_host(spec, base));
    }
    for spec in &manifest.allowed_write_paths {
        plan.write(Mount::written_host(spec, base));
    }
}

/// The tools file, its WebAssembly tools and their mounts, and each upstream MCP server's program: started after
/// Landlock and before the seal, a server inherits the ruleset, so its program, interpreter and libraries must be
/// executable and its directory readable.
fn tools(plan: &mut Plan, path: &Path) -> anyhow::Result<()> {
    let file = ToolsFile::from_path(path)?;
    plan.read(path);
    for tool in &file.wasm {
        plan.read(file.base.join(&tool.module));
        mounts(plan, &tool.manifest, &file.base);
    }
    for server in &file.mcp {
        let Some(command) = &server.command else { continue };
        plan.read(server.cwd.as_ref().map_or_else(|| file.base.clone(), |cwd| file.base.join(cwd)));
        for arg in &server.args {
            let candidate = file.base.join(arg);
            if candidate.exists() {
                plan.read(candidate);
            }
        }
        if let Some(program) = find_program(command, &file.base) {
            for found in [Some(program.clone()), std::fs::canonicalize(&program).ok()].into_iter().flatten() {
                if let Some(dir) = found.parent() {
                    plan.exec(dir);
                    // A virtual environment's root (`<venv>/bin/python` → `<venv>`): its libraries and settings.
                    if let Some(root) = dir.parent().filter(|r| r != &Path::new("/")) {
                        plan.read(root);
                    }
                }
            }
        }
        for libraries in ["/usr/lib", "/usr/lib64", "/lib", "/lib64"] {
            plan.exec(libraries);
        }
    }
    Ok(())
}

/// Where `command` is: a path (relative to the tools file), else the first match on `PATH`.
fn find_program(command: &str, base: &Path) -> Option<PathBuf> {
    if command.contains('/') {
        let path = base.join(command);
        return path.is_file().then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(command)).find(|p| p.is_file())
}
