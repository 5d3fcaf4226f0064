//! The Consul double held to the recorded exchanges in `fixtures/consul-api/`:
//! each request is sent as raw HTTP to a double seeded with the state the
//! exchange assumes (same keys, same indexes), and the answer must match —
//! status, every header the fixture shows (exact name and value, `Date`'s
//! value aside) and the body (exact text, or equal JSON).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::consul_double::{Access, Acl, Config, ConsulDouble, Resource, Rule, Token};
use crate::support::fixture;

/// Fixtures that describe no single exchange, or something the double does
/// not offer, and why.
const NOT_REPLAYED: [(&str, &str); 4] = [
    ("agent-self", "the agent endpoint is not part of the double"),
    (
        "cli-env",
        "environment variables, not an exchange (see store::consul tests)",
    ),
    ("exec-flow", "a sequence of calls `consul exec` makes"),
    (
        "kv-get-namespace-partition",
        "Enterprise only; the double is Consul CE",
    ),
];

/// The value fixtures store at `app/config/web`.
const WEB: &str =
    r#"{"image":"registry.example/web:1.4.2","replicas":3,"env":{"LOG_LEVEL":"info"}}"#;
const DB: &str = r#"{"image":"registry.example/pg:15","replicas":1}"#;
const FLAGS: &str = r#"{"beta":false}"#;
/// The session ID fixtures use.
const SESSION: &str = "6513270e-269e-4d37-b2a7-4de452e6b438";

