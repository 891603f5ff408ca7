//! Admission of the work a tool call starts, for transports whose web server holds runs to its own limits (run
//! slots, a bounded queue, per-caller concurrency, metrics). Over streamable HTTP the web server puts an
//! [`Admission`] in each request's extensions; `execute_code` and every direct tool call wait on it before they
//! start and hold its [`RunPermit`] until they end, so an MCP client is held to the same limits as any other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use wasmagent::RunReport;

/// A future returned by [`RunAdmission::admit`].
pub type AdmitFuture<'a> = Pin<Box<dyn Future<Output = Result<RunPermit, String>> + Send + 'a>>;

/// Decides whether a run (or a direct tool call) may start, waiting for room if the web server queues.
pub trait RunAdmission: Send + Sync {
    /// Room for one run, held until the returned permit is finished or dropped; `Err` says why the call is
    /// refused (the client sees it as an error result).
    fn admit(&self) -> AdmitFuture<'_>;
}

/// The web server's admission, as it travels in an HTTP request's extensions.
#[derive(Clone)]
pub struct Admission(Arc<dyn RunAdmission>);

impl Admission {
    /// Wraps `admission` for a request's extensions.
    pub fn new(admission: impl RunAdmission + 'static) -> Self {
        Admission(Arc::new(admission))
    }

    pub(crate) async fn admit(&self) -> Result<RunPermit, String> {
        self.0.admit().await
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admission")
    }
}

/// Room for one run. [`RunPermit::finish`] gives the report of a run (none for a direct tool call) to the web
/// server; dropping the permit without it frees the room all the same.
pub struct RunPermit(Option<Release>);

/// What a permit does when its run ends.
type Release = Box<dyn FnOnce(Option<&RunReport>) + Send>;

impl RunPermit {
    /// A permit that calls `release` with the run's report (if there is one) when the run ends.
    pub fn new(release: impl FnOnce(Option<&RunReport>) + Send + 'static) -> Self {
        RunPermit(Some(Box::new(release)))
    }

    /// Ends the run: `report` is what it produced, if anything.
    pub fn finish(mut self, report: Option<&RunReport>) {
        if let Some(release) = self.0.take() {
            release(report);
        }
    }
}

impl Drop for RunPermit {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release(None);
        }
    }
}

impl std::fmt::Debug for RunPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunPermit")
    }
}
