//! Revoked credentials: by token id (`jti`), subject or client id. Kept in SQLite so they
//! survive restarts and so `portcullis token revoke` (another process) reaches a running server:
//! every check first asks SQLite whether another connection changed the database (`PRAGMA
//! data_version`, a few microseconds) and reloads if so. A revocation is therefore effective on
//! the very next request, for cached tokens too.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// The revocation list and its SQLite file.
pub struct Revocations {
    /// Held only for single statements.
    db: Mutex<Connection>,
    sets: RwLock<Sets>,
}

#[derive(Default)]
struct Sets {
    version: i64,
    token_ids: HashSet<String>,
    subjects: HashSet<String>,
    clients: HashSet<String>,
}

/// A revocation database problem.
#[derive(Debug, thiserror::Error)]
#[error("revocation database {path}: {source}")]
pub struct RevocationError {
    path: String,
    source: rusqlite::Error,
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
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, RevocationError> {
        let err = |source| RevocationError { path: path.display().to_string(), source };
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
        let r = Self { db: Mutex::new(db), sets: RwLock::default() };
        r.reload().map_err(err)?;
        Ok(r)
    }

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

    /// Records a revocation (idempotent).
    pub fn revoke(&self, what: &Revoke) -> Result<(), RevocationError> {
        let (kind, value) = what.kind();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
        self.lock()
            .execute(
                "INSERT OR IGNORE INTO revocations (kind, value, revoked_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![kind, value, now],
            )
            .map_err(|source| RevocationError { path: "(open)".into(), source })?;
        self.reload().map_err(|source| RevocationError { path: "(open)".into(), source })
    }

    /// True when `p`'s token, subject or client is revoked. Fails closed: if the database cannot
    /// be read, the last loaded list still applies and the error is logged.
    pub fn is_revoked(&self, p: &Principal) -> bool {
        let current = self.lock().query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0));
        match current {
            Ok(v) if v != self.sets.read().unwrap_or_else(std::sync::PoisonError::into_inner).version => {
                if let Err(e) = self.reload() {
                    tracing::error!(error = %e, "cannot reload revocations");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot check revocations for changes"),
        }
        let s = self.sets.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        p.token_id.as_ref().is_some_and(|j| s.token_ids.contains(j))
            || s.subjects.contains(&p.subject)
            || p.client_id.as_ref().is_some_and(|c| s.clients.contains(c))
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

    #[test]
    fn another_connection_s_revocation_is_seen_on_the_next_check() {
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
        assert!(!server.is_revoked(&p));
        cli.revoke(&Revoke::TokenId("t1".into())).unwrap();
        assert!(server.is_revoked(&p), "effective on the very next check");
        let q = Principal { token_id: Some("t2".into()), ..p.clone() };
        assert!(!server.is_revoked(&q));
        cli.revoke(&Revoke::Client("app".into())).unwrap();
        assert!(server.is_revoked(&q));
        let r = Principal { subject: "bob".into(), client_id: None, token_id: None, ..p };
        assert!(!server.is_revoked(&r));
        cli.revoke(&Revoke::Subject("bob".into())).unwrap();
        cli.revoke(&Revoke::Subject("bob".into())).unwrap();
        assert!(server.is_revoked(&r));
        drop((server, cli));
        assert!(Revocations::open(&path).unwrap().is_revoked(&r), "persisted");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
