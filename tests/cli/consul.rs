//! Consul-specific behaviour, each test on the Consul double and (when
//! `CONVERGENT_TEST_CONSUL_BIN` is set) on a real `consul agent -dev`:
//! tokens and ACL refusals, a stopped server and a lost leader, one request
//! per `attributes`/`status`, size limits, locks, the blocking-query change
//! feed, datacenters and consistency, `CONSUL_HTTP_ADDR`, events, and a
//! write whose answer was lost.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use convergent::store::TxnOutcome;

use crate::support::consul_agent::{request, ConsulAgent};
use crate::support::consul_double::{Access, Acl, Config, ConsulDouble, Resource, Rule, Token};
use crate::support::proxy::CountingProxy;
use crate::support::{
    assert_refused, eventually, files_under, fixture, open_store, stderr, stdout, Backend, Harness,
    STRICT_ATTRIBUTES_WEB_01,
};

/// Instantiates `fn name(backend: Backend)` on the double and on a real agent.
macro_rules! consul_tests {
    ($($name:ident),* $(,)?) => {
        mod double {
            $(
                #[test]
                fn $name() {
                    super::$name(crate::support::Backend::ConsulDouble);
                }
            )*
        }
        mod agent {
            $(
                #[test]
                fn $name() {
                    if crate::support::consul_agent::skip(concat!("consul::agent::", stringify!($name))) {
                        return;
                    }
                    super::$name(crate::support::Backend::Consul);
                }
            )*
        }
    };
}

consul_tests! {
    a_token_comes_from_the_environment_or_a_file_and_the_file_wins,
    permission_denied_is_77_naming_the_key_and_no_token_leaks,
    a_stopped_server_serves_the_cache_marked_stale,
    attributes_and_status_are_one_request,
    oversized_values_are_refused_before_anything_is_sent,
    a_held_lock_names_its_holder_and_a_dead_holders_session_frees_it,
    the_change_feed_wakes_on_watched_changes_only,
    datacenter_and_consistency_options_are_passed_through,
    consul_http_addr_stands_in_for_a_missing_address,
    events_are_fired,
    a_document_of_many_sub_keys_is_rewritten_in_one_transaction,
    an_empty_value_reads_back_empty,
}

/// `attributes` for web-02, giving up on the store after a second.
const ATTRIBUTES_WEB_02: [&str; 7] = [
    "--timeout",
    "1s",
    "attributes",
    "--cluster",
    "web",
    "--node",
    "web-02",
];

/// Secrets are UUIDs: Consul takes nothing else as a SecretID.
const MANAGEMENT: &str = "c0ffee00-0000-4000-8000-000000000001";
const WRITER: &str = "a11ce000-0000-4000-8000-000000000002";
const READER: &str = "b0b00000-0000-4000-8000-000000000003";
const BOGUS: &str = "deadbeef-0000-4000-8000-000000000004";

/// The Consul a test runs against.
enum Server {
    Double(ConsulDouble),
    Agent(ConsulAgent),
}

impl Server {
    fn start(backend: Backend) -> Server {
        match backend {
            Backend::ConsulDouble => Server::Double(ConsulDouble::start()),
            Backend::Consul => Server::Agent(ConsulAgent::start()),
            other => panic!("{other:?} is not Consul"),
        }
    }

    /// A server with ACLs on (default deny) and a writer and a reader token.
    fn with_acl(backend: Backend) -> Server {
        let server = match backend {
            Backend::ConsulDouble => Server::Double(ConsulDouble::start_with(Config {
                acl: Some(Acl::with_management(MANAGEMENT)),
                ..Config::default()
            })),
            Backend::Consul => Server::Agent(ConsulAgent::start_with_acl(MANAGEMENT)),
            other => panic!("{other:?} is not Consul"),
        };
        let everywhere = |access| {
            vec![
                Rule::new(Resource::Key, "convergent/", access),
                Rule::new(Resource::Session, "", access),
                Rule::new(Resource::Event, "", access),
            ]
        };
        server.grant(WRITER, everywhere(Access::Write));
        server.grant(READER, everywhere(Access::Read));
        server
    }

    fn grant(&self, secret: &str, rules: Vec<Rule>) {
        match self {
            Server::Double(d) => d.add_token(Token {
                secret: secret.into(),
                accessor: format!("0cce5500-0000-4000-8000-{:012}", secret.len()),
                rules,
                management: false,
            }),
            Server::Agent(a) => a.add_token(secret, &rules),
        }
    }

    fn address(&self) -> String {
        match self {
            Server::Double(d) => d.address(),
            Server::Agent(a) => a.address(),
        }
    }

    fn url(&self) -> String {
        format!("consul://{}", self.address())
    }

