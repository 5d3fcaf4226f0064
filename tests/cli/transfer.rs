//! `get`, `import` and `export`.

use serde_json::{json, Value};

use crate::support::{assert_refused, fixture, stdout, store_suite, Backend, Harness};

store_suite! {
    import_then_export_gives_back_the_fixture,
    export_import_export_is_byte_identical,
    a_broken_view_is_refused_whole_and_nothing_is_written,
    import_replace_removes_what_the_file_lacks,
    a_partial_import_is_checked_against_what_the_store_holds,
    get_prints_one_folded_document,
}

fn fixture_tree() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(fixture("view.yml")).unwrap()).unwrap()
}

fn import_then_export_gives_back_the_fixture(backend: Backend) {
    let h = Harness::with_fixture(backend);
    assert_eq!(h.export(), fixture_tree());
}

fn export_import_export_is_byte_identical(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-09",
        "--create",
        "note=\"off\"",
        "flags=[\"yes\",\"5.0\"]",
    ]);
    let first = h.run(&["export"]);
    assert!(first.status.success());
    let exported = h.path("exported.yml");
    std::fs::write(&exported, &first.stdout).unwrap();
    let other = Harness::new(backend);
    other.import(&exported);
    let second = other.run(&["export"]);
    assert_eq!(stdout(&first), stdout(&second));
    // YAML 1.1 readers would take these for booleans and numbers.
    let text = stdout(&first);
    assert!(
        text.contains("note: \"off\"") && text.contains("flags: [\"yes\", \"5.0\"]"),
        "{text}"
    );
}

fn a_broken_view_is_refused_whole_and_nothing_is_written(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    for (file, needles) in [
        (
            "broken/state-not-in-schema.yml",
            vec!["convergent/clusters/web/desired", "convreged"],
        ),
        (
            "broken/invalid-yaml.yml",
            vec!["invalid-yaml.yml", "line 5"],
        ),
        ("broken/duplicate-key.yml", vec!["duplicate key \"state\""]),
        ("broken/bad-node-name.yml", vec!["\"web 07\"", "\"../etc\""]),
    ] {
        let out = h.run(&["import", fixture(file).to_str().unwrap()]);
        assert_refused(&out, 65, &needles);
    }
    assert_eq!(h.export(), before);
    let out = h.run(&["import", "no-such-file.yml"]);
    assert_refused(&out, 65, &["no-such-file.yml", "cannot be read"]);
}

fn import_replace_removes_what_the_file_lacks(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let small = h.path("small.yml");
    std::fs::write(
        &small,
        "convergent:\n  clusters:\n    web:\n      desired: {state: converged}\n",
    )
    .unwrap();
    h.ok(&["import", small.to_str().unwrap()]);
    assert!(
        h.export()["convergent"]["clusters"].get("db").is_some(),
        "a plain import keeps other documents"
    );
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"],
        json!({"state": "converged"})
    );
    let out = stdout(&h.ok(&["import", "--replace", small.to_str().unwrap()]));
    // Every document deleted is named.
    for key in [
        "clusters/db/desired",
        "clusters/web/nodes/web-07",
        "rollouts/web",
        "defaults",
    ] {
        assert!(
            out.contains(&format!("  convergent/{key}\n")),
            "{key} not named in {out}"
        );
    }
    let mut after = h.export();
    // web stays, so its history records what the import took away.
    let history = after["convergent"]["clusters"]["web"]
        .as_object_mut()
        .unwrap()
        .remove("history")
        .expect("a history");
    assert!(history
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["command"] == "import"));
    assert_eq!(
        after,
        json!({"convergent": {"clusters": {"web": {"desired": {"state": "converged"}}}}})
    );
}

fn a_partial_import_is_checked_against_what_the_store_holds(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    let partial = h.path("partial.yml");
    // A state the store's schema does not allow.
    std::fs::write(
        &partial,
        "convergent:\n  clusters:\n    web:\n      nodes:\n        web-04: {state: bogus}\n",
    )
    .unwrap();
    let out = h.run(&["import", partial.to_str().unwrap()]);
    assert_refused(
        &out,
        65,
        &[
            "laid over the store's view",
            "convergent/clusters/web/nodes/web-04",
            "\"bogus\"",
        ],
    );
    // A schema that no longer allows the state the store's desired document has.
    std::fs::write(
        &partial,
        "convergent:\n  clusters:\n    web:\n      schema: {states: [\"off\"]}\n",
    )
    .unwrap();
    let out = h.run(&["import", partial.to_str().unwrap()]);
    assert_refused(
        &out,
        65,
        &[
            "convergent/clusters/web/desired",
            "\"converged\" is not allowed",
        ],
    );
    assert_eq!(h.export(), before);
    // What fits is taken, and only the file's documents change.
    std::fs::write(
        &partial,
        "convergent:\n  clusters:\n    web:\n      nodes:\n        web-04: {state: waiting}\n",
    )
    .unwrap();
    h.import(&partial);
    let mut expected = before;
    expected["convergent"]["clusters"]["web"]["nodes"]["web-04"] = json!({"state": "waiting"});
    let mut after = h.export();
    // The change is in web's history, like a `set`'s.
    let history = after["convergent"]["clusters"]["web"]
        .as_object_mut()
        .unwrap()
        .remove("history")
        .expect("a history");
    assert_eq!(history[0]["command"], "import");
    assert_eq!(history[0]["key"], "convergent/clusters/web/nodes/web-04");
    assert_eq!(after, expected);
}

fn get_prints_one_folded_document(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.ok(&["get", "clusters/web/desired"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["version"], "2.4.0");
    let out = h.run(&["get", "clusters/web/desired", "--format", "yaml"]);
    assert!(
        stdout(&out).contains("version: \"2.4.0\""),
        "{}",
        stdout(&out)
    );
    let out = h.run(&["get", "clusters/web/desired/app/port"]);
    assert_eq!(stdout(&out).trim(), "8080");
    assert_refused(
        &h.run(&["get", "clusters/nope/desired"]),
        65,
        &["convergent/clusters/nope/desired", "nothing is stored"],
    );
    assert_refused(&h.run(&["get", "../etc"]), 64, &["not a key"]);
}

#[test]
fn import_creates_a_missing_store_file() {
    let h = Harness::new(Backend::File);
    assert!(!h.store_file().exists());
    h.import(&fixture("view.yml"));
    assert!(h.store_file().exists());
    assert_eq!(h.export(), fixture_tree());
}

#[test]
fn export_of_a_missing_store_file_is_exit_69() {
    let h = Harness::new(Backend::File);
    assert_refused(&h.run(&["export"]), 69, &["view.yml", "does not exist"]);
}
