//! What the double holds: per datacenter a KV table with Raft-style indexes
//! and tombstones, sessions and their locks, and user events; and the ACL
//! rules that decide who may see and change what.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// Consul reaps an expired session up to this many TTLs late.
const SESSION_TTL_MULTIPLIER: u32 = 2;

/// One key, as Consul's state store keeps it.
#[derive(Clone, Debug)]
pub struct KvEntry {
    pub value: Option<Vec<u8>>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: Option<String>,
}

impl KvEntry {
    /// The entry as the API shows it; `with_value` false blanks the value
    /// (txn results of verbs other than `get`/`get-tree`).
    pub fn to_json(&self, key: &str, with_value: bool) -> Value {
        let value = match (&self.value, with_value) {
            (Some(v), true) if !v.is_empty() => json!(B64.encode(v)),
            _ => Value::Null,
        };
        let mut out = json!({
            "LockIndex": self.lock_index,
            "Key": key,
            "Flags": self.flags,
            "Value": value,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        });
        if let Some(session) = &self.session {
            out["Session"] = json!(session);
        }
        out
    }
}

/// What happens to a session's locks when it is invalidated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    Release,
    Delete,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    /// As the client wrote it (Consul keeps the text).
    pub ttl_text: String,
    pub ttl: Option<Duration>,
    pub behavior: Behavior,
    pub lock_delay: Duration,
    pub create_index: u64,
    /// When the TTL timer fires (reset by renewals).
    pub expires: Option<Instant>,
}

impl Session {
    pub fn to_json(&self) -> Value {
        json!({
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": self.lock_delay.as_nanos() as u64,
            "Behavior": match self.behavior { Behavior::Release => "release", Behavior::Delete => "delete" },
            "TTL": self.ttl_text,
            "NodeChecks": ["serfHealth"],
            "ServiceChecks": null,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.create_index,
        })
    }

    pub fn renew(&mut self, now: Instant) {
        self.expires = self.ttl.map(|ttl| now + ttl * SESSION_TTL_MULTIPLIER);
    }
}

/// A user event as an agent remembers it.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: String,
    pub name: String,
    pub payload: Vec<u8>,
    pub node_filter: String,
    pub service_filter: String,
    pub tag_filter: String,
    pub ltime: u64,
}

impl Event {
    pub fn to_json(&self, with_payload: bool) -> Value {
        json!({
            "ID": self.id,
            "Name": self.name,
            "Payload": if with_payload && !self.payload.is_empty() { json!(B64.encode(&self.payload)) } else { Value::Null },
            "NodeFilter": self.node_filter,
            "ServiceFilter": self.service_filter,
            "TagFilter": self.tag_filter,
            "Version": 1,
            "LTime": self.ltime,
        })
    }
}

/// One datacenter's state: each has its own KV store, as in Consul.
#[derive(Clone, Debug, Default)]
pub struct Datacenter {
    /// The last Raft index applied.
    pub index: u64,
    /// The index of the KV and tombstone tables (last KV change).
    pub kv_index: u64,
    pub kv: BTreeMap<String, KvEntry>,
    /// Deleted keys and the index of their deletion, until reaped.
    pub tombstones: BTreeMap<String, u64>,
    pub sessions: BTreeMap<String, Session>,
    /// Keys whose lock may not be taken again before the instant.
    pub lock_delays: BTreeMap<String, Instant>,
    pub events: Vec<Event>,
}

impl Datacenter {
    /// The next Raft index.
    pub fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Sets a key at `index` (one Raft entry may write several keys).
    pub fn set(&mut self, key: &str, value: Vec<u8>, flags: u64, index: u64) -> &KvEntry {
        let entry = self.kv.entry(key.to_string()).or_insert(KvEntry {
            value: None,
            flags: 0,
            create_index: index,
            modify_index: index,
            lock_index: 0,
            session: None,
        });
        entry.value = (!value.is_empty()).then_some(value);
        entry.flags = flags;
        entry.modify_index = index;
        self.kv_index = index;
        &self.kv[key]
    }

