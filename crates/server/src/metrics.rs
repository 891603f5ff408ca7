//! Prometheus metrics: runs by kernel and outcome, run latency, denials by capability, rate-limit rejections and
//! runs in flight, live sessions and the bytes their snapshots hold.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use wasmagent::RunReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    kernel: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KernelLabel {
    kernel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapabilityLabel {
    capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    latency: Family<KernelLabel, Histogram>,
    denials: Family<CapabilityLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    in_flight: Gauge,
    session_calls: Family<KernelLabel, Counter>,
    live_sessions: Gauge,
    snapshot_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wasmagent");
        let runs = Family::<RunLabels, Counter>::default();
        let latency = Family::<KernelLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let denials = Family::<CapabilityLabel, Counter>::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let in_flight = Gauge::default();
        let session_calls = Family::<KernelLabel, Counter>::default();
        let live_sessions = Gauge::default();
        let snapshot_bytes = Gauge::default();
        registry.register("runs", "Runs finished, by kernel and outcome", runs.clone());
        registry.register("run_duration_seconds", "Wall-clock time of runs, by kernel", latency.clone());
        registry.register("denials", "Accesses refused to guests, by capability", denials.clone());
        registry.register("rejected_requests", "Requests refused before running, by reason", rejected.clone());
        registry.register("runs_in_flight", "Runs executing now", in_flight.clone());
        registry.register("session_calls", "Runs that were calls of a session, by kernel", session_calls.clone());
        registry.register("live_sessions", "Sessions alive now in this process", live_sessions.clone());
        registry.register("snapshot_bytes", "Bytes of engine memory held in session snapshots", snapshot_bytes.clone());
        Metrics { registry, runs, latency, denials, rejected, in_flight, session_calls, live_sessions, snapshot_bytes }
    }
}

impl Metrics {
    /// Records a finished run.
    pub(crate) fn record(&self, report: &RunReport) {
        self.runs
            .get_or_create(&RunLabels { kernel: report.kernel.clone(), outcome: report.outcome.as_str().into() })
            .inc();
        self.latency.get_or_create(&KernelLabel { kernel: report.kernel.clone() }).observe(report.usage.wall_ms / 1e3);
        for denial in &report.denials {
            self.denials.get_or_create(&CapabilityLabel { capability: denial.capability.clone() }).inc();
        }
        if report.session_call.is_some() {
            self.session_calls.get_or_create(&KernelLabel { kernel: report.kernel.clone() }).inc();
        }
    }

    /// Records a request refused before running (`rate_limited`, `concurrency`, `busy`, `limiter_unavailable`).
    pub(crate) fn reject(&self, reason: &str) {
        self.rejected.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    /// Marks a run as started; the guard marks it finished.
    pub(crate) fn start_run(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The text exposition format, with the session gauges set to `live_sessions` and `snapshot_bytes`.
    pub(crate) fn encode(&self, live_sessions: usize, snapshot_bytes: u64) -> String {
        self.live_sessions.set(i64::try_from(live_sessions).unwrap_or(i64::MAX));
        self.snapshot_bytes.set(i64::try_from(snapshot_bytes).unwrap_or(i64::MAX));
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// A run in flight; dropping it decrements the gauge.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
