//! The tamper-evident audit trail.
//!
//! [`AuditLog`] implements the engine's `Auditor`. Two paths:
//!
//! - **Durable SQLite** (the default): the caller redacts and hashes its event, seals it into
//!   the hash chain ([`chain`]) and joins the next group of the [`journal`]; one caller of each
//!   group writes and syncs it (group commit) and releases the rest. The store's writer thread then
//!   appends the records to SQLite in large batches (it *indexes* them); at start, records a crash
//!   kept from it are replayed from the journal.
//! - **Everything else** (asynchronous durability, PostgreSQL, JSON lines): `record` queues the
//!   event and returns. One writer thread takes everything queued (up to a batch limit), redacts
//!   arguments and hashes the originals, seals each event, appends the batch to the store
//!   ([`store`]) in one durable write — group commit — and then wakes every caller of that batch.
//!
//! With `Durability::Durable` (the default) a call's result is released only once its record is
//! on disk; with `Durability::Async` at once. If a durable write fails, the group's callers get an
//! error (their results are withheld: fail closed) and the chain does not advance; the next group
//! goes on from the same tail.

mod budget;
pub mod chain;
pub mod journal;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis_engine::{AuditEvent, AuditUnavailable, Auditor, BoxFuture};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use chain::{Break, Record, Verifier};
pub use store::{Filter, JsonlStore, PostgresStore, SqliteStore, Store, StoreError};

/// When a call's result may be released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After its record is durable (group-committed and fsync'd).
    Durable,
    /// At once; the record follows within one batch.
    Async,
}

/// Audit settings.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// When results are released.
    pub durability: Durability,
    /// Argument keys (patterns: `*` any run, `?` one character; case-insensitive) whose values
    /// are replaced by `"[redacted]"`, at any depth.
    pub redact: Vec<String>,
    /// Most events queued; beyond it, calls are refused rather than audited late.
    pub max_queue: usize,
    /// Most events per durable write.
    pub max_batch: usize,
    /// Key for the arguments' hash: HMAC-SHA-256 (`arguments_hmac`) so a reader of the log
    /// cannot confirm guesses of redacted values; without a key, plain SHA-256
    /// (`arguments_sha256`).
    pub hash_key: Option<Vec<u8>>,
    /// Size of each of the SQLite journal's two files (durable mode); they grow past it only
    /// while the store falls behind.
    pub journal_bytes: u64,
    /// Records nobody waits for (refusals: step-ups, rate-limit hits, bad credentials) kept per
    /// source (principal, or the unauthenticated) and second; the next one kept says how many
    /// were skipped.
    pub unawaited_per_source: u32,
    /// The same, all sources together.
    pub unawaited_total: u32,
}

/// Arguments larger than this (as JSON) are recorded by their hash only.
pub const MAX_STORED_ARGUMENTS: usize = 16 * 1024;

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Durable,
            redact: ["*password*", "*secret*", "*token*", "authorization", "*api_key*", "*apikey*"]
                .map(String::from)
                .to_vec(),
            max_queue: 10_000,
            max_batch: 4096,
            hash_key: None,
            journal_bytes: 8 << 20,
            unawaited_per_source: 100,
            unawaited_total: 1000,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Events queued, not yet written.
    pub queued: AtomicUsize,
    /// Events written.
    pub written: AtomicU64,
    /// Durable writes (batches).
    pub batches: AtomicU64,
    /// Total time spent in durable writes, microseconds.
    pub write_us: AtomicU64,
    /// Writes that failed.
    pub failures: AtomicU64,
    /// Journal groups written by the flusher (nobody waited for them).
    pub flushed: AtomicU64,
    /// Unawaited records (refusals) skipped by the per-source budget, or for want of room.
    pub skipped: AtomicU64,
}

/// Work for the writer thread.
// Boxing the event would cost an allocation per call on the queue's common path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Job {
    /// An event to seal and append (a `flush` event marks a point to report back from).
    Event { event: AuditEvent, done: Option<oneshot::Sender<Result<(), AuditUnavailable>>> },
    /// Records already sealed and durable in the journal, to append in order.
    Sealed(Vec<Record>),
}

