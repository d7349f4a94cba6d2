//! Streamable HTTP (2025-11-25 basic/transports §Streamable HTTP) on one endpoint, and the
//! server loop around it.
//!
//! The POST path, top to bottom: Host/Origin check → Content-Type → Accept → body (size limit)
//! → parse (UTF-8, depth, JSON-RPC) → `MCP-Protocol-Version` → `initialize` creates a session,
//! anything else needs a known `Mcp-Session-Id` → engine → JSON, or SSE when the handler sends
//! something before its result. GET opens (or resumes, with `Last-Event-ID`) a stream; DELETE ends
//! the session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use portcullis_engine::{AuthFailure, BoxFuture, Dispatch, Engine, Outbound, Principal, Sink, TokenVerifier};
use portcullis_protocol::{Body as RpcBody, Message, ProtocolVersion, Request, parse_body, write_error};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::guard::OriginPolicy;
use crate::legacy::LegacySessions;
use crate::sse::{self, Framing};
use crate::store::{HttpSession, SessionStore};
use crate::wire::{self, Accept, LAST_EVENT_ID, Rejection, SESSION_HEADER, VERSION_HEADER};

/// Streamable HTTP and HTTP+SSE settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The MCP endpoint path (default `/mcp`).
    pub path: String,
    /// The 2024-11-05 SSE endpoint path (default `/sse`).
    pub sse_path: String,
    /// The 2024-11-05 POST endpoint path (default `/message`).
    pub message_path: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive, once its head has (408 past it).
    pub body_read_timeout: Duration,
    /// Connection cap and header-read (and keep-alive idle) timeout.
    pub conn: crate::conn::ConnOptions,
    /// Deepest accepted JSON nesting.
    pub max_json_depth: usize,
    /// Most messages in one JSON-RPC batch (2025-03-26 sessions only); a larger batch is refused
    /// whole (-32600), before any of it runs.
    pub max_batch_items: usize,
    /// DNS-rebinding protection.
    pub origins: OriginPolicy,
    /// Answer CORS for the origins `origins` allows, so that browser-based clients (the MCP
    /// Inspector's web page, say) can read responses: preflights answered, `Mcp-Session-Id`,
    /// `WWW-Authenticate` and `Retry-After` exposed, no credentials mode (tokens travel in
    /// `Authorization`, never in cookies).
    pub cors: bool,
    /// Sessions idle longer than this are ended.
    pub session_idle_ttl: Duration,
    /// Most sessions at once, Streamable HTTP and HTTP+SSE together (the store counts both).
    pub max_sessions: usize,
    /// Most sessions one user (issuer, tenant, subject) may hold at once, both transports.
    pub max_sessions_per_principal: usize,
    /// Answers an HTTP+SSE session may have in flight or unread on its stream; past it a POST
    /// gets 429.
    pub legacy_in_flight: usize,
    /// Interval of SSE `: keepalive` comments.
    pub keepalive: Duration,
    /// The SSE `retry:` hint.
    pub sse_retry: Duration,
    /// Events buffered per SSE stream for resumption.
    pub sse_buffer_events: usize,
    /// OAuth 2.1 resource server settings; `None` serves everyone as the anonymous principal
    /// (local use only).
    pub auth: Option<HttpAuth>,
    /// More routes served beside the MCP endpoint (the dev authorization server, the admin API),
    /// behind the same Host/Origin check.
    pub extra_routes: Vec<ExtraRoutes>,
}

/// Routes another component serves on the same listener.
#[derive(Clone)]
pub struct ExtraRoutes {
    /// What they are, for logs and `Debug`.
    pub name: &'static str,
    /// The routes.
    pub router: Router,
}

impl std::fmt::Debug for ExtraRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ExtraRoutes").field(&self.name).finish()
    }
}

