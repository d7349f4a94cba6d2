//! The 2024-11-05 HTTP+SSE transport: `GET /sse` opens the session's stream and names the POST
//! endpoint in an `endpoint` event; `POST /message?sessionId=…` carries client messages, answered
//! 202, with every response travelling on the stream (2024-11-05 basic/transports §HTTP with SSE).
//! The session lives exactly as long as its stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use portcullis_engine::{Dispatch, Engine, Outlet, Principal, Session, Sink, new_session_id};
use portcullis_protocol::{Body as RpcBody, Message, ProtocolVersion, parse_body, write_error};
use tokio::sync::{mpsc, watch};

use crate::http::{App, LegacyQuery, read_body};
use crate::wire::{self, Rejection};

/// Open HTTP+SSE sessions by id.
#[derive(Default)]
pub(crate) struct LegacySessions {
    map: Mutex<HashMap<Arc<str>, Arc<LegacySession>>>,
}

pub(crate) struct LegacySession {
    session: Arc<Session>,
    /// To the SSE body of this session; the body's reader is the other end.
    tx: mpsc::Sender<Bytes>,
}

/// Unsolicited messages go to the stream, dropped when its queue is full.
struct ChannelOutlet(mpsc::Sender<Bytes>);

impl Outlet for ChannelOutlet {
    fn push(&self, message: Bytes) -> bool {
        self.0.try_send(message).is_ok()
    }
}

/// Messages queued per legacy stream before unsolicited ones are dropped.
const QUEUE: usize = 1024;

impl LegacySessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<LegacySession>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) async fn get_sse(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = app.opts.origins.check(&headers) {
        return Rejection::Forbidden(r).into_response();
    }
    let principal = match app.authenticate(&uri, &headers).await {
        Ok(p) => p,
        Err(rej) => return rej.into_response(),
    };
    match open(&app, principal) {
        Ok(r) => r,
        Err(rej) => rej.into_response(),
    }
}

/// Opens a legacy session and returns its stream.
pub(crate) fn open(app: &Arc<App>, principal: Principal) -> Result<Response, Rejection> {
    if app.legacy.lock().len() >= app.opts.max_sessions {
        return Err(Rejection::TooManySessions);
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let session = Arc::new(Session::new(new_session_id(), Arc::new(ChannelOutlet(tx.clone()))));
    session.bind_owner(principal);
    let id = session.id_arc();
    app.legacy.lock().insert(id.clone(), Arc::new(LegacySession { session: session.clone(), tx }));
    tracing::debug!(session = crate::http::short(&id), "legacy SSE session opened");
    let endpoint = format!("{}?sessionId={id}", app.opts.message_path);
    let mut first = BytesMut::new();
    crate::sse::frame(&mut first, None, Some("endpoint"), endpoint.as_bytes());
    let state = Stream {
        first: Some(first.freeze()),
        rx,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + app.opts.keepalive, app.opts.keepalive),
        shutdown: app.shutdown.clone(),
        _guard: Guard { app: app.clone(), id },
    };
    let body =
        futures_util::stream::unfold(state, |mut s| async move { s.next().await.map(|b| (Ok::<_, Infallible>(b), s)) });
    Ok(wire::sse(Body::from_stream(body)))
}

struct Stream {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    keepalive: tokio::time::Interval,
    /// Flips at shutdown; `serve` holds the sender.
    shutdown: watch::Receiver<bool>,
    _guard: Guard,
}

impl Stream {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(f) = self.first.take() {
            return Some(f);
        }
        if *self.shutdown.borrow() {
            return None;
        }
        tokio::select! {
            m = self.rx.recv() => m.map(|m| {
                let mut out = BytesMut::with_capacity(m.len() + 24);
                crate::sse::frame(&mut out, None, Some("message"), &m);
                out.freeze()
            }),
            _ = self.keepalive.tick() => Some(Bytes::from_static(b": keepalive\n\n")),
            _ = self.shutdown.changed() => None,
        }
    }
}

/// Ends the session when its stream goes away (client disconnect, shutdown).
struct Guard {
    app: Arc<App>,
    id: Arc<str>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(ls) = self.app.legacy.lock().remove(&self.id) {
            self.app.engine.close_session(&ls.session);
            tracing::debug!(session = crate::http::short(&self.id), "legacy SSE session closed");
        }
    }
}

pub(crate) async fn post_message(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    query: LegacyQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let resp = match post(&app, &uri, query, &headers, body).await {
        Ok(r) => r,
        Err(rej) => rej.into_response(),
    };
    tracing::info!(
        target: "portcullis::request",
        http = "POST",
        method = "legacy-message",
        status = resp.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
    );
    resp
}

async fn post(
    app: &Arc<App>,
    uri: &http::Uri,
    query: LegacyQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    app.opts.origins.check(headers).map_err(Rejection::Forbidden)?;
    let principal = app.authenticate(uri, headers).await?;
    let id = query.0.session_id.ok_or(Rejection::MissingSession)?;
    let ls = app.legacy.lock().get(id.as_str()).cloned().ok_or(Rejection::UnknownSession)?;
    if !ls.session.admits(&principal) {
        return Err(Rejection::UnknownSession);
    }
    if !wire::is_json_content(headers) {
        return Err(Rejection::UnsupportedMediaType);
    }
    let bytes = read_body(body, headers, app.opts.max_body_bytes, app.opts.body_read_timeout).await?;
    let parsed = parse_body(&bytes, app.opts.max_json_depth).map_err(Rejection::Parse)?;
    ls.session.touch();
    match parsed {
        RpcBody::Single(m) => handle(&app.engine, &ls, &principal, m).await,
        RpcBody::Batch(items) => {
            if !ls.session.version().is_some_and(ProtocolVersion::allows_batch) {
                return Err(Rejection::BatchNotAllowed);
            }
            if items.len() > app.opts.max_batch_items {
                return Err(Rejection::BatchTooLarge(app.opts.max_batch_items));
            }
            for item in items {
                match item {
                    Ok(m) => handle(&app.engine, &ls, &principal, m).await,
                    Err((id, e)) => {
                        let _ = ls.tx.try_send(Bytes::from(write_error(id.as_ref(), &e)));
                    }
                }
            }
        }
    }
    let mut resp = "Accepted".into_response();
    *resp.status_mut() = http::StatusCode::ACCEPTED;
    Ok(resp)
}

async fn handle(engine: &Engine, ls: &Arc<LegacySession>, principal: &Principal, m: Message<'_>) {
    match m {
        Message::Request(req)
            if let Some(check) = engine.admit(&ls.session, principal, &req)
                && let Err((error, _)) = check.await =>
        {
            let _ = ls.tx.send(Bytes::from(error)).await;
        }
        // The answer travels on the SSE stream, so a step-up is the JSON-RPC error, not a 403.
        Message::Request(req) => match engine.request(&ls.session, principal, &req, Sink::Session) {
            Dispatch::Ready(b) | Dispatch::StepUp { error: b, .. } => {
                let tx = ls.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Bytes::from(b)).await;
                });
            }
            Dispatch::Pending(fut) => {
                let tx = ls.tx.clone();
                tokio::spawn(async move {
                    if let Some(b) = fut.await {
                        let _ = tx.send(Bytes::from(b)).await;
                    }
                });
            }
        },
        Message::Notification(n) => engine.notification(&ls.session, &n),
        Message::Response(r) => {
            engine.response(&ls.session, &r);
        }
    }
}
