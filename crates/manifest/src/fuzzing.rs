//! The bodies of the fuzz targets in `fuzz/` that exercise this crate, shared with the regression tests that replay
//! `fuzz/seeds/` and `fuzz/regressions/` on the stable toolchain ([`replay`]). Each takes the fuzzer's bytes and
//! panics when an invariant breaks; a refused input is not a failure. Not part of the crate's API.

use crate::{CapabilityManifest, EffectiveManifest, HostPattern, ManifestCeilings, defaults};
use std::path::Path;

/// Runs `body` on every input of `target` under `fuzz_dir` (`seeds/<target>/`, then `regressions/<target>/`,
/// each in name order, files starting with `.` skipped) and returns how many there were. The input about to run is
/// printed first, so a failing test names it.
pub fn replay(fuzz_dir: &Path, target: &str, body: fn(&[u8])) -> usize {
    let mut replayed = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir.join(kind).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.is_file() && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            eprintln!("replaying {}", path.display());
            body(&data);
            replayed += 1;
        }
    }
    replayed
}

/// `fuzz/fuzz_targets/manifest_toml.rs`: the bytes as a TOML manifest.
pub fn manifest_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        manifest(text, CapabilityManifest::from_toml_str(text), false);
    }
}

/// `fuzz/fuzz_targets/manifest_json.rs`: the bytes as a JSON manifest.
pub fn manifest_json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        manifest(text, CapabilityManifest::from_json_str(text), true);
    }
}

/// A parsed manifest resolves within the ceilings, grants only what it names, and its effective manifest is a
/// manifest again (in JSON and in TOML) that resolves to the same digest.
fn manifest(text: &str, parsed: Result<CapabilityManifest, crate::ManifestError>, json: bool) {
    let Ok(raw) = parsed else {
        return;
    };
    if text.trim_start().starts_with('{') == json {
        let any = CapabilityManifest::from_str_any(text);
        assert_eq!(any.as_ref().ok(), Some(&raw), "from_str_any parses {text:?} differently: {any:?}");
    }
    let ceilings = ManifestCeilings::default();
    let Ok(effective) = raw.resolve(Path::new("/"), &ceilings) else {
        return;
    };
    check_within(&effective, &ceilings);
    assert!(effective.allowed_hosts().len() <= raw.allowed_hosts.len(), "hosts appeared from nowhere");
    assert_eq!(effective.mounts().len(), raw.allowed_read_paths.len() + raw.allowed_write_paths.len());
    assert_eq!(effective.env(), &raw.env);
    for pattern in effective.allowed_hosts() {
        assert_eq!(pattern.to_string().parse::<HostPattern>().as_ref(), Ok(pattern), "{pattern} does not round-trip");
    }

    let echo_json = serde_json::to_string(&effective).unwrap_or_else(|e| panic!("the echo does not serialize: {e}"));
    let again = CapabilityManifest::from_json_str(&echo_json).and_then(|m| m.resolve(Path::new("/"), &ceilings));
    match again {
        Ok(again) => assert_eq!(again.digest(), effective.digest(), "JSON echo {echo_json} resolves differently"),
        Err(e) => panic!("the JSON echo {echo_json} of {text:?} is refused: {e}"),
    }
    let echo_toml = toml::to_string(&effective).unwrap_or_else(|e| panic!("the echo does not serialize as TOML: {e}"));
    let again = CapabilityManifest::from_toml_str(&echo_toml).and_then(|m| m.resolve(Path::new("/"), &ceilings));
    match again {
        Ok(again) => assert_eq!(again.digest(), effective.digest(), "TOML echo {echo_toml} resolves differently"),
        Err(e) => panic!("the TOML echo {echo_toml:?} of {text:?} is refused: {e}"),
    }
}

fn check_within(m: &EffectiveManifest, c: &ManifestCeilings) {
    let limits = [
        ("cpu_ms", m.cpu_ms(), 1, c.cpu_ms),
        ("fuel", m.fuel().unwrap_or(1), 1, c.fuel),
        ("memory_limit_bytes", m.memory_limit_bytes(), defaults::MIN_MEMORY_LIMIT_BYTES, c.memory_limit_bytes),
        ("max_output_bytes", m.max_output_bytes(), 0, c.max_output_bytes),
        ("max_host_calls", m.max_host_calls(), 0, c.max_host_calls),
        ("max_http_requests", m.max_http_requests(), 0, c.max_http_requests),
        ("max_http_request_bytes", m.max_http_request_bytes(), 0, c.max_http_request_bytes),
        ("max_http_response_bytes", m.max_http_response_bytes(), 0, c.max_http_response_bytes),
        ("http_timeout_ms", m.http_timeout_ms(), 1, c.http_timeout_ms),
        ("max_artifact_bytes", m.max_artifact_bytes(), 0, c.max_artifact_bytes),
    ];
    for (field, value, min, max) in limits {
        assert!((min..=max).contains(&value), "{field} = {value} is outside {min}..={max}");
    }
    assert!(!m.require_signature() || !m.trusted_keys().is_empty(), "require_signature without a trusted key");
}

/// `fuzz/fuzz_targets/host_pattern.rs`: up to three lines, two host patterns and a request `SCHEME HOST PORT`.
///
/// A pattern that parses round-trips through its text (also upper-cased), matches the requests it describes, and
/// covers itself; when one pattern covers another, it matches every request the other matches.
pub fn host_pattern(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let patterns: Vec<HostPattern> = lines.by_ref().take(2).filter_map(parse_pattern).collect();
    let request = lines.next().and_then(|line| {
        let mut parts = line.split(' ');
        let (scheme, host, port) = (parts.next()?, parts.next()?, parts.next()?.parse::<u16>().ok()?);
        Some((scheme, host, port))
    });
    for p in &patterns {
        assert!(p.covers(p), "{p} does not cover itself");
        for (scheme, host, port) in p.example_requests() {
            assert!(p.matches(scheme, &host, port), "{p} does not match its own example {scheme}://{host}:{port}");
        }
        assert!(HostPattern::any_public().covers(p));
    }
    for a in &patterns {
        for b in &patterns {
            if !a.covers(b) {
                continue;
            }
            for (scheme, host, port) in b.example_requests() {
                assert!(
                    a.matches(scheme, &host, port),
                    "{a} covers {b} but not {scheme}://{host}:{port}, which {b} allows"
                );
            }
            if let Some((scheme, host, port)) = request
                && b.matches(scheme, host, port)
            {
                assert!(a.matches(scheme, host, port), "{a} covers {b} but not {scheme}://{host}:{port}");
            }
        }
    }
}

fn parse_pattern(text: &str) -> Option<HostPattern> {
    let pattern: HostPattern = text.parse().ok()?;
    let shown = pattern.to_string();
    assert_eq!(shown.parse::<HostPattern>().as_ref(), Ok(&pattern), "{text:?} shown as {shown:?} does not round-trip");
    let upper = text.to_ascii_uppercase();
    assert_eq!(upper.parse::<HostPattern>().as_ref(), Ok(&pattern), "{upper:?} differs from {text:?}");
    Some(pattern)
}

/// Every request a pattern of `request` admits is admitted by a pattern of `max` (what a server's narrowing
/// promises), checked on each pattern's example requests.
pub fn check_hosts_within(max: &[HostPattern], request: &[HostPattern]) {
    for pattern in request {
        for (scheme, host, port) in pattern.example_requests() {
            assert!(
                max.iter().any(|m| m.matches(scheme, &host, port)),
                "{pattern} admits {scheme}://{host}:{port}, which no pattern of the maximum does"
            );
        }
    }
}
