//! The digest of a guest's sources, recorded in `guests/dist/<name>.provenance.json`. Shared (through `#[path]`)
//! with the kernels' tests, which fail when the committed artifact no longer matches its sources.

use sha2::{Digest, Sha256};
use std::path::Path;

/// `sha256:` over every file under `dir` except build output (`target/`, Python's `__pycache__/`): each file's
/// relative path, length and contents, in path order.
pub(crate) fn source_digest(dir: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for relative in files {
        let bytes = std::fs::read(dir.join(&relative))?;
        hasher.update(relative.as_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n == "target" || n == "__pycache__") {
            continue;
        }
        if path.is_dir() {
            collect(base, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(base) {
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}
