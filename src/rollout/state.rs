//! What the orchestrator keeps in the store, so that killing it at any moment
//! and running the same plan again resumes it:
//!
//! - `P/rollouts/C`: the active rollout of cluster C — what nodes read (`id`,
//!   `status`, `threshold`, `patch`) and what the orchestrator needs to go on
//!   (the step's strategy, how far it got, why it stopped, its history);
//! - `P/plans/NAME`: a plan's progress — how many steps are done.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::graph;
use super::plan::{Kick, Plan, Promote, Step, Strategy, Wait};
use crate::clock::now_rfc3339;
use crate::error::{Error, Result};

/// How many events a rollout record and a plan record keep.
pub const HISTORY_LIMIT: usize = 100;

/// Whether a rollout goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Releasing (or taking back) batch by batch.
    Running,
    /// Stopped, by an operator or by failures or a timeout; `resume` goes on.
    Paused,
    /// Stopped for good: nothing more is released; `rollback` remains.
    Aborted,
}

impl Status {
    /// The status as the record spells it (`running`, `paused`, `aborted`).
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Aborted => "aborted",
        }
    }
}

/// Which way the threshold moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Releasing: the threshold rises.
    #[default]
    Forward,
    /// Rolling back: the threshold falls, highest ranks first.
    Back,
}

/// One event in a record's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// Who: `user@host` or `$CONVERGENT_ACTOR`.
    pub actor: String,
    /// What happened (`started`, `released`, `paused`, …).
    pub event: String,
    /// The details: which nodes, why.
    pub detail: String,
}

impl Event {
    /// An event happening now.
    pub fn now(actor: &str, event: &str, detail: impl Into<String>) -> Event {
        Event {
            time: now_rfc3339(),
            actor: actor.to_string(),
            event: event.to_string(),
            detail: detail.into(),
        }
    }
}

fn push(history: &mut Vec<Event>, event: Event) {
    history.push(event);
    let excess = history.len().saturating_sub(HISTORY_LIMIT);
    history.drain(..excess);
}

/// The rollout record at `P/rollouts/C`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// The rollout id (`PLAN.STEP`): the seed of every node's rank.
    pub id: String,
    /// Running, paused or aborted.
    pub status: Status,
    /// Releasing or rolling back.
    #[serde(default)]
    pub direction: Direction,
    /// Node N is released iff `rank(id, N) <= threshold`.
    pub threshold: f64,
    /// Laid over the cluster's desired document for released nodes.
    pub patch: Map<String, Value>,
    /// The plan this step belongs to.
    pub plan: String,
    /// The step's index in the plan (from 0).
    pub step: usize,
    /// The step's strategy, kept so pause, resume and rollback need no plan file.
    pub strategy: Strategy,
    /// The step's wait settings.
    #[serde(default)]
    pub wait: Wait,
    /// How newly released nodes are kicked.
    #[serde(default)]
    pub kick: Option<Kick>,
    /// The highest threshold reached; rollback takes back from there.
    #[serde(default)]
    pub peak: f64,
    /// Batches released (or taken back) so far.
    #[serde(default)]
    pub batches: u32,
    /// When the latest batch moved; its wait timeout counts from here.
    #[serde(default)]
    pub moved_at: Option<String>,
    /// Why it is paused or aborted.
    #[serde(default)]
    pub reason: Option<String>,
    /// The failure reports (node → `reported_at`) that paused the rollout:
    /// once an operator resumes they no longer count; each node's next
    /// report does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forgiven: BTreeMap<String, String>,
    /// With `promote: manual`: since when the first batch has passed its
    /// gate and the rest waits for `rollout promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_promotion_since: Option<String>,
    /// Who promoted the rollout past its first batch, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_by: Option<String>,
    /// Since when the next release waits for other tiers' check-ins to
    /// meet the step's constraints (cleared by a release and by `resume`);
    /// `wait.constraints_timeout` counts from here, across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints_wait_since: Option<String>,
    /// What happened, oldest first, bounded.
    #[serde(default)]
    pub history: Vec<Event>,
}

