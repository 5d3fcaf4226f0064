//! The operator's first hour (issue 16): the tour view's rollout can be
//! listed, paused and removed; records the orchestrator could not read are
//! refused at the door; one bad record does not hide the others.

use serde_json::{json, Value};

use crate::support::{assert_refused, stderr, stdout, store_suite, Backend, Harness};

store_suite! {
    the_tour_rollout_is_listable_pausable_and_removable,
    a_rollout_record_only_nodes_could_read_is_refused_by_import,
    one_unreadable_rollout_record_does_not_hide_the_others,
    set_and_unset_preview_without_writing,
    import_previews_records_and_enforces_transitions,
    a_start_the_run_would_refuse_is_refused_by_the_dry_run_and_writes_nothing,
    a_plan_that_never_started_can_be_corrected_under_its_name,
    history_lists_changes_and_rollout_events_and_revert_undoes_one,
    set_keeps_strings_the_schema_names_and_warns_when_one_becomes_a_number,
    typos_get_a_hint_and_unseen_nodes_need_create,
    status_check_fails_on_an_empty_cluster_and_on_missing_members,
    a_view_file_imports_under_another_prefix,
    completion_names_come_from_the_store,
}

fn the_tour_rollout_is_listable_pausable_and_removable(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = stdout(&h.ok(&["rollout", "status", "web"]));
    assert!(
        out.contains("web-2.4.1") && out.contains("released: batch 3: web-09, web-04"),
        "{out}"
    );
    assert!(stdout(&h.ok(&["rollout", "pause", "web", "--reason", "lunch"])).contains("paused"));
    assert!(stdout(&h.ok(&["rollout", "resume", "web"])).contains("run plan web-2.4 again"));
    assert!(stdout(&h.ok(&["rollout", "abort", "web"])).contains("aborted"));
    h.ok(&[
        "rollout",
        "rollback",
        "web",
        "--all-at-once",
        "--poll",
        "50ms",
    ]);
    assert_eq!(
        stdout(&h.ok(&["rollout", "status"])),
        "no active rollouts\n"
    );
    assert!(h.export()["convergent"].get("rollouts").is_none());
}

fn a_rollout_record_only_nodes_could_read_is_refused_by_import(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    let file = h.path("hand-written.yml");
    std::fs::write(
        &file,
        "convergent:\n  clusters:\n    web:\n      desired: {state: converged}\n  rollouts:\n    web:\n      id: web-2.4.1\n      status: running\n      threshold: 0.5\n      patch: {version: \"2.4.1\"}\n",
    )
    .unwrap();
    let out = h.run(&["import", file.to_str().unwrap()]);
    assert_refused(
        &out,
        65,
        &[
            "convergent/rollouts/web",
            "missing field `plan`",
            "rollout run PLAN",
        ],
    );
    let out = h.run(&["validate", file.to_str().unwrap()]);
    assert_refused(
        &out,
        65,
        &["convergent/rollouts/web", "missing field `plan`"],
    );
    // Nothing of the file got in.
    assert_eq!(h.export(), before);
}

