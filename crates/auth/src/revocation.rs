//! Revoked credentials: by token id (`jti`), subject or client id, effective on the very next
//! request (cached tokens too). Two backends:
//!
//! - **SQLite** (default): survives restarts, and `portcullis token revoke` (another process)
//!   reaches a running server: every check first reads the header of the database's WAL index
//!   (`<db>-shm`, one `pread`), which every commit by any process changes before the commit
//!   returns; only when it changed does it ask SQLite (`PRAGMA data_version`, a read transaction
//!   with its file locks, ~5 µs) and reload if the data did. If the file cannot be read, the last
//!   loaded list still applies (and the error is logged).
//! - **Redis**: one hash shared by every replica; each check is one `HMGET` round trip. If Redis
//!   cannot answer, the check fails closed: the request gets 503, never a pass.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_engine::Principal;
use rusqlite::Connection;

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoke {
    /// One token, by `jti`.
    TokenId(String),
    /// Every token of a subject.
    Subject(String),
    /// Every token issued to a client.
    Client(String),
}

/// The revocation list.
pub struct Revocations {
    backend: Backend,
}

enum Backend {
    Sqlite(SqliteList),
    Redis(RedisList),
}

/// The list in a SQLite file, mirrored in memory.
struct SqliteList {
    /// Held only for single statements.
    db: Mutex<Connection>,
    sets: RwLock<Sets>,
    /// The WAL index, opened for reading its header (`None`: every check asks SQLite).
    shm: Option<std::fs::File>,
    /// The WAL-index header as of the last check that asked SQLite.
    seen: Mutex<Option<WalHeader>>,
    /// Checks that asked SQLite.
    asked: AtomicU64,
}

/// The first copy of the WAL-index header: change counter, frame count, salts and checksums
/// (SQLite's file format, <https://sqlite.org/walformat.html> §2.1; shared by every SQLite
/// version that opens the file, so it is stable). A commit rewrites it before it returns; readers
/// and checkpoints leave it alone.
type WalHeader = [u8; 48];

/// The list in one Redis hash; fields are `jti:<id>`, `sub:<subject>`, `client:<id>`.
struct RedisList {
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    key: String,
    /// Where it is, for messages (without credentials).
    place: String,
}

#[derive(Default)]
struct Sets {
    version: i64,
    token_ids: HashSet<String>,
    subjects: HashSet<String>,
    clients: HashSet<String>,
}

/// A revocation store problem.
#[derive(Debug, thiserror::Error)]
#[error("revocation store {place}: {reason}")]
pub struct RevocationError {
    place: String,
    reason: String,
}

// === impl Revoke ===

impl Revoke {
    fn kind(&self) -> (&'static str, &str) {
        match self {
            Self::TokenId(v) => ("jti", v),
            Self::Subject(v) => ("sub", v),
            Self::Client(v) => ("client", v),
        }
    }
}

// === impl Revocations ===

