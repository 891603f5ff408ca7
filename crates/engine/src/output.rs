use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// A guest output stream (stdout or stderr) that keeps at most `max_output_bytes`.
///
/// The write that crosses the cap keeps what fits and then traps, so a flood of output ends the run at once with
/// outcome `output_limit` instead of burning the rest of the time budget. Cloning shares the buffer.
#[derive(Clone)]
pub struct CappedOutput {
    inner: Arc<Mutex<Buffer>>,
}

struct Buffer {
    data: Vec<u8>,
    cap: usize,
    written: u64,
    overflowed: bool,
}

/// What a stream captured.
#[derive(Debug, Clone, Default)]
pub struct CapturedOutput {
    /// The bytes kept (at most the cap).
    pub data: Vec<u8>,
    /// Every byte the guest wrote, kept or not.
    pub written: u64,
    /// Whether the guest wrote past the cap.
    pub overflowed: bool,
}

impl CappedOutput {
    /// An empty stream keeping at most `cap` bytes.
    pub fn new(cap: u64) -> Self {
        CappedOutput {
            inner: Arc::new(Mutex::new(Buffer {
                data: Vec::new(),
                cap: usize::try_from(cap).unwrap_or(usize::MAX),
                written: 0,
                overflowed: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // Plain bytes and counters: a poisoned lock still holds a consistent buffer.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends what fits; returns false when the cap was crossed.
    pub fn push(&self, bytes: &[u8]) -> bool {
        let mut buffer = self.lock();
        buffer.written = buffer.written.saturating_add(bytes.len() as u64);
        let room = buffer.cap.saturating_sub(buffer.data.len());
        let kept = bytes.len().min(room);
        buffer.data.extend_from_slice(&bytes[..kept]);
        if kept < bytes.len() {
            buffer.overflowed = true;
        }
        !buffer.overflowed
    }

    /// Whether the guest has written past the cap.
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Takes the captured bytes out, leaving the stream empty.
    pub fn take(&self) -> CapturedOutput {
        let mut buffer = self.lock();
        CapturedOutput {
            data: std::mem::take(&mut buffer.data),
            written: buffer.written,
            overflowed: buffer.overflowed,
        }
    }

    /// Empties the stream and its counters, for the next call of a session (each call has its own cap).
    pub fn restart(&self) {
        let mut buffer = self.lock();
        buffer.data.clear();
        buffer.written = 0;
        buffer.overflowed = false;
    }

    fn overflow_error(&self) -> wasmtime::Error {
        wasmtime::format_err!("output limit: the guest wrote more than max_output_bytes ({} bytes)", self.lock().cap)
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if self.push(&bytes) { Ok(()) } else { Err(StreamError::Trap(self.overflow_error())) }
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always offer room: the cap is enforced in `write`, which traps, rather than by closing the stream, which
        // guests would treat as an ordinary I/O error and carry on.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.push(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(io::Error::other(self.overflow_error().to_string())))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_fits_and_flags_the_overflow() {
        let out = CappedOutput::new(5);
        assert!(out.push(b"abc"));
        assert!(!out.push(b"defgh"));
        let captured = out.take();
        assert_eq!(captured.data, b"abcde");
        assert_eq!(captured.written, 8);
        assert!(captured.overflowed);
    }

    #[test]
    fn a_zero_cap_keeps_nothing() {
        let out = CappedOutput::new(0);
        assert!(out.push(b""));
        assert!(!out.push(b"x"));
        assert!(out.take().data.is_empty());
    }
}
