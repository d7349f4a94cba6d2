//! End-to-end tests of Streamable HTTP against a real listener: the lifecycle, SSE upgrade,
//! resumption, cancellation, batching rules and session limits.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use portcullis_transport::SessionStore;
use serde_json::{Value, json};

#[tokio::test]
async fn lifecycle_call_and_delete_then_404() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let r =
        call(&c, &s.url(), &sid, &rpc(2, "tools/call", json!({ "name": "echo", "arguments": { "message": "hi" } })))
            .await;
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "hi");
    assert_eq!(s.store.len(), 1);

    let r = c.delete(s.url()).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.store.len(), 0);
    let r = call(&c, &s.url(), &sid, &rpc(3, "ping", json!({}))).await;
    assert_eq!(r.status(), 404);
    let r = c.delete(s.url()).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn versions_are_negotiated() {
    let s = start().await;
    let c = client();
    for v in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        initialize(&c, &s.url(), v).await;
    }
    // An unknown version gets our latest.
    let params =
        json!({ "protocolVersion": "2099-01-01", "capabilities": {}, "clientInfo": { "name": "x", "version": "0" } });
    let v: Value = post(&c, &s.url()).json(&rpc(1, "initialize", params)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["result"]["protocolVersion"], LATEST);
}

#[tokio::test]
async fn a_handler_that_emits_first_answers_with_sse() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let r = call(&c, &s.url(), &sid, &rpc(7, "tools/call", json!({ "name": "chatty" }))).await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["x-accel-buffering"], "no");
    let events = sse_events(&r.text().await.unwrap());
    // Priming event (id, empty data), two log messages, then the result.
    assert_eq!(events[0].1, "");
    let ids: Vec<_> = events.iter().map(|e| e.0.clone().unwrap()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique);
    let msgs: Vec<Value> = events[1..].iter().map(|e| serde_json::from_str(&e.1).unwrap()).collect();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0]["method"], "notifications/message");
    assert_eq!(msgs[1]["params"]["data"], "two");
    assert_eq!(msgs[2]["id"], 7);
    assert_eq!(msgs[2]["result"]["content"][0]["text"], "done");
}

#[tokio::test]
async fn json_only_clients_get_json_even_from_chatty_handlers() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let r = c
        .post(s.url())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-session-id", &sid)
        .json(&rpc(7, "tools/call", json!({ "name": "chatty" })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "done");
}

#[tokio::test]
async fn a_closed_stream_resumes_with_last_event_id() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let r = call(&c, &s.url(), &sid, &rpc(9, "tools/call", json!({ "name": "poll" }))).await;
    let first = sse_events(&r.text().await.unwrap());
    assert!(first.iter().all(|(_, d)| !d.contains("after reconnect")), "{first:?}");
    let last_id = first.last().unwrap().0.clone().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = c
        .get(s.url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rest = sse_events(&r.text().await.unwrap());
    let result: Value = serde_json::from_str(&rest.last().unwrap().1).unwrap();
    assert_eq!(result["id"], 9);
    assert_eq!(result["result"]["content"][0]["text"], "after reconnect");
    // Nothing replayed twice.
    assert!(rest.iter().all(|(id, _)| id.as_deref() != Some(last_id.as_str())));
}

#[tokio::test]
async fn cancellation_stops_the_handler_and_a_disconnect_does_not() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;

    // A disconnect (client timeout) leaves the handler running.
    let short = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let timed_out = post(&short, &s.url())
        .header("mcp-session-id", &sid)
        .json(&rpc(20, "tools/call", json!({ "name": "hang" })))
        .send()
        .await;
    assert!(timed_out.is_err(), "the client gave up before the handler finished");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!s.cancelled.load(Ordering::SeqCst), "a disconnect must not cancel the handler");

    // notifications/cancelled stops it.
    let note = json!({ "jsonrpc": "2.0", "method": "notifications/cancelled", "params": { "requestId": 20, "reason": "test" } });
    assert_eq!(call(&c, &s.url(), &sid, &note).await.status(), 202);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.cancelled.load(Ordering::SeqCst), "cancellation must stop the handler");
}

