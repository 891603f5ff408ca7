//! One run's use of the registry: every call checked against the grants, the size caps and `max_host_calls`, and
//! recorded for the run report. Kernels own the guest ABI (how bytes cross the boundary); this owns what a call
//! means, so that every kernel grants, refuses, counts and records tool calls the same way.

use crate::worker::Unfinished;
use crate::{MAX_ABANDONED_CALLS, RunContext, Tool, ToolRegistry};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;
use wasmagent_kernel::bounds::{REPORT_TEXT_BYTES, RecordList, cut};
use wasmagent_kernel::{Denial, HttpExchange, ToolCall};
use wasmagent_manifest::EffectiveManifest;

/// Longest tool name accepted from a guest.
pub const MAX_TOOL_NAME_BYTES: usize = 256;
/// Largest tool arguments accepted from a guest (JSON).
pub const MAX_TOOL_ARGS_BYTES: usize = 1024 * 1024;
/// Largest tool result passed back to a guest (JSON).
pub const MAX_TOOL_RESULT_BYTES: usize = 1024 * 1024;
/// Longest error message passed back to a guest for a failed or refused call; longer ones are cut (with their
/// length). The run report keeps at most `REPORT_TEXT_BYTES` of it.
pub const MAX_TOOL_ERROR_BYTES: usize = 64 * 1024;

/// The tool calls of one run.
pub struct ToolSession {
    tools: Arc<ToolRegistry>,
    granted: Vec<String>,
    max_host_calls: u64,
    host_calls: u64,
    deadline: Instant,
    calls: RecordList<ToolCall>,
    denials: RecordList<Denial>,
    run: RunEnd,
}

/// The run's context, ended (its tools' per-run state released) when the session is dropped if
/// [`ToolSession::into_records`] did not end it first.
struct RunEnd(Arc<RunContext>);

impl Drop for RunEnd {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// What a run's tool calls left for its report.
#[derive(Debug, Default)]
pub struct ToolRecords {
    /// The calls, in order, up to the first one refused past `max_host_calls`; at most `REPORT_LISTED_RECORDS`.
    pub calls: Vec<ToolCall>,
    /// Calls counted against `max_host_calls`, refused ones included.
    pub host_calls: u64,
    /// One denial per distinct refusal; at most `REPORT_LISTED_RECORDS`.
    pub denials: Vec<Denial>,
    /// Calls counted but not listed (past the report bound).
    pub unlisted_calls: u64,
    /// Denials counted but not listed (past the report bound; repeats of an unlisted one counted again).
    pub unlisted_denials: u64,
    /// Network requests per-run tools made for the run ([`crate::RunRecords`]), for its `http_requests`.
    pub http_requests: Vec<HttpExchange>,
    /// Such requests counted but not listed.
    pub unlisted_http_requests: u64,
    /// Images per-run tools made for the run ([`crate::RunRecords::images`]), for its artifacts.
    pub images: Vec<crate::ToolImage>,
}

impl ToolSession {
    /// A session for one run held to `manifest` whose wall-clock deadline is `deadline`: no call is waited for
    /// past it (a call still running then is abandoned, and the guest gets an error).
    pub fn new(tools: Arc<ToolRegistry>, manifest: &EffectiveManifest, deadline: Instant) -> Self {
        ToolSession {
            granted: tools.granted_names(manifest),
            tools,
            max_host_calls: manifest.max_host_calls(),
            host_calls: 0,
            deadline,
            calls: RecordList::default(),
            denials: RecordList::default(),
            run: RunEnd(Arc::new(RunContext::new(manifest, deadline))),
        }
    }

    /// Names whom the run is for ([`RunContext::caller`]). Takes effect only before the first call.
    pub fn with_caller(mut self, caller: Option<String>) -> Self {
        if let Some(run) = Arc::get_mut(&mut self.run.0) {
            run.set_caller(caller);
        }
        self
    }

    /// Whether the run's deadline has passed: a kernel then ends the run as timed out rather than hand a call's
    /// error back to the guest.
    pub fn deadline_passed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Names of the tools this run may call, sorted.
    pub fn granted(&self) -> &[String] {
        &self.granted
    }

