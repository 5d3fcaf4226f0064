//! `watch`: a small node agent. It follows the store's change feed for
//! exactly the keys this node's resolution depends on (the defaults, its
//! cluster's schema and desired state, its own override, its cluster's
//! rollout: never another node's keys or the fleet's reports, so a change
//! for one node wakes no other agent) and, when the node's desired
//! generation differs from the one it last ran for, writes the fresh
//! attributes file and runs the program (typically `chef-client`).
//!
//! - never two runs at once: changes during a run are looked at once it ends,
//!   so a burst of changes gives at most one more run;
//! - a change that resolves to the same generation for this node runs nothing;
//! - a splay before each run keeps a fleet off the Chef server's back: a
//!   random share of it, or a fixed share per node (`--splay-from node`);
//! - store errors back off (a random wait in a window doubling from 10 s to
//!   1 min, so a fleet does not come back in step); SIGTERM/SIGINT stop it
//!   cleanly, passing SIGTERM on to a running program;
//! - the generation last run for is kept next to the attributes file
//!   (`FILE.generation`), so a restart does not run again for nothing.

use std::fmt::Display;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::atomic_file;
use crate::cache::Cache;
use crate::cli::{SplayFrom, WatchArgs};
use crate::clock::{now_rfc3339, pause_unless_stopped, random_fraction, HumanDuration};
use crate::commands::attributes::{cache_key, fetch_not_behind};
use crate::commands::health::check_and_report;
use crate::commands::Context;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::layout::{check_name, NameKind};
use crate::node_attributes::AttributesDocument;
use crate::output::Format;
use crate::resolve::node_roots;
use crate::rollout::rank::rank;
use crate::store::{ChangeFeed, Store};

/// How long a running program gets to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Longest wait between tries when the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The longest `--splay`: a run is meant to follow a change within the hour,
/// and a typo (`30d` for `30s`) must not park a node for a month.
const MAX_SPLAY: Duration = Duration::from_secs(3600);

/// The window [`Agent::backoff`] draws from after `failures` failures.
fn backoff_window(failures: u32) -> Duration {
    (Duration::from_secs(10) * 2u32.pow(failures.saturating_sub(1).min(3))).min(MAX_BACKOFF)
}

/// Runs `watch` until SIGTERM or SIGINT.
pub fn run(ctx: &Context, args: &WatchArgs) -> Result<()> {
    // It logs lines for people and journals; nothing else to choose.
    ctx.format("watch", &[Format::Table])?;
    let (cluster, node) = ctx.node_target(&args.target)?;
    check_name(NameKind::Cluster, &cluster).map_err(Error::BadName)?;
    check_name(NameKind::Node, &node).map_err(Error::BadName)?;
    let program = find_program(&args.exec, ctx.env)?;
    ctx.check_output(args.output.as_deref())?;
    if args.splay.0 > MAX_SPLAY {
        return Err(Error::Usage(format!(
            "--splay {} is longer than the most it may be, {}",
            HumanDuration(args.splay.0),
            HumanDuration(MAX_SPLAY)
        )));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Error::Usage(format!("cannot handle signals: {e}")))?;
    }
    let store = ctx.open_store()?;
    let spec = AgentSpec {
        cluster,
        node,
        program,
        args: args.args.clone(),
        splay: args.splay.0,
        splay_from: args.splay_from,
        interval: args.interval.0,
        output: args.output.clone(),
        health_interval: args.health_interval.0,
        checks: args.checks.clone(),
    };
    follow(ctx, store, spec, stop)
}

/// What one node's agent follows and runs: the `watch` command line, checked.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// The node's cluster (a checked name).
    pub cluster: String,
    /// The node (a checked name).
    pub node: String,
    /// The program to run, found and executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Longest wait before a run.
    pub splay: Duration,
    /// How the share of the splay is drawn.
    pub splay_from: SplayFrom,
    /// How often to look even without a change (at least 1 s).
    pub interval: Duration,
    /// Where the attributes file goes; decided at the first fetch when not given.
    pub output: Option<PathBuf>,
    /// How often to re-run the health checks and re-report (zero: never).
    pub health_interval: Duration,
    /// The recipe's checks file, if any.
    pub checks: Option<PathBuf>,
}

/// Runs one node's watch loop on `store` until `stop` is raised: the loop
/// `watch` runs, exposed so that a simulation can run thousands of agents
/// in one process, each with its own store connections.
pub fn follow(
    ctx: &Context,
    store: Box<dyn Store>,
    spec: AgentSpec,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut agent = Agent {
        ctx,
        store,
        cluster: spec.cluster,
        node: spec.node,
        program: spec.program,
        args: spec.args,
        splay: spec.splay,
        splay_from: spec.splay_from,
        interval: spec.interval.max(Duration::from_secs(1)),
        output: spec.output,
        last_run_for: None,
        seen_revision: None,
        health_interval: spec.health_interval,
        checks: spec.checks,
        last_health: None,
        stop,
    };
    if let Some(output) = &agent.output {
        agent.last_run_for = read_last_run(output);
    }
    agent.run()
}

