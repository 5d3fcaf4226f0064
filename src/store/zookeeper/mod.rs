//! The ZooKeeper backend (3.6 or later), over the `zookeeper-client` crate.
//!
//! Each key is a znode below the URL's chroot (`P/clusters/web/desired` is
//! `/P/clusters/web/desired`), its data the value. The znodes on the way
//! (`/P/clusters/web`) are directories: their data is empty, and empty data
//! reads as "no value" (`convergent` never writes an empty value; one would
//! read as `null` anyway). A key may hold a value and sub-keys at once.
//!
//! The client is async. Its runtime stays in this file: one thread running a
//! single-threaded executor, started when a `zk://` store is opened, so the
//! file, etcd and Consul paths never start one. Everything the rest of
//! `convergent` calls is blocking, bounded by `--timeout`.
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

mod plan;
mod runtime;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures::channel::oneshot;
use futures::future::{self, Either};
use zookeeper_client as zk;

use self::plan::{
    ancestors, check_size, plan, too_big, Node, Planned, MAX_REQUEST_BYTES, OP_OVERHEAD,
};
use self::runtime::Runtime;
use super::feed::{failure_backoff, reconnect_splay};
use super::{
    ChangeFeed, Compare, Entry, HeldLock, Op, Snapshot, Store, StoreKind, StoreOptions, StoreUrl,
    Txn, TxnLimits, TxnOutcome,
};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::local_file;

/// Options the ZooKeeper URL accepts.
const OPTIONS: [&str; 3] = ["session_timeout", "auth_file", "acl"];
/// The environment variable holding digest credentials, `user:password`.
pub const AUTH_VAR: &str = "CONVERGENT_ZK_AUTH";
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
/// Read operations per multi-read request; a level with more is sent as
/// several requests at once (pipelined: still one round trip).
const READ_OPS_PER_REQUEST: usize = 512;
/// Pause before a read is tried again after a lost connection.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How often a commit re-plans when znodes change under it before it gives
/// the conflict back to the caller (which re-reads).
const PLAN_ATTEMPTS: u32 = 5;
/// Lock znodes are `LOCK_PREFIX` + a sequence number, in the lock's znode.
const LOCK_PREFIX: &str = "lock-";

/// A view kept in ZooKeeper.
pub struct ZooKeeperStore {
    conn: Arc<Connection>,
    runtime: Arc<Runtime>,
    timeout: Duration,
}

/// Who may do what with the znodes `convergent` creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AclMode {
    /// `world:anyone` may do everything (ZooKeeper's usual open ACL).
    Open,
    /// Only the authenticated creator (its digest identity) may.
    Creator,
}

/// Digest credentials; the secret never leaves this struct.
struct Digest {
    user: String,
    /// `user:password`, as ZooKeeper's digest scheme takes it.
    secret: String,
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Digest {{ user: {:?}, password: <redacted> }}",
            self.user
        )
    }
}

/// How to open sessions, and the session in use; shared with feed tasks.
struct Connection {
    display: String,
    /// `h1:p1,h2:p2`, the servers of the URL.
    servers: String,
    /// `""` or `/a/b`: prepended to every path (ZooKeeper's chroot is a
    /// client-side prefix too; doing it here lets writes create it).
    chroot: String,
    session_timeout: Duration,
    /// Per-server connect bound, also the client's idle timeout, for
    /// sessions that answer one command (see [`Connection::connection_timeout`]).
    connection_timeout: Duration,
    /// Set once the store follows a change feed (the `watch` agent): its
    /// sessions are then held for hours.
    following: AtomicBool,
    auth: Option<Digest>,
    acl: AclMode,
    current: Mutex<Option<zk::Client>>,
    /// Every session opened, so that each can close when the runtime stops.
    sessions: Arc<Mutex<Vec<zk::StateWatcher>>>,
}

/// A failed ZooKeeper call and the key it was about.
#[derive(Debug)]
struct Fault {
    err: zk::Error,
    key: String,
}

impl Fault {
    fn new(err: zk::Error, key: impl Into<String>) -> Fault {
        Fault {
            err,
            key: key.into(),
        }
    }
}

