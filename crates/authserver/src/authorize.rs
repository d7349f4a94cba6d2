//! `GET /authorize`: the authorization code request (OAuth 2.1 §4.1.1, 2025-11-25
//! basic/authorization §Authorization Code Protection). The client and redirect URI are checked
//! first — a failure there is shown, never redirected — then PKCE (S256 only), the response type,
//! the `resource` and the scopes. The dev user is approved at once, with no login page.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};

use crate::client::Grant;
use crate::error::{AuthorizeError, OAuthError, redirect};
use crate::token::Code;
use crate::{Shared, parse_params, random_token, sha256};

pub(crate) async fn authorize(State(s): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    match authorize_inner(&s, query.as_deref().unwrap_or("")).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn authorize_inner(s: &Shared, query: &str) -> Result<Response, AuthorizeError> {
    let params = parse_params(query.as_bytes()).map_err(AuthorizeError::Shown)?;
    let client_id = params.get("client_id").ok_or_else(|| AuthorizeError::Shown("client_id is required".into()))?;
    let client = s
        .client(client_id)
        .await
        .map_err(|e| AuthorizeError::Shown(format!("client {client_id:?}: {}", e.description())))?;
    let given_redirect = params.get("redirect_uri");
    let redirect_uri = match given_redirect {
        // Exact match (OAuth 2.1 §2.3.1): no prefix or pattern matching; only the port of a
        // loopback IP redirect URI may differ (RFC 8252 §7.3, native apps on ephemeral ports).
        Some(r) if client.redirect_uris.iter().any(|u| redirect_matches(u, r)) => r.clone(),
        Some(_) => {
            return Err(AuthorizeError::Shown("redirect_uri is not registered for this client (exact match)".into()));
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => return Err(AuthorizeError::Shown("redirect_uri is required".into())),
    };
    let target = url::Url::parse(&redirect_uri)
        .map_err(|_| AuthorizeError::Shown("the registered redirect_uri is not a URI".into()))?;
    let fail = |code: &'static str, description: &str| AuthorizeError::Redirect {
        redirect_uri: target.clone(),
        state: params.get("state").cloned(),
        issuer: s.opts.issuer.clone(),
        error: OAuthError::new(code, description),
    };

    if params.get("response_type").map(String::as_str) != Some("code") {
        return Err(fail("unsupported_response_type", "response_type must be \"code\""));
    }
    if !client.grants.contains(&Grant::AuthorizationCode) {
        return Err(fail("unauthorized_client", "this client is not registered for authorization_code"));
    }
    let Some(challenge) = params.get("code_challenge") else {
        return Err(fail("invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256"));
    };
    // An absent method means `plain` (RFC 7636 §4.3), which is refused like an explicit one.
    if params.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return Err(fail("invalid_request", "code_challenge_method must be S256 (plain is not accepted)"));
    }
    let well_formed =
        challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(fail(
            "invalid_request",
            "code_challenge must be the 43-character base64url SHA-256 of the verifier",
        ));
    }
    let resource = params.get("resource");
    if let Err(e) = s.check_resource(resource.map(String::as_str)) {
        return Err(fail("invalid_target", e.description()));
    }
    let Some(scopes) = s.grant_scopes(params.get("scope").map(String::as_str), client.scope.as_deref()) else {
        return Err(fail("invalid_scope", "none of the requested scopes is available"));
    };

    let code = random_token(32).map_err(|e| fail("temporarily_unavailable", e.description()))?;
    let stored = Code {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.clone(),
        redirect_given: given_redirect.is_some(),
        challenge: challenge.clone(),
        scopes,
        resource: resource.cloned(),
        subject: s.opts.user.clone(),
        expires: Instant::now() + s.opts.code_ttl,
    };
    if !s.grants().add_code(sha256(code.as_bytes()), stored) {
        return Err(fail("temporarily_unavailable", "too many pending authorization codes; retry shortly"));
    }
    tracing::info!(client_id = %client.id, user = %s.opts.user, "dev authorization server: login approved automatically");
    let mut location = target;
    {
        let mut q = location.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(state) = params.get("state") {
            q.append_pair("state", state);
        }
        // RFC 9207: lets the client check which server answered.
        q.append_pair("iss", &s.opts.issuer);
    }
    Ok(redirect(location.as_str()))
}

/// `given` is `registered`, or the same loopback IP redirect URI on another port.
fn redirect_matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    let (Ok(r), Ok(g)) = (url::Url::parse(registered), url::Url::parse(given)) else { return false };
    let loopback_ip = |u: &url::Url| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                _ => false,
            }
    };
    loopback_ip(&r)
        && loopback_ip(&g)
        && r.host() == g.host()
        && r.path() == g.path()
        && r.query() == g.query()
        && r.username() == g.username()
        && g.password().is_none()
        && g.fragment().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ports_may_differ_nothing_else_may() {
        assert!(redirect_matches("http://127.0.0.1/callback", "http://127.0.0.1:53211/callback"));
        assert!(redirect_matches("http://[::1]:3000/cb", "http://[::1]:4000/cb"));
        assert!(!redirect_matches("http://127.0.0.1/callback", "http://127.0.0.1:5/other"));
        assert!(!redirect_matches("http://localhost/cb", "http://localhost:5/cb"), "names are not IP literals");
        assert!(!redirect_matches("https://app.example.com/cb", "https://app.example.com:8443/cb"));
        assert!(!redirect_matches("http://127.0.0.1/cb", "http://127.0.0.2/cb"));
    }
}
