//! The HTTP client for etcd's gateway: one request tried across the
//! endpoints in rounds, authentication, and how each answer is judged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use ureq::Agent;

use super::encoding::{b64, key_of, number, prefix_end};
use super::settings::Credentials;
use crate::error::{Error, Result};
use crate::store::http;
use crate::store::Entry;

/// Pause between rounds over the endpoints: an election takes about a second.
const ROUND_PAUSE: Duration = Duration::from_millis(150);

/// Everything a request needs; shared with lock and watch threads.
pub(super) struct Client {
    pub(super) display: String,
    pub(super) endpoints: Vec<String>,
    pub(super) agent: Agent,
    pub(super) stream_agent: Agent,
    pub(super) timeout: Duration,
    pub(super) serializable: bool,
    pub(super) credentials: Option<Credentials>,
    pub(super) token: Mutex<Option<String>>,
    /// The endpoint that answered last; tried first next time.
    pub(super) preferred: AtomicUsize,
}

/// Whether a lost request may have changed the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
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

impl Client {
    pub(super) fn unavailable(&self, reason: impl Into<String>) -> Error {
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
    pub(super) fn call(&self, path: &str, body: &Value, kind: Kind) -> Result<Value> {
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

    pub(super) fn current_token(&self) -> Option<String> {
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
    pub(super) fn authenticate(&self, endpoint: &str, deadline: Instant) -> Result<()> {
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

    pub(super) fn entries_of(range: &Value) -> Result<Vec<Entry>> {
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

    pub(super) fn range_ops(&self, root: &str) -> [Value; 2] {
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
