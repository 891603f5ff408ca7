//! HTTP tools: each call is one request (plus redirects) through the egress policy, under a manifest that allows
//! only the template's host, with the operator's secrets substituted host-side.

use crate::ToolboxError;
use crate::file::{DEFAULT_TIMEOUT_MS, HttpToolSpec};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmagent::bounds::cut;
use wasmagent::egress::{Egress, HttpRequest, MAX_REDIRECTS};
use wasmagent::manifest::ByteSize;
use wasmagent::{CapabilityManifest, EffectiveManifest, ManifestCeilings, Tool, ToolResult};

/// Characters left as they are in a substituted placeholder: RFC 3986 unreserved.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Longest part of an error response body quoted back to the caller.
const ERROR_EXCERPT_CHARS: usize = 500;
/// Longest part of a URL quoted back to the caller (arguments fill it, up to the tool-argument cap).
const URL_EXCERPT_BYTES: usize = 1024;

/// The methods an HTTP tool may use, and whether the arguments go in a JSON body.
pub(crate) fn method(method: &str) -> Result<(&'static str, bool), String> {
    match method.to_ascii_uppercase().as_str() {
        "GET" => Ok(("GET", false)),
        "HEAD" => Ok(("HEAD", false)),
        "DELETE" => Ok(("DELETE", false)),
        "POST" => Ok(("POST", true)),
        "PUT" => Ok(("PUT", true)),
        "PATCH" => Ok(("PATCH", true)),
        other => Err(format!("{other:?} is not one of GET, HEAD, DELETE, POST, PUT, PATCH")),
    }
}

/// A URL with `{name}` placeholders after its host.
#[derive(Debug, Clone)]
pub(crate) struct UrlTemplate {
    /// Literal text and placeholder names, alternating: `Ok(literal)` or `Err(name)`.
    parts: Vec<Result<String, String>>,
    /// `scheme://host[:port]` of the template, for the tool's `allowed_hosts`.
    origin: String,
}

impl UrlTemplate {
    pub(crate) fn parse(template: &str) -> Result<Self, String> {
        let (scheme, rest) = template.split_once("://").ok_or("not an absolute URL (http:// or https://)")?;
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
            return Err(format!("{template:?}: the scheme must be http or https"));
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if rest[..authority_end].contains(['{', '}']) {
            return Err(format!("{template:?}: placeholders may not appear in the host"));
        }
        let mut parts = Vec::new();
        let mut text = template;
        while let Some(open) = text.find('{') {
            let close = text[open..].find('}').map(|i| open + i).ok_or_else(|| {
                format!("{template:?}: a placeholder is not closed (write {{name}}, e.g. /items/{{id}})")
            })?;
            let name = &text[open + 1..close];
            if !wasmagent::is_valid_tool_name(name) || name.contains('.') {
                return Err(format!("{template:?}: {{{name}}} is not a placeholder name (letters, digits, `_`)"));
            }
            parts.push(Ok(text[..open].to_owned()));
            parts.push(Err(name.to_owned()));
            text = &text[close + 1..];
        }
        if text.contains('}') {
            return Err(format!("{template:?}: an unmatched `}}` (placeholders are {{name}})"));
        }
        parts.push(Ok(text.to_owned()));
        // Parse a sample to check the rest of the URL and learn the origin.
        let sample: String = parts.iter().map(|p| p.as_deref().unwrap_or("x")).collect();
        let url = url::Url::parse(&sample).map_err(|e| format!("{template:?}: {e}"))?;
        let host = url.host_str().ok_or_else(|| format!("{template:?}: no host"))?;
        let origin = match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        Ok(UrlTemplate { parts, origin })
    }

