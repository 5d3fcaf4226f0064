//! Simulated nodes for orchestrator tests: a thread per node doing what the
//! cookbook does — `attributes` into a file, then `report` — on a short
//! interval, through the real binary. Each node also checks, on every run,
//! that it was never released outside the threshold and never flipped back
//! during a forward rollout. Dropping the simulation stops every thread.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Harness;

/// What a node saw on one run.
#[derive(Clone, Debug)]
pub struct Observation {
    pub at: Instant,
    pub generation: String,
    pub state: Option<String>,
    pub desired: Value,
    pub rollout: Option<String>,
    pub released: Option<bool>,
}

/// Decides from a node's desired document whether its run fails.
pub type FailWhen = Box<dyn Fn(&Value) -> bool + Send>;

struct Node {
    running: bool,
    /// Held for the whole of a run, so `stop_node` can wait one out.
    run: Arc<Mutex<()>>,
    fail_when: Option<FailWhen>,
    /// When set, the node's runs carry a health check (a recipe checks
    /// file), failing while this holds for its desired document.
    unhealthy_when: Option<FailWhen>,
    observations: Vec<Observation>,
}

/// The environment the binary needs to reach the harness's store.
#[derive(Clone)]
struct Env {
    bin: PathBuf,
    vars: Vec<(String, String)>,
    dir: PathBuf,
}

impl Env {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .envs(self.vars.iter().cloned())
            .current_dir(&self.dir);
        cmd
    }
}

