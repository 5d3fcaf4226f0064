//! Running a plan: one loop gives every running step a turn (one read of
//! its cluster, at most one write), so steps on different clusters run at
//! the same time in one process, without threads. A step starts as soon as
//! the steps it waits for (`after:`, by default the step before it) are
//! done, so a plan without `after:` runs one step at a time, as always.
//!
//! When one step stops — too many failures, a timeout, an operator's pause
//! or abort — nothing more is released anywhere: every other running step
//! of the plan is paused, the reason naming the step that stopped; then,
//! with `on_failure: rollback`, the failed step is taken back batch by
//! batch. The paused steps keep the nodes they released. A signal stops
//! the loop without pausing anything: running the plan again resumes every
//! step where its record says.

use serde_json::{json, Value};

use super::{Orchestrator, Progress, StepEnd, Turn, TurnClock};
use crate::document::{merged, Nulls};
use crate::error::{Error, Result};
use crate::history::{self, diff, Change};
use crate::rollout::compat;
use crate::rollout::graph;
use crate::rollout::plan::Plan;
use crate::rollout::preflight::{
    check_progress, check_step, plan_digest, preflight, StepInputs, StepStart,
};
use crate::rollout::state::{
    rollout_id, AppliedStep, Direction, Event, PlanProgress, PlanStatus, RolloutState, Status,
};
use crate::schema::state_of;
use crate::store::HeldLock;
use crate::update::update;

/// A step under way in this run of its plan.
struct Running {
    index: usize,
    cluster: String,
    id: String,
    clock: TurnClock,
    /// An automatic rollback an earlier orchestrator started (and was
    /// killed during), with its reason: it goes on first.
    rolling_back: Option<String>,
}

