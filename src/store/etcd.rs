//! etcd v3 backend (placeholder: being built).

use std::time::Duration;

use super::{
    ChangeFeed, HeldLock, Snapshot, Store, StoreKind, StoreOptions, StoreUrl, Txn, TxnOutcome,
};
use crate::config::Env;
use crate::error::{Error, Result};

/// A view kept in etcd.
pub struct EtcdStore {
    url: String,
}

impl EtcdStore {
    /// Opens the store the URL names.
    pub fn open(url: &StoreUrl, _options: &StoreOptions, _env: Env) -> Result<EtcdStore> {
        Err(Error::config(
            "store URL",
            format!("{url}: the etcd backend is not available in this build yet"),
        ))
    }
}

impl Store for EtcdStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Etcd
    }

    fn describe(&self) -> String {
        self.url.clone()
    }

    fn read_trees(&self, _roots: &[String]) -> Result<Snapshot> {
        unimplemented!()
    }

    fn commit(&self, _txn: &Txn) -> Result<TxnOutcome> {
        unimplemented!()
    }

    fn lock(&self, _name: &str, _ttl: Duration, _holder: &str) -> Result<Box<dyn HeldLock>> {
        unimplemented!()
    }

    fn watch(&self, _roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        unimplemented!()
    }
}
