//! The ZooKeeper backend (3.6 or later), over the `zookeeper-client` crate.
//!
//! Each key is a znode below the URL's chroot (`P/clusters/web/desired` is
//! `/P/clusters/web/desired`), its data the value. The znodes on the way
//! (`/P/clusters/web`) are directories: their data is empty, and empty data
//! reads as "no value" (`convergent` never writes an empty value; one would
//! read as `null` anyway). A key may hold a value and sub-keys at once.
//!
//! The client is async. Its runtime stays in this module (`runtime.rs`): one
//! thread running a single-threaded executor, started when a `zk://` store
//! is opened, so the file, etcd and Consul paths never start one. Everything
//! the rest of `convergent` calls is blocking, bounded by `--timeout`.
//!
//! What ZooKeeper makes us mind (see the README's "ZooKeeper" section):
//! - there are no range reads, so a tree is read level by level, one
//!   multi-read (`getData` + `getChildren` of every znode of the level) per
//!   level: documents stored whole at their key take one round trip;
//! - a multi can check a data version but not that a znode is absent, so an
//!   "absent" condition becomes a `create` that fails if the znode is there;
//! - `delete` refuses a znode with children, so deleting a key that has
//!   sub-keys empties its data instead, and directories a delete leaves empty
//!   are removed in the same multi;
//! - a request over `jute.maxbuffer` (about 1 MiB) makes the server drop the
//!   connection, so oversized writes are refused before sending;
//! - a data version restarts at 0 when a znode is deleted and created again,
//!   so a compare-and-set cannot tell a re-created key from an untouched one
//!   (ZooKeeper has no check on creation zxids).
//!
//! This file holds the URL's options and the [`Store`] impl; sessions and
//! errors are in `connection.rs`, credentials in `auth.rs`, then `read.rs`,
//! `commit.rs` (+ `plan.rs`), `lock.rs` and `watch.rs`.

mod auth;
mod commit;
mod connection;
mod lock;
mod plan;
mod read;
mod runtime;
mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use zookeeper_client as zk;

use self::auth::{digest, AclMode, AUTH_VAR};
use self::connection::{Connection, Fault};
use self::lock::{holder_of, lowest_lock, ZkLock, LOCK_PREFIX};
use self::plan::{too_big, MAX_REQUEST_BYTES, OP_OVERHEAD};
use self::runtime::Runtime;
use self::watch::{arm, follow, FeedShared, ZkFeed};
use super::{
    ChangeFeed, HeldLock, Snapshot, Store, StoreKind, StoreOptions, StoreUrl, Txn, TxnLimits,
    TxnOutcome,
};
use crate::env::Env;
use crate::error::{Error, Result};

/// Options the ZooKeeper URL accepts.
const OPTIONS: [&str; 3] = ["session_timeout", "auth_file", "acl"];
/// Session timeout unless the URL says otherwise; the server clamps it to
/// its `minSessionTimeout`..`maxSessionTimeout` (by default 4 s..40 s).
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the bytes of keys and values per transaction that `import`
/// splits to (and on one document it imports): each operation adds some
/// bytes of framing, and maybe creates the directories above it, which this
/// and [`SPLIT_OPS`] leave room for under [`MAX_REQUEST_BYTES`].
const SPLIT_BYTES: usize = 800_000;
/// Operations per transaction that `import` splits to.
const SPLIT_OPS: usize = 500;

/// A view kept in ZooKeeper.
pub struct ZooKeeperStore {
    conn: Arc<Connection>,
    runtime: Arc<Runtime>,
    timeout: Duration,
}