/// The audit log: a queue and its writer thread, and for durable SQLite the journal in front.
pub struct AuditLog {
    /// `None` while dropping, and with a journal (which then owns the queue).
    tx: Option<mpsc::UnboundedSender<Job>>,
    journal: Option<Arc<journal::Committer>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Writes the journal groups nobody leads.
    flusher: Option<std::thread::JoinHandle<()>>,
    budget: budget::Budget,
    opts: AuditOptions,
    stats: Arc<AuditStats>,
    /// Where, for messages.
    place: String,
}

impl AuditLog {
    /// Starts the writer over `store`; `place` names it in logs.
    /// A SQLite store first takes back what its journal holds beyond the store's tail (records
    /// of durable calls that a crash kept from reaching the store).
    pub fn start(mut store: Store, opts: AuditOptions, place: String) -> Result<Self, StoreError> {
        store.lock_writer()?;
        let db = match &store {
            Store::Sqlite(s) => Some(s.path().to_owned()),
            _ => None,
        };
        if let Some(db) = &db {
            let n = journal::replay(db, &mut store)?;
            if n > 0 {
                tracing::warn!(records = n, %place, "audit: took {n} records from the journal that the last run had not stored");
            }
        }
        if opts.durability == Durability::Async || db.is_some() {
            store.relax()?;
        }
        let tail = store.tail()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(AuditStats::default());
        let indexed = Arc::new(AtomicU64::new(tail.0));
        let (tx, journal) = match db {
            Some(db) if opts.durability == Durability::Durable => {
                let c = journal::Committer::open(&db, tail.clone(), tx, indexed.clone(), stats.clone(), &opts, &place)?;
                (None, Some(Arc::new(c)))
            }
            _ => (Some(tx), None),
        };
        let gather = match (&journal, opts.durability) {
            (Some(_), _) => Gather::Always,
            (None, Durability::Async) => Gather::WhenIdle,
            (None, Durability::Durable) => Gather::No,
        };
        let writer = Writer {
            store,
            rx,
            tail,
            opts: opts.clone(),
            stats: stats.clone(),
            indexed,
            synced_at: Instant::now(),
            gather,
        };
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::new(&place, e))?;
        let flusher = match &journal {
            Some(j) => {
                let j = j.clone();
                Some(
                    std::thread::Builder::new()
                        .name("audit-flusher".into())
                        .spawn(move || j.flusher())
                        .map_err(|e| StoreError::new(&place, e))?,
                )
            }
            None => None,
        };
        let budget = budget::Budget::new(opts.unawaited_per_source, opts.unawaited_total);
        Ok(Self { tx, journal, writer: Some(writer), flusher, budget, opts, stats, place })
    }

    fn send(&self, job: Job) -> Result<(), ()> {
        match &self.journal {
            Some(j) => j.send(job),
            None => self.tx.as_ref().ok_or(())?.send(job).map_err(drop),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<AuditStats> {
        &self.stats
    }

    /// Where the log is.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Resolves once everything queued before it is written (for shutdown and tests).
    pub async fn flush(&self) -> Result<(), AuditUnavailable> {
        if let Some(j) = &self.journal {
            j.written().await?;
        }
        let (done, rx) = oneshot::channel();
        let mut marker = AuditEvent::new("flush", None, "");
        marker.outcome = "flush".into();
        // Counted like any job: the writer subtracts every job it takes.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.send(Job::Event { event: marker, done: Some(done) }).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(AuditUnavailable("the audit writer stopped".into()));
        }
        rx.await.unwrap_or_else(|_| Err(AuditUnavailable("the audit writer stopped".into())))
    }
}

