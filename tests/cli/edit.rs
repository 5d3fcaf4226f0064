//! `set` and `unset`: compare-and-set writes, schema-checked, recorded in the
//! cluster's history; refused writes leave the store untouched.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::support::{assert_refused, stdout, store_suite, Backend, Harness};

store_suite! {
    set_changes_one_document_and_records_who,
    set_on_a_node_writes_its_override,
    set_outside_the_schema_changes_nothing,
    a_forbidden_transition_changes_nothing,
    set_on_an_unknown_cluster_needs_create,
    malformed_assignments_are_usage_errors,
    unset_removes_keys_and_whole_overrides,
    removing_the_required_state_is_refused,
    setting_what_is_already_there_writes_nothing,
    concurrent_sets_lose_no_update,
}

fn set_changes_one_document_and_records_who(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    let out = h.ok(&[
        "set",
        "--cluster",
        "web",
        "state=off",
        "app.workers=12",
        "--reason",
        "disk swap",
    ]);
    assert!(
        stdout(&out).contains("state \"converged\" -> \"off\""),
        "{}",
        stdout(&out)
    );
    let after = h.export();
    let desired = &after["convergent"]["clusters"]["web"]["desired"];
    assert_eq!(desired["state"], "off");
    assert_eq!(desired["app"], json!({"port": 8080, "workers": 12}));
    let history = after["convergent"]["clusters"]["web"]["history"]
        .as_array()
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["actor"], "tester@test-host");
    assert_eq!(history[0]["reason"], "disk swap");
    assert_eq!(history[0]["key"], "convergent/clusters/web/desired");
    // Nothing else moved.
    let mut expected = before.clone();
    expected["convergent"]["clusters"]["web"]["desired"] = desired.clone();
    expected["convergent"]["clusters"]["web"]["history"] = Value::Array(history.clone());
    assert_eq!(after, expected);
    assert_eq!(h.attributes("web", "web-01")["convergent"]["state"], "off");
}

fn set_on_a_node_writes_its_override(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-05",
        "state=off",
        "--create",
    ]);
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["nodes"]["web-05"],
        json!({"state": "off"})
    );
    assert_eq!(h.attributes("web", "web-05")["convergent"]["state"], "off");
    assert_eq!(
        h.attributes("web", "web-06")["convergent"]["state"],
        "converged"
    );
}

fn set_outside_the_schema_changes_nothing(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    let out = h.run(&["set", "--cluster", "web", "state=convreged"]);
    assert_refused(
        &out,
        65,
        &[
            "convergent/clusters/web/desired",
            "\"convreged\" is not allowed",
        ],
    );
    let out = h.run(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-01",
        "state=bogus",
        "--create",
    ]);
    assert_refused(
        &out,
        65,
        &["convergent/clusters/web/nodes/web-01", "\"bogus\""],
    );
    // The schema's `state` is text: 3 is the state "3", which it lacks.
    let out = h.run(&["set", "--cluster", "web", "state=3"]);
    assert_refused(&out, 65, &["state \"3\" is not allowed"]);
    let out = h.run(&["set", "--cluster", "db", "--create", "state=[1]"]);
    assert_refused(&out, 65, &["state \"[1]\" is not allowed"]);
    assert_eq!(h.export(), before);
}

fn a_forbidden_transition_changes_nothing(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.ok(&["set", "--cluster", "web", "state=off"]);
    let before = h.export();
    // The fixture's schema: "off" may only go to "waiting".
    let out = h.run(&["set", "--cluster", "web", "state=converged"]);
    assert_refused(
        &out,
        65,
        &["\"off\" -> \"converged\" is not allowed", "waiting"],
    );
    assert_eq!(h.export(), before);
    h.ok(&["set", "--cluster", "web", "state=waiting"]);
    h.ok(&["set", "--cluster", "web", "state=converged"]);
}