/// The fixed share of the splay a node waits with `--splay-from node`, in
/// [0, 1): the node's rank (as a rollout ranks it) in the id `splay/CLUSTER`.
/// Stable across restarts and platforms, spread evenly over a fleet, and
/// computable by anyone who knows the names (the cookbook shows it).
pub fn node_splay_share(cluster: &str, node: &str) -> f64 {
    rank(&format!("splay/{cluster}"), node)
}

/// Finds the program: a path, or a name looked up in `PATH`. A missing or
/// non-executable program is refused at start, not at the first change.
pub fn find_program(name: &str, env: Env) -> Result<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if name.contains('/') {
        Some(PathBuf::from(name)).filter(|p| executable(p))
    } else {
        env("PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(name))
            .find(|p| executable(p))
    };
    found.ok_or_else(|| {
        Error::Usage(format!(
            "--exec {name:?}: no such executable program{}",
            if name.contains('/') { "" } else { " in PATH" }
        ))
    })
}

fn read_last_run(output: &Path) -> Option<String> {
    std::fs::read_to_string(sidecar(output))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn sidecar(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_os_string();
    name.push(".generation");
    PathBuf::from(name)
}

struct Agent<'c> {
    ctx: &'c Context<'c>,
    store: Box<dyn Store>,
    cluster: String,
    node: String,
    program: PathBuf,
    args: Vec<String>,
    splay: Duration,
    splay_from: SplayFrom,
    interval: Duration,
    /// Where the attributes file goes; decided at the first fetch when not given.
    output: Option<PathBuf>,
    /// The generation the program last ran for.
    last_run_for: Option<String>,
    /// The store revision last accepted: a read behind it (a Consul server
    /// just restarted) is read again consistently before acting.
    seen_revision: Option<u64>,
    /// How often health is re-checked between runs (zero: never).
    health_interval: Duration,
    /// The recipe's checks file.
    checks: Option<PathBuf>,
    /// What the last health check said, so the log gets a line per change.
    last_health: Option<String>,
    stop: Arc<AtomicBool>,
}

