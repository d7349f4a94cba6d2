//! Who is calling. A [`Principal`] is what authentication produces and what every later layer
//! (session binding, policy, audit) consumes; a [`TokenVerifier`] turns a bearer token into one.
//! Nothing here holds or prints a token.

use crate::registry::BoxFuture;

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Authentication is off (local use); every caller is the same anonymous principal.
    Anonymous,
    /// A signed JWT access token.
    Jwt,
    /// An opaque token checked by RFC 7662 introspection.
    Introspection,
    /// A service-account API key.
    ApiKey,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who vouched for this identity: the token issuer (`iss`), or a fixed name for API keys.
    /// Part of the identity: the same `sub` from two issuers is two different users.
    pub issuer: Option<String>,
    /// The tenant, when the identity provider names one (e.g. Entra `tid`).
    pub tenant: Option<String>,
    /// The subject (`sub`).
    pub subject: String,
    /// The OAuth client the token was issued to (`client_id`, `azp`).
    pub client_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Roles from the configured claims.
    pub roles: Vec<String>,
    /// The token id (`jti`), for revocation and audit.
    pub token_id: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// How it authenticated.
    pub method: AuthMethod,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// The token is invalid, expired, not for us, or unknown: HTTP 401 `invalid_token`. The
    /// message is safe to show the client and never contains the token.
    Invalid(String),
    /// The verifier could not decide (identity provider unreachable): fail closed with 503.
    Unavailable(String),
}

/// Turns a bearer token into a principal.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` (the part after `Bearer `).
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthFailure>>;
}

// === impl Principal ===

impl Principal {
    /// The caller when authentication is off.
    pub fn anonymous() -> Self {
        Self {
            issuer: None,
            tenant: None,
            subject: "anonymous".into(),
            client_id: None,
            scopes: Vec::new(),
            roles: Vec::new(),
            token_id: None,
            expires_at: None,
            method: AuthMethod::Anonymous,
        }
    }

    /// The identity a session is bound to, as one string (for counting sessions per owner).
    pub fn owner_key(&self) -> String {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        format!("{}\0{:?}\0{}\0{}\0{}", o(&self.issuer), self.method, o(&self.tenant), self.subject, o(&self.client_id))
    }

    /// True when `other` is the same (issuer, authentication method, tenant, subject, client) —
    /// the identity a session is bound to (2025-11-25 security best practices §Session Hijacking).
    pub fn same_owner(&self, other: &Principal) -> bool {
        self.issuer == other.issuer
            && self.method == other.method
            && self.tenant == other.tenant
            && self.subject == other.subject
            && self.client_id == other.client_id
    }
}
