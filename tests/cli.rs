//! The command line around the server: `portcullis policy explain` on the seed S001 team
//! (examples/team.toml), for a described principal and for a real token read from stdin; and
//! `portcullis audit verify` taking back what the audit journal holds beyond the store.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{BIN, output_within};

#[test]
fn policy_explain_names_the_decision_and_its_rule() {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let team = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/team.toml");
    let explain = |extra: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(BIN)
            .current_dir(&dir)
            .args(["policy", "explain", "--config", team])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out = output_within(child, Duration::from_secs(20));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let out = explain(
        &["--sub", "vera", "--roles", "viewer", "--scope", "mcp:tools jira.read", "--tool", "get_jira_issue"],
        None,
    );
    assert!(out.contains("tools/call get_jira_issue: ALLOW (rule role:viewer)"), "{out}");
    let out = explain(&["--sub", "vera", "--roles", "viewer", "--tool", "trigger_pipeline"], None);
    assert!(out.contains("HIDDEN (rule default-deny"), "{out}");
    let out = explain(&["--sub", "ci", "--roles", "cicd", "--scope", "mcp:tools", "--tool", "trigger_pipeline"], None);
    assert!(out.contains("STEP-UP (rule scope:trigger_pipeline)") && out.contains("mcp:tools cicd.trigger"), "{out}");
    // A real token, minted for the same configuration, verified as the server would.
    let minted = Command::new(BIN)
        .current_dir(&dir)
        .args([
            "token",
            "--config",
            team,
            "--sub",
            "ci",
            "--scope",
            "mcp:tools cicd.trigger",
            "--claims",
            r#"{"roles":["cicd"]}"#,
        ])
        .output()
        .unwrap();
    assert!(minted.status.success());
    let token = String::from_utf8(minted.stdout).unwrap();
    let out = explain(&["--token-stdin", "--tool", "trigger_pipeline"], Some(&token));
    assert!(out.contains("sub=ci") && out.contains("ALLOW (rule role:cicd)"), "{out}");
    assert!(!out.contains(token.trim()), "the token is never printed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_takes_back_what_the_journal_holds() {
    use portcullis_audit::{AuditLog, AuditOptions, SqliteStore, Store};
    use portcullis_engine::{AuditEvent, Auditor as _};

    let dir = std::env::temp_dir().join(format!("portcullis-cli-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("audit.db");
    let log =
        AuditLog::start(Store::Sqlite(SqliteStore::open(&db).unwrap()), AuditOptions::default(), "t".into()).unwrap();
    for i in 0..20 {
        let mut e = AuditEvent::new("call", None, "tools/call");
        e.target = Some(format!("tool-{i}"));
        log.record(e).await.unwrap();
    }
    drop(log);
    // The store loses its last five records (a power cut before its sync); the journal has them.
    rusqlite::Connection::open(&db).unwrap().execute("DELETE FROM audit_log WHERE seq > 15", []).unwrap();
    let cfg = dir.join("audit.toml");
    std::fs::write(&cfg, format!("[audit]\npath = {:?}\n", db.display().to_string())).unwrap();
    let verify = || {
        let child = Command::new(BIN)
            .args(["audit", "verify", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = output_within(child, Duration::from_secs(20));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (stdout, stderr) = verify();
    assert!(stdout.starts_with("ok: 20 records"), "{stdout}");
    assert!(stderr.contains("took 5 records from the audit journal"), "{stderr}");
    let (stdout, stderr) = verify();
    assert!(stdout.starts_with("ok: 20 records") && !stderr.contains("took"), "once only: {stdout} {stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn token_revoke_and_lift_reach_the_list_a_server_reads() {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-revoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("revocations.db");
    std::fs::write(dir.join("c.toml"), format!("[auth]\nrevocation_db = {:?}\n", db.display().to_string())).unwrap();
    let run = |args: &[&str]| {
        let child = Command::new(BIN)
            .current_dir(&dir)
            .args(["token", "revoke", "--config", "c.toml"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = output_within(child, Duration::from_secs(20));
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // What a running server would hold open, reading the same file.
    let server = portcullis_auth::Revocations::open(&db).unwrap();
    let bob = portcullis_engine::Principal { subject: "bob".into(), ..portcullis_engine::Principal::anonymous() };
    let (ok, err) = run(&["--sub", "bob"]);
    assert!(ok && err.contains("revoked"), "{err}");
    assert!(server.is_revoked(&bob).await.unwrap());
    let (ok, err) = run(&["--sub", "bob", "--lift"]);
    assert!(ok && err.contains("lifted"), "{err}");
    assert!(!server.is_revoked(&bob).await.unwrap(), "accepted again on the next check");
    let (ok, err) = run(&["--sub", "bob", "--lift"]);
    assert!(!ok && err.contains("nothing to lift"), "{err}");
    let (ok, err) = run(&["--lift"]);
    assert!(!ok && err.contains("exactly one"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