/// An answer as it came off the wire.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request by hand, so that header names come back as sent.
fn exchange(
    address: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Raw {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {address}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn load(name: &str, substitutions: &[(&str, &str)]) -> Value {
    let mut text = std::fs::read_to_string(fixture(&format!("consul-api/{name}.json"))).unwrap();
    for (from, to) in substitutions {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).unwrap()
}

/// How one replay differs from a plain one.
#[derive(Default)]
struct Replay<'a> {
    /// Text replaced in the fixture first (random IDs the double chose).
    substitutions: Vec<(&'a str, String)>,
    /// Request body instead of the fixture's placeholder.
    body: Option<Vec<u8>>,
    /// Headers and top-level body fields whose value is not compared (only
    /// that they are there): times and random IDs.
    unchecked: Vec<&'a str>,
    /// Body fields the double may add (documented elsewhere).
    extra_fields: Vec<&'a str>,
}

/// Sends a fixture's request to the double and compares the answer.
fn replay(double: &ConsulDouble, name: &str, how: Replay) -> Raw {
    let subs: Vec<(&str, &str)> = how
        .substitutions
        .iter()
        .map(|(a, b)| (*a, b.as_str()))
        .collect();
    let f = load(name, &subs);
    let request = &f["request"];
    let mut target = request["path"].as_str().unwrap().to_string();
    let query: Vec<String> = request["query"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| match v.as_str().unwrap() {
            "" => k.clone(),
            v => format!("{k}={v}"),
        })
        .collect();
    if !query.is_empty() {
        target = format!("{target}?{}", query.join("&"));
    }
    let headers: Vec<(String, String)> = request["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "Content-Length")
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let body = how.body.unwrap_or_else(|| match &request["body"] {
        Value::Null => Vec::new(),
        Value::String(s) => s.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    });
    let raw = exchange(
        &double.address(),
        request["method"].as_str().unwrap(),
        &target,
        &headers,
        &body,
    );
    let expected = &f["response"];
    let text = String::from_utf8_lossy(&raw.body).into_owned();
    assert_eq!(
        raw.status,
        expected["status"].as_u64().unwrap() as u16,
        "{name}: status; body {text:?}"
    );
    for (header, value) in expected["headers"].as_object().unwrap() {
        let got = raw
            .header(header)
            .unwrap_or_else(|| panic!("{name}: no header {header:?} in {:?}", raw.headers));
        if header == "Date" {
            assert!(
                got.ends_with(" GMT") && got.len() == 29,
                "{name}: Date {got:?}"
            );
        } else if !how.unchecked.contains(&header.as_str()) {
            assert_eq!(got, value.as_str().unwrap(), "{name}: header {header}");
        }
    }
    match &expected["body"] {
        Value::String(want) => assert_eq!(&text, want, "{name}: body"),
        Value::Null => {}
        want => {
            let mut got: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name}: body is not JSON ({e}): {text:?}"));
            let mut want = want.clone();
            if let (Some(got), Some(want)) = (got.as_object_mut(), want.as_object_mut()) {
                got.retain(|k, _| want.contains_key(k) || !how.extra_fields.contains(&k.as_str()));
            }
            blank(&mut got, &how.unchecked);
            blank(&mut want, &how.unchecked);
            assert_eq!(got, want, "{name}: body");
        }
    }
    raw
}

/// Nulls the `fields` of a body, or of each of its elements.
fn blank(body: &mut Value, fields: &[&str]) {
    let objects: Vec<&mut serde_json::Map<String, Value>> = match body {
        Value::Object(o) => vec![o],
        Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => Vec::new(),
    };
    for object in objects {
        for field in fields {
            if let Some(value) = object.get_mut(*field) {
                *value = Value::Null;
            }
        }
    }
}

/// A double holding the keys most fixtures assume, `app/config/` at index 1057.
fn seeded(config: Config) -> ConsulDouble {
    let double = ConsulDouble::start_with(config);
    double.seed("app/config/db", DB.as_bytes(), 1003, 1003);
    double.seed("app/config/flags", FLAGS.as_bytes(), 1010, 1057);
    double.seed("app/config/web", WEB.as_bytes(), 1001, 1042);
    double
}

fn plain() -> ConsulDouble {
    seeded(Config::default())
}

fn put(double: &ConsulDouble, path: &str, body: &[u8]) -> String {
    let raw = exchange(&double.address(), "PUT", path, &[], body);
    assert_eq!(
        raw.status,
        200,
        "PUT {path}: {}",
        String::from_utf8_lossy(&raw.body)
    );
    String::from_utf8_lossy(&raw.body).into_owned()
}

fn session(double: &ConsulDouble, body: &str) -> String {
    let reply: Value =
        serde_json::from_str(&put(double, "/v1/session/create", body.as_bytes())).unwrap();
    reply["ID"].as_str().unwrap().to_string()
}

#[test]
fn every_fixture_is_replayed_or_said_why_not() {
    let source = include_str!("consul_fixtures.rs");
    for entry in std::fs::read_dir(fixture("consul-api")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(name) = name.strip_suffix(".json") else {
            continue;
        };
        let replayed = source.contains(&format!("\"{name}\""));
        assert!(
            replayed,
            "fixture {name} is neither replayed nor listed in NOT_REPLAYED"
        );
    }
    assert!(NOT_REPLAYED.iter().all(|(_, why)| !why.is_empty()));
}

#[test]
fn kv_reads() {
    let d = plain();
    for name in [
        "kv-get-single",
        "kv-get-missing",
        "kv-get-recurse",
        "kv-get-recurse-empty",
        "kv-get-keys-missing",
        "kv-get-raw",
        "kv-get-consistent",
        "kv-get-stale-and-consistent",
        "kv-get-bad-wait",
        "kv-get-unknown-dc",
        "kv-get-ns-on-ce",
        "kv-method-not-allowed",
    ] {
        replay(&d, name, Replay::default());
    }
    replay(
        &d,
        "kv-get-stale",
        Replay {
            unchecked: vec!["X-Consul-Lastcontact"],
            ..Replay::default()
        },
    );
    d.seed("app/readme", b"read me", 1005, 1005);
    replay(&d, "kv-get-keys", Replay::default());
}

#[test]
fn kv_reads_without_a_leader() {
    let d = plain();
    d.set_leader(false);
    replay(&d, "kv-get-no-leader", Replay::default());
    replay(
        &d,
        "kv-get-no-leader-stale",
        Replay {
            unchecked: vec!["X-Consul-Lastcontact"],
            ..Replay::default()
        },
    );
}

#[test]
fn blocking_queries() {
    let d = plain();
    // The fixture's wait is 30s; 300ms shows the same.
    let started = Instant::now();
    let raw = exchange(
        &d.address(),
        "GET",
        "/v1/kv/app/config/?recurse&index=1057&wait=300ms",
        &[],
        b"",
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(300 * 17 / 16 + 500),
        "a timed-out blocking query answers after the wait plus jitter: {waited:?}"
    );
    assert_eq!(raw.header("X-Consul-Index"), Some("1057"));
    replay(
        &d,
        "kv-get-blocking-timeout",
        Replay {
            substitutions: vec![("\"30s\"", "\"200ms\"".into())],
            ..Replay::default()
        },
    );

    // A write during the wait answers at once, with the new index.
    let d = ConsulDouble::start();
    d.seed("app/config/db", DB.as_bytes(), 1003, 1003);
    d.seed("app/config/flags", b"{}", 1010, 1010);
    d.seed("app/config/web", WEB.as_bytes(), 1001, 1042);
    d.set_index(1056);
    let address = d.address();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        let raw = exchange(
            &address,
            "PUT",
            "/v1/kv/app/config/flags",
            &[],
            FLAGS.as_bytes(),
        );
        assert_eq!(raw.status, 200);
    });
    let started = Instant::now();
    replay(&d, "kv-get-blocking-changed", Replay::default());
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it blocked"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it woke on the write"
    );
    writer.join().unwrap();

    // A snapshot restore makes the index go backwards; blocked queries
    // answer at once with the lower index.
    let d = ConsulDouble::start();
    d.seed("app/config/db", DB.as_bytes(), 900, 900);
    d.seed("app/config/web", WEB.as_bytes(), 901, 980);
    let snapshot = d.snapshot();
    d.seed("app/config/flags", FLAGS.as_bytes(), 1010, 1057);
    let blocked = {
        let address = d.address();
        thread::spawn(move || {
            exchange(
                &address,
                "GET",
                "/v1/kv/app/config/?recurse&index=1057&wait=30s",
                &[],
                b"",
            )
        })
    };
    thread::sleep(Duration::from_millis(300));
    let restored = Instant::now();
    d.restore(&snapshot);
    let raw = blocked.join().unwrap();
    assert!(
        restored.elapsed() < Duration::from_secs(5),
        "a restore ends the wait"
    );
    assert_eq!(raw.header("X-Consul-Index"), Some("980"));
    let want = load("kv-get-blocking-index-went-backwards", &[]);
    let got: Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(got, want["response"]["body"]);
    // And the fixture's request itself, after the restore.
    let _ = replay(
        &d,
        "kv-get-blocking-index-went-backwards",
        Replay {
            substitutions: vec![("\"index\": \"1057\"", "\"index\": \"0\"".into())],
            ..Replay::default()
        },
    );
}

