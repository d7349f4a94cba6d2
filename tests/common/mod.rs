//! Shared helpers for the end-to-end tests: a server on 127.0.0.1:0 with the demo tools plus
//! test-only tools, a small MCP client over reqwest, and (`process`) the real binary started as
//! a child process that is killed when the test ends.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod dev;
pub mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis::Config;
use portcullis::config::RawConfig;
use portcullis_engine::{LogLevel, Registry, Tool, ToolOutput};
use portcullis_transport::{HttpOptions, MemoryStore, SessionStore};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const LATEST: &str = "2025-11-25";

/// A running server; dropping it shuts it down.
pub struct Server {
    pub base: String,
    pub store: Arc<MemoryStore>,
    pub cancelled: Arc<AtomicBool>,
    pub registry: Arc<Registry>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn start() -> Server {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut HttpOptions)) -> Server {
    let config = Config::resolve(RawConfig::unauthenticated()).unwrap();
    let mut http = config.http.clone();
    tweak(&mut http);
    let registry = Arc::new(Registry::new());
    portcullis::demo::register(&registry).unwrap();
    let cancelled = Arc::new(AtomicBool::new(false));
    register_test_tools(&registry, cancelled.clone());
    let engine = portcullis::engine(registry.clone(), &config, "portcullis-test");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let store = Arc::new(MemoryStore::new(http.max_sessions));
    let (tx, rx) = oneshot::channel::<()>();
    let store2: Arc<dyn SessionStore> = store.clone();
    let task = tokio::spawn(portcullis_transport::serve(
        listener,
        engine,
        store2,
        http,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(2),
    ));
    Server { base, store, cancelled, registry, stop: Some(tx), task: Some(task) }
}

fn register_test_tools(r: &Registry, cancelled: Arc<AtomicBool>) {
    r.add_tool(
        Tool::new("chatty", "Logs twice, then answers")
            .handler(|c| async move {
                c.ctx.log(LogLevel::Info, None, json!("one")).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                c.ctx.log(LogLevel::Info, None, json!("two")).await;
                Ok(ToolOutput::text("done"))
            })
            .unwrap(),
    );
    r.add_tool(
        Tool::new("hang", "Waits until cancelled")
            .handler(move |_| {
                let flag = cancelled.clone();
                async move {
                    struct OnDrop(Arc<AtomicBool>);
                    impl Drop for OnDrop {
                        fn drop(&mut self) {
                            self.0.store(true, Ordering::SeqCst);
                        }
                    }
                    let _guard = OnDrop(flag);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(ToolOutput::text("woke"))
                }
            })
            .unwrap(),
    );
    r.add_tool(
        Tool::new("poll", "Closes its stream, then answers")
            .handler(|c| async move {
                c.ctx.log(LogLevel::Info, None, json!("before close")).await;
                c.ctx.close_stream().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(ToolOutput::text("after reconnect"))
            })
            .unwrap(),
    );
    r.add_tool(
        Tool::new("ask", "Asks the client for a sampling completion")
            .handler(|c| async move {
                let r = c.ctx.request("sampling/createMessage", &json!({ "messages": [], "maxTokens": 5 })).await;
                Ok(ToolOutput::text(match r {
                    Ok(v) => format!("client said {}", v["content"]["text"]),
                    Err(e) => format!("error {}", e.code),
                }))
            })
            .unwrap(),
    );
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

pub fn rpc(id: u64, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

pub fn post(c: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    c.post(url).header("content-type", "application/json").header("accept", "application/json, text/event-stream")
}

/// Initializes a session at `version`; returns its id.
pub async fn initialize(c: &reqwest::Client, url: &str, version: &str) -> String {
    let params = json!({
        "protocolVersion": version,
        "capabilities": { "sampling": {} },
        "clientInfo": { "name": "test", "version": "0" }
    });
    let resp = post(c, url).json(&rpc(1, "initialize", params)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let sid = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["protocolVersion"], version);
    let resp = post(c, url)
        .header("mcp-session-id", &sid)
        .json(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    sid
}

/// Sends a request on a session and returns the HTTP response.
pub async fn call(c: &reqwest::Client, url: &str, sid: &str, body: &Value) -> reqwest::Response {
    post(c, url).header("mcp-session-id", sid).header("mcp-protocol-version", LATEST).json(body).send().await.unwrap()
}

/// Parses an SSE body into (id, data) events, skipping comments.
pub fn sse_events(text: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut id = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push(v);
            }
        }
        if id.is_some() || !data.is_empty() {
            out.push((id, data.join("\n")));
        }
    }
    out
}
