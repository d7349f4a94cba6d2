//! `Engine`: one JSON-RPC message in, at most one response out, for every transport alike.
//!
//! Cheap methods (lists, ping, setLevel) answer synchronously ([`Dispatch::Ready`]); handler
//! calls (`tools/call`, `resources/read`, `prompts/get`) return a `'static` future
//! ([`Dispatch::Pending`]) that owns everything it needs, so a transport may poll it inline, move
//! it to a task when the client disconnects (a disconnect is not a cancellation), or drop it.
//! The engine never does socket I/O and never decides HTTP statuses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{AbortHandle, Abortable};
use portcullis_protocol::{
    Notification, ProtocolVersion, Request, RequestId, Response, RpcError, code, write_error, write_result,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::audit::{AuditEvent, Auditor};
use crate::context::{RequestContext, Sink};
use crate::guard::Guards;
use crate::policy::{Decision, Kind, Policy};
use crate::principal::Principal;
use crate::ratelimit::RateLimiter;
use crate::registry::{
    BoxFuture, Prompt, PromptCall, ReadCall, Registry, Resource, ResourceTemplate, Tool, ToolCall, ToolError,
};
use crate::session::{LogLevel, Negotiated, Session};

/// Who this server says it is in `initialize`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `serverInfo.name`.
    pub name: String,
    /// `serverInfo.version`.
    pub version: String,
    /// `serverInfo.title`.
    pub title: Option<String>,
    /// `instructions` for the model.
    pub instructions: Option<String>,
}

/// Engine limits and timeouts.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Items per page of `*/list` results.
    pub page_size: usize,
    /// How long a handler waits for the client to answer a server-to-client request.
    pub client_request_timeout: Duration,
}

/// The engine's answer to a request.
pub enum Dispatch {
    /// The serialized response, already complete.
    Ready(Vec<u8>),
    /// A handler runs; resolves to the response, or `None` if the request was cancelled
    /// (2025-11-25 basic/utilities/cancellation: no response is sent).
    Pending(BoxFuture<'static, Option<Vec<u8>>>),
    /// The policy allows the target but the token lacks scopes: over HTTP, before any response
    /// bytes, a 403 `insufficient_scope` challenge naming `scopes`; where the response has
    /// already begun (a stream, a batch, HTTP+SSE, stdio), `error` (an `INSUFFICIENT_SCOPE`
    /// JSON-RPC error with the scopes in `data`).
    StepUp {
        /// Every scope the target requires.
        scopes: Vec<String>,
        /// The JSON-RPC error response.
        error: Vec<u8>,
    },
}

/// The answer of [`Engine::admit`]: go ahead, or the error response to send and how long the
/// caller should wait.
pub type Admission = BoxFuture<'static, Result<(), (Vec<u8>, Duration)>>;

/// Dispatches messages against a registry.
pub struct Engine {
    registry: Arc<Registry>,
    info: ServerInfo,
    options: EngineOptions,
    policy: Policy,
    auditor: Option<Arc<dyn Auditor>>,
    limiter: Option<Arc<dyn RateLimiter>>,
    guards: Arc<Guards>,
}

#[derive(Deserialize)]
struct InitializeParams {
    #[serde(rename = "protocolVersion")]
    protocol_version: String,
    #[serde(default)]
    capabilities: Value,
    #[serde(rename = "clientInfo", default)]
    client_info: Value,
}

#[derive(Deserialize, Default)]
struct MetaParams {
    #[serde(rename = "progressToken", default)]
    progress_token: Option<Value>,
}

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
    #[serde(rename = "_meta", default)]
    meta: Option<MetaParams>,
}

#[derive(Deserialize, Default)]
struct ListParams {
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct UriParams {
    uri: String,
    #[serde(rename = "_meta", default)]
    meta: Option<MetaParams>,
}

#[derive(Deserialize)]
struct PromptParams {
    name: String,
    #[serde(default)]
    arguments: Option<HashMap<String, String>>,
    #[serde(rename = "_meta", default)]
    meta: Option<MetaParams>,
}

#[derive(Deserialize)]
struct CompleteParams {
    #[serde(rename = "ref")]
    reference: CompleteRef,
    argument: CompleteArgument,
}

#[derive(Deserialize)]
struct CompleteRef {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
}

#[derive(Deserialize)]
struct CompleteArgument {
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct CancelledParams<'a> {
    #[serde(rename = "requestId", borrow)]
    request_id: &'a RawValue,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: i64,
    message: String,
    #[serde(default)]
    data: Option<Value>,
}

// === impl Engine ===

impl Engine {
    /// An engine over `registry`.
    pub fn new(registry: Arc<Registry>, info: ServerInfo, options: EngineOptions) -> Self {
        Self {
            registry,
            info,
            options,
            policy: Policy::allow_all(),
            auditor: None,
            limiter: None,
            guards: Arc::default(),
        }
    }

    /// Checks argument and result sizes and screens results for prompt injection with `guards`.
    #[must_use]
    pub fn with_guards(mut self, guards: Guards) -> Self {
        self.guards = Arc::new(guards);
        self
    }