#[tokio::test]
async fn server_to_client_requests_round_trip() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let url = s.url();
    let c2 = c.clone();
    let sid2 = sid.clone();
    let pending = tokio::spawn(async move {
        let r = call(&c2, &url, &sid2, &rpc(30, "tools/call", json!({ "name": "ask" }))).await;
        r.text().await.unwrap()
    });
    // Read the request off the stream as it arrives: find it by polling the resumable stream.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = json!({ "jsonrpc": "2.0", "id": 0, "result": { "role": "assistant", "content": { "type": "text", "text": "yes" }, "model": "m" } });
    assert_eq!(call(&c, &s.url(), &sid, &answer).await.status(), 202);
    let text = pending.await.unwrap();
    let events = sse_events(&text);
    let req: Value = serde_json::from_str(&events[1].1).unwrap();
    assert_eq!(req["method"], "sampling/createMessage");
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(last["result"]["content"][0]["text"], "client said \"yes\"");
}

#[tokio::test]
async fn batches_only_on_2025_03_26_sessions() {
    let s = start().await;
    let c = client();
    let batch = json!([rpc(2, "ping", json!({})), { "jsonrpc": "2.0", "method": "notifications/initialized" }, rpc(3, "tools/list", json!({}))]);
    let old = initialize(&c, &s.url(), "2025-03-26").await;
    let r = post(&c, &s.url()).header("mcp-session-id", &old).json(&batch).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let new = initialize(&c, &s.url(), LATEST).await;
    let r = post(&c, &s.url()).header("mcp-session-id", &new).json(&batch).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32600);
}

#[tokio::test]
async fn the_session_limit_and_idle_expiry_hold() {
    let s = start_with(|o| {
        o.max_sessions = 2;
        o.session_idle_ttl = Duration::from_millis(300);
    })
    .await;
    let c = client();
    let a = initialize(&c, &s.url(), LATEST).await;
    initialize(&c, &s.url(), LATEST).await;
    let params =
        json!({ "protocolVersion": LATEST, "capabilities": {}, "clientInfo": { "name": "x", "version": "0" } });
    let r = post(&c, &s.url()).json(&rpc(1, "initialize", params)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.store.len(), 0, "idle sessions expire");
    assert_eq!(call(&c, &s.url(), &a, &rpc(2, "ping", json!({}))).await.status(), 404);
}