impl RolloutState {
    /// The record for step `index` of `plan`, before anything is released.
    pub fn new(plan: &Plan, index: usize, actor: &str) -> RolloutState {
        let step: &Step = &plan.steps[index];
        let mut state = RolloutState {
            id: rollout_id(plan, index),
            status: Status::Running,
            direction: Direction::Forward,
            threshold: 0.0,
            patch: step.set.clone(),
            plan: plan.name.clone(),
            step: index,
            strategy: step.strategy.clone(),
            wait: step.wait.clone(),
            kick: step.kick.clone(),
            peak: 0.0,
            batches: 0,
            moved_at: None,
            reason: None,
            forgiven: BTreeMap::new(),
            awaiting_promotion_since: None,
            promoted_by: None,
            constraints_wait_since: None,
            history: Vec::new(),
        };
        state.record(Event::now(
            actor,
            "started",
            format!("step {} of plan {}", index + 1, plan.name),
        ));
        state
    }

    /// Reads the record stored at `key`.
    pub fn from_document(key: &str, doc: &Value) -> Result<RolloutState> {
        serde_json::from_value(doc.clone()).map_err(|e| {
            Error::bad_key(
                key,
                format!("not a rollout record the orchestrator wrote: {e}"),
            )
        })
    }

    /// The record as a document.
    pub fn to_document(&self) -> Value {
        serde_json::to_value(self).expect("a rollout record serializes")
    }

    /// Appends an event to the history.
    pub fn record(&mut self, event: Event) {
        push(&mut self.history, event);
    }

    /// Whether the gate of the latest batch waits on the node of this rank:
    /// going forward, every released node; going back, every node taken
    /// back so far (released at the peak, no longer released now).
    pub fn watches(&self, rank: f64) -> bool {
        match self.direction {
            Direction::Forward => rank <= self.threshold,
            Direction::Back => rank > self.threshold && rank <= self.peak,
        }
    }

    /// Whether the step waits for `rollout promote`: `promote: manual`, the
    /// first batch out, going forward, nobody promoted it yet.
    pub fn awaits_promotion(&self) -> bool {
        self.strategy.promote == Promote::Manual
            && self.promoted_by.is_none()
            && self.direction == Direction::Forward
            && self.batches >= 1
            && !self.fully_moved()
    }

    /// Whether the last batch has moved: every node released (forward), or
    /// none any more (back).
    pub fn fully_moved(&self) -> bool {
        match self.direction {
            Direction::Forward => self.threshold >= 1.0,
            Direction::Back => self.threshold <= 0.0 && self.patch.is_empty(),
        }
    }
}

/// The rollout id of step `index` (from 0) of a plan: `PLAN.N`, N from 1.
pub fn rollout_id(plan: &Plan, index: usize) -> String {
    format!("{}.{}", plan.name, index + 1)
}

/// Where a plan stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Steps remain.
    Running,
    /// Every step is done.
    Completed,
    /// A step was rolled back: the plan does not go on.
    RolledBack,
}

/// A plan's progress at `P/plans/NAME`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanProgress {
    /// The plan's name.
    pub name: String,
    /// Running, completed or rolled back.
    pub status: PlanStatus,
    /// How many steps the plan has.
    pub steps: usize,
    /// How many are done.
    pub done: usize,
    /// Which are done (indices from 0), in the order they finished: steps
    /// that run at the same time finish in any order. Absent in records of
    /// plans run as a sequence by an older convergent: then the first
    /// `done` steps (see [`PlanProgress::from_document`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished: Vec<usize>,
    /// The plan's steps and their `after:` waits, kept for `rollout
    /// status`; empty for a plan without `after:` (a plain sequence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graph: Vec<GraphStep>,
    /// What each done step changed, so a plan rollback can undo it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<AppliedStep>,
    /// How many done steps a plan rollback has undone (the last ones first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub undone: usize,
    /// What happened, oldest first, bounded.
    #[serde(default)]
    pub history: Vec<Event>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One step of a plan with `after:`, as its progress record keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphStep {
    /// Its number, from 1.
    pub step: usize,
    /// Its cluster.
    pub cluster: String,
    /// Its name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The numbers of the steps it waits for.
    pub after: Vec<usize>,
}

