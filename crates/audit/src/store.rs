//! Where sealed records go: SQLite (default, embedded), PostgreSQL, or JSON lines (a file, or
//! stdout for log shippers). Each append is one batch made durable at once — one transaction or one
//! `fdatasync` for the whole group — which is what keeps durable auditing fast.

use std::io::{BufRead as _, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use crate::chain::{GENESIS, Record};

/// A store problem (the message never contains credentials).
#[derive(Debug, thiserror::Error)]
#[error("audit store {place}: {reason}")]
pub struct StoreError {
    place: String,
    reason: String,
}

fn err(place: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError { place: place.to_owned(), reason: e.to_string() }
}

impl StoreError {
    pub(crate) fn new(place: &str, e: impl std::fmt::Display) -> Self {
        err(place, e)
    }
}

/// Which events `query` returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this subject.
    pub subject: Option<String>,
    /// Only this target (tool, prompt or resource URI).
    pub target: Option<String>,
    /// Only events at or after this Unix time in milliseconds.
    pub since_ms: Option<u64>,
}

impl Filter {
    fn matches(&self, event: &str) -> bool {
        if self.subject.is_none() && self.target.is_none() && self.since_ms.is_none() {
            return true;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(event) else { return false };
        self.subject.as_deref().is_none_or(|s| v["subject"].as_str() == Some(s))
            && self.target.as_deref().is_none_or(|t| v["target"].as_str() == Some(t))
            && self.since_ms.is_none_or(|t| v["time_ms"].as_u64().is_some_and(|m| m >= t))
    }
}

/// An audit store.
pub enum Store {
    /// A SQLite database file.
    Sqlite(SqliteStore),
    /// A PostgreSQL table.
    Postgres(Box<PostgresStore>),
    /// JSON lines in a file, or on stdout.
    Jsonl(JsonlStore),
}

impl Store {
    /// Makes this store's opener its only writer, for as long as it lives: a second writer would
    /// fork the chain. SQLite and JSON lines: an exclusive lock on `<file>.lock`; PostgreSQL: an
    /// advisory lock named after the table.
    pub fn lock_writer(&mut self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.lock = Some(lock_file(&s.path, &s.place)?),
            Self::Jsonl(s) => {
                if let Some(path) = &s.path {
                    s.lock = Some(lock_file(path, &s.place)?);
                }
            }
            Self::Postgres(s) => {
                s.take_lock()?;
                s.writer = true;
            }
        }
        Ok(())
    }

    /// After a failed append: reconnect if the connection is gone (PostgreSQL). The caller then
    /// re-reads the tail to learn whether the batch landed.
    pub fn recover(&mut self) {
        // A failed SQLite append may leave its transaction open if the ROLLBACK failed too; the
        // tail read next would then see the uncommitted batch. A fresh connection cannot.
        if let Self::Sqlite(s) = self
            && !s.db.is_autocommit()
        {
            let _ = s.db.execute_batch("ROLLBACK");
            if !s.db.is_autocommit() {
                match SqliteStore::open(&s.path) {
                    Ok(fresh) => s.db = fresh.db,
                    Err(e) => tracing::error!(error = %e, "audit store: reopening after a failed rollback failed"),
                }
            }
        }
        if let Self::Postgres(s) = self
            && s.client.is_closed()
        {
            match postgres::Client::connect(&s.url, postgres::NoTls) {
                Ok(c) => {
                    s.client = c;
                    if s.writer
                        && let Err(e) = s.take_lock()
                    {
                        tracing::error!(error = %e, "audit store reconnected but cannot take the writer lock");
                    }
                }
                Err(e) => tracing::error!(error = %err(&s.place, e), "audit store: reconnect failed"),
            }
        }
    }

