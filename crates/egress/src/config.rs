//! The operator's side of egress: private hosts and networks that may be reached, and secrets bound to hosts.
//! This is server or CLI configuration, never part of a guest's manifest.

use crate::floor::{self, FloorRefusal};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use wasmagent_manifest::HostPattern;

/// Why an egress configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress configuration: {field}: {message}")]
pub struct ConfigError {
    field: String,
    message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { field: field.into(), message: message.into() }
    }
}

/// Operator egress configuration: exceptions to the floor and named secrets. Empty by default: no private address
/// is reachable and no secret exists.
#[derive(Debug, Clone, Default)]
pub struct EgressConfig {
    exceptions: Vec<Exception>,
    secrets: Vec<Secret>,
}

/// A private host or network the operator allows guests to reach (the manifest's allow-list still applies).
#[derive(Debug, Clone)]
struct Exception {
    target: ExceptionTarget,
    port: Option<u16>,
}

#[derive(Debug, Clone)]
enum ExceptionTarget {
    Name(String),
    Net(IpNet),
}

/// A value the host substitutes for `{{secret:NAME}}` in request headers, only for requests to its hosts.
#[derive(Clone)]
pub(crate) struct Secret {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) hosts: Vec<HostPattern>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret").field("name", &self.name).field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

/// The file form (`--egress-config FILE`, TOML):
///
/// ```toml
/// allow_private = ["127.0.0.1:8080", "10.20.0.0/16", "search.internal:9200"]
/// [secrets.GITHUB_TOKEN]
/// env = "GITHUB_TOKEN"          # or file = "github-token.txt" (relative to this file)
/// hosts = ["api.github.com"]
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    allow_private: Vec<String>,
    #[serde(default)]
    secrets: BTreeMap<String, SecretFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFile {
    env: Option<String>,
    file: Option<PathBuf>,
    hosts: Vec<String>,
}

impl EgressConfig {
    /// No exceptions, no secrets.
    pub fn new() -> Self {
        EgressConfig::default()
    }

    /// Reads the TOML form (see the type's documentation); relative secret files are relative to `base`.
    pub fn from_toml_str(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::new("file", e.to_string().trim_end()))?;
        let mut config = EgressConfig::new();
        for spec in &file.allow_private {
            config.allow_private(spec)?;
        }
        for (name, secret) in file.secrets {
            let field = format!("secrets.{name}");
            let value = match (&secret.env, &secret.file) {
                (Some(var), None) => std::env::var(var).map_err(|_| {
                    ConfigError::new(&field, format!("environment variable {var} is not set (or not UTF-8)"))
                })?,
                (None, Some(path)) => {
                    let path = base.join(path);
                    std::fs::read_to_string(&path)
                        .map_err(|e| ConfigError::new(&field, format!("cannot read {}: {e}", path.display())))?
                        .trim_end_matches(['\n', '\r'])
                        .to_owned()
                }
                _ => return Err(ConfigError::new(&field, "give exactly one of `env` or `file`")),
            };
            let hosts: Vec<&str> = secret.hosts.iter().map(String::as_str).collect();
            config.secret(&name, value, &hosts)?;
        }
        Ok(config)
    }

    /// Reads a TOML file.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read: {e}")))?;
        Self::from_toml_str(&text, path.parent().unwrap_or(Path::new(".")))
    }

    /// The operator's configuration as front ends take it: an optional TOML file, then `--allow-private` entries.
    pub fn load(file: Option<&Path>, allow_private: &[String]) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_path(path)?,
            None => Self::new(),
        };
        for spec in allow_private {
            config.allow_private(spec)?;
        }
        Ok(config)
    }

    /// Lets guests reach a private host or network that the floor would refuse: `IP`, `IP:PORT`, `[IPv6]:PORT`,
    /// `CIDR`, `NAME` or `NAME:PORT`. The manifest's `allowed_hosts` must still list it. Metadata endpoints can
    /// never be excepted.
    pub fn allow_private(&mut self, spec: &str) -> Result<&mut Self, ConfigError> {
        let field = format!("allow_private {spec:?}");
        let exception = parse_exception(spec).map_err(|m| ConfigError::new(&field, m))?;
        match &exception.target {
            ExceptionTarget::Net(net) if floor::check(net.addr()) == Some(FloorRefusal::Metadata) => {
                return Err(ConfigError::new(field, "cloud metadata endpoints can never be reached"));
            }
            ExceptionTarget::Name(name) if floor::is_metadata_name(name) => {
                return Err(ConfigError::new(field, "cloud metadata endpoints can never be reached"));
            }
            _ => {}
        }
        self.exceptions.push(exception);
        Ok(self)
    }

    /// Adds a secret: guests write `{{secret:NAME}}` in a request header and the host substitutes `value` when,
    /// and only when, the request goes to one of `hosts` (host patterns, as in `allowed_hosts`).
    pub fn secret(&mut self, name: &str, value: String, hosts: &[&str]) -> Result<&mut Self, ConfigError> {
        let field = format!("secrets.{name}");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') {
            return Err(ConfigError::new(field, "secret names are letters, digits, `_`, `-` and `.`"));
        }
        if value.len() < 4 || value.contains(['\r', '\n', '\0']) {
            return Err(ConfigError::new(field, "the value must have at least 4 characters and no line breaks"));
        }
        if hosts.is_empty() {
            return Err(ConfigError::new(field, "a secret must be bound to at least one host"));
        }
        let hosts = hosts
            .iter()
            .map(|h| h.parse::<HostPattern>().map_err(|e| ConfigError::new(&field, e.to_string())))
            .collect::<Result<_, _>>()?;
        self.secrets.retain(|s| s.name != name);
        self.secrets.push(Secret { name: name.to_owned(), value, hosts });
        Ok(self)
    }

    pub(crate) fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    /// Whether an exception lets a request to `host` (as written in the URL, normalised) on `port` reach `ip`.
    pub(crate) fn excepts(&self, host: &str, ip: IpAddr, port: u16) -> bool {
        self.exceptions.iter().any(|e| {
            let target_ok = match &e.target {
                ExceptionTarget::Name(name) => name == host,
                ExceptionTarget::Net(net) => net.contains(&ip),
            };
            target_ok && e.port.is_none_or(|p| p == port)
        })
    }
}

