//! The built-in **development** OAuth 2.1 authorization server, so `portcullis serve` works with
//! real OAuth clients and no identity provider. It signs ES256 access tokens with the dev key
//! ([`portcullis_auth::DevKey`]) that the resource server trusts, and serves:
//!
//! - RFC 8414 metadata at `/.well-known/oauth-authorization-server[issuer path]`, and the JWKS;
//! - `/authorize`: authorization code with PKCE S256 only (`plain` is refused), exact
//!   redirect URI match, and automatic approval of the configured dev user — there is no login;
//! - `/token`: `authorization_code` (single-use codes, short-lived; a replayed code revokes what it
//!   issued), `refresh_token` (rotated on every use; a replayed refresh token revokes its family),
//!   `client_credentials` (confidential clients; the client is the subject);
//! - `/register` (RFC 7591) and Client ID Metadata Documents (client ids that are URLs);
//! - `/revoke` (RFC 7009).
//!
//! The `resource` parameter (RFC 8707) must name the protected MCP endpoint, and becomes the
//! token's `aud`; this server issues tokens for that one resource only.
//!
//! Dev only: anyone who can reach `/authorize` gets a token for the dev user. The configuration
//! refuses to run it on a non-loopback address. State (clients, codes, refresh tokens) is in
//! memory, bounded, and forgotten on restart; access tokens stay valid (the key persists).

mod authorize;
mod client;
mod error;
mod token;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use portcullis_auth::{DevKey, Revocations};
use serde_json::{Value, json};

/// Settings of the dev authorization server.
#[derive(Debug, Clone)]
pub struct DevServerOptions {
    /// The issuer URL (`iss`): this server's base URL, e.g. `http://127.0.0.1:8080`.
    pub issuer: String,
    /// The one resource (MCP endpoint URL) tokens are issued for: their `aud`.
    pub resource: String,
    /// Scopes clients may request; a request without `scope` gets all of them.
    pub scopes: Vec<String>,
    /// The subject every authorization-code login is approved as.
    pub user: String,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Authorization code lifetime.
    pub code_ttl: Duration,
    /// Most registered clients kept (the oldest is dropped first).
    pub max_clients: usize,
}

impl DevServerOptions {
    /// Defaults for `issuer` and `resource`: 1 h access tokens, 24 h refresh tokens, 60 s codes.
    pub fn new(issuer: String, resource: String, scopes: Vec<String>) -> Self {
        Self {
            issuer,
            resource,
            scopes,
            user: "dev".into(),
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(24 * 3600),
            code_ttl: Duration::from_secs(60),
            max_clients: 1000,
        }
    }
}

/// The dev authorization server; [`DevAuthServer::router`] serves it.
#[derive(Clone)]
pub struct DevAuthServer {
    shared: Arc<Shared>,
}

/// State shared by the handlers.
pub(crate) struct Shared {
    pub(crate) opts: DevServerOptions,
    /// The issuer's path ("" or "/x"): endpoints and the metadata path hang off it.
    base_path: String,
    pub(crate) key: Arc<DevKey>,
    /// Where a replayed code or refresh token revokes the access tokens it produced.
    pub(crate) revocations: Option<Arc<Revocations>>,
    /// Fetches client metadata documents: no redirects, short timeout.
    pub(crate) http: reqwest::Client,
    clients: Mutex<client::Clients>,
    pub(crate) grants: Mutex<token::Grants>,
}

/// The issuer URL could not be used.
#[derive(Debug)]
pub struct InvalidIssuer(String);

impl std::fmt::Display for InvalidIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dev issuer {:?}: must be an absolute http(s) URL without query or fragment", self.0)
    }
}

impl std::error::Error for InvalidIssuer {}

// === impl DevAuthServer ===

