//! Who is calling: JWT bearer tokens (HS256, RS256, EdDSA; one algorithm pinned per key) or static API keys
//! (stored hashed, compared in constant time). Scopes: `runs:write`, `runs:read`, `agents:run`,
//! `admin`.

use crate::config::{AuthConfig, JwtKeyConfig};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Scope needed to start runs.
pub const SCOPE_WRITE: &str = "runs:write";
/// Scope needed to read runs.
pub const SCOPE_READ: &str = "runs:read";
/// Scope needed to start agent runs, read them and answer their approvals (`/v1/agent-runs`).
pub const SCOPE_AGENTS: &str = "agents:run";
/// Scope needed for operator views (the webhook dead-letter list, whose URLs may carry tokens).
pub const SCOPE_ADMIN: &str = "admin";
/// Scope of `POST /v1/approvals`: approving an access for a subject's next run.
pub const SCOPE_APPROVALS: &str = "approvals:write";
/// How far in the future a token's `nbf` may be.
const NBF_SKEW_SECS: u64 = 60;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub` of the token, or the API key's subject.
    pub subject: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

impl Principal {
    /// Whether `scope` was granted.
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a request was not authenticated (401) or not authorised (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed: 403.
    #[error("{0}")]
    Forbidden(String),
}

/// Checks credentials against the configured keys.
pub struct Authenticator {
    jwt_keys: Vec<JwtKey>,
    api_keys: Vec<ApiKey>,
    issuer: Option<String>,
    audience: Vec<String>,
    /// Development mode: every request is the subject `anonymous` with every scope.
    insecure_anonymous: bool,
}

struct JwtKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

struct ApiKey {
    sha256: [u8; 32],
    subject: String,
    scopes: Vec<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[allow(dead_code, reason = "jsonwebtoken validates it; declaring it makes a non-numeric `exp` a parse error")]
    exp: u64,
    nbf: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

impl Authenticator {
    /// Loads the keys named in `config`. `insecure_anonymous` turns authentication off (development only).
    pub fn new(config: &AuthConfig, insecure_anonymous: bool) -> Result<Self, String> {
        let mut jwt_keys = Vec::new();
        for (i, key) in config.jwt_keys.iter().enumerate() {
            load_jwt_key(key, &mut jwt_keys).map_err(|e| format!("auth.jwt_keys[{i}]: {e}"))?;
        }
        let mut api_keys = Vec::new();
        for (i, key) in config.api_keys.iter().enumerate() {
            let field = format!("auth.api_keys[{i}]");
            let bytes = hex::decode(&key.sha256).map_err(|_| format!("{field}.sha256 must be hex"))?;
            let sha256: [u8; 32] = bytes.try_into().map_err(|_| format!("{field}.sha256 must be 32 bytes of hex"))?;
            if key.subject.is_empty() {
                return Err(format!("{field}.subject must not be empty"));
            }
            api_keys.push(ApiKey { sha256, subject: key.subject.clone(), scopes: key.scopes.clone() });
        }
        Ok(Authenticator {
            jwt_keys,
            api_keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            insecure_anonymous,
        })
    }

    /// Whether any credential could ever be accepted.
    pub fn has_credentials(&self) -> bool {
        !self.jwt_keys.is_empty() || !self.api_keys.is_empty()
    }

    /// The caller of a request with this `Authorization` header value (or `X-Api-Key`), holding `scope`.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        api_key: Option<&str>,
        scope: &str,
    ) -> Result<Principal, AuthError> {
        let principal = self.authenticate(authorization, api_key)?;
        if principal.has(scope) {
            Ok(principal)
        } else {
            Err(AuthError::Forbidden(format!("the credentials lack the scope {scope}")))
        }
    }

    fn authenticate(&self, authorization: Option<&str>, api_key: Option<&str>) -> Result<Principal, AuthError> {
        if self.insecure_anonymous {
            let scopes = vec![
                SCOPE_WRITE.into(),
                SCOPE_READ.into(),
                SCOPE_ADMIN.into(),
                SCOPE_AGENTS.into(),
                SCOPE_APPROVALS.into(),
            ];
            return Ok(Principal { subject: "anonymous".into(), scopes });
        }
        let unauthenticated = |m: &str| AuthError::Unauthenticated(m.to_owned());
        let token = match (authorization, api_key) {
            (Some(header), _) => header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))
                .ok_or_else(|| unauthenticated("the Authorization header must be `Bearer <token>`"))?
                .trim(),
            (None, Some(key)) => return self.api_key(key.trim()),
            (None, None) => return Err(unauthenticated("credentials required: send `Authorization: Bearer <token>`")),
        };
        if token.split('.').count() == 3 { self.jwt(token) } else { self.api_key(token) }
    }

    fn api_key(&self, key: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compare against every key, in constant time each, so timing reveals neither which key nor how much
        // of one matched.
        let mut found = None;
        for candidate in &self.api_keys {
            if bool::from(candidate.sha256.ct_eq(&digest)) {
                found = Some(candidate);
            }
        }
        found
            .map(|k| Principal { subject: k.subject.clone(), scopes: k.scopes.clone() })
            .ok_or_else(|| AuthError::Unauthenticated("the API key is not valid".into()))
    }

    fn jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let invalid = |m: String| AuthError::Unauthenticated(format!("the token is not valid: {m}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        let candidates: Vec<&JwtKey> = self
            .jwt_keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&k.kid, &header.kid) {
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(invalid(format!("no key on this server verifies {:?} tokens with this kid", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
        }
        let mut last_error = String::new();
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return principal_from(data.claims).map_err(invalid),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(invalid(last_error))
    }
}

fn principal_from(claims: Claims) -> Result<Principal, String> {
    if claims.sub.is_empty() {
        return Err("`sub` must be a non-empty string".into());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if claims.nbf.is_some_and(|nbf| nbf > now + NBF_SKEW_SECS) {
        return Err("`nbf` is in the future".into());
    }
    let mut scopes: Vec<String> = claims.scope.iter().flat_map(|s| s.split_whitespace().map(str::to_owned)).collect();
    scopes.extend(claims.scopes.unwrap_or_default());
    Ok(Principal { subject: claims.sub, scopes })
}

fn load_jwt_key(config: &JwtKeyConfig, keys: &mut Vec<JwtKey>) -> Result<(), String> {
    let alg = match config.alg.as_str() {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "EdDSA" => Algorithm::EdDSA,
        other => return Err(format!("alg {other:?} is not supported; use HS256, RS256 or EdDSA")),
    };
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let kid = config.kid.clone();
    match (alg, &config.secret_env, &config.secret_file, &config.public_key_file, &config.jwks_file) {
        (Algorithm::HS256, Some(var), None, None, None) => {
            let secret = std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
            push_secret(keys, kid, secret.into_bytes())
        }
        (Algorithm::HS256, None, Some(path), None, None) => {
            let mut secret = read(path)?;
            while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                secret.pop();
            }
            push_secret(keys, kid, secret)
        }
        (Algorithm::HS256, ..) => Err("HS256 needs exactly one of secret_env or secret_file".into()),
        (_, None, None, Some(path), None) => {
            let pem = read(path)?;
            let key =
                if alg == Algorithm::RS256 { DecodingKey::from_rsa_pem(&pem) } else { DecodingKey::from_ed_pem(&pem) }
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            keys.push(JwtKey { kid, alg, key });
            Ok(())
        }
        (_, None, None, None, Some(path)) => {
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_slice(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
            let before = keys.len();
            for (i, jwk) in set.keys.iter().enumerate() {
                let matches = matches!(
                    (&jwk.algorithm, alg),
                    (jsonwebtoken::jwk::AlgorithmParameters::RSA(_), Algorithm::RS256)
                        | (jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
                );
                if !matches {
                    continue;
                }
                // A key of the configured type that cannot be used is an error, not a key silently missing.
                let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                    let name =
                        jwk.common.key_id.as_deref().map_or_else(|| "without a kid".to_owned(), |k| format!("{k:?}"));
                    format!("{}: key {i} ({name}) cannot be used: {e}", path.display())
                })?;
                keys.push(JwtKey { kid: jwk.common.key_id.clone().or(kid.clone()), alg, key });
            }
            if keys.len() == before {
                return Err(format!("{}: no {} key in the JWKS", path.display(), config.alg));
            }
            Ok(())
        }
        _ => Err(format!("{} needs exactly one of public_key_file or jwks_file", config.alg)),
    }
}

fn push_secret(keys: &mut Vec<JwtKey>, kid: Option<String>, secret: Vec<u8>) -> Result<(), String> {
    if secret.len() < 32 {
        return Err("an HS256 secret must have at least 32 bytes".into());
    }
    keys.push(JwtKey { kid, alg: Algorithm::HS256, key: DecodingKey::from_secret(&secret) });
    Ok(())
}
