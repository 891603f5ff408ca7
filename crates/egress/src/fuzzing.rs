//! The bodies of the fuzz targets in `fuzz/` that exercise this crate (URL normalisation, the floor, redirects),
//! shared with the regression tests that replay `fuzz/seeds/` and `fuzz/regressions/` on the stable toolchain. Each
//! takes the fuzzer's bytes and panics when an invariant breaks; a refused input is not a failure. Not part of the
//! crate's API.

use crate::floor::{self, FloorRefusal};
use crate::session::redirect_target;
use crate::target::{Target, TargetHost};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use wasmagent_manifest::HostPattern;

/// `fuzz/fuzz_targets/egress_url.rs`: a URL, optionally followed by a line with a redirect `Location`.
///
/// A URL that parses is http(s) without credentials, normalises idempotently, names its host so that an
/// allow-list entry written from that name matches it, never leaves an IP literal as a name, and, when its host is
/// an address, every other spelling of that address is judged by the floor the same way. A redirect from it goes
/// to an http(s) URL without credentials and never from https to http.
pub fn url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (url, location) = match text.split_once('\n') {
        Some((url, location)) => (url, Some(location)),
        None => (&*text, None),
    };
    let Ok(target) = Target::parse(url) else {
        return;
    };
    check_target(&target);
    let again = Target::parse(target.url.as_str())
        .unwrap_or_else(|e| panic!("the normalised URL {} of {url:?} is refused: {e}", target.url));
    assert_eq!(
        (again.scheme, again.host_text(), again.port),
        (target.scheme, target.host_text(), target.port),
        "{url:?} normalises differently the second time"
    );
    match target.host {
        TargetHost::Ip(ip) => spellings_judged_alike(ip),
        TargetHost::Name(ref name) => {
            assert!(!name.is_empty(), "{url:?} has an empty host name");
            assert!(name.parse::<IpAddr>().is_err(), "{url:?}: the address {name} is treated as a name");
            assert!(!name.ends_with('.') && name.to_ascii_lowercase() == *name, "{url:?}: {name} is not normalised");
        }
    }
    if let Some(location) = location
        && let Ok(next) = redirect_target(&target, location)
    {
        check_target(&next);
        assert!(
            !(target.scheme == "https" && next.scheme == "http"),
            "redirect from {} to {location:?} downgrades to {}",
            target.url,
            next.url
        );
    }
}

/// What every parsed target satisfies, including the match with the allow-list entry written from its own host.
fn check_target(target: &Target) {
    assert!(matches!(target.scheme, "http" | "https") && target.url.scheme() == target.scheme);
    assert!(target.url.username().is_empty() && target.url.password().is_none(), "{} has credentials", target.url);
    let host = target.host_text();
    for entry in [host.clone(), format!("{}://{host}:{}", target.scheme, target.port)] {
        if let Ok(pattern) = entry.parse::<HostPattern>() {
            assert!(
                pattern.matches(target.scheme, &host, target.port),
                "allowed_hosts entry {entry:?} misses {}",
                target.url
            );
        }
    }
}

/// `fuzz/fuzz_targets/egress_floor.rs`: the first 4 bytes as an IPv4 address and the first 16 as an IPv6 one.
///
/// The floor refuses at least what the standard library calls special, an IPv4 address it refuses stays refused
/// (and a metadata endpoint stays a metadata endpoint) in every spelling and every IPv6 wrapping, and the
/// wrappings of a public IPv4 address are refused or public exactly as designed.
pub fn floor(data: &[u8]) {
    if let Some(bytes) = data.get(..4) {
        let v4 = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
        if floor::check(IpAddr::V4(v4)).is_none() {
            assert!(
                !(v4.is_private()
                    || v4.is_loopback()
                    || v4.is_link_local()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.is_unspecified()),
                "{v4} passes the floor"
            );
        }
        spellings_judged_alike(IpAddr::V4(v4));
    }
    if let Some(bytes) = data.get(..16) {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(bytes);
        let v6 = Ipv6Addr::from(octets);
        if floor::check(IpAddr::V6(v6)).is_none() {
            assert!(
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    || v6.to_ipv4().is_some()),
                "{v6} passes the floor"
            );
        }
        spellings_judged_alike(IpAddr::V6(v6));
    }
}