    /// For asynchronous durability: a commit no longer waits for the disk (SQLite
    /// `synchronous = NORMAL` in WAL mode, PostgreSQL `synchronous_commit = off`, JSON lines
    /// without `fdatasync`). Records survive a crash of this process once written, but the last
    /// moments may be lost if the machine itself fails.
    pub fn relax(&mut self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => self.sync_commits(false),
            Self::Postgres(s) => s.client.batch_execute("SET synchronous_commit = off").map_err(|e| err(&s.place, e)),
            Self::Jsonl(s) => {
                s.sync = false;
                Ok(())
            }
        }
    }

    /// Behind a journal (SQLite only): whether the next commits wait for the disk
    /// (`synchronous = FULL`) or not (`NORMAL`: a commit is durable after the next synchronous one
    /// or checkpoint). The other stores are always written durably; nothing changes for them.
    pub fn sync_commits(&mut self, full: bool) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => {
                s.db.execute_batch(if full { "PRAGMA synchronous = FULL;" } else { "PRAGMA synchronous = NORMAL;" })
                    .map_err(|e| err(&s.place, e))
            }
            Self::Postgres(_) | Self::Jsonl(_) => Ok(()),
        }
    }

    /// Makes every commit so far durable (SQLite: a checkpoint, which syncs the WAL first).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => {
                s.db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                    .map(drop)
                    .map_err(|e| err(&s.place, e))
            }
            Self::Postgres(_) | Self::Jsonl(_) => Ok(()),
        }
    }

    /// The last record's (seq, hash), or (0, genesis) when empty.
    pub fn tail(&mut self) -> Result<(u64, String), StoreError> {
        match self {
            Self::Sqlite(s) => s.tail(),
            Self::Postgres(s) => s.tail(),
            Self::Jsonl(s) => s.tail(),
        }
    }

    /// Appends `records` (consecutive, after the tail) and makes them durable together.
    pub fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.append(records),
            Self::Postgres(s) => s.append(records),
            Self::Jsonl(s) => s.append(records),
        }
    }

    /// Calls `f` with every record in sequence order (as stored: nothing is checked) until it
    /// returns false.
    pub fn scan(&mut self, f: &mut dyn FnMut(Record) -> bool) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.scan(f),
            Self::Postgres(s) => s.scan(f),
            Self::Jsonl(s) => s.scan(f),
        }
    }

    /// How many records there are (for progress).
    pub fn count(&mut self) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => {
                s.db.query_row("SELECT count(*) FROM audit_log", [], |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
                    .map_err(|e| err(&s.place, e))
            }
            Self::Postgres(s) => s
                .client
                .query_one(&format!("SELECT count(*) FROM {}", s.table), &[])
                .map(|r| r.get::<_, i64>(0) as u64)
                .map_err(|e| err(&s.place, e)),
            Self::Jsonl(s) => {
                let mut n = 0;
                s.scan(&mut |_| {
                    n += 1;
                    true
                })?;
                Ok(n)
            }
        }
    }

    /// Records matching `filter`, oldest first; at most `limit`, the newest ones when `newest`.
    pub fn query(&mut self, filter: &Filter, limit: usize, newest: bool) -> Result<Vec<Record>, StoreError> {
        let mut out = std::collections::VecDeque::new();
        self.scan(&mut |r| {
            if filter.matches(&r.event) {
                out.push_back(r);
                if out.len() > limit {
                    if !newest {
                        out.pop_back();
                        return false;
                    }
                    out.pop_front();
                }
            }
            true
        })?;
        Ok(out.into())
    }
}

/// Creates `path` readable only by its owner, if it does not exist.
pub(crate) fn owner_only(path: &Path, place: &str) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map(drop).map_err(|e| err(place, e))
}

/// An exclusive lock on `<path>.lock`, held while the returned file lives.
fn lock_file(path: &Path, place: &str) -> Result<std::fs::File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| err(place, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(err(place, "another process is writing this audit log (its .lock file is held)"))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(err(place, e)),
    }
}

// === SQLite ===

/// Records in a SQLite table `audit_log` (WAL, `synchronous = FULL`: a commit is on disk).
pub struct SqliteStore {
    db: rusqlite::Connection,
    place: String,
    path: PathBuf,
    lock: Option<std::fs::File>,
}