    /// Deletes a key at `index`, leaving a tombstone.
    pub fn delete(&mut self, key: &str, index: u64) {
        if self.kv.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), index);
            self.kv_index = index;
        }
    }

    /// Deletes every key starting with `prefix` at `index`.
    pub fn delete_tree(&mut self, prefix: &str, index: u64) {
        let keys: Vec<String> = self
            .list(prefix)
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.delete(&key, index);
        }
    }

    /// The index a KV read reports: a key's own `ModifyIndex`; for a
    /// prefix the highest index of its keys and tombstones; else the table's.
    /// Never 0 (that would never block).
    pub fn kv_read_index(&self, key: &str, list: bool) -> u64 {
        let own = if list && !key.is_empty() {
            let keys = self
                .kv
                .range(key.to_string()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(_, e)| e.modify_index);
            let graves = self
                .tombstones
                .range(key.to_string()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(_, i)| *i);
            keys.chain(graves).max().unwrap_or(0)
        } else if list {
            0
        } else {
            self.kv.get(key).map_or(0, |e| e.modify_index)
        };
        if own > 0 {
            own
        } else {
            self.kv_index.max(1)
        }
    }

    /// Entries whose key starts with `prefix`, sorted by key.
    pub fn list(&self, prefix: &str) -> Vec<(&String, &KvEntry)> {
        self.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .collect()
    }

    /// Invalidates a session: its locks are released or their keys deleted
    /// (its behavior), and a lock-delay starts on each.
    pub fn invalidate(&mut self, id: &str, now: Instant) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        let index = self.next_index();
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in held {
            if !session.lock_delay.is_zero() {
                self.lock_delays
                    .insert(key.clone(), now + session.lock_delay);
            }
            match session.behavior {
                Behavior::Delete => self.delete(&key, index),
                Behavior::Release => {
                    let entry = self.kv.get_mut(&key).expect("a held key");
                    entry.session = None;
                    entry.modify_index = index;
                    self.kv_index = index;
                }
            }
        }
        true
    }

    /// Invalidates every session whose TTL ran out; whether any did.
    pub fn reap_sessions(&mut self, now: Instant) -> bool {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires.is_some_and(|e| e <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in &expired {
            self.invalidate(id, now);
        }
        !expired.is_empty()
    }
}

/// The kind of resource an ACL rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Key,
    Session,
    Event,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Key => "key",
            Resource::Session => "session",
            Resource::Event => "event",
        }
    }
}

/// What a rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Deny,
    Read,
    Write,
}

/// One ACL rule: `key_prefix "convergent/" { policy = "write" }`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub resource: Resource,
    pub prefix: String,
    pub access: Access,
}

impl Rule {
    pub fn new(resource: Resource, prefix: &str, access: Access) -> Rule {
        Rule {
            resource,
            prefix: prefix.into(),
            access,
        }
    }

    /// The rule in Consul's HCL policy language.
    pub fn hcl(&self) -> String {
        let policy = match self.access {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::Write => "write",
        };
        format!(
            "{}_prefix {:?} {{ policy = {policy:?} }}",
            self.resource.name(),
            self.prefix
        )
    }
}

/// A token the double knows.
#[derive(Clone, Debug)]
pub struct Token {
    pub secret: String,
    pub accessor: String,
    pub rules: Vec<Rule>,
    pub management: bool,
}

/// Who a request acts as.
#[derive(Clone, Debug)]
pub enum Identity {
    /// ACLs are off: everything is allowed.
    Anyone,
    Anonymous,
    Token(Token),
}

impl Identity {
    fn access(&self, resource: Resource, name: &str) -> Access {
        match self {
            Identity::Anyone => Access::Write,
            Identity::Anonymous => Access::Deny,
            Identity::Token(t) if t.management => Access::Write,
            Identity::Token(t) => t
                .rules
                .iter()
                .filter(|r| r.resource == resource && name.starts_with(&r.prefix))
                .max_by_key(|r| r.prefix.len())
                .map_or(Access::Deny, |r| r.access),
        }
    }

    /// `Ok` or the 403 text Consul sends.
    pub fn allow(&self, resource: Resource, name: &str, need: Access) -> Result<(), String> {
        if self.access(resource, name) >= need {
            return Ok(());
        }
        Err(self.denial(resource, name, need))
    }

    /// Whether every key under `prefix` may be written (`delete-tree`).
    pub fn allow_write_prefix(&self, prefix: &str) -> Result<(), String> {
        self.allow(Resource::Key, prefix, Access::Write)?;
        if let Identity::Token(t) = self {
            if t.rules.iter().any(|r| {
                r.resource == Resource::Key
                    && r.prefix.starts_with(prefix)
                    && r.access < Access::Write
            }) && !t.management
            {
                return Err(self.denial(Resource::Key, prefix, Access::Write));
            }
        }
        Ok(())
    }

    pub fn denial(&self, resource: Resource, name: &str, need: Access) -> String {
        let permission = format!(
            "{}:{}",
            resource.name(),
            if need == Access::Write {
                "write"
            } else {
                "read"
            }
        );
        match self {
            Identity::Token(t) => format!(
                "Permission denied: token with AccessorID '{}' lacks permission '{permission}' on {name:?}",
                t.accessor
            ),
            _ => format!(
                "Permission denied: anonymous token lacks permission '{permission}' on {name:?}. \
                 The anonymous token is used implicitly when a request does not specify a token."
            ),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Identity::Anonymous)
    }
}

/// ACLs on, default policy deny.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    pub tokens: Vec<Token>,
}

impl Acl {
    /// A management token with `secret`.
    pub fn with_management(secret: &str) -> Acl {
        Acl {
            tokens: vec![Token {
                secret: secret.into(),
                accessor: uuid(),
                rules: Vec::new(),
                management: true,
            }],
        }
    }
}

/// A random UUID (version 4 layout).
pub fn uuid() -> String {
    let mut bytes = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("random bytes");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
