//! `attributes`: the node-facing command.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{assert_refused, stdout, store_suite, Backend, Harness};

store_suite! {
    prints_the_documented_shape,
    generation_is_the_hash_of_canonical_desired,
    released_nodes_get_the_rollout_patch,
    node_override_beats_everything,
    every_fixture_node_resolves,
    output_file_is_written_instead_of_stdout,
    unwritable_output_is_exit_73_and_prints_nothing,
    unknown_cluster_is_refused_naming_the_key,
    bad_names_are_refused,
    state_outside_the_schema_is_refused,
    missing_cluster_or_node_is_a_usage_error,
}

fn prints_the_documented_shape(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.ok(&["attributes", "--cluster", "web", "--node", "web-01"]);
    let text = stdout(&out);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let top: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(top, ["convergent"], "everything sits under one key");
    let c = &doc["convergent"];
    // Field order is part of the printed contract.
    let order: Vec<&str> = [
        "\"cluster\"",
        "\"node\"",
        "\"state\"",
        "\"desired\"",
        "\"generation\"",
        "\"rollout\"",
        "\"source\"",
    ]
    .into_iter()
    .collect();
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "fields out of order: {text}"
    );
    assert_eq!(c["cluster"], "web");
    assert_eq!(c["node"], "web-01");
    assert_eq!(c["state"], "converged");
    assert_eq!(c["state"], c["desired"]["state"]);
    assert_eq!(
        c["desired"],
        json!({
            "app": {"port": 8080, "workers": 8},
            "chef": {"interval": "30m"},
            "log_level": "info",
            "ntp_servers": ["ntp1.example.com", "ntp2.example.com"],
            "state": "converged",
            "version": "2.4.0"
        })
    );
    assert_eq!(
        c["rollout"],
        json!({"id": "web-2.4.1", "released": false, "status": "running"})
    );
    let source = c["source"].as_object().unwrap();
    assert_eq!(source["stale"], false);
    assert_eq!(source["cache_age_s"], Value::Null);
    assert!(source["fetched_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(source["store"], backend.store_name());
    match backend {
        Backend::File => assert_eq!(source["revision"], Value::Null),
        _ => assert!(
            source["revision"].as_u64().is_some_and(|r| r > 0),
            "{source:?}"
        ),
    }

    // A cluster no rollout touches has `rollout: null`.
    assert_eq!(
        h.attributes("db", "db-01")["convergent"]["rollout"],
        Value::Null
    );
}

fn generation_is_the_hash_of_canonical_desired(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let canonical = r#"{"app":{"port":8080,"workers":8},"chef":{"interval":"30m"},"log_level":"info","ntp_servers":["ntp1.example.com","ntp2.example.com"],"state":"converged","version":"2.4.0"}"#;
    let digest = Sha256::digest(canonical.as_bytes());
    let expected: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        h.attributes("web", "web-01")["convergent"]["generation"],
        expected.as_str()
    );
    // Same desired state, same generation, on another node.
    assert_eq!(
        h.attributes("web", "web-05")["convergent"]["generation"],
        expected.as_str()
    );
}

fn released_nodes_get_the_rollout_patch(backend: Backend) {
    let h = Harness::with_fixture(backend);
    // Ranks (SHA-256 of "web-2.4.1/NODE") put web-02 under the threshold
    // 0.4693…, web-01 above it.
    let released = h.attributes("web", "web-02");
    assert_eq!(released["convergent"]["desired"]["version"], "2.4.1");
    assert_eq!(released["convergent"]["rollout"]["released"], true);
    let held = h.attributes("web", "web-01");
    assert_eq!(held["convergent"]["desired"]["version"], "2.4.0");
    assert_ne!(
        released["convergent"]["generation"],
        held["convergent"]["generation"]
    );
}

fn node_override_beats_everything(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let web07 = h.attributes("web", "web-07");
    assert_eq!(
        web07["convergent"]["state"], "off",
        "held off by its override"
    );
    assert_eq!(
        web07["convergent"]["desired"]["version"], "2.4.1",
        "but released in the rollout"
    );
    assert_eq!(
        h.attributes("web", "web-03")["convergent"]["desired"]["app"],
        json!({"port": 8080, "workers": 16})
    );
    assert_eq!(
        h.attributes("cache", "cache-02")["convergent"]["desired"]["log_level"],
        "debug"
    );
}

