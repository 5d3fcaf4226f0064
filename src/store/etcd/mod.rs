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

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use ureq::Agent;

use super::feed::{failure_backoff, reconnect_splay, ChannelFeed, FeedEvent};
use super::http::{self, Bound, TlsSettings, TlsVariables};
use super::{
    ChangeFeed, Compare, Entry, HeldLock, Op, Snapshot, Store, StoreKind, StoreOptions, StoreUrl,
    Txn, TxnLimits, TxnOutcome,
};
use crate::clock::pause_unless_stopped;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::local_file;

/// Options the etcd URL accepts (`etcd://h:2379?consistency=serializable`).
const OPTIONS: [&str; 2] = ["consistency", "password_file"];
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` is 1.5 MiB for the whole request;
/// stay clear of it, leaving room for keys, base64 growth aside.
const MAX_REQUEST_BYTES: usize = 1_400_000;
/// Pause between rounds over the endpoints: an election takes about a second.
const ROUND_PAUSE: Duration = Duration::from_millis(150);
/// A watch stream idle this long is re-opened (from the next revision, so
/// nothing is missed); it also bounds how long a stopped feed's thread lives.
const WATCH_IDLE: Duration = Duration::from_secs(600);

/// A view kept in etcd.
pub struct EtcdStore {
    client: Arc<Client>,
}

/// Credentials for etcd's auth; the password never leaves this struct.
struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <redacted> }}",
            self.user
        )
    }
}

/// Everything a request needs; shared with lock and watch threads.
struct Client {
    display: String,
    endpoints: Vec<String>,
    agent: Agent,
    stream_agent: Agent,
    timeout: Duration,
    serializable: bool,
    credentials: Option<Credentials>,
    token: Mutex<Option<String>>,
    /// The endpoint that answered last; tried first next time.
    preferred: AtomicUsize,
}

/// Whether a lost request may have changed the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Safe to send again, anywhere.
    Read,
    /// May have been applied even if no answer came back.
    Write,
}

/// How an answer from one endpoint is taken.
enum Verdict {
    Ok(Value),
    /// Not applied, and another endpoint may do better (no leader, …).
    TryNext(String),
    /// The token expired: authenticate again and retry.
    Reauthenticate,
    /// The request may or may not have been applied.
    Unknown(String),
    /// A final answer that is not success.
    Fail(Error),
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

/// Base URLs of the endpoints: the URL's, else `ETCDCTL_ENDPOINTS`, else
/// etcd's default `127.0.0.1:2379`.
fn endpoint_urls(from_url: &[String], scheme: &str, env: Env) -> Result<Vec<String>> {
    let listed: Vec<String> = if from_url.is_empty() {
        env("ETCDCTL_ENDPOINTS")
            .map(|e| {
                e.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_else(|| vec!["127.0.0.1:2379".to_string()])
    } else {
        from_url.to_vec()
    };
    listed
        .into_iter()
        .map(|e| {
            let e = e.trim_end_matches('/');
            if e.starts_with("http://") || e.starts_with("https://") {
                Ok(e.to_string())
            } else if e.contains("://") {
                Err(Error::config(
                    "ETCDCTL_ENDPOINTS",
                    format!("endpoint {e:?} is neither http:// nor https://"),
                ))
            } else {
                Ok(format!("{scheme}://{e}"))
            }
        })
        .collect()
}

fn tls_settings(env: Env) -> Result<TlsSettings> {
    let skip = http::env_bool(env, "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")?.unwrap_or(false);
    let vars = TlsVariables {
        ca_file: "ETCDCTL_CACERT",
        client_cert: "ETCDCTL_CERT",
        client_key: "ETCDCTL_KEY",
    };
    TlsSettings::from_env(env, &vars, !skip)
}

/// `ETCDCTL_USER` is `user` or `user:password`; the password may instead
/// come from `ETCDCTL_PASSWORD` or the URL's `password_file`.
fn credentials(env: Env, password_file: Option<PathBuf>) -> Result<Option<Credentials>> {
    let Some(user_spec) = env("ETCDCTL_USER") else {
        return Ok(None);
    };
    let (user, inline) = match user_spec.split_once(':') {
        Some((user, password)) => (user.to_string(), Some(password.to_string())),
        None => (user_spec, None),
    };
    let password = match (inline, env("ETCDCTL_PASSWORD"), password_file) {
        (Some(p), _, _) | (None, Some(p), _) => p,
        (None, None, Some(file)) => local_file::read_text(&file, local_file::MAX_SECRET_BYTES)
            .map_err(|e| {
                Error::config(
                    format!("password_file {}", file.display()),
                    format!("the file {e}"),
                )
            })?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None, None) => {
            return Err(Error::config(
                "ETCDCTL_USER",
                format!(
                    "user {user:?} has no password: set ETCDCTL_PASSWORD, use user:password, \
                     or add ?password_file=PATH to the store URL"
                ),
            ))
        }
    };
    if user.is_empty() {
        return Err(Error::config("ETCDCTL_USER", "the user name is empty"));
    }
    Ok(Some(Credentials { user, password }))
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

/// The end of the range of keys starting with `prefix` (etcd's rule: the
/// prefix with its last byte incremented, dropping trailing 0xff bytes).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether `key` is `root` or under it (`root/…`).
fn in_tree(key: &[u8], root: &[u8]) -> bool {
    key.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

/// A 64-bit field, which the gateway sends as a string (or leaves out when 0).
fn number(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The key an operation body is about, for messages.
fn key_of(body: &Value) -> String {
    body.get("key")
        .and_then(Value::as_str)
        .and_then(|k| B64.decode(k).ok())
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .unwrap_or_else(|| "(etcd)".into())
}

impl Client {
    fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::Unavailable {
            store: self.display.clone(),
            reason: reason.into(),
        }
    }

    fn linearizable(&self, path: &str) -> bool {
        !(self.serializable && path == "kv/range")
    }

    /// Sends one request, trying the endpoints in turn and again in rounds
    /// until `--timeout` runs out; see [`Verdict`] for what is retried.
    fn call(&self, path: &str, body: &Value, kind: Kind) -> Result<Value> {
        let deadline = Instant::now() + self.timeout;
        let mut last = String::from("no endpoint answered");
        let mut reauthenticated = false;
        loop {
            let first = self.preferred.load(Ordering::Relaxed);
            let mut i = 0;
            while i < self.endpoints.len() {
                let index = (first + i) % self.endpoints.len();
                let endpoint = &self.endpoints[index];
                if self.credentials.is_some() && self.current_token().is_none() {
                    if let Err(e) = self.authenticate(endpoint, deadline) {
                        match e {
                            Error::Unavailable { reason, .. } => {
                                last = reason;
                                i += 1;
                                continue;
                            }
                            other => return Err(other),
                        }
                    }
                }
                match self.send(endpoint, path, body, kind, deadline) {
                    Verdict::Ok(value) => {
                        self.preferred.store(index, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Verdict::Reauthenticate if !reauthenticated && self.credentials.is_some() => {
                        *self.token.lock().expect("token lock") = None;
                        reauthenticated = true;
                        continue; // the same endpoint, with a fresh token
                    }
                    Verdict::Reauthenticate => {
                        return Err(Error::PermissionDenied {
                            store: self.display.clone(),
                            key: key_of(body),
                            reason:
                                "etcd rejected the auth token (set ETCDCTL_USER and a password)"
                                    .into(),
                        })
                    }
                    Verdict::TryNext(reason) => last = format!("{endpoint}: {reason}"),
                    Verdict::Unknown(reason) if kind == Kind::Write => {
                        return Err(self.unavailable(format!(
                            "{endpoint}: {reason}; the write may or may not have been applied"
                        )))
                    }
                    Verdict::Unknown(reason) => last = format!("{endpoint}: {reason}"),
                    Verdict::Fail(e) => return Err(e),
                }
                i += 1;
            }
            if Instant::now() + ROUND_PAUSE >= deadline {
                return Err(self.unavailable(last));
            }
            thread::sleep(ROUND_PAUSE);
        }
    }

    fn current_token(&self) -> Option<String> {
        self.token.lock().expect("token lock").clone()
    }

    fn send(
        &self,
        endpoint: &str,
        path: &str,
        body: &Value,
        kind: Kind,
        deadline: Instant,
    ) -> Verdict {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(50));
        let mut request = self
            .agent
            .post(&format!("{endpoint}/v3/{path}"))
            .config()
            .timeout_global(Some(remaining))
            .build()
            .header("Content-Type", "application/json")
            // The server gives up when we do (a foreign token can otherwise
            // make it wait for a raft index that never comes).
            .header(
                "Grpc-Timeout",
                format!("{}m", remaining.as_millis().min(99_999_999)),
            );
        if self.linearizable(path) {
            request = request.header("Grpc-Metadata-hasleader", "true");
        }
        if let Some(token) = self.current_token() {
            request = request.header("Authorization", token);
        }
        let mut response = match request.send(body.to_string()) {
            Ok(r) => r,
            Err(e) if http::nothing_sent(&e) => return Verdict::TryNext(http::describe(&e)),
            Err(e) => return Verdict::Unknown(http::describe(&e)),
        };
        let status = response.status().as_u16();
        let text = match http::body_text(&mut response) {
            Ok(t) => t,
            Err(e) => {
                return Verdict::Unknown(format!("reading the answer: {}", http::describe(&e)))
            }
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            let snippet: String = self.without_secrets(&text).chars().take(80).collect();
            return Verdict::TryNext(format!(
                "HTTP {status} is not an etcd v3 answer: {snippet:?}"
            ));
        };
        self.judge(status, value, body, kind)
    }

    fn judge(&self, status: u16, value: Value, body: &Value, kind: Kind) -> Verdict {
        if status == 200 {
            return Verdict::Ok(value);
        }
        let message = self.without_secrets(
            value
                .get("message")
                .or_else(|| value.get("error"))
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        let denied = |reason: String| {
            Verdict::Fail(Error::PermissionDenied {
                store: self.display.clone(),
                key: key_of(body),
                reason,
            })
        };
        match (
            status,
            value.get("code").and_then(Value::as_u64).unwrap_or(0),
        ) {
            (401, _) => Verdict::Reauthenticate,
            (403, _) => denied(message),
            (400, 3) if message.contains("user name is empty") => {
                denied("etcd has authentication on: set ETCDCTL_USER (and a password)".into())
            }
            (400, 3) if message.contains("authentication failed") => denied(format!(
                "etcd refused the credentials of user {:?}",
                self.credentials.as_ref().map_or("", |c| c.user.as_str())
            )),
            (400, 3) | (429, _)
                if message.contains("too large") || message.contains("larger than max") =>
            {
                Verdict::Fail(Error::bad_key(
                    key_of(body),
                    format!("refused by etcd as too large: {message}"),
                ))
            }
            (503, _) if message.contains("no leader") => Verdict::TryNext(message),
            (500 | 503 | 504, _) => Verdict::Unknown(message),
            _ if kind == Kind::Read => Verdict::TryNext(format!("HTTP {status}: {message}")),
            _ => Verdict::Fail(self.unavailable(format!("HTTP {status}: {message}"))),
        }
    }

    /// Server text with our password and auth token taken out (before any
    /// truncation, as sent and as JSON-escaped): a proxy or WAF in between
    /// may echo the authentication request's body in its error.
    fn without_secrets(&self, text: &str) -> String {
        let mut text = text.to_string();
        let token = self.current_token();
        let secrets = self
            .credentials
            .iter()
            .map(|c| c.password.as_str())
            .chain(token.as_deref());
        for secret in secrets.filter(|s| !s.is_empty()) {
            let quoted = Value::from(secret).to_string();
            for form in [secret, &quoted[1..quoted.len() - 1]] {
                text = text.replace(form, "<redacted>");
            }
        }
        text
    }

    /// Gets a token for the credentials (simple tokens expire when unused
    /// for five minutes; a 401 brings us back here).
    fn authenticate(&self, endpoint: &str, deadline: Instant) -> Result<()> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        let body = json!({"name": credentials.user, "password": credentials.password});
        match self.send(endpoint, "auth/authenticate", &body, Kind::Read, deadline) {
            Verdict::Ok(reply) => {
                let token = reply
                    .get("token")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if token.is_empty() {
                    // Auth is off: requests go without a token.
                    return Ok(());
                }
                *self.token.lock().expect("token lock") = Some(token.to_string());
                Ok(())
            }
            Verdict::Fail(Error::PermissionDenied { store, reason, .. }) => {
                Err(Error::PermissionDenied {
                    store,
                    key: "(authentication)".into(),
                    reason,
                })
            }
            Verdict::Fail(e) => Err(e),
            Verdict::TryNext(reason) | Verdict::Unknown(reason) => {
                Err(self.unavailable(format!("{endpoint}: authenticating: {reason}")))
            }
            Verdict::Reauthenticate => Err(Error::PermissionDenied {
                store: self.display.clone(),
                key: "(authentication)".into(),
                reason: "etcd refused to authenticate".into(),
            }),
        }
    }

    fn entries_of(range: &Value) -> Result<Vec<Entry>> {
        let Some(kvs) = range.get("kvs").and_then(Value::as_array) else {
            return Ok(Vec::new());
        };
        kvs.iter()
            .map(|kv| {
                let raw_key = B64
                    .decode(kv.get("key").and_then(Value::as_str).unwrap_or_default())
                    .map_err(|e| Error::bad_key("(etcd)", format!("a key is not base64: {e}")))?;
                let key = String::from_utf8(raw_key).map_err(|e| {
                    Error::bad_key(
                        String::from_utf8_lossy(e.as_bytes()),
                        "the key is not UTF-8",
                    )
                })?;
                let value = B64
                    .decode(kv.get("value").and_then(Value::as_str).unwrap_or_default())
                    .map_err(|e| Error::bad_key(&key, format!("the value is not base64: {e}")))?;
                Ok(Entry {
                    version: number(kv.get("mod_revision").unwrap_or(&Value::Null)),
                    key,
                    value,
                })
            })
            .collect()
    }

    fn range_ops(&self, root: &str) -> [Value; 2] {
        let under = format!("{root}/");
        let mut exact = json!({"key": b64(root)});
        let mut subtree =
            json!({"key": b64(&under), "range_end": b64(prefix_end(under.as_bytes()))});
        if self.serializable {
            exact["serializable"] = json!(true);
            subtree["serializable"] = json!(true);
        }
        [
            json!({"request_range": exact}),
            json!({"request_range": subtree}),
        ]
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

    /// A lease of `ttl` and a create-if-absent put of `name` bound to it; a
    /// thread keeps the lease alive while the lock is held. A crashed holder
    /// stops renewing, and etcd deletes the key when the lease expires.
    fn lock(&self, name: &str, ttl: Duration, holder: &str) -> Result<Box<dyn HeldLock>> {
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

    /// One watch stream per root, each over the root and every key that
    /// starts with it (events on a sibling such as `web-10` for `web-1` are
    /// dropped here and wake nobody), resumed from the next revision
    /// whenever it breaks.
    ///
    /// One create request per stream, never several: etcd's gateway starts
    /// streaming replies while still reading the request body, and Go's HTTP
    /// server may then drop the rest of the body, silently losing watchers.
    fn watch(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        let baseline = self.read_trees(roots)?.revision.unwrap_or(0);
        let (feed, tx, stop) = ChannelFeed::new(self.client.display.clone());
        for root in roots {
            let watcher = Watcher {
                client: Arc::clone(&self.client),
                key: root.as_bytes().to_vec(),
                range_end: prefix_end(root.as_bytes()),
                next_revision: baseline + 1,
                tx: tx.clone(),
                stop: Arc::clone(&stop),
            };
            thread::spawn(move || watcher.run());
        }
        Ok(Box::new(feed))
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
            Err(Error::Conflict {
                key: self.name.clone(),
                reason: "the lock was lost: its lease expired before it could be renewed".into(),
            })
        } else {
            Ok(())
        }
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

/// One of the threads behind an etcd [`ChannelFeed`]: a stream over one key range.
struct Watcher {
    client: Arc<Client>,
    key: Vec<u8>,
    range_end: Vec<u8>,
    next_revision: u64,
    tx: Sender<FeedEvent>,
    stop: Arc<AtomicBool>,
}

/// Why a stream ended.
enum StreamEnd {
    /// It ended or broke; open it again at once.
    Reopen,
    /// Something failed; tell the feed and back off.
    Failed(String),
    /// The feed was dropped.
    Stop,
}

impl Watcher {
    fn run(mut self) {
        let mut failures: u32 = 0;
        while !self.stop.load(Ordering::SeqCst) {
            match self.stream() {
                StreamEnd::Stop => return,
                StreamEnd::Reopen => {
                    failures = 0;
                    // A stream usually breaks because the member went away,
                    // for every agent at once: reopen after a random splay
                    // (no change is missed: it resumes at `next_revision`).
                    if !pause_unless_stopped(&self.stop, reconnect_splay()) {
                        return;
                    }
                }
                StreamEnd::Failed(reason) => {
                    if self.tx.send(FeedEvent::Failed(reason)).is_err() {
                        return;
                    }
                    failures += 1;
                    if !pause_unless_stopped(&self.stop, failure_backoff(failures)) {
                        return;
                    }
                }
            }
        }
    }

    fn request(&self) -> String {
        json!({"create_request": {
            "key": b64(&self.key),
            "range_end": b64(&self.range_end),
            "start_revision": self.next_revision.to_string(),
        }})
        .to_string()
    }

    fn stream(&mut self) -> StreamEnd {
        let client = Arc::clone(&self.client);
        let deadline = Instant::now() + client.timeout;
        let mut last = String::from("no endpoint answered");
        for endpoint in &client.endpoints {
            if client.credentials.is_some() && client.current_token().is_none() {
                if let Err(e) = client.authenticate(endpoint, deadline) {
                    last = e.to_string();
                    continue;
                }
            }
            let mut request = client.stream_agent.post(&format!("{endpoint}/v3/watch"));
            if let Some(token) = client.current_token() {
                request = request.header("Authorization", token);
            }
            let response = match request.send(self.request()) {
                Ok(r) if r.status().as_u16() == 200 => r,
                Ok(r) => {
                    last = format!("{endpoint}: watch answered HTTP {}", r.status().as_u16());
                    continue;
                }
                Err(e) => {
                    last = format!("{endpoint}: {}", http::describe(&e));
                    continue;
                }
            };
            return self.follow(response);
        }
        StreamEnd::Failed(last)
    }

    fn follow(&mut self, response: ureq::http::Response<ureq::Body>) -> StreamEnd {
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            if self.stop.load(Ordering::SeqCst) {
                return StreamEnd::Stop;
            }
            let Ok(line) = line else {
                return StreamEnd::Reopen;
            };
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let result = &message["result"];
            if result
                .get("canceled")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                let compacted = number(&result["compact_revision"]);
                if compacted > 0 {
                    // History we missed is gone: resume from what is left,
                    // and have the reader look afresh.
                    self.next_revision = compacted;
                    return match self.tx.send(FeedEvent::Changed) {
                        Ok(()) => StreamEnd::Reopen,
                        Err(_) => StreamEnd::Stop,
                    };
                }
                let reason = result
                    .get("cancel_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("canceled by etcd")
                    .to_string();
                if reason.contains("auth") || reason.contains("user name") {
                    *self.client.token.lock().expect("token lock") = None;
                }
                return StreamEnd::Failed(format!("watch canceled: {reason}"));
            }
            if let Some(events) = result.get("events").and_then(Value::as_array) {
                let newest = events
                    .iter()
                    .map(|e| number(&e["kv"]["mod_revision"]))
                    .max()
                    .unwrap_or(0);
                self.next_revision = self.next_revision.max(newest + 1);
                // The range also holds siblings (`web-1` covers `web-10`):
                // only the root and what is under it wake the reader.
                let ours = events.iter().any(|e| {
                    let key = B64
                        .decode(e["kv"]["key"].as_str().unwrap_or_default())
                        .unwrap_or_default();
                    in_tree(&key, &self.key)
                });
                if ours && self.tx.send(FeedEvent::Changed).is_err() {
                    return StreamEnd::Stop;
                }
            }
        }
        StreamEnd::Reopen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::env_of;

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"/app/config/"), b"/app/config0");
        assert_eq!(prefix_end(b"p\xff"), b"q");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn a_tree_is_its_root_and_what_is_under_it() {
        assert!(in_tree(
            b"p/clusters/web/nodes/web-1",
            b"p/clusters/web/nodes/web-1"
        ));
        assert!(in_tree(
            b"p/clusters/web/nodes/web-1/a",
            b"p/clusters/web/nodes/web-1"
        ));
        assert!(!in_tree(
            b"p/clusters/web/nodes/web-10",
            b"p/clusters/web/nodes/web-1"
        ));
        assert!(!in_tree(
            b"p/clusters/web/nodes/web-1-a",
            b"p/clusters/web/nodes/web-1"
        ));
    }

    #[test]
    fn numbers_come_as_strings_or_not_at_all() {
        assert_eq!(number(&json!("2324035595417139493")), 2324035595417139493);
        assert_eq!(number(&json!(7)), 7);
        assert_eq!(number(&Value::Null), 0);
    }

    #[test]
    fn endpoints_come_from_the_url_else_etcdctl_endpoints() {
        let env = env_of(&[("ETCDCTL_ENDPOINTS", "https://a:1, b:2")]);
        assert_eq!(
            endpoint_urls(&[], "http", &env).unwrap(),
            ["https://a:1", "http://b:2"]
        );
        assert_eq!(
            endpoint_urls(&["c:3".into()], "https", &env).unwrap(),
            ["https://c:3"]
        );
        assert_eq!(
            endpoint_urls(&[], "http", &env_of(&[])).unwrap(),
            ["http://127.0.0.1:2379"]
        );
        assert!(endpoint_urls(&[], "http", &env_of(&[("ETCDCTL_ENDPOINTS", "unix://x")])).is_err());
    }

    #[test]
    fn credentials_take_the_password_from_user_variable_or_file() {
        let c = credentials(&env_of(&[("ETCDCTL_USER", "alice:pw:with:colons")]), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("alice", "pw:with:colons")
        );
        let c = credentials(
            &env_of(&[("ETCDCTL_USER", "bob"), ("ETCDCTL_PASSWORD", "s3")]),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.password, "s3");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let c = credentials(&env_of(&[("ETCDCTL_USER", "carol")]), Some(file))
            .unwrap()
            .unwrap();
        assert_eq!(c.password, "from-file");
        let err = credentials(&env_of(&[("ETCDCTL_USER", "dave")]), None).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(credentials(&env_of(&[]), None).unwrap().is_none());
        assert!(
            !format!("{c:?}").contains("from-file"),
            "Debug must redact the password"
        );
    }

    #[test]
    fn tls_needs_cert_and_key_together() {
        let err = tls_settings(&env_of(&[("ETCDCTL_CERT", "/c.pem")])).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        let tls = tls_settings(&env_of(&[("ETCDCTL_INSECURE_SKIP_TLS_VERIFY", "true")])).unwrap();
        assert!(!tls.verify);
        assert!(tls_settings(&env_of(&[])).unwrap().verify);
    }

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