/// Errors worth another try for a read: the session reconnects (or a new
/// one is opened) meanwhile. Not `NoHosts`: a dead ensemble fails at once.
fn transient(err: &zk::Error) -> bool {
    matches!(
        err,
        zk::Error::ConnectionLoss
            | zk::Error::SessionExpired
            | zk::Error::SessionMoved
            | zk::Error::ClientClosed
            | zk::Error::Throttled
            | zk::Error::Timeout
    )
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

/// Digest credentials from `CONVERGENT_ZK_AUTH`, else from the file the
/// URL's `auth_file` names; both hold `user:password`.
fn digest(env: Env, auth_file: Option<PathBuf>) -> Result<Option<Digest>> {
    let (origin, text) = match (env(AUTH_VAR), auth_file) {
        (Some(text), _) => (AUTH_VAR.to_string(), text),
        (None, Some(file)) => {
            let origin = format!("auth_file {}", file.display());
            let text = local_file::read_text(&file, local_file::MAX_SECRET_BYTES)
                .map_err(|e| Error::config(&origin, format!("the file {e}")))?;
            (origin, text.trim_end_matches(['\n', '\r']).to_string())
        }
        (None, None) => return Ok(None),
    };
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Some(Digest {
            user: user.to_string(),
            secret: text.clone(),
        })),
        _ => Err(Error::config(
            origin,
            "must hold user:password (digest credentials), with neither part empty",
        )),
    }
}

