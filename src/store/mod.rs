//! The shared data view behind one small interface, one backend per file.
//!
//! Every backend offers the same operations, sized for Consul, etcd and
//! ZooKeeper: read several trees in one call, a compare-and-set transaction,
//! a lock with a TTL and a change feed. Callers fold what they read into
//! documents with [`crate::document::fold`], so a backend may hand back a
//! document as one key (`P/clusters/web/desired = {...}`) or as a subtree of
//! scalar keys (`.../desired/state = off`): both read the same.

mod consul;
mod etcd;
mod feed;
mod file;
pub mod http;
mod url;
mod zookeeper;

pub use consul::ConsulStore;
pub use etcd::EtcdStore;
pub use file::FileStore;
pub use url::StoreUrl;
pub use zookeeper::ZooKeeperStore;

use std::fmt;
use std::time::Duration;

pub use crate::entry::Entry;
use crate::env::Env;
use crate::error::{Error, Result};

/// Which kind of store a backend talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    File,
    Consul,
    Etcd,
    ZooKeeper,
}

impl StoreKind {
    /// Every kind, in the order `convergent version` lists them.
    pub const ALL: [StoreKind; 4] = [
        StoreKind::File,
        StoreKind::Consul,
        StoreKind::Etcd,
        StoreKind::ZooKeeper,
    ];

    /// The name used in output (`source.store`) and messages.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Consul => "consul",
            StoreKind::Etcd => "etcd",
            StoreKind::ZooKeeper => "zookeeper",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of one [`Store::read_trees`] call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One list of entries per requested root, in the same order.
    pub trees: Vec<Vec<Entry>>,
    /// The store revision all trees were read at, where the store has one.
    pub revision: Option<u64>,
}

/// A condition of a [`Txn`]; all must hold for its operations to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key exists at exactly this version.
    Version { key: String, version: u64 },
    /// The key does not exist.
    Absent { key: String },
}

/// A write in a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set the key to the value.
    Put { key: String, value: Vec<u8> },
    /// Remove the key (not its sub-keys).
    Delete { key: String },
}

/// A compare-and-set transaction: when every compare holds, every op applies,
/// atomically; otherwise nothing changes. Deletes apply before puts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

/// Limits on one transaction, where the store has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnLimits {
    /// Operations per transaction (etcd 128, Consul 64).
    pub max_ops: Option<usize>,
    /// Bytes of keys and values per transaction (etcd 1.5 MiB, Consul 512 KiB).
    pub max_bytes: Option<usize>,
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }

    /// Bytes of key and value.
    pub fn size(&self) -> usize {
        match self {
            Op::Put { key, value } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
        }
    }
}

impl TxnLimits {
    /// The first operation too big for any transaction on its own.
    pub fn oversized<'o>(&self, ops: &'o [Op]) -> Option<&'o Op> {
        let max = self.max_bytes?;
        ops.iter().find(|op| op.size() > max)
    }

    /// Splits unconditional operations into transactions within the limits,
    /// puts before deletes: a reader between two of them then sees a new
    /// document with stale sub-keys still laid over it, never a missing one.
    pub fn split(&self, ops: Vec<Op>) -> Vec<Vec<Op>> {
        let fits_one = self.max_ops.is_none_or(|n| ops.len() <= n)
            && self
                .max_bytes
                .is_none_or(|n| ops.iter().map(Op::size).sum::<usize>() <= n);
        if fits_one {
            return vec![ops];
        }
        let (puts, deletes): (Vec<Op>, Vec<Op>) =
            ops.into_iter().partition(|op| matches!(op, Op::Put { .. }));
        let mut chunks: Vec<Vec<Op>> = Vec::new();
        let mut bytes = 0;
        for op in puts.into_iter().chain(deletes) {
            let full = chunks.last().is_none_or(|c| {
                self.max_ops.is_some_and(|n| c.len() >= n)
                    || self
                        .max_bytes
                        .is_some_and(|n| !c.is_empty() && bytes + op.size() > n)
                    || (matches!(op, Op::Delete { .. })
                        && c.iter().any(|o| matches!(o, Op::Put { .. })))
            });
            if full {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += op.size();
            chunks.last_mut().expect("a chunk was pushed").push(op);
        }
        chunks
    }
}

/// What became of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Applied; the store's new revision where it has one.
    Committed { revision: Option<u64> },
    /// A compare failed; nothing was written.
    Conflict,
}

/// A lock held in the store; dropping it releases it.
pub trait HeldLock: Send {
    /// The lock's name.
    fn name(&self) -> &str;
    /// Fails when the lock was lost (lease or session expired): the holder
    /// must stop acting on it.
    fn check(&self) -> Result<()>;
}

/// A feed of changes to some trees of the store.
pub trait ChangeFeed: Send {
    /// Waits up to `timeout` for a change to the watched trees; `Ok(true)`
    /// when something changed since the previous call (or since the feed was
    /// created), `Ok(false)` when the time ran out first.
    fn wait(&mut self, timeout: Duration) -> Result<bool>;
}

/// A shared data view.
pub trait Store {
    /// Which kind of store this is.
    fn kind(&self) -> StoreKind;

    /// The store's address for messages (never carries credentials).
    fn describe(&self) -> String;

    /// Reads several trees — each root key and everything under `root/` —
    /// in one round trip where the store allows, all at one revision.
    fn read_trees(&self, roots: &[String]) -> Result<Snapshot>;

    /// Applies a compare-and-set transaction.
    fn commit(&self, txn: &Txn) -> Result<TxnOutcome>;

