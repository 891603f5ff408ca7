//! Learning a manifest from a run: the narrowest additions that would have allowed what the run was refused.
//!
//! [`propose`] reads a finished run's [`RunReport`] and the manifest it ran under, and returns that manifest with an
//! entry added for each denial it can answer: a directory mount for a refused file access (the deepest existing
//! directory that holds it, read-only unless a write was refused), a `scheme://host:port` pattern for a refused
//! host, `tool:NAME` for a refused tool the registry declares, and a limit raised only when that limit stopped the
//! run (or refused a call), to the amount used times [`LIMIT_MARGIN`], never above the operator's ceiling.
//!
//! It never proposes what the floor refuses: hosts are checked with the egress crate's own
//! [`check_destination`](crate::egress::check_destination) (metadata names and addresses, private addresses
//! without an operator exception), without a name lookup. A name that resolves to a private address is proposed
//! and then refused by the floor when the next run uses it; learning that run again says so. Nothing here widens
//! a manifest on its own: the proposal is printed for a person to read and pass to `--manifest`.

use crate::egress::{EgressConfig, Resolve, Resolving, check_destination};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::task::{Context, Poll, Waker};
use wasmagent_kernel::{Denial, Outcome, RunReport};
use wasmagent_manifest::{
    Access, ByteSize, CapabilityManifest, EffectiveManifest, HostPattern, ManifestCeilings, ManifestError,
};
use wasmagent_tools::{ToolRegistry, is_granted};

/// How much a limit that stopped a run is raised: to the amount the run used times this (then capped at the
/// operator's ceiling).
pub const LIMIT_MARGIN: u64 = 2;

/// What learning needs besides the run: the operator's settings the run had.
pub struct LearnOptions<'a> {
    /// The ceilings manifests are held to; no limit is proposed above them.
    pub ceilings: &'a ManifestCeilings,
    /// The operator's egress configuration: a private address is proposed only where it has an exception.
    pub egress: &'a EgressConfig,
    /// The tools the run could have called: `tool:NAME` is proposed only for a declared tool.
    pub tools: &'a ToolRegistry,
    /// The directory relative paths in the given manifest are relative to (the working directory, for flags).
    pub base: &'a Path,
}

/// A proposed manifest and why it differs from the one given.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The given manifest with the proposed entries added. Its relative paths are made absolute.
    pub manifest: CapabilityManifest,
    /// One line per added entry: what it grants and which denial asked for it.
    pub added: Vec<String>,
    /// One line per denial that learning will not answer, and why.
    pub refused: Vec<String>,
    /// One line per denial of something the manifest already allows (the run was refused it for another reason).
    pub already_allowed: Vec<String>,
}

impl Proposal {
    /// Whether the proposal grants nothing the given manifest did not.
    pub fn adds_nothing(&self) -> bool {
        self.added.is_empty()
    }

    /// The proposed manifest as TOML, ready for `--manifest`. Empty lists and tables are left out: they grant
    /// nothing and are the default.
    pub fn to_toml(&self) -> Result<String, LearnError> {
        let mut table = toml::Table::try_from(&self.manifest).map_err(|e| LearnError::Print(e.to_string()))?;
        table.retain(|_, value| match value {
            toml::Value::Array(items) => !items.is_empty(),
            toml::Value::Table(entries) => !entries.is_empty(),
            _ => true,
        });
        toml::to_string(&table).map_err(|e| LearnError::Print(e.to_string()))
    }
}

/// Why no proposal could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LearnError {
    /// The proposed manifest does not resolve (it should: every entry was checked on its own).
    #[error("the proposed manifest is not valid: {0}")]
    Manifest(#[from] ManifestError),
    /// The manifest could not be written as TOML.
    #[error("cannot print the proposed manifest: {0}")]
    Print(String),
}

/// Proposes the narrowest manifest that would have allowed what `report` records as refused. `given` is the
/// manifest as written (file plus flags) and `effective` the manifest the run had.
pub fn propose(
    given: &CapabilityManifest,
    effective: &EffectiveManifest,
    report: &RunReport,
    options: &LearnOptions<'_>,
) -> Result<Proposal, LearnError> {
    let mut learner = Learner::new(given, effective, options);
    for denial in &report.denials {
        learner.denial(denial);
    }
    if report.unlisted.denials > 0 {
        learner.refused.push(format!(
            "{} more denials were counted but not listed in the report; learn again with this proposal to see them",
            report.unlisted.denials
        ));
    }
    learner.limits(report);
    learner.finish()
}

