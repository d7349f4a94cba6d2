//! The 2024-11-05 HTTP+SSE transport: `GET /sse` opens the session's stream and names the POST
//! endpoint in an `endpoint` event; `POST /message?sessionId=…` carries client messages, answered
//! 202, with every response travelling on the stream (2024-11-05 basic/transports §HTTP with SSE).
//! The session lives exactly as long as its stream.
//!
//! Backpressure: every answer holds one of the session's `legacy_in_flight` permits from the POST
//! that asked until the stream has handed it to the connection. A client that posts but never
//! reads its stream therefore holds at most that many answers (and tasks); past it a POST gets
//! 429 and nothing of it runs. Each session holds a seat of the session store, so HTTP+SSE
//! sessions count against the same limits, in all and per user, as Streamable HTTP ones.

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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::http::{App, LegacyQuery, read_body};
use crate::store::Seat;
use crate::wire::{self, Rejection};

/// Open HTTP+SSE sessions by id.
#[derive(Default)]
pub(crate) struct LegacySessions {
    map: Mutex<HashMap<Arc<str>, Arc<LegacySession>>>,
}

/// A message for the stream, and the permit of the POST it answers (none for unsolicited ones).
type Queued = (Bytes, Option<OwnedSemaphorePermit>);

pub(crate) struct LegacySession {
    session: Arc<Session>,
    /// To the SSE body of this session; the body's reader is the other end.
    tx: mpsc::Sender<Queued>,
    /// Answers in flight or unread.
    in_flight: Arc<Semaphore>,
    /// Counted against the session store's limits while the session lives.
    _seat: Seat,
}

/// Unsolicited messages go to the stream, dropped when its queue is full.
struct ChannelOutlet(mpsc::Sender<Queued>);

impl Outlet for ChannelOutlet {
    fn push(&self, message: Bytes) -> bool {
        self.0.try_send((message, None)).is_ok()
    }
}

/// Unsolicited messages queued per legacy stream before more are dropped (answers wait for room
/// instead, bounded by the in-flight permits).
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
    let seat = app.store.reserve(&principal).map_err(Rejection::from)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let session = Arc::new(Session::new(new_session_id(), Arc::new(ChannelOutlet(tx.clone()))));
    let holder = app.holder(&principal);
    session.bind_owner(principal);
    let id = session.id_arc();
    let in_flight = Arc::new(Semaphore::new(app.opts.legacy_in_flight));
    let ls = LegacySession { session: session.clone(), tx, in_flight, _seat: seat };
    app.legacy.lock().insert(id.clone(), Arc::new(ls));
    tracing::debug!(session = crate::http::short(&id), "legacy SSE session opened");
    let endpoint = format!("{}?sessionId={id}", app.opts.message_path);
    let mut first = BytesMut::new();
    crate::sse::frame(&mut first, None, Some("endpoint"), endpoint.as_bytes());
    let state = Stream {
        first: Some(first.freeze()),
        rx,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + app.opts.keepalive, app.opts.keepalive),
        shutdown: app.shutdown.clone(),
        holder,
        session,
        idle_ttl: app.opts.session_idle_ttl,
        _guard: Guard { app: app.clone(), id },
    };
    let body =
        futures_util::stream::unfold(state, |mut s| async move { s.next().await.map(|b| (Ok::<_, Infallible>(b), s)) });
    Ok(wire::sse(Body::from_stream(body)))
}

struct Stream {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Queued>,
    keepalive: tokio::time::Interval,
    /// Flips at shutdown; `serve` holds the sender.
    shutdown: watch::Receiver<bool>,
    /// Rechecked at each keep-alive: the stream (and with it the session) ends once its token
    /// expires or is revoked, or when no POST came within the idle TTL.
    holder: crate::sse::Holder,
    session: Arc<Session>,
    idle_ttl: std::time::Duration,
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
            // The permit goes once the frame is handed on: the connection holds it from here.
            m = self.rx.recv() => m.map(|(m, _permit)| {
                let mut out = BytesMut::with_capacity(m.len() + 24);
                crate::sse::frame(&mut out, None, Some("message"), &m);
                out.freeze()
            }),
            _ = self.keepalive.tick() => {
                if self.session.idle_ms() > self.idle_ttl.as_millis() as u64 || !self.holder.holds().await {
                    return None;
                }
                Some(Bytes::from_static(b": keepalive\n\n"))
            }
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
    // One permit per answer this POST will put on the stream, all taken before anything runs.
    let answers = match &parsed {
        RpcBody::Single(Message::Request(_)) => 1,
        RpcBody::Single(_) => 0,
        RpcBody::Batch(items) => {
            if !ls.session.version().is_some_and(ProtocolVersion::allows_batch) {
                return Err(Rejection::BatchNotAllowed);
            }
            if items.len() > app.opts.max_batch_items {
                return Err(Rejection::BatchTooLarge(app.opts.max_batch_items));
            }
            items.iter().filter(|i| matches!(i, Ok(Message::Request(_)) | Err(_))).count()
        }
    };
    let mut permits = match u32::try_from(answers) {
        Ok(0) => None,
        Ok(n) => Some(
            ls.in_flight
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| Rejection::StreamBacklog(app.opts.legacy_in_flight))?,
        ),
        Err(_) => return Err(Rejection::StreamBacklog(app.opts.legacy_in_flight)),
    };
    let mut next_permit = || {
        permits.as_mut().and_then(|p| if p.num_permits() > 1 { p.split(1) } else { None }).or_else(|| permits.take())
    };
    match parsed {
        RpcBody::Single(m) => handle(&app.engine, &ls, &principal, m, next_permit()).await,
        RpcBody::Batch(items) => {
            for item in items {
                match item {
                    Ok(m @ Message::Request(_)) => handle(&app.engine, &ls, &principal, m, next_permit()).await,
                    Ok(m) => handle(&app.engine, &ls, &principal, m, None).await,
                    Err((id, e)) => answer(&ls, Bytes::from(write_error(id.as_ref(), &e)), next_permit()),
                }
            }
        }
    }
    let mut resp = "Accepted".into_response();
    *resp.status_mut() = http::StatusCode::ACCEPTED;
    Ok(resp)
}

/// Puts an answer on the stream, holding `permit` until the stream hands it on; waits for room
/// in a task of its own when the queue is full (bounded by the permits).
fn answer(ls: &LegacySession, b: Bytes, permit: Option<OwnedSemaphorePermit>) {
    if let Err(mpsc::error::TrySendError::Full(m)) = ls.tx.try_send((b, permit)) {
        let tx = ls.tx.clone();
        tokio::spawn(async move {
            // Fails only once the stream is gone, with the session.
            let _ = tx.send(m).await;
        });
    }
}

async fn handle(
    engine: &Engine,
    ls: &Arc<LegacySession>,
    principal: &Principal,
    m: Message<'_>,
    permit: Option<OwnedSemaphorePermit>,
) {
    match m {
        Message::Request(req)
            if let Some(check) = engine.admit(&ls.session, principal, &req)
                && let Err((error, _)) = check.await =>
        {
            answer(ls, Bytes::from(error), permit);
        }
        // The answer travels on the SSE stream, so a step-up is the JSON-RPC error, not a 403.
        Message::Request(req) => match engine.request(&ls.session, principal, &req, Sink::Session) {
            Dispatch::Ready(b) | Dispatch::StepUp { error: b, .. } => answer(ls, Bytes::from(b), permit),
            Dispatch::Pending(fut) => {
                let tx = ls.tx.clone();
                tokio::spawn(async move {
                    if let Some(b) = fut.await {
                        let _ = tx.send((Bytes::from(b), permit)).await;
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
