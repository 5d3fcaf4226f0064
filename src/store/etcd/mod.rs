//! The etcd v3 backend, over etcd's JSON gateway (`POST /v3/...`) with
//! blocking `ureq` calls: no gRPC stack, no async runtime.
//!
//! What etcd's gateway makes us mind (see the protocol notes in the README):
//! keys and values are base64, 64-bit numbers come as strings and zero
//! fields are left out; the token goes in `Authorization` without `Bearer`;
//! a write that timed out may still be applied later, so it is never retried
//! blindly (the caller re-reads and compares); a member without quorum would
//! hold a linearizable request for seconds, so such requests say
//! `Grpc-Metadata-hasleader` and fail at once, and every request carries a
//! `Grpc-Timeout` so the server gives up when we do.
//!
//! This file holds the store itself (opening it, reads and transactions);
//! the URL and environment settings, the HTTP client, the wire encoding,
//! the lock and the watch streams each have a file of their own.

mod client;
mod encoding;
mod lock;
mod settings;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use self::client::{Client, Kind};
use self::encoding::{b64, number};
use self::settings::{credentials, endpoint_urls, tls_settings};
use super::http::{self, Bound};
use super::{
    ChangeFeed, Compare, Entry, HeldLock, Op, Snapshot, Store, StoreKind, StoreOptions, StoreUrl,
    Txn, TxnLimits, TxnOutcome,
};
use crate::env::Env;
use crate::error::{Error, Result};

