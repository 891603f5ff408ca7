use anyhow::Context;
use std::path::Path;
use wasmagent::{CapabilityManifest, ManifestCeilings};

/// `wasmagent manifest check FILE`.
pub(crate) fn check(file: &Path) -> anyhow::Result<u8> {
    let manifest = CapabilityManifest::from_path(file)?;
    let effective = manifest.resolve(Path::new("/"), &ManifestCeilings::default())?;
    let text = serde_json::to_string_pretty(&effective).context("cannot print the manifest")?;
    println!("{text}");
    eprintln!("wasmagent: {} is valid; effective manifest digest {}", file.display(), effective.digest());
    Ok(0)
}
