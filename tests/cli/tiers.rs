//! Decoupled tiers: a cluster's desired state may require what another
//! cluster's nodes report (`requires`), and a node holds itself to a
//! compatible state until it does, with or without an orchestrator.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::simulation::{rank, Simulation};
use crate::support::{
    assert_refused, eventually, fixture, stderr, stdout, store_suite, Backend, Harness, Spawned,
};

store_suite! {
    the_canary_waits_for_the_other_tier_then_moves_by_itself,
    a_node_down_through_the_change_returns_to_a_compatible_state,
    without_a_hold_state_an_incompatible_node_gets_nothing,
    a_db_downgrade_live_web_forbids_is_refused,
    a_released_node_holds_to_the_state_before_the_rollout,
    web_and_db_rolled_in_parallel_never_run_an_incompatible_pair,
}

pub const WAIT: Duration = Duration::from_secs(90);

pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i:02}")).collect()
}

pub fn version(desired: &Value) -> &str {
    desired["version"].as_str().unwrap_or("?")
}

/// Whether a version string is at least 5.1 (db) — the checker's own
/// comparison, independent of the binary's semver matching.
fn db_compatible(v: &str) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major == 5 && minor >= 1
}

/// Every web observation at 2.5 against what every db node ran at that
/// moment (its latest observation before it): the pairs that must never be.
pub fn incompatible_pairs(sim: &Simulation, web: &[String], db: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for w in web {
        for o in sim.observations(w) {
            if version(&o.desired) != "2.5.0" {
                continue;
            }
            for d in db {
                let running = sim.observations(d).into_iter().rev().find(|x| x.at <= o.at);
                if let Some(x) = running.filter(|x| !db_compatible(version(&x.desired))) {
                    out.push(format!(
                        "{w} ran web 2.5.0 while {d} ran db {}",
                        version(&x.desired)
                    ));
                }
            }
        }
    }
    out
}

/// A store with the tiers fixture, and `w` web and `d` db simulated nodes
/// that have all reported once.
pub fn two_tiers(
    backend: Backend,
    w: usize,
    d: usize,
) -> (Harness, Simulation, Vec<String>, Vec<String>) {
    let h = Harness::new(backend);
    h.import(&fixture("tiers/view.yml"));
    let (web, db) = (names("web", w), names("db", d));
    let mut sim = Simulation::start(&h, "web", &web, Duration::from_millis(50));
    for n in &db {
        sim.add("db", n);
    }
    assert!(
        eventually(WAIT, || {
            h.status("web", &[])["summary"]["converged"] == w
                && h.status("db", &[])["summary"]["converged"] == d
        }),
        "every node reported once"
    );
    (h, sim, web, db)
}

