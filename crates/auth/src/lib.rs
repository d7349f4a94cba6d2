//! Authentication: bearer credentials in, a [`Principal`] out.
//!
//! - [`jwt`]: JWT access tokens signed with a shared secret (HS*) or public keys (RS*, PS*, ES*,
//!   EdDSA) from PEM files or a JWKS URL, with per-issuer algorithm allowlists and `iss`/`aud`/
//!   `exp`/`nbf` checks.
//! - [`jwks`]: the JWKS cache — HTTP cache headers bounded by a max age; an unknown `kid`
//!   triggers at most one refetch per interval, single-flight.
//! - [`cache`]: verified tokens by SHA-256 of the token, until their expiry.
//!
//! [`Authenticator`] ties them together and implements the engine's `TokenVerifier`. Nothing in
//! this crate logs, returns or formats a token; errors say what was wrong, not what was sent.

pub mod apikey;
pub mod cache;
pub mod dev;
pub mod introspect;
pub mod jwks;
pub mod jwt;
pub mod revocation;

use std::sync::Arc;
use std::time::Duration;

use portcullis_engine::{AuthFailure, BoxFuture, Principal, TokenVerifier};

pub use apikey::ApiKey;
pub use cache::TokenCache;
pub use dev::DevKey;
pub use introspect::Introspection;
pub use jwks::{Jwks, JwksOptions};
pub use jwt::{ClaimMapping, Issuer, IssuerKeys, JwtError};
pub use revocation::{RevocationError, Revocations, Revoke};

/// Tokens longer than this are refused before any parsing (a real access token is a few KB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies bearer tokens against the configured issuers, with a verified-token cache.
pub struct Authenticator {
    issuers: Vec<Issuer>,
    api_keys: Vec<ApiKey>,
    introspection: Option<Introspection>,
    revocations: Option<Arc<Revocations>>,
    cache: TokenCache,
}

// === impl Authenticator ===

impl Authenticator {
    /// An authenticator over `issuers`; `cache_ttl` bounds how long a verified token is trusted
    /// without re-verification (never past its `exp`), `cache_entries` the cache size.
    pub fn new(issuers: Vec<Issuer>, cache_ttl: Duration, cache_entries: usize) -> Self {
        Self {
            issuers,
            api_keys: Vec::new(),
            introspection: None,
            revocations: None,
            cache: TokenCache::new(cache_ttl, cache_entries),
        }
    }

    /// Adds service-account API keys (checked for bearer tokens that are not JWTs).
    #[must_use]
    pub fn with_api_keys(mut self, keys: Vec<ApiKey>) -> Self {
        self.api_keys = keys;
        self
    }

    /// Checks opaque tokens (not JWTs, not API keys) by RFC 7662 introspection.
    #[must_use]
    pub fn with_introspection(mut self, introspection: Introspection) -> Self {
        self.introspection = Some(introspection);
        self
    }

    /// Refuses revoked tokens, subjects and clients, checked on every request (cached ones too).
    #[must_use]
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Verifies one token and checks it is not revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthFailure> {
        let principal = self.verify_token(token).await?;
        if let Some(r) = &self.revocations {
            match r.is_revoked(&principal).await {
                Ok(false) => {}
                Ok(true) => return Err(AuthFailure::Invalid("token revoked".into())),
                // Fail closed: a token whose revocation status is unknown is not accepted.
                Err(e) => return Err(AuthFailure::Unavailable(e.to_string())),
            }
        }
        Ok(principal)
    }

    async fn verify_token(&self, token: &str) -> Result<Principal, AuthFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::Invalid(format!("token longer than {MAX_TOKEN_BYTES} bytes")));
        }
        if let Some(p) = self.cache.get(token) {
            return Ok(p);
        }
        // A JWT has exactly two dots; anything else can only be an API key.
        if token.bytes().filter(|&b| b == b'.').count() != 2 {
            if let Some(p) = apikey::find(&self.api_keys, token) {
                return Ok(p);
            }
            let Some(introspection) = &self.introspection else {
                return Err(AuthFailure::Invalid("unknown API key".into()));
            };
            let principal = introspection.check(token).await.map_err(failure)?;
            self.cache.put(token, &principal);
            return Ok(principal);
        }
        // Route by the unverified `iss`; the signature check below is what makes it trusted.
        let iss = jwt::peek_issuer(token).ok_or_else(|| AuthFailure::Invalid("malformed token".into()))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer() == iss)
            .ok_or_else(|| AuthFailure::Invalid("token issuer not accepted".into()))?;
        let principal = issuer.verify(token).await.map_err(failure)?;
        self.cache.put(token, &principal);
        Ok(principal)
    }
}

fn failure(e: JwtError) -> AuthFailure {
    match e {
        JwtError::Unavailable(m) => AuthFailure::Unavailable(m),
        other => AuthFailure::Invalid(other.to_string()),
    }
}

impl TokenVerifier for Authenticator {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthFailure>> {
        Box::pin(self.authenticate(token))
    }

    fn recheck<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, Result<(), AuthFailure>> {
        Box::pin(async move {
            // The same skew the token was accepted with, so a reconnect with it is refused too.
            let leeway = self
                .issuers
                .iter()
                .find(|i| principal.issuer.as_deref() == Some(i.issuer()))
                .map_or(Duration::ZERO, Issuer::leeway);
            principal.check_expiry(leeway)?;
            if let Some(r) = &self.revocations {
                match r.is_revoked(principal).await {
                    Ok(false) => {}
                    Ok(true) => return Err(AuthFailure::Invalid("token revoked".into())),
                    Err(e) => return Err(AuthFailure::Unavailable(e.to_string())),
                }
            }
            Ok(())
        })
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("issuers", &self.issuers.len()).finish_non_exhaustive()
    }
}

/// The HTTP client for JWKS and introspection: it follows at most 5 redirects and never one
/// from `https` to anything else, so a redirect cannot move key material or client credentials
/// onto plain HTTP.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let previous: Vec<&str> = attempt.previous().iter().map(reqwest::Url::scheme).collect();
            if downgrades(&previous, attempt.url().scheme()) {
                attempt.error("refused a redirect from https to a plain URL")
            } else if attempt.previous().len() > 5 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }))
        .build()
}

/// True when a chain that went through `https` would continue on another scheme.
fn downgrades(previous_schemes: &[&str], next_scheme: &str) -> bool {
    previous_schemes.contains(&"https") && next_scheme != "https"
}

/// Convenience for callers holding an `Arc`.
pub fn shared(a: Authenticator) -> Arc<dyn TokenVerifier> {
    Arc::new(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_never_leaves_https() {
        assert!(downgrades(&["https"], "http"));
        assert!(downgrades(&["http", "https"], "http"), "once on https, always on https");
        assert!(!downgrades(&["https"], "https"));
        assert!(!downgrades(&["http"], "https"));
        assert!(!downgrades(&["http"], "http"), "a plain-HTTP issuer (loopback, dev) may redirect on plain HTTP");
        assert!(http_client().is_ok());
    }
}
