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

/// Room for one session, counted against the store's limits (in all and per user) until it is
/// dropped. Taken before anything of the session exists, so a refusal leaves nothing behind;
/// legacy HTTP+SSE sessions, which live with their stream rather than in the store, hold one for
/// their lifetime and so count against the same limits.
pub struct Seat {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Seat {
    /// A seat that calls `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self { release: Some(Box::new(release)) }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seat")
    }
}

/// Holds live sessions by id.
pub trait SessionStore: Send + Sync + 'static {
    /// Room for a session of `owner`, or the limit that refuses it.
    fn reserve(&self, owner: &Principal) -> Result<Seat, StoreFull>;
    /// Adds a session into the seat reserved for it (released when the session leaves).
    fn insert(&self, session: Arc<HttpSession>, seat: Seat);
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

/// Sessions by id, each with its seat.
type Shard = RwLock<HashMap<Arc<str>, (Arc<HttpSession>, Seat)>>;

/// The in-process session store.
pub struct MemoryStore {
    shards: [Shard; SHARDS],
    hasher: std::collections::hash_map::RandomState,
    /// Sessions in the shards.
    count: AtomicUsize,
    seats: Arc<Seats>,
}

/// Seats taken, in all and per user ([`Principal::user_key`]), and the most of each.
struct Seats {
    taken: AtomicUsize,
    max: usize,
    per_user: Mutex<HashMap<String, usize>>,
    max_per_user: usize,
}

impl Seats {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.per_user.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(self: &Arc<Self>, owner: &Principal) -> Result<Seat, StoreFull> {
        if self.taken.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.taken.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreFull::Total);
        }
        // Without authentication everyone is the same anonymous principal: not counted per user.
        let user = (self.max_per_user != usize::MAX && owner.method != AuthMethod::Anonymous).then(|| owner.user_key());
        if let Some(key) = &user {
            let mut users = self.users();
            let n = users.entry(key.clone()).or_insert(0);
            if *n >= self.max_per_user {
                if *n == 0 {
                    users.remove(key);
                }
                drop(users);
                self.taken.fetch_sub(1, Ordering::AcqRel);
                return Err(StoreFull::Owner);
            }
            *n += 1;
        }
        let seats = self.clone();
        Ok(Seat::new(move || {
            seats.taken.fetch_sub(1, Ordering::AcqRel);
            if let Some(key) = user {
                let mut users = seats.users();
                if let Some(n) = users.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        users.remove(&key);
                    }
                }
            }
        }))
    }
}

impl MemoryStore {
    /// A store holding at most `max` sessions.
    pub fn new(max: usize) -> Self {
        let seats = Seats { taken: AtomicUsize::new(0), max, per_user: Mutex::default(), max_per_user: usize::MAX };
        Self {
            shards: std::array::from_fn(|_| RwLock::default()),
            hasher: std::collections::hash_map::RandomState::new(),
            count: AtomicUsize::new(0),
            seats: Arc::new(seats),
        }
    }

    /// At most `n` sessions per user (anonymous sessions are not counted per user).
    #[must_use]
    pub fn with_owner_limit(mut self, n: usize) -> Self {
        let seats = Arc::get_mut(&mut self.seats).expect("set before any seat is taken");
        seats.max_per_user = n.max(1);
        self
    }

    fn shard(&self, id: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }
}

impl SessionStore for MemoryStore {
    fn reserve(&self, owner: &Principal) -> Result<Seat, StoreFull> {
        self.seats.take(owner)
    }

