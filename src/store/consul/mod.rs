//! The Consul backend, over Consul's HTTP API (`/v1/txn`, `/v1/kv`,
//! `/v1/session`, `/v1/event`) with blocking `ureq` calls.
//!
//! What Consul makes us mind (see the protocol notes in the README):
//! - every read is one read-only `/v1/txn` of `get-tree` ops: a `get` of a
//!   missing key would fail the whole transaction. A tree of `web-1` also
//!   holds `web-10`, so only the key itself and the keys under `key/` are kept;
//! - a transaction takes at most 64 operations and 512 KiB of body, and its
//!   values are base64 (a third larger); a value takes at most 512 KiB. Both
//!   are refused here, naming the key, before anything is sent;
//! - a compare-and-set that lost is a 409 with `Errors`, but so is a write
//!   the token may not make (`Permission denied` in the error): one is a
//!   conflict, the other exit 77;
//! - a write whose answer was lost may still be applied: it is never sent
//!   again here, the caller re-reads (see `crate::update`);
//! - list reads leave out what the token may not read, silently;
//! - blocking queries: the index is never 0 (that never blocks), it is reset
//!   when it goes backwards (snapshot restore), and the read timeout stays
//!   above the wait plus Consul's jitter of up to wait/16.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use ureq::Agent;

use super::feed::{failure_backoff, ChannelFeed, FeedEvent};
use super::http::{self, Bound, TlsSettings, TlsVariables};
use super::{
    ChangeFeed, Compare, Entry, HeldLock, Op, Snapshot, Store, StoreKind, StoreOptions, StoreUrl,
    Txn, TxnLimits, TxnOutcome,
};
use crate::clock::pause_unless_stopped;
use crate::clock::{random_fraction, HumanDuration};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::local_file;

/// Options the Consul URL accepts (`consul://h:8500?dc=dc2&consistency=stale`).
const OPTIONS: [&str; 2] = ["consistency", "dc"];
/// Where the consul CLI looks when nothing says otherwise.
const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";
/// Consul's hard-coded `maxTxnOps`.
const MAX_TXN_OPS: usize = 64;
/// Consul's default `limits.kv_max_value_size`, per value.
const MAX_VALUE_BYTES: usize = 512 * 1024;
/// Consul's default `txn_max_req_len`, for a transaction's whole body.
const MAX_TXN_BODY: usize = 512 * 1024;
/// Raw bytes of keys and values per bulk transaction: base64 makes values a
/// third larger and each operation adds some JSON; this keeps a full
/// transaction of 64 operations under [`MAX_TXN_BODY`].
const TXN_SPLIT_BYTES: usize = 380_000;
/// Pause between tries of a request that may be retried.
const RETRY_PAUSE: Duration = Duration::from_millis(150);
/// Consul's default `session_ttl_min`: shorter lock TTLs are raised to it.
const MIN_SESSION_TTL: Duration = Duration::from_secs(10);
/// How long one blocking query may wait (Consul's default query time).
const WATCH_WAIT: Duration = Duration::from_secs(600);
/// Blocking queries a follower may send back to back…
const WATCH_BURST: f64 = 5.0;
/// …after which it sends one per this interval while results churn.
const WATCH_REFILL: Duration = Duration::from_secs(5);

/// A view kept in Consul's KV store.
pub struct ConsulStore {
    client: Arc<Client>,
}

/// A token or password: kept out of `Debug` output and messages.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How reads ask for consistency (`?consistency=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Consistency {
    /// The leader answers without checking with a quorum.
    Default,
    /// The leader confirms its leadership first.
    Consistent,
    /// Any server answers, even without a leader.
    Stale,
}

impl Consistency {
    fn query_flag(self) -> Option<&'static str> {
        match self {
            Consistency::Default => None,
            Consistency::Consistent => Some("consistent"),
            Consistency::Stale => Some("stale"),
        }
    }
}

/// Everything a request needs; shared with lock and watch threads.
#[derive(Clone, Debug)]
struct Client {
    display: String,
    /// `http[s]://host:port[/path-prefix]`.
    base: String,
    agent: Agent,
    timeout: Duration,
    token: Option<Secret>,
    /// `Authorization` for a proxy in front of Consul (`CONSUL_HTTP_AUTH`).
    basic_auth: Option<Secret>,
    /// Parameters every request carries: `dc`, `ns`, `partition`.
    common_query: Vec<String>,
    consistency: Consistency,
}

/// Whether a request whose answer was lost may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Changes nothing.
    Read,
    /// Changes something, but doing it twice is doing it once.
    Idempotent,
    /// May have been applied even if no answer came back.
    Write,
}

#[derive(Clone, Copy, Debug)]
enum Method {
    Get,
    Put,
}

/// How long one request may take.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// The whole request.
    Whole(Duration),
    /// A blocking query: connecting is quick, the answer may take the wait.
    Blocking { connect: Duration, answer: Duration },
}

/// An HTTP answer from Consul, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// `X-Consul-Index`, where sent.
    index: Option<u64>,
    /// `X-Consul-Default-Acl-Policy: deny`.
    acl_deny: bool,
    body: String,
}