/// Every way a URL can spell `ip` (and, for IPv4, every IPv6 wrapping of it) parses to an address the floor
/// judges at least as strictly as `ip`.
fn spellings_judged_alike(ip: IpAddr) {
    let verdict = floor::check(ip);
    for spelling in spellings(ip) {
        let url = format!("http://{spelling}/");
        let target = Target::parse(&url).unwrap_or_else(|e| panic!("{url} (a spelling of {ip}) is refused: {e}"));
        let TargetHost::Ip(parsed) = target.host else {
            panic!("{url} (a spelling of {ip}) is taken for a host name");
        };
        let parsed_verdict = floor::check(parsed);
        match verdict {
            None => {}
            Some(FloorRefusal::Metadata) => {
                assert_eq!(parsed_verdict, Some(FloorRefusal::Metadata), "{url} hides the metadata endpoint {ip}");
            }
            Some(FloorRefusal::Private(_)) => {
                assert!(parsed_verdict.is_some(), "{url} reaches {parsed}, but the floor refuses {ip}");
            }
        }
    }
    if let IpAddr::V4(v4) = ip {
        let [a, b, c, d] = v4.octets();
        let wrapped = [
            (v4.to_ipv6_mapped(), true),
            (Ipv6Addr::new(0, 0, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])), true),
            (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])), true),
            (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])), false),
            (Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1), false),
        ];
        for (v6, always_refused) in wrapped {
            let wrapped_verdict = floor::check(IpAddr::V6(v6));
            match verdict {
                Some(FloorRefusal::Metadata) => {
                    assert_eq!(wrapped_verdict, Some(FloorRefusal::Metadata), "{v6} hides the metadata endpoint {v4}");
                }
                Some(FloorRefusal::Private(_)) => assert!(wrapped_verdict.is_some(), "{v6} wraps {v4} but passes"),
                None => assert_eq!(wrapped_verdict.is_some(), always_refused, "{v6} wraps the public {v4}"),
            }
            spellings_judged_alike_v6(v6, wrapped_verdict);
        }
    }
}

/// The spellings of an IPv6 address parse back to the same address.
fn spellings_judged_alike_v6(v6: Ipv6Addr, verdict: Option<FloorRefusal>) {
    for spelling in spellings(IpAddr::V6(v6)) {
        let url = format!("https://{spelling}:8443/");
        match Target::parse(&url).map(|t| t.host) {
            Ok(TargetHost::Ip(parsed)) => assert_eq!(floor::check(parsed), verdict, "{url} is judged unlike {v6}"),
            other => panic!("{url} (a spelling of {v6}) parses as {other:?}"),
        }
    }
}

/// How a URL may write `ip`: for IPv4 every WHATWG number form (decimal, octal, hex, short forms, trailing dot,
/// percent-encoding) and the IPv4-mapped IPv6 forms; for IPv6 the compressed, full and upper-case forms.
fn spellings(ip: IpAddr) -> Vec<String> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let n = u32::from(v4);
            vec![
                v4.to_string(),
                format!("{v4}."),
                n.to_string(),
                format!("0x{n:x}"),
                format!("0X{n:08X}"),
                format!("0{n:o}"),
                format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
                format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
                format!("{a}.{b}.{}", u32::from(c) << 8 | u32::from(d)),
                format!("{a}.{}", n & 0x00ff_ffff),
                format!("0x{a:02x}.{b}.0{c:o}.{d}"),
                v4.to_string().bytes().map(|byte| format!("%{byte:02X}")).collect(),
                format!("[::ffff:{v4}]"),
                format!("[::FFFF:{:x}:{:x}]", u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])),
                format!("[0:0:0:0:0:ffff:{v4}]"),
            ]
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            vec![
                format!("[{v6}]"),
                format!("[{}]", s.map(|x| format!("{x:04x}")).join(":")),
                format!("[{}]", s.map(|x| format!("{x:X}")).join(":")),
            ]
        }
    }
}