/// The resource-server side of 2025-11-25 basic/authorization.
#[derive(Clone)]
pub struct HttpAuth {
    /// Verifies bearer tokens.
    pub verifier: Arc<dyn TokenVerifier>,
    /// The canonical URL of the MCP endpoint: PRM `resource`, and the audience tokens must name.
    pub resource: String,
    /// Authorization servers clients should get tokens from (PRM `authorization_servers`).
    pub authorization_servers: Vec<String>,
    /// Scopes to advertise and to request in challenges.
    pub scopes_supported: Vec<String>,
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth")
            .field("resource", &self.resource)
            .field("authorization_servers", &self.authorization_servers)
            .field("scopes_supported", &self.scopes_supported)
            .finish_non_exhaustive()
    }
}

impl HttpAuth {
    /// The RFC 9728 metadata URL for the resource: the well-known prefix inserted before its path.
    pub fn metadata_url(&self) -> String {
        let Some((scheme, rest)) = self.resource.split_once("://") else {
            return self.resource.clone();
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let sep = if path.is_empty() { "" } else { "/" };
        format!("{scheme}://{host}/.well-known/oauth-protected-resource{sep}{path}")
    }

    /// The 403 step-up challenge: the scopes the target needs (RFC 6750 §3.1).
    pub(crate) fn scope_challenge(&self, scopes: &[String]) -> String {
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\", error_description=\"this needs a token with more scopes\"",
            scopes.join(" "),
            self.metadata_url()
        )
    }

    fn challenge(&self, error: Option<(&str, &str)>) -> String {
        let mut c = format!("Bearer resource_metadata=\"{}\"", self.metadata_url());
        if !self.scopes_supported.is_empty() {
            c.push_str(&format!(", scope=\"{}\"", self.scopes_supported.join(" ")));
        }
        if let Some((code, description)) = error {
            // Only visible ASCII, no quotes or backslashes: the header must always be valid.
            let description: String = description
                .chars()
                .filter(|c| (c.is_ascii_graphic() && *c != '"' && *c != '\\') || *c == ' ')
                .collect();
            c.push_str(&format!(", error=\"{code}\", error_description=\"{description}\""));
        }
        c
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            path: "/mcp".into(),
            sse_path: "/sse".into(),
            message_path: "/message".into(),
            max_body_bytes: 4 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(30),
            conn: crate::conn::ConnOptions::default(),
            max_json_depth: 64,
            max_batch_items: 100,
            origins: OriginPolicy::loopback(),
            cors: true,
            session_idle_ttl: Duration::from_secs(30 * 60),
            max_sessions: 10_000,
            max_sessions_per_principal: 1000,
            legacy_in_flight: 128,
            keepalive: Duration::from_secs(15),
            sse_retry: Duration::from_secs(1),
            sse_buffer_events: 256,
            auth: None,
            extra_routes: Vec::new(),
        }
    }
}

/// Shared state of the HTTP handlers.
pub(crate) struct App {
    pub(crate) engine: Arc<Engine>,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) opts: HttpOptions,
    /// True once shutdown began; SSE readers end when it flips. The sender is held by [`serve`].
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) legacy: LegacySessions,
}

/// What one request's log line says.
#[derive(Default)]
struct Trace {
    method: Option<String>,
    tool: Option<String>,
    session: Option<Arc<str>>,
}

/// Builds the router: the MCP endpoint and the 2024-11-05 endpoints.
pub fn router(
    engine: Arc<Engine>,
    store: Arc<dyn SessionStore>,
    opts: HttpOptions,
    shutdown: watch::Receiver<bool>,
) -> Router {
    let app = Arc::new(App { engine, store, legacy: LegacySessions::default(), opts: opts.clone(), shutdown });
    let mut router = Router::new();
    if opts.auth.is_some() {
        // RFC 9728 metadata at the path-inserted and the root well-known URIs
        // (2025-11-25 basic/authorization §Protected Resource Metadata Discovery Requirements).
        router = router
            .route(&format!("/.well-known/oauth-protected-resource{}", opts.path), get(resource_metadata))
            .route("/.well-known/oauth-protected-resource", get(resource_metadata));
    }
    let mut router = router
        .route(&opts.path, post(post_mcp).get(get_mcp).delete(delete_mcp))
        .route(&opts.sse_path, get(crate::legacy::get_sse))
        .route(&opts.message_path, post(crate::legacy::post_message))
        .with_state(app);
    for extra in &opts.extra_routes {
        // The same DNS-rebinding protection as the MCP endpoint.
        let origins = opts.origins.clone();
        router = router.merge(extra.router.clone().layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let verdict = origins.check(req.headers());
                async move {
                    match verdict {
                        Ok(()) => next.run(req).await,
                        Err(refusal) => Rejection::Forbidden(refusal).into_response(),
                    }
                }
            },
        )));
    }
    if opts.cors {
        router = router.layer(CorsIfOriginLayer(cors(opts.origins.clone())));
    }
    router
}

