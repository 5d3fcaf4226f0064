//! The sessions a store opens and what their failures mean: the shared
//! [`Connection`] (servers, chroot, credentials, the session in use) and the
//! mapping of ZooKeeper errors to `convergent`'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zookeeper_client as zk;

use super::auth::{AclMode, Digest, AUTH_VAR};
use crate::error::Error;

/// Pause before a read is tried again after a lost connection.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How to open sessions, and the session in use; shared with feed tasks.
pub(super) struct Connection {
    pub(super) display: String,
    /// `h1:p1,h2:p2`, the servers of the URL.
    pub(super) servers: String,
    /// `""` or `/a/b`: prepended to every path (ZooKeeper's chroot is a
    /// client-side prefix too; doing it here lets writes create it).
    pub(super) chroot: String,
    pub(super) session_timeout: Duration,
    /// Per-server connect bound, also the client's idle timeout, for
    /// sessions that answer one command (see [`Connection::connection_timeout`]).
    pub(super) connection_timeout: Duration,
    /// Set once the store follows a change feed (the `watch` agent): its
    /// sessions are then held for hours.
    pub(super) following: AtomicBool,
    pub(super) auth: Option<Digest>,
    pub(super) acl: AclMode,
    pub(super) current: Mutex<Option<zk::Client>>,
    /// Every session opened, so that each can close when the runtime stops.
    pub(super) sessions: Arc<Mutex<Vec<zk::StateWatcher>>>,
}

/// A failed ZooKeeper call and the key it was about.
#[derive(Debug)]
pub(super) struct Fault {
    pub(super) err: zk::Error,
    pub(super) key: String,
}

impl Fault {
    pub(super) fn new(err: zk::Error, key: impl Into<String>) -> Fault {
        Fault {
            err,
            key: key.into(),
        }
    }
}

/// Errors worth another try for a read: the session reconnects (or a new
/// one is opened) meanwhile. Not `NoHosts`: a dead ensemble fails at once.
pub(super) fn transient(err: &zk::Error) -> bool {
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

impl Connection {
    pub(super) fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::Unavailable {
            store: self.display.clone(),
            reason: reason.into(),
        }
    }

    /// The znode path of a key.
    pub(super) fn path(&self, key: &str) -> String {
        format!("{}/{key}", self.chroot)
    }

    pub(super) fn acls(&self) -> zk::Acls<'static> {
        match self.acl {
            AclMode::Open => zk::Acls::anyone_all(),
            AclMode::Creator => zk::Acls::creator_all(),
        }
    }

    /// What a failed call means for the operator.
    pub(super) fn error(&self, fault: Fault) -> Error {
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
    pub(super) async fn open_session(
        &self,
        session_timeout: Duration,
    ) -> Result<zk::Client, zk::Error> {
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
    pub(super) async fn client(&self) -> Result<zk::Client, zk::Error> {
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

    /// The key of a znode path (for messages).
    pub(super) fn key_of(&self, path: &str) -> String {
        path.get(self.chroot.len() + 1..)
            .unwrap_or(path)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::env_of;
    use crate::store::{StoreOptions, ZooKeeperStore};

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
