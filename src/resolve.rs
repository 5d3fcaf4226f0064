//! Resolution: the desired state of one node, from the layers of the view.
//!
//! For node N of cluster C, later layers win:
//! `P/defaults` < `P/clusters/C/desired` < rollout patch (only when N is
//! released) < `P/clusters/C/nodes/N`. Maps merge deeply, arrays and scalars
//! replace, `null` removes a key. Every leaf of the result remembers the layer
//! and store key that set it, which is what `explain` shows.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::document::{self, fold, generation, overlay, Nulls, Path, Sourced};
use crate::error::{Error, Result};
use crate::layout::{check_name, Layout, NameKind};
use crate::rollout::rank::{is_released, rank};
use crate::rollout::record::RolloutRecord;
use crate::schema::{state_of, Schema};
use crate::store::{Entry, Store};

/// The layers of a resolution, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// `P/defaults`
    Defaults,
    /// `P/clusters/C/desired`
    Cluster,
    /// The `patch` of `P/rollouts/C`, for released nodes.
    RolloutPatch,
    /// `P/clusters/C/nodes/N`
    NodeOverride,
    /// The schema's `hold` state, taken while constraints are not met.
    ConstraintHold,
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayerKind::Defaults => "defaults",
            LayerKind::Cluster => "cluster desired",
            LayerKind::RolloutPatch => "rollout patch",
            LayerKind::NodeOverride => "node override",
            LayerKind::ConstraintHold => "constraint hold",
        })
    }
}

/// Where a resolved value came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The layer that set it.
    pub layer: LayerKind,
    /// The store key that holds it.
    pub key: String,
}

/// One layer's document, each leaf with the store key it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Which layer this is.
    pub kind: LayerKind,
    /// The layer's root key.
    pub key: String,
    /// The document (always a map).
    pub doc: Sourced<String>,
}

impl Layer {
    /// Folds the entries of the tree at `key` into a layer; `None` when
    /// nothing is stored there. The document must be a map.
    pub fn from_entries(kind: LayerKind, key: &str, entries: &[Entry]) -> Result<Option<Layer>> {
        let Some(doc) = fold(key, entries)? else {
            return Ok(None);
        };
        if !doc.doc.is_object() {
            return Err(Error::bad_key(
                key,
                format!("the {kind} document must be a map, found {}", doc.doc),
            ));
        }
        Ok(Some(Layer {
            kind,
            key: key.to_string(),
            doc,
        }))
    }

    /// The state this layer sets, if any; checked against the schema.
    fn checked_state(&self, schema: Option<&Schema>) -> Result<Option<&str>> {
        let state_key = || {
            self.doc
                .sources
                .get(&vec!["state".to_string()])
                .cloned()
                .unwrap_or_else(|| self.key.clone())
        };
        let state = state_of(&self.doc.doc).map_err(|e| Error::bad_key(state_key(), e))?;
        if let (Some(state), Some(schema)) = (state, schema) {
            schema
                .check_state(state)
                .map_err(|e| Error::bad_key(state_key(), e))?;
        }
        Ok(state)
    }
}

/// A cluster's active rollout: the record and its patch as a layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveRollout {
    /// The record at `P/rollouts/C`.
    pub record: RolloutRecord,
    /// Its patch, as the layer released nodes get.
    pub patch: Layer,
}

/// Everything about one cluster that its nodes resolve against.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterInputs {
    /// The cluster's name.
    pub cluster: String,
    /// `P/defaults`, if any.
    pub defaults: Option<Layer>,
    /// `P/clusters/C/schema`, if any.
    pub schema: Option<Schema>,
    /// `P/clusters/C/desired`, if any.
    pub desired: Option<Layer>,
    /// `P/rollouts/C`, if a rollout is active.
    pub rollout: Option<ActiveRollout>,
}

/// The trees one node's resolution reads, in this order.
pub fn node_roots(layout: &Layout, cluster: &str, node: &str) -> Vec<String> {
    vec![
        layout.defaults(),
        layout.schema(cluster),
        layout.desired(cluster),
        layout.rollout(cluster),
        layout.node_override(cluster, node),
    ]
}

