//! The Consul backend, over Consul's HTTP API (`/v1/txn`, `/v1/kv`,
//! `/v1/session`, `/v1/event`) with blocking `ureq` calls.
//!
//! What Consul makes us mind (see the protocol notes in the README):
//! - every read is one read-only `/v1/txn` of `get-tree` ops: a `get` of a
//!   missing key would fail the whole transaction. A tree of `web-1` also
//!   holds `web-10`, so only the key itself and the keys under `key/` are kept;
//! - a transaction takes at most 64 operations and 512 KiB of body, and its
//!   values are base64 (a third larger); a value takes at most 512 KiB. Both
//!   are refused here, naming the key, before anything is sent;
//! - a compare-and-set that lost is a 409 with `Errors`, but so is a write
//!   the token may not make (`Permission denied` in the error): one is a
//!   conflict, the other exit 77;
//! - a write whose answer was lost may still be applied: it is never sent
//!   again here, the caller re-reads (see `crate::update`);
//! - list reads leave out what the token may not read, silently;
//! - blocking queries: the index is never 0 (that never blocks), it is reset
//!   when it goes backwards (snapshot restore), and the read timeout stays
//!   above the wait plus Consul's jitter of up to wait/16.
//!
//! This file holds the [`Store`] impl; the settings, the HTTP client, key
//! and transaction encoding, the lock and the change feed have files of
//! their own.

mod client;
mod keys;
mod lock;
mod settings;
mod txn;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use self::client::{Client, Kind, Method};
use self::keys::{encode, entry_of, under};
use self::settings::Consistency;
use self::txn::{is_write, txn_ops, MAX_TXN_BODY, MAX_TXN_OPS, MAX_VALUE_BYTES, TXN_SPLIT_BYTES};
use super::{
    ChangeFeed, Entry, HeldLock, Op, Snapshot, Store, StoreKind, Txn, TxnLimits, TxnOutcome,
};
use crate::error::{Error, Result};

/// A view kept in Consul's KV store.
pub struct ConsulStore {
    client: Arc<Client>,
}

