//! The one place where transport failures become HTTP responses, and where responses get their
//! headers. Every rejection carries a JSON-RPC error body (id null unless it was read), so a
//! client always learns what went wrong; the HTTP status follows 2025-11-25 basic/transports.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use portcullis_protocol::{ParseError, ProtocolVersion, RequestId, RpcError, code, write_error};

use crate::guard::Refusal;

pub(crate) const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
pub(crate) const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub(crate) const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Why a request was refused before (or instead of) reaching the engine.
#[derive(Debug)]
pub(crate) enum Rejection {
    /// Host or Origin not allowed: 403.
    Forbidden(Refusal),
    /// Body is not `application/json`: 415.
    UnsupportedMediaType,
    /// The client accepts neither JSON nor SSE: 406.
    NotAcceptable,
    /// Body over the limit: 413.
    PayloadTooLarge(usize),
    /// The body could not be read (client aborted mid-body): 400.
    BodyUnreadable,
    /// The body did not arrive within the body-read timeout: 408.
    BodyTimeout,
    /// Not JSON / not JSON-RPC: 400 with -32700 / -32600.
    Parse(ParseError),
    /// No `Mcp-Session-Id` on a request that needs one: 400.
    MissingSession,
    /// Unknown, expired or terminated session: 404 (clients then re-initialize).
    UnknownSession,
    /// `MCP-Protocol-Version` names a version we do not speak: 400.
    UnsupportedVersion { requested: String, id: Option<RequestId> },
    /// A JSON-RPC batch on a session that is not 2025-03-26: 400.
    BatchNotAllowed,
    /// `initialize` inside a batch: 400.
    InitializeInBatch,
    /// A batch of more items than the limit: 400, refused whole.
    BatchTooLarge(usize),
    /// The session limit is reached: 503.
    TooManySessions,
    /// This principal holds its maximum number of sessions: 429 (end one, or wait for one to
    /// expire).
    TooManySessionsForPrincipal,
    /// The method is not served on this path: 405.
    MethodNotAllowed(&'static str),
    /// No or bad credentials: 401 with a `WWW-Authenticate` challenge.
    Unauthorized { challenge: String, message: String },
    /// The token could not be checked (identity provider down): 503, fail closed.
    AuthUnavailable,
    /// The policy needs scopes the token lacks: 403 with an `insufficient_scope` challenge
    /// (RFC 6750 §3.1, 2025-11-25 basic/authorization §Scope Challenge Handling); the body is the
    /// engine's JSON-RPC error, which names them too.
    InsufficientScope { challenge: String, error: Vec<u8> },
    /// A legacy HTTP+SSE session has this many answers in flight or unread on its stream: 429
    /// with `Retry-After` until the client reads.
    StreamBacklog(usize),
    /// A rate limit refused the call: 429 with `Retry-After`; the body is the engine's JSON-RPC
    /// error with `data.retryAfterMs`.
    RateLimited { retry_after: std::time::Duration, error: Vec<u8> },
}

// === impl Rejection ===

impl From<crate::store::StoreFull> for Rejection {
    fn from(full: crate::store::StoreFull) -> Self {
        match full {
            crate::store::StoreFull::Total => Self::TooManySessions,
            crate::store::StoreFull::Owner => Self::TooManySessionsForPrincipal,
        }
    }
}

impl Rejection {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownSession => StatusCode::NOT_FOUND,
            Self::TooManySessions => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManySessionsForPrincipal | Self::StreamBacklog(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyUnreadable
            | Self::Parse(_)
            | Self::MissingSession
            | Self::UnsupportedVersion { .. }
            | Self::BatchNotAllowed
            | Self::InitializeInBatch
            | Self::BatchTooLarge(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error(&self) -> (Option<&RequestId>, RpcError) {
        let invalid = |m: String| RpcError::invalid_request(m);
        match self {
            Self::Forbidden(Refusal::Host) => (None, invalid("Host header not allowed".into())),
            Self::Forbidden(Refusal::Origin) => (None, invalid("Origin not allowed".into())),
            Self::Forbidden(Refusal::Proxied) => (
                None,
                invalid(
                    "this server runs with auth.mode = dev or off, for callers on this machine only, and refuses \
                     requests that came through a proxy (Forwarded, X-Forwarded-*, Via); use auth.mode = jwt behind a proxy"
                        .into(),
                ),
            ),
            Self::UnsupportedMediaType => (None, invalid("Content-Type must be application/json".into())),
            Self::NotAcceptable => (None, invalid("Accept must allow application/json or text/event-stream".into())),
            Self::PayloadTooLarge(limit) => (None, invalid(format!("body exceeds the limit of {limit} bytes"))),
            Self::BodyUnreadable => (None, invalid("the request body could not be read".into())),
            Self::BodyTimeout => (None, invalid("the request body did not arrive in time".into())),
            Self::Parse(ParseError::Parse(msg)) => (None, RpcError::parse(msg.clone())),
            Self::Parse(ParseError::Invalid(id, msg)) => (id.as_ref(), invalid(msg.clone())),
            Self::MissingSession => (None, invalid("missing Mcp-Session-Id header: send initialize first".into())),
            Self::UnknownSession => (
                None,
                RpcError::new(
                    code::INVALID_REQUEST,
                    "session not found: it expired or was terminated; initialize a new one",
                ),
            ),
            Self::UnsupportedVersion { requested, id } => {
                // Deliberately a legacy -32600, not the 2026-07-28 -32022: a dual-era client then
                // falls back to `initialize` (modern-protocol.md §2.1).
                let supported: Vec<&str> = ProtocolVersion::ALL.iter().rev().map(|v| v.as_str()).collect();
                (
                    id.as_ref(),
                    invalid(format!(
                        "unsupported MCP-Protocol-Version {requested:?}: this server speaks {}; send initialize",
                        supported.join(", ")
                    ))
                    .with_data(serde_json::json!({ "supported": supported, "requested": requested })),
                )
            }
            Self::BatchNotAllowed => {
                (None, invalid("JSON-RPC batches are only accepted on 2025-03-26 sessions".into()))
            }
            Self::InitializeInBatch => (None, invalid("initialize must not be part of a batch".into())),
            Self::BatchTooLarge(limit) => {
                (None, invalid(format!("a JSON-RPC batch may hold at most {limit} messages; send fewer at a time")))
            }
            Self::TooManySessions => (None, RpcError::internal("too many sessions; try again later")),
            Self::TooManySessionsForPrincipal => (
                None,
                RpcError::invalid_request(
                    "too many open sessions for this user: end one (DELETE) or wait for one to expire",
                ),
            ),
            Self::StreamBacklog(n) => (
                None,
                RpcError::new(
                    code::INVALID_REQUEST,
                    format!("{n} answers on this session's SSE stream are not yet read: read the stream, then retry"),
                ),
            ),
            Self::MethodNotAllowed(allow) => (None, invalid(format!("method not allowed here; allowed: {allow}"))),
            Self::Unauthorized { message, .. } => (None, invalid(format!("unauthorized: {message}"))),
            Self::AuthUnavailable => {
                (None, RpcError::internal("authentication is temporarily unavailable; try again later"))
            }
            Self::InsufficientScope { .. } => (None, RpcError::internal("insufficient scope")),
            Self::RateLimited { .. } => (None, RpcError::internal("rate limited")),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        if let Self::RateLimited { retry_after, error } = self {
            let mut resp = json(StatusCode::TOO_MANY_REQUESTS, Bytes::from(error));
            // Whole seconds, rounded up (RFC 9110 §10.2.3).
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
            return resp;
        }
        if let Self::InsufficientScope { challenge, error } = self {
            let mut resp = json(StatusCode::FORBIDDEN, Bytes::from(error));
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(WWW_AUTHENTICATE, v);
            }
            return resp;
        }
        let (id, err) = self.error();
        let mut resp = json(self.status(), Bytes::from(write_error(id, &err)));
        match self {
            Self::TooManySessions => {
                resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::StreamBacklog(_) => {
                resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::MethodNotAllowed(allow) => {
                resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unauthorized { challenge, .. } => {
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    resp.headers_mut().insert(WWW_AUTHENTICATE, v);
                }
            }
            Self::AuthUnavailable => {
                resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        resp
    }
}

/// What the client's `Accept` allows. Liberal: a missing header, `*/*` and type wildcards count
/// (real clients send only one of the two types, or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accept {
    pub(crate) json: bool,
    pub(crate) sse: bool,
}

impl Accept {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut a = Self { json: false, sse: false };
        let mut any = false;
        for value in headers.get_all(http::header::ACCEPT) {
            let Ok(value) = value.to_str() else { continue };
            for range in value.split(',') {
                any = true;
                let media = range.split(';').next().unwrap_or("").trim();
                match media.to_ascii_lowercase().as_str() {
                    "application/json" | "application/*" => a.json = true,
                    "text/event-stream" | "text/*" => a.sse = true,
                    "*/*" | "" => {
                        a.json = true;
                        a.sse = true;
                    }
                    _ => {}
                }
            }
        }
        if any { a } else { Self { json: true, sse: true } }
    }
}

/// True when the body's Content-Type is `application/json` (parameters allowed).
pub(crate) fn is_json_content(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// One complete message, as JSON when the client takes JSON, else as a one-event SSE stream.
pub(crate) fn single(message: Vec<u8>, accept: Accept) -> Response {
    if accept.json {
        return json(StatusCode::OK, Bytes::from(message));
    }
    let mut out = BytesMut::with_capacity(message.len() + 16);
    crate::sse::frame(&mut out, None, None, &message);
    sse(Body::from(out.freeze()))
}

/// An SSE response around `body`.
pub(crate) fn sse(body: Body) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform"));
    // Proxies such as nginx must not buffer the stream.
    h.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
    resp
}

/// 202 Accepted with no body: notifications and responses (2025-11-25 basic/transports).
pub(crate) fn accepted() -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// Sets `Mcp-Session-Id`.
pub(crate) fn with_session(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(SESSION_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: Option<&str>) -> Accept {
        let mut h = HeaderMap::new();
        if let Some(v) = v {
            h.insert(http::header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        Accept::from_headers(&h)
    }

    #[test]
    fn accept_is_liberal() {
        assert_eq!(accept(None), Accept { json: true, sse: true });
        assert_eq!(accept(Some("*/*")), Accept { json: true, sse: true });
        assert_eq!(accept(Some("application/json")), Accept { json: true, sse: false });
        assert_eq!(accept(Some("text/event-stream")), Accept { json: false, sse: true });
        assert_eq!(accept(Some("application/json;q=0.9, text/event-stream")), Accept { json: true, sse: true });
        assert_eq!(accept(Some("text/html")), Accept { json: false, sse: false });
    }

    #[test]
    fn statuses() {
        assert_eq!(Rejection::UnknownSession.status(), StatusCode::NOT_FOUND);
        assert_eq!(Rejection::PayloadTooLarge(1).status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(Rejection::UnsupportedMediaType.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(Rejection::Forbidden(Refusal::Origin).status(), StatusCode::FORBIDDEN);
    }
}