impl Agent<'_> {
    fn log(&self, message: impl Display) {
        crate::output::warn(&format!(
            "{} convergent watch {}/{}: {message}",
            now_rfc3339(),
            self.cluster,
            self.node
        ));
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps up to `d`, waking early on a signal; false when stopped.
    fn pause(&self, d: Duration) -> bool {
        pause_unless_stopped(&self.stop, d)
    }

    /// The wait after `failures` store failures in a row: a random point in
    /// a window doubling from 10 s to 1 min (1,000 agents re-following over a
    /// 2 s window after an etcd restart peaked at 4× their startup rate). Random, because a fleet loses
    /// its store at the same moment: without jitter every agent would come
    /// back at the same instant, again and again (a reconnect storm).
    fn backoff(failures: u32) -> Duration {
        backoff_window(failures).mul_f64(0.05 + 0.95 * random_fraction())
    }

    fn run(&mut self) -> Result<()> {
        let roots = node_roots(&self.ctx.layout(), &self.cluster, &self.node);
        self.log(format_args!(
            "following {} for changes; runs {}{} (splay up to {}, looking again every {})",
            self.store.describe(),
            self.program.display(),
            if self.args.is_empty() {
                String::new()
            } else {
                format!(" {}", self.args.join(" "))
            },
            HumanDuration(self.splay),
            HumanDuration(self.interval),
        ));
        let mut feed: Option<Box<dyn ChangeFeed>> = None;
        let mut failures = 0u32;
        let mut look = true;
        let mut next_look = Instant::now() + self.interval;
        let mut next_health = Instant::now() + self.health_interval;
        while !self.stopped() {
            // Follow first, then read: no change between the two is missed.
            let Some(current_feed) = feed.as_mut() else {
                match self.store.watch(&roots) {
                    Ok(f) => feed = Some(f),
                    Err(e) => {
                        failures += 1;
                        let wait = Agent::backoff(failures);
                        self.log(format_args!(
                            "cannot follow the store ({e}); trying again in {}",
                            HumanDuration(wait)
                        ));
                        self.pause(wait);
                    }
                }
                continue;
            };
            if look {
                next_look = Instant::now() + self.interval;
                match self.fetch() {
                    Ok(doc) => {
                        failures = 0;
                        if self.differs(&doc) {
                            // No look right after: whatever changed during
                            // the run is queued in the feed, the wait below
                            // says so at once and we look then, once. No
                            // change, no read (a fleet-wide change costs the
                            // store one read per agent, not two).
                            self.act(doc)?;
                        }
                    }
                    Err(e) if e.is_unavailable() => {
                        failures += 1;
                        let wait = Agent::backoff(failures);
                        self.log(format_args!("{e}; trying again in {}", HumanDuration(wait)));
                        look = true;
                        self.pause(wait);
                        continue;
                    }
                    Err(e) => self.log(format_args!(
                        "{e}; nothing run, waiting for the next change"
                    )),
                }
            }
            if !self.health_interval.is_zero() && Instant::now() >= next_health {
                self.recheck_health();
                next_health = Instant::now() + self.health_interval;
            }
            let slice =
                Duration::from_millis(500).min(next_look.saturating_duration_since(Instant::now()));
            match current_feed.wait(slice) {
                Ok(true) => look = true,
                Ok(false) => look = Instant::now() >= next_look,
                Err(e) => {
                    failures += 1;
                    let wait = Agent::backoff(failures);
                    self.log(format_args!(
                        "lost the change feed ({e}); following again in {}",
                        HumanDuration(wait)
                    ));
                    feed = None;
                    look = true;
                    self.pause(wait);
                }
            }
        }
        self.log("stopping on signal");
        Ok(())
    }

    /// Re-runs the health checks and re-reports health (as `health` does);
    /// logs what it found when that changed. Never fatal: the agent's job
    /// of running the program goes on.
    fn recheck_health(&mut self) {
        let attributes = self.output.as_deref().and_then(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            AttributesDocument::parse(path, &text).ok()
        });
        let said = match check_and_report(
            self.ctx,
            self.store.as_ref(),
            &self.cluster,
            &self.node,
            attributes.as_ref(),
            self.checks.as_deref(),
        ) {
            Ok(line) => line,
            Err(e) => format!("health not reported: {e}"),
        };
        // The line names the generation and each failing check: it changes
        // exactly when something worth a log line does.
        if self.last_health.as_deref() != Some(said.as_str()) {
            self.log(&said);
            self.last_health = Some(said);
        }
    }

    /// Whether the program should run for this document; logs the decision.
    fn differs(&self, doc: &AttributesDocument) -> bool {
        let generation = &doc.convergent.generation;
        if self.last_run_for.as_deref() == Some(generation.as_str()) {
            self.log(format_args!(
                "generation {generation} is the one last run for: nothing to do"
            ));
            return false;
        }
        self.log(format_args!(
            "generation {generation} (state {}) differs from the last run's ({}): running {}",
            doc.convergent.state.as_deref().unwrap_or("-"),
            self.last_run_for.as_deref().unwrap_or("none"),
            self.program.display()
        ));
        true
    }

    fn act(&mut self, mut doc: AttributesDocument) -> Result<()> {
        if !self.splay.is_zero() {
            let share = match self.splay_from {
                SplayFrom::Random => random_fraction(),
                SplayFrom::Node => node_splay_share(&self.cluster, &self.node),
            };
            let wait = self.splay.mul_f64(share);
            self.log(format_args!(
                "waiting {} first (splay)",
                HumanDuration(Duration::from_secs(wait.as_secs()))
            ));
            if !self.pause(wait) {
                return Ok(());
            }
            // The desired state may have moved on while we waited.
            match self.fetch() {
                Ok(fresh) => doc = fresh,
                Err(e) => {
                    self.log(format_args!("{e}; the run waits for the next look"));
                    return Ok(());
                }
            }
        }
        let output = self.save(&doc)?;
        let generation = doc.convergent.generation.clone();
        let started = Instant::now();
        match self.run_program(&doc, &output) {
            Some(status) if status.success() => self.log(format_args!(
                "{} succeeded in {:.1}s",
                self.program.display(),
                started.elapsed().as_secs_f64()
            )),
            Some(status) => self.log(format_args!(
                "{} failed: {}",
                self.program.display(),
                describe_exit(status)
            )),
            None => {}
        }
        // Recorded whatever the outcome: a failed run is not repeated until the
        // desired state changes again (chef-client's own schedule covers it).
        if let Err(e) = atomic_file::write(&sidecar(&output), generation.as_bytes(), None) {
            self.log(format_args!("cannot record the generation run for: {e}"));
        }
        self.last_run_for = Some(generation);
        Ok(())
    }

    /// Reads the node's attributes, never behind a revision already read.
    fn fetch(&mut self) -> Result<AttributesDocument> {
        let doc = fetch_not_behind(
            self.ctx,
            self.store.as_ref(),
            self.seen_revision,
            &self.cluster,
            &self.node,
        )?;
        // What was accepted is the store's word, even lower (see
        // `fetch_not_behind`): later reads are compared with it.
        if doc.convergent.source.revision.is_some() {
            self.seen_revision = doc.convergent.source.revision;
        }
        Ok(doc)
    }

    /// Caches the document and writes the attributes file; returns its path.
    fn save(&mut self, doc: &AttributesDocument) -> Result<PathBuf> {
        let (store_url, prefix) = (
            self.ctx.settings.store.to_string(),
            self.ctx.settings.prefix.to_string(),
        );
        let cache = Cache::new(self.ctx.settings.cache_dir.clone(), self.ctx.env);
        let cached = cache.save(
            &cache_key(&store_url, &prefix, &self.cluster, &self.node),
            doc,
        );
        let output = match (&self.output, cached) {
            (Some(path), _) => path.clone(),
            (None, Ok(cache_file)) => {
                let path = attributes_file_beside(&cache_file);
                self.log(format_args!(
                    "writes the attributes file to {}",
                    path.display()
                ));
                self.output = Some(path.clone());
                if self.last_run_for.is_none() {
                    self.last_run_for = read_last_run(&path);
                }
                path
            }
            (None, Err(e)) => return Err(e),
        };
        atomic_file::write(&output, doc.to_json().as_bytes(), None)?;
        Ok(output)
    }

    /// Runs the program to its end (or until a signal, which it is passed on).
    fn run_program(&self, doc: &AttributesDocument, output: &Path) -> Option<ExitStatus> {
        let c = &doc.convergent;
        let spawned = Command::new(&self.program)
            .args(&self.args)
            .env("CONVERGENT_ATTRIBUTES", output)
            .env("CONVERGENT_GENERATION", &c.generation)
            .env("CONVERGENT_CLUSTER", &c.cluster)
            .env("CONVERGENT_NODE", &c.node)
            .env("CONVERGENT_STATE", c.state.as_deref().unwrap_or(""))
            .stdin(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                self.log(format_args!("cannot start {}: {e}", self.program.display()));
                return None;
            }
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(e) => {
                    self.log(format_args!(
                        "lost track of {}: {e}",
                        self.program.display()
                    ));
                    return None;
                }
            }
            if self.stopped() {
                self.log(format_args!(
                    "passing SIGTERM on to {} (pid {})",
                    self.program.display(),
                    child.id()
                ));
                // SAFETY: kill(2) on our own child's pid has no memory effects.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
                let deadline = Instant::now() + STOP_GRACE;
                while Instant::now() < deadline {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Some(status);
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                return child.wait().ok();
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Where `watch` keeps its attributes file by default: beside the cache
/// entry `CLUSTER/NODE.json`, as `CLUSTER/NODE+attributes.json`. A `+` is
/// never part of a node name, so no node's cache entry can take this name
/// (`NODE.attributes.json` was the cache entry of node `NODE.attributes`).
fn attributes_file_beside(cache_file: &Path) -> PathBuf {
    let stem = cache_file.file_stem().unwrap_or_default().to_string_lossy();
    cache_file.with_file_name(format!("{stem}+attributes.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_in_path_or_refused() {
        let env = |name: &str| (name == "PATH").then(|| "/nonexistent:/bin:/usr/bin".to_string());
        assert!(find_program("sh", &env).unwrap().ends_with("sh"));
        assert!(find_program("/bin/sh", &env).is_ok());
        let err = find_program("no-such-program-xyz", &env).unwrap_err();
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().contains("no-such-program-xyz"));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert!(
            find_program(plain.to_str().unwrap(), &env).is_err(),
            "not executable"
        );
    }

    #[test]
    fn a_node_splay_share_is_pinned_and_differs_by_node_and_cluster() {
        // Computed independently: python3 -c 'import hashlib;
        // print((int.from_bytes(hashlib.sha256(b"splay/web/web-01").digest()[:8], "big") >> 11) / 2**53)'
        assert_eq!(node_splay_share("web", "web-01"), 0.9813673433868471);
        assert_eq!(node_splay_share("web", "web-02"), 0.8881301897998504);
        assert_ne!(node_splay_share("db", "web-01"), 0.9813673433868471);
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        assert_eq!(backoff_window(1), Duration::from_secs(10));
        assert_eq!(backoff_window(2), Duration::from_secs(20));
        assert_eq!(backoff_window(30), MAX_BACKOFF);
        let waits: Vec<Duration> = (0..50).map(|_| Agent::backoff(1)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(10)));
        assert!(waits.iter().any(|w| *w != waits[0]), "jittered: {waits:?}");
    }
}
