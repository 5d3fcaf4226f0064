//! The HTTP side of the Consul backend: one request with its timeouts and
//! headers, the retry loop around it, and what Consul's answers mean as
//! errors. Shared by reads, writes, the lock and the change feed.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use ureq::Agent;

use super::settings::{Consistency, Secret};
use crate::error::{Error, Result};
use crate::store::http;

/// Pause between tries of a request that may be retried.
const RETRY_PAUSE: Duration = Duration::from_millis(150);

/// Everything a request needs; shared with lock and watch threads.
#[derive(Clone, Debug)]
pub(super) struct Client {
    pub(super) display: String,
    /// `http[s]://host:port[/path-prefix]`.
    pub(super) base: String,
    pub(super) agent: Agent,
    pub(super) timeout: Duration,
    pub(super) token: Option<Secret>,
    /// `Authorization` for a proxy in front of Consul (`CONSUL_HTTP_AUTH`).
    pub(super) basic_auth: Option<Secret>,
    /// Parameters every request carries: `dc`, `ns`, `partition`.
    pub(super) common_query: Vec<String>,
    pub(super) consistency: Consistency,
}

/// Whether a request whose answer was lost may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Changes nothing.
    Read,
    /// Changes something, but doing it twice is doing it once.
    Idempotent,
    /// May have been applied even if no answer came back.
    Write,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Method {
    Get,
    Put,
}

/// How long one request may take.
#[derive(Clone, Copy, Debug)]
pub(super) enum Limit {
    /// The whole request.
    Whole(Duration),
    /// A blocking query: connecting is quick, the answer may take the wait.
    Blocking { connect: Duration, answer: Duration },
}

/// Why one try of a request failed, for the retry loop.
enum Failed {
    /// Consul answered, refusing for now (no leader, 5xx, 429).
    Answer(String),
    /// No answer: connection refused or reset, or a timeout.
    Transport(String),
}

/// An HTTP answer from Consul, read whole.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    /// `X-Consul-Index`, where sent.
    pub(super) index: Option<u64>,
    /// `X-Consul-Default-Acl-Policy: deny`.
    pub(super) acl_deny: bool,
    pub(super) body: String,
}

impl Client {
    pub(super) fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::Unavailable {
            store: self.display.clone(),
            reason: reason.into(),
        }
    }

    /// Server text for a message: bounded, and with our own token taken
    /// out in case anything ever echoed it.
    pub(super) fn quote(&self, text: &str) -> String {
        let mut text: String = text.trim().chars().take(300).collect();
        for secret in self.token.iter().chain(&self.basic_auth) {
            if !secret.0.is_empty() {
                text = text.replace(&secret.0, "<token>");
            }
        }
        text
    }

    pub(super) fn denied(&self, key: &str, text: &str) -> Error {
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
    pub(super) fn url(&self, path: &str, query: &[String], read: bool) -> String {
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
    pub(super) fn send(
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
    pub(super) fn call(
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
        // What Consul itself last said (no leader, 5xx, 429): when a later
        // try fails only in transport (a timeout under load), that answer
        // is still the cause worth naming.
        let mut answered: Option<String> = None;
        loop {
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(50));
            let failed = match self.send(method, url, body, Limit::Whole(remaining)) {
                Err(e) if http::nothing_sent(&e) => Failed::Transport(http::describe(&e)),
                Err(e) if kind == Kind::Write => return Err(unknown(http::describe(&e))),
                Err(e) => Failed::Transport(http::describe(&e)),
                Ok(reply) => {
                    let text = self.quote(&reply.body);
                    // Refusals that say nothing was applied.
                    let not_applied = text.contains("No cluster leader")
                        || text.contains("No path to datacenter");
                    match reply.status {
                        401 | 403 => return Err(self.denied(about, &reply.body)),
                        429 => Failed::Answer(format!("rate limited (HTTP 429): {text}")),
                        500 if text.contains("Invalid Session TTL") => {
                            return Err(Error::config(
                                format!("store {}", self.display),
                                format!("Consul refused the lock's session for {about}: {text}"),
                            ))
                        }
                        500..=599 if not_applied || kind != Kind::Write => {
                            Failed::Answer(format!("HTTP {}: {text}", reply.status))
                        }
                        500..=599 => return Err(unknown(format!("HTTP {}: {text}", reply.status))),
                        _ => return Ok(reply),
                    }
                }
            };
            let why = match (failed, &answered) {
                (Failed::Answer(said), _) => {
                    answered = Some(said.clone());
                    said
                }
                (Failed::Transport(why), Some(said)) => format!("{said}; then {why}"),
                (Failed::Transport(why), None) => why,
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(self.unavailable(why));
            }
            thread::sleep(RETRY_PAUSE);
        }
    }

    /// An answer the caller did not expect, as the error it means.
    pub(super) fn refused(&self, reply: &Reply, about: &str) -> Error {
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

    pub(super) fn json(&self, reply: &Reply) -> Result<Value> {
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
    pub(super) fn txn_denied(&self, body: &Value, keys: &[String]) -> Option<Error> {
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

    pub(super) fn txn(&self, ops: &[Value], kind: Kind, about: &str) -> Result<Reply> {
        let body = serde_json::to_vec(ops).expect("JSON values serialize");
        let url = self.url("/v1/txn", &[], kind == Kind::Read);
        self.call(Method::Put, &url, Some(&body), kind, about)
    }
}
