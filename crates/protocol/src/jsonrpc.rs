//! JSON-RPC 2.0 messages borrowed from the request body, and the writers for responses,
//! notifications and server-to-client requests.
//!
//! Parsing goes bytes → UTF-8 check → depth scan → one serde pass into [`Envelope`] (all fields
//! borrowed, `params`/`result`/`error` kept raw) → classification. Unknown members are ignored
//! here and stay in the caller's raw body.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::{RpcError, check_depth};

/// A whole POST body or stdio line: one message or (2025-03-26 only) a batch.
#[derive(Debug)]
pub enum Body<'a> {
    /// A single message.
    Single(Message<'a>),
    /// A JSON array; each element is a message or the error its own response must carry.
    Batch(Vec<Result<Message<'a>, (Option<RequestId>, RpcError)>>),
}

/// One classified JSON-RPC message.
#[derive(Debug)]
pub enum Message<'a> {
    /// Has `method` and `id`: needs a response.
    Request(Request<'a>),
    /// Has `method`, no `id`: never answered.
    Notification(Notification<'a>),
    /// Has `result` or `error`: answers a request we sent.
    Response(Response<'a>),
}

/// A request: id, method and raw params.
#[derive(Debug)]
pub struct Request<'a> {
    /// The id, echoed verbatim in the response.
    pub id: RequestId,
    /// The method name.
    pub method: Cow<'a, str>,
    /// Raw params, unparsed.
    pub params: Option<&'a RawValue>,
}

/// A notification: method and raw params.
#[derive(Debug)]
pub struct Notification<'a> {
    /// The method name.
    pub method: Cow<'a, str>,
    /// Raw params, unparsed.
    pub params: Option<&'a RawValue>,
}

/// A response to a request the server sent.
#[derive(Debug)]
pub struct Response<'a> {
    /// The id of our request.
    pub id: RequestId,
    /// `Ok(result)` or `Err(error object)`, both raw.
    pub outcome: Result<&'a RawValue, &'a RawValue>,
}

/// A request id kept as its exact JSON text (a string with quotes, or an integer), so it is echoed
/// byte for byte and can key maps.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Box<str>);

/// Why a body could not be read as JSON-RPC at all.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Not UTF-8, not JSON, or nested too deep: -32700.
    Parse(String),
    /// JSON but not a JSON-RPC message: -32600, with the id when it could be read.
    Invalid(Option<RequestId>, String),
}

/// The raw shape of any JSON-RPC message; validated by [`classify`].
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// Keeps an explicit `null` as `Some("null")` so "absent" and "null" differ.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses a body. `max_depth` bounds nesting before the parser runs.
pub fn parse_body(bytes: &[u8], max_depth: usize) -> Result<Body<'_>, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError::Parse(format!("body is not valid UTF-8: {e}")))?;
    check_depth(bytes, max_depth)
        .map_err(|e| ParseError::Parse(format!("body nests deeper than the limit of {}", e.limit)))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|e| ParseError::Parse(format!("invalid JSON: {e}")))?;
        if items.is_empty() {
            return Err(ParseError::Invalid(None, "empty batch".into()));
        }
        let batch = items
            .into_iter()
            .map(|item| match serde_json::from_str::<Envelope<'_>>(item.get()) {
                Ok(env) => classify(env).map_err(|(id, msg)| (id, RpcError::invalid_request(msg))),
                Err(e) => Err((None, RpcError::invalid_request(format!("not a JSON-RPC message: {e}")))),
            })
            .collect();
        return Ok(Body::Batch(batch));
    }
    let env: Envelope<'_> = match serde_json::from_str(text) {
        Ok(env) => env,
        // Valid JSON of the wrong shape (a number, a string, `method: 5`) is -32600, not -32700.
        Err(e) if serde_json::from_str::<&RawValue>(text).is_ok() => {
            return Err(ParseError::Invalid(None, format!("not a JSON-RPC message: {e}")));
        }
        Err(e) => return Err(ParseError::Parse(format!("invalid JSON: {e}"))),
    };
    classify(env).map(Body::Single).map_err(|(id, msg)| ParseError::Invalid(id, msg))
}

