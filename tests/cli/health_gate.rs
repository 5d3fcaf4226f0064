//! Rollouts gated on health: the nodes of a batch must pass their health
//! checks (for `min_healthy`, without a break), a node not healthy by
//! `healthy_deadline` counts as failed, `on_failure: rollback` takes the
//! step back on its own (and resumes after a SIGKILL), `promote: manual`
//! holds after the first batch, and batch lists release exactly their sizes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::rollout::{
    all_caught_up, assert_stopped, by_rank, fleet, generation_of, names, plan_file, record,
    run_plan, spawn_plan, WAIT,
};
use crate::support::simulation::{rank, Simulation};
use crate::support::{eventually, fixture, stderr, stdout, store_suite, Backend, Harness};

store_suite! {
    unhealthy_nodes_hold_the_batch_until_the_timeout_names_them,
    a_node_not_healthy_by_the_deadline_counts_as_failed,
    min_healthy_waits_and_a_flap_starts_it_again,
    on_failure_rollback_reverts_and_resumes_after_a_sigkill,
    promote_manual_holds_after_the_canary_until_promoted,
    batch_lists_release_exactly_their_sizes,
}

const NEW: &str = "2.5.0";

fn on_new_version(d: &Value) -> bool {
    d["version"] == NEW
}

fn plan(h: &Harness, name: &str, strategy: &str, wait: &str) -> String {
    plan_file(
        h,
        &format!("{name}.yml"),
        &format!(
            "name: {name}\nsteps:\n  - cluster: web\n    set: {{version: '{NEW}'}}\n    strategy: {strategy}\n    wait: {wait}\n"
        ),
    )
}

fn member(h: &Harness, node: &str) -> Value {
    h.status("web", &[])["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == node)
        .cloned()
        .unwrap()
}

fn unhealthy_nodes_hold_the_batch_until_the_timeout_names_them(backend: Backend) {
    let (h, sim) = fleet(backend);
    for n in names("web", 8) {
        sim.unhealthy_when(&n, Box::new(on_new_version));
    }
    let p = plan(
        &h,
        "held",
        "{canary: 1, batch: 50%}",
        "{healthy: true, timeout: 3s}",
    );
    let order = by_rank("held.1", &names("web", 8));
    let out = run_plan(&h, &p, &[]);
    assert_stopped(
        &out,
        75,
        &[
            "batch 1 did not converge within 3s",
            &format!("{} (unhealthy since ", order[0]),
        ],
    );
    let rec = record(&h, "web").unwrap();
    assert_eq!(rec["batches"], 1, "the next batch was never released");
    assert_eq!(
        rec["threshold"].as_f64().unwrap(),
        rank("held.1", &order[0])
    );
    // It did converge: chef-client succeeded; its health is what holds it.
    let canary = member(&h, &order[0]);
    assert_eq!(canary["state"], "converged");
    assert_eq!(canary["observed_version"], NEW);
    assert_eq!(canary["health"]["healthy"], false);
    assert_eq!(sim.violations(), Vec::<String>::new());
}

fn a_node_not_healthy_by_the_deadline_counts_as_failed(backend: Backend) {
    let (h, sim) = fleet(backend);
    let order = by_rank("deadline.1", &names("web", 8));
    // The canary is fine; one node of the next batch is not.
    for n in names("web", 8) {
        if n == order[2] {
            sim.unhealthy_when(&n, Box::new(on_new_version));
        } else {
            sim.unhealthy_when(&n, Box::new(|_| false));
        }
    }
    let p = plan(
        &h,
        "deadline",
        "{canary: 1, batch: 2, max_failed: 0}",
        "{healthy: true, healthy_deadline: 2s, timeout: 1m}",
    );
    let out = run_plan(&h, &p, &[]);
    assert_stopped(
        &out,
        75,
        &[
            "1 released nodes failed, more than the 0 allowed",
            &format!("{} (unhealthy since ", order[2]),
            ": sim-health (test exited with exit status: 1)",
            "rollout resume web",
        ],
    );
    let rec = record(&h, "web").unwrap();
    assert_eq!(rec["status"], "paused");
    assert_eq!(rec["batches"], 2);
    let shown = stdout(&h.ok(&["rollout", "status", "web"]));
    assert!(shown.contains("batch 2 is held by 1 node:"), "{shown}");
    assert!(
        shown.contains(&format!("  {}: unhealthy since ", order[2])),
        "which node, which check, since when: {shown}"
    );
    assert!(
        shown.contains("released nodes' health: 2 healthy, 1 unhealthy"),
        "{shown}"
    );
    let explained = stdout(&h.ok(&["explain", "--cluster", "web", "--node", &order[2]]));
    assert!(
        explained.contains("health: UNHEALTHY at")
            && explained.contains("FAIL sim-health (declared by the recipe)")
            && explained.contains("holds batch 2 of rollout deadline.1: unhealthy since "),
        "{explained}"
    );
    assert_eq!(sim.violations(), Vec::<String>::new());
}

fn min_healthy_waits_and_a_flap_starts_it_again(backend: Backend) {
    let (h, sim) = fleet(backend);
    let order = by_rank("steady.1", &names("web", 8));
    let sick = Arc::new(AtomicBool::new(true));
    for n in names("web", 8) {
        if n == order[0] {
            let sick = Arc::clone(&sick);
            sim.unhealthy_when(&n, Box::new(move |_| sick.load(Ordering::SeqCst)));
        } else {
            sim.unhealthy_when(&n, Box::new(|_| false));
        }
    }
    let p = plan(
        &h,
        "steady",
        "{canary: 1, batch: 100%}",
        // Long enough that the brief healthy spell before the flap (one
        // simulated run, seconds on a loaded machine) never reaches it.
        "{min_healthy: 10s, timeout: 2m}",
    );
    let orchestrator = spawn_plan(&h, &p, &[]);
    let canary_health = |healthy: bool| {
        eventually(WAIT, || {
            let m = member(&h, &order[0]);
            m["observed_version"] == NEW && m["health"]["healthy"] == healthy
        })
    };
    assert!(canary_health(false), "the canary converged, unhealthy");
    // Healthy for a moment, then a check fails: the clock starts again.
    sick.store(false, Ordering::SeqCst);
    assert!(canary_health(true));
    sick.store(true, Ordering::SeqCst);
    assert!(canary_health(false));
    let healthy_again = Instant::now();
    sick.store(false, Ordering::SeqCst);
    assert!(eventually(WAIT, || record(&h, "web").is_none_or(|r| r["batches"] == 2)));
    let waited = healthy_again.elapsed();
    // Times are whole seconds: 10s of health is at least 9s of real time.
    assert!(
        waited >= Duration::from_secs(9),
        "released after {waited:?}"
    );
    let out = orchestrator.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sim.violations(), Vec::<String>::new());
}

