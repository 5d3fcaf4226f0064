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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};

use super::batches::{
    batch_size, gate, next_threshold, previous_threshold, ranked, Gate, GateCounts, Ranked,
};
use super::compat;
pub use super::control::{control, Control};
use super::kick;

mod plan_run;
mod undo;
mod view;
use super::plan::{Amount, OnFailure, Plan};
use super::preflight::{check_step, StepInputs, StepStart};
pub use super::standing::short_list;
use super::standing::{gate_states, names, nodes_in, timed_out, watched_counts, HealthGate};
use super::state::{
    rollout_id, AppliedStep, Direction, Event, PlanProgress, PlanStatus, RolloutState, Status,
};
use crate::clock::{age_seconds, now_rfc3339, parse_rfc3339};
use crate::document::{merged, Nulls};
use crate::error::{Error, Result};
use crate::fleet::{Fleet, MemberState};
use crate::history::{self, diff, Change};
use crate::layout::Layout;
use crate::schema::state_of;
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

    /// Whether a forward release must wait for other tiers: the rollout's
    /// state requires what their check-ins do not show yet (said once).
    /// `None`: release. The wait's start is kept in the record, so that
    /// `wait.constraints_timeout` (default `wait.timeout`) counts across
    /// restarts; past it, the rollout pauses like a batch that timed out.
    fn constraints_gate(
        &mut self,
        cluster: &str,
        fleet: &Fleet,
        state: &RolloutState,
    ) -> Result<Option<Turn>> {
        if state.direction != Direction::Forward {
            return Ok(None);
        }
        let waiting_for = compat::unmet(
            self.store,
            &self.layout,
            &fleet.inputs,
            self.options.member_ttl,
            SystemTime::now(),
        )?;
        if waiting_for.is_empty() {
            return Ok(None);
        }
        self.notify(Progress::WaitingForConstraints {
            cluster: cluster.to_string(),
            waiting_for: waiting_for.clone(),
        });
        let since = state
            .constraints_wait_since
            .as_deref()
            .and_then(|t| parse_rfc3339(t).ok());
        let Some(since) = since else {
            let actor = self.actor.clone();
            let detail = format!("batch {}: {}", state.batches + 1, waiting_for.join("; "));
            self.update_record(cluster, &state.id, |s| {
                if s.constraints_wait_since.is_some() || s.status != Status::Running {
                    return false;
                }
                s.constraints_wait_since = Some(now_rfc3339());
                s.record(Event::now(
                    &actor,
                    "waiting for other tiers",
                    detail.clone(),
                ));
                true
            })?;
            return Ok(Some(Turn::Waiting));
        };
        if let Some(limit) = state.wait.constraints_limit() {
            if age_seconds(since, SystemTime::now()) >= limit.0.as_secs().max(1) {
                let reason = format!(
                    "batch {} waited {limit} for other tiers and their check-ins still do not meet the step's constraints: {}; \
                     `convergent rollout resume {cluster}` then run the plan again to wait again, \
                     or `convergent rollout rollback {cluster}`",
                    state.batches + 1,
                    waiting_for.join("; ")
                );
                return Ok(Some(Turn::End(
                    self.stop_rollout(cluster, &state.id, reason)?,
                )));
            }
        }
        Ok(Some(Turn::Waiting))
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

    /// Drives an automatic rollback (on_failure: rollback) to its end and
    /// says, in the reason the plan stops with, exactly what went back.
    fn roll_back_automatically(
        &mut self,
        cluster: &str,
        state: &RolloutState,
        reason: String,
        lock: &dyn HeldLock,
    ) -> Result<StepEnd> {
        match self.drive(cluster, &state.id, Direction::Back, lock)? {
            StepEnd::Done => {
                self.end_rollback(cluster, state, "batch by batch, automatically")?;
                // The plan's steps done (steps of one plan may finish in
                // any order, so not always those numbered before this one).
                let applied = self
                    .progress(&state.plan)?
                    .map(|p| (p.still_applied(), p))
                    .filter(|(steps, _)| !steps.is_empty());
                let earlier = match applied {
                    None => String::new(),
                    Some((steps, p)) => {
                        let (verb, them) = if steps.len() == 1 {
                            ("stays", "it")
                        } else {
                            ("stay", "them")
                        };
                        let mut text = p.steps_text(&steps);
                        if let Some(first) = text.get_mut(..1) {
                            first.make_ascii_uppercase();
                        }
                        format!(
                            " {text} of plan {} {verb} applied (`convergent rollout rollback --plan {}` undoes {them}).",
                            state.plan, state.plan
                        )
                    }
                };
                Ok(StepEnd::Stopped(format!(
                    "step {} ({cluster}, rollout {}) was rolled back automatically: every present node of {cluster} \
                     it had released has reported the desired state it had before this step.{earlier} Why: {reason}",
                    state.step + 1,
                    state.id,
                )))
            }
            StepEnd::Stopped(why) | StepEnd::RollingBack(why) => Ok(StepEnd::Stopped(format!(
                "the automatic rollback of {cluster} stopped part-way: {why}; \
                 run the plan (or `convergent rollout rollback {cluster}`) again to finish it"
            ))),
        }
    }

    /// Moves the rollout of `cluster` batch by batch in `direction` — each
    /// batch gated on the nodes' reports, with the strategy's pause between
    /// batches — until its last batch has passed its gate (`Done`) or it must
    /// stop. Each turn reads the record and the fleet afresh, so whatever an
    /// operator or a crashed predecessor left is taken as found. A store that
    /// cannot be reached is waited out for up to [`STORE_OUTAGE_LIMIT`]
    /// (while the lock holds: a lease that expires meanwhile ends the run).
    fn drive(
        &mut self,
        cluster: &str,
        id: &str,
        direction: Direction,
        lock: &dyn HeldLock,
    ) -> Result<StepEnd> {
        let mut clock = TurnClock::default();
        loop {
            lock.check()?;
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Orchestrator::interrupted());
            }
            match self.guarded_turn(cluster, id, direction, &mut clock)? {
                Turn::Moved => continue,
                Turn::Waiting => {}
                Turn::End(end) => return Ok(end),
            }
            if !self.pause_a_moment() {
                return Ok(Orchestrator::interrupted());
            }
        }
    }

    /// One turn, with a store that cannot be reached waited out (a
    /// `Waiting` turn) for up to [`STORE_OUTAGE_LIMIT`].
    fn guarded_turn(
        &mut self,
        cluster: &str,
        id: &str,
        direction: Direction,
        clock: &mut TurnClock,
    ) -> Result<Turn> {
        match self.turn(cluster, id, direction, &mut clock.gate_open_since) {
            Ok(turn) => {
                clock.outage_since = None;
                Ok(turn)
            }
            Err(e) if e.is_unavailable() => match clock.outage_since {
                Some(since) if since.elapsed() >= STORE_OUTAGE_LIMIT => Err(e),
                Some(_) => Ok(Turn::Waiting),
                None => {
                    clock.outage_since = Some(Instant::now());
                    self.notify(Progress::StoreUnavailable {
                        cluster: cluster.to_string(),
                        reason: e.to_string(),
                    });
                    Ok(Turn::Waiting)
                }
            },
            Err(e) => Err(e),
        }
    }

    /// One look at the rollout: read, decide, and move a batch or not.
    fn turn(
        &mut self,
        cluster: &str,
        id: &str,
        direction: Direction,
        gate_open_since: &mut Option<Instant>,
    ) -> Result<Turn> {
        let fleet = self.fleet(cluster)?;
        let state = match self.current(&fleet, cluster, id, direction)? {
            Ok(state) => state,
            Err(stopped) => return Ok(Turn::End(stopped)),
        };
        let order = ranked(id, fleet.batch_members().iter().map(|m| m.node.as_str()));
        if state.batches == 0 {
            if let Some(turn) = self.constraints_gate(cluster, &fleet, &state)? {
                return Ok(turn);
            }
            self.release(cluster, &state, &order)?;
            return Ok(Turn::Moved);
        }
        let now = SystemTime::now();
        let watched = |rank: f64| state.watches(rank);
        let states = gate_states(&fleet, &state, now);
        let health = HealthGate::of(&state, now);
        let counts = watched_counts(&states, &order, watched);
        self.report_waiting(cluster, &fleet, counts, &state);
        let max_failed = state.strategy.max_failed.of(order.len());
        let min_converged = state.wait.min_converged.unwrap_or(Amount::Percent(100.0));
        match gate(counts, max_failed, min_converged) {
            Gate::TooManyFailures { failed, allowed } => {
                let failed_nodes = nodes_in(&states, &order, MemberState::Failed, watched);
                let shown = names(&failed_nodes, health.as_ref());
                if direction == Direction::Forward
                    && state.strategy.on_failure == OnFailure::Rollback
                {
                    let reason = format!(
                        "{failed} released nodes failed, more than the {allowed} allowed ({shown}); \
                         on_failure: rollback takes {cluster} back batch by batch"
                    );
                    self.turn_back(cluster, id, reason.clone())?;
                    return Ok(Turn::End(StepEnd::RollingBack(reason)));
                }
                let reason = match direction {
                    Direction::Forward => format!(
                        "{failed} released nodes failed, more than the {allowed} allowed ({shown}); \
                         `convergent rollout resume {cluster}` then run the plan again to go on, \
                         or `convergent rollout rollback {cluster}`"
                    ),
                    Direction::Back => format!(
                        "{failed} nodes failed on the way back, more than the {allowed} allowed ({shown}); \
                         `convergent rollout resume {cluster}` then run the rollback again to go on"
                    ),
                };
                Ok(Turn::End(self.stop_rollout(cluster, id, reason)?))
            }
            Gate::Wait => {
                *gate_open_since = None;
                match timed_out(&state, &states, &order, watched, now) {
                    Some(reason) => Ok(Turn::End(self.stop_rollout(cluster, id, reason)?)),
                    None => Ok(Turn::Waiting),
                }
            }
            Gate::Pass if state.fully_moved() => Ok(Turn::End(StepEnd::Done)),
            Gate::Pass if state.awaits_promotion() => {
                *gate_open_since = None;
                self.await_promotion(cluster, &state)?;
                Ok(Turn::Waiting)
            }
            Gate::Pass => {
                let since = *gate_open_since.get_or_insert_with(Instant::now);
                if since.elapsed() < state.strategy.pause.0 {
                    return Ok(Turn::Waiting);
                }
                if let Some(turn) = self.constraints_gate(cluster, &fleet, &state)? {
                    return Ok(turn);
                }
                *gate_open_since = None;
                self.release(cluster, &state, &order)?;
                Ok(Turn::Moved)
            }
        }
    }

    /// Records, once, that the first batch passed its gate and the rest of
    /// the step waits for `rollout promote`.
    fn await_promotion(&mut self, cluster: &str, state: &RolloutState) -> Result<()> {
        if state.awaiting_promotion_since.is_none() {
            let actor = self.actor.clone();
            self.update_record(cluster, &state.id, |s| {
                if s.awaiting_promotion_since.is_some() || s.promoted_by.is_some() {
                    return false;
                }
                s.awaiting_promotion_since = Some(now_rfc3339());
                s.record(Event::now(
                    &actor,
                    "awaiting promotion",
                    format!(
                        "batch {} passed its gate; `convergent rollout promote {cluster}` releases the rest",
                        s.batches
                    ),
                ));
                true
            })?;
        }
        self.notify(Progress::AwaitingPromotion {
            cluster: cluster.to_string(),
            batches: state.batches,
        });
        Ok(())
    }

    /// Turns a forward rollout into a rollback (on_failure: rollback): one
    /// write, so an orchestrator killed right after finds the rollback in
    /// the record and goes on with it.
    fn turn_back(&mut self, cluster: &str, id: &str, reason: String) -> Result<()> {
        let actor = self.actor.clone();
        self.update_record(cluster, id, |s| {
            if s.status != Status::Running || s.direction != Direction::Forward {
                return false;
            }
            s.direction = Direction::Back;
            s.batches = 0;
            s.reason = Some(reason.clone());
            s.record(Event::now(
                &actor,
                "rollback",
                format!("automatic: {reason}"),
            ));
            true
        })?;
        Ok(())
    }

    /// The record of `cluster` if it is still ours and running in
    /// `direction`; otherwise why the orchestrator must stop.
    fn current(
        &self,
        fleet: &Fleet,
        cluster: &str,
        id: &str,
        direction: Direction,
    ) -> Result<std::result::Result<RolloutState, StepEnd>> {
        let key = self.layout.rollout(cluster);
        let Some(doc) = &fleet.rollout_doc else {
            return Ok(Err(StepEnd::Stopped(format!(
                "the rollout record of {cluster} is gone (rolled back all at once?)"
            ))));
        };
        let state = RolloutState::from_document(&key, doc)?;
        if state.id != id {
            return Ok(Err(StepEnd::Stopped(format!(
                "cluster {cluster} now has another rollout, {}",
                state.id
            ))));
        }
        let why = state
            .reason
            .clone()
            .unwrap_or_else(|| "no reason given".into());
        match (state.status, state.direction) {
            (Status::Running, d) if d == direction => Ok(Ok(state)),
            (Status::Running, Direction::Back) => Ok(Err(StepEnd::Stopped(format!(
                "{cluster} is being rolled back"
            )))),
            (Status::Running, Direction::Forward) => Ok(Err(StepEnd::Stopped(format!(
                "{cluster} is rolling forward again"
            )))),
            (Status::Paused, _) => Ok(Err(StepEnd::Stopped(format!(
                "the rollout of {cluster} is paused: {why}"
            )))),
            (Status::Aborted, _) => Ok(Err(StepEnd::Stopped(format!(
                "the rollout of {cluster} was aborted: {why}"
            )))),
        }
    }

    fn report_waiting(
        &mut self,
        cluster: &str,
        fleet: &Fleet,
        counts: GateCounts,
        state: &RolloutState,
    ) {
        let absent = fleet
            .members
            .iter()
            .filter(|m| m.state == MemberState::Absent)
            .count();
        let elapsed = state
            .moved_at
            .as_deref()
            .and_then(|t| parse_rfc3339(t).ok())
            .map_or(0, |t| age_seconds(t, SystemTime::now()));
        self.notify(Progress::Waiting {
            cluster: cluster.to_string(),
            watched: counts.watched,
            converged: counts.converged,
            failed: counts.failed,
            pending: counts.pending(),
            absent,
            elapsed_s: elapsed,
        });
    }

    /// Creates the step's rollout record where the cluster has none (checking
    /// the patch against the schema), or finds it there from an earlier run.
    /// Returns how many members the cluster has.
    fn start_step(&mut self, plan: &Plan, index: usize) -> Result<usize> {
        let step = &plan.steps[index];
        let cluster = &step.cluster;
        let id = rollout_id(plan, index);
        let keys = vec![
            self.layout.rollout(cluster),
            self.layout.desired(cluster),
            self.layout.schema(cluster),
            self.layout.plan(&plan.name),
        ];
        let actor = self.actor.clone();
        update(self.store, &keys, |current| {
            let inputs = StepInputs {
                keys: [&keys[0], &keys[1], &keys[2]],
                rollout: current.docs[0].as_ref(),
                desired: current.docs[1].as_ref(),
                schema: current.docs[2].as_ref(),
            };
            let from = current.docs[1]
                .as_ref()
                .and_then(|d| state_of(d).ok().flatten());
            if check_step(plan, index, &inputs, from)? == StepStart::Resuming {
                return Ok(None);
            }
            let record = RolloutState::new(plan, index, &actor);
            let mut progress_doc = current.docs[3]
                .clone()
                .unwrap_or_else(|| PlanProgress::new(plan).to_document());
            let mut progress = PlanProgress::from_document(&keys[3], &progress_doc)?;
            progress.record(Event::now(
                &actor,
                "step started",
                format!("step {}: {cluster}, rollout {id}", index + 1),
            ));
            let digest = progress_doc.get("digest").cloned();
            progress_doc = progress.to_document();
            if let Some(d) = digest {
                progress_doc["digest"] = d;
            }
            let mut docs = current.docs.clone();
            docs[0] = Some(record.to_document());
            docs[3] = Some(progress_doc);
            Ok(Some(docs))
        })?;
        let fleet = self.fleet(cluster)?;
        Ok(fleet.batch_members().len())
    }

    /// Releases the next batch (forward) or takes one back (rollback).
    fn release(&mut self, cluster: &str, state: &RolloutState, order: &[Ranked]) -> Result<()> {
        let first = state.batches == 0;
        let k = batch_size(
            state.batches as usize,
            state.strategy.canary,
            &state.strategy.batch,
            order.len(),
        );
        let (threshold, nodes) = match state.direction {
            Direction::Forward => {
                let t = next_threshold(order, state.threshold, k);
                let nodes = order
                    .iter()
                    .filter(|r| r.rank > state.threshold && r.rank <= t)
                    .map(|r| r.node.clone())
                    .collect::<Vec<_>>();
                (Some(t), nodes)
            }
            Direction::Back => {
                let t = previous_threshold(order, state.threshold, k);
                let nodes = order
                    .iter()
                    .filter(|r| r.rank <= state.threshold && t.is_none_or(|t| r.rank > t))
                    .map(|r| r.node.clone())
                    .collect::<Vec<_>>();
                (t, nodes)
            }
        };
        // The last batch back: nobody is released any more. The patch goes
        // too, so that even a node of rank exactly 0 is back; the record
        // itself stays until this batch has passed its gate.
        let (threshold, last_back) = match threshold {
            Some(t) => (t, false),
            None => (0.0, true),
        };
        let actor = self.actor.clone();
        let (verb, batch) = match state.direction {
            Direction::Forward => ("released", state.batches + 1),
            Direction::Back => ("took back", state.batches + 1),
        };
        let shown = short_list(&nodes, ", ");
        let moved = self.update_record(cluster, &state.id, |s| {
            // Someone paused, aborted or moved it meanwhile: the next turn sees it.
            if s.status != Status::Running
                || s.direction != state.direction
                || s.threshold != state.threshold
            {
                return false;
            }
            s.threshold = threshold;
            s.peak = s.peak.max(threshold);
            s.constraints_wait_since = None;
            if last_back {
                s.patch.clear();
            }
            s.batches += 1;
            s.moved_at = Some(now_rfc3339());
            let label = if first && state.strategy.canary > 0 {
                "canary"
            } else {
                "batch"
            };
            s.record(Event::now(
                &actor,
                verb,
                format!("{label} {batch}: {shown} (threshold {threshold:.6})"),
            ));
            true
        })?;
        if !moved {
            return Ok(());
        }
        self.notify(Progress::Moved {
            cluster: cluster.to_string(),
            direction: state.direction,
            batch,
            nodes: nodes.clone(),
            threshold,
        });
        if let (Some(kick), Direction::Forward) = (&state.kick, state.direction) {
            let failures = kick::kick(self.store, kick, cluster, &nodes);
            self.notify(Progress::Kicked {
                cluster: cluster.to_string(),
                nodes: nodes.len(),
                failures: failures.clone(),
            });
            if !failures.is_empty() {
                self.note(cluster, &state.id, "kick failed", failures.join("; "))?;
            }
        }
        Ok(())
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

    /// Pauses the rollout with the reason recorded.
    fn stop_rollout(&mut self, cluster: &str, id: &str, reason: String) -> Result<StepEnd> {
        self.update_record(cluster, id, |s| {
            if s.status != Status::Running {
                return false;
            }
            s.status = Status::Paused;
            s.reason = Some(reason.clone());
            s.record(Event::now(&self.actor, "paused", reason.clone()));
            true
        })?;
        Ok(StepEnd::Stopped(format!(
            "the rollout of {cluster} is paused: {reason}"
        )))
    }

    /// Folds the patch into the cluster's desired document, removes the
    /// record and counts the step done — one transaction.
    fn finish_step(&mut self, plan: &Plan, index: usize) -> Result<()> {
        let cluster = &plan.steps[index].cluster;
        let keys = vec![
            self.layout.rollout(cluster),
            self.layout.desired(cluster),
            self.layout.plan(&plan.name),
            self.layout.history(cluster),
        ];
        let id = rollout_id(plan, index);
        let actor = self.actor.clone();
        let env_actor = actor.clone();
        update(self.store, &keys, |current| {
            let Some(doc) = &current.docs[0] else {
                return Err(Error::Stopped(format!(
                    "the rollout record of {cluster} vanished before its step could end"
                )));
            };
            let state = RolloutState::from_document(&keys[0], doc)?;
            if state.id != id || state.status != Status::Running || state.threshold < 1.0 {
                return Err(Error::Stopped(format!(
                    "the rollout of {cluster} changed before its step could end"
                )));
            }
            let old = current.docs[1].clone().unwrap_or_else(|| json!({}));
            // Nulls are kept: a `null` in the patch must go on removing the
            // key from the layers below, as it did while it was a patch.
            let new = merged(&old, &Value::Object(state.patch.clone()), Nulls::Keep);
            let progress_doc = current.docs[2]
                .clone()
                .unwrap_or_else(|| PlanProgress::new(plan).to_document());
            let mut progress = PlanProgress::from_document(&keys[2], &progress_doc)?;
            progress.keep_history_of(&state);
            progress.mark_done(index);
            progress.applied.retain(|a| a.step != index);
            progress.applied.push(AppliedStep {
                step: index,
                cluster: cluster.clone(),
                before: state
                    .patch
                    .keys()
                    .map(|k| (k.clone(), old.get(k).cloned()))
                    .collect(),
                strategy: state.strategy.clone(),
                wait: state.wait.clone(),
            });
            if progress.done == plan.steps.len() {
                progress.status = PlanStatus::Completed;
            }
            progress.record(Event::now(
                &actor,
                "step done",
                format!("step {}: {cluster}, rollout {id}", index + 1),
            ));
            let mut progress_doc_new = progress.to_document();
            if let Some(d) = progress_doc.get("digest") {
                progress_doc_new["digest"] = d.clone();
            }
            let change = Change::now(
                &|name: &str| (name == "CONVERGENT_ACTOR").then(|| env_actor.clone()),
                "rollout",
                &keys[1],
                diff(Some(&old), Some(&new)),
                Some(format!(
                    "plan {} step {} (rollout {id})",
                    plan.name,
                    index + 1
                )),
            );
            let history_doc = history::append(current.docs[3].as_ref(), &keys[3], change)?;
            Ok(Some(vec![
                None,
                Some(new),
                Some(progress_doc_new),
                Some(history_doc),
            ]))
        })?;
        Ok(())
    }

    /// Rolls a cluster's rollout back: the threshold falls batch by batch,
    /// highest ranks first, each batch gated on the nodes reporting the
    /// previous desired state, until no node is released; then the record
    /// goes. `all_at_once` removes the record at once (every node returns
    /// on its next run: for emergencies only). Steps of the plan done before
    /// stay applied: [`Orchestrator::rollback_plan`] undoes those too.
    pub fn rollback(&mut self, cluster: &str, all_at_once: bool) -> Result<()> {
        let state = self.turn_to_rollback(cluster, all_at_once)?;
        if all_at_once {
            return self.end_rollback(cluster, &state, "all at once");
        }
        // A forward orchestrator still running sees the rollback on its next
        // turn and stops, freeing the plan's lock (the caller's `lock_wait`
        // leaves it time to).
        let lock = self.lock_waiting(&state.plan, self.options.lock_wait)?;
        self.drive_rollback(cluster, &state, lock.as_ref())
    }

    /// Turns the rollout of `cluster` around (or finds it already going
    /// back): one compare-and-set write of its record.
    fn turn_to_rollback(&mut self, cluster: &str, all_at_once: bool) -> Result<RolloutState> {
        let key = self.layout.rollout(cluster);
        let actor = self.actor.clone();
        let docs = update(self.store, std::slice::from_ref(&key), |current| {
            let Some(doc) = &current.docs[0] else {
                return Err(Error::Stopped(format!(
                    "cluster {cluster} has no rollout to roll back"
                )));
            };
            let mut s = RolloutState::from_document(&key, doc)?;
            if s.direction == Direction::Back && !all_at_once {
                return Ok(None); // a rollback that stopped part-way: go on
            }
            s.direction = Direction::Back;
            s.status = Status::Running;
            s.batches = 0;
            s.reason = Some(format!("rolled back by {actor}"));
            s.record(Event::now(
                &actor,
                "rollback",
                if all_at_once {
                    "all at once"
                } else {
                    "batch by batch"
                },
            ));
            Ok(Some(vec![Some(s.to_document())]))
        })?;
        RolloutState::from_document(&key, docs[0].as_ref().expect("the record exists"))
    }

    /// Takes the rollout back batch by batch to its end, under `lock`.
    fn drive_rollback(
        &mut self,
        cluster: &str,
        state: &RolloutState,
        lock: &dyn HeldLock,
    ) -> Result<()> {
        match self.drive(cluster, &state.id, Direction::Back, lock)? {
            StepEnd::Done => self.end_rollback(cluster, state, "batch by batch"),
            StepEnd::Stopped(reason) | StepEnd::RollingBack(reason) => {
                self.notify(Progress::Stopped {
                    cluster: cluster.to_string(),
                    reason: reason.clone(),
                });
                Err(Error::Stopped(reason))
            }
        }
    }

    /// Removes the record (nobody released any more), marks the plan rolled
    /// back and records it in the cluster's history — one transaction.
    fn end_rollback(&mut self, cluster: &str, state: &RolloutState, how: &str) -> Result<()> {
        let keys = vec![
            self.layout.rollout(cluster),
            self.layout.plan(&state.plan),
            self.layout.history(cluster),
        ];
        let actor = self.actor.clone();
        update(self.store, &keys, |current| {
            let Some(doc) = &current.docs[0] else {
                return Ok(None);
            };
            let s = RolloutState::from_document(&keys[0], doc)?;
            if s.id != state.id {
                return Ok(None);
            }
            let mut docs = vec![None, current.docs[1].clone(), current.docs[2].clone()];
            if let Some(progress_doc) = &current.docs[1] {
                let mut progress = PlanProgress::from_document(&keys[1], progress_doc)?;
                progress.keep_history_of(&s);
                progress.status = PlanStatus::RolledBack;
                progress.record(Event::now(
                    &actor,
                    "rolled back",
                    format!("step {}: {cluster}, rollout {}", s.step + 1, s.id),
                ));
                let mut doc = progress.to_document();
                if let Some(d) = progress_doc.get("digest") {
                    doc["digest"] = d.clone();
                }
                docs[1] = Some(doc);
            }
            let change = Change::now(
                &|name: &str| (name == "CONVERGENT_ACTOR").then(|| actor.clone()),
                "rollback",
                &keys[0],
                Vec::new(),
                Some(format!(
                    "rollout {} of plan {} rolled back {how}",
                    s.id, s.plan
                )),
            );
            docs[2] = Some(history::append(current.docs[2].as_ref(), &keys[2], change)?);
            Ok(Some(docs))
        })?;
        // Steps of the plan done (not undone): they stay applied.
        let (earlier_steps, stay_applied) = match self.progress(&state.plan) {
            _ if self.in_plan_rollback => (0, String::new()),
            Ok(Some(p)) => {
                let steps = p.still_applied();
                (steps.len(), p.steps_text(&steps))
            }
            Ok(None) | Err(_) => (0, String::new()),
        };
        self.notify(Progress::RolledBack {
            cluster: cluster.to_string(),
            rollout: state.id.clone(),
            plan: state.plan.clone(),
            step: state.step + 1,
            all_at_once: how == "all at once",
            earlier_steps,
            stay_applied,
        });
        Ok(())
    }
}
