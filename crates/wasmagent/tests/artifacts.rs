//! Artifacts from guest code: `display.*` in JavaScript and `from wasmagent import display` in Python, collected in
//! the report's `artifacts` within `max_artifact_bytes`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{error_of, manifest, run, value_of};
use serde_json::json;
use wasmagent::{Artifact, ArtifactKind, Language, Outcome, RunReport};

fn js(toml: &str, code: &str) -> RunReport {
    run(&manifest(toml), Language::Js, "script.js", code)
}

fn python(toml: &str, code: &str) -> RunReport {
    run(&manifest(toml), Language::Python, "script.py", code)
}

/// An artifact's kind, mime, title, text, base64 and size, for comparing whole lists at once.
type Summary<'a> = (ArtifactKind, &'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>, u64);

fn summary(artifacts: &[Artifact]) -> Vec<Summary<'_>> {
    artifacts
        .iter()
        .map(|a| (a.kind, a.mime.as_str(), a.title.as_deref(), a.text.as_deref(), a.base64.as_deref(), a.bytes))
        .collect()
}

/// What both languages' six calls below must produce, in order.
fn expected_six() -> Vec<Summary<'static>> {
    vec![
        (ArtifactKind::Html, "text/html", Some("page"), Some("<p>é</p>"), None, 9),
        (ArtifactKind::Svg, "image/svg+xml", None, Some("<svg/>"), None, 6),
        (ArtifactKind::Markdown, "text/markdown", None, Some("# Title"), None, 7),
        (ArtifactKind::Table, "application/json", Some("rows"), Some(r#"[{"a":1},{"a":2}]"#), None, 17),
        (ArtifactKind::Image, "image/png", None, None, Some("iVBORz0="), 5),
        (ArtifactKind::Json, "application/json", None, Some(r#"{"k":[1,null]}"#), None, 14),
    ]
}

#[test]
fn javascript_displays_every_kind_in_order() {
    let report = js(
        "",
        r##"
        const added = [
          display.html('<p>é</p>', 'page'),
          display.svg('<svg/>'),
          display.markdown('# Title'),
          display.table([{a: 1}, {a: 2}], 'rows'),
          display.image(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x3d]), 'image/png'),
          display.json({k: [1, null]}),
        ];
        added
        "##,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value, json!([true, true, true, true, true, true]));
    assert_eq!(summary(&report.artifacts), expected_six());
    assert!(report.denials.is_empty(), "{report:?}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["artifacts"][0],
        json!({"kind": "html", "mime": "text/html", "title": "page", "text": "<p>é</p>", "bytes": 9})
    );
}

#[test]
fn python_displays_every_kind_in_order() {
    let report = python(
        "",
        r##"
from wasmagent import display
[
    display.html("<p>é</p>", title="page"),
    display.svg("<svg/>"),
    display.markdown("# Title"),
    display.table([{"a": 1}, {"a": 2}], "rows"),
    display.image(bytes([0x89, 0x50, 0x4E, 0x47, 0x3D]), "image/png"),
    display.json({"k": [1, None]}),
]
"##,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value, json!([true, true, true, true, true, true]));
    let mut expected = expected_six();
    // Python's json.dumps puts a space after separators.
    expected[3].3 = Some(r#"[{"a": 1}, {"a": 2}]"#);
    expected[3].5 = 20;
    expected[5].3 = Some(r#"{"k": [1, null]}"#);
    expected[5].5 = 16;
    assert_eq!(summary(&report.artifacts), expected);
}

/// Enforces: js.max_artifact_bytes
#[test]
fn javascript_artifacts_past_max_artifact_bytes_are_refused_and_the_run_goes_on() {
    let report = js(
        "max_artifact_bytes = 100",
        r#"
        const first = display.html('x'.repeat(80));
        const second = display.svg('y'.repeat(50));
        const third = display.json('z'.repeat(10));
        [first, second, third]
        "#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value, json!([true, false, true]));
    let kinds: Vec<ArtifactKind> = report.artifacts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ArtifactKind::Html, ArtifactKind::Json]);
    let denial = report.denials.iter().find(|d| d.capability == "artifact").expect("an artifact denial");
    assert!(denial.target.contains("svg artifact of 50 bytes"), "{denial:?}");
    assert!(denial.reason.contains("max_artifact_bytes is 100 bytes"), "{denial:?}");
}

/// Enforces: python.max_artifact_bytes
#[test]
fn python_artifacts_past_max_artifact_bytes_are_refused_and_the_run_goes_on() {
    let report = python(
        "max_artifact_bytes = 100",
        r#"
from wasmagent import display
[display.html("x" * 80), display.image(b"\x00" * 50, "image/gif"), display.markdown("z" * 20)]
"#,
    );
    assert_eq!(report.outcome, Outcome::Ok, "{report:?}");
    assert_eq!(report.value, json!([true, false, true]));
    let kinds: Vec<ArtifactKind> = report.artifacts.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ArtifactKind::Html, ArtifactKind::Markdown]);
    let denial = report.denials.iter().find(|d| d.capability == "artifact").expect("an artifact denial");
    assert!(denial.target.contains("image artifact of 50 bytes"), "{denial:?}");
    assert!(denial.reason.contains("max_artifact_bytes is 100 bytes"), "{denial:?}");
}

#[test]
fn malformed_display_calls_are_catchable_errors() {
    let caught = value_of(
        Language::Js,
        "script.js",
        r#"
        const errors = [];
        for (const f of [() => display.image(new Uint8Array(3), 'image/svg+xml'), () => display.table(5),
                         () => display.table([1, 2]), () => display.image('text', 'image/png'),
                         () => display.json({f() {}, g: () => 1, h: 1n})]) {
          try { f(); errors.push('no error'); } catch (e) { errors.push(e.name); }
        }
        errors
        "#,
    );
    assert_eq!(caught, json!(["TypeError", "TypeError", "TypeError", "TypeError", "TypeError"]));
    let caught = value_of(
        Language::Python,
        "script.py",
        r#"
from wasmagent import display
errors = []
for f in [lambda: display.image(b"x", "image/svg+xml"), lambda: display.table(5), lambda: display.table([1]),
          lambda: display.html(b"bytes"), lambda: display.json({1, 2}), lambda: display.svg("<svg/>", title=3)]:
    try:
        f()
        errors.append("no error")
    except Exception as e:
        errors.append(type(e).__name__)
errors
"#,
    );
    assert_eq!(caught, json!(["ValueError", "TypeError", "TypeError", "TypeError", "TypeError", "TypeError"]));
    let (_, message) =
        error_of(&manifest(""), Language::Js, "script.js", "display.image(new Uint8Array(1), 'text/html')");
    assert!(message.contains("image/png, image/jpeg, image/gif, image/webp"), "{message}");
}

#[test]
fn a_run_that_fails_keeps_the_artifacts_it_displayed() {
    let report = js("", "display.markdown('before'); throw new Error('after')");
    assert_eq!(report.outcome, Outcome::Error, "{report:?}");
    assert_eq!(report.artifacts.len(), 1);
    assert_eq!(report.artifacts[0].text.as_deref(), Some("before"));
}
