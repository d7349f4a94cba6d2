//! OAuth clients: dynamic registration (RFC 7591), Client ID Metadata Documents
//! (draft-ietf-oauth-client-id-metadata-document, 2025-11-25 basic/authorization §Client ID
//! Metadata Documents), redirect URI rules, and client authentication at the token endpoint.
//!
//! Clients live in memory, bounded (the oldest registration is dropped first); a restart forgets
//! them and clients register again. Client secrets are kept only as SHA-256 hashes and compared in
//! constant time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::error::{OAuthError, no_store};
use crate::{Shared, random_token, sha256};

/// How long a fetched client metadata document is trusted before it is fetched again.
const CIMD_TTL: Duration = Duration::from_secs(300);
/// Largest accepted client metadata document.
const CIMD_MAX_BYTES: usize = 5 * 1024;
/// At most this many redirect URIs per client.
const MAX_REDIRECT_URIS: usize = 16;

/// A grant type this server issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl Grant {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "authorization_code" => Some(Self::AuthorizationCode),
            "refresh_token" => Some(Self::RefreshToken),
            "client_credentials" => Some(Self::ClientCredentials),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
        }
    }
}

/// A registered (or metadata-document) client.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) id: String,
    /// SHA-256 of the secret; `None` for public clients (`token_endpoint_auth_method = none`).
    secret_hash: Option<[u8; 32]>,
    auth_method: &'static str,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) grants: Vec<Grant>,
    /// Scopes the client may request; `None`: any supported scope.
    pub(crate) scope: Option<Vec<String>>,
    name: Option<String>,
    /// For metadata-document clients: when the document was fetched.
    fetched: Option<Instant>,
}

/// A bounded table of clients; the oldest entry is dropped first.
#[derive(Debug, Default)]
pub(crate) struct Table {
    by_id: HashMap<String, Arc<Client>>,
    order: VecDeque<String>,
}

impl Table {
    fn insert(&mut self, client: Client, max: usize) -> Arc<Client> {
        while self.by_id.len() >= max.max(1) {
            let Some(old) = self.order.pop_front() else { break };
            self.by_id.remove(&old);
        }
        let client = Arc::new(client);
        if self.by_id.insert(client.id.clone(), client.clone()).is_none() {
            self.order.push_back(client.id.clone());
        }
        client
    }
}

/// Registered clients, and fetched metadata documents in a table of their own, so a flood of
/// metadata URLs can never push out a registration.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    registered: Table,
    documents: Table,
}

/// Which credentials a token or revocation request carried.
pub(crate) struct Credentials {
    id: String,
    secret: Option<String>,
    basic: bool,
}

impl Credentials {
    /// Reads HTTP Basic credentials, or `client_id` / `client_secret` from the form. Using both
    /// methods at once is refused (RFC 6749 §2.3).
    pub(crate) fn read(headers: &HeaderMap, form: &HashMap<String, String>) -> Result<Self, OAuthError> {
        let basic = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Some(value) = basic {
            let Some((scheme, b64)) = value.split_once(' ') else {
                return Err(OAuthError::client("malformed Authorization header", true));
            };
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::client("only HTTP Basic client authentication is accepted here", true));
            }
            if form.contains_key("client_secret") {
                return Err(OAuthError::request("use one client authentication method, not two"));
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OAuthError::client("malformed Basic credentials", true))?;
            let (id, secret) =
                decoded.split_once(':').ok_or_else(|| OAuthError::client("malformed Basic credentials", true))?;
            // RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding.
            let id = form_decode(id);
            if form.get("client_id").is_some_and(|f| *f != id) {
                return Err(OAuthError::request("client_id differs from the authenticated client"));
            }
            return Ok(Self { id, secret: Some(form_decode(secret)), basic: true });
        }
        let id = form.get("client_id").ok_or_else(|| OAuthError::client("client authentication required", false))?;
        Ok(Self { id: id.clone(), secret: form.get("client_secret").cloned(), basic: false })
    }
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

// === impl Shared (clients) ===

impl Shared {
    /// The client `id`: registered, or fetched from its metadata document URL.
    pub(crate) async fn client(&self, id: &str) -> Result<Arc<Client>, OAuthError> {
        if let Some(c) = self.clients().registered.by_id.get(id).cloned() {
            return Ok(c);
        }
        if !is_metadata_url(id) {
            return Err(OAuthError::client("unknown client", false));
        }
        let cached = self.clients().documents.by_id.get(id).cloned();
        match cached {
            Some(c) if c.fetched.is_some_and(|at| at.elapsed() < CIMD_TTL) => Ok(c),
            _ => {
                let client = self.fetch_metadata(id).await?;
                Ok(self.clients().documents.insert(client, self.opts.max_clients))
            }
        }
    }

