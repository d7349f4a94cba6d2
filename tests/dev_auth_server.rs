//! The built-in dev authorization server, end to end against a real `[auth] mode = "dev"` server
//! (the embedded default's mode): metadata, dynamic registration, the code flow with PKCE S256,
//! refresh rotation, client credentials, Client ID Metadata Documents, RFC 7009 revocation and the
//! admin revocation API — each refusal checked as well as each success.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine as _;
use portcullis::Config;
use portcullis::config::RawConfig;
use portcullis_engine::Registry;
use serde_json::{Value, json};
use tokio::sync::oneshot;

const REDIRECT: &str = "http://127.0.0.1:3000/callback";

struct Dev {
    base: String,
    dir: std::path::PathBuf,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start() -> Dev {
    start_with(|_| {}).await
}

async fn start_with(tweak: impl FnOnce(&mut RawConfig)) -> Dev {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("portcullis-devas-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut raw = RawConfig::default().listening_on(addr);
    raw.auth.dev_key = dir.join("key.p8");
    raw.auth.revocation_db = dir.join("rev.db");
    tweak(&mut raw);
    let config = Config::resolve(raw).unwrap();
    let registry = std::sync::Arc::new(Registry::new());
    portcullis::demo::register(&registry).unwrap();
    let engine = portcullis::engine(registry, &config, "dev-as-test");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(portcullis::serve_http_until(listener, engine, config.http.clone(), Duration::from_secs(1), async {
        let _ = rx.await;
    }));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Dev { base: format!("http://{addr}"), dir, http, _stop: tx }
}

fn pkce() -> (String, String) {
    let verifier = format!("v{}", "x".repeat(50));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

impl Dev {
    fn resource(&self) -> String {
        format!("{}/mcp", self.base)
    }

    async fn register(&self, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}/register", self.base)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn public_client(&self) -> String {
        let (status, c) = self
            .register(json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"], "client_name": "test" }))
            .await;
        assert_eq!(status, 201, "{c}");
        assert!(c.get("client_secret").is_none());
        c["client_id"].as_str().unwrap().to_owned()
    }

    /// GET /authorize; returns the status and the redirect's query parameters.
    async fn authorize(&self, params: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
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

    async fn code(&self, client_id: &str, challenge: &str) -> String {
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

    async fn token(&self, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/token", self.base)).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(r.headers()["cache-control"], "no-store");
        (status, r.json().await.unwrap())
    }

    async fn redeem(&self, client_id: &str, code: &str, verifier: &str) -> (u16, Value) {
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
    fn mint(&self, sub: &str, scope: &str, roles: &[&str]) -> String {
        let key = portcullis_auth::DevKey::load_or_create(&self.dir.join("key.p8")).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        key.sign(&json!({ "iss": self.base, "sub": sub, "aud": self.resource(), "exp": now + 60, "iat": now,
            "scope": scope, "roles": roles, "jti": format!("{sub}-{scope}") }))
            .unwrap()
    }

    /// `initialize` then one request with the token: the HTTP response of the second.
    async fn session_call(&self, token: &str, method: &str, params: Value) -> reqwest::Response {
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
    async fn mcp(&self, token: &str) -> u16 {
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

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn metadata_and_protected_resource_point_at_each_other() {
    let d = start().await;
    let prm: Value = d
        .http
        .get(format!("{}/.well-known/oauth-protected-resource/mcp", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["resource"], d.resource());
    assert_eq!(prm["authorization_servers"], json!([d.base]));
    let m: Value = d
        .http
        .get(format!("{}/.well-known/oauth-authorization-server", d.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["issuer"], d.base);
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["client_id_metadata_document_supported"], true);
    for key in ["authorization_endpoint", "token_endpoint", "registration_endpoint", "jwks_uri", "revocation_endpoint"]
    {
        assert!(m[key].as_str().unwrap().starts_with(&d.base), "{key}");
    }
    let jwks: Value = d.http.get(m["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    // The same Host check as the MCP endpoint (DNS rebinding).
    let r = d
        .http
        .get(format!("{}/.well-known/oauth-authorization-server", d.base))
        .header("host", "evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn code_flow_with_pkce_then_refresh_rotation() {
    let d = start().await;
    assert_eq!(d.mcp("not-a-token").await, 401);
    let client = d.public_client().await;
    let (verifier, challenge) = pkce();
    let code = d.code(&client, &challenge).await;
    let (status, t) = d.redeem(&client, &code, &verifier).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    let access = t["access_token"].as_str().unwrap().to_owned();
    let c = claims(&access);
    assert_eq!((c["sub"].as_str(), c["aud"].as_str()), (Some("dev"), Some(d.resource().as_str())));
    assert_eq!(c["scope"], "mcp:tools");
    assert_eq!(c["client_id"], client.as_str());
    assert_eq!(d.mcp(&access).await, 200, "the dev server's token opens the MCP endpoint");

    // Rotation: each refresh spends the old token and returns a new one.
    let r1 = t["refresh_token"].as_str().unwrap().to_owned();
    let (status, t2) =
        d.token(&[("grant_type", "refresh_token"), ("refresh_token", &r1), ("client_id", &client)], None).await;
    assert_eq!(status, 200, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let access2 = t2["access_token"].as_str().unwrap().to_owned();
    assert_eq!(d.mcp(&access2).await, 200);
    // Replaying the spent r1 revokes the family: r2 and the access tokens stop working.
    let (status, e) =
        d.token(&[("grant_type", "refresh_token"), ("refresh_token", &r1), ("client_id", &client)], None).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));
    let (status, _) =
        d.token(&[("grant_type", "refresh_token"), ("refresh_token", &r2), ("client_id", &client)], None).await;
    assert_eq!(status, 400, "the family's live refresh token is gone");
    assert_eq!(d.mcp(&access).await, 401);
    assert_eq!(d.mcp(&access2).await, 401);
}

#[tokio::test]
async fn codes_are_single_use_and_bound_to_pkce_client_and_resource() {
    let d = start().await;
    let client = d.public_client().await;
    let (verifier, challenge) = pkce();

    // Wrong verifier: refused, and the code is spent.
    let code = d.code(&client, &challenge).await;
    let (status, e) = d.redeem(&client, &code, &format!("w{}", "y".repeat(50))).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));
    let (status, _) = d.redeem(&client, &code, &verifier).await;
    assert_eq!(status, 400);

    // Replay: the second redemption fails and revokes the first one's token.
    let code = d.code(&client, &challenge).await;
    let (status, t) = d.redeem(&client, &code, &verifier).await;
    assert_eq!(status, 200);
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(d.mcp(&access).await, 200);
    let (status, e) = d.redeem(&client, &code, &verifier).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(d.mcp(&access).await, 401, "a replayed code revokes what it issued");

    // Another client cannot redeem it.
    let other = d.public_client().await;
    let code = d.code(&client, &challenge).await;
    let (status, _) = d.redeem(&other, &code, &verifier).await;
    assert_eq!(status, 400);

    // A resource other than ours.
    let code = d.code(&client, &challenge).await;
    let (status, e) = d
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", &client),
                ("resource", "https://elsewhere.example.com/mcp"),
            ],
            None,
        )
        .await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_target")));
}

#[tokio::test]
async fn authorize_refuses_plain_pkce_and_unregistered_redirects() {
    let d = start().await;
    let client = d.public_client().await;
    let (_, challenge) = pkce();
    let base = [("response_type", "code"), ("client_id", client.as_str()), ("redirect_uri", REDIRECT)];
    let error = |q: &[(String, String)]| q.iter().find(|(k, _)| k == "error").map(|(_, v)| v.clone());

    let (status, q) =
        d.authorize(&[&base[..], &[("code_challenge", &challenge), ("code_challenge_method", "plain")]].concat()).await;
    assert_eq!((status, error(&q).as_deref()), (302, Some("invalid_request")), "plain PKCE refused");
    let (status, q) = d.authorize(&[&base[..], &[("code_challenge", &challenge)]].concat()).await;
    assert_eq!((status, error(&q).as_deref()), (302, Some("invalid_request")), "no method means plain");
    let (status, q) = d.authorize(&base).await;
    assert_eq!((status, error(&q).as_deref()), (302, Some("invalid_request")), "PKCE is mandatory");
    let (status, q) = d
        .authorize(
            &[
                &base[..],
                &[
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                    ("resource", "https://x.example/mcp"),
                ],
            ]
            .concat(),
        )
        .await;
    assert_eq!((status, error(&q).as_deref()), (302, Some("invalid_target")));

    // The redirect target itself is wrong: shown to the user, never redirected.
    for bad in ["http://127.0.0.1:3000/callback/x", "http://127.0.0.1:3000/", "https://evil.example.com/callback"] {
        let (status, q) = d
            .authorize(&[
                ("response_type", "code"),
                ("client_id", &client),
                ("redirect_uri", bad),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
            .await;
        assert_eq!((status, q.len()), (400, 0), "{bad}");
    }
    let (status, _) =
        d.authorize(&[("response_type", "code"), ("client_id", "nobody"), ("redirect_uri", REDIRECT)]).await;
    assert_eq!(status, 400);

    // Registration refuses redirect URIs that are not https or loopback.
    let (status, e) = d.register(json!({ "redirect_uris": ["http://evil.example.com/cb"] })).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_redirect_uri")));
}

#[tokio::test]
async fn client_credentials_for_confidential_clients_only() {
    let d = start().await;
    let (status, e) =
        d.register(json!({ "grant_types": ["client_credentials"], "token_endpoint_auth_method": "none" })).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_client_metadata")));
    let (status, c) = d.register(json!({ "grant_types": ["client_credentials"], "client_name": "ci-bot" })).await;
    assert_eq!(status, 201, "{c}");
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let resource = d.resource();
    let (status, t) = d
        .token(
            &[("grant_type", "client_credentials"), ("scope", "mcp:tools"), ("resource", &resource)],
            Some((id, secret)),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert!(t.get("refresh_token").is_none());
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["sub"], id);
    assert_eq!(d.mcp(access).await, 200);
    let (status, e) = d.token(&[("grant_type", "client_credentials")], Some((id, "wrong"))).await;
    assert_eq!((status, e["error"].as_str()), (401, Some("invalid_client")));
    // The same client may not use the code flow it did not register for.
    let (status, e) = d.token(&[("grant_type", "authorization_code"), ("code", "x")], Some((id, secret))).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("unauthorized_client")));

    // RFC 7009: revoking the access token makes the resource server refuse it.
    let r = d
        .http
        .post(format!("{}/revoke", d.base))
        .basic_auth(id, Some(secret))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(d.mcp(access).await, 401);
}

#[tokio::test]
async fn client_id_metadata_documents() {
    let d = start().await;
    // The client serves its own metadata document; its URL is its client id.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let doc_url = format!("http://{}/oauth/client.json", listener.local_addr().unwrap());
    let doc = json!({ "client_id": doc_url, "client_name": "cimd", "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code"], "token_endpoint_auth_method": "none" });
    let wrong = json!({ "client_id": "https://someone-else.example/client.json", "redirect_uris": [REDIRECT] });
    let app = axum::Router::new()
        .route("/oauth/client.json", axum::routing::get(move || std::future::ready(axum::Json(doc.clone()))))
        .route("/oauth/wrong.json", axum::routing::get(move || std::future::ready(axum::Json(wrong.clone()))));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (verifier, challenge) = pkce();
    let code = d.code(&doc_url, &challenge).await;
    let (status, t) = d.redeem(&doc_url, &code, &verifier).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(d.mcp(t["access_token"].as_str().unwrap()).await, 200);
    // A document whose client_id is not its own URL is refused.
    let wrong_url = doc_url.replace("client.json", "wrong.json");
    let (status, _) = d
        .authorize(&[
            ("response_type", "code"),
            ("client_id", &wrong_url),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn admin_api_revokes_with_the_admin_scope_only() {
    let d = start().await;
    let (_, c) = d.register(json!({ "grant_types": ["client_credentials"] })).await;
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let (_, t) = d.token(&[("grant_type", "client_credentials")], Some((id, secret))).await;
    let user = t["access_token"].as_str().unwrap().to_owned();
    let admin_url = format!("{}/admin/revocations", d.base);

    // Authenticated but without the admin scope (the dev AS never grants it): 403 step-up.
    let r = d.http.post(&admin_url).bearer_auth(&user).json(&json!({ "sub": id })).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("insufficient_scope") && challenge.contains("portcullis:admin"), "{challenge}");
    let r = d.http.post(&admin_url).json(&json!({ "sub": id })).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // An admin token (minted with the dev key, as `portcullis token --scope portcullis:admin` does).
    let key = portcullis_auth::DevKey::load_or_create(&d.dir.join("key.p8")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let admin = key
        .sign(&json!({ "iss": d.base, "sub": "root", "aud": d.resource(), "exp": now + 60, "iat": now,
            "scope": "portcullis:admin", "jti": "admin-1" }))
        .unwrap();
    let r = d.http.post(&admin_url).bearer_auth(&admin).json(&json!({ "nope": id })).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(d.mcp(&user).await, 200);
    let r = d.http.post(&admin_url).bearer_auth(&admin).json(&json!({ "client": id })).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(d.mcp(&user).await, 401, "revoked on the very next request");
}

#[tokio::test]
async fn policy_hides_what_a_role_may_not_use_and_asks_for_missing_scopes() {
    let d = start_with(|raw| {
        let targets = |name: &str, tools: &[&str]| portcullis::config::PolicyTargets {
            name: name.into(),
            tools: tools.iter().map(|t| t.to_string()).collect(),
            resources: vec![],
            prompts: vec![],
        };
        raw.policy.roles = vec![targets("viewer", &["echo"]), targets("ops", &["echo", "get_time"])];
        raw.policy.tool_scopes.insert("get_time".into(), vec!["ops.time".into()]);
    })
    .await;
    let tools = |v: Value| -> Vec<String> {
        v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    };

    // A viewer sees only echo; get_time answers as an unknown tool.
    let viewer = d.mint("vera", "mcp:tools", &["viewer"]);
    let r = d.session_call(&viewer, "tools/list", json!({})).await;
    assert_eq!(tools(r.json().await.unwrap()), ["echo"]);
    let r = d.session_call(&viewer, "tools/call", json!({ "name": "get_time", "arguments": {} })).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_i64(), v["error"]["message"].as_str()),
        (Some(-32602), Some("unknown tool: get_time"))
    );
    let r = d.session_call(&viewer, "tools/call", json!({ "name": "echo", "arguments": { "message": "hi" } })).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "hi", "{v}");

    // No role at all: nothing is listed.
    let nobody = d.mint("nora", "mcp:tools", &[]);
    let r = d.session_call(&nobody, "tools/list", json!({})).await;
    assert!(tools(r.json().await.unwrap()).is_empty());

    // ops may use get_time, but this token lacks ops.time: listed, and calling it is a 403 step-up.
    let ops = d.mint("otto", "mcp:tools", &["ops"]);
    let r = d.session_call(&ops, "tools/list", json!({})).await;
    assert_eq!(tools(r.json().await.unwrap()), ["echo", "get_time"]);
    let r = d.session_call(&ops, "tools/call", json!({ "name": "get_time", "arguments": {} })).await;
    assert_eq!(r.status(), 403);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"mcp:tools ops.time\""),
        "{challenge}"
    );
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32003);
    assert_eq!(v["error"]["data"]["requiredScopes"], json!(["mcp:tools", "ops.time"]));
    // With the scope it works.
    let ops2 = d.mint("otto", "mcp:tools ops.time", &["ops"]);
    let r = d.session_call(&ops2, "tools/call", json!({ "name": "get_time", "arguments": {} })).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["result"].is_object(), "{v}");
}