impl ConsulStore {
    /// Opens the store the URL names. The address comes from the URL, else
    /// `CONSUL_HTTP_ADDR`, else `127.0.0.1:8500`; the token from
    /// `CONSUL_HTTP_TOKEN_FILE`, else `CONSUL_HTTP_TOKEN`; TLS from
    /// `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY` and
    /// `CONSUL_HTTP_SSL_VERIFY`, as the consul CLI reads them.
    pub fn open(url: &StoreUrl, options: &StoreOptions, env: Env) -> Result<ConsulStore> {
        let StoreUrl::Consul { https, address, .. } = url else {
            unreachable!("ConsulStore::open is given consul URLs only")
        };
        let opts = url.check_options(&OPTIONS)?;
        let consistency = match opts.get("consistency").map(String::as_str) {
            None | Some("default") => Consistency::Default,
            Some("consistent") => Consistency::Consistent,
            Some("stale") => Consistency::Stale,
            Some(other) => {
                return Err(Error::config(
                    format!("store URL {url}"),
                    format!("consistency {other:?} is not default, consistent or stale"),
                ))
            }
        };
        let (base, display) = base_url(url, *https, address.as_deref(), env)?;
        let mut common_query = Vec::new();
        if let Some(dc) = opts.get("dc") {
            common_query.push(format!("dc={}", encode(dc, false)));
        }
        for (var, param) in [
            ("CONSUL_NAMESPACE", "ns"),
            ("CONSUL_PARTITION", "partition"),
        ] {
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                common_query.push(format!("{param}={}", encode(&value, false)));
            }
        }
        let tls = tls_settings(env)?;
        let client = Client {
            display,
            base,
            agent: http::agent(Bound::Whole(options.timeout), &tls)?,
            timeout: options.timeout,
            token: token(env)?,
            basic_auth: env("CONSUL_HTTP_AUTH")
                .filter(|a| !a.is_empty())
                .map(|a| Secret(format!("Basic {}", B64.encode(a)))),
            common_query,
            consistency,
        };
        Ok(ConsulStore {
            client: Arc::new(client),
        })
    }
}

/// The base URL and the store's name for messages. Like the consul CLI,
/// `CONSUL_HTTP_ADDR` is `host:port`, `http://…` or `https://…` (with an
/// optional path prefix for a reverse proxy); `CONSUL_HTTP_SSL=true` turns
/// https on for a bare `host:port`.
fn base_url(
    url: &StoreUrl,
    https: bool,
    address: Option<&str>,
    env: Env,
) -> Result<(String, String)> {
    if let Some(address) = address {
        let scheme = if https { "https" } else { "http" };
        return Ok((format!("{scheme}://{address}"), url.to_string()));
    }
    let (from, address) = match env("CONSUL_HTTP_ADDR").filter(|a| !a.trim().is_empty()) {
        Some(a) => (
            "CONSUL_HTTP_ADDR",
            a.trim().trim_end_matches('/').to_string(),
        ),
        None => ("the default address", DEFAULT_ADDRESS.to_string()),
    };
    let bad = |problem: String| Error::config("CONSUL_HTTP_ADDR", problem);
    if address.contains('@') {
        return Err(bad(
            "the address carries credentials (`user@`); use CONSUL_HTTP_AUTH or a token instead"
                .into(),
        ));
    }
    let ssl = http::env_bool(env, "CONSUL_HTTP_SSL")?.unwrap_or(false);
    let base = match address.split_once("://") {
        Some(("http", _)) if https => {
            return Err(bad(format!(
                "{address:?} is plain http, but the store URL {url} asks for https"
            )))
        }
        Some(("http" | "https", rest)) if !rest.is_empty() => address.clone(),
        Some(("unix", _)) => {
            return Err(bad(format!(
                "{address:?}: unix sockets are not supported; give host:port"
            )))
        }
        Some((scheme, _)) => return Err(bad(format!("unknown protocol scheme {scheme:?}"))),
        None if https || ssl => format!("https://{address}"),
        None => format!("http://{address}"),
    };
    let shown = base
        .replacen("https://", "consul+https://", 1)
        .replacen("http://", "consul://", 1);
    let options = url.to_string();
    let options = options.find('?').map_or("", |i| &options[i..]);
    Ok((base, format!("{shown}{options} (from {from})")))
}

fn tls_settings(env: Env) -> Result<TlsSettings> {
    // Silently ignoring these would verify against the wrong roots or name.
    for (var, instead) in [
        (
            "CONSUL_CAPATH",
            "point CONSUL_CACERT at a bundle file instead",
        ),
        (
            "CONSUL_TLS_SERVER_NAME",
            "connect with the name in the server's certificate instead",
        ),
    ] {
        if env(var).is_some_and(|v| !v.is_empty()) {
            return Err(Error::config(var, format!("is not supported; {instead}")));
        }
    }
    let verify = http::env_bool(env, "CONSUL_HTTP_SSL_VERIFY")?.unwrap_or(true);
    let vars = TlsVariables {
        ca_file: "CONSUL_CACERT",
        client_cert: "CONSUL_CLIENT_CERT",
        client_key: "CONSUL_CLIENT_KEY",
    };
    TlsSettings::from_env(env, &vars, verify)
}

/// The ACL token: `CONSUL_HTTP_TOKEN_FILE` (read once, whitespace trimmed)
/// wins over `CONSUL_HTTP_TOKEN`, as in the consul CLI.
fn token(env: Env) -> Result<Option<Secret>> {
    if let Some(path) = env("CONSUL_HTTP_TOKEN_FILE").filter(|p| !p.is_empty()) {
        let text = local_file::read_text(std::path::Path::new(&path), local_file::MAX_SECRET_BYTES)
            .map_err(|e| {
                Error::config(
                    format!("CONSUL_HTTP_TOKEN_FILE={path}"),
                    format!("the file {e}"),
                )
            })?;
        let text = text.trim();
        if !text.is_empty() {
            return checked_token("CONSUL_HTTP_TOKEN_FILE", text).map(Some);
        }
    }
    env("CONSUL_HTTP_TOKEN")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .map(|t| checked_token("CONSUL_HTTP_TOKEN", &t))
        .transpose()
}

/// A token goes in an HTTP header: a line break or other control character
/// in it is bad configuration (exit 78), not a store that cannot be reached.
/// The message never shows the token.
fn checked_token(origin: &str, token: &str) -> Result<Secret> {
    if token.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(Error::config(
            origin,
            "the token holds a line break, control or non-ASCII character, which an HTTP header cannot carry",
        ));
    }
    Ok(Secret(token.to_string()))
}

/// Percent-encodes `text` for a URL, keeping `/` when `keep_slash` (KV keys
/// go in the path, and Consul decodes it).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `/v1/kv/…` path of a key.
fn kv_path(key: &str) -> Result<String> {
    if key.is_empty() || key.starts_with('/') {
        return Err(Error::bad_key(
            key,
            "a Consul key must not be empty or begin with `/`",
        ));
    }
    Ok(format!("/v1/kv/{}", encode(key, true)))
}