/// What one read gives for one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInputs {
    /// The cluster's layers.
    pub cluster: ClusterInputs,
    /// The node's override, if any.
    pub node_override: Option<Layer>,
    /// The store revision of the read, where the store has one.
    pub revision: Option<u64>,
}

/// Reads what node `node` of `cluster` resolves against, in one call to the
/// store: the trees of [`node_roots`], never anything that grows with the fleet.
pub fn read_node_inputs(
    store: &dyn Store,
    layout: &Layout,
    cluster: &str,
    node: &str,
) -> Result<NodeInputs> {
    check_name(NameKind::Cluster, cluster).map_err(Error::BadName)?;
    check_name(NameKind::Node, node).map_err(Error::BadName)?;
    let roots = node_roots(layout, cluster, node);
    let snapshot = store.read_trees(&roots)?;
    let [defaults, schema, desired, rollout, node_override]: [Vec<Entry>; 5] =
        snapshot.trees.try_into().map_err(|_| Error::Unavailable {
            store: store.describe(),
            reason: "the store answered a different number of trees than asked".into(),
        })?;
    let cluster =
        ClusterInputs::from_trees(layout, cluster, &defaults, &schema, &desired, &rollout)?;
    let node_override = Layer::from_entries(
        LayerKind::NodeOverride,
        &layout.node_override(&cluster.cluster, node),
        &node_override,
    )?;
    Ok(NodeInputs {
        cluster,
        node_override,
        revision: snapshot.revision,
    })
}

impl ClusterInputs {
    /// Builds a cluster's inputs from the entries of its trees. A cluster
    /// with neither a desired document nor a schema is unknown.
    pub fn from_trees(
        layout: &Layout,
        cluster: &str,
        defaults: &[Entry],
        schema: &[Entry],
        desired: &[Entry],
        rollout: &[Entry],
    ) -> Result<ClusterInputs> {
        let defaults = Layer::from_entries(LayerKind::Defaults, &layout.defaults(), defaults)?;
        let desired_key = layout.desired(cluster);
        let desired = Layer::from_entries(LayerKind::Cluster, &desired_key, desired)?;
        let schema_key = layout.schema(cluster);
        let schema = match fold(&schema_key, schema)? {
            Some(doc) => Some(Schema::from_document(&schema_key, &doc.doc)?),
            None => None,
        };
        if desired.is_none() && schema.is_none() {
            return Err(Error::bad_key(
                desired_key,
                format!("unknown cluster {cluster:?}: the view has no desired document or schema for it"),
            ));
        }
        let rollout_key = layout.rollout(cluster);
        let rollout = match fold(&rollout_key, rollout)? {
            Some(doc) => {
                let record = RolloutRecord::from_document(&rollout_key, &doc.doc)?;
                let patch = Layer {
                    kind: LayerKind::RolloutPatch,
                    key: rollout_key.clone(),
                    doc: doc
                        .child("patch")
                        .filter(|p| p.doc.is_object())
                        .unwrap_or_else(Sourced::empty_map),
                };
                Some(ActiveRollout { record, patch })
            }
            None => None,
        };
        Ok(ClusterInputs {
            cluster: cluster.to_string(),
            defaults,
            schema,
            desired,
            rollout,
        })
    }

    /// Whether `node` is released in the active rollout, and why.
    pub fn rollout_decision(&self, node: &str) -> Option<RolloutDecision> {
        self.rollout.as_ref().map(|r| {
            let u = rank(&r.record.id, node);
            RolloutDecision {
                id: r.record.id.clone(),
                status: r.record.status.clone(),
                rank: u,
                threshold: r.record.threshold,
                released: is_released(u, r.record.threshold),
            }
        })
    }

    /// Resolves the desired state of `node`, with its override if it has one.
    pub fn resolve(&self, node: &str, node_override: Option<&Layer>) -> Result<Resolution> {
        self.resolve_with(node, node_override, false)
    }

    /// Resolves `node` as if it were not released: the cluster's desired
    /// state before the rollout, where a node is held when the rollout's
    /// state needs what other clusters do not offer yet.
    pub fn resolve_withholding_patch(
        &self,
        node: &str,
        node_override: Option<&Layer>,
    ) -> Result<Resolution> {
        self.resolve_with(node, node_override, true)
    }

