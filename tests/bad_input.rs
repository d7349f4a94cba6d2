//! Hostile and malformed input over HTTP: each gets a clear status and JSON-RPC error, nothing
//! panics, and no session is created or lost by it. Regression names follow the issue's list.

mod common;

use common::*;
use portcullis_transport::SessionStore;
use serde_json::{Value, json};

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn malformed_and_hostile_bodies_are_refused_clearly() {
    let s = start_with(|o| o.max_json_depth = 32).await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut not_utf8 = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":""#.to_vec();
    not_utf8.extend_from_slice(&[0xff, 0xfe]);
    not_utf8.extend_from_slice(br#""}}"#);
    let cases: Vec<(&str, Vec<u8>, u16, i64)> = vec![
        ("malformed JSON", b"{\"jsonrpc\":\"2.0\",".to_vec(), 400, -32700),
        ("not JSON-RPC: a number", b"42".to_vec(), 400, -32600),
        ("not JSON-RPC: wrong version", br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.to_vec(), 400, -32600),
        ("not JSON-RPC: null id", br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#.to_vec(), 400, -32600),
        ("nesting deeper than the limit", deep.into_bytes(), 400, -32700),
        ("invalid UTF-8", not_utf8, 400, -32700),
        ("empty body", Vec::new(), 400, -32700),
    ];
    for (name, body, status, code) in cases {
        let r = post(&c, &s.url()).header("mcp-session-id", &sid).body(body).send().await.unwrap();
        let (got, v) = error_of(r).await;
        assert_eq!(got, status, "{name}");
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}");
    }
    // The session survived all of it.
    assert_eq!(call(&c, &s.url(), &sid, &rpc(2, "ping", json!({}))).await.status(), 200);
    assert_eq!(s.store.len(), 1);
}

#[tokio::test]
async fn body_over_the_limit_is_413_with_or_without_content_length() {
    let s = start_with(|o| o.max_body_bytes = 1024).await;
    let c = client();
    let big = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping", "params": { "pad": "x".repeat(2000) } });
    let r = post(&c, &s.url()).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    // Chunked, no Content-Length: the limit still holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(vec![b' '; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = post(&c, &s.url()).body(body).send().await.unwrap();
    let (status, v) = error_of(r).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], -32600);
    assert_eq!(s.store.len(), 0, "no session was created");
}

#[tokio::test]
async fn transport_level_refusals() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let ping = rpc(2, "ping", json!({}));

    // Wrong Content-Type → 415.
    let r = c
        .post(s.url())
        .header("content-type", "text/plain")
        .header("mcp-session-id", &sid)
        .body(ping.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Accept allows neither JSON nor SSE → 406.
    let r = c
        .post(s.url())
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .header("mcp-session-id", &sid)
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    // Unknown session → 404; missing session → 400.
    let r = post(&c, &s.url()).header("mcp-session-id", "no-such-session").json(&ping).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = post(&c, &s.url()).json(&ping).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // Unsupported protocol version header → 400; a different supported one is fine.
    let r = post(&c, &s.url())
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "1999-01-01")
        .json(&ping)
        .send()
        .await
        .unwrap();
    let (status, v) = error_of(r).await;
    assert_eq!(status, 400);
    assert_eq!(v["id"], 2, "the error names the request it refuses");
    let r = post(&c, &s.url())
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-03-26")
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Liberal Accept: JSON only, SSE only, */*, none.
    for accept in [Some("application/json"), Some("text/event-stream"), Some("*/*"), None] {
        let mut b = c.post(s.url()).header("content-type", "application/json").header("mcp-session-id", &sid);
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        let r = b.json(&ping).send().await.unwrap();
        assert_eq!(r.status(), 200, "{accept:?}");
        assert!(r.text().await.unwrap().contains("\"result\":{}"), "{accept:?}");
    }
    assert_eq!(s.store.len(), 1, "refusals neither created nor dropped sessions");
}

#[tokio::test]
async fn dns_rebinding_is_refused() {
    let s = start().await;
    let c = client();
    let init = rpc(
        1,
        "initialize",
        json!({ "protocolVersion": LATEST, "capabilities": {}, "clientInfo": { "name": "x", "version": "0" } }),
    );
    let r = post(&c, &s.url()).header("origin", "http://evil.example.com").json(&init).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = post(&c, &s.url()).header("host", "evil.example.com").json(&init).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = post(&c, &s.url()).header("origin", "http://localhost:5173").json(&init).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.store.len(), 1);
}