fn one_unreadable_rollout_record_does_not_hide_the_others(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.put_document(
        "convergent/rollouts/db",
        json!({"id": "db-5.1", "status": "running", "threshold": 1, "patch": {"version": "5.1"}}),
    );
    let out = h.run(&["rollout", "status"]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(stdout(&out).contains("web-2.4.1"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("convergent/rollouts/db") && stderr(&out).contains("missing field"),
        "{}",
        stderr(&out)
    );
}

fn set_and_unset_preview_without_writing(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    let out = stdout(&h.ok(&["set", "--cluster", "web", "app.workers=12", "--dry-run"]));
    assert_eq!(
        out,
        "convergent/clusters/web/desired: app.workers 8 -> 12\ndry run: nothing was written\n"
    );
    let out = stdout(&h.ok(&[
        "unset",
        "--cluster",
        "web",
        "--node",
        "web-03",
        "app.workers",
        "--dry-run",
        "--diff",
    ]));
    assert_eq!(
        out,
        "convergent/clusters/web/nodes/web-03\n-   app.workers: 16\ndry run: nothing was written\n"
    );
    assert_eq!(
        h.export(),
        before,
        "a dry run writes nothing, history included"
    );
    let out = stdout(&h.ok(&["set", "--cluster", "web", "app.workers=12", "--diff"]));
    assert_eq!(
        out,
        "convergent/clusters/web/desired\n-   app.workers: 8\n+   app.workers: 12\n"
    );
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["app"]["workers"],
        12
    );
}

fn import_previews_records_and_enforces_transitions(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.ok(&["set", "--cluster", "web", "state=off"]);
    let before = h.export();
    let file = h.path("web-on.yml");
    std::fs::write(
        &file,
        "convergent:\n  clusters:\n    web:\n      desired: {state: converged, version: \"2.4.0\", app: {port: 8080, workers: 8}}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // off -> converged is refused by web's schema, as it is for `set`.
    let out = h.run(&["import", file]);
    assert_refused(
        &out,
        65,
        &[
            "convergent/clusters/web/desired",
            "\"off\" -> \"converged\"",
            "--force",
        ],
    );
    assert_eq!(h.export(), before);
    let out = stdout(&h.ok(&["import", file, "--dry-run", "--force"]));
    assert!(
        out.contains(
            "convergent/clusters/web/desired\n-   state: \"off\"\n+   state: \"converged\"\n"
        ) && out.contains("would import 1 document")
            && out.contains("dry run: nothing was written"),
        "{out}"
    );
    assert_eq!(h.export(), before);
    h.ok(&["import", file, "--force", "--reason", "INC-7"]);
    let view = h.export();
    assert_eq!(
        view["convergent"]["clusters"]["web"]["desired"]["state"],
        "converged"
    );
    let history = view["convergent"]["clusters"]["web"]["history"]
        .as_array()
        .unwrap()
        .clone();
    let last: &Value = history.last().unwrap();
    assert_eq!(last["command"], "import");
    assert_eq!(last["forced"], true);
    assert_eq!(last["reason"], "INC-7");
    assert_eq!(
        last["changes"],
        json!([{"path": "state", "from": "off", "to": "converged"}])
    );
}

/// `--format` is honoured where it applies and refused where it does not;
/// with `--format json` an error is one JSON object on stderr.
#[test]
fn formats_are_honoured_or_refused_and_errors_can_be_json() {
    let h = Harness::with_fixture(Backend::File);
    let out = h.run(&["get", "clusters/web/desired", "--format", "table"]);
    assert_refused(
        &out,
        64,
        &["--format table does not apply to `get`", "json or yaml"],
    );
    let out = h.run(&["--format", "json", "get", "clusters/nope/desired"]);
    assert_eq!(out.status.code(), Some(65));
    let error: Value = serde_json::from_str(stderr(&out).trim()).expect("one JSON object");
    assert_eq!(error["code"], "bad_data");
    assert_eq!(error["exit_status"], 65);
    assert_eq!(error["key"], "convergent/clusters/nope/desired");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("nothing is stored"));
    // A usage error clap finds is JSON too.
    let out = h.run(&["--format", "json", "set", "--bogus"]);
    assert_eq!(out.status.code(), Some(64));
    let error: Value = serde_json::from_str(stderr(&out).trim()).expect("one JSON object");
    assert_eq!(error["code"], "usage");

    let yaml = stdout(&h.ok(&[
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-07",
        "--format",
        "yaml",
    ]));
    assert!(yaml.contains("  state: \"off\"\n"), "{yaml}");
    let out = h.run(&[
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-07",
        "--format",
        "table",
    ]);
    assert_refused(&out, 64, &["`attributes`"]);
    let file = h.path("a.json");
    let out = h.run(&[
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-07",
        "--format",
        "yaml",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_refused(&out, 64, &["`attributes --output`"]);
    assert!(!file.exists());
    // A format from the environment or config file is a default, never a
    // refusal, and the node path (what the cookbook reads) ignores it: a
    // chef run with `format: yaml` in the shared config still gets JSON.
    for format in ["table", "yaml"] {
        let out = h
            .cmd()
            .env("CONVERGENT_FORMAT", format)
            .args(["attributes", "--cluster", "web", "--node", "web-07"])
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON attributes");
    }
    std::fs::write(h.path("config.yml"), "format: yaml\n").unwrap();
    let file = h.attributes_file("web", "web-02");
    let out = stdout(&h.ok(&[
        "report",
        "--status",
        "success",
        "--attributes",
        file.to_str().unwrap(),
    ]));
    assert!(
        out.starts_with("convergent/observed/web/web-02: success"),
        "{out}"
    );
    assert!(
        stdout(&h.ok(&["get", "clusters/web/nodes/web-07"])).starts_with("state: "),
        "operator commands follow it"
    );
    std::fs::write(h.path("config.yml"), "").unwrap();

    let view = crate::support::fixture("view.yml");
    let out = stdout(&h.ok(&["validate", view.to_str().unwrap(), "--format", "json"]));
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (result["kind"].as_str(), result["rollouts"].as_u64()),
        (Some("view"), Some(1))
    );
    let out = stdout(&h.ok(&["import", view.to_str().unwrap(), "--format", "json"]));
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["changed"], json!([]));
    let attributes = h.attributes_file("web", "web-01");
    let out = stdout(&h.ok(&[
        "report",
        "--status",
        "success",
        "--attributes",
        attributes.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["key"], "convergent/observed/web/web-01");
    let out = h.run(&["completions", "bash", "--format", "json"]);
    assert_refused(&out, 64, &["`completions`"]);
    let out = h.run(&["export", "--format", "table"]);
    assert_refused(&out, 64, &["`export`"]);
}

fn a_start_the_run_would_refuse_is_refused_by_the_dry_run_and_writes_nothing(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let plan = |name: &str, text: &str| {
        let path = h.path(&format!("{name}.yml"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let bogus = plan(
        "bogus",
        "name: dbup\nsteps:\n  - cluster: db\n    set: {state: bogus}\n",
    );
    let busy = plan(
        "busy",
        "name: webup\nsteps:\n  - cluster: web\n    set: {version: '9'}\n",
    );
    let before = h.export();
    for (file, code, needle) in [
        (&bogus, 65, "state \"bogus\" is not allowed"),
        (&busy, 75, "cluster web has an active rollout, web-2.4.1"),
    ] {
        assert_refused(
            &h.run(&["rollout", "run", "--dry-run", file]),
            code,
            &[needle],
        );
        assert_refused(
            &h.run(&["rollout", "run", file, "--poll", "10ms"]),
            code,
            &[needle],
        );
        assert_eq!(h.export(), before, "{file}: a refused start writes nothing");
    }
    // A later step's transition is checked from the state the earlier
    // steps leave: off -> converged is refused by web's schema.
    h.ok(&["rollout", "abort", "web"]);
    h.ok(&[
        "rollout",
        "rollback",
        "web",
        "--all-at-once",
        "--poll",
        "10ms",
    ]);
    let before = h.export();
    let two = plan(
        "two",
        "name: bounce\nsteps:\n  - cluster: web\n    set: {state: 'off'}\n  - cluster: web\n    set: {state: converged}\n",
    );
    for args in [
        vec!["rollout", "run", "--dry-run", &two],
        vec!["rollout", "run", &two, "--poll", "10ms"],
    ] {
        assert_refused(
            &h.run(&args),
            65,
            &[
                "step 2 of plan bounce",
                "\"off\" -> \"converged\" is not allowed",
            ],
        );
    }
    assert_eq!(h.export(), before);
}

fn a_plan_that_never_started_can_be_corrected_under_its_name(backend: Backend) {
    let h = Harness::with_fixture(backend);
    // What an earlier version left after a refused first step: the plan's
    // record, running, no step started.
    h.put_document(
        "convergent/plans/dbup",
        json!({"name": "dbup", "status": "running", "steps": 1, "done": 0, "digest": "0000000000000000", "history": []}),
    );
    let path = h.path("dbup.yml");
    std::fs::write(
        &path,
        "name: dbup\nsteps:\n  - cluster: db\n    set: {version: '5.1'}\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    h.ok(&["rollout", "run", "--dry-run", path]);
    h.ok(&["rollout", "run", path, "--poll", "10ms"]);
    let view = h.export();
    assert_eq!(
        view["convergent"]["clusters"]["db"]["desired"]["version"],
        "5.1"
    );
    assert_eq!(view["convergent"]["plans"]["dbup"]["status"], "completed");
    // Once a step has started, a changed plan is refused as before.
    std::fs::write(
        h.path("dbup.yml"),
        "name: dbup\nsteps:\n  - cluster: db\n    set: {version: '5.2'}\n",
    )
    .unwrap();
    assert_refused(
        &h.run(&["rollout", "run", "--dry-run", path]),
        65,
        &["plan dbup changed since it started"],
    );
}

fn history_lists_changes_and_rollout_events_and_revert_undoes_one(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-04",
        "state=off",
        "--create",
        "--reason",
        "disk swap",
    ]);
    h.ok(&["set", "--cluster", "web", "app.workers=12"]);
    let table = stdout(&h.ok(&["history", "web"]));
    assert!(table.starts_with("ENTRY  "), "{table}");
    for needle in [
        "rollout web-2.4.1 released",
        "batch 3: web-09, web-04",
        "clusters/web/nodes/web-04  state (unset) -> \"off\"",
        "disk swap",
        "app.workers 8 -> 12",
    ] {
        assert!(table.contains(needle), "{needle:?} missing in\n{table}");
    }
    let listed: Value =
        serde_json::from_slice(&h.ok(&["history", "web", "--format", "json"]).stdout).unwrap();
    let lines = listed["history"].as_array().unwrap();
    let workers = lines
        .iter()
        .rev()
        .find(|l| l["detail"] == "app.workers 8 -> 12")
        .unwrap();
    let entry = workers["entry"].as_str().unwrap();

    let before = h.export();
    let out = stdout(&h.ok(&["revert", "web", entry, "--dry-run"]));
    assert!(
        out.contains("app.workers 12 -> 8") && out.contains("dry run"),
        "{out}"
    );
    assert_eq!(h.export(), before);
    h.ok(&["revert", "web", &entry[..6], "--reason", "too many"]);
    let view = h.export();
    assert_eq!(
        view["convergent"]["clusters"]["web"]["desired"]["app"]["workers"],
        8
    );
    let history = view["convergent"]["clusters"]["web"]["history"]
        .as_array()
        .unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["command"], "revert");
    assert_eq!(last["reason"], format!("revert of {entry}: too many"));
    // The node override made by the first set goes away when reverted.
    let node_entry = lines
        .iter()
        .find(|l| l["key"] == "clusters/web/nodes/web-04")
        .unwrap()["entry"]
        .as_str()
        .unwrap()
        .to_string();
    h.ok(&["revert", "web", &node_entry]);
    assert!(h.export()["convergent"]["clusters"]["web"]["nodes"]
        .get("web-04")
        .is_none());
    // Reverting a change made over since says what it overwrites.
    h.ok(&["set", "--cluster", "web", "app.workers=20"]);
    let listed: Value =
        serde_json::from_slice(&h.ok(&["history", "web", "--format", "json"]).stdout).unwrap();
    let twenty = listed["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|l| l["detail"] == "app.workers 8 -> 20")
        .unwrap()["entry"]
        .as_str()
        .unwrap()
        .to_string();
    h.ok(&["set", "--cluster", "web", "app.workers=30"]);
    let out = h.ok(&["revert", "web", &twenty]);
    assert!(
        stderr(&out).contains("app.workers changed again after")
            && stderr(&out).contains("(now 30); restored to 8"),
        "{}",
        stderr(&out)
    );
    assert_refused(
        &h.run(&["revert", "web", "00000000"]),
        64,
        &["no entry \"00000000\""],
    );
    assert_refused(
        &h.run(&["history", "nosuch"]),
        65,
        &["unknown cluster \"nosuch\""],
    );
}

fn set_keeps_strings_the_schema_names_and_warns_when_one_becomes_a_number(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let out = h.ok(&["set", "--cluster", "db", "version=5.10"]);
    assert!(
        stderr(&out).contains("warning: convergent/clusters/db/desired: version was the string \"5.0\" and is now the number 5.1")
            && stderr(&out).contains("version='\"5.10\"'"),
        "{}",
        stderr(&out)
    );
    let file = h.path("schema.yml");
    std::fs::write(
        &file,
        "convergent:\n  clusters:\n    db:\n      schema: {states: [\"off\", waiting, converged], strings: [version, app.tag]}\n      desired: {state: converged, version: \"5.0\"}\n",
    )
    .unwrap();
    h.import(&file);
    let out = h.ok(&[
        "set",
        "--cluster",
        "db",
        "version=5.10",
        "app.tag=7",
        "port=5432",
    ]);
    assert_eq!(stderr(&out), "", "nothing to warn about");
    let desired = &h.export()["convergent"]["clusters"]["db"]["desired"];
    assert_eq!(desired["version"], "5.10");
    assert_eq!(desired["app"]["tag"], "7");
    assert_eq!(
        desired["port"], 5432,
        "keys the schema does not name parse as before"
    );
    // A view whose desired document breaks `strings` is refused.
    std::fs::write(
        &file,
        "convergent:\n  clusters:\n    db:\n      desired: {state: converged, version: 5.1}\n",
    )
    .unwrap();
    assert_refused(
        &h.run(&["import", file.to_str().unwrap()]),
        65,
        &["convergent/clusters/db/desired: version must be a string"],
    );
}

fn typos_get_a_hint_and_unseen_nodes_need_create(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.converge("web", "web-09", "success");
    let before = h.export();
    assert_refused(
        &h.run(&["set", "--cluster", "web", "--node", "web-99", "state=off"]),
        65,
        &[
            "node \"web-99\" of cluster web has never reported",
            "--create",
            "did you mean \"web-09\"?",
        ],
    );
    assert_refused(
        &h.run(&["set", "--cluster", "web", "state=convreged"]),
        65,
        &["did you mean \"converged\"?"],
    );
    assert_eq!(h.export(), before);
    // A node that reported, or is named with --create, takes an override.
    h.ok(&["set", "--cluster", "web", "--node", "web-09", "state=off"]);
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-11",
        "state=off",
        "--create",
    ]);
    let out = h.ok(&["set", "--cluster", "web", "app.wrokers=3"]);
    assert!(
        stderr(&out).contains("app.wrokers is a new key; did you mean \"app.workers\"?"),
        "{}",
        stderr(&out)
    );
}

fn status_check_fails_on_an_empty_cluster_and_on_missing_members(backend: Backend) {
    let h = Harness::with_fixture(backend);
    check_fails(
        &h.run(&["status", "--cluster", "web", "--check"]),
        &["check failed for web: it has no members"],
    );
    h.converge("web", "web-01", "success");
    h.converge("web", "web-05", "success");
    h.ok(&["status", "--cluster", "web", "--check"]);
    check_fails(
        &h.run(&["status", "--cluster", "web", "--check", "--expect", "3"]),
        &["2 present, 3 expected (--expect)"],
    );
    h.ok(&["status", "--cluster", "web", "--check", "--expect", "2"]);
    let members = h.path("members.yml");
    std::fs::write(
        &members,
        "convergent:\n  clusters:\n    web:\n      members: [web-01, web-05, web-10]\n",
    )
    .unwrap();
    h.import(&members);
    check_fails(
        &h.run(&["status", "--cluster", "web", "--check"]),
        &["2 present, 3 expected (its static members); absent: web-10"],
    );
    h.converge("web", "web-10", "success");
    h.ok(&["status", "--cluster", "web", "--check"]);
}

/// `status --check` failed (exit 1) saying `needles`; the table is printed.
#[track_caller]
fn check_fails(out: &std::process::Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    for needle in needles {
        assert!(
            stderr(out).contains(needle),
            "{needle:?} not in {}",
            stderr(out)
        );
    }
}

fn a_view_file_imports_under_another_prefix(backend: Backend) {
    let h = Harness::new(backend);
    let view = crate::support::fixture("view.yml");
    h.ok(&["--prefix", "team/a", "import", view.to_str().unwrap()]);
    let out = h.ok(&[
        "--prefix",
        "team/a",
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-07",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["convergent"]["desired"]["version"], "2.4.1");
    let exported: Value = serde_json::from_slice(
        &h.ok(&["--prefix", "team/a", "export", "--format", "json"])
            .stdout,
    )
    .unwrap();
    assert!(
        exported["team"]["a"]["clusters"]["web"].is_object(),
        "{exported}"
    );
}

fn completion_names_come_from_the_store(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.converge("web", "web-01", "success");
    assert_eq!(
        stdout(&h.ok(&["complete-names", "clusters"])),
        "cache\ndb\nweb\n"
    );
    assert_eq!(
        stdout(&h.ok(&["complete-names", "nodes", "--cluster", "web"])),
        "web-01\nweb-03\nweb-07\n"
    );
    // Never an error into a prompt.
    let out = h.ok(&[
        "--store",
        "file:/nonexistent/v.yml",
        "complete-names",
        "clusters",
    ]);
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));
}

/// Each command's help shows the global options it uses, with examples;
/// the others are still accepted.
#[test]
fn help_shows_what_applies_and_completion_scripts_complete_names() {
    let h = Harness::with_fixture(Backend::File);
    let set = stdout(&h.ok(&["set", "--help"]));
    assert!(
        set.contains("--store") && set.contains("Examples:\n  convergent set"),
        "{set}"
    );
    assert!(
        !set.contains("--max-stale") && !set.contains("--cache-dir"),
        "{set}"
    );
    let validate = stdout(&h.ok(&["validate", "--help"]));
    assert!(
        !validate.contains("--store") && !validate.contains("--timeout"),
        "{validate}"
    );
    let pause = stdout(&h.ok(&["rollout", "pause", "--help"]));
    assert!(!pause.contains("--on-unreachable"), "{pause}");
    let attributes = stdout(&h.ok(&["attributes", "--help"]));
    assert!(attributes.contains("--max-stale") && attributes.contains("--on-unreachable"));
    // Hidden is not refused: the cookbook passes the same options to all.
    h.ok(&[
        "--cache-dir",
        "c",
        "--max-stale",
        "1h",
        "get",
        "clusters/web/desired",
    ]);
    h.ok(&["get", "clusters/web/desired", "--max-stale", "1h"]);

    // The bash script completes cluster and node names from the store.
    let script = h.path("convergent.bash");
    std::fs::write(&script, h.ok(&["completions", "bash"]).stdout).unwrap();
    let binary = assert_cmd::cargo::cargo_bin("convergent");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(convergent set --cluster w); COMP_CWORD=3; _convergent_names; echo \"${{COMPREPLY[*]}}\"; \
             COMP_WORDS=(convergent explain --cluster web --node web-0); COMP_CWORD=5; _convergent_names; echo \"${{COMPREPLY[*]}}\"",
            script.display()
        ))
        .env("PATH", format!("{}:/usr/bin:/bin", binary.parent().unwrap().display()))
        .env("CONVERGENT_STORE", format!("file:{}", h.store_file().display()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "web\nweb-03 web-07\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
