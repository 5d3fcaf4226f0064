//! What the orchestrator shows without writing: the dry run's batches per
//! step, and `rollout status` — each active rollout with its fleet's
//! counts and, for a plan with `after:`, where each of its steps stands.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::document::canonical_json;
use crate::error::{Error, Result};
use crate::fleet::{Fleet, HealthCounts, HealthState, MemberState};
use crate::layout::Layout;
use crate::rollout::batches::{batch_size, next_threshold, ranked};
use crate::rollout::graph;
use crate::rollout::plan::Plan;
use crate::rollout::standing::{gate_states, held, watched_counts, HealthGate};
use crate::rollout::state::{rollout_id, Direction, GraphStep, PlanProgress, RolloutState, Status};
use crate::store::Store;

/// What a dry run shows of one step.
#[derive(Clone, Debug, Serialize)]
pub struct StepPreview {
    /// The step's number (from 1).
    pub step: usize,
    /// Its cluster.
    pub cluster: String,
    /// Its rollout id.
    pub rollout: String,
    /// Its patch, as canonical JSON.
    pub patch: String,
    /// The current members in the order they would be released, by batch.
    pub batches: Vec<Vec<String>>,
    /// Its name, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// With `after:` in the plan: the steps (numbers) it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<usize>>,
    /// With `after:` in the plan: the steps (numbers) that may run at the
    /// same time as it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs_with: Option<Vec<usize>>,
}

/// Which current members fall in which batch of each step; writes nothing.
pub fn preview(
    store: &dyn Store,
    layout: &Layout,
    plan: &Plan,
    member_ttl: Duration,
) -> Result<Vec<StepPreview>> {
    let mut out = Vec::new();
    let graph_shown = !graph::is_sequence(plan);
    let numbers = |steps: &[usize]| steps.iter().map(|i| i + 1).collect::<Vec<_>>();
    let waits = graph::dependencies(plan);
    let together = graph::concurrent(plan);
    for (index, step) in plan.steps.iter().enumerate() {
        let fleet = Fleet::read(store, layout, &step.cluster, member_ttl, SystemTime::now())?;
        let id = rollout_id(plan, index);
        let order = ranked(&id, fleet.batch_members().iter().map(|m| m.node.as_str()));
        let mut batches = Vec::new();
        let mut threshold = 0.0;
        while threshold < 1.0 && !order.is_empty() {
            let k = batch_size(
                batches.len(),
                step.strategy.canary,
                &step.strategy.batch,
                order.len(),
            );
            let next = next_threshold(&order, threshold, k);
            batches.push(
                order
                    .iter()
                    .filter(|r| r.rank > threshold && r.rank <= next)
                    .map(|r| r.node.clone())
                    .collect(),
            );
            threshold = next;
        }
        out.push(StepPreview {
            step: index + 1,
            cluster: step.cluster.clone(),
            rollout: id,
            patch: canonical_json(&Value::Object(step.set.clone())),
            batches,
            name: step.name.clone(),
            after: graph_shown.then(|| numbers(&waits[index])),
            runs_with: graph_shown.then(|| numbers(&together[index])),
        });
    }
    Ok(out)
}

/// How a rollout stands, for `rollout status`.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutView {
    /// The cluster.
    pub cluster: String,
    /// The step's number in its plan, from 1, as in the rollout id and the
    /// table (the record keeps the index, from 0).
    pub step: usize,
    /// The record.
    pub record: RolloutState,
    /// Released members that are present.
    pub released: usize,
    /// Of those, converged.
    pub converged: usize,
    /// Of those, failed.
    pub failed: usize,
    /// Members not released yet (held on the previous desired state).
    pub held: usize,
    /// Members absent.
    pub absent: usize,
    /// The released present members by health.
    pub health: HealthCounts,
    /// The released members holding the latest batch back, each with why
    /// (the first [`HELD_SHOWN`]; `holding_count` has them all).
    pub holding: Vec<String>,
    /// How many members hold the latest batch back.
    pub holding_count: usize,
    /// With a plan that has `after:`: each of its steps, what it waits for
    /// and where it stands — which steps run together.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan_steps: Vec<StepStanding>,
}

/// Where one step of a plan with `after:` stands, for `rollout status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepStanding {
    /// The step as its plan's record keeps it.
    #[serde(flatten)]
    pub step: GraphStep,
    /// `done`, `running`, `paused`, `aborted`, `rolling back`, or `waiting`
    /// (for the steps in `after`).
    pub standing: String,
}

