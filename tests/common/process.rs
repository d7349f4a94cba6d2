//! The real `portcullis` binary as a child process, killed when the test ends (passing or not).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A child process, killed and reaped on drop: a failed assertion leaves no server running.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `portcullis serve --config <config>`, its stderr discarded.
pub fn serve(config: impl AsRef<OsStr>) -> Kill {
    Kill(Command::new(BIN).args(["serve", "--config"]).arg(config).stderr(Stdio::null()).spawn().unwrap())
}

/// `child`'s exit status and output, waiting at most `limit`: a child that does not exit in time
/// is killed and the test fails, instead of hanging the test run.
pub fn output_within(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the child process did not exit within {limit:?}");
        }
    }
}
