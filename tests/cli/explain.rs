//! `explain`: where every value came from, and why a node is or is not
//! released.

use serde_json::{json, Value};

use crate::support::{assert_refused, stdout, store_suite, Backend, Harness};

store_suite! {
    table_shows_layer_key_and_what_was_overridden,
    json_lists_every_leaf_with_its_origin,
    a_key_filter_narrows_the_answer,
    rollout_reasoning_names_rank_and_threshold,
    removed_keys_are_shown,
    recent_changes_say_who_and_why,
}

fn table_shows_layer_key_and_what_was_overridden(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.ok(&["explain", "--cluster", "web", "--node", "web-03"]);
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("app.workers"))
        .expect("a row for app.workers");
    for needle in [
        "16",
        "node override",
        "convergent/clusters/web/nodes/web-03",
        "cluster desired: 8",
    ] {
        assert!(row.contains(needle), "{needle:?} missing from {row:?}");
    }
    let row = text.lines().find(|l| l.starts_with("log_level")).unwrap();
    assert!(
        row.contains("defaults") && row.contains("convergent/defaults"),
        "{row}"
    );
}

fn json_lists_every_leaf_with_its_origin(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.ok(&[
        "explain",
        "--cluster",
        "web",
        "--node",
        "web-07",
        "--format",
        "json",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let values = doc["values"].as_array().unwrap();
    let keys: Vec<&str> = values.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "app.port",
            "app.workers",
            "chef.interval",
            "log_level",
            "ntp_servers",
            "state",
            "version"
        ]
    );
    let by_key = |k: &str| values.iter().find(|v| v["key"] == k).unwrap();
    assert_eq!(by_key("state")["layer"], "node_override");
    assert_eq!(
        by_key("state")["store_key"],
        "convergent/clusters/web/nodes/web-07"
    );
    assert_eq!(by_key("version")["layer"], "rollout_patch");
    assert_eq!(by_key("version")["store_key"], "convergent/rollouts/web");
    assert_eq!(
        by_key("version")["overrides"],
        json!([{"layer": "cluster", "store_key": "convergent/clusters/web/desired", "value": "2.4.0"}])
    );
    assert_eq!(
        doc["generation"],
        h.attributes("web", "web-07")["convergent"]["generation"]
    );
}

fn a_key_filter_narrows_the_answer(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.ok(&[
        "explain",
        "--cluster",
        "web",
        "--node",
        "web-03",
        "--format",
        "json",
        "app",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = doc["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app.port", "app.workers"]);
    let out = h.run(&[
        "explain",
        "--cluster",
        "web",
        "--node",
        "web-03",
        "nothing.here",
    ]);
    assert!(
        stdout(&out).contains("nothing.here: no layer sets it"),
        "{}",
        stdout(&out)
    );
    assert_refused(
        &h.run(&["explain", "--cluster", "web", "--node", "web-03", "a..b"]),
        64,
        &["not a key path"],
    );
}

fn rollout_reasoning_names_rank_and_threshold(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let text = stdout(&h.run(&["explain", "--cluster", "web", "--node", "web-01"]));
    assert!(text.contains("NOT RELEASED"), "{text}");
    assert!(
        text.contains("rank u = 0.664737 > threshold t = 0.469399"),
        "{text}"
    );
    assert!(text.contains("\"web-2.4.1/web-01\""), "{text}");
    let text = stdout(&h.run(&["explain", "--cluster", "web", "--node", "web-02"]));
    assert!(
        text.contains("RELEASED") && text.contains("<= threshold"),
        "{text}"
    );
    let text = stdout(&h.run(&["explain", "--cluster", "db", "--node", "db-01"]));
    assert!(text.contains("rollout: none active"), "{text}");
}

fn removed_keys_are_shown(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-04",
        "chef=null",
        "--create",
    ]);
    let doc: Value = serde_json::from_slice(
        &h.run(&[
            "explain",
            "--cluster",
            "web",
            "--node",
            "web-04",
            "--format",
            "json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(doc["removed"][0]["key"], "chef");
    assert_eq!(doc["removed"][0]["removed_by"], "node_override");
    assert_eq!(doc["removed"][0]["was"]["layer"], "defaults");
    assert!(h.attributes("web", "web-04")["convergent"]["desired"]
        .get("chef")
        .is_none());
}

fn recent_changes_say_who_and_why(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "version=2.4.2",
        "--reason",
        "CVE-2026-0001",
    ]);
    let text = stdout(&h.run(&["explain", "--cluster", "web", "--node", "web-01"]));
    let line = text
        .lines()
        .find(|l| l.contains("CVE-2026-0001"))
        .unwrap_or_else(|| panic!("no change line in {text}"));
    assert!(
        line.contains("tester@test-host") && line.contains("version \"2.4.0\" -> \"2.4.2\""),
        "{line}"
    );
}
