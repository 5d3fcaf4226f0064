//! Rolling back a whole plan: the step under way is taken back as
//! `rollout rollback` does, then each done step is undone, last first —
//! its keys' old values released batch by batch like any step (highest
//! gates, same strategy), then folded back into the cluster's desired
//! document. Every step's progress lives in the store (the undo rollout's
//! record, the plan's `undone` count), so a killed rollback resumes.

use serde_json::{json, Value};

use super::{Orchestrator, Progress, StepEnd};
use crate::error::{Error, Result};
use crate::history::{self, diff, Change};
use crate::layout::{check_name, NameKind};
use crate::rollout::control::rollouts_of_plan;
use crate::rollout::plan::{OnFailure, Promote, Wait};
use crate::rollout::state::{
    AppliedStep, Direction, Event, PlanProgress, PlanStatus, RolloutState, Status,
};
use crate::update::update;

/// The id of the rollout that undoes step `index` (from 0) of `plan`.
fn undo_id(plan: &str, index: usize) -> String {
    format!("{plan}.undo-{}", index + 1)
}

/// `version back to "5.0"; app.debug removed`, for messages.
fn describe(applied: &AppliedStep) -> String {
    applied
        .before
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k} back to {v}"),
            None => format!("{k} removed (the step added it)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The progress document with `progress` written over `old`, keeping the
/// plan's digest.
fn progress_document(progress: &PlanProgress, old: &Value) -> Value {
    let mut doc = progress.to_document();
    if let Some(d) = old.get("digest") {
        doc["digest"] = d.clone();
    }
    doc
}

impl Orchestrator<'_> {
    /// Rolls back every step of `plan` that changed something: the one
    /// under way (batch by batch, highest ranks first), then the done ones,
    /// last first, each released batch by batch. `all_at_once` removes the
    /// step under way and writes the old values straight into the desired
    /// documents: nodes return on their next run, none is waited for.
    pub fn rollback_plan(&mut self, plan: &str, all_at_once: bool) -> Result<()> {
        check_name(NameKind::Rollout, plan).map_err(Error::BadName)?;
        let key = self.layout.plan(plan);
        if self.progress(plan)?.is_none() {
            return Err(Error::Stopped(format!(
                "no plan {plan} has run against this store ({key} does not exist): nothing to roll back"
            )));
        }
        let mut undone = Vec::new();
        self.in_plan_rollback = true;
        // The steps under way first (several when the plan runs steps at
        // the same time). Turning them around makes a forward orchestrator
        // still running stop, which frees the plan's lock.
        let active = self.active_steps_of(plan)?;
        for (cluster, _) in &active {
            let state = self.turn_to_rollback(cluster, all_at_once)?;
            if all_at_once {
                self.end_rollback(cluster, &state, "all at once")?;
            }
        }
        let lock = self.lock_waiting(plan, self.options.lock_wait)?;
        for (cluster, _) in active.iter().filter(|_| !all_at_once) {
            let key = self.layout.rollout(cluster);
            if let Some(doc) = self.fleet(cluster)?.rollout_doc {
                let state = RolloutState::from_document(&key, &doc)?;
                self.drive_rollback(cluster, &state, lock.as_ref())?;
            }
        }
        for (cluster, state) in &active {
            undone.push(format!(
                "step {} ({cluster}, under way): {}",
                state.step + 1,
                if all_at_once {
                    "its rollout record removed; its released nodes return on their next run"
                } else {
                    "taken back batch by batch; every present node it had released reported the previous desired state"
                }
            ));
        }
        loop {
            let progress = self.progress(plan)?.expect("the plan record exists");
            let Some(index) = progress.next_to_undo() else {
                break;
            };
            let Some(applied) = progress.applied.iter().find(|a| a.step == index).cloned() else {
                return Err(Error::bad_key(
                    &key,
                    format!(
                        "step {} of plan {plan} was done without a record of what it changed (an older convergent?): \
                         it cannot be undone here; set its keys back with `convergent set`. Undone so far: {}",
                        index + 1,
                        if undone.is_empty() { "nothing".into() } else { undone.join("; ") }
                    ),
                ));
            };
            let cluster = applied.cluster.clone();
            if all_at_once {
                self.finish_undo(plan, &applied, None)?;
                undone.push(format!(
                    "step {} ({cluster}): {} in the desired document; nodes follow on their next run",
                    index + 1,
                    describe(&applied)
                ));
                continue;
            }
            let id = undo_id(plan, index);
            self.start_undo(plan, &applied, &id)?;
            self.notify(Progress::StepStarted {
                step: index + 1,
                steps: progress.steps,
                cluster: cluster.clone(),
                rollout: id.clone(),
                members: self.fleet(&cluster)?.batch_members().len(),
            });
            match self.drive(&cluster, &id, Direction::Forward, lock.as_ref())? {
                StepEnd::Done => self.finish_undo(plan, &applied, Some(&id))?,
                StepEnd::Stopped(why) | StepEnd::RollingBack(why) => {
                    let reason = format!(
                        "the rollback of plan {plan} stopped while undoing step {} ({cluster}): {why}; \
                         run `convergent rollout rollback --plan {plan}` again to go on. \
                         Undone so far: {}; {} of plan {plan} stay applied",
                        index + 1,
                        if undone.is_empty() { "nothing".into() } else { undone.join("; ") },
                        // This step's undo stopped part-way: it stays too.
                        progress.steps_text(&progress.still_applied()),
                    );
                    self.notify(Progress::Stopped {
                        cluster,
                        reason: reason.clone(),
                    });
                    return Err(Error::Stopped(reason));
                }
            }
            undone.push(format!(
                "step {} ({cluster}): {}, batch by batch; every present node of {cluster} reported it",
                index + 1,
                describe(&applied)
            ));
        }
        self.mark_plan_rolled_back(plan)?;
        if undone.is_empty() {
            undone.push("nothing was applied".into());
        }
        self.notify(Progress::PlanRolledBack {
            plan: plan.to_string(),
            undone,
            all_at_once,
        });
        Ok(())
    }

    /// The plan's progress record, if it has one.
    pub(super) fn progress(&self, plan: &str) -> Result<Option<PlanProgress>> {
        let key = self.layout.plan(plan);
        let (entries, _) = self.store.read_tree(&key)?;
        match crate::document::fold(&key, &entries)? {
            Some(doc) => PlanProgress::from_document(&key, &doc.doc).map(Some),
            None => Ok(None),
        }
    }

    /// The rollouts of `plan` under way (not undos), with their clusters.
    fn active_steps_of(&self, plan: &str) -> Result<Vec<(String, RolloutState)>> {
        let mut steps = rollouts_of_plan(self.store, &self.layout, plan)?;
        steps.retain(|(_, state)| state.id != undo_id(plan, state.step));
        Ok(steps)
    }

    /// Creates the record of the rollout that undoes a step, or finds it
    /// there from an earlier, interrupted rollback.
    fn start_undo(&mut self, plan: &str, applied: &AppliedStep, id: &str) -> Result<()> {
        let cluster = &applied.cluster;
        let key = self.layout.rollout(cluster);
        let actor = self.actor.clone();
        update(self.store, std::slice::from_ref(&key), |current| {
            if let Some(doc) = &current.docs[0] {
                let existing = RolloutState::from_document(&key, doc)?;
                if existing.id == id {
                    return Ok(None);
                }
                return Err(Error::Stopped(format!(
                    "cluster {cluster} has an active rollout, {} of plan {}; one rollout per cluster: \
                     finish or roll it back, then roll plan {plan} back again",
                    existing.id, existing.plan
                )));
            }
            let mut strategy = applied.strategy.clone();
            // Going back: no waiting for a promotion, and a failure pauses
            // (a rollback of the rollback would be the broken state again).
            strategy.on_failure = OnFailure::Pause;
            strategy.promote = Promote::Auto;
            let mut state = RolloutState {
                id: id.to_string(),
                status: Status::Running,
                direction: Direction::Forward,
                threshold: 0.0,
                patch: applied.undo_patch(),
                plan: plan.to_string(),
                step: applied.step,
                strategy,
                // Gated on the nodes' runs: the old state is known to work.
                wait: Wait {
                    timeout: applied.wait.timeout,
                    min_converged: applied.wait.min_converged,
                    ..Wait::default()
                },
                kick: None,
                peak: 0.0,
                batches: 0,
                moved_at: None,
                reason: None,
                forgiven: Default::default(),
                awaiting_promotion_since: None,
                promoted_by: None,
                constraints_wait_since: None,
                history: Vec::new(),
            };
            state.record(Event::now(
                &actor,
                "started",
                format!(
                    "undoing step {} of plan {plan}: {}",
                    applied.step + 1,
                    describe(applied)
                ),
            ));
            Ok(Some(vec![Some(state.to_document())]))
        })?;
        Ok(())
    }

    /// Puts the step's keys back in the cluster's desired document, removes
    /// the undo rollout's record (`id`; `None`: all at once, there is none)
    /// and counts the step undone — one transaction.
    fn finish_undo(&mut self, plan: &str, applied: &AppliedStep, id: Option<&str>) -> Result<()> {
        let cluster = &applied.cluster;
        let keys = vec![
            self.layout.rollout(cluster),
            self.layout.desired(cluster),
            self.layout.plan(plan),
            self.layout.history(cluster),
        ];
        let actor = self.actor.clone();
        update(self.store, &keys, |current| {
            let record = match (&current.docs[0], id) {
                (Some(doc), Some(id)) => {
                    let s = RolloutState::from_document(&keys[0], doc)?;
                    if s.id != id || s.status != Status::Running || s.threshold < 1.0 {
                        return Err(Error::Stopped(format!(
                            "the rollout {id} of {cluster} changed before it could end"
                        )));
                    }
                    Some(s)
                }
                (None, Some(id)) => {
                    return Err(Error::Stopped(format!(
                        "the record of rollout {id} of {cluster} vanished before it could end"
                    )))
                }
                (_, None) => None,
            };
            let Some(progress_doc) = &current.docs[2] else {
                return Err(Error::Stopped(format!(
                    "the record of plan {plan} vanished"
                )));
            };
            let mut progress = PlanProgress::from_document(&keys[2], progress_doc)?;
            if progress.next_to_undo() != Some(applied.step) {
                return Ok(None); // counted already (a retried write that landed)
            }
            let old = current.docs[1].clone().unwrap_or_else(|| json!({}));
            let new = applied.restored(&old);
            if let Some(s) = &record {
                progress.keep_history_of(s);
            }
            progress.undone += 1;
            progress.record(Event::now(
                &actor,
                "step undone",
                format!(
                    "step {}: {cluster}, {}{}",
                    applied.step + 1,
                    describe(applied),
                    if id.is_none() { " (all at once)" } else { "" }
                ),
            ));
            let change = Change::by(
                &actor,
                "rollback",
                &keys[1],
                diff(Some(&old), Some(&new)),
                Some(format!(
                    "plan {plan} rolled back: step {} undone",
                    applied.step + 1
                )),
            );
            let history_doc = history::append(current.docs[3].as_ref(), &keys[3], change)?;
            let rollout_doc = match id {
                Some(_) => None,
                None => current.docs[0].clone(),
            };
            Ok(Some(vec![
                rollout_doc,
                Some(new),
                Some(progress_document(&progress, progress_doc)),
                Some(history_doc),
            ]))
        })?;
        Ok(())
    }

    fn mark_plan_rolled_back(&mut self, plan: &str) -> Result<()> {
        let key = self.layout.plan(plan);
        let actor = self.actor.clone();
        update(self.store, std::slice::from_ref(&key), |current| {
            let Some(doc) = &current.docs[0] else {
                return Ok(None);
            };
            let mut progress = PlanProgress::from_document(&key, doc)?;
            if progress.status == PlanStatus::RolledBack
                && progress
                    .history
                    .last()
                    .is_some_and(|e| e.event == "plan rolled back")
            {
                return Ok(None);
            }
            progress.status = PlanStatus::RolledBack;
            progress.record(Event::now(
                &actor,
                "plan rolled back",
                format!("{} done steps undone", progress.undone),
            ));
            Ok(Some(vec![Some(progress_document(&progress, doc))]))
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::plan::Strategy;

    #[test]
    fn undoing_puts_keys_back_and_removes_added_ones() {
        let applied = AppliedStep {
            step: 1,
            cluster: "db".into(),
            before: [
                ("version".to_string(), Some(json!("5.0"))),
                ("debug".to_string(), None),
            ]
            .into_iter()
            .collect(),
            strategy: Strategy::default(),
            wait: Wait::default(),
        };
        let now = json!({"version": "5.1", "debug": true, "state": "converged"});
        assert_eq!(
            applied.restored(&now),
            json!({"version": "5.0", "state": "converged"})
        );
        assert_eq!(
            Value::Object(applied.undo_patch()),
            json!({"version": "5.0", "debug": null})
        );
        assert_eq!(
            describe(&applied),
            "debug removed (the step added it), version back to \"5.0\""
        );
        assert_eq!(undo_id("p", 1), "p.undo-2");
    }
}
