//! etcd-specific behaviour against real servers: one request per
//! `attributes`, endpoint failover, faults (a killed server, a cluster losing
//! members), auth, TLS, locks, the change feed and chunked imports.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use convergent::store::{self, StoreOptions, StoreUrl};

use crate::support::etcd::{self, EtcdCluster, EtcdServer};
use crate::support::proxy::CountingProxy;
use crate::support::{
    assert_refused, eventually, files_under, fixture, open_store as open, stderr, Backend, Harness,
    STRICT_ATTRIBUTES_WEB_01,
};

#[test]
fn attributes_is_one_request_and_reports_the_revision() {
    let h = Harness::with_fixture(Backend::Etcd);
    let addr = h.store_url.trim_start_matches("etcd://").to_string();
    let proxy = CountingProxy::start(&addr);
    let through = Harness::on(Backend::Etcd, format!("etcd://{}", proxy.address()));
    let doc = through.attributes("web", "web-02");
    assert_eq!(
        proxy.requests(),
        1,
        "attributes must read everything in one request"
    );
    let revision = etcd::post(&addr, "kv/range", &json!({"key": "eA=="}), None)["header"]
        ["revision"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert_eq!(doc["convergent"]["source"]["revision"], json!(revision));
    assert_eq!(doc["convergent"]["desired"]["version"], "2.4.1");
}

#[test]
fn a_dead_endpoint_is_skipped() {
    let h = Harness::with_fixture(Backend::Etcd);
    let dead = etcd::free_port();
    let url = format!(
        "etcd://127.0.0.1:{dead},{}",
        h.store_url.trim_start_matches("etcd://")
    );
    let doc = Harness::on(Backend::Etcd, url).attributes("web", "web-01");
    assert_eq!(doc["convergent"]["source"]["stale"], false);
}

#[test]
fn a_killed_server_serves_the_cache_marked_stale() {
    let mut h = Harness::with_fixture(Backend::Etcd);
    let fresh = h.attributes("web", "web-02");
    h.etcd().kill();
    let (stale, warning) = h.stale_attributes("web", "web-02", "1s");
    assert_eq!(
        stale["convergent"]["desired"],
        fresh["convergent"]["desired"]
    );
    assert!(warning.contains("connection refused"), "{warning}");
    let out = h.run(&[
        "--timeout",
        "1s",
        "--on-unreachable",
        "fail",
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-02",
    ]);
    assert_refused(&out, 69, &["etcd://", "unavailable"]);
    let out = h.run(&["--timeout", "1s", "set", "--cluster", "web", "state=off"]);
    assert_refused(&out, 69, &["unavailable"]);
}

#[test]
fn a_cluster_survives_one_member_and_fails_cleanly_without_quorum() {
    let mut cluster = EtcdCluster::start(3);
    let h = Harness::on(Backend::Etcd, cluster.store_url());
    h.import(&fixture("view.yml"));
    h.attributes("web", "web-01");

    // One member down: reads and writes carry on.
    cluster.members[0].kill();
    h.ok(&["set", "--cluster", "web", "version=2.4.2"]);
    assert_eq!(
        h.attributes("web", "web-01")["convergent"]["desired"]["version"],
        "2.4.2"
    );

    // Two down: no quorum. Reads fall back to the cache, writes fail.
    cluster.members[1].kill();
    let (stale, _) = h.stale_attributes("web", "web-01", "2s");
    assert_eq!(stale["convergent"]["desired"]["version"], "2.4.2");
    let started = Instant::now();
    let out = h.run(&[
        "--timeout",
        "2s",
        "set",
        "--cluster",
        "web",
        "version=2.4.3",
    ]);
    assert_refused(&out, 69, &["unavailable"]);
    // Bounded by --timeout, not by retries multiplying it.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "set took {:?}",
        started.elapsed()
    );

    // Quorum back: the failed write was either not applied or applied whole,
    // and nothing reported as done was lost.
    cluster.members[0].restart();
    cluster.members[1].restart();
    cluster.wait_healthy();
    let version = h.attributes("web", "web-01")["convergent"]["desired"]["version"].clone();
    assert!(version == "2.4.2" || version == "2.4.3", "{version}");
    h.ok(&["set", "--cluster", "web", "version=2.4.4"]);
    assert_eq!(
        h.attributes("web", "web-01")["convergent"]["desired"]["version"],
        "2.4.4"
    );
}