/// CORS for browser-based clients, on every route (MCP, metadata, the dev authorization server).
/// Answers preflights itself; a request from an origin `origins` refuses gets no CORS headers
/// (and the 403 of the origin check). 2025-11-25 basic/transports: the server validates `Origin`
/// on every request; CORS only lets an allowed page read what it was already allowed to ask.
fn cors(origins: OriginPolicy) -> tower_http::cors::CorsLayer {
    use http::Method;
    use http::header::{HeaderName, RETRY_AFTER, WWW_AUTHENTICATE};
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| origins.allows_origin(origin)))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        // Whatever the page asks to send (`Authorization`, `Mcp-Session-Id`, an API-key header):
        // without credentials mode, nothing ambient rides along.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            WWW_AUTHENTICATE,
            RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// [`cors`] only where a browser asks for it. A request without `Origin` (every non-browser
/// client) goes straight to the routes: the CORS layer otherwise builds a header map and a `Vary`
/// value for every request and merges them into every response, ~3% of the server's calls/s
/// with async audit. Such responses carry no CORS headers, and none of them is cacheable (no
/// freshness information), so no cache hands one to a page that sends `Origin`.
#[derive(Clone)]
struct CorsIfOriginLayer(tower_http::cors::CorsLayer);

impl<S: Clone> tower::Layer<S> for CorsIfOriginLayer {
    type Service = CorsIfOrigin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsIfOrigin { cors: self.0.layer(inner.clone()), plain: inner }
    }
}

#[derive(Clone)]
struct CorsIfOrigin<S> {
    plain: S,
    cors: tower_http::cors::Cors<S>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for CorsIfOrigin<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, tower_http::cors::ResponseFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Either side may take the next request: both must be ready.
        match self.plain.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.cors.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        use futures_util::future::Either;
        if req.headers().contains_key(http::header::ORIGIN) {
            Either::Right(self.cors.call(req))
        } else {
            Either::Left(self.plain.call(req))
        }
    }
}

/// Serves `router` on `listener` until `signal` resolves, then stops accepting, ends SSE streams,
/// lets in-flight requests finish and returns — or returns after `grace` regardless.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    store: Arc<dyn SessionStore>,
    opts: HttpOptions,
    signal: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = watch::channel(false);
    let reaper = tokio::spawn(reap(engine.clone(), store.clone(), opts.session_idle_ttl, rx.clone()));
    let conn = opts.conn.clone();
    // Routes become services once, here; each connection then shares them (a clone of the
    // router is a few reference counts). axum's own `serve` rebuilt the whole router for every
    // connection: ~10 KB and a few microseconds each, measured with 1,000 idle sessions.
    let app = router(engine.clone(), store.clone(), opts, rx.clone()).with_state(());
    let tx2 = tx.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown: no longer accepting connections; closing streams");
        let _ = tx2.send(true);
    });
    let result = crate::conn::serve(listener, app, &conn, rx, grace).await;
    let _ = tx.send(true);
    reaper.abort();
    for hs in store.drain() {
        engine.close_session(hs.session());
        hs.finish_streams();
    }
    result
}

/// Ends idle sessions periodically.
async fn reap(engine: Arc<Engine>, store: Arc<dyn SessionStore>, ttl: Duration, mut stop: watch::Receiver<bool>) {
    let every = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        for hs in store.take_idle(ttl) {
            tracing::debug!(session = short(hs.id()), "session expired");
            engine.close_session(hs.session());
            hs.finish_streams();
        }
    }
}

// === POST ===

async fn post_mcp(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut trace = Trace::default();
    let resp = match app.post(&uri, &headers, body, &mut trace).await {
        Ok(r) => r,
        Err(rej) => rej.into_response(),
    };
    log(&trace, "POST", resp.status(), started);
    resp
}