/// Options the etcd URL accepts (`etcd://h:2379?consistency=serializable`).
const OPTIONS: [&str; 2] = ["consistency", "password_file"];
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` is 1.5 MiB for the whole request;
/// stay clear of it, leaving room for keys, base64 growth aside.
const MAX_REQUEST_BYTES: usize = 1_400_000;
/// A watch stream idle this long is re-opened (from the next revision, so
/// nothing is missed); it also bounds how long a stopped feed's thread lives.
const WATCH_IDLE: Duration = Duration::from_secs(600);

/// A view kept in etcd.
pub struct EtcdStore {
    client: Arc<Client>,
}

impl EtcdStore {
    /// Opens the store the URL names; credentials and TLS files come from
    /// the etcdctl variables (`ETCDCTL_ENDPOINTS`, `ETCDCTL_USER`,
    /// `ETCDCTL_PASSWORD`, `ETCDCTL_CACERT`, `ETCDCTL_CERT`, `ETCDCTL_KEY`,
    /// `ETCDCTL_INSECURE_SKIP_TLS_VERIFY`).
    pub fn open(url: &StoreUrl, options: &StoreOptions, env: Env) -> Result<EtcdStore> {
        let StoreUrl::Etcd {
            https, endpoints, ..
        } = url
        else {
            unreachable!("EtcdStore::open is given etcd URLs only")
        };
        let display = url.to_string();
        let opts = url.check_options(&OPTIONS)?;
        let serializable = match opts.get("consistency").map(String::as_str) {
            None | Some("linearizable") => false,
            Some("serializable") => true,
            Some(other) => {
                return Err(Error::config(
                    format!("store URL {display}"),
                    format!("consistency {other:?} is not linearizable or serializable"),
                ))
            }
        };
        let scheme = if *https { "https" } else { "http" };
        let endpoints = endpoint_urls(endpoints, scheme, env)?;
        let tls = tls_settings(env)?;
        let credentials = credentials(env, opts.get("password_file").map(PathBuf::from))?;
        let client = Client {
            display,
            endpoints,
            agent: http::agent(Bound::Whole(options.timeout), &tls)?,
            stream_agent: http::agent(
                Bound::Stream {
                    connect: options.timeout,
                    idle: Some(WATCH_IDLE),
                },
                &tls,
            )?,
            timeout: options.timeout,
            serializable,
            credentials,
            token: Mutex::new(None),
            preferred: AtomicUsize::new(0),
        };
        Ok(EtcdStore {
            client: Arc::new(client),
        })
    }
}

impl Store for EtcdStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Etcd
    }

    fn describe(&self) -> String {
        self.client.display.clone()
    }

    /// One txn of range ops, so every tree is read at one revision: for each
    /// root, the key itself and the keys under `root/` (not a plain prefix,
    /// which would also match `web-10` for `web-1`).
    fn read_trees(&self, roots: &[String]) -> Result<Snapshot> {
        let ops: Vec<Value> = roots
            .iter()
            .flat_map(|r| self.client.range_ops(r))
            .collect();
        let mut trees: Vec<Vec<Entry>> = vec![Vec::new(); roots.len()];
        let mut revision: Option<u64> = None;
        for (chunk_index, chunk) in ops.chunks(MAX_TXN_OPS).enumerate() {
            let mut chunk = chunk.to_vec();
            if let Some(rev) = revision {
                // Later chunks read the same snapshot as the first.
                for op in &mut chunk {
                    op["request_range"]["revision"] = json!(rev.to_string());
                }
            }
            let mut reply = self
                .client
                .call("kv/txn", &json!({"success": chunk}), Kind::Read)?;
            revision.get_or_insert(number(&reply["header"]["revision"]));
            // Taken, not cloned: the answer for a fleet is megabytes.
            let responses = match reply.get_mut("responses").map(Value::take) {
                Some(Value::Array(responses)) => responses,
                _ => Vec::new(),
            };
            if responses.len() != chunk.len() {
                return Err(self.client.unavailable(format!(
                    "asked {} ranges, etcd answered {}",
                    chunk.len(),
                    responses.len()
                )));
            }
            for (i, response) in responses.iter().enumerate() {
                let op_index = chunk_index * MAX_TXN_OPS + i;
                trees[op_index / 2].extend(Client::entries_of(&response["response_range"])?);
            }
        }
        Ok(Snapshot { trees, revision })
    }

    fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        if txn.ops.len() > MAX_TXN_OPS || txn.compares.len() > MAX_TXN_OPS {
            return Err(Error::bad_key(
                txn.ops.first().map(Op::key).unwrap_or_default(),
                format!("this change needs more than etcd's {MAX_TXN_OPS} operations in one transaction"),
            ));
        }
        let size: usize = txn.ops.iter().map(Op::size).sum();
        if size > MAX_REQUEST_BYTES {
            return Err(Error::bad_key(
                txn.ops.first().map(Op::key).unwrap_or_default(),
                format!("this change writes {size} bytes, more than etcd takes in one request (about 1.5 MiB)"),
            ));
        }
        let compare: Vec<Value> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Version { key, version } => json!({
                    "key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": version.to_string()
                }),
                Compare::Absent { key } => json!({
                    "key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"
                }),
            })
            .collect();
        let deletes = txn.ops.iter().filter_map(|op| match op {
            Op::Delete { key } => Some(json!({"request_delete_range": {"key": b64(key)}})),
            Op::Put { .. } => None,
        });
        let puts = txn.ops.iter().filter_map(|op| match op {
            Op::Put { key, value } => {
                Some(json!({"request_put": {"key": b64(key), "value": b64(value)}}))
            }
            Op::Delete { .. } => None,
        });
        let success: Vec<Value> = deletes.chain(puts).collect();
        let kind = if success.is_empty() {
            Kind::Read
        } else {
            Kind::Write
        };
        let reply = self.client.call(
            "kv/txn",
            &json!({"compare": compare, "success": success}),
            kind,
        )?;
        // `succeeded` is left out when false.
        if reply
            .get("succeeded")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            Ok(TxnOutcome::Committed {
                revision: Some(number(&reply["header"]["revision"])),
            })
        } else {
            Ok(TxnOutcome::Conflict)
        }
    }

    fn txn_limits(&self) -> TxnLimits {
        TxnLimits {
            max_ops: Some(MAX_TXN_OPS),
            max_bytes: Some(MAX_REQUEST_BYTES),
        }
    }

    /// A lease-bound key (see `lock.rs`).
    fn lock(&self, name: &str, ttl: Duration, holder: &str) -> Result<Box<dyn HeldLock>> {
        self.acquire_lock(name, ttl, holder)
    }

    /// One watch stream per root (see `watch.rs`).
    fn watch(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        self.open_feed(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::env_of;

    #[test]
    fn unknown_url_options_and_consistency_values_are_refused() {
        let env = env_of(&[]);
        let options = StoreOptions {
            timeout: Duration::from_secs(1),
        };
        for url in ["etcd://h:1?consistency=eventual", "etcd://h:1?colour=blue"] {
            let err = EtcdStore::open(&url.parse().unwrap(), &options, &env)
                .err()
                .unwrap();
            assert_eq!(err.exit_code(), 78, "{url}: {err}");
        }
        assert!(EtcdStore::open(
            &"etcd://h:1?consistency=serializable".parse().unwrap(),
            &options,
            &env
        )
        .is_ok());
    }
}