impl Revocations {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Self, RevocationError> {
        let err = |e: rusqlite::Error| RevocationError { place: path.display().to_string(), reason: e.to_string() };
        let db = Connection::open(path).map_err(err)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS revocations (
                 id INTEGER PRIMARY KEY,
                 kind TEXT NOT NULL CHECK (kind IN ('jti', 'sub', 'client')),
                 value TEXT NOT NULL,
                 revoked_at INTEGER NOT NULL,
                 UNIQUE (kind, value)
             );",
        )
        .map_err(err)?;
        // WAL mode and the read above made `<db>-shm`; this connection keeps it (and WAL mode)
        // for as long as the server runs.
        let shm = std::fs::File::open(shm_path(path)).ok();
        let list = SqliteList {
            db: Mutex::new(db),
            sets: RwLock::default(),
            shm,
            seen: Mutex::default(),
            asked: AtomicU64::new(0),
        };
        list.reload().map_err(err)?;
        Ok(Self { backend: Backend::Sqlite(list) })
    }

    /// Uses the Redis hash `key` at `url` (`redis://[user:password@]host:port[/db]`). Connects on
    /// first use; [`Revocations::check_connection`] connects now.
    pub fn redis(url: &str, key: &str) -> Result<Self, RevocationError> {
        let place = redact_url(url);
        let client =
            redis::Client::open(url).map_err(|e| RevocationError { place: place.clone(), reason: e.to_string() })?;
        let list = RedisList { client, conn: tokio::sync::OnceCell::new(), key: key.to_owned(), place };
        Ok(Self { backend: Backend::Redis(list) })
    }

    /// Connects to the store now (Redis), so a wrong address is reported at startup.
    pub async fn check_connection(&self) -> Result<(), RevocationError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Redis(r) => {
                let mut conn = r.conn().await?;
                let _: i64 = redis::cmd("HLEN").arg(&r.key).query_async(&mut conn).await.map_err(|e| r.err(&e))?;
                Ok(())
            }
        }
    }

    /// Records a revocation (idempotent).
    pub async fn revoke(&self, what: &Revoke) -> Result<(), RevocationError> {
        let (kind, value) = what.kind();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
        match &self.backend {
            Backend::Sqlite(l) => l.revoke(kind, value, now),
            Backend::Redis(r) => {
                let mut conn = r.conn().await?;
                let _: i64 = redis::cmd("HSET")
                    .arg(&r.key)
                    .arg(format!("{kind}:{value}"))
                    .arg(now)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| r.err(&e))?;
                Ok(())
            }
        }
    }

    /// Lifts a revocation (a mistaken one, or a user let back in): accepted again from the next
    /// request, everywhere the list is shared. Returns whether there was one to lift.
    pub async fn lift(&self, what: &Revoke) -> Result<bool, RevocationError> {
        let (kind, value) = what.kind();
        match &self.backend {
            Backend::Sqlite(l) => l.lift(kind, value),
            Backend::Redis(r) => {
                let mut conn = r.conn().await?;
                let removed: i64 = redis::cmd("HDEL")
                    .arg(&r.key)
                    .arg(format!("{kind}:{value}"))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| r.err(&e))?;
                Ok(removed > 0)
            }
        }
    }

    /// True when `p`'s token, subject or client is revoked; an error when that cannot be known
    /// (the caller fails closed).
    pub async fn is_revoked(&self, p: &Principal) -> Result<bool, RevocationError> {
        match &self.backend {
            Backend::Sqlite(l) => Ok(l.is_revoked(p)),
            Backend::Redis(r) => {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&r.key).arg(format!("sub:{}", p.subject));
                if let Some(j) = &p.token_id {
                    cmd.arg(format!("jti:{j}"));
                }
                if let Some(c) = &p.client_id {
                    cmd.arg(format!("client:{c}"));
                }
                let mut conn = r.conn().await?;
                let found: Vec<Option<i64>> = cmd.query_async(&mut conn).await.map_err(|e| r.err(&e))?;
                Ok(found.iter().any(Option::is_some))
            }
        }
    }
}

// === impl SqliteList ===

impl SqliteList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reload(&self) -> rusqlite::Result<()> {
        let db = self.lock();
        let version: i64 = db.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let mut sets = Sets { version, ..Sets::default() };
        let mut stmt = db.prepare("SELECT kind, value FROM revocations")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (kind, value) = row?;
            match kind.as_str() {
                "jti" => sets.token_ids.insert(value),
                "sub" => sets.subjects.insert(value),
                _ => sets.clients.insert(value),
            };
        }
        *self.sets.write().unwrap_or_else(std::sync::PoisonError::into_inner) = sets;
        Ok(())
    }

    fn revoke(&self, kind: &str, value: &str, now: i64) -> Result<(), RevocationError> {
        let err = |e: rusqlite::Error| RevocationError { place: "(sqlite)".into(), reason: e.to_string() };
        self.lock()
            .execute(
                "INSERT OR IGNORE INTO revocations (kind, value, revoked_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![kind, value, now],
            )
            .map_err(err)?;
        self.reload().map_err(err)
    }

    fn lift(&self, kind: &str, value: &str) -> Result<bool, RevocationError> {
        let err = |e: rusqlite::Error| RevocationError { place: "(sqlite)".into(), reason: e.to_string() };
        let removed = self
            .lock()
            .execute("DELETE FROM revocations WHERE kind = ?1 AND value = ?2", rusqlite::params![kind, value])
            .map_err(err)?;
        // This connection's own commits do not move `data_version`: reload here.
        self.reload().map_err(err)?;
        Ok(removed > 0)
    }

    /// The WAL-index header now, if it can be read.
    fn wal_header(&self) -> Option<WalHeader> {
        let mut h = [0u8; 48];
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(self.shm.as_ref()?, &mut h, 0).ok()?;
            Some(h)
        }
        #[cfg(not(unix))]
        {
            let _ = &mut h;
            None
        }
    }

    fn is_revoked(&self, p: &Principal) -> bool {
        // Read before asking SQLite: a commit landing in between changes the header again, so the
        // next check asks too. An unchanged header means no commit has finished since the last
        // ask, so the list in memory is current.
        let header = self.wal_header();
        let seen =
            self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some_and(|s| Some(s) == header);
        if !seen {
            self.asked.fetch_add(1, Ordering::Relaxed);
            // Prepared once: parsing the statement was a fifth of this check's cost.
            let current = self
                .lock()
                .prepare_cached("PRAGMA data_version")
                .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)));
            let known = match current {
                Ok(v) if v != self.sets.read().unwrap_or_else(std::sync::PoisonError::into_inner).version => {
                    self.reload().map_err(|e| tracing::error!(error = %e, "cannot reload revocations")).is_ok()
                }
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot check revocations for changes");
                    false
                }
            };
            if known {
                *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = header;
            }
        }
        let s = self.sets.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        p.token_id.as_ref().is_some_and(|j| s.token_ids.contains(j))
            || s.subjects.contains(&p.subject)
            || p.client_id.as_ref().is_some_and(|c| s.clients.contains(c))
    }
}

