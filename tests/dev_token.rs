//! The real binary in dev-auth mode: `portcullis token` mints tokens that `portcullis serve`
//! (another process, same key file) accepts; `--claims` produces the broken tokens clients must
//! handle; `portcullis token revoke` takes effect on the running server's next request.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{BIN, serve};
use serde_json::json;

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn minted_tokens_work_and_broken_ones_do_not() {
    let dir = std::env::temp_dir().join(format!("portcullis-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.join("dev.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[auth]\nmode = \"dev\"\ndev_key = {:?}\nrevocation_db = {:?}\n",
            dir.join("key.p8").display().to_string(),
            dir.join("rev.db").display().to_string()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let _server = serve(&cfg);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let c = reqwest::Client::new();
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let try_token = |token: String| {
        let (c, url, init) = (c.clone(), url.clone(), init.clone());
        async move {
            let mut req = c.post(&url).header("content-type", "application/json").header("accept", "application/json");
            if !token.is_empty() {
                req = req.bearer_auth(token);
            }
            req.json(&init).send().await.map(|r| r.status().as_u16())
        }
    };
    let mut ready = false;
    for _ in 0..100 {
        if try_token(String::new()).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "server did not start");
    assert_eq!(try_token(String::new()).await.unwrap(), 401);

    let (ok, alice, err) = cli(&["token", "--config", &cfg, "--sub", "alice", "--scope", "mcp:tools"]);
    assert!(ok, "{err}");
    assert_eq!(try_token(alice).await.unwrap(), 200);
    for (name, extra) in [
        ("expired", vec!["--claims", r#"{"exp": 1000}"#]),
        ("not yet valid", vec!["--claims", r#"{"nbf": 4000000000}"#]),
        ("no subject", vec!["--claims", r#"{"sub": null}"#]),
        ("wrong audience", vec!["--aud", "https://elsewhere.example/mcp"]),
        ("wrong issuer", vec!["--claims", r#"{"iss": "https://evil.example"}"#]),
    ] {
        let mut args = vec!["token", "--config", &cfg, "--sub", "alice"];
        args.extend(extra);
        let (ok, token, err) = cli(&args);
        assert!(ok, "{name}: {err}");
        assert_eq!(try_token(token).await.unwrap(), 401, "{name}");
    }
    let (ok, bob, _) = cli(&["token", "--config", &cfg, "--sub", "bob"]);
    assert!(ok);
    assert_eq!(try_token(bob.clone()).await.unwrap(), 200);
    let (ok, _, err) = cli(&["token", "revoke", "--config", &cfg, "--sub", "bob"]);
    assert!(ok, "{err}");
    assert_eq!(try_token(bob).await.unwrap(), 401, "revoked on the very next request");
    let (ok, _, err) = cli(&["token", "--config", &cfg]);
    assert!(!ok && err.contains("--sub"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
