use serde::{Serialize, Serializer};
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// One entry of `allowed_hosts`, parsed.
///
/// Grammar: `[scheme://]host[:port]` where `scheme` is `http` or `https`, and `host` is a DNS name
/// (`example.com`: that host only), a wildcard (`*.example.com`: any subdomain, never the apex), an IPv4 address
/// or a bracketed IPv6 address. Names are compared after IDNA normalisation (punycode, lower case) with any
/// trailing dot removed. A bare `*` is refused:
/// "any host" is an operator decision, not a guest manifest's. Paths, queries and userinfo are refused.
///
/// ```
/// use wasmagent_manifest::HostPattern;
/// let p: HostPattern = "https://*.Example.com.:8443".parse().unwrap();
/// assert_eq!(p.to_string(), "https://*.example.com:8443");
/// assert!(p.matches("https", "api.example.com", 8443));
/// assert!(!p.matches("https", "example.com", 8443));
/// assert!(!p.matches("http", "api.example.com", 8443));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    scheme: Option<Scheme>,
    host: HostMatch,
    port: Option<u16>,
}

/// The URL schemes a host pattern may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http`
    Http,
    /// `https`
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostMatch {
    /// Every host (still under the egress floor); only when the operator's ceilings allow it.
    AnyPublic,
    Exact(String),
    SubdomainsOf(String),
}

/// Why a host pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern {input:?}: {reason}")]
pub struct HostPatternError {
    input: String,
    reason: String,
}

impl FromStr for HostPattern {
    type Err = HostPatternError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason: &str| HostPatternError { input: input.to_owned(), reason: reason.to_owned() };
        if input.is_empty() || input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(error("it must be non-empty and contain no whitespace"));
        }
        let (scheme, rest) = match input.split_once("://") {
            Some((s, rest)) => match s.to_ascii_lowercase().as_str() {
                "http" => (Some(Scheme::Http), rest),
                "https" => (Some(Scheme::Https), rest),
                _ => return Err(error("the scheme must be http or https")),
            },
            None => (None, input),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(error("write only [scheme://]host[:port]; paths, queries and userinfo are not allowed"));
        }
        let (host, port) = split_port(rest).map_err(|r| error(&r))?;
        let host = host.strip_suffix('.').unwrap_or(host);
        // IDNA (UTS 46), as URLs are normalised: `Bücher.de` becomes `xn--bcher-kva.de`, and ASCII is lower-cased.
        let host = match host.strip_prefix("*.") {
            Some(domain) => format!("*.{}", to_ascii(domain).map_err(|r| error(&r))?),
            None if host.starts_with('[') || host == "*" => host.to_ascii_lowercase(),
            None => to_ascii(host).map_err(|r| error(&r))?,
        };
        if host == "*" {
            return Err(error(
                "a bare `*` would allow every host; list the hosts, or use `*.domain` for subdomains (only an operator can allow any public host)",
            ));
        }
        let host = if let Some(domain) = host.strip_prefix("*.") {
            validate_dns_name(domain).map_err(|r| error(&r))?;
            HostMatch::SubdomainsOf(domain.to_owned())
        } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let addr: Ipv6Addr = v6.parse().map_err(|_| error("not a valid IPv6 address"))?;
            HostMatch::Exact(format!("[{addr}]"))
        } else {
            validate_dns_name(&host).map_err(|r| error(&r))?;
            HostMatch::Exact(host)
        };
        Ok(HostPattern { scheme, host, port })
    }
}

fn split_port(rest: &str) -> Result<(&str, Option<u16>), String> {
    let port_sep = if rest.starts_with('[') {
        rest.find(']').map(|end| end + 1).filter(|&i| i < rest.len())
    } else {
        rest.rfind(':')
    };
    match port_sep {
        Some(i) if rest.as_bytes().get(i) == Some(&b':') => {
            let port: u16 = rest[i + 1..].parse().map_err(|_| "the port must be a number from 1 to 65535")?;
            if port == 0 {
                return Err("the port must be a number from 1 to 65535".into());
            }
            Ok((&rest[..i], Some(port)))
        }
        Some(_) => Err("unexpected text after the IPv6 address".into()),
        None => Ok((rest, None)),
    }
}

fn to_ascii(name: &str) -> Result<String, String> {
    idna::domain_to_ascii(name).map_err(|_| format!("{name:?} is not a valid internationalised domain name"))
}

fn validate_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a host name must have 1 to 253 characters".into());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("{label:?} is not a valid DNS label"));
        }
    }
    Ok(())
}

impl HostPattern {
    /// The pattern `*`: any public host. Manifests may use it only when the operator allows it
    /// ([`ManifestCeilings::allow_any_public_host`](crate::ManifestCeilings::allow_any_public_host)).
    pub fn any_public() -> Self {
        HostPattern { scheme: None, host: HostMatch::AnyPublic, port: None }
    }

    /// Whether a request to `scheme://host:port` matches this pattern. `host` must already be normalised
    /// (lower-case, no trailing dot; IPv6 in brackets).
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = match self.scheme {
            None => true,
            Some(s) => s.as_str() == scheme,
        };
        let port_ok = match self.port {
            Some(p) => p == port,
            None => match self.scheme {
                Some(s) => s.default_port() == port,
                None => true,
            },
        };
        let host_ok = match &self.host {
            HostMatch::AnyPublic => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::SubdomainsOf(domain) => {
                host.strip_suffix(domain.as_str()).is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
            }
        };
        scheme_ok && port_ok && host_ok
    }
}

