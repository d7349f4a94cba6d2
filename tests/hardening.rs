//! What one client must not be able to do to everyone else: refusals nobody waits for (step-up
//! denials in a batch, bad tokens, rate-limit hits) never wedge the audit trail, and the records
//! they leave are bounded per source and drain on their own. No test here calls `flush()` before
//! the call it checks: a real client gets no flush either.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::dev::*;
use portcullis::config::RawConfig;
use portcullis_audit::{Filter, SqliteStore, Store};
use serde_json::{Value, json};

const ACCEPT: &str = "application/json, text/event-stream";

/// `initialize` at `version` with `token`; the session id.
async fn open(d: &Dev, token: &str, version: &str) -> String {
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": version, "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let r = d.http.post(d.resource()).bearer_auth(token).header("accept", ACCEPT).json(&init).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

async fn send(d: &Dev, token: &str, sid: &str, version: &str, body: &Value) -> reqwest::Response {
    d.http
        .post(d.resource())
        .bearer_auth(token)
        .header("accept", ACCEPT)
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", version)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn echo(id: u64) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": { "name": "echo", "arguments": { "message": "hi" } } })
}

/// Another user's ordinary call, on a session of its own: it must be answered, within 1 s.
async fn another_user_is_served(d: &Dev) {
    let alice = d.mint("alice", "mcp:tools", &[]);
    let started = Instant::now();
    let sid = open(d, &alice, "2025-11-25").await;
    let r = send(d, &alice, &sid, "2025-11-25", &echo(2)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "hi", "{v}");
    assert!(started.elapsed() < Duration::from_secs(1), "served in {:?}", started.elapsed());
}

fn store(d: &Dev) -> Store {
    Store::Sqlite(SqliteStore::open(&d.dir.join("audit.db")).unwrap())
}

/// Every stored event; the chain verified first.
async fn verified_events(d: &Dev) -> Vec<Value> {
    d.audit.as_ref().unwrap().flush().await.unwrap();
    let mut s = store(d);
    let n = portcullis_audit::verify(&mut s, &mut |_, _| {}).unwrap().expect("the chain verifies");
    let events: Vec<Value> = s
        .query(&Filter::default(), 1_000_000, false)
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_str(&r.event).unwrap())
        .collect();
    assert_eq!(events.len() as u64, n);
    events
}

