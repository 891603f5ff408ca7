use crate::defaults::{self, ManifestCeilings};
use crate::error::ManifestError;
use crate::host_pattern::HostPattern;
use crate::mount::{Access, Mount};
use crate::raw::CapabilityManifest;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// A manifest with every default applied, every limit checked against the operator's ceilings, every mount
/// resolved to a canonical host directory and every host pattern parsed. This is what kernels enforce, and what
/// every run report echoes (with [`EffectiveManifest::digest`]).
///
/// It serializes as a complete manifest that loads back to the same effective manifest.
#[derive(Debug, Clone)]
pub struct EffectiveManifest {
    echo: Echo,
    mounts: Vec<Mount>,
    hosts: Vec<HostPattern>,
    digest: String,
}

/// The serialized form: every field present, `fuel` null when unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Echo {
    allowed_hosts: Vec<String>,
    allowed_read_paths: Vec<String>,
    allowed_write_paths: Vec<String>,
    env: BTreeMap<String, String>,
    cpu_ms: u64,
    fuel: Option<u64>,
    memory_limit_bytes: u64,
    max_output_bytes: u64,
    max_host_calls: u64,
    max_http_requests: u64,
    max_http_request_bytes: u64,
    max_http_response_bytes: u64,
    http_timeout_ms: u64,
    max_artifact_bytes: u64,
    extra_capabilities: Vec<String>,
    trusted_keys: Vec<String>,
    require_signature: bool,
}

impl Serialize for EffectiveManifest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.echo.serialize(serializer)
    }
}

