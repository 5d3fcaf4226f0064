//! The orchestrator keeps the constraints other clusters depend on: a step
//! that would make its cluster offer what another cluster's desired state
//! no longer accepts (a db downgrade below what live web requires) is
//! refused before anything is written, at dry run and at run; and a batch
//! is released only while the constraints of the rollout's state hold.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::compatible::Observed;
use crate::constraints::{evaluate, offers, requirements, Requirement};
use crate::document::{fold, merged, Nulls};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::resolve::ClusterInputs;
use crate::rollout::plan::Plan;
use crate::store::{Entry, Store};

/// Each cluster's desired documents as the view holds them: the standing
/// one (defaults merged under it) and, with an active rollout, the one its
/// patch moves nodes to.
#[derive(Clone, Debug, Default)]
pub struct Declared {
    clusters: BTreeMap<String, (Value, Option<Value>)>,
}

impl Declared {
    /// Reads every cluster's desired document and rollout patch, in one call.
    pub fn read(store: &dyn Store, layout: &Layout) -> Result<Declared> {
        let roots = [layout.defaults(), layout.clusters(), layout.key("rollouts")];
        let snapshot = store.read_trees(&roots)?;
        let [defaults, clusters, rollouts]: [Vec<Entry>; 3] =
            snapshot.trees.try_into().map_err(|_| Error::Unavailable {
                store: store.describe(),
                reason: "the store answered a different number of trees than asked".into(),
            })?;
        let as_map = |root: &str, entries: &[Entry]| -> Result<Map<String, Value>> {
            Ok(match fold(root, entries)?.map(|s| s.doc) {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            })
        };
        let defaults = Value::Object(as_map(&roots[0], &defaults)?);
        let clusters = as_map(&roots[1], &clusters)?;
        let rollouts = as_map(&roots[2], &rollouts)?;
        let mut out = Declared::default();
        for (name, body) in clusters {
            let Some(desired) = body.get("desired").filter(|d| d.is_object()) else {
                continue;
            };
            let standing = merged(&defaults, desired, Nulls::Remove);
            let next = rollouts
                .get(&name)
                .and_then(|r| r.get("patch"))
                .filter(|p| p.is_object())
                .map(|patch| merged(&standing, patch, Nulls::Remove));
            out.clusters.insert(name, (standing, next));
        }
        Ok(out)
    }

    /// Every requirement the clusters' desired states (standing, then the
    /// active rollout's) declare, as (cluster, which state, requirement).
    pub fn requirements(&self) -> Vec<(String, &'static str, Requirement)> {
        let mut out = Vec::new();
        for (name, (standing, next)) in &self.clusters {
            for (which, doc) in [("desired", Some(standing)), ("rollout", next.as_ref())] {
                let Some(doc) = doc else { continue };
                for req in requirements(doc).unwrap_or_default() {
                    out.push((name.clone(), which, req));
                }
            }
        }
        out
    }

    /// Checks that step `index` of `plan` breaks no constraint of another
    /// cluster, then records its patch as part of its cluster's desired
    /// state, so that the next step is checked against the view it leaves.
    pub fn check_step(&mut self, layout: &Layout, plan: &Plan, index: usize) -> Result<()> {
        let step = &plan.steps[index];
        let Some((standing, _)) = self.clusters.get(&step.cluster) else {
            return Ok(()); // an unknown cluster is refused where the step starts
        };
        let before = offers(standing);
        let after_doc = merged(standing, &Value::Object(step.set.clone()), Nulls::Remove);
        let after = offers(&after_doc);
        for (other, (other_standing, other_next)) in &self.clusters {
            if other == &step.cluster {
                continue;
            }
            for doc in std::iter::once(other_standing).chain(other_next) {
                let Ok(reqs) = requirements(doc) else {
                    continue; // bad constraints are reported where they are read
                };
                for req in reqs.iter().filter(|r| r.cluster == step.cluster) {
                    let holds = |o: &BTreeMap<String, Value>| {
                        req.keys.iter().all(|(k, m)| m.accepts(o.get(k)))
                    };
                    if holds(&before) && !holds(&after) {
                        return Err(Error::bad_key(
                            layout.desired(other),
                            format!(
                                "step {} of plan {} is refused: it would make {} offer {}, but {other}'s desired state requires {req}, and live {other} nodes depend on it",
                                index + 1,
                                plan.name,
                                step.cluster,
                                serde_json::to_string(&after).expect("offers serialize"),
                            ),
                        ));
                    }
                }
            }
        }
        self.clusters
            .insert(step.cluster.clone(), (after_doc, None));
        Ok(())
    }
}

/// Checks `steps` of `plan` (step indices, in the order they run),
/// each against the view the ones before it leave behind.
pub fn check_plan(store: &dyn Store, layout: &Layout, plan: &Plan, steps: &[usize]) -> Result<()> {
    let mut declared = Declared::read(store, layout)?;
    for &index in steps {
        declared.check_step(layout, plan, index)?;
    }
    Ok(())
}

/// The constraints of `inputs`' rollout state (defaults < desired < patch)
/// that the required tiers' check-ins do not meet now, one line each; empty
/// when they all hold or the state requires nothing.
pub fn unmet(
    store: &dyn Store,
    layout: &Layout,
    inputs: &ClusterInputs,
    member_ttl: Duration,
    now: SystemTime,
) -> Result<Vec<String>> {
    let empty = Value::Object(Map::new());
    let layer = |l: Option<&crate::resolve::Layer>| l.map_or(empty.clone(), |l| l.doc.doc.clone());
    let standing = merged(
        &layer(inputs.defaults.as_ref()),
        &layer(inputs.desired.as_ref()),
        Nulls::Remove,
    );
    let next = merged(
        &standing,
        &layer(inputs.rollout.as_ref().map(|r| &r.patch)),
        Nulls::Remove,
    );
    let Ok(reqs) = requirements(&next) else {
        return Ok(Vec::new()); // nodes refuse bad constraints themselves, naming the key
    };
    let mut observed = Observed::new(store, layout);
    let mut out = Vec::new();
    for req in &reqs {
        let check = evaluate(req, observed.reports(&req.cluster)?, member_ttl, now);
        if !check.met {
            out.push(check.waiting_for());
        }
    }
    Ok(out)
}