impl App {
    async fn post(
        self: &Arc<Self>,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: Body,
        trace: &mut Trace,
    ) -> Result<Response, Rejection> {
        self.opts.origins.check(headers).map_err(Rejection::Forbidden)?;
        // Every request authenticates; a session id is never a credential.
        let principal = self.authenticate(uri, headers).await?;
        if !wire::is_json_content(headers) {
            return Err(Rejection::UnsupportedMediaType);
        }
        let accept = Accept::from_headers(headers);
        if !accept.json && !accept.sse {
            return Err(Rejection::NotAcceptable);
        }
        let bytes = read_body(body, headers, self.opts.max_body_bytes, self.opts.body_read_timeout).await?;
        let parsed = parse_body(&bytes, self.opts.max_json_depth).map_err(Rejection::Parse)?;
        let id_of = |b: &RpcBody<'_>| match b {
            RpcBody::Single(Message::Request(r)) => Some(r.id.clone()),
            _ => None,
        };
        if let Some(v) = headers.get(VERSION_HEADER) {
            let v = v.to_str().unwrap_or("");
            // Any supported version is accepted, even one other than the session's: conformance
            // 0.1.16 sends 2025-03-26 on 2025-11-25 sessions (spec.md §2.3 row 19).
            if ProtocolVersion::parse(v.trim()).is_none() {
                return Err(Rejection::UnsupportedVersion { requested: v.to_owned(), id: id_of(&parsed) });
            }
        }
        if let RpcBody::Single(Message::Request(req)) = &parsed
            && req.method == "initialize"
        {
            trace.method = Some("initialize".into());
            return self.initialize(req, accept, principal, trace);
        }
        let hs = self.session(headers, &principal)?;
        trace.session = Some(hs.session().id_arc());
        hs.session().touch();
        match parsed {
            RpcBody::Single(Message::Request(req)) => {
                trace.method = Some(req.method.to_string());
                if req.method == "tools/call" && tracing::enabled!(tracing::Level::INFO) {
                    trace.tool = tool_name(&req);
                }
                self.answer(&hs, &principal, &req, accept).await
            }
            RpcBody::Single(Message::Notification(n)) => {
                trace.method = Some(n.method.to_string());
                self.engine.notification(hs.session(), &n);
                Ok(wire::accepted())
            }
            RpcBody::Single(Message::Response(r)) => {
                trace.method = Some("response".into());
                self.engine.response(hs.session(), &r);
                Ok(wire::accepted())
            }
            RpcBody::Batch(items) => {
                trace.method = Some("batch".into());
                if !hs.session().version().is_some_and(ProtocolVersion::allows_batch) {
                    return Err(Rejection::BatchNotAllowed);
                }
                if items.len() > self.opts.max_batch_items {
                    return Err(Rejection::BatchTooLarge(self.opts.max_batch_items));
                }
                self.batch(&hs, &principal, items).await
            }
        }
    }

    fn initialize(
        &self,
        req: &Request<'_>,
        accept: Accept,
        principal: Principal,
        trace: &mut Trace,
    ) -> Result<Response, Rejection> {
        // Room first: a refused `initialize` runs nothing and leaves nothing behind.
        let seat = self.store.reserve(&principal).map_err(Rejection::from)?;
        let hs = Arc::new(HttpSession::new(self.opts.sse_buffer_events));
        hs.session().bind_owner(principal.clone());
        let Dispatch::Ready(answer) = self.engine.request(hs.session(), &principal, req, Sink::Session) else {
            // `initialize` is always answered synchronously.
            return Ok(wire::json(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()));
        };
        if hs.session().negotiated().is_none() {
            return Ok(wire::single(answer, accept));
        }
        self.store.insert(hs.clone(), seat);
        trace.session = Some(hs.session().id_arc());
        Ok(wire::with_session(wire::single(answer, accept), hs.id()))
    }

    /// The session named by `Mcp-Session-Id`, if it exists and belongs to `principal`. Another
    /// principal's session answers exactly like an unknown one (404), revealing nothing.
    fn session(&self, headers: &HeaderMap, principal: &Principal) -> Result<Arc<HttpSession>, Rejection> {
        let id = headers.get(SESSION_HEADER).ok_or(Rejection::MissingSession)?;
        let id = id.to_str().map_err(|_| Rejection::UnknownSession)?;
        let hs = self.store.get(id).ok_or(Rejection::UnknownSession)?;
        if !hs.session().admits(principal) {
            tracing::warn!(session = short(hs.id()), subject = %principal.subject, "session used by another principal");
            return Err(Rejection::UnknownSession);
        }
        Ok(hs)
    }

    /// Authenticates the request: `Authorization: Bearer` only (2025-11-25 basic/authorization
    /// §Token Requirements); a token in the query string is refused outright.
    pub(crate) async fn authenticate(&self, uri: &http::Uri, headers: &HeaderMap) -> Result<Principal, Rejection> {
        let Some(auth) = &self.opts.auth else {
            return Ok(Principal::anonymous());
        };
        let unauthorized = |error: Option<(&str, &str)>, message: String| Rejection::Unauthorized {
            challenge: auth.challenge(error),
            message,
        };
        if uri.query().is_some_and(|q| q.split('&').any(|kv| kv.starts_with("access_token="))) {
            let m = "access tokens are accepted only in the Authorization header, never in the URL";
            self.audit_refusal(uri, "401 invalid_request", m);
            return Err(unauthorized(Some(("invalid_request", m)), m.into()));
        }
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(unauthorized(None, "authentication required: send Authorization: Bearer <token>".into()));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            let m = "the Authorization header must be Bearer <token>";
            return Err(unauthorized(Some(("invalid_request", m)), m.into()));
        };
        match auth.verifier.verify(token).await {
            Ok(p) => Ok(p),
            Err(AuthFailure::Invalid(m)) => {
                self.audit_refusal(uri, "401 invalid_token", &m);
                Err(unauthorized(Some(("invalid_token", &m)), m.clone()))
            }
            Err(AuthFailure::Unavailable(m)) => {
                tracing::warn!(reason = %m, "authentication unavailable");
                self.audit_refusal(uri, "503 authentication unavailable", &m);
                Err(Rejection::AuthUnavailable)
            }
        }
    }

    /// Records a refused credential in the audit trail (the refusal does not wait; anyone can
    /// send bad tokens, so the auditor keeps only so many a second and counts the rest).
    /// `why` is the verifier's message, which never contains the token.
    fn audit_refusal(&self, uri: &http::Uri, outcome: &str, why: &str) {
        let Some(auditor) = self.engine.auditor() else { return };
        let mut e = portcullis_engine::AuditEvent::new("auth-failure", None, uri.path());
        e.decision = "refused";
        e.rule = Some(why.to_owned());
        e.outcome = outcome.to_owned();
        auditor.note(e);
    }

    /// Runs one request. Fast handlers answer with JSON; a handler that sends anything first
    /// turns the response into an SSE stream carrying those messages, then the result.
    async fn answer(
        &self,
        hs: &Arc<HttpSession>,
        principal: &Principal,
        req: &Request<'_>,
        accept: Accept,
    ) -> Result<Response, Rejection> {
        if let Some(check) = self.engine.admit(hs.session(), principal, req)
            && let Err((error, retry_after)) = check.await
        {
            return Err(Rejection::RateLimited { retry_after, error });
        }
        let (tx, rx) = mpsc::channel(64);
        let fut = match self.engine.request(hs.session(), principal, req, Sink::Stream(tx)) {
            Dispatch::Ready(bytes) => return Ok(wire::single(bytes, accept)),
            // An API key cannot be re-authorized with more scopes: no challenge, just the error.
            Dispatch::StepUp { error, .. } if principal.method == portcullis_engine::AuthMethod::ApiKey => {
                return Ok(wire::single(error, accept));
            }
            Dispatch::StepUp { scopes, error } => {
                // Nothing has been sent yet: the HTTP-level step-up challenge.
                let challenge = match &self.opts.auth {
                    Some(auth) => auth.scope_challenge(&scopes),
                    None => format!("Bearer error=\"insufficient_scope\", scope=\"{}\"", scopes.join(" ")),
                };
                return Err(Rejection::InsufficientScope { challenge, error });
            }
            Dispatch::Pending(fut) => fut,
        };
        Ok(self.respond(hs, fut, rx, accept).await)
    }

    /// Polls a running handler: one JSON body if it sends nothing first, else an SSE stream.
    async fn respond(
        &self,
        hs: &Arc<HttpSession>,
        fut: BoxFuture<'static, Option<Vec<u8>>>,
        mut rx: mpsc::Receiver<Outbound>,
        accept: Accept,
    ) -> Response {
        if !accept.sse {
            // JSON only: nothing can be streamed, so whatever the handler sends is dropped.
            drop(rx);
            return match Detached::new(fut).await {
                Some(bytes) => wire::single(bytes, accept),
                None => wire::accepted(),
            };
        }
        let mut fut = Detached::new(fut);
        let mut early = Vec::new();
        tokio::select! {
            biased;
            out = &mut fut => {
                while let Ok(m) = rx.try_recv() {
                    early.push(m);
                }
                if early.is_empty() {
                    return match out {
                        Some(bytes) => wire::single(bytes, accept),
                        None => wire::accepted(),
                    };
                }
                let stream = hs.open_stream();
                for m in early {
                    deliver(&stream, m);
                }
                if let Some(bytes) = out {
                    stream.push(Bytes::from(bytes));
                }
                stream.finish();
                self.stream_response(hs, stream)
            }
            first = rx.recv() => {
                let Some(first) = first else {
                    // The handler dropped its context: it can send nothing more, so JSON it is.
                    return match fut.await {
                        Some(bytes) => wire::single(bytes, accept),
                        None => wire::accepted(),
                    };
                };
                let stream = hs.open_stream();
                deliver(&stream, first);
                let forward = stream.clone();
                let fut = fut.into_inner();
                tokio::spawn(async move {
                    let mut fut = std::pin::pin!(fut);
                    let out = loop {
                        tokio::select! {
                            biased;
                            m = rx.recv() => match m {
                                Some(m) => deliver(&forward, m),
                                None => break fut.await,
                            },
                            out = &mut fut => {
                                while let Ok(m) = rx.try_recv() {
                                    deliver(&forward, m);
                                }
                                break out;
                            }
                        }
                    };
                    if let Some(bytes) = out {
                        forward.push(Bytes::from(bytes));
                    }
                    forward.finish();
                });
                self.stream_response(hs, stream)
            }
        }
    }

    fn stream_response(&self, hs: &Arc<HttpSession>, stream: Arc<sse::EventStream>) -> Response {
        // The priming event is a 2025-11-25 addition; older clients may choke on empty data.
        let priming = hs.session().version().is_some_and(|v| v >= ProtocolVersion::V2025_11_25);
        let id = stream.id();
        let owner = Arc::downgrade(hs);
        let body = sse::reader(stream, 0, priming, self.framing(), None, self.shutdown.clone(), move |drained| {
            if drained && let Some(hs) = owner.upgrade() {
                hs.forget_stream(id);
            }
        });
        wire::sse(Body::from_stream(body))
    }

    /// What a GET stream of `principal` rechecks at each keep-alive.
    pub(crate) fn holder(&self, principal: &Principal) -> sse::Holder {
        sse::Holder { principal: principal.clone(), verifier: self.opts.auth.as_ref().map(|a| a.verifier.clone()) }
    }

    pub(crate) fn framing(&self) -> Framing {
        Framing { retry: self.opts.sse_retry, keepalive: self.opts.keepalive }
    }

    async fn batch(
        &self,
        hs: &Arc<HttpSession>,
        principal: &Principal,
        items: Vec<Result<Message<'_>, (Option<portcullis_protocol::RequestId>, portcullis_protocol::RpcError)>>,
    ) -> Result<Response, Rejection> {
        let mut answers = Vec::new();
        let mut pending = Vec::new();
        for item in items {
            match item {
                Err((id, e)) => answers.push(write_error(id.as_ref(), &e)),
                Ok(Message::Request(r)) if r.method == "initialize" => {
                    return Err(Rejection::InitializeInBatch);
                }
                Ok(Message::Request(r)) => {
                    if let Some(check) = self.engine.admit(hs.session(), principal, &r)
                        && let Err((error, _)) = check.await
                    {
                        answers.push(error);
                        continue;
                    }
                    match self.engine.request(hs.session(), principal, &r, Sink::Session) {
                        Dispatch::Ready(b) | Dispatch::StepUp { error: b, .. } => answers.push(b),
                        Dispatch::Pending(f) => pending.push(Detached::new(f)),
                    }
                }
                Ok(Message::Notification(n)) => self.engine.notification(hs.session(), &n),
                Ok(Message::Response(r)) => {
                    self.engine.response(hs.session(), &r);
                }
            }
        }
        answers.extend(futures_util::future::join_all(pending).await.into_iter().flatten());
        if answers.is_empty() {
            return Ok(wire::accepted());
        }
        let mut out = Vec::with_capacity(answers.iter().map(Vec::len).sum::<usize>() + answers.len() + 2);
        out.push(b'[');
        for (i, a) in answers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(a);
        }
        out.push(b']');
        Ok(wire::json(StatusCode::OK, Bytes::from(out)))
    }
}

