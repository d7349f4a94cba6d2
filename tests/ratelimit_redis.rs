//! Two Portcullis processes share one rate limit through the real Redis at 127.0.0.1:6379: calls
//! spread over both are allowed exactly as often as the limit says, not twice as often.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::process::serve;
use serde_json::{Value, json};

async fn session(http: &reqwest::Client, url: &str) -> String {
    let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    for _ in 0..100 {
        if let Ok(r) = http.post(url).header("accept", "application/json").json(&init).send().await {
            return r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_limit() {
    let redis = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("this test needs Redis on 127.0.0.1:6379 (apt-get install redis-server): {e}"));
    let prefix =
        format!("portcullis:test:rl:{}:{}:", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    let dir = std::env::temp_dir().join(format!("portcullis-rl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for n in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = dir.join(format!("p{n}.toml"));
        // One global counter: 12 calls per hour, i.e. no refill during the test.
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[auth]\nmode = \"off\"\n[audit]\nsink = \"off\"\n\
                 [limits]\nredis = \"redis://127.0.0.1:6379/0\"\nredis_key_prefix = {prefix:?}\n\
                 [[limits.rules]]\nname = \"shared\"\ntools = [\"echo\"]\nbackend = \"redis\"\n\
                 limits = [{{ max = 12, window = \"1h\" }}]\n"
            ),
        )
        .unwrap();
        servers.push(serve(&cfg));
        urls.push(format!("http://127.0.0.1:{port}/mcp"));
    }
    let http = reqwest::Client::new();
    let mut calls = Vec::new();
    for url in &urls {
        let sid = session(&http, url).await;
        for i in 0..20 {
            let (http, url, sid) = (http.clone(), url.clone(), sid.clone());
            calls.push(tokio::spawn(async move {
                let body = json!({ "jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                    "params": { "name": "echo", "arguments": { "message": "x" } } });
                let r = http
                    .post(&url)
                    .header("accept", "application/json")
                    .header("mcp-session-id", sid)
                    .header("mcp-protocol-version", "2025-11-25")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap();
                (status, v)
            }));
        }
    }
    let mut allowed = 0;
    let mut limited = 0;
    for c in calls {
        match c.await.unwrap() {
            (200, v) if v["result"].is_object() => allowed += 1,
            (429, v) if v["error"]["code"] == -32004 => limited += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((allowed, limited), (12, 28), "40 calls over two processes against one limit of 12");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    for k in keys {
        let _: i64 = redis::cmd("DEL").arg(k).query_async(&mut conn).await.unwrap();
    }
    drop(servers);
    std::fs::remove_dir_all(&dir).unwrap();
}
