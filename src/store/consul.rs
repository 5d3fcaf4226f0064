//! Consul KV backend (placeholder: being built).

use std::time::Duration;

use super::{
    ChangeFeed, HeldLock, Snapshot, Store, StoreKind, StoreOptions, StoreUrl, Txn, TxnOutcome,
};
use crate::config::Env;
use crate::error::{Error, Result};

/// A view kept in Consul's KV store.
pub struct ConsulStore {
    url: String,
}

impl ConsulStore {
    /// Opens the store the URL names.
    pub fn open(url: &StoreUrl, _options: &StoreOptions, _env: Env) -> Result<ConsulStore> {
        Err(Error::config(
            "store URL",
            format!("{url}: the Consul backend is not available in this build yet"),
        ))
    }
}

impl Store for ConsulStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Consul
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
