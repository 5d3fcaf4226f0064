//! `fleet simulate`: N nodes of cluster `web` in one process, each doing what
//! the cookbook does on every chef run — resolve its desired state (one read
//! of its own keys, as `attributes` does) and report it (one write, as
//! `report` does) — on a jittered interval.
//!
//! Each run also checks the release invariants against a rank computed here,
//! independently of the library: a node is released iff its rank is at or
//! below the threshold it read, and never goes back to unreleased in the
//! same rollout. Statistics go to `--stats FILE` (JSON) every second.
//!
//! With `--db M`, M nodes of cluster `db` (`db-00001`…) run too, and every
//! node resolves as `attributes` does, holding itself while the constraints
//! of its desired state are not met. Each web run that resolves web 2.5.0
//! is then checked against what every db node runs at that moment (its last
//! resolved version; 5.0.0 before its first run): a db below 5.1 is a pair
//! violation.
//!
//! ```text
//! fleet simulate --store URL --nodes N [--db M] [--interval 10s] [--jitter 0.2]
//!                [--workers 32] [--timeout 5s] --stats FILE
//!                [--until FILE | --duration DUR]
//!                [--unhealthy-share 0.02 --unhealthy-version V]
//! ```
//!
//! With `--unhealthy-share`, every node reports health (one check,
//! `sim-health`), and that share of the nodes (chosen by a hash of the name,
//! not by any rollout's rank) turns unhealthy once it runs desired version V.
//! A rollback lowers the threshold, so a node going back to unreleased while
//! the threshold it reads has fallen is not a violation; while it has not
//! fallen, it is.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use sha2::{Digest, Sha256};

use convergent::clock::now_rfc3339;
use convergent::compatible::resolve_compatible;
use convergent::document::encode_value;
use convergent::env::process_env;
use convergent::health::{CheckResult, CheckSource, Health};
use convergent::layout::{Layout, Prefix};
use convergent::report::{ObservedReport, ReportStatus};
use convergent::resolve::read_node_inputs;
use convergent::store::{self, Op, Store, StoreOptions, StoreUrl, Txn};

use super::{node_name, Options};

/// What the whole fleet has done so far.
#[derive(Default)]
struct Stats {
    runs: AtomicU64,
    reports: AtomicU64,
    errors: AtomicU64,
    released_runs: AtomicU64,
    last_error: Mutex<Option<String>>,
    violations: Mutex<Vec<String>>,
    /// The version each db node runs now (two-tier runs only).
    db_running: Mutex<BTreeMap<String, String>>,
    /// Web runs at 2.5.0 checked against every db node.
    pair_checks: AtomicU64,
    /// Web runs at 2.5.0 that found a db node below 5.1.
    pair_violations: AtomicU64,
}

/// A node's own memory between runs: the rollout it was released in, the
/// highest threshold it read there, and its health at its generation.
#[derive(Default)]
struct NodeMemory {
    released_in: Option<String>,
    highest_threshold: f64,
    health: Option<(String, Health)>,
}

/// Which nodes turn unhealthy, and on which version.
#[derive(Clone)]
struct Sickness {
    share: f64,
    version: String,
}

