//! Steps of one plan at the same time: `after:` names the steps a step
//! waits for, so web and db roll in one `rollout run`, web's batches still
//! gated on db's check-ins; a crash resumes every running step; one step
//! stopping pauses the others; a release waiting for another tier times out.

use std::time::{Duration, Instant};

use serde_json::Value;

use std::process::Stdio;

use crate::rollout::{self, run_plan, FAST};
use crate::support::{
    assert_refused, eventually, fixture, stderr, stdout, store_suite, Backend, Harness, Spawned,
};
use crate::tiers::{incompatible_pairs, record_of, spawn_plan, two_tiers, version, WAIT};

store_suite! {
    one_plan_rolls_web_and_db_at_once_and_web_waits_for_db,
    a_killed_orchestrator_resumes_every_running_step,
    one_step_failing_stops_the_others_from_releasing,
    a_plan_rollback_takes_back_every_running_step,
    a_release_waiting_for_another_tier_times_out,
    resume_plan_resumes_every_paused_step,
    a_rollback_names_the_steps_that_stay_applied,
    a_parallel_group_runs_its_steps_together,
}

/// SLOW_TIERS written with `parallel:`: db and web start together, the
/// feature step waits for both.
const PARALLEL_TIERS: &str = "name: tiers-slow\nsteps:\n  - parallel:\n      - name: db\n        cluster: db\n        set: { version: \"5.1.0\" }\n        strategy: { canary: 1, batch: 1, pause: 1s }\n        wait: { timeout: 5m }\n      - name: web\n        cluster: web\n        set: { version: \"2.5.0\", requires: { db: { version: \">=5.1, <6\" } } }\n        strategy: { canary: 1, batch: 50% }\n        wait: { timeout: 5m }\n  - cluster: web\n    set: { feature: \"on\" }\n";

/// web and db at once, db slowed down (a pause between its batches) so
/// that both steps are seen running.
const SLOW_TIERS: &str = "name: tiers-slow\nsteps:\n  - name: db\n    cluster: db\n    after: []\n    set: { version: \"5.1.0\" }\n    strategy: { canary: 1, batch: 1, pause: 1s }\n    wait: { timeout: 5m }\n  - name: web\n    cluster: web\n    after: []\n    set: { version: \"2.5.0\", requires: { db: { version: \">=5.1, <6\" } } }\n    strategy: { canary: 1, batch: 50% }\n    wait: { timeout: 5m }\n  - cluster: web\n    set: { feature: \"on\" }\n";

