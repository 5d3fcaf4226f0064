//! One rollout's turns: each reads the record and the cluster's fleet
//! (one store call), gates the latest batch on the nodes' reports (and the
//! constraints on other tiers), and releases or takes back at most one
//! batch with a compare-and-set write — or ends the step: done, paused
//! (too many failures, a timeout), or turned into a rollback.

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use super::{Orchestrator, Progress, StepEnd, Turn, TurnClock, STORE_OUTAGE_LIMIT};
use crate::clock::{age_seconds, now_rfc3339, parse_rfc3339};
use crate::error::Result;
use crate::fleet::{Fleet, MemberState};
use crate::rollout::batches::{
    batch_size, gate, next_threshold, previous_threshold, ranked, Gate, GateCounts, Ranked,
};
use crate::rollout::compat;
use crate::rollout::kick;
use crate::rollout::plan::{Amount, OnFailure};
use crate::rollout::standing::{
    gate_states, names, nodes_in, short_list, timed_out, watched_counts, HealthGate,
};
use crate::rollout::state::{Direction, Event, RolloutState, Status};
use crate::store::HeldLock;

impl Orchestrator<'_> {
    /// Whether a forward release must wait for other tiers: the rollout's
    /// state requires what their check-ins do not show yet (said once).
    /// `None`: release. The wait's start is kept in the record, so that
    /// `wait.constraints_timeout` (default `wait.timeout`) counts across
    /// restarts; past it, the rollout pauses like a batch that timed out.
    pub(super) fn constraints_gate(
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

    /// Moves the rollout of `cluster` batch by batch in `direction` — each
    /// batch gated on the nodes' reports, with the strategy's pause between
    /// batches — until its last batch has passed its gate (`Done`) or it must
    /// stop. Each turn reads the record and the fleet afresh, so whatever an
    /// operator or a crashed predecessor left is taken as found. A store that
    /// cannot be reached is waited out for up to [`STORE_OUTAGE_LIMIT`]
    /// (while the lock holds: a lease that expires meanwhile ends the run).
    pub(super) fn drive(
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
    pub(super) fn guarded_turn(
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
    pub(super) fn turn(
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
    pub(super) fn await_promotion(&mut self, cluster: &str, state: &RolloutState) -> Result<()> {
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
    pub(super) fn turn_back(&mut self, cluster: &str, id: &str, reason: String) -> Result<()> {
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
    pub(super) fn current(
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

    pub(super) fn report_waiting(
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

    /// Releases the next batch (forward) or takes one back (rollback).
    pub(super) fn release(
        &mut self,
        cluster: &str,
        state: &RolloutState,
        order: &[Ranked],
    ) -> Result<()> {
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

    /// Pauses the rollout with the reason recorded.
    pub(super) fn stop_rollout(
        &mut self,
        cluster: &str,
        id: &str,
        reason: String,
    ) -> Result<StepEnd> {
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
}