    /// Rate-limits calls, reads and gets with `limiter`.
    #[must_use]
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Whether `req` may go ahead now: `None` when no rate limit applies (call
    /// [`Engine::request`] at once); otherwise await the future first. It resolves to the
    /// JSON-RPC error response to send instead (and the wait) when the call is refused; the
    /// refusal is audited. Targets the caller cannot use (unknown, hidden, needing a step-up) are
    /// counted all alike under one key per principal ([`UNUSABLE`](crate::ratelimit::UNUSABLE)):
    /// they fill neither the limiter with client-chosen keys nor the audit trail unseen, and a
    /// hidden target is limited exactly as an unknown one, so a 429 reveals nothing.
    pub fn admit(&self, session: &Session, principal: &Principal, req: &Request<'_>) -> Option<Admission> {
        use crate::ratelimit::UNUSABLE;
        let limiter = self.limiter.as_ref()?;
        // The same required fields the dispatcher parses: if these do not parse, neither does
        // the request, and `request` refuses it without running anything.
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        #[derive(Deserialize)]
        struct Uri {
            uri: String,
        }
        let catalog = self.registry.snapshot();
        let usable = |d: Option<Decision>| matches!(d, Some(Decision::Allow { .. }));
        let (kind, target, key) = match req.method.as_ref() {
            "tools/call" => {
                let name = parse::<Name>(req.params).ok()?.name;
                let d = catalog.tool(&name).map(|_| self.policy.decide(principal, Kind::Tool, &name));
                let key = if usable(d) { name.clone() } else { UNUSABLE.to_owned() };
                (Kind::Tool, name, key)
            }
            "prompts/get" => {
                let name = parse::<Name>(req.params).ok()?.name;
                let d = catalog.prompt(&name).map(|_| self.policy.decide(principal, Kind::Prompt, &name));
                let key = if usable(d) { name.clone() } else { UNUSABLE.to_owned() };
                (Kind::Prompt, name, key)
            }
            "resources/read" => {
                let uri = parse::<Uri>(req.params).ok()?.uri;
                // Keyed and matched like the policy: the decoded URI, or the template serving it.
                let template = catalog.match_template(&uri).map(|(t, _)| t.template.as_str().to_owned());
                let exists = catalog.resource(&uri).is_some() || template.is_some();
                let d = exists.then(|| self.policy.decide_resource(principal, &uri, template.as_deref()));
                let key = if usable(d) {
                    template.unwrap_or_else(|| crate::template::percent_decode(&uri).unwrap_or_else(|| uri.clone()))
                } else {
                    UNUSABLE.to_owned()
                };
                (Kind::Resource, uri, key)
            }
            _ => return None,
        };
        let check = limiter.check(principal, kind, &target, &key)?;
        let id = req.id.clone();
        let mut event = AuditEvent::new("rate-limited", Some(principal), &req.method);
        event.request_id = Some(req.id.to_string());
        event.session = Some(session.id().to_owned());
        event.target = Some(target);
        let auditor = self.auditor.clone();
        Some(Box::pin(async move {
            let Err(limited) = check.await else { return Ok(()) };
            let retry_ms = limited.retry_after.as_millis().max(1) as u64;
            let e = RpcError::new(code::RATE_LIMITED, format!("rate limited: retry after {retry_ms} ms"))
                .with_data(json!({ "retryAfterMs": retry_ms, "rule": limited.rule }));
            if let Some(a) = auditor {
                (event.decision, event.outcome) = ("refused", "rate-limited".into());
                event.rule = Some(limited.rule.clone());
                // The refusal does not wait for it (no result is released).
                a.note(event);
            }
            Err((write_error(Some(&id), &e), limited.retry_after))
        }))
    }

    /// Records every call, read, get and denial with `auditor`; a result is released only once
    /// its record is taken as configured (durable by default).
    #[must_use]
    pub fn with_auditor(mut self, auditor: Arc<dyn Auditor>) -> Self {
        self.auditor = Some(auditor);
        self
    }

    /// The auditor, for transports to record what they refuse (authentication, rate limits).
    pub fn auditor(&self) -> Option<&Arc<dyn Auditor>> {
        self.auditor.as_ref()
    }

    /// Decides every list, call, read and get with `policy` (default: allow all).
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Ends a session: stops its handlers and forgets it for notifications.
    pub fn close_session(&self, session: &Session) {
        self.registry.leave(session);
        session.close();
    }

    /// Handles a request from `principal` (who sent this request: its scopes may differ from
    /// those of the token that opened the session). `sink` carries what handlers send while they
    /// run.
    pub fn request(&self, session: &Arc<Session>, principal: &Principal, req: &Request<'_>, sink: Sink) -> Dispatch {
        let id = &req.id;
        let method = req.method.as_ref();
        let visible = |kind: Kind, target: &str| self.policy.decide(principal, kind, target).visible();
        let answer = match method {
            "initialize" => self.initialize(session, req.params),
            "ping" => Ok("{}".to_owned()),
            _ if session.negotiated().is_none() => {
                Err(RpcError::invalid_request("the session is not initialized: send initialize first"))
            }
            "tools/call" => return self.call_tool(session, principal, req, sink),
            "resources/read" => return self.read_resource(session, principal, req, sink),
            "prompts/get" => return self.get_prompt(session, principal, req, sink),
            // Lists hold exactly what the same principal may call (policy.rs).
            "tools/list" => {
                let c = self.registry.snapshot();
                self.list(req.params, "tools", c.tools.iter().filter(|t| visible(Kind::Tool, &t.name)).collect())
            }
            "resources/list" => {
                let c = self.registry.snapshot();
                let visible = |r: &&Arc<Resource>| self.policy.decide_resource(principal, &r.uri, None).visible();
                self.list(req.params, "resources", c.resources.iter().filter(visible).collect())
            }
            "resources/templates/list" => {
                let c = self.registry.snapshot();
                let shown = |t: &&Arc<ResourceTemplate>| visible(Kind::Resource, t.template.as_str());
                self.list(req.params, "resourceTemplates", c.templates.iter().filter(shown).collect())
            }
            "prompts/list" => {
                let c = self.registry.snapshot();
                self.list(req.params, "prompts", c.prompts.iter().filter(|p| visible(Kind::Prompt, &p.name)).collect())
            }
            "resources/subscribe" => parse::<UriParams>(req.params).and_then(|p| {
                let catalog = self.registry.snapshot();
                let template = catalog.match_template(&p.uri).map(|(t, _)| t.template.as_str());
                let exists = catalog.resource(&p.uri).is_some() || template.is_some();
                // Updates are content: subscribing needs what reading needs (allowed, not step-up).
                let allowed =
                    matches!(self.policy.decide_resource(principal, &p.uri, template), Decision::Allow { .. });
                if !exists || !allowed {
                    return Err(RpcError::new(code::RESOURCE_NOT_FOUND, format!("resource not found: {}", p.uri))
                        .with_data(json!({ "uri": p.uri })));
                }
                if !session.subscribe(&p.uri) {
                    return Err(RpcError::invalid_request("too many resource subscriptions on this session"));
                }
                Ok("{}".to_owned())
            }),
            "resources/unsubscribe" => parse::<UriParams>(req.params).map(|p| {
                session.unsubscribe(&p.uri);
                "{}".to_owned()
            }),
            "completion/complete" => self.complete(principal, req.params),
            "logging/setLevel" => set_level(session, req.params),
            other => Err(RpcError::method_not_found(other)),
        };
        Dispatch::Ready(match answer {
            Ok(json) => write_result(id, &json),
            Err(e) => write_error(Some(id), &e),
        })
    }

    /// Handles a notification from the client. Never answers.
    pub fn notification(&self, session: &Arc<Session>, note: &Notification<'_>) {
        match note.method.as_ref() {
            "notifications/initialized" => {
                session.mark_initialized();
            }
            "notifications/cancelled" => {
                let raw = note.params.map_or("{}", RawValue::get);
                if let Ok(p) = serde_json::from_str::<CancelledParams<'_>>(raw)
                    && let Some(id) = RequestId::from_raw(p.request_id)
                {
                    // Unknown or finished ids are ignored (the race is allowed by the spec).
                    session.cancel(&id);
                }
            }
            // roots/list_changed, progress from the client, anything unknown: nothing to do.
            _ => {}
        }
    }

    /// Routes a client's response to the server request that awaits it. Returns false when no
    /// request of ours has that id (late, duplicate or forged).
    pub fn response(&self, session: &Session, resp: &Response<'_>) -> bool {
        let Some(id) = resp.id.as_u64() else {
            return false;
        };
        let outcome = match resp.outcome {
            Ok(raw) => serde_json::from_str::<Value>(raw.get())
                .map_err(|e| RpcError::internal(format!("unreadable result from the client: {e}"))),
            Err(raw) => Err(match serde_json::from_str::<ErrorObject>(raw.get()) {
                Ok(e) => RpcError { code: e.code, message: e.message.into(), data: e.data },
                Err(e) => RpcError::internal(format!("unreadable error from the client: {e}")),
            }),
        };
        session.complete_response(id, outcome)
    }

    fn initialize(&self, session: &Arc<Session>, params: Option<&RawValue>) -> Result<String, RpcError> {
        let p: InitializeParams = parse(params)?;
        let version = ProtocolVersion::negotiate(&p.protocol_version);
        let fresh = session.set_negotiated(Negotiated {
            version,
            client_capabilities: p.capabilities,
            client_info: p.client_info,
        });
        if !fresh {
            return Err(RpcError::invalid_request("the session is already initialized"));
        }
        self.registry.join(session);
        let mut info = json!({ "name": self.info.name, "version": self.info.version });
        if let Some(title) = &self.info.title {
            info["title"] = json!(title);
        }
        let mut result = json!({
            "protocolVersion": version.as_str(),
            // Declared only for what is implemented (2025-11-25 basic/lifecycle §Capability Negotiation).
            "capabilities": {
                "tools": { "listChanged": true },
                "resources": { "subscribe": true, "listChanged": true },
                "prompts": { "listChanged": true },
                "logging": {},
                "completions": {},
            },
            "serverInfo": info,
        });
        if let Some(instructions) = &self.info.instructions {
            result["instructions"] = json!(instructions);
        }
        Ok(result.to_string())
    }

    /// One page of a list: `all` holds the visible items in catalog order; only the page's are
    /// serialized.
    ///
    /// Stable cursors (2025-11-25 server/utilities/pagination: SHOULD): a cursor names the last
    /// item of its page, and the next page starts after that item wherever it is now, so items
    /// registered or removed meanwhile do not make the walk repeat or skip the rest. Only if
    /// that item itself is gone does the page start where it would have been.
    fn list<T: Listed>(&self, params: Option<&RawValue>, key: &str, all: Vec<&Arc<T>>) -> Result<String, RpcError> {
        let p: ListParams = parse_or_default(params)?;
        let start = match p.cursor.as_deref() {
            None => 0,
            Some(c) => decode_cursor(c)
                .map(|(end, last)| match last {
                    Some(last) => all.iter().position(|t| t.key() == last).map_or(end.saturating_sub(1), |i| i + 1),
                    None => end,
                })
                .filter(|&n| n <= all.len())
                .ok_or_else(|| {
                    RpcError::invalid_params("invalid cursor: pass back a nextCursor from an earlier page")
                })?,
        };
        let end = (start + self.options.page_size.max(1)).min(all.len());
        let page = &all[start..end];
        let mut out = String::with_capacity(64 + 256 * page.len());
        out.push_str("{\"");
        out.push_str(key);
        out.push_str("\":[");
        for (i, item) in page.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            item.write_definition(&mut out);
        }
        out.push(']');
        if let Some(last) = page.last().filter(|_| end < all.len()) {
            out.push_str(",\"nextCursor\":");
            out.push_str(&json!(encode_cursor(end, last.key())).to_string());
        }
        out.push('}');
        Ok(out)
    }

