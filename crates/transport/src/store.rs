//! Where Streamable HTTP sessions live between requests, behind [`SessionStore`], so a later
//! store (Redis) can let any replica find any session. [`MemoryStore`] is the in-process default:
//! sharded maps, bounded in size.
//!
//! An [`HttpSession`] is the engine's [`Session`] plus what only HTTP needs: the session's SSE
//! streams, each a bounded, resumable event buffer.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use portcullis_engine::{AuthMethod, Outlet, Principal, Session};

use crate::sse::EventStream;

/// The store refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFull {
    /// It holds its maximum number of sessions.
    Total,
    /// The session's owner holds its maximum number of sessions.
    Owner,
}

/// Holds live sessions by id.
pub trait SessionStore: Send + Sync + 'static {
    /// Adds a session, or refuses when the store is full.
    fn insert(&self, session: Arc<HttpSession>) -> Result<(), StoreFull>;
    /// The session with this id.
    fn get(&self, id: &str) -> Option<Arc<HttpSession>>;
    /// Removes and returns the session with this id.
    fn remove(&self, id: &str) -> Option<Arc<HttpSession>>;
    /// Number of sessions.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Removes and returns the sessions idle for longer than `idle`.
    fn take_idle(&self, idle: Duration) -> Vec<Arc<HttpSession>>;
    /// Removes and returns every session (shutdown).
    fn drain(&self) -> Vec<Arc<HttpSession>>;
}

/// A Streamable HTTP session.
pub struct HttpSession {
    session: Arc<Session>,
    /// Stream 0: the standalone GET stream for unsolicited messages.
    standalone: Arc<EventStream>,
    /// POST response streams that may still be resumed, by stream id.
    streams: Mutex<HashMap<u64, Arc<EventStream>>>,
    next_stream: AtomicU64,
    stream_capacity: usize,
}

/// Sends a session's unsolicited messages to its standalone stream.
struct StandaloneOutlet(Arc<EventStream>);

impl Outlet for StandaloneOutlet {
    fn push(&self, message: Bytes) -> bool {
        self.0.push_if_listened(message)
    }
}

/// Upper bound on resumable POST streams kept per session; the oldest goes first.
const MAX_STREAMS: usize = 32;

// === impl HttpSession ===

impl HttpSession {
    /// A new session with a fresh id; `stream_capacity` bounds each SSE buffer.
    pub fn new(stream_capacity: usize) -> Self {
        let standalone = Arc::new(EventStream::new(0, stream_capacity));
        let outlet = Arc::new(StandaloneOutlet(standalone.clone()));
        Self {
            session: Arc::new(Session::new(portcullis_engine::new_session_id(), outlet)),
            standalone,
            streams: Mutex::default(),
            next_stream: AtomicU64::new(1),
            stream_capacity,
        }
    }

    /// The engine session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The id.
    pub fn id(&self) -> &str {
        self.session.id()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<EventStream>>> {
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn standalone(&self) -> &Arc<EventStream> {
        &self.standalone
    }

    /// Opens a new POST response stream.
    pub(crate) fn open_stream(&self) -> Arc<EventStream> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(EventStream::new(id, self.stream_capacity));
        let mut map = self.lock();
        if map.len() >= MAX_STREAMS
            && let Some(&oldest) = map.keys().min()
        {
            map.remove(&oldest);
        }
        map.insert(id, stream.clone());
        stream
    }

    /// A stream by id (0 is the standalone stream).
    pub(crate) fn stream(&self, id: u64) -> Option<Arc<EventStream>> {
        if id == 0 {
            return Some(self.standalone.clone());
        }
        self.lock().get(&id).cloned()
    }

    pub(crate) fn forget_stream(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Ends every stream (session terminated or expired).
    pub(crate) fn finish_streams(&self) {
        self.standalone.finish();
        for (_, s) in self.lock().drain() {
            s.finish();
        }
    }
}

impl std::fmt::Debug for HttpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSession").field("session", &self.session).finish_non_exhaustive()
    }
}

// === impl MemoryStore ===

const SHARDS: usize = 16;

/// The in-process session store.
pub struct MemoryStore {
    shards: [RwLock<HashMap<Arc<str>, Arc<HttpSession>>>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
    count: AtomicUsize,
    max: usize,
    /// Sessions per owner (`Principal::owner_key`), and the most one owner may hold.
    per_owner: std::sync::Mutex<HashMap<String, usize>>,
    max_per_owner: usize,
}

impl MemoryStore {
    /// A store holding at most `max` sessions.
    pub fn new(max: usize) -> Self {
        Self {
            shards: std::array::from_fn(|_| RwLock::default()),
            hasher: std::collections::hash_map::RandomState::new(),
            count: AtomicUsize::new(0),
            max,
            per_owner: std::sync::Mutex::default(),
            max_per_owner: usize::MAX,
        }
    }

