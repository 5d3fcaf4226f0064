//! The node holds itself: when the desired state it resolves to declares
//! `requires` that the other clusters' check-ins do not meet, it resolves to
//! the last state that is compatible instead, with no orchestrator involved.
//!
//! In order, the first whose constraints hold wins:
//! 1. the node's full desired state (rollout patch included when released);
//! 2. the cluster's desired state without the rollout patch (`previous`);
//! 3. an earlier desired state of the cluster, newest first, rebuilt by
//!    undoing the changes its history records (`earlier`);
//! 4. the standing state with `state` set to the schema's `hold` (`hold`).
//!
//! Without a compatible state and without a `hold`, the node gets no desired
//! state at all (exit 75, a temporary failure): a recipe never starts web 2.5
//! on a db that still runs 5.0.
//!
//! The cost: a node whose desired state declares `requires` reads the
//! observed records of the clusters it requires, one more round trip whose
//! size grows with *those* clusters (about 250 bytes a node); a node held
//! past step 2 also reads its cluster's history (bounded at
//! [`history::LIMIT`] changes). A node whose state requires nothing reads
//! exactly what it read before.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::constraints::{evaluate, requirements, Check, ConstraintStatus, REQUIRES};
use serde_json::Value;

use crate::document::{fold, generation, parse_path, remove_path, set_path, Sourced};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::history::{self, Change};
use crate::layout::Layout;
use crate::report::ObservedReport;
use crate::resolve::{Layer, LayerKind, NodeInputs, Origin, Resolution};
use crate::store::Store;

/// A node's resolution after its constraints were checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Gated {
    /// What the node applies.
    pub resolution: Resolution,
    /// How its constraints fared; `None` when its state requires nothing.
    pub constraints: Option<ConstraintStatus>,
}

/// Every node's report of one cluster, by node name.
pub type Reports = BTreeMap<String, std::result::Result<ObservedReport, String>>;

/// The observed records of the clusters required so far, read once each.
pub struct Observed<'a> {
    store: &'a dyn Store,
    layout: &'a Layout,
    by_cluster: BTreeMap<String, Reports>,
}

impl<'a> Observed<'a> {
    /// Nothing read yet.
    pub fn new(store: &'a dyn Store, layout: &'a Layout) -> Self {
        Observed {
            store,
            layout,
            by_cluster: BTreeMap::new(),
        }
    }

    /// The reports of `cluster`, read on first use.
    pub fn reports(&mut self, cluster: &str) -> Result<&Reports> {
        self.ensure(&[cluster.to_string()])?;
        Ok(&self.by_cluster[cluster])
    }

    /// Reads, in one call, the clusters of `names` not read yet.
    fn ensure(&mut self, names: &[String]) -> Result<()> {
        let missing: Vec<&String> = names
            .iter()
            .filter(|c| !self.by_cluster.contains_key(*c))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let roots: Vec<String> = missing.iter().map(|c| self.layout.observed(c)).collect();
        let snapshot = self.store.read_trees(&roots)?;
        if snapshot.trees.len() != roots.len() {
            return Err(Error::Unavailable {
                store: self.store.describe(),
                reason: "the store answered a different number of trees than asked".into(),
            });
        }
        for ((cluster, root), entries) in missing.into_iter().zip(&roots).zip(&snapshot.trees) {
            let mut problems = Vec::new();
            let reports = Fleet::reports_by_node(root, entries, &mut problems)?;
            self.by_cluster.insert(cluster.clone(), reports);
        }
        Ok(())
    }
}

/// Checks `resolution`'s constraints: `None` when it declares none.
fn check(
    observed: &mut Observed,
    resolution: &Resolution,
    member_ttl: Duration,
    now: SystemTime,
) -> Result<Option<Vec<Check>>> {
    let reqs = requirements(&resolution.desired).map_err(|problem| {
        let key = resolution
            .origins
            .iter()
            .find(|(path, _)| path.first().map(String::as_str) == Some(REQUIRES))
            .map_or_else(|| resolution.cluster.clone(), |(_, o)| o.key.clone());
        Error::bad_key(key, problem)
    })?;
    if reqs.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = reqs.iter().map(|r| r.cluster.clone()).collect();
    observed.ensure(&names)?;
    Ok(Some(
        reqs.iter()
            .map(|r| evaluate(r, &observed.by_cluster[&r.cluster], member_ttl, now))
            .collect(),
    ))
}

