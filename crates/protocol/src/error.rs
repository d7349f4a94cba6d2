//! `RpcError`: a JSON-RPC error object as a value. Every layer that fails a request returns one;
//! the transports turn it into bytes (and an HTTP status) in one place each.

use std::borrow::Cow;

use serde_json::Value;

/// Standard JSON-RPC and MCP error codes (2025-11-25 schema.ts).
pub mod code {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON sent is not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist or is not available.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// `resources/read` of a resource that does not exist (2025-11-25 server/resources).
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// The token lacks a scope the target requires (Portcullis; `data.requiredScopes` lists them).
    /// Over HTTP this is a 403 `insufficient_scope` challenge whenever the response has not
    /// started yet; the code is for answers inside a stream, a batch, or HTTP+SSE.
    pub const INSUFFICIENT_SCOPE: i64 = -32003;
    /// A rate limit refused the call (Portcullis; `data.retryAfterMs` says when to retry). Over
    /// HTTP this is a 429 with `Retry-After` whenever the response has not started yet.
    pub const RATE_LIMITED: i64 = -32004;
}

/// A JSON-RPC error: code, human message and optional structured data.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// One of [`code`] or an application code.
    pub code: i64,
    /// A short sentence for humans; never contains secrets.
    pub message: Cow<'static, str>,
    /// Optional machine-readable detail.
    pub data: Option<Value>,
}

// === impl RpcError ===

impl RpcError {
    /// An error with no data.
    pub fn new(code: i64, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    /// Attaches structured data.
    #[must_use]
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32700: the body is not JSON (or not UTF-8).
    pub fn parse(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(code::PARSE_ERROR, message)
    }

    /// -32600: JSON, but not a valid JSON-RPC message here.
    pub fn invalid_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(code::INVALID_REQUEST, message)
    }

    /// -32601 for `method`.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(code::METHOD_NOT_FOUND, format!("method not found: {method}"))
    }

    /// -32602.
    pub fn invalid_params(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }

    /// -32603.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(code::INTERNAL_ERROR, message)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}