/// Starts `rollout run PLAN` with fast timings, in the background.
pub fn spawn_plan(h: &Harness, plan: &str) -> Spawned {
    let mut cmd = h.process();
    cmd.args([
        "rollout",
        "run",
        plan,
        "--poll",
        "50ms",
        "--member-ttl",
        "5s",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    Spawned::new(cmd.spawn().unwrap())
}

fn the_canary_waits_for_the_other_tier_then_moves_by_itself(backend: Backend) {
    let (h, sim, web, db) = two_tiers(backend, 4, 3);

    let run = spawn_plan(&h, &fixture("tiers/web-2.5.yml").display().to_string());

    // db still reports 5.0: the orchestrator releases no web node, and every
    // web node keeps running 2.4.
    assert!(
        eventually(WAIT, || record_of(&h, "web").is_some()),
        "the rollout record is written"
    );
    let runs_before: usize = web.iter().map(|n| sim.observations(n).len()).sum();
    assert!(
        eventually(WAIT, || web
            .iter()
            .map(|n| sim.observations(n).len())
            .sum::<usize>()
            >= runs_before + 20),
        "web keeps running"
    );
    for n in &web {
        for o in sim.observations(n) {
            assert_eq!(version(&o.desired), "2.4.0", "{n} moved too early");
            assert_ne!(o.released, Some(true), "{n} released while db runs 5.0");
        }
    }
    assert_eq!(record_of(&h, "web").unwrap()["threshold"], 0.0);
    // The plan's first step is rollout `web-2.5.0.1`: its canary is the
    // lowest rank.
    let canary = web
        .iter()
        .min_by(|a, b| rank("web-2.5.0.1", a).total_cmp(&rank("web-2.5.0.1", b)))
        .unwrap()
        .clone();

    // db moves to 5.1 on its own: once all its nodes report it, the
    // canary moves by itself, and the plan goes on to the end.
    h.ok(&["set", "--cluster", "db", "version=5.1.0"]);
    assert!(
        eventually(WAIT, || sim
            .observations(&canary)
            .last()
            .is_some_and(|o| version(&o.desired) == "2.5.0")),
        "the canary moves to 2.5 once db reports 5.1"
    );
    let out = run.wait_with_output();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let log = stdout(&out);
    assert!(log.contains("completed"), "{log}");
    assert!(
        log.contains("web: the next batch waits for other tiers: db: version >=5.1, <6 on 100% of nodes (0 of 3 live node(s) match, 3 needed)"),
        "{log}"
    );
    let pairs = incompatible_pairs(&sim, &web, &db);
    assert!(pairs.is_empty(), "{pairs:?}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

fn a_node_down_through_the_change_returns_to_a_compatible_state(backend: Backend) {
    let h = Harness::new(backend);
    h.import(&fixture("tiers/view.yml"));
    h.converge("db", "db-01", "success");
    h.converge("web", "web-01", "success");
    // web-01 goes down; meanwhile web's desired state moves to 2.5, which
    // needs db 5.1, before db has moved.
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "version=2.5.0",
        "requires.db.version=>=5.1",
    ]);
    // web-02 is new: it gets the last desired state that is compatible,
    // rebuilt from the cluster's history.
    let held = h.attributes("web", "web-02");
    let c = &held["convergent"];
    assert_eq!(c["state"], "converged", "{held}");
    assert_eq!(c["desired"]["version"], "2.4.0", "{held}");
    assert!(c["desired"].get("requires").is_none(), "{held}");
    assert_eq!(c["constraints"]["met"], false, "{held}");
    assert_eq!(c["constraints"]["held_to"], "earlier", "{held}");
    let explained = stdout(&h.ok(&["explain", "--cluster", "web", "--node", "web-02"]));
    assert!(
        explained.contains("node held to an earlier desired state of the cluster"),
        "{explained}"
    );
    assert!(
        explained.contains("WAIT db: version >=5.1 on 100% of nodes: 0 of 1 live node(s) match, 1 needed; observed version=5.0.0: 1"),
        "{explained}"
    );
    // status shows the skew matrix: what each tier runs, what holds.
    let skew = &h.status("web", &[])["skew"];
    assert_eq!(skew["versions"]["db"]["5.0.0"], 1, "{skew}");
    assert_eq!(skew["constraints"][0]["cluster"], "web", "{skew}");
    assert_eq!(skew["constraints"][0]["check"]["met"], false, "{skew}");
    let table = stdout(&h.ok(&["status", "--cluster", "db", "--skew"]));
    assert!(
        table.contains("UNMET  web (desired) requires db: version >=5.1 on 100% of nodes: 0 of 1 live match, 1 needed"),
        "{table}"
    );
    // db moves and reports; web-01 comes back and gets 2.5 at once.
    h.ok(&["set", "--cluster", "db", "version=5.1.0"]);
    h.converge("db", "db-01", "success");
    assert_eq!(
        h.status("db", &["--skew"])["skew"]["constraints"][0]["check"]["met"],
        true
    );
    let back = h.attributes("web", "web-01");
    let c = &back["convergent"];
    assert_eq!(c["state"], "converged", "{back}");
    assert_eq!(c["desired"]["version"], "2.5.0", "{back}");
    assert_eq!(c["constraints"]["met"], true, "{back}");
    // A failed db report does not count as running 5.1.
    h.converge("db", "db-01", "failure");
    assert_eq!(
        h.attributes("web", "web-01")["convergent"]["desired"]["version"],
        "2.4.0"
    );
}

fn without_a_hold_state_an_incompatible_node_gets_nothing(backend: Backend) {
    let h = Harness::new(backend);
    h.import(&fixture("tiers/view.yml"));
    h.converge("db", "db-01", "success");
    // Written past `set`, so no history holds an earlier state.
    h.put_document(
        "convergent/clusters/db/desired",
        serde_json::json!({"state": "converged", "version": "5.0.0", "requires": {"web": {"version": ">=3"}}}),
    );
    let started = Instant::now();
    let out = h.run(&["attributes", "--cluster", "db", "--node", "db-01"]);
    assert_refused(
        &out,
        75,
        &[
            "node \"db-01\" of cluster \"db\"",
            "web: version >=3 on 100% of nodes (0 of 0 live node(s) match, 1 needed)",
            "declares no `hold` state",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // With a hold state declared, the node takes it instead.
    h.put_document(
        "convergent/clusters/db/schema",
        serde_json::json!({"states": ["off", "converged"], "hold": "off"}),
    );
    let held = h.attributes("db", "db-01");
    assert_eq!(held["convergent"]["state"], "off", "{held}");
    assert_eq!(
        held["convergent"]["constraints"]["held_to"], "hold",
        "{held}"
    );
}

fn a_db_downgrade_live_web_forbids_is_refused(backend: Backend) {
    let h = Harness::new(backend);
    h.import(&fixture("tiers/view.yml"));
    h.ok(&["set", "--cluster", "db", "version=5.1.0"]);
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "version=2.5.0",
        "requires.db.version=>=5.1, <6",
    ]);
    let write = |name: &str, version: &str| {
        let path = h.path(name);
        std::fs::write(
            &path,
            format!("name: db-{version}\nsteps:\n  - cluster: db\n    set: {{ version: \"{version}\" }}\n"),
        )
        .unwrap();
        path.display().to_string()
    };
    let before = h.export();
    let down = write("down.yml", "5.0.0");
    for extra in [&["--dry-run"][..], &[]] {
        let mut args = vec!["rollout", "run", &down];
        args.extend_from_slice(extra);
        let out = h.run(&args);
        assert_eq!(out.status.code(), Some(65), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("step 1 of plan db-5.0.0 is refused: it would make db offer {\"version\":\"5.0.0\"}, but web's desired state requires db: version >=5.1, <6 on 100% of nodes"),
            "{err}"
        );
        assert!(err.contains("convergent/clusters/web/desired"), "{err}");
    }
    assert_eq!(h.export(), before, "a refused plan writes nothing");
    // An upgrade within the range passes.
    let up = write("up.yml", "5.2.0");
    h.ok(&["rollout", "run", &up, "--dry-run"]);
}

fn web_and_db_rolled_in_parallel_never_run_an_incompatible_pair(backend: Backend) {
    let (h, sim, web, db) = two_tiers(backend, 8, 4);
    let db_plan = h.path("db-5.1.yml");
    std::fs::write(
        &db_plan,
        "name: db-5.1.0\nsteps:\n  - cluster: db\n    set: { version: \"5.1.0\" }\n    strategy: { canary: 1, batch: 1 }\n    wait: { timeout: 5m }\n",
    )
    .unwrap();
    // Both plans at once: web's starts first, so its canary waits for db.
    let web_run = spawn_plan(&h, &fixture("tiers/web-2.5.yml").display().to_string());
    let db_run = spawn_plan(&h, &db_plan.display().to_string());
    for (what, run) in [("db", db_run), ("web", web_run)] {
        let out = run.wait_with_output();
        assert!(
            out.status.success(),
            "{what}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
    assert!(
        eventually(WAIT, || web.iter().all(|n| sim
            .observations(n)
            .last()
            .is_some_and(|o| version(&o.desired) == "2.5.0"))),
        "every web node ends on 2.5"
    );
    for n in web.iter().chain(&db) {
        sim.stop_node(n);
    }
    let pairs = incompatible_pairs(&sim, &web, &db);
    assert!(pairs.is_empty(), "{pairs:?}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// The rollout record of `cluster`, as `get` prints it.
pub fn record_of(h: &Harness, cluster: &str) -> Option<Value> {
    let out = h.run(&["get", &format!("rollouts/{cluster}")]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn a_released_node_holds_to_the_state_before_the_rollout(backend: Backend) {
    let h = Harness::new(backend);
    h.import(&fixture("tiers/view.yml"));
    h.converge("db", "db-01", "success");
    // Released by hand (or before db went back): the patch needs db 5.1.
    h.put_document(
        "convergent/rollouts/web",
        serde_json::json!({"id": "web-2.5", "status": "running", "threshold": 1.0,
            "patch": {"version": "2.5.0", "requires": {"db": {"version": ">=5.1, <6"}}}}),
    );
    let held = h.attributes("web", "web-01");
    let c = &held["convergent"];
    assert_eq!(c["rollout"]["released"], true, "{held}");
    assert_eq!(c["desired"]["version"], "2.4.0", "{held}");
    assert_eq!(c["constraints"]["held_to"], "previous", "{held}");
    assert!(
        c["constraints"]["waiting_for"][0]
            .as_str()
            .unwrap()
            .contains(
                "db: version >=5.1, <6 on 100% of nodes (0 of 1 live node(s) match, 1 needed)"
            ),
        "{held}"
    );
    let explained = stdout(&h.ok(&["explain", "--cluster", "web", "--node", "web-01"]));
    assert!(
        explained.contains("node held to the cluster's desired state without the rollout patch"),
        "{explained}"
    );
    assert!(
        explained.contains("observed version=5.0.0: 1"),
        "{explained}"
    );
}

#[test]
fn validate_checks_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let h = Harness::new(Backend::File);
    let good = fixture("tiers/view.yml").display().to_string();
    h.ok(&["validate", &good]);

    let cases = [
        (
            "range.yml",
            "convergent:\n  clusters:\n    web:\n      desired: { version: \"2.5\", requires: { db: { version: \"five\" } } }\n    db:\n      desired: { version: \"5.1\" }\n",
            "`requires.db.version`: \"five\" is not a semver range",
        ),
        (
            "missing.yml",
            "convergent:\n  clusters:\n    web:\n      desired: { version: \"2.5\", requires: { dbx: { version: \">=5.1\" } } }\n",
            "`requires.dbx` names a cluster the view does not have",
        ),
        (
            "never.yml",
            "convergent:\n  clusters:\n    web:\n      desired: { version: \"2.5\", requires: { db: { version: \">=6\" } } }\n    db:\n      desired: { version: \"5.1\" }\n",
            "could never hold",
        ),
        (
            "cycle.yml",
            "convergent:\n  clusters:\n    web:\n      desired: { state: converged, version: \"2.4\" }\n    db:\n      desired: { state: converged, version: \"5.0\" }\n  rollouts:\n    web: { id: w, status: running, threshold: 0.5, patch: { version: \"2.5\", requires: { db: { version: \">=5.1\" } } } }\n    db: { id: d, status: running, threshold: 0.5, patch: { version: \"5.1\", requires: { web: { version: \">=2.5\" } } } }\n",
            "clusters wait for each other in a cycle (db -> web -> db)",
        ),
    ];
    for (name, text, needle) in cases {
        let path = write(name, text);
        let out = h.run(&["validate", &path]);
        assert_refused(&out, 65, &[needle]);
    }
}
