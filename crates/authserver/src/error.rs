//! The one place where the authorization server's failures become HTTP responses: RFC 6749 §5.2
//! error objects (token, registration and revocation endpoints), and the authorization endpoint's
//! two kinds of failure — redirected back to the client, or shown to the user when the redirect
//! target itself cannot be trusted (RFC 6749 §4.1.2.1).

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, LOCATION, PRAGMA, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use serde_json::json;

/// An OAuth error answered as JSON.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    /// The client tried HTTP Basic authentication and failed: answer with a Basic challenge.
    basic: bool,
}

impl OAuthError {
    pub(crate) fn new(code: &'static str, description: impl Into<String>) -> Self {
        let status = match code {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self { status, code, description: description.into(), basic: false }
    }

    pub(crate) fn request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    pub(crate) fn grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    pub(crate) fn client(description: impl Into<String>, basic: bool) -> Self {
        Self { basic, ..Self::new("invalid_client", description) }
    }

    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    pub(crate) fn description(&self) -> &str {
        &self.description
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "error_description": self.description });
        let mut res = (self.status, axum::Json(body)).into_response();
        no_store(&mut res);
        if self.basic {
            res.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"portcullis-dev\""));
        }
        res
    }
}

/// Responses carrying credentials are never cached (RFC 6749 §5.1).
pub(crate) fn no_store(res: &mut Response) {
    res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut().insert(PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A failure of the authorization endpoint.
#[derive(Debug)]
pub(crate) enum AuthorizeError {
    /// The client or its redirect URI is unknown or invalid: tell the user, never redirect.
    Shown(String),
    /// Anything else: back to the client's redirect URI with `error`, `state` and `iss`.
    Redirect { redirect_uri: url::Url, state: Option<String>, issuer: String, error: OAuthError },
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        match self {
            Self::Shown(message) => {
                let body = format!("Portcullis dev authorization server: the request was refused.\n\n{message}\n");
                (StatusCode::BAD_REQUEST, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body)
                    .into_response()
            }
            Self::Redirect { mut redirect_uri, state, issuer, error } => {
                {
                    let mut q = redirect_uri.query_pairs_mut();
                    q.append_pair("error", error.code()).append_pair("error_description", error.description());
                    if let Some(s) = &state {
                        q.append_pair("state", s);
                    }
                    q.append_pair("iss", &issuer);
                }
                redirect(redirect_uri.as_str())
            }
        }
    }
}

/// A 302 to `location`.
pub(crate) fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut res = StatusCode::FOUND.into_response();
            res.headers_mut().insert(LOCATION, v);
            no_store(&mut res);
            res
        }
        Err(_) => AuthorizeError::Shown("the redirect URI cannot be sent as a header".into()).into_response(),
    }
}