    /// Authenticates the client of a token or revocation request.
    pub(crate) async fn authenticate(&self, creds: &Credentials) -> Result<Arc<Client>, OAuthError> {
        let client = self.client(&creds.id).await.map_err(|_| OAuthError::client("unknown client", creds.basic))?;
        match (&client.secret_hash, &creds.secret) {
            (None, None) => Ok(client),
            (None, Some(_)) => Err(OAuthError::client("this is a public client: send no secret", creds.basic)),
            (Some(_), None) => Err(OAuthError::client("client authentication required", creds.basic)),
            (Some(hash), Some(secret)) => {
                if aws_lc_rs::constant_time::verify_slices_are_equal(hash, &sha256(secret.as_bytes())).is_ok() {
                    Ok(client)
                } else {
                    Err(OAuthError::client("client authentication failed", creds.basic))
                }
            }
        }
    }

    async fn fetch_metadata(&self, url: &str) -> Result<Client, OAuthError> {
        let bad = |m: String| OAuthError::client(format!("client metadata document: {m}"), false);
        let mut res = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| bad(format!("fetch failed ({})", e.without_url())))?;
        if res.status() != StatusCode::OK {
            return Err(bad(format!("fetch answered HTTP {}", res.status().as_u16())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| bad(format!("read failed ({})", e.without_url())))? {
            if body.len() + chunk.len() > CIMD_MAX_BYTES {
                return Err(bad(format!("larger than {CIMD_MAX_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("not JSON ({e})")))?;
        if doc.get("client_id").and_then(Value::as_str) != Some(url) {
            return Err(bad("its client_id must equal the URL it was fetched from".into()));
        }
        if doc.get("client_secret").is_some() || doc.get("client_secret_expires_at").is_some() {
            return Err(bad("must not contain a client secret".into()));
        }
        // A metadata document client has no secret: `none` unless it says otherwise.
        let mut client =
            self.client_from_metadata(url.to_owned(), &doc, "none").map_err(|e| bad(e.description().into()))?;
        if client.secret_hash.is_some() || client.auth_method != "none" {
            return Err(bad("token_endpoint_auth_method must be \"none\" here".into()));
        }
        client.fetched = Some(Instant::now());
        Ok(client)
    }

    /// Validates registration metadata (RFC 7591 §2) into a client; confidential clients get a
    /// secret hash later.
    fn client_from_metadata(&self, id: String, doc: &Value, default_auth: &'static str) -> Result<Client, OAuthError> {
        let meta = |m: String| OAuthError::new("invalid_client_metadata", m);
        let strings = |key: &str| -> Result<Option<Vec<String>>, OAuthError> {
            match doc.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| meta(format!("{key} must hold strings"))))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(meta(format!("{key} must be an array of strings"))),
            }
        };
        let auth_method = match doc.get("token_endpoint_auth_method").and_then(Value::as_str) {
            None => default_auth,
            Some("none") => "none",
            Some("client_secret_basic") => "client_secret_basic",
            Some("client_secret_post") => "client_secret_post",
            Some(other) => return Err(meta(format!("token_endpoint_auth_method {other:?} is not supported"))),
        };
        let grants = match strings("grant_types")? {
            None => vec![Grant::AuthorizationCode],
            Some(list) => list
                .iter()
                .map(|g| Grant::parse(g).ok_or_else(|| meta(format!("grant type {g:?} is not supported"))))
                .collect::<Result<Vec<_>, _>>()?,
        };
        if let Some(types) = strings("response_types")?
            && types.iter().any(|t| t != "code")
        {
            return Err(meta("only the \"code\" response type is supported".into()));
        }
        let redirect_uris = strings("redirect_uris")?.unwrap_or_default();
        if grants.contains(&Grant::AuthorizationCode) && redirect_uris.is_empty() {
            return Err(OAuthError::new("invalid_redirect_uri", "redirect_uris is required for authorization_code"));
        }
        if redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(OAuthError::new("invalid_redirect_uri", format!("at most {MAX_REDIRECT_URIS} redirect URIs")));
        }
        for uri in &redirect_uris {
            check_redirect_uri(uri).map_err(|m| OAuthError::new("invalid_redirect_uri", format!("{uri:?}: {m}")))?;
        }
        if grants.contains(&Grant::ClientCredentials) && auth_method == "none" {
            return Err(meta("client_credentials needs a confidential client (a client secret)".into()));
        }
        let scope = match doc.get("scope") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let list: Vec<String> = s.split_ascii_whitespace().map(str::to_owned).collect();
                if let Some(bad) = list.iter().find(|s| !self.opts.scopes.contains(s)) {
                    return Err(OAuthError::new("invalid_client_metadata", format!("unknown scope {bad:?}")));
                }
                Some(list)
            }
            Some(_) => return Err(meta("scope must be a space-separated string".into())),
        };
        let name = doc.get("client_name").and_then(Value::as_str).map(|s| s.chars().take(200).collect());
        Ok(Client { id, secret_hash: None, auth_method, redirect_uris, grants, scope, name, fetched: None })
    }
}