fn write(h: &Harness, name: &str, text: &str) -> String {
    let path = h.path(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The plan's progress record.
fn plan_record(h: &Harness, plan: &str) -> Value {
    let out = h.ok(&["get", &format!("plans/{plan}")]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Both steps' records are there at one moment, and `rollout status` says
/// they run together.
fn seen_running_together(h: &Harness) -> bool {
    let out = h.run(&["rollout", "status"]);
    let text = stdout(&out);
    out.status.success()
        && text.contains("running together: step 1 \"db\" (db), step 2 \"web\" (web)")
        && text.contains("step 3 (web)")
}

fn one_plan_rolls_web_and_db_at_once_and_web_waits_for_db(backend: Backend) {
    let (h, sim, web, db) = two_tiers(backend, 6, 3);
    let plan = write(&h, "tiers.yml", SLOW_TIERS);
    let run = spawn_plan(&h, &plan);
    assert!(
        eventually(WAIT, || seen_running_together(&h)),
        "db and web run at the same time: {}",
        stdout(&h.run(&["rollout", "status"]))
    );
    let status: Value = serde_json::from_slice(
        &h.ok(&["rollout", "status", "web", "--format", "json"])
            .stdout,
    )
    .unwrap();
    let steps = &status[0]["plan_steps"];
    assert_eq!(steps[2]["after"], serde_json::json!([2]), "{status}");
    assert_eq!(steps[2]["standing"], "waiting", "{status}");
    let out = run.wait_with_output();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let log = stdout(&out);
    assert!(log.contains("plan tiers-slow completed"), "{log}");
    assert!(
        log.contains("web: the next batch waits for other tiers: db: version >=5.1, <6"),
        "web's first batch waited for db: {log}"
    );
    // Step 3 (web, after step 2 by default) started only once step 2 was done.
    let done2 = log.find("step 2 done").expect("step 2 done");
    let start3 = log.find("step 3/3").expect("step 3 started");
    assert!(done2 < start3, "{log}");
    assert!(
        eventually(WAIT, || web.iter().all(|n| sim
            .observations(n)
            .last()
            .is_some_and(
                |o| version(&o.desired) == "2.5.0" && o.desired["feature"] == "on"
            ))),
        "every web node ends on 2.5 with the feature on"
    );
    for n in web.iter().chain(&db) {
        sim.stop_node(n);
    }
    let pairs = incompatible_pairs(&sim, &web, &db);
    assert!(pairs.is_empty(), "{pairs:?}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    let record = plan_record(&h, "tiers-slow");
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["done"], 3, "{record}");
    assert_eq!(record["finished"][2], 2, "step 3 finished last: {record}");
}

fn a_killed_orchestrator_resumes_every_running_step(backend: Backend) {
    let (h, sim, web, db) = two_tiers(backend, 4, 3);
    let plan = write(&h, "tiers.yml", SLOW_TIERS);
    // A lock TTL of 5s: the killed orchestrator's lock frees itself soon.
    let mut cmd = h.process();
    cmd.args(["rollout", "run", &plan])
        .args(FAST)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut run = Spawned::new(cmd.spawn().unwrap());
    // Killed while both run: db has released a batch, web waits for it.
    assert!(
        eventually(WAIT, || record_of(&h, "db")
            .is_some_and(|r| r["threshold"].as_f64() > Some(0.0))
            && record_of(&h, "web").is_some()),
        "both steps started"
    );
    run.kill();
    let (db_before, web_before) = (record_of(&h, "db").unwrap(), record_of(&h, "web").unwrap());
    assert_eq!(db_before["status"], "running");
    assert_eq!(web_before["status"], "running");
    // The same plan again resumes both where their records say, once the
    // dead orchestrator's lock has expired (a Consul session outlives its
    // TTL by up to twice, plus the lock delay: try again while it holds).
    let started = Instant::now();
    let out = loop {
        let out = run_plan(&h, &plan, &[]);
        if out.status.success() || !stderr(&out).contains("is held by") {
            break out;
        }
        assert!(
            started.elapsed() < WAIT,
            "the lock never freed itself: {}",
            stderr(&out)
        );
    };
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let log = stdout(&out);
    assert!(log.contains("plan tiers-slow completed"), "{log}");
    let export = h.export();
    let clusters = &export["convergent"]["clusters"];
    assert_eq!(clusters["db"]["desired"]["version"], "5.1.0", "{export}");
    assert_eq!(clusters["web"]["desired"]["version"], "2.5.0", "{export}");
    assert_eq!(clusters["web"]["desired"]["feature"], "on", "{export}");
    assert!(
        export["convergent"]
            .get("rollouts")
            .is_none_or(|r| r.as_object().is_none_or(|m| m.is_empty())),
        "{export}"
    );
    let record = plan_record(&h, "tiers-slow");
    assert_eq!(record["status"], "completed", "{record}");
    // Each step started once: the second run resumed, it did not restart.
    let started = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "step started")
        .count();
    assert_eq!(started, 3, "{record}");
    assert!(
        eventually(WAIT, || web.iter().all(|n| sim
            .observations(n)
            .last()
            .is_some_and(|o| o.desired["feature"] == "on"))),
        "every web node ends with the feature on"
    );
    for n in web.iter().chain(&db) {
        sim.stop_node(n);
    }
    let pairs = incompatible_pairs(&sim, &web, &db);
    assert!(pairs.is_empty(), "{pairs:?}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

fn one_step_failing_stops_the_others_from_releasing(backend: Backend) {
    let (h, sim, _web, db) = two_tiers(backend, 4, 3);
    // Every db node fails on 5.1: db's canary fails and its step rolls
    // back; web, which runs at the same time, is paused with it.
    for n in &db {
        sim.fail_when(n, Box::new(|d: &Value| d["version"] == "5.1.0"));
    }
    let plan = write(
        &h,
        "tiers.yml",
        &SLOW_TIERS.replace(
            "strategy: { canary: 1, batch: 1, pause: 1s }",
            "strategy: { canary: 1, batch: 1, max_failed: 0, on_failure: rollback }",
        ),
    );
    let out = h.run(&[
        "rollout",
        "run",
        &plan,
        "--poll",
        "50ms",
        "--member-ttl",
        "5s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("was rolled back automatically"), "{err}");
    assert!(
        err.contains(
            "Paused with it, so that nothing more is released anywhere: step 2 \"web\" (web)"
        ),
        "{err}"
    );
    let web_record = record_of(&h, "web").expect("web's record stays, paused");
    assert_eq!(web_record["status"], "paused", "{web_record}");
    assert_eq!(
        web_record["threshold"], 0.0,
        "web released nobody: {web_record}"
    );
    assert!(
        web_record["reason"]
            .as_str()
            .unwrap()
            .contains("paused because step 1 \"db\" (db) of plan tiers-slow stopped"),
        "{web_record}"
    );
    assert!(record_of(&h, "db").is_none(), "db's step was rolled back");
    assert_eq!(
        h.export()["convergent"]["clusters"]["db"]["desired"]["version"],
        "5.0.0"
    );
}

fn a_plan_rollback_takes_back_every_running_step(backend: Backend) {
    let (h, _sim, _web, _db) = two_tiers(backend, 4, 3);
    let plan = write(&h, "tiers.yml", SLOW_TIERS);
    let run = rollout::spawn_plan(&h, &plan, &[]);
    assert!(
        eventually(WAIT, || record_of(&h, "db")
            .is_some_and(|r| r["threshold"].as_f64() > Some(0.0))
            && record_of(&h, "web").is_some()),
        "both steps started"
    );
    let mut args = vec!["rollout", "rollback", "--plan", "tiers-slow"];
    args.extend(FAST);
    let out = h.run(&args);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("step 1 (db, under way)") && said.contains("step 2 (web, under way)"),
        "{said}"
    );
    // The forward run saw its steps turned around and stopped.
    let forward = run.wait_with_output();
    assert_eq!(forward.status.code(), Some(75), "{}", stderr(&forward));
    assert!(record_of(&h, "db").is_none() && record_of(&h, "web").is_none());
    let clusters = &h.export()["convergent"]["clusters"];
    assert_eq!(clusters["db"]["desired"]["version"], "5.0.0", "{clusters}");
    assert_eq!(clusters["web"]["desired"]["version"], "2.4.0", "{clusters}");
    assert_eq!(plan_record(&h, "tiers-slow")["status"], "rolled_back");
}

fn a_release_waiting_for_another_tier_times_out(backend: Backend) {
    let (h, sim, web, _db) = two_tiers(backend, 3, 2);
    let plan = write(
        &h,
        "web.yml",
        "name: web-2.5\nsteps:\n  - cluster: web\n    set: { version: \"2.5.0\", requires: { db: { version: \">=5.1\" } } }\n    wait: { timeout: 5m, constraints_timeout: 2s }\n",
    );
    let started = Instant::now();
    let out = h.run(&[
        "rollout",
        "run",
        &plan,
        "--poll",
        "50ms",
        "--member-ttl",
        "5s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(60), "bounded");
    let err = stderr(&out);
    assert!(
        err.contains("batch 1 waited 2s for other tiers and their check-ins still do not meet the step's constraints: db: version >=5.1"),
        "{err}"
    );
    let record = record_of(&h, "web").unwrap();
    assert_eq!(record["status"], "paused", "{record}");
    assert_eq!(record["threshold"], 0.0, "{record}");
    assert!(record["constraints_wait_since"].is_string(), "{record}");
    for n in &web {
        assert!(
            sim.observations(n).iter().all(|o| o.released != Some(true)),
            "{n}"
        );
    }
    // Resumed, the wait starts again; once db reports 5.1 the plan ends.
    h.ok(&["rollout", "resume", "web"]);
    assert!(record_of(&h, "web")
        .unwrap()
        .get("constraints_wait_since")
        .is_none());
    h.ok(&["set", "--cluster", "db", "version=5.1.0"]);
    assert!(
        eventually(WAIT, || h.status("db", &[])["summary"]["converged"] == 2),
        "db reports 5.1"
    );
    let out = h.run(&[
        "rollout",
        "run",
        &plan,
        "--poll",
        "50ms",
        "--member-ttl",
        "5s",
    ]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
}

/// One step fails and pauses (`on_failure: pause`), the other is paused
/// with it: `rollout status` does not call them running together, and
/// `rollout resume --plan` resumes both, after which the plan completes.
fn resume_plan_resumes_every_paused_step(backend: Backend) {
    let (h, sim, web, db) = two_tiers(backend, 4, 3);
    for n in &db {
        sim.fail_when(n, Box::new(|d: &Value| d["version"] == "5.1.0"));
    }
    let plan = write(
        &h,
        "tiers.yml",
        &SLOW_TIERS.replace(
            "strategy: { canary: 1, batch: 1, pause: 1s }",
            "strategy: { canary: 1, batch: 1, max_failed: 0 }",
        ),
    );
    let out = run_plan(&h, &plan, &[]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(
            "Paused with it, so that nothing more is released anywhere: step 2 \"web\" (web)"
        ),
        "{}",
        stderr(&out)
    );
    for c in ["db", "web"] {
        let r = record_of(&h, c).unwrap();
        assert_eq!(r["status"], "paused", "{r}");
    }
    // Paused steps are not "running together".
    let status = stdout(&h.ok(&["rollout", "status"]));
    assert!(!status.contains("running together"), "{status}");
    assert!(
        status.contains("step 1 \"db\" (db)") && status.contains("paused"),
        "{status}"
    );
    for n in &db {
        sim.heal(n);
    }
    // One command resumes both, saying what it resumed.
    let out = h.ok(&[
        "rollout",
        "resume",
        "--plan",
        "tiers-slow",
        "--reason",
        "db fixed",
    ]);
    assert_eq!(
        stdout(&out),
        "plan tiers-slow: resumed 2 steps\n  step 1 (db): rollout tiers-slow.1 is now running\n  \
         step 2 (web): rollout tiers-slow.2 is now running\nrun plan tiers-slow again to go on\n"
    );
    for c in ["db", "web"] {
        let r = record_of(&h, c).unwrap();
        assert_eq!(r["status"], "running", "{r}");
        let last = r["history"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["event"], "resumed", "{r}");
        assert_eq!(last["detail"], "db fixed", "{r}");
    }
    // Nothing paused any more: refused, saying where the steps stand.
    assert_refused(
        &h.run(&["rollout", "resume", "--plan", "tiers-slow"]),
        75,
        &["plan tiers-slow has no paused step: nothing to resume (step 1 (db) is running, step 2 (web) is running)"],
    );
    // JSON: what was resumed, per step.
    h.ok(&["rollout", "pause", "web"]);
    let out = h.ok(&[
        "rollout",
        "resume",
        "--plan",
        "tiers-slow",
        "--format",
        "json",
    ]);
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        said,
        serde_json::json!({"plan": "tiers-slow", "resumed": [
            {"cluster": "web", "rollout": "tiers-slow.2", "step": 2, "direction": "forward"}
        ]})
    );
    let out = run_plan(&h, &plan, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(plan_record(&h, "tiers-slow")["status"], "completed");
    for n in web.iter().chain(&db) {
        sim.stop_node(n);
    }
    assert!(incompatible_pairs(&sim, &web, &db).is_empty());
    assert_refused(
        &h.run(&["rollout", "resume", "--plan", "tiers-slow"]),
        75,
        &["plan tiers-slow has no paused step: nothing to resume (it has no step under way)"],
    );
    assert_refused(
        &h.run(&["rollout", "resume", "--plan", "nope"]),
        75,
        &[
            "no plan nope has run against this store",
            "nothing to resume",
        ],
    );
    assert_refused(
        &h.run(&["rollout", "resume", "--plan", "bad name"]),
        65,
        &["bad name"],
    );
    assert_refused(&h.run(&["rollout", "resume"]), 64, &["<CLUSTER>"]);
    assert_refused(
        &h.run(&["rollout", "resume", "web", "--plan", "tiers-slow"]),
        64,
        &["cannot be used with"],
    );
}

/// Steps of one plan finish out of order: when one is rolled back, the
/// message names exactly the steps done, not "steps 1-N".
fn a_rollback_names_the_steps_that_stay_applied(backend: Backend) {
    let (h, sim, web, _db) = two_tiers(backend, 4, 3);
    for n in &web {
        sim.fail_when(n, Box::new(|d: &Value| d["feature"] == "beta"));
    }
    // db is slow (a pause between batches); web's first step is done long
    // before, and its second fails and rolls back while db still runs.
    let plan = write(
        &h,
        "out-of-order.yml",
        "name: ooo\nsteps:\n  - name: db\n    cluster: db\n    after: []\n    set: { version: \"5.1.0\" }\n    strategy: { canary: 1, batch: 1, pause: 5s }\n  - name: web\n    cluster: web\n    after: []\n    set: { feature: \"on\" }\n    strategy: { batch: 100% }\n  - name: beta\n    cluster: web\n    after: [web]\n    set: { feature: \"beta\" }\n    strategy: { canary: 1, batch: 100%, max_failed: 0, on_failure: rollback }\n",
    );
    let out = run_plan(&h, &plan, &[]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("step 3 (web, rollout ooo.3) was rolled back automatically")
            && err.contains(
                " Step 2 \"web\" (web) of plan ooo stays applied (`convergent rollout rollback --plan ooo` undoes it)."
            )
            && err.contains("Paused with it, so that nothing more is released anywhere: step 1 \"db\" (db)"),
        "{err}"
    );
    assert_eq!(record_of(&h, "db").unwrap()["status"], "paused");
    // db's own rollback: step 2 stays applied (step 1 is the one going back).
    let mut args = vec!["rollout", "rollback", "db"];
    args.extend(FAST);
    let out = h.run(&args);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(
            "step 2 \"web\" (web) of plan ooo stays applied (`convergent rollout rollback --plan ooo` undoes it)"
        ),
        "{said}"
    );
    let clusters = &h.export()["convergent"]["clusters"];
    assert_eq!(clusters["db"]["desired"]["version"], "5.0.0", "{clusters}");
    assert_eq!(clusters["web"]["desired"]["feature"], "on", "{clusters}");
}

/// A `parallel:` group is `after:` written shorter: the steps run at the
/// same time, the entry after waits for all of them, and the records are
/// those of the same plan written with `after:`.
fn a_parallel_group_runs_its_steps_together(backend: Backend) {
    let (h, sim, web, db) = two_tiers(backend, 4, 3);
    let plan = write(&h, "parallel.yml", PARALLEL_TIERS);
    let spelled = write(
        &h,
        "after.yml",
        &SLOW_TIERS.replace(
            "  - cluster: web\n    set: { feature",
            "  - cluster: web\n    after: [db, web]\n    set: { feature",
        ),
    );
    let dry = |p: &str| -> Value {
        serde_json::from_slice(
            &h.ok(&["rollout", "run", p, "--dry-run", "--format", "json"])
                .stdout,
        )
        .unwrap()
    };
    assert_eq!(dry(&plan), dry(&spelled), "the same plan");
    let run = spawn_plan(&h, &plan);
    assert!(
        eventually(WAIT, || seen_running_together(&h)),
        "db and web run at the same time: {}",
        stdout(&h.run(&["rollout", "status"]))
    );
    let out = run.wait_with_output();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let log = stdout(&out);
    let done2 = log.find("step 2 done").expect("step 2 done");
    let start3 = log.find("step 3/3").expect("step 3 started");
    assert!(done2 < start3, "the step after the group waited: {log}");
    let record = plan_record(&h, "tiers-slow");
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(
        record["graph"][2]["after"],
        serde_json::json!([1, 2]),
        "{record}"
    );
    // The plan written with after: is the same plan: it is already done.
    let again = run_plan(&h, &spelled, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("plan tiers-slow completed"));
    for n in web.iter().chain(&db) {
        sim.stop_node(n);
    }
    assert!(incompatible_pairs(&sim, &web, &db).is_empty());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// `parallel:` mistakes are refused by `validate` and the dry run, exit 65,
/// naming the step where it is in the file; nothing is written.
#[test]
fn bad_parallel_groups_are_refused_naming_the_step() {
    let h = Harness::new(Backend::File);
    h.import(&fixture("tiers/view.yml"));
    let before = h.export();
    for (text, expected) in [
        (
            "name: p\nsteps:\n  - parallel:\n      - { cluster: db, set: { version: \"5.1.0\" } }\n",
            "steps[0].parallel[0]: a step of a parallel: group needs a name:",
        ),
        (
            "name: p\nsteps:\n  - parallel:\n      - { name: a, cluster: web, set: { feature: \"on\" } }\n      - { name: b, cluster: web, set: { feature: \"off\" } }\n",
            "steps[0].parallel[1]: step 2 \"b\" (web) could run at the same time as step 1 \"a\" (web), on the same cluster",
        ),
    ] {
        let plan = write(&h, "bad.yml", text);
        assert_refused(&h.run(&["validate", &plan]), 65, &[expected]);
        assert_refused(
            &h.run(&["rollout", "run", &plan, "--dry-run"]),
            65,
            &[expected],
        );
        assert_refused(
            &h.run(&["rollout", "run", &plan, "--lock-wait", "0s"]),
            65,
            &[expected],
        );
    }
    // A cluster the store does not have: refused before anything is written.
    let plan = write(
        &h,
        "nope.yml",
        "name: p\nsteps:\n  - parallel:\n      - { name: a, cluster: nope, set: { feature: \"on\" } }\n",
    );
    assert_refused(
        &h.run(&["rollout", "run", &plan, "--dry-run"]),
        65,
        &["unknown cluster \"nope\""],
    );
    assert_eq!(h.export(), before, "nothing written");
}

/// Plans whose `after:` cannot work are refused by `validate` and by the
/// dry run, exit 65, naming the step; nothing is written.
#[test]
fn bad_step_graphs_are_refused_naming_the_step() {
    let h = Harness::new(Backend::File);
    h.import(&fixture("tiers/view.yml"));
    let before = h.export();
    let step = |name: &str, cluster: &str, after: &str| {
        format!("  - {{ name: {name}, cluster: {cluster}, set: {{ version: \"9\" }}, after: {after} }}\n")
    };
    let cases = [
        (
            format!("{}{}", step("db", "db", "[]"), step("web", "web", "[dbb]")),
            "steps[1].after: no step is named \"dbb\" (names: \"db\", \"web\")",
        ),
        (
            format!("{}{}", step("db", "db", "[web]"), step("web", "web", "[db]")),
            "the after: waits form a cycle, so none of these steps could ever start: step 1 \"db\" (db) waits for step 2 \"web\" (web) waits for step 1 \"db\" (db)",
        ),
        (
            format!("{}{}", step("db", "db", "[]"), step("db", "web", "[]")),
            "steps[1].name: \"db\" is the name of an earlier step too",
        ),
        (
            format!("{}{}", step("a", "web", "[]"), step("b", "web", "[]")),
            "steps[1]: step 2 \"b\" (web) could run at the same time as step 1 \"a\" (web), on the same cluster",
        ),
    ];
    for (i, (steps, needle)) in cases.iter().enumerate() {
        let plan = write(
            &h,
            &format!("bad-{i}.yml"),
            &format!("name: bad-{i}\nsteps:\n{steps}"),
        );
        assert_refused(&h.run(&["validate", &plan]), 65, &[needle]);
        assert_refused(
            &h.run(&["rollout", "run", &plan, "--dry-run"]),
            65,
            &[needle],
        );
        assert_refused(&h.run(&["rollout", "run", &plan]), 65, &[needle]);
    }
    assert_eq!(h.export(), before, "nothing written");
}

/// The dry run shows which steps run together; a plan without `after:`
/// shows what it always did.
#[test]
fn the_dry_run_shows_the_step_graph() {
    let h = Harness::new(Backend::File);
    h.import(&fixture("tiers/view.yml"));
    let plan = fixture("tiers/tiers-2.5.yml").display().to_string();
    h.ok(&["validate", &plan]);
    let text = stdout(&h.ok(&["rollout", "run", &plan, "--dry-run"]));
    assert!(
        text.contains("step 2: cluster web, rollout tiers-2.5.2")
            && text.contains("  after: nothing (starts with the plan)\n  runs at the same time as: step 1 \"db\" (db)\n"),
        "{text}"
    );
    let json: Value = serde_json::from_slice(
        &h.ok(&["rollout", "run", &plan, "--dry-run", "--format", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(json[0]["runs_with"], serde_json::json!([2]), "{json}");
    assert_eq!(json[1]["after"], serde_json::json!([]), "{json}");
    assert_eq!(json[1]["name"], "web", "{json}");
    let sequence = fixture("tiers/web-2.5.yml").display().to_string();
    let text = stdout(&h.ok(&["rollout", "run", &sequence, "--dry-run"]));
    assert!(
        !text.contains("after:") && !text.contains("runs at the same time"),
        "{text}"
    );
    let json: Value = serde_json::from_slice(
        &h.ok(&["rollout", "run", &sequence, "--dry-run", "--format", "json"])
            .stdout,
    )
    .unwrap();
    assert!(
        json[0].get("after").is_none() && json[0].get("runs_with").is_none(),
        "{json}"
    );
}
