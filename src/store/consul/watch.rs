//! The Consul change feed: a thread per tree sending blocking queries,
//! each reporting only when the entries under its tree change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::client::{Client, Limit, Method};
use super::keys::{entry_of, kv_path, under};
use super::ConsulStore;
use crate::clock::{pause_unless_stopped, random_fraction};
use crate::error::Result;
use crate::store::feed::{failure_backoff, ChannelFeed, FeedEvent};
use crate::store::{http, ChangeFeed, Entry, Store};

/// How long one blocking query may wait (Consul's default query time).
const WATCH_WAIT: Duration = Duration::from_secs(600);
/// Blocking queries a follower may send back to back…
const WATCH_BURST: f64 = 5.0;
/// …after which it sends one per this interval while results churn.
const WATCH_REFILL: Duration = Duration::from_secs(5);

/// What a node's change feed compares: each key and its index.
fn digest(entries: &[Entry]) -> Vec<(String, u64)> {
    entries.iter().map(|e| (e.key.clone(), e.version)).collect()
}

impl ConsulStore {
    /// A blocking query per root, each in its own thread, from the index of
    /// a first read; a wake-up whose entries under the root did not change
    /// (a sibling such as `web-10` for `web-1`, a timeout) is not reported.
    pub(super) fn blocking_feed(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        let snapshot = self.read_trees(roots)?;
        let (feed, tx, stop) = ChannelFeed::new(self.client.display.clone());
        for (root, entries) in roots.iter().zip(&snapshot.trees) {
            let follower = Follower {
                client: Arc::clone(&self.client),
                root: root.clone(),
                // Never 0: that does not block. A tree's index is at least
                // the highest ModifyIndex in it; if it is higher, the first
                // query answers at once and the digest shows nothing new.
                index: entries.iter().map(|e| e.version).max().unwrap_or(0).max(1),
                seen: digest(entries),
                tx: tx.clone(),
                stop: Arc::clone(&stop),
            };
            thread::spawn(move || follower.run());
        }
        Ok(Box::new(feed))
    }
}

/// One of the threads behind a Consul [`ChannelFeed`]: blocking queries
/// over one tree.
struct Follower {
    client: Arc<Client>,
    root: String,
    /// The index to block on; 0 only for a fresh read after a reset.
    index: u64,
    /// The entries last seen under the root.
    seen: Vec<(String, u64)>,
    tx: Sender<FeedEvent>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn run(mut self) {
        let mut failures = 0u32;
        let mut tokens = WATCH_BURST;
        let mut refilled = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            // A token bucket, so that churn cannot turn into a request storm.
            tokens = (tokens + refilled.elapsed().as_secs_f64() / WATCH_REFILL.as_secs_f64())
                .min(WATCH_BURST);
            refilled = Instant::now();
            if tokens < 1.0 {
                let wait = WATCH_REFILL.mul_f64((1.0 - tokens) * (1.0 + random_fraction() / 10.0));
                if !pause_unless_stopped(&self.stop, wait) {
                    return;
                }
                tokens = 1.0;
                refilled = Instant::now();
            }
            tokens -= 1.0;
            let asked = self.index;
            match self.client.blocking_list(&self.root, asked) {
                Ok((index, entries)) => {
                    failures = 0;
                    let seen = digest(&entries);
                    // Lower than asked: a snapshot was restored or
                    // tombstones were reaped. Start over with a fresh read.
                    let went_back = index < asked;
                    self.index = if went_back { 0 } else { index.max(1) };
                    if went_back || seen != self.seen {
                        self.seen = seen;
                        if self.tx.send(FeedEvent::Changed).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    if self.tx.send(FeedEvent::Failed(e.to_string())).is_err()
                        || !pause_unless_stopped(&self.stop, failure_backoff(failures))
                    {
                        return;
                    }
                }
            }
        }
    }
}

impl Client {
    /// One blocking query over a tree: the index Consul answered with and
    /// the entries under `root` (the whole answer, not a difference).
    fn blocking_list(&self, root: &str, index: u64) -> Result<(u64, Vec<Entry>)> {
        let mut query = vec!["recurse".to_string()];
        if index > 0 {
            query.push(format!("index={index}"));
            query.push(format!("wait={}s", WATCH_WAIT.as_secs()));
        }
        let url = self.url(&kv_path(root)?, &query, true);
        // Consul holds the answer up to the wait plus a jitter of wait/16.
        let answer = WATCH_WAIT * 17 / 16 + self.timeout + Duration::from_secs(5);
        let reply = self
            .send(
                Method::Get,
                &url,
                None,
                Limit::Blocking {
                    connect: self.timeout,
                    answer,
                },
            )
            .map_err(|e| self.unavailable(http::describe(&e)))?;
        let entries = match reply.status {
            404 => Vec::new(),
            200 => {
                let body = self.json(&reply)?;
                body.as_array()
                    .map(|list| list.iter().map(entry_of).collect::<Result<Vec<_>>>())
                    .transpose()?
                    .unwrap_or_default()
            }
            401 | 403 => return Err(self.denied(root, &reply.body)),
            status => {
                return Err(self.unavailable(format!(
                    "HTTP {status} following {root}: {}",
                    self.quote(&reply.body)
                )))
            }
        };
        let index = reply
            .index
            .ok_or_else(|| self.unavailable(format!("no X-Consul-Index following {root}")))?;
        Ok((
            index,
            entries
                .into_iter()
                .filter(|e| under(&e.key, root))
                .collect(),
        ))
    }
}