    /// Takes the lock `name` (its full key, under `P/locks/`), failing at
    /// once with [`Error::LockHeld`] when someone else holds it. A holder that
    /// dies loses it within `ttl`; `holder` is what others are told.
    fn lock(&self, name: &str, ttl: Duration, holder: &str) -> Result<Box<dyn HeldLock>>;

    /// A feed of changes under the given roots.
    fn watch(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>>;

    /// Reads one tree.
    fn read_tree(&self, root: &str) -> Result<(Vec<Entry>, Option<u64>)> {
        let mut snapshot = self.read_trees(&[root.to_string()])?;
        Ok((snapshot.trees.pop().unwrap_or_default(), snapshot.revision))
    }

    /// Reads one key (not its sub-keys).
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let (entries, _) = self.read_tree(key)?;
        Ok(entries.into_iter().find(|e| e.key == key))
    }

    /// Writes `value` at `key` if the key is still at `expected` (`None`:
    /// still absent).
    fn compare_and_put(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<TxnOutcome> {
        self.commit(&Txn {
            compares: vec![compare(key, expected)],
            ops: vec![Op::Put {
                key: key.to_string(),
                value,
            }],
        })
    }

    /// The same store reading only what a quorum has confirmed, where its
    /// reads are not already so (Consul's default and `stale` modes, etcd's
    /// `serializable`); `None` when they are. Writes are the same either way.
    fn consistent(&self) -> Option<Box<dyn Store>> {
        None
    }

    /// How big one transaction may be; bulk writes (`import`) split into
    /// transactions within these limits.
    fn txn_limits(&self) -> TxnLimits {
        TxnLimits::default()
    }

    /// Fires a store event (a Consul user event) to tell nodes to look now;
    /// stores without events refuse.
    fn fire_event(&self, name: &str, _payload: &[u8]) -> Result<()> {
        Err(Error::config(
            "store URL",
            format!("{}: event {name:?} needs a Consul store", self.describe()),
        ))
    }

    /// Deletes `key` if it is still at version `expected`.
    fn compare_and_delete(&self, key: &str, expected: u64) -> Result<TxnOutcome> {
        self.commit(&Txn {
            compares: vec![compare(key, Some(expected))],
            ops: vec![Op::Delete {
                key: key.to_string(),
            }],
        })
    }
}

fn compare(key: &str, expected: Option<u64>) -> Compare {
    match expected {
        Some(version) => Compare::Version {
            key: key.to_string(),
            version,
        },
        None => Compare::Absent {
            key: key.to_string(),
        },
    }
}

/// Settings every backend needs.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Bound on every network call.
    pub timeout: Duration,
}

/// Opens the store the URL names. Network backends read their credentials
/// and TLS files from their own environment variables (`CONSUL_*`,
/// `ETCDCTL_*`, `CONVERGENT_ZK_AUTH`) through `env`.
pub fn open(url: &StoreUrl, options: &StoreOptions, env: Env) -> Result<Box<dyn Store>> {
    match url {
        StoreUrl::File { path } => Ok(Box::new(FileStore::new(path.clone(), options.timeout))),
        StoreUrl::Etcd { .. } => Ok(Box::new(EtcdStore::open(url, options, env)?)),
        StoreUrl::Consul { .. } => Ok(Box::new(ConsulStore::open(url, options, env)?)),
        StoreUrl::ZooKeeper { .. } => Ok(Box::new(ZooKeeperStore::open(url, options, env)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, size: usize) -> Op {
        Op::Put {
            key: key.into(),
            value: vec![b'x'; size],
        }
    }

    #[test]
    fn small_batches_stay_one_transaction() {
        let ops = vec![put("a", 1), Op::Delete { key: "b".into() }];
        let limits = TxnLimits {
            max_ops: Some(64),
            max_bytes: Some(1000),
        };
        assert_eq!(limits.split(ops.clone()), vec![ops]);
    }

    #[test]
    fn large_batches_split_by_count_and_size_puts_first() {
        let mut ops: Vec<Op> = (0..5)
            .map(|i| Op::Delete {
                key: format!("d{i}"),
            })
            .collect();
        ops.extend((0..10).map(|i| put(&format!("p{i}"), 10)));
        let limits = TxnLimits {
            max_ops: Some(4),
            max_bytes: Some(35),
        };
        let chunks = limits.split(ops);
        assert!(chunks
            .iter()
            .all(|c| c.len() <= 4 && c.iter().map(Op::size).sum::<usize>() <= 35));
        let flat: Vec<&Op> = chunks.iter().flatten().collect();
        assert_eq!(flat.len(), 15);
        let first_delete = flat
            .iter()
            .position(|o| matches!(o, Op::Delete { .. }))
            .unwrap();
        assert!(
            flat[first_delete..]
                .iter()
                .all(|o| matches!(o, Op::Delete { .. })),
            "puts come first"
        );
        assert!(chunks
            .iter()
            .all(|c| !(c.iter().any(|o| matches!(o, Op::Put { .. }))
                && c.iter().any(|o| matches!(o, Op::Delete { .. })))));
    }

    #[test]
    fn an_operation_bigger_than_a_whole_transaction_is_found() {
        let limits = TxnLimits {
            max_ops: Some(4),
            max_bytes: Some(100),
        };
        let ops = vec![put("a", 10), put("big", 200), put("b", 10)];
        assert_eq!(limits.oversized(&ops).map(Op::key), Some("big"));
        assert_eq!(limits.oversized(&ops[..1]), None);
        assert_eq!(TxnLimits::default().oversized(&ops), None);
    }
}