impl Connection {
    fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::Unavailable {
            store: self.display.clone(),
            reason: reason.into(),
        }
    }

    /// The znode path of a key.
    fn path(&self, key: &str) -> String {
        format!("{}/{key}", self.chroot)
    }

    fn acls(&self) -> zk::Acls<'static> {
        match self.acl {
            AclMode::Open => zk::Acls::anyone_all(),
            AclMode::Creator => zk::Acls::creator_all(),
        }
    }

    /// What a failed call means for the operator.
    fn error(&self, fault: Fault) -> Error {
        let Fault { err, key } = fault;
        match err {
            zk::Error::NoAuth => Error::PermissionDenied {
                store: self.display.clone(),
                key,
                reason: match &self.auth {
                    None => format!(
                        "the znode's ACL refuses anonymous clients: give digest credentials \
                         ({AUTH_VAR}=user:password, or ?auth_file=PATH in the store URL)"
                    ),
                    Some(d) => format!(
                        "the znode's ACL does not let digest user {:?} do this (or the password is wrong)",
                        d.user
                    ),
                },
            },
            zk::Error::AuthFailed => Error::PermissionDenied {
                store: self.display.clone(),
                key: "(authentication)".into(),
                reason: "ZooKeeper refused the credentials".into(),
            },
            zk::Error::Unimplemented => Error::config(
                format!("store URL {}", self.display),
                "the server lacks multi-read or persistent watches: ZooKeeper 3.6 or later is needed",
            ),
            zk::Error::BadArguments(why) => {
                Error::bad_key(key, format!("not a valid ZooKeeper path: {why}"))
            }
            zk::Error::QuotaExceeded => Error::bad_key(key, "ZooKeeper's quota for it is exceeded"),
            zk::Error::NoChildrenForEphemerals => Error::bad_key(
                key,
                "it sits under an ephemeral znode, which cannot have children",
            ),
            zk::Error::InvalidAcl => Error::config(
                format!("store URL {}", self.display),
                "ZooKeeper refused the ACL for new znodes (acl=creator needs digest credentials)",
            ),
            zk::Error::NoHosts => {
                self.unavailable(format!("no server answered ({})", self.servers))
            }
            other => self.unavailable(format!("{other} (at {key})")),
        }
    }

    /// The connection timeout of a new session. zookeeper-client pings an
    /// idle connection every 3/8 of it (10 s at most) and gives a silent
    /// one up after it. A command's session wants it short (`--timeout` per
    /// server: a dead server is skipped in time). A session held for hours
    /// by the agent wants it long: with the default 5 s `--timeout` it
    /// pinged every 2.5 s (24 packets a minute per idle agent); at 3/5 of
    /// the session timeout, the longest the client allows, every 7-9 s.
    /// The reads are still bounded by `--timeout`.
    fn connection_timeout(&self) -> Duration {
        if self.following.load(Ordering::SeqCst) {
            self.session_timeout * 3 / 5
        } else {
            self.connection_timeout
        }
    }

    /// Opens a session. Fails at once with `NoHosts` when every server
    /// refused: a dead ensemble is "unavailable" fast, not after retries.
    async fn open_session(&self, session_timeout: Duration) -> Result<zk::Client, zk::Error> {
        let mut connector = zk::Client::connector()
            .with_session_timeout(session_timeout)
            .with_connection_timeout(self.connection_timeout())
            .with_fail_eagerly();
        if let Some(d) = &self.auth {
            connector = connector.with_auth("digest", d.secret.as_bytes());
        }
        let client = connector.connect(&self.servers).await?;
        let mut sessions = self.sessions.lock().expect("sessions lock");
        sessions.retain(|s| !s.peek_state().is_terminated());
        sessions.push(client.state_watcher());
        Ok(client)
    }

    /// The session in use, opening a new one when there is none or it ended
    /// (expired, closed).
    async fn client(&self) -> Result<zk::Client, zk::Error> {
        let live = self
            .current
            .lock()
            .expect("client lock")
            .as_ref()
            .filter(|c| !c.state().is_terminated())
            .cloned();
        if let Some(client) = live {
            return Ok(client);
        }
        let client = self.open_session(self.session_timeout).await?;
        *self.current.lock().expect("client lock") = Some(client.clone());
        Ok(client)
    }

    /// [`Connection::read_once`], again while the connection is being
    /// re-established, until `deadline`.
    async fn read_trees(&self, roots: &[String], deadline: Instant) -> Result<Snapshot> {
        loop {
            match self.read_once(roots).await {
                Ok(snapshot) => return Ok(snapshot),
                Err(f) if transient(&f.err) && Instant::now() + RETRY_PAUSE < deadline => {
                    Timer::after(RETRY_PAUSE).await;
                }
                Err(f) => return Err(self.error(f)),
            }
        }
    }

    /// Reads the trees level by level: the roots' data and children (and
    /// the stat of the directories above them, for the revision) in one
    /// multi-read, then the children found, and so on. Keys stored whole
    /// take one request.
    async fn read_once(&self, roots: &[String]) -> Result<Snapshot, Fault> {
        let client = self
            .client()
            .await
            .map_err(|e| Fault::new(e, "(session)"))?;
        let mut trees: Vec<Vec<Entry>> = vec![Vec::new(); roots.len()];
        let mut revision = 0i64;
        let mut level: Vec<(usize, String)> = roots.iter().cloned().enumerate().collect();
        // The directories above the roots: a deletion below them changes
        // their pzxid, so their stats keep the revision from going back.
        let mut parents: BTreeSet<String> = roots
            .iter()
            .flat_map(|r| {
                let path = self.path(r);
                ancestors(&path).map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        while !level.is_empty() {
            let mut ops: Vec<(Read, String)> = Vec::with_capacity(level.len() * 2 + parents.len());
            for (_, key) in &level {
                ops.push((Read::Data, self.path(key)));
                ops.push((Read::Children, self.path(key)));
            }
            ops.extend(
                std::mem::take(&mut parents)
                    .into_iter()
                    .map(|p| (Read::Stat, p)),
            );
            let results = self.multi_read(&client, &ops).await?;
            let mut next = Vec::new();
            let mut owners = level.iter().flat_map(|(i, key)| [(*i, key), (*i, key)]);
            for ((read, _), result) in ops.iter().zip(results) {
                let owner = owners.next();
                match result {
                    zk::MultiReadResult::Data { data, stat } => {
                        revision = revision.max(stat.mzxid).max(stat.pzxid);
                        if let (Read::Data, Some((tree, key))) = (read, owner) {
                            if !data.is_empty() {
                                trees[tree].push(Entry {
                                    key: key.clone(),
                                    value: data,
                                    version: stat.version.max(0) as u64,
                                });
                            }
                        }
                    }
                    zk::MultiReadResult::Children { children } => {
                        if let Some((tree, key)) = owner {
                            next.extend(children.into_iter().map(|c| (tree, format!("{key}/{c}"))));
                        }
                    }
                    zk::MultiReadResult::Error { err } => match (read, err, owner) {
                        // Absent (or deleted since the level above was read).
                        (_, zk::Error::NoNode, _) | (Read::Stat, _, _) => {}
                        (_, err, owner) => {
                            let key = owner.map(|(_, k)| k.clone()).unwrap_or_default();
                            return Err(Fault::new(err, key));
                        }
                    },
                    _ => {}
                }
            }
            drop(owners);
            level = next;
        }
        for tree in &mut trees {
            tree.sort_by(|a, b| a.key.cmp(&b.key));
        }
        Ok(Snapshot {
            trees,
            revision: Some(revision.max(0) as u64),
        })
    }

    /// One multi-read per [`READ_OPS_PER_REQUEST`] operations on znode
    /// paths, all sent before the first answer is awaited; the results in
    /// order.
    async fn multi_read(
        &self,
        client: &zk::Client,
        ops: &[(Read, String)],
    ) -> Result<Vec<zk::MultiReadResult>, Fault> {
        let mut pending = Vec::new();
        for chunk in ops.chunks(READ_OPS_PER_REQUEST) {
            let mut reader = client.new_multi_reader();
            for (read, path) in chunk {
                match read {
                    Read::Data | Read::Stat => reader.add_get_data(path),
                    Read::Children => reader.add_get_children(path),
                }
                .map_err(|e| Fault::new(e, self.key_of(path)))?;
            }
            let first = chunk
                .first()
                .map(|(_, p)| self.key_of(p))
                .unwrap_or_default();
            pending.push((first, reader.commit()));
        }
        let mut results = Vec::with_capacity(ops.len());
        for (first, answer) in pending {
            results.extend(answer.await.map_err(|e| Fault::new(e, first))?);
        }
        if results.len() != ops.len() {
            return Err(Fault::new(
                zk::Error::UnexpectedError(format!(
                    "asked {} reads, ZooKeeper answered {}",
                    ops.len(),
                    results.len()
                )),
                "(multi-read)",
            ));
        }
        Ok(results)
    }

    /// The znodes a transaction touches (`keys`) and every directory above
    /// them (the rest of `paths`), as they are now (`None`: absent). A
    /// directory this session may not read (writes need no read access to
    /// the directories above) is taken as there, and never removed.
    async fn stat_all(
        &self,
        client: &zk::Client,
        paths: &BTreeSet<String>,
        keys: &BTreeSet<String>,
    ) -> Result<HashMap<String, Option<Node>>, Fault> {
        let ops: Vec<(Read, String)> = paths.iter().map(|p| (Read::Data, p.clone())).collect();
        let results = self.multi_read(client, &ops).await?;
        let mut nodes = HashMap::new();
        for (path, result) in paths.iter().zip(results) {
            let node = match result {
                zk::MultiReadResult::Data { data, stat } => Some(Node {
                    version: stat.version,
                    has_data: !data.is_empty(),
                    children: stat.num_children,
                }),
                zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => None,
                zk::MultiReadResult::Error {
                    err: zk::Error::NoAuth,
                } if !keys.contains(path) => Some(Node {
                    version: 0,
                    has_data: true,
                    children: i32::MAX,
                }),
                zk::MultiReadResult::Error { err } => {
                    return Err(Fault::new(err, self.key_of(path)))
                }
                _ => None,
            };
            nodes.insert(path.clone(), node);
        }
        Ok(nodes)
    }

    /// The key of a znode path (for messages).
    fn key_of(&self, path: &str) -> String {
        path.get(self.chroot.len() + 1..)
            .unwrap_or(path)
            .to_string()
    }

    /// Reads what the transaction touches, checks its compares, and applies
    /// it as one multi whose checks guard everything the plan assumed. A
    /// multi failing on a guard (a znode changed in between) is planned
    /// again from a fresh read.
    async fn commit(&self, txn: &Txn, deadline: Instant) -> Result<TxnOutcome> {
        let (mut paths, mut keys) = (BTreeSet::new(), BTreeSet::new());
        for key in txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Version { key, .. } | Compare::Absent { key } => key,
            })
            .chain(txn.ops.iter().map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            }))
        {
            let path = self.path(key);
            paths.extend(ancestors(&path).map(str::to_string));
            paths.insert(path.clone());
            keys.insert(path);
        }
        for _ in 0..PLAN_ATTEMPTS {
            let (client, nodes) = loop {
                let read = async {
                    let client = self
                        .client()
                        .await
                        .map_err(|e| Fault::new(e, "(session)"))?;
                    let nodes = self.stat_all(&client, &paths, &keys).await?;
                    Ok::<_, Fault>((client, nodes))
                };
                match read.await {
                    Ok(read) => break read,
                    Err(f) if transient(&f.err) && Instant::now() + RETRY_PAUSE < deadline => {
                        Timer::after(RETRY_PAUSE).await;
                    }
                    Err(f) => return Err(self.error(f)),
                }
            };
            let holds = txn.compares.iter().all(|c| match c {
                Compare::Version { key, version } => nodes
                    .get(&self.path(key))
                    .and_then(Option::as_ref)
                    .is_some_and(|n| n.has_data && n.version as u64 == *version),
                Compare::Absent { key } => !nodes
                    .get(&self.path(key))
                    .and_then(Option::as_ref)
                    .is_some_and(|n| n.has_data),
            });
            if !holds {
                return Ok(TxnOutcome::Conflict);
            }
            if txn.ops.is_empty() {
                return Ok(TxnOutcome::Committed { revision: None });
            }
            let plan = plan(txn, &self.chroot, &nodes);
            check_size(&plan, &self.chroot)?;
            let mut writer = client.new_multi_writer();
            let acls = self.acls();
            for op in &plan {
                let added = match op {
                    Planned::Check { path, version } => writer.add_check_version(path, *version),
                    Planned::Create { path, data } => {
                        writer.add_create(path, data, &zk::CreateMode::Persistent.with_acls(acls))
                    }
                    Planned::SetData {
                        path,
                        data,
                        version,
                    } => writer.add_set_data(path, data, Some(*version)),
                    Planned::Delete { path, version } => writer.add_delete(path, Some(*version)),
                };
                added.map_err(|e| self.error(Fault::new(e, self.key_of(op.path()))))?;
            }
            match writer.commit().await {
                Ok(results) => {
                    let revision = results
                        .iter()
                        .filter_map(|r| match r {
                            zk::MultiWriteResult::SetData { stat }
                            | zk::MultiWriteResult::Create { stat, .. } => Some(stat.mzxid),
                            _ => None,
                        })
                        .max()
                        .filter(|z| *z > 0)
                        .map(|z| z as u64);
                    return Ok(TxnOutcome::Committed { revision });
                }
                // A guard failed: something changed since the plan's read.
                Err(zk::MultiWriteError::OperationFailed {
                    source:
                        zk::Error::BadVersion
                        | zk::Error::NodeExists
                        | zk::Error::NoNode
                        | zk::Error::NotEmpty,
                    ..
                }) => continue,
                Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                    let key = plan
                        .get(index)
                        .map(|op| self.key_of(op.path()))
                        .unwrap_or_default();
                    return Err(self.error(Fault::new(source, key)));
                }
                Err(zk::MultiWriteError::RequestFailed { source }) if transient(&source) => {
                    return Err(self.unavailable(format!(
                        "{source}; the write may or may not have been applied"
                    )))
                }
                Err(zk::MultiWriteError::RequestFailed { source }) => {
                    let key = plan
                        .first()
                        .map(|op| self.key_of(op.path()))
                        .unwrap_or_default();
                    return Err(self.error(Fault::new(source, key)));
                }
            }
        }
        // The znodes kept changing under us: the caller re-reads and retries.
        Ok(TxnOutcome::Conflict)
    }
}

