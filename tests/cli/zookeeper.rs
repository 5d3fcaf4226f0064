//! ZooKeeper-specific behaviour against real servers: what `attributes`
//! costs in requests, a stopped server, several servers, digest auth,
//! chroots, size limits, deletes of znodes with children, locks held by
//! killed processes, and the change feed across reconnects.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use convergent::store::{self, ChangeFeed, HeldLock};

use crate::support::etcd::free_port;
use crate::support::zookeeper;
use crate::support::{
    assert_refused, eventually, fixture, open_store, stderr, stdout, Backend, Harness, Spawned,
};

/// `attributes` for a node, and how many requests the harness's server
/// received meanwhile (the `srvr` asking is one). A long `--timeout` keeps
/// the client from pinging an idle connection (it does after 3/8 of it).
fn counted_attributes(h: &mut Harness, cluster: &str, node: &str) -> (u64, Value) {
    let before = h.zookeeper().counter("Received");
    let out = h.ok(&[
        "--timeout",
        "60s",
        "attributes",
        "--cluster",
        cluster,
        "--node",
        node,
    ]);
    let requests = h.zookeeper().counter("Received") - before - 1;
    (requests, serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn attributes_is_one_multi_read_that_does_not_grow_with_the_fleet() {
    let mut h = Harness::with_fixture(Backend::ZooKeeper);
    h.ok(&["set", "--cluster", "web", "version=2.4.2"]);
    // The zxid of a change, as the server reports it for the write.
    let store = open_store(&h.store_url);
    let key = "convergent/clusters/web/nodes/web-03";
    let version = store.get(key).unwrap().unwrap().version;
    let Ok(store::TxnOutcome::Committed {
        revision: Some(zxid),
    }) = store.compare_and_put(key, Some(version), br#"{"log_level": "debug"}"#.to_vec())
    else {
        panic!("the override was not written")
    };
    // (Its session would ping while the requests are counted.)
    drop(store);
    let (requests, doc) = counted_attributes(&mut h, "web", "web-03");
    // The session's connect, the ping the client sends right after it,
    // one multi-read, and the session's close.
    assert_eq!(
        requests, 4,
        "attributes must read everything in one request"
    );
    assert_eq!(doc["convergent"]["desired"]["version"], "2.4.2");
    assert_eq!(doc["convergent"]["desired"]["log_level"], "debug");
    assert_eq!(
        doc["convergent"]["source"]["revision"],
        json!(zxid),
        "the revision is the zxid of the last change read"
    );

    // A bigger fleet: reports and overrides of 200 other nodes.
    for i in 0..200 {
        h.put_raw(
            &format!("convergent/clusters/web/nodes/big-{i:03}"),
            b"{\"app\": {\"workers\": 2}}",
        );
        h.put_raw(
            &format!("convergent/observed/web/big-{i:03}"),
            b"{\"status\": \"success\"}",
        );
    }
    let (requests, doc) = counted_attributes(&mut h, "web", "web-01");
    assert_eq!(requests, 4, "the read must not grow with the fleet");
    assert_eq!(doc["convergent"]["desired"]["version"], "2.4.2");

    // A document kept as sub-keys costs one more read per level.
    h.put_raw("convergent/clusters/web/desired/extra/flag", b"true");
    let (requests, doc) = counted_attributes(&mut h, "web", "web-01");
    assert_eq!(requests, 6);
    assert_eq!(doc["convergent"]["desired"]["extra"]["flag"], true);
    // Deleting a root moves the revision on, never back.
    let before = doc["convergent"]["source"]["revision"].as_u64().unwrap();
    h.ok(&["unset", "--cluster", "web", "--node", "big-000", "app"]);
    let after = h.attributes("web", "big-000")["convergent"]["source"]["revision"]
        .as_u64()
        .unwrap();
    assert!(after > before, "{after} > {before}");
}

#[test]
fn a_stopped_server_serves_the_cache_marked_stale_and_fails_fast_without_it() {
    let mut h = Harness::with_fixture(Backend::ZooKeeper);
    let fresh = h.attributes("web", "web-02");
    h.zookeeper().kill();
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-02"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stale: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stale["convergent"]["source"]["stale"], true);
    assert_eq!(
        stale["convergent"]["desired"],
        fresh["convergent"]["desired"]
    );
    assert!(
        stderr(&out).contains("no server answered"),
        "{}",
        stderr(&out)
    );
    // A refused connection fails at once, not after --timeout.
    let started = Instant::now();
    let out = h.run(&[
        "--timeout",
        "30s",
        "--on-unreachable",
        "fail",
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-02",
    ]);
    assert_refused(&out, 69, &["zk://", "unavailable"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let out = h.run(&["set", "--cluster", "web", "state=off"]);
    assert_refused(&out, 69, &["unavailable"]);
    // Back up: fresh again.
    h.zookeeper().restart();
    let doc = h.attributes("web", "web-02");
    assert_eq!(doc["convergent"]["source"]["stale"], false);
}

#[test]
fn a_dead_server_in_the_list_is_skipped() {
    let h = Harness::with_fixture(Backend::ZooKeeper);
    let live = h.store_url.trim_start_matches("zk://");
    let url = format!("zk://127.0.0.1:{},{live}", free_port());
    // The client tries the servers in a random order: either way works.
    let through = Harness::on(Backend::ZooKeeper, url);
    for _ in 0..5 {
        let doc = through.attributes("web", "web-01");
        assert_eq!(doc["convergent"]["source"]["stale"], false);
    }
}

#[test]
fn digest_auth_protects_what_it_writes_and_secrets_stay_out_of_output() {
    let h = Harness::new(Backend::ZooKeeper);
    let with = |auth: &str| {
        let mut cmd = h.cmd();
        cmd.env("CONVERGENT_ZK_AUTH", auth);
        cmd
    };
    let out = with("deployer:Sekr1t-pw")
        .args(["import", fixture("view.yml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let attributes = ["attributes", "--cluster", "web", "--node", "web-01"];
    // The znodes carry the creator's ACL: others are refused, exit 77,
    // naming the key and what to do.
    let out = h.run(&attributes);
    assert_refused(
        &out,
        77,
        &["permission denied", "convergent/", "CONVERGENT_ZK_AUTH"],
    );
    let out = with("deployer:Wrong-pw").args(attributes).output().unwrap();
    assert_refused(&out, 77, &["deployer"]);
    assert!(!stderr(&out).contains("Wrong-pw"), "{}", stderr(&out));
    // The right credentials, from the environment or a file.
    let out = with("deployer:Sekr1t-pw")
        .args(attributes)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let file = h.path("zk.auth");
    std::fs::write(&file, "deployer:Sekr1t-pw\n").unwrap();
    let out = h
        .cmd()
        .env(
            "CONVERGENT_STORE",
            format!("{}?auth_file={}", h.store_url, file.display()),
        )
        .args(["set", "--cluster", "web", "state=off"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Malformed credentials are a configuration error that does not echo them.
    let out = with("Sekr1t-pw-without-user")
        .args(attributes)
        .output()
        .unwrap();
    assert_refused(&out, 78, &["CONVERGENT_ZK_AUTH", "user:password"]);
    assert!(!stderr(&out).contains("Sekr1t"), "{}", stderr(&out));
    // Nothing secret reaches the cache.
    for entry in walk(&h.cache_dir()) {
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(!text.contains("Sekr1t-pw"), "{}", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_chroot_keeps_the_view_under_its_path() {
    let mut h = Harness::new(Backend::ZooKeeper);
    let address = h.zookeeper().address();
    let rooted = Harness::on(
        Backend::ZooKeeper,
        format!("zk://{address}/apps/convergent"),
    );
    // The first write creates the chroot.
    rooted.import(&fixture("view.yml"));
    let doc = rooted.attributes("web", "web-07");
    assert_eq!(doc["convergent"]["state"], "off");
    // Outside the chroot the same znodes sit under its path.
    assert_refused(
        &h.run(&["attributes", "--cluster", "web", "--node", "web-07"]),
        65,
        &["unknown cluster"],
    );
    let plain = h.ok(&[
        "--prefix",
        "apps/convergent/convergent",
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-07",
    ]);
    let plain: Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(plain["convergent"]["desired"], doc["convergent"]["desired"]);
    // Another client sees what `convergent` wrote, where it should be.
    let out = zookeeper::cli(
        &address,
        &[
            "get",
            "/apps/convergent/convergent/clusters/web/nodes/web-07",
        ],
    );
    assert!(
        stdout(&out).contains(r#"{"state":"off"}"#),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // ... and `convergent` reads what another client wrote.
    let out = zookeeper::cli(
        &address,
        &[
            "create",
            "/apps/convergent/convergent/clusters/web/nodes/web-09",
            r#"{"app":{"workers":3}}"#,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        rooted.attributes("web", "web-09")["convergent"]["desired"]["app"]["workers"],
        3
    );
}

#[test]
fn writes_need_no_read_access_to_the_directories_above() {
    let mut h = Harness::with_fixture(Backend::ZooKeeper);
    // The prefix's znode lets anyone create and delete below it, not read it.
    let out = zookeeper::cli(
        &h.zookeeper().address(),
        &["setAcl", "/convergent", "world:anyone:cd"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    h.ok(&["set", "--cluster", "web", "state=off"]);
    h.ok(&["unset", "--cluster", "web", "--node", "web-07", "state"]);
    let doc = h.attributes("web", "web-07");
    assert_eq!(doc["convergent"]["state"], "off");
    assert_eq!(doc["convergent"]["desired"]["app"]["workers"], 8);
    // Reads need it neither: they read the view's keys, and only the stat
    // of what is above them (for the revision).
    let view = h.export();
    assert!(view["convergent"]["clusters"]["web"]["nodes"]
        .get("web-07")
        .is_none());
}

#[test]
fn values_too_big_for_zookeeper_are_refused_before_sending() {
    let mut h = Harness::with_fixture(Backend::ZooKeeper);
    let before = h.export();
    let znodes = h.zookeeper().counter("Node count");
    let mut view = before.clone();
    view["convergent"]["clusters"]["web"]["desired"]["blob"] = json!("x".repeat(2 << 20));
    let file = h.path("big.yml");
    std::fs::write(&file, serde_yaml::to_string(&view).unwrap()).unwrap();
    let out = h.run(&["import", file.to_str().unwrap()]);
    assert_refused(
        &out,
        65,
        &["convergent/clusters/web/desired", "nothing was imported"],
    );
    assert_eq!(h.export(), before);
    assert_eq!(h.zookeeper().counter("Node count"), znodes);
    // Any write, not only an import, and before anything is sent (the
    // server would drop the connection): not even a session is opened,
    // which would take a zxid.
    let zxid = h.zookeeper().counter("Zxid");
    let store = open_store(&h.store_url);
    let err = store
        .compare_and_put("convergent/clusters/web/desired", None, vec![b'x'; 2 << 20])
        .unwrap_err();
    assert_eq!(err.exit_code(), 65);
    assert!(
        err.to_string().contains("convergent/clusters/web/desired")
            && err.to_string().contains("jute.maxbuffer"),
        "{err}"
    );
    assert_eq!(h.zookeeper().counter("Zxid"), zxid, "nothing was sent");
}

#[test]
fn deletes_keep_sub_keys_and_leave_no_empty_znodes() {
    let mut h = Harness::with_fixture(Backend::ZooKeeper);
    // (The first change creates the history key; count after it.)
    h.ok(&["set", "--cluster", "web", "app.workers=9"]);
    let nodes_before = h.zookeeper().counter("Node count");
    // An override kept as sub-keys, two levels deep, as another tool writes it.
    h.put_raw("convergent/clusters/web/nodes/web-06/state", b"off");
    h.put_raw("convergent/clusters/web/nodes/web-06/app/workers", b"2");
    assert_eq!(
        h.attributes("web", "web-06")["convergent"]["desired"]["app"]["workers"],
        2
    );
    // Removing it removes the directories it leaves empty.
    h.ok(&[
        "unset",
        "--cluster",
        "web",
        "--node",
        "web-06",
        "state",
        "app",
    ]);
    assert_eq!(h.zookeeper().counter("Node count"), nodes_before);
    assert_eq!(
        h.attributes("web", "web-06")["convergent"]["state"],
        "converged"
    );

    // A document with a value and sub-keys: rewriting it folds them in.
    h.put_raw("convergent/clusters/web/desired/extra", b"{\"a\": 1}");
    h.ok(&["set", "--cluster", "web", "extra.b=2"]);
    assert_eq!(h.zookeeper().counter("Node count"), nodes_before);
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["extra"],
        json!({"a": 1, "b": 2})
    );

    // Deleting a key that has sub-keys empties it and keeps them.
    let store = open_store(&h.store_url);
    store
        .commit(&convergent::store::Txn {
            compares: vec![],
            ops: vec![convergent::store::Op::Put {
                key: "convergent/defaults/extra".into(),
                value: b"1".to_vec(),
            }],
        })
        .unwrap();
    let defaults = store.get("convergent/defaults").unwrap().unwrap();
    assert!(matches!(
        store
            .compare_and_delete("convergent/defaults", defaults.version)
            .unwrap(),
        store::TxnOutcome::Committed { .. }
    ));
    let (entries, _) = store.read_tree("convergent/defaults").unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["convergent/defaults/extra"]);
}

#[test]
fn compare_and_set_follows_znode_data_versions() {
    use store::TxnOutcome::{Committed, Conflict};
    let h = Harness::new(Backend::ZooKeeper);
    let store = open_store(&h.store_url);
    let committed = |outcome: store::TxnOutcome| matches!(outcome, Committed { .. });
    // A new znode is at data version 0, a valid version to compare with.
    assert!(committed(
        store.compare_and_put("p/k", None, b"1".to_vec()).unwrap()
    ));
    assert_eq!(store.get("p/k").unwrap().unwrap().version, 0);
    assert_eq!(
        store.compare_and_put("p/k", None, b"2".to_vec()).unwrap(),
        Conflict
    );
    assert!(committed(
        store
            .compare_and_put("p/k", Some(0), b"2".to_vec())
            .unwrap()
    ));
    assert_eq!(
        store
            .compare_and_put("p/k", Some(0), b"3".to_vec())
            .unwrap(),
        Conflict
    );
    assert_eq!(store.get("p/k").unwrap().unwrap().value, b"2");
    // A key with sub-keys but no value of its own is absent.
    assert!(committed(
        store
            .compare_and_put("p/d/sub", None, b"1".to_vec())
            .unwrap()
    ));
    assert_eq!(store.get("p/d").unwrap(), None);
    assert!(committed(
        store.compare_and_put("p/d", None, b"{}".to_vec()).unwrap()
    ));
    let d = store.get("p/d").unwrap().unwrap();
    assert!(committed(
        store.compare_and_delete("p/d", d.version).unwrap()
    ));
    let (entries, _) = store.read_tree("p/d").unwrap();
    assert_eq!(entries.len(), 1, "the sub-key stays: {entries:?}");
    // Deleted, a key is absent again.
    assert!(committed(store.compare_and_delete("p/k", 1).unwrap()));
    assert_eq!(store.get("p/k").unwrap(), None);
    assert_eq!(
        store
            .compare_and_put("p/k", Some(1), b"4".to_vec())
            .unwrap(),
        Conflict
    );
}

#[test]
fn concurrent_sets_on_a_document_kept_as_sub_keys_lose_no_update() {
    let h = Harness::with_fixture(Backend::ZooKeeper);
    h.put_raw("convergent/clusters/db/desired/tuning/cache_mb", b"512");
    const EACH: usize = 8;
    let writers: Vec<_> = ["a", "b"]
        .iter()
        .map(|who| {
            let script: String = (0..EACH)
                .map(|i| format!("\"$BIN\" set --cluster db {who}.k{i}={i} >/dev/null || exit 1\n"))
                .collect();
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("BIN", assert_cmd::cargo::cargo_bin("convergent"))
                .env("CONVERGENT_STORE", &h.store_url)
                .env("CONVERGENT_CACHE_DIR", h.cache_dir())
                .env("CONVERGENT_CONFIG", h.path("config.yml"))
                .env("CONVERGENT_ACTOR", format!("writer-{who}"))
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in writers {
        assert!(w.wait().unwrap().success(), "a writer failed");
    }
    let desired = &h.export()["convergent"]["clusters"]["db"]["desired"];
    assert_eq!(desired["tuning"]["cache_mb"], 512);
    for who in ["a", "b"] {
        for i in 0..EACH {
            assert_eq!(desired[who][format!("k{i}")], json!(i), "lost {who} {i}");
        }
    }
}

#[test]
fn a_second_lock_is_refused_naming_the_holder_and_a_held_lock_outlives_its_ttl() {
    let h = Harness::new(Backend::ZooKeeper);
    let store = open_store(&h.store_url);
    let name = "convergent/locks/rollout-web";
    let held = store
        .lock(
            name,
            Duration::from_secs(2),
            "orchestrator on host-a pid 42",
        )
        .unwrap();
    let err = store.lock(name, Duration::from_secs(2), "b").err().unwrap();
    assert_eq!(err.exit_code(), 75);
    assert!(
        err.to_string().contains("orchestrator on host-a pid 42"),
        "{err}"
    );
    // The session is kept alive past its timeout while the lock is held.
    std::thread::sleep(Duration::from_secs(3));
    held.check().unwrap();
    assert!(store.lock(name, Duration::from_secs(2), "b").is_err());
    drop(held);
    let again = store.lock(name, Duration::from_secs(2), "b").unwrap();
    again.check().unwrap();
}

#[test]
fn takers_racing_for_a_free_lock_get_one_holder() {
    let h = Harness::new(Backend::ZooKeeper);
    for round in 0..3 {
        let name = format!("convergent/locks/race-{round}");
        let start = std::sync::Arc::new(std::sync::Barrier::new(4));
        let takers: Vec<_> = (0..4)
            .map(|i| {
                let (url, name, start) = (h.store_url.clone(), name.clone(), start.clone());
                std::thread::spawn(move || {
                    let store = open_store(&url);
                    start.wait();
                    let taken = store.lock(&name, Duration::from_secs(5), &format!("taker {i}"));
                    // Hold on until every taker has tried.
                    std::thread::sleep(Duration::from_millis(1500));
                    taken.map(|_| ()).map_err(|e| e.exit_code())
                })
            })
            .collect();
        let results: Vec<_> = takers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(
            results.iter().all(|r| matches!(r, Ok(()) | Err(75))),
            "{results:?}"
        );
    }
}

/// Not a test of its own: the lock holder that
/// [`a_lock_of_a_killed_process_is_released_when_its_session_expires`] runs
/// as a separate process (this test binary, re-run for this one test) and
/// kills. Run directly, without its variables, it does nothing.
#[test]
#[ignore]
fn lock_holder_process() {
    let (Ok(url), Ok(ready)) = (
        std::env::var("CONVERGENT_TEST_ZK_LOCK_URL"),
        std::env::var("CONVERGENT_TEST_ZK_LOCK_READY"),
    ) else {
        return;
    };
    let store = open_store(&url);
    let _held = store
        .lock(
            "convergent/locks/rollout-db",
            Duration::from_secs(2),
            &format!("holder pid {}", std::process::id()),
        )
        .unwrap();
    std::fs::write(ready, "held").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_lock_of_a_killed_process_is_released_when_its_session_expires() {
    let h = Harness::new(Backend::ZooKeeper);
    let ready = h.path("holder-ready");
    let holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "zookeeper::lock_holder_process", "--ignored"])
        .env("CONVERGENT_TEST_ZK_LOCK_URL", &h.store_url)
        .env("CONVERGENT_TEST_ZK_LOCK_READY", &ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut holder = Spawned::new(holder);
    assert!(
        eventually(Duration::from_secs(30), || ready.exists()),
        "the holder did not take the lock"
    );
    let store = open_store(&h.store_url);
    let take = || {
        store.lock(
            "convergent/locks/rollout-db",
            Duration::from_secs(2),
            "second",
        )
    };
    let err = take().err().unwrap();
    assert!(
        err.to_string()
            .contains(&format!("holder pid {}", holder.id())),
        "{err}"
    );
    // SIGKILL: no clean close, only the session's expiry frees the lock.
    holder.kill();
    assert!(take().is_err(), "held until the session expires");
    let mut second: Option<Box<dyn HeldLock>> = None;
    assert!(
        eventually(Duration::from_secs(15), || {
            second = take().ok();
            second.is_some()
        }),
        "the dead holder's lock was never released"
    );
    second.unwrap().check().unwrap();
}

#[test]
fn a_lock_is_lost_once_its_session_cannot_be_kept() {
    let mut h = Harness::new(Backend::ZooKeeper);
    let store = open_store(&h.store_url);
    let held = store
        .lock("convergent/locks/rollout-web", Duration::from_secs(2), "a")
        .unwrap();
    held.check().unwrap();
    h.zookeeper().kill();
    assert!(
        eventually(Duration::from_secs(10), || held.check().is_err()),
        "check() must fail once the session may have expired"
    );
    assert_eq!(held.check().unwrap_err().exit_code(), 75);
}

#[test]
fn the_change_feed_wakes_on_watched_changes_only_and_survives_the_server() {
    let mut h = Harness::with_fixture(Backend::ZooKeeper);
    // A short session, so that one cut off expires within the test.
    let url = format!("{}?session_timeout=2s", h.store_url);
    let (store, mut feed) = crate::store_api::the_feed_sees_watched_changes_only_at(&h, &url);

    // The server restarts: the session reconnects, and its watches with it,
    // after a random splay of up to 10 s; then the feed says to look afresh.
    h.zookeeper().kill();
    h.zookeeper().restart();
    assert!(eventually(Duration::from_secs(15), || store
        .get("convergent/defaults")
        .is_ok()));
    assert!(
        eventually(Duration::from_secs(30), || feed
            .wait(Duration::from_millis(200))
            .unwrap_or(false)),
        "no fresh look after the reconnect"
    );
    settle(&mut feed);
    h.ok(&["set", "--cluster", "web", "version=2.4.9"]);
    assert!(
        feed.wait(Duration::from_secs(5)).unwrap(),
        "the watch did not survive a reconnect"
    );

    // The server comes back empty: it refuses the session (the client has
    // seen newer zxids than it has) until the session expires; the feed
    // then sets its watches again on a new session and says to look afresh.
    h.zookeeper().restart_empty();
    assert!(
        eventually(Duration::from_secs(30), || feed
            .wait(Duration::from_millis(200))
            .unwrap_or(false)),
        "no fresh look after the session expired"
    );
    settle(&mut feed);
    h.import(&fixture("view.yml"));
    assert!(
        feed.wait(Duration::from_secs(5)).unwrap(),
        "the watches were not set again"
    );
    // The store's own reads moved to a new session too.
    assert!(store.get("convergent/defaults").unwrap().is_some());
}

/// Waits until the feed reports nothing for a while.
fn settle(feed: &mut Box<dyn ChangeFeed>) {
    for _ in 0..50 {
        if !feed.wait(Duration::from_millis(300)).unwrap_or(true) {
            return;
        }
    }
    panic!("the change feed never settles");
}