// === impl RedisList ===

impl RedisList {
    async fn conn(&self) -> Result<redis::aio::ConnectionManager, RevocationError> {
        // Timeouts and retries as in `portcullis_limits`' Redis rules: change both together. Neither crate
        // depends on the other, and the engine, their one shared crate, stays free of redis.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        self.conn
            .get_or_try_init(|| redis::aio::ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .cloned()
            .map_err(|e| self.err(&e))
    }

    fn err(&self, e: &redis::RedisError) -> RevocationError {
        RevocationError { place: self.place.clone(), reason: e.to_string() }
    }
}

/// SQLite's name for the WAL index of the database at `db`.
fn shm_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-shm");
    p.into()
}

/// `redis://user:secret@host/0` → `redis://host/0`: never a password in a message.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            // Query parameters can carry a password too (`redis+unix:///…?pass=`): drop them.
            let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => "(redis)".into(),
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn another_connection_s_revocation_is_seen_on_the_next_check() {
        let dir = std::env::temp_dir().join(format!("portcullis-rev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rev.db");
        let server = Revocations::open(&path).unwrap();
        let cli = Revocations::open(&path).unwrap();
        let p = Principal {
            token_id: Some("t1".into()),
            client_id: Some("app".into()),
            subject: "alice".into(),
            ..Principal::anonymous()
        };
        assert!(!server.is_revoked(&p).await.unwrap());
        let Backend::Sqlite(list) = &server.backend else { unreachable!() };
        let asked = || list.asked.load(Ordering::Relaxed);
        let before = asked();
        for _ in 0..100 {
            assert!(!server.is_revoked(&p).await.unwrap());
        }
        if cfg!(unix) {
            assert_eq!(asked(), before, "nothing committed: the WAL-index header answers, SQLite is not asked");
        }
        cli.revoke(&Revoke::TokenId("t1".into())).await.unwrap();
        assert!(server.is_revoked(&p).await.unwrap(), "effective on the very next check");
        if cfg!(unix) {
            assert_eq!(asked(), before + 1, "the commit changed the header: asked once");
        }
        let q = Principal { token_id: Some("t2".into()), ..p.clone() };
        assert!(!server.is_revoked(&q).await.unwrap());
        cli.revoke(&Revoke::Client("app".into())).await.unwrap();
        assert!(server.is_revoked(&q).await.unwrap());
        let r = Principal { subject: "bob".into(), client_id: None, token_id: None, ..p };
        assert!(!server.is_revoked(&r).await.unwrap());
        cli.revoke(&Revoke::Subject("bob".into())).await.unwrap();
        cli.revoke(&Revoke::Subject("bob".into())).await.unwrap();
        assert!(server.is_revoked(&r).await.unwrap());
        drop((server, cli));
        let server = Revocations::open(&path).unwrap();
        assert!(server.is_revoked(&r).await.unwrap(), "persisted");
        // Lifted by another connection: accepted again on the next check; lifting twice finds
        // nothing; the other revocations stay.
        let cli = Revocations::open(&path).unwrap();
        assert!(cli.lift(&Revoke::Subject("bob".into())).await.unwrap());
        assert!(!server.is_revoked(&r).await.unwrap(), "lifted on the very next check");
        assert!(!cli.lift(&Revoke::Subject("bob".into())).await.unwrap(), "nothing left to lift");
        assert!(server.is_revoked(&q).await.unwrap(), "the client's revocation stays");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redis_urls_are_shown_without_credentials() {
        assert_eq!(redact_url("redis://user:hunter2@cache:6379/0"), "redis://cache:6379/0");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