    /// Runs one call. `name` and `args` are what the guest sent, or why the kernel could not read them (a bad
    /// pointer, a size over the cap). Returns the result as JSON bytes, or the error message the guest receives (at
    /// most [`MAX_TOOL_ERROR_BYTES`] and a marker).
    ///
    /// Host memory stays bounded whatever the guest sends: names over [`MAX_TOOL_NAME_BYTES`] are refused and
    /// recorded cut, every recorded text is cut at `REPORT_TEXT_BYTES`, and the records are bounded lists.
    pub fn call(&mut self, name: Result<String, String>, args: Result<Vec<u8>, String>) -> Result<Vec<u8>, String> {
        let started = Instant::now();
        self.host_calls += 1;
        if let Some((capability, reason)) = self.refusal(&name) {
            // Past `max_host_calls`, only the first refused call is recorded; the rest are counted in `host_calls`,
            // so a guest looping on refused calls cannot grow the report (or host memory) until `cpu_ms`.
            if self.host_calls > self.max_host_calls.saturating_add(1) {
                return Err(reason);
            }
            let target = recorded_name(&name);
            self.deny(capability, &target, &reason);
            self.record(target, digest(&args), "denied", started, Some(&reason));
            return Err(reason);
        }
        let args_digest = digest(&args);
        let name = recorded_name(&name);
        let outcome = args
            .and_then(|bytes| {
                if bytes.len() > MAX_TOOL_ARGS_BYTES {
                    return Err(format!(
                        "the tool arguments are {} bytes; the largest accepted is {MAX_TOOL_ARGS_BYTES}",
                        bytes.len()
                    ));
                }
                serde_json::from_slice(&bytes).map_err(|e| format!("the arguments are not JSON: {e}"))
            })
            .and_then(|args| match self.tools.get(&name) {
                Some(tool) => self.run(tool, args),
                None => Err(format!("there is no tool named {name}")),
            });
        match &outcome {
            Ok(_) => self.record(name, args_digest, "ok", started, None),
            Err(message) => self.record(name, args_digest, "error", started, Some(message)),
        }
        // Cut from the original, so the marker gives its length.
        outcome.map_err(|message| cut(&message, MAX_TOOL_ERROR_BYTES))
    }

    /// Runs `tool` on a worker, waiting for it until the run's deadline.
    fn run(&self, tool: &Tool, args: serde_json::Value) -> Result<Vec<u8>, String> {
        let name = tool.name();
        match self.tools.workers().run(self.deadline, tool.work(&self.run.0, args)) {
            Ok(result) => result,
            Err(Unfinished::DeadlinePassed) => Err(format!(
                "the run's deadline (cpu_ms) passed before tool {name} answered; the call was abandoned and its \
                 result will be dropped"
            )),
            Err(Unfinished::Busy) => Err(format!(
                "tool {name} was not started: {MAX_ABANDONED_CALLS} tool calls abandoned at earlier deadlines are \
                 still running, the most allowed at once"
            )),
            Err(Unfinished::NoWorker(e)) => Err(format!("tool {name} was not started: no worker thread: {e}")),
        }
    }

    /// Why a call to `name` is refused before the tool runs, if it is.
    fn refusal(&self, name: &Result<String, String>) -> Option<(&'static str, String)> {
        if self.host_calls > self.max_host_calls {
            return Some((
                "host_call",
                format!(
                    "max_host_calls ({}) reached; the manifest allows no more host calls in this run",
                    self.max_host_calls
                ),
            ));
        }
        match name {
            Err(reason) => Some(("tool", cut(reason, MAX_TOOL_ERROR_BYTES))),
            Ok(n) if n.len() > MAX_TOOL_NAME_BYTES => Some((
                "tool",
                format!("the tool name is {} bytes; the longest accepted is {MAX_TOOL_NAME_BYTES}", n.len()),
            )),
            Ok(n) if !self.granted.iter().any(|g| g == n) => Some((
                "tool",
                if self.tools.get(n).is_some() {
                    format!("tool {n} is not granted: add `tool:{n}` to extra_capabilities")
                } else {
                    format!("there is no tool named {n}")
                },
            )),
            Ok(_) => None,
        }
    }

