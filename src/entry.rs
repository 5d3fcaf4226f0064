//! One key and its value as a store holds it: what every backend hands back
//! and what [`crate::document`] folds into documents. It sits below both so
//! neither has to import the other.

/// One key and its value as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Full key, prefix included, `/`-separated.
    pub key: String,
    /// Raw value; decoded with [`crate::document::decode_value`].
    pub value: Vec<u8>,
    /// The store's version of this key (etcd `mod_revision`, Consul
    /// `ModifyIndex`, ZooKeeper data version, a content hash for files), to
    /// compare against in a later [`crate::store::Txn`].
    pub version: u64,
}
