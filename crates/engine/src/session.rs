//! A protocol session: what `initialize` negotiated, the client's log level and subscriptions,
//! requests in flight (so `notifications/cancelled` can stop them) and requests the server sent
//! the client (so the client's responses find their waiter).
//!
//! A session never touches a socket: everything it sends goes through its [`Outlet`], which the
//! transport that created it provides.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::future::AbortHandle;
use portcullis_protocol::{ProtocolVersion, RequestId, RpcError};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::principal::Principal;

/// Where a session's unsolicited messages go (list-changed, resource updates, logs outside a
/// request). Implemented by each transport: an SSE event buffer, a stdout writer.
pub trait Outlet: Send + Sync + 'static {
    /// Queues one serialized JSON-RPC message. Returns false when the client cannot take it now
    /// (no stream open and nothing buffers, or the buffer is full); the message is then dropped.
    fn push(&self, message: Bytes) -> bool;
}

/// An outlet that drops everything (sessions whose transport has no unsolicited channel).
#[derive(Debug, Default)]
pub struct NullOutlet;

impl Outlet for NullOutlet {
    fn push(&self, _message: Bytes) -> bool {
        false
    }
}

/// RFC 5424 severities used by `logging/setLevel` and `notifications/message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    /// debug
    Debug = 0,
    /// info
    Info,
    /// notice
    Notice,
    /// warning
    Warning,
    /// error
    Error,
    /// critical
    Critical,
    /// alert
    Alert,
    /// emergency
    Emergency,
}

/// What `initialize` settled.
#[derive(Debug)]
pub struct Negotiated {
    /// The version both sides speak.
    pub version: ProtocolVersion,
    /// The client's declared capabilities, verbatim.
    pub client_capabilities: Value,
    /// The client's `clientInfo`, verbatim.
    pub client_info: Value,
}

/// One client's session.
pub struct Session {
    id: Arc<str>,
    negotiated: OnceLock<Negotiated>,
    initialized: AtomicBool,
    closed: AtomicBool,
    log_level: AtomicU8,
    last_seen_ms: AtomicU64,
    next_request_id: AtomicU64,
    outlet: Arc<dyn Outlet>,
    /// Who created the session; every later request must come from the same identity.
    owner: OnceLock<Principal>,
    /// Resource URIs the client subscribed to. Held only inside `subscribe`/`unsubscribe`/
    /// `is_subscribed`.
    subscriptions: Mutex<HashSet<String>>,
    /// Client requests being handled, by id; the abort handle stops the handler.
    inflight: Mutex<HashMap<RequestId, AbortHandle>>,
    /// Server-to-client requests awaiting the client's response; the other end is the handler
    /// awaiting in `RequestContext::request`.
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>>,
}

/// Most resource subscriptions one session may hold.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 1024;

/// The clock all sessions share for idle accounting.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A new session id: 256 bits from the OS CSPRNG, base64url (43 visible ASCII characters, as
/// 2025-11-25 basic/transports §Session Management requires).
pub fn new_session_id() -> Arc<str> {
    let mut buf = [0u8; 32];
    // The OS RNG failing is unrecoverable and not something to paper over with a weak id.
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf).into()
}

// === impl Session ===

impl Session {
    /// A session with the given id and outlet, not yet initialized.
    pub fn new(id: Arc<str>, outlet: Arc<dyn Outlet>) -> Self {
        Self {
            id,
            negotiated: OnceLock::new(),
            initialized: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            log_level: AtomicU8::new(LogLevel::Info as u8),
            last_seen_ms: AtomicU64::new(now_ms()),
            next_request_id: AtomicU64::new(0),
            outlet,
            owner: OnceLock::new(),
            subscriptions: Mutex::default(),
            inflight: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shared id.
    pub fn id_arc(&self) -> Arc<str> {
        self.id.clone()
    }

    /// Binds the session to the principal that created it. Only the first call counts.
    pub fn bind_owner(&self, principal: Principal) {
        let _ = self.owner.set(principal);
    }

    /// The principal the session is bound to, if any.
    pub fn owner(&self) -> Option<&Principal> {
        self.owner.get()
    }

    /// True when `principal` may use this session: the same (tenant, subject, client) that
    /// created it. An unbound session (transports without authentication) admits anyone.
    pub fn admits(&self, principal: &Principal) -> bool {
        self.owner.get().is_none_or(|owner| owner.same_owner(principal))
    }

    /// What `initialize` settled, once it has run.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.get()
    }

    /// The negotiated version, if initialized.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.negotiated.get().map(|n| n.version)
    }