impl Store for ConsulStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Consul
    }

    fn describe(&self) -> String {
        self.client.display.clone()
    }

    /// One read-only transaction with a `get-tree` per root (64 roots per
    /// transaction). Consul's answer carries no index of its own, so the
    /// revision is the highest `ModifyIndex` among the entries read: it
    /// moves whenever one of them is written (a deleted key does not count).
    fn read_trees(&self, roots: &[String]) -> Result<Snapshot> {
        let client = &self.client;
        let mut trees: Vec<BTreeMap<String, Entry>> = vec![BTreeMap::new(); roots.len()];
        let mut revision = 0u64;
        let mut acl_deny = false;
        for (chunk_index, chunk) in roots.chunks(MAX_TXN_OPS).enumerate() {
            let ops: Vec<Value> = chunk
                .iter()
                .map(|root| json!({"KV": {"Verb": "get-tree", "Key": root}}))
                .collect();
            let reply = client.txn(&ops, Kind::Read, &chunk[0])?;
            acl_deny |= reply.acl_deny;
            let body = match reply.status {
                200 | 409 => client.json(&reply)?,
                _ => return Err(client.refused(&reply, &chunk[0])),
            };
            if reply.status == 409 {
                return Err(client.txn_denied(&body, chunk).unwrap_or_else(|| {
                    client.unavailable(format!(
                        "Consul refused to read {}: {}",
                        chunk[0],
                        client.quote(&body["Errors"].to_string())
                    ))
                }));
            }
            revision = revision.max(body["Index"].as_u64().unwrap_or(0));
            for result in body["Results"].as_array().into_iter().flatten() {
                let entry = entry_of(&result["KV"])?;
                revision = revision.max(entry.version);
                // Results are not tagged with their op; roots may overlap.
                for (i, root) in chunk.iter().enumerate() {
                    if under(&entry.key, root) {
                        trees[chunk_index * MAX_TXN_OPS + i]
                            .insert(entry.key.clone(), entry.clone());
                    }
                }
            }
        }
        // Consul leaves out what a request may not read: without a token,
        // under a deny policy, an empty answer most likely means that.
        if acl_deny && client.token.is_none() && trees.iter().all(BTreeMap::is_empty) {
            return Err(client.denied(
                roots.first().map_or("(none)", String::as_str),
                "nothing readable: the default ACL policy is deny, and Consul leaves out \
                 of reads what the token may not see",
            ));
        }
        Ok(Snapshot {
            trees: trees
                .into_iter()
                .map(|t| t.into_values().collect())
                .collect(),
            revision: (revision > 0).then_some(revision),
        })
    }

    /// One transaction: compares become `check-index` / `check-not-exists`
    /// or merge into the write of the same key (`cas`, `delete-cas`). A 409
    /// is a conflict unless an ACL refused an op (exit 77).
    fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        let client = &self.client;
        for op in &txn.ops {
            if let Op::Put { key, value } = op {
                if value.len() > MAX_VALUE_BYTES {
                    return Err(Error::bad_key(
                        key,
                        format!(
                            "the value is {} bytes; Consul takes at most {MAX_VALUE_BYTES} \
                             bytes (512 KiB, limits.kv_max_value_size) per key",
                            value.len()
                        ),
                    ));
                }
            }
        }
        let (ops, keys) = txn_ops(txn);
        if ops.is_empty() {
            return Ok(TxnOutcome::Committed { revision: None });
        }
        let largest = txn
            .ops
            .iter()
            .max_by_key(|op| op.size())
            .map_or(keys[0].as_str(), Op::key);
        if ops.len() > MAX_TXN_OPS {
            return Err(Error::bad_key(
                largest,
                format!(
                    "this change needs {} operations in one transaction; Consul takes at most \
                     {MAX_TXN_OPS}",
                    ops.len()
                ),
            ));
        }
        let size = serde_json::to_vec(&ops).map_or(0, |b| b.len());
        if size > MAX_TXN_BODY {
            return Err(Error::bad_key(
                largest,
                format!(
                    "this change is {size} bytes as a Consul transaction (values travel \
                     base64-encoded, a third larger); Consul takes at most {MAX_TXN_BODY} bytes \
                     (txn_max_req_len) in one"
                ),
            ));
        }
        let kind = if ops.iter().any(is_write) {
            Kind::Write
        } else {
            Kind::Read
        };
        let reply = client.txn(&ops, kind, largest)?;
        match reply.status {
            200 => {
                let body = client.json(&reply)?;
                let revision = body["Results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["KV"]["ModifyIndex"].as_u64())
                    .max();
                Ok(TxnOutcome::Committed { revision })
            }
            409 => {
                let body = client.json(&reply)?;
                match client.txn_denied(&body, &keys) {
                    Some(denied) => Err(denied),
                    None => Ok(TxnOutcome::Conflict),
                }
            }
            _ => Err(client.refused(&reply, largest)),
        }
    }

    /// `?consistent` unless asked for already: the default mode lets a
    /// server that believes it leads answer from a state that is not yet
    /// caught up (right after a restart it answered an index of 7 where the
    /// cluster was at 3300); `consistent` makes it confirm with a quorum.
    fn consistent(&self) -> Option<Box<dyn Store>> {
        if self.client.consistency == Consistency::Consistent {
            return None;
        }
        let client = Client {
            consistency: Consistency::Consistent,
            ..(*self.client).clone()
        };
        Some(Box::new(ConsulStore {
            client: Arc::new(client),
        }))
    }

    fn txn_limits(&self) -> TxnLimits {
        TxnLimits {
            max_ops: Some(MAX_TXN_OPS),
            max_bytes: Some(TXN_SPLIT_BYTES),
        }
    }

    /// A session-held key, renewed by a thread (see [`ConsulStore::session_lock`]).
    fn lock(&self, name: &str, ttl: Duration, holder: &str) -> Result<Box<dyn HeldLock>> {
        self.session_lock(name, ttl, holder)
    }

    /// Blocking queries, a thread per root (see [`ConsulStore::blocking_feed`]).
    fn watch(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        self.blocking_feed(roots)
    }

    /// `PUT /v1/event/fire/NAME` with the payload as body. Events travel by
    /// gossip, best effort: a hint to look now, never a source of truth.
    fn fire_event(&self, name: &str, payload: &[u8]) -> Result<()> {
        let about = format!("event {name:?}");
        if name.is_empty()
            || name.starts_with('_')
            || name.contains('/')
            || name.chars().any(char::is_control)
        {
            return Err(Error::bad_key(
                &about,
                "an event name must be non-empty, printable, without `/`, and not start with `_` \
                 (reserved by Consul)",
            ));
        }
        // Serf caps a whole user event at 512 bytes.
        if name.len() + payload.len() > 512 {
            return Err(Error::bad_key(
                &about,
                format!(
                    "name and payload are {} bytes; Consul events carry at most 512",
                    name.len() + payload.len()
                ),
            ));
        }
        let client = &self.client;
        let url = client.url(
            &format!("/v1/event/fire/{}", encode(name, false)),
            &[],
            false,
        );
        let reply = client.call(Method::Put, &url, Some(payload), Kind::Write, &about)?;
        match reply.status {
            200 => Ok(()),
            _ => Err(client.refused(&reply, &about)),
        }
    }
}