impl SqliteStore {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let place = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(&place, e))?;
        }
        owner_only(path, &place)?;
        let db = rusqlite::Connection::open(path).map_err(|e| err(&place, e))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS audit_log (
                 seq INTEGER PRIMARY KEY,
                 prev_hash TEXT NOT NULL,
                 hash TEXT NOT NULL,
                 event TEXT NOT NULL
             );",
        )
        .map_err(|e| err(&place, e))?;
        Ok(Self { db, place, path: path.to_owned(), lock: None })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tail(&mut self) -> Result<(u64, String), StoreError> {
        let row = self.db.query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        });
        match row {
            Ok(t) => Ok(t),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok((0, GENESIS.to_owned())),
            Err(e) => Err(err(&self.place, e)),
        }
    }

    fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        // Prepared once and kept: parsing SQL was a fifth of the writer's time per batch.
        let run = |sql: &str| self.db.prepare_cached(sql).and_then(|mut s| s.execute([])).map(drop);
        run("BEGIN").map_err(|e| err(&self.place, e))?;
        let inserted = (|| {
            let mut stmt = self
                .db
                .prepare_cached("INSERT INTO audit_log (seq, prev_hash, hash, event) VALUES (?1, ?2, ?3, ?4)")?;
            for r in records {
                stmt.execute(rusqlite::params![r.seq as i64, r.prev_hash, r.hash, r.event])?;
            }
            run("COMMIT")
        })();
        inserted.map_err(|e| {
            if !self.db.is_autocommit() {
                let _ = self.db.execute_batch("ROLLBACK");
            }
            err(&self.place, e)
        })
    }

    fn scan(&mut self, f: &mut dyn FnMut(Record) -> bool) -> Result<(), StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT seq, prev_hash, hash, event FROM audit_log ORDER BY seq")
            .map_err(|e| err(&self.place, e))?;
        let mut rows = stmt.query([]).map_err(|e| err(&self.place, e))?;
        while let Some(row) = rows.next().map_err(|e| err(&self.place, e))? {
            let r = Record {
                seq: row.get::<_, i64>(0).map_err(|e| err(&self.place, e))? as u64,
                prev_hash: row.get(1).map_err(|e| err(&self.place, e))?,
                hash: row.get(2).map_err(|e| err(&self.place, e))?,
                event: row.get(3).map_err(|e| err(&self.place, e))?,
            };
            if !f(r) {
                break;
            }
        }
        Ok(())
    }
}

// === PostgreSQL ===

/// Records in a PostgreSQL table `audit_log`; a batch is one transaction.
pub struct PostgresStore {
    client: postgres::Client,
    place: String,
    table: String,
    url: String,
    /// Holds the single-writer advisory lock.
    writer: bool,
}

