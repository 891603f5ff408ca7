use crate::error::{Format, ManifestError};
use crate::size::ByteSize;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A manifest as written by its author: every field optional, nothing resolved yet.
///
/// Field names are snake_case; the camelCase names of wasmagent-js manifests (`allowedHosts`, `allowedReadPaths`,
/// `allowedWritePaths`, `cpuMs`, `memoryLimitBytes`, `maxOutputBytes`, `maxHostCalls`, `extraCapabilities`) are
/// accepted as aliases. Unknown fields are refused.
///
/// Call [`CapabilityManifest::resolve`] to get the [`EffectiveManifest`](crate::EffectiveManifest) kernels enforce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityManifest {
    /// Hosts guest code may reach through the egress path. Empty (the default) means no network at all.
    /// See [`HostPattern`](crate::HostPattern) for the grammar.
    #[serde(default, alias = "allowedHosts")]
    pub allowed_hosts: Vec<String>,
    /// Host directories the guest may read, mounted read-only at the same absolute path, or at `GUEST` when written
    /// `"HOST:GUEST"`. Relative host paths are relative to the manifest file. Empty (the default) means no files.
    #[serde(default, alias = "allowedReadPaths")]
    pub allowed_read_paths: Vec<String>,
    /// Host directories the guest may read and write; same syntax as `allowed_read_paths`.
    #[serde(default, alias = "allowedWritePaths")]
    pub allowed_write_paths: Vec<String>,
    /// The guest's entire environment. Nothing is ever inherited from the host. Empty by default.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Wall-clock deadline of one run in milliseconds (default [`defaults::CPU_MS`](crate::defaults::CPU_MS)).
    #[serde(default, alias = "cpuMs", skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// Deterministic instruction budget. Unset means only `cpu_ms` bounds the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Memory limit in bytes, or a size string such as `"64MiB"`.
    #[serde(default, alias = "memoryLimitBytes", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub memory_limit_bytes: Option<ByteSize>,
    /// Captured output per stream (stdout, stderr), in bytes or a size string.
    #[serde(default, alias = "maxOutputBytes", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub max_output_bytes: Option<ByteSize>,
    /// Calls from guest code into host tools and bridges per run.
    #[serde(default, alias = "maxHostCalls", skip_serializing_if = "Option::is_none")]
    pub max_host_calls: Option<u64>,
    /// HTTP requests per run, each redirect hop counted (default
    /// [`defaults::MAX_HTTP_REQUESTS`](crate::defaults::MAX_HTTP_REQUESTS)).
    #[serde(default, alias = "maxHttpRequests", skip_serializing_if = "Option::is_none")]
    pub max_http_requests: Option<u64>,
    /// Largest HTTP request body, in bytes or a size string (default 1 MiB).
    #[serde(default, alias = "maxHttpRequestBytes", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub max_http_request_bytes: Option<ByteSize>,
    /// Largest HTTP response body, in bytes or a size string (default 8 MiB).
    #[serde(default, alias = "maxHttpResponseBytes", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub max_http_response_bytes: Option<ByteSize>,
    /// Longest one HTTP request may take, in milliseconds (default 10 000; never longer than the run's deadline).
    #[serde(default, alias = "httpTimeoutMs", skip_serializing_if = "Option::is_none")]
    pub http_timeout_ms: Option<u64>,
    /// Artifacts (`display.*` output) per run, all together, in bytes or a size string (default 4 MiB).
    #[serde(default, alias = "maxArtifactBytes", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub max_artifact_bytes: Option<ByteSize>,
    /// Named grants such as `tool:web_search`. Empty by default.
    #[serde(default, alias = "extraCapabilities")]
    pub extra_capabilities: Vec<String>,
    /// Public keys (`ed25519:<64 hex digits>`) whose module signatures are trusted. Empty by default.
    #[serde(default, alias = "trustedKeys")]
    pub trusted_keys: Vec<String>,
    /// Refuse WebAssembly modules and components that are not signed by one of `trusted_keys`. Default false.
    #[serde(default, alias = "requireSignature", skip_serializing_if = "Option::is_none")]
    pub require_signature: Option<bool>,
}

impl CapabilityManifest {
    /// Parses a TOML manifest. Relative paths stay relative; see [`CapabilityManifest::from_path`].
    pub fn from_toml_str(text: &str) -> Result<Self, ManifestError> {
        toml::from_str(text)
            .map_err(|e| ManifestError::Parse { format: Format::Toml, message: e.to_string().trim_end().to_owned() })
    }

    /// Parses a JSON manifest.
    pub fn from_json_str(text: &str) -> Result<Self, ManifestError> {
        serde_json::from_str(text).map_err(|e| ManifestError::Parse { format: Format::Json, message: e.to_string() })
    }

    /// Parses a manifest in either syntax: JSON when the first non-blank character is `{`, TOML otherwise.
    pub fn from_str_any(text: &str) -> Result<Self, ManifestError> {
        if text.trim_start().starts_with('{') { Self::from_json_str(text) } else { Self::from_toml_str(text) }
    }