    fn context(&self, session: &Arc<Session>, id: &RequestId, meta: Option<MetaParams>, sink: Sink) -> RequestContext {
        RequestContext {
            session: session.clone(),
            request_id: id.clone(),
            progress_token: meta.and_then(|m| m.progress_token),
            sink,
            client_timeout: self.options.client_request_timeout,
        }
    }

    /// The policy's answer for a target that exists: `None` to go on (with the rule recorded in
    /// `event`), or the dispatch that ends the request (`hidden` is the error a missing target
    /// gets, so a hidden one looks the same). Denials are audited.
    fn gate(&self, decision: Decision, id: &RequestId, hidden: RpcError, event: &mut AuditEvent) -> Option<Dispatch> {
        event.rule = Some(decision.rule().to_owned());
        match decision {
            Decision::Allow { .. } => None,
            Decision::Hide { .. } => {
                let mut event = event.clone();
                (event.kind, event.decision, event.outcome) = ("denial", "hide", "denied".into());
                Some(self.finish(event, write_error(Some(id), &hidden)))
            }
            Decision::StepUp { scopes, .. } => {
                let e = RpcError::new(
                    code::INSUFFICIENT_SCOPE,
                    format!("insufficient scope: this needs a token with {}", scopes.join(" ")),
                )
                .with_data(json!({ "error": "insufficient_scope", "requiredScopes": scopes }));
                if let Some(a) = &self.auditor {
                    // The 403 does not wait for it (no result is released).
                    let mut event = event.clone();
                    (event.kind, event.decision, event.outcome) = ("denial", "step-up", "denied".into());
                    a.note(event);
                }
                Some(Dispatch::StepUp { scopes, error: write_error(Some(id), &e) })
            }
        }
    }

    /// The event every audited method starts from.
    fn audit_event(
        &self,
        session: &Session,
        principal: &Principal,
        req: &Request<'_>,
        target: &str,
        arguments: Option<Value>,
    ) -> AuditEvent {
        let mut e = AuditEvent::new("call", Some(principal), &req.method);
        e.request_id = Some(req.id.to_string());
        e.session = Some(session.id().to_owned());
        e.target = Some(target.to_owned());
        e.arguments = arguments;
        e
    }