impl CapabilityManifest {
    /// Applies defaults, checks every value and every ceiling, and resolves mounts (relative host paths are taken
    /// from `base`). Errors name the offending field.
    pub fn resolve(&self, base: &Path, ceilings: &ManifestCeilings) -> Result<EffectiveManifest, ManifestError> {
        let cpu_ms = limit("cpu_ms", self.cpu_ms, defaults::CPU_MS, 1, ceilings.cpu_ms)?;
        let fuel = self.fuel.map(|f| limit("fuel", Some(f), f, 1, ceilings.fuel)).transpose()?;
        let memory_limit_bytes = limit(
            "memory_limit_bytes",
            self.memory_limit_bytes.map(|b| b.0),
            defaults::MEMORY_LIMIT_BYTES,
            defaults::MIN_MEMORY_LIMIT_BYTES,
            ceilings.memory_limit_bytes,
        )?;
        let max_output_bytes = limit(
            "max_output_bytes",
            self.max_output_bytes.map(|b| b.0),
            defaults::MAX_OUTPUT_BYTES,
            0,
            ceilings.max_output_bytes,
        )?;
        let max_host_calls =
            limit("max_host_calls", self.max_host_calls, defaults::MAX_HOST_CALLS, 0, ceilings.max_host_calls)?;
        let max_http_requests = limit(
            "max_http_requests",
            self.max_http_requests,
            defaults::MAX_HTTP_REQUESTS,
            0,
            ceilings.max_http_requests,
        )?;
        let max_http_request_bytes = limit(
            "max_http_request_bytes",
            self.max_http_request_bytes.map(|b| b.0),
            defaults::MAX_HTTP_REQUEST_BYTES,
            0,
            ceilings.max_http_request_bytes,
        )?;
        let max_http_response_bytes = limit(
            "max_http_response_bytes",
            self.max_http_response_bytes.map(|b| b.0),
            defaults::MAX_HTTP_RESPONSE_BYTES,
            0,
            ceilings.max_http_response_bytes,
        )?;
        let http_timeout_ms =
            limit("http_timeout_ms", self.http_timeout_ms, defaults::HTTP_TIMEOUT_MS, 1, ceilings.http_timeout_ms)?;
        let max_artifact_bytes = limit(
            "max_artifact_bytes",
            self.max_artifact_bytes.map(|b| b.0),
            defaults::MAX_ARTIFACT_BYTES,
            0,
            ceilings.max_artifact_bytes,
        )?;

        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(ManifestError::invalid(
                    format!("env.{key}"),
                    "variable names must be non-empty and contain neither `=` nor NUL",
                ));
            }
            if value.contains('\0') {
                return Err(ManifestError::invalid(format!("env.{key}"), "values must not contain NUL"));
            }
        }

        let mut hosts: Vec<HostPattern> = Vec::new();
        for (i, text) in self.allowed_hosts.iter().enumerate() {
            let pattern = if text == "*" && ceilings.allow_any_public_host {
                Ok(HostPattern::any_public())
            } else {
                text.parse()
            };
            let pattern: HostPattern = pattern.map_err(|e: crate::HostPatternError| {
                ManifestError::invalid(format!("allowed_hosts[{i}]"), e.to_string())
            })?;
            if !hosts.contains(&pattern) {
                hosts.push(pattern);
            }
        }

        let mut mounts: Vec<(String, Mount)> = Vec::new();
        let grants = [
            ("allowed_read_paths", &self.allowed_read_paths, Access::ReadOnly),
            ("allowed_write_paths", &self.allowed_write_paths, Access::ReadWrite),
        ];
        for (name, specs, access) in grants {
            for (i, spec) in specs.iter().enumerate() {
                let field = format!("{name}[{i}]");
                let mount = Mount::resolve(spec, access, &field, base)?;
                if let Some((other, _)) = mounts.iter().find(|(_, m)| m.guest == mount.guest) {
                    return Err(ManifestError::invalid(
                        field,
                        format!("guest path {} is already mounted by {other}", mount.guest),
                    ));
                }
                mounts.push((field, mount));
            }
        }
        let mounts: Vec<Mount> = mounts.into_iter().map(|(_, m)| m).collect();

        let mut extra_capabilities = Vec::new();
        for (i, grant) in self.extra_capabilities.iter().enumerate() {
            validate_capability(grant).map_err(|m| ManifestError::invalid(format!("extra_capabilities[{i}]"), m))?;
            extra_capabilities.push(grant.clone());
        }
        extra_capabilities.sort();
        extra_capabilities.dedup();

        let mut trusted_keys = Vec::new();
        for (i, key) in self.trusted_keys.iter().enumerate() {
            trusted_keys.push(normalize_key(key).map_err(|m| ManifestError::invalid(format!("trusted_keys[{i}]"), m))?);
        }
        trusted_keys.sort();
        trusted_keys.dedup();
        let require_signature = self.require_signature.unwrap_or(false);
        if require_signature && trusted_keys.is_empty() {
            return Err(ManifestError::invalid(
                "require_signature",
                "no module could ever run: add the signers' public keys to trusted_keys",
            ));
        }

        let specs_for = |access| mounts.iter().filter(|m| m.access == access).map(Mount::spec).collect();
        let echo = Echo {
            allowed_hosts: hosts.iter().map(ToString::to_string).collect(),
            allowed_read_paths: specs_for(Access::ReadOnly),
            allowed_write_paths: specs_for(Access::ReadWrite),
            env: self.env.clone(),
            cpu_ms,
            fuel,
            memory_limit_bytes,
            max_output_bytes,
            max_host_calls,
            max_http_requests,
            max_http_request_bytes,
            max_http_response_bytes,
            http_timeout_ms,
            max_artifact_bytes,
            extra_capabilities,
            trusted_keys,
            require_signature,
        };
        let digest = digest_of(&echo);
        Ok(EffectiveManifest { echo, mounts, hosts, digest })
    }
}

fn limit(field: &str, value: Option<u64>, default: u64, min: u64, ceiling: u64) -> Result<u64, ManifestError> {
    let value = value.unwrap_or(default);
    if value < min {
        return Err(ManifestError::invalid(field, format!("{value} is below the minimum of {min}")));
    }
    if value > ceiling {
        return Err(ManifestError::AboveCeiling { field: field.to_owned(), requested: value, ceiling });
    }
    Ok(value)
}

