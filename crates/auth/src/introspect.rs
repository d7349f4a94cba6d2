//! Opaque access tokens, checked by RFC 7662 token introspection at the authorization server,
//! with client authentication (HTTP Basic). An answer is trusted until the earlier of the token's
//! `exp` and the authenticator's cache TTL — so a token revoked at the provider stops working
//! within that TTL (set `cache_ttl` to bound it; zero re-asks on every request).
//!
//! A flood of made-up tokens cannot hammer the authorization server: at most
//! [`MAX_IN_FLIGHT`] introspections run at once (beyond that, callers get 503 after a short wait),
//! and a token found inactive is refused without asking again for [`NEGATIVE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portcullis_engine::{AuthMethod, Principal};
use serde_json::Value;

use crate::jwt::{ClaimMapping, JwtError};

/// An introspection endpoint and the credentials Portcullis uses there.
pub struct Introspection {
    endpoint: String,
    client_id: String,
    /// Never logged or formatted (see the `Debug` impl).
    client_secret: String,
    audiences: Vec<String>,
    claims: ClaimMapping,
    client: reqwest::Client,
    timeout: Duration,
    in_flight: tokio::sync::Semaphore,
    /// SHA-256 of tokens found inactive, until when.
    negative: Mutex<HashMap<[u8; 32], Instant>>,
}

/// Most introspection requests in flight at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// How long a token found inactive is refused without asking again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Most remembered inactive tokens (the memory is cleared when full).
const MAX_NEGATIVE: usize = 10_000;

impl Introspection {
    /// An endpoint; `audiences` are the `aud` values accepted (the resource URL).
    pub fn new(
        endpoint: String,
        client_id: String,
        client_secret: String,
        audiences: Vec<String>,
        claims: ClaimMapping,
        client: reqwest::Client,
    ) -> Self {
        Self {
            endpoint,
            client_id,
            client_secret,
            audiences,
            claims,
            client,
            timeout: Duration::from_secs(5),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            negative: Mutex::default(),
        }
    }

    fn negative(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.negative.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the authorization server about `token` (bounded, with a negative cache).
    pub async fn check(&self, token: &str) -> Result<Principal, JwtError> {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(d.as_ref());
        if self.negative().get(&hash).is_some_and(|until| *until > Instant::now()) {
            return Err(JwtError::Inactive);
        }
        let permit = tokio::time::timeout(self.timeout, self.in_flight.acquire())
            .await
            .map_err(|_| JwtError::Unavailable("too many token introspections in flight".into()))?
            .map_err(|_| JwtError::Unavailable("token introspection is shut down".into()))?;
        let result = self.ask(token).await;
        drop(permit);
        if matches!(result, Err(JwtError::Inactive)) {
            let mut negative = self.negative();
            if negative.len() >= MAX_NEGATIVE {
                negative.clear();
            }
            negative.insert(hash, Instant::now() + NEGATIVE_TTL);
        }
        result
    }

    async fn ask(&self, token: &str) -> Result<Principal, JwtError> {
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let resp = self
            .client
            .post(&self.endpoint)
            .basic_auth(form_encode(&self.client_id), Some(form_encode(&self.client_secret)))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| JwtError::Unavailable(format!("token introspection failed: {e}")))?;
        if !resp.status().is_success() {
            return Err(JwtError::Unavailable(format!("token introspection answered {}", resp.status())));
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| JwtError::Unavailable(format!("token introspection answer unreadable: {e}")))?;
        principal(&v, &self.audiences, &self.claims, &self.endpoint)
    }
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn principal(v: &Value, audiences: &[String], mapping: &ClaimMapping, endpoint: &str) -> Result<Principal, JwtError> {
    if v.get("active").and_then(Value::as_bool) != Some(true) {
        return Err(JwtError::Inactive);
    }
    // The token must be meant for us (2025-11-25 basic/authorization §Token Handling).
    let aud_ok = match v.get("aud") {
        Some(Value::String(a)) => audiences.contains(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|a| audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(JwtError::Audience);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let exp = v.get("exp").and_then(Value::as_u64);
    if exp.is_some_and(|e| e <= now) {
        return Err(JwtError::Expired);
    }
    let client_id = v.get("client_id").and_then(Value::as_str).map(str::to_owned);
    // client_credentials tokens often have no `sub`: the client is the subject.
    let subject = v
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| client_id.clone())
        .ok_or(JwtError::MissingClaim("sub"))?;
    let mut principal = crate::jwt::map_claims(v.as_object().ok_or(JwtError::Invalid)?, mapping, subject)?;
    principal.client_id = client_id.or(principal.client_id);
    principal.method = AuthMethod::Introspection;
    // Opaque tokens belong to the server that answers for them, whatever `iss` it reports.
    principal.issuer = Some(format!("introspection:{endpoint}"));
    Ok(principal)
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn inactive_tokens_are_not_asked_about_twice() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = axum::Router::new().route(
            "/introspect",
            axum::routing::post(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::ready(axum::Json(json!({ "active": false })))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/introspect", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let i = Introspection::new(
            url,
            "pc".into(),
            "s".into(),
            vec!["a".into()],
            ClaimMapping::default(),
            reqwest::Client::new(),
        );
        for _ in 0..5 {
            assert_eq!(i.check("made-up-token").await, Err(JwtError::Inactive));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the negative cache answered the rest");
        assert_eq!(i.check("another-made-up-token").await, Err(JwtError::Inactive));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn answers_are_checked() {
        let aud = vec!["https://mcp.test/mcp".to_owned()];
        let m = ClaimMapping::default();
        let ok = json!({ "active": true, "aud": "https://mcp.test/mcp", "client_id": "svc", "scope": "mcp:tools a", "exp": 4_000_000_000u64 });
        let p = principal(&ok, &aud, &m, "e").unwrap();
        assert_eq!((p.subject.as_str(), p.client_id.as_deref()), ("svc", Some("svc")));
        assert_eq!(p.scopes, ["a", "mcp:tools"]);
        assert_eq!(p.method, AuthMethod::Introspection);
        assert_eq!(principal(&json!({ "active": false }), &aud, &m, "e"), Err(JwtError::Inactive));
        let other = json!({ "active": true, "aud": ["https://else/mcp"], "sub": "x" });
        assert_eq!(principal(&other, &aud, &m, "e"), Err(JwtError::Audience));
        let old = json!({ "active": true, "aud": "https://mcp.test/mcp", "sub": "x", "exp": 1 });
        assert_eq!(principal(&old, &aud, &m, "e"), Err(JwtError::Expired));
        assert_eq!(form_encode("a b+c/d=é"), "a%20b%2Bc%2Fd%3D%C3%A9");
        let i = Introspection::new("u".into(), "id".into(), "hunter2".into(), aud, m, reqwest::Client::new());
        assert!(!format!("{i:?}").contains("hunter2"));
    }
}