fn deliver(stream: &sse::EventStream, m: Outbound) {
    match m {
        Outbound::Message(b) => {
            stream.push(b);
        }
        Outbound::CloseStream => stream.close_connection(),
    }
}

/// Reads the body, refusing more than `limit` bytes (413) before buffering them.
/// A body that has not arrived within `timeout` is 408: a client trickling its body holds a
/// connection and a task, and must not hold them for long.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Rejection> {
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Rejection::PayloadTooLarge(limit));
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_elapsed) => Err(Rejection::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Rejection::PayloadTooLarge(limit)),
        Ok(Err(_)) => Err(Rejection::BodyUnreadable),
    }
}

fn tool_name(req: &Request<'_>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct P {
        name: String,
    }
    serde_json::from_str::<P>(req.params?.get()).ok().map(|p| p.name)
}

// === GET and DELETE ===

async fn get_mcp(State(app): State<Arc<App>>, OriginalUri(uri): OriginalUri, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let mut trace = Trace { method: Some("stream".into()), ..Trace::default() };
    let resp = match app.get(&uri, &headers, &mut trace).await {
        Ok(r) => r,
        Err(rej) => rej.into_response(),
    };
    log(&trace, "GET", resp.status(), started);
    resp
}

impl App {
    async fn get(
        self: &Arc<Self>,
        uri: &http::Uri,
        headers: &HeaderMap,
        trace: &mut Trace,
    ) -> Result<Response, Rejection> {
        self.opts.origins.check(headers).map_err(Rejection::Forbidden)?;
        let principal = self.authenticate(uri, headers).await?;
        let accept = Accept::from_headers(headers);
        if headers.get(SESSION_HEADER).is_none() {
            // A client that fell back to the 2024-11-05 transport GETs the endpoint it was given
            // (2025-11-25 basic/transports §Backwards Compatibility): serve the legacy stream here.
            if accept.sse {
                trace.method = Some("legacy-stream".into());
                return crate::legacy::open(self, principal);
            }
            return Err(Rejection::MethodNotAllowed("POST, GET, DELETE"));
        }
        if !accept.sse {
            return Err(Rejection::NotAcceptable);
        }
        if let Some(v) = headers.get(VERSION_HEADER) {
            let v = v.to_str().unwrap_or("");
            if ProtocolVersion::parse(v.trim()).is_none() {
                return Err(Rejection::UnsupportedVersion { requested: v.to_owned(), id: None });
            }
        }
        let hs = self.session(headers, &principal)?;
        trace.session = Some(hs.session().id_arc());
        hs.session().touch();
        let resume = headers.get(LAST_EVENT_ID).and_then(|v| v.to_str().ok()).and_then(sse::parse_event_id);
        let (stream, cursor) = match resume.and_then(|(s, seq)| hs.stream(s).map(|st| (st, seq))) {
            Some(found) => found,
            // No resumable stream by that id (or no id): the standalone stream, from now on.
            None => (hs.standalone().clone(), u64::MAX),
        };
        // Not resuming: start after the newest buffered event, so nothing is delivered twice.
        let cursor = if cursor == u64::MAX { stream.last_seq() } else { cursor };
        let id = stream.id();
        let standalone = id == 0;
        let priming = standalone && hs.session().version().is_some_and(|v| v >= ProtocolVersion::V2025_11_25);
        let owner = Arc::downgrade(&hs);
        let body = sse::reader(
            stream,
            cursor,
            priming,
            self.framing(),
            Some(self.holder(&principal)),
            self.shutdown.clone(),
            move |drained| {
                if drained
                    && !standalone
                    && let Some(hs) = owner.upgrade()
                {
                    hs.forget_stream(id);
                }
            },
        );
        Ok(wire::sse(Body::from_stream(body)))
    }
}

