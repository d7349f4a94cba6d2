//! Authentication end to end over a real listener: the OAuth 2.1 resource-server surface (PRM,
//! 401 challenges), JWT checks against a local JWKS server, key rotation, and the attacks the
//! Authentication issue lists, each its own test. Test keys live in tests/fixtures.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use portcullis_auth::{Authenticator, ClaimMapping, Issuer, IssuerKeys, Jwks, JwksOptions};
use portcullis_transport::{HttpAuth, SessionStore};
use serde_json::{Value, json};

const ISS: &str = "https://idp.test";
const RSA_A: &[u8] = include_bytes!("fixtures/rsa-a.key.pem");
const RSA_B: &[u8] = include_bytes!("fixtures/rsa-b.key.pem");
const RSA_A_PUB: &[u8] = include_bytes!("fixtures/rsa-a.pub.pem");
const JWKS_PARTS: &str = include_str!("fixtures/jwks-parts.json");

/// A JWKS endpoint whose key set the test can swap, counting fetches.
struct KeyServer {
    url: String,
    keys: Arc<Mutex<Value>>,
    hits: Arc<AtomicU64>,
}

async fn key_server(kids: &[&str]) -> KeyServer {
    let parts: Value = serde_json::from_str(JWKS_PARTS).unwrap();
    let keys = Arc::new(Mutex::new(json!({ "keys": kids.iter().map(|k| parts[k].clone()).collect::<Vec<_>>() })));
    let hits = Arc::new(AtomicU64::new(0));
    let (k, h) = (keys.clone(), hits.clone());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (k, h) = (k.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                axum::Json(k.lock().unwrap().clone())
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    KeyServer { url, keys, hits }
}

fn set_keys(ks: &KeyServer, kids: &[&str]) {
    let parts: Value = serde_json::from_str(JWKS_PARTS).unwrap();
    *ks.keys.lock().unwrap() = json!({ "keys": kids.iter().map(|k| parts[k].clone()).collect::<Vec<_>>() });
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims for `sub` addressed to `aud`, valid now.
fn claims(sub: &str, aud: &str) -> Value {
    json!({ "iss": ISS, "sub": sub, "aud": aud, "exp": now() + 600, "iat": now(), "jti": format!("jti-{sub}"),
            "scope": "mcp:tools tools:read", "client_id": "test-client", "roles": ["viewer"] })
}

fn sign(key: &[u8], kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    encode(&h, claims, &EncodingKey::from_rsa_pem(key).unwrap()).unwrap()
}

struct Secured {
    server: Server,
    keys: KeyServer,
    jwks: Arc<Jwks>,
}

fn jwks_for(url: &str, min_refetch: Duration) -> Arc<Jwks> {
    let opts = JwksOptions { max_age: Duration::from_secs(600), min_refetch, timeout: Duration::from_secs(2) };
    Arc::new(Jwks::new(url.to_owned(), reqwest::Client::new(), opts))
}

/// The test issuer: RS256 only, keys from `jwks`, tokens for [`AUD`].
fn rs256_issuer(jwks: Arc<Jwks>, audiences: Vec<String>) -> Result<Issuer, portcullis_auth::JwtError> {
    Issuer::new(
        ISS.into(),
        audiences,
        vec![Algorithm::RS256],
        Duration::from_secs(5),
        IssuerKeys::Jwks(jwks),
        ClaimMapping::default(),
    )
}

async fn secured(min_refetch: Duration) -> Secured {
    let keys = key_server(&["rsa-a"]).await;
    let jwks = jwks_for(&keys.url, min_refetch);
    assert!(rs256_issuer(jwks.clone(), vec![]).is_err(), "an issuer without audiences is refused");
    let issuer = rs256_issuer(jwks.clone(), vec![AUD.into()]).unwrap();
    let server = start_with(move |o| {
        o.auth = Some(HttpAuth {
            verifier: Arc::new(Authenticator::new(vec![issuer], Duration::from_secs(60), 1000)),
            resource: AUD.into(),
            authorization_servers: vec![ISS.into()],
            scopes_supported: vec!["mcp:tools".into()],
        });
    })
    .await;
    Secured { server, keys, jwks }
}

const AUD: &str = "http://RESOURCE/mcp";

fn init_body() -> Value {
    rpc(
        1,
        "initialize",
        json!({ "protocolVersion": LATEST, "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } }),
    )
}

async fn init_with(s: &Server, token: &str) -> reqwest::Response {
    post(&client(), &s.url()).bearer_auth(token).json(&init_body()).send().await.unwrap()
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn no_token_gets_a_401_challenge_and_metadata_is_published() {
    let t = secured(Duration::from_secs(30)).await;
    let r = post(&client(), &t.server.url()).json(&init_body()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let c = challenge(&r);
    assert!(
        c.starts_with("Bearer resource_metadata=\"http://RESOURCE/.well-known/oauth-protected-resource/mcp\""),
        "{c}"
    );
    assert!(c.contains("scope=\"mcp:tools\"") && !c.contains("error="), "{c}");
    for path in ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"] {
        let v: Value = client().get(format!("{}{path}", t.server.base)).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["resource"], AUD, "{path}");
        assert_eq!(v["authorization_servers"], json!([ISS]));
        assert_eq!(v["bearer_methods_supported"], json!(["header"]));
    }
}

#[tokio::test]
async fn a_valid_token_is_accepted_and_cached() {
    let t = secured(Duration::from_secs(30)).await;
    let token = sign(RSA_A, "rsa-a", &claims("alice", AUD));
    let r = init_with(&t.server, &token).await;
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let r = post(&client(), &t.server.url())
        .bearer_auth(&token)
        .header("mcp-session-id", &sid)
        .json(&rpc(2, "tools/call", json!({ "name": "echo", "arguments": { "message": "authed" } })))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "authed");
    assert_eq!(t.keys.hits.load(Ordering::SeqCst), 1, "one JWKS fetch for both requests");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_invalid_token() {
    let t = secured(Duration::from_secs(30)).await;
    let mut expired = claims("alice", AUD);
    expired["exp"] = json!(now() - 120);
    let mut early = claims("alice", AUD);
    early["nbf"] = json!(now() + 3600);
    let mut wrong_iss = claims("alice", AUD);
    wrong_iss["iss"] = json!("https://evil.test");
    let good = sign(RSA_A, "rsa-a", &claims("alice", AUD));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
    sig[10] ^= 0x01;
    parts[2] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig);
    let tampered = parts.join(".");
    let mut other_payload = claims("mallory", AUD);
    other_payload["roles"] = json!(["admin"]);
    let swapped = {
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(other_payload.to_string());
        let g: Vec<&str> = good.split('.').collect();
        format!("{}.{p}.{}", g[0], g[2])
    };
    let cases = [
        ("wrong audience", sign(RSA_A, "rsa-a", &claims("alice", "https://other.example/mcp")), "audience"),
        ("expired", sign(RSA_A, "rsa-a", &expired), "expired"),
        ("not yet valid", sign(RSA_A, "rsa-a", &early), "not yet valid"),
        ("wrong issuer", sign(RSA_A, "rsa-a", &wrong_iss), "issuer"),
        ("tampered signature", tampered, "signature"),
        ("payload swapped under a valid signature", swapped, "signature"),
        ("garbage", "not.a.jwt".to_owned(), "malformed"),
    ];
    for (name, token, why) in cases {
        let r = init_with(&t.server, &token).await;
        assert_eq!(r.status(), 401, "{name}");
        let c = challenge(&r);
        assert!(c.contains("error=\"invalid_token\""), "{name}: {c}");
        assert!(c.contains(why), "{name}: {c}");
        assert!(!c.contains(&token), "{name}: the challenge must not echo the token");
    }
    assert_eq!(t.server.store.len(), 0);
}

#[tokio::test]
async fn attack_alg_none_is_refused() {
    let t = secured(Duration::from_secs(30)).await;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    for alg in ["none", "None", "NONE"] {
        let token = format!("{}.{}.", b64(json!({ "alg": alg, "typ": "JWT" })), b64(claims("alice", AUD)));
        let r = init_with(&t.server, &token).await;
        assert_eq!(r.status(), 401, "{alg}");
    }
}

#[tokio::test]
async fn attack_hs256_signed_with_the_rsa_public_key_is_refused() {
    let t = secured(Duration::from_secs(30)).await;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-a".into());
    let token = encode(&h, &claims("alice", AUD), &EncodingKey::from_secret(RSA_A_PUB)).unwrap();
    let r = init_with(&t.server, &token).await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("algorithm"), "{}", challenge(&r));
    // And an issuer that mixes HMAC with public keys cannot even be configured.
    let jwks = t.jwks.clone();
    let mixed = Issuer::new(
        ISS.into(),
        vec![AUD.into()],
        vec![Algorithm::RS256, Algorithm::HS256],
        Duration::ZERO,
        IssuerKeys::Jwks(jwks),
        ClaimMapping::default(),
    );
    assert!(mixed.is_err());
}

#[tokio::test]
async fn attack_token_in_the_query_string_is_refused() {
    let t = secured(Duration::from_secs(30)).await;
    let token = sign(RSA_A, "rsa-a", &claims("alice", AUD));
    let r =
        post(&client(), &format!("{}?access_token={token}", t.server.url())).json(&init_body()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("invalid_request"));
    // Even alongside a valid header.
    let r = post(&client(), &format!("{}?access_token={token}", t.server.url()))
        .bearer_auth(&token)
        .json(&init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn attack_unknown_kid_flood_does_not_hammer_the_identity_provider() {
    let t = secured(Duration::from_secs(30)).await;
    let good = sign(RSA_A, "rsa-a", &claims("alice", AUD));
    assert_eq!(init_with(&t.server, &good).await.status(), 200);
    let before = t.keys.hits.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let token = sign(RSA_A, &format!("random-kid-{i}"), &claims("alice", AUD));
        let url = t.server.url();
        tasks.push(tokio::spawn(async move {
            post(&client(), &url).bearer_auth(token).json(&init_body()).send().await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 401);
    }
    let fetched = t.keys.hits.load(Ordering::SeqCst) - before;
    assert!(fetched <= 1, "100 unknown kids caused {fetched} JWKS fetches; at most 1 per 30 s is allowed");
    assert_eq!(t.jwks.fetch_count(), before + fetched);
}

#[tokio::test]
async fn key_rotation_is_picked_up_without_restart() {
    let t = secured(Duration::from_millis(200)).await;
    assert_eq!(init_with(&t.server, &sign(RSA_A, "rsa-a", &claims("alice", AUD))).await.status(), 200);
    set_keys(&t.keys, &["rsa-b"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = sign(RSA_B, "rsa-b", &claims("bob", AUD));
    assert_eq!(init_with(&t.server, &rotated).await.status(), 200, "a token signed with the new key is accepted");
}

#[tokio::test]
async fn attack_oversized_token_is_refused() {
    let t = secured(Duration::from_secs(30)).await;
    let mut big = claims("alice", AUD);
    big["pad"] = json!("x".repeat(40_000));
    let token = sign(RSA_A, "rsa-a", &big);
    let r = init_with(&t.server, &token).await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("longer than"));
    assert_eq!(t.keys.hits.load(Ordering::SeqCst), 0, "refused before any key lookup");
}

#[tokio::test]
async fn attack_session_hijack_across_users_gets_404_and_no_data() {
    let t = secured(Duration::from_secs(30)).await;
    let alice = sign(RSA_A, "rsa-a", &claims("alice", AUD));
    let bob = sign(RSA_A, "rsa-a", &claims("bob", AUD));
    let r = init_with(&t.server, &alice).await;
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let c = client();
    let call = rpc(2, "tools/call", json!({ "name": "echo", "arguments": { "message": "secret" } }));
    let r =
        post(&c, &t.server.url()).bearer_auth(&bob).header("mcp-session-id", &sid).json(&call).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("secret"));
    let r = c
        .get(t.server.url())
        .bearer_auth(&bob)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c.delete(t.server.url()).bearer_auth(&bob).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Without any token: 401, not 404 — every request re-authenticates.
    let r = post(&c, &t.server.url()).header("mcp-session-id", &sid).json(&call).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Alice's session is untouched.
    let r =
        post(&c, &t.server.url()).bearer_auth(&alice).header("mcp-session-id", &sid).json(&call).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn service_accounts_authenticate_with_api_keys() {
    let key = "pcl_test_key_for_the_ci_bot_0123456789";
    let bot = portcullis_engine::Principal {
        subject: "ci-bot".into(),
        client_id: Some("ci-bot".into()),
        ..portcullis_engine::Principal::anonymous()
    };
    let keys = vec![portcullis_auth::ApiKey::new(&portcullis_auth::ApiKey::hash_hex(key), bot).unwrap()];
    let s = start_with(move |o| {
        o.auth = Some(HttpAuth {
            verifier: Arc::new(Authenticator::new(vec![], Duration::from_secs(60), 100).with_api_keys(keys)),
            resource: AUD.into(),
            authorization_servers: vec![],
            scopes_supported: vec![],
        });
    })
    .await;
    let r = init_with(&s, key).await;
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let r = init_with(&s, "pcl_wrong").await;
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("unknown API key"));
    // A session created with the key is not usable with another key.
    let r = post(&client(), &s.url())
        .bearer_auth("pcl_wrong")
        .header("mcp-session-id", &sid)
        .json(&rpc(2, "ping", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post(&client(), &s.url())
        .bearer_auth(key)
        .header("mcp-session-id", &sid)
        .json(&rpc(2, "ping", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn attack_a_revoked_jti_is_refused_on_the_very_next_request() {
    let dir = std::env::temp_dir().join(format!("portcullis-revoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("revocations.db");
    let keys = key_server(&["rsa-a"]).await;
    // secured_with caches verified tokens for 10 minutes: revocation must still bite on them.
    let s = secured_with(Arc::new(portcullis_auth::Revocations::open(&db).unwrap()), &keys).await;
    let token = sign(RSA_A, "rsa-a", &claims("alice", AUD));
    let r = init_with(&s, &token).await;
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    // Another process (the `portcullis token revoke` CLI) writes the revocation.
    portcullis_auth::Revocations::open(&db)
        .unwrap()
        .revoke(&portcullis_auth::Revoke::TokenId("jti-alice".into()))
        .await
        .unwrap();
    let r = post(&client(), &s.url())
        .bearer_auth(&token)
        .header("mcp-session-id", &sid)
        .json(&rpc(2, "ping", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(challenge(&r).contains("revoked"));
    // Other users are unaffected; revoking the subject stops bob's next token too.
    let bob = sign(RSA_A, "rsa-a", &claims("bob", AUD));
    assert_eq!(init_with(&s, &bob).await.status(), 200);
    portcullis_auth::Revocations::open(&db)
        .unwrap()
        .revoke(&portcullis_auth::Revoke::Subject("bob".into()))
        .await
        .unwrap();
    assert_eq!(init_with(&s, &bob).await.status(), 401);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn attack_same_subject_from_another_authority_cannot_use_the_session() {
    // An API key named like a JWT subject is still a different identity.
    let keys = key_server(&["rsa-a"]).await;
    let issuer = rs256_issuer(jwks_for(&keys.url, Duration::from_secs(30)), vec![AUD.into()]).unwrap();
    let key = "pcl_same_name_as_the_jwt_subject";
    let bot = portcullis_engine::Principal {
        subject: "ci-bot".into(),
        client_id: Some("test-client".into()),
        ..portcullis_engine::Principal::anonymous()
    };
    let api = vec![portcullis_auth::ApiKey::new(&portcullis_auth::ApiKey::hash_hex(key), bot).unwrap()];
    let verifier = Authenticator::new(vec![issuer], Duration::from_secs(60), 100).with_api_keys(api);
    let s = start_with(move |o| {
        o.auth = Some(HttpAuth {
            verifier: Arc::new(verifier),
            resource: AUD.into(),
            authorization_servers: vec![],
            scopes_supported: vec![],
        });
    })
    .await;
    let jwt = sign(RSA_A, "rsa-a", &claims("ci-bot", AUD));
    let r = init_with(&s, &jwt).await;
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let ping = rpc(2, "ping", json!({}));
    let r = post(&client(), &s.url()).bearer_auth(key).header("mcp-session-id", &sid).json(&ping).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r =
        post(&client(), &s.url()).bearer_auth(&jwt).header("mcp-session-id", &sid).json(&ping).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Redis at 127.0.0.1:6379 (the test command checks it is reachable): a unique hash per test.
fn redis_revocations(key: &str) -> Arc<portcullis_auth::Revocations> {
    Arc::new(portcullis_auth::Revocations::redis("redis://127.0.0.1:6379/0", key).unwrap())
}

/// A server trusting the test JWKS, caching verified tokens for 10 minutes, checking `revocations`.
async fn secured_with(revocations: Arc<portcullis_auth::Revocations>, keys: &KeyServer) -> Server {
    let issuer = rs256_issuer(jwks_for(&keys.url, Duration::from_secs(30)), vec![AUD.into()]).unwrap();
    let verifier = Authenticator::new(vec![issuer], Duration::from_secs(600), 100).with_revocations(revocations);
    start_with(move |o| {
        o.auth = Some(HttpAuth {
            verifier: Arc::new(verifier),
            resource: AUD.into(),
            authorization_servers: vec![],
            scopes_supported: vec![],
        });
    })
    .await
}

#[tokio::test]
async fn revocations_in_redis_reach_every_replica_on_the_next_request() {
    let key = format!("portcullis:test:revocations:{}:{}", std::process::id(), now());
    let probe = redis_revocations(&key);
    if let Err(e) = probe.check_connection().await {
        panic!("this test needs Redis on 127.0.0.1:6379 (apt-get install redis-server): {e}");
    }
    let keys = key_server(&["rsa-a"]).await;
    // Two replicas, each with its own connection to the shared list.
    let a = secured_with(redis_revocations(&key), &keys).await;
    let b = secured_with(redis_revocations(&key), &keys).await;
    let token = sign(RSA_A, "rsa-a", &claims("alice", AUD));
    assert_eq!(init_with(&a, &token).await.status(), 200);
    assert_eq!(init_with(&b, &token).await.status(), 200, "cached on both replicas now");
    probe.revoke(&portcullis_auth::Revoke::TokenId("jti-alice".into())).await.unwrap();
    assert_eq!(init_with(&a, &token).await.status(), 401);
    assert_eq!(init_with(&b, &token).await.status(), 401);
    let bob = sign(RSA_A, "rsa-a", &claims("bob", AUD));
    assert_eq!(init_with(&b, &bob).await.status(), 200);
    probe.revoke(&portcullis_auth::Revoke::Subject("bob".into())).await.unwrap();
    assert_eq!(init_with(&a, &bob).await.status(), 401);
    // Lifted once, accepted again by every replica; lifting again finds nothing.
    assert!(probe.lift(&portcullis_auth::Revoke::Subject("bob".into())).await.unwrap());
    assert_eq!(init_with(&a, &bob).await.status(), 200);
    assert_eq!(init_with(&b, &bob).await.status(), 200);
    assert!(!probe.lift(&portcullis_auth::Revoke::Subject("bob".into())).await.unwrap());
    assert_eq!(init_with(&b, &token).await.status(), 401, "alice's token stays revoked");
    // Clean up the test's hash.
    let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_revocation_store_fails_closed() {
    // A port nothing listens on: the revocation status is unknown, so the token is not accepted.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = Arc::new(
        portcullis_auth::Revocations::redis(&format!("redis://127.0.0.1:{port}/0"), "portcullis:revocations").unwrap(),
    );
    assert!(dead.check_connection().await.is_err());
    let keys = key_server(&["rsa-a"]).await;
    let s = secured_with(dead, &keys).await;
    let token = sign(RSA_A, "rsa-a", &claims("alice", AUD));
    let r = init_with(&s, &token).await;
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(!body.contains(&token));
}
