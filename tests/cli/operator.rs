//! The operator's first hour (issue 16): the tour view's rollout can be
//! listed, paused and removed; records the orchestrator could not read are
//! refused at the door; one bad record does not hide the others.

use serde_json::json;

use crate::support::{assert_refused, stderr, stdout, store_suite, Backend, Harness};

store_suite! {
    the_tour_rollout_is_listable_pausable_and_removable,
    a_rollout_record_only_nodes_could_read_is_refused_by_import,
    one_unreadable_rollout_record_does_not_hide_the_others,
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