impl Orchestrator<'_> {
    /// Runs a plan to its end, resuming where its records say it stopped.
    pub fn run(&mut self, plan: &Plan) -> Result<()> {
        let lock = self.lock_waiting(&plan.name, self.options.lock_wait)?;
        // Everything a start would refuse is refused before the first write.
        preflight(self.store, &self.layout, plan)?;
        let progress = self.begin_plan(plan)?;
        match progress.status {
            PlanStatus::Completed => {
                self.notify(Progress::PlanDone { plan: plan.name.clone() });
                return Ok(());
            }
            PlanStatus::RolledBack => {
                return Err(Error::Stopped(format!(
                    "plan {} was rolled back at step {}; a plan that was rolled back does not go on (run a plan with a new name)",
                    plan.name,
                    progress.done + 1
                )))
            }
            PlanStatus::Running => {}
        }
        let mut done = progress.done_steps();
        let mut running: Vec<Running> = Vec::new();
        loop {
            lock.check()?;
            if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                return self.interrupted_plan(&running);
            }
            for index in graph::ready(plan, &done) {
                if running.iter().any(|r| r.index == index) {
                    continue;
                }
                // Against the view as it is now: others may have moved
                // meanwhile. Every step not started yet, in the order they run.
                let not_started: Vec<usize> = graph::order(plan)
                    .into_iter()
                    .filter(|i| !done.contains(i) && running.iter().all(|r| r.index != *i))
                    .collect();
                if let Err(e) = compat::check_plan(self.store, &self.layout, plan, &not_started) {
                    self.pause_others(plan, &running, None, &e.to_string())?;
                    return Err(e);
                }
                let step = self.begin_step(plan, index)?;
                running.push(step);
            }
            if running.is_empty() {
                break; // every step is done
            }
            let mut moved = false;
            let mut at = 0;
            while at < running.len() {
                let r = &mut running[at];
                let turn = match r.rolling_back.take() {
                    Some(why) => Turn::End(StepEnd::RollingBack(why)),
                    None => {
                        self.guarded_turn(&r.cluster, &r.id, Direction::Forward, &mut r.clock)?
                    }
                };
                match turn {
                    Turn::Moved => moved = true,
                    Turn::Waiting => {}
                    Turn::End(StepEnd::Done) => {
                        let r = running.remove(at);
                        self.finish_step(plan, r.index)?;
                        self.notify(Progress::StepDone {
                            step: r.index + 1,
                            cluster: r.cluster,
                        });
                        done.insert(r.index);
                        moved = true;
                        continue;
                    }
                    Turn::End(end) => {
                        return self.stop_plan(plan, &running, at, end, lock.as_ref())
                    }
                }
                at += 1;
            }
            if !moved && !self.pause_a_moment() {
                return self.interrupted_plan(&running);
            }
        }
        self.notify(Progress::PlanDone {
            plan: plan.name.clone(),
        });
        Ok(())
    }

    /// A signal stopped the run: nothing is paused (running the plan
    /// again resumes every step), each running step says so.
    fn interrupted_plan(&mut self, running: &[Running]) -> Result<()> {
        let StepEnd::Stopped(reason) = Orchestrator::interrupted() else {
            unreachable!("an interruption stops")
        };
        for r in running {
            self.notify(Progress::Stopped {
                cluster: r.cluster.clone(),
                reason: reason.clone(),
            });
        }
        Err(Error::Stopped(reason))
    }

    /// The step at `running[at]` stopped (or turned to a rollback): the
    /// others are paused so that nothing more is released anywhere, then
    /// the rollback, if any, runs to its end; the plan stops with a reason
    /// saying all of it.
    fn stop_plan(
        &mut self,
        plan: &Plan,
        running: &[Running],
        at: usize,
        end: StepEnd,
        lock: &dyn HeldLock,
    ) -> Result<()> {
        let failed = &running[at];
        let why = match &end {
            StepEnd::Stopped(why) | StepEnd::RollingBack(why) => why.clone(),
            StepEnd::Done => unreachable!("a done step does not stop its plan"),
        };
        let paused = self.pause_others(plan, running, Some(failed.index), &why)?;
        let reason = match end {
            StepEnd::RollingBack(reason) => {
                let key = self.layout.rollout(&failed.cluster);
                let doc = self.fleet(&failed.cluster)?.rollout_doc.ok_or_else(|| {
                    Error::Stopped(format!("the rollout record of {} vanished", failed.cluster))
                })?;
                let state = RolloutState::from_document(&key, &doc)?;
                match self.roll_back_automatically(&failed.cluster, &state, reason, lock)? {
                    StepEnd::Stopped(r) | StepEnd::RollingBack(r) => r,
                    StepEnd::Done => unreachable!("a rollback ends stopped"),
                }
            }
            StepEnd::Stopped(_) | StepEnd::Done => why,
        };
        let reason = if paused.is_empty() {
            reason
        } else {
            format!(
                "{reason}. Paused with it, so that nothing more is released anywhere: {}; \
                 `convergent rollout resume --plan {}` resumes every paused step, then run the plan again to go on",
                paused.join(", "),
                plan.name
            )
        };
        self.notify(Progress::Stopped {
            cluster: failed.cluster.clone(),
            reason: reason.clone(),
        });
        Err(Error::Stopped(reason))
    }

    /// Pauses every running step but `except`, with `why` in its reason;
    /// returns how they are named.
    fn pause_others(
        &mut self,
        plan: &Plan,
        running: &[Running],
        except: Option<usize>,
        why: &str,
    ) -> Result<Vec<String>> {
        let mut paused = Vec::new();
        for r in running.iter().filter(|r| Some(r.index) != except) {
            let cause = match except {
                Some(i) => graph::label(plan, i),
                None => "a step of the plan".into(),
            };
            let reason = format!(
                "paused because {cause} of plan {} stopped (steps of one plan stop together): {why}",
                plan.name
            );
            // Only a step still going forward: one an operator (or a plan
            // rollback) has turned around is left to go back.
            let actor = self.actor.clone();
            let written = self.update_record(&r.cluster, &r.id, |s| {
                if s.status != Status::Running || s.direction != Direction::Forward {
                    return false;
                }
                s.status = Status::Paused;
                s.reason = Some(reason.clone());
                s.record(Event::now(&actor, "paused", reason.clone()));
                true
            })?;
            if written {
                paused.push(graph::label(plan, r.index));
            }
        }
        Ok(paused)
    }

    /// Reads (or creates) the plan's progress record; a plan must not change
    /// while it runs.
    fn begin_plan(&mut self, plan: &Plan) -> Result<PlanProgress> {
        let key = self.layout.plan(&plan.name);
        let digest = plan_digest(plan);
        let actor = self.actor.clone();
        // The first step's rollout record tells whether the plan ever
        // started: one that did not may be replaced by a corrected plan.
        let first = self.layout.rollout(&plan.steps[0].cluster);
        let first_id = rollout_id(plan, 0);
        let docs = update(
            self.store,
            &[key.clone(), first],
            |current| match &current.docs[0] {
                Some(doc) => {
                    let started = current.docs[1]
                        .as_ref()
                        .and_then(|d| d.get("id"))
                        .and_then(Value::as_str)
                        == Some(first_id.as_str());
                    check_progress(&key, Some(doc), plan, started)?;
                    if doc.get("digest").and_then(Value::as_str) == Some(digest.as_str()) {
                        return Ok(None);
                    }
                    let mut progress = PlanProgress::new(plan);
                    progress.history = PlanProgress::from_document(&key, doc)?.history;
                    progress.record(Event::now(
                        &actor,
                        "replaced",
                        "the plan changed before its first step started",
                    ));
                    let mut doc = progress.to_document();
                    doc["digest"] = json!(digest);
                    Ok(Some(vec![Some(doc), current.docs[1].clone()]))
                }
                None => {
                    let mut progress = PlanProgress::new(plan);
                    progress.record(Event::now(
                        &actor,
                        "started",
                        crate::output::count(plan.steps.len(), "step"),
                    ));
                    let mut doc = progress.to_document();
                    doc["digest"] = json!(digest);
                    Ok(Some(vec![Some(doc), current.docs[1].clone()]))
                }
            },
        )?;
        let doc = docs[0].clone().expect("the plan record exists now");
        PlanProgress::from_document(&key, &doc)
    }

    /// Starts step `index` (or finds it started by an earlier run).
    fn begin_step(&mut self, plan: &Plan, index: usize) -> Result<Running> {
        let cluster = plan.steps[index].cluster.clone();
        let id = rollout_id(plan, index);
        let members = self.start_step(plan, index)?;
        self.notify(Progress::StepStarted {
            step: index + 1,
            steps: plan.steps.len(),
            cluster: cluster.clone(),
            rollout: id.clone(),
            members,
        });
        let record = self
            .fleet(&cluster)?
            .rollout_doc
            .map(|doc| RolloutState::from_document(&self.layout.rollout(&cluster), &doc));
        let rolling_back = match &record {
            Some(Ok(r))
                if r.id == id && r.direction == Direction::Back && r.status == Status::Running =>
            {
                Some(r.reason.clone().unwrap_or_else(|| "rolled back".into()))
            }
            _ => None,
        };
        Ok(Running {
            index,
            cluster,
            id,
            clock: TurnClock::default(),
            rolling_back,
        })
    }

    /// Creates the step's rollout record where the cluster has none (checking
    /// the patch against the schema), or finds it there from an earlier run.
    /// Returns how many members the cluster has.
    pub(super) fn start_step(&mut self, plan: &Plan, index: usize) -> Result<usize> {
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

    /// Folds the patch into the cluster's desired document, removes the
    /// record and counts the step done — one transaction.
    pub(super) fn finish_step(&mut self, plan: &Plan, index: usize) -> Result<()> {
        let cluster = &plan.steps[index].cluster;
        let keys = vec![
            self.layout.rollout(cluster),
            self.layout.desired(cluster),
            self.layout.plan(&plan.name),
            self.layout.history(cluster),
        ];
        let id = rollout_id(plan, index);
        let actor = self.actor.clone();
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
            let change = Change::by(
                &actor,
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
}