async fn delete_mcp(State(app): State<Arc<App>>, OriginalUri(uri): OriginalUri, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let mut trace = Trace { method: Some("terminate".into()), ..Trace::default() };
    let resp = match app.delete(&uri, &headers, &mut trace).await {
        Ok(r) => r,
        Err(rej) => rej.into_response(),
    };
    log(&trace, "DELETE", resp.status(), started);
    resp
}

impl App {
    async fn delete(&self, uri: &http::Uri, headers: &HeaderMap, trace: &mut Trace) -> Result<Response, Rejection> {
        self.opts.origins.check(headers).map_err(Rejection::Forbidden)?;
        let principal = self.authenticate(uri, headers).await?;
        let hs = self.session(headers, &principal)?;
        self.store.remove(hs.id()).ok_or(Rejection::UnknownSession)?;
        trace.session = Some(hs.session().id_arc());
        self.engine.close_session(hs.session());
        hs.finish_streams();
        Ok(StatusCode::OK.into_response())
    }
}

/// RFC 9728 Protected Resource Metadata.
async fn resource_metadata(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = app.opts.origins.check(&headers) {
        return Rejection::Forbidden(r).into_response();
    }
    let Some(auth) = &app.opts.auth else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let doc = serde_json::json!({
        "resource": auth.resource,
        "authorization_servers": auth.authorization_servers,
        "scopes_supported": auth.scopes_supported,
        "bearer_methods_supported": ["header"],
        "resource_name": "Portcullis",
    });
    wire::json(StatusCode::OK, Bytes::from(doc.to_string()))
}