    /// A harness on this server whose commands may take 30 s: for tests
    /// about tokens, not time. On a loaded CI machine a real agent once
    /// took over the default 5 s to refuse its first tokenless request.
    fn patient_harness(&self, backend: Backend) -> Harness {
        let h = Harness::on(backend, self.url());
        std::fs::write(h.path("config.yml"), "timeout: 30s\n").unwrap();
        h
    }

    fn double(&self) -> Option<&ConsulDouble> {
        match self {
            Server::Double(d) => Some(d),
            Server::Agent(_) => None,
        }
    }

    /// Stops it as a crash would: the port refuses connections.
    fn kill(&mut self) {
        match self {
            Server::Double(d) => d.stop(),
            Server::Agent(a) => a.kill(),
        }
    }

    /// One raw HTTP request with the management token (if ACLs are on).
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
        request(&self.address(), method, path, body, Some(MANAGEMENT)).unwrap()
    }
}

/// Runs the binary with a Consul token in its environment.
fn run_with_token(h: &Harness, token: &str, args: &[&str]) -> std::process::Output {
    h.cmd()
        .env("CONSUL_HTTP_TOKEN", token)
        .args(args)
        .output()
        .unwrap()
}

fn import_args() -> [String; 2] {
    ["import".into(), fixture("view.yml").display().to_string()]
}

fn a_token_comes_from_the_environment_or_a_file_and_the_file_wins(backend: Backend) {
    let server = Server::with_acl(backend);
    let h = server.patient_harness(backend);
    let import = import_args();
    let import: Vec<&str> = import.iter().map(String::as_str).collect();
    // No token: nothing is readable under a deny policy.
    assert_refused(&h.run(&import), 77, &["CONSUL_HTTP_TOKEN"]);
    let out = run_with_token(&h, WRITER, &import);
    assert!(out.status.success(), "{}", stderr(&out));

    let file = h.path("token");
    std::fs::write(&file, format!("{WRITER}\n")).unwrap();
    let attributes = ["attributes", "--cluster", "web", "--node", "web-01"];
    let out = h
        .cmd()
        .env("CONSUL_HTTP_TOKEN", BOGUS)
        .env("CONSUL_HTTP_TOKEN_FILE", &file)
        .args(attributes)
        .output()
        .unwrap();
    assert!(out.status.success(), "the file wins: {}", stderr(&out));
    std::fs::write(&file, BOGUS).unwrap();
    let out = h
        .cmd()
        .env("CONSUL_HTTP_TOKEN", WRITER)
        .env("CONSUL_HTTP_TOKEN_FILE", &file)
        .args(["--on-unreachable", "fail"])
        .args(attributes)
        .output()
        .unwrap();
    assert_refused(&out, 77, &["ACL not found"]);
    if let Some(double) = server.double() {
        let tokens: Vec<Option<String>> = double.requests().into_iter().map(|r| r.token).collect();
        assert!(tokens.contains(&Some(WRITER.to_string())));
        assert!(
            double.requests().iter().all(|r| !r.has("token")),
            "the token goes in X-Consul-Token, never in the URL"
        );
    }
}

fn permission_denied_is_77_naming_the_key_and_no_token_leaks(backend: Backend) {
    let server = Server::with_acl(backend);
    let h = server.patient_harness(backend);
    let import = import_args();
    let import: Vec<&str> = import.iter().map(String::as_str).collect();
    let mut outputs = vec![run_with_token(&h, WRITER, &import)];
    assert!(outputs[0].status.success(), "{}", stderr(&outputs[0]));
    let read = ["attributes", "--cluster", "web", "--node", "web-02"];
    outputs.push(run_with_token(&h, READER, &read));
    assert!(outputs[1].status.success(), "{}", stderr(&outputs[1]));

    // A read-only token may not write: the transaction's 409 is an ACL
    // refusal, not a conflict.
    let out = run_with_token(&h, READER, &["set", "--cluster", "web", "state=off"]);
    assert_refused(&out, 77, &["permission denied", "convergent/clusters/web"]);
    outputs.push(out);
    // An unknown token is refused outright, and no cached answer stands in.
    let out = run_with_token(&h, BOGUS, &read);
    assert_refused(&out, 77, &["ACL not found"]);
    outputs.push(out);
    let out = h.run(&read);
    assert_refused(&out, 77, &["CONSUL_HTTP_TOKEN"]);
    outputs.push(out);
    let desired = &export_with_token(&h, WRITER)["convergent"]["clusters"]["web"]["desired"];
    assert_eq!(desired["state"], "converged", "nothing was written");

    for out in &outputs {
        for secret in [WRITER, READER, BOGUS] {
            assert!(
                !stderr(out).contains(secret) && !stdout(out).contains(secret),
                "a token was printed: {}",
                stderr(out)
            );
        }
    }
    let cached = files_under(&h.cache_dir());
    assert!(!cached.is_empty());
    for file in cached {
        let text = std::fs::read_to_string(&file).unwrap();
        for secret in [WRITER, READER, BOGUS] {
            assert!(!text.contains(secret), "{}", file.display());
        }
    }
}