/// What a read operation asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// A key's data and stat.
    Data,
    /// A key's children.
    Children,
    /// Only the stat (for the revision); errors are ignored.
    Stat,
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

/// What the holder of lock znode `lowest` in `dir` says of itself.
async fn holder_of(client: &zk::Client, dir: &str, lowest: &str) -> String {
    match client.get_data(&format!("{dir}/{lowest}")).await {
        Ok((data, _)) if !data.is_empty() => String::from_utf8_lossy(&data).into_owned(),
        Ok(_) => "another process".into(),
        Err(zk::Error::NoNode) => {
            "another process (the lock was released meanwhile; try again)".into()
        }
        Err(_) => format!("another process ({lowest})"),
    }
}

/// The lowest-numbered lock znode among `children`.
fn lowest_lock(children: &[String]) -> Option<&str> {
    children
        .iter()
        .filter_map(|c| {
            let n: u64 = c.strip_prefix(LOCK_PREFIX)?.parse().ok()?;
            Some((n, c.as_str()))
        })
        .min()
        .map(|(_, c)| c)
}

/// A held lock: an ephemeral znode of a session kept alive by the runtime.
struct ZkLock {
    name: String,
    path: String,
    client: Option<zk::Client>,
    /// When the session lost its connection, if it has not regained it.
    disconnected_since: Arc<Mutex<Option<Instant>>>,
    session_timeout: Duration,
    runtime: Arc<Runtime>,
    timeout: Duration,
}