/// A fleet of simulated nodes.
pub struct Simulation {
    env: Env,
    interval: Duration,
    nodes: BTreeMap<String, Arc<Mutex<Node>>>,
    violations: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The rank of `node` in rollout `id`, computed independently of the binary.
pub fn rank(id: &str, node: &str) -> f64 {
    let digest = Sha256::digest(format!("{id}/{node}").as_bytes());
    let top = u64::from_be_bytes(digest[..8].try_into().unwrap());
    (top >> 11) as f64 / (1u64 << 53) as f64
}

impl Simulation {
    /// Starts `nodes` of `cluster`, each converging every `interval`.
    pub fn start(h: &Harness, cluster: &str, nodes: &[String], interval: Duration) -> Simulation {
        let env = Env {
            bin: assert_cmd::cargo::cargo_bin("convergent"),
            vars: vec![
                ("CONVERGENT_STORE".into(), h.store_url.clone()),
                (
                    "CONVERGENT_CACHE_DIR".into(),
                    h.cache_dir().display().to_string(),
                ),
                (
                    "CONVERGENT_CONFIG".into(),
                    h.path("config.yml").display().to_string(),
                ),
            ],
            dir: h.dir.path().to_path_buf(),
        };
        let mut sim = Simulation {
            env,
            interval,
            nodes: BTreeMap::new(),
            violations: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for node in nodes {
            sim.add(cluster, node);
        }
        sim
    }

    /// Adds a node that starts converging at once.
    pub fn add(&mut self, cluster: &str, node: &str) {
        let state = Arc::new(Mutex::new(Node {
            running: true,
            run: Arc::new(Mutex::new(())),
            fail_when: None,
            unhealthy_when: None,
            observations: Vec::new(),
        }));
        self.nodes.insert(node.to_string(), Arc::clone(&state));
        let (env, stop, violations) = (
            self.env.clone(),
            Arc::clone(&self.stop),
            Arc::clone(&self.violations),
        );
        let (cluster, node, interval) = (cluster.to_string(), node.to_string(), self.interval);
        self.threads.push(thread::spawn(move || {
            let file = env.dir.join(format!("sim-{node}.json"));
            let run = Arc::clone(&state.lock().unwrap().run);
            while !stop.load(Ordering::SeqCst) {
                {
                    let _running_now = run.lock().unwrap();
                    let running = state.lock().unwrap().running;
                    if running {
                        if let Some(observation) =
                            converge(&env, &cluster, &node, &file, &state, &violations)
                        {
                            state.lock().unwrap().observations.push(observation);
                        }
                    }
                }
                thread::sleep(interval);
            }
        }));
    }

    /// Stops a node (it stops reporting, as if down); returns once a run
    /// under way has ended, so nothing more comes from it.
    pub fn stop_node(&self, node: &str) {
        let run = {
            let mut n = self.nodes[node].lock().unwrap();
            n.running = false;
            Arc::clone(&n.run)
        };
        drop(run.lock().unwrap());
    }

    /// Starts a stopped node again.
    pub fn start_node(&self, node: &str) {
        self.nodes[node].lock().unwrap().running = true;
    }

    /// Makes a node's runs fail while `when` holds for its desired document.
    pub fn fail_when(&self, node: &str, when: FailWhen) {
        self.nodes[node].lock().unwrap().fail_when = Some(when);
    }

    /// Gives a node's runs a health check (`sim-health`) that fails while
    /// `when` holds for its desired document (`|_| false`: always healthy).
    pub fn unhealthy_when(&self, node: &str, when: FailWhen) {
        self.nodes[node].lock().unwrap().unhealthy_when = Some(when);
    }

    /// Lets a node's runs succeed again.
    pub fn heal(&self, node: &str) {
        self.nodes[node].lock().unwrap().fail_when = None;
    }

    /// Everything a node saw, oldest first.
    pub fn observations(&self, node: &str) -> Vec<Observation> {
        self.nodes[node].lock().unwrap().observations.clone()
    }

    /// Breaches of the release invariants seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }
}

impl Drop for Simulation {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One run of a node: resolve, check the invariants, report.
fn converge(
    env: &Env,
    cluster: &str,
    node: &str,
    file: &std::path::Path,
    state: &Mutex<Node>,
    violations: &Mutex<Vec<String>>,
) -> Option<Observation> {
    let before = rollout_record(env, cluster);
    let out = env
        .command()
        .args([
            "attributes",
            "--cluster",
            cluster,
            "--node",
            node,
            "--output",
        ])
        .arg(file)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    let c = &doc["convergent"];
    let observation = Observation {
        at: Instant::now(),
        generation: c["generation"].as_str()?.to_string(),
        state: c["state"].as_str().map(str::to_string),
        desired: c["desired"].clone(),
        rollout: c["rollout"]["id"].as_str().map(str::to_string),
        released: c["rollout"]["released"].as_bool(),
    };
    if let Some(id) = &observation.rollout {
        check(
            env,
            cluster,
            node,
            id,
            &observation,
            before,
            state,
            violations,
        );
    }
    let fails = state
        .lock()
        .unwrap()
        .fail_when
        .as_ref()
        .is_some_and(|f| f(&observation.desired));
    let unhealthy = state
        .lock()
        .unwrap()
        .unhealthy_when
        .as_ref()
        .map(|f| f(&observation.desired));
    let mut report = env.command();
    report
        .args([
            "report",
            "--status",
            if fails { "failure" } else { "success" },
            "--attributes",
        ])
        .arg(file);
    if let Some(unhealthy) = unhealthy {
        // The check is a real command the binary runs: `test` on a flag file
        // this run sets to what the node's health should be.
        let flag = file.with_extension("unhealthy");
        let checks = file.with_extension("checks.json");
        if unhealthy {
            std::fs::write(&flag, "").ok()?;
        } else {
            let _ = std::fs::remove_file(&flag);
        }
        let doc = serde_json::json!({"checks": {"sim-health": {
            "command": ["test", "!", "-e", flag.to_str()?], "timeout": "5s"}}});
        std::fs::write(&checks, doc.to_string()).ok()?;
        report.arg("--checks").arg(&checks);
    }
    let _ = report.output();
    Some(observation)
}

/// The rollout record of `cluster`, as `get` prints it.
fn rollout_record(env: &Env, cluster: &str) -> Option<Value> {
    let out = env
        .command()
        .args(["get", &format!("rollouts/{cluster}")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The invariants, while a rollout goes forward (its threshold only rises,
/// so the record read before the node's run bounds what it saw from below
/// and the one read after bounds it from above): released only at or below
/// the threshold, always released once at or below it, and never back to
/// unreleased.
#[allow(clippy::too_many_arguments)]
fn check(
    env: &Env,
    cluster: &str,
    node: &str,
    id: &str,
    o: &Observation,
    before: Option<Value>,
    state: &Mutex<Node>,
    violations: &Mutex<Vec<String>>,
) {
    let forward = |r: &Value| r["id"] == id && r["direction"] != "back";
    let Some(after) = rollout_record(env, cluster).filter(forward) else {
        return;
    };
    let u = rank(id, node);
    let threshold = after["threshold"].as_f64().unwrap_or(0.0);
    if o.released == Some(true) && u > threshold {
        violations.lock().unwrap().push(format!(
            "{node} released in {id} with rank {u} above threshold {threshold}"
        ));
    }
    if let Some(before) = before.filter(forward) {
        let threshold = before["threshold"].as_f64().unwrap_or(0.0);
        if o.released == Some(false) && u <= threshold {
            violations.lock().unwrap().push(format!(
                "{node} not released in {id} although its rank {u} is within threshold {threshold}"
            ));
        }
    }
    let was_released = state
        .lock()
        .unwrap()
        .observations
        .iter()
        .any(|prev| prev.rollout.as_deref() == Some(id) && prev.released == Some(true));
    if was_released && o.released == Some(false) {
        violations
            .lock()
            .unwrap()
            .push(format!("{node} flipped back to unreleased in {id}"));
    }
}