impl DevAuthServer {
    /// A server signing with `key`; `revocations` (if any) receives the token ids of replayed grants.
    pub fn new(
        key: Arc<DevKey>,
        opts: DevServerOptions,
        revocations: Option<Arc<Revocations>>,
    ) -> Result<Self, InvalidIssuer> {
        let url = url::Url::parse(&opts.issuer).map_err(|_| InvalidIssuer(opts.issuer.clone()))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() || url.fragment().is_some() {
            return Err(InvalidIssuer(opts.issuer));
        }
        let base_path = url.path().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|_| InvalidIssuer(opts.issuer.clone()))?;
        let opts = DevServerOptions { issuer: opts.issuer.trim_end_matches('/').to_owned(), ..opts };
        Ok(Self {
            shared: Arc::new(Shared {
                opts,
                base_path,
                key,
                revocations,
                http,
                clients: Mutex::default(),
                grants: Mutex::default(),
            }),
        })
    }

    /// The routes, relative to the server root.
    pub fn router(&self) -> Router {
        let p = &self.shared.base_path;
        Router::new()
            .route(&format!("/.well-known/oauth-authorization-server{p}"), get(metadata))
            .route(&format!("{p}/jwks"), get(jwks))
            .route(&format!("{p}/authorize"), get(authorize::authorize))
            .route(&format!("{p}/token"), post(token::token))
            .route(&format!("{p}/register"), post(client::register))
            .route(&format!("{p}/revoke"), post(token::revoke))
            .layer(DefaultBodyLimit::max(64 * 1024))
            .with_state(self.shared.clone())
    }

    /// The RFC 8414 metadata document.
    pub fn metadata(&self) -> Value {
        self.shared.metadata()
    }
}

impl std::fmt::Debug for DevAuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAuthServer")
            .field("issuer", &self.shared.opts.issuer)
            .field("resource", &self.shared.opts.resource)
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    fn endpoint(&self, name: &str) -> String {
        format!("{}/{name}", self.opts.issuer)
    }

    fn metadata(&self) -> Value {
        let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
        json!({
            "issuer": self.opts.issuer,
            "authorization_endpoint": self.endpoint("authorize"),
            "token_endpoint": self.endpoint("token"),
            "registration_endpoint": self.endpoint("register"),
            "revocation_endpoint": self.endpoint("revoke"),
            "jwks_uri": self.endpoint("jwks"),
            "scopes_supported": self.opts.scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "code_challenge_methods_supported": ["S256"],
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        })
    }

    pub(crate) fn clients(&self) -> MutexGuard<'_, client::Clients> {
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn grants(&self) -> MutexGuard<'_, token::Grants> {
        self.grants.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Parses a requested `scope` against what the server (and the client) allows. Unknown
    /// scopes are dropped (RFC 6749 §3.3 lets the server grant less); nothing left is an error.
    pub(crate) fn grant_scopes(&self, requested: Option<&str>, allowed: Option<&[String]>) -> Option<Vec<String>> {
        let allowed = allowed.unwrap_or(&self.opts.scopes);
        match requested.map(str::split_ascii_whitespace) {
            None => Some(allowed.to_vec()),
            Some(words) => {
                let mut out: Vec<String> = Vec::new();
                for w in words {
                    if allowed.iter().any(|a| a == w) && !out.iter().any(|o| o == w) {
                        out.push(w.to_owned());
                    }
                }
                (!out.is_empty() || allowed.is_empty()).then_some(out)
            }
        }
    }

    /// Checks an RFC 8707 `resource` parameter: absent, or exactly the protected resource (a
    /// trailing slash tolerated).
    pub(crate) fn check_resource(&self, resource: Option<&str>) -> Result<(), error::OAuthError> {
        match resource {
            None => Ok(()),
            Some(r) if r.trim_end_matches('/') == self.opts.resource.trim_end_matches('/') => Ok(()),
            Some(_) => Err(error::OAuthError::new(
                "invalid_target",
                format!("this server issues tokens only for {}", self.opts.resource),
            )),
        }
    }
}

async fn metadata(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.metadata()).into_response()
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    let mut res = axum::Json(json!({ "keys": [s.key.jwk()] })).into_response();
    res.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("max-age=300"));
    res
}

/// `n` random bytes, base64url.
pub(crate) fn random_token(n: usize) -> Result<String, error::OAuthError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)
        .map_err(|_| error::OAuthError::new("temporarily_unavailable", "no randomness available"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub(crate) fn sha256(b: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parses a form or query string, refusing repeated parameters (RFC 6749 §3.1).
pub(crate) fn parse_params(s: &[u8]) -> Result<std::collections::HashMap<String, String>, String> {
    let mut out = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(s) {
        if v.is_empty() {
            continue; // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter {k} is repeated"));
        }
    }
    Ok(out)
}
