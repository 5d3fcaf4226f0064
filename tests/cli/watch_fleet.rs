//! A fleet of `watch` agents on one etcd: 500 real agent loops (the
//! library's `watch::follow`, what `convergent watch` runs), each with its own
//! store connections, in this process. A change for one node reaches that
//! node's agent and wakes no other; a change for the cluster reaches every
//! agent. Speed is for `scripts/simulate watchers`; here only what happens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use convergent::cli::SplayFrom;
use convergent::commands::watch::{follow, AgentSpec};
use convergent::commands::Context;
use convergent::config::{OnUnreachable, Settings};
use convergent::error::Result;
use convergent::layout::{Layout, Prefix};
use convergent::store::{
    self, ChangeFeed, HeldLock, Snapshot, Store, StoreKind, StoreOptions, Txn, TxnOutcome,
};

use crate::support::{eventually, Backend, Harness};

/// Agents in the fleet: enough to show fleet behaviour, few enough for a
/// loaded 2-core CI machine (each holds 5 watch streams and a connection).
const AGENTS: usize = 500;
/// Generous: the machine may be busy with other suites.
const WAIT: Duration = Duration::from_secs(300);

/// A real store that notes the revision of every read an agent makes: each
/// look of the agent (a wake, or its first read) is one `read_trees`.
struct NotingStore {
    inner: Box<dyn Store>,
    reads: Arc<Mutex<Vec<u64>>>,
}

impl Store for NotingStore {
    fn kind(&self) -> StoreKind {
        self.inner.kind()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn read_trees(&self, roots: &[String]) -> Result<Snapshot> {
        let snapshot = self.inner.read_trees(roots)?;
        self.reads
            .lock()
            .unwrap()
            .push(snapshot.revision.unwrap_or(0));
        Ok(snapshot)
    }
    fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        self.inner.commit(txn)
    }
    fn lock(&self, name: &str, ttl: Duration, holder: &str) -> Result<Box<dyn HeldLock>> {
        self.inner.lock(name, ttl, holder)
    }
    fn watch(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        self.inner.watch(roots)
    }
}

/// Lifts the soft open-files limit to what the fleet needs (or the hard limit).
fn raise_open_files(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < needed {
            limit.rlim_cur = needed.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Lines `NODE GENERATION` the agents' program appended, by node.
fn runs(marks: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(marks).unwrap_or_default().lines() {
        if let Some((node, generation)) = line.split_once(' ') {
            out.entry(node.to_string())
                .or_default()
                .push(generation.to_string());
        }
    }
    out
}

fn node(i: usize) -> String {
    format!("web-{i:04}")
}

/// The store's revision now.
fn revision(url: &str) -> u64 {
    let store = store::open(
        &url.parse().unwrap(),
        &StoreOptions {
            timeout: Duration::from_secs(10),
        },
        &|_| None,
    )
    .unwrap();
    store
        .read_trees(&[Layout::new(&Prefix::default()).defaults()])
        .unwrap()
        .revision
        .unwrap()
}

/// The fleet; dropping it stops every agent.
struct Fleet {
    stop: Arc<AtomicBool>,
    agents: Vec<thread::JoinHandle<()>>,
    reads: Vec<Arc<Mutex<Vec<u64>>>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for agent in self.agents.drain(..) {
            let _ = agent.join();
        }
    }
}

fn start_fleet(h: &Harness, program: &Path, marks: &Path) -> Fleet {
    let settings = Settings {
        store: h.store_url.parse().unwrap(),
        prefix: Prefix::default(),
        format: None,
        format_flag: None,
        cache_dir: Some(h.cache_dir()),
        max_stale: Duration::from_secs(3600),
        on_unreachable: OnUnreachable::Fail,
        timeout: Duration::from_secs(30),
        cluster: None,
        node: None,
        member_ttl: Duration::from_secs(3600),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut fleet = Fleet {
        stop: Arc::clone(&stop),
        agents: Vec::new(),
        reads: Vec::new(),
    };
    for i in 0..AGENTS {
        let spec = AgentSpec {
            cluster: "web".into(),
            node: node(i),
            program: program.to_path_buf(),
            args: vec![marks.display().to_string()],
            splay: Duration::ZERO,
            splay_from: SplayFrom::Random,
            // No periodic look during the test: every look is a wake.
            interval: Duration::from_secs(3600),
            output: Some(h.path(&format!("out/{}.json", node(i)))),
            // No health checks: every run here is a watched change.
            health_interval: Duration::ZERO,
            checks: None,
        };
        let reads = Arc::new(Mutex::new(Vec::new()));
        fleet.reads.push(Arc::clone(&reads));
        let (settings, stop) = (settings.clone(), Arc::clone(&stop));
        let agent = thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let env = |_: &str| None;
                let ctx = Context {
                    settings,
                    env: &env,
                };
                let inner = store::open(
                    &ctx.settings.store,
                    &StoreOptions {
                        timeout: ctx.settings.timeout,
                    },
                    &env,
                )
                .expect("store opens");
                let store = Box::new(NotingStore { inner, reads });
                follow(&ctx, store, spec, stop).expect("the agent runs until stopped");
            })
            .expect("agent thread");
        fleet.agents.push(agent);
    }
    fleet
}