    /// At most `n` sessions per owner (sessions without an owner are not counted).
    #[must_use]
    pub fn with_owner_limit(mut self, n: usize) -> Self {
        self.max_per_owner = n.max(1);
        self
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.per_owner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn release(&self, sessions: &[Arc<HttpSession>]) {
        if self.max_per_owner == usize::MAX {
            return;
        }
        let mut owners = self.owners();
        for s in sessions {
            if let Some(key) = s.session.owner().filter(|o| o.method != AuthMethod::Anonymous).map(Principal::owner_key)
                && let Some(n) = owners.get_mut(&key)
            {
                *n -= 1;
                if *n == 0 {
                    owners.remove(&key);
                }
            }
        }
    }

    fn shard(&self, id: &str) -> &RwLock<HashMap<Arc<str>, Arc<HttpSession>>> {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }
}

impl SessionStore for MemoryStore {
    fn insert(&self, session: Arc<HttpSession>) -> Result<(), StoreFull> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreFull::Total);
        }
        if self.max_per_owner != usize::MAX
            && let Some(key) =
                session.session.owner().filter(|o| o.method != AuthMethod::Anonymous).map(Principal::owner_key)
        {
            let mut owners = self.owners();
            let n = owners.entry(key).or_insert(0);
            if *n >= self.max_per_owner {
                self.count.fetch_sub(1, Ordering::AcqRel);
                return Err(StoreFull::Owner);
            }
            *n += 1;
        }
        let id = session.session.id_arc();
        write(self.shard(&id)).insert(id, session);
        Ok(())
    }

    fn get(&self, id: &str) -> Option<Arc<HttpSession>> {
        self.shard(id).read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned()
    }

    fn remove(&self, id: &str) -> Option<Arc<HttpSession>> {
        let removed = write(self.shard(id)).remove(id);
        if let Some(s) = &removed {
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.release(std::slice::from_ref(s));
        }
        removed
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn take_idle(&self, idle: Duration) -> Vec<Arc<HttpSession>> {
        let limit = idle.as_millis() as u64;
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut map = write(shard);
            map.retain(|_, s| {
                let keep = s.session.idle_ms() <= limit;
                if !keep {
                    out.push(s.clone());
                }
                keep
            });
        }
        self.count.fetch_sub(out.len(), Ordering::AcqRel);
        self.release(&out);
        out
    }

    fn drain(&self) -> Vec<Arc<HttpSession>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            out.extend(write(shard).drain().map(|(_, s)| s));
        }
        self.count.fetch_sub(out.len(), Ordering::AcqRel);
        self.release(&out);
        out
    }
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_per_owner_are_capped_and_released() {
        let store = MemoryStore::new(100).with_owner_limit(2);
        let owned = |sub: &str| {
            let s = Arc::new(HttpSession::new(8));
            s.session().bind_owner(Principal {
                subject: sub.into(),
                method: AuthMethod::Jwt,
                ..Principal::anonymous()
            });
            s
        };
        let (a1, a2) = (owned("alice"), owned("alice"));
        store.insert(a1.clone()).unwrap();
        store.insert(a2).unwrap();
        assert_eq!(store.insert(owned("alice")), Err(StoreFull::Owner));
        store.insert(owned("bob")).unwrap();
        store.remove(a1.id()).unwrap();
        store.insert(owned("alice")).unwrap();
        assert_eq!(store.insert(owned("alice")), Err(StoreFull::Owner));
        store.drain();
        store.insert(owned("alice")).unwrap();
        // Without authentication everyone is the same anonymous principal: not capped per owner.
        for _ in 0..5 {
            let s = Arc::new(HttpSession::new(8));
            s.session().bind_owner(Principal::anonymous());
            store.insert(s).unwrap();
        }
    }

    #[test]
    fn bounded_insert_get_remove() {
        let store = MemoryStore::new(2);
        let a = Arc::new(HttpSession::new(8));
        let b = Arc::new(HttpSession::new(8));
        let c = Arc::new(HttpSession::new(8));
        store.insert(a.clone()).unwrap();
        store.insert(b.clone()).unwrap();
        assert_eq!(store.insert(c), Err(StoreFull::Total));
        assert_eq!(store.len(), 2);
        assert!(store.get(a.id()).is_some());
        assert!(store.remove(a.id()).is_some());
        assert!(store.get(a.id()).is_none());
        assert!(store.remove(a.id()).is_none());
        assert_eq!(store.len(), 1);
        assert_eq!(store.drain().len(), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn idle_sessions_are_taken() {
        let store = MemoryStore::new(10);
        store.insert(Arc::new(HttpSession::new(8))).unwrap();
        assert!(store.take_idle(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.take_idle(Duration::ZERO).len(), 1);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn post_streams_are_bounded() {
        let s = HttpSession::new(8);
        let first = s.open_stream();
        for _ in 0..MAX_STREAMS {
            s.open_stream();
        }
        assert!(s.stream(first.id()).is_none());
        assert!(s.stream(0).is_some());
    }
}
