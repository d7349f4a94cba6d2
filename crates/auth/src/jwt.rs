//! JWT access-token verification for one issuer: algorithm allowlist, key selection, signature,
//! `iss`, `aud`, `exp`, `nbf` (with leeway), then claims mapped to a [`Principal`].
//!
//! A key is only ever used with its own algorithm family: a shared secret only with HS*, public
//! keys never with HS* (the HS/RS confusion attack), and `none` is not an algorithm at all.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use portcullis_engine::{AuthMethod, Principal};
use serde_json::{Map, Value};

use crate::jwks::Jwks;

/// Where an issuer's verification keys come from.
pub enum IssuerKeys {
    /// A shared HMAC secret (HS256/384/512 only).
    Secret(DecodingKey),
    /// Public keys from PEM files (RSA, EC or Ed25519), tried in order when the token names no
    /// known `kid`.
    Pem(Vec<DecodingKey>),
    /// A JWKS endpoint.
    Jwks(Arc<Jwks>),
}

/// Which claims carry tenant, roles and scopes. Paths are dotted (`realm_access.roles`).
#[derive(Debug, Clone)]
pub struct ClaimMapping {
    /// The tenant claim (e.g. Entra `tid`), if any.
    pub tenant: Option<String>,
    /// Role claims; each may be an array of strings or one string.
    pub roles: Vec<String>,
    /// Scope claims; a string is split on spaces (`scope`), an array taken as is (`scp`).
    pub scopes: Vec<String>,
}

/// One trusted issuer.
pub struct Issuer {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    keys: IssuerKeys,
    claims: ClaimMapping,
}

/// Why a JWT was refused. Messages are for the client: they never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts, bad JSON, or an unknown `alg` (including `none`).
    #[error("malformed token")]
    Malformed,
    /// The `alg` is not allowed for this issuer.
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    /// No key with the token's `kid`, even after refreshing the key set.
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid token signature")]
    Signature,
    /// `exp` is past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` does not name this server.
    #[error("token audience does not include this server")]
    Audience,
    /// `iss` is not this issuer.
    #[error("token issuer not accepted")]
    Issuer,
    /// A required claim is missing.
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// The issuer's keys could not be fetched.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// Anything else wrong with the token.
    #[error("invalid token")]
    Invalid,
    /// Introspection says the token is not active (revoked, expired or unknown).
    #[error("token is not active")]
    Inactive,
    /// The issuer configuration is unusable.
    #[error("{0}")]
    Config(String),
}

// === impl Issuer ===

impl Issuer {
    /// Configures an issuer. Refuses empty allowlists and algorithms that do not fit the keys.
    pub fn new(
        issuer: String,
        audiences: Vec<String>,
        algorithms: Vec<Algorithm>,
        leeway: Duration,
        keys: IssuerKeys,
        claims: ClaimMapping,
    ) -> Result<Self, JwtError> {
        if algorithms.is_empty() {
            return Err(JwtError::Config(format!("issuer {issuer}: no algorithms allowed")));
        }
        if audiences.is_empty() {
            return Err(JwtError::Config(format!("issuer {issuer}: no audiences")));
        }
        let hmac = |a: &Algorithm| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        match keys {
            IssuerKeys::Secret(_) if !algorithms.iter().all(hmac) => {
                return Err(JwtError::Config(format!(
                    "issuer {issuer}: a shared secret allows only HS256/HS384/HS512"
                )));
            }
            IssuerKeys::Pem(_) | IssuerKeys::Jwks(_) if algorithms.iter().any(hmac) => {
                return Err(JwtError::Config(format!(
                    "issuer {issuer}: HS* algorithms need a shared secret, never public keys"
                )));
            }
            _ => {}
        }
        Ok(Self { issuer, audiences, algorithms, leeway, keys, claims })
    }

    /// The `iss` value this issuer signs with.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The clock skew allowed on `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Verifies `token` and maps its claims.
    pub async fn verify(&self, token: &str) -> Result<Principal, JwtError> {
        let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway.as_secs();
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&self.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = match &self.keys {
            IssuerKeys::Secret(key) => check(token, key, &v)?,
            IssuerKeys::Jwks(jwks) => {
                let key = jwks.key(header.kid.as_deref(), header.alg).await?;
                check(token, &key, &v)?
            }
            IssuerKeys::Pem(keys) => {
                let mut last = JwtError::Signature;
                let mut found = None;
                for key in keys {
                    match check(token, key, &v) {
                        Ok(c) => {
                            found = Some(c);
                            break;
                        }
                        Err(e @ (JwtError::Signature | JwtError::Invalid)) => last = e,
                        Err(e) => return Err(e),
                    }
                }
                found.ok_or(last)?
            }
        };
        principal(&claims, &self.claims)
    }
}

fn check(token: &str, key: &DecodingKey, v: &Validation) -> Result<Map<String, Value>, JwtError> {
    use jsonwebtoken::errors::ErrorKind as K;
    decode::<Map<String, Value>>(token, key, v).map(|d| d.claims).map_err(|e| match e.kind() {
        K::InvalidSignature => JwtError::Signature,
        K::ExpiredSignature => JwtError::Expired,
        K::ImmatureSignature => JwtError::NotYetValid,
        K::InvalidAudience => JwtError::Audience,
        K::InvalidIssuer => JwtError::Issuer,
        K::MissingRequiredClaim(c) => JwtError::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "iss" => "iss",
            "aud" => "aud",
            "sub" => "sub",
            _ => "required",
        }),
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => JwtError::Malformed,
        _ => JwtError::Invalid,
    })
}

/// Reads `iss` from the payload without verifying anything (to pick the issuer to verify with).
pub fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&bytes).ok().map(|i| i.iss)
}

fn principal(claims: &Map<String, Value>, mapping: &ClaimMapping) -> Result<Principal, JwtError> {
    let subject = claims.get("sub").and_then(Value::as_str).ok_or(JwtError::MissingClaim("sub"))?.to_owned();
    map_claims(claims, mapping, subject)
}

/// Maps claims (from a JWT or an introspection answer) to a principal for `subject`.
pub(crate) fn map_claims(
    claims: &Map<String, Value>,
    mapping: &ClaimMapping,
    subject: String,
) -> Result<Principal, JwtError> {
    let client_id =
        ["client_id", "azp", "cid"].iter().find_map(|k| claims.get(*k).and_then(Value::as_str)).map(str::to_owned);
    let mut scopes = Vec::new();
    for path in &mapping.scopes {
        match lookup(claims, path) {
            Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(a)) => scopes.extend(a.iter().filter_map(Value::as_str).map(str::to_owned)),
            _ => {}
        }
    }
    let mut roles = Vec::new();
    for path in &mapping.roles {
        match lookup(claims, path) {
            Some(Value::String(s)) => roles.push(s.clone()),
            Some(Value::Array(a)) => roles.extend(a.iter().filter_map(Value::as_str).map(str::to_owned)),
            _ => {}
        }
    }
    scopes.sort();
    scopes.dedup();
    roles.sort();
    roles.dedup();
    Ok(Principal {
        issuer: claims.get("iss").and_then(Value::as_str).map(str::to_owned),
        tenant: mapping.tenant.as_deref().and_then(|p| lookup(claims, p)).and_then(Value::as_str).map(str::to_owned),
        subject,
        client_id,
        scopes,
        roles,
        token_id: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        expires_at: claims.get("exp").and_then(Value::as_u64),
        method: AuthMethod::Jwt,
    })
}

fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self { tenant: None, roles: vec!["roles".into()], scopes: vec!["scope".into(), "scp".into()] }
    }
}