impl GraphStep {
    /// The graph of `plan`; empty for a plain sequence.
    pub fn of(plan: &Plan) -> Vec<GraphStep> {
        if graph::is_sequence(plan) {
            return Vec::new();
        }
        graph::dependencies(plan)
            .into_iter()
            .zip(&plan.steps)
            .enumerate()
            .map(|(i, (deps, step))| GraphStep {
                step: i + 1,
                cluster: step.cluster.clone(),
                name: step.name.clone(),
                after: deps.into_iter().map(|d| d + 1).collect(),
            })
            .collect()
    }
}

/// What a done step changed in its cluster's desired document: the values
/// its patch's top-level keys had before (absent: the key was not there),
/// and how it released, so undoing it can release the old values the same
/// way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedStep {
    /// The step's index in the plan (from 0).
    pub step: usize,
    /// Its cluster.
    pub cluster: String,
    /// Each top-level key the step set, with its value before (`None`: the
    /// desired document did not have it).
    pub before: BTreeMap<String, Option<Value>>,
    /// The step's strategy.
    pub strategy: Strategy,
    /// The step's wait settings.
    #[serde(default)]
    pub wait: Wait,
}

impl AppliedStep {
    /// The patch that puts the keys back: their old values, `null` for a
    /// key that was not there.
    pub fn undo_patch(&self) -> Map<String, Value> {
        self.before
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or(Value::Null)))
            .collect()
    }

    /// The desired document `current` with the keys put back as they were
    /// (a key that was not there is removed, not set to `null`).
    pub fn restored(&self, current: &Value) -> Value {
        let mut doc = current.as_object().cloned().unwrap_or_default();
        for (k, v) in &self.before {
            match v {
                Some(v) => {
                    doc.insert(k.clone(), v.clone());
                }
                None => {
                    doc.remove(k);
                }
            }
        }
        Value::Object(doc)
    }
}

impl PlanProgress {
    /// A plan not started yet.
    pub fn new(plan: &Plan) -> PlanProgress {
        PlanProgress {
            name: plan.name.clone(),
            status: PlanStatus::Running,
            steps: plan.steps.len(),
            done: 0,
            finished: Vec::new(),
            graph: GraphStep::of(plan),
            applied: Vec::new(),
            undone: 0,
            history: Vec::new(),
        }
    }

    /// Reads the record stored at `key`.
    pub fn from_document(key: &str, doc: &Value) -> Result<PlanProgress> {
        let mut progress: PlanProgress = serde_json::from_value(doc.clone()).map_err(|e| {
            Error::bad_key(
                key,
                format!("not a plan record the orchestrator wrote: {e}"),
            )
        })?;
        if progress.finished.is_empty() {
            progress.finished = (0..progress.done).collect();
        }
        let distinct: BTreeSet<usize> = progress.finished.iter().copied().collect();
        if distinct.len() != progress.finished.len()
            || progress.finished.len() != progress.done
            || progress.finished.iter().any(|&i| i >= progress.steps)
        {
            return Err(Error::bad_key(
                key,
                format!(
                    "not a plan record the orchestrator wrote: {} steps done, but finished lists {:?} of {} steps",
                    progress.done, progress.finished, progress.steps
                ),
            ));
        }
        Ok(progress)
    }

    /// The steps done, by index.
    pub fn done_steps(&self) -> BTreeSet<usize> {
        self.finished.iter().copied().collect()
    }

    /// Counts step `index` done (once).
    pub fn mark_done(&mut self, index: usize) {
        if !self.finished.contains(&index) {
            self.finished.push(index);
        }
        self.done = self.finished.len();
    }

    /// The done step a plan rollback undoes next: the last to finish of
    /// those not undone yet.
    pub fn next_to_undo(&self) -> Option<usize> {
        let left = self.done.checked_sub(self.undone)?;
        left.checked_sub(1)
            .and_then(|i| self.finished.get(i).copied())
    }

    /// The done steps no plan rollback has undone yet (indices from 0, in
    /// step order): what stays applied when a step is rolled back.
    pub fn still_applied(&self) -> Vec<usize> {
        let left = self
            .done
            .saturating_sub(self.undone)
            .min(self.finished.len());
        let mut steps = self.finished[..left].to_vec();
        steps.sort_unstable();
        steps
    }