    fn insert(&self, session: Arc<HttpSession>, seat: Seat) {
        let id = session.session.id_arc();
        let old = write(self.shard(&id)).insert(id, (session, seat));
        if old.is_none() {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn get(&self, id: &str) -> Option<Arc<HttpSession>> {
        self.shard(id).read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).map(|(s, _)| s.clone())
    }

    fn remove(&self, id: &str) -> Option<Arc<HttpSession>> {
        let (session, _seat) = write(self.shard(id)).remove(id)?;
        self.count.fetch_sub(1, Ordering::AcqRel);
        Some(session)
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn take_idle(&self, idle: Duration) -> Vec<Arc<HttpSession>> {
        let limit = idle.as_millis() as u64;
        let mut out = Vec::new();
        for shard in &self.shards {
            // Seats are released once the shard's lock is let go.
            let mut seats = Vec::new();
            let mut map = write(shard);
            let idle: Vec<Arc<str>> =
                map.iter().filter(|(_, (s, _))| s.session.idle_ms() > limit).map(|(id, _)| id.clone()).collect();
            for id in idle {
                if let Some((s, seat)) = map.remove(&id) {
                    out.push(s);
                    seats.push(seat);
                }
            }
            drop(map);
            self.count.fetch_sub(seats.len(), Ordering::AcqRel);
        }
        out
    }

    fn drain(&self) -> Vec<Arc<HttpSession>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let taken: Vec<_> = write(shard).drain().map(|(_, v)| v).collect();
            self.count.fetch_sub(taken.len(), Ordering::AcqRel);
            out.extend(taken.into_iter().map(|(s, _seat)| s));
        }
        out
    }
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reserve, then insert: what `initialize` does.
    fn put(store: &MemoryStore, s: Arc<HttpSession>) -> Result<(), StoreFull> {
        let owner = s.session().owner().cloned().unwrap_or_else(Principal::anonymous);
        let seat = store.reserve(&owner)?;
        store.insert(s, seat);
        Ok(())
    }

    fn user(sub: &str, client: &str) -> Principal {
        Principal {
            subject: sub.into(),
            client_id: Some(client.into()),
            method: AuthMethod::Jwt,
            ..Principal::anonymous()
        }
    }

    #[test]
    fn sessions_per_user_are_capped_and_released() {
        let store = MemoryStore::new(100).with_owner_limit(2);
        let owned = |sub: &str, client: &str| {
            let s = Arc::new(HttpSession::new(8));
            s.session().bind_owner(user(sub, client));
            s
        };
        let (a1, a2) = (owned("alice", "c1"), owned("alice", "c2"));
        put(&store, a1.clone()).unwrap();
        put(&store, a2).unwrap();
        // Another OAuth client of the same user is the same user.
        assert_eq!(put(&store, owned("alice", "c3")), Err(StoreFull::Owner));
        put(&store, owned("bob", "c1")).unwrap();
        store.remove(a1.id()).unwrap();
        put(&store, owned("alice", "c1")).unwrap();
        assert_eq!(put(&store, owned("alice", "c1")), Err(StoreFull::Owner));
        store.drain();
        put(&store, owned("alice", "c1")).unwrap();
        // Without authentication everyone is the same anonymous principal: not capped per user.
        for _ in 0..5 {
            let s = Arc::new(HttpSession::new(8));
            s.session().bind_owner(Principal::anonymous());
            put(&store, s).unwrap();
        }
    }

    #[test]
    fn a_seat_held_outside_the_store_counts_until_dropped() {
        let store = MemoryStore::new(3).with_owner_limit(1);
        let legacy = store.reserve(&user("alice", "c")).unwrap();
        assert_eq!(store.reserve(&user("alice", "c")).unwrap_err(), StoreFull::Owner);
        let other = store.reserve(&user("bob", "c")).unwrap();
        let third = store.reserve(&user("carol", "c")).unwrap();
        assert_eq!(store.reserve(&user("dave", "c")).unwrap_err(), StoreFull::Total);
        assert_eq!(store.len(), 0, "seats are not sessions");
        drop((legacy, other, third));
        store.reserve(&user("alice", "c")).unwrap();
        assert!(store.seats.users().is_empty(), "released seats leave no entry behind");
    }

    #[test]
    fn bounded_insert_get_remove() {
        let store = MemoryStore::new(2);
        let a = Arc::new(HttpSession::new(8));
        let b = Arc::new(HttpSession::new(8));
        let c = Arc::new(HttpSession::new(8));
        put(&store, a.clone()).unwrap();
        put(&store, b.clone()).unwrap();
        assert_eq!(put(&store, c), Err(StoreFull::Total));
        assert_eq!(store.len(), 2);
        assert!(store.get(a.id()).is_some());
        assert!(store.remove(a.id()).is_some());
        assert!(store.get(a.id()).is_none());
        assert!(store.remove(a.id()).is_none());
        assert_eq!(store.len(), 1);
        assert_eq!(store.drain().len(), 1);
        assert!(store.is_empty());
        assert_eq!(store.seats.taken.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn idle_sessions_are_taken() {
        let store = MemoryStore::new(10);
        put(&store, Arc::new(HttpSession::new(8))).unwrap();
        assert!(store.take_idle(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.take_idle(Duration::ZERO).len(), 1);
        assert_eq!(store.len(), 0);
        assert_eq!(store.seats.taken.load(Ordering::Relaxed), 0);
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