    /// Releases `bytes` once `event` is recorded (at once without an auditor).
    fn finish(&self, mut event: AuditEvent, bytes: Vec<u8>) -> Dispatch {
        let Some(auditor) = &self.auditor else { return Dispatch::Ready(bytes) };
        if event.outcome.is_empty() {
            event.outcome = outcome_of(&bytes);
        }
        event.result_bytes = Some(bytes.len() as u64);
        let recorded = auditor.record(event);
        Dispatch::Pending(Box::pin(async move {
            match recorded.await {
                Ok(()) => Some(bytes),
                Err(_) => Some(audit_failed(&bytes)),
            }
        }))
    }

    fn call_tool(&self, session: &Arc<Session>, principal: &Principal, req: &Request<'_>, sink: Sink) -> Dispatch {
        let started = Instant::now();
        let id = &req.id;
        let p: CallParams = match parse(req.params) {
            Ok(p) => p,
            Err(e) => {
                let event = self.audit_event(session, principal, req, "", None);
                return self.finish(event, write_error(Some(id), &e));
            }
        };
        let mut event = self.audit_event(session, principal, req, &p.name, p.arguments.clone());
        let catalog = self.registry.snapshot();
        // 2025-11-25 server/tools §Error Handling: unknown tool is a protocol error.
        let unknown = || RpcError::invalid_params(format!("unknown tool: {}", p.name));
        let Some(tool) = catalog.tool(&p.name) else {
            return self.finish(event, write_error(Some(id), &unknown()));
        };
        let decision = self.policy.decide(principal, Kind::Tool, &p.name);
        if let Some(stop) = self.gate(decision, id, unknown(), &mut event) {
            return stop;
        }
        let size = req.params.map_or(0, |r| r.get().len());
        if size > self.guards.max_argument_bytes {
            let limit = self.guards.max_argument_bytes;
            let e =
                RpcError::invalid_params(format!("tools/call arguments are {size} bytes, over the limit of {limit}"));
            event.flags.push("arguments-too-large".into());
            event.arguments = None;
            return self.finish(event, write_error(Some(id), &e));
        }
        let args = match p.arguments {
            None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => {
                let e = RpcError::invalid_params("tools/call arguments must be an object");
                return self.finish(event, write_error(Some(id), &e));
            }
        };
        if !tool.validator.is_valid(&args) {
            // Input validation failures are tool results the model can act on, not protocol errors.
            let problems: Vec<String> = tool
                .validator
                .iter_errors(&args)
                .take(5)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() { e.to_string() } else { format!("{at}: {e}") }
                })
                .collect();
            let out =
                crate::ToolOutput::error(format!("invalid arguments for tool {}: {}", p.name, problems.join("; ")));
            event.outcome = "tool-error".into();
            event.flags.push("invalid-arguments".into());
            event.latency_us = started.elapsed().as_micros() as u64;
            return self.finish(event, write_result(id, &to_json(&out)));
        }
        let ctx = self.context(session, id, p.meta, sink);
        let fut = (tool.handler)(ToolCall { args, ctx });
        self.pending(session, id, Some((event, started)), Some(true), async move {
            let out = match fut.await {
                Ok(out) => out,
                Err(ToolError(msg)) => crate::ToolOutput::error(msg),
            };
            Ok((to_json(&out), out.is_error))
        })
    }

    fn read_resource(&self, session: &Arc<Session>, principal: &Principal, req: &Request<'_>, sink: Sink) -> Dispatch {
        let started = Instant::now();
        let id = &req.id;
        let p: UriParams = match parse(req.params) {
            Ok(p) => p,
            Err(e) => {
                let event = self.audit_event(session, principal, req, "", None);
                return self.finish(event, write_error(Some(id), &e));
            }
        };
        let mut event = self.audit_event(session, principal, req, &p.uri, None);
        let catalog = self.registry.snapshot();
        let not_found = || {
            RpcError::new(code::RESOURCE_NOT_FOUND, format!("resource not found: {}", p.uri))
                .with_data(json!({ "uri": p.uri }))
        };
        let (reader, vars, template) = if let Some(r) = catalog.resource(&p.uri) {
            (r.reader.clone(), HashMap::new(), None)
        } else if let Some((t, vars)) = catalog.match_template(&p.uri) {
            (t.reader.clone(), vars, Some(t.template.as_str()))
        } else {
            return self.finish(event, write_error(Some(id), &not_found()));
        };
        let decision = self.policy.decide_resource(principal, &p.uri, template);
        if let Some(stop) = self.gate(decision, id, not_found(), &mut event) {
            return stop;
        }
        let ctx = self.context(session, id, p.meta, sink);
        let fut = reader(ReadCall { uri: p.uri, vars, ctx });
        self.pending(session, id, Some((event, started)), Some(false), async move {
            let contents = fut.await?;
            Ok((to_json(&json!({ "contents": contents })), false))
        })
    }

    fn get_prompt(&self, session: &Arc<Session>, principal: &Principal, req: &Request<'_>, sink: Sink) -> Dispatch {
        let started = Instant::now();
        let id = &req.id;
        let p: PromptParams = match parse(req.params) {
            Ok(p) => p,
            Err(e) => {
                let event = self.audit_event(session, principal, req, "", None);
                return self.finish(event, write_error(Some(id), &e));
            }
        };
        let arguments = p.arguments.as_ref().map(|a| json!(a));
        let mut event = self.audit_event(session, principal, req, &p.name, arguments);
        let catalog = self.registry.snapshot();
        let unknown = || RpcError::invalid_params(format!("unknown prompt: {}", p.name));
        let Some(prompt) = catalog.prompt(&p.name) else {
            return self.finish(event, write_error(Some(id), &unknown()));
        };
        let decision = self.policy.decide(principal, Kind::Prompt, &p.name);
        if let Some(stop) = self.gate(decision, id, unknown(), &mut event) {
            return stop;
        }
        let args = p.arguments.unwrap_or_default();
        if let Some(missing) = prompt.required.iter().find(|r| !args.contains_key(*r)) {
            let e = RpcError::invalid_params(format!("prompt {} needs the argument {missing}", p.name));
            return self.finish(event, write_error(Some(id), &e));
        }
        let ctx = self.context(session, id, p.meta, sink);
        let fut = (prompt.handler)(PromptCall { args, ctx });
        self.pending(session, id, Some((event, started)), None, async move { Ok((to_json(&fut.await?), false)) })
    }

    /// Wraps a handler future: registered for cancellation, serialized when done.
    /// The handler's future resolves to the result JSON and whether it is a tool-level error.
    /// With an auditor, the response is released only once `audit`'s event is recorded.
    fn pending(
        &self,
        session: &Arc<Session>,
        id: &RequestId,
        audit: Option<(AuditEvent, Instant)>,
        guard: Option<bool>,
        fut: impl Future<Output = Result<(String, bool), RpcError>> + Send + 'static,
    ) -> Dispatch {
        let (handle, registration) = AbortHandle::new_pair();
        if !session.track(id.clone(), handle) {
            let e = RpcError::invalid_request(format!("request id {id} is already in use by a running request"));
            return Dispatch::Ready(write_error(Some(id), &e));
        }
        let session = session.clone();
        let id = id.clone();
        let target = audit.as_ref().and_then(|(e, _)| e.target.clone()).unwrap_or_default();
        let mut unfinished = self.auditor.clone().zip(audit).map(|(auditor, (event, started))| Unfinished {
            auditor,
            event: Some(event),
            started,
        });
        let guards = guard.map(|is_tool| (self.guards.clone(), is_tool));
        Dispatch::Pending(Box::pin(async move {
            let outcome = Abortable::new(fut, registration).await;
            session.untrack(&id);
            let mut flags = Vec::new();
            let outcome = match (outcome, guards) {
                // Results of tools and resources pass the guards before anyone sees them.
                (Ok(Ok((json, tool_error))), Some((guards, is_tool))) => {
                    let (json, verdict) = guards.screen(target.clone(), json, is_tool).await;
                    flags = verdict.flags;
                    match verdict.replacement {
                        Some(r) if is_tool => Ok(Ok((r, true))),
                        Some(_) => Ok(Err(RpcError::internal(format!(
                            "the content of {target} was withheld ({})",
                            flags.join(", ")
                        )))),
                        None => Ok(Ok((json, tool_error))),
                    }
                }
                (outcome, _) => outcome,
            };
            let (bytes, result) = match outcome {
                Ok(Ok((json, tool_error))) => {
                    (Some(write_result(&id, &json)), if tool_error { "tool-error".to_owned() } else { "ok".to_owned() })
                }
                Ok(Err(e)) => (Some(write_error(Some(&id), &e)), format!("error:{}", e.code)),
                Err(_aborted) => (None, "cancelled".to_owned()),
            };
            let Some((auditor, mut event, started)) = unfinished.as_mut().and_then(Unfinished::take) else {
                return bytes;
            };
            event.flags.extend(flags);
            event.outcome = result;
            event.latency_us = started.elapsed().as_micros() as u64;
            event.result_bytes = bytes.as_ref().map(|b| b.len() as u64);
            match auditor.record(event).await {
                Ok(()) => bytes,
                // Fail closed: a result without its record is not released.
                Err(_) => Some(write_error(
                    Some(&id),
                    &RpcError::internal("the audit trail is unavailable, so the result is withheld; try again later"),
                )),
            }
        }))
    }

    fn complete(&self, principal: &Principal, params: Option<&RawValue>) -> Result<String, RpcError> {
        let p: CompleteParams = parse(params)?;
        let catalog = self.registry.snapshot();
        // Completions reveal what exists: only for targets the caller can see.
        let visible = |kind: Kind, target: &str| self.policy.decide(principal, kind, target).visible();
        let completer = match p.reference.kind.as_str() {
            "ref/prompt" => {
                let name = p.reference.name.as_deref().unwrap_or_default();
                let prompt = catalog
                    .prompt(name)
                    .filter(|_| visible(Kind::Prompt, name))
                    .ok_or_else(|| RpcError::invalid_params(format!("unknown prompt: {name}")))?;
                prompt.completions.get(&p.argument.name).cloned()
            }
            "ref/resource" => {
                let uri = p.reference.uri.as_deref().unwrap_or_default();
                let t = catalog
                    .templates
                    .iter()
                    .find(|t| t.template.as_str() == uri && visible(Kind::Resource, uri))
                    .ok_or_else(|| RpcError::invalid_params(format!("unknown resource template: {uri}")))?;
                t.completions.get(&p.argument.name).cloned()
            }
            other => {
                return Err(RpcError::invalid_params(format!("unknown completion reference type: {other}")));
            }
        };
        let mut values = completer.map(|f| f(&p.argument.value)).unwrap_or_default();
        let total = values.len();
        values.truncate(100);
        Ok(json!({ "completion": { "values": values, "total": total, "hasMore": total > 100 } }).to_string())
    }
}

