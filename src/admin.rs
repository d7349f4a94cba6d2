//! The admin API, served beside the MCP endpoint when authentication is on:
//!
//! - `POST /admin/revocations` with `{"jti": …}`, `{"sub": …}` or `{"client": …}` revokes
//!   that token, subject or client (the same list `portcullis token revoke` writes); 204 on
//!   success. Effective on the next request everywhere the list is shared.
//! - `POST /admin/revocations/lift` with the same body lifts that revocation (`portcullis token
//!   revoke --lift`): 204, or 404 when there was none.
//!
//! The caller authenticates like any MCP client (bearer token, same verifier) and needs the
//! configured admin scope; without it the answer is 403 `insufficient_scope` naming that scope.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use portcullis_auth::{Revocations, Revoke};
use portcullis_engine::{AuthFailure, TokenVerifier};
use serde_json::{Value, json};

struct Admin {
    verifier: Arc<dyn TokenVerifier>,
    revocations: Arc<Revocations>,
    scope: String,
}

/// The admin routes.
pub fn router(verifier: Arc<dyn TokenVerifier>, revocations: Arc<Revocations>, scope: String) -> Router {
    Router::new()
        .route("/admin/revocations", post(revoke))
        .route("/admin/revocations/lift", post(lift))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(Arc::new(Admin { verifier, revocations, scope }))
}

/// A refusal: status, `WWW-Authenticate` (if any) and a JSON error body. The message never
/// contains the token.
fn refuse(status: StatusCode, challenge: Option<String>, error: &str, message: &str) -> Response {
    let mut res = (status, axum::Json(json!({ "error": error, "error_description": message }))).into_response();
    if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().insert(WWW_AUTHENTICATE, c);
    }
    res
}

async fn revoke(State(a): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    let (what, by) = match authorized(&a, &headers, &body).await {
        Ok(ok) => ok,
        Err(refusal) => return refusal,
    };
    match a.revocations.revoke(&what).await {
        Ok(()) => {
            tracing::info!(by = %by, what = ?what, "admin API: revoked");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => unavailable(&e),
    }
}

async fn lift(State(a): State<Arc<Admin>>, headers: HeaderMap, body: Bytes) -> Response {
    let (what, by) = match authorized(&a, &headers, &body).await {
        Ok(ok) => ok,
        Err(refusal) => return refusal,
    };
    match a.revocations.lift(&what).await {
        Ok(true) => {
            tracing::info!(by = %by, what = ?what, "admin API: revocation lifted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => refuse(StatusCode::NOT_FOUND, None, "not_found", "that is not revoked"),
        Err(e) => unavailable(&e),
    }
}

fn unavailable(e: &portcullis_auth::RevocationError) -> Response {
    tracing::error!(error = %e, "admin API: the revocation store is unavailable");
    refuse(StatusCode::SERVICE_UNAVAILABLE, None, "temporarily_unavailable", "the revocation store is unavailable")
}

/// The caller's bearer token, checked for the admin scope, and what the body names: the
/// revocation and who asked, or the refusal.
async fn authorized(a: &Admin, headers: &HeaderMap, body: &[u8]) -> Result<(Revoke, String), Response> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let Some(token) = token else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            Some("Bearer".into()),
            "invalid_request",
            "send Authorization: Bearer <token>",
        ));
    };
    let principal = match a.verifier.verify(token).await {
        Ok(p) => p,
        Err(AuthFailure::Invalid(m)) => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                Some("Bearer error=\"invalid_token\"".into()),
                "invalid_token",
                &m,
            ));
        }
        Err(AuthFailure::Unavailable(m)) => {
            tracing::warn!(reason = %m, "admin API: authentication unavailable");
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "temporarily_unavailable",
                "cannot check credentials now",
            ));
        }
    };
    if !principal.scopes.contains(&a.scope) {
        let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{}\"", a.scope);
        let message = format!("the admin API needs the scope {}", a.scope);
        return Err(refuse(StatusCode::FORBIDDEN, Some(challenge), "insufficient_scope", &message));
    }
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            "invalid_request",
            "the body must be application/json",
        ));
    }
    let what = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) if o.len() == 1 => match o.iter().next() {
            Some((k, Value::String(v))) if !v.is_empty() => match k.as_str() {
                "jti" => Some(Revoke::TokenId(v.clone())),
                "sub" => Some(Revoke::Subject(v.clone())),
                "client" => Some(Revoke::Client(v.clone())),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let Some(what) = what else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "send exactly one of {\"jti\": \"…\"}, {\"sub\": \"…\"}, {\"client\": \"…\"}",
        ));
    };
    Ok((what, principal.subject))
}