/// `export` with a token, parsed.
fn export_with_token(h: &Harness, token: &str) -> Value {
    let out = run_with_token(h, token, &["export", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn a_stopped_server_serves_the_cache_marked_stale(backend: Backend) {
    let mut server = Server::start(backend);
    let h = Harness::on(backend, server.url());
    h.import(&fixture("view.yml"));
    let fresh = h.attributes("web", "web-02");
    server.kill();
    let (stale, warning) = h.stale_attributes("web", "web-02", "1s");
    assert_eq!(
        stale["convergent"]["desired"],
        fresh["convergent"]["desired"]
    );
    assert!(warning.contains("connection refused"), "{warning}");
    let args = ATTRIBUTES_WEB_02;
    let out = h.run(&[&["--on-unreachable", "fail"][..], &args].concat());
    assert_refused(&out, 69, &["consul://", "unavailable"]);
    let started = Instant::now();
    let out = h.run(&["--timeout", "1s", "set", "--cluster", "web", "state=off"]);
    assert_refused(&out, 69, &["unavailable"]);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "bounded by --timeout"
    );
}

/// Consul holds a read without a leader before refusing it. When the last
/// try then runs out of time, the error still names Consul's refusal, not
/// only the timeout: the cause an operator needs.
#[test]
fn a_try_that_runs_out_of_time_still_names_what_consul_said() {
    let double = ConsulDouble::start_with(Config {
        no_leader_hold: Duration::from_millis(600),
        ..Config::default()
    });
    let h = Harness::on(
        Backend::ConsulDouble,
        format!("consul://{}", double.address()),
    );
    h.import(&fixture("view.yml"));
    double.set_leader(false);
    // Tries end at about 0.6s and 1.35s with "No cluster leader"; the third
    // has 0.5s left and is cut off.
    assert_refused(
        &h.run(&STRICT_ATTRIBUTES_WEB_01),
        69,
        &["HTTP 500: No cluster leader; then timed out"],
    );
}

#[test]
fn a_lost_leader_is_unavailable_and_stale_reads_still_answer() {
    let h = Harness::with_fixture(Backend::ConsulDouble);
    let fresh = h.attributes("web", "web-02");
    h.consul_double().set_leader(false);
    let (_, warning) = h.stale_attributes("web", "web-02", "1s");
    assert!(warning.contains("No cluster leader"), "{warning}");
    let args = ATTRIBUTES_WEB_02;
    // Any server answers a stale read.
    let out = h
        .cmd()
        .env(
            "CONVERGENT_STORE",
            format!("{}?consistency=stale", h.store_url),
        )
        .args(args)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["convergent"]["source"]["stale"],
        false,
        "{}",
        stderr(&out)
    );
    assert_eq!(doc["convergent"]["desired"], fresh["convergent"]["desired"]);
    let out = h.run(&["--timeout", "1s", "set", "--cluster", "web", "version=9"]);
    assert_refused(&out, 69, &["No cluster leader"]);
    h.consul_double().set_leader(true);
    assert_eq!(
        h.attributes("web", "web-02")["convergent"]["desired"],
        fresh["convergent"]["desired"],
        "nothing was written"
    );
}

fn attributes_and_status_are_one_request(backend: Backend) {
    let server = Server::start(backend);
    let h = Harness::on(backend, server.url());
    h.import(&fixture("view.yml"));
    for n in 1..=5 {
        h.converge("web", &format!("web-{n:02}"), "success");
    }
    let proxy = CountingProxy::start(&server.address());
    let through = Harness::on(backend, format!("consul://{}", proxy.address()));
    let doc = through.attributes("web", "web-03");
    assert_eq!(
        proxy.requests(),
        1,
        "attributes reads everything in one request"
    );
    assert_eq!(doc["convergent"]["desired"]["app"]["workers"], 16);
    // The revision is the highest ModifyIndex among the keys read.
    let mut highest = 0;
    for root in [
        "defaults",
        "clusters/web/schema",
        "clusters/web/desired",
        "rollouts/web",
        "clusters/web/nodes/web-03",
    ] {
        let (status, body) = server.call("GET", &format!("/v1/kv/convergent/{root}?recurse"), None);
        if status == 200 {
            let entries: Value = serde_json::from_str(&body).unwrap();
            for e in entries.as_array().unwrap() {
                let key = e["Key"].as_str().unwrap();
                let own = format!("convergent/{root}");
                if key == own || key.starts_with(&format!("{own}/")) {
                    highest = highest.max(e["ModifyIndex"].as_u64().unwrap());
                }
            }
        }
    }
    assert_eq!(doc["convergent"]["source"]["revision"], json!(highest));
    let before = proxy.requests();
    let status = through.status("web", &[]);
    assert_eq!(status["summary"]["converged"], 5);
    assert_eq!(proxy.requests() - before, 1, "status is one request");
    if let Some(double) = server.double() {
        let last = double.requests().pop().unwrap();
        assert_eq!(
            (last.method.as_str(), last.path.as_str()),
            ("PUT", "/v1/txn")
        );
    }
}

fn oversized_values_are_refused_before_anything_is_sent(backend: Backend) {
    let server = Server::start(backend);
    let h = Harness::on(backend, server.url());
    h.import(&fixture("view.yml"));
    let before = h.export();
    // An import that changes a document and adds one no transaction holds:
    // refused whole, before anything is written.
    let proxy = CountingProxy::start(&server.address());
    let through = Harness::on(backend, format!("consul://{}", proxy.address()));
    let mut view = before.clone();
    view["convergent"]["clusters"]["web"]["desired"]["version"] = json!("9.9");
    view["convergent"]["clusters"]["web"]["nodes"]["big"] = json!({"blob": "x".repeat(600_000)});
    let file = h.path("big.json");
    std::fs::write(&file, serde_json::to_vec(&view).unwrap()).unwrap();
    let out = through.run(&["import", file.to_str().unwrap()]);
    assert_refused(
        &out,
        65,
        &["convergent/clusters/web/nodes/big", "nothing was imported"],
    );
    assert_eq!(
        proxy.requests(),
        1,
        "only the read of the current view was sent"
    );
    assert_eq!(h.export(), before);

    // One write: over Consul's value limit, or under it but too big for a
    // transaction once base64-encoded.
    let store = open_store(&server.url());
    let writes = || {
        server
            .double()
            .map(|d| d.requests().iter().filter(|r| r.is_write_txn()).count())
    };
    let sent = writes();
    for (size, needle) in [(600_000, "512 KiB"), (450_000, "base64")] {
        let err = store
            .compare_and_put("convergent/blob", None, vec![b'x'; size])
            .unwrap_err();
        assert_eq!(err.exit_code(), 65);
        assert!(
            err.to_string().contains("convergent/blob") && err.to_string().contains(needle),
            "{err}"
        );
    }
    assert_eq!(writes(), sent, "nothing was sent");
    assert!(matches!(
        store
            .compare_and_put("convergent/blob", None, vec![b'x'; 380_000])
            .unwrap(),
        TxnOutcome::Committed { .. }
    ));
}

fn lock_key_session(server: &Server, key: &str) -> Option<String> {
    let (status, body) = server.call("GET", &format!("/v1/kv/{key}"), None);
    if status != 200 {
        return None;
    }
    let entries: Value = serde_json::from_str(&body).unwrap();
    entries[0]["Session"].as_str().map(str::to_string)
}

fn a_held_lock_names_its_holder_and_a_dead_holders_session_frees_it(backend: Backend) {
    let server = Server::start(backend);
    let store = open_store(&server.url());
    let name = "convergent/locks/rollout-web";
    let held = store
        .lock(
            name,
            Duration::from_secs(10),
            "orchestrator on host-a pid 42",
        )
        .unwrap();
    let err = store
        .lock(name, Duration::from_secs(10), "b")
        .err()
        .unwrap();
    assert_eq!(err.exit_code(), 75);
    assert!(
        err.to_string().contains("orchestrator on host-a pid 42"),
        "{err}"
    );
    // Renewed while held (every third of the TTL).
    let session = lock_key_session(&server, name).expect("the key is locked");
    match server.double() {
        Some(double) => assert!(eventually(Duration::from_secs(8), || !double
            .requests_to(&format!("/v1/session/renew/{session}"))
            .is_empty())),
        None => std::thread::sleep(Duration::from_secs(4)),
    }
    held.check().unwrap();
    drop(held);
    assert_eq!(lock_key_session(&server, name), None, "released on drop");
    let (_, sessions) = server.call("GET", "/v1/session/list", None);
    assert_eq!(sessions.trim(), "[]", "and its session destroyed");
    drop(store.lock(name, Duration::from_secs(10), "c").unwrap());

    // A holder that died: its session is never renewed, and expires.
    let (_, created) = server.call(
        "PUT",
        "/v1/session/create",
        Some(br#"{"TTL":"1s","Behavior":"delete","LockDelay":"0s"}"#),
    );
    let dead: Value = serde_json::from_str(&created).unwrap();
    let dead = dead["ID"].as_str().unwrap();
    let db = "convergent/locks/rollout-db";
    let (_, taken) = server.call(
        "PUT",
        &format!("/v1/kv/{db}?acquire={dead}"),
        Some(b"crashed orchestrator"),
    );
    assert_eq!(taken.trim(), "true");
    let err = store.lock(db, Duration::from_secs(10), "d").err().unwrap();
    assert!(err.to_string().contains("crashed orchestrator"), "{err}");
    assert!(eventually(Duration::from_secs(15), || store
        .lock(db, Duration::from_secs(10), "d")
        .is_ok()));

    // A lock whose session is destroyed behind its back knows it lost it.
    let held = store.lock(name, Duration::from_secs(10), "e").unwrap();
    let session = lock_key_session(&server, name).unwrap();
    server.call("PUT", &format!("/v1/session/destroy/{session}"), None);
    assert!(eventually(Duration::from_secs(10), || held
        .check()
        .is_err()));
    let err = held.check().unwrap_err();
    assert_eq!(err.exit_code(), 75);
    assert!(err.to_string().contains("lost"), "{err}");
}

fn the_change_feed_wakes_on_watched_changes_only(backend: Backend) {
    let server = Server::start(backend);
    let h = Harness::on(backend, server.url());
    h.import(&fixture("view.yml"));
    let (store, mut feed) = crate::store_api::the_feed_sees_watched_changes_only(&h);
    // A sibling whose name starts like the watched node's wakes the
    // blocking query, but is not a change to the node.
    h.put_raw(
        "convergent/clusters/web/nodes/web-010",
        b"{\"state\": \"off\"}",
    );
    assert!(
        !feed.wait(Duration::from_millis(800)).unwrap(),
        "web-010 is not web-01"
    );
    // Burst allowance spent: the next change still arrives, paced.
    h.put_raw("convergent/clusters/web/desired/flag", b"false");
    assert!(feed.wait(Duration::from_secs(10)).unwrap());

    let Some(double) = server.double() else {
        return;
    };
    // Quiet: each follower waits in one blocking query, no busy loop.
    while feed.wait(Duration::from_millis(500)).unwrap() {}
    double.clear_requests();
    assert!(!feed.wait(Duration::from_secs(1)).unwrap());
    let polls = double.requests_to("/v1/kv/").len();
    assert!(polls <= 2, "{polls} requests in a quiet second");

    // A snapshot restore sends the index backwards: a follower blocked at
    // the time answers at once, starts over from a fresh read, and sees a
    // change made after the restore (a follower stuck on the old, higher
    // index would sit out the whole 5-minute wait).
    drop(feed);
    let root = "convergent/rollouts/web";
    let mut feed = store.watch(&[root.into()]).unwrap();
    let snapshot = double.snapshot();
    h.put_raw(&format!("{root}/marker"), b"1");
    assert!(feed.wait(Duration::from_secs(10)).unwrap());
    let path = format!("/v1/kv/{root}");
    assert!(eventually(Duration::from_secs(10), || double
        .blocked_on(&path)
        == 1));
    double.restore(&snapshot);
    assert!(
        feed.wait(Duration::from_secs(10)).unwrap(),
        "the reset is a change"
    );
    h.put_raw(&format!("{root}/marker"), b"2");
    let started = Instant::now();
    assert!(
        feed.wait(Duration::from_secs(10)).unwrap(),
        "a change after the reset wakes it"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    while feed.wait(Duration::from_millis(300)).unwrap() {}
    double.clear_requests();
    assert!(!feed.wait(Duration::from_secs(1)).unwrap());
    assert!(
        double.requests_to("/v1/kv/").len() <= 1,
        "no busy loop after the reset"
    );
    assert!(
        double
            .requests()
            .iter()
            .all(|r| r.param("index") != Some("0")),
        "index=0 never blocks, so it is never sent"
    );
}

fn datacenter_and_consistency_options_are_passed_through(backend: Backend) {
    let server = match backend {
        Backend::ConsulDouble => Server::Double(ConsulDouble::start_with(Config {
            datacenters: vec!["dc1".into(), "dc2".into()],
            ..Config::default()
        })),
        _ => Server::start(backend),
    };
    let other = if backend == Backend::ConsulDouble {
        "dc2"
    } else {
        "dc1"
    };
    let h = Harness::on(backend, format!("{}?dc={other}", server.url()));
    h.import(&fixture("view.yml"));
    assert_eq!(
        h.attributes("web", "web-01")["convergent"]["desired"]["state"],
        "converged"
    );
    if let Some(double) = server.double() {
        assert!(double
            .requests()
            .iter()
            .all(|r| r.param("dc") == Some("dc2")));
        // Each datacenter has its own KV store.
        let (status, _) = server.call("GET", "/v1/kv/convergent/clusters/web/desired", None);
        assert_eq!(status, 404, "nothing landed in dc1");
    }
    let nowhere = Harness::on(backend, format!("{}?dc=nowhere", server.url()));
    let out = nowhere.run(&[
        "--timeout",
        "1s",
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-01",
    ]);
    assert_refused(&out, 69, &["No path to datacenter"]);

    for (consistency, flag) in [("stale", "stale"), ("consistent", "consistent")] {
        let h = Harness::on(
            backend,
            format!("{}?dc={other}&consistency={consistency}", server.url()),
        );
        h.attributes("web", "web-01");
        if let Some(double) = server.double() {
            let last = double.requests().pop().unwrap();
            assert!(last.has(flag), "{consistency}: {last:?}");
        }
    }
    for (url, needle) in [
        (
            format!("{}?consistency=eventual", server.url()),
            "consistency",
        ),
        (format!("{}?datacenter=dc2", server.url()), "datacenter"),
    ] {
        let out =
            Harness::on(backend, url).run(&["attributes", "--cluster", "web", "--node", "web-01"]);
        assert_refused(&out, 78, &[needle]);
    }
}

fn consul_http_addr_stands_in_for_a_missing_address(backend: Backend) {
    let server = Server::start(backend);
    let h = Harness::on(backend, "consul://".into());
    let address = server.address();
    for addr in [
        address.clone(),
        format!("http://{address}"),
        format!("http://{address}/"),
    ] {
        let out = h
            .cmd()
            .env("CONSUL_HTTP_ADDR", &addr)
            .args(import_args())
            .output()
            .unwrap();
        assert!(out.status.success(), "{addr}: {}", stderr(&out));
    }
    let out = h
        .cmd()
        .env("CONSUL_HTTP_ADDR", &address)
        .args(STRICT_ATTRIBUTES_WEB_01)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    if let Some(double) = server.double() {
        // Basic auth for a proxy in front of Consul, and JSON bodies labelled.
        double.clear_requests();
        let out = h
            .cmd()
            .env("CONSUL_HTTP_ADDR", &address)
            .env("CONSUL_HTTP_AUTH", "proxy-user:proxy-pw")
            .args(STRICT_ATTRIBUTES_WEB_01)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let sent = &double.requests()[0];
        let header = |name: &str| {
            sent.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            header("authorization"),
            Some("Basic cHJveHktdXNlcjpwcm94eS1wdw==")
        );
        assert_eq!(header("content-type"), Some("application/json"));
    }
    let out = h
        .cmd()
        .env("CONSUL_HTTP_ADDR", "unix:///run/consul/consul.sock")
        .args(STRICT_ATTRIBUTES_WEB_01)
        .output()
        .unwrap();
    assert_refused(&out, 78, &["CONSUL_HTTP_ADDR", "unix"]);
    // https to a plain-http server: the TLS handshake fails, nothing is read.
    for env in [
        vec![("CONSUL_HTTP_ADDR", format!("https://{address}"))],
        vec![
            ("CONSUL_HTTP_ADDR", address.clone()),
            ("CONSUL_HTTP_SSL", "true".into()),
        ],
    ] {
        let out = h
            .cmd()
            .envs(env.clone())
            .args(STRICT_ATTRIBUTES_WEB_01)
            .output()
            .unwrap();
        assert_refused(&out, 69, &["consul+https://", "CONSUL_HTTP_ADDR"]);
    }
    for (var, value, needle) in [
        (
            "CONSUL_CACERT",
            fixture("view.yml").display().to_string(),
            "CONSUL_CACERT",
        ),
        (
            "CONSUL_CLIENT_CERT",
            "/etc/client.pem".into(),
            "both client cert and client key",
        ),
        (
            "CONSUL_HTTP_SSL_VERIFY",
            "maybe".into(),
            "CONSUL_HTTP_SSL_VERIFY",
        ),
        (
            "CONSUL_HTTP_TOKEN_FILE",
            "/nonexistent/token".into(),
            "CONSUL_HTTP_TOKEN_FILE",
        ),
    ] {
        let out = h
            .cmd()
            .env("CONSUL_HTTP_ADDR", &address)
            .env(var, value)
            .args(STRICT_ATTRIBUTES_WEB_01)
            .output()
            .unwrap();
        assert_refused(&out, 78, &[needle]);
    }
}

fn events_are_fired(backend: Backend) {
    let server = Server::start(backend);
    let store = open_store(&server.url());
    store
        .fire_event("convergent-web", b"generation=9f2c1d0a")
        .unwrap();
    // Events travel by gossip: the agent lists it once it has seen it.
    let payload = || {
        let (_, body) = server.call("GET", "/v1/event/list?name=convergent-web", None);
        let events: Value = serde_json::from_str(&body).ok()?;
        let payload = events.as_array()?.last()?["Payload"].as_str()?.to_string();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(payload)
            .ok()
    };
    assert!(eventually(Duration::from_secs(5), || payload().is_some()));
    assert_eq!(payload().unwrap(), b"generation=9f2c1d0a");
    for (name, payload) in [
        ("_rexec", &b"x"[..]),
        ("a/b", b"x"),
        ("big", &[b'x'; 600][..]),
    ] {
        let err = store.fire_event(name, payload).unwrap_err();
        assert_eq!(err.exit_code(), 65, "{name}: {err}");
    }
    let err = open_store("file:/nonexistent.yml")
        .fire_event("x", b"")
        .unwrap_err();
    assert!(err.to_string().contains("Consul"), "{err}");
}

fn a_document_of_many_sub_keys_is_rewritten_in_one_transaction(backend: Backend) {
    let server = Server::start(backend);
    let h = Harness::on(backend, server.url());
    h.import(&fixture("view.yml"));
    // 40 scalar keys: rewriting them as one document checks and deletes
    // each; merged into delete-cas ops, that fits Consul's 64.
    for i in 0..40 {
        h.put_raw(
            &format!("convergent/clusters/web/nodes/web-06/labels/l{i:02}"),
            format!("v{i}").as_bytes(),
        );
    }
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-06",
        "state=off",
        "--create",
    ]);
    let doc = h.attributes("web", "web-06");
    assert_eq!(doc["convergent"]["state"], "off");
    assert_eq!(doc["convergent"]["desired"]["labels"]["l39"], "v39");
    let (status, body) = server.call(
        "GET",
        "/v1/kv/convergent/clusters/web/nodes/web-06?recurse",
        None,
    );
    assert_eq!(status, 200);
    let keys: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        keys.as_array().unwrap().len(),
        1,
        "now one document: {body}"
    );
}

