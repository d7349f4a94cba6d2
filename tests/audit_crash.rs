//! Durable auditing under a crash: the real binary serves `echo` to concurrent clients and is
//! killed with SIGKILL mid-load, then restarted. After that, every call whose result a client
//! received must have its audit record, and the hash chain must verify.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{BIN, serve};
use portcullis_audit::{Filter, SqliteStore, Store};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_call_has_its_record_after_kill_9() {
    let dir = std::env::temp_dir().join(format!("portcullis-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.join("crash.toml");
    let path = |f: &str| dir.join(f).display().to_string();
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[auth]\ndev_key = {:?}\nrevocation_db = {:?}\n[audit]\npath = {:?}\nhash_key_file = {:?}\n",
            path("key.p8"),
            path("rev.db"),
            path("audit.db"),
            path("audit-hash.key")
        ),
    )
    .unwrap();
    let mut server = serve(&cfg);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new(BIN).args(["token", "--sub", "load", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (http, url, token, received) = (http.clone(), url.clone(), token.clone(), received.clone());
        clients.push(tokio::spawn(async move {
            let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "load", "version": "0" } } });
            let Ok(r) = http.post(&url).bearer_auth(&token).header("accept", "application/json").json(&init).send().await
            else {
                return;
            };
            let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
            for i in 0.. {
                let message = format!("c{c}-{i}");
                let call = json!({ "jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                    "params": { "name": "echo", "arguments": { "message": message } } });
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("accept", "application/json")
                    .header("mcp-session-id", &sid)
                    .header("mcp-protocol-version", "2025-11-25")
                    .json(&call)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(r) = sent else { return };
                let Ok(v) = r.json::<Value>().await else { return };
                if v["result"]["content"][0]["text"] == message.as_str() {
                    received.lock().unwrap().push(message);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.0.kill().unwrap(); // SIGKILL: no shutdown, no flush
    server.0.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let received = received.lock().unwrap().clone();
    eprintln!("{} calls answered before the kill", received.len());
    assert!(received.len() > 50, "too little load to mean anything: {}", received.len());

    // Restart: the server takes back from its journal what the kill kept from the store, before
    // it listens. Once it answers, kill it again and read the store as it is on disk.
    let mut server = serve(&cfg);
    let mut up = false;
    for _ in 0..100 {
        if http.get(format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the server restarts after kill -9");
    server.0.kill().unwrap();
    server.0.wait().unwrap();

    let mut store = Store::Sqlite(SqliteStore::open(&dir.join("audit.db")).unwrap());
    let audited: HashSet<String> = store
        .query(&Filter::default(), usize::MAX, false)
        .unwrap()
        .into_iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.event).ok())
        .filter_map(|e| e["arguments"]["message"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = received.iter().filter(|m| !audited.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered calls have no audit record: {missing:?}",
        missing.len(),
        received.len()
    );
    let out = Command::new(BIN).args(["audit", "verify", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
}