/// Whether `key` is `root` or under `root/` (a Consul tree of `web-1` also
/// holds `web-10`).
fn under(key: &str, root: &str) -> bool {
    key == root
        || key
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/') || root.ends_with('/'))
}

/// An entry of a KV answer (`{"Key", "Value": base64 or null, "ModifyIndex", …}`).
fn entry_of(kv: &Value) -> Result<Entry> {
    let key = kv
        .get("Key")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_key("(consul)", "an entry came back without a key"))?
        .to_string();
    let value = match kv.get("Value") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => B64
            .decode(text)
            .map_err(|e| Error::bad_key(&key, format!("the value is not base64: {e}")))?,
        Some(other) => {
            return Err(Error::bad_key(
                &key,
                format!("the value is neither base64 text nor null: {other}"),
            ))
        }
    };
    Ok(Entry {
        version: kv.get("ModifyIndex").and_then(Value::as_u64).unwrap_or(0),
        key,
        value,
    })
}

/// What a node's change feed compares: each key and its index.
fn digest(entries: &[Entry]) -> Vec<(String, u64)> {
    entries.iter().map(|e| (e.key.clone(), e.version)).collect()
}

/// The ops of a [`Txn`] in Consul's verbs, and the key each is about. A
/// compare and a write on the same key become one op (`cas`, `delete-cas`),
/// so that rewriting a document folded from many sub-keys stays within 64.
fn txn_ops(txn: &Txn) -> (Vec<Value>, Vec<String>) {
    let mut unused: Vec<Option<&Compare>> = txn.compares.iter().map(Some).collect();
    let mut take = |key: &str| -> Option<Compare> {
        unused
            .iter_mut()
            .find(|c| {
                c.is_some_and(|c| match c {
                    // A version 0 cannot exist: `cas` with Index 0 would mean
                    // "absent", so it stays a separate check.
                    Compare::Version { key: k, version } => k == key && *version > 0,
                    Compare::Absent { key: k } => k == key,
                })
            })
            .and_then(Option::take)
            .cloned()
    };
    let deletes = txn.ops.iter().filter(|o| matches!(o, Op::Delete { .. }));
    let puts = txn.ops.iter().filter(|o| matches!(o, Op::Put { .. }));
    let mut writes = Vec::new();
    for op in deletes.chain(puts) {
        let key = op.key().to_string();
        let kv = match (op, take(&key)) {
            (Op::Delete { .. }, None) => json!({"Verb": "delete", "Key": key}),
            (Op::Delete { .. }, Some(Compare::Version { version, .. })) => {
                json!({"Verb": "delete-cas", "Key": key, "Index": version})
            }
            // Deleting a key that must be absent is checking that it is.
            (Op::Delete { .. }, Some(Compare::Absent { .. })) => {
                json!({"Verb": "check-not-exists", "Key": key})
            }
            (Op::Put { value, .. }, None) => {
                json!({"Verb": "set", "Key": key, "Value": B64.encode(value)})
            }
            (Op::Put { value, .. }, Some(Compare::Version { version, .. })) => {
                json!({"Verb": "cas", "Key": key, "Value": B64.encode(value), "Index": version})
            }
            (Op::Put { value, .. }, Some(Compare::Absent { .. })) => {
                json!({"Verb": "cas", "Key": key, "Value": B64.encode(value), "Index": 0})
            }
        };
        writes.push((json!({ "KV": kv }), key));
    }
    let checks = unused.into_iter().flatten().map(|c| match c {
        Compare::Version { key, version } => (
            json!({"KV": {"Verb": "check-index", "Key": key, "Index": version}}),
            key.clone(),
        ),
        Compare::Absent { key } => (
            json!({"KV": {"Verb": "check-not-exists", "Key": key}}),
            key.clone(),
        ),
    });
    checks.chain(writes).unzip()
}

fn is_write(op: &Value) -> bool {
    !matches!(
        op["KV"]["Verb"].as_str(),
        Some("get" | "get-tree" | "check-index" | "check-session" | "check-not-exists")
    )
}

