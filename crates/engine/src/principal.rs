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

    /// Whether a principal verified earlier still holds: its token has not expired (and, where
    /// the verifier keeps a revocation list, is not revoked). Long-lived streams ask this at
    /// every keep-alive and close when it fails.
    fn recheck<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, Result<(), AuthFailure>> {
        Box::pin(std::future::ready(principal.check_expiry(std::time::Duration::ZERO)))
    }
}

// === impl Principal ===

impl Principal {
    /// `Err` once the token's `exp` (plus `leeway`, the verifier's allowed clock skew) has passed.
    pub fn check_expiry(&self, leeway: std::time::Duration) -> Result<(), AuthFailure> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        match self.expires_at {
            Some(exp) if exp.saturating_add(leeway.as_secs()) <= now => {
                Err(AuthFailure::Invalid("token expired".into()))
            }
            _ => Ok(()),
        }
    }

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

    /// The user behind the principal — (issuer, tenant, subject), as one string — for what is
    /// bounded per user (sessions): one user registering many OAuth clients, or signing in by
    /// token and by API key, is still one user.
    pub fn user_key(&self) -> String {
        // Length-prefixed, so no value can be read as two.
        let (i, t, s) =
            (self.issuer.as_deref().unwrap_or_default(), self.tenant.as_deref().unwrap_or_default(), &self.subject);
        format!("{}:{i}{}:{t}{}:{s}", i.len(), t.len(), s.len())
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