impl AuditLog {
    /// Queues `event` without anyone waiting for it, in at most half the room (the rest is for
    /// calls that wait). False when there was no room.
    fn queue_unawaited(&self, event: AuditEvent) -> bool {
        if let Some(j) = &self.journal {
            let json = stored_json(&event, &self.opts.redact, self.opts.hash_key.as_deref());
            return j.submit(json, true).is_ok();
        }
        if self.stats.queued.load(Ordering::Relaxed) >= self.opts.max_queue / 2 {
            return false;
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self.send(Job::Event { event, done: None }).is_ok();
        if !sent {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// One record per source whose skipped refusals no later record carried (at close).
    fn write_owed(&self) {
        for (source, n) in self.budget.take_owed() {
            let mut e = AuditEvent::new("skipped", None, "");
            (e.decision, e.outcome, e.rule) = ("refused", "skipped".into(), Some(source));
            e.flags.push(format!("skipped-before:{n}"));
            if !self.queue_unawaited(e) {
                tracing::warn!(skipped = n, "audit: no room for the count of skipped refusals");
            }
        }
    }
}

/// Whose budget an unawaited event spends: its principal's, or the unauthenticated one.
fn source_of(event: &AuditEvent) -> String {
    match (&event.tenant, &event.subject) {
        (Some(t), Some(s)) => format!("tenant:{t}/subject:{s}"),
        (None, Some(s)) => format!("subject:{s}"),
        (_, None) => "unauthenticated".to_owned(),
    }
}

impl Auditor for AuditLog {
    /// Within the source's budget ([`AuditOptions::unawaited_per_source`]) and half the queue;
    /// written by the journal's flusher or the writer thread, never by a later call.
    fn note(&self, mut event: AuditEvent) {
        let source = source_of(&event);
        let Some(skipped) = self.budget.admit(&source) else {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if skipped > 0 {
            event.flags.push(format!("skipped-before:{skipped}"));
        }
        if !self.queue_unawaited(event) {
            self.budget.unkeep(&source, skipped);
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record(&self, event: AuditEvent) -> BoxFuture<'static, Result<(), AuditUnavailable>> {
        if let Some(j) = &self.journal {
            // Redacting, hashing and sealing here, on the caller's thread: the work spreads over
            // the runtime's workers instead of queuing behind one writer.
            let json = stored_json(&event, &self.opts.redact, self.opts.hash_key.as_deref());
            return match j.submit(json, false) {
                Ok(batch) => {
                    let j = j.clone();
                    Box::pin(async move { j.wait(batch).await })
                }
                Err(e) => Box::pin(std::future::ready(Err(e))),
            };
        }
        if self.stats.queued.load(Ordering::Relaxed) >= self.opts.max_queue {
            return Box::pin(std::future::ready(Err(AuditUnavailable("the audit queue is full".into()))));
        }
        let durable = self.opts.durability == Durability::Durable;
        let (done, rx) = if durable {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.send(Job::Event { event, done }).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Err(AuditUnavailable("the audit writer stopped".into()))));
        }
        match rx {
            None => Box::pin(std::future::ready(Ok(()))),
            Some(rx) => Box::pin(async move {
                rx.await.unwrap_or_else(|_| Err(AuditUnavailable("the audit writer stopped".into())))
            }),
        }
    }
}

impl Drop for AuditLog {
    /// Closes the queue and waits for the writer to write what is queued and let go of the store
    /// (its writer lock too).
    fn drop(&mut self) {
        self.write_owed();
        if let Some(j) = self.journal.take() {
            j.close();
        }
        if let Some(f) = self.flusher.take() {
            let _ = f.join();
        }
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("place", &self.place).field("durability", &self.opts.durability).finish()
    }
}

struct Writer {
    store: Store,
    rx: mpsc::UnboundedReceiver<Job>,
    tail: (u64, String),
    opts: AuditOptions,
    stats: Arc<AuditStats>,
    /// Every record up to here is durable in the store (read by the journal).
    indexed: Arc<AtomicU64>,
    /// When the store last made a commit synchronously (journal mode).
    synced_at: Instant,
    gather: Gather,
}

/// With a journal, how often the store's commits wait for the disk (then the journal may reuse what
/// they cover).
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// Whether the writer lets a batch gather before writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gather {
    /// No: callers wait for it.
    No,
    /// For 1 ms when the queue is empty (asynchronous durability: nobody waits, and each wake is
    /// a syscall on both sides).
    WhenIdle,
    /// For 10 ms every time (the journal's indexer: the records are durable already, and every
    /// SQLite transaction costs locks, page writes and, now and then, a checkpoint whose syncs
    /// delay the journal's).
    Always,
}

impl Writer {
    fn run(mut self) {
        let mut jobs: Vec<Job> = Vec::with_capacity(self.opts.max_batch);
        while let Some(first) = self.rx.blocking_recv() {
            jobs.push(first);
            match self.gather {
                Gather::No => {}
                Gather::WhenIdle if self.rx.is_empty() => std::thread::sleep(Duration::from_millis(1)),
                Gather::WhenIdle => {}
                Gather::Always => std::thread::sleep(Duration::from_millis(10)),
            }
            while jobs.len() < self.opts.max_batch {
                match self.rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.write(&mut jobs);
        }
    }

    /// Appends a sealed batch. On failure the store is asked where its chain really ends: the
    /// batch may have landed after all (an ambiguous commit), not at all (then one retry), or the
    /// store moved (then the batch fails and the next one seals from the store's real tail, so
    /// the chain never forks).
    fn append(&mut self, records: &[Record], new_tail: &(u64, String)) -> Result<(), StoreError> {
        let Err(first) = self.store.append(records) else { return Ok(()) };
        tracing::error!(error = %first, "audit write failed; checking the store");
        std::thread::sleep(Duration::from_millis(50));
        self.store.recover();
        match self.store.tail() {
            Ok(t) if t == *new_tail => Ok(()),
            Ok(t) if t == self.tail => self.store.append(records).inspect_err(|_| self.store.recover()),
            Ok(t) => {
                tracing::error!(seq = t.0, "the audit store's chain moved under this writer; continuing from it");
                self.tail = t;
                Err(first)
            }
            Err(e) => Err(e),
        }
    }

    /// Appends records sealed and made durable by the journal. They must not be lost, and their
    /// calls have been answered: a failure is retried until it succeeds (the journal refuses new
    /// calls once too many wait), or given up at shutdown (the next start replays them).
    ///
    /// The store commits without waiting for the disk, except every [`SYNC_EVERY`] and when
    /// `sync` (a flush waits): only then does `indexed` move on, so the journal never reuses a
    /// record the store could still lose to a power cut.
    fn index(&mut self, records: Vec<Record>, sync: bool) {
        let Some(last) = records.last() else { return };
        let new_tail = (last.seq, last.hash.clone());
        // Only a commit known to be synchronous may move `indexed` on.
        let sync = (sync || self.synced_at.elapsed() >= SYNC_EVERY)
            && self
                .store
                .sync_commits(true)
                .inspect_err(|e| tracing::error!(error = %e, "audit store: cannot make its next commit synchronous"))
                .is_ok();
        let mut failures = 0u32;
        while let Err(e) = self.append(&records, &new_tail) {
            failures += 1;
            if failures == 1 || failures.is_multiple_of(100) {
                tracing::error!(error = %e, failures, "audit store write failed; the records are safe in the journal, retrying");
            }
            if self.rx.is_closed() && failures >= 20 {
                tracing::error!(
                    "audit store still failing at shutdown; the next start takes the records from the journal"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.tail = new_tail;
        if sync {
            match self.store.sync_commits(false) {
                // The synchronous commit just made covers every earlier one.
                Ok(()) => {
                    self.indexed.store(self.tail.0, Ordering::Relaxed);
                    self.synced_at = Instant::now();
                }
                Err(e) => tracing::error!(error = %e, "audit store: cannot make its commits asynchronous again"),
            }
        }
    }

    fn write(&mut self, jobs: &mut Vec<Job>) {
        let sealed: Vec<Record> = jobs
            .iter_mut()
            .flat_map(|j| match j {
                Job::Sealed(r) => std::mem::take(r),
                Job::Event { .. } => Vec::new(),
            })
            .collect();
        jobs.retain(|j| matches!(j, Job::Event { .. }));
        // With a journal the only events are flush markers: whoever flushes wants the store
        // synced.
        let flushing = !jobs.is_empty();
        if !sealed.is_empty() {
            self.index(sealed, flushing);
        } else if flushing && self.gather == Gather::Always && self.indexed.load(Ordering::Relaxed) < self.tail.0 {
            match self.store.sync() {
                Ok(()) => {
                    self.indexed.store(self.tail.0, Ordering::Relaxed);
                    self.synced_at = Instant::now();
                }
                Err(e) => tracing::error!(error = %e, "audit store: sync failed"),
            }
        }
        if jobs.is_empty() {
            return;
        }
        let mut tail = self.tail.clone();
        let mut records = Vec::with_capacity(jobs.len());
        for job in jobs.iter() {
            let Job::Event { event, .. } = job else { continue };
            if event.kind == "flush" {
                continue;
            }
            let record = chain::seal(&tail, stored_json(event, &self.opts.redact, self.opts.hash_key.as_deref()));
            tail = (record.seq, record.hash.clone());
            records.push(record);
        }
        let started = Instant::now();
        let result = if records.is_empty() { Ok(()) } else { self.append(&records, &tail) };
        let n = jobs.len();
        self.stats.queued.fetch_sub(n, Ordering::Relaxed);
        let outcome = match result {
            Ok(()) => {
                self.tail = tail;
                self.indexed.store(self.tail.0, Ordering::Relaxed);
                self.stats.written.fetch_add(records.len() as u64, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.write_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, events = records.len(), "audit write failed: refusing the batch's results");
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Err(AuditUnavailable(e.to_string()))
            }
        };
        for job in jobs.drain(..) {
            if let Job::Event { done: Some(done), .. } = job {
                let _ = done.send(outcome.clone());
            }
        }
    }
}

/// The event as stored: its fields, then the redacted arguments and the SHA-256 of the original
/// arguments (their canonical JSON: keys sorted).
///
/// Client-chosen text (request id, target, method, ...) is capped first
/// ([`AuditEvent::capped`]): one record never carries megabytes of it.
fn stored_json(event: &AuditEvent, redact: &[String], hash_key: Option<&[u8]>) -> String {
    let mut out = serde_json::to_string(&*event.capped()).unwrap_or_else(|_| "{}".into());
    if let Some(args) = &event.arguments
        && out.ends_with('}')
    {
        let original = serde_json::to_string(args).unwrap_or_default();
        let (field, digest) = match hash_key {
            Some(key) => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
                ("arguments_hmac", chain::hex(aws_lc_rs::hmac::sign(&key, original.as_bytes()).as_ref()))
            }
            None => (
                "arguments_sha256",
                chain::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, original.as_bytes()).as_ref()),
            ),
        };
        out.pop();
        if original.len() > MAX_STORED_ARGUMENTS {
            out.push_str(&format!(",\"arguments_omitted_bytes\":{}", original.len()));
        } else {
            let shown = if needs_redaction(args, redact) { redacted(args, redact).to_string() } else { original };
            out.push_str(",\"arguments\":");
            out.push_str(&shown);
        }
        out.push_str(&format!(",\"{field}\":\"{digest}\"}}"));
    }
    out
}

fn key_matches(key: &str, patterns: &[String]) -> bool {
    // Copies only what has capitals (most keys and patterns have none).
    fn lower(s: &str) -> std::borrow::Cow<'_, str> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) { s.to_ascii_lowercase().into() } else { s.into() }
    }
    let key = lower(key);
    patterns.iter().any(|p| portcullis_engine::policy::glob(&lower(p), &key))
}

/// True when some key at any depth matches a pattern (most arguments need no copy).
fn needs_redaction(args: &Value, patterns: &[String]) -> bool {
    match args {
        Value::Object(map) => map.iter().any(|(k, v)| key_matches(k, patterns) || needs_redaction(v, patterns)),
        Value::Array(items) => items.iter().any(|v| needs_redaction(v, patterns)),
        _ => false,
    }
}

/// `args` with the values of matching keys replaced, at any depth.
pub fn redacted(args: &Value, patterns: &[String]) -> Value {
    match args {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    if key_matches(k, patterns) {
                        (k.clone(), Value::String("[redacted]".into()))
                    } else {
                        (k.clone(), redacted(v, patterns))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redacted(v, patterns)).collect()),
        other => other.clone(),
    }
}

/// Checks the whole chain of `store`, calling `progress(checked, total)` now and then.
pub fn verify(store: &mut Store, progress: &mut dyn FnMut(u64, u64)) -> Result<Result<u64, Break>, StoreError> {
    let total = store.count()?;
    let mut v = Verifier::default();
    let mut broken = None;
    store.scan(&mut |r| {
        if let Err(b) = v.check(&r) {
            broken = Some(b);
            return false;
        }
        if v.checked % 50_000 == 0 {
            progress(v.checked, total);
        }
        true
    })?;
    progress(v.checked, total);
    Ok(match broken {
        Some(b) => Err(b),
        None => Ok(v.checked),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use portcullis_engine::MAX_TEXT;
    use serde_json::json;

    #[test]
    fn redaction_is_deep_and_case_insensitive() {
        let args = json!({ "user": "a", "Password": "p", "nested": { "api_key": "k", "list": [{ "x_token": "t", "ok": 1 }] } });
        let r = redacted(&args, &AuditOptions::default().redact);
        assert_eq!(
            r,
            json!({ "user": "a", "Password": "[redacted]", "nested": { "api_key": "[redacted]", "list": [{ "x_token": "[redacted]", "ok": 1 }] } })
        );
        let mut e = AuditEvent::new("call", None, "tools/call");
        e.arguments = Some(args);
        let stored = stored_json(&e, &AuditOptions::default().redact, None);
        assert!(!stored.contains("\"p\"") && stored.contains("arguments_sha256"), "{stored}");
        let keyed = stored_json(&e, &AuditOptions::default().redact, Some(b"k"));
        assert!(keyed.contains("arguments_hmac") && !keyed.contains("arguments_sha256"), "{keyed}");
        e.arguments = Some(json!({ "blob": "x".repeat(MAX_STORED_ARGUMENTS) }));
        let big = stored_json(&e, &[], None);
        assert!(big.contains("arguments_omitted_bytes") && big.len() < 1000, "{}", big.len());
    }

    #[test]
    fn client_chosen_text_is_capped_with_its_length_and_hash() {
        let mut e = AuditEvent::new("call", None, &"m".repeat(3 << 20));
        e.request_id = Some("i".repeat(2 << 20));
        e.target = Some(format!("{}é", "t".repeat(MAX_TEXT - 1)));
        e.session = Some("s".to_owned());
        let stored = stored_json(&e, &[], None);
        assert!(stored.len() < 4 * MAX_TEXT, "{} bytes stored", stored.len());
        assert!(stored.contains("[2097152 bytes, sha256:") && stored.contains("[3145728 bytes, sha256:"), "{stored}");
        // Cut on a character boundary: the two-byte `é` straddles the cap and is dropped whole.
        let v: Value = serde_json::from_str(&stored).unwrap();
        assert!(v["target"].as_str().unwrap().starts_with(&format!("{}…[1025 bytes", "t".repeat(MAX_TEXT - 1))));
        assert_eq!(v["session"], "s", "short text is kept as it is");
        // Two long values differing only past the cap stay distinguishable.
        let mut other = e.clone();
        other.request_id = Some(format!("{}j", "i".repeat((2 << 20) - 1)));
        assert_ne!(stored_json(&other, &[], None), stored);
    }

    #[tokio::test]
    async fn the_tail_of_a_json_lines_log_is_found_whatever_the_last_record_size() {
        let (dir, path) = fresh("jsonl-long", "audit.jsonl");
        let open = || Store::Jsonl(JsonlStore::open(&path).unwrap());
        let log = AuditLog::start(open(), AuditOptions::default(), "t".into()).unwrap();
        log.record(AuditEvent::new("call", None, "tools/call")).await.unwrap();
        // A record over 1 MiB (written before caps existed, or by another writer), then a blank line.
        let mut e = AuditEvent::new("call", None, "tools/call");
        e.flags = vec!["x".repeat(3 << 20)];
        log.record(e).await.unwrap();
        drop(log);
        std::thread::sleep(Duration::from_millis(50));
        assert!(std::fs::metadata(&path).unwrap().len() > 3 << 20);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"\n").unwrap();
        let log = AuditLog::start(open(), AuditOptions::default(), "t".into()).unwrap();
        log.record(AuditEvent::new("call", None, "tools/call")).await.unwrap();
        drop(log);
        assert_eq!(verify(&mut open(), &mut |_, _| {}).unwrap(), Ok(3), "the chain continues after the long record");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An empty directory of this test's own, and the path of `file` in it.
    pub(crate) fn fresh(test: &str, file: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("portcullis-audit-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file);
        (dir, path)
    }

    #[tokio::test]
    async fn a_torn_json_line_is_dropped_and_one_writer_holds_the_log() {
        let (dir, path) = fresh("jsonl", "audit.jsonl");
        let open = || Store::Jsonl(JsonlStore::open(&path).unwrap());
        let log = AuditLog::start(open(), AuditOptions::default(), "t".into()).unwrap();
        for _ in 0..3 {
            log.record(AuditEvent::new("call", None, "tools/call")).await.unwrap();
        }
        let second = AuditLog::start(open(), AuditOptions::default(), "t".into());
        assert!(second.unwrap_err().to_string().contains("another process"), "one writer per log");
        drop(log);
        std::thread::sleep(Duration::from_millis(50));
        // A crash mid-write leaves half a line (never acknowledged).
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"{\"seq\":4,\"prev_hash\":\"ab").unwrap();
        let log = AuditLog::start(open(), AuditOptions::default(), "t".into()).unwrap();
        log.record(AuditEvent::new("call", None, "tools/call")).await.unwrap();
        drop(log);
        assert_eq!(verify(&mut open(), &mut |_, _| {}).unwrap(), Ok(4));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_deleted_json_lines_file_fails_closed() {
        let (dir, path) = fresh("jsonl-gone", "audit.jsonl");
        let log = AuditLog::start(Store::Jsonl(JsonlStore::open(&path).unwrap()), AuditOptions::default(), "t".into())
            .unwrap();
        log.record(AuditEvent::new("call", None, "tools/call")).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        // The open handle would still accept writes, into a file nobody can read.
        assert!(log.record(AuditEvent::new("call", None, "tools/call")).await.is_err());
        assert!(log.record(AuditEvent::new("call", None, "tools/call")).await.is_err(), "and stays refused");
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn group_commit_seals_a_verifiable_chain() {
        let dir = std::env::temp_dir().join(format!("portcullis-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("audit.db");
        let log =
            AuditLog::start(Store::Sqlite(SqliteStore::open(&path).unwrap()), AuditOptions::default(), "t".into())
                .unwrap();
        let mut waits = Vec::new();
        for i in 0..500 {
            let mut e = AuditEvent::new("call", None, "tools/call");
            e.target = Some(format!("tool-{i}"));
            waits.push(log.record(e));
        }
        for w in waits {
            w.await.unwrap();
        }
        assert!(log.stats().batches.load(Ordering::Relaxed) < 500, "events were grouped");
        drop(log);
        // A second writer continues the same chain.
        let log =
            AuditLog::start(Store::Sqlite(SqliteStore::open(&path).unwrap()), AuditOptions::default(), "t".into())
                .unwrap();
        log.record(AuditEvent::new("call", None, "tools/call")).await.unwrap();
        // Durable in the journal now; in the store once the writer has taken it.
        log.flush().await.unwrap();
        let mut store = Store::Sqlite(SqliteStore::open(&path).unwrap());
        assert_eq!(verify(&mut store, &mut |_, _| {}).unwrap(), Ok(501));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
