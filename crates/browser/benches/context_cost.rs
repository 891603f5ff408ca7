//! What a fresh browser context costs a run: the first browser call of a run (context, proxy and page opened, one
//! `evaluate`) against a later call in the same run (the `evaluate` alone), with the browser process kept warm.
//! Prints medians. `cargo bench -p wasmagent-browser --bench context_cost` (needs `chromium` on PATH).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark")]

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmagent_browser::{BrowserConfig, BrowserTools};
use wasmagent_egress::{EgressConfig, SystemResolver};
use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};
use wasmagent_tools::{ToolRegistry, ToolSession};

const RUNS: usize = 30;

fn main() {
    let browser = BrowserTools::new(BrowserConfig::default(), EgressConfig::new(), Arc::new(SystemResolver)).unwrap();
    let mut registry = ToolRegistry::new();
    browser.register(&mut registry).unwrap();
    let registry = Arc::new(registry);
    let manifest = CapabilityManifest { extra_capabilities: vec!["tool:browser.*".into()], ..Default::default() }
        .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
        .unwrap();
    let evaluate = |session: &mut ToolSession| {
        let started = Instant::now();
        session.call(Ok("browser.evaluate".into()), Ok(br#"{"expression":"1"}"#.to_vec())).unwrap();
        started.elapsed()
    };
    // The first run also starts Chromium: not counted.
    let mut warmup = ToolSession::new(registry.clone(), &manifest, Instant::now() + Duration::from_secs(60));
    let launch = evaluate(&mut warmup);
    drop(warmup.into_records());
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let mut run = ToolSession::new(registry.clone(), &manifest, Instant::now() + Duration::from_secs(60));
        first.push(evaluate(&mut run));
        later.push(evaluate(&mut run));
        drop(run.into_records());
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1e3
    };
    let (first, later) = (median(&mut first), median(&mut later));
    println!("browser start and first context: {:.1} ms", launch.as_secs_f64() * 1e3);
    println!("first call of a run (fresh context): median {first:.1} ms over {RUNS} runs");
    println!("later call in the same run:          median {later:.1} ms");
    println!("a fresh context costs:               {:.1} ms", first - later);
}
