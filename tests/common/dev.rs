//! A real `[auth] mode = "dev"` server in-process (the embedded default's mode), with its state in
//! a scratch directory, and the client steps the dev authorization server and MCP tests share.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use portcullis::Config;
use portcullis::config::RawConfig;
use portcullis_engine::Registry;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const REDIRECT: &str = "http://127.0.0.1:3000/callback";

pub struct Dev {
    pub base: String,
    pub dir: std::path::PathBuf,
    pub http: reqwest::Client,
    /// The audit trail (SQLite in `dir`), unless the test turned it off.
    pub audit: Option<Arc<portcullis_audit::AuditLog>>,
    _stop: oneshot::Sender<()>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn start() -> Dev {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut RawConfig)) -> Dev {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("portcullis-devas-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut raw = RawConfig::default().listening_on(addr);
    raw.auth.dev_key = dir.join("key.p8");
    raw.auth.revocation_db = dir.join("rev.db");
    raw.audit.path = dir.join("audit.db");
    raw.audit.hash_key_file = dir.join("audit-hash.key");
    tweak(&mut raw);
    let config = Config::resolve(raw).unwrap();
    let registry = Arc::new(Registry::new());
    portcullis::demo::register(&registry).unwrap();
    if config.demo_team {
        portcullis::demo::register_team(&registry).unwrap();
    }
    let portcullis::Assembled { engine, http: http_opts, audit } =
        portcullis::assemble(registry, &config, "dev-as-test").unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(portcullis::serve_http_until(listener, engine, http_opts, Duration::from_secs(1), async {
        let _ = rx.await;
    }));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Dev { base: format!("http://{addr}"), dir, http, audit, _stop: tx }
}

pub fn pkce() -> (String, String) {
    let verifier = format!("v{}", "x".repeat(50));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

impl Dev {
    pub fn resource(&self) -> String {
        format!("{}/mcp", self.base)
    }

    pub async fn register(&self, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}/register", self.base)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn public_client(&self) -> String {
        let (status, c) = self
            .register(json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"], "client_name": "test" }))
            .await;
        assert_eq!(status, 201, "{c}");
        assert!(c.get("client_secret").is_none());
        c["client_id"].as_str().unwrap().to_owned()
    }

    /// GET /authorize; returns the status and the redirect's query parameters.
    pub async fn authorize(&self, params: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
        let r = self.http.get(format!("{}/authorize", self.base)).query(params).send().await.unwrap();
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        let query = location
            .map(|l| {
                url::Url::parse(&l).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
            })
            .unwrap_or_default();
        (status, query)
    }

    pub async fn code(&self, client_id: &str, challenge: &str) -> String {
        let resource = self.resource();
        let (status, q) = self
            .authorize(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("state", "st4te"),
                ("resource", &resource),
            ])
            .await;
        assert_eq!(status, 302);
        assert!(q.contains(&("state".into(), "st4te".into())), "{q:?}");
        assert!(q.contains(&("iss".into(), self.base.clone())), "RFC 9207 iss: {q:?}");
        q.iter().find(|(k, _)| k == "code").map(|(_, v)| v.clone()).unwrap()
    }

    pub async fn token(&self, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/token", self.base)).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(r.headers()["cache-control"], "no-store");
        (status, r.json().await.unwrap())
    }

    pub async fn redeem(&self, client_id: &str, code: &str, verifier: &str) -> (u16, Value) {
        self.token(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier),
                ("client_id", client_id),
            ],
            None,
        )
        .await
    }

    /// A token signed with the dev key, as `portcullis token --scope S --claims '{"roles": R}'` mints.
    pub fn mint(&self, sub: &str, scope: &str, roles: &[&str]) -> String {
        let key = portcullis_auth::DevKey::load_or_create(&self.dir.join("key.p8")).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        key.sign(&json!({ "iss": self.base, "sub": sub, "aud": self.resource(), "exp": now + 60, "iat": now,
            "scope": scope, "roles": roles, "jti": format!("{sub}-{scope}") }))
            .unwrap()
    }

    /// A token like [`Dev::mint`]'s with `extra` claims set over its own (`exp`, `client_id`).
    pub fn mint_with(&self, sub: &str, scope: &str, extra: Value) -> String {
        let key = portcullis_auth::DevKey::load_or_create(&self.dir.join("key.p8")).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let mut claims = json!({ "iss": self.base, "sub": sub, "aud": self.resource(), "exp": now + 60, "iat": now,
            "scope": scope, "jti": format!("{sub}-{scope}-{extra}") });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        key.sign(&claims).unwrap()
    }

    /// `initialize` then one request with the token: the HTTP response of the second.
    pub async fn session_call(&self, token: &str, method: &str, params: Value) -> reqwest::Response {
        let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
        let accept = "application/json, text/event-stream";
        let r = self
            .http
            .post(self.resource())
            .bearer_auth(token)
            .header("accept", accept)
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        self.http
            .post(self.resource())
            .bearer_auth(token)
            .header("accept", accept)
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({ "jsonrpc": "2.0", "id": 2, "method": method, "params": params }))
            .send()
            .await
            .unwrap()
    }

    /// `initialize` with the token: the HTTP status.
    pub async fn mcp(&self, token: &str) -> u16 {
        let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
        self.http
            .post(self.resource())
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}
