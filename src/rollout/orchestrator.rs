//! The orchestrator: moves clusters through a plan's steps by writing only
//! the view, releasing each step's patch batch by batch and gating each
//! batch on the nodes' own reports.
//!
//! It keeps no state of its own: every turn of its loop reads the rollout
//! record and the fleet (one store call), decides, and writes with
//! compare-and-set. Killed at any moment, it resumes when the same plan runs
//! again. One orchestrator per plan (a lock with a TTL, kept alive while it
//! runs) and one rollout per cluster (the record is created only where none
//! is).
//!
//! This file holds what every part shares (options, progress events, the
//! lock, record updates); the rest is split by concept: `plan_run` (a
//! plan's loop, starting and finishing steps), `turn` (one rollout's turn:
//! gate, release, pause), `rollback` (taking one cluster back), `undo`
//! (rolling a whole plan back) and `view` (dry run and `rollout status`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

mod plan_run;
mod rollback;
mod turn;
mod undo;
mod view;

pub use super::control::{control, Control};
pub use super::standing::short_list;
use super::state::{Direction, Event, RolloutState};
use crate::clock::now_rfc3339;
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::layout::Layout;
use crate::store::{HeldLock, Store};
use crate::update::update;
pub use view::{preview, rollouts, RolloutView, StepPreview, StepStanding, HELD_SHOWN};

/// How the orchestrator runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// A node silent for longer is absent (not a member for batching, never waited for).
    pub member_ttl: Duration,
    /// How often the fleet is read while waiting.
    pub poll: Duration,
    /// The lock's TTL: how soon a crashed orchestrator's lock frees itself.
    pub lock_ttl: Duration,
    /// How long to wait for a lock held by someone else (0: fail at once).
    pub lock_wait: Duration,
}

/// What happened, for whoever watches (a terminal, a log, a JSON stream).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A step begins (or resumes).
    StepStarted {
        step: usize,
        steps: usize,
        cluster: String,
        rollout: String,
        members: usize,
    },
    /// A batch was released (forward) or taken back (rollback).
    Moved {
        cluster: String,
        direction: Direction,
        batch: u32,
        nodes: Vec<String>,
        threshold: f64,
    },
    /// Where the watched members stand.
    Waiting {
        cluster: String,
        watched: usize,
        converged: usize,
        failed: usize,
        pending: usize,
        absent: usize,
        elapsed_s: u64,
    },
    /// The next batch waits: the rollout's state requires what other
    /// tiers' check-ins do not show yet.
    WaitingForConstraints {
        cluster: String,
        waiting_for: Vec<String>,
    },
    /// Newly released nodes were kicked.
    Kicked {
        cluster: String,
        nodes: usize,
        failures: Vec<String>,
    },
    /// The store could not be reached; the orchestrator keeps trying.
    StoreUnavailable { cluster: String, reason: String },
    /// The first batch passed its gate; the rest waits for `rollout promote`.
    AwaitingPromotion { cluster: String, batches: u32 },
    /// The rollout stopped before its end.
    Stopped { cluster: String, reason: String },
    /// A step is done: its patch is part of the cluster's desired document.
    StepDone { step: usize, cluster: String },
    /// The whole plan is done.
    PlanDone { plan: String },
    /// A step's rollback ended: batch by batch (every present node taken
    /// back reported the previous desired state), or all at once (the
    /// record is gone; nodes return on their next run, not waited for).
    /// `earlier_steps` of its plan were done before it and stay applied;
    /// `stay_applied` names them (`steps 1-2`, or `step 1 "db" (db), step
    /// 3 (web)` when the plan's steps finished out of order).
    RolledBack {
        cluster: String,
        rollout: String,
        plan: String,
        step: usize,
        all_at_once: bool,
        earlier_steps: usize,
        stay_applied: String,
    },
    /// A plan rollback ended: `undone` says, step by step (last first),
    /// what went back and how.
    PlanRolledBack {
        plan: String,
        undone: Vec<String>,
        all_at_once: bool,
    },
}

impl Progress {
    /// The cluster the event is about, if one.
    fn cluster(&self) -> Option<&str> {
        match self {
            Progress::StepStarted { cluster, .. }
            | Progress::Moved { cluster, .. }
            | Progress::Waiting { cluster, .. }
            | Progress::WaitingForConstraints { cluster, .. }
            | Progress::Kicked { cluster, .. }
            | Progress::StoreUnavailable { cluster, .. }
            | Progress::AwaitingPromotion { cluster, .. }
            | Progress::Stopped { cluster, .. }
            | Progress::StepDone { cluster, .. }
            | Progress::RolledBack { cluster, .. } => Some(cluster),
            Progress::PlanDone { .. } | Progress::PlanRolledBack { .. } => None,
        }
    }
}

/// Receives [`Progress`].
pub trait Observer {
    /// Called for every event.
    fn notify(&mut self, progress: &Progress);
}

/// How one step ended.
enum StepEnd {
    Done,
    Stopped(String),
    /// Too many failures turned the step into a rollback (on_failure: rollback).
    RollingBack(String),
}

/// What one turn of the loop did.
enum Turn {
    /// A batch moved: look again at once.
    Moved,
    /// Nothing to do yet: look again after a poll interval.
    Waiting,
    /// The step is over, one way or the other.
    End(StepEnd),
}

