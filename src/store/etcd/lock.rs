//! The etcd lock: a key bound to a lease, and the thread that renews the
//! lease while the lock is held (the one part of the store that lives on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{Client, Kind};
use super::encoding::{b64, number};
use super::EtcdStore;
use crate::error::{Error, Result};
use crate::store::HeldLock;

impl EtcdStore {
    /// A lease of `ttl` and a create-if-absent put of `name` bound to it; a
    /// thread keeps the lease alive while the lock is held. A crashed holder
    /// stops renewing, and etcd deletes the key when the lease expires.
    pub(super) fn acquire_lock(
        &self,
        name: &str,
        ttl: Duration,
        holder: &str,
    ) -> Result<Box<dyn HeldLock>> {
        let ttl_s = ttl.as_secs().max(2);
        let grant = self.client.call(
            "lease/grant",
            &json!({"TTL": ttl_s.to_string(), "ID": "0"}),
            Kind::Write,
        )?;
        let lease = number(&grant["ID"]);
        if lease == 0 {
            return Err(self.client.unavailable("etcd granted no lease"));
        }
        let revoke = || {
            let _ = self.client.call(
                "lease/revoke",
                &json!({"ID": lease.to_string()}),
                Kind::Write,
            );
        };
        let body = json!({
            "compare": [{"key": b64(name), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": b64(name), "value": b64(holder), "lease": lease.to_string()}}],
            "failure": [{"request_range": {"key": b64(name)}}],
        });
        let taken = match self.client.call("kv/txn", &body, Kind::Write) {
            Ok(reply)
                if reply
                    .get("succeeded")
                    .and_then(Value::as_bool)
                    .unwrap_or(false) =>
            {
                Ok(())
            }
            Ok(reply) => Err(reply["responses"][0]["response_range"].clone()),
            // The outcome is unknown: whether the key carries our lease says.
            Err(Error::Unavailable { .. }) => {
                let current =
                    self.client
                        .call("kv/range", &json!({"key": b64(name)}), Kind::Read)?;
                if number(&current["kvs"][0]["lease"]) == lease {
                    Ok(())
                } else {
                    Err(current)
                }
            }
            Err(e) => {
                revoke();
                return Err(e);
            }
        };
        if let Err(range) = taken {
            revoke();
            let holder = Client::entries_of(&range)?
                .into_iter()
                .next()
                .map(|e| String::from_utf8_lossy(&e.value).into_owned())
                .unwrap_or_else(|| {
                    "another process (the lock was released meanwhile; try again)".into()
                });
            return Err(Error::LockHeld {
                name: name.to_string(),
                holder,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = {
            let (client, stop, lost) = (
                Arc::clone(&self.client),
                Arc::clone(&stop),
                Arc::clone(&lost),
            );
            thread::spawn(move || {
                keep_alive(&client, lease, Duration::from_secs(ttl_s), &stop, &lost)
            })
        };
        Ok(Box::new(EtcdLock {
            name: name.to_string(),
            client: Arc::clone(&self.client),
            lease,
            stop,
            lost,
            keeper: Some(keeper),
        }))
    }
}

/// A held lock: a key bound to a lease this process keeps alive.
struct EtcdLock {
    name: String,
    client: Arc<Client>,
    lease: u64,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    keeper: Option<JoinHandle<()>>,
}

impl HeldLock for EtcdLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::lock_lost(
                &self.name,
                "its lease expired before it could be renewed",
            ));
        }
        Ok(())
    }
}

impl Drop for EtcdLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
        // Revoking deletes the key at once instead of at lease expiry.
        let _ = self.client.call(
            "lease/revoke",
            &json!({"ID": self.lease.to_string()}),
            Kind::Write,
        );
    }
}

/// Renews the lease every third of its TTL until stopped; marks the lock
/// lost when etcd says the lease is gone or no renewal succeeded for a TTL.
fn keep_alive(client: &Client, lease: u64, ttl: Duration, stop: &AtomicBool, lost: &AtomicBool) {
    let mut last_renewed = Instant::now();
    loop {
        let next = Instant::now() + ttl / 3;
        while Instant::now() < next {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            thread::sleep(Duration::from_millis(25));
        }
        match client.call(
            "lease/keepalive",
            &json!({"ID": lease.to_string()}),
            Kind::Read,
        ) {
            // An expired or revoked lease answers without a TTL.
            Ok(reply) if number(&reply["result"]["TTL"]) > 0 => last_renewed = Instant::now(),
            Ok(_) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(_) if last_renewed.elapsed() >= ttl => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(_) => {}
        }
    }
}
