//! `RequestContext`: what a handler can do besides returning its result — report progress, log
//! to the client, ask the client something (sampling, elicitation, roots) and await the answer,
//! and (SSE polling) ask the transport to close the current stream early.
//!
//! Everything goes out through the request's [`Sink`]: on Streamable HTTP, the stream of the POST
//! that carried the request (2025-11-25 basic/transports: messages related to a request go on
//! its stream); on HTTP+SSE and stdio, the session's single channel.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portcullis_protocol::{ProtocolVersion, RequestId, RpcError, write_notification, write_request};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::session::{LogLevel, Session};

/// One item a handler sends towards the client while it runs.
#[derive(Debug)]
pub enum Outbound {
    /// A serialized JSON-RPC notification or request.
    Message(Bytes),
    /// End the current SSE connection now (the stream stays resumable with `Last-Event-ID`).
    CloseStream,
}

/// Where a request's messages go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// A per-request channel; the transport holds the receiver and decides JSON vs SSE.
    Stream(mpsc::Sender<Outbound>),
    /// The session's outlet (transports with one channel per session).
    Session,
}

/// The handler's view of the request it serves.
#[derive(Clone)]
pub struct RequestContext {
    pub(crate) session: Arc<Session>,
    pub(crate) request_id: RequestId,
    pub(crate) progress_token: Option<Value>,
    pub(crate) sink: Sink,
    pub(crate) client_timeout: Duration,
}

// === impl RequestContext ===

impl RequestContext {
    /// The session this request belongs to.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The id of the request being served.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> ProtocolVersion {
        self.session.version().unwrap_or(ProtocolVersion::LATEST)
    }

    /// The `progressToken` the client attached, if any.
    pub fn progress_token(&self) -> Option<&Value> {
        self.progress_token.as_ref()
    }

    /// Sends a notification related to this request.
    pub async fn notify(&self, method: &str, params: &Value) {
        self.send(Bytes::from(write_notification(method, &params.to_string()))).await;
    }

    /// Reports progress (2025-11-25 basic/utilities/progress). A no-op when the client sent no
    /// progress token. `progress` must increase from one call to the next.
    pub async fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        let Some(token) = &self.progress_token else {
            return;
        };
        let mut params = json!({ "progressToken": token, "progress": progress });
        if let Some(total) = total {
            params["total"] = json!(total);
        }
        if let Some(message) = message {
            params["message"] = json!(message);
        }
        self.notify("notifications/progress", &params).await;
    }

    /// Sends `notifications/message` if `level` is at or above the client's chosen level
    /// (2025-11-25 server/utilities/logging). Never put secrets in `data`.
    pub async fn log(&self, level: LogLevel, logger: Option<&str>, data: Value) {
        if level < self.session.log_level() {
            return;
        }
        let mut params = json!({ "level": level.as_str(), "data": data });
        if let Some(logger) = logger {
            params["logger"] = json!(logger);
        }
        self.notify("notifications/message", &params).await;
    }

    /// Sends a request to the client and awaits its response (sampling, elicitation, roots).
    /// Fails with -32601 when the client did not declare the capability the method needs, and
    /// with -32603 on timeout or when the session ends first.
    pub async fn request(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        if let Some(cap) = required_capability(method) {
            let declared =
                self.session.negotiated().is_some_and(|n| n.client_capabilities.get(cap).is_some_and(|v| !v.is_null()));
            if !declared {
                return Err(RpcError::new(
                    portcullis_protocol::code::METHOD_NOT_FOUND,
                    format!("the client did not declare the `{cap}` capability needed for {method}"),
                ));
            }
        }
        let (id, rx) = self.session.expect_response();
        let wire = write_request(&RequestId::from_u64(id), method, &params.to_string());
        if !self.send(Bytes::from(wire)).await {
            self.session.forget_response(id);
            return Err(RpcError::internal(format!(
                "cannot send {method}: the client's stream for this request is closed (a JSON-only request cannot carry server requests)"
            )));
        }
        match tokio::time::timeout(self.client_timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(RpcError::internal(format!("the session ended before the client answered {method}"))),
            Err(_) => {
                self.session.forget_response(id);
                Err(RpcError::internal(format!(
                    "the client did not answer {method} within {} s",
                    self.client_timeout.as_secs()
                )))
            }
        }
    }

    /// Asks the transport to close the current SSE connection now; the client reconnects with
    /// `Last-Event-ID` and receives the rest (2025-11-25 basic/transports §Resumability, SSE
    /// polling). A no-op on transports without resumable streams.
    pub async fn close_stream(&self) {
        if let Sink::Stream(tx) = &self.sink {
            let _ = tx.send(Outbound::CloseStream).await;
        }
    }

    /// Sends one message; false when it cannot reach the client (the transport stopped listening
    /// for this request, or the session's queue is full or closed). The handler keeps running.
    async fn send(&self, message: Bytes) -> bool {
        match &self.sink {
            Sink::Stream(tx) => tx.send(Outbound::Message(message)).await.is_ok(),
            Sink::Session => self.session.push(message),
        }
    }
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("session", &self.session.id())
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

fn required_capability(method: &str) -> Option<&'static str> {
    match method {
        "sampling/createMessage" => Some("sampling"),
        "elicitation/create" => Some("elicitation"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}
