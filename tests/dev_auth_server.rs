//! The built-in dev authorization server, end to end against a real `[auth] mode = "dev"` server
//! (the embedded default's mode): metadata, dynamic registration, the code flow with PKCE S256,
//! refresh rotation, client credentials, Client ID Metadata Documents, RFC 7009 revocation and the
//! admin revocation API — each refusal checked as well as each success.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

mod common;

use common::dev::*;

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
async fn admin_api_revokes_and_lifts_with_the_admin_scope_only() {
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

    // Lifting takes the admin scope too, lets the client back in on the next request, and
    // answers 404 when there is nothing to lift.
    let lift_url = format!("{admin_url}/lift");
    let r = d.http.post(&lift_url).bearer_auth(&user).json(&json!({ "client": id })).send().await.unwrap();
    assert_eq!(r.status(), 401, "the revoked token cannot lift its own revocation");
    let r = d.http.post(&lift_url).bearer_auth(&admin).json(&json!({ "client": id })).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(d.mcp(&user).await, 200, "accepted again on the very next request");
    let r = d.http.post(&lift_url).bearer_auth(&admin).json(&json!({ "client": id })).send().await.unwrap();
    assert_eq!(r.status(), 404);
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

#[tokio::test]
async fn tenant_tools_and_resources_stay_with_their_tenant_under_any_spelling() {
    let d = start_with(|raw| {
        raw.policy.roles = vec![portcullis::config::PolicyTargets {
            name: "*".into(),
            tools: vec!["*".into()],
            resources: vec!["portcullis://demo/*".into()],
            prompts: vec![],
        }];
        // Lines 1, 10-19, 100-199… of the sample log belong to tenant acme.
        raw.policy.tenants = vec![portcullis::config::PolicyTargets {
            name: "acme".into(),
            tools: vec!["read_log".into()],
            resources: vec!["portcullis://demo/sample.log/lines/1*".into()],
            prompts: vec![],
        }];
    })
    .await;
    let globex = d.mint("gil", "mcp:tools", &[]);
    let read = |token: String, uri: &'static str| {
        let d = &d;
        async move {
            let r = d.session_call(&token, "resources/read", json!({ "uri": uri })).await;
            let v: Value = r.json().await.unwrap();
            v["error"]["code"].as_i64().unwrap_or(0)
        }
    };
    assert_eq!(read(globex.clone(), "portcullis://demo/sample.log/lines/2").await, 0, "shared lines are readable");
    assert_eq!(read(globex.clone(), "portcullis://demo/sample.log/lines/1").await, -32002, "acme's line is hidden");
    // Percent-encoded "1": the template would decode it to acme's line 1.
    assert_eq!(read(globex.clone(), "portcullis://demo/sample.log/lines/%31").await, -32002);
    assert_eq!(
        read(globex.clone(), "portcullis://demo/sample.log/lines/%2F1").await,
        -32002,
        "no %2F in a simple variable"
    );
    let r = d
        .session_call(&globex, "resources/subscribe", json!({ "uri": "portcullis://demo/sample.log/lines/%31" }))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32002, "{v}");
    // The tenant itself reads it (the dev issuer maps the `tenant` claim).
    let key = portcullis_auth::DevKey::load_or_create(&d.dir.join("key.p8")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let acme = key
        .sign(&json!({ "iss": d.base, "sub": "ann", "aud": d.resource(), "exp": now + 60, "scope": "mcp:tools", "tenant": "acme" }))
        .unwrap();
    assert_eq!(read(acme.clone(), "portcullis://demo/sample.log/lines/1").await, 0);
    assert_eq!(read(acme.clone(), "portcullis://demo/sample.log/lines/%31").await, 0);

    // Tools too: acme's read_log is neither listed nor callable for globex.
    let names = |v: Value| -> Vec<String> {
        v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    };
    let r = d.session_call(&globex, "tools/list", json!({})).await;
    assert!(!names(r.json().await.unwrap()).contains(&"read_log".to_owned()));
    let r = d.session_call(&globex, "tools/call", json!({ "name": "read_log", "arguments": {} })).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "unknown tool: read_log");
    let r = d.session_call(&acme, "tools/list", json!({})).await;
    assert!(names(r.json().await.unwrap()).contains(&"read_log".to_owned()));
    let r = d.session_call(&acme, "tools/call", json!({ "name": "read_log", "arguments": { "limit": 1 } })).await;
    let v: Value = r.json().await.unwrap();
    assert!(v["result"]["structuredContent"]["data"].is_array(), "{v}");
}