/// What a rollout's turns keep between them.
#[derive(Debug, Default)]
struct TurnClock {
    /// Since when the latest batch's gate has been open (for `pause`).
    gate_open_since: Option<Instant>,
    /// Since when the store could not be reached.
    outage_since: Option<Instant>,
}

/// How long the orchestrator waits out a store it cannot reach before it
/// gives up (exit 69; running the plan again resumes it).
pub const STORE_OUTAGE_LIMIT: Duration = Duration::from_secs(120);

/// Runs plans and rollbacks against one store.
pub struct Orchestrator<'a> {
    store: &'a dyn Store,
    layout: Layout,
    actor: String,
    options: RunOptions,
    observer: &'a mut dyn Observer,
    stop: Arc<AtomicBool>,
    /// Per cluster: the last wait said, and whether "awaiting promotion" was.
    last_waiting: BTreeMap<String, Progress>,
    promotion_said: BTreeSet<String>,
    /// Rolling a whole plan back: the earlier steps do not "stay applied".
    in_plan_rollback: bool,
}

impl<'a> Orchestrator<'a> {
    /// An orchestrator acting as `actor`; `stop` turns true on SIGTERM/SIGINT.
    pub fn new(
        store: &'a dyn Store,
        layout: Layout,
        actor: String,
        options: RunOptions,
        observer: &'a mut dyn Observer,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Orchestrator {
            store,
            layout,
            actor,
            options,
            observer,
            stop,
            last_waiting: BTreeMap::new(),
            promotion_said: BTreeSet::new(),
            in_plan_rollback: false,
        }
    }

    /// Passes an event on; a wait is passed on only when its counts changed
    /// (not just the time waited), so a log gets a line per change — per
    /// cluster, as steps of one plan run at the same time.
    fn notify(&mut self, progress: Progress) {
        let cluster = progress.cluster().unwrap_or_default().to_string();
        if matches!(progress, Progress::AwaitingPromotion { .. }) {
            // Said once while the wait lasts; the counts go on as usual.
            if self.promotion_said.insert(cluster) {
                self.observer.notify(&progress);
            }
            return;
        }
        if !matches!(progress, Progress::Waiting { .. }) {
            self.promotion_said.remove(&cluster);
        }
        if matches!(progress, Progress::WaitingForConstraints { .. }) {
            // Said again only when what it waits for changes.
            if self.last_waiting.get(&cluster) == Some(&progress) {
                return;
            }
            self.last_waiting.insert(cluster, progress.clone());
            self.observer.notify(&progress);
            return;
        }
        if matches!(progress, Progress::Waiting { .. }) {
            let mut counts_only = progress.clone();
            if let Progress::Waiting { elapsed_s, .. } = &mut counts_only {
                *elapsed_s = 0;
            }
            if self.last_waiting.get(&cluster) == Some(&counts_only) {
                return;
            }
            self.last_waiting.insert(cluster, counts_only);
        } else {
            self.last_waiting.remove(&cluster);
        }
        self.observer.notify(&progress);
    }

    /// The cluster's fleet as it is now: one read of the store.
    fn fleet(&self, cluster: &str) -> Result<Fleet> {
        Fleet::read(
            self.store,
            &self.layout,
            cluster,
            self.options.member_ttl,
            SystemTime::now(),
        )
    }

    /// Waits one poll interval; false when a signal asked to stop.
    fn pause_a_moment(&self) -> bool {
        let until = Instant::now() + self.options.poll;
        while Instant::now() < until {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            thread::sleep(Duration::from_millis(20).min(self.options.poll));
        }
        !self.stop.load(Ordering::SeqCst)
    }

    fn interrupted() -> StepEnd {
        StepEnd::Stopped("interrupted by a signal; run the plan again to resume".into())
    }

    /// Takes the plan's lock, waiting up to `wait` for another holder.
    fn lock_waiting(&self, plan: &str, wait: Duration) -> Result<Box<dyn HeldLock>> {
        let name = self.layout.lock(&format!("plan-{plan}"));
        let holder = format!(
            "the rollout of plan {plan} by {} (pid {}) since {}",
            self.actor,
            std::process::id(),
            now_rfc3339()
        );
        let deadline = Instant::now() + wait;
        loop {
            match self.store.lock(&name, self.options.lock_ttl, &holder) {
                Err(Error::LockHeld { .. }) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200))
                }
                other => return other,
            }
        }
    }

    /// Appends an event to the record's history (best kept, never fatal).
    fn note(&self, cluster: &str, id: &str, event: &str, detail: String) -> Result<()> {
        self.update_record(cluster, id, |s| {
            s.record(Event::now(&self.actor, event, detail.clone()));
            true
        })?;
        Ok(())
    }

    /// Changes the rollout record of `cluster` if it is still rollout `id`:
    /// `change` edits it and says whether to write it. Returns whether it
    /// was written — by the attempt that won, when a compare-and-set
    /// conflict made `change` run again on a fresh read.
    fn update_record(
        &self,
        cluster: &str,
        id: &str,
        change: impl Fn(&mut RolloutState) -> bool,
    ) -> Result<bool> {
        let key = self.layout.rollout(cluster);
        let mut written = false;
        update(self.store, std::slice::from_ref(&key), |current| {
            written = false;
            let Some(doc) = &current.docs[0] else {
                return Ok(None);
            };
            let mut s = RolloutState::from_document(&key, doc)?;
            if s.id != id || !change(&mut s) {
                return Ok(None);
            }
            written = true;
            Ok(Some(vec![Some(s.to_document())]))
        })?;
        Ok(written)
    }
}
