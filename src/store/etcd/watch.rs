//! The etcd change feed: one watch stream per root, each on a thread of its
//! own, resumed from the next revision whenever it breaks.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use super::client::Client;
use super::encoding::{b64, in_tree, number, prefix_end};
use super::EtcdStore;
use crate::clock::pause_unless_stopped;
use crate::error::Result;
use crate::store::feed::{failure_backoff, reconnect_splay, ChannelFeed, FeedEvent};
use crate::store::http;
use crate::store::{ChangeFeed, Store};

impl EtcdStore {
    /// One watch stream per root, each over the root and every key that
    /// starts with it (events on a sibling such as `web-10` for `web-1` are
    /// dropped here and wake nobody), resumed from the next revision
    /// whenever it breaks.
    ///
    /// One create request per stream, never several: etcd's gateway starts
    /// streaming replies while still reading the request body, and Go's HTTP
    /// server may then drop the rest of the body, silently losing watchers.
    pub(super) fn open_feed(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        let baseline = self.read_trees(roots)?.revision.unwrap_or(0);
        let (feed, tx, stop) = ChannelFeed::new(self.client.display.clone());
        for root in roots {
            let watcher = Watcher {
                client: Arc::clone(&self.client),
                key: root.as_bytes().to_vec(),
                range_end: prefix_end(root.as_bytes()),
                next_revision: baseline + 1,
                tx: tx.clone(),
                stop: Arc::clone(&stop),
            };
            thread::spawn(move || watcher.run());
        }
        Ok(Box::new(feed))
    }
}

/// One of the threads behind an etcd [`ChannelFeed`]: a stream over one key range.
struct Watcher {
    client: Arc<Client>,
    key: Vec<u8>,
    range_end: Vec<u8>,
    next_revision: u64,
    tx: Sender<FeedEvent>,
    stop: Arc<AtomicBool>,
}

/// Why a stream ended.
enum StreamEnd {
    /// It ended or broke; open it again at once.
    Reopen,
    /// Something failed; tell the feed and back off.
    Failed(String),
    /// The feed was dropped.
    Stop,
}

impl Watcher {
    fn run(mut self) {
        let mut failures: u32 = 0;
        while !self.stop.load(Ordering::SeqCst) {
            match self.stream() {
                StreamEnd::Stop => return,
                StreamEnd::Reopen => {
                    failures = 0;
                    // A stream usually breaks because the member went away,
                    // for every agent at once: reopen after a random splay
                    // (no change is missed: it resumes at `next_revision`).
                    if !pause_unless_stopped(&self.stop, reconnect_splay()) {
                        return;
                    }
                }
                StreamEnd::Failed(reason) => {
                    if self.tx.send(FeedEvent::Failed(reason)).is_err() {
                        return;
                    }
                    failures += 1;
                    if !pause_unless_stopped(&self.stop, failure_backoff(failures)) {
                        return;
                    }
                }
            }
        }
    }

    fn request(&self) -> String {
        json!({"create_request": {
            "key": b64(&self.key),
            "range_end": b64(&self.range_end),
            "start_revision": self.next_revision.to_string(),
        }})
        .to_string()
    }

    fn stream(&mut self) -> StreamEnd {
        let client = Arc::clone(&self.client);
        let deadline = Instant::now() + client.timeout;
        let mut last = String::from("no endpoint answered");
        for endpoint in &client.endpoints {
            if client.credentials.is_some() && client.current_token().is_none() {
                if let Err(e) = client.authenticate(endpoint, deadline) {
                    last = e.to_string();
                    continue;
                }
            }
            let mut request = client.stream_agent.post(&format!("{endpoint}/v3/watch"));
            if let Some(token) = client.current_token() {
                request = request.header("Authorization", token);
            }
            let response = match request.send(self.request()) {
                Ok(r) if r.status().as_u16() == 200 => r,
                Ok(r) => {
                    last = format!("{endpoint}: watch answered HTTP {}", r.status().as_u16());
                    continue;
                }
                Err(e) => {
                    last = format!("{endpoint}: {}", http::describe(&e));
                    continue;
                }
            };
            return self.follow(response);
        }
        StreamEnd::Failed(last)
    }

    fn follow(&mut self, response: ureq::http::Response<ureq::Body>) -> StreamEnd {
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            if self.stop.load(Ordering::SeqCst) {
                return StreamEnd::Stop;
            }
            let Ok(line) = line else {
                return StreamEnd::Reopen;
            };
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let result = &message["result"];
            if result
                .get("canceled")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                let compacted = number(&result["compact_revision"]);
                if compacted > 0 {
                    // History we missed is gone: resume from what is left,
                    // and have the reader look afresh.
                    self.next_revision = compacted;
                    return match self.tx.send(FeedEvent::Changed) {
                        Ok(()) => StreamEnd::Reopen,
                        Err(_) => StreamEnd::Stop,
                    };
                }
                let reason = result
                    .get("cancel_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("canceled by etcd")
                    .to_string();
                if reason.contains("auth") || reason.contains("user name") {
                    *self.client.token.lock().expect("token lock") = None;
                }
                return StreamEnd::Failed(format!("watch canceled: {reason}"));
            }
            if let Some(events) = result.get("events").and_then(Value::as_array) {
                let newest = events
                    .iter()
                    .map(|e| number(&e["kv"]["mod_revision"]))
                    .max()
                    .unwrap_or(0);
                self.next_revision = self.next_revision.max(newest + 1);
                // The range also holds siblings (`web-1` covers `web-10`):
                // only the root and what is under it wake the reader.
                let ours = events.iter().any(|e| {
                    let key = B64
                        .decode(e["kv"]["key"].as_str().unwrap_or_default())
                        .unwrap_or_default();
                    in_tree(&key, &self.key)
                });
                if ours && self.tx.send(FeedEvent::Changed).is_err() {
                    return StreamEnd::Stop;
                }
            }
        }
        StreamEnd::Reopen
    }
}