impl PostgresStore {
    /// Connects with `url` (`postgres://user@host:port/db`), creating `table` if needed.
    /// `place` names it in messages without credentials.
    pub fn connect(url: &str, table: &str, place: &str) -> Result<Self, StoreError> {
        if table.is_empty() || !table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(err(place, "the table name may hold only letters, digits and _"));
        }
        let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| err(place, e))?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                     seq BIGINT PRIMARY KEY,
                     prev_hash TEXT NOT NULL,
                     hash TEXT NOT NULL,
                     event TEXT NOT NULL
                 )"
            ))
            .map_err(|e| err(place, e))?;
        Ok(Self { client, place: place.to_owned(), table: table.to_owned(), url: url.to_owned(), writer: false })
    }

    fn take_lock(&mut self) -> Result<(), StoreError> {
        let row = self
            .client
            .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&format!("portcullis-audit:{}", self.table)])
            .map_err(|e| err(&self.place, e))?;
        if row.get::<_, bool>(0) {
            Ok(())
        } else {
            Err(err(
                &self.place,
                format!("another process is writing the audit table {}; give each replica its own table", self.table),
            ))
        }
    }

    fn tail(&mut self) -> Result<(u64, String), StoreError> {
        let row = self
            .client
            .query_opt(&format!("SELECT seq, hash FROM {} ORDER BY seq DESC LIMIT 1", self.table), &[])
            .map_err(|e| err(&self.place, e))?;
        Ok(row.map_or_else(|| (0, GENESIS.to_owned()), |r| (r.get::<_, i64>(0) as u64, r.get(1))))
    }

    fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let place = self.place.clone();
        let mut tx = self.client.transaction().map_err(|e| err(&place, e))?;
        let stmt = tx
            .prepare(&format!("INSERT INTO {} (seq, prev_hash, hash, event) VALUES ($1, $2, $3, $4)", self.table))
            .map_err(|e| err(&place, e))?;
        for r in records {
            tx.execute(&stmt, &[&(r.seq as i64), &r.prev_hash, &r.hash, &r.event]).map_err(|e| err(&place, e))?;
        }
        tx.commit().map_err(|e| err(&place, e))
    }

    fn scan(&mut self, f: &mut dyn FnMut(Record) -> bool) -> Result<(), StoreError> {
        let place = self.place.clone();
        let mut tx = self.client.transaction().map_err(|e| err(&place, e))?;
        let portal = tx
            .bind(&format!("SELECT seq, prev_hash, hash, event FROM {} ORDER BY seq", self.table), &[])
            .map_err(|e| err(&place, e))?;
        loop {
            let rows = tx.query_portal(&portal, 10_000).map_err(|e| err(&place, e))?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let r = Record {
                    seq: row.get::<_, i64>(0) as u64,
                    prev_hash: row.get(1),
                    hash: row.get(2),
                    event: row.get(3),
                };
                if !f(r) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// A PostgreSQL connection string as host, port and database only: never user or password,
/// whatever form it came in (URL with `?password=`, or `key=value` pairs).
pub fn postgres_place(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    #[cfg(unix)]
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default();
            let port = c.get_ports().first().copied().unwrap_or(5432);
            format!("postgres://{host}:{port}/{}", c.get_dbname().unwrap_or(""))
        }
        Err(_) => "postgres (unparsable connection string)".into(),
    }
}

// === JSON lines ===

/// One JSON object per line: `{"seq":…,"prev_hash":…,"hash":…,"event":{…}}`. To a file (each batch
/// `fdatasync`ed) or to stdout (flushed; as durable as whatever reads it).
pub struct JsonlStore {
    path: Option<PathBuf>,
    place: String,
    sync: bool,
    lock: Option<std::fs::File>,
    /// Opened for appending at the first append.
    file: Option<std::fs::File>,
}

/// One record as a JSON line (the JSON lines sink and the journal share it).
#[derive(serde::Deserialize)]
pub(crate) struct Line<'a> {
    pub(crate) seq: u64,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    #[serde(borrow)]
    pub(crate) event: &'a serde_json::value::RawValue,
}

/// Appends `r` to `out` as one JSON line (its event is JSON text without raw newlines).
pub(crate) fn encode_line(r: &Record, out: &mut Vec<u8>) {
    use std::fmt::Write as _;
    struct Bytes<'a>(&'a mut Vec<u8>);
    impl std::fmt::Write for Bytes<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    let _ = writeln!(
        Bytes(out),
        "{{\"seq\":{},\"prev_hash\":\"{}\",\"hash\":\"{}\",\"event\":{}}}",
        r.seq,
        r.prev_hash,
        r.hash,
        r.event
    );
}

