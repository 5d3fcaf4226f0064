//! Rolling back a whole plan: the step under way goes back batch by batch,
//! then each done step is undone, last first, batch by batch; every message
//! says what went back and what stays applied.

use serde_json::Value;

use crate::rollout::{
    all_caught_up, assert_stopped, by_rank, fleet, generation_of, names, plan_file, record,
    run_plan, FAST,
};
use crate::support::{stderr, stdout, store_suite, Backend, Harness};

store_suite! {
    a_plan_rollback_restores_every_step_s_cluster,
    all_at_once_restores_the_view_and_claims_nothing_about_nodes,
}

const PLAN: &str = "name: three\nsteps:\n  - cluster: web\n    set: {state: 'off'}\n  - cluster: db\n    set: {version: '5.1'}\n  - cluster: web\n    set: {state: converged, version: '2.5.0'}\n    strategy: {canary: 1, batch: 2, max_failed: 0}\n";

fn desired(h: &Harness, cluster: &str) -> Value {
    h.export()["convergent"]["clusters"][cluster]["desired"].clone()
}

fn rollback(h: &Harness, args: &[&str]) -> std::process::Output {
    let mut all = vec!["rollout", "rollback"];
    all.extend_from_slice(args);
    all.extend_from_slice(&FAST);
    h.run(&all)
}

fn a_plan_rollback_restores_every_step_s_cluster(backend: Backend) {
    let (h, sim) = fleet(backend);
    let (web, db) = (names("web", 8), names("db", 4));
    let generations = |h: &Harness| -> Vec<String> {
        web.iter()
            .map(|n| generation_of(h, "web", n))
            .chain(db.iter().map(|n| generation_of(h, "db", n)))
            .collect()
    };
    let before = generations(&h);
    let (web_before, db_before) = (desired(&h, "web"), desired(&h, "db"));
    let plan = plan_file(&h, "three.yml", PLAN);
    let order = by_rank("three.3", &web);
    sim.fail_when(&order[1], Box::new(|d| d["version"] == "2.5.0"));
    assert_stopped(&run_plan(&h, &plan, &[]), 75, &["paused", &order[1]]);
    sim.heal(&order[1]);

    // The cluster's rollback says what it does not undo.
    let out = rollback(&h, &["web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("rolled back batch by batch")
            && said.contains("steps 1-2 of plan three stay applied")
            && said.contains("rollout rollback --plan three"),
        "{said}"
    );
    assert_eq!(
        desired(&h, "db")["version"],
        "5.1",
        "step 2 is still applied"
    );
    assert_eq!(
        desired(&h, "web")["state"],
        "off",
        "step 1 is still applied"
    );

    // The plan's rollback undoes steps 2 and 1, last first.
    let out = rollback(&h, &["--plan", "three"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    let step2 = said
        .find("step 2 (db): version back to \"5.0\", batch by batch")
        .unwrap_or_else(|| panic!("{said}"));
    let step1 = said
        .find("step 1 (web): state back to \"converged\", batch by batch")
        .unwrap_or_else(|| panic!("{said}"));
    assert!(step2 < step1, "last step first: {said}");
    assert!(said.contains("plan three rolled back"), "{said}");
    assert_eq!(desired(&h, "web"), web_before);
    assert_eq!(desired(&h, "db"), db_before);
    assert!(record(&h, "web").is_none() && record(&h, "db").is_none());
    assert_eq!(
        generations(&h),
        before,
        "every node resolves as before the plan"
    );
    assert!(all_caught_up(&h, &sim, "web", &web));
    assert!(all_caught_up(&h, &sim, "db", &db));
    let progress = h.export()["convergent"]["plans"]["three"].clone();
    assert_eq!(progress["status"], "rolled_back");
    assert_eq!(progress["undone"], 2);
    // Again: nothing left to undo, and it says so.
    let out = rollback(&h, &["--plan", "three"]);
    assert!(
        stdout(&out).contains("nothing was applied"),
        "{}",
        stdout(&out)
    );
    assert_eq!(sim.violations(), Vec::<String>::new());
}

fn all_at_once_restores_the_view_and_claims_nothing_about_nodes(backend: Backend) {
    let (h, sim) = fleet(backend);
    let (web_before, db_before) = (desired(&h, "web"), desired(&h, "db"));
    let plan = plan_file(
        &h,
        "two.yml",
        "name: two\nsteps:\n  - cluster: db\n    set: {version: '5.1', debug: true}\n  - cluster: web\n    set: {version: '2.5.0'}\n",
    );
    let out = run_plan(&h, &plan, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The nodes stop: none can have returned when the command ends.
    for n in names("web", 8).iter().chain(&names("db", 4)) {
        sim.stop_node(n);
    }
    let out = rollback(&h, &["--plan", "two", "--all-at-once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("nodes return on their next run, none was waited for"),
        "{said}"
    );
    assert!(
        said.contains("step 1 (db): debug removed (the step added it), version back to \"5.0\""),
        "{said}"
    );
    assert!(
        !said.contains("reported"),
        "claims nothing about the nodes: {said}"
    );
    assert_eq!(desired(&h, "web"), web_before);
    assert_eq!(desired(&h, "db"), db_before);
}