fn parse_exception(spec: &str) -> Result<Exception, String> {
    if let Ok(net) = spec.parse::<IpNet>() {
        return Ok(Exception { target: ExceptionTarget::Net(net.trunc()), port: None });
    }
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(Exception { target: ExceptionTarget::Net(IpNet::from(addr.ip())), port: Some(addr.port()) });
    }
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Ok(Exception { target: ExceptionTarget::Net(IpNet::from(ip)), port: None });
    }
    let (name, port) = match spec.rsplit_once(':') {
        Some((name, port)) => {
            let port: u16 = port.parse().ok().filter(|&p| p > 0).ok_or("the port must be a number from 1 to 65535")?;
            (name, Some(port))
        }
        None => (spec, None),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err("write an IP address, IP:PORT, [IPv6]:PORT, a CIDR network, a host name or NAME:PORT".into());
    }
    Ok(Exception { target: ExceptionTarget::Name(name), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_cover_exactly_what_they_name() {
        let mut config = EgressConfig::new();
        config.allow_private("127.0.0.1:8080").unwrap();
        config.allow_private("10.20.0.0/16").unwrap();
        config.allow_private("search.internal").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(config.excepts("127.0.0.1", ip("127.0.0.1"), 8080));
        assert!(!config.excepts("127.0.0.1", ip("127.0.0.1"), 8081));
        assert!(config.excepts("x", ip("10.20.3.4"), 1));
        assert!(!config.excepts("x", ip("10.21.0.1"), 1));
        assert!(config.excepts("search.internal", ip("10.9.9.9"), 9200));
        assert!(!config.excepts("other.internal", ip("10.9.9.9"), 9200));
    }

    #[test]
    fn metadata_endpoints_cannot_be_excepted_and_bad_specs_are_refused() {
        let mut config = EgressConfig::new();
        assert!(config.allow_private("169.254.169.254").is_err());
        assert!(config.allow_private("169.254.169.254:80").is_err());
        assert!(config.allow_private("metadata.google.internal").is_err());
        assert!(config.allow_private("fd00:ec2::254").is_err());
        assert!(config.allow_private("bad host").is_err());
        assert!(config.allow_private("host:0").is_err());
    }

    #[test]
    fn secrets_need_hosts_and_a_real_value() {
        let mut config = EgressConfig::new();
        assert!(config.secret("T", "abc".into(), &["api.example.com"]).is_err());
        assert!(config.secret("T", "abcdef".into(), &[]).is_err());
        assert!(config.secret("T", "abcdef".into(), &["*"]).is_err());
        assert!(config.secret("bad name", "abcdef".into(), &["a.com"]).is_err());
        config.secret("T", "abcdef".into(), &["api.example.com"]).unwrap();
        assert!(!format!("{config:?}").contains("abcdef"), "Debug must not print secret values");
    }

    #[test]
    fn the_file_form_reads_exceptions_and_secrets() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("wasmagent-egress-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cr3t-value\n").unwrap();
        let text = format!(
            "allow_private = [\"127.0.0.1\"]\n[secrets.TOKEN]\nfile = {:?}\nhosts = [\"api.example.com\"]\n",
            path.display().to_string()
        );
        let config = EgressConfig::from_toml_str(&text, &dir).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(config.secrets()[0].value, "s3cr3t-value");
        assert!(EgressConfig::from_toml_str("allow_privat = []", &dir).is_err());
        assert!(EgressConfig::from_toml_str("[secrets.X]\nhosts = [\"a.com\"]", &dir).is_err());
    }
}
