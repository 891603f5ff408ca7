//! The floor under every allow-list: addresses no manifest can reach. Operator exceptions may lift it for named
//! private hosts and networks, never for the cloud metadata endpoints.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names of metadata services that are refused whatever they resolve to.
pub const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata.goog", "metadata"];

/// Metadata endpoints: refused always, even inside an operator exception.
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(168, 63, 129, 16),   // Azure wire server
];
const METADATA_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)]; // AWS IMDS over IPv6

/// Why the floor refuses an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorRefusal {
    /// A cloud metadata endpoint: never reachable, not even through an operator exception.
    Metadata,
    /// A private, local or special-purpose range (the text names it). An operator exception can lift this.
    Private(&'static str),
}

impl FloorRefusal {
    /// The reason as the run report shows it.
    pub fn describe(self) -> String {
        match self {
            FloorRefusal::Metadata => "a cloud metadata endpoint, which is never reachable".into(),
            FloorRefusal::Private(range) => format!("{range}, which guest code may not reach"),
        }
    }
}

/// Why `ip` may not be reached, or `None` for a public address.
pub fn check(ip: IpAddr) -> Option<FloorRefusal> {
    match ip {
        IpAddr::V4(v4) => check_v4(v4),
        IpAddr::V6(v6) => check_v6(v6),
    }
}

fn check_v4(ip: Ipv4Addr) -> Option<FloorRefusal> {
    if METADATA_V4.contains(&ip) {
        return Some(FloorRefusal::Metadata);
    }
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        (0, _, _) => "an unspecified address (0.0.0.0/8)",
        (127, _, _) => "a loopback address (127.0.0.0/8)",
        (10, _, _) => "a private address (10.0.0.0/8)",
        (172, 16..=31, _) => "a private address (172.16.0.0/12)",
        (192, 168, _) => "a private address (192.168.0.0/16)",
        (169, 254, _) => "a link-local address (169.254.0.0/16)",
        (100, 64..=127, _) => "a carrier-grade NAT address (100.64.0.0/10)",
        (192, 0, 0) => "an IETF protocol address (192.0.0.0/24)",
        (198, 18..=19, _) => "a benchmarking address (198.18.0.0/15)",
        (224..=239, _, _) => "a multicast address (224.0.0.0/4)",
        _ if ip.is_broadcast() => "the broadcast address",
        (240..=255, _, _) => "a reserved address (240.0.0.0/4)",
        _ => return None,
    };
    Some(FloorRefusal::Private(range))
}

fn check_v6(ip: Ipv6Addr) -> Option<FloorRefusal> {
    if METADATA_V6.contains(&ip) {
        return Some(FloorRefusal::Metadata);
    }
    let segments = ip.segments();
    let embedded_v4 = || {
        let [_, _, _, _, _, _, hi, lo] = segments;
        Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
    };
    // Addresses that carry an IPv4 address are judged by it first, so a metadata endpoint keeps its stronger
    // refusal whatever its wrapping.
    if ip.to_ipv4_mapped().is_some() || segments[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        if check_v4(embedded_v4()) == Some(FloorRefusal::Metadata) {
            return Some(FloorRefusal::Metadata);
        }
        return Some(FloorRefusal::Private("an IPv4-mapped or IPv4-compatible IPv6 address"));
    }
    if segments[..6] == [0, 0, 0, 0, 0xffff, 0] {
        // IPv4-translated (SIIT, RFC 2765 and 6145): `::ffff:0:a.b.c.d` reaches a.b.c.d through a translator.
        if check_v4(embedded_v4()) == Some(FloorRefusal::Metadata) {
            return Some(FloorRefusal::Metadata);
        }
        return Some(FloorRefusal::Private("an IPv4-translated IPv6 address (::ffff:0:0:0/96)"));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 (RFC 6052): reachable exactly when the IPv4 address it translates to is.
        return check_v4(embedded_v4()).map(|refusal| match refusal {
            FloorRefusal::Metadata => FloorRefusal::Metadata,
            FloorRefusal::Private(_) => FloorRefusal::Private("a NAT64 address of a private IPv4 address"),
        });
    }
    let range = match segments[0] {
        _ if ip.is_unspecified() => "the unspecified IPv6 address (::)",
        _ if ip.is_loopback() => "the IPv6 loopback address (::1)",
        0x0064 if segments[1] == 0xff9b => "a local-use NAT64 address (64:ff9b:1::/48)",
        s if s & 0xfe00 == 0xfc00 => "a unique local IPv6 address (fc00::/7)",
        s if s & 0xffc0 == 0xfe80 => "a link-local IPv6 address (fe80::/10)",
        s if s & 0xffc0 == 0xfec0 => "a site-local IPv6 address (fec0::/10)",
        s if s & 0xff00 == 0xff00 => "a multicast IPv6 address (ff00::/8)",
        0x2002 => {
            // 6to4 carries an IPv4 address in segments 1 and 2.
            let v4 =
                Ipv4Addr::new((segments[1] >> 8) as u8, segments[1] as u8, (segments[2] >> 8) as u8, segments[2] as u8);
            match check_v4(v4) {
                Some(FloorRefusal::Metadata) => return Some(FloorRefusal::Metadata),
                Some(_) => "a 6to4 address of a private IPv4 address",
                None => return None,
            }
        }
        0x2001 if segments[1] == 0 => "a Teredo tunnel address (2001::/32)",
        0x0100 if segments[1..4] == [0, 0, 0] => "a discard-only IPv6 address (100::/64)",
        _ => return None,
    };
    Some(FloorRefusal::Private(range))
}

/// Whether `name` (lower-case, no trailing dot) is a metadata service's host name.
pub fn is_metadata_name(name: &str) -> bool {
    METADATA_NAMES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Option<FloorRefusal> {
        check(text.parse().unwrap())
    }

    #[test]
    fn private_local_and_special_ranges_are_refused() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:10.0.0.1",
            "::ffff:0:8.8.8.8",
            "::ffff:0:7f00:1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2001:0:4136:e378::1",
        ] {
            assert!(matches!(refused(ip), Some(FloorRefusal::Private(_))), "{ip} should be refused as private");
        }
    }

    #[test]
    fn metadata_endpoints_are_refused_in_every_wrapping() {
        for ip in [
            "169.254.169.254",
            "169.254.170.2",
            "100.100.100.200",
            "168.63.129.16",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "::ffff:0:169.254.169.254",
            "64:ff9b::169.254.169.254",
            "2002:a9fe:a9fe::",
        ] {
            assert_eq!(refused(ip), Some(FloorRefusal::Metadata), "{ip}");
        }
        assert!(is_metadata_name("metadata.google.internal"));
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::8.8.8.8",
            "2002:808:808::",
        ] {
            assert_eq!(refused(ip), None, "{ip}");
        }
    }
}