/// The events of `kind` for `subject` (any subject: `None`), and how many they stand for: each
/// record plus the `skipped-before:N` it carries.
fn counted(events: &[Value], kind: &str, subject: Option<&str>) -> (usize, u64) {
    let mine: Vec<&Value> =
        events.iter().filter(|e| e["kind"] == kind && subject.is_none_or(|s| e["subject"] == s)).collect();
    let skipped: u64 = mine
        .iter()
        .flat_map(|e| e["flags"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str()?.strip_prefix("skipped-before:")?.parse::<u64>().ok())
        .sum();
    (mine.len(), mine.len() as u64 + skipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_step_up_denials_does_not_wedge_the_audit_trail() {
    // The batch cap is raised so that all 20,000 reach the policy (the default refuses the batch).
    let d = start_with(|raw| raw.server.max_batch_items = 20_000).await;
    let mallory = d.mint("mallory", "", &[]);
    let sid = open(&d, &mallory, "2025-03-26").await;
    let batch: Vec<Value> = (0..20_000).map(|i| echo(10 + i)).collect();
    let r = send(&d, &mallory, &sid, "2025-03-26", &Value::Array(batch)).await;
    assert_eq!(r.status(), 200);
    let answers: Vec<Value> = r.json().await.unwrap();
    assert_eq!(answers.len(), 20_000);
    assert!(answers.iter().all(|a| a["error"]["code"] == -32003), "{}", answers[0]);

    another_user_is_served(&d).await;

    // One more denial a second later carries the count of the ones skipped before it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = send(&d, &mallory, &sid, "2025-03-26", &echo(1)).await;
    assert_eq!(r.status(), 403);
    let events = verified_events(&d).await;
    let (records, stands_for) = counted(&events, "denial", Some("mallory"));
    assert!(records <= 201, "bounded per principal: {records} records");
    assert_eq!(stands_for, 20_001, "every denial is counted");
    assert_eq!(counted(&events, "call", Some("alice")).0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_tokens_on_an_idle_server_drains_on_its_own() {
    // A small queue: on a wedging journal, 2 s of bad tokens fill it.
    let d = start_with(|raw| raw.audit.max_queue = 150).await;
    let flood_until = Instant::now() + Duration::from_millis(2500);
    let mut floods = Vec::new();
    for _ in 0..4 {
        let (http, url) = (d.http.clone(), d.resource());
        floods.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < flood_until {
                let r = http.post(&url).bearer_auth("not.a.token").header("accept", ACCEPT).body("{}").send();
                assert_eq!(r.await.unwrap().status(), 401);
                n += 1;
            }
            n
        }));
    }
    let mut sent = 0;
    for f in floods {
        sent += f.await.unwrap();
    }
    assert!(sent > 400, "a flood: {sent}");
    another_user_is_served(&d).await;
    let events = verified_events(&d).await;
    let (records, _) = counted(&events, "auth-failure", None);
    assert!((150..=400).contains(&records), "about 100 a second were written, the rest counted: {records}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_rate_limit_refusals_drains_on_its_own() {
    let limits = r#"
        [[limits.rules]]
        name = "echo"
        tools = ["echo"]
        limits = [{ per = ["subject"], max = 1, window = "1h" }]
    "#;
    let d = start_with(|raw| {
        raw.audit.max_queue = 150;
        raw.limits = RawConfig::parse(limits, "test").unwrap().limits;
    })
    .await;
    let mallory = d.mint("mallory", "mcp:tools", &[]);
    let sid = open(&d, &mallory, "2025-11-25").await;
    let (mut ok, mut limited) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        match send(&d, &mallory, &sid, "2025-11-25", &echo(3)).await.status().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("status {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert!(limited > 300, "a flood: {limited}");
    another_user_is_served(&d).await;
    let events = verified_events(&d).await;
    let (records, _) = counted(&events, "rate-limited", Some("mallory"));
    assert!(records <= 400, "bounded per principal: {records}");
}

#[tokio::test]
async fn a_batch_over_the_cap_is_refused_whole_before_any_of_it_runs() {
    let d = start().await;
    let alice = d.mint("alice", "mcp:tools", &[]);
    let sid = open(&d, &alice, "2025-03-26").await;
    let batch = |n: u64| Value::Array((0..n).map(|i| echo(10 + i)).collect());
    let r = send(&d, &alice, &sid, "2025-03-26", &batch(101)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("at most 100"), "{v}");
    let r = send(&d, &alice, &sid, "2025-03-26", &batch(100)).await;
    assert_eq!(r.status(), 200);
    let answers: Vec<Value> = r.json().await.unwrap();
    assert_eq!(answers.len(), 100);
    let events = verified_events(&d).await;
    assert_eq!(counted(&events, "call", Some("alice")).0, 100, "nothing of the refused batch ran");
}

#[tokio::test]
async fn unusable_targets_are_counted_under_one_key_per_principal() {
    let limits = r#"
        [[limits.rules]]
        name = "any"
        tools = ["*"]
        limits = [{ per = ["subject", "tool"], max = 20, window = "1h" }]
    "#;
    let d = start_with(|raw| {
        raw.limits = RawConfig::parse(limits, "test").unwrap().limits;
        let viewer = portcullis::config::PolicyTargets {
            name: "viewer".into(),
            tools: vec!["echo".into()],
            resources: vec![],
            prompts: vec![],
        };
        raw.policy.roles = vec![viewer];
    })
    .await;
    let mallory = d.mint("mallory", "mcp:tools", &["viewer"]);
    let sid = open(&d, &mallory, "2025-11-25").await;
    let call = |id: u64, name: &str| json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": { "name": name, "arguments": {} } });
    // Random names and a hidden tool (get_time) share one counter: 20 answers, then 429s.
    let mut codes = Vec::new();
    for i in 0..60u64 {
        let name = if i % 3 == 0 { "get_time".to_owned() } else { format!("nope-{i}") };
        let r = send(&d, &mallory, &sid, "2025-11-25", &call(100 + i, &name)).await;
        codes.push(r.status().as_u16());
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            assert!(v["error"]["message"].as_str().unwrap().starts_with("unknown tool"), "{v}");
        }
    }
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 20, "{codes:?}");
    assert!(codes[20..].iter().all(|&c| c == 429), "{codes:?}");
    // The usable tool has its own counter, untouched.
    let r = send(&d, &mallory, &sid, "2025-11-25", &echo(7)).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "hi", "{v}");
    let events = verified_events(&d).await;
    let answered = events.iter().filter(|e| e["subject"] == "mallory" && e["kind"] != "rate-limited").count();
    assert_eq!(answered, 21, "20 unknown or hidden, then echo");
}

/// A legacy HTTP+SSE stream opened over a socket with a small receive buffer, its session id,
/// and the socket, which the caller then never reads.
async fn legacy_stream(d: &Dev, token: &str) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = d.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    let head = format!(
        "GET /sse HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(at) = text.find("sessionId=")
            && let Some(end) = text[at..].find('\n')
        {
            return (text[at + 10..at + end].trim().to_owned(), tcp);
        }
    }
}

