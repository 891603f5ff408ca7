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

/// `wasmagent manifest diff A B`: exit 0 when B grants nothing beyond A, 1 when it does.
pub(crate) fn diff(a: &Path, b: &Path) -> anyhow::Result<u8> {
    // `*` in allowed_hosts is an operator's decision at run time; a reviewer still needs to see it.
    let ceilings = ManifestCeilings { allow_any_public_host: true, ..ManifestCeilings::default() };
    let load = |path: &Path| -> anyhow::Result<wasmagent::EffectiveManifest> {
        let manifest = CapabilityManifest::from_path(path)?;
        manifest.resolve(Path::new("/"), &ceilings).with_context(|| format!("{} is not valid", path.display()))
    };
    let (old, new) = (load(a)?, load(b)?);
    let diff = wasmagent::manifest_diff::diff(&old, &new);
    if diff.widens.is_empty() {
        println!("{} grants nothing beyond {}", b.display(), a.display());
    } else {
        println!("{} grants beyond {}:", b.display(), a.display());
        for line in &diff.widens {
            println!("  {line}");
        }
    }
    if !diff.narrows.is_empty() {
        println!("{} takes away:", b.display());
        for line in &diff.narrows {
            println!("  {line}");
        }
    }
    Ok(if diff.widens.is_empty() { 0 } else { 1 })
}