fn every_fixture_node_resolves(backend: Backend) {
    let h = Harness::with_fixture(backend);
    for (cluster, prefix) in [("web", "web"), ("db", "db"), ("cache", "cache")] {
        for i in 1..=10 {
            let node = format!("{prefix}-{i:02}");
            let doc = h.attributes(cluster, &node);
            assert_eq!(doc["convergent"]["node"], node.as_str());
            assert!(doc["convergent"]["state"].is_string());
        }
    }
}

fn output_file_is_written_instead_of_stdout(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let target = h.path("attrs.json");
    let out = h.ok(&[
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-01",
        "--output",
        target.to_str().unwrap(),
    ]);
    assert!(out.stdout.is_empty());
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert_eq!(written["convergent"]["node"], "web-01");
    let leftovers: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".convergent-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

fn unwritable_output_is_exit_73_and_prints_nothing(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let target = h.path("no-such-dir/attrs.json");
    let out = h.run(&[
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-01",
        "--output",
        target.to_str().unwrap(),
    ]);
    assert_refused(&out, 73, &["no-such-dir/attrs.json"]);
    assert!(!target.exists());
}

fn unknown_cluster_is_refused_naming_the_key(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.run(&["attributes", "--cluster", "webb", "--node", "web-01"]);
    assert_refused(
        &out,
        65,
        &[
            "unknown cluster \"webb\"",
            "convergent/clusters/webb/desired",
        ],
    );
}

fn bad_names_are_refused(backend: Backend) {
    let h = Harness::with_fixture(backend);
    for (cluster, node, needle) in [
        ("web", "web/01", "node name"),
        ("web", "..", "node name"),
        ("web", "web 01", "whitespace"),
        ("web", "web\u{1}01", "control character"),
        ("a/b", "web-01", "cluster name"),
        ("..", "web-01", "cluster name"),
    ] {
        let out = h.run(&["attributes", "--cluster", cluster, "--node", node]);
        assert_refused(&out, 65, &[needle]);
    }
}

fn state_outside_the_schema_is_refused(backend: Backend) {
    let h = Harness::with_fixture(backend);
    // Written past `set`'s own checks, the way a hand edit would.
    h.put_document(
        "convergent/clusters/web/nodes/web-07",
        json!({"state": "of"}),
    );
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-07"]);
    assert_refused(
        &out,
        65,
        &[
            "convergent/clusters/web/nodes/web-07",
            "state \"of\" is not allowed",
        ],
    );
    // Other nodes are not affected.
    assert_eq!(
        h.attributes("web", "web-01")["convergent"]["state"],
        "converged"
    );
}

fn missing_cluster_or_node_is_a_usage_error(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.run(&["attributes", "--cluster", "web"]);
    assert_refused(&out, 64, &["--node", "CONVERGENT_NODE"]);
    let out = h
        .cmd()
        .args(["attributes"])
        .env("CONVERGENT_CLUSTER", "web")
        .env("CONVERGENT_NODE", "web-01")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster and node from the environment"
    );
}

#[test]
fn a_broken_store_file_names_the_file_and_line() {
    let h = Harness::new(Backend::File);
    std::fs::copy(
        crate::support::fixture("broken/invalid-yaml.yml"),
        h.store_file(),
    )
    .unwrap();
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-01"]);
    assert_refused(&out, 65, &["view.yml", "line 5"]);
}

#[test]
fn a_json_store_file_works_too() {
    let h = Harness::with_fixture(Backend::File);
    let json_store = h.path("view.json");
    h.ok(&["export", "--output", json_store.to_str().unwrap()]);
    let text = std::fs::read_to_string(&json_store).unwrap();
    assert!(text.trim_start().starts_with('{'), "a .json export is JSON");
    let out = h
        .cmd()
        .args(["attributes", "--cluster", "web", "--node", "web-02"])
        .env("CONVERGENT_STORE", format!("file:{}", json_store.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["convergent"]["desired"]["version"], "2.4.1");
}
