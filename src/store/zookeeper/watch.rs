//! The change feed: persistent recursive watches followed by a task on the
//! runtime, set again after a reconnect or on a new session.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_io::Timer;
use futures::channel::oneshot;
use futures::future::{self, Either};
use zookeeper_client as zk;

use super::connection::{Connection, Fault};
use super::runtime::Runtime;
use crate::error::{Error, Result};
use crate::store::feed::{failure_backoff, reconnect_splay};
use crate::store::ChangeFeed;

/// Sets a persistent recursive watch on each root; the client returned
/// keeps their session open.
pub(super) async fn arm(
    conn: &Connection,
    roots: &[String],
) -> Result<(zk::Client, Vec<zk::PersistentWatcher>), Fault> {
    let client = conn
        .client()
        .await
        .map_err(|e| Fault::new(e, "(session)"))?;
    let mut watchers = Vec::with_capacity(roots.len());
    for root in roots {
        let watcher = client
            .watch(&conn.path(root), zk::AddWatchMode::PersistentRecursive)
            .await
            .map_err(|e| Fault::new(e, root.clone()))?;
        watchers.push(watcher);
    }
    Ok((client, watchers))
}

/// What the watch task tells the feed.
#[derive(Default)]
pub(super) struct FeedShared {
    state: Mutex<FeedState>,
    wake: Condvar,
}

#[derive(Default)]
struct FeedState {
    changed: bool,
    failure: Option<String>,
}

impl FeedShared {
    fn tell(&self, change: impl FnOnce(&mut FeedState)) {
        change(&mut self.state.lock().expect("feed lock"));
        self.wake.notify_all();
    }
}

/// Follows the watches until the feed is dropped, setting them again on a
/// new session when one ends.
///
/// The server going away cuts every agent off at once; the client crate
/// reconnects by itself, at once. What we add on top (setting the watches
/// again, the look that follows, a new session when the old one ended)
/// waits a random share of 10 s first, as etcd streams do, so that a fleet
/// does not come back in step (1,000 agents: 12 times the startup packet
/// rate without it). No change is lost: the look after comes anyway.
pub(super) async fn follow(
    conn: Arc<Connection>,
    roots: Vec<String>,
    armed: (zk::Client, Vec<zk::PersistentWatcher>),
    shared: Arc<FeedShared>,
    mut cancelled: oneshot::Receiver<()>,
) {
    let (mut _session, mut watchers) = armed;
    let mut failures: u32 = 0;
    loop {
        if watchers.is_empty() {
            // Between sessions (or after a reconnect): set the watches
            // again, then look afresh (changes in between are not replayed).
            let pause = if failures == 0 {
                reconnect_splay()
            } else {
                failure_backoff(failures)
            };
            if let Either::Right(_) = future::select(Timer::after(pause), &mut cancelled).await {
                return;
            }
            match arm(&conn, &roots).await {
                Ok((client, w)) => {
                    _session = client;
                    watchers = w;
                    failures = 0;
                    shared.tell(|s| s.changed = true);
                }
                Err(f) => {
                    let reason = conn.error(f).to_string();
                    shared.tell(|s| s.failure = Some(reason));
                    failures += 1;
                }
            }
            continue;
        }
        let next = future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        let event = match future::select(next, &mut cancelled).await {
            Either::Left(((event, _, _), _)) => event,
            Either::Right(_) => return,
        };
        match (event.event_type, event.session_state) {
            (zk::EventType::Session, zk::SessionState::Disconnected) => {}
            // The session ended: a new one (a watcher panics when asked
            // again after its session ended).
            (zk::EventType::Session, state) if state.is_terminated() => watchers.clear(),
            // Reconnected. zookeeper-client 0.11 leaves persistent watches
            // out of the SetWatches it sends on a new connection, so set
            // them again (the old ones go once the new ones are in); then
            // look afresh, as events of the gap are lost (ZOOKEEPER-4698).
            (zk::EventType::Session, _) => watchers.clear(),
            _ => shared.tell(|s| s.changed = true),
        }
    }
}

/// The reader's side of a watch: wakes when the task reports.
pub(super) struct ZkFeed {
    pub(super) shared: Arc<FeedShared>,
    /// Dropped with the feed, which ends the watch task.
    pub(super) _cancel: oneshot::Sender<()>,
    pub(super) _runtime: Arc<Runtime>,
}

impl ChangeFeed for ZkFeed {
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let guard = self.shared.state.lock().expect("feed lock");
        let (mut state, _) = self
            .shared
            .wake
            .wait_timeout_while(guard, timeout, |s| !s.changed && s.failure.is_none())
            .expect("feed lock");
        // A change beats a failure: the reader looks either way.
        let failure = state.failure.take();
        if std::mem::take(&mut state.changed) {
            return Ok(true);
        }
        match failure {
            Some(reason) => Err(Error::Unavailable {
                store: "zookeeper".into(),
                reason: format!("the watch stopped: {reason}"),
            }),
            None => Ok(false),
        }
    }
}