impl HostPattern {
    /// Whether every request `other` allows is also allowed by `self` (how a server checks that a request's
    /// manifest only narrows its maximum manifest).
    pub fn covers(&self, other: &HostPattern) -> bool {
        let scheme_ok = match (self.scheme, other.scheme) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        let ports = |p: &HostPattern| p.port.or_else(|| p.scheme.map(Scheme::default_port));
        let port_ok = match (ports(self), ports(other)) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        let host_ok = match (&self.host, &other.host) {
            (HostMatch::AnyPublic, _) => true,
            (_, HostMatch::AnyPublic) => false,
            (HostMatch::Exact(a), HostMatch::Exact(b)) => a == b,
            (HostMatch::Exact(_), HostMatch::SubdomainsOf(_)) => false,
            (HostMatch::SubdomainsOf(d), HostMatch::Exact(h)) => {
                h.strip_suffix(d.as_str()).is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
            }
            (HostMatch::SubdomainsOf(d), HostMatch::SubdomainsOf(e)) => {
                e == d || e.strip_suffix(d.as_str()).is_some_and(|prefix| prefix.ends_with('.'))
            }
        };
        scheme_ok && port_ok && host_ok
    }
}

impl HostPattern {
    /// A few `(scheme, host, port)` requests this pattern matches, for checking `matches` against `covers`.
    pub(crate) fn example_requests(&self) -> Vec<(&'static str, String, u16)> {
        let schemes = match self.scheme {
            Some(s) => vec![s],
            None => vec![Scheme::Http, Scheme::Https],
        };
        let hosts = match &self.host {
            HostMatch::AnyPublic => vec!["example.com".to_owned(), "93.184.216.34".to_owned()],
            HostMatch::Exact(h) => vec![h.clone()],
            HostMatch::SubdomainsOf(d) => vec![format!("a.{d}"), format!("a.b.{d}")],
        };
        let mut requests = Vec::new();
        for scheme in schemes {
            let ports = match (self.port, self.scheme) {
                (Some(p), _) => vec![p],
                (None, Some(s)) => vec![s.default_port()],
                (None, None) => vec![scheme.default_port(), 8080],
            };
            for host in &hosts {
                requests.extend(ports.iter().map(|&port| (scheme.as_str(), host.clone(), port)));
            }
        }
        requests
    }
}

impl Scheme {
    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.scheme {
            write!(f, "{}://", s.as_str())?;
        }
        match &self.host {
            HostMatch::AnyPublic => f.write_str("*")?,
            HostMatch::Exact(h) => f.write_str(h)?,
            HostMatch::SubdomainsOf(d) => write!(f, "*.{d}")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HostPattern, HostPatternError> {
        s.parse()
    }

    #[test]
    fn exact_host_matches_only_itself_on_any_port_and_scheme() {
        let p = parse("Example.COM.").unwrap();
        assert_eq!(p.to_string(), "example.com");
        assert!(p.matches("https", "example.com", 443));
        assert!(p.matches("http", "example.com", 8080));
        assert!(!p.matches("https", "api.example.com", 443));
        assert!(!p.matches("https", "example.com.evil.net", 443));
        assert!(!p.matches("https", "notexample.com", 443));
    }

    #[test]
    fn covers_is_subset_of_what_each_pattern_allows() {
        let covers = |a: &str, b: &str| parse(a).unwrap().covers(&parse(b).unwrap());
        assert!(covers("example.com", "https://example.com"));
        assert!(covers("*.example.com", "api.example.com:8443"));
        assert!(covers("*.example.com", "*.api.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("https://example.com", "example.com"));
        assert!(covers("https://example.com", "https://example.com:443"));
        assert!(!covers("https://example.com", "example.com:443"), "that also allows http on port 443");
        assert!(!covers("example.com:8443", "example.com"));
        assert!(HostPattern::any_public().covers(&parse("a.b").unwrap()));
        assert!(!parse("a.b").unwrap().covers(&HostPattern::any_public()));
    }

    #[test]
    fn international_names_are_compared_in_punycode() {
        assert_eq!(parse("Bücher.DE").unwrap().to_string(), "xn--bcher-kva.de");
        assert_eq!(parse("*.bücher.de").unwrap().to_string(), "*.xn--bcher-kva.de");
        assert!(parse("xn--bcher-kva.de").unwrap().matches("https", "xn--bcher-kva.de", 443));
    }

    #[test]
    fn wildcard_matches_subdomains_but_not_the_apex() {
        let p = parse("*.example.com").unwrap();
        assert!(p.matches("https", "a.example.com", 443));
        assert!(p.matches("https", "a.b.example.com", 443));
        assert!(!p.matches("https", "example.com", 443));
        assert!(!p.matches("https", "badexample.com", 443));
        assert!(!p.matches("https", ".example.com", 443));
    }

    #[test]
    fn scheme_and_port_restrict_the_match() {
        let p = parse("https://example.com").unwrap();
        assert!(p.matches("https", "example.com", 443));
        assert!(!p.matches("https", "example.com", 8443));
        assert!(!p.matches("http", "example.com", 80));
        let p = parse("example.com:8443").unwrap();
        assert!(p.matches("https", "example.com", 8443));
        assert!(!p.matches("https", "example.com", 443));
        let p = parse("[::1]:8080").unwrap();
        assert_eq!(p.to_string(), "[::1]:8080");
        assert!(p.matches("http", "[::1]", 8080));
    }

    #[test]
    fn refuses_star_paths_userinfo_bad_ports_and_schemes() {
        for bad in [
            "*",
            "",
            "ftp://example.com",
            "example.com/path",
            "user@example.com",
            "example.com:0",
            "example.com:99999",
            "example.com:",
            "exa mple.com",
            "-bad.com",
            "*.",
            "[::1",
            "[zz]",
            "a..b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
