//! `POST /token` and `POST /revoke`, and the grants behind them.
//!
//! - Authorization codes are single-use and short-lived; a second redemption of a code revokes the
//!   tokens the first one produced (OAuth 2.1 §4.1.3), because one of the two callers stole it.
//! - Refresh tokens rotate: each use returns a new one and spends the old. A spent refresh token
//!   presented again revokes its whole family (OAuth 2.1 §4.3.1) — the live refresh token and, via
//!   the revocation list, the access tokens issued in that family.
//! - Codes and refresh tokens are kept as SHA-256 hashes, so the maps never hold a usable secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use portcullis_auth::Revoke;
use serde_json::{Value, json};

use crate::client::{Client, Credentials, Grant};
use crate::error::{OAuthError, no_store};
use crate::{Shared, parse_params, random_token, sha256};

const MAX_CODES: usize = 10_000;
const MAX_REFRESH: usize = 100_000;
/// Token ids remembered per refresh family, to revoke on replay (the newest are kept).
const MAX_FAMILY_JTIS: usize = 64;
/// How long a spent code is remembered, to detect its replay.
const SPENT_CODE_MEMORY: Duration = Duration::from_secs(600);

type Hash = [u8; 32];

/// A pending authorization code.
#[derive(Debug)]
pub(crate) struct Code {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    /// The authorization request named `redirect_uri`, so the token request must repeat it.
    pub(crate) redirect_given: bool,
    pub(crate) challenge: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) resource: Option<String>,
    pub(crate) subject: String,
    pub(crate) expires: Instant,
}

#[derive(Debug)]
struct Refresh {
    client_id: String,
    subject: String,
    scopes: Vec<String>,
    family: u64,
    expires: Instant,
}

/// Everything issued from one authorization code.
#[derive(Debug, Default)]
struct Family {
    jtis: Vec<String>,
    live: Option<Hash>,
    expires: Option<Instant>,
}

/// Pending codes, live refresh tokens and what is needed to detect replays.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    codes: HashMap<Hash, Code>,
    spent_codes: HashMap<Hash, (u64, Instant)>,
    refresh: HashMap<Hash, Refresh>,
    spent_refresh: HashMap<Hash, (u64, Instant)>,
    families: HashMap<u64, Family>,
    next_family: u64,
}

impl Grants {
    fn purge(&mut self, now: Instant) {
        self.codes.retain(|_, c| c.expires > now);
        self.spent_codes.retain(|_, (_, until)| *until > now);
        self.refresh.retain(|_, r| r.expires > now);
        self.spent_refresh.retain(|_, (_, until)| *until > now);
        self.families.retain(|_, f| f.expires.is_none_or(|e| e > now));
    }

    /// Stores a code; false when too many are pending.
    pub(crate) fn add_code(&mut self, hash: Hash, code: Code) -> bool {
        if self.codes.len() >= MAX_CODES {
            self.purge(Instant::now());
            if self.codes.len() >= MAX_CODES {
                return false;
            }
        }
        self.codes.insert(hash, code);
        true
    }

    /// A new refresh family; `None` when too many are live.
    fn new_family(&mut self, now: Instant) -> Option<u64> {
        if self.families.len() >= MAX_REFRESH {
            self.purge(now);
            if self.families.len() >= MAX_REFRESH {
                return None;
            }
        }
        self.next_family += 1;
        self.families.insert(self.next_family, Family::default());
        Some(self.next_family)
    }

    /// Ends a family: its live refresh token is dropped; returns its access tokens' ids.
    fn revoke_family(&mut self, family: u64) -> Vec<String> {
        let Some(f) = self.families.remove(&family) else { return Vec::new() };
        if let Some(live) = f.live {
            self.refresh.remove(&live);
        }
        f.jtis
    }

