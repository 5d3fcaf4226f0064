//! An operator's hand on a running rollout: pause, resume, abort, and
//! promote past a `promote: manual` step's first batch. Each is one
//! compare-and-set write of the rollout record, with the reason recorded; a
//! running orchestrator sees it on its next turn.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::plan::Promote;
use super::state::{Direction, Event, RolloutState, Status};
use crate::clock::now_rfc3339;
use crate::error::{Error, Result};
use crate::fleet::{Fleet, HealthState, MemberState};
use crate::layout::{check_name, Layout, NameKind};
use crate::store::Store;
use crate::update::update;

/// An operator's action on a running rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop releasing until resumed.
    Pause,
    /// Go on after a pause.
    Resume,
    /// Stop releasing for good; the record stays (rollback remains).
    Abort,
    /// Let a `promote: manual` rollout release past its first batch.
    Promote,
}

/// Pauses, resumes or aborts the rollout of `cluster`, with the reason
/// recorded. A running orchestrator sees it on its next turn.
pub fn control(
    store: &dyn Store,
    layout: &Layout,
    cluster: &str,
    action: Control,
    actor: &str,
    reason: Option<String>,
) -> Result<RolloutState> {
    control_rollout(store, layout, cluster, None, action, actor, reason)
}

/// The rollout records of `plan` (steps under way and undos of a plan
/// rollback), with their clusters, in step order. A record that cannot be
/// read is left out (`rollout status` names it).
pub fn rollouts_of_plan(
    store: &dyn Store,
    layout: &Layout,
    plan: &str,
) -> Result<Vec<(String, RolloutState)>> {
    let root = layout.key("rollouts");
    let (entries, _) = store.read_tree(&root)?;
    let Some(all) = crate::document::fold(&root, &entries)? else {
        return Ok(Vec::new());
    };
    let Some(map) = all.doc.as_object() else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(String, RolloutState)> = map
        .iter()
        .filter_map(|(cluster, doc)| {
            let state = RolloutState::from_document(&layout.rollout(cluster), doc).ok()?;
            (state.plan == plan).then(|| (cluster.clone(), state))
        })
        .collect();
    out.sort_by(|a, b| (a.1.step, &a.0).cmp(&(b.1.step, &b.0)));
    Ok(out)
}

/// What `rollout resume --plan` did to one step.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Resumed {
    /// The step's cluster.
    pub cluster: String,
    /// Its rollout id.
    pub rollout: String,
    /// Its step number in the plan (1-based).
    pub step: usize,
    /// Whether it goes forward (`run` the plan again) or back (run the rollback again).
    pub direction: Direction,
}