impl Client {
    fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::Unavailable {
            store: self.display.clone(),
            reason: reason.into(),
        }
    }

    /// Server text for a message: bounded, and with our own token taken
    /// out in case anything ever echoed it.
    fn quote(&self, text: &str) -> String {
        let mut text: String = text.trim().chars().take(300).collect();
        for secret in self.token.iter().chain(&self.basic_auth) {
            if !secret.0.is_empty() {
                text = text.replace(&secret.0, "<token>");
            }
        }
        text
    }

    fn denied(&self, key: &str, text: &str) -> Error {
        let hint = if self.token.is_none() {
            " (no token was sent: set CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE)"
        } else {
            ""
        };
        Error::PermissionDenied {
            store: self.display.clone(),
            key: key.to_string(),
            reason: format!("Consul answered {:?}{hint}", self.quote(text)),
        }
    }

    /// The URL of `path` with `query` and every request's own parameters;
    /// reads also carry the consistency asked for.
    fn url(&self, path: &str, query: &[String], read: bool) -> String {
        let mut params: Vec<&str> = query.iter().map(String::as_str).collect();
        params.extend(self.common_query.iter().map(String::as_str));
        if read {
            params.extend(self.consistency.query_flag());
        }
        if params.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{}", self.base, params.join("&"))
        }
    }

    /// Sends one request and reads the whole answer.
    fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        limit: Limit,
    ) -> std::result::Result<Reply, ureq::Error> {
        macro_rules! configured {
            ($request:expr) => {{
                let config = $request.config();
                let config = match limit {
                    Limit::Whole(d) => config.timeout_global(Some(d)),
                    Limit::Blocking { connect, answer } => config
                        .timeout_global(None)
                        .timeout_connect(Some(connect))
                        .timeout_recv_response(Some(answer))
                        .timeout_recv_body(Some(connect)),
                };
                let mut request = config.build();
                if let Some(token) = &self.token {
                    request = request.header("X-Consul-Token", &token.0);
                }
                if let Some(auth) = &self.basic_auth {
                    request = request.header("Authorization", &auth.0);
                }
                request
            }};
        }
        let mut response = match method {
            Method::Get => configured!(self.agent.get(url)).call()?,
            Method::Put => {
                let request = configured!(self.agent.put(url));
                match body {
                    // As the Go client does: some proxies drop PUTs without it.
                    Some(body) => request
                        .header("Content-Type", "application/json")
                        .send(body)?,
                    None => request.send_empty()?,
                }
            }
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let index = header("X-Consul-Index").and_then(|i| i.parse().ok());
        let acl_deny = header("X-Consul-Default-Acl-Policy").is_some_and(|p| p == "deny");
        let status = response.status().as_u16();
        let body = http::body_text(&mut response)?;
        Ok(Reply {
            status,
            index,
            acl_deny,
            body,
        })
    }

    /// Sends a request, retried within `--timeout` while Consul cannot
    /// answer (no connection, no leader, 5xx, rate limits) — except a write
    /// that may have been applied, which fails at once with its outcome
    /// unknown. Refusals (403) become [`Error::PermissionDenied`] naming
    /// `about`; every other answer is the caller's to read.
    fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        kind: Kind,
        about: &str,
    ) -> Result<Reply> {
        let deadline = Instant::now() + self.timeout;
        let unknown = |reason: String| {
            self.unavailable(format!(
                "{reason}; the write to {about} may or may not have been applied"
            ))
        };
        loop {
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(50));
            let why = match self.send(method, url, body, Limit::Whole(remaining)) {
                Err(e) if http::nothing_sent(&e) => http::describe(&e),
                Err(e) if kind == Kind::Write => return Err(unknown(http::describe(&e))),
                Err(e) => http::describe(&e),
                Ok(reply) => {
                    let text = self.quote(&reply.body);
                    // Refusals that say nothing was applied.
                    let not_applied = text.contains("No cluster leader")
                        || text.contains("No path to datacenter");
                    match reply.status {
                        401 | 403 => return Err(self.denied(about, &reply.body)),
                        429 => format!("rate limited (HTTP 429): {text}"),
                        500 if text.contains("Invalid Session TTL") => {
                            return Err(Error::config(
                                format!("store {}", self.display),
                                format!("Consul refused the lock's session for {about}: {text}"),
                            ))
                        }
                        500..=599 if not_applied || kind != Kind::Write => {
                            format!("HTTP {}: {text}", reply.status)
                        }
                        500..=599 => return Err(unknown(format!("HTTP {}: {text}", reply.status))),
                        _ => return Ok(reply),
                    }
                }
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(self.unavailable(why));
            }
            thread::sleep(RETRY_PAUSE);
        }
    }

    /// An answer the caller did not expect, as the error it means.
    fn refused(&self, reply: &Reply, about: &str) -> Error {
        let text = self.quote(&reply.body);
        match reply.status {
            400 => Error::config(
                format!("store {}", self.display),
                format!("Consul refused the request for {about}: {text}"),
            ),
            413 => Error::bad_key(about, format!("Consul refused it as too large: {text}")),
            status => self.unavailable(format!("unexpected HTTP {status} for {about}: {text}")),
        }
    }

    fn json(&self, reply: &Reply) -> Result<Value> {
        serde_json::from_str(&reply.body).map_err(|_| {
            let snippet: String = reply.body.chars().take(80).collect();
            self.unavailable(format!(
                "HTTP {} is not a Consul answer: {snippet:?}",
                reply.status
            ))
        })
    }

    /// The first error of a rolled-back transaction that is an ACL
    /// refusal, naming the key of its operation.
    fn txn_denied(&self, body: &Value, keys: &[String]) -> Option<Error> {
        body.get("Errors")?
            .as_array()?
            .iter()
            .find(|e| {
                e["What"]
                    .as_str()
                    .is_some_and(|w| w.contains("Permission denied") || w.contains("ACL not found"))
            })
            .map(|e| {
                let key = e["OpIndex"]
                    .as_u64()
                    .and_then(|i| keys.get(i as usize))
                    .map_or("(transaction)", String::as_str);
                self.denied(key, e["What"].as_str().unwrap_or_default())
            })
    }

    fn txn(&self, ops: &[Value], kind: Kind, about: &str) -> Result<Reply> {
        let body = serde_json::to_vec(ops).expect("JSON values serialize");
        let url = self.url("/v1/txn", &[], kind == Kind::Read);
        self.call(Method::Put, &url, Some(&body), kind, about)
    }

    /// The lock key as it is now: its value and the session holding it.
    fn lock_state(&self, name: &str) -> Result<Option<(String, Option<String>)>> {
        let url = self.url(&kv_path(name)?, &[], true);
        let reply = self.call(Method::Get, &url, None, Kind::Read, name)?;
        match reply.status {
            404 => Ok(None),
            200 => {
                let body = self.json(&reply)?;
                let kv = &body[0];
                let entry = entry_of(kv)?;
                Ok(Some((
                    String::from_utf8_lossy(&entry.value).into_owned(),
                    kv["Session"].as_str().map(str::to_string),
                )))
            }
            _ => Err(self.refused(&reply, name)),
        }
    }

    /// Renews a session: the TTL Consul granted, or `None` when the session
    /// is gone.
    fn renew(&self, id: &str) -> Result<Option<Duration>> {
        let url = self.url(
            &format!("/v1/session/renew/{}", encode(id, false)),
            &[],
            false,
        );
        let reply = self.call(Method::Put, &url, None, Kind::Idempotent, "(lock session)")?;
        match reply.status {
            404 => Ok(None),
            200 => {
                let body = self.json(&reply)?;
                let granted = body[0]["TTL"]
                    .as_str()
                    .and_then(|t| t.parse::<HumanDuration>().ok())
                    .map(|d| d.0)
                    .unwrap_or(Duration::ZERO);
                Ok(Some(granted))
            }
            _ => Err(self.refused(&reply, "(lock session)")),
        }
    }

    /// Destroys a session; with behavior `delete`, Consul deletes the keys
    /// it holds. Idempotent: an unknown session is fine.
    fn destroy_session(&self, id: &str) {
        let url = self.url(
            &format!("/v1/session/destroy/{}", encode(id, false)),
            &[],
            false,
        );
        let _ = self.call(Method::Put, &url, None, Kind::Idempotent, "(lock session)");
    }

    /// One blocking query over a tree: the index Consul answered with and
    /// the entries under `root` (the whole answer, not a difference).
    fn blocking_list(&self, root: &str, index: u64) -> Result<(u64, Vec<Entry>)> {
        let mut query = vec!["recurse".to_string()];
        if index > 0 {
            query.push(format!("index={index}"));
            query.push(format!("wait={}s", WATCH_WAIT.as_secs()));
        }
        let url = self.url(&kv_path(root)?, &query, true);
        // Consul holds the answer up to the wait plus a jitter of wait/16.
        let answer = WATCH_WAIT * 17 / 16 + self.timeout + Duration::from_secs(5);
        let reply = self
            .send(
                Method::Get,
                &url,
                None,
                Limit::Blocking {
                    connect: self.timeout,
                    answer,
                },
            )
            .map_err(|e| self.unavailable(http::describe(&e)))?;
        let entries = match reply.status {
            404 => Vec::new(),
            200 => {
                let body = self.json(&reply)?;
                body.as_array()
                    .map(|list| list.iter().map(entry_of).collect::<Result<Vec<_>>>())
                    .transpose()?
                    .unwrap_or_default()
            }
            401 | 403 => return Err(self.denied(root, &reply.body)),
            status => {
                return Err(self.unavailable(format!(
                    "HTTP {status} following {root}: {}",
                    self.quote(&reply.body)
                )))
            }
        };
        let index = reply
            .index
            .ok_or_else(|| self.unavailable(format!("no X-Consul-Index following {root}")))?;
        Ok((
            index,
            entries
                .into_iter()
                .filter(|e| under(&e.key, root))
                .collect(),
        ))
    }
}

