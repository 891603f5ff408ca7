//! Denial reporting for WASI sockets.
//!
//! Guests never get sockets: wasmtime-wasi's TCP and UDP stay off (socket creation fails with `access-denied`), and
//! behind that, the address check refuses every address. Network access goes through `allowed_hosts` and the egress
//! path only. Because creation fails first, the address check never sees an attempt; so `create-tcp-socket` and
//! `create-udp-socket` are wrapped to report each refused kind of socket once, as `net.socket`.

use std::sync::{Arc, Mutex, PoisonError};
use wasmagent_kernel::Denial;
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

/// The run's refused network attempts, shared with the WASI context's address check.
pub(crate) type NetDenials = Arc<Mutex<Vec<Denial>>>;

/// Records `denial` unless the same one is already there.
pub(crate) fn record(denials: &NetDenials, denial: Denial) {
    let mut denials = denials.lock().unwrap_or_else(PoisonError::into_inner);
    if !denials.contains(&denial) {
        denials.push(denial);
    }
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
