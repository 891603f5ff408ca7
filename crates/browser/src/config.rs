//! The operator's browser settings (`[browser]` in tools.toml, `--browser` on the command line): which Chromium to
//! run and the limits every run's browser is held to. Nothing here comes from a guest's manifest.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use wasmagent_tools::MAX_TOOL_RESULT_BYTES;

/// Pages (tabs and popups) a run may have open at once, by default.
pub const PAGES_PER_RUN: u32 = 4;
/// Longest a navigation (or a `wait_for` without its own timeout) may take, by default, in milliseconds.
pub const NAVIGATION_TIMEOUT_MS: u64 = 15_000;
/// Largest screenshot PNG, by default.
pub const SCREENSHOT_MAX_BYTES: u64 = 512 * 1024;
/// Most text one `extract` (or the JSON of one `evaluate`) may return, by default.
pub const EXTRACT_MAX_BYTES: u64 = 256 * 1024;
/// The JavaScript heap each page's renderer may use, by default, in MiB.
pub const RENDERER_HEAP_MB: u64 = 1024;
/// The most `renderer_heap_mb` may be set to.
pub const RENDERER_HEAP_MB_CEILING: u64 = 16 * 1024;

/// The largest screenshot that still fits a tool result once base64-encoded (with room for the other fields).
pub const SCREENSHOT_MAX_BYTES_CEILING: u64 = ((MAX_TOOL_RESULT_BYTES as u64) - 4096) / 4 * 3;
/// The most text that still fits a tool result once JSON-escaped (every byte may need up to six).
pub const EXTRACT_MAX_BYTES_CEILING: u64 = (MAX_TOOL_RESULT_BYTES as u64) / 2;

/// Why a browser configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[browser] {field}: {message}")]
pub struct BrowserConfigError {
    field: &'static str,
    message: String,
}

/// How the browser tools run. Every limit is finite; [`BrowserConfig::validate`] refuses limits a tool result could
/// not carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserConfig {
    /// The Chromium binary: a path, or a name looked up on `PATH`. Default `chromium` (Debian's package).
    pub chromium: PathBuf,
    /// Pages a run may have open at once; popups past it are closed as they open. Default 4.
    pub pages_per_run: u32,
    /// Longest a navigation may take, in milliseconds (the run's deadline still applies). Default 15 000.
    pub navigation_timeout_ms: u64,
    /// Largest screenshot PNG in bytes. Default 512 KiB.
    pub screenshot_max_bytes: u64,
    /// Most text one `extract` may return, and the most JSON one `evaluate` may, in bytes. Default 256 KiB.
    pub extract_max_bytes: u64,
    /// The JavaScript heap of each page's renderer, in MiB (V8's `--max-old-space-size`). A page that allocates
    /// past it crashes its renderer: the operation fails with a clear error and the run's next call gets a fresh
    /// context. Default 1024, at most 16384.
    pub renderer_heap_mb: u64,
    /// Where each Chromium's fresh profile directory is made (its `--user-data-dir`, `HOME` and `TMPDIR`); default
    /// the system's temporary directory. Set by the front end (the host's confinement lets Chromium write only
    /// there), never by tools.toml.
    #[serde(skip)]
    pub profile_dir: Option<PathBuf>,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            chromium: PathBuf::from("chromium"),
            pages_per_run: PAGES_PER_RUN,
            navigation_timeout_ms: NAVIGATION_TIMEOUT_MS,
            screenshot_max_bytes: SCREENSHOT_MAX_BYTES,
            extract_max_bytes: EXTRACT_MAX_BYTES,
            renderer_heap_mb: RENDERER_HEAP_MB,
            profile_dir: None,
        }
    }
}

impl BrowserConfig {
    /// Refuses limits of zero and limits a tool result could not carry.
    pub fn validate(&self) -> Result<(), BrowserConfigError> {
        let error = |field, message: String| Err(BrowserConfigError { field, message });
        if self.chromium.as_os_str().is_empty() {
            return error("chromium", "name a binary (a path, or a name on PATH)".into());
        }
        if self.pages_per_run == 0 {
            return error("pages_per_run", "must be at least 1".into());
        }
        if self.navigation_timeout_ms == 0 {
            return error("navigation_timeout_ms", "must be at least 1".into());
        }
        if !(1..=SCREENSHOT_MAX_BYTES_CEILING).contains(&self.screenshot_max_bytes) {
            return error("screenshot_max_bytes", format!("must be 1 to {SCREENSHOT_MAX_BYTES_CEILING}"));
        }
        if !(1..=EXTRACT_MAX_BYTES_CEILING).contains(&self.extract_max_bytes) {
            return error("extract_max_bytes", format!("must be 1 to {EXTRACT_MAX_BYTES_CEILING}"));
        }
        if !(16..=RENDERER_HEAP_MB_CEILING).contains(&self.renderer_heap_mb) {
            return error("renderer_heap_mb", format!("must be 16 to {RENDERER_HEAP_MB_CEILING}"));
        }
        Ok(())
    }

    pub(crate) fn navigation_timeout(&self) -> Duration {
        Duration::from_millis(self.navigation_timeout_ms)
    }

    /// The binary to start: `chromium` as given when it has a directory part, else the first match on `PATH`.
    /// The Chromium binary this configuration names: the path as given, or the first match on `PATH`.
    pub fn executable(&self) -> Result<PathBuf, String> {
        if self.chromium.components().count() > 1 {
            return Ok(self.chromium.clone());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(&self.chromium))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| format!("the browser binary {:?} is not on PATH", self.chromium))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_form_is_read_and_checked() {
        let config: BrowserConfig =
            serde_json::from_value(serde_json::json!({"pages_per_run": 2, "navigation_timeout_ms": 500})).unwrap();
        assert_eq!(config.pages_per_run, 2);
        assert_eq!(config.chromium, PathBuf::from("chromium"));
        assert!(config.validate().is_ok());
        assert!(serde_json::from_value::<BrowserConfig>(serde_json::json!({"pages": 2})).is_err());
        let too_big = BrowserConfig { screenshot_max_bytes: 2 << 20, ..BrowserConfig::default() };
        assert!(too_big.validate().unwrap_err().to_string().contains("screenshot_max_bytes"));
        let none = BrowserConfig { pages_per_run: 0, ..BrowserConfig::default() };
        assert!(none.validate().is_err());
    }
}