impl Store for ConsulStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Consul
    }

    fn describe(&self) -> String {
        self.client.display.clone()
    }

    /// One read-only transaction with a `get-tree` per root (64 roots per
    /// transaction). Consul's answer carries no index of its own, so the
    /// revision is the highest `ModifyIndex` among the entries read: it
    /// moves whenever one of them is written (a deleted key does not count).
    fn read_trees(&self, roots: &[String]) -> Result<Snapshot> {
        let client = &self.client;
        let mut trees: Vec<BTreeMap<String, Entry>> = vec![BTreeMap::new(); roots.len()];
        let mut revision = 0u64;
        let mut acl_deny = false;
        for (chunk_index, chunk) in roots.chunks(MAX_TXN_OPS).enumerate() {
            let ops: Vec<Value> = chunk
                .iter()
                .map(|root| json!({"KV": {"Verb": "get-tree", "Key": root}}))
                .collect();
            let reply = client.txn(&ops, Kind::Read, &chunk[0])?;
            acl_deny |= reply.acl_deny;
            let body = match reply.status {
                200 | 409 => client.json(&reply)?,
                _ => return Err(client.refused(&reply, &chunk[0])),
            };
            if reply.status == 409 {
                return Err(client.txn_denied(&body, chunk).unwrap_or_else(|| {
                    client.unavailable(format!(
                        "Consul refused to read {}: {}",
                        chunk[0],
                        client.quote(&body["Errors"].to_string())
                    ))
                }));
            }
            revision = revision.max(body["Index"].as_u64().unwrap_or(0));
            for result in body["Results"].as_array().into_iter().flatten() {
                let entry = entry_of(&result["KV"])?;
                revision = revision.max(entry.version);
                // Results are not tagged with their op; roots may overlap.
                for (i, root) in chunk.iter().enumerate() {
                    if under(&entry.key, root) {
                        trees[chunk_index * MAX_TXN_OPS + i]
                            .insert(entry.key.clone(), entry.clone());
                    }
                }
            }
        }
        // Consul leaves out what a request may not read: without a token,
        // under a deny policy, an empty answer most likely means that.
        if acl_deny && client.token.is_none() && trees.iter().all(BTreeMap::is_empty) {
            return Err(client.denied(
                roots.first().map_or("(none)", String::as_str),
                "nothing readable: the default ACL policy is deny, and Consul leaves out \
                 of reads what the token may not see",
            ));
        }
        Ok(Snapshot {
            trees: trees
                .into_iter()
                .map(|t| t.into_values().collect())
                .collect(),
            revision: (revision > 0).then_some(revision),
        })
    }

    /// One transaction: compares become `check-index` / `check-not-exists`
    /// or merge into the write of the same key (`cas`, `delete-cas`). A 409
    /// is a conflict unless an ACL refused an op (exit 77).
    fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        let client = &self.client;
        for op in &txn.ops {
            if let Op::Put { key, value } = op {
                if value.len() > MAX_VALUE_BYTES {
                    return Err(Error::bad_key(
                        key,
                        format!(
                            "the value is {} bytes; Consul takes at most {MAX_VALUE_BYTES} \
                             bytes (512 KiB, limits.kv_max_value_size) per key",
                            value.len()
                        ),
                    ));
                }
            }
        }
        let (ops, keys) = txn_ops(txn);
        if ops.is_empty() {
            return Ok(TxnOutcome::Committed { revision: None });
        }
        let largest = txn
            .ops
            .iter()
            .max_by_key(|op| op.size())
            .map_or(keys[0].as_str(), Op::key);
        if ops.len() > MAX_TXN_OPS {
            return Err(Error::bad_key(
                largest,
                format!(
                    "this change needs {} operations in one transaction; Consul takes at most \
                     {MAX_TXN_OPS}",
                    ops.len()
                ),
            ));
        }
        let size = serde_json::to_vec(&ops).map_or(0, |b| b.len());
        if size > MAX_TXN_BODY {
            return Err(Error::bad_key(
                largest,
                format!(
                    "this change is {size} bytes as a Consul transaction (values travel \
                     base64-encoded, a third larger); Consul takes at most {MAX_TXN_BODY} bytes \
                     (txn_max_req_len) in one"
                ),
            ));
        }
        let kind = if ops.iter().any(is_write) {
            Kind::Write
        } else {
            Kind::Read
        };
        let reply = client.txn(&ops, kind, largest)?;
        match reply.status {
            200 => {
                let body = client.json(&reply)?;
                let revision = body["Results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["KV"]["ModifyIndex"].as_u64())
                    .max();
                Ok(TxnOutcome::Committed { revision })
            }
            409 => {
                let body = client.json(&reply)?;
                match client.txn_denied(&body, &keys) {
                    Some(denied) => Err(denied),
                    None => Ok(TxnOutcome::Conflict),
                }
            }
            _ => Err(client.refused(&reply, largest)),
        }
    }

    /// `?consistent` unless asked for already: the default mode lets a
    /// server that believes it leads answer from a state that is not yet
    /// caught up (right after a restart it answered an index of 7 where the
    /// cluster was at 3300); `consistent` makes it confirm with a quorum.
    fn consistent(&self) -> Option<Box<dyn Store>> {
        if self.client.consistency == Consistency::Consistent {
            return None;
        }
        let client = Client {
            consistency: Consistency::Consistent,
            ..(*self.client).clone()
        };
        Some(Box::new(ConsulStore {
            client: Arc::new(client),
        }))
    }

    fn txn_limits(&self) -> TxnLimits {
        TxnLimits {
            max_ops: Some(MAX_TXN_OPS),
            max_bytes: Some(TXN_SPLIT_BYTES),
        }
    }

    /// A session (TTL at least Consul's 10 s minimum, behavior `delete`, no
    /// lock-delay) and `?acquire=` of `name` with `holder` as its value. A
    /// thread renews the session every third of its TTL; dropping the lock
    /// destroys the session, which deletes the key. A crashed holder stops
    /// renewing, and Consul deletes the key when the session expires.
    fn lock(&self, name: &str, ttl: Duration, holder: &str) -> Result<Box<dyn HeldLock>> {
        let client = &self.client;
        let ttl = Duration::from_secs(ttl.max(MIN_SESSION_TTL).as_secs_f64().ceil() as u64);
        let create = json!({
            "Name": format!("convergent {name}"),
            "TTL": format!("{}s", ttl.as_secs()),
            "Behavior": "delete",
            "LockDelay": "0s",
        });
        let url = client.url("/v1/session/create", &[], false);
        let body = create.to_string();
        let reply = client.call(Method::Put, &url, Some(body.as_bytes()), Kind::Write, name)?;
        if reply.status != 200 {
            return Err(client.refused(&reply, name));
        }
        let id = client.json(&reply)?["ID"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| client.unavailable("Consul created a session without an ID"))?
            .to_string();
        let fail = |e: Error| {
            client.destroy_session(&id);
            Err(e)
        };
        let url = client.url(
            &kv_path(name)?,
            &[format!("acquire={}", encode(&id, false))],
            false,
        );
        let acquired = match client.call(
            Method::Put,
            &url,
            Some(holder.as_bytes()),
            Kind::Write,
            name,
        ) {
            Ok(reply) if reply.status == 200 => reply.body.trim() == "true",
            Ok(reply) => return fail(client.refused(&reply, name)),
            // The outcome is unknown: whether the key carries our session says.
            Err(e) if e.is_unavailable() => match client.lock_state(name) {
                Ok(Some((_, Some(session)))) if session == id => true,
                Ok(_) => return fail(e),
                Err(other) => return fail(other),
            },
            Err(e) => return fail(e),
        };
        if !acquired {
            let holder = match client.lock_state(name) {
                Ok(Some((value, Some(_)))) if !value.is_empty() => value,
                Ok(Some((_, Some(session)))) => format!("Consul session {session}"),
                Ok(_) => "nobody any more (it was released meanwhile); try again".into(),
                Err(e) => return fail(e),
            };
            return fail(Error::LockHeld {
                name: name.to_string(),
                holder,
            });
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let (client, id, lost) = (Arc::clone(client), id.clone(), Arc::clone(&lost));
            thread::spawn(move || {
                let mut period = ttl / 3;
                let mut renewed = Instant::now();
                loop {
                    match stopped.recv_timeout(period) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    match client.renew(&id) {
                        Ok(Some(granted)) => {
                            renewed = Instant::now();
                            // Consul may grant more than asked (load shedding).
                            period = granted.max(ttl) / 3;
                        }
                        Ok(None) => break,
                        Err(_) if renewed.elapsed() >= ttl => break,
                        Err(_) => period = Duration::from_secs(1),
                    }
                }
                lost.store(true, Ordering::SeqCst);
            })
        };
        Ok(Box::new(ConsulLock {
            name: name.to_string(),
            client: Arc::clone(client),
            session: id,
            lost,
            stop: Some(stop),
            renewer: Some(renewer),
        }))
    }

    /// A blocking query per root, each in its own thread, from the index of
    /// a first read; a wake-up whose entries under the root did not change
    /// (a sibling such as `web-10` for `web-1`, a timeout) is not reported.
    fn watch(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        let snapshot = self.read_trees(roots)?;
        let (feed, tx, stop) = ChannelFeed::new(self.client.display.clone());
        for (root, entries) in roots.iter().zip(&snapshot.trees) {
            let follower = Follower {
                client: Arc::clone(&self.client),
                root: root.clone(),
                // Never 0: that does not block. A tree's index is at least
                // the highest ModifyIndex in it; if it is higher, the first
                // query answers at once and the digest shows nothing new.
                index: entries.iter().map(|e| e.version).max().unwrap_or(0).max(1),
                seen: digest(entries),
                tx: tx.clone(),
                stop: Arc::clone(&stop),
            };
            thread::spawn(move || follower.run());
        }
        Ok(Box::new(feed))
    }

    /// `PUT /v1/event/fire/NAME` with the payload as body. Events travel by
    /// gossip, best effort: a hint to look now, never a source of truth.
    fn fire_event(&self, name: &str, payload: &[u8]) -> Result<()> {
        let about = format!("event {name:?}");
        if name.is_empty()
            || name.starts_with('_')
            || name.contains('/')
            || name.chars().any(char::is_control)
        {
            return Err(Error::bad_key(
                &about,
                "an event name must be non-empty, printable, without `/`, and not start with `_` \
                 (reserved by Consul)",
            ));
        }
        // Serf caps a whole user event at 512 bytes.
        if name.len() + payload.len() > 512 {
            return Err(Error::bad_key(
                &about,
                format!(
                    "name and payload are {} bytes; Consul events carry at most 512",
                    name.len() + payload.len()
                ),
            ));
        }
        let client = &self.client;
        let url = client.url(
            &format!("/v1/event/fire/{}", encode(name, false)),
            &[],
            false,
        );
        let reply = client.call(Method::Put, &url, Some(payload), Kind::Write, &about)?;
        match reply.status {
            200 => Ok(()),
            _ => Err(client.refused(&reply, &about)),
        }
    }
}