fn classify(env: Envelope<'_>) -> Result<Message<'_>, (Option<RequestId>, String)> {
    let id = match env.id {
        None => None,
        Some(raw) => Some(
            RequestId::from_raw(raw).ok_or((None, format!("id must be a string or an integer, got {}", raw.get())))?,
        ),
    };
    if env.jsonrpc.as_deref() != Some("2.0") {
        return Err((id, "jsonrpc must be \"2.0\"".into()));
    }
    if let Some(method) = env.method {
        if env.result.is_some() || env.error.is_some() {
            return Err((id, "a message cannot have both method and result/error".into()));
        }
        if let Some(p) = env.params {
            let first = p.get().as_bytes().first().copied();
            if first != Some(b'{') && first != Some(b'[') {
                return Err((id, "params must be an object or an array".into()));
            }
        }
        return Ok(match id {
            Some(id) => Message::Request(Request { id, method, params: env.params }),
            None => Message::Notification(Notification { method, params: env.params }),
        });
    }
    let Some(id) = id else {
        return Err((None, "message has no method and no id".into()));
    };
    match (env.result, env.error) {
        (Some(r), None) => Ok(Message::Response(Response { id, outcome: Ok(r) })),
        (None, Some(e)) => Ok(Message::Response(Response { id, outcome: Err(e) })),
        _ => Err((Some(id), "a response needs exactly one of result and error".into())),
    }
}

// === impl RequestId ===

impl RequestId {
    /// Accepts a JSON string or integer; refuses null, floats, objects.
    pub fn from_raw(raw: &RawValue) -> Option<Self> {
        let s = raw.get();
        let b = s.as_bytes();
        let ok = match b.first() {
            Some(b'"') => true,
            Some(b'-' | b'0'..=b'9') => b.iter().skip(1).all(u8::is_ascii_digit),
            _ => false,
        };
        ok.then(|| Self(s.into()))
    }

    /// An integer id (server-to-client requests use these).
    pub fn from_u64(n: u64) -> Self {
        Self(n.to_string().into())
    }

    /// The exact JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The integer value, if this id is an integer.
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === writers ===

const HEAD: &str = r#"{"jsonrpc":"2.0","id":"#;

/// `{"jsonrpc":"2.0","id":…,"result":…}` with `result` already serialized.
pub fn write_result(id: &RequestId, result_json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD.len() + id.0.len() + result_json.len() + 12);
    out.extend_from_slice(HEAD.as_bytes());
    out.extend_from_slice(id.0.as_bytes());
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(result_json.as_bytes());
    out.push(b'}');
    out
}

/// An error response; `id` is `null` when the request's id could not be read.
pub fn write_error(id: Option<&RequestId>, err: &RpcError) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct ErrorObject<'a> {
        code: i64,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a serde_json::Value>,
    }
    let obj = ErrorObject { code: err.code, message: &err.message, data: err.data.as_ref() };
    let mut out = Vec::with_capacity(96 + err.message.len());
    out.extend_from_slice(HEAD.as_bytes());
    out.extend_from_slice(id.map_or("null", |id| &id.0).as_bytes());
    out.extend_from_slice(br#","error":"#);
    // Serializing a struct of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &obj);
    out.push(b'}');
    out
}

/// A notification with params already serialized.
pub fn write_notification(method: &str, params_json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + method.len() + params_json.len());
    out.extend_from_slice(br#"{"jsonrpc":"2.0","method":"#);
    let _ = serde_json::to_writer(&mut out, method);
    out.extend_from_slice(br#","params":"#);
    out.extend_from_slice(params_json.as_bytes());
    out.push(b'}');
    out
}

/// A server-to-client request with params already serialized.
pub fn write_request(id: &RequestId, method: &str, params_json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + method.len() + params_json.len());
    out.extend_from_slice(HEAD.as_bytes());
    out.extend_from_slice(id.0.as_bytes());
    out.extend_from_slice(br#","method":"#);
    let _ = serde_json::to_writer(&mut out, method);
    out.extend_from_slice(br#","params":"#);
    out.extend_from_slice(params_json.as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(body: &str) -> Result<Message<'_>, ParseError> {
        match parse_body(body.as_bytes(), 64)? {
            Body::Single(m) => Ok(m),
            Body::Batch(_) => panic!("unexpected batch"),
        }
    }

    #[test]
    fn classifies_requests_notifications_and_responses() {
        let m = single(r#"{"jsonrpc":"2.0","id":7,"method":"ping","extra":true}"#).unwrap();
        assert!(matches!(m, Message::Request(ref r) if r.method == "ping" && r.id.as_json() == "7"));
        let m = single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(m, Message::Notification(_)));
        let m = single(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert!(matches!(m, Message::Response(ref r) if r.outcome.is_ok()));
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        let cases = [
            (r#"{"id":1,"method":"ping"}"#, "jsonrpc"),
            (r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, "id must be"),
            (r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, "id must be"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":3}"#, "params"),
            (r#"{"jsonrpc":"2.0"}"#, "no method"),
            (r#"42"#, "not a JSON-RPC"),
            (r#"{"jsonrpc":"2.0","id":1,"method":5}"#, "not a JSON-RPC"),
        ];
        for (body, want) in cases {
            match single(body) {
                Err(ParseError::Invalid(_, msg)) => assert!(msg.contains(want), "{body}: {msg}"),
                other => panic!("{body}: expected invalid request, got {other:?}"),
            }
        }
    }

    #[test]
    fn parse_errors() {
        for body in [&b"{not json"[..], &b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}"[..], b""] {
            assert!(matches!(parse_body(body, 64), Err(ParseError::Parse(_))), "{body:?}");
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(parse_body(deep.as_bytes(), 64), Err(ParseError::Parse(m)) if m.contains("deeper")));
    }

    #[test]
    fn batches_keep_per_item_errors() {
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"bad":1},{"jsonrpc":"2.0","method":"n"}]"#;
        let Ok(Body::Batch(items)) = parse_body(body, 64) else { panic!("expected batch") };
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_err() && items[2].is_ok());
    }

    #[test]
    fn writers_produce_valid_json() {
        let id = RequestId::from_u64(3);
        let v: serde_json::Value = serde_json::from_slice(&write_result(&id, "{}")).unwrap();
        assert_eq!(v["id"], 3);
        let err = RpcError::invalid_params("bad \"x\"").with_data(serde_json::json!({"k":1}));
        let v: serde_json::Value = serde_json::from_slice(&write_error(None, &err)).unwrap();
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["id"], serde_json::Value::Null);
        let v: serde_json::Value =
            serde_json::from_slice(&write_notification("notifications/message", r#"{"a":1}"#)).unwrap();
        assert_eq!(v["params"]["a"], 1);
    }
}