/// The kinds of refused access a person can be asked to approve: those with a manifest entry that allows them.
pub const REQUESTABLE: [&str; 4] = ["fs.read", "fs.write", "net.http", "tool"];

/// A request for one access, written as a run report's denial names it (`fs.read /data/in.csv`,
/// `net.http https://api.example.com/v1`, `tool gh.search`), as the denial [`propose_for_denials`] answers.
pub fn requested_denial(capability: &str) -> Result<Denial, String> {
    let grammar = || {
        format!(
            "a capability is a refused access as the run report names it: one of {} followed by its target, e.g. \
             \"fs.read /data/in.csv\", \"net.http https://api.example.com/v1\", \"tool gh.search\"; got {:?}",
            REQUESTABLE.join(", "),
            capability.chars().take(200).collect::<String>()
        )
    };
    let (kind, target) = capability.trim().split_once(' ').ok_or_else(grammar)?;
    let target = target.trim();
    if !REQUESTABLE.contains(&kind) || target.is_empty() || target.chars().any(char::is_control) {
        return Err(grammar());
    }
    Ok(Denial { capability: kind.to_owned(), target: target.to_owned(), reason: "asked for".to_owned() })
}

/// Adds to `into` the mounts, hosts and grants of `from` it does not list (what approvals add, and nothing else).
pub fn add_grants(into: &mut CapabilityManifest, from: &CapabilityManifest) {
    let lists = [
        (&mut into.allowed_read_paths, &from.allowed_read_paths),
        (&mut into.allowed_write_paths, &from.allowed_write_paths),
        (&mut into.allowed_hosts, &from.allowed_hosts),
        (&mut into.extra_capabilities, &from.extra_capabilities),
    ];
    for (into, from) in lists {
        for entry in from {
            if !into.contains(entry) {
                into.push(entry.clone());
            }
        }
    }
}

/// Proposes the narrowest manifest that would have allowed `denials` alone (no limit is raised): how a request
/// for one refused access, named as its report names it, becomes manifest entries.
pub fn propose_for_denials(
    given: &CapabilityManifest,
    effective: &EffectiveManifest,
    denials: &[Denial],
    options: &LearnOptions<'_>,
) -> Result<Proposal, LearnError> {
    let mut learner = Learner::new(given, effective, options);
    for denial in denials {
        learner.denial(denial);
    }
    learner.finish()
}

/// A directory to mount: where it is on the host and where the guest looked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dir {
    host: PathBuf,
    guest: PathBuf,
    why: String,
}

impl Dir {
    fn spec(&self) -> String {
        if self.host == self.guest {
            self.host.display().to_string()
        } else {
            format!("{}:{}", self.host.display(), self.guest.display())
        }
    }

    fn covers(&self, other: &Dir) -> bool {
        other.host.starts_with(&self.host)
            && other.guest.starts_with(&self.guest)
            && other.host.strip_prefix(&self.host).ok() == other.guest.strip_prefix(&self.guest).ok()
    }
}

struct Learner<'a> {
    effective: &'a EffectiveManifest,
    options: &'a LearnOptions<'a>,
    manifest: CapabilityManifest,
    reads: Vec<Dir>,
    writes: Vec<Dir>,
    hosts: Vec<HostPattern>,
    tools: BTreeSet<String>,
    host_calls_ran_out: bool,
    http_requests_ran_out: bool,
    added: Vec<String>,
    refused: Vec<String>,
    already_allowed: Vec<String>,
}

impl<'a> Learner<'a> {
    fn new(given: &CapabilityManifest, effective: &'a EffectiveManifest, options: &'a LearnOptions<'a>) -> Self {
        let mut manifest = given.clone();
        manifest.rebase_relative_paths(options.base);
        Learner {
            effective,
            options,
            manifest,
            reads: Vec::new(),
            writes: Vec::new(),
            hosts: Vec::new(),
            tools: BTreeSet::new(),
            host_calls_ran_out: false,
            http_requests_ran_out: false,
            added: Vec::new(),
            refused: Vec::new(),
            already_allowed: Vec::new(),
        }
    }

