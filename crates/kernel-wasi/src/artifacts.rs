//! Artifacts: what script guests display (`display.html`, `display.table`, ...), collected per run within the
//! manifest's `max_artifact_bytes` and added to the run report's `artifacts`.
//!
//! Both script kernels hand every `display` call to one [`ArtifactSession`] per run. The size is checked before
//! the content is copied out of guest memory; an artifact over the budget, or past [`REPORT_LISTED_RECORDS`]
//! artifacts, is refused with an `artifact` denial and the run goes on. Malformed calls (an unknown kind, an image
//! type other than PNG, JPEG, GIF or WebP, a table that is not an array of rows) are errors the guest receives.
//!
//! What an artifact's content means is not interpreted here: HTML stays HTML. Showing it safely is the front end's
//! job (the console renders HTML and SVG in sandboxed frames, tables and JSON as text).

use base64::Engine as _;
use wasmagent_kernel::bounds::{REPORT_LISTED_RECORDS, REPORT_TEXT_BYTES, RecordList, cut};
use wasmagent_kernel::{Artifact, ArtifactKind, Denial, RunReport};
use wasmagent_manifest::EffectiveManifest;

/// Image types an `image` artifact may have.
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// Longest title kept; a longer one is cut.
pub const MAX_TITLE_BYTES: usize = 256;

/// What a `display` call led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Displayed {
    /// The artifact is in the report.
    Added,
    /// Refused by a limit (`max_artifact_bytes`, or the number of artifacts): a denial says why.
    Refused,
}

/// An artifact the limits allow, whose content is still to be read ([`ArtifactSession::admit`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted {
    kind: ArtifactKind,
    mime: String,
    len: usize,
}

/// One run's artifacts.
pub struct ArtifactSession {
    limit: u64,
    used: u64,
    artifacts: Vec<Artifact>,
    denials: RecordList<Denial>,
}

impl ArtifactSession {
    /// The session of a run held to `manifest`.
    pub fn new(manifest: &EffectiveManifest) -> Self {
        ArtifactSession {
            limit: manifest.max_artifact_bytes(),
            used: 0,
            artifacts: Vec::new(),
            denials: RecordList::default(),
        }
    }

    /// Adds an artifact of `kind` whose content is `len` bytes, read by `content` only once the limits allow it.
    /// `mime` is only used by images (other kinds have a fixed type). `Err` is why the call is malformed.
    pub fn display(
        &mut self,
        kind: &str,
        mime: &str,
        title: Option<&str>,
        len: usize,
        content: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Displayed, String> {
        match self.admit(kind, mime, len)? {
            Some(admitted) => self.add(admitted, title, content()?).map(|()| Displayed::Added),
            None => Ok(Displayed::Refused),
        }
    }

    /// The first half of [`display`](Self::display), for callers that cannot read the content while holding the
    /// session: checks the call and the limits. `Ok(None)`: refused by a limit, with a denial.
    pub fn admit(&mut self, kind: &str, mime: &str, len: usize) -> Result<Option<Admitted>, String> {
        let kind = parse_kind(kind)?;
        let mime = match kind {
            ArtifactKind::Image => {
                let mime = mime.trim().to_ascii_lowercase();
                if !IMAGE_TYPES.contains(&mime.as_str()) {
                    return Err(format!(
                        "display.image: the type must be one of {} (SVG has display.svg), not {:?}",
                        IMAGE_TYPES.join(", "),
                        cut(&mime, 64)
                    ));
                }
                mime
            }
            other => fixed_mime(other).to_owned(),
        };
        let name = kind.as_str();
        if self.artifacts.len() >= REPORT_LISTED_RECORDS {
            self.deny(
                format!("{name} artifact #{}", self.artifacts.len() + 1),
                format!("a run may display at most {REPORT_LISTED_RECORDS} artifacts"),
            );
            return Ok(None);
        }
        let size = len as u64;
        if self.used.saturating_add(size) > self.limit {
            self.deny(
                format!("{name} artifact of {size} bytes"),
                format!(
                    "max_artifact_bytes is {} bytes per run and {} are used: the artifact would exceed it",
                    self.limit, self.used
                ),
            );
            return Ok(None);
        }
        Ok(Some(Admitted { kind, mime, len }))
    }

    /// The second half of [`display`](Self::display): adds the content of an admitted artifact.
    pub fn add(&mut self, admitted: Admitted, title: Option<&str>, bytes: Vec<u8>) -> Result<(), String> {
        let Admitted { kind, mime, len } = admitted;
        let name = kind.as_str();
        if bytes.len() != len {
            return Err(format!("display.{name}: the content is not the announced {len} bytes"));
        }
        let size = len as u64;
        if self.used.saturating_add(size) > self.limit || self.artifacts.len() >= REPORT_LISTED_RECORDS {
            return Err(format!("display.{name}: the artifact was admitted against an older state of the run"));
        }
        let (text, base64) = match kind {
            ArtifactKind::Image => (None, Some(base64::engine::general_purpose::STANDARD.encode(&bytes))),
            _ => {
                let text = String::from_utf8(bytes).map_err(|_| format!("display.{name}: the content is not UTF-8"))?;
                check_json(kind, &text)?;
                (Some(text), None)
            }
        };
        let title = title.filter(|t| !t.is_empty()).map(|t| cut(t, MAX_TITLE_BYTES));
        self.used += size;
        self.artifacts.push(Artifact { kind, mime, title, text, base64, bytes: size });
        Ok(())
    }

    fn deny(&mut self, target: String, reason: String) {
        let denial = Denial { capability: "artifact".into(), target: cut(&target, REPORT_TEXT_BYTES), reason };
        if !self.denials.items().contains(&denial) {
            self.denials.push(denial);
        }
    }

    /// Puts the artifacts and their denials into `report`, within the report's bounds.
    pub fn finish(self, report: &mut RunReport) {
        let (denials, unlisted) = self.denials.into_parts();
        report.artifacts = self.artifacts;
        report.denials.extend(denials);
        report.unlisted.denials += unlisted;
        report.enforce_bounds();
    }
}

fn parse_kind(kind: &str) -> Result<ArtifactKind, String> {
    Ok(match kind {
        "html" => ArtifactKind::Html,
        "svg" => ArtifactKind::Svg,
        "markdown" => ArtifactKind::Markdown,
        "table" => ArtifactKind::Table,
        "image" => ArtifactKind::Image,
        "json" => ArtifactKind::Json,
        other => return Err(format!("display: unknown artifact kind {:?}", cut(other, 64))),
    })
}

/// The media type of every kind but `image`.
fn fixed_mime(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Html => "text/html",
        ArtifactKind::Svg => "image/svg+xml",
        ArtifactKind::Markdown => "text/markdown",
        ArtifactKind::Table | ArtifactKind::Json | ArtifactKind::Image => "application/json",
    }
}