fn on_failure_rollback_reverts_and_resumes_after_a_sigkill(backend: Backend) {
    let (h, sim) = fleet(backend);
    let before: Vec<String> = names("web", 8)
        .iter()
        .map(|n| generation_of(&h, "web", n))
        .collect();
    let order = by_rank("revert.1", &names("web", 8));
    for n in names("web", 8) {
        if n == order[3] {
            sim.unhealthy_when(&n, Box::new(on_new_version));
        } else {
            sim.unhealthy_when(&n, Box::new(|_| false));
        }
    }
    let p = plan(
        &h,
        "revert",
        "{canary: 1, batch: 2, max_failed: 0, on_failure: rollback}",
        "{healthy: true, healthy_deadline: 2s, timeout: 1m}",
    );
    let mut orchestrator = spawn_plan(&h, &p, &[]);
    assert!(
        eventually(WAIT, || record(&h, "web").is_some_and(|r| {
            r["direction"] == "back" && r["batches"].as_u64() >= Some(1)
        })),
        "the rollback got under way"
    );
    orchestrator.kill(); // SIGKILL, mid-revert
                         // The killed orchestrator's lock frees itself with its TTL (Consul
                         // sessions live at least 10s, and up to twice their TTL).
    let out = h.run(&[
        "rollout",
        "run",
        &p,
        "--poll",
        "50ms",
        "--member-ttl",
        "3s",
        "--lock-ttl",
        "5s",
        "--lock-wait",
        "45s",
    ]);
    assert_stopped(
        &out,
        75,
        &[
            "was rolled back automatically",
            &format!("{} (unhealthy since ", order[3]),
            "has reported the desired state it had before this step",
        ],
    );
    assert!(record(&h, "web").is_none(), "the record is gone");
    let after: Vec<String> = names("web", 8)
        .iter()
        .map(|n| generation_of(&h, "web", n))
        .collect();
    assert_eq!(after, before, "every node is back on the previous state");
    assert!(all_caught_up(&h, &sim, "web", &names("web", 8)));
    let plan_record = h.export()["convergent"]["plans"]["revert"].clone();
    assert_eq!(plan_record["status"], "rolled_back");
    let took_back = plan_record["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "took back")
        .count();
    assert!(took_back >= 2, "batch by batch: {plan_record}");
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["version"],
        "2.4.0"
    );
    assert_eq!(sim.violations(), Vec::<String>::new());
}