    fn resolve_with(
        &self,
        node: &str,
        node_override: Option<&Layer>,
        withhold_patch: bool,
    ) -> Result<Resolution> {
        let rollout = self.rollout_decision(node);
        let released_patch = self
            .rollout
            .as_ref()
            .filter(|_| !withhold_patch && rollout.as_ref().is_some_and(|d| d.released))
            .map(|r| &r.patch);
        let layers: Vec<&Layer> = [
            self.defaults.as_ref(),
            self.desired.as_ref(),
            released_patch,
            node_override,
        ]
        .into_iter()
        .flatten()
        .collect();

        let mut merged: Sourced<Origin> = Sourced::empty_map();
        for layer in &layers {
            layer.checked_state(self.schema.as_ref())?;
            let origin = |path: &[String]| Origin {
                layer: layer.kind,
                key: layer
                    .doc
                    .sources
                    .get(path)
                    .cloned()
                    .unwrap_or_else(|| layer.key.clone()),
            };
            overlay(&mut merged, &[], &layer.doc.doc, Nulls::Remove, &origin)
                .expect("a layer merges at the root, where nothing is in the way");
        }

        let desired = merged.doc;
        let state = state_of(&desired)
            .map_err(|e| Error::bad_key(self.state_origin(&merged.sources), e))?
            .map(str::to_string);
        if state.is_none() && self.schema.is_some() {
            return Err(Error::bad_key(
                self.desired.as_ref().map_or_else(|| "(no desired document)".into(), |l| l.key.clone()),
                format!("node {node:?} of cluster {:?} resolves to no `state`, but the cluster schema requires one", self.cluster),
            ));
        }
        Ok(Resolution {
            cluster: self.cluster.clone(),
            node: node.to_string(),
            generation: generation(&desired),
            state,
            desired,
            origins: merged.sources,
            rollout,
        })
    }

    fn state_origin(&self, sources: &BTreeMap<Path, Origin>) -> String {
        sources
            .get(&vec!["state".to_string()])
            .map(|o| o.key.clone())
            .unwrap_or_else(|| self.cluster.clone())
    }

