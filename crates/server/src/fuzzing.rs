//! The body of the `run_request` fuzz target in `fuzz/` (the JSON body of `POST /v1/runs`, parsed and narrowed
//! under the server's maximum manifest), shared with the regression test that replays `fuzz/seeds/` and
//! `fuzz/regressions/` on the stable toolchain. It panics when an invariant breaks; a refused request is not a
//! failure. Not part of the crate's API.

use crate::api::RunRequestBody;
use crate::runs::prepare;
use std::path::Path;
use std::sync::OnceLock;
use wasmagent::manifest::{Access, fuzzing::check_hosts_within};
use wasmagent::{CapabilityManifest, Code, EffectiveManifest, Language, ManifestCeilings, Tool, ToolRegistry};

/// The maximum manifest used when the input brings none.
const DEFAULT_MAX: &str = r#"
allowed_hosts = ["*.example.com", "https://api.github.com", "10.0.0.1:8080", "[2001:db8::1]"]
allowed_read_paths = ["/usr"]
extra_capabilities = ["tool:github.*", "tool:echo"]
cpu_ms = 2000
fuel = 1000000000
memory_limit_bytes = "256MiB"
max_host_calls = 50
trusted_keys = ["ed25519:1111111111111111111111111111111111111111111111111111111111111111"]
"#;

/// Tool names whose grants are compared; none need to be callable.
const TOOL_NAMES: [&str; 8] =
    ["echo", "git", "github", "github.search", "github.repos.list", "gitx.y", "shell", "a.b.c"];

fn registry() -> &'static ToolRegistry {
    static TOOLS: OnceLock<ToolRegistry> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let mut tools = ToolRegistry::new();
        for name in TOOL_NAMES {
            if let Err(e) = tools.register(Tool::new(name, "", serde_json::Value::Null, Ok)) {
                panic!("{e}");
            }
        }
        tools
    })
}

/// `fuzz/fuzz_targets/run_request.rs`: a request body, optionally followed by a NUL byte and the server's maximum
/// manifest (TOML or JSON; without one, a fixed maximum).
///
/// Invariants: an accepted request's effective manifest lies within the maximum (every limit at most the
/// maximum's, every request the allow-list admits admitted by the maximum's, every mount inside one of its mounts
/// with no more access, every tool it grants granted by the maximum, only the maximum's keys), its echo is accepted
/// again with the same digest, and its run has the language and code asked for; a request without a manifest is
/// never refused for policy.
pub fn run_request(data: &[u8]) {
    let (body, max_text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], std::str::from_utf8(&data[i + 1..]).ok()),
        None => (data, Some(DEFAULT_MAX)),
    };
    let ceilings = ManifestCeilings::default();
    let Some(Ok(max)) =
        max_text.map(|text| CapabilityManifest::from_str_any(text).and_then(|m| m.resolve(Path::new("/"), &ceilings)))
    else {
        return;
    };
    let Ok(request) = serde_json::from_slice::<RunRequestBody>(body) else {
        return;
    };
    let (language, code, module, without_manifest) =
        (request.language.clone(), request.code.clone(), request.module.clone(), request.manifest.is_none());
    let (manifest, run) = match prepare(&ceilings, &max, request) {
        Ok(prepared) => prepared,
        Err(error) => {
            let source_language = matches!(language.as_str(), "js" | "javascript" | "python");
            assert!(
                !(without_manifest && source_language && code.is_some() && module.is_none()),
                "a {language} request without a manifest is refused: {error:?}"
            );
            return;
        }
    };
    check_within(&max, &manifest);

    let echo: CapabilityManifest = serde_json::to_value(&manifest)
        .and_then(serde_json::from_value)
        .unwrap_or_else(|e| panic!("the effective manifest does not load back: {e}"));
    let again = RunRequestBody {
        language: "js".into(),
        code: Some("1+1".into()),
        module: None,
        name: None,
        stdin: None,
        args: Vec::new(),
        manifest: Some(echo),
        run_async: false,
        learn: false,
    };
    match prepare(&ceilings, &max, again) {
        Ok((again, _)) => assert_eq!(again.digest(), manifest.digest(), "the echo narrows to another manifest"),
        Err(e) => panic!("the echo of an accepted manifest is refused: {e:?}"),
    }

    match (run.code(), language.as_str()) {
        (Code::Source { language: Language::Js, text }, "js" | "javascript")
        | (Code::Source { language: Language::Python, text }, "python") => {
            assert_eq!(Some(text), code.as_ref());
        }
        (Code::Wasm(_), "wasm") => assert!(code.is_none() && module.is_some()),
        (other, asked) => panic!("a {asked} request became {other:?}"),
    }
}

fn check_within(max: &EffectiveManifest, request: &EffectiveManifest) {
    let limits = [
        ("cpu_ms", request.cpu_ms(), max.cpu_ms()),
        ("memory_limit_bytes", request.memory_limit_bytes(), max.memory_limit_bytes()),
        ("max_output_bytes", request.max_output_bytes(), max.max_output_bytes()),
        ("max_host_calls", request.max_host_calls(), max.max_host_calls()),
        ("max_http_requests", request.max_http_requests(), max.max_http_requests()),
        ("max_http_request_bytes", request.max_http_request_bytes(), max.max_http_request_bytes()),
        ("max_http_response_bytes", request.max_http_response_bytes(), max.max_http_response_bytes()),
        ("http_timeout_ms", request.http_timeout_ms(), max.http_timeout_ms()),
        ("max_artifact_bytes", request.max_artifact_bytes(), max.max_artifact_bytes()),
    ];
    for (field, asked, allowed) in limits {
        assert!(asked <= allowed, "{field}: {asked} accepted under a maximum of {allowed}");
    }
    if let Some(allowed) = max.fuel() {
        assert!(request.fuel().is_some_and(|f| f <= allowed), "fuel {:?} accepted under {allowed}", request.fuel());
    }
    check_hosts_within(max.allowed_hosts(), request.allowed_hosts());
    for mount in request.mounts() {
        assert!(
            max.mounts().iter().any(|m| mount.host.starts_with(&m.host)
                && (mount.access == Access::ReadOnly || m.access == Access::ReadWrite)),
            "mount {mount:?} is outside the maximum's"
        );
    }
    let tools = registry();
    let (granted, allowed) = (tools.granted_names(request), tools.granted_names(max));
    for name in &granted {
        assert!(
            allowed.contains(name),
            "tool {name} is granted by {:?} but not by the maximum {:?}",
            request.extra_capabilities(),
            max.extra_capabilities()
        );
    }
    for key in request.trusted_keys() {
        assert!(max.trusted_keys().contains(key), "trusted key {key} is not the maximum's");
    }
    assert!(!max.require_signature() || request.require_signature(), "require_signature was dropped");
}