    /// Records a denial unless the same one (capability and bounded target) is already listed.
    fn deny(&mut self, capability: &str, target: &str, reason: &str) {
        let listed = self.denials.items().iter().any(|d| d.capability == capability && d.target == target);
        if listed {
            return;
        }
        if self.denials.is_full() {
            self.denials.count_unlisted();
        } else {
            self.denials.push(Denial {
                capability: capability.into(),
                target: target.into(),
                reason: cut(reason, REPORT_TEXT_BYTES),
            });
        }
    }

    fn record(&mut self, name: String, args_digest: String, outcome: &str, started: Instant, error: Option<&str>) {
        if self.calls.is_full() {
            self.calls.count_unlisted();
            return;
        }
        let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1000.0;
        let error = error.map(|e| cut(e, REPORT_TEXT_BYTES));
        self.calls.push(ToolCall { name, args_digest, outcome: outcome.into(), duration_ms, error });
    }

    /// The calls, the host-call count and the denials, for the report.
    /// Ends the run first: per-run tool state is released and what those tools report joins the records.
    pub fn into_records(mut self) -> ToolRecords {
        let (mut http_requests, mut unlisted_http_requests, mut tools_unlisted_denials) = (Vec::new(), 0, 0);
        let mut images = Vec::new();
        for records in self.run.0.end() {
            for denial in records.denials {
                self.denials.push(denial);
            }
            tools_unlisted_denials += records.unlisted_denials;
            http_requests.extend(records.http_requests);
            unlisted_http_requests += records.unlisted_http_requests;
            images.extend(records.images);
        }
        let (calls, unlisted_calls) = std::mem::take(&mut self.calls).into_parts();
        let (denials, unlisted_denials) = std::mem::take(&mut self.denials).into_parts();
        let unlisted_denials = unlisted_denials + tools_unlisted_denials;
        ToolRecords {
            calls,
            host_calls: self.host_calls,
            denials,
            unlisted_calls,
            unlisted_denials,
            http_requests,
            unlisted_http_requests,
            images,
        }
    }
}

/// The name as records hold it: at most [`MAX_TOOL_NAME_BYTES`] (and a marker), or why it could not be read.
fn recorded_name(name: &Result<String, String>) -> String {
    match name {
        Ok(name) => cut(name, MAX_TOOL_NAME_BYTES),
        Err(reason) => cut(reason, REPORT_TEXT_BYTES),
    }
}

/// `sha256:<hex>` of the arguments, or nothing when they could not be read.
fn digest(args: &Result<Vec<u8>, String>) -> String {
    match args {
        Ok(bytes) => format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;
    use wasmagent_kernel::bounds::REPORT_LISTED_RECORDS;
    use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};

    fn session(grants: &[&str], max_host_calls: u64) -> ToolSession {
        session_with(grants, max_host_calls, Vec::new(), Duration::from_secs(60))
    }

    /// A session with `echo`, `secret` and `extra` tools, whose deadline is `deadline` from now.
    fn session_with(grants: &[&str], max_host_calls: u64, extra: Vec<Tool>, deadline: Duration) -> ToolSession {
        let mut tools = ToolRegistry::new();
        tools.register(Tool::new("echo", "", serde_json::Value::Null, Ok)).unwrap();
        tools.register(Tool::new("secret", "", serde_json::Value::Null, Ok)).unwrap();
        for tool in extra {
            tools.register(tool).unwrap();
        }
        let manifest = CapabilityManifest {
            extra_capabilities: grants.iter().map(|g| g.to_string()).collect(),
            max_host_calls: Some(max_host_calls),
            ..Default::default()
        }
        .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
        .unwrap();
        ToolSession::new(Arc::new(tools), &manifest, Instant::now() + deadline)
    }

    /// A tool that blocks until `gate` opens (or 10 s pass).
    fn gated(name: &str, gate: Arc<(Mutex<bool>, Condvar)>) -> Tool {
        Tool::new(name, "", serde_json::Value::Null, move |_| {
            let (open, opened) = &*gate;
            let guard = open.lock().unwrap();
            let _ = opened.wait_timeout_while(guard, Duration::from_secs(10), |open| !*open).unwrap();
            Ok(serde_json::json!("done"))
        })
    }

    #[test]
    fn granted_calls_run_and_others_are_denied_once_each() {
        let mut session = session(&["tool:echo"], 10);
        assert_eq!(session.call(Ok("echo".into()), Ok(b"{\"a\":1}".to_vec())).unwrap(), b"{\"a\":1}");
        for _ in 0..3 {
            let refused = session.call(Ok("secret".into()), Ok(b"{}".to_vec())).unwrap_err();
            assert!(refused.contains("not granted"), "{refused}");
        }
        assert!(session.call(Ok("echo".into()), Ok(b"not json".to_vec())).unwrap_err().contains("not JSON"));
        let records = session.into_records();
        assert_eq!(records.host_calls, 5);
        let outcomes: Vec<_> = records.calls.iter().map(|c| c.outcome.as_str()).collect();
        assert_eq!(outcomes, ["ok", "denied", "denied", "denied", "error"]);
        assert_eq!(records.denials.len(), 1);
        assert_eq!(records.denials[0].target, "secret");
    }

    #[test]
    fn max_host_calls_is_enforced() {
        let mut session = session(&["tool:echo"], 2);
        assert!(session.call(Ok("echo".into()), Ok(b"1".to_vec())).is_ok());
        assert!(session.call(Ok("echo".into()), Ok(b"2".to_vec())).is_ok());
        let refused = session.call(Ok("echo".into()), Ok(b"3".to_vec())).unwrap_err();
        assert!(refused.contains("max_host_calls (2)"), "{refused}");
        for _ in 0..100 {
            session.call(Ok("echo".into()), Ok(b"4".to_vec())).unwrap_err();
        }
        let records = session.into_records();
        assert_eq!(records.denials[0].capability, "host_call");
        assert_eq!(records.host_calls, 103, "every attempt is counted");
        assert_eq!(records.calls.len(), 3, "only the first refused call past the cap is recorded");
    }

    #[test]
    fn a_call_ends_at_the_run_deadline() {
        let sleepy = Tool::new("sleepy", "", serde_json::Value::Null, |_| {
            std::thread::sleep(Duration::from_secs(10));
            Ok(serde_json::Value::Null)
        });
        let mut session = session_with(&["tool:*"], 10, vec![sleepy], Duration::from_millis(300));
        let started = Instant::now();
        let refused = session.call(Ok("sleepy".into()), Ok(b"{}".to_vec())).unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(1500), "the call took {elapsed:?} with a 300 ms deadline");
        assert!(elapsed >= Duration::from_millis(250), "the call ended at {elapsed:?}, before the deadline");
        assert!(refused.contains("deadline (cpu_ms) passed before tool sleepy answered"), "{refused}");
        // Past the deadline, nothing more is started or waited for.
        let started = Instant::now();
        assert!(session.call(Ok("echo".into()), Ok(b"1".to_vec())).unwrap_err().contains("deadline"));
        assert!(started.elapsed() < Duration::from_millis(200));
        let records = session.into_records();
        assert_eq!(records.calls[0].outcome, "error");
        assert!(records.calls[0].error.as_deref().unwrap_or_default().contains("abandoned"));
    }