/// The kinds of grant `extra_capabilities` may hold (`KIND:NAME`). Anything else is refused when the manifest is
/// resolved, so that a misspelt or unsupported grant is an error rather than a grant that silently does nothing.
pub const CAPABILITY_KINDS: &[&str] = &["tool"];

fn validate_capability(grant: &str) -> Result<(), String> {
    let Some((kind, name)) = grant.split_once(':') else {
        return Err(format!("{grant:?} must be written KIND:NAME, for example tool:web_search"));
    };
    if !CAPABILITY_KINDS.contains(&kind) {
        return Err(format!(
            "{grant:?} has the unknown kind {kind:?}; the known kinds are: {}",
            CAPABILITY_KINDS.join(", ")
        ));
    }
    let kind_ok = kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.*:/-".contains(&b));
    if kind_ok && name_ok {
        Ok(())
    } else {
        Err(format!(
            "{grant:?} is not a valid grant: KIND is lower-case letters, digits, `_` or `-`; NAME is letters, digits and `_ . * : / -`"
        ))
    }
}

/// Public keys are written `ed25519:` followed by the 32-byte key in hex (as `wasmagent keygen` prints them).
fn normalize_key(key: &str) -> Result<String, String> {
    let hex_part = key.strip_prefix("ed25519:").ok_or_else(|| format!("{key:?} must start with `ed25519:`"))?;
    let bytes = hex::decode(hex_part).map_err(|_| format!("{key:?}: the key must be hexadecimal"))?;
    if bytes.len() != 32 {
        return Err(format!("{key:?}: an Ed25519 public key has 32 bytes, this one has {}", bytes.len()));
    }
    Ok(format!("ed25519:{}", hex::encode(bytes)))
}