#[test]
fn a_write_whose_answer_was_lost_is_never_sent_again() {
    let h = Harness::with_fixture(Backend::ConsulDouble);
    let double = h.consul_double();
    double.lose_next_write_answer();
    double.clear_requests();
    let out = h.run(&[
        "set",
        "--cluster",
        "web",
        "version=2.4.2",
        "--reason",
        "lost answer",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // What an audit reads: the change, and that it was applied.
    let said = stdout(&out);
    assert!(!said.contains("no change"), "{said}");
    assert!(said.contains("version \"2.4.0\" -> \"2.4.2\""), "{said}");
    assert!(
        said.contains("applied (the store's answer was lost"),
        "{said}"
    );
    let writes = double
        .requests()
        .into_iter()
        .filter(|r| r.is_write_txn())
        .count();
    assert_eq!(writes, 1, "the write was not sent again");
    let export = h.export();
    let web = &export["convergent"]["clusters"]["web"];
    assert_eq!(web["desired"]["version"], "2.4.2");
    assert_eq!(
        web["history"].as_array().unwrap().len(),
        1,
        "applied once: the re-read showed it had landed"
    );
}

fn an_empty_value_reads_back_empty(backend: Backend) {
    // Consul stores an empty value as null.
    let server = Server::start(backend);
    let store = open_store(&server.url());
    store.compare_and_put("p/empty", None, Vec::new()).unwrap();
    let entry = store.get("p/empty").unwrap().unwrap();
    assert_eq!(entry.value, b"");
    let (_, body) = server.call("GET", "/v1/kv/p/empty", None);
    let raw: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(raw[0]["Value"], Value::Null);
    // And a write reports the index it was applied at.
    let TxnOutcome::Committed {
        revision: Some(revision),
    } = store
        .compare_and_put("p/empty", Some(entry.version), b"1".to_vec())
        .unwrap()
    else {
        panic!("committed with a revision")
    };
    assert_eq!(store.get("p/empty").unwrap().unwrap().version, revision);
}

/// Issue 14, item 18: a Consul server SIGKILLed and restarted answered
/// default reads from an old state (revision 7 where the node's cache held
/// ~3300), and `attributes` printed it as fresh. The double answers as that
/// server did: old data and an old index, with no sign that they are old.
#[test]
fn an_old_state_from_a_restarted_server_is_never_served_as_fresh() {
    let h = Harness::with_fixture(Backend::ConsulDouble);
    let double = h.consul_double();
    let old = double.snapshot();
    h.ok(&["set", "--cluster", "web", "app.workers=12"]);
    let fresh = h.attributes("web", "web-02");
    let revision = fresh["convergent"]["source"]["revision"].as_u64().unwrap();
    assert_eq!(fresh["convergent"]["desired"]["app"]["workers"], 12);

    // The next default read is behind the cache: read again consistently,
    // and that answer is the fresh one.
    double.lag_reads(&old, 1);
    double.clear_requests();
    let out = h.run(&ATTRIBUTES_WEB_02);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["convergent"]["source"]["stale"], false);
    assert_eq!(
        doc["convergent"]["generation"],
        fresh["convergent"]["generation"]
    );
    assert_eq!(doc["convergent"]["source"]["revision"], revision);
    assert!(
        stderr(&out).contains("reading again consistently"),
        "{}",
        stderr(&out)
    );
    let reads = double.requests_to("/v1/txn");
    assert!(!reads[0].has("consistent") && reads.last().unwrap().has("consistent"));

    // The server cannot serve consistent reads yet: the cache, marked stale.
    double.lag_reads(&old, usize::MAX);
    double.set_consistent_ready(false);
    let (stale, warning) = h.stale_attributes("web", "web-02", "1s");
    assert_eq!(
        stale["convergent"]["generation"],
        fresh["convergent"]["generation"]
    );
    assert!(stale["convergent"]["source"]["cache_age_s"].is_u64());
    assert!(
        warning.contains("Not ready to serve consistent reads"),
        "{warning}"
    );
    // Without the cache fallback, unavailable: never the old state as fresh.
    let out = h.run(&[&["--on-unreachable", "fail"][..], &ATTRIBUTES_WEB_02].concat());
    assert_refused(&out, 69, &["Not ready to serve consistent reads"]);
    // Past --max-stale: 69 too. Ages are whole seconds: let the cache
    // become more than one second old (aging it, not waiting for a condition).
    std::thread::sleep(Duration::from_millis(2100));
    let out = h.run(&[&["--max-stale", "1s"][..], &ATTRIBUTES_WEB_02].concat());
    assert_refused(&out, 69, &["--max-stale"]);

    // A write reads consistently: it waits for the server, never computes
    // from the old state.
    let out = h.run(&[
        "--timeout",
        "1s",
        "set",
        "--cluster",
        "web",
        "app.workers=13",
    ]);
    assert_refused(&out, 69, &["Not ready to serve consistent reads"]);
    double.set_consistent_ready(true);
    double.clear_requests();
    h.ok(&["set", "--cluster", "web", "app.workers=13"]);
    let reads: Vec<_> = double
        .requests_to("/v1/txn")
        .into_iter()
        .filter(|r| !r.is_write_txn())
        .collect();
    assert!(!reads.is_empty() && reads.iter().all(|r| r.has("consistent")));
    double.lag_reads(&old, 0);
    assert_eq!(
        h.attributes("web", "web-01")["convergent"]["desired"]["app"]["workers"],
        13
    );
}

/// Issue 14, item 18: the orchestrator read a restarted server's old state
/// and concluded "the rollout record is gone". Rollout commands read only
/// what a quorum confirmed.
#[test]
fn rollout_commands_never_act_on_a_restarted_servers_old_state() {
    let h = Harness::new(Backend::ConsulDouble);
    let double = h.consul_double();
    let empty = double.snapshot();
    h.import(&fixture("view.yml"));
    // Every default read now answers from before the import.
    double.lag_reads(&empty, usize::MAX);
    let out = h.run(&["--timeout", "1s", "export", "--format", "json"]);
    assert!(!stdout(&out).contains("web-2.4.1"), "the double lags");
    let out = h.ok(&["rollout", "status", "web", "--format", "json"]);
    assert!(stdout(&out).contains("web-2.4.1"), "{}", stdout(&out));
    h.ok(&["rollout", "pause", "web", "--reason", "item 18"]);
    double.lag_reads(&empty, 0);
    let out = h.ok(&["rollout", "status", "web", "--format", "json"]);
    assert!(stdout(&out).contains("paused"), "{}", stdout(&out));
}

/// Issue 14, item 18, on a real Consul server kept on disk: SIGKILLed and
/// restarted mid-run, polled from the moment it starts. Whatever it answers
/// while it replays its log, `attributes` never prints an older generation
/// as fresh: it is the latest, or the cache marked stale, or an error.
#[test]
fn a_real_server_restarted_mid_run_never_serves_an_old_state_as_fresh() {
    if crate::support::consul_agent::skip("consul::a_real_server_restarted_mid_run") {
        return;
    }
    let mut agent = ConsulAgent::start_persistent();
    let h = Harness::on(Backend::Consul, format!("consul://{}", agent.address()));
    h.import(&fixture("view.yml"));
    // A long log to replay on restart (Consul answered revision 7 where
    // the cache held ~3300), and then the generation the node last saw.
    for n in 0..3000 {
        let (status, body) = request(
            &agent.address(),
            "PUT",
            &format!("/v1/kv/filler/{n}"),
            Some(b"x"),
            None,
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    h.ok(&["set", "--cluster", "web", "app.workers=99"]);
    let latest = h.attributes("web", "web-02");
    agent.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut answers, mut stale, mut reread) = (0, 0, 0);
    loop {
        assert!(
            Instant::now() < deadline,
            "no fresh answer within 60s of the restart ({answers} answers, {stale} stale)"
        );
        let out = h.run(&ATTRIBUTES_WEB_02);
        if !out.status.success() {
            continue;
        }
        answers += 1;
        reread += usize::from(stderr(&out).contains("reading again consistently"));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        if doc["convergent"]["source"]["stale"] == true {
            stale += 1;
            continue;
        }
        assert_eq!(
            doc["convergent"]["generation"],
            latest["convergent"]["generation"],
            "an older state served as fresh: {doc}\n{}",
            stderr(&out)
        );
        break;
    }
    eprintln!("after the restart: {answers} answers, {stale} stale, {reread} read again");
}