async fn post_legacy(d: &Dev, token: &str, sid: &str, body: &Value) -> reqwest::Response {
    d.http.post(format!("{}/message?sessionId={sid}", d.base)).bearer_auth(token).json(body).send().await.unwrap()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_client_that_never_reads_its_stream_holds_a_bounded_backlog() {
    let d = start().await;
    let mallory = d.mint("mallory", "mcp:tools", &[]);
    let (sid, _unread) = legacy_stream(&d, &mallory).await;
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    assert_eq!(post_legacy(&d, &mallory, &sid, &init).await.status(), 202);
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    assert_eq!(post_legacy(&d, &mallory, &sid, &initialized).await.status(), 202);
    let before = rss_kib();
    // 100,000 calls, 16 at a time, each answer over 1 KiB, none of them read.
    let big = json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": { "name": "echo", "arguments": { "message": "m".repeat(1024) } } });
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, url, token, body, posts) = (
            d.http.clone(),
            format!("{}/message?sessionId={sid}", d.base),
            mallory.clone(),
            big.clone(),
            posts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (0u64, 0u64);
            while posts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 100_000 {
                let r = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
                match r.status().as_u16() {
                    202 => accepted += 1,
                    429 => {
                        assert_eq!(r.headers()["retry-after"], "1");
                        refused += 1;
                    }
                    other => panic!("status {other}"),
                }
            }
            (accepted, refused)
        }));
    }
    another_user_is_served(&d).await;
    let (mut accepted, mut refused) = (0, 0);
    for t in tasks {
        let (a, r) = t.await.unwrap();
        (accepted, refused) = (accepted + a, refused + r);
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert_eq!(accepted + refused, 100_000);
    // What the socket buffers took, plus the 128 answers in flight; the rest refused.
    assert!(accepted < 20_000, "accepted {accepted}, refused {refused}");
    assert!(grown_mib < 50, "the server grew by {grown_mib} MiB holding answers nobody reads");
    another_user_is_served(&d).await;
    eprintln!("never-read legacy stream: {accepted} accepted, {refused} refused (429), RSS +{grown_mib} MiB");
}