fn digest_of(echo: &Echo) -> String {
    // RFC 8785 canonical JSON, so the digest does not depend on field order or formatting. Serializing this plain
    // struct cannot fail; fall back to serde_json's deterministic output rather than panicking if it ever did.
    let bytes = serde_jcs::to_vec(echo).or_else(|_| serde_json::to_vec(echo)).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

impl EffectiveManifest {
    /// The default manifest: nothing allowed, default limits.
    pub fn deny_all() -> Self {
        // The empty manifest has no paths and default limits, which are within the default ceilings.
        match CapabilityManifest::default().resolve(Path::new("/"), &ManifestCeilings::default()) {
            Ok(m) => m,
            Err(e) => unreachable!("the empty manifest is always valid: {e}"),
        }
    }

    /// `sha256:<hex>` of the RFC 8785 canonical JSON of this effective manifest.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// Resolved mounts, read-only ones first, each in the order written.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }
    /// Parsed `allowed_hosts`.
    pub fn allowed_hosts(&self) -> &[HostPattern] {
        &self.hosts
    }
    /// The guest's entire environment.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.echo.env
    }
    /// Wall-clock deadline in milliseconds.
    pub fn cpu_ms(&self) -> u64 {
        self.echo.cpu_ms
    }
    /// Instruction budget, when set.
    pub fn fuel(&self) -> Option<u64> {
        self.echo.fuel
    }
    /// Memory limit in bytes.
    pub fn memory_limit_bytes(&self) -> u64 {
        self.echo.memory_limit_bytes
    }
    /// Captured output cap per stream, in bytes.
    pub fn max_output_bytes(&self) -> u64 {
        self.echo.max_output_bytes
    }
    /// Host-call cap per run.
    pub fn max_host_calls(&self) -> u64 {
        self.echo.max_host_calls
    }
    /// HTTP requests allowed per run (each redirect hop counts).
    pub fn max_http_requests(&self) -> u64 {
        self.echo.max_http_requests
    }
    /// Largest HTTP request body, in bytes.
    pub fn max_http_request_bytes(&self) -> u64 {
        self.echo.max_http_request_bytes
    }
    /// Largest HTTP response body, in bytes.
    pub fn max_http_response_bytes(&self) -> u64 {
        self.echo.max_http_response_bytes
    }
    /// Longest one HTTP request may take, in milliseconds.
    pub fn http_timeout_ms(&self) -> u64 {
        self.echo.http_timeout_ms
    }
    /// Artifact bytes allowed per run, all artifacts together.
    pub fn max_artifact_bytes(&self) -> u64 {
        self.echo.max_artifact_bytes
    }
    /// Named grants, sorted, without duplicates.
    pub fn extra_capabilities(&self) -> &[String] {
        &self.echo.extra_capabilities
    }
    /// Trusted module-signing keys, each `ed25519:<hex>`, sorted.
    pub fn trusted_keys(&self) -> &[String] {
        &self.echo.trusted_keys
    }
    /// Whether unsigned or untrusted modules are refused.
    pub fn require_signature(&self) -> bool {
        self.echo.require_signature
    }
    /// Whether `extra_capabilities` holds exactly this grant.
    pub fn grants(&self, capability: &str) -> bool {
        self.echo.extra_capabilities.iter().any(|c| c == capability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml: &str) -> Result<EffectiveManifest, ManifestError> {
        CapabilityManifest::from_toml_str(toml)?.resolve(Path::new("/"), &ManifestCeilings::default())
    }

    #[test]
    fn empty_manifest_allows_nothing_and_every_limit_is_finite() {
        let m = resolve("").unwrap();
        assert!(m.mounts().is_empty() && m.allowed_hosts().is_empty() && m.env().is_empty());
        assert!(m.extra_capabilities().is_empty());
        assert_eq!(m.cpu_ms(), defaults::CPU_MS);
        assert_eq!(m.memory_limit_bytes(), defaults::MEMORY_LIMIT_BYTES);
        assert_eq!(m.max_output_bytes(), defaults::MAX_OUTPUT_BYTES);
        assert_eq!(m.max_host_calls(), defaults::MAX_HOST_CALLS);
        assert_eq!(m.fuel(), None);
        assert_eq!(m.max_http_requests(), defaults::MAX_HTTP_REQUESTS);
        assert_eq!(m.max_http_response_bytes(), defaults::MAX_HTTP_RESPONSE_BYTES);
        assert_eq!(m.http_timeout_ms(), defaults::HTTP_TIMEOUT_MS);
        assert_eq!(m.max_artifact_bytes(), defaults::MAX_ARTIFACT_BYTES);
    }

    #[test]
    fn above_ceiling_is_refused_not_clamped() {
        let err = resolve("cpu_ms = 10_000_000").unwrap_err();
        assert_eq!(err.field(), Some("cpu_ms"));
        assert!(err.to_string().contains("ceiling"), "{err}");
        let err = resolve("memory_limit_bytes = \"64GiB\"").unwrap_err();
        assert_eq!(err.field(), Some("memory_limit_bytes"));
        let err = resolve("max_http_response_bytes = \"1GiB\"").unwrap_err();
        assert_eq!(err.field(), Some("max_http_response_bytes"));
        assert_eq!(resolve("max_artifact_bytes = \"1GiB\"").unwrap_err().field(), Some("max_artifact_bytes"));
        assert_eq!(resolve("maxArtifactBytes = \"1MiB\"").unwrap().max_artifact_bytes(), 1 << 20);
        assert_eq!(resolve("http_timeout_ms = 0").unwrap_err().field(), Some("http_timeout_ms"));
    }

    #[test]
    fn zero_and_tiny_limits_are_refused() {
        assert_eq!(resolve("cpu_ms = 0").unwrap_err().field(), Some("cpu_ms"));
        assert_eq!(resolve("fuel = 0").unwrap_err().field(), Some("fuel"));
        assert_eq!(resolve("memory_limit_bytes = 100").unwrap_err().field(), Some("memory_limit_bytes"));
    }

    #[test]
    fn bad_hosts_env_and_grants_name_their_field() {
        assert_eq!(resolve("allowed_hosts = [\"ok.com\", \"*\"]").unwrap_err().field(), Some("allowed_hosts[1]"));
        let open = ManifestCeilings { allow_any_public_host: true, ..ManifestCeilings::default() };
        let m = CapabilityManifest::from_toml_str("allowed_hosts = [\"*\"]")
            .unwrap()
            .resolve(Path::new("/"), &open)
            .unwrap();
        assert!(m.allowed_hosts()[0].matches("https", "anything.example", 443));
        assert_eq!(resolve("env = { \"A=B\" = \"x\" }").unwrap_err().field(), Some("env.A=B"));
        assert_eq!(
            resolve("extra_capabilities = [\"web_search\"]").unwrap_err().field(),
            Some("extra_capabilities[0]")
        );
        let unknown = resolve("extra_capabilities = [\"tool:a\", \"foo:bar\"]").unwrap_err();
        assert_eq!(unknown.field(), Some("extra_capabilities[1]"));
        let message = unknown.to_string();
        assert!(message.contains("\"foo:bar\"") && message.contains("known kinds are: tool"), "{message}");
        assert_eq!(
            resolve("allowed_read_paths = [\"/definitely/not/here\"]").unwrap_err().field(),
            Some("allowed_read_paths[0]")
        );
    }

    #[test]
    fn digest_is_stable_and_changes_with_policy() {
        let a = resolve("cpu_ms = 100\nenv = { A = \"1\", B = \"2\" }").unwrap();
        let b = resolve("env = { B = \"2\", A = \"1\" }\ncpuMs = 100").unwrap();
        let c = resolve("cpu_ms = 101\nenv = { A = \"1\", B = \"2\" }").unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        assert_eq!(a.digest().len(), "sha256:".len() + 64);
    }

    #[test]
    fn effective_manifest_round_trips_through_its_echo() {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("{}:/data", dir.path().display());
        let m = CapabilityManifest {
            allowed_read_paths: vec![spec],
            allowed_hosts: vec!["API.example.com.".into()],
            extra_capabilities: vec!["tool:b".into(), "tool:a".into(), "tool:a".into()],
            ..Default::default()
        }
        .resolve(Path::new("/"), &ManifestCeilings::default())
        .unwrap();
        let json = serde_json::to_string(&m).unwrap();
        let again = CapabilityManifest::from_json_str(&json)
            .unwrap()
            .resolve(Path::new("/"), &ManifestCeilings::default())
            .unwrap();
        assert_eq!(m.digest(), again.digest());
        assert_eq!(m.extra_capabilities(), ["tool:a", "tool:b"]);
        assert_eq!(m.allowed_hosts()[0].to_string(), "api.example.com");
        assert!(json.contains("\"fuel\":null"), "{json}");
    }

    #[test]
    fn trusted_keys_are_validated_and_required_signatures_need_one() {
        let key = format!("ed25519:{}", "AB".repeat(32));
        let m = resolve(&format!("trusted_keys = [\"{key}\"]\nrequire_signature = true")).unwrap();
        assert_eq!(m.trusted_keys(), [key.to_lowercase()]);
        assert!(m.require_signature());
        assert_eq!(resolve("require_signature = true").unwrap_err().field(), Some("require_signature"));
        assert_eq!(resolve("trusted_keys = [\"ed25519:abcd\"]").unwrap_err().field(), Some("trusted_keys[0]"));
        assert_eq!(resolve("trusted_keys = [\"rsa:abcd\"]").unwrap_err().field(), Some("trusted_keys[0]"));
    }

    #[test]
    fn the_same_guest_path_cannot_be_mounted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let err = resolve(&format!("allowed_read_paths = [\"{d}\"]\nallowed_write_paths = [\"{d}\"]")).unwrap_err();
        assert_eq!(err.field(), Some("allowed_write_paths[0]"));
    }
}
