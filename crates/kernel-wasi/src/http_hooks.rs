//! `wasi:http/outgoing-handler` for components, through the same egress path as the script kernels' `fetch`:
//! wasmtime-wasi-http parses the guest's request, and every request it would send is handed to the run's
//! [`EgressSession`] instead (allow-list, floor, pinned connection, caps, secrets, records). A component run with
//! no session (the python kernel's engine, which does not import `wasi:http`) has every request refused.
//!
//! The guest writes a request's body after handing the request over, so the hook waits for it. That wait ends just
//! after the run's deadline ([`BACKGROUND_GRACE`]: a guest blocked on the response ends the run as `timeout` first),
//! reads at most one byte past `max_http_request_bytes`, and is skipped when the manifest allows no host at all (the
//! request is refused whatever its body). The wait for the response is the session's, which ends at the run's
//! deadline. When the guest drops the response future (or the run ends), the hook's task is aborted and the request
//! abandoned with it.
//!
//! A component may hold at most [`MAX_IN_FLIGHT_PER_RUN`] requests and unread responses at once: each request takes
//! a place before its body is read and keeps it in its response body until the guest has dropped that body, so
//! what a component can make the host buffer is at most that many bodies of `max_http_response_bytes` (plus as many
//! request bodies of `max_http_request_bytes`), however many responses it leaves unread. A request that finds no
//! place waits for one until the run's deadline.

use crate::deadline::BACKGROUND_GRACE;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmagent_egress::{EgressSession, HttpRequest, MAX_IN_FLIGHT_PER_RUN};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The hooks of one component run.
pub(crate) struct EgressHooks {
    session: Option<EgressSession>,
    /// When waiting for a request body ends: the run's deadline and [`BACKGROUND_GRACE`].
    body_deadline: Instant,
    /// Places for requests and the responses the guest has not dropped yet.
    held: Arc<Semaphore>,
}

impl EgressHooks {
    /// Hooks sending through `session` (refusing everything without one), for a run that ends at `deadline`.
    pub(crate) fn new(session: Option<EgressSession>, deadline: Instant) -> Self {
        EgressHooks {
            session,
            body_deadline: deadline + BACKGROUND_GRACE,
            held: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_RUN)),
        }
    }
}

/// A response body that keeps its request's place until the guest drops it.
struct HeldBody {
    bytes: Option<Bytes>,
    _place: OwnedSemaphorePermit,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        Poll::Ready(self.get_mut().bytes.take().map(|bytes| Ok(http_body::Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

type ResponseFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>),
                HttpError,
            >,
        > + Send,
>;

/// How reading a request body ended.
#[derive(Debug, PartialEq)]
enum RequestBody {
    /// The whole body, at most the cap.
    Whole(Vec<u8>),
    /// The first cap + 1 bytes of a body over the cap: enough for the session to refuse it as too large.
    OverCap(Vec<u8>),
}

/// Reads `body` up to one byte past `cap` and stops there; never holds more than `cap` + 1 bytes of it.
async fn read_capped(mut body: WasiBody, cap: usize) -> Result<RequestBody, HttpError> {
    let limit = cap.saturating_add(1);
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: the egress path sends none
        };
        let room = limit - bytes.len();
        bytes.extend_from_slice(&data[..data.len().min(room)]);
        if bytes.len() == limit {
            return Ok(RequestBody::OverCap(bytes));
        }
    }
    Ok(RequestBody::Whole(bytes))
}

impl WasiHttpHooks for EgressHooks {
    /// The egress path sets `Host` from the URL it checked; a guest-chosen one is never sent.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let session = self.session.clone();
        let deadline = self.body_deadline;
        let held = self.held.clone();
        Box::new(async move {
            let Some(session) = session else {
                return Err(HttpError::HttpRequestDenied);
            };
            let place = match tokio::time::timeout_at(deadline.into(), held.acquire_owned()).await {
                Ok(Ok(place)) => place,
                Ok(Err(_)) | Err(_) => {
                    return Err(HttpError::InternalError(Some(format!(
                        "the run's deadline (cpu_ms) passed while {MAX_IN_FLIGHT_PER_RUN} earlier requests or their \
                         unread responses held every place"
                    ))));
                }
            };
            let (parts, body) = request.into_parts();
            let body = if session.enabled() {
                let cap = usize::try_from(session.max_request_bytes()).unwrap_or(usize::MAX);
                match tokio::time::timeout_at(deadline.into(), read_capped(body, cap)).await {
                    Ok(Ok(RequestBody::Whole(bytes) | RequestBody::OverCap(bytes))) => bytes,
                    Ok(Err(error)) => return Err(error),
                    Err(_) => {
                        return Err(HttpError::InternalError(Some(
                            "the run's deadline (cpu_ms) passed while waiting for the request body".into(),
                        )));
                    }
                }
            } else {
                // Refused whatever its body: the session records the denial without it.
                Vec::new()
            };
            let headers = parts
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
                .collect();
            let request = HttpRequest { method: parts.method.to_string(), url: parts.uri.to_string(), headers, body };
            let response = session.spawn_fetch(request).await.map_err(|e| {
                if e.denied { HttpError::HttpRequestDenied } else { HttpError::InternalError(Some(e.message)) }
            })?;
            let mut builder = http::Response::builder().status(response.status);
            for (name, value) in &response.headers {
                builder = builder.header(name, value);
            }
            let body = HeldBody { bytes: Some(Bytes::from(response.body)), _place: place }.boxed_unsync();
            let response = builder.body(body).map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
            let done: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send> = Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body of the given chunks (or errors), one frame each.
    struct Chunks(VecDeque<Result<Vec<u8>, HttpError>>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = HttpError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| chunk.map(|bytes| http_body::Frame::data(Bytes::from(bytes)))))
        }
    }

    fn body(chunks: Vec<Result<Vec<u8>, HttpError>>) -> WasiBody {
        Chunks(chunks.into()).boxed_unsync()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        wasmtime_wasi::runtime::in_tokio(f)
    }

    #[test]
    fn a_body_over_the_cap_is_read_to_one_byte_past_it_and_no_further() {
        let over = block_on(read_capped(body(vec![Ok(vec![1; 6]), Ok(vec![2; 6]), Ok(vec![3; 1 << 20])]), 8));
        let Ok(RequestBody::OverCap(bytes)) = over else { panic!("{over:?}") };
        assert_eq!(bytes, [vec![1; 6], vec![2; 3]].concat());
        assert!(bytes.capacity() < 64, "nothing is allocated for the cap itself: {}", bytes.capacity());
        let whole = block_on(read_capped(body(vec![Ok(vec![1; 4]), Ok(vec![2; 4])]), 8));
        assert_eq!(whole.ok(), Some(RequestBody::Whole([[1; 4], [2; 4]].concat())));
    }

    #[test]
    fn a_body_that_fails_is_an_error_not_an_oversized_body() {
        let failed = block_on(read_capped(body(vec![Ok(vec![1; 2]), Err(HttpError::HttpRequestBodySize(Some(2)))]), 8));
        assert!(matches!(failed, Err(HttpError::HttpRequestBodySize(Some(2)))), "{failed:?}");
    }
}