/// What a web page on `origin` sees of a request: the CORS headers of the response.
async fn cors_of(rb: reqwest::RequestBuilder, origin: &str) -> (u16, reqwest::header::HeaderMap) {
    let r = rb.header("origin", origin).send().await.unwrap();
    (r.status().as_u16(), r.headers().clone())
}

fn preflight(d: &Dev, path: &str, method: &str, headers: &str) -> reqwest::RequestBuilder {
    d.http
        .request(reqwest::Method::OPTIONS, format!("{}{path}", d.base))
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
}

fn header<'h>(h: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_browser_client_on_an_allowed_origin_can_read_every_step_and_others_cannot() {
    let d = start().await;
    // The MCP Inspector's web page: a loopback origin, which the loopback default allows.
    let page = "http://localhost:6274";
    let (status, h) =
        cors_of(preflight(&d, "/mcp", "POST", "authorization,content-type,mcp-protocol-version"), page).await;
    assert!((200..300).contains(&status), "preflight answered: {status}");
    assert_eq!(header(&h, "access-control-allow-origin"), Some(page));
    assert!(header(&h, "access-control-allow-methods").unwrap().contains("POST"));
    assert!(header(&h, "access-control-allow-headers").unwrap().contains("authorization"));
    assert_eq!(header(&h, "access-control-allow-credentials"), None, "no credentials mode");

    // No token: the 401's challenge must be readable, or the page cannot find the metadata.
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let post = || d.http.post(d.resource()).header("accept", "application/json, text/event-stream").json(&init);
    let (status, h) = cors_of(post(), page).await;
    assert_eq!(status, 401);
    assert_eq!(header(&h, "access-control-allow-origin"), Some(page));
    assert!(header(&h, "access-control-expose-headers").unwrap().contains("www-authenticate"));
    assert!(h.contains_key("www-authenticate"));

    // Discovery, registration and the token endpoint, from the page.
    for path in ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server"] {
        let (status, h) = cors_of(d.http.get(format!("{}{path}", d.base)), page).await;
        assert_eq!((status, header(&h, "access-control-allow-origin")), (200, Some(page)), "{path}");
    }
    for path in ["/register", "/token"] {
        let (_, h) = cors_of(preflight(&d, path, "POST", "content-type"), page).await;
        assert_eq!(header(&h, "access-control-allow-origin"), Some(page), "{path}");
    }

    // With a token: the session id is readable.
    let token = d.mint("you", "mcp:tools", &[]);
    let (status, h) = cors_of(post().bearer_auth(&token), page).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "access-control-allow-origin"), Some(page));
    assert!(h.contains_key("mcp-session-id"));
    assert!(header(&h, "access-control-expose-headers").unwrap().contains("mcp-session-id"));

    // A client that is no browser (no Origin) gets no CORS headers at all.
    let r = post().bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().keys().any(|k| k.as_str().starts_with("access-control-")), "{:?}", r.headers());

    // A page elsewhere gets nothing to read: no CORS answer, and the request itself is refused.
    let evil = "http://evil.example.com";
    let (_, h) = cors_of(preflight(&d, "/mcp", "POST", "authorization"), evil).await;
    assert_eq!(header(&h, "access-control-allow-origin"), None);
    let (status, h) = cors_of(post().bearer_auth(&token), evil).await;
    assert_eq!((status, header(&h, "access-control-allow-origin")), (403, None));
    let (status, h) = cors_of(d.http.get(format!("{}/.well-known/oauth-authorization-server", d.base)), evil).await;
    assert_eq!((status, header(&h, "access-control-allow-origin")), (403, None));
}

#[tokio::test]
async fn with_cors_off_no_page_may_read_responses() {
    let d = start_with(|c| c.server.cors = false).await;
    let (_, h) = cors_of(preflight(&d, "/mcp", "POST", "authorization"), "http://localhost:6274").await;
    assert_eq!(header(&h, "access-control-allow-origin"), None);
    let (status, h) =
        cors_of(d.http.get(format!("{}/.well-known/oauth-authorization-server", d.base)), "http://localhost:6274")
            .await;
    assert_eq!((status, header(&h, "access-control-allow-origin")), (200, None));
}
