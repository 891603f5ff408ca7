//! Denial reporting for WASI sockets.
//!
//! Guests never get sockets: wasmtime-wasi's TCP and UDP stay off (socket creation fails with `access-denied`), and
//! behind that, the address check refuses every address. Network access goes through `allowed_hosts` and the egress
//! path only. Because creation fails first, the address check never sees an attempt; so `create-tcp-socket` and
//! `create-udp-socket` are wrapped to report each refused kind of socket once, as `net.socket`.

use crate::fs_audit::CUT_MARKER_ROOM;
use std::sync::{Arc, Mutex, PoisonError};
use wasmagent_kernel::Denial;
use wasmagent_kernel::bounds::{REPORT_TEXT_BYTES, RecordList, cut_in_place};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};

/// The `wasi:sockets` version wasmtime-wasi 48 implements; older 0.2 imports are linked to it by semver.
const TCP_CREATE: &str = "wasi:sockets/tcp-create-socket@0.2.12";
const UDP_CREATE: &str = "wasi:sockets/udp-create-socket@0.2.12";

/// Why every socket is refused, as the report says it.
pub(crate) const SOCKETS_REFUSED: &str =
    "WASI sockets are never granted; network access goes through allowed_hosts (HTTP through the egress path)";

/// The run's refused network attempts, shared with the WASI context's address check: each distinct one once, at
/// most the report's bound of them (the rest counted), each field cut at the report's text bound.
pub(crate) type NetDenials = Arc<Mutex<RecordList<Denial>>>;

/// Records `denial` unless the same one is already listed; past the list's bound it is only counted.
pub(crate) fn record(denials: &NetDenials, mut denial: Denial) {
    cut_in_place(&mut denial.target, REPORT_TEXT_BYTES - CUT_MARKER_ROOM);
    let mut denials = denials.lock().unwrap_or_else(PoisonError::into_inner);
    if !denials.items().contains(&denial) {
        denials.push(denial);
    }
}

/// The listed denials, and how many more were counted, leaving `denials` empty.
pub(crate) fn take(denials: &NetDenials) -> (Vec<Denial>, u64) {
    std::mem::take(&mut *denials.lock().unwrap_or_else(PoisonError::into_inner)).into_parts()
}

/// Store state of a component run, for the socket wrappers.
pub(crate) trait HasNetDenials: 'static {
    fn net_denials(&self) -> &NetDenials;
}

fn refuse<T: HasNetDenials>(store: &StoreContextMut<'_, T>, protocol: &str, family: IpAddressFamily) {
    let family = match family {
        IpAddressFamily::Ipv4 => "ipv4",
        IpAddressFamily::Ipv6 => "ipv6",
    };
    let denial = Denial {
        capability: "net.socket".into(),
        target: format!("{protocol} socket ({family})"),
        reason: SOCKETS_REFUSED.into(),
    };
    record(store.data().net_denials(), denial);
}

/// Replaces socket creation with wrappers that refuse it and report the refusal.
pub(crate) fn add_socket_wrappers<T: HasNetDenials>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(TCP_CREATE)?.func_wrap(
        "create-tcp-socket",
        |store: StoreContextMut<'_, T>, (family,): (IpAddressFamily,)| {
            refuse(&store, "tcp", family);
            Ok((Err::<Resource<TcpSocket>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    linker.instance(UDP_CREATE)?.func_wrap(
        "create-udp-socket",
        |store: StoreContextMut<'_, T>, (family,): (IpAddressFamily,)| {
            refuse(&store, "udp", family);
            Ok((Err::<Resource<UdpSocket>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_addresses_are_listed_once_each_up_to_the_report_bound() {
        let denials = NetDenials::default();
        let limit = wasmagent_kernel::bounds::REPORT_LISTED_RECORDS;
        for i in 0..limit + 10 {
            for _ in 0..2 {
                let target = format!("10.0.{}.{}:80{}", i / 256, i % 256, "0".repeat(4096));
                record(&denials, Denial { capability: "net.connect".into(), target, reason: SOCKETS_REFUSED.into() });
            }
        }
        let (listed, unlisted) = take(&denials);
        assert_eq!((listed.len(), unlisted), (limit, 20));
        assert!(listed.iter().all(|d| d.target.len() <= REPORT_TEXT_BYTES));
        assert_eq!(take(&denials), (Vec::new(), 0));
    }
}