#[tokio::test]
async fn list_changed_and_resource_updates_reach_the_standalone_stream() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let r2 =
        call(&c, &s.url(), &sid, &rpc(5, "resources/subscribe", json!({ "uri": "portcullis://demo/readme" }))).await;
    assert_eq!(r2.status(), 200);
    let mut r =
        c.get(s.url()).header("accept", "text/event-stream").header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().starts_with("id: 0-0"));

    s.registry.add_tool(
        portcullis_engine::Tool::new("late_tool", "Registered after the session began")
            .handler(|_| async { Ok(portcullis_engine::ToolOutput::text("late")) })
            .unwrap(),
    );
    s.registry.resource_updated("portcullis://demo/readme");
    s.registry.resource_updated("portcullis://not-subscribed");
    let mut seen = String::new();
    while !seen.contains("resources/updated") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.contains("notifications/tools/list_changed"), "{seen}");
    assert!(seen.contains("portcullis://demo/readme") && !seen.contains("not-subscribed"), "{seen}");
    // The new tool is listed.
    let v: Value = call(&c, &s.url(), &sid, &rpc(6, "tools/list", json!({}))).await.json().await.unwrap();
    assert!(v["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "late_tool"));
}

#[tokio::test]
async fn graceful_shutdown_ends_open_streams() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let r = c.get(s.url()).header("accept", "text/event-stream").header("mcp-session-id", &sid).send().await.unwrap();
    let reader = tokio::spawn(async move { r.text().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let done = tokio::time::timeout(Duration::from_secs(5), s.shutdown()).await;
    assert!(done.is_ok(), "shutdown must not hang on an open SSE stream");
    assert!(tokio::time::timeout(Duration::from_secs(5), reader).await.is_ok());
}

#[tokio::test]
async fn legacy_sse_transport_round_trip() {
    let s = start().await;
    let c = client();
    let mut stream = c.get(format!("{}/sse", s.base)).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut buf = String::new();
    while !buf.contains("\n\n") {
        buf.push_str(std::str::from_utf8(&stream.chunk().await.unwrap().unwrap()).unwrap());
    }
    assert!(buf.starts_with("event: endpoint\ndata: /message?sessionId="), "{buf}");
    let endpoint = buf.lines().nth(1).unwrap().trim_start_matches("data: ").to_owned();
    let url = format!("{}{endpoint}", s.base);
    let params =
        json!({ "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": { "name": "x", "version": "0" } });
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .json(&rpc(1, "initialize", params))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .json(&rpc(2, "tools/call", json!({ "name": "echo", "arguments": { "message": "legacy" } })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut text = String::new();
    while !text.contains("legacy") {
        text.push_str(std::str::from_utf8(&stream.chunk().await.unwrap().unwrap()).unwrap());
    }
    assert!(text.contains("event: message"));
    assert!(text.contains("\"protocolVersion\":\"2024-11-05\""));
    // Unknown legacy session → 404.
    let r = c
        .post(format!("{}/message?sessionId=nope", s.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn streams_carry_keepalives_and_every_endpoint_checks_origin() {
    let s = start_with(|o| o.keepalive = Duration::from_millis(100)).await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let mut r =
        c.get(s.url()).header("accept", "text/event-stream").header("mcp-session-id", &sid).send().await.unwrap();
    let mut seen = String::new();
    while !seen.contains(": keepalive") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(r);
    let evil = "http://evil.example.com";
    let get =
        c.get(s.url()).header("origin", evil).header("accept", "text/event-stream").header("mcp-session-id", &sid);
    assert_eq!(get.send().await.unwrap().status(), 403);
    let del = c.delete(s.url()).header("origin", evil).header("mcp-session-id", &sid);
    assert_eq!(del.send().await.unwrap().status(), 403);
    let sse = c.get(format!("{}/sse", s.base)).header("origin", evil).header("accept", "text/event-stream");
    assert_eq!(sse.send().await.unwrap().status(), 403);
    let msg = c
        .post(format!("{}/message?sessionId=x", s.base))
        .header("origin", evil)
        .header("content-type", "application/json");
    assert_eq!(msg.body("{}").send().await.unwrap().status(), 403);
    // The session survived every refused request.
    assert_eq!(call(&c, &s.url(), &sid, &rpc(2, "ping", json!({}))).await.status(), 200);
}

#[tokio::test]
async fn a_request_id_in_flight_cannot_be_reused() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let short = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let hang = rpc(60, "tools/call", json!({ "name": "hang" }));
    let _ = post(&short, &s.url()).header("mcp-session-id", &sid).json(&hang).send().await;
    let v: Value =
        call(&c, &s.url(), &sid, &rpc(60, "tools/call", json!({ "name": "echo", "arguments": { "message": "x" } })))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(v["error"]["code"], -32600, "{v}");
    // Cancelling id 60 still reaches the first request.
    let note = json!({ "jsonrpc": "2.0", "method": "notifications/cancelled", "params": { "requestId": 60 } });
    call(&c, &s.url(), &sid, &note).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.cancelled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_fresh_get_does_not_replay_and_unknown_subscriptions_are_refused() {
    let s = start().await;
    let c = client();
    let sid = initialize(&c, &s.url(), LATEST).await;
    let open = || c.get(s.url()).header("accept", "text/event-stream").header("mcp-session-id", &sid).send();
    let mut first = open().await.unwrap();
    first.chunk().await.unwrap();
    s.registry.add_tool(
        portcullis_engine::Tool::new("t1", "d")
            .handler(|_| async { Ok(portcullis_engine::ToolOutput::text("x")) })
            .unwrap(),
    );
    let mut seen = String::new();
    while !seen.contains("list_changed") {
        seen.push_str(std::str::from_utf8(&first.chunk().await.unwrap().unwrap()).unwrap());
    }
    drop(first);
    // A new GET without Last-Event-ID starts from now: the old notification is not sent again.
    let mut second = open().await.unwrap();
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, second.chunk()).await {
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(got.starts_with("id: 0-"), "the priming event arrives: {got}");
    assert!(!got.contains("list_changed"), "nothing is replayed: {got}");
    let v: Value = call(&c, &s.url(), &sid, &rpc(7, "resources/subscribe", json!({ "uri": "portcullis://nope" })))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"]["code"], -32002);
}
