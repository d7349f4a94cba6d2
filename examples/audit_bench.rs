//! The audit sink's sustained throughput: N events through the real writer into a fresh SQLite
//! file, asynchronous (the writer's capacity) and then durable with 256 concurrent callers (what
//! group commit gives a loaded server). Prints one JSON line.
//! Usage: `cargo run --release --example audit_bench -- [N] [PATH]`

use std::time::Instant;

use portcullis_audit::{AuditLog, AuditOptions, Durability, SqliteStore, Store};
use portcullis_engine::{AuditEvent, Auditor};
use serde_json::json;

fn event(i: usize) -> AuditEvent {
    let mut e = AuditEvent::new("call", None, "tools/call");
    e.subject = Some("bench".into());
    e.target = Some("echo".into());
    e.request_id = Some(i.to_string());
    e.arguments = Some(json!({ "message": "hello" }));
    e.outcome = "ok".into();
    e.decision = "allow";
    e.latency_us = 42;
    e
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(500_000), |s| s.parse())?;
    let path = std::path::PathBuf::from(args.next().unwrap_or_else(|| "audit-bench.db".into()));
    let _ = std::fs::remove_file(&path);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let opts = |durability| AuditOptions { durability, max_queue: usize::MAX, ..AuditOptions::default() };
    let log = AuditLog::start(Store::Sqlite(SqliteStore::open(&path)?), opts(Durability::Async), "bench".into())?;
    let started = Instant::now();
    rt.block_on(async {
        for i in 0..n {
            log.record(event(i)).await.map_err(|e| e.0)?;
        }
        log.flush().await.map_err(|e| e.0)
    })?;
    let async_rate = n as f64 / started.elapsed().as_secs_f64();
    drop(log);
    let log = std::sync::Arc::new(AuditLog::start(
        Store::Sqlite(SqliteStore::open(&path)?),
        opts(Durability::Durable),
        "bench".into(),
    )?);
    let durable_n = n / 5;
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..256 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in (t..durable_n).step_by(256) {
                    log.record(event(i)).await.map_err(|e| e.0)?;
                }
                Ok::<_, String>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok::<_, String>(())
    })?;
    let durable_rate = durable_n as f64 / started.elapsed().as_secs_f64();
    let stats = log.stats();
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{{\"audit_sink\":\"sqlite\",\"events_async\":{n},\"async_events_per_s\":{async_rate:.0},\"events_durable\":{durable_n},\"durable_events_per_s_256_callers\":{durable_rate:.0},\"durable_batches\":{batches}}}"
    );
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("db-wal"));
    let _ = std::fs::remove_file(path.with_extension("db-shm"));
    Ok(())
}
