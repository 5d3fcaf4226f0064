//! A `convergent watch` process for tests: started with the harness's
//! environment, its log kept in a file, stopped (SIGTERM, then SIGKILL) when
//! dropped — also when the test fails.

use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use super::Harness;

/// A running `convergent watch`.
pub struct WatchProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl WatchProcess {
    /// Starts `convergent watch ARGS` against the harness's store.
    pub fn start(h: &Harness, args: &[&str]) -> WatchProcess {
        let log = h.path(&format!("watch-{}.log", std::process::id() ^ rand_suffix()));
        let child = h
            .process()
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("convergent watch starts");
        WatchProcess {
            child: Some(child),
            log,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to 10s) for it to exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        super::terminate(self.child.take()?, Duration::from_secs(10))
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}