    pub(crate) fn set_negotiated(&self, n: Negotiated) -> bool {
        self.negotiated.set(n).is_ok()
    }

    pub(crate) fn mark_initialized(&self) {
        self.initialized.store(true, Ordering::Relaxed);
    }

    /// True once `notifications/initialized` arrived.
    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::Relaxed)
    }

    /// Records activity now (idle expiry counts from the last call).
    pub fn touch(&self) {
        self.last_seen_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since the last activity.
    pub fn idle_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_seen_ms.load(Ordering::Relaxed))
    }

    /// The minimum level of `notifications/message` the client wants.
    pub fn log_level(&self) -> LogLevel {
        LogLevel::from_u8(self.log_level.load(Ordering::Relaxed))
    }

    pub(crate) fn set_log_level(&self, level: LogLevel) {
        self.log_level.store(level as u8, Ordering::Relaxed);
    }

    /// Sends an unsolicited message through the transport's outlet.
    pub fn push(&self, message: Bytes) -> bool {
        !self.is_closed() && self.outlet.push(message)
    }

    /// Adds a subscription; false when the session already holds [`MAX_SUBSCRIPTIONS`].
    pub(crate) fn subscribe(&self, uri: &str) -> bool {
        let mut subs = lock(&self.subscriptions);
        if subs.len() >= MAX_SUBSCRIPTIONS && !subs.contains(uri) {
            return false;
        }
        subs.insert(uri.to_owned());
        true
    }

    pub(crate) fn unsubscribe(&self, uri: &str) {
        lock(&self.subscriptions).remove(uri);
    }

    pub(crate) fn is_subscribed(&self, uri: &str) -> bool {
        lock(&self.subscriptions).contains(uri)
    }

    /// Registers a running request; false when a request with this id is already running
    /// (2025-11-25 basic §Requests: ids MUST NOT be reused within a session).
    pub(crate) fn track(&self, id: RequestId, handle: AbortHandle) -> bool {
        match lock(&self.inflight).entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(handle);
                true
            }
        }
    }

    pub(crate) fn untrack(&self, id: &RequestId) {
        lock(&self.inflight).remove(id);
    }

    /// Stops the handler of client request `id`, if it is still running.
    pub(crate) fn cancel(&self, id: &RequestId) -> bool {
        match lock(&self.inflight).remove(id) {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }

    pub(crate) fn expect_response(&self) -> (u64, oneshot::Receiver<Result<Value, RpcError>>) {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        (id, rx)
    }

    pub(crate) fn forget_response(&self, id: u64) {
        lock(&self.pending).remove(&id);
    }

    pub(crate) fn complete_response(&self, id: u64, outcome: Result<Value, RpcError>) -> bool {
        match lock(&self.pending).remove(&id) {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Ends the session: handlers in flight are stopped and pending server requests fail.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for (_, h) in lock(&self.inflight).drain() {
            h.abort();
        }
        lock(&self.pending).clear();
    }

    /// True after [`Session::close`].
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).field("version", &self.version()).finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the map valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// === impl LogLevel ===

impl LogLevel {
    /// Parses the RFC 5424 keyword.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "debug" => Self::Debug,
            "info" => Self::Info,
            "notice" => Self::Notice,
            "warning" => Self::Warning,
            "error" => Self::Error,
            "critical" => Self::Critical,
            "alert" => Self::Alert,
            "emergency" => Self::Emergency,
            _ => return None,
        })
    }

    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Notice => "notice",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
            Self::Alert => "alert",
            Self::Emergency => "emergency",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Debug,
            1 => Self::Info,
            2 => Self::Notice,
            3 => Self::Warning,
            4 => Self::Error,
            5 => Self::Critical,
            6 => Self::Alert,
            _ => Self::Emergency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_long_random_and_visible_ascii() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)));
    }

    #[test]
    fn close_fails_pending_requests() {
        let s = Session::new(new_session_id(), Arc::new(NullOutlet));
        let (_, mut rx) = s.expect_response();
        s.close();
        assert!(rx.try_recv().is_err());
        assert!(s.is_closed());
        assert!(!s.push(Bytes::from_static(b"{}")));
    }

    #[test]
    fn log_levels_order_and_round_trip() {
        assert!(LogLevel::Debug < LogLevel::Emergency);
        for l in ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"] {
            assert_eq!(LogLevel::parse(l).map(LogLevel::as_str), Some(l));
        }
        assert_eq!(LogLevel::parse("verbose"), None);
    }
}