/// Client ID Metadata Document URLs: https with a path; http only on loopback (dev relaxation, so
/// a local client can serve its own document).
fn is_metadata_url(id: &str) -> bool {
    let Ok(u) = url::Url::parse(id) else { return false };
    let path_ok = u.path() != "/" && !u.path().is_empty() && u.fragment().is_none() && u.username().is_empty();
    path_ok && (u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)))
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Redirect URIs (OAuth 2.1 §2.3.1, RFC 8252 §7): absolute, no fragment; https; http only on
/// loopback; or a private-use scheme of a native app (reverse domain name, so it has a dot).
pub(crate) fn check_redirect_uri(uri: &str) -> Result<url::Url, &'static str> {
    let u = url::Url::parse(uri).map_err(|_| "not an absolute URI")?;
    if u.fragment().is_some() {
        return Err("must not contain a fragment");
    }
    match u.scheme() {
        "https" => Ok(u),
        "http" if is_loopback(&u) => Ok(u),
        "http" => Err("http is allowed only for loopback addresses; use https"),
        "javascript" | "data" | "file" | "vbscript" => Err("scheme not allowed"),
        s if s.contains('.') => Ok(u),
        _ => Err("use https, http on loopback, or a reverse-domain private-use scheme"),
    }
}

/// `POST /register` (RFC 7591).
pub(crate) async fn register(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    match register_inner(&s, &headers, &body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn register_inner(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let json_body = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !json_body {
        return Err(OAuthError::request("registration requests are application/json"));
    }
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| OAuthError::new("invalid_client_metadata", format!("body is not JSON: {e}")))?;
    if !doc.is_object() {
        return Err(OAuthError::new("invalid_client_metadata", "body must be a JSON object"));
    }
    // RFC 7591 §2: the default method is client_secret_basic.
    let mut client = s.client_from_metadata(format!("dcr_{}", random_token(16)?), &doc, "client_secret_basic")?;
    let secret = if client.auth_method == "none" { None } else { Some(random_token(32)?) };
    client.secret_hash = secret.as_deref().map(|s| sha256(s.as_bytes()));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut out = json!({
        "client_id": client.id,
        "client_id_issued_at": now,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grants.iter().map(|g| g.name()).collect::<Vec<_>>(),
        "response_types": ["code"],
        "token_endpoint_auth_method": client.auth_method,
    });
    if let Some(secret) = secret {
        out["client_secret"] = json!(secret);
        out["client_secret_expires_at"] = json!(0);
    }
    if let Some(scope) = &client.scope {
        out["scope"] = json!(scope.join(" "));
    }
    if let Some(name) = &client.name {
        out["client_name"] = json!(name);
    }
    tracing::info!(client_id = %client.id, name = ?client.name, "dev authorization server: client registered");
    s.clients().registered.insert(client, s.opts.max_clients);
    let mut res = (StatusCode::CREATED, axum::Json(out)).into_response();
    no_store(&mut res);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        assert!(check_redirect_uri("https://app.example.com/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:3000/callback").is_ok());
        assert!(check_redirect_uri("http://localhost/cb").is_ok());
        assert!(check_redirect_uri("http://[::1]:9/cb").is_ok());
        assert!(check_redirect_uri("com.example.app:/oauth").is_ok());
        assert!(check_redirect_uri("http://evil.example.com/cb").is_err());
        assert!(check_redirect_uri("https://app.example.com/cb#frag").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
        assert!(check_redirect_uri("/relative").is_err());
    }

    #[test]
    fn metadata_urls() {
        assert!(is_metadata_url("https://app.example.com/oauth/client.json"));
        assert!(is_metadata_url("http://127.0.0.1:5000/client.json"));
        assert!(!is_metadata_url("https://app.example.com/"));
        assert!(!is_metadata_url("http://app.example.com/client.json"));
        assert!(!is_metadata_url("dcr_abc"));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode("my%20app:s%3Acret");
        h.insert(http::header::AUTHORIZATION, format!("Basic {b64}").parse().unwrap());
        let c = Credentials::read(&h, &HashMap::new()).unwrap();
        assert_eq!((c.id.as_str(), c.secret.as_deref(), c.basic), ("my app", Some("s:cret"), true));
        let form = HashMap::from([("client_secret".to_owned(), "x".to_owned())]);
        assert_eq!(Credentials::read(&h, &form).err().unwrap().code(), "invalid_request");
    }
}
