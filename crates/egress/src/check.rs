//! The egress decision for a connection that does not go through [`crate::EgressSession`]: a client outside this
//! crate (a browser's proxy) names a host and port, and gets back the addresses it may connect to, or why not.
//!
//! The rules are the session's: the manifest's `allowed_hosts`, the host normalised as a WHATWG URL would be, metadata
//! names refused, the name resolved once with the egress resolver, every address checked against the floor (or an
//! operator exception). The caller must connect only to the addresses returned.

use crate::config::EgressConfig;
use crate::floor::{self, FloorRefusal};
use crate::resolver::Resolve;
use crate::target::{Target, TargetHost};
use std::net::{IpAddr, SocketAddr};
use wasmagent_manifest::HostPattern;

/// Why a destination may not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DestinationError {
    /// True when policy refused it (a `net.http` denial); false when it could not be checked (the name does not
    /// resolve).
    pub denied: bool,
    /// What went wrong, for the caller's error and the run report.
    pub reason: String,
}

impl DestinationError {
    fn denied(reason: impl Into<String>) -> Self {
        DestinationError { denied: true, reason: reason.into() }
    }
}

/// A host and port checked against the manifest's allow-list and the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDestination {
    /// The host as allow-list patterns are written (a lower-case name, a dotted quad or `[IPv6]`).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The only addresses a connection may use.
    pub addresses: Vec<SocketAddr>,
}

/// Checks a connection to `host:port` for a client of one of `schemes` (`"http"`, `"https"`; a tunnel that may
/// carry either passes when any of them is allowed): `host` is the host as the client wrote it (a name, an IPv4
/// address in any spelling, or `[IPv6]`), normalised the way a URL's host is before it is matched. Names are
/// resolved exactly once, with `resolver`.
pub async fn check_destination(
    config: &EgressConfig,
    resolver: &dyn Resolve,
    allowed: &[HostPattern],
    schemes: &[&str],
    host: &str,
    port: u16,
) -> Result<CheckedDestination, DestinationError> {
    // Only a host may be written here: anything that would make the URL below mean something else is refused.
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_control() || b" /\\@?#%".contains(&b)) {
        return Err(DestinationError::denied(format!("{host:?} is not a host name or address")));
    }
    let target = Target::parse(&format!("http://{host}:{port}/")).map_err(DestinationError::denied)?;
    let host = target.host_text();
    if allowed.is_empty() {
        return Err(DestinationError::denied("the manifest allows no network access (allowed_hosts is empty)"));
    }
    if !schemes.iter().any(|scheme| allowed.iter().any(|p| p.matches(scheme, &host, port))) {
        return Err(DestinationError::denied(format!("{host}:{port} is not in allowed_hosts")));
    }
    let addresses = resolve_checked(config, resolver, &target).await?;
    Ok(CheckedDestination { host, port, addresses })
}

/// The addresses `target` may connect to: every address of its host must pass the floor (or an operator exception).
async fn resolve_checked(
    config: &EgressConfig,
    resolver: &dyn Resolve,
    target: &Target,
) -> Result<Vec<SocketAddr>, DestinationError> {
    let host = target.host_text();
    let ips: Vec<IpAddr> = match &target.host {
        TargetHost::Ip(ip) => vec![*ip],
        TargetHost::Name(name) => {
            if floor::is_metadata_name(name) {
                return Err(DestinationError::denied(format!(
                    "{name} is a cloud metadata service, which is never reachable"
                )));
            }
            let failed = |reason| DestinationError { denied: false, reason };
            match resolver.resolve(name).await {
                Ok(ips) if !ips.is_empty() => ips,
                Ok(_) => return Err(failed(format!("{name} has no addresses"))),
                Err(e) => return Err(failed(format!("cannot resolve {name}: {e}"))),
            }
        }
    };
    for ip in &ips {
        let refusal = match floor::check(*ip) {
            None => continue,
            Some(FloorRefusal::Private(_)) if config.excepts(&host, *ip, target.port) => continue,
            Some(refusal) => refusal,
        };
        return Err(DestinationError::denied(match &target.host {
            TargetHost::Ip(_) => format!("{ip} is {}", refusal.describe()),
            TargetHost::Name(name) => format!("{name} resolves to {ip}: {}", refusal.describe()),
        }));
    }
    Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, target.port)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StaticResolver;

    fn patterns(list: &[&str]) -> Vec<HostPattern> {
        // `*` stands for the operator's "any public host", which a manifest cannot write.
        list.iter().map(|p| if *p == "*" { HostPattern::any_public() } else { p.parse().unwrap() }).collect()
    }

    fn check(config: &EgressConfig, allowed: &[&str], host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let resolver = StaticResolver::new()
            .answer("public.test", vec![vec!["93.184.216.34".parse().unwrap()]])
            .answer("rebind.test", vec![vec!["127.0.0.1".parse().unwrap()]]);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let allowed = patterns(allowed);
        runtime
            .block_on(check_destination(config, &resolver, &allowed, &["http", "https"], host, port))
            .map(|d| d.addresses)
            .map_err(|e| format!("{}: {}", if e.denied { "denied" } else { "failed" }, e.reason))
    }

    #[test]
    fn allowed_public_hosts_get_their_checked_addresses() {
        let config = EgressConfig::new();
        assert_eq!(
            check(&config, &["public.test"], "PUBLIC.test.", 443).unwrap(),
            ["93.184.216.34:443".parse().unwrap()]
        );
        assert!(check(&config, &["https://public.test"], "public.test", 443).is_ok());
        assert!(check(&config, &["https://public.test"], "public.test", 8443).unwrap_err().contains("not in allowed"));
        assert!(check(&config, &[], "public.test", 443).unwrap_err().contains("allows no network"));
    }

    #[test]
    fn the_floor_and_exceptions_apply() {
        let mut config = EgressConfig::new();
        let err = check(&config, &["rebind.test"], "rebind.test", 80).unwrap_err();
        assert!(err.starts_with("denied: rebind.test resolves to 127.0.0.1: a loopback"), "{err}");
        let err = check(&config, &["127.0.0.1"], "0x7f.1", 80).unwrap_err();
        assert!(err.starts_with("denied: 127.0.0.1 is a loopback"), "{err}");
        let err = check(&config, &["169.254.169.254"], "169.254.169.254", 80).unwrap_err();
        assert!(err.contains("metadata"), "{err}");
        assert!(
            check(&config, &["metadata.google.internal"], "metadata.google.internal", 80)
                .unwrap_err()
                .contains("metadata")
        );
        config.allow_private("127.0.0.1:8080").unwrap();
        assert_eq!(check(&config, &["127.0.0.1"], "127.0.0.1", 8080).unwrap(), ["127.0.0.1:8080".parse().unwrap()]);
        assert!(check(&config, &["127.0.0.1"], "127.0.0.1", 8081).unwrap_err().starts_with("denied"));
        assert!(check(&config, &["127.0.0.2"], "127.0.0.2", 8080).unwrap_err().starts_with("denied"));
    }

    #[test]
    fn hosts_that_are_not_hosts_are_refused() {
        let config = EgressConfig::new();
        for host in ["", "a/b", "user@public.test", "public.test#x", "a b", "x\r\n"] {
            assert!(check(&config, &["*"], host, 80).unwrap_err().starts_with("denied"), "{host:?}");
        }
        assert!(check(&config, &["public.test"], "unknown.test", 80).unwrap_err().starts_with("denied"));
        assert!(check(&config, &["*.test"], "unknown.test", 80).unwrap_err().starts_with("failed: cannot resolve"));
    }
}