impl ZkLock {
    fn new(
        name: String,
        path: String,
        client: zk::Client,
        runtime: Arc<Runtime>,
        timeout: Duration,
    ) -> ZkLock {
        let disconnected_since = Arc::new(Mutex::new(None));
        let mut states = client.state_watcher();
        let since = Arc::clone(&disconnected_since);
        runtime.spawn(async move {
            loop {
                let state = states.changed().await;
                let mut since = since.lock().expect("state lock");
                match state {
                    zk::SessionState::Disconnected => {
                        since.get_or_insert_with(Instant::now);
                    }
                    s if s.is_terminated() => return,
                    _ => *since = None,
                }
            }
        });
        ZkLock {
            name,
            path,
            session_timeout: client.session_timeout(),
            client: Some(client),
            disconnected_since,
            runtime,
            timeout,
        }
    }
}

impl HeldLock for ZkLock {
    fn name(&self) -> &str {
        &self.name
    }

    /// Lost once the session ended, or once it has been disconnected for a
    /// session timeout: the server may have expired it (and deleted the
    /// znode) without this client hearing of it yet.
    fn check(&self) -> Result<()> {
        let state = self
            .client
            .as_ref()
            .map_or(zk::SessionState::Closed, zk::Client::state);
        let cut_off = self
            .disconnected_since
            .lock()
            .expect("state lock")
            .is_some_and(|since| since.elapsed() >= self.session_timeout);
        if state.is_terminated() || cut_off {
            Err(Error::Conflict {
                key: self.name.clone(),
                reason: format!(
                    "the lock was lost: its ZooKeeper session {}",
                    if state.is_terminated() {
                        format!("ended ({state})")
                    } else {
                        format!(
                            "has been cut off for longer than its timeout ({:?})",
                            self.session_timeout
                        )
                    }
                ),
            })
        } else {
            Ok(())
        }
    }
}