    /// The placeholder names, in order.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| p.as_ref().err().map(String::as_str))
    }

    /// The URL with each placeholder replaced by its percent-encoded argument; the arguments used are removed.
    fn fill(&self, args: &mut Map<String, Value>) -> Result<String, String> {
        let mut url = String::new();
        for part in &self.parts {
            match part {
                Ok(literal) => url.push_str(literal),
                Err(name) => {
                    let value = args.remove(name).ok_or_else(|| format!("missing argument {name:?}"))?;
                    let text = scalar_text(&value)
                        .ok_or_else(|| format!("argument {name:?} must be a string, number or boolean"))?;
                    url.extend(utf8_percent_encode(&text, UNRESERVED));
                }
            }
        }
        Ok(url)
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A configured HTTP tool, ready to call.
pub(crate) struct HttpTool {
    name: String,
    method: &'static str,
    json_body: bool,
    template: UrlTemplate,
    headers: Vec<(String, String)>,
    manifest: EffectiveManifest,
    timeout: Duration,
    egress: Arc<Egress>,
}

impl HttpTool {
    pub(crate) fn new(
        spec: &HttpToolSpec,
        base: &Path,
        ceilings: &ManifestCeilings,
        egress: Arc<Egress>,
    ) -> Result<Self, ToolboxError> {
        let at = |e: String| ToolboxError::new(format!("[[http]] {:?}: {e}", spec.name));
        let template = UrlTemplate::parse(&spec.url).map_err(at)?;
        let (method, json_body) = method(&spec.method).map_err(at)?;
        let timeout_ms = spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        let manifest = CapabilityManifest {
            allowed_hosts: vec![template.origin.clone()],
            cpu_ms: Some(timeout_ms),
            http_timeout_ms: Some(timeout_ms),
            max_http_requests: Some(u64::from(MAX_REDIRECTS) + 1),
            max_http_response_bytes: spec.max_response_bytes.map(|b| ByteSize(b.0)),
            ..CapabilityManifest::default()
        }
        .resolve(base, ceilings)
        .map_err(|e| at(format!("its manifest is refused: {e}")))?;
        Ok(HttpTool {
            name: spec.name.clone(),
            method,
            json_body,
            template,
            headers: spec.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            manifest,
            timeout: Duration::from_millis(timeout_ms),
            egress,
        })
    }

    /// The JSON schema published when the file gives none: one required string per placeholder.
    pub(crate) fn default_schema(spec: &HttpToolSpec) -> Value {
        let template = UrlTemplate::parse(&spec.url).ok();
        let names: Vec<&str> = template.as_ref().map(|t| t.placeholders().collect()).unwrap_or_default();
        let properties: Map<String, Value> =
            names.iter().map(|n| ((*n).to_owned(), serde_json::json!({"type": "string"}))).collect();
        serde_json::json!({"type": "object", "properties": properties, "required": names})
    }

    /// The tool as the registry holds it.
    pub(crate) fn into_tool(self, description: String, schema: Value) -> Tool {
        let name = self.name.clone();
        Tool::new(name, description, schema, move |args| self.call(args))
    }

    fn call(&self, args: Value) -> ToolResult {
        let Value::Object(mut args) = args else {
            return Err(format!("{} takes an object of named arguments", self.name));
        };
        let mut url = self.template.fill(&mut args)?;
        let mut headers = self.headers.clone();
        let mut body = Vec::new();
        if self.json_body {
            body = serde_json::to_vec(&args).map_err(|e| format!("cannot encode the arguments: {e}"))?;
            headers.push(("content-type".into(), "application/json".into()));
        } else if !args.is_empty() {
            let mut parsed = url::Url::parse(&url)
                .map_err(|e| format!("the URL {:?} is not valid: {e}", cut(&url, URL_EXCERPT_BYTES)))?;
            {
                let mut query = parsed.query_pairs_mut();
                for (key, value) in &args {
                    match value {
                        Value::Null => {}
                        other => {
                            let text = scalar_text(other).unwrap_or_else(|| other.to_string());
                            query.append_pair(key, &text);
                        }
                    }
                }
            }
            url = parsed.into();
        }
        let session = self.egress.session(&self.manifest, Instant::now() + self.timeout);
        let request = HttpRequest { method: self.method.to_owned(), url, headers, body };
        let response = session.fetch_blocking(request).map_err(|e| e.message)?;
        let content_type = response
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default();
        if response.status >= 400 {
            let text = String::from_utf8_lossy(&response.body);
            let excerpt: String = text.chars().take(ERROR_EXCERPT_CHARS).collect();
            let url = cut(&response.url, URL_EXCERPT_BYTES);
            return Err(format!("{url} answered HTTP {}: {excerpt}", response.status));
        }
        if (content_type.contains("json") || content_type.is_empty())
            && let Ok(value) = serde_json::from_slice(&response.body)
        {
            return Ok(value);
        }
        Ok(Value::String(String::from_utf8_lossy(&response.body).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_fill_placeholders_percent_encoded_and_keep_the_rest() {
        let template = UrlTemplate::parse("https://api.example.com:8443/v1/{owner}/items?q={q}").unwrap();
        assert_eq!(template.origin, "https://api.example.com:8443");
        assert_eq!(template.placeholders().collect::<Vec<_>>(), ["owner", "q"]);
        let mut args = json!({"owner": "a/b c", "q": 3, "extra": true}).as_object().unwrap().clone();
        assert_eq!(template.fill(&mut args).unwrap(), "https://api.example.com:8443/v1/a%2Fb%20c/items?q=3");
        assert_eq!(args.keys().collect::<Vec<_>>(), ["extra"]);
        let mut missing = Map::new();
        assert!(template.fill(&mut missing).unwrap_err().contains("missing argument \"owner\""));
        let mut object = json!({"owner": {"x": 1}, "q": 1}).as_object().unwrap().clone();
        assert!(template.fill(&mut object).unwrap_err().contains("string, number or boolean"));
    }

    #[test]
    fn a_default_schema_lists_the_placeholders() {
        let spec: HttpToolSpec = toml::from_str("name = \"w\"\nurl = \"https://x.example/{city}/{day}\"").unwrap();
        assert_eq!(
            HttpTool::default_schema(&spec),
            json!({"type": "object", "properties": {"city": {"type": "string"}, "day": {"type": "string"}},
                   "required": ["city", "day"]})
        );
    }
}
