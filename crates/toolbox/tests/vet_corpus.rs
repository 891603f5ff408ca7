//! The vetting screen on the committed corpus (`tests/vet-corpus`: benign descriptions in the style of real MCP
//! servers, hostile ones in the style of published tool-poisoning attacks). Prints every finding, computes the
//! detection and false-positive rates, and checks that README states exactly those.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::Value;
use std::path::Path;
use wasmagent_toolbox::vet::{Severity, vet};

fn corpus(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vet-corpus").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The worst severity found in each tool of `tools`, printing every finding.
fn worst(tools: &[Value], label: &str) -> Vec<Option<Severity>> {
    tools
        .iter()
        .map(|tool| {
            let findings = vet(tool["description"].as_str().unwrap(), &tool["input_schema"]);
            for finding in &findings {
                println!("{label} {}: {finding}", tool["name"].as_str().unwrap());
            }
            findings.iter().map(|f| f.severity).max()
        })
        .collect()
}

#[test]
fn the_corpus_rates_are_the_ones_readme_states() {
    let (benign, hostile) = (corpus("benign.json"), corpus("hostile.json"));
    let benign_worst = worst(&benign, "benign");
    let hostile_worst = worst(&hostile, "hostile");
    let count = |worst: &[Option<Severity>], at: Severity| worst.iter().filter(|w| **w == Some(at)).count();
    let flagged = hostile_worst.iter().filter(|w| w.is_some_and(|s| s >= Severity::Medium)).count();
    let missed: Vec<&str> = hostile
        .iter()
        .zip(&hostile_worst)
        .filter(|(_, w)| !w.is_some_and(|s| s >= Severity::Medium))
        .map(|(tool, _)| tool["name"].as_str().unwrap())
        .collect();
    println!("hostile not flagged: {missed:?}");
    let line = format!(
        "On the committed corpus: {flagged} of {} hostile descriptions flagged high or medium, {} of {} benign ones \
         high, {} medium and {} low.",
        hostile.len(),
        count(&benign_worst, Severity::High),
        benign.len(),
        count(&benign_worst, Severity::Medium),
        count(&benign_worst, Severity::Low),
    );
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let unfolded = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        unfolded.contains(&line),
        "README does not state this run's rates; put this in \"Least privilege\":\n{line}"
    );
    assert_eq!(count(&benign_worst, Severity::High), 0, "no benign tool may be disabled by the default policy");
}
