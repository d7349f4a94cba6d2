//! The real `portcullis` binary as a child process, killed when the test ends (passing or not).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};

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