/// A held lock: a key acquired by a session this process keeps renewing.
struct ConsulLock {
    name: String,
    client: Arc<Client>,
    session: String,
    lost: Arc<AtomicBool>,
    /// Dropped to wake and stop the renewer.
    stop: Option<Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl HeldLock for ConsulLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            Err(Error::Conflict {
                key: self.name.clone(),
                reason: "the lock was lost: its Consul session expired or was destroyed before \
                         it could be renewed"
                    .into(),
            })
        } else {
            Ok(())
        }
    }
}

impl Drop for ConsulLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        self.client.destroy_session(&self.session);
    }
}

/// One of the threads behind a Consul [`ChannelFeed`]: blocking queries
/// over one tree.
struct Follower {
    client: Arc<Client>,
    root: String,
    /// The index to block on; 0 only for a fresh read after a reset.
    index: u64,
    /// The entries last seen under the root.
    seen: Vec<(String, u64)>,
    tx: Sender<FeedEvent>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn run(mut self) {
        let mut failures = 0u32;
        let mut tokens = WATCH_BURST;
        let mut refilled = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            // A token bucket, so that churn cannot turn into a request storm.
            tokens = (tokens + refilled.elapsed().as_secs_f64() / WATCH_REFILL.as_secs_f64())
                .min(WATCH_BURST);
            refilled = Instant::now();
            if tokens < 1.0 {
                let wait = WATCH_REFILL.mul_f64((1.0 - tokens) * (1.0 + random_fraction() / 10.0));
                if !pause_unless_stopped(&self.stop, wait) {
                    return;
                }
                tokens = 1.0;
                refilled = Instant::now();
            }
            tokens -= 1.0;
            let asked = self.index;
            match self.client.blocking_list(&self.root, asked) {
                Ok((index, entries)) => {
                    failures = 0;
                    let seen = digest(&entries);
                    // Lower than asked: a snapshot was restored or
                    // tombstones were reaped. Start over with a fresh read.
                    let went_back = index < asked;
                    self.index = if went_back { 0 } else { index.max(1) };
                    if went_back || seen != self.seen {
                        self.seen = seen;
                        if self.tx.send(FeedEvent::Changed).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    if self.tx.send(FeedEvent::Failed(e.to_string())).is_err()
                        || !pause_unless_stopped(&self.stop, failure_backoff(failures))
                    {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::env_of;

    fn base(url: &str, vars: &[(&str, &str)]) -> Result<(String, String)> {
        let url: StoreUrl = url.parse().unwrap();
        let StoreUrl::Consul { https, address, .. } = &url else {
            panic!()
        };
        base_url(&url, *https, address.as_deref(), &env_of(vars))
    }

    #[test]
    fn the_address_comes_from_the_url_else_consul_http_addr() {
        assert_eq!(
            base("consul+https://c:8501?dc=x", &[("CONSUL_HTTP_ADDR", "o:1")])
                .unwrap()
                .0,
            "https://c:8501"
        );
        let (url, shown) = base("consul://", &[]).unwrap();
        assert_eq!(url, "http://127.0.0.1:8500");
        assert!(shown.contains("default"), "{shown}");
        for (addr, want) in [
            ("h:1", "http://h:1"),
            ("http://h:1/", "http://h:1"),
            ("https://h:1/proxy/consul", "https://h:1/proxy/consul"),
        ] {
            let (url, shown) = base("consul://?dc=dc2", &[("CONSUL_HTTP_ADDR", addr)]).unwrap();
            assert_eq!(url, want);
            assert!(
                shown.ends_with("?dc=dc2 (from CONSUL_HTTP_ADDR)"),
                "{shown}"
            );
        }
        assert_eq!(
            base(
                "consul://",
                &[("CONSUL_HTTP_ADDR", "h:1"), ("CONSUL_HTTP_SSL", "true")]
            )
            .unwrap()
            .0,
            "https://h:1"
        );
        assert_eq!(
            base("consul+https://", &[("CONSUL_HTTP_ADDR", "h:1")])
                .unwrap()
                .0,
            "https://h:1"
        );
        for addr in ["unix:///run/consul.sock", "ftp://h:1", "u:pw@h:1"] {
            let err = base("consul://", &[("CONSUL_HTTP_ADDR", addr)]).unwrap_err();
            assert_eq!(err.exit_code(), 78, "{addr}: {err}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
        assert!(base("consul+https://", &[("CONSUL_HTTP_ADDR", "http://h:1")]).is_err());
    }

    #[test]
    fn the_token_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  from-file\n").unwrap();
        let path = file.to_str().unwrap();
        let t = token(&env_of(&[
            ("CONSUL_HTTP_TOKEN", "from-env"),
            ("CONSUL_HTTP_TOKEN_FILE", path),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(t.0, "from-file");
        assert_eq!(format!("{t:?}"), "<redacted>");
        let t = token(&env_of(&[("CONSUL_HTTP_TOKEN", "from-env")]))
            .unwrap()
            .unwrap();
        assert_eq!(t.0, "from-env");
        std::fs::write(&file, "\n").unwrap();
        let t = token(&env_of(&[
            ("CONSUL_HTTP_TOKEN", "from-env"),
            ("CONSUL_HTTP_TOKEN_FILE", path),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(t.0, "from-env", "an empty file falls back, as in consul");
        let err = token(&env_of(&[("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/t")])).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(err.to_string().contains("CONSUL_HTTP_TOKEN_FILE"), "{err}");
        assert!(token(&env_of(&[])).unwrap().is_none());
    }

    #[test]
    fn tls_settings_follow_the_consul_cli() {
        let err = tls_settings(&env_of(&[("CONSUL_CLIENT_CERT", "/c.pem")])).unwrap_err();
        assert!(
            err.to_string().contains("both client cert and client key"),
            "{err}"
        );
        assert!(
            !tls_settings(&env_of(&[("CONSUL_HTTP_SSL_VERIFY", "false")]))
                .unwrap()
                .verify
        );
        assert!(tls_settings(&env_of(&[])).unwrap().verify);
        assert_eq!(
            tls_settings(&env_of(&[("CONSUL_HTTP_SSL_VERIFY", "nah")]))
                .unwrap_err()
                .exit_code(),
            78
        );
        assert!(tls_settings(&env_of(&[("CONSUL_CAPATH", "/etc/ssl/certs")])).is_err());
        let tls = tls_settings(&env_of(&[("CONSUL_CACERT", "/ca.pem")])).unwrap();
        assert_eq!(tls.ca_file.unwrap().0, "CONSUL_CACERT");
    }

    #[test]
    fn options_are_checked() {
        let options = StoreOptions {
            timeout: Duration::from_secs(1),
        };
        let env = env_of(&[]);
        for url in [
            "consul://h:1?consistency=eventual",
            "consul://h:1?datacenter=x",
        ] {
            let err = ConsulStore::open(&url.parse().unwrap(), &options, &env)
                .err()
                .unwrap();
            assert_eq!(err.exit_code(), 78, "{url}: {err}");
        }
        let store = ConsulStore::open(
            &"consul://h:1?consistency=stale&dc=dc 2".parse().unwrap(),
            &options,
            &env_of(&[("CONSUL_NAMESPACE", "team-a")]),
        )
        .unwrap();
        assert_eq!(
            store.client.url("/v1/txn", &[], true),
            "http://h:1/v1/txn?dc=dc%202&ns=team-a&stale"
        );
        assert_eq!(
            store.client.url("/v1/txn", &[], false),
            "http://h:1/v1/txn?dc=dc%202&ns=team-a"
        );
    }

    #[test]
    fn keys_are_encoded_per_segment_and_trees_end_at_a_slash() {
        assert_eq!(
            kv_path("convergent/clusters/web a/x?y#z").unwrap(),
            "/v1/kv/convergent/clusters/web%20a/x%3Fy%23z"
        );
        assert!(kv_path("/abs").is_err());
        assert!(under("p/nodes/web-1", "p/nodes/web-1"));
        assert!(under("p/nodes/web-1/state", "p/nodes/web-1"));
        assert!(!under("p/nodes/web-10", "p/nodes/web-1"));
        assert!(under("p/x", "p/"));
    }

    #[test]
    fn entries_decode_base64_and_null_values() {
        let e = entry_of(&json!({"Key": "k", "Value": "eyJhIjoxfQ==", "ModifyIndex": 7})).unwrap();
        assert_eq!((e.value.as_slice(), e.version), (&b"{\"a\":1}"[..], 7));
        let e = entry_of(&json!({"Key": "k", "Value": null, "ModifyIndex": 8})).unwrap();
        assert!(e.value.is_empty());
        let err = entry_of(&json!({"Key": "k/bad", "Value": "not base64!"})).unwrap_err();
        assert!(err.to_string().contains("k/bad"), "{err}");
    }

    #[test]
    fn compares_merge_into_the_write_of_their_key() {
        let txn = Txn {
            compares: vec![
                Compare::Version {
                    key: "d/a".into(),
                    version: 5,
                },
                Compare::Version {
                    key: "x".into(),
                    version: 9,
                },
                Compare::Absent { key: "d".into() },
                Compare::Absent { key: "y".into() },
            ],
            ops: vec![
                Op::Put {
                    key: "d".into(),
                    value: b"{}".to_vec(),
                },
                Op::Delete { key: "d/a".into() },
            ],
        };
        let (ops, keys) = txn_ops(&txn);
        let verbs: Vec<(&str, &str)> = ops
            .iter()
            .map(|o| {
                (
                    o["KV"]["Verb"].as_str().unwrap(),
                    o["KV"]["Key"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            verbs,
            [
                ("check-index", "x"),
                ("check-not-exists", "y"),
                ("delete-cas", "d/a"),
                ("cas", "d")
            ]
        );
        assert_eq!(keys, ["x", "y", "d/a", "d"]);
        assert_eq!(ops[2]["KV"]["Index"], 5);
        assert_eq!(ops[3]["KV"]["Index"], 0);
        assert_eq!(ops[3]["KV"]["Value"], "e30=");
        assert!(!is_write(&ops[0]) && is_write(&ops[2]));
    }

    #[test]
    fn a_bulk_transaction_within_the_split_limit_fits_consul() {
        let put = |key: String, size: usize| Op::Put {
            key,
            value: vec![0xff; size],
        };
        let one = Txn {
            compares: vec![],
            ops: vec![put(
                "convergent/clusters/web/nodes/big".into(),
                TXN_SPLIT_BYTES - 40,
            )],
        };
        let many = Txn {
            compares: vec![],
            ops: (0..MAX_TXN_OPS)
                .map(|i| {
                    put(
                        format!("convergent/clusters/web/nodes/n{i:02}"),
                        TXN_SPLIT_BYTES / 64 - 40,
                    )
                })
                .collect(),
        };
        for txn in [one, many] {
            assert!(txn.ops.iter().map(Op::size).sum::<usize>() <= TXN_SPLIT_BYTES);
            let body = serde_json::to_vec(&txn_ops(&txn).0).unwrap();
            assert!(body.len() <= MAX_TXN_BODY, "{} bytes", body.len());
        }
    }

    #[test]
    fn go_durations_from_renewals_parse() {
        for (text, secs) in [("10s", 10), ("1m0s", 60), ("1h0m0s", 3600)] {
            assert_eq!(text.parse::<HumanDuration>().unwrap().0.as_secs(), secs);
        }
    }
}