    fn record_jti(&mut self, family: u64, jti: &str) {
        if let Some(f) = self.families.get_mut(&family) {
            if f.jtis.len() >= MAX_FAMILY_JTIS {
                f.jtis.remove(0);
            }
            f.jtis.push(jti.to_owned());
        }
    }
}

/// What a successful grant produces before it is signed.
struct Issue {
    subject: String,
    scopes: Vec<String>,
    /// The grant's family (authorization code and refresh grants): its token ids are recorded.
    family: Option<u64>,
    /// A (new) refresh token goes with the access token.
    refresh: bool,
    /// The scopes the refresh token keeps: the original grant's, even when this access token was
    /// narrowed (RFC 6749 §6).
    granted: Vec<String>,
}

pub(crate) async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    match token_inner(&s, &headers, &body).await {
        Ok(v) => {
            let mut res = axum::Json(v).into_response();
            no_store(&mut res);
            res
        }
        Err(e) => e.into_response(),
    }
}

fn form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let is_form = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    });
    if !is_form {
        return Err(OAuthError::request("the body must be application/x-www-form-urlencoded"));
    }
    parse_params(body).map_err(OAuthError::request)
}

async fn token_inner(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Value, OAuthError> {
    let params = form(headers, body)?;
    let client = s.authenticate(&Credentials::read(headers, &params)?).await?;
    let grant_type = params.get("grant_type").ok_or_else(|| OAuthError::request("grant_type is required"))?;
    let grant = match grant_type.as_str() {
        "authorization_code" => Grant::AuthorizationCode,
        "refresh_token" => Grant::RefreshToken,
        "client_credentials" => Grant::ClientCredentials,
        other => return Err(OAuthError::new("unsupported_grant_type", format!("grant_type {other:?}"))),
    };
    // A client registered for authorization_code may always redeem and refresh what it gets.
    let allowed = client.grants.contains(&grant)
        || (grant == Grant::RefreshToken && client.grants.contains(&Grant::AuthorizationCode));
    if !allowed {
        return Err(OAuthError::new("unauthorized_client", format!("this client may not use {grant_type}")));
    }
    s.check_resource(params.get("resource").map(String::as_str))?;
    let (issue, spent) = match grant {
        Grant::AuthorizationCode => redeem_code(s, &client, &params),
        Grant::RefreshToken => refresh(s, &client, &params),
        Grant::ClientCredentials => {
            let scopes = s
                .grant_scopes(params.get("scope").map(String::as_str), client.scope.as_deref())
                .ok_or_else(|| OAuthError::new("invalid_scope", "none of the requested scopes is available"))?;
            (
                Ok(Issue { subject: client.id.clone(), granted: scopes.clone(), scopes, family: None, refresh: false }),
                Vec::new(),
            )
        }
    };
    revoke_ids(s, spent).await;
    let issue = issue?;
    let (out, revoked) = respond(s, &client, issue)?;
    if let Some(jti) = revoked {
        revoke_ids(s, vec![jti]).await;
        return Err(OAuthError::grant("the grant was revoked"));
    }
    Ok(out)
}

/// Revokes the access tokens of a replayed grant (outside the grants lock: it writes a database).
async fn revoke_ids(s: &Shared, jtis: Vec<String>) {
    if jtis.is_empty() {
        return;
    }
    tracing::warn!(tokens = jtis.len(), "dev authorization server: grant replayed; revoking what it issued");
    if let Some(r) = &s.revocations {
        for jti in jtis {
            if let Err(e) = r.revoke(&Revoke::TokenId(jti)).await {
                tracing::error!(error = %e, "cannot revoke a replayed grant's token");
            }
        }
    }
}

/// The authorization_code grant. Returns the outcome and the token ids to revoke (on replay).
fn redeem_code(
    s: &Shared,
    client: &Client,
    params: &HashMap<String, String>,
) -> (Result<Issue, OAuthError>, Vec<String>) {
    let Some(code) = params.get("code") else { return (Err(OAuthError::request("code is required")), Vec::new()) };
    let hash = sha256(code.as_bytes());
    let now = Instant::now();
    let mut g = s.grants();
    if g.spent_codes.len() >= MAX_CODES {
        g.purge(now);
    }
    if let Some(&(family, _)) = g.spent_codes.get(&hash) {
        let revoked = g.revoke_family(family);
        return (Err(OAuthError::grant("authorization code already used; what it issued is now revoked")), revoked);
    }
    let Some(pending) = g.codes.remove(&hash) else {
        return (Err(OAuthError::grant("unknown or expired authorization code")), Vec::new());
    };
    let check = || -> Result<(), OAuthError> {
        if pending.expires <= now {
            return Err(OAuthError::grant("authorization code expired"));
        }
        if pending.client_id != client.id {
            return Err(OAuthError::grant("authorization code was issued to another client"));
        }
        match params.get("redirect_uri") {
            Some(r) if *r != pending.redirect_uri => return Err(OAuthError::grant("redirect_uri does not match")),
            None if pending.redirect_given => return Err(OAuthError::grant("redirect_uri is required")),
            _ => {}
        }
        let verifier = params.get("code_verifier").ok_or_else(|| OAuthError::grant("code_verifier is required"))?;
        let valid = (43..=128).contains(&verifier.len())
            && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        let computed =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sha256(verifier.as_bytes()));
        let same = aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), pending.challenge.as_bytes());
        if !valid || same.is_err() {
            return Err(OAuthError::grant("code_verifier does not match the code_challenge"));
        }
        if let (Some(bound), Some(asked)) = (&pending.resource, params.get("resource"))
            && bound.trim_end_matches('/') != asked.trim_end_matches('/')
        {
            return Err(OAuthError::new("invalid_target", "resource differs from the authorization request"));
        }
        Ok(())
    };
    if let Err(e) = check() {
        // A failed redemption still spends the code: it may have been intercepted.
        return (Err(e), Vec::new());
    }
    let with_refresh = client.grants.contains(&Grant::RefreshToken);
    let Some(family) = g.new_family(now) else {
        return (Err(OAuthError::new("temporarily_unavailable", "too many live grants; retry later")), Vec::new());
    };
    g.spent_codes.insert(hash, (family, now + SPENT_CODE_MEMORY));
    if let Some(f) = g.families.get_mut(&family) {
        // Kept at least as long as the spent code, so a replay can still revoke its token.
        f.expires = Some(now + SPENT_CODE_MEMORY);
    }
    (
        Ok(Issue {
            subject: pending.subject,
            granted: pending.scopes.clone(),
            scopes: pending.scopes,
            family: Some(family),
            refresh: with_refresh,
        }),
        Vec::new(),
    )
}