/// The position of the last `\n` before `before` in `f`, reading backwards 64 KiB at a time.
fn rfind_newline(f: &mut std::fs::File, before: u64) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = before;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(std::io::SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

impl JsonlStore {
    /// JSON lines at `path`, or stdout for `-`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let place = path.display().to_string();
        if path.as_os_str() == "-" {
            return Ok(Self { path: None, place: "stdout".into(), sync: false, lock: None, file: None });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(&place, e))?;
        }
        owner_only(path, &place)?;
        Ok(Self { path: Some(path.to_owned()), place, sync: true, lock: None, file: None })
    }

    /// The file, opened for appending (a file store only). If the file at `path` was deleted,
    /// renamed or replaced, this fails (and forgets the handle): records written to an unlinked
    /// file would be lost while their calls went ahead. Calls are refused until a file is back at
    /// `path`; the writer then continues from that file's tail (a new chain if it is empty), and
    /// says so in the log.
    fn file(&mut self) -> Result<&mut std::fs::File, StoreError> {
        let Some(path) = &self.path else { return Err(err(&self.place, "stdout is not a file")) };
        #[cfg(unix)]
        if let Some(f) = &self.file {
            use std::os::unix::fs::MetadataExt as _;
            let same = match (std::fs::metadata(path), f.metadata()) {
                (Ok(now), Ok(held)) => now.dev() == held.dev() && now.ino() == held.ino(),
                _ => false,
            };
            if !same {
                self.file = None;
                return Err(err(&self.place, "the audit file was moved or deleted while in use"));
            }
        }
        if self.file.is_none() {
            self.file = Some(std::fs::OpenOptions::new().append(true).open(path).map_err(|e| err(&self.place, e))?);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    /// The last record's (seq, hash), found by reading backwards from the end, however long
    /// that record is. A last line without its newline was never acknowledged (torn by a crash)
    /// and is cut off here.
    fn tail(&mut self) -> Result<(u64, String), StoreError> {
        let Some(path) = &self.path else { return Ok((0, GENESIS.to_owned())) };
        let place = self.place.clone();
        let e = |e: std::io::Error| err(&place, e);
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(e)?;
        let len = f.metadata().map_err(e)?.len();
        let Some(last_nl) = rfind_newline(&mut f, len).map_err(e)? else {
            // Not one complete line: nothing was ever acknowledged.
            f.set_len(0).map_err(e)?;
            return Ok((0, GENESIS.to_owned()));
        };
        if last_nl + 1 < len {
            f.set_len(last_nl + 1).map_err(e)?;
        }
        // Lines end at `end` (a newline); skip blank ones.
        let mut end = last_nl;
        loop {
            let start = rfind_newline(&mut f, end).map_err(e)?.map_or(0, |p| p + 1);
            let mut line = vec![0; (end - start) as usize];
            f.seek(std::io::SeekFrom::Start(start)).map_err(e)?;
            f.read_exact(&mut line).map_err(e)?;
            if line.iter().all(u8::is_ascii_whitespace) {
                if start == 0 {
                    return Ok((0, GENESIS.to_owned()));
                }
                end = start - 1;
                continue;
            }
            let l: Line<'_> = serde_json::from_slice(&line)
                .map_err(|e| err(&place, format!("the last line is not an audit record: {e}")))?;
            return Ok((l.seq, l.hash));
        }
    }

    fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let mut out = Vec::with_capacity(records.iter().map(|r| r.event.len() + 200).sum());
        for r in records {
            encode_line(r, &mut out);
        }
        match &self.path {
            None => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&out).and_then(|()| stdout.flush()).map_err(|e| err(&self.place, e))
            }
            Some(_) => {
                let sync = self.sync;
                let place = self.place.clone();
                let f = self.file()?;
                let before = f.metadata().map_err(|e| err(&place, e))?.len();
                let written = f.write_all(&out).and_then(|()| if sync { f.sync_data() } else { Ok(()) });
                if let Err(e) = written {
                    // Nothing half-written stays behind: the batch is either all there or gone.
                    let _ = f.set_len(before);
                    self.file = None;
                    return Err(err(&place, e));
                }
                Ok(())
            }
        }
    }

    fn scan(&mut self, f: &mut dyn FnMut(Record) -> bool) -> Result<(), StoreError> {
        let Some(path) = &self.path else { return Err(err(&self.place, "stdout cannot be read back")) };
        let file = std::fs::File::open(path).map_err(|e| err(&self.place, e))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| err(&self.place, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let l: Line<'_> = serde_json::from_str(&line)
                .map_err(|e| err(&self.place, format!("line {}: not an audit record: {e}", i + 1)))?;
            if !f(Record { seq: l.seq, prev_hash: l.prev_hash, hash: l.hash, event: l.event.get().to_owned() }) {
                break;
            }
        }
        Ok(())
    }
}
