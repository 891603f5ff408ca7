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

use crate::deadline::BACKGROUND_GRACE;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Instant;
use wasmagent_egress::{EgressSession, HttpRequest};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The hooks of one component run.
pub(crate) struct EgressHooks {
    session: Option<EgressSession>,
    /// When waiting for a request body ends: the run's deadline and [`BACKGROUND_GRACE`].
    body_deadline: Instant,
}

impl EgressHooks {
    /// Hooks sending through `session` (refusing everything without one), for a run that ends at `deadline`.
    pub(crate) fn new(session: Option<EgressSession>, deadline: Instant) -> Self {
        EgressHooks { session, body_deadline: deadline + BACKGROUND_GRACE }
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
        Box::new(async move {
            let Some(session) = session else {
                return Err(HttpError::HttpRequestDenied);
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
            let body = Full::new(Bytes::from(response.body)).map_err(|never| match never {}).boxed_unsync();
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
