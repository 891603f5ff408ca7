//! Operator secrets in guest requests: `{{secret:NAME}}` in a header value becomes the secret's value only for a
//! request to one of the hosts it is bound to, and any echo of a secret in a response is redacted before the guest
//! sees it. The value never enters guest memory.

use crate::config::Secret;
use crate::session::HttpResponse;
use crate::target::Target;

const OPEN: &str = "{{secret:";
const CLOSE: &str = "}}";

/// The headers with every placeholder replaced, or why a placeholder may not be used for this target.
pub(crate) fn substitute(
    secrets: &[Secret],
    headers: &[(String, String)],
    target: &Target,
) -> Result<Vec<(String, String)>, String> {
    let host = target.host_text();
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let mut text = String::with_capacity(value.len());
        let mut rest = value.as_str();
        while let Some(start) = rest.find(OPEN) {
            text.push_str(&rest[..start]);
            let after = &rest[start + OPEN.len()..];
            let end = after.find(CLOSE).ok_or("an unterminated {{secret:NAME}} placeholder in a header")?;
            let secret_name = &after[..end];
            let secret = secrets
                .iter()
                .find(|s| s.name == secret_name)
                .ok_or_else(|| format!("there is no secret named {secret_name:?}"))?;
            if !secret.hosts.iter().any(|p| p.matches(target.scheme, &host, target.port)) {
                return Err(format!("the secret {secret_name} may not be sent to {host}"));
            }
            text.push_str(&secret.value);
            rest = &after[end + CLOSE.len()..];
        }
        text.push_str(rest);
        out.push((name.clone(), text));
    }
    Ok(out)
}

/// Replaces every secret value in the response's headers and body with `[redacted:NAME]`.
pub(crate) fn redact(secrets: &[Secret], response: &mut HttpResponse) {
    for secret in secrets {
        let marker = format!("[redacted:{}]", secret.name);
        for (_, value) in &mut response.headers {
            if value.contains(&secret.value) {
                *value = value.replace(&secret.value, &marker);
            }
        }
        response.body = replace_bytes(&response.body, secret.value.as_bytes(), marker.as_bytes());
    }
}

fn replace_bytes(haystack: &[u8], needle: &[u8], replacement: &[u8]) -> Vec<u8> {
    let Some(first) = find(haystack, needle) else {
        return haystack.to_vec();
    };
    let mut out = Vec::with_capacity(haystack.len());
    out.extend_from_slice(&haystack[..first]);
    out.extend_from_slice(replacement);
    let mut rest = &haystack[first + needle.len()..];
    while let Some(at) = find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(replacement);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut start = 0;
    while let Some(offset) = haystack[start..=haystack.len() - needle.len()].iter().position(|&b| b == first) {
        let at = start + offset;
        if &haystack[at..at + needle.len()] == needle {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EgressConfig;

    fn config() -> EgressConfig {
        let mut c = EgressConfig::new();
        c.secret("TOKEN", "tok-12345".into(), &["api.example.com"]).unwrap();
        c
    }

    fn headers(value: &str) -> Vec<(String, String)> {
        vec![("authorization".into(), value.into())]
    }

    #[test]
    fn placeholders_are_filled_only_for_bound_hosts() {
        let c = config();
        let bound = Target::parse("https://api.example.com/x").unwrap();
        let out = substitute(c.secrets(), &headers("Bearer {{secret:TOKEN}}"), &bound).unwrap();
        assert_eq!(out[0].1, "Bearer tok-12345");
        let other = Target::parse("https://evil.example.net/").unwrap();
        let err = substitute(c.secrets(), &headers("Bearer {{secret:TOKEN}}"), &other).unwrap_err();
        assert!(err.contains("may not be sent to evil.example.net"), "{err}");
        assert!(substitute(c.secrets(), &headers("{{secret:NOPE}}"), &bound).is_err());
        assert!(substitute(c.secrets(), &headers("{{secret:TOKEN"), &bound).is_err());
    }

    #[test]
    fn echoed_secrets_are_redacted() {
        let c = config();
        let mut response = HttpResponse {
            status: 200,
            url: String::new(),
            redirected: false,
            headers: headers("x tok-12345 y"),
            body: b"atok-12345btok-12345".to_vec(),
        };
        redact(c.secrets(), &mut response);
        assert_eq!(response.headers[0].1, "x [redacted:TOKEN] y");
        assert_eq!(response.body, b"a[redacted:TOKEN]b[redacted:TOKEN]");
    }
}
