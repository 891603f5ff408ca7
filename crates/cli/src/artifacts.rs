//! `wasmagent run --artifacts DIR`: each artifact of the report written to its own new file.
//!
//! File names come only from the artifact's position and kind (never from anything the guest chose, such as a
//! title), and files are created with `create_new`, so an existing file (or a symlink planted in the directory) is
//! never replaced or followed.

use anyhow::Context;
use base64::Engine as _;
use std::io::Write;
use std::path::Path;
use wasmagent::{Artifact, ArtifactKind};

/// Writes `artifacts` into `dir` (created when missing); returns how many were written.
pub(crate) fn write_all(dir: &Path, artifacts: &[Artifact]) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create --artifacts {}", dir.display()))?;
    for (i, artifact) in artifacts.iter().enumerate() {
        let path = dir.join(file_name(i + 1, artifact));
        let bytes = contents(artifact).with_context(|| format!("artifact {} is malformed", i + 1))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {} (existing files are never replaced)", path.display()))?;
        file.write_all(&bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(artifacts.len())
}

/// `NNN-KIND.EXT`, from the 1-based position and the kind (and, for images, the type the host checked).
pub(crate) fn file_name(position: usize, artifact: &Artifact) -> String {
    let extension = match artifact.kind {
        ArtifactKind::Html => "html",
        ArtifactKind::Svg => "svg",
        ArtifactKind::Markdown => "md",
        ArtifactKind::Table | ArtifactKind::Json => "json",
        ArtifactKind::Image => match artifact.mime.as_str() {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/gif" => "gif",
            "image/webp" => "webp",
            _ => "bin",
        },
    };
    format!("{position:03}-{}.{extension}", artifact.kind.as_str())
}

fn contents(artifact: &Artifact) -> anyhow::Result<Vec<u8>> {
    match (&artifact.text, &artifact.base64) {
        (Some(text), None) => Ok(text.clone().into_bytes()),
        (None, Some(encoded)) => {
            base64::engine::general_purpose::STANDARD.decode(encoded).context("the image is not valid base64")
        }
        _ => anyhow::bail!("an artifact holds exactly one of text and base64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(kind: ArtifactKind, mime: &str, text: Option<&str>, base64: Option<&str>) -> Artifact {
        Artifact {
            kind,
            mime: mime.into(),
            title: Some("../../etc/passwd".into()),
            text: text.map(Into::into),
            base64: base64.map(Into::into),
            bytes: 0,
        }
    }

    #[test]
    fn files_are_named_by_position_and_kind_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = [
            artifact(ArtifactKind::Html, "text/html", Some("<p>hi</p>"), None),
            artifact(ArtifactKind::Image, "image/png", None, Some("AAEC")),
            artifact(ArtifactKind::Table, "application/json", Some("[[1]]"), None),
        ];
        assert_eq!(write_all(dir.path(), &artifacts).unwrap(), 3);
        assert_eq!(std::fs::read_to_string(dir.path().join("001-html.html")).unwrap(), "<p>hi</p>");
        assert_eq!(std::fs::read(dir.path().join("002-image.png")).unwrap(), [0, 1, 2]);
        assert_eq!(std::fs::read_to_string(dir.path().join("003-table.json")).unwrap(), "[[1]]");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let err = write_all(dir.path(), &artifacts[..1]).unwrap_err();
        assert!(format!("{err:#}").contains("never replaced"), "{err:#}");
        assert_eq!(std::fs::read_to_string(dir.path().join("001-html.html")).unwrap(), "<p>hi</p>");
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim");
        std::os::unix::fs::symlink(&target, dir.path().join("001-svg.svg")).unwrap();
        let artifacts = [artifact(ArtifactKind::Svg, "image/svg+xml", Some("<svg/>"), None)];
        assert!(write_all(dir.path(), &artifacts).is_err());
        assert!(!target.exists());
    }
}