impl Drop for ZkLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // Deleting frees the lock at once; closing the session (when the
        // client goes) would too, a moment later. A session cut off cannot
        // do either: its znode goes when it expires.
        if client.state() == zk::SessionState::SyncConnected {
            let path = self.path.clone();
            self.runtime.run(Instant::now() + self.timeout, async move {
                let _ = client.delete(&path, None).await;
            });
        }
    }
}

/// Sets a persistent recursive watch on each root; the client returned
/// keeps their session open.
async fn arm(
    conn: &Connection,
    roots: &[String],
) -> Result<(zk::Client, Vec<zk::PersistentWatcher>), Fault> {
    let client = conn
        .client()
        .await
        .map_err(|e| Fault::new(e, "(session)"))?;
    let mut watchers = Vec::with_capacity(roots.len());
    for root in roots {
        let watcher = client
            .watch(&conn.path(root), zk::AddWatchMode::PersistentRecursive)
            .await
            .map_err(|e| Fault::new(e, root.clone()))?;
        watchers.push(watcher);
    }
    Ok((client, watchers))
}

/// What the watch task tells the feed.
#[derive(Default)]
struct FeedShared {
    state: Mutex<FeedState>,
    wake: Condvar,
}

#[derive(Default)]
struct FeedState {
    changed: bool,
    failure: Option<String>,
}

impl FeedShared {
    fn tell(&self, change: impl FnOnce(&mut FeedState)) {
        change(&mut self.state.lock().expect("feed lock"));
        self.wake.notify_all();
    }
}

