//! The operator's maximum manifest and the requests under it: a request's manifest may only narrow the maximum.
//! Scalar limits a request leaves unset are the maximum's; lists it leaves empty grant nothing.
//!
//! A request's paths are checked against the maximum's directories as written, before the manifest is resolved:
//! resolving looks paths up on the host, and a request must not learn (or make the server touch) anything outside
//! the directories the operator granted. After resolution every grant is checked again on the canonical paths, so a
//! symlink inside a granted directory that leads out of it is refused too.

use std::path::{Component, Path, PathBuf};
use wasmagent::manifest::{Access, Mount};
use wasmagent::{CapabilityManifest, EffectiveManifest, ManifestCeilings, ManifestError, capability_covers};

/// Why a request's manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PolicyError {
    /// Malformed or invalid (400).
    Invalid(String),
    /// Asks for more than the maximum manifest allows (403); `field` names what.
    Exceeds { field: String, message: String },
}

/// Resolves a request's manifest against the sandbox's `ceilings`, under `max`, and checks it only narrows `max`.
pub(crate) fn request_manifest(
    ceilings: &ManifestCeilings,
    max: &EffectiveManifest,
    mut raw: CapabilityManifest,
) -> Result<EffectiveManifest, PolicyError> {
    raw.cpu_ms = raw.cpu_ms.or(Some(max.cpu_ms()));
    raw.fuel = raw.fuel.or(max.fuel());
    raw.memory_limit_bytes = raw.memory_limit_bytes.or(Some(wasmagent::manifest::ByteSize(max.memory_limit_bytes())));
    raw.max_output_bytes = raw.max_output_bytes.or(Some(wasmagent::manifest::ByteSize(max.max_output_bytes())));
    raw.max_host_calls = raw.max_host_calls.or(Some(max.max_host_calls()));
    raw.max_http_requests = raw.max_http_requests.or(Some(max.max_http_requests()));
    raw.max_http_request_bytes =
        raw.max_http_request_bytes.or(Some(wasmagent::manifest::ByteSize(max.max_http_request_bytes())));
    raw.max_http_response_bytes =
        raw.max_http_response_bytes.or(Some(wasmagent::manifest::ByteSize(max.max_http_response_bytes())));
    raw.http_timeout_ms = raw.http_timeout_ms.or(Some(max.http_timeout_ms()));
    raw.max_artifact_bytes = raw.max_artifact_bytes.or(Some(wasmagent::manifest::ByteSize(max.max_artifact_bytes())));
    raw.require_signature = raw.require_signature.or(Some(max.require_signature()));
    if raw.trusted_keys.is_empty() {
        raw.trusted_keys = max.trusted_keys().to_vec();
    }
    paths_within(max, &raw)?;
    let manifest = raw.resolve(Path::new("/"), ceilings).map_err(|e| match e {
        ManifestError::AboveCeiling { ref field, .. } => {
            PolicyError::Exceeds { field: field.clone(), message: e.to_string() }
        }
        other => PolicyError::Invalid(other.to_string()),
    })?;
    narrows(max, &manifest)?;
    Ok(manifest)
}

/// Checks, without touching the filesystem, that every path `raw` asks for lies inside a directory of `max` that
/// grants the access asked for. Paths with `..` are refused here: only their lookup could say where they lead.
fn paths_within(max: &EffectiveManifest, raw: &CapabilityManifest) -> Result<(), PolicyError> {
    let grants = [
        ("allowed_read_paths", &raw.allowed_read_paths, Access::ReadOnly),
        ("allowed_write_paths", &raw.allowed_write_paths, Access::ReadWrite),
    ];
    for (name, specs, access) in grants {
        for (i, spec) in specs.iter().enumerate() {
            let field = format!("{name}[{i}]");
            let written = Mount::written_host(spec, Path::new("/"));
            if written.components().any(|c| c == Component::ParentDir) {
                return Err(exceeds(&field, format!("{} contains `..`; name the directory itself", written.display())));
            }
            let host: PathBuf = written.components().filter(|c| *c != Component::CurDir).collect();
            let inside = max
                .mounts()
                .iter()
                .any(|m| host.starts_with(&m.host) && (access == Access::ReadOnly || m.access == Access::ReadWrite));
            if !inside {
                let granted: Vec<String> = max
                    .mounts()
                    .iter()
                    .filter(|m| access == Access::ReadOnly || m.access == Access::ReadWrite)
                    .map(|m| m.host.display().to_string())
                    .collect();
                let granted = if granted.is_empty() { "none".to_owned() } else { granted.join(", ") };
                return Err(exceeds(
                    &field,
                    format!("{} is not within the server's grants (directories granted: {granted})", host.display()),
                ));
            }
        }
    }
    Ok(())
}

