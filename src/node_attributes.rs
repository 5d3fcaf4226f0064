//! The document `attributes` prints: a node's desired state as JSON node
//! attributes, all under the one top-level key `convergent`, so it can be
//! merged into node attributes or passed to `chef-client -j`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compatible::Gated;
use crate::constraints::ConstraintStatus;
use crate::document::is_generation;
use crate::error::{Error, Result};
use crate::resolve::Resolution;
use crate::store::StoreKind;
use crate::yaml_text;

/// The whole printed document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesDocument {
    /// Everything sits under this one key.
    pub convergent: NodeAttributes,
}

/// A node's resolved desired state and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAttributes {
    /// The cluster.
    pub cluster: String,
    /// The node.
    pub node: String,
    /// `desired.state`, repeated for convenience.
    pub state: Option<String>,
    /// The fully merged desired document.
    pub desired: Value,
    /// Content hash of the canonical JSON of `desired`.
    pub generation: String,
    /// The rollout touching the cluster, or `null`.
    pub rollout: Option<RolloutSummary>,
    /// Whether the constraints of the desired state hold, and what the
    /// node was held to when not; absent when it requires nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<ConstraintStatus>,
    /// Where and when this was read.
    pub source: Source,
}

/// What a node sees of an active rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSummary {
    /// The rollout id.
    pub id: String,
    /// Whether this node is released (has the rollout's patch).
    pub released: bool,
    /// The orchestrator's status.
    pub status: String,
}

/// Provenance of the document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `file`, `consul`, `etcd` or `zookeeper`.
    pub store: String,
    /// The store revision read, where the store has one.
    pub revision: Option<u64>,
    /// When it was read from the store (RFC 3339, UTC).
    pub fetched_at: String,
    /// True when served from the last-known-good cache.
    pub stale: bool,
    /// Age in seconds of the cached result, when stale.
    pub cache_age_s: Option<u64>,
}

impl AttributesDocument {
    /// The document for a fresh resolution.
    pub fn from_gated(
        gated: &Gated,
        store: StoreKind,
        revision: Option<u64>,
        fetched_at: String,
    ) -> Self {
        let mut doc = Self::from_resolution(&gated.resolution, store, revision, fetched_at);
        doc.convergent.constraints = gated.constraints.clone();
        doc
    }

    /// The document for a fresh resolution, without constraints.
    pub fn from_resolution(
        r: &Resolution,
        store: StoreKind,
        revision: Option<u64>,
        fetched_at: String,
    ) -> Self {
        AttributesDocument {
            convergent: NodeAttributes {
                cluster: r.cluster.clone(),
                node: r.node.clone(),
                state: r.state.clone(),
                desired: r.desired.clone(),
                generation: r.generation.clone(),
                rollout: r.rollout.as_ref().map(|d| RolloutSummary {
                    id: d.id.clone(),
                    released: d.released,
                    status: d.status.clone(),
                }),
                constraints: None,
                source: Source {
                    store: store.name().to_string(),
                    revision,
                    fetched_at,
                    stale: false,
                    cache_age_s: None,
                },
            },
        }
    }

    /// Pretty JSON with a final newline, as printed.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("attributes serialize");
        text.push('\n');
        text
    }

    /// Reads a document `attributes` wrote; anything else is bad data naming
    /// the file.
    pub fn parse(path: &Path, text: &str) -> Result<AttributesDocument> {
        let bad = |problem: String| Error::BadFile {
            path: path.to_path_buf(),
            problem,
        };
        let doc: AttributesDocument = serde_json::from_str(text).map_err(|e| {
            bad(format!(
                "not a convergent attributes document: {}",
                yaml_text::redact(&e.to_string())
            ))
        })?;
        if !is_generation(&doc.convergent.generation) {
            return Err(bad(format!(
                "not a convergent attributes document: generation {:?} is not 16 hex digits",
                doc.convergent.generation
            )));
        }
        Ok(doc)
    }
}
