//! The one network path of every kernel: guest code asks, this crate decides and fetches.
//!
//! It owns what an HTTP request from a guest means: the manifest's `allowed_hosts` (matched after WHATWG URL
//! normalisation), the floor under it (loopback, private, link-local, CGNAT, multicast, IPv4-in-IPv6 and metadata
//! addresses are refused whatever the allow-list says; see [`floor`]), connecting only to the address that was
//! checked (no second DNS lookup), redirects re-checked hop by hop, the request/response/time/count caps, operator
//! exceptions and host-bound secrets ([`EgressConfig`]), and the records and denials for the run report.
//!
//! What a run can make the host hold or wait for here is bounded: [`MAX_URL_BYTES`] per URL, [`MAX_IN_FLIGHT_PER_RUN`]
//! requests in flight per run (so at most that many response bodies of `max_http_response_bytes` are buffered),
//! `REPORT_LISTED_RECORDS` exchanges and denials per run, one deadline per whole request (`http_timeout_ms`,
//! redirects and DNS included, never past the run's), and [`MAX_SYSTEM_LOOKUPS`] system-resolver lookups at once.
//!
//! It must not know about kernels or guest ABIs: kernels turn a guest's `fetch`, `urllib` or `wasi:http` call into an
//! [`HttpRequest`] and hand it to the run's [`EgressSession`]. HTTP itself is reqwest (hyper + rustls).

mod check;
mod config;
pub mod floor;
#[doc(hidden)]
pub mod fuzzing;
mod resolver;
mod secrets;
mod session;
mod target;

pub use check::{CheckedDestination, DestinationError, check_destination};
pub use config::{ConfigError, EgressConfig};
pub use resolver::{MAX_SYSTEM_LOOKUPS, Resolve, Resolving, StaticResolver, SystemResolver};
pub use session::{
    Egress, EgressRecords, EgressSession, FetchError, HttpRequest, HttpResponse, MAX_IN_FLIGHT_PER_RUN, MAX_REDIRECTS,
    MAX_URL_BYTES,
};