/// Each step of `plan` with where it stands, if the plan has `after:`.
fn plan_standing(
    store: &dyn Store,
    layout: &Layout,
    plan: &str,
    active: &[(String, RolloutState)],
) -> Result<Vec<StepStanding>> {
    let key = layout.plan(plan);
    let Some(entry) = store.get(&key)? else {
        return Ok(Vec::new());
    };
    let doc = crate::document::decode_value(&key, &entry.value)?;
    let progress = PlanProgress::from_document(&key, &doc)?;
    let done = progress.done_steps();
    Ok(progress
        .graph
        .into_iter()
        .map(|step| {
            let record = active
                .iter()
                .find(|(_, r)| r.plan == plan && r.step + 1 == step.step);
            let standing = match record {
                _ if done.contains(&(step.step - 1)) => "done".to_string(),
                Some((_, r)) if r.direction == Direction::Back => match r.status {
                    Status::Running => "rolling back".into(),
                    other => format!("{} (rolling back)", other.name()),
                },
                Some((_, r)) => r.status.name().to_string(),
                None => "waiting".into(),
            };
            StepStanding { step, standing }
        })
        .collect())
}

/// How many holding members `rollout status` names.
pub const HELD_SHOWN: usize = 20;

/// Every active rollout (or that of `cluster`), with its fleet's counts, and
/// the records that could not be read: one bad record does not hide the
/// others.
pub fn rollouts(
    store: &dyn Store,
    layout: &Layout,
    cluster: Option<&str>,
    member_ttl: Duration,
) -> Result<(Vec<RolloutView>, Vec<Error>)> {
    let clusters: Vec<String> = match cluster {
        Some(c) => vec![c.to_string()],
        None => {
            let root = layout.key("rollouts");
            let (entries, _) = store.read_tree(&root)?;
            let folded = crate::document::fold(&root, &entries)?;
            folded
                .and_then(|f| f.doc.as_object().map(|m| m.keys().cloned().collect()))
                .unwrap_or_default()
        }
    };
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for c in clusters {
        let fleet = match Fleet::read(store, layout, &c, member_ttl, SystemTime::now()) {
            Ok(fleet) => fleet,
            Err(e @ (Error::BadKey { .. } | Error::BadName(_))) => {
                unreadable.push(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(doc) = &fleet.rollout_doc else {
            continue;
        };
        let record = match RolloutState::from_document(&layout.rollout(&c), doc) {
            Ok(record) => record,
            Err(e) => {
                unreadable.push(e);
                continue;
            }
        };
        let order = ranked(
            &record.id,
            fleet.batch_members().iter().map(|m| m.node.as_str()),
        );
        let now = SystemTime::now();
        let states = gate_states(&fleet, &record, now);
        let counts = watched_counts(&states, &order, |r| r <= record.threshold);
        let mut health = HealthCounts::default();
        for r in order.iter().filter(|r| r.rank <= record.threshold) {
            match states.get(r.node.as_str()) {
                Some((MemberState::Absent, _)) | None => {}
                Some((_, m)) => match m.health_state() {
                    HealthState::Healthy => health.healthy += 1,
                    HealthState::Unhealthy => health.unhealthy += 1,
                    HealthState::Unknown => health.unknown += 1,
                },
            }
        }
        let mut held_now = held(
            &states,
            &order,
            |r| record.watches(r),
            HealthGate::of(&record, now).as_ref(),
        );
        let holding_count = held_now.len();
        held_now.truncate(HELD_SHOWN);
        out.push(RolloutView {
            health,
            holding: held_now,
            holding_count,
            cluster: c,
            step: record.step + 1,
            released: counts.watched,
            converged: counts.converged,
            failed: counts.failed,
            held: order.iter().filter(|r| r.rank > record.threshold).count(),
            absent: fleet
                .members
                .iter()
                .filter(|m| m.state == MemberState::Absent)
                .count(),
            record,
            plan_steps: Vec::new(),
        });
    }
    // Which steps of each plan run together, from the plan's record.
    let active: Vec<(String, RolloutState)> = out
        .iter()
        .map(|v| (v.cluster.clone(), v.record.clone()))
        .collect();
    let plans: BTreeSet<String> = active.iter().map(|(_, r)| r.plan.clone()).collect();
    for plan in plans {
        let standing = match plan_standing(store, layout, &plan, &active) {
            Ok(s) => s,
            Err(e @ Error::BadKey { .. }) => {
                unreadable.push(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        for v in out.iter_mut().filter(|v| v.record.plan == plan) {
            v.plan_steps = standing.clone();
        }
    }
    Ok((out, unreadable))
}
