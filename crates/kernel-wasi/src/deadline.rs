//! Every wait a component can start in the host ends at its run's deadline.
//!
//! `cpu_ms` is an epoch deadline, which interrupts guest code only while it executes. With wasmtime-wasi's
//! synchronous bindings, `wasi:io/poll` (`poll`, `pollable.block`) and the `blocking-*` calls of `wasi:io/streams`
//! block the run's thread inside the host until what they wait for is ready, and some of those waits never end on
//! their own: the response to a request whose body the guest never finishes, or a second chunk written to an
//! outgoing body before the request was handed over. Left alone, such a run would hold its thread (and its run
//! slot) forever.
//!
//! [`add_deadline_wrappers`] replaces those functions with wrappers that run wasmtime-wasi's own (asynchronous)
//! implementation with a timeout at the run's deadline. A wait that is still pending then ends the run as `timeout`
//! (the same [`Trap::Interrupt`] an expired epoch deadline raises), so no component run outlasts `cpu_ms` by more
//! than the time it takes to unwind. Clock subscriptions are cut off just past the deadline ([`crate::clock`]), so
//! a sleep past `cpu_ms` ends the same way.

use crate::clock::HasRunClock;
use std::future::Future;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{StoreContextMut, Trap};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::bindings::io::{poll, streams};
use wasmtime_wasi::p2::bindings::sync::io::streams::{Host as _, StreamError};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamResult};
use wasmtime_wasi::runtime::in_tokio;

/// How long after its run's deadline host work the guest started may still go on in the background (a request
/// body being read for the egress path, a clock subscription). Waits the guest itself is blocked in end at the
/// deadline; this grace makes sure they are what ends the run, as `timeout`, rather than a background failure or a
/// sleep cut short that the guest could still act on.
pub(crate) const BACKGROUND_GRACE: Duration = Duration::from_millis(250);

/// The `wasi:io` version wasmtime-wasi 48 implements; older 0.2 imports are linked to it by semver.
const POLL: &str = "wasi:io/poll@0.2.12";
const STREAMS: &str = "wasi:io/streams@0.2.12";

/// Store state of a component run, for the deadline wrappers.
pub(crate) trait DeadlineBound: HasRunClock + WasiView + 'static {}

impl<T: HasRunClock + WasiView + 'static> DeadlineBound for T {}

/// Runs `wait` on wasmtime-wasi's runtime until it is ready or `deadline` passes; past the deadline the run ends
/// as `timeout`. A wait that is ready at once returns its result even after the deadline.
fn until<F: Future>(deadline: Instant, wait: F) -> wasmtime::Result<F::Output> {
    in_tokio(async move {
        tokio::time::timeout_at(deadline.into(), wait).await.map_err(|_| wasmtime::Error::from(Trap::Interrupt))
    })
}

/// A stream call's result in the guest's terms: a stream error becomes the guest-visible `stream-error`, a trap
/// stays a trap.
fn settle<R>(table: &mut ResourceTable, result: StreamResult<R>) -> wasmtime::Result<(Result<R, StreamError>,)> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(error) => Ok((Err(table.convert_stream_error(error)?),)),
    }
}

/// The run's deadline and its resource table.
fn deadline_and_table<'a, T: DeadlineBound>(store: &'a mut StoreContextMut<'_, T>) -> (Instant, &'a mut ResourceTable) {
    let deadline = store.data().run_clock().deadline();
    (deadline, store.data_mut().ctx().table)
}

/// Replaces every blocking `wasi:io` function of `linker` with one that ends at the run's deadline.
pub(crate) fn add_deadline_wrappers<T: DeadlineBound>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut io_poll = linker.instance(POLL)?;
    io_poll.func_wrap("poll", |mut store: StoreContextMut<'_, T>, (pollables,): (Vec<Resource<DynPollable>>,)| {
        let (deadline, table) = deadline_and_table(&mut store);
        Ok((until(deadline, poll::Host::poll(table, pollables))??,))
    })?;
    io_poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, T>, (pollable,): (Resource<DynPollable>,)| {
            let (deadline, table) = deadline_and_table(&mut store);
            until(deadline, poll::HostPollable::block(table, pollable))?
        },
    )?;

    let mut io_streams = linker.instance(STREAMS)?;
    io_streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: StoreContextMut<'_, T>, (stream, len): (Resource<DynInputStream>, u64)| {
            let (deadline, table) = deadline_and_table(&mut store);
            let result = until(deadline, streams::HostInputStream::blocking_read(table, stream, len))?;
            settle(table, result)
        },
    )?;
    io_streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: StoreContextMut<'_, T>, (stream, len): (Resource<DynInputStream>, u64)| {
            let (deadline, table) = deadline_and_table(&mut store);
            let result = until(deadline, streams::HostInputStream::blocking_skip(table, stream, len))?;
            settle(table, result)
        },
    )?;
    io_streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, T>, (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let (deadline, table) = deadline_and_table(&mut store);
            let result = until(deadline, streams::HostOutputStream::blocking_write_and_flush(table, stream, bytes))?;
            settle(table, result)
        },
    )?;
    io_streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, T>, (stream, len): (Resource<DynOutputStream>, u64)| {
            let (deadline, table) = deadline_and_table(&mut store);
            let result =
                until(deadline, streams::HostOutputStream::blocking_write_zeroes_and_flush(table, stream, len))?;
            settle(table, result)
        },
    )?;
    io_streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, T>, (stream,): (Resource<DynOutputStream>,)| {
            let (deadline, table) = deadline_and_table(&mut store);
            let result = until(deadline, streams::HostOutputStream::blocking_flush(table, stream))?;
            settle(table, result)
        },
    )?;
    io_streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: StoreContextMut<'_, T>,
         (stream, source, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let (deadline, table) = deadline_and_table(&mut store);
            let result = until(deadline, streams::HostOutputStream::blocking_splice(table, stream, source, len))?;
            settle(table, result)
        },
    )?;
    Ok(())
}