/// Reads agent `i` made at revisions in `(after, upto]`.
fn reads_between(fleet: &Fleet, i: usize, after: u64, upto: u64) -> usize {
    let reads = fleet.reads[i].lock().unwrap();
    reads.iter().filter(|r| **r > after && **r <= upto).count()
}

#[test]
fn a_fleet_of_agents_is_each_told_of_its_changes_and_woken_by_no_other() {
    let h = Harness::new(Backend::Etcd);
    h.ok(&["set", "--create", "--cluster", "web", "version=1.0"]);
    raise_open_files(AGENTS as u64 * 8 + 1024);
    std::fs::create_dir_all(h.path("out")).unwrap();
    let marks = h.path("marks");
    let program: PathBuf = h.path("mark.sh");
    std::fs::write(
        &program,
        "#!/bin/sh\necho \"$CONVERGENT_NODE $CONVERGENT_GENERATION\" >> \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let fleet = start_fleet(&h, &program, &marks);

    // Every agent runs once at start (it has run for nothing yet).
    assert!(
        eventually(WAIT, || runs(&marks).len() == AGENTS),
        "{} of {AGENTS} agents ran at start",
        runs(&marks).len()
    );
    let first = runs(&marks);

    // A change for one node: its agent runs, nobody else even looks.
    let target = 123;
    let before = revision(&h.store_url);
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        &node(target),
        "state=off",
        // The agents have not reported (they run a stand-in program).
        "--create",
    ]);
    assert!(
        eventually(WAIT, || runs(&marks)[&node(target)].len() == 2),
        "{} was not told of its own change",
        node(target)
    );
    let fence = revision(&h.store_url);
    let woken: Vec<String> = (0..AGENTS)
        .filter(|&i| i != target && reads_between(&fleet, i, before, fence) > 0)
        .map(node)
        .collect();
    assert!(
        woken.is_empty(),
        "{} agents woke for {}'s change: {:?}…",
        woken.len(),
        node(target),
        &woken[..woken.len().min(10)]
    );
    let now = runs(&marks);
    let others_ran: Vec<&String> = now
        .iter()
        .filter(|(n, r)| **n != node(target) && r.len() != first[*n].len())
        .map(|(n, _)| n)
        .collect();
    assert!(others_ran.is_empty(), "ran for nothing: {others_ran:?}");

    // A change for the cluster: every agent is told, once.
    h.ok(&["set", "--cluster", "web", "version=2.0"]);
    assert!(
        eventually(WAIT, || {
            let now = runs(&marks);
            (0..AGENTS).all(|i| {
                now[&node(i)].len() == first[&node(i)].len() + 1 + usize::from(i == target)
            })
        }),
        "not every agent was told of the cluster's change: {} of {AGENTS}",
        {
            let now = runs(&marks);
            (0..AGENTS)
                .filter(|&i| now[&node(i)].len() > first[&node(i)].len() + usize::from(i == target))
                .count()
        }
    );
    let now = runs(&marks);
    let generations: std::collections::BTreeSet<&String> =
        now.values().map(|r| r.last().unwrap()).collect();
    // All but the target share the new generation (the target has its override).
    assert_eq!(generations.len(), 2, "{generations:?}");
    drop(fleet);
}