#[tokio::test]
async fn a_modern_probe_gets_a_prompt_legacy_answer() {
    // Auto-negotiating clients (Python mcp 2.x) probe with 2026-07-28 `server/discover` first. A
    // legacy server answers 4xx with a legacy error so they fall back to initialize.
    let s = start().await;
    let c = client();
    let probe = json!({
        "jsonrpc": "2.0", "id": "probe-1", "method": "server/discover",
        "params": { "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {} } }
    });
    let r = post(&c, &s.url())
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .json(&probe)
        .send()
        .await
        .unwrap();
    let (status, v) = error_of(r).await;
    assert_eq!(status, 400);
    assert_eq!(v["id"], "probe-1");
    assert_eq!(v["error"]["code"], -32600);
    assert!(v["error"]["data"]["supported"].as_array().unwrap().contains(&json!("2025-11-25")));
    // Without the header it is just a request without a session.
    let r = post(&c, &s.url()).json(&probe).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(s.store.len(), 0);
}

#[tokio::test]
async fn tool_argument_errors_are_tool_results_and_unknown_tools_are_protocol_errors() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let v: Value =
        call(&c, &s.url(), &sid, &rpc(2, "tools/call", json!({ "name": "random_number", "arguments": { "min": 1 } })))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(v["result"]["isError"], true);
    assert!(v["result"]["content"][0]["text"].as_str().unwrap().contains("\"max\" is a required property"), "{v}");
    let v: Value = call(
        &c,
        &s.url(),
        &sid,
        &rpc(3, "tools/call", json!({ "name": "random_number", "arguments": { "min": 9, "max": 2 } })),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["result"]["isError"], true);
    let v: Value =
        call(&c, &s.url(), &sid, &rpc(4, "tools/call", json!({ "name": "nope" }))).await.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32602);
    let v: Value =
        call(&c, &s.url(), &sid, &rpc(5, "tools/list", json!({ "cursor": "garbage" }))).await.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32602);
    let v: Value = call(&c, &s.url(), &sid, &rpc(6, "resources/read", json!({ "uri": "portcullis://nope" })))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"]["code"], -32002);
    let v: Value =
        call(&c, &s.url(), &sid, &rpc(7, "logging/setLevel", json!({ "level": "loud" }))).await.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32602);
    let v: Value = call(&c, &s.url(), &sid, &rpc(8, "no/such/method", json!({}))).await.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32601);
}

/// Reads until the server closes the connection (or `within` passes): what it sent.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, within: std::time::Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let s = start_with(|o| o.conn.header_read_timeout = std::time::Duration::from_millis(500)).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let head = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let trickle = async {
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            if tcp.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    // The server closes the connection: the writes start failing.
    assert!(tokio::time::timeout(std::time::Duration::from_secs(3), trickle).await.is_ok(), "still open after 3 s");
    assert!(started.elapsed() >= std::time::Duration::from_millis(400), "{:?}", started.elapsed());
    // An idle keep-alive connection is closed by the same timer.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(read_until_closed(&mut idle, std::time::Duration::from_secs(3)).await.is_some(), "idle kept open");
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_gets_a_clear_503_and_the_rest_go_on() {
    use tokio::io::AsyncWriteExt as _;
    let s = start_with(|o| o.conn.max_connections = 20).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut t = tokio::net::TcpStream::connect(&addr).await.unwrap();
        t.write_all(b"POST /mcp HTTP/1.1\r\n").await.unwrap();
        held.push(t);
    }
    // Give the server time to accept them all.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut over = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let got = read_until_closed(&mut over, std::time::Duration::from_secs(2)).await.expect("answered and closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("too many connections"), "{text}");
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    assert_eq!(call(&c, &s.url(), &sid, &rpc(2, "ping", json!({}))).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_of_5000_connections_does_not_stop_a_real_client() {
    use tokio::io::AsyncWriteExt as _;
    let s = start().await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut slow = Vec::with_capacity(5000);
    for _ in 0..10 {
        let batch = (0..500).map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut t = tokio::net::TcpStream::connect(&addr).await.unwrap();
                t.write_all(b"P").await.unwrap();
                t
            })
        });
        for t in futures_util::future::join_all(batch).await {
            slow.push(t.unwrap());
        }
    }
    assert_eq!(slow.len(), 5000);
    // One more header byte each, as a slowloris sends every few seconds.
    for t in &mut slow {
        t.write_all(b"O").await.unwrap();
    }
    let started = std::time::Instant::now();
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let r =
        call(&c, &s.url(), &sid, &rpc(2, "tools/call", json!({ "name": "echo", "arguments": { "message": "hi" } })))
            .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "hi", "{v}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "served in {:?}", started.elapsed());
    drop(slow);
}
