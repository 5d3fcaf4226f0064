//! Taking a cluster's rollout back: `rollout rollback CLUSTER` and the
//! automatic rollback of `on_failure: rollback`. The threshold falls batch
//! by batch, each batch gated on the nodes reporting the previous desired
//! state; then the record goes and the plan is marked rolled back. Steps
//! of the plan already done stay applied, and the messages name them.

use super::{Orchestrator, Progress, StepEnd};
use crate::error::{Error, Result};
use crate::history::{self, Change};
use crate::rollout::state::{Direction, Event, PlanProgress, PlanStatus, RolloutState, Status};
use crate::store::HeldLock;
use crate::update::update;

impl Orchestrator<'_> {
    /// Drives an automatic rollback (on_failure: rollback) to its end and
    /// says, in the reason the plan stops with, exactly what went back.
    pub(super) fn roll_back_automatically(
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
    pub(super) fn turn_to_rollback(
        &mut self,
        cluster: &str,
        all_at_once: bool,
    ) -> Result<RolloutState> {
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
    pub(super) fn drive_rollback(
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
    pub(super) fn end_rollback(
        &mut self,
        cluster: &str,
        state: &RolloutState,
        how: &str,
    ) -> Result<()> {
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
            let change = Change::by(
                &actor,
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
