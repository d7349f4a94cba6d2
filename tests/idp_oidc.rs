//! Authentication against a real, certified authorization server (oidc-provider, started through
//! scripts/idp.sh): client_credentials JWTs accepted; wrong audience, expired, not yet valid,
//! wrong issuer and tampered tokens refused with 401 and the right challenge; key rotation at the
//! provider picked up without restarting Portcullis.
//!
//! Needs Node (the test command installs it): built only with `--features idp-tests`, which
//! `scripts/test.sh` enables in its own stage.

#![cfg(feature = "idp-tests")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use portcullis_auth::{Authenticator, ClaimMapping, Issuer, IssuerKeys, Jwks, JwksOptions};
use portcullis_transport::HttpAuth;
use serde_json::json;

const RESOURCE: &str = "http://portcullis.test/mcp";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn idp(args: &[&str], env: &[(&str, String)]) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(root.join("scripts/idp.sh"));
    cmd.args(args).current_dir(&root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scripts/idp.sh");
    assert!(out.status.success(), "idp.sh {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Stops the IdPs this test started, even when an assertion fails.
struct Idps(Vec<u16>);

impl Drop for Idps {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/idp.sh"))
                .args(["stop", &p.to_string()])
                .output();
        }
    }
}

fn issuer(iss: &str, leeway: Duration) -> Issuer {
    let jwks = Jwks::new(
        format!("{iss}/jwks"),
        reqwest::Client::new(),
        JwksOptions {
            max_age: Duration::from_secs(600),
            min_refetch: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        },
    );
    Issuer::new(
        iss.to_owned(),
        vec![RESOURCE.to_owned()],
        vec![Algorithm::RS256],
        leeway,
        IssuerKeys::Jwks(Arc::new(jwks)),
        ClaimMapping::default(),
    )
    .unwrap()
}

fn init() -> serde_json::Value {
    rpc(
        1,
        "initialize",
        json!({ "protocolVersion": LATEST, "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } }),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_from_oidc_provider() {
    let dir = std::env::temp_dir().join(format!("portcullis-idp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("main-key.json");
    let (main, short, early, stranger) = (free_port(), free_port(), free_port(), free_port());
    let _guard = Idps(vec![main, short, early, stranger]);
    let resources = format!("{RESOURCE},http://elsewhere.test/mcp");
    let base = [("MCP_RESOURCE", resources.clone())];
    let main_iss =
        idp(&["start", &main.to_string()], &[base[0].clone(), ("IDP_KEY_FILE", key_file.display().to_string())]);
    let short_iss = idp(&["start", &short.to_string()], &[base[0].clone(), ("IDP_TOKEN_TTL", "1".into())]);
    let early_iss = idp(&["start", &early.to_string()], &[base[0].clone(), ("IDP_NBF_OFFSET", "3600".into())]);
    idp(&["start", &stranger.to_string()], &base);

    let issuers = vec![
        issuer(&main_iss, Duration::from_secs(5)),
        issuer(&short_iss, Duration::ZERO),
        issuer(&early_iss, Duration::ZERO),
    ];
    let s = start_with(move |o| {
        o.auth = Some(HttpAuth {
            // No verified-token cache here: every request goes through verification.
            verifier: Arc::new(Authenticator::new(issuers, Duration::ZERO, 0)),
            resource: RESOURCE.into(),
            authorization_servers: vec![],
            scopes_supported: vec!["mcp:tools".into()],
        });
    })
    .await;
    let c = client();
    let try_token = |token: String| {
        let (c, url) = (c.clone(), s.url());
        async move {
            let r = post(&c, &url).bearer_auth(&token).json(&init()).send().await.unwrap();
            let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), challenge.unwrap_or_default())
        }
    };

    // A client_credentials JWT for our resource is accepted, and the session works.
    let good = idp(&["token", &main.to_string(), RESOURCE], &[]);
    assert_eq!(try_token(good.clone()).await.0, 200);

    let cases = [
        ("wrong audience", idp(&["token", &main.to_string(), "http://elsewhere.test/mcp"], &[]), "audience"),
        ("not yet valid", idp(&["token", &early.to_string(), RESOURCE], &[]), "not yet valid"),
        ("wrong issuer", idp(&["token", &stranger.to_string(), RESOURCE], &[]), "issuer"),
        (
            "tampered signature",
            {
                let mut t = good.clone().into_bytes();
                let i = t.len() - 5;
                t[i] = if t[i] == b'A' { b'B' } else { b'A' };
                String::from_utf8(t).unwrap()
            },
            "signature",
        ),
    ];
    for (name, token, why) in cases {
        let (status, challenge) = try_token(token).await;
        assert_eq!(status, 401, "{name}");
        assert!(challenge.contains("error=\"invalid_token\"") && challenge.contains(why), "{name}: {challenge}");
        assert!(challenge.contains("resource_metadata="), "{name}: {challenge}");
    }
    let expiring = idp(&["token", &short.to_string(), RESOURCE], &[]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, challenge) = try_token(expiring).await;
    assert_eq!(status, 401, "expired");
    assert!(challenge.contains("expired"), "{challenge}");

    // The provider rotates its key (restart with a new one); Portcullis keeps running.
    idp(&["stop", &main.to_string()], &[]);
    std::fs::remove_file(&key_file).unwrap();
    idp(&["start", &main.to_string()], &[base[0].clone(), ("IDP_KEY_FILE", key_file.display().to_string())]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = idp(&["token", &main.to_string(), RESOURCE], &[]);
    assert_eq!(try_token(rotated).await.0, 200, "a token signed with the new key is accepted");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn opaque_tokens_through_introspection_and_revocation() {
    const OPAQUE: &str = "http://portcullis-opaque.test/mcp";
    let port = free_port();
    let _guard = Idps(vec![port]);
    let iss = idp(
        &["start", &port.to_string()],
        &[("MCP_RESOURCE", RESOURCE.into()), ("MCP_OPAQUE_RESOURCE", OPAQUE.into())],
    );
    let introspection = portcullis_auth::Introspection::new(
        format!("{iss}/token/introspection"),
        "mcp-test-client".into(),
        "mcp-test-secret".into(),
        vec![OPAQUE.into()],
        ClaimMapping::default(),
        reqwest::Client::new(),
    );
    // Introspection answers are trusted for one second: that is the revocation delay documented
    // for this configuration.
    let authenticator = Authenticator::new(vec![], Duration::from_secs(1), 100).with_introspection(introspection);
    let s = start_with(move |o| {
        o.auth = Some(HttpAuth {
            verifier: Arc::new(authenticator),
            resource: OPAQUE.into(),
            authorization_servers: vec![],
            scopes_supported: vec!["mcp:tools".into()],
        });
    })
    .await;
    let c = client();
    let status = |token: String| {
        let (c, url) = (c.clone(), s.url());
        async move {
            let r = post(&c, &url).bearer_auth(&token).json(&init()).send().await.unwrap();
            let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), challenge.unwrap_or_default())
        }
    };
    let token = idp(&["opaque-token", &port.to_string(), OPAQUE], &[]);
    assert_eq!(token.matches('.').count(), 0, "an opaque token, not a JWT");
    assert_eq!(status(token.clone()).await.0, 200);
    assert_eq!(status("not-a-token-the-idp-issued".into()).await.0, 401);
    idp(&["revoke", &port.to_string(), &token], &[]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, challenge) = status(token).await;
    assert_eq!(code, 401, "refused once the cached answer expires after revocation");
    assert!(challenge.contains("not active"), "{challenge}");
}