    /// Reads a manifest file (`.json` is JSON, anything else is detected as in [`from_str_any`]) and makes its
    /// relative mount paths relative to the file's directory, so a manifest means the same thing from any working
    /// directory.
    ///
    /// [`from_str_any`]: CapabilityManifest::from_str_any
    pub fn from_path(path: &Path) -> Result<Self, ManifestError> {
        let io_error =
            |e: std::io::Error| ManifestError::Io { path: path.display().to_string(), message: e.to_string() };
        let text = std::fs::read_to_string(path).map_err(io_error)?;
        let mut manifest = if path.extension().is_some_and(|e| e == "json") {
            Self::from_json_str(&text)?
        } else {
            Self::from_str_any(&text)?
        };
        let base = std::path::absolute(path).map_err(io_error)?;
        if let Some(dir) = base.parent() {
            manifest.rebase_relative_paths(dir);
        }
        Ok(manifest)
    }

    /// Rewrites relative host paths in the mount lists as paths under `dir`.
    pub fn rebase_relative_paths(&mut self, dir: &Path) {
        for spec in self.allowed_read_paths.iter_mut().chain(self.allowed_write_paths.iter_mut()) {
            let (host, guest) = crate::mount::split_spec(spec);
            if !Path::new(host).is_absolute() {
                let joined = dir.join(host).display().to_string();
                *spec = match guest {
                    Some(g) => format!("{joined}:{g}"),
                    None => joined,
                };
            }
        }
    }

    /// Adds `other` on top of `self`: lists and `env` are extended, scalar limits set in `other` replace those
    /// in `self`. This is how command-line flags add to a manifest file.
    pub fn extend(&mut self, other: CapabilityManifest) {
        self.allowed_hosts.extend(other.allowed_hosts);
        self.allowed_read_paths.extend(other.allowed_read_paths);
        self.allowed_write_paths.extend(other.allowed_write_paths);
        self.env.extend(other.env);
        self.extra_capabilities.extend(other.extra_capabilities);
        self.trusted_keys.extend(other.trusted_keys);
        self.require_signature = other.require_signature.or(self.require_signature);
        self.cpu_ms = other.cpu_ms.or(self.cpu_ms);
        self.fuel = other.fuel.or(self.fuel);
        self.memory_limit_bytes = other.memory_limit_bytes.or(self.memory_limit_bytes);
        self.max_output_bytes = other.max_output_bytes.or(self.max_output_bytes);
        self.max_host_calls = other.max_host_calls.or(self.max_host_calls);
        self.max_http_requests = other.max_http_requests.or(self.max_http_requests);
        self.max_http_request_bytes = other.max_http_request_bytes.or(self.max_http_request_bytes);
        self.max_http_response_bytes = other.max_http_response_bytes.or(self.max_http_response_bytes);
        self.http_timeout_ms = other.http_timeout_ms.or(self.http_timeout_ms);
        self.max_artifact_bytes = other.max_artifact_bytes.or(self.max_artifact_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_wasmagent_js_camel_case_names() {
        let m = CapabilityManifest::from_json_str(
            r#"{"allowedHosts":["api.example.com"],"allowedReadPaths":["/data"],"allowedWritePaths":[],
                "env":{"A":"1"},"cpuMs":100,"memoryLimitBytes":1048576,"extraCapabilities":["tool:x"]}"#,
        )
        .unwrap();
        assert_eq!(m.allowed_hosts, ["api.example.com"]);
        assert_eq!(m.cpu_ms, Some(100));
        assert_eq!(m.memory_limit_bytes, Some(ByteSize(1 << 20)));
        assert_eq!(m.extra_capabilities, ["tool:x"]);
    }

    #[test]
    fn unknown_fields_are_errors_that_name_the_field() {
        let err = CapabilityManifest::from_toml_str("cpu_msx = 5").unwrap_err();
        assert!(err.to_string().contains("cpu_msx"), "{err}");
        let err = CapabilityManifest::from_json_str(r#"{"allowed_host": []}"#).unwrap_err();
        assert!(err.to_string().contains("allowed_host"), "{err}");
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(CapabilityManifest::from_toml_str("cpu_ms = \"fast\"").is_err());
        assert!(CapabilityManifest::from_toml_str("cpu_ms = -1").is_err());
        assert!(CapabilityManifest::from_json_str(r#"{"env": {"A": 1}}"#).is_err());
        assert!(CapabilityManifest::from_json_str(r#"{"cpu_ms": 1, "cpuMs": 2}"#).is_err());
    }

    #[test]
    fn extend_adds_lists_and_overrides_scalars() {
        let mut base = CapabilityManifest::from_toml_str("cpu_ms = 100\nallowed_hosts = [\"a.com\"]").unwrap();
        base.extend(CapabilityManifest {
            cpu_ms: Some(200),
            allowed_hosts: vec!["b.com".into()],
            ..Default::default()
        });
        assert_eq!(base.cpu_ms, Some(200));
        assert_eq!(base.allowed_hosts, ["a.com", "b.com"]);
    }
}