/// Tables and JSON artifacts must be JSON (a table: an array whose rows are arrays or objects), so every front
/// end can show them as data. Parsing is bounded by `max_artifact_bytes`.
fn check_json(kind: ArtifactKind, text: &str) -> Result<(), String> {
    if !matches!(kind, ArtifactKind::Table | ArtifactKind::Json) {
        return Ok(());
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("display.{}: the content is not JSON: {e}", kind.as_str()))?;
    if kind == ArtifactKind::Table {
        let rows_ok = value.as_array().is_some_and(|rows| rows.iter().all(|r| r.is_array() || r.is_object()));
        if !rows_ok {
            return Err("display.table: rows must be an array of arrays or of objects".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmagent_manifest::{ByteSize, CapabilityManifest, ManifestCeilings};

    fn session(limit: u64) -> ArtifactSession {
        let manifest = CapabilityManifest { max_artifact_bytes: Some(ByteSize(limit)), ..Default::default() }
            .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
            .unwrap();
        ArtifactSession::new(&manifest)
    }

    fn text(s: &str) -> impl FnOnce() -> Result<Vec<u8>, String> + '_ {
        move || Ok(s.as_bytes().to_vec())
    }

    #[test]
    fn artifacts_within_the_limit_are_kept_and_the_next_one_refused_unread() {
        let mut s = session(10);
        assert_eq!(s.display("html", "", Some("t"), 5, text("<b>x<")), Ok(Displayed::Added));
        let refused = s.display("svg", "", None, 6, || panic!("the content of a refused artifact is not read"));
        assert_eq!(refused, Ok(Displayed::Refused));
        assert_eq!(s.display("json", "", None, 5, text("[1,2]")), Ok(Displayed::Added));
        let report_denials = s.denials.items().to_vec();
        assert_eq!(report_denials.len(), 1);
        assert_eq!(report_denials[0].capability, "artifact");
        assert!(report_denials[0].target.contains("6 bytes"), "{:?}", report_denials[0]);
        assert!(report_denials[0].reason.contains("max_artifact_bytes is 10 bytes"), "{:?}", report_denials[0]);
        assert_eq!(s.artifacts[0].mime, "text/html");
        assert_eq!(s.artifacts[0].title.as_deref(), Some("t"));
    }

    #[test]
    fn malformed_calls_are_errors() {
        let mut s = session(1 << 20);
        assert!(s.display("script", "", None, 1, text("x")).is_err());
        assert!(s.display("image", "image/svg+xml", None, 1, text("x")).is_err());
        assert!(s.display("table", "", None, 3, text("[1]")).is_err());
        assert!(s.display("table", "", None, 2, text("{}")).is_err());
        assert!(s.display("json", "", None, 3, text("{x:")).is_err());
        assert!(s.display("html", "", None, 2, || Ok(vec![0xff, 0xfe])).is_err());
        assert!(s.display("html", "", None, 5, text("four")).is_err());
        assert!(s.artifacts.is_empty());
        assert_eq!(s.display("image", " IMAGE/PNG", None, 3, || Ok(vec![0, 1, 2])), Ok(Displayed::Added));
        assert_eq!(s.artifacts[0].base64.as_deref(), Some("AAEC"));
        assert_eq!((s.artifacts[0].mime.as_str(), s.artifacts[0].bytes), ("image/png", 3));
    }

    #[test]
    fn at_most_the_listed_records_bound_of_artifacts() {
        let mut s = session(1 << 20);
        for _ in 0..REPORT_LISTED_RECORDS {
            assert_eq!(s.display("markdown", "", None, 1, text("x")), Ok(Displayed::Added));
        }
        assert_eq!(s.display("markdown", "", None, 1, text("x")), Ok(Displayed::Refused));
        assert_eq!(s.artifacts.len(), REPORT_LISTED_RECORDS);
    }
}