#[tokio::test]
async fn legacy_sessions_count_against_the_same_session_limits() {
    let d = start_with(|raw| raw.sessions.max_per_principal = 2).await;
    let alice = d.mint("alice", "mcp:tools", &[]);
    open(&d, &alice, "2025-11-25").await;
    let (_sid, legacy) = legacy_stream(&d, &alice).await;
    // A third session of either transport is refused.
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let r = d.http.post(d.resource()).bearer_auth(&alice).header("accept", ACCEPT).json(&init).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let r = d.http.get(format!("{}/sse", d.base)).bearer_auth(&alice).header("accept", "text/event-stream");
    assert_eq!(r.send().await.unwrap().status(), 429);
    // Another user is not affected.
    open(&d, &d.mint("bob", "mcp:tools", &[]), "2025-11-25").await;
    // Closing the legacy stream gives its seat back.
    drop(legacy);
    let started = Instant::now();
    loop {
        let r =
            d.http.post(d.resource()).bearer_auth(&alice).header("accept", ACCEPT).json(&init).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the seat came back: {}", r.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The standalone GET stream of `sid`.
async fn get_stream(d: &Dev, token: &str, sid: &str) -> reqwest::Response {
    let r = d
        .http
        .get(d.resource())
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

/// True when the body of `r` ends within `within`.
async fn ends_within(r: &mut reqwest::Response, within: Duration) -> bool {
    tokio::time::timeout(within, async { while let Ok(Some(_)) = r.chunk().await {} }).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_close_at_the_next_keepalive_once_their_token_is_revoked_or_expired() {
    let d = start_with(|raw| raw.sessions.sse_keepalive = Duration::from_millis(200)).await;
    // Revoked: the stream lives on keep-alives, then ends at the first one after the revocation.
    let alice = d.mint("alice", "mcp:tools", &[]);
    let sid = open(&d, &alice, "2025-11-25").await;
    let mut stream = get_stream(&d, &alice, &sid).await;
    assert!(!ends_within(&mut stream, Duration::from_millis(700)).await, "alive while the token holds");
    let admin = d.mint("root", "portcullis:admin", &[]);
    let r = d.http.post(format!("{}/admin/revocations", d.base)).bearer_auth(&admin).json(&json!({ "sub": "alice" }));
    assert_eq!(r.send().await.unwrap().status(), 204);
    assert!(ends_within(&mut stream, Duration::from_secs(1)).await, "closed after the revocation");

    // Expired: a token still inside the issuer's 30 s leeway, for two more seconds.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let bob = d.mint_with("bob", "mcp:tools", json!({ "exp": now - 28 }));
    let sid = open(&d, &bob, "2025-11-25").await;
    let mut stream = get_stream(&d, &bob, &sid).await;
    let (_lsid, mut legacy) = legacy_stream(&d, &bob).await;
    assert!(ends_within(&mut stream, Duration::from_secs(5)).await, "the GET stream closed at expiry");
    // The body ends (its last chunk), or the connection closes.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = legacy.read(&mut buf).await
            && n > 0
        {
            seen.extend_from_slice(&buf[..n]);
            if seen.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    });
    assert!(closed.await.is_ok(), "the legacy stream closed at expiry");
}

#[tokio::test]
async fn an_attached_stream_does_not_keep_an_idle_session_alive() {
    let d = start_with(|raw| {
        raw.sessions.sse_keepalive = Duration::from_millis(100);
        raw.sessions.idle_ttl = Duration::from_secs(1);
    })
    .await;
    let alice = d.mint("alice", "mcp:tools", &[]);
    let sid = open(&d, &alice, "2025-11-25").await;
    let mut stream = get_stream(&d, &alice, &sid).await;
    // Keep-alives flow, but no request comes: the session expires and its stream ends.
    assert!(ends_within(&mut stream, Duration::from_secs(4)).await, "the stream ended with its session");
    assert_eq!(send(&d, &alice, &sid, "2025-11-25", &echo(5)).await.status(), 404);
}

#[tokio::test]
async fn the_session_cap_counts_the_user_not_each_oauth_client() {
    let d = start_with(|raw| raw.sessions.max_per_principal = 2).await;
    let by = |client: &str| d.mint_with("alice", "mcp:tools", json!({ "client_id": client }));
    open(&d, &by("c1"), "2025-11-25").await;
    open(&d, &by("c2"), "2025-11-25").await;
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let r = d.http.post(d.resource()).bearer_auth(by("c3")).header("accept", ACCEPT).json(&init).send().await.unwrap();
    assert_eq!(r.status(), 429, "a third OAuth client of the same user");
}

#[tokio::test]
async fn in_dev_mode_a_request_through_a_proxy_is_refused_with_the_reason() {
    let d = start().await;
    let alice = d.mint("alice", "mcp:tools", &[]);
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    for (name, value) in [("x-forwarded-for", "203.0.113.7"), ("forwarded", "for=203.0.113.7"), ("via", "1.1 proxy")] {
        let r = d.http.post(d.resource()).bearer_auth(&alice).header("accept", ACCEPT).header(name, value);
        let r = r.json(&init).send().await.unwrap();
        assert_eq!(r.status(), 403, "{name}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("through a proxy"), "{v}");
        // The dev authorization server's routes too.
        let r = d.http.get(format!("{}/.well-known/oauth-authorization-server", d.base)).header(name, value);
        assert_eq!(r.send().await.unwrap().status(), 403, "{name}");
    }
    open(&d, &alice, "2025-11-25").await;
}