/// Follows the watches until the feed is dropped, setting them again on a
/// new session when one ends.
///
/// The server going away cuts every agent off at once; the client crate
/// reconnects by itself, at once. What we add on top (setting the watches
/// again, the look that follows, a new session when the old one ended)
/// waits a random share of 10 s first, as etcd streams do, so that a fleet
/// does not come back in step (1,000 agents: 12 times the startup packet
/// rate without it). No change is lost: the look after comes anyway.
async fn follow(
    conn: Arc<Connection>,
    roots: Vec<String>,
    armed: (zk::Client, Vec<zk::PersistentWatcher>),
    shared: Arc<FeedShared>,
    mut cancelled: oneshot::Receiver<()>,
) {
    let (mut _session, mut watchers) = armed;
    let mut failures: u32 = 0;
    loop {
        if watchers.is_empty() {
            // Between sessions (or after a reconnect): set the watches
            // again, then look afresh (changes in between are not replayed).
            let pause = if failures == 0 {
                reconnect_splay()
            } else {
                failure_backoff(failures)
            };
            if let Either::Right(_) = future::select(Timer::after(pause), &mut cancelled).await {
                return;
            }
            match arm(&conn, &roots).await {
                Ok((client, w)) => {
                    _session = client;
                    watchers = w;
                    failures = 0;
                    shared.tell(|s| s.changed = true);
                }
                Err(f) => {
                    let reason = conn.error(f).to_string();
                    shared.tell(|s| s.failure = Some(reason));
                    failures += 1;
                }
            }
            continue;
        }
        let next = future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        let event = match future::select(next, &mut cancelled).await {
            Either::Left(((event, _, _), _)) => event,
            Either::Right(_) => return,
        };
        match (event.event_type, event.session_state) {
            (zk::EventType::Session, zk::SessionState::Disconnected) => {}
            // The session ended: a new one (a watcher panics when asked
            // again after its session ended).
            (zk::EventType::Session, state) if state.is_terminated() => watchers.clear(),
            // Reconnected. zookeeper-client 0.11 leaves persistent watches
            // out of the SetWatches it sends on a new connection, so set
            // them again (the old ones go once the new ones are in); then
            // look afresh, as events of the gap are lost (ZOOKEEPER-4698).
            (zk::EventType::Session, _) => watchers.clear(),
            _ => shared.tell(|s| s.changed = true),
        }
    }
}

/// The reader's side of a watch: wakes when the task reports.
struct ZkFeed {
    shared: Arc<FeedShared>,
    /// Dropped with the feed, which ends the watch task.
    _cancel: oneshot::Sender<()>,
    _runtime: Arc<Runtime>,
}

impl ChangeFeed for ZkFeed {
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let guard = self.shared.state.lock().expect("feed lock");
        let (mut state, _) = self
            .shared
            .wake
            .wait_timeout_while(guard, timeout, |s| !s.changed && s.failure.is_none())
            .expect("feed lock");
        // A change beats a failure: the reader looks either way.
        let failure = state.failure.take();
        if std::mem::take(&mut state.changed) {
            return Ok(true);
        }
        match failure {
            Some(reason) => Err(Error::Unavailable {
                store: "zookeeper".into(),
                reason: format!("the watch stopped: {reason}"),
            }),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::env_of;

    #[test]
    fn the_lowest_sequence_holds_the_lock() {
        let children: Vec<String> = ["lock-0000000012", "lock-0000000009", "other", "lock-x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(lowest_lock(&children), Some("lock-0000000009"));
        assert_eq!(lowest_lock(&[]), None);
    }

    #[test]
    fn digest_credentials_come_from_the_environment_or_a_file() {
        let d = digest(&env_of(&[(AUTH_VAR, "ops:s3:cret")]), None)
            .unwrap()
            .unwrap();
        assert_eq!((d.user.as_str(), d.secret.as_str()), ("ops", "ops:s3:cret"));
        assert!(!format!("{d:?}").contains("s3"), "Debug must redact");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("zk.auth");
        std::fs::write(&file, "ops:from-file\n").unwrap();
        let d = digest(&env_of(&[]), Some(file.clone())).unwrap().unwrap();
        assert_eq!(d.secret, "ops:from-file");
        for bad in ["nocolon-secret", ":pw-secret", "user-secret:"] {
            let err = digest(&env_of(&[(AUTH_VAR, bad)]), None).unwrap_err();
            assert_eq!(err.exit_code(), 78);
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let err = digest(&env_of(&[]), Some(dir.path().join("missing"))).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(digest(&env_of(&[]), None).unwrap().is_none());
    }

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

    #[test]
    fn sessions_held_to_follow_changes_ping_less_often() {
        let options = StoreOptions {
            timeout: Duration::from_secs(5),
        };
        let store = ZooKeeperStore::open(
            &"zk://h:1?session_timeout=40s".parse().unwrap(),
            &options,
            &env_of(&[]),
        )
        .unwrap();
        // A command's session: --timeout per server.
        assert_eq!(store.conn.connection_timeout(), Duration::from_secs(5));
        store.conn.following.store(true, Ordering::SeqCst);
        // The agent's: 3/5 of the session, the most the client allows.
        assert_eq!(store.conn.connection_timeout(), Duration::from_secs(24));
    }
}