/// `ok`, or `error:<code>` when `bytes` is a JSON-RPC error response.
fn outcome_of(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Peek {
        error: Option<ErrorObject>,
    }
    match serde_json::from_slice::<Peek>(bytes) {
        Ok(Peek { error: Some(e) }) => format!("error:{}", e.code),
        _ => "ok".into(),
    }
}

/// The response that replaces a result whose audit record could not be taken: the result is
/// withheld (fail closed), the request id kept.
fn audit_failed(bytes: &[u8]) -> Vec<u8> {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    let e = RpcError::internal("the audit trail is unavailable, so the result is withheld; try again later");
    let id = serde_json::from_slice::<Peek<'_>>(bytes).ok().and_then(|p| p.id).and_then(RequestId::from_raw);
    write_error(id.as_ref(), &e)
}

fn set_level(session: &Session, params: Option<&RawValue>) -> Result<String, RpcError> {
    #[derive(Deserialize)]
    struct P {
        level: String,
    }
    let p: P = parse(params)?;
    let level = LogLevel::parse(&p.level).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "unknown log level {:?}: use debug, info, notice, warning, error, critical, alert or emergency",
            p.level
        ))
    })?;
    session.set_log_level(level);
    Ok("{}".to_owned())
}

fn parse<T: DeserializeOwned>(params: Option<&RawValue>) -> Result<T, RpcError> {
    let raw = params.map_or("{}", RawValue::get);
    serde_json::from_str(raw).map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))
}

