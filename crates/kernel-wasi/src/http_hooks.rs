//! `wasi:http/outgoing-handler` for components, through the same egress path as the script kernels' `fetch`:
//! wasmtime-wasi-http parses the guest's request, and every request it would send is handed to the run's
//! [`EgressSession`] instead (allow-list, floor, pinned connection, caps, secrets, records). A component run with
//! no session (the python kernel's engine, which does not import `wasi:http`) has every request refused.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use wasmagent_egress::{EgressSession, HttpRequest};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The hooks of one component run.
#[derive(Default)]
pub(crate) struct EgressHooks {
    pub(crate) session: Option<EgressSession>,
}

type ResponseFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>),
                HttpError,
            >,
        > + Send,
>;

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
        Box::new(async move {
            let Some(session) = session else {
                return Err(HttpError::HttpRequestDenied);
            };
            let (parts, body) = request.into_parts();
            // One byte over the cap is enough for the session to refuse the body with a denial.
            let limit = usize::try_from(session.max_request_bytes()).unwrap_or(usize::MAX).saturating_add(1);
            let body = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes().to_vec(),
                Err(_) => vec![0; limit],
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