/// The refresh_token grant, with rotation and replay detection.
fn refresh(s: &Shared, client: &Client, params: &HashMap<String, String>) -> (Result<Issue, OAuthError>, Vec<String>) {
    let Some(token) = params.get("refresh_token") else {
        return (Err(OAuthError::request("refresh_token is required")), Vec::new());
    };
    let hash = sha256(token.as_bytes());
    let now = Instant::now();
    let mut g = s.grants();
    g.purge(now);
    if let Some(&(family, _)) = g.spent_refresh.get(&hash) {
        let revoked = g.revoke_family(family);
        return (Err(OAuthError::grant("refresh token already used; its family is now revoked")), revoked);
    }
    let Some(current) = g.refresh.remove(&hash) else {
        return (Err(OAuthError::grant("unknown, expired or revoked refresh token")), Vec::new());
    };
    if current.client_id != client.id {
        g.refresh.insert(hash, current);
        return (Err(OAuthError::grant("refresh token was issued to another client")), Vec::new());
    }
    let Some(scopes) = s.grant_scopes(params.get("scope").map(String::as_str), Some(&current.scopes)) else {
        g.refresh.insert(hash, current);
        return (Err(OAuthError::new("invalid_scope", "a refresh can only narrow the granted scopes")), Vec::new());
    };
    g.spent_refresh.insert(hash, (current.family, current.expires));
    (
        Ok(Issue {
            subject: current.subject,
            scopes,
            granted: current.scopes,
            family: Some(current.family),
            refresh: true,
        }),
        Vec::new(),
    )
}