    fn denial(&mut self, denial: &Denial) {
        match denial.capability.as_str() {
            "fs.read" => self.file(denial, Access::ReadOnly),
            "fs.write" => self.file(denial, Access::ReadWrite),
            "net.http" => self.http(denial),
            "tool" => self.tool(denial),
            "host_call" => self.host_calls_ran_out = true,
            // The memory limit is raised from the run's outcome, with the size this denial names.
            "memory" => {}
            "fs" => self.refused.push(format!(
                "{}: more file accesses were refused than the report lists; learn again with this proposal",
                denial.target
            )),
            "net.socket" => self.refused.push(format!(
                "net.socket {}: raw sockets are never granted; reach hosts over HTTP (fetch, urllib, wasi:http)",
                denial.target
            )),
            "handles" => self.refused.push(format!(
                "handles: {} ({}); this is the engine's per-run bound, not a manifest field",
                denial.target, denial.reason
            )),
            other => self.refused.push(format!(
                "{other} {}: learn has no manifest entry for this kind of denial ({})",
                denial.target, denial.reason
            )),
        }
    }

    /// A refused file access: mount the deepest existing directory that holds it.
    fn file(&mut self, denial: &Denial, want: Access) {
        let what = format!("{} {}", denial.capability, denial.target);
        let guest = Path::new(&denial.target);
        if !guest.is_absolute() || guest.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
            self.refused
                .push(format!("{what}: not a plain absolute path, so no mount is proposed ({})", denial.reason));
            return;
        }
        let mount = self
            .effective
            .mounts()
            .iter()
            .filter(|m| guest.starts_with(&m.guest))
            .max_by_key(|m| Path::new(&m.guest).components().count());
        if let Some(mount) = mount
            && (mount.access == Access::ReadWrite || want == Access::ReadOnly)
        {
            self.already_allowed.push(format!(
                "{what}: already inside the mount {}; the run refused it for another reason: {}",
                mount.spec(),
                denial.reason
            ));
            return;
        }
        let (host_root, guest_root) = match mount {
            Some(m) => (m.host.clone(), PathBuf::from(&m.guest)),
            None => (PathBuf::from("/"), PathBuf::from("/")),
        };
        let Ok(inside) = guest.strip_prefix(&guest_root) else { return };
        let host = host_root.join(inside);
        let Some(mut dir) = deepest_directory(&host) else {
            self.refused.push(format!("{what}: no directory on this host holds it"));
            return;
        };
        if dir == Path::new("/") {
            self.refused.push(format!(
                "{what}: the only directory that holds it is the host's root; mounting the whole file system is not \
                 proposed (create the directory, or grant a narrower one by hand)"
            ));
            return;
        }
        let guest_dir = match dir.strip_prefix(&host_root) {
            Ok(rest) => guest_root.join(rest),
            Err(_) => dir.clone(),
        };
        if want == Access::ReadWrite
            && let Ok(real) = std::fs::canonicalize(&dir)
        {
            // Write grants must name the real directory; the guest keeps the path it used.
            dir = real;
        }
        let candidate = Dir { host: dir, guest: guest_dir, why: what.clone() };
        let field = if want == Access::ReadWrite { "allowed_write_paths" } else { "allowed_read_paths" };
        let alone = CapabilityManifest {
            allowed_read_paths: if want == Access::ReadOnly { vec![candidate.spec()] } else { Vec::new() },
            allowed_write_paths: if want == Access::ReadWrite { vec![candidate.spec()] } else { Vec::new() },
            ..CapabilityManifest::default()
        };
        if let Err(e) = alone.resolve(Path::new("/"), self.options.ceilings) {
            self.refused.push(format!("{what}: {field} {} would be refused: {e}", candidate.spec()));
            return;
        }
        if want == Access::ReadWrite { self.writes.push(candidate) } else { self.reads.push(candidate) }
    }

    /// A refused HTTP request: allow its scheme, host and port, unless the floor refuses them.
    fn http(&mut self, denial: &Denial) {
        let what = format!("net.http {}", denial.target);
        if denial.reason.starts_with("max_http_requests") {
            self.http_requests_ran_out = true;
            return;
        }
        let Some((scheme, host, port)) = url_parts(&denial.target) else {
            self.refused.push(format!("{what}: not an http(s) URL a host pattern can name ({})", denial.reason));
            return;
        };
        let Ok(pattern) = format!("{scheme}://{host}:{port}").parse::<HostPattern>() else {
            self.refused.push(format!("{what}: {host} cannot be written as a host pattern ({})", denial.reason));
            return;
        };
        if self.effective.allowed_hosts().iter().any(|p| p.covers(&pattern)) {
            let floor = denial.reason.contains("may not reach");
            let lines = if floor { &mut self.refused } else { &mut self.already_allowed };
            lines.push(format!(
                "{what}: {pattern} is already allowed; the run refused the request for another reason: {}{}",
                denial.reason,
                if denial.reason.contains("may not reach") {
                    " (only the operator can lift the floor, with --allow-private; learn never proposes that)"
                } else {
                    ""
                }
            ));
            return;
        }
        if let Some(reason) = floor_refusal(self.options.egress, &pattern, scheme, &host, port) {
            self.refused.push(format!(
                "{what}: not proposed: {reason}. The floor under allowed_hosts refuses it whatever a manifest says{}",
                if reason.contains("metadata") {
                    "; no exception can lift it"
                } else {
                    "; only the operator can lift it for a private address (--allow-private), learn never does"
                }
            ));
            return;
        }
        if !self.hosts.contains(&pattern) {
            self.added.push(format!("adds host {pattern} ({what} was denied)"));
            self.hosts.push(pattern);
        }
    }

    /// A refused tool call: grant the tool, if the registry declares it.
    fn tool(&mut self, denial: &Denial) {
        let name = denial.target.as_str();
        let what = format!("tool {name}");
        if self.options.tools.get(name).is_none() {
            self.refused.push(format!("{what}: no tool of that name is declared, so granting it would change nothing"));
            return;
        }
        if is_granted(self.effective, name) {
            self.already_allowed.push(format!("{what}: already granted; the run refused it because {}", denial.reason));
            return;
        }
        if self.tools.insert(name.to_owned()) {
            self.added.push(format!("grants tool:{name} (a call to {name} was denied)"));
        }
    }

    /// Raises the limits that stopped the run or refused its calls.
    fn limits(&mut self, report: &RunReport) {
        let usage = &report.usage;
        let ceilings = self.options.ceilings;
        match report.outcome {
            Outcome::Timeout => {
                let current = self.effective.cpu_ms();
                let used = current.max(usage.wall_ms.ceil() as u64);
                if let Some(value) = self.raise("cpu_ms", current, used, ceilings.cpu_ms, "ms") {
                    self.manifest.cpu_ms = Some(value);
                }
            }
            Outcome::MemoryLimit => {
                let current = self.effective.memory_limit_bytes();
                let requested = report
                    .denials
                    .iter()
                    .filter(|d| d.capability == "memory")
                    .filter_map(|d| first_number(&d.target))
                    .max()
                    .unwrap_or(0);
                let used = current.max(usage.memory_peak_bytes).max(requested);
                let ceiling = ceilings.memory_limit_bytes;
                if let Some(value) = self.raise("memory_limit_bytes", current, used, ceiling, "bytes") {
                    self.manifest.memory_limit_bytes = Some(ByteSize(value));
                }
            }
            Outcome::OutputLimit => {
                let current = self.effective.max_output_bytes();
                let used = usage.stdout_bytes.max(usage.stderr_bytes);
                if let Some(value) = self.raise("max_output_bytes", current, used, ceilings.max_output_bytes, "bytes") {
                    self.manifest.max_output_bytes = Some(ByteSize(value));
                }
            }
            Outcome::FuelExhausted => {
                let current = self.effective.fuel().unwrap_or(usage.fuel_consumed);
                let used = current.max(usage.fuel_consumed);
                if let Some(value) = self.raise("fuel", current, used, ceilings.fuel, "units of fuel") {
                    self.manifest.fuel = Some(value);
                }
            }
            Outcome::Ok | Outcome::Error | Outcome::Exit => {}
        }
        if self.host_calls_ran_out {
            let current = self.effective.max_host_calls();
            let used = current.max(usage.host_calls);
            if let Some(value) = self.raise("max_host_calls", current, used, ceilings.max_host_calls, "calls") {
                self.manifest.max_host_calls = Some(value);
            }
        }
        if self.http_requests_ran_out {
            let current = self.effective.max_http_requests();
            let used = current.max(report.http_requests.len() as u64 + report.unlisted.http_requests);
            if let Some(value) = self.raise("max_http_requests", current, used, ceilings.max_http_requests, "requests")
            {
                self.manifest.max_http_requests = Some(value);
            }
        }
    }

    /// The raised value of a limit the run ran out of, or `None` (and why) when it cannot be raised.
    fn raise(&mut self, field: &str, current: u64, used: u64, ceiling: u64, unit: &str) -> Option<u64> {
        if current >= ceiling {
            self.refused.push(format!(
                "{field}: the run ran out at {current} {unit}, which is the operator's ceiling; learn cannot raise it"
            ));
            return None;
        }
        let wanted = used.saturating_mul(LIMIT_MARGIN).max(current.saturating_add(1));
        let value = wanted.min(ceiling);
        let capped = if value < wanted { format!(", capped at the operator ceiling {ceiling}") } else { String::new() };
        self.added.push(format!(
            "raises {field} from {current} to {value}: the run ran out after using {used} {unit} \
             (×{LIMIT_MARGIN} margin{capped})"
        ));
        Some(value)
    }

    fn finish(mut self) -> Result<Proposal, LearnError> {
        let writes = narrowest(std::mem::take(&mut self.writes), &[]);
        let reads = narrowest(std::mem::take(&mut self.reads), &writes);
        for dir in &writes {
            self.upgrade_read_mount(dir);
            self.added.push(format!("adds write access to {} ({} was denied)", describe(dir), dir.why));
            self.manifest.allowed_write_paths.push(dir.spec());
        }
        for dir in &reads {
            self.added.push(format!("adds read access to {} ({} was denied)", describe(dir), dir.why));
            self.manifest.allowed_read_paths.push(dir.spec());
        }
        self.manifest.allowed_hosts.extend(self.hosts.iter().map(ToString::to_string));
        self.manifest.extra_capabilities.extend(self.tools.iter().map(|name| format!("tool:{name}")));
        self.manifest.resolve(self.options.base, self.options.ceilings)?;
        Ok(Proposal {
            manifest: self.manifest,
            added: self.added,
            refused: self.refused,
            already_allowed: self.already_allowed,
        })
    }

    /// A write grant at the guest path of an existing read-only mount replaces it (two mounts may not share a
    /// guest path).
    fn upgrade_read_mount(&mut self, dir: &Dir) {
        let base = self.options.base;
        let ceilings = self.options.ceilings;
        self.manifest.allowed_read_paths.retain(|spec| {
            let alone = CapabilityManifest { allowed_read_paths: vec![spec.clone()], ..CapabilityManifest::default() };
            let guest = alone.resolve(base, ceilings).ok().and_then(|m| m.mounts().first().map(|m| m.guest.clone()));
            guest.is_none_or(|g| Path::new(&g) != dir.guest)
        });
    }
}

