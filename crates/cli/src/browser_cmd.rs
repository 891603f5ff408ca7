//! `--browser` on `run` and `mcp`, and `[browser]` in the tools file: the browser tools (`wasmagent-browser`) added
//! to the front end's tool registry, with a profile directory the host's confinement lets Chromium write.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmagent::{EgressConfig, ToolRegistry};
use wasmagent_browser::{BrowserConfig, BrowserTools};
use wasmagent_toolbox::ToolsFile;

/// The browser settings when the browser tools are on: `--browser` (its value names Chromium) or a `[browser]`
/// table in the tools file (its limits; with both, the flag's Chromium wins). `None` when neither is given.
pub(crate) fn config(flag: Option<&Path>, tools: Option<&Path>) -> anyhow::Result<Option<BrowserConfig>> {
    let table = match tools {
        Some(path) => ToolsFile::from_path(path)?.browser,
        None => None,
    };
    let mut config = match (flag, table) {
        (None, None) => return Ok(None),
        (_, Some(table)) => toml::Value::Table(table).try_into().context("the tools file's [browser] table")?,
        (Some(_), None) => BrowserConfig::default(),
    };
    if let Some(chromium) = flag {
        config.chromium = chromium.to_path_buf();
    }
    let profiles = std::env::temp_dir().join("wasmagent-browser");
    std::fs::create_dir_all(&profiles).with_context(|| format!("cannot create {}", profiles.display()))?;
    config.profile_dir = Some(profiles);
    config.validate()?;
    let chromium = config.executable().map_err(anyhow::Error::msg).context("--browser")?;
    if !chromium.is_file() {
        anyhow::bail!("--browser: the browser binary {} does not exist", chromium.display());
    }
    Ok(Some(config))
}

/// The Chromium binary and the profile directory the host's confinement must let it use.
pub(crate) fn confinement_paths(config: &BrowserConfig) -> anyhow::Result<(PathBuf, PathBuf)> {
    let executable = config.executable().map_err(anyhow::Error::msg)?;
    let profiles = config.profile_dir.clone().unwrap_or_else(std::env::temp_dir);
    Ok((executable, profiles))
}

/// Adds the browser tools to `registry`; they hold every page's traffic to the run's manifest through `egress`.
pub(crate) fn register(
    config: BrowserConfig,
    egress: &EgressConfig,
    registry: &mut ToolRegistry,
) -> anyhow::Result<()> {
    let browser = BrowserTools::new(config, egress.clone(), Arc::new(wasmagent_egress::SystemResolver))
        .context("starting the browser tools")?;
    browser.register(registry).context("adding the browser tools")?;
    Ok(())
}