/// Signs the access token, stores the next refresh token, and builds the response (RFC 6749 §5.1).
/// Returns instead the new token's id when its family was revoked meanwhile (to revoke it too).
fn respond(s: &Shared, client: &Client, issue: Issue) -> Result<(Value, Option<String>), OAuthError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let jti = random_token(16)?;
    let scope = issue.scopes.join(" ");
    let claims = json!({
        "iss": s.opts.issuer,
        "sub": issue.subject,
        "aud": s.opts.resource,
        "client_id": client.id,
        "scope": scope,
        "iat": now,
        "exp": now + s.opts.access_ttl.as_secs(),
        "jti": jti,
    });
    let access = s.key.sign(&claims).map_err(|_| OAuthError::new("temporarily_unavailable", "signing failed"))?;
    let mut out = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": s.opts.access_ttl.as_secs(),
        "scope": scope,
    });
    let mut g = s.grants();
    if let Some(family) = issue.family {
        // The family may have been revoked (a replay) between the grant check and here.
        if !g.families.contains_key(&family) {
            return Ok((Value::Null, Some(jti)));
        }
        g.record_jti(family, &jti);
        if issue.refresh {
            if g.refresh.len() >= MAX_REFRESH {
                g.purge(Instant::now());
            }
            if g.refresh.len() < MAX_REFRESH {
                let refresh = random_token(32)?;
                let hash = sha256(refresh.as_bytes());
                let expires = Instant::now() + s.opts.refresh_ttl;
                let stored = Refresh {
                    client_id: client.id.clone(),
                    subject: issue.subject,
                    scopes: issue.granted,
                    family,
                    expires,
                };
                g.refresh.insert(hash, stored);
                if let Some(f) = g.families.get_mut(&family) {
                    f.live = Some(hash);
                    f.expires = Some(expires);
                }
                out["refresh_token"] = json!(refresh);
            }
        }
    }
    Ok((out, None))
}

/// `POST /revoke` (RFC 7009): a refresh token ends its family; an access token this server
/// signed is added to the revocation list. Unknown tokens get 200 too (§2.2).
pub(crate) async fn revoke(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = form(&headers, &body)?;
        let client = s.authenticate(&Credentials::read(&headers, &params)?).await?;
        let token = params.get("token").ok_or_else(|| OAuthError::request("token is required"))?;
        let hash = sha256(token.as_bytes());
        let jtis = {
            let mut g = s.grants();
            match g.refresh.get(&hash).map(|r| (r.client_id == client.id, r.family)) {
                Some((true, family)) => g.revoke_family(family),
                _ => Vec::new(),
            }
        };
        if !jtis.is_empty() {
            revoke_ids(&s, jtis).await;
        } else if let Some(jti) = own_access_token(&s, token, &client.id) {
            revoke_ids(&s, vec![jti]).await;
        }
        Ok::<_, OAuthError>(())
    }
    .await;
    match result {
        Ok(()) => {
            let mut res = http::StatusCode::OK.into_response();
            no_store(&mut res);
            res
        }
        Err(e) => e.into_response(),
    }
}

/// The `jti` of an access token this server signed for `client_id` (expired ones included).
fn own_access_token(s: &Shared, token: &str, client_id: &str) -> Option<String> {
    let key = s.key.decoding_key().ok()?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v.set_issuer(&[&s.opts.issuer]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).ok()?;
    let claims = data.claims;
    (claims.get("client_id").and_then(Value::as_str) == Some(client_id))
        .then(|| claims.get("jti").and_then(Value::as_str).map(str::to_owned))
        .flatten()
}