#[test]
fn kv_writes() {
    let d = plain();
    for name in [
        "kv-put",
        "kv-put-cas-ok",
        "kv-put-cas-zero-create-only",
        "kv-put-missing-key",
        "kv-put-conflicting-flags",
        "kv-delete",
        "kv-delete-recurse",
    ] {
        d.seed("app/config/web", WEB.as_bytes(), 1001, 1042);
        replay(&d, name, Replay::default());
    }
    d.seed("app/config/web", WEB.as_bytes(), 1001, 1042);
    replay(&d, "kv-put-cas-stale", Replay::default());
    replay(&d, "kv-delete-cas-stale", Replay::default());
    replay(&d, "kv-put-flags", Replay::default());
    let raw = exchange(&d.address(), "GET", "/v1/kv/app/config/web", &[], b"");
    let got: Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(got[0]["Flags"], 42);
    replay(
        &d,
        "kv-put-too-large",
        Replay {
            body: Some(vec![b'x'; 600_000]),
            ..Replay::default()
        },
    );
    // The stored value is the raw body, no base64, no JSON wrapping.
    let raw = exchange(&d.address(), "GET", "/v1/kv/app/config/web?raw", &[], b"");
    assert_eq!(String::from_utf8_lossy(&raw.body), WEB);
}

#[test]
fn locks() {
    let d = ConsulDouble::start();
    d.set_index(1058);
    let id = session(
        &d,
        r#"{"Name":"desired-state-writer","TTL":"30s","Behavior":"release","LockDelay":"0s"}"#,
    );
    let subs = || Replay {
        substitutions: vec![(SESSION, id.clone())],
        ..Replay::default()
    };
    replay(&d, "kv-put-acquire", subs());
    replay(&d, "kv-get-locked", subs());
    let other = session(&d, r#"{"TTL":"30s"}"#);
    replay(
        &d,
        "kv-put-acquire-held",
        Replay {
            substitutions: vec![("d23f0824-128b-4f33-8c5c-7fd0a6a3a450", other.clone())],
            ..Replay::default()
        },
    );
    replay(&d, "kv-put-release", subs());
    // Released: the other session may take it now.
    assert_eq!(
        put(
            &d,
            &format!("/v1/kv/locks/app-config?acquire={other}"),
            b"x"
        ),
        "true"
    );
}

#[test]
fn sessions() {
    let d = ConsulDouble::start_with(Config {
        session_ttl_min: Duration::from_secs(10),
        node: "node-1".into(),
        ..Config::default()
    });
    let raw = replay(
        &d,
        "session-create",
        Replay {
            unchecked: vec!["ID"],
            ..Replay::default()
        },
    );
    let created: Value = serde_json::from_slice(&raw.body).unwrap();
    let id = created["ID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    replay(&d, "session-create-bad-ttl", Replay::default());
    replay(&d, "session-renew-missing", Replay::default());

    // Info and renew show the session as created at index 1059.
    let d = ConsulDouble::start_with(Config {
        node: "node-1".into(),
        ..Config::default()
    });
    d.set_index(1058);
    let id = session(
        &d,
        r#"{"Name":"desired-state-writer","TTL":"30s","Behavior":"release","LockDelay":"15s"}"#,
    );
    let subs = || Replay {
        substitutions: vec![(SESSION, id.clone())],
        ..Replay::default()
    };
    replay(&d, "session-info", subs());
    replay(&d, "session-renew", subs());
    replay(&d, "session-destroy", subs());
    let raw = exchange(
        &d.address(),
        "GET",
        &format!("/v1/session/info/{id}"),
        &[],
        b"",
    );
    assert_eq!(raw.body, b"[]", "destroyed");
}

#[test]
fn sessions_expire_and_delete_or_release_their_locks() {
    let d = ConsulDouble::start();
    let release = session(&d, r#"{"TTL":"1s","LockDelay":"0s"}"#);
    let delete = session(&d, r#"{"TTL":"1s","Behavior":"delete","LockDelay":"0s"}"#);
    assert_eq!(
        put(&d, &format!("/v1/kv/a?acquire={release}"), b"1"),
        "true"
    );
    assert_eq!(put(&d, &format!("/v1/kv/b?acquire={delete}"), b"2"), "true");
    // Reaped after up to twice the TTL.
    assert!(crate::support::eventually(Duration::from_secs(5), || {
        exchange(&d.address(), "GET", "/v1/kv/b", &[], b"").status == 404
    }));
    let raw = exchange(&d.address(), "GET", "/v1/kv/a", &[], b"");
    let a: Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(a[0].get("Session"), None, "released, kept");
    assert_eq!(a[0]["LockIndex"], 1);
    let raw = exchange(
        &d.address(),
        "PUT",
        &format!("/v1/session/renew/{release}"),
        &[],
        b"",
    );
    assert_eq!(raw.status, 404);

    // With the default lock-delay, nobody may take the lock for a while.
    let holder = session(&d, r#"{"TTL":"10s"}"#);
    let next = session(&d, r#"{"TTL":"10s"}"#);
    assert_eq!(put(&d, &format!("/v1/kv/c?acquire={holder}"), b"1"), "true");
    put(&d, &format!("/v1/session/destroy/{holder}"), b"");
    assert_eq!(put(&d, &format!("/v1/kv/c?acquire={next}"), b"1"), "false");
}

#[test]
fn transactions() {
    let d = plain();
    d.seed("global/version", b"7", 990, 990);
    replay(
        &d,
        "txn-read-multi",
        Replay {
            extra_fields: vec!["Index", "KnownLeader", "LastContact"],
            ..Replay::default()
        },
    );
    d.seed("app/config/old", b"x", 1020, 1020);
    d.set_index(1070);
    replay(&d, "txn-cas-commit", Replay::default());
    let raw = exchange(&d.address(), "GET", "/v1/kv/app/config/old", &[], b"");
    assert_eq!(raw.status, 404, "the delete was applied");
    // Now web and global/version are past what the rollback fixture expects.
    d.seed("global/version", b"7", 990, 1071);
    replay(&d, "txn-cas-rollback", Replay::default());
    replay(&d, "txn-check-index-missing-key", Replay::default());
    let raw = exchange(&d.address(), "GET", "/v1/kv/app/config/x", &[], b"");
    assert_eq!(raw.status, 404, "a rolled-back transaction wrote nothing");
    replay(
        &d,
        "txn-get-missing",
        Replay {
            extra_fields: vec!["Index", "KnownLeader", "LastContact"],
            ..Replay::default()
        },
    );
    replay(&d, "txn-bad-body", Replay::default());
    let ops: Vec<Value> = (0..65)
        .map(|i| json!({"KV": {"Verb": "set", "Key": format!("k{i}"), "Value": "MQ=="}}))
        .collect();
    replay(
        &d,
        "txn-too-many-ops",
        Replay {
            body: Some(Value::Array(ops).to_string().into_bytes()),
            ..Replay::default()
        },
    );
    let big =
        json!([{"KV": {"Verb": "set", "Key": "app/blob", "Value": base64(&vec![b'x'; 600_000])}}]);
    // By default the whole body is capped first…
    let raw = exchange(
        &d.address(),
        "PUT",
        "/v1/txn",
        &[],
        big.to_string().as_bytes(),
    );
    assert_eq!(raw.status, 413);
    assert_eq!(
        String::from_utf8_lossy(&raw.body),
        "Request body too large, max size: 524288 bytes"
    );
    // …and with a larger txn_max_req_len, each value is.
    let d = ConsulDouble::start_with(Config {
        txn_max_req_len: 2 * 1024 * 1024,
        ..Config::default()
    });
    replay(
        &d,
        "txn-value-too-large",
        Replay {
            body: Some(big.to_string().into_bytes()),
            ..Replay::default()
        },
    );
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn token(secret: &str, accessor: &str, rules: Vec<Rule>) -> Token {
    Token {
        secret: secret.into(),
        accessor: accessor.into(),
        rules,
        management: false,
    }
}

#[test]
fn acls() {
    let d = seeded(Config {
        acl: Some(Acl::with_management("root")),
        ..Config::default()
    });
    d.add_token(token(
        "<secret>",
        "5e0c2f1a-0000-0000-0000-000000000001",
        vec![Rule::new(Resource::Key, "app/config/web", Access::Read)],
    ));
    d.add_token(token(
        "<secret of a token with no key rules>",
        "8d116ece-1738-47d9-bd9c-172411e20b8f",
        Vec::new(),
    ));
    d.add_token(token(
        "<secret of read-only token>",
        "9531985d-5d9d-49f8-9818-e811892f902b",
        vec![Rule::new(Resource::Key, "", Access::Read)],
    ));
    for name in [
        "acl-bearer-token",
        "acl-list-filtered",
        "acl-not-found",
        "acl-permission-denied",
        "acl-permission-denied-anonymous",
        "txn-acl-denied",
    ] {
        replay(&d, name, Replay::default());
    }
    // ACL-filtered reads: a txn get-tree leaves out what may not be read.
    let ops = json!([{"KV": {"Verb": "get-tree", "Key": "app/"}}]).to_string();
    let raw = exchange(
        &d.address(),
        "PUT",
        "/v1/txn",
        &[("X-Consul-Token".into(), "<secret>".into())],
        ops.as_bytes(),
    );
    let body: Value = serde_json::from_slice(&raw.body).unwrap();
    let keys: Vec<&str> = body["Results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["KV"]["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/config/web"]);
    // Without a token nothing is readable, and a recursive read is a 404.
    let raw = exchange(&d.address(), "GET", "/v1/kv/app/?recurse", &[], b"");
    assert_eq!(raw.status, 404);
}

#[test]
fn events() {
    let d = ConsulDouble::start();
    let raw = replay(
        &d,
        "event-fire",
        Replay {
            unchecked: vec!["ID"],
            ..Replay::default()
        },
    );
    let fired: Value = serde_json::from_slice(&raw.body).unwrap();
    let id = fired["ID"].as_str().unwrap().to_string();
    let raw = replay(
        &d,
        "event-list",
        Replay {
            substitutions: vec![("6b0d549b-6f03-475a-9600-a35a099950d8", id.clone())],
            unchecked: vec!["X-Consul-Index", "LTime"],
            ..Replay::default()
        },
    );
    let listed: Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(listed[0]["ID"], id.as_str());
    // The list's index is Consul's IDToIndex of the newest event.
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let index =
        u64::from_str_radix(&hex[..16], 16).unwrap() ^ u64::from_str_radix(&hex[16..], 16).unwrap();
    assert_eq!(
        raw.header("X-Consul-Index"),
        Some(index.to_string().as_str())
    );
}