fn parse_or_default<T: DeserializeOwned + Default>(params: Option<&RawValue>) -> Result<T, RpcError> {
    match params {
        None => Ok(T::default()),
        Some(_) => parse(params),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Results are built from strings, numbers and `Value`s: serialization cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

/// What lists hold: a key the cursors name, and a definition written only for the page.
trait Listed {
    /// The name, URI or URI template.
    fn key(&self) -> &str;
    fn write_definition(&self, out: &mut String);
}

impl Listed for Tool {
    fn key(&self) -> &str {
        &self.name
    }
    fn write_definition(&self, out: &mut String) {
        out.push_str(self.definition.get());
    }
}

impl Listed for Resource {
    fn key(&self) -> &str {
        &self.uri
    }
    fn write_definition(&self, out: &mut String) {
        // `Value`'s `Display` writes compact JSON straight into `out`.
        let _ = std::fmt::Write::write_fmt(out, format_args!("{}", self.definition));
    }
}

impl Listed for ResourceTemplate {
    fn key(&self) -> &str {
        self.template.as_str()
    }
    fn write_definition(&self, out: &mut String) {
        // `Value`'s `Display` writes compact JSON straight into `out`.
        let _ = std::fmt::Write::write_fmt(out, format_args!("{}", self.definition));
    }
}

impl Listed for Prompt {
    fn key(&self) -> &str {
        &self.name
    }
    fn write_definition(&self, out: &mut String) {
        // `Value`'s `Display` writes compact JSON straight into `out`.
        let _ = std::fmt::Write::write_fmt(out, format_args!("{}", self.definition));
    }
}

/// The cursor after a page ending at `end` (exclusive) with the item keyed `last`.
fn encode_cursor(end: usize, last: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:{end}:{last}"))
}

/// A cursor's page end and last key (`None` for the older `offset:N` cursors, still accepted).
fn decode_cursor(cursor: &str) -> Option<(usize, Option<String>)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    if let Some(n) = text.strip_prefix("offset:") {
        return Some((n.parse().ok()?, None));
    }
    let (end, last) = text.strip_prefix("after:")?.split_once(':')?;
    Some((end.parse().ok()?, Some(last.to_owned())))
}

/// The audit record of a call whose handler is running. If the call's future is dropped before
/// the record is handed to the auditor — the process shutting down past its grace period with the
/// handler still running — the record is queued anyway, with the outcome `interrupted`: the call
/// started and may have had effects, and its result never left. (`Auditor::record` queues before
/// it returns, so the future it returns can be dropped here.)
struct Unfinished {
    auditor: Arc<dyn Auditor>,
    event: Option<AuditEvent>,
    started: Instant,
}

impl Unfinished {
    fn take(&mut self) -> Option<(Arc<dyn Auditor>, AuditEvent, Instant)> {
        self.event.take().map(|e| (self.auditor.clone(), e, self.started))
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.outcome = "interrupted".into();
            event.latency_us = self.started.elapsed().as_micros() as u64;
            drop(self.auditor.record(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NullOutlet, Tool, ToolOutput};
    use portcullis_protocol::{Body, Message, parse_body};

    fn engine(page_size: usize) -> (Engine, Arc<Session>) {
        let registry = Arc::new(Registry::new());
        for i in 0..5 {
            registry
                .add_tool(Tool::new(format!("t{i}"), "d").handler(|_| async { Ok(ToolOutput::text("x")) }).unwrap());
        }
        let e = Engine::new(
            registry,
            ServerInfo { name: "t".into(), version: "0".into(), title: None, instructions: None },
            EngineOptions { page_size, client_request_timeout: Duration::from_secs(1) },
        );
        let s = Arc::new(Session::new(crate::new_session_id(), Arc::new(NullOutlet)));
        (e, s)
    }

    fn ask(e: &Engine, s: &Arc<Session>, body: &str) -> Value {
        let Ok(Body::Single(Message::Request(r))) = parse_body(body.as_bytes(), 64) else { panic!("bad test body") };
        match e.request(s, &Principal::anonymous(), &r, Sink::Session) {
            Dispatch::Ready(b) => serde_json::from_slice(&b).unwrap(),
            Dispatch::Pending(_) | Dispatch::StepUp { .. } => panic!("expected a ready answer"),
        }
    }

    #[test]
    fn requests_before_initialize_are_refused_except_ping() {
        let (e, s) = engine(2);
        assert_eq!(ask(&e, &s, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)["result"], json!({}));
        let v = ask(&e, &s, r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        assert_eq!(v["error"]["code"], -32600);
        let init = r#"{"jsonrpc":"2.0","id":3,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
        assert_eq!(ask(&e, &s, init)["result"]["protocolVersion"], "2025-06-18");
        assert_eq!(ask(&e, &s, init)["error"]["code"], -32600, "a second initialize is refused");
    }

    #[test]
    fn pagination_walks_every_item_with_opaque_cursors() {
        let (e, s) = engine(2);
        ask(&e, &s, r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#);
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = cursor.as_ref().map_or_else(|| json!({}), |c| json!({ "cursor": c }));
            let body = json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": params }).to_string();
            let v = ask(&e, &s, &body);
            let page = v["result"]["tools"].as_array().unwrap();
            assert!(page.len() <= 2);
            names.extend(page.iter().map(|t| t["name"].as_str().unwrap().to_owned()));
            match v["result"]["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(names, ["t0", "t1", "t2", "t3", "t4"]);
        let v = ask(&e, &s, r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"b2Zmc2V0Ojk5"}}"#);
        assert_eq!(v["error"]["code"], -32602, "a cursor past the end is invalid");
    }

    #[test]
    fn cursors_stay_stable_when_the_list_changes_between_pages() {
        let registry = Arc::new(Registry::new());
        let tool = |name: &str| Tool::new(name, "d").handler(|_| async { Ok(ToolOutput::text("x")) }).unwrap();
        for i in 0..6 {
            registry.add_tool(tool(&format!("t{i}")));
        }
        let e = Engine::new(
            registry.clone(),
            ServerInfo { name: "t".into(), version: "0".into(), title: None, instructions: None },
            EngineOptions { page_size: 2, client_request_timeout: Duration::from_secs(1) },
        );
        let s = Arc::new(Session::new(crate::new_session_id(), Arc::new(NullOutlet)));
        ask(&e, &s, r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#);
        let page = |cursor: Option<&str>| {
            let params = cursor.map_or_else(|| json!({}), |c| json!({ "cursor": c }));
            let v = ask(
                &e,
                &s,
                &json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": params }).to_string(),
            );
            let names: Vec<String> = v["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            (names, v["result"]["nextCursor"].as_str().map(str::to_owned))
        };
        let (first, cursor) = page(None);
        assert_eq!(first, ["t0", "t1"]);
        // An item before the cursor goes away and one is added at the end: the walk neither
        // repeats nor skips (with offsets, t2 would have been skipped).
        assert!(registry.remove_tool("t0"));
        registry.add_tool(tool("t6"));
        let (second, cursor) = page(cursor.as_deref());
        assert_eq!(second, ["t2", "t3"]);
        // The cursor's own last item goes away: the walk goes on where it was.
        assert!(registry.remove_tool("t3"));
        let (third, cursor) = page(cursor.as_deref());
        assert_eq!(third, ["t4", "t5"]);
        let (fourth, cursor) = page(cursor.as_deref());
        assert_eq!((fourth, cursor), (vec!["t6".to_owned()], None));
        // Cursors from before (offsets) still work; made-up ones are refused.
        let old = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("offset:2")
        };
        assert_eq!(page(Some(&old)).0, ["t4", "t5"]);
        let v = ask(&e, &s, r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"cursor":"not a cursor"}}"#);
        assert_eq!(v["error"]["code"], -32602);
    }

    use crate::audit::AuditUnavailable;

    /// Keeps what it is given.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<AuditEvent>>);

    impl Auditor for Kept {
        fn record(&self, event: AuditEvent) -> BoxFuture<'static, Result<(), AuditUnavailable>> {
            self.0.lock().unwrap().push(event);
            Box::pin(std::future::ready(Ok(())))
        }
    }

    #[tokio::test]
    async fn a_call_dropped_while_its_handler_runs_is_still_audited() {
        let registry = Arc::new(Registry::new());
        registry.add_tool(
            Tool::new("slow", "d").handler(|_| std::future::pending::<Result<ToolOutput, ToolError>>()).unwrap(),
        );
        registry.add_tool(Tool::new("quick", "d").handler(|_| async { Ok(ToolOutput::text("x")) }).unwrap());
        let kept = Arc::new(Kept::default());
        let e = Engine::new(
            registry,
            ServerInfo { name: "t".into(), version: "0".into(), title: None, instructions: None },
            EngineOptions { page_size: 10, client_request_timeout: Duration::from_secs(1) },
        )
        .with_auditor(kept.clone());
        let s = Arc::new(Session::new(crate::new_session_id(), Arc::new(NullOutlet)));
        ask(&e, &s, r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#);
        let call = |id: u32, name: &str| {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{name}"}}}}"#);
            let Ok(Body::Single(Message::Request(r))) = parse_body(body.as_bytes(), 64) else { panic!("bad body") };
            match e.request(&s, &Principal::anonymous(), &r, Sink::Session) {
                Dispatch::Pending(f) => f,
                _ => panic!("expected a pending call"),
            }
        };
        // Finished normally: one record, outcome ok.
        assert!(call(2, "quick").await.is_some());
        // Dropped mid-handler (shutdown): one record, outcome interrupted.
        let mut slow = call(3, "slow");
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut slow).await.is_err(), "the handler never ends");
        drop(slow);
        let events = kept.0.lock().unwrap();
        let outcomes: Vec<_> = events.iter().map(|e| (e.target.as_deref().unwrap(), e.outcome.as_str())).collect();
        assert_eq!(outcomes, [("quick", "ok"), ("slow", "interrupted")]);
    }

    #[test]
    fn completion_and_log_levels() {
        let (e, s) = engine(10);
        ask(&e, &s, r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#);
        let v = ask(&e, &s, r#"{"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"error"}}"#);
        assert_eq!(v["result"], json!({}));
        assert_eq!(s.log_level(), LogLevel::Error);
        let v = ask(
            &e,
            &s,
            r#"{"jsonrpc":"2.0","id":3,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"nope"},"argument":{"name":"a","value":""}}}"#,
        );
        assert_eq!(v["error"]["code"], -32602);
    }

    /// A seeded xorshift generator: a failing case is replayed from the seed in its message.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn some<T: Clone>(&mut self, from: &[T], most: usize) -> Vec<T> {
            (0..self.below(most + 1)).map(|_| from[self.below(from.len())].clone()).collect()
        }
    }

    const TOOLS: [&str; 6] = ["deploy", "deploy_prod", "read", "read_log", "ops.time", "x"];
    const PROMPTS: [&str; 3] = ["greet", "greet_all", "summary"];
    const RESOURCES: [&str; 4] = ["file:///a", "file:///a/b", "file:///a%2Fc", "mem://x"];
    const TEMPLATE: &str = "mem://{key}";
    const PATTERNS: [&str; 17] = [
        "*",
        "deploy*",
        "*_prod",
        "read?log",
        "read*",
        "ops.*",
        "x",
        "?",
        "greet*",
        "summary",
        "file:///a*",
        "file:///a",
        "*/c",
        "mem://*",
        "mem://{key}",
        "*x*",
        "nothing",
    ];

    fn targets(rng: &mut Rng) -> crate::policy::Targets {
        let patterns: Vec<String> = PATTERNS.iter().map(|p| p.to_string()).collect();
        crate::policy::Targets {
            tools: rng.some(&patterns, 3),
            resources: rng.some(&patterns, 3),
            prompts: rng.some(&patterns, 3),
        }
    }

    fn random_policy(rng: &mut Rng) -> Policy {
        use crate::policy::{Role, ScopeRule, Tenant};
        let roles = (0..rng.below(5))
            .map(|_| Role { name: ["r1", "r2", "r3", "*"][rng.below(4)].into(), targets: targets(rng) })
            .collect();
        let tenants = (0..rng.below(3))
            .map(|_| Tenant { name: ["acme", "globex"][rng.below(2)].into(), targets: targets(rng) })
            .collect();
        let scopes = (0..rng.below(6))
            .map(|_| ScopeRule {
                kind: [Kind::Tool, Kind::Resource, Kind::Prompt][rng.below(3)],
                pattern: PATTERNS[rng.below(PATTERNS.len())].into(),
                scopes: rng.some(&["s1".to_owned(), "s2".to_owned(), "s3".to_owned()], 2),
            })
            .collect();
        Policy::new(roles, tenants, scopes)
    }

    fn random_principal(rng: &mut Rng) -> Principal {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Principal {
            subject: "u".into(),
            roles: rng.some(&strings(&["r1", "r2", "r3", "r4"]), 3),
            scopes: rng.some(&strings(&["s1", "s2", "s3"]), 2),
            tenant: [None, Some("acme"), Some("globex"), Some("other")][rng.below(4)].map(str::to_owned),
            ..Principal::anonymous()
        }
    }

    /// How a use of a target came out.
    #[derive(Debug, PartialEq)]
    enum Used {
        /// Answered as if the target did not exist.
        Unknown,
        StepUp,
        Ran,
    }

    async fn used(e: &Engine, s: &Arc<Session>, p: &Principal, method: &str, params: Value) -> Used {
        let body = json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": params }).to_string();
        let Ok(Body::Single(Message::Request(r))) = parse_body(body.as_bytes(), 64) else { panic!("bad body") };
        let answer: Value = match e.request(s, p, &r, Sink::Session) {
            Dispatch::StepUp { .. } => return Used::StepUp,
            Dispatch::Ready(b) => serde_json::from_slice(&b).unwrap(),
            Dispatch::Pending(f) => serde_json::from_slice(&f.await.unwrap()).unwrap(),
        };
        let message = answer["error"]["message"].as_str().unwrap_or("");
        if ["unknown tool", "unknown prompt", "resource not found"].iter().any(|m| message.starts_with(m)) {
            return Used::Unknown;
        }
        assert!(answer["result"].is_object(), "{answer}");
        Used::Ran
    }

    /// Every name in every page of `method`'s `key` list, by `field`.
    async fn listed(e: &Engine, s: &Arc<Session>, p: &Principal, method: &str, key: &str, field: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = cursor.as_ref().map_or_else(|| json!({}), |c| json!({ "cursor": c }));
            let body = json!({ "jsonrpc": "2.0", "id": 8, "method": method, "params": params }).to_string();
            let Ok(Body::Single(Message::Request(r))) = parse_body(body.as_bytes(), 64) else { panic!("bad body") };
            let Dispatch::Ready(b) = e.request(s, p, &r, Sink::Session) else { panic!("lists answer at once") };
            let v: Value = serde_json::from_slice(&b).unwrap();
            names.extend(v["result"][key].as_array().unwrap().iter().map(|t| t[field].as_str().unwrap().to_owned()));
            match v["result"]["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return names,
            }
        }
    }

    /// The property behind "a principal never sees what it cannot use": over random policies
    /// (roles, tenants, scope rules from overlapping globs) and principals, a target is listed
    /// exactly when using it does not answer as unknown, and using it runs, asks for a step-up
    /// or answers as unknown exactly as `Policy::decide` says.
    #[tokio::test]
    async fn lists_and_uses_come_from_the_same_decision() {
        let registry = Arc::new(Registry::new());
        for t in TOOLS {
            registry.add_tool(Tool::new(t, "d").handler(|_| async { Ok(ToolOutput::text("x")) }).unwrap());
        }
        for p in PROMPTS {
            registry.add_prompt(crate::Prompt::new(p, "d").handler(|_| async { Ok(crate::PromptOutput::default()) }));
        }
        for r in RESOURCES {
            registry.add_resource(
                crate::Resource::new(r, r)
                    .reader(move |_| async move { Ok(vec![crate::ResourceContents::text(r, "text/plain", "x")]) }),
            );
        }
        registry.add_template(
            crate::ResourceTemplate::new(TEMPLATE, "keys")
                .reader(|c| async move { Ok(vec![crate::ResourceContents::text(c.uri, "text/plain", "x")]) })
                .unwrap(),
        );
        let info = || ServerInfo { name: "t".into(), version: "0".into(), title: None, instructions: None };
        let options = EngineOptions { page_size: 2, client_request_timeout: Duration::from_secs(1) };
        let (mut hidden, mut step_ups, mut ran) = (0, 0, 0);
        for seed in 1..=150u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let policy = random_policy(&mut rng);
            let e = Engine::new(registry.clone(), info(), options.clone()).with_policy(policy.clone());
            for _ in 0..6 {
                let who = random_principal(&mut rng);
                let s = Arc::new(Session::new(crate::new_session_id(), Arc::new(NullOutlet)));
                let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": { "protocolVersion": "2025-11-25" } });
                used(&e, &s, &who, "initialize", init["params"].clone()).await;
                let case = format!("seed {seed}, {policy:?}, {who:?}");
                let lists = [
                    (Kind::Tool, listed(&e, &s, &who, "tools/list", "tools", "name").await),
                    (Kind::Prompt, listed(&e, &s, &who, "prompts/list", "prompts", "name").await),
                    (Kind::Resource, listed(&e, &s, &who, "resources/list", "resources", "uri").await),
                ];
                let templates =
                    listed(&e, &s, &who, "resources/templates/list", "resourceTemplates", "uriTemplate").await;
                for (kind, names) in &lists {
                    let all: &[&str] = match kind {
                        Kind::Tool => &TOOLS,
                        Kind::Prompt => &PROMPTS,
                        Kind::Resource => &RESOURCES,
                    };
                    for target in all {
                        let (method, params) = match kind {
                            Kind::Tool => ("tools/call", json!({ "name": target, "arguments": {} })),
                            Kind::Prompt => ("prompts/get", json!({ "name": target })),
                            Kind::Resource => ("resources/read", json!({ "uri": target })),
                        };
                        let got = used(&e, &s, &who, method, params).await;
                        let shown = names.iter().any(|n| n == target);
                        assert_eq!(shown, got != Used::Unknown, "{target}: listed {shown}, used {got:?}; {case}");
                        let decision = match kind {
                            Kind::Resource => policy.decide_resource(&who, target, None),
                            _ => policy.decide(&who, *kind, target),
                        };
                        let expected = match decision {
                            Decision::Allow { .. } => Used::Ran,
                            Decision::StepUp { .. } => Used::StepUp,
                            Decision::Hide { .. } => Used::Unknown,
                        };
                        assert_eq!(got, expected, "{target}; {case}");
                        match got {
                            Used::Unknown => hidden += 1,
                            Used::StepUp => step_ups += 1,
                            Used::Ran => ran += 1,
                        }
                    }
                }
                // Through the template: usable only when the template is listed and the URI
                // itself is not hidden.
                // A percent-encoded URI must be allowed as written and as decoded.
                for (uri, decoded) in [("mem://k1", "mem://k1"), ("mem://x%79", "mem://xy")] {
                    let got = used(&e, &s, &who, "resources/read", json!({ "uri": uri })).await;
                    let shown = templates.iter().any(|t| t == TEMPLATE)
                        && policy.decide(&who, Kind::Resource, uri).visible()
                        && policy.decide(&who, Kind::Resource, decoded).visible();
                    assert_eq!(shown, got != Used::Unknown, "{uri}: templates {templates:?}, used {got:?}; {case}");
                }
            }
        }
        // The generator reaches every outcome often, or the property says little.
        assert!(hidden > 1000 && step_ups > 100 && ran > 1000, "hidden {hidden}, step-ups {step_ups}, ran {ran}");
    }
}