fn exceeds(field: &str, message: String) -> PolicyError {
    PolicyError::Exceeds { field: field.to_owned(), message: format!("{field}: {message}") }
}

/// Checks that every grant of `request` is within `max` and every limit at most `max`'s.
pub(crate) fn narrows(max: &EffectiveManifest, request: &EffectiveManifest) -> Result<(), PolicyError> {
    for (i, pattern) in request.allowed_hosts().iter().enumerate() {
        if !max.allowed_hosts().iter().any(|m| m.covers(pattern)) {
            return Err(exceeds(
                &format!("allowed_hosts[{i}]"),
                format!("{pattern} is not within the server's allowed_hosts"),
            ));
        }
    }
    for mount in request.mounts() {
        let inside = max.mounts().iter().any(|m| {
            mount.host.starts_with(&m.host) && (mount.access == Access::ReadOnly || m.access == Access::ReadWrite)
        });
        if !inside {
            let field = if mount.access == Access::ReadOnly { "allowed_read_paths" } else { "allowed_write_paths" };
            return Err(exceeds(field, format!("{} is not within the server's grants", mount.host.display())));
        }
    }
    let limits: [(&str, u64, u64); 10] = [
        ("cpu_ms", request.cpu_ms(), max.cpu_ms()),
        ("memory_limit_bytes", request.memory_limit_bytes(), max.memory_limit_bytes()),
        ("max_output_bytes", request.max_output_bytes(), max.max_output_bytes()),
        ("max_host_calls", request.max_host_calls(), max.max_host_calls()),
        ("max_http_requests", request.max_http_requests(), max.max_http_requests()),
        ("max_http_request_bytes", request.max_http_request_bytes(), max.max_http_request_bytes()),
        ("max_http_response_bytes", request.max_http_response_bytes(), max.max_http_response_bytes()),
        ("http_timeout_ms", request.http_timeout_ms(), max.http_timeout_ms()),
        ("max_artifact_bytes", request.max_artifact_bytes(), max.max_artifact_bytes()),
        ("fuel", request.fuel().unwrap_or(u64::MAX), max.fuel().unwrap_or(u64::MAX)),
    ];
    for (field, asked, allowed) in limits {
        if asked > allowed {
            return Err(exceeds(field, format!("{asked} is more than the server allows ({allowed})")));
        }
    }
    for (i, grant) in request.extra_capabilities().iter().enumerate() {
        if !max.extra_capabilities().iter().any(|m| capability_covers(m, grant)) {
            return Err(exceeds(&format!("extra_capabilities[{i}]"), format!("{grant} is not granted by the server")));
        }
    }
    for (i, key) in request.trusted_keys().iter().enumerate() {
        if !max.trusted_keys().contains(key) {
            return Err(exceeds(&format!("trusted_keys[{i}]"), "only the server's trusted keys may be used".into()));
        }
    }
    if max.require_signature() && !request.require_signature() {
        return Err(exceeds("require_signature", "the server requires signed modules".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effective(toml: &str) -> EffectiveManifest {
        CapabilityManifest::from_toml_str(toml)
            .unwrap_or_else(|e| panic!("{e}"))
            .resolve(Path::new("/"), &wasmagent::ManifestCeilings::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn field(max: &str, request: &str) -> Option<String> {
        match narrows(&effective(max), &effective(request)) {
            Ok(()) => None,
            Err(PolicyError::Exceeds { field, .. }) => Some(field),
            Err(PolicyError::Invalid(m)) => panic!("{m}"),
        }
    }

    #[test]
    fn narrower_requests_pass_and_wider_ones_name_the_field() {
        let max = "allowed_hosts = [\"*.example.com\"]\ncpu_ms = 2000\nextra_capabilities = [\"tool:github.*\"]";
        assert_eq!(
            field(
                max,
                "allowed_hosts = [\"api.example.com\"]\ncpu_ms = 1000\nextra_capabilities = [\"tool:github.search\"]"
            ),
            None
        );
        assert_eq!(field(max, "allowed_hosts = [\"evil.com\"]\ncpu_ms = 1000").as_deref(), Some("allowed_hosts[0]"));
        assert_eq!(field(max, "cpu_ms = 3000").as_deref(), Some("cpu_ms"));
        assert_eq!(
            field(max, "cpu_ms = 1000\nextra_capabilities = [\"tool:shell\"]").as_deref(),
            Some("extra_capabilities[0]")
        );
        assert_eq!(
            field("cpu_ms = 100", "cpu_ms = 100\nmemory_limit_bytes = \"1GiB\"").as_deref(),
            Some("memory_limit_bytes")
        );
        assert_eq!(
            field("extra_capabilities = [\"tool:github*\"]", "extra_capabilities = [\"tool:github.*\"]").as_deref(),
            Some("extra_capabilities[0]"),
            "`tool:github*` grants no tool, so it cannot cover `tool:github.*`"
        );
        assert_eq!(field("fuel = 10", "fuel = 11").as_deref(), Some("fuel"));
        assert_eq!(field("fuel = 10", "").as_deref(), Some("fuel"), "no fuel at all is more than a fuel budget");
    }

    fn request(max: &str, request: &str) -> Result<EffectiveManifest, PolicyError> {
        let raw = CapabilityManifest::from_toml_str(request).unwrap_or_else(|e| panic!("{e}"));
        request_manifest(&ManifestCeilings::default(), &effective(max), raw)
    }

    #[test]
    fn request_paths_outside_the_maximum_are_refused_before_they_are_looked_up() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let granted = dir.path().join("granted");
        std::fs::create_dir(&granted).unwrap_or_else(|e| panic!("{e}"));
        let max = format!("allowed_read_paths = [\"{}\"]", granted.display());
        // Resolving these would fail with "cannot be used" (they do not exist): a refusal naming the grants shows
        // that the request was judged before any lookup, so it learns nothing about the host's files.
        for (asked, field) in [
            ("/definitely/not/here".to_owned(), "allowed_read_paths[0]"),
            (format!("{}/../elsewhere", granted.display()), "allowed_read_paths[0]"),
            (format!("{}-sibling", granted.display()), "allowed_read_paths[0]"),
        ] {
            match request(&max, &format!("allowed_read_paths = [\"{asked}\"]")) {
                Err(PolicyError::Exceeds { field: f, message }) => {
                    assert_eq!(f, field, "{asked}: {message}");
                    assert!(!message.contains("cannot be used"), "{asked} was looked up: {message}");
                }
                other => panic!("{asked}: {other:?}"),
            }
        }
        match request(&max, &format!("allowed_write_paths = [\"{}\"]", granted.display())) {
            Err(PolicyError::Exceeds { field, .. }) => assert_eq!(field, "allowed_write_paths[0]"),
            other => panic!("a write under a read grant: {other:?}"),
        }
        // Inside the grant the path is resolved as usual: a missing directory is reported by the lookup.
        match request(&max, &format!("allowed_read_paths = [\"{}/missing\"]", granted.display())) {
            Err(PolicyError::Invalid(message)) => assert!(message.contains("cannot be used"), "{message}"),
            other => panic!("{other:?}"),
        }
        let inside = request(&max, &format!("allowed_read_paths = [\"{}/.\"]", granted.display()));
        assert!(inside.is_ok(), "{inside:?}");
    }

    #[test]
    fn mounts_must_lie_inside_the_servers_and_writes_need_write_grants() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap_or_else(|e| panic!("{e}"));
        let (d, s) = (dir.path().display(), sub.display());
        assert_eq!(field(&format!("allowed_read_paths = [\"{d}\"]"), &format!("allowed_read_paths = [\"{s}\"]")), None);
        assert_eq!(
            field(&format!("allowed_read_paths = [\"{d}\"]"), &format!("allowed_write_paths = [\"{s}\"]")).as_deref(),
            Some("allowed_write_paths")
        );
        assert_eq!(
            field(&format!("allowed_read_paths = [\"{s}\"]"), &format!("allowed_read_paths = [\"{d}\"]")).as_deref(),
            Some("allowed_read_paths")
        );
    }
}