impl ZooKeeperStore {
    /// Opens the store the URL names. Digest credentials come from
    /// `CONVERGENT_ZK_AUTH` or the file the URL's `auth_file` names. No
    /// network yet: the session opens on first use.
    pub fn open(url: &StoreUrl, options: &StoreOptions, env: Env) -> Result<ZooKeeperStore> {
        let StoreUrl::ZooKeeper {
            servers, chroot, ..
        } = url
        else {
            unreachable!("ZooKeeperStore::open is given zk:// URLs only")
        };
        let display = url.to_string();
        let opts = url.check_options(&OPTIONS)?;
        let origin = || format!("store URL {display}");
        let session_timeout = match opts.get("session_timeout") {
            None => DEFAULT_SESSION_TIMEOUT,
            Some(text) => humantime::parse_duration(text)
                .ok()
                .filter(|d| *d >= Duration::from_millis(100))
                .ok_or_else(|| {
                    Error::config(
                        origin(),
                        format!("session_timeout {text:?} is not a duration of 100ms or more (e.g. 30s)"),
                    )
                })?,
        };
        let auth = digest(env, opts.get("auth_file").map(PathBuf::from))?;
        let acl = match (opts.get("acl").map(String::as_str), &auth) {
            (None, None) | (Some("open"), _) => AclMode::Open,
            (None, Some(_)) | (Some("creator"), Some(_)) => AclMode::Creator,
            (Some("creator"), None) => {
                return Err(Error::config(
                    origin(),
                    format!("acl=creator needs digest credentials ({AUTH_VAR} or auth_file)"),
                ))
            }
            (Some(other), _) => {
                return Err(Error::config(
                    origin(),
                    format!("acl {other:?} is not open or creator"),
                ))
            }
        };
        let per_server = options.timeout / servers.len().max(1) as u32;
        let connection_timeout = per_server
            .max(Duration::from_millis(500))
            .min(session_timeout * 3 / 5);
        let runtime = Runtime::start().map_err(|e| Error::Unavailable {
            store: display.clone(),
            reason: format!("cannot start the ZooKeeper client thread: {e}"),
        })?;
        let conn = Connection {
            display,
            servers: servers.join(","),
            chroot: chroot.clone().unwrap_or_default(),
            session_timeout,
            connection_timeout,
            following: AtomicBool::new(false),
            auth,
            acl,
            current: Mutex::new(None),
            sessions: Arc::clone(&runtime.sessions),
        };
        Ok(ZooKeeperStore {
            conn: Arc::new(conn),
            runtime: Arc::new(runtime),
            timeout: options.timeout,
        })
    }

    /// Runs `job` on the runtime within `--timeout`.
    fn run<T: Send + 'static>(
        &self,
        what: &str,
        job: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let deadline = Instant::now() + self.timeout;
        self.runtime.run(deadline, job).unwrap_or_else(|| {
            Err(self
                .conn
                .unavailable(format!("no answer within {:?} {what}", self.timeout)))
        })
    }
}

impl Store for ZooKeeperStore {
    fn kind(&self) -> StoreKind {
        StoreKind::ZooKeeper
    }

    fn describe(&self) -> String {
        self.conn.display.clone()
    }

    fn read_trees(&self, roots: &[String]) -> Result<Snapshot> {
        let conn = Arc::clone(&self.conn);
        let roots = roots.to_vec();
        let deadline = Instant::now() + self.timeout;
        self.run("to a read", async move {
            conn.read_trees(&roots, deadline).await
        })
    }

    fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        // Before anything is sent: the server would drop the connection.
        let size: usize = txn.ops.iter().map(|op| op.size() + OP_OVERHEAD).sum();
        if let Some(biggest) = txn.ops.iter().max_by_key(|op| op.size()) {
            if size > MAX_REQUEST_BYTES {
                return Err(too_big(biggest.key(), size));
            }
        }
        let conn = Arc::clone(&self.conn);
        let txn = txn.clone();
        let deadline = Instant::now() + self.timeout;
        let outcome = self
            .runtime
            .run(deadline, async move { conn.commit(&txn, deadline).await });
        outcome.unwrap_or_else(|| {
            Err(self.conn.unavailable(format!(
                "no answer within {:?}; the write may or may not have been applied",
                self.timeout
            )))
        })
    }

    fn txn_limits(&self) -> TxnLimits {
        TxnLimits {
            max_ops: Some(SPLIT_OPS),
            max_bytes: Some(SPLIT_BYTES),
        }
    }

    /// The standard recipe, in a session of its own whose timeout is the
    /// TTL: an ephemeral sequential znode `lock-N` in the lock's znode,
    /// holding `holder`; the lowest sequence holds the lock. One that is
    /// not the lowest is deleted again at once (this call never waits), and
    /// the lowest's holder is named; so is the holder of a lock that a
    /// first look finds held. A holder that dies stops its session's
    /// pings, and the server deletes its znode when the session expires.
    fn lock(&self, name: &str, ttl: Duration, holder: &str) -> Result<Box<dyn HeldLock>> {
        let conn = Arc::clone(&self.conn);
        let (name_owned, holder) = (name.to_string(), holder.as_bytes().to_vec());
        let taken = self.run("taking the lock", async move {
            let dir = conn.path(&name_owned);
            let fault = |e| conn.error(Fault::new(e, &name_owned));
            // A look on the store's own session first: a held lock is
            // refused without a session of its own or any write (callers
            // waiting for a lock try again and again).
            let session = conn.client().await.map_err(fault)?;
            let dir_exists = match session.list_children(&dir).await {
                Ok(children) => match lowest_lock(&children) {
                    Some(lowest) => return Ok(Err(holder_of(&session, &dir, lowest).await)),
                    None => true,
                },
                Err(zk::Error::NoNode) => false,
                Err(e) => return Err(fault(e)),
            };
            let client = conn.open_session(ttl).await.map_err(fault)?;
            if !dir_exists {
                client
                    .mkdir(&dir, &zk::CreateMode::Persistent.with_acls(conn.acls()))
                    .await
                    .map_err(fault)?;
            }
            let (_, sequence) = client
                .create(
                    &format!("{dir}/{LOCK_PREFIX}"),
                    &holder,
                    &zk::CreateMode::EphemeralSequential.with_acls(conn.acls()),
                )
                .await
                .map_err(fault)?;
            let ours = format!("{LOCK_PREFIX}{sequence}");
            let children = client.list_children(&dir).await.map_err(fault)?;
            let lowest = lowest_lock(&children).unwrap_or(&ours).to_string();
            if lowest == ours {
                return Ok(Ok((client, format!("{dir}/{ours}"))));
            }
            // Someone came first: ours goes, and with the session anything
            // else of ours would.
            let _ = client.delete(&format!("{dir}/{ours}"), None).await;
            Ok(Err(holder_of(&client, &dir, &lowest).await))
        })?;
        let (client, path) = taken.map_err(|holder| Error::LockHeld {
            name: name.to_string(),
            holder,
        })?;
        Ok(Box::new(ZkLock::new(
            name.to_string(),
            path,
            client,
            Arc::clone(&self.runtime),
            self.timeout,
        )))
    }

    /// A persistent recursive watch on each root, set before this returns
    /// (so a change between it and the caller's next read is not missed).
    /// After a reconnect, and on a new session after one expired, the
    /// watches are set again and the feed reports a change, so the reader
    /// looks afresh: what changed in between is not replayed.
    fn watch(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        // Sessions opened from now on are held (a session opened earlier
        // for a read keeps its short timeout until it ends).
        self.conn.following.store(true, Ordering::SeqCst);
        let conn = Arc::clone(&self.conn);
        let roots = roots.to_vec();
        let shared = Arc::new(FeedShared::default());
        let (cancel, cancelled) = oneshot::channel::<()>();
        let task_shared = Arc::clone(&shared);
        let watchers = self.run("setting the watches", {
            let conn = Arc::clone(&conn);
            let roots = roots.clone();
            async move { arm(&conn, &roots).await.map_err(|f| conn.error(f)) }
        })?;
        self.runtime.spawn(async move {
            follow(conn, roots, watchers, task_shared, cancelled).await;
        });
        Ok(Box::new(ZkFeed {
            shared,
            _cancel: cancel,
            _runtime: Arc::clone(&self.runtime),
        }))
    }
}

impl Drop for ZooKeeperStore {
    fn drop(&mut self) {
        // The last client of a session gone, the session closes (the
        // runtime gives it a moment when it stops).
        self.conn.current.lock().expect("client lock").take();
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::env_of;

    #[test]
    fn url_options_are_checked() {
        let options = StoreOptions {
            timeout: Duration::from_secs(1),
        };
        let env = env_of(&[]);
        for url in [
            "zk://h:1?colour=blue",
            "zk://h:1?session_timeout=soon",
            "zk://h:1?acl=everyone",
            "zk://h:1?acl=creator",
        ] {
            let err = ZooKeeperStore::open(&url.parse().unwrap(), &options, &env)
                .err()
                .unwrap();
            assert_eq!(err.exit_code(), 78, "{url}: {err}");
        }
        let store = ZooKeeperStore::open(
            &"zk://h:1,h:2/x?session_timeout=10s&acl=open"
                .parse()
                .unwrap(),
            &options,
            &env,
        )
        .unwrap();
        assert_eq!(store.conn.chroot, "/x");
        assert_eq!(store.conn.session_timeout, Duration::from_secs(10));
        assert_eq!(store.conn.path("p/k"), "/x/p/k");
        assert_eq!(store.conn.connection_timeout, Duration::from_millis(500));
    }
}
