//! A guest's URL, parsed and normalised the way browsers do (WHATWG URL): IDNA to punycode, lower case, and IPv4
//! literals in decimal, octal, hex and short forms turned into dotted quads, so that `http://0x7f.1/` is checked
//! as `127.0.0.1`, the address it would reach.

use std::net::IpAddr;
use url::{Host, Url};

/// Where one request goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: Url,
    pub(crate) scheme: &'static str,
    pub(crate) host: TargetHost,
    pub(crate) port: u16,
}

#[derive(Debug, Clone)]
pub(crate) enum TargetHost {
    /// A DNS name, lower-case, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl Target {
    /// Parses `text`, refusing what no request may use: other schemes, userinfo, a missing host.
    pub(crate) fn parse(text: &str) -> Result<Target, String> {
        let url = Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
        Target::from_url(url)
    }

    pub(crate) fn from_url(url: Url) -> Result<Target, String> {
        let scheme = match url.scheme() {
            "http" => "http",
            "https" => "https",
            other => return Err(format!("the {other}: scheme is not allowed; only http and https")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("URLs with credentials (user:password@) are refused; send credentials in a header".into());
        }
        let host = match url.host() {
            // A name of dots only (`http://./`, `https:/./`) is no name: it would match `*` and go to the resolver.
            Some(Host::Domain(name)) if name.trim_end_matches('.').is_empty() => {
                return Err("the URL has no host name".into());
            }
            Some(Host::Domain(name)) => TargetHost::Name(name.trim_end_matches('.').to_ascii_lowercase()),
            Some(Host::Ipv4(ip)) => TargetHost::Ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => TargetHost::Ip(IpAddr::V6(ip)),
            None => return Err("the URL has no host".into()),
        };
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        Ok(Target { url, scheme, host, port })
    }

    /// The host as allow-list patterns and exceptions are written: a name, a dotted quad or `[IPv6]`.
    pub(crate) fn host_text(&self) -> String {
        match &self.host {
            TargetHost::Name(name) => name.clone(),
            TargetHost::Ip(IpAddr::V4(ip)) => ip.to_string(),
            TargetHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> String {
        Target::parse(text).unwrap().host_text()
    }

    #[test]
    fn every_ipv4_spelling_becomes_a_dotted_quad() {
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://127.0.1/",
            "http://0x7F.0.0.0x1/",
        ] {
            assert_eq!(host(url), "127.0.0.1", "{url}");
        }
        assert_eq!(host("http://[::ffff:7f00:1]/"), "[::ffff:127.0.0.1]");
    }

    #[test]
    fn names_are_lower_cased_punycoded_and_lose_the_trailing_dot() {
        assert_eq!(host("https://API.Example.COM./x"), "api.example.com");
        assert_eq!(host("https://bücher.de/"), "xn--bcher-kva.de");
        assert_eq!(Target::parse("https://example.com/").unwrap().port, 443);
        assert_eq!(Target::parse("http://example.com:8080/").unwrap().port, 8080);
    }

    #[test]
    fn credentials_other_schemes_and_garbage_are_refused() {
        for url in [
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "not a url",
            "http://",
            "http://./",
            "https:/./x",
            "http://.../",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }
}
