//! The audit seam: what the engine and the transports report about each operation, and the
//! [`Auditor`] that records it. The engine builds an [`AuditEvent`] for every `tools/call`,
//! `resources/read` and `prompts/get` (allowed or denied); the transports add authentication
//! failures and rate-limit hits. Where the events go — and how hashing, redaction and durability
//! work — is the auditor's business (the `portcullis-audit` crate).

use serde::Serialize;
use serde_json::Value;

use crate::principal::Principal;
use crate::registry::BoxFuture;

/// One audited operation. Serialized field order is fixed: the audit chain hashes it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// `call`, `denial`, `auth-failure` or `rate-limited`.
    pub kind: &'static str,
    /// The JSON-RPC request id, as its JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Tenant of the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Subject of the caller (absent when authentication failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// OAuth client of the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The MCP session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The JSON-RPC method (or the HTTP request line for failures before one is read).
    pub method: String,
    /// Tool or prompt name, or resource URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The arguments as sent. The auditor redacts them and keeps a hash of the original; they
    /// are never serialized as they are.
    #[serde(skip)]
    pub arguments: Option<Value>,
    /// `allow`, `hide`, `step-up` or `refused`.
    pub decision: &'static str,
    /// The policy rule (or other check) that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `ok`, `tool-error`, `error:<code>`, `denied` or `cancelled`.
    pub outcome: String,
    /// Size of the response in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// From dispatch to the response being ready, in microseconds.
    pub latency_us: u64,
    /// Guard flags (e.g. `injection-suspected`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// Longest client-chosen text (request id, tool name, URI, method, path) kept whole in an audit
/// record or a log line.
pub const MAX_TEXT: usize = 1024;

/// `text` if it is at most [`MAX_TEXT`] bytes; otherwise its first bytes up to that (on a
/// character boundary), then how long it was and the start of its SHA-256, so that long values
/// stay distinguishable without letting one client write megabytes per record or log line.
pub fn capped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_TEXT {
        return text.into();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}…[{} bytes, sha256:{hex}…]", &text[..end], text.len()).into()
}

impl AuditEvent {
    /// Every client-chosen field [`capped`] (a copy only when one is over).
    pub fn capped(&self) -> std::borrow::Cow<'_, Self> {
        let long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > MAX_TEXT);
        let over = long(&self.request_id)
            || long(&self.target)
            || long(&self.rule)
            || long(&self.session)
            || long(&self.subject)
            || long(&self.tenant)
            || long(&self.client_id)
            || self.method.len() > MAX_TEXT;
        if !over {
            return std::borrow::Cow::Borrowed(self);
        }
        let cap = |s: &Option<String>| s.as_deref().map(|s| capped(s).into_owned());
        std::borrow::Cow::Owned(Self {
            request_id: cap(&self.request_id),
            target: cap(&self.target),
            rule: cap(&self.rule),
            session: cap(&self.session),
            subject: cap(&self.subject),
            tenant: cap(&self.tenant),
            client_id: cap(&self.client_id),
            method: capped(&self.method).into_owned(),
            ..self.clone()
        })
    }
}

/// The audit trail could not take an event: the operation's result must not be released.
#[derive(Debug, Clone)]
pub struct AuditUnavailable(pub String);

/// Records audit events.
pub trait Auditor: Send + Sync + 'static {
    /// Takes `event` now (synchronously queued, so dropping the future loses nothing) and
    /// resolves once it is as durable as configured.
    fn record(&self, event: AuditEvent) -> BoxFuture<'static, Result<(), AuditUnavailable>>;

    /// Takes an event nobody waits for: a refusal (step-up, rate limit, bad credential) whose
    /// answer does not depend on its record. The auditor writes it on its own within a bounded
    /// delay, never leaving it for a later call to carry; it may keep only so many per source and
    /// second (the next one kept says how many were skipped), and never lets such records take
    /// the room that calls waiting for their record need. Default: [`Auditor::record`], unawaited.
    fn note(&self, event: AuditEvent) {
        drop(self.record(event));
    }
}

impl AuditEvent {
    /// An event for `principal` with everything else empty.
    pub fn new(kind: &'static str, principal: Option<&Principal>, method: &str) -> Self {
        let time_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis()) as u64;
        Self {
            time_ms,
            kind,
            request_id: None,
            tenant: principal.and_then(|p| p.tenant.clone()),
            subject: principal.map(|p| p.subject.clone()),
            client_id: principal.and_then(|p| p.client_id.clone()),
            session: None,
            method: method.to_owned(),
            target: None,
            arguments: None,
            decision: "allow",
            rule: None,
            outcome: String::new(),
            result_bytes: None,
            latency_us: 0,
            flags: Vec::new(),
        }
    }
}