/// Runs `fleet simulate`.
pub fn run(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args, &[])?;
    let url: StoreUrl = options.required("store")?.parse()?;
    let nodes: usize = options.parsed("nodes", 1000)?;
    let db_nodes: usize = options.parsed("db", 0)?;
    let interval = options.duration("interval", Duration::from_secs(10))?;
    let jitter: f64 = options.parsed("jitter", 0.2)?;
    let workers: usize = options
        .parsed::<usize>("workers", 32)?
        .clamp(1, nodes.max(1));
    let timeout = options.duration("timeout", Duration::from_secs(5))?;
    let sickness = match options.get("unhealthy-share") {
        Some(_) => Some(Sickness {
            share: options.parsed("unhealthy-share", 0.0)?,
            version: options.required("unhealthy-version")?.to_string(),
        }),
        None => None,
    };
    let stats_file = PathBuf::from(options.required("stats")?);
    let until = options.get("until").map(PathBuf::from);
    let deadline = options
        .get("duration")
        .map(|_| options.duration("duration", Duration::ZERO))
        .transpose()?
        .map(|d| Instant::now() + d);

    let stats = Arc::new(Stats::default());
    *stats.db_running.lock().unwrap() = (1..=db_nodes)
        .map(|i| (db_name(i), "5.0.0".to_string()))
        .collect();
    let fleet: Vec<(&'static str, String)> = (1..=nodes)
        .map(|i| ("web", node_name(i)))
        .chain((1..=db_nodes).map(|i| ("db", db_name(i))))
        .collect();
    let workers = workers.clamp(1, fleet.len().max(1));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut threads = Vec::new();
    for w in 0..workers {
        let names: Vec<(&'static str, String)> = fleet
            .iter()
            .enumerate()
            .filter(|(i, _)| i % workers == w)
            .map(|(_, n)| n.clone())
            .collect();
        let (url, stats, stop) = (url.clone(), Arc::clone(&stats), Arc::clone(&stop));
        let sickness = sickness.clone();
        threads.push(thread::spawn(move || {
            let store = match store::open(&url, &StoreOptions { timeout }, &process_env) {
                Ok(s) => s,
                Err(e) => {
                    *stats.last_error.lock().unwrap() = Some(e.to_string());
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let mut worker = Worker {
                store,
                layout: Layout::new(&Prefix::default()),
                stats,
                random: Random::seeded(w as u64),
                tiers: db_nodes > 0,
                sickness,
            };
            worker.run(&names, interval, jitter, &stop);
        }));
    }
    loop {
        write_stats(&stats_file, &stats, started.elapsed(), nodes)?;
        let done = until.as_deref().is_some_and(Path::exists)
            || deadline.is_some_and(|d| Instant::now() >= d);
        if done {
            break;
        }
        thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    write_stats(&stats_file, &stats, started.elapsed(), nodes)
}

fn write_stats(path: &Path, stats: &Stats, elapsed: Duration, nodes: usize) -> Result<(), String> {
    let violations = stats.violations.lock().unwrap();
    let doc = json!({
        "nodes": nodes,
        "elapsed_s": elapsed.as_secs_f64(),
        "runs": stats.runs.load(Ordering::Relaxed),
        "reports": stats.reports.load(Ordering::Relaxed),
        "released_runs": stats.released_runs.load(Ordering::Relaxed),
        "errors": stats.errors.load(Ordering::Relaxed),
        "last_error": *stats.last_error.lock().unwrap(),
        "violations": violations.len(),
        "pair_checks": stats.pair_checks.load(Ordering::Relaxed),
        "pair_violations": stats.pair_violations.load(Ordering::Relaxed),
        "first_violations": violations.iter().take(10).collect::<Vec<_>>(),
    });
    convergent::atomic_file::write(path, doc.to_string().as_bytes(), None)
        .map_err(|e| e.to_string())
}

/// The name of db node `i` (from 1): `db-00001`.
fn db_name(i: usize) -> String {
    format!("db-{i:05}")
}

/// Whether a db version is one web 2.5 may run with (5.1 up to 6), by the
/// checker's own reading, independent of the library's semver matching.
fn db_compatible(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    parts.next() == Some(5) && parts.next().unwrap_or(0) >= 1
}

impl Worker {
    /// A db node records what it runs before it reports it; a web node at
    /// 2.5.0 checks every db node's.
    fn check_pair(&self, cluster: &str, node: &str, desired: &serde_json::Value) {
        let version = desired["version"].as_str().unwrap_or("?").to_string();
        let mut running = self.stats.db_running.lock().unwrap();
        if cluster == "db" {
            running.insert(node.to_string(), version);
        } else if version == "2.5.0" {
            self.stats.pair_checks.fetch_add(1, Ordering::Relaxed);
            if let Some((db, v)) = running.iter().find(|(_, v)| !db_compatible(v)) {
                self.stats.pair_violations.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .violations
                    .lock()
                    .unwrap()
                    .push(format!("{node} runs web 2.5.0 while {db} runs db {v}"));
            }
        }
    }
}

/// A small, fast generator for jitter (xorshift64*): no secret depends on it.
struct Random(u64);

impl Random {
    fn seeded(seed: u64) -> Random {
        Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The rank of `node` in rollout `id`, as README documents it, computed
/// without the library.
fn rank(id: &str, node: &str) -> f64 {
    let digest = Sha256::digest(format!("{id}/{node}").as_bytes());
    let top = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (top >> 11) as f64 / (1u64 << 53) as f64
}

/// One thread's share of the fleet and its own connection to the store.
struct Worker {
    store: Box<dyn Store>,
    layout: Layout,
    stats: Arc<Stats>,
    random: Random,
    /// Whether db runs too, and nodes resolve through their constraints.
    tiers: bool,
    sickness: Option<Sickness>,
}

impl Worker {
    fn run(
        &mut self,
        names: &[(&'static str, String)],
        interval: Duration,
        jitter: f64,
        stop: &AtomicBool,
    ) {
        let start = Instant::now();
        let mut memory: BTreeMap<&str, NodeMemory> = BTreeMap::new();
        // Each node first runs at a random point of the first interval.
        let mut due: BinaryHeap<Reverse<(Instant, usize)>> = names
            .iter()
            .enumerate()
            .map(|(i, _)| Reverse((start + interval.mul_f64(self.random.next()), i)))
            .collect();
        while let Some(Reverse((at, i))) = due.pop() {
            while Instant::now() < at {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep((at - Instant::now()).min(Duration::from_millis(100)));
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let (cluster, node) = (names[i].0, names[i].1.as_str());
            self.converge(cluster, node, memory.entry(node).or_default());
            let factor = 1.0 + jitter * (2.0 * self.random.next() - 1.0);
            due.push(Reverse((
                Instant::now() + interval.mul_f64(factor.max(0.0)),
                i,
            )));
        }
    }

    /// One chef run of `node`: resolve, check the invariants, report.
    fn converge(&mut self, cluster: &str, node: &str, memory: &mut NodeMemory) {
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.try_converge(cluster, node, memory) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            *self.stats.last_error.lock().unwrap() = Some(format!("{node}: {e}"));
        }
    }

    fn try_converge(
        &mut self,
        cluster: &str,
        node: &str,
        memory: &mut NodeMemory,
    ) -> convergent::error::Result<()> {
        let inputs = read_node_inputs(self.store.as_ref(), &self.layout, cluster, node)?;
        let resolution = if self.tiers {
            resolve_compatible(
                self.store.as_ref(),
                &self.layout,
                &inputs,
                node,
                Duration::from_secs(60),
                SystemTime::now(),
            )?
            .resolution
        } else {
            inputs
                .cluster
                .resolve(node, inputs.node_override.as_ref())?
        };
        if self.tiers {
            self.check_pair(cluster, node, &resolution.desired);
        }
        if let Some(decision) = &resolution.rollout {
            let u = rank(&decision.id, node);
            let violation = if decision.released != (u <= decision.threshold) {
                Some(format!(
                    "{node}: released={} in {} with rank {u} and threshold {}",
                    decision.released, decision.id, decision.threshold
                ))
            } else if memory.released_in.as_deref() == Some(decision.id.as_str())
                && !decision.released
                && decision.threshold >= memory.highest_threshold
            {
                Some(format!(
                    "{node}: flipped back to unreleased in {}",
                    decision.id
                ))
            } else {
                None
            };
            if let Some(v) = violation {
                self.stats.violations.lock().unwrap().push(v);
            }
            if memory.released_in.as_deref() != Some(decision.id.as_str()) {
                memory.highest_threshold = 0.0;
            }
            if decision.released {
                memory.released_in = Some(decision.id.clone());
                self.stats.released_runs.fetch_add(1, Ordering::Relaxed);
            } else if memory.released_in.as_deref() == Some(decision.id.as_str()) {
                memory.released_in = None; // taken back by a rollback
            }
            memory.highest_threshold = memory.highest_threshold.max(decision.threshold);
        }
        let reported_at = now_rfc3339();
        let health = self.sickness.as_ref().map(|sick| {
            let unhealthy = rank("unhealthy", node) < sick.share
                && resolution.desired.get("version").and_then(|v| v.as_str())
                    == Some(sick.version.as_str());
            let previous = memory
                .health
                .as_ref()
                .filter(|(g, _)| *g == resolution.generation)
                .map(|(_, h)| h);
            let h = Health::after(
                previous,
                vec![CheckResult {
                    name: "sim-health".into(),
                    source: CheckSource::Recipe,
                    passed: !unhealthy,
                    output: if unhealthy {
                        "HTTP 503".into()
                    } else {
                        "HTTP 200".into()
                    },
                    elapsed_ms: 1,
                }],
                reported_at.clone(),
            );
            memory.health = Some((resolution.generation.clone(), h.clone()));
            h
        });
        let report = ObservedReport {
            offers: convergent::constraints::offers(&resolution.desired),
            generation: resolution.generation,
            status: ReportStatus::Success,
            state: resolution.state,
            reported_at,
            duration_s: Some(1.0),
            message: None,
            convergent_version: env!("CARGO_PKG_VERSION").to_string(),
            stale: false,
            version: None,
            health,
        };
        self.store.commit(&Txn {
            compares: Vec::new(),
            ops: vec![Op::Put {
                key: self.layout.observed_node(cluster, node),
                value: encode_value(&serde_json::to_value(report).expect("serializes")),
            }],
        })?;
        self.stats.reports.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