#[test]
fn auth_with_a_user_and_a_role() {
    let h = Harness::new(Backend::Etcd);
    let addr = h.store_url.trim_start_matches("etcd://").to_string();
    EtcdServer::enable_auth_at(&addr, "r00t-pw", "deployer", "Sekr1t-pw", "convergent/");
    let with = |user: &str| {
        let mut cmd = h.cmd();
        cmd.env("ETCDCTL_USER", user);
        cmd
    };
    // Without credentials: refused, exit 77, saying how to fix it.
    let out = h.run(&["import", fixture("view.yml").to_str().unwrap()]);
    assert_refused(&out, 77, &["ETCDCTL_USER"]);
    // With them: everything works.
    let out = with("deployer:Sekr1t-pw")
        .args(["import", fixture("view.yml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = with("deployer")
        .env("ETCDCTL_PASSWORD", "Sekr1t-pw")
        .args(["attributes", "--cluster", "web", "--node", "web-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // From a password file named in the URL.
    let pw = h.path("etcd.pw");
    std::fs::write(&pw, "Sekr1t-pw\n").unwrap();
    let out = with("deployer")
        .env(
            "CONVERGENT_STORE",
            format!("{}?password_file={}", h.store_url, pw.display()),
        )
        .args(["set", "--cluster", "web", "state=off"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A wrong password: exit 77, and no password in any message.
    let out = with("deployer:Wrong-pw")
        .args(["attributes", "--cluster", "web", "--node", "web-01"])
        .output()
        .unwrap();
    assert_refused(&out, 77, &["deployer"]);
    assert!(!stderr(&out).contains("Wrong-pw"));
    // The role covers the prefix only.
    let out = with("deployer:Sekr1t-pw")
        .args([
            "--prefix",
            "other",
            "attributes",
            "--cluster",
            "web",
            "--node",
            "web-01",
        ])
        .output()
        .unwrap();
    assert_refused(&out, 77, &["permission denied"]);
    // No secret reaches the cache.
    for entry in files_under(&h.cache_dir()) {
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(
            !text.contains("Sekr1t-pw") && !text.contains("deployer"),
            "{}",
            entry.display()
        );
    }
}

#[test]
fn an_expired_token_is_renewed() {
    let server = EtcdServer::start_with(&["--auth-token-ttl", "1"]);
    EtcdServer::enable_auth_at(
        &server.client_addr(),
        "r00t-pw",
        "deployer",
        "Sekr1t-pw",
        "convergent/",
    );
    let env = |name: &str| (name == "ETCDCTL_USER").then(|| "deployer:Sekr1t-pw".to_string());
    let url: StoreUrl = format!("etcd://{}", server.client_addr()).parse().unwrap();
    let store = store::open(
        &url,
        &StoreOptions {
            timeout: Duration::from_secs(5),
        },
        &env,
    )
    .unwrap();
    store
        .compare_and_put("convergent/k", None, b"1".to_vec())
        .unwrap();
    // Unused for longer than its TTL, the token is invalid now.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(store.get("convergent/k").unwrap().unwrap().value, b"1");
}

#[test]
fn tls_is_verified_by_default_and_client_certificates_work() {
    let server = EtcdServer::start_tls();
    let certs = server.certs();
    let h = Harness::on(
        Backend::Etcd,
        format!("etcd+https://{}", server.client_addr()),
    );
    // The test CA is unknown to the default trust store: refused.
    let out = h.run(&STRICT_ATTRIBUTES_WEB_01);
    assert_refused(&out, 69, &["etcd+https://"]);
    let with_tls = |cmd: &mut assert_cmd::Command| {
        cmd.env("ETCDCTL_CACERT", certs.path("ca.pem"))
            .env("ETCDCTL_CERT", certs.path("client.pem"))
            .env("ETCDCTL_KEY", certs.path("client.key"));
    };
    let mut import = h.cmd();
    with_tls(&mut import);
    let out = import
        .args(["import", fixture("view.yml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut read = h.cmd();
    with_tls(&mut read);
    let out = read
        .args(["attributes", "--cluster", "web", "--node", "web-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A CA file that is not one: configuration error naming the variable.
    let out = h
        .cmd()
        .env("ETCDCTL_CACERT", fixture("view.yml"))
        .args(["attributes", "--cluster", "web", "--node", "web-01"])
        .output()
        .unwrap();
    assert_refused(&out, 78, &["ETCDCTL_CACERT"]);
}

#[test]
fn a_broken_value_in_one_key_is_refused_naming_it() {
    let h = Harness::with_fixture(Backend::Etcd);
    h.put_raw(
        "convergent/clusters/web/nodes/web-05",
        b"{\"state\": \"off\"",
    );
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-05"]);
    assert_refused(
        &out,
        65,
        &["convergent/clusters/web/nodes/web-05", "not valid JSON"],
    );
    // Scalar keys fold into the document they sit under.
    h.put_raw("convergent/clusters/web/nodes/web-06/state", b"off");
    h.put_raw("convergent/clusters/web/nodes/web-06/app/workers", b"2");
    let doc = h.attributes("web", "web-06");
    assert_eq!(doc["convergent"]["state"], "off");
    assert_eq!(
        doc["convergent"]["desired"]["app"],
        json!({"port": 8080, "workers": 2})
    );
    let out = h.ok(&[
        "explain",
        "--cluster",
        "web",
        "--node",
        "web-06",
        "--format",
        "json",
    ]);
    let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Its check-in reads the whole fleet, where web-05's document is
    // broken: said, without hiding web-06's explanation.
    assert!(
        explained["check_in_unreadable"]
            .as_str()
            .is_some_and(|why| why.contains("convergent/clusters/web/nodes/web-05")),
        "{explained}"
    );
    let state = explained["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "state")
        .unwrap()
        .clone();
    assert_eq!(
        state["store_key"],
        "convergent/clusters/web/nodes/web-06/state"
    );
}

#[test]
fn a_second_lock_is_refused_and_a_dead_holders_lock_expires() {
    let h = Harness::new(Backend::Etcd);
    let store = open(&h.store_url);
    let held = store
        .lock(
            "convergent/locks/rollout-web",
            Duration::from_secs(3),
            "orchestrator on host-a pid 42",
        )
        .unwrap();
    let err = store
        .lock("convergent/locks/rollout-web", Duration::from_secs(3), "b")
        .err()
        .unwrap();
    assert_eq!(err.exit_code(), 75);
    assert!(
        err.to_string().contains("orchestrator on host-a pid 42"),
        "{err}"
    );
    // Kept alive past its TTL while held.
    std::thread::sleep(Duration::from_secs(4));
    held.check().unwrap();
    assert!(store
        .lock("convergent/locks/rollout-web", Duration::from_secs(3), "b")
        .is_err());
    drop(held);
    let again = store
        .lock("convergent/locks/rollout-web", Duration::from_secs(3), "b")
        .unwrap();
    drop(again);

    // A holder that died: its lease is never renewed, and the lock frees itself.
    let addr = h.store_url.trim_start_matches("etcd://");
    let lease = etcd::post(addr, "lease/grant", &json!({"TTL": "2"}), None)["ID"]
        .as_str()
        .unwrap()
        .to_string();
    etcd::post(
        addr,
        "kv/put",
        &json!({"key": base64("convergent/locks/rollout-db"), "value": base64("crashed"), "lease": lease}),
        None,
    );
    let err = store
        .lock("convergent/locks/rollout-db", Duration::from_secs(3), "c")
        .err()
        .unwrap();
    assert!(err.to_string().contains("crashed"), "{err}");
    assert!(eventually(Duration::from_secs(10), || store
        .lock("convergent/locks/rollout-db", Duration::from_secs(3), "c")
        .is_ok()));
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn the_change_feed_sees_watched_changes_only() {
    let h = Harness::with_fixture(Backend::Etcd);
    crate::store_api::the_feed_sees_watched_changes_only(&h);
}
