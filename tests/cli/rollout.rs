//! The orchestrator against simulated nodes that run the real binary: plans
//! complete within the threshold, down and new nodes end right, a killed
//! orchestrator resumes to the same view, one orchestrator at a time,
//! failures pause, rollback returns nodes a batch at a time.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::simulation::{rank, Simulation};
use crate::support::{
    assert_refused, eventually, fixture, stderr, stdout, store_suite, Backend, Harness, Spawned,
};

store_suite! {
    a_three_step_plan_completes_within_the_threshold,
    batches_release_exactly_their_size,
    a_node_down_during_the_plan_converges_to_the_final_state_on_its_first_run,
    a_node_added_mid_rollout_lands_on_the_right_side_and_never_flips,
    two_orchestrators_started_together_one_proceeds,
    failures_beyond_max_failed_pause_until_resumed,
    rollback_returns_nodes_a_batch_at_a_time,
    an_operator_pauses_and_resumes,
    dry_run_shows_the_batches_and_writes_nothing,
    a_resumed_step_gets_a_fresh_wait_timeout,
}

pub(crate) const WAIT: Duration = Duration::from_secs(60);
/// Fast timings for tests: nodes converge every 50ms, the orchestrator looks
/// every 50ms, a node silent for 3s is absent, a killed orchestrator's lock
/// frees itself within 5s (shorter risks losing a live lock's lease on a
/// loaded machine).
pub(crate) const FAST: [&str; 8] = [
    "--poll",
    "50ms",
    "--member-ttl",
    "3s",
    "--lock-ttl",
    "5s",
    "--lock-wait",
    "10s",
];

pub(crate) fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i:02}")).collect()
}

/// A store holding the rollout fixture, and a fleet of 8 web and 4 db
/// nodes that have all reported once.
pub(crate) fn fleet(backend: Backend) -> (Harness, Simulation) {
    let h = Harness::new(backend);
    h.import(&fixture("rollout/view.yml"));
    let mut sim = Simulation::start(&h, "web", &names("web", 8), Duration::from_millis(50));
    for n in names("db", 4) {
        sim.add("db", &n);
    }
    assert!(
        eventually(WAIT, || {
            h.status("web", &[])["summary"]["converged"] == 8
                && h.status("db", &[])["summary"]["converged"] == 4
        }),
        "every node reported once"
    );
    (h, sim)
}

/// Asserts how a run that got under way stopped: its exit code and the
/// reason on stderr (its progress log on stdout is expected).
#[track_caller]
pub(crate) fn assert_stopped(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
}