fn promote_manual_holds_after_the_canary_until_promoted(backend: Backend) {
    let (h, sim) = fleet(backend);
    let p = plan(
        &h,
        "gated",
        "{canary: 1, batch: 100%, promote: manual}",
        "{}",
    );
    let orchestrator = spawn_plan(&h, &p, &[]);
    assert!(eventually(WAIT, || record(&h, "web")
        .is_some_and(|r| r.get("awaiting_promotion_since").is_some())));
    // Held: looked at a few times over a second, nothing more goes out.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(record(&h, "web").unwrap()["batches"], 1);
    }
    let shown = stdout(&h.ok(&["rollout", "status", "web"]));
    assert!(shown.contains("awaiting promotion"), "{shown}");
    let said = stdout(&h.ok(&["rollout", "promote", "web", "--reason", "canary looks good"]));
    assert!(said.contains("web"), "{said}");
    let out = orchestrator.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("waiting for `convergent rollout promote web`"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["version"],
        NEW
    );
    assert_eq!(sim.violations(), Vec::<String>::new());
}

fn batch_lists_release_exactly_their_sizes(backend: Backend) {
    let h = Harness::new(backend);
    h.import(&fixture("rollout/view.yml"));
    let sim = Simulation::start(&h, "web", &names("web", 10), Duration::from_millis(50));
    assert!(eventually(WAIT, || h.status("web", &[])["summary"]
        ["converged"]
        == 10));
    let p = plan(&h, "growing", "{batch: [1, 2, 30%]}", "{}");
    let out = run_plan(&h, &p, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sizes: Vec<usize> = stdout(&out)
        .lines()
        .filter(|l| l.contains("released batch"))
        .map(|l| {
            l.split('(')
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    // 1, 2, then 30% of 10 (3) repeating: 3, and the last 1... of what is left.
    assert_eq!(sizes, [1, 2, 3, 3, 1], "{}", stdout(&out));
    assert_eq!(sim.violations(), Vec::<String>::new());
}

/// At 10,000 nodes the same arithmetic, through a real fleet read: each
/// batch of the plan's dry run holds exactly its size.
#[test]
fn batch_lists_at_ten_thousand_nodes() {
    let h = Harness::new(Backend::File);
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut observed = serde_json::Map::new();
    for i in 0..10_000 {
        observed.insert(
            format!("web-{i:05}"),
            serde_json::json!({"generation": "0123456789abcdef", "status": "success",
                               "reported_at": now, "convergent_version": "0.1.0"}),
        );
    }
    let view = serde_json::json!({"convergent": {
        "clusters": {"web": {"desired": {"version": "1"}}},
        "observed": {"web": observed},
    }});
    let file = h.path("big.json");
    std::fs::write(&file, view.to_string()).unwrap();
    h.import(&file);
    let plan = convergent::rollout::plan::Plan::parse(
        std::path::Path::new("p.yml"),
        "name: big\nsteps:\n  - cluster: web\n    set: {version: '2'}\n    strategy: {canary: 1, batch: [5, 100, 25%]}\n",
    )
    .unwrap();
    let store = crate::support::open_store(&h.store_url);
    let layout = convergent::layout::Layout::new(&"convergent".parse().unwrap());
    let previews = convergent::rollout::orchestrator::preview(
        store.as_ref(),
        &layout,
        &plan,
        Duration::from_secs(3600),
    )
    .unwrap();
    let sizes: Vec<usize> = previews[0].batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1, 5, 100, 2500, 2500, 2500, 2394]);
}
