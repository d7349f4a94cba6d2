//! The real binary over stdio: only JSON-RPC on stdout, a prompt exit on stdin EOF, and clear
//! errors for bad lines. Also: a bad config file is refused with a located message.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{BIN, output_within};
use serde_json::Value;

#[test]
fn stdio_serves_then_exits_on_eof() {
    let mut child = Command::new(BIN)
        .args(["serve", "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"over stdio"}}}"#,
        r#"this is not json"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
    ];
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let started = Instant::now();
    let out = output_within(child, Duration::from_secs(20));
    assert!(started.elapsed() < Duration::from_secs(5), "exits promptly on EOF");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let msgs: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("stdout holds only JSON-RPC")).collect();
    assert_eq!(msgs.len(), 4, "{stdout}");
    let by_id = |id: i64| msgs.iter().find(|m| m["id"] == id).unwrap();
    assert_eq!(by_id(1)["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(by_id(2)["result"]["content"][0]["text"], "over stdio");
    assert_eq!(by_id(3)["result"], serde_json::json!({}));
    assert!(msgs.iter().any(|m| m["error"]["code"] == -32700 && m["id"].is_null()));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("stdio"), "logs go to stderr: {stderr}");
}

#[test]
fn a_bad_config_file_names_the_key_and_line() {
    let dir = std::env::temp_dir().join(format!("portcullis-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\nmax_body = 5\n").unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 3") && err.contains("max_body") && err.contains("bad.toml"), "{err}");
    let out = Command::new(BIN).args(["check-config"]).arg(dir.join("missing.toml")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot read config file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stdio_accepts_a_production_http_config() {
    // A public listener with real authentication: HTTP-only settings, irrelevant to a pipe.
    let dir = std::env::temp_dir().join(format!("portcullis-stdio-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prod.toml");
    let hash = "0".repeat(64);
    std::fs::write(
        &file,
        format!("[server]\nlisten = \"0.0.0.0:8443\"\n[auth]\nmode = \"jwt\"\nresource = \"https://mcp.example.com/mcp\"\n[[auth.api_keys]]\nname = \"ci\"\nsha256 = \"{hash}\"\n[audit]\nsink = \"off\"\n"),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--stdio", "--config"])
        .arg(&file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-11-25","capabilities":{{}},"clientInfo":{{"name":"t","version":"0"}}}}}}"#).unwrap();
    drop(stdin);
    let out = output_within(child, Duration::from_secs(20));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first: Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["result"]["protocolVersion"], "2025-11-25");
    std::fs::remove_dir_all(&dir).unwrap();
}