/// Resolves `node` from `inputs`, held to a compatible state when the
/// constraints of its desired state are not met.
pub fn resolve_compatible(
    store: &dyn Store,
    layout: &Layout,
    inputs: &NodeInputs,
    node: &str,
    member_ttl: Duration,
    now: SystemTime,
) -> Result<Gated> {
    let cluster = &inputs.cluster;
    let full = cluster.resolve(node, inputs.node_override.as_ref())?;
    let mut observed = Observed::new(store, layout);
    let Some(checks) = check(&mut observed, &full, member_ttl, now)? else {
        return Ok(Gated {
            resolution: full,
            constraints: None,
        });
    };
    if checks.iter().all(|c| c.met) {
        return Ok(Gated {
            resolution: full,
            constraints: Some(ConstraintStatus {
                met: true,
                waiting_for: Vec::new(),
                held_to: None,
                held_generation: None,
                checks,
            }),
        });
    }
    let status = |held_to: &str| ConstraintStatus {
        met: false,
        waiting_for: checks
            .iter()
            .filter(|c| !c.met)
            .map(Check::waiting_for)
            .collect(),
        held_to: Some(held_to.to_string()),
        held_generation: Some(full.generation.clone()),
        checks: checks.clone(),
    };

    let released = full.rollout.as_ref().is_some_and(|d| d.released);
    let previous = if released {
        let previous = cluster.resolve_withholding_patch(node, inputs.node_override.as_ref())?;
        let compatible = check(&mut observed, &previous, member_ttl, now)?
            .is_none_or(|checks| checks.iter().all(|c| c.met));
        if compatible {
            return Ok(Gated {
                resolution: previous,
                constraints: Some(status("previous")),
            });
        }
        previous
    } else {
        full.clone()
    };

    if let Some(earlier) = earlier_compatible(&mut observed, inputs, node, member_ttl, now)? {
        return Ok(Gated {
            resolution: earlier,
            constraints: Some(status("earlier")),
        });
    }

    let Some(hold) = cluster.schema.as_ref().and_then(|s| s.hold.clone()) else {
        return Err(Error::Held(format!(
            "node {node:?} of cluster {:?}: the constraints of its desired state are not met ({}), \
             no earlier desired state is compatible, and the cluster schema declares no `hold` state; \
             no desired state is given until they are",
            cluster.cluster,
            status("none").waiting_for.join("; ")
        )));
    };
    let mut held = previous;
    held.desired["state"] = Value::String(hold.clone());
    held.state = Some(hold);
    held.generation = generation(&held.desired);
    held.origins.insert(
        vec!["state".to_string()],
        Origin {
            layer: LayerKind::ConstraintHold,
            key: layout.schema(&cluster.cluster),
        },
    );
    Ok(Gated {
        resolution: held,
        constraints: Some(status("hold")),
    })
}

/// The newest earlier desired state of the cluster whose constraints hold,
/// rebuilt from the standing document by undoing recorded changes one at a
/// time, newest first. A state the schema no longer allows is skipped.
fn earlier_compatible(
    observed: &mut Observed,
    inputs: &NodeInputs,
    node: &str,
    member_ttl: Duration,
    now: SystemTime,
) -> Result<Option<Resolution>> {
    let cluster = &inputs.cluster;
    let history_key = observed.layout.history(&cluster.cluster);
    let desired_key = observed.layout.desired(&cluster.cluster);
    let (entries, _) = observed.store.read_tree(&history_key)?;
    let Ok(Some(history)) = fold(&history_key, &entries) else {
        return Ok(None);
    };
    let mut doc = cluster
        .desired
        .as_ref()
        .map_or_else(|| Value::Object(Default::default()), |l| l.doc.doc.clone());
    let changes = history::entries(Some(&history.doc));
    for change in changes.iter().rev().filter(|c| c.key == desired_key) {
        if !undo(&mut doc, change) {
            return Ok(None);
        }
        let mut earlier = cluster.clone();
        earlier.rollout = None;
        earlier.desired = Some(Layer {
            kind: LayerKind::Cluster,
            key: desired_key.clone(),
            doc: Sourced::uniform(
                doc.clone(),
                format!("{history_key} (before {})", change.time),
            ),
        });
        let Ok(resolution) = earlier.resolve(node, inputs.node_override.as_ref()) else {
            continue;
        };
        let compatible = check(observed, &resolution, member_ttl, now)?
            .is_none_or(|checks| checks.iter().all(|c| c.met));
        if compatible {
            return Ok(Some(resolution));
        }
    }
    Ok(None)
}

/// Undoes one recorded change of a document; false when a path in it no
/// longer fits the document (the history does not describe it).
fn undo(doc: &mut Value, change: &Change) -> bool {
    for field in &change.changes {
        let Ok(path) = parse_path(&field.path) else {
            return false;
        };
        match &field.from {
            Some(old) => {
                if set_path(doc, &path, old.clone()).is_err() {
                    return false;
                }
            }
            None => {
                remove_path(doc, &path);
            }
        }
    }
    true
}