/// Resumes every paused rollout of `plan` — the step that stopped and the
/// ones the orchestrator paused with it — each with its own compare-and-set
/// write (as `rollout resume CLUSTER` each). Refused (exit 75) when no plan
/// of that name has run against the store or none of its steps is paused;
/// a bad name is refused (exit 65) before anything is read.
pub fn resume_plan(
    store: &dyn Store,
    layout: &Layout,
    plan: &str,
    actor: &str,
    reason: Option<String>,
) -> Result<Vec<Resumed>> {
    check_name(NameKind::Rollout, plan).map_err(Error::BadName)?;
    let key = layout.plan(plan);
    if store.get(&key)?.is_none() {
        return Err(Error::Stopped(format!(
            "no plan {plan} has run against this store ({key} does not exist): nothing to resume"
        )));
    }
    let records = rollouts_of_plan(store, layout, plan)?;
    let paused: Vec<&(String, RolloutState)> = records
        .iter()
        .filter(|(_, s)| s.status == Status::Paused)
        .collect();
    if paused.is_empty() {
        let standing = if records.is_empty() {
            "it has no step under way".to_string()
        } else {
            records
                .iter()
                .map(|(c, s)| format!("step {} ({c}) is {}", s.step + 1, s.status.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::Stopped(format!(
            "plan {plan} has no paused step: nothing to resume ({standing})"
        )));
    }
    let mut resumed = Vec::new();
    for (cluster, state) in paused {
        let s = control_rollout(
            store,
            layout,
            cluster,
            Some(&state.id),
            Control::Resume,
            actor,
            reason.clone(),
        )?;
        resumed.push(Resumed {
            cluster: cluster.clone(),
            rollout: s.id,
            step: s.step + 1,
            direction: s.direction,
        });
    }
    Ok(resumed)
}

/// [`control`], refused when the cluster's record is not rollout `only`
/// (another rollout replaced it since it was read).
fn control_rollout(
    store: &dyn Store,
    layout: &Layout,
    cluster: &str,
    only: Option<&str>,
    action: Control,
    actor: &str,
    reason: Option<String>,
) -> Result<RolloutState> {
    let key = layout.rollout(cluster);
    // Resuming means "the failures that stopped you are dealt with": the
    // failure reports there are now stop counting; each node's next
    // report counts again. (Compared by the report's own time stamp, so no
    // clocks need to agree.)
    let forgiven: BTreeMap<String, String> = match action {
        Control::Resume => Fleet::read(store, layout, cluster, Duration::MAX, SystemTime::now())?
            .members
            .into_iter()
            .filter(|m| {
                m.state == MemberState::Failed || m.health_state() == HealthState::Unhealthy
            })
            .filter_map(|m| Some((m.node, m.reported_at?)))
            .collect(),
        Control::Pause | Control::Abort | Control::Promote => BTreeMap::new(),
    };
    let docs = update(store, std::slice::from_ref(&key), |current| {
        let Some(doc) = &current.docs[0] else {
            return Err(Error::Stopped(format!(
                "cluster {cluster} has no active rollout"
            )));
        };
        let mut s = RolloutState::from_document(&key, doc)?;
        if let Some(only) = only.filter(|id| *id != s.id) {
            return Err(Error::Stopped(format!(
                "cluster {cluster} now has another rollout, {} (not {only}): nothing resumed there",
                s.id
            )));
        }
        if action == Control::Promote {
            if s.strategy.promote != Promote::Manual {
                return Err(Error::Stopped(format!(
                    "the rollout of {cluster} promotes itself (its step has no `promote: manual`): nothing to promote"
                )));
            }
            if let Some(by) = &s.promoted_by {
                return Err(Error::Stopped(format!(
                    "the rollout of {cluster} was already promoted ({by})"
                )));
            }
            if s.direction != Direction::Forward || s.status == Status::Aborted {
                return Err(Error::Stopped(format!(
                    "the rollout of {cluster} is being rolled back or was aborted: nothing to promote"
                )));
            }
            let why = reason
                .clone()
                .unwrap_or_else(|| format!("promoted by {actor}"));
            s.promoted_by = Some(format!("{actor} at {}", now_rfc3339()));
            s.record(Event::now(actor, "promoted", why));
            return Ok(Some(vec![Some(s.to_document())]));
        }
        let (event, status) = match (action, s.status) {
            (Control::Pause, Status::Running) => ("paused", Status::Paused),
            (Control::Resume, Status::Paused) => ("resumed", Status::Running),
            (Control::Abort, Status::Running | Status::Paused) => ("aborted", Status::Aborted),
            (_, current) => {
                return Err(Error::Stopped(format!(
                    "the rollout of {cluster} is {}: nothing to {}",
                    serde_json::to_value(current)
                        .expect("serializes")
                        .as_str()
                        .unwrap_or_default(),
                    match action {
                        Control::Pause => "pause",
                        Control::Resume => "resume",
                        Control::Abort => "abort",
                        Control::Promote => "promote",
                    }
                )))
            }
        };
        s.status = status;
        if action == Control::Resume {
            s.forgiven = forgiven.clone();
            // A wait for other tiers that timed out starts again.
            s.constraints_wait_since = None;
            // So does the latest batch's wait (`wait.timeout`,
            // `healthy_deadline`): an operator who resumes gets a whole
            // window, not a pause again at the next turn. The history keeps
            // when the batch really moved.
            if s.moved_at.is_some() {
                s.moved_at = Some(now_rfc3339());
            }
        }
        let why = reason
            .clone()
            .unwrap_or_else(|| format!("{event} by {actor}"));
        s.reason = (status != Status::Running).then(|| why.clone());
        s.record(Event::now(actor, event, why));
        Ok(Some(vec![Some(s.to_document())]))
    })?;
    RolloutState::from_document(&key, docs[0].as_ref().expect("the record exists"))
}