    /// `steps` (indices from 0) for a message: `step 1` or `steps 1-3`
    /// when they are the plan's first steps in a row (a sequence), else
    /// each one named as the plan names it, `step 1 "db" (db), step 3 (web)`.
    pub fn steps_text(&self, steps: &[usize]) -> String {
        match steps {
            [] => "no step".into(),
            [0] => "step 1".into(),
            _ if steps.iter().copied().eq(0..steps.len()) => format!("steps 1-{}", steps.len()),
            _ => steps
                .iter()
                .map(|&i| self.step_label(i))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// `step 2 "web" (web)`, `step 2 (web)`, or `step 2` when the record
    /// does not say which cluster.
    fn step_label(&self, index: usize) -> String {
        let n = index + 1;
        if let Some(g) = self.graph.iter().find(|g| g.step == n) {
            return match &g.name {
                Some(name) => format!("step {n} \"{name}\" ({})", g.cluster),
                None => format!("step {n} ({})", g.cluster),
            };
        }
        match self.applied.iter().find(|a| a.step == index) {
            Some(a) => format!("step {n} ({})", a.cluster),
            None => format!("step {n}"),
        }
    }

    /// The record as a document.
    pub fn to_document(&self) -> Value {
        serde_json::to_value(self).expect("a plan record serializes")
    }

    /// Appends an event to the history.
    pub fn record(&mut self, event: Event) {
        push(&mut self.history, event);
    }

    /// Keeps the history of a step's rollout record, which goes when the
    /// step ends, so the plan's record can still tell what happened.
    pub fn keep_history_of(&mut self, rollout: &RolloutState) {
        for event in &rollout.history {
            let mut event = event.clone();
            event.detail = format!("{}: {}", rollout.id, event.detail);
            push(&mut self.history, event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::record::RolloutRecord;
    use std::path::Path;

    #[test]
    fn nodes_can_read_what_the_orchestrator_writes() {
        let plan = Plan::parse(Path::new("p.yml"), "name: web-2.4.1\nsteps:\n  - cluster: web\n    set: {version: '2.4.1'}\n    strategy: {canary: 1, batch: 25%}\n").unwrap();
        let mut state = RolloutState::new(&plan, 0, "alice@ops");
        state.threshold = 0.5;
        assert_eq!(state.id, "web-2.4.1.1");
        let doc = state.to_document();
        let node_view = RolloutRecord::from_document("k", &doc).unwrap();
        assert_eq!(node_view.id, "web-2.4.1.1");
        assert_eq!(node_view.status, "running");
        assert_eq!(node_view.threshold, 0.5);
        assert_eq!(RolloutState::from_document("k", &doc).unwrap(), state);
    }

    #[test]
    fn a_threshold_at_a_rank_releases_that_node_after_a_trip_through_the_store() {
        // The orchestrator raises the threshold to the k-th member's rank
        // exactly; that member must read itself released. A JSON parser that
        // is off by one ulp (serde_json without `float_roundtrip`) breaks
        // this for about one node in four.
        let plan = Plan::parse(
            Path::new("p.yml"),
            "name: p\nsteps:\n  - cluster: web\n    set: {v: 1}\n",
        )
        .unwrap();
        let mut state = RolloutState::new(&plan, 0, "a");
        for i in 0..10_000 {
            let node = format!("web-{i:05}");
            state.threshold = crate::rollout::rank::rank(&state.id, &node);
            let stored = serde_json::to_vec(&state.to_document()).unwrap();
            let read = crate::document::decode_value("k", &stored).unwrap();
            let record = RolloutRecord::from_document("k", &read).unwrap();
            assert!(
                crate::rollout::rank::is_released(
                    crate::rollout::rank::rank(&record.id, &node),
                    record.threshold
                ),
                "{node}: threshold {} read back as {}",
                state.threshold,
                record.threshold
            );
        }
    }

    #[test]
    fn steps_done_out_of_order_are_kept_in_the_order_they_finished() {
        let plan = Plan::parse(
            Path::new("p.yml"),
            "name: p\nsteps:\n  - {name: a, cluster: a, set: {v: 1}, after: []}\n  - {name: b, cluster: b, set: {v: 1}, after: []}\n  - {cluster: c, set: {v: 1}}\n",
        )
        .unwrap();
        let mut progress = PlanProgress::new(&plan);
        assert_eq!(progress.graph.len(), 3);
        assert_eq!(progress.graph[2].after, vec![2]);
        progress.mark_done(1);
        progress.mark_done(1);
        progress.mark_done(0);
        assert_eq!((progress.done, progress.finished.clone()), (2, vec![1, 0]));
        assert_eq!(progress.next_to_undo(), Some(0));
        // Step 2 finished first, then step 1: both stay applied, named.
        assert_eq!(progress.still_applied(), vec![0, 1]);
        assert_eq!(progress.steps_text(&[0, 1]), "steps 1-2");
        assert_eq!(progress.steps_text(&[0]), "step 1");
        assert_eq!(progress.steps_text(&[1]), "step 2 \"b\" (b)");
        assert_eq!(progress.steps_text(&[0, 2]), "step 1 \"a\" (a), step 3 (c)");
        progress.undone = 1;
        assert_eq!(progress.next_to_undo(), Some(1));
        // Step 1 (the last to finish) undone: step 2 stays.
        assert_eq!(progress.still_applied(), vec![1]);
        let back = PlanProgress::from_document("k", &progress.to_document()).unwrap();
        assert_eq!(back, progress);
        // A record an older convergent wrote (a sequence, no `finished`).
        let old = serde_json::json!({"name": "p", "status": "running", "steps": 3, "done": 2, "history": []});
        let read = PlanProgress::from_document("k", &old).unwrap();
        assert_eq!(read.done_steps(), BTreeSet::from([0, 1]));
        assert_eq!(read.next_to_undo(), Some(1));
        // One that contradicts itself is refused, naming the key.
        let bad = serde_json::json!({"name": "p", "status": "running", "steps": 3, "done": 2, "finished": [7, 1], "history": []});
        let err = PlanProgress::from_document("convergent/plans/p", &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("convergent/plans/p") && err.contains("finished"),
            "{err}"
        );
    }

    #[test]
    fn histories_are_bounded() {
        let plan = Plan::parse(
            Path::new("p.yml"),
            "name: p\nsteps:\n  - cluster: web\n    set: {v: 1}\n",
        )
        .unwrap();
        let mut progress = PlanProgress::new(&plan);
        for i in 0..(HISTORY_LIMIT + 10) {
            progress.record(Event::now("a", "e", i.to_string()));
        }
        assert_eq!(progress.history.len(), HISTORY_LIMIT);
        assert_eq!(
            progress.history.last().unwrap().detail,
            (HISTORY_LIMIT + 9).to_string()
        );
    }

    #[test]
    fn the_tour_view_holds_what_the_orchestrator_writes() {
        // fixtures/view.yml is what users start from: its records must be
        // exactly the orchestrator's, or `rollout status` cannot read them.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let view: Value =
            serde_yaml::from_str(&std::fs::read_to_string(root.join("view.yml")).unwrap()).unwrap();
        let plan = Plan::from_file(&root.join("plans/web-2.4.yml")).unwrap();
        let doc = &view["convergent"]["rollouts"]["web"];
        let record = RolloutState::from_document("k", doc).unwrap();
        assert_eq!(&record.to_document(), doc, "no field more or less");
        let mut fresh = RolloutState::new(&plan, 0, "alice@ops-1");
        fresh.threshold = record.threshold;
        fresh.peak = record.peak;
        fresh.batches = record.batches;
        fresh.moved_at = record.moved_at.clone();
        fresh.history = record.history.clone();
        assert_eq!(fresh, record);
        assert_eq!(record.history[0].detail, "step 1 of plan web-2.4");

        let progress_doc = &view["convergent"]["plans"]["web-2.4"];
        let progress = PlanProgress::from_document("k", progress_doc).unwrap();
        let mut expected = PlanProgress::new(&plan).to_document();
        expected["history"] = serde_json::to_value(&progress.history).unwrap();
        expected["digest"] = Value::String(crate::document::generation(
            &serde_json::to_value(&plan).unwrap(),
        ));
        assert_eq!(progress_doc, &expected);
    }
}
