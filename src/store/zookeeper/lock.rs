//! The lock's znodes and the held lock: an ephemeral sequential znode of a
//! session of its own, lost when that session ends or is cut off too long.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::runtime::Runtime;
use crate::error::{Error, Result};
use crate::store::HeldLock;

/// Lock znodes are `LOCK_PREFIX` + a sequence number, in the lock's znode.
pub(super) const LOCK_PREFIX: &str = "lock-";

/// What the holder of lock znode `lowest` in `dir` says of itself.
pub(super) async fn holder_of(client: &zk::Client, dir: &str, lowest: &str) -> String {
    match client.get_data(&format!("{dir}/{lowest}")).await {
        Ok((data, _)) if !data.is_empty() => String::from_utf8_lossy(&data).into_owned(),
        Ok(_) => "another process".into(),
        Err(zk::Error::NoNode) => {
            "another process (the lock was released meanwhile; try again)".into()
        }
        Err(_) => format!("another process ({lowest})"),
    }
}

/// The lowest-numbered lock znode among `children`.
pub(super) fn lowest_lock(children: &[String]) -> Option<&str> {
    children
        .iter()
        .filter_map(|c| {
            let n: u64 = c.strip_prefix(LOCK_PREFIX)?.parse().ok()?;
            Some((n, c.as_str()))
        })
        .min()
        .map(|(_, c)| c)
}

/// A held lock: an ephemeral znode of a session kept alive by the runtime.
pub(super) struct ZkLock {
    name: String,
    path: String,
    client: Option<zk::Client>,
    /// When the session lost its connection, if it has not regained it.
    disconnected_since: Arc<Mutex<Option<Instant>>>,
    session_timeout: Duration,
    runtime: Arc<Runtime>,
    timeout: Duration,
}

impl ZkLock {
    pub(super) fn new(
        name: String,
        path: String,
        client: zk::Client,
        runtime: Arc<Runtime>,
        timeout: Duration,
    ) -> ZkLock {
        let disconnected_since = Arc::new(Mutex::new(None));
        let mut states = client.state_watcher();
        let since = Arc::clone(&disconnected_since);
        runtime.spawn(async move {
            loop {
                let state = states.changed().await;
                let mut since = since.lock().expect("state lock");
                match state {
                    zk::SessionState::Disconnected => {
                        since.get_or_insert_with(Instant::now);
                    }
                    s if s.is_terminated() => return,
                    _ => *since = None,
                }
            }
        });
        ZkLock {
            name,
            path,
            session_timeout: client.session_timeout(),
            client: Some(client),
            disconnected_since,
            runtime,
            timeout,
        }
    }
}

impl HeldLock for ZkLock {
    fn name(&self) -> &str {
        &self.name
    }

    /// Lost once the session ended, or once it has been disconnected for a
    /// session timeout: the server may have expired it (and deleted the
    /// znode) without this client hearing of it yet.
    fn check(&self) -> Result<()> {
        let state = self
            .client
            .as_ref()
            .map_or(zk::SessionState::Closed, zk::Client::state);
        let cut_off = self
            .disconnected_since
            .lock()
            .expect("state lock")
            .is_some_and(|since| since.elapsed() >= self.session_timeout);
        if state.is_terminated() || cut_off {
            Err(Error::lock_lost(
                &self.name,
                format!(
                    "its ZooKeeper session {}",
                    if state.is_terminated() {
                        format!("ended ({state})")
                    } else {
                        format!(
                            "has been cut off for longer than its timeout ({:?})",
                            self.session_timeout
                        )
                    }
                ),
            ))
        } else {
            Ok(())
        }
    }
}

impl Drop for ZkLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // Deleting frees the lock at once; closing the session (when the
        // client goes) would too, a moment later. A session cut off cannot
        // do either: its znode goes when it expires.
        if client.state() == zk::SessionState::SyncConnected {
            let path = self.path.clone();
            self.runtime.run(Instant::now() + self.timeout, async move {
                let _ = client.delete(&path, None).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_sequence_holds_the_lock() {
        let children: Vec<String> = ["lock-0000000012", "lock-0000000009", "other", "lock-x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(lowest_lock(&children), Some("lock-0000000009"));
        assert_eq!(lowest_lock(&[]), None);
    }
}