pub(crate) fn plan_file(h: &Harness, name: &str, text: &str) -> String {
    let path = h.path(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

pub(crate) fn run_plan(h: &Harness, plan: &str, extra: &[&str]) -> Output {
    let mut args = vec!["rollout", "run", plan];
    args.extend_from_slice(&FAST);
    args.extend_from_slice(extra);
    h.run(&args)
}

pub(crate) fn spawn_plan(h: &Harness, plan: &str, extra: &[&str]) -> Spawned {
    let mut cmd = h.process();
    cmd.args(["rollout", "run", plan])
        .args(FAST)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Spawned::new(cmd.spawn().unwrap())
}

pub(crate) fn record(h: &Harness, cluster: &str) -> Option<Value> {
    let out = h.run(&["get", &format!("rollouts/{cluster}")]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

pub(crate) fn generation_of(h: &Harness, cluster: &str, node: &str) -> String {
    h.attributes(cluster, node)["convergent"]["generation"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until every node's latest observation is `cluster`'s current generation.
pub(crate) fn all_caught_up(
    h: &Harness,
    sim: &Simulation,
    cluster: &str,
    nodes: &[String],
) -> bool {
    eventually(WAIT, || {
        nodes.iter().all(|n| {
            let want = generation_of(h, cluster, n);
            sim.observations(n)
                .last()
                .is_some_and(|o| o.generation == want)
        })
    })
}

fn a_three_step_plan_completes_within_the_threshold(backend: Backend) {
    let (h, sim) = fleet(backend);
    let out = run_plan(&h, &fixture("plans/upgrade.yml").display().to_string(), &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let log = stdout(&out);
    assert!(log.contains("plan upgrade-2.5.0 completed"), "{log}");
    assert!(
        log.contains("released batch 1 (1 node, threshold"),
        "the canary comes first: {log}"
    );

    let view = h.export();
    let clusters = &view["convergent"]["clusters"];
    assert_eq!(
        clusters["web"]["desired"],
        json!({"state": "converged", "version": "2.5.0", "app": {"port": 8080, "workers": 8}})
    );
    assert_eq!(clusters["db"]["desired"]["version"], "5.1");
    assert!(
        view["convergent"].get("rollouts").is_none(),
        "no record is left behind"
    );
    let progress = &view["convergent"]["plans"]["upgrade-2.5.0"];
    assert_eq!(
        (progress["status"].as_str(), progress["done"].as_u64()),
        (Some("completed"), Some(3))
    );
    let events = progress["history"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["event"] == "released"
            && e["detail"]
                .as_str()
                .unwrap()
                .starts_with("upgrade-2.5.0.3: canary 1: ")),
        "the plan keeps each step's batches once its record is gone: {events:?}"
    );
    let history = clusters["web"]["history"].as_array().unwrap();
    assert_eq!(
        history.iter().filter(|c| c["command"] == "rollout").count(),
        2,
        "both web steps are in its history"
    );

    assert!(all_caught_up(&h, &sim, "web", &names("web", 8)));
    assert_eq!(sim.violations(), Vec::<String>::new());
    // Running a completed plan again does nothing.
    let again = run_plan(&h, &fixture("plans/upgrade.yml").display().to_string(), &[]);
    assert!(again.status.success());
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"],
        clusters["web"]["desired"]
    );
}

fn a_node_down_during_the_plan_converges_to_the_final_state_on_its_first_run(backend: Backend) {
    let (h, sim) = fleet(backend);
    sim.stop_node("web-08");
    let out = run_plan(&h, &fixture("plans/upgrade.yml").display().to_string(), &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let seen_before = sim.observations("web-08").len();
    sim.start_node("web-08");
    assert!(eventually(WAIT, || sim.observations("web-08").len() > seen_before));
    let first = sim.observations("web-08")[seen_before].clone();
    assert_eq!(first.generation, generation_of(&h, "web", "web-08"));
    assert_eq!(first.desired["version"], "2.5.0");
    assert_eq!(
        first.state.as_deref(),
        Some("converged"),
        "never saw the intermediate `off`"
    );
    assert_eq!(sim.violations(), Vec::<String>::new());
}

/// How many members read themselves released, as `status` computes it.
fn released_count(h: &Harness) -> usize {
    h.status("web", &[])["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["released"] == true)
        .count()
}

fn batches_release_exactly_their_size(backend: Backend) {
    let (h, _sim) = fleet(backend);
    // A long pause between batches gives the test time to look at each.
    // (With this name the canary's rank is one that a JSON parser off by an
    // ulp reads back too low, which once left the canary unreleased.)
    let plan = plan_file(
        &h,
        "exact.yml",
        "name: exact-2.5.3\nsteps:\n  - cluster: web\n    set: {version: '2.5.0'}\n    strategy: {canary: 1, batch: 25%, pause: 2s}\n",
    );
    let orchestrator = spawn_plan(&h, &plan, &[]);
    // The canary, then 2 (25% of 8) at a time: the threshold sits exactly on
    // the rank of the last member of each batch, which must read itself
    // released after the threshold's trip through the store.
    for (batch, expected) in [(1, 1), (2, 3), (3, 5), (4, 7)] {
        assert!(
            eventually(WAIT, || record(&h, "web")
                .is_some_and(|r| r["batches"].as_u64() == Some(batch))),
            "batch {batch} is released"
        );
        assert_eq!(released_count(&h), expected, "after batch {batch}");
    }
    let out = orchestrator.wait_with_output();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn a_node_added_mid_rollout_lands_on_the_right_side_and_never_flips(backend: Backend) {
    let (h, mut sim) = fleet(backend);
    let plan = plan_file(
        &h,
        "slow.yml",
        "name: slow-2.5.0\nsteps:\n  - cluster: web\n    set: {version: '2.5.0'}\n    strategy: {canary: 1, batch: 25%, pause: 1s}\n",
    );
    let orchestrator = spawn_plan(&h, &plan, &[]);
    assert!(
        eventually(WAIT, || record(&h, "web")
            .is_some_and(|r| r["threshold"].as_f64().unwrap_or(0.0) > 0.0)),
        "the canary is released"
    );
    sim.add("web", "web-09");
    let out = orchestrator.wait_with_output();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let seen = sim.observations("web-09");
    assert!(!seen.is_empty());
    let first_released = seen.iter().position(|o| o.released == Some(true));
    if let Some(i) = first_released {
        assert!(
            seen[i..].iter().all(|o| o.released != Some(false)),
            "web-09 flipped back: {seen:?}"
        );
    }
    assert!(all_caught_up(&h, &sim, "web", &["web-09".to_string()]));
    assert_eq!(sim.violations(), Vec::<String>::new());
}

fn two_orchestrators_started_together_one_proceeds(backend: Backend) {
    let (h, _sim) = fleet(backend);
    let plan = plan_file(
        &h,
        "slow.yml",
        "name: slow-2.5.0\nsteps:\n  - cluster: web\n    set: {version: '2.5.0'}\n    strategy: {canary: 1, batch: 25%, pause: 1s}\n",
    );
    let mut args: Vec<&str> = vec!["rollout", "run", &plan];
    args.extend(FAST.iter().take(4)); // no --lock-wait: the second must not wait
    let spawn = || {
        let mut cmd = h.process();
        Spawned::new(
            cmd.args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output(), b.wait_with_output());
    let codes = [a.status.code(), b.status.code()];
    assert!(
        codes.contains(&Some(0)) && codes.contains(&Some(75)),
        "{codes:?}\n{}\n{}",
        stderr(&a),
        stderr(&b)
    );
    let loser = if a.status.code() == Some(75) { &a } else { &b };
    assert!(
        stderr(loser).contains("is held by the rollout of plan slow-2.5.0 by tester@test-host"),
        "{}",
        stderr(loser)
    );
}

/// The nodes of `rollout` with the lowest ranks: the canary, then the batches.
pub(crate) fn by_rank(id: &str, nodes: &[String]) -> Vec<String> {
    let mut sorted = nodes.to_vec();
    sorted.sort_by(|a, b| rank(id, a).total_cmp(&rank(id, b)));
    sorted
}

const FAILING_PLAN: &str =
    "name: risky-2.5.0\nsteps:\n  - cluster: web\n    set: {version: '2.5.0'}\n    strategy: {canary: 1, batch: 2, max_failed: 1}\n";

fn failures_beyond_max_failed_pause_until_resumed(backend: Backend) {
    let (h, sim) = fleet(backend);
    let plan = plan_file(&h, "risky.yml", FAILING_PLAN);
    // The second and third in rank order come in the first batch after the canary.
    let order = by_rank("risky-2.5.0.1", &names("web", 8));
    for n in &order[1..3] {
        sim.fail_when(n, Box::new(|d| d["version"] == "2.5.0"));
    }
    let out = run_plan(&h, &plan, &[]);
    assert_stopped(
        &out,
        75,
        &["paused", "more than the 1 allowed", &order[1], &order[2]],
    );
    let rec = record(&h, "web").unwrap();
    assert_eq!(rec["status"], "paused");
    assert!(rec["reason"]
        .as_str()
        .unwrap()
        .contains("2 released nodes failed"));
    let shown = stdout(&h.ok(&["rollout", "status", "web"]));
    assert!(
        shown.contains("paused") && shown.contains("2 released nodes failed"),
        "{shown}"
    );
    // Still paused: running again does not release anything.
    let again = run_plan(&h, &plan, &[]);
    assert_stopped(&again, 75, &["paused"]);
    assert_eq!(record(&h, "web").unwrap()["threshold"], rec["threshold"]);
    // Fixed and resumed, it goes on to the end. The failed nodes stay
    // down until after the resume, as they would for minutes in a real
    // fleet: the resume must not trip over their old failure reports.
    for n in &order[1..3] {
        sim.stop_node(n);
        sim.heal(n);
    }
    h.ok(&["rollout", "resume", "web", "--reason", "fixed the disk"]);
    let orchestrator = spawn_plan(&h, &plan, &[]);
    for n in &order[1..3] {
        sim.start_node(n);
    }
    let out = orchestrator.wait_with_output();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["version"],
        "2.5.0"
    );
    assert_eq!(sim.violations(), Vec::<String>::new());
}

fn rollback_returns_nodes_a_batch_at_a_time(backend: Backend) {
    let (h, sim) = fleet(backend);
    let before: Vec<String> = names("web", 8)
        .iter()
        .map(|n| generation_of(&h, "web", n))
        .collect();
    let plan = plan_file(&h, "risky.yml", FAILING_PLAN);
    let order = by_rank("risky-2.5.0.1", &names("web", 8));
    // The fourth and fifth fail: two batches go out before the rollout pauses.
    for n in &order[3..5] {
        sim.fail_when(n, Box::new(|d| d["version"] == "2.5.0"));
    }
    let out = run_plan(&h, &plan, &[]);
    assert_stopped(&out, 75, &["paused"]);
    let released = record(&h, "web").unwrap();
    assert!(released["threshold"].as_f64().unwrap() >= rank("risky-2.5.0.1", &order[4]));

    let mut args = vec!["rollout", "rollback", "web"];
    args.extend_from_slice(&FAST);
    let out = h.run(&args);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(record(&h, "web").is_none(), "the record is gone");
    // Every node is back on the previous desired state, and says so.
    let after: Vec<String> = names("web", 8)
        .iter()
        .map(|n| generation_of(&h, "web", n))
        .collect();
    assert_eq!(after, before);
    assert!(all_caught_up(&h, &sim, "web", &names("web", 8)));
    // Never more than one batch (2) at a time went back.
    let log = stdout(&out);
    let batches: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("took back batch"))
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
    assert!(
        !batches.is_empty() && batches.iter().all(|&n| n <= 2),
        "{log}"
    );
    let progress = h.export()["convergent"]["plans"]["risky-2.5.0"].clone();
    assert_eq!(progress["status"], "rolled_back");
    assert_stopped(&run_plan(&h, &plan, &[]), 75, &["was rolled back"]);
}

fn an_operator_pauses_and_resumes(backend: Backend) {
    let (h, _sim) = fleet(backend);
    let plan = plan_file(
        &h,
        "slow.yml",
        "name: slow-2.5.0\nsteps:\n  - cluster: web\n    set: {version: '2.5.0'}\n    strategy: {canary: 1, batch: 25%, pause: 2s}\n",
    );
    let orchestrator = spawn_plan(&h, &plan, &[]);
    assert!(eventually(WAIT, || record(&h, "web")
        .is_some_and(|r| r["batches"].as_u64() >= Some(1))));
    h.ok(&["rollout", "pause", "web", "--reason", "checking the canary"]);
    let out = orchestrator.wait_with_output();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("paused: checking the canary"),
        "{}",
        stderr(&out)
    );
    assert_refused(
        &h.run(&["rollout", "pause", "web"]),
        75,
        &["nothing to pause"],
    );
    h.ok(&["rollout", "resume", "web"]);
    let out = run_plan(&h, &plan, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["version"],
        "2.5.0"
    );
}

fn dry_run_shows_the_batches_and_writes_nothing(backend: Backend) {
    let (h, _sim) = fleet(backend);
    let before = h.export();
    let out = h.ok(&[
        "rollout",
        "run",
        &fixture("plans/upgrade.yml").display().to_string(),
        "--dry-run",
        "--member-ttl",
        "1h",
    ]);
    let text = stdout(&out);
    let order = by_rank("upgrade-2.5.0.3", &names("web", 8));
    assert!(
        text.contains(&format!("canary    (1): {}", order[0])),
        "{text}"
    );
    assert!(
        text.contains(&format!("batch 2   (2): {} {}", order[1], order[2])),
        "{text}"
    );
    let json = h.ok(&[
        "--format",
        "json",
        "rollout",
        "run",
        &fixture("plans/upgrade.yml").display().to_string(),
        "--dry-run",
    ]);
    let previews: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(previews[2]["batches"][0], json!([order[0]]));
    assert_eq!(
        previews[1]["batches"].as_array().unwrap().len(),
        2,
        "db in halves"
    );
    // Nothing was written (reports aside, which the nodes keep sending).
    let mut after = h.export();
    after["convergent"]["observed"] = before["convergent"]["observed"].clone();
    assert_eq!(after, before);
}

/// Kills the orchestrator at `delay` into a run, runs it again until it
/// completes, and returns the view with what legitimately differs removed.
fn killed_and_resumed(backend: Backend, delay: Duration) -> Value {
    let (h, _sim) = fleet(backend);
    let plan = fixture("plans/upgrade.yml").display().to_string();
    let mut orchestrator = spawn_plan(&h, &plan, &[]);
    std::thread::sleep(delay); // the random point of the kill, not a wait for a condition
    orchestrator.kill();
    let started = Instant::now();
    loop {
        let out = run_plan(&h, &plan, &[]);
        if out.status.success() {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "never completed: {}",
            stderr(&out)
        );
    }
    settled_view(&h)
}

/// The view without the parts that differ between two correct runs: the
/// nodes' reports, times and actors in histories.
fn settled_view(h: &Harness) -> Value {
    let mut view = h.export();
    let root = view["convergent"].as_object_mut().unwrap();
    root.remove("observed");
    for cluster in root["clusters"].as_object_mut().unwrap().values_mut() {
        cluster.as_object_mut().unwrap().remove("history");
    }
    for plan in root["plans"].as_object_mut().unwrap().values_mut() {
        plan.as_object_mut().unwrap().remove("history");
    }
    view
}

fn kill_trials(backend: Backend, trials: std::ops::Range<u64>) {
    let reference = {
        let (h, _sim) = fleet(backend);
        let out = run_plan(&h, &fixture("plans/upgrade.yml").display().to_string(), &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        settled_view(&h)
    };
    for trial in trials {
        // Spread over the run: 0 to 1.9s in 100ms steps, in a scrambled order.
        let delay = Duration::from_millis((trial * 7 % 20) * 100);
        let view = killed_and_resumed(backend, delay);
        assert_eq!(view, reference, "trial {trial}: killed at {delay:?}");
    }
}

// Twenty trials on the file store and six on etcd, split so they run in parallel.
#[test]
fn killed_at_random_points_it_resumes_to_the_same_view_file_1() {
    kill_trials(Backend::File, 0..5);
}

#[test]
fn killed_at_random_points_it_resumes_to_the_same_view_file_2() {
    kill_trials(Backend::File, 5..10);
}

#[test]
fn killed_at_random_points_it_resumes_to_the_same_view_file_3() {
    kill_trials(Backend::File, 10..15);
}

#[test]
fn killed_at_random_points_it_resumes_to_the_same_view_file_4() {
    kill_trials(Backend::File, 15..20);
}

#[test]
fn killed_at_random_points_it_resumes_to_the_same_view_etcd() {
    kill_trials(Backend::Etcd, 20..26);
}

#[test]
fn one_rollout_per_cluster_and_plans_must_not_change() {
    let (h, sim) = fleet(Backend::File);
    // The canary fails: the first plan stops half-way, its record kept.
    let first = plan_file(&h, "a.yml", "name: first\nsteps:\n  - cluster: web\n    set: {version: '2.5.0'}\n    strategy: {canary: 1, batch: 25%}\n");
    let canary = by_rank("first.1", &names("web", 8))[0].clone();
    sim.fail_when(&canary, Box::new(|d| d["version"] == "2.5.0"));
    assert_stopped(&run_plan(&h, &first, &[]), 75, &["paused", &canary]);
    let second = plan_file(
        &h,
        "b.yml",
        "name: second\nsteps:\n  - cluster: web\n    set: {version: '2.6.0'}\n",
    );
    assert_refused(
        &run_plan(&h, &second, &[]),
        75,
        &["cluster web has an active rollout, first.1 of plan first"],
    );
    // The same name with other steps is another plan: refused.
    let edited = plan_file(
        &h,
        "a.yml",
        "name: first\nsteps:\n  - cluster: web\n    set: {version: '9.9.9'}\n",
    );
    assert_refused(
        &run_plan(&h, &edited, &[]),
        65,
        &["plan first changed since it started"],
    );
}

#[test]
fn progress_as_json_lines_and_kicks_per_released_node() {
    let (h, _sim) = fleet(Backend::File);
    let kicked = h.path("kicked");
    let plan = plan_file(
        &h,
        "kick.yml",
        &format!(
            "name: kick-2.5.0\nsteps:\n  - cluster: web\n    set: {{version: '2.5.0'}}\n    strategy: {{canary: 1, batch: 50%}}\n    kick: {{command: [sh, -c, 'echo \"$0\" >> {}', '{{node}}'], concurrency: 2, timeout: 5s}}\n",
            kicked.display()
        ),
    );
    let mut args = vec!["--format", "json", "rollout", "run", &plan];
    args.extend_from_slice(&FAST);
    let out = h.ok(&args);
    let events: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"step_started"));
    assert_eq!(kinds.last(), Some(&"plan_done"));
    let released: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "moved")
        .flat_map(|e| {
            e["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
        })
        .collect();
    let mut was_kicked: Vec<String> = std::fs::read_to_string(&kicked)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    was_kicked.sort();
    let mut expected = released.clone();
    expected.sort();
    assert_eq!(was_kicked, expected, "each released node kicked once");
    assert_eq!(expected, names("web", 8));
}

#[test]
fn bad_plans_and_unknown_clusters_are_refused() {
    let (h, _sim) = fleet(Backend::File);
    assert_refused(
        &h.run(&[
            "rollout",
            "run",
            &fixture("plans/broken-unknown-field.yml")
                .display()
                .to_string(),
        ]),
        65,
        &["batchh"],
    );
    let plan = plan_file(
        &h,
        "x.yml",
        "name: x\nsteps:\n  - cluster: nope\n    set: {v: 1}\n",
    );
    assert_refused(&run_plan(&h, &plan, &[]), 65, &["unknown cluster \"nope\""]);
    let plan = plan_file(
        &h,
        "y.yml",
        "name: y\nsteps:\n  - cluster: web\n    set: {state: bogus}\n",
    );
    assert_refused(&run_plan(&h, &plan, &[]), 65, &["\"bogus\" is not allowed"]);
    assert_refused(
        &h.run(&["rollout", "pause", "web"]),
        75,
        &["no active rollout"],
    );
    assert!(stdout(&h.ok(&["rollout", "status"])).contains("no active rollouts"));
}

#[test]
fn a_batch_that_does_not_converge_in_time_pauses_naming_the_stuck_nodes() {
    let (h, sim) = fleet(Backend::File);
    // Two nodes stop reporting but stay members (the member TTL is long):
    // released, they stay pending.
    let stuck = ["web-02".to_string(), "web-05".to_string()];
    for n in &stuck {
        sim.stop_node(n);
    }
    let slow = ["--poll", "50ms", "--member-ttl", "1h", "--lock-ttl", "5s"];
    let run = |plan: &str| {
        let mut args = vec!["rollout", "run", plan];
        args.extend_from_slice(&slow);
        h.run(&args)
    };
    // Six of eight is enough for this step: it completes.
    let lenient = plan_file(
        &h,
        "lenient.yml",
        "name: lenient\nsteps:\n  - cluster: web\n    set: {app: {workers: 12}}\n    strategy: {batch: 100%}\n    wait: {min_converged: 75%, timeout: 1m}\n",
    );
    let out = run(&lenient);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    // All of them are needed for this one: it pauses after its timeout.
    let strict = plan_file(
        &h,
        "strict.yml",
        "name: strict\nsteps:\n  - cluster: web\n    set: {app: {workers: 16}}\n    strategy: {batch: 100%}\n    wait: {timeout: 5s}\n",
    );
    let out = run(&strict);
    assert_stopped(
        &out,
        75,
        &[
            "did not converge within 5s",
            "still pending",
            &stuck[0],
            &stuck[1],
        ],
    );
    let rec = record(&h, "web").unwrap();
    assert_eq!(rec["status"], "paused");
    assert!(rec["reason"].as_str().unwrap().contains("did not converge"));
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["app"]["workers"],
        12,
        "the paused step's patch is not folded in"
    );
}

#[test]
fn an_etcd_outage_mid_rollout_is_waited_out() {
    let (mut h, _sim) = fleet(Backend::Etcd);
    let plan = plan_file(
        &h,
        "slow.yml",
        "name: outage-2.5.0\nsteps:\n  - cluster: web\n    set: {version: '2.5.0'}\n    strategy: {canary: 1, batch: 25%, pause: 1s}\n",
    );
    let log = h.path("orchestrator.log");
    let orchestrator = h
        .process()
        .args([
            "rollout",
            "run",
            &plan,
            "--poll",
            "50ms",
            "--member-ttl",
            "1h",
        ])
        // Longer than the outage: the lock's lease must survive it.
        .args(["--lock-ttl", "30s"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut orchestrator = Spawned::new(orchestrator);
    assert!(
        eventually(WAIT, || record(&h, "web")
            .is_some_and(|r| r["batches"].as_u64() >= Some(1))),
        "the canary is released"
    );
    h.etcd().kill();
    assert!(
        eventually(WAIT, || std::fs::read_to_string(&log)
            .unwrap()
            .contains("the store cannot be reached, trying again")),
        "the orchestrator notices: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(orchestrator.try_wait(), None, "and keeps going");
    h.etcd().restart();
    h.etcd().wait_ready().unwrap();
    let out = orchestrator.wait_with_output();
    assert!(
        out.status.success(),
        "{}\n{}",
        std::fs::read_to_string(&log).unwrap(),
        stderr(&out)
    );
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["version"],
        "2.5.0"
    );
}

#[test]
fn a_consul_event_kicks_each_released_batch() {
    let (h, _sim) = fleet(Backend::ConsulDouble);
    let plan = plan_file(
        &h,
        "event.yml",
        "name: event-2.5.0\nsteps:\n  - cluster: web\n    set: {version: '2.5.0'}\n    strategy: {canary: 1, batch: 50%}\n    kick: {consul_event: converge-web}\n",
    );
    let out = run_plan(&h, &plan, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let batches = stdout(&out).matches("released batch").count();
    // The canary, then two halves of the other seven.
    assert_eq!(batches, 3, "{}", stdout(&out));
    let fired = h.consul_double().requests_to("/v1/event/fire/converge-web");
    assert_eq!(fired.len(), batches, "one event per released batch");
    assert!(stdout(&out).contains("kicked"), "{}", stdout(&out));
}

/// `rollout resume` after a `wait.timeout` pause starts the batch's wait
/// again: the next run waits a whole `timeout` before it pauses again, and
/// a node that comes back within it lets the step complete.
fn a_resumed_step_gets_a_fresh_wait_timeout(backend: Backend) {
    let (h, sim) = fleet(backend);
    // web-02 stops reporting but stays a member (the member TTL is long).
    sim.stop_node("web-02");
    let plan = plan_file(
        &h,
        "fresh.yml",
        "name: fresh\nsteps:\n  - cluster: web\n    set: {app: {workers: 16}}\n    strategy: {batch: 100%}\n    wait: {timeout: 3s}\n",
    );
    let run = || {
        h.run(&[
            "rollout",
            "run",
            &plan,
            "--poll",
            "50ms",
            "--member-ttl",
            "1h",
            "--lock-ttl",
            "5s",
        ])
    };
    assert_stopped(&run(), 75, &["did not converge within 3s", "web-02"]);
    let paused = record(&h, "web").unwrap();
    assert_eq!(paused["status"], "paused", "{paused}");
    // Timed from before the resume: the fresh window opens during it, so a
    // slow machine only lengthens what is measured. The record keeps whole
    // seconds, so the 3s window may close up to a second early: 1.9s, not 3s.
    let resumed_at = Instant::now();
    h.ok(&["rollout", "resume", "web"]);
    let resumed = record(&h, "web").unwrap();
    assert_ne!(
        resumed["moved_at"], paused["moved_at"],
        "resume starts the wait again: {resumed}"
    );
    // web-02 is still down: the run waits the whole timeout again, then pauses.
    assert_stopped(&run(), 75, &["did not converge within 3s", "web-02"]);
    assert!(
        resumed_at.elapsed() >= Duration::from_millis(1900),
        "a fresh 3s window after the resume, not an immediate pause: {:?}",
        resumed_at.elapsed()
    );
    // Back within the fresh window: the step completes.
    sim.start_node("web-02");
    h.ok(&["rollout", "resume", "web"]);
    let out = run();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        h.export()["convergent"]["clusters"]["web"]["desired"]["app"]["workers"],
        16
    );
}