/// Query of the legacy POST endpoint.
#[derive(serde::Deserialize)]
pub(crate) struct SessionQuery {
    #[serde(rename = "sessionId", alias = "session_id")]
    pub(crate) session_id: Option<String>,
}

pub(crate) type LegacyQuery = Query<SessionQuery>;

/// A handler future that keeps running if the HTTP request is dropped: a client disconnect is not
/// a cancellation (2025-11-25 basic/transports §Sending Messages to the Server). Dropped while
/// pending, it moves itself to a task; its result is then discarded.
pub(crate) struct Detached {
    inner: Option<BoxFuture<'static, Option<Vec<u8>>>>,
}

impl Detached {
    pub(crate) fn new(fut: BoxFuture<'static, Option<Vec<u8>>>) -> Self {
        Self { inner: Some(fut) }
    }

    fn into_inner(mut self) -> BoxFuture<'static, Option<Vec<u8>>> {
        self.inner.take().unwrap_or_else(|| Box::pin(async { None }))
    }
}

impl Future for Detached {
    type Output = Option<Vec<u8>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fut) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(out) => {
                self.inner = None;
                Poll::Ready(out)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(fut) = self.inner.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(fut);
        }
    }
}

pub(crate) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn log(trace: &Trace, verb: &str, status: StatusCode, started: Instant) {
    // Method and tool are the client's text: capped, so one request cannot write a huge line.
    use portcullis_engine::capped;
    tracing::info!(
        target: "portcullis::request",
        http = verb,
        method = %capped(trace.method.as_deref().unwrap_or("-")),
        tool = trace.tool.as_deref().map(capped).as_deref(),
        session = trace.session.as_deref().map(short),
        status = status.as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
    );
}
