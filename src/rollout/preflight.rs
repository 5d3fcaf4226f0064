//! Every check the start of a plan makes, made without writing: so that
//! `rollout run --dry-run` refuses what the real run would refuse, and a
//! refused start leaves nothing behind (no plan record marked running that
//! would then refuse the corrected plan under the same name).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::graph;
use super::plan::Plan;
use super::state::{rollout_id, PlanProgress, PlanStatus, RolloutState};
use crate::document::{fold_each, generation};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::schema::{state_of, Schema};
use crate::store::Store;

/// The digest of a plan's steps, kept in its progress record: a plan must
/// not change while it runs.
pub fn plan_digest(plan: &Plan) -> String {
    generation(&serde_json::to_value(plan).expect("a plan serializes"))
}

/// Checks a plan against its progress record at `key`, if any. `started`:
/// whether the first step's rollout record was ever written. A record whose
/// plan never started a step (done 0, no rollout) may be replaced by a
/// changed plan under the same name.
pub fn check_progress(key: &str, doc: Option<&Value>, plan: &Plan, started: bool) -> Result<()> {
    let Some(doc) = doc else {
        return Ok(());
    };
    let progress = PlanProgress::from_document(key, doc)?;
    if progress.status == PlanStatus::RolledBack {
        return Err(Error::Stopped(format!(
            "plan {} was rolled back at step {}; a plan that was rolled back does not go on (run a plan with a new name)",
            plan.name,
            progress.done + 1
        )));
    }
    let recorded = doc
        .get("digest")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if recorded != plan_digest(plan) && (progress.done > 0 || started) {
        return Err(Error::bad_key(
            key,
            format!(
                "plan {} changed since it started (its steps differ from those recorded); \
                 a plan must not change while it runs: give the new one a new name",
                plan.name
            ),
        ));
    }
    Ok(())
}

/// Whether a step starts afresh or resumes its rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStart {
    /// No rollout record yet: one is created.
    Fresh,
    /// The step's own rollout record is there from an earlier run.
    Resuming,
}

/// The documents a step's start reads, and their keys.
pub struct StepInputs<'a> {
    /// `P/rollouts/C`, `P/clusters/C/desired`, `P/clusters/C/schema`.
    pub keys: [&'a str; 3],
    /// The rollout record, if any.
    pub rollout: Option<&'a Value>,
    /// The cluster's desired document, if any.
    pub desired: Option<&'a Value>,
    /// The cluster's schema, if any.
    pub schema: Option<&'a Value>,
}

/// Checks starting step `index` of `plan`: the cluster exists, has no other
/// active rollout, and its schema allows the patch's state from `from` (the
/// state the cluster will be in: its desired state now, or what the plan's
/// earlier steps leave).
pub fn check_step(
    plan: &Plan,
    index: usize,
    inputs: &StepInputs,
    from: Option<&str>,
) -> Result<StepStart> {
    let step = &plan.steps[index];
    let cluster = &step.cluster;
    let [rollout_key, desired_key, schema_key] = inputs.keys;
    if let Some(doc) = inputs.rollout {
        let existing = RolloutState::from_document(rollout_key, doc)?;
        if existing.id == rollout_id(plan, index) {
            return Ok(StepStart::Resuming);
        }
        return Err(Error::Stopped(format!(
            "cluster {cluster} has an active rollout, {} of plan {} ({}); one rollout per cluster",
            existing.id,
            existing.plan,
            serde_json::to_value(existing.status)
                .expect("serializes")
                .as_str()
                .unwrap_or_default()
        )));
    }
    if inputs.desired.is_none() && inputs.schema.is_none() {
        return Err(Error::bad_key(
            desired_key,
            format!("unknown cluster {cluster:?}: step {} cannot run", index + 1),
        ));
    }
    if let Some(schema_doc) = inputs.schema {
        let schema = Schema::from_document(schema_key, schema_doc)?;
        let patch = Value::Object(step.set.clone());
        if let Some(to) = state_of(&patch).map_err(|e| Error::bad_key(rollout_key, e))? {
            schema.check_transition(from, to).map_err(|e| {
                Error::bad_key(
                    desired_key,
                    format!("step {} of plan {}: {e}", index + 1, plan.name),
                )
            })?;
        }
    }
    Ok(StepStart::Fresh)
}

/// Every check `rollout run` makes before it writes, for the plan as the
/// store holds it now: the plan's record, then each step still to run (in
/// the order its `after:` waits allow), its transition checked from the
/// state the steps before it leave.
pub fn preflight(store: &dyn Store, layout: &Layout, plan: &Plan) -> Result<()> {
    let mut keys = vec![layout.plan(&plan.name)];
    for step in &plan.steps {
        keys.push(layout.rollout(&step.cluster));
        keys.push(layout.desired(&step.cluster));
        keys.push(layout.schema(&step.cluster));
    }
    let snapshot = store.read_trees(&keys)?;
    let docs = fold_each(&keys, &snapshot.trees)?;
    let doc_of = |key: &str| {
        keys.iter()
            .position(|k| k == key)
            .and_then(|i| docs[i].as_ref())
    };
    let first_started = plan.steps.first().is_some_and(|s| {
        doc_of(&layout.rollout(&s.cluster))
            .and_then(|d| d.get("id"))
            .and_then(Value::as_str)
            == Some(&rollout_id(plan, 0))
    });
    check_progress(&keys[0], docs[0].as_ref(), plan, first_started)?;
    let done = match docs[0].as_ref() {
        Some(doc) => {
            let progress = PlanProgress::from_document(&keys[0], doc)?;
            if progress.status == PlanStatus::Completed {
                return Ok(());
            }
            progress.done_steps()
        }
        None => BTreeSet::new(),
    };
    // The steps to run, each after those it waits for: steps on one cluster
    // never run at once (validated), so this is their order too.
    let to_run: Vec<usize> = graph::order(plan)
        .into_iter()
        .filter(|i| !done.contains(i))
        .collect();
    // The state each cluster will be in when its next step starts.
    let mut states: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for (position, &index) in to_run.iter().enumerate() {
        let step = &plan.steps[index];
        let cluster = step.cluster.as_str();
        let (rollout_key, desired_key, schema_key) = (
            layout.rollout(cluster),
            layout.desired(cluster),
            layout.schema(cluster),
        );
        let desired = doc_of(&desired_key);
        let from = states.entry(cluster).or_insert_with(|| {
            desired
                .and_then(|d| state_of(d).ok().flatten())
                .map(str::to_string)
        });
        // A later step on the same cluster finds the rollout record of the
        // step before it gone (folded in): only the first one sees it.
        let earlier_same_cluster = to_run[..position]
            .iter()
            .any(|&i| plan.steps[i].cluster == cluster);
        let inputs = StepInputs {
            keys: [&rollout_key, &desired_key, &schema_key],
            rollout: if earlier_same_cluster {
                None
            } else {
                doc_of(&rollout_key)
            },
            desired,
            schema: doc_of(&schema_key),
        };
        check_step(plan, index, &inputs, from.as_deref())?;
        if let Some(to) = step.set.get("state").and_then(Value::as_str) {
            *from = Some(to.to_string());
        }
    }
    // No step may break a constraint another cluster depends on.
    super::compat::check_plan(store, layout, plan, &to_run)
}