fn set_on_an_unknown_cluster_needs_create(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.run(&["set", "--cluster", "webb", "state=off"]);
    assert_refused(&out, 65, &["unknown cluster \"webb\"", "--create"]);
    assert!(h.export()["convergent"]["clusters"].get("webb").is_none());
    h.ok(&[
        "set",
        "--cluster",
        "search",
        "--create",
        "state=converged",
        "version=1.0.0",
    ]);
    assert_eq!(
        h.attributes("search", "search-01")["convergent"]["desired"]["version"],
        "1.0.0"
    );
}

fn malformed_assignments_are_usage_errors(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    assert_refused(
        &h.run(&["set", "--cluster", "web", "state"]),
        64,
        &["KEY=VALUE"],
    );
    assert_refused(
        &h.run(&["set", "--cluster", "web", "state="]),
        64,
        &["unset"],
    );
    assert_refused(
        &h.run(&["set", "--cluster", "web", "a..b=1"]),
        64,
        &["not a key path"],
    );
    assert_refused(
        &h.run(&["set", "--cluster", "web", "app={\"x\":"]),
        64,
        &["not valid JSON"],
    );
    assert_refused(
        &h.run(&["set", "--cluster", "web", "state.x=1"]),
        64,
        &["state holds a value that is not a map"],
    );
    assert_refused(
        &h.run(&["set", "--cluster", "web/x", "state=off"]),
        65,
        &["cluster name"],
    );
    assert_eq!(h.export(), before);
}

fn unset_removes_keys_and_whole_overrides(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.ok(&["unset", "--cluster", "web", "app.workers"]);
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["app"],
        json!({"port": 8080})
    );
    h.ok(&["unset", "--cluster", "web", "--node", "web-07", "--all"]);
    assert!(h.export()["convergent"]["clusters"]["web"]["nodes"]
        .get("web-07")
        .is_none());
    assert_eq!(
        h.attributes("web", "web-07")["convergent"]["state"],
        "converged"
    );
    // Removing a node override's last key removes the override.
    h.ok(&[
        "unset",
        "--cluster",
        "cache",
        "--node",
        "cache-02",
        "log_level",
    ]);
    assert!(h.export()["convergent"]["clusters"]["cache"]
        .get("nodes")
        .is_none());
}

fn removing_the_required_state_is_refused(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.run(&["unset", "--cluster", "web", "state"]);
    assert_refused(&out, 65, &["requires a `state`"]);
}

fn setting_what_is_already_there_writes_nothing(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    let out = h.run(&["set", "--cluster", "web", "state=converged"]);
    assert!(stdout(&out).contains("no change"), "{}", stdout(&out));
    assert_eq!(h.export(), before, "no history entry for a no-op");
}

fn concurrent_sets_lose_no_update(backend: Backend) {
    let h = Harness::with_fixture(backend);
    const EACH: usize = 15;
    let writers: Vec<_> = ["a", "b"]
        .iter()
        .map(|who| {
            let script: String = (0..EACH)
                .map(|i| {
                    format!(
                        "\"$BIN\" set --cluster web writer_{who}.k{i}={i} >/dev/null || exit 1\n"
                    )
                })
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
    let view = h.export();
    let desired = &view["convergent"]["clusters"]["web"]["desired"];
    for who in ["a", "b"] {
        for i in 0..EACH {
            assert_eq!(
                desired[format!("writer_{who}")][format!("k{i}")],
                json!(i),
                "lost writer {who} update {i}"
            );
        }
    }
    assert_eq!(
        view["convergent"]["clusters"]["web"]["history"]
            .as_array()
            .unwrap()
            .len(),
        2 * EACH
    );
}

#[test]
fn a_writer_stuck_holding_the_file_lock_makes_set_exit_75() {
    let h = Harness::with_fixture(Backend::File);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(h.path("view.yml.lock"))
        .unwrap();
    lock.lock().unwrap();
    let before = std::fs::read(h.store_file()).unwrap();
    let out = h.run(&["--timeout", "300ms", "set", "--cluster", "web", "state=off"]);
    assert_refused(&out, 75, &["view.yml.lock", "held"]);
    assert_eq!(std::fs::read(h.store_file()).unwrap(), before);
    lock.unlock().unwrap();
    h.ok(&["set", "--cluster", "web", "state=off"]);
}