    #[test]
    fn abandoned_calls_are_bounded_and_free_their_place_when_they_end() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let mut tools = ToolRegistry::new();
        tools.register(gated("stuck", gate.clone())).unwrap();
        tools.register(Tool::new("echo", "", serde_json::Value::Null, Ok)).unwrap();
        let tools = Arc::new(tools);
        let manifest = CapabilityManifest { extra_capabilities: vec!["tool:*".into()], ..Default::default() }
            .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
            .unwrap();
        // Each run abandons one call at its deadline.
        for _ in 0..MAX_ABANDONED_CALLS {
            let mut run = ToolSession::new(tools.clone(), &manifest, Instant::now() + Duration::from_millis(20));
            assert!(run.call(Ok("stuck".into()), Ok(b"{}".to_vec())).unwrap_err().contains("abandoned"));
        }
        let mut run = ToolSession::new(tools.clone(), &manifest, Instant::now() + Duration::from_secs(30));
        let refused = run.call(Ok("echo".into()), Ok(b"{}".to_vec())).unwrap_err();
        assert!(refused.contains(&format!("{MAX_ABANDONED_CALLS} tool calls abandoned")), "{refused}");
        let (open, opened) = &*gate;
        *open.lock().unwrap() = true;
        opened.notify_all();
        let until = Instant::now() + Duration::from_secs(10);
        while run.call(Ok("echo".into()), Ok(b"{}".to_vec())).is_err() {
            assert!(Instant::now() < until, "abandoned calls that ended still block new ones");
            std::thread::yield_now();
        }
    }

    #[test]
    fn huge_names_and_errors_leave_records_and_answers_bounded() {
        const HUGE: usize = 2 << 20;
        let failing = Tool::new("failing", "", serde_json::Value::Null, |_| Err("e".repeat(16 << 20)));
        let mut session = session_with(&["tool:failing"], 10_000, vec![failing], Duration::from_secs(60));
        for i in 0..100 {
            let refused = session.call(Ok("n".repeat(HUGE + i)), Ok(b"{}".to_vec())).unwrap_err();
            assert!(refused.contains(&format!("the tool name is {} bytes", HUGE + i)), "{refused}");
        }
        for i in 0..REPORT_LISTED_RECORDS {
            let refused = session.call(Ok(format!("unknown{i}")), Ok(b"{}".to_vec())).unwrap_err();
            assert!(refused.contains("there is no tool named"), "{refused}");
        }
        let failed = session.call(Ok("failing".into()), Ok(b"{}".to_vec())).unwrap_err();
        assert!(failed.len() <= MAX_TOOL_ERROR_BYTES + 40, "the guest got a {}-byte error", failed.len());
        assert!(failed.ends_with(&format!("[cut: {} bytes in all]", 16 << 20)), "{}", &failed[failed.len() - 40..]);
        let records = session.into_records();
        assert_eq!(records.host_calls, 100 + REPORT_LISTED_RECORDS as u64 + 1);
        assert_eq!(records.calls.len(), REPORT_LISTED_RECORDS);
        assert_eq!(records.unlisted_calls, 101);
        assert_eq!(records.denials.len(), REPORT_LISTED_RECORDS);
        assert_eq!(records.unlisted_denials, 100);
        for call in &records.calls {
            assert!(call.name.len() <= MAX_TOOL_NAME_BYTES + 40, "a {}-byte name was recorded", call.name.len());
        }
        for denial in &records.denials {
            assert!(denial.target.len() <= MAX_TOOL_NAME_BYTES + 40, "a {}-byte target", denial.target.len());
        }
        let size: usize = records
            .calls
            .iter()
            .map(|c| c.name.len() + c.args_digest.len() + c.error.as_ref().map_or(0, String::len))
            .chain(records.denials.iter().map(|d| d.target.len() + d.reason.len()))
            .sum();
        assert!(size < 512 * 1024, "the records hold {size} bytes");
    }

    #[test]
    fn a_failed_call_is_recorded_cut() {
        let failing = Tool::new("failing", "", serde_json::Value::Null, |_| Err("e".repeat(1 << 20)));
        let mut session = session_with(&["tool:failing"], 10, vec![failing], Duration::from_secs(60));
        assert!(session.call(Ok("failing".into()), Ok(b"{}".to_vec())).is_err());
        let records = session.into_records();
        let error = records.calls[0].error.as_deref().unwrap_or_default();
        assert!(error.len() <= REPORT_TEXT_BYTES + 40, "a {}-byte error was recorded", error.len());
        assert!(error.ends_with(&format!("[cut: {} bytes in all]", 1 << 20)));
    }
}