fn describe(dir: &Dir) -> String {
    if dir.host == dir.guest {
        dir.host.display().to_string()
    } else {
        format!("{} (seen by the guest as {})", dir.host.display(), dir.guest.display())
    }
}

/// `dirs` without duplicates and without any directory another one (or one of `wider`) already covers.
fn narrowest(dirs: Vec<Dir>, wider: &[Dir]) -> Vec<Dir> {
    let mut kept: Vec<Dir> = Vec::new();
    for dir in &dirs {
        let covered = wider.iter().any(|w| w.covers(dir))
            || dirs.iter().any(|other| other.covers(dir) && other.host != dir.host)
            || kept.iter().any(|k| k.covers(dir));
        if !covered {
            kept.push(dir.clone());
        }
    }
    kept
}

/// `path` itself when it is a directory, else the nearest ancestor that is one.
fn deepest_directory(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| p.is_dir()).map(Path::to_path_buf)
}

/// The scheme, host (as host patterns write it) and port of an http(s) URL.
fn url_parts(text: &str) -> Option<(&'static str, String, u16)> {
    let url = url::Url::parse(text).ok()?;
    let scheme = match url.scheme() {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    let host = match url.host()? {
        url::Host::Domain(name) => name.trim_end_matches('.').to_ascii_lowercase(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => format!("[{ip}]"),
    };
    Some((scheme, host, url.port_or_known_default()?))
}

fn first_number(text: &str) -> Option<u64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A resolver that looks nothing up: learning checks what it can without a name lookup.
struct NoLookup;

impl Resolve for NoLookup {
    fn resolve(&self, _host: &str) -> Resolving {
        Box::pin(std::future::ready(Err(std::io::Error::other("learning does not look names up"))))
    }
}

/// Why the floor refuses `scheme://host:port`, asked of the egress crate itself. Without a name lookup the check
/// never waits, so it is polled once.
fn floor_refusal(config: &EgressConfig, pattern: &HostPattern, scheme: &str, host: &str, port: u16) -> Option<String> {
    let allowed = std::slice::from_ref(pattern);
    let schemes = [scheme];
    let check = check_destination(config, &NoLookup, allowed, &schemes, host, port);
    let mut check = std::pin::pin!(check);
    match check.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Err(error)) if error.denied => Some(error.reason),
        Poll::Ready(_) => None,
        Poll::Pending => Some(format!("{host} could not be checked against the floor")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use wasmagent_kernel::Unlisted;

    fn report(outcome: Outcome, denials: &[(&str, &str, &str)]) -> RunReport {
        let error = wasmagent_kernel::ErrorInfo { kind: wasmagent_kernel::ErrorKind::Trap, message: String::new() };
        let mut report = RunReport::refused("js", error, &EffectiveManifest::deny_all(), "");
        report.outcome = outcome;
        report.denials = denials
            .iter()
            .map(|(c, t, r)| Denial { capability: (*c).into(), target: (*t).into(), reason: (*r).into() })
            .collect();
        report.unlisted = Unlisted::default();
        report
    }

    struct Setup {
        ceilings: ManifestCeilings,
        egress: EgressConfig,
        tools: ToolRegistry,
    }

    impl Setup {
        fn new() -> Self {
            Setup { ceilings: ManifestCeilings::default(), egress: EgressConfig::new(), tools: ToolRegistry::new() }
        }

        fn learn(&self, given: &CapabilityManifest, report: &RunReport) -> Proposal {
            let effective = given.resolve(Path::new("/"), &self.ceilings).unwrap();
            let options = LearnOptions {
                ceilings: &self.ceilings,
                egress: &self.egress,
                tools: &self.tools,
                base: Path::new("/"),
            };
            propose(given, &effective, report, &options).unwrap()
        }
    }

    #[test]
    fn reads_in_nested_directories_mount_the_deepest_directory_holding_each() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        let (a, b, c) = (root.join("data/a.txt"), root.join("data/sub/b.txt"), root.join("other/c.txt"));
        let report = report(
            Outcome::Ok,
            &[
                ("fs.read", a.to_str().unwrap(), "not inside any mount"),
                ("fs.read", b.to_str().unwrap(), "not inside any mount"),
                ("fs.read", c.to_str().unwrap(), "not inside any mount"),
            ],
        );
        let proposal = Setup::new().learn(&CapabilityManifest::default(), &report);
        let expected = [root.join("data"), root.join("other")].map(|p| p.display().to_string());
        assert_eq!(proposal.manifest.allowed_read_paths, expected);
        assert!(proposal.manifest.allowed_write_paths.is_empty());
        assert_eq!(proposal.added.len(), 2, "{:?}", proposal.added);
    }

    #[test]
    fn a_refused_write_in_a_read_only_mount_becomes_a_write_mount_of_that_directory() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir_all(root.join("out")).unwrap();
        let given = CapabilityManifest {
            allowed_read_paths: vec![root.join("out").display().to_string()],
            ..CapabilityManifest::default()
        };
        let target = root.join("out/result.txt");
        let report = report(Outcome::Ok, &[("fs.write", target.to_str().unwrap(), "read-only mount")]);
        let proposal = Setup::new().learn(&given, &report);
        assert!(proposal.manifest.allowed_read_paths.is_empty(), "{:?}", proposal.manifest);
        assert_eq!(proposal.manifest.allowed_write_paths, [root.join("out").display().to_string()]);
    }

    #[test]
    fn hosts_are_proposed_with_scheme_and_port_but_never_under_the_floor() {
        let report = report(
            Outcome::Error,
            &[
                ("net.http", "https://API.example.com/v1?q=1", "allowed_hosts is empty"),
                ("net.http", "https://api.example.com/v2", "allowed_hosts is empty"),
                ("net.http", "http://169.254.169.254/latest/meta-data/", "allowed_hosts is empty"),
                ("net.http", "http://metadata.google.internal/", "allowed_hosts is empty"),
                ("net.http", "http://10.1.2.3:8080/", "allowed_hosts is empty"),
                ("net.http", "http://0x7f.1/", "allowed_hosts is empty"),
            ],
        );
        let proposal = Setup::new().learn(&CapabilityManifest::default(), &report);
        assert_eq!(proposal.manifest.allowed_hosts, ["https://api.example.com:443"]);
        assert_eq!(proposal.refused.len(), 4, "{:#?}", proposal.refused);
        assert!(proposal.refused[0].contains("metadata") && proposal.refused[0].contains("no exception"));
        assert!(proposal.refused[1].contains("metadata"), "{}", proposal.refused[1]);
        assert!(proposal.refused[2].contains("10.0.0.0/8") && proposal.refused[2].contains("--allow-private"));
        assert!(proposal.refused[3].contains("loopback"), "{}", proposal.refused[3]);
    }

    #[test]
    fn a_private_address_is_proposed_only_with_an_operator_exception() {
        let report = report(Outcome::Ok, &[("net.http", "http://127.0.0.1:8080/x", "allowed_hosts is empty")]);
        let mut setup = Setup::new();
        setup.egress.allow_private("127.0.0.1:8080").unwrap();
        let proposal = setup.learn(&CapabilityManifest::default(), &report);
        assert_eq!(proposal.manifest.allowed_hosts, ["http://127.0.0.1:8080"]);
        // Allowed already, but refused for another reason: nothing to add, and it says so.
        let again = Setup::new().learn(&proposal.manifest, &report);
        assert!(again.adds_nothing() && again.already_allowed.len() == 1, "{:?}", again.already_allowed);
        assert!(again.refused.is_empty(), "{:?}", again.refused);
    }

    #[test]
    fn tools_are_granted_only_when_declared() {
        let mut setup = Setup::new();
        let echo = wasmagent_tools::Tool::new("lookup", "", serde_json::json!({"type": "object"}), Ok);
        setup.tools.register(echo).unwrap();
        let report = report(
            Outcome::Error,
            &[("tool", "lookup", "tool lookup is not granted"), ("tool", "ghost", "there is no tool named ghost")],
        );
        let proposal = setup.learn(&CapabilityManifest::default(), &report);
        assert_eq!(proposal.manifest.extra_capabilities, ["tool:lookup"]);
        assert!(proposal.refused[0].contains("ghost"));
    }

    #[test]
    fn a_limit_is_raised_only_when_it_stopped_the_run_and_never_above_the_ceiling() {
        let setup = Setup::new();
        let given = CapabilityManifest { cpu_ms: Some(200), ..CapabilityManifest::default() };
        let mut timed_out = report(Outcome::Timeout, &[]);
        timed_out.usage.wall_ms = 201.5;
        let proposal = setup.learn(&given, &timed_out);
        assert_eq!(proposal.manifest.cpu_ms, Some(404));
        assert!(proposal.added[0].contains("raises cpu_ms from 200 to 404"), "{:?}", proposal.added);

        let near = CapabilityManifest { cpu_ms: Some(50_000), ..CapabilityManifest::default() };
        timed_out.usage.wall_ms = 50_000.0;
        let proposal = setup.learn(&near, &timed_out);
        assert_eq!(proposal.manifest.cpu_ms, Some(60_000));
        assert!(proposal.added[0].contains("capped at the operator ceiling 60000"), "{:?}", proposal.added);
        let at_ceiling = setup.learn(&proposal.manifest, &timed_out);
        assert!(at_ceiling.adds_nothing() && at_ceiling.refused[0].contains("ceiling"));

        let mut loud = report(Outcome::OutputLimit, &[]);
        loud.usage.stdout_bytes = 3_000_000;
        assert_eq!(
            setup.learn(&CapabilityManifest::default(), &loud).manifest.max_output_bytes,
            Some(ByteSize(6_000_000))
        );

        let ok = report(Outcome::Ok, &[]);
        let unchanged = setup.learn(&given, &ok);
        assert!(unchanged.adds_nothing() && unchanged.refused.is_empty());
        assert_eq!(unchanged.manifest, given);
    }

    #[test]
    fn the_proposal_prints_as_a_manifest_that_loads_back() {
        let report = report(Outcome::Ok, &[("net.http", "https://api.example.com/", "empty")]);
        let given = CapabilityManifest {
            env: [("A".to_owned(), "1".to_owned())].into(),
            memory_limit_bytes: Some(ByteSize(64 << 20)),
            ..CapabilityManifest::default()
        };
        let proposal = Setup::new().learn(&given, &report);
        let text = proposal.to_toml().unwrap();
        assert_eq!(CapabilityManifest::from_toml_str(&text).unwrap(), proposal.manifest, "{text}");
    }
}