    /// Every layer that exists for `node`, applied or not, lowest first.
    pub fn layers<'a>(&'a self, node_override: Option<&'a Layer>) -> Vec<&'a Layer> {
        [
            self.defaults.as_ref(),
            self.desired.as_ref(),
            self.rollout.as_ref().map(|r| &r.patch),
            node_override,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Why a node is or is not in the released part of a rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RolloutDecision {
    /// The rollout id.
    pub id: String,
    /// The orchestrator's status.
    pub status: String,
    /// The node's rank `u(N)`.
    pub rank: f64,
    /// The release threshold `t`.
    pub threshold: f64,
    /// `rank <= threshold`.
    pub released: bool,
}

/// The resolved desired state of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    /// The cluster.
    pub cluster: String,
    /// The node.
    pub node: String,
    /// The fully merged desired document.
    pub desired: Value,
    /// `desired.state`.
    pub state: Option<String>,
    /// Content hash of the canonical JSON of `desired`.
    pub generation: String,
    /// Layer and key of every leaf of `desired`.
    pub origins: BTreeMap<Path, Origin>,
    /// The rollout decision, when a rollout touches the cluster.
    pub rollout: Option<RolloutDecision>,
}

impl Resolution {
    /// Every leaf of the desired document with its origin, in path order.
    pub fn leaves(&self) -> Vec<(Path, &Value, Option<&Origin>)> {
        let mut out: Vec<_> = document::leaves(&self.desired)
            .into_iter()
            .map(|(path, value)| {
                let origin = self.origins.get(&path);
                (path, value, origin)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::encode_value;
    use crate::layout::Prefix;
    use serde_json::json;

    fn entry(key: &str, value: Value) -> Entry {
        Entry {
            key: key.to_string(),
            value: encode_value(&value),
            version: 1,
        }
    }

    fn inputs(schema: Option<Value>, desired: Value, rollout: Option<Value>) -> ClusterInputs {
        let l = Layout::new(&Prefix::default());
        let schema: Vec<Entry> = schema
            .map(|s| entry(&l.schema("web"), s))
            .into_iter()
            .collect();
        let rollout: Vec<Entry> = rollout
            .map(|r| entry(&l.rollout("web"), r))
            .into_iter()
            .collect();
        ClusterInputs::from_trees(
            &l,
            "web",
            &[entry(
                &l.defaults(),
                json!({"log_level": "info", "version": "1.0"}),
            )],
            &schema,
            &[entry(&l.desired("web"), desired)],
            &rollout,
        )
        .unwrap()
    }

    fn node_layer(doc: Value) -> Layer {
        let key = "convergent/clusters/web/nodes/n";
        Layer::from_entries(LayerKind::NodeOverride, key, &[entry(key, doc)])
            .unwrap()
            .unwrap()
    }

    #[test]
    fn layers_apply_in_order_and_origins_follow() {
        let c = inputs(
            None,
            json!({"state": "converged", "version": "2.4.0"}),
            None,
        );
        let r = c
            .resolve("n", Some(&node_layer(json!({"state": "off"}))))
            .unwrap();
        assert_eq!(
            r.desired,
            json!({"log_level": "info", "state": "off", "version": "2.4.0"})
        );
        assert_eq!(r.state.as_deref(), Some("off"));
        let origin = |k: &str| r.origins[&vec![k.to_string()]].layer;
        assert_eq!(origin("log_level"), LayerKind::Defaults);
        assert_eq!(origin("version"), LayerKind::Cluster);
        assert_eq!(origin("state"), LayerKind::NodeOverride);
        assert!(r.rollout.is_none());
    }

    #[test]
    fn rollout_patch_applies_only_to_released_nodes() {
        let everyone = inputs(
            None,
            json!({"state": "converged", "version": "2.4.0"}),
            Some(json!({"id": "r1", "threshold": 1.0, "patch": {"version": "2.4.1"}})),
        );
        let r = everyone.resolve("n", None).unwrap();
        assert_eq!(r.desired["version"], json!("2.4.1"));
        assert!(r.rollout.as_ref().unwrap().released);

        let nobody = inputs(
            None,
            json!({"state": "converged", "version": "2.4.0"}),
            Some(json!({"id": "r1", "threshold": 0.0, "patch": {"version": "2.4.1"}})),
        );
        let r = nobody.resolve("n", None).unwrap();
        assert_eq!(r.desired["version"], json!("2.4.0"));
        assert!(!r.rollout.as_ref().unwrap().released);
    }

    #[test]
    fn the_node_override_beats_the_rollout() {
        let c = inputs(
            None,
            json!({"state": "converged"}),
            Some(json!({"id": "r1", "threshold": 1.0, "patch": {"state": "waiting"}})),
        );
        let r = c
            .resolve("n", Some(&node_layer(json!({"state": "off"}))))
            .unwrap();
        assert_eq!(r.state.as_deref(), Some("off"));
    }

    #[test]
    fn a_state_outside_the_schema_is_refused_naming_its_key() {
        let schema = Some(json!({"states": ["off", "converged"]}));
        let c = inputs(schema.clone(), json!({"state": "converged"}), None);
        let err = c
            .resolve("n", Some(&node_layer(json!({"state": "of"}))))
            .unwrap_err();
        assert_eq!(err.exit_code(), 65);
        assert!(
            err.to_string().contains("convergent/clusters/web/nodes/n"),
            "{err}"
        );

        let c = inputs(schema, json!({"version": "1"}), None);
        let err = c.resolve("n", None).unwrap_err();
        assert!(err.to_string().contains("no `state`"), "{err}");
    }

    #[test]
    fn an_unknown_cluster_is_an_error() {
        let l = Layout::new(&Prefix::default());
        let err = ClusterInputs::from_trees(&l, "webb", &[], &[], &[], &[]).unwrap_err();
        assert!(
            err.to_string().contains("unknown cluster \"webb\""),
            "{err}"
        );
    }

    #[test]
    fn generation_is_the_same_for_the_same_desired_state() {
        let c = inputs(None, json!({"state": "converged"}), None);
        let a = c.resolve("a", None).unwrap();
        let b = c.resolve("b", None).unwrap();
        assert_eq!(a.generation, b.generation);
        let d = c
            .resolve("d", Some(&node_layer(json!({"state": "off"}))))
            .unwrap();
        assert_ne!(a.generation, d.generation);
    }
}
