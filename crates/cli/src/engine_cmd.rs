//! `wasmagent engine build python`: a Python engine with declared packages (crate `wasmagent-engine-build`).

use anyhow::Context;
use std::path::{Path, PathBuf};
use wasmagent_engine_build::{PythonBuild, build_python_engine};

/// Builds the engine, writes it and its provenance (`OUT.json`), and prints its digest.
pub(crate) fn build_python(
    requirements: &Path,
    out: &Path,
    find_links: Option<PathBuf>,
    python: PathBuf,
) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(requirements)
        .with_context(|| format!("cannot read the requirements file {}", requirements.display()))?;
    let build = PythonBuild { requirements: requirements.to_owned(), find_links, python };
    eprintln!("wasmagent: installing the packages and importing them into the engine…");
    let built = build_python_engine(&build)?;
    for (module, error) in &built.failed {
        eprintln!("wasmagent: warning: {module} could not be imported and is not in the engine: {error}");
    }
    std::fs::write(out, &built.wasm).with_context(|| format!("cannot write {}", out.display()))?;
    let mut provenance_path = out.as_os_str().to_owned();
    provenance_path.push(".json");
    let provenance = serde_json::to_string_pretty(&built.provenance(&build, &text))? + "\n";
    std::fs::write(&provenance_path, provenance)
        .with_context(|| format!("cannot write {}", Path::new(&provenance_path).display()))?;
    let installed: Vec<String> = built.installed.iter().map(|i| format!("{}=={}", i.name, i.version)).collect();
    eprintln!(
        "wasmagent: wrote {} ({} bytes; {} modules imported from {})",
        out.display(),
        built.wasm.len(),
        built.imported.len(),
        installed.join(", ")
    );
    println!("{}", built.digest);
    Ok(0)
}
