//! The shared data view behind one small interface, one backend per file.
//!
//! Every backend offers the same operations, sized for Consul, etcd and
//! ZooKeeper: read several trees in one call, a compare-and-set transaction,
//! a lock with a TTL and a change feed. Callers fold what they read into
//! documents with [`crate::document::fold`], so a backend may hand back a
//! document as one key (`P/clusters/web/desired = {...}`) or as a subtree of
//! scalar keys (`.../desired/state = off`): both read the same.

mod file;
mod url;

pub use file::FileStore;
pub use url::StoreUrl;

use std::fmt;
use std::time::Duration;

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

/// One key and its value as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Full key, prefix included, `/`-separated.
    pub key: String,
    /// Raw value; decoded with [`crate::document::decode_value`].
    pub value: Vec<u8>,
    /// The store's version of this key (etcd `mod_revision`, Consul
    /// `ModifyIndex`, ZooKeeper data version, a content hash for files), to
    /// compare against in a later [`Txn`].
    pub version: u64,
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

    /// Takes the lock `name`, failing at once with [`Error::LockHeld`] when
    /// someone else holds it. A holder that dies loses it within `ttl`.
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

/// Opens the store the URL names.
pub fn open(url: &StoreUrl, options: &StoreOptions) -> Result<Box<dyn Store>> {
    match url {
        StoreUrl::File { path } => Ok(Box::new(FileStore::new(path.clone(), options.timeout))),
        other => Err(Error::config(
            "store URL",
            format!(
                "{other}: the {} backend is not available in this build yet",
                other.kind()
            ),
        )),
    }
}
