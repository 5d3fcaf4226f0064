//! The fleet of one cluster: each member's desired generation, computed with
//! the resolver `attributes` uses, next to what the member last reported.
//!
//! Members are the nodes that ever reported plus the cluster's static
//! members (`P/clusters/C/members`). A member is
//! - **converged** when its last report is a success at its desired generation,
//! - **failed** when its last report is a failure,
//! - **pending** when it reported success at another generation,
//! - **absent** when it has not reported within the member TTL (or never):
//!   it blocks nothing and converges when it returns.
//!
//! Everything is read in one call to the store, so a fleet of 10,000 nodes is
//! one range read of `P/observed/C` (and one of the overrides) on etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::clock::age_seconds;
use crate::document::{fold, Sourced};
use crate::error::{Error, Result};
use crate::health::Health;
use crate::layout::{check_name, Layout, NameKind};
use crate::report::{ObservedReport, ReportStatus};
use crate::resolve::{ClusterInputs, Layer, LayerKind, Resolution};
use crate::store::{Entry, Store};

/// Where a member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Reported success at its desired generation.
    Converged,
    /// Reported success at another generation: not there yet.
    Pending,
    /// Its last run failed.
    Failed,
    /// No report within the member TTL.
    Absent,
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberState::Converged => "converged",
            MemberState::Pending => "pending",
            MemberState::Failed => "failed",
            MemberState::Absent => "absent",
        })
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    /// The node.
    pub node: String,
    /// Where it stands.
    pub state: MemberState,
    /// The `state` of its desired document.
    pub desired_state: Option<String>,
    /// The generation it should converge to.
    pub desired_generation: String,
    /// The generation it last reported, if any.
    pub observed_generation: Option<String>,
    /// How its last run ended, if it reported.
    pub observed_status: Option<ReportStatus>,
    /// Seconds since its last report.
    pub checkin_age_s: Option<u64>,
    /// When it last reported (RFC 3339), as the node wrote it.
    pub reported_at: Option<String>,
    /// Whether it is released in the active rollout (`None`: no rollout).
    pub released: Option<bool>,
    /// Listed in the cluster's static members.
    pub static_member: bool,
    /// The message of its last report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The desired `state` its last report says it converged to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_state: Option<String>,
    /// The desired `version` its last report says it converged to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_version: Option<String>,
    /// Its health checks at the generation it reported, when it ran any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// How a member's health stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Its checks passed at its last look.
    Healthy,
    /// A check failed at its last look.
    Unhealthy,
    /// It reported no health (a failed or absent node, or one that has not
    /// run checks at this generation).
    Unknown,
}

impl Member {
    /// Its health as of its last look; only a present member that reported
    /// success has any.
    pub fn health_state(&self) -> HealthState {
        match (&self.health, self.state) {
            (_, MemberState::Absent | MemberState::Failed) => HealthState::Unknown,
            (Some(h), _) if h.healthy => HealthState::Healthy,
            (Some(_), _) => HealthState::Unhealthy,
            (None, _) => HealthState::Unknown,
        }
    }
}

/// Counts of present members by health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HealthCounts {
    pub healthy: usize,
    pub unhealthy: usize,
    pub unknown: usize,
}

/// Counts of members by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub converged: usize,
    pub pending: usize,
    pub failed: usize,
    pub absent: usize,
}

impl Counts {
    /// Members that reported within the TTL.
    pub fn present(&self) -> usize {
        self.converged + self.pending + self.failed
    }

    /// All members.
    pub fn total(&self) -> usize {
        self.present() + self.absent
    }
}

/// One cluster's fleet, as read at one moment.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The cluster's layers.
    pub inputs: ClusterInputs,
    /// Every member, by name.
    pub members: Vec<Member>,
    /// Keys that could not be taken into account, each with why.
    pub problems: Vec<String>,
    /// The rollout record as stored (the orchestrator's view of it).
    pub rollout_doc: Option<Value>,
    /// The store revision of the read, where the store has one.
    pub revision: Option<u64>,
}

/// The trees a fleet read covers, in this order.
fn fleet_roots(layout: &Layout, cluster: &str) -> Vec<String> {
    vec![
        layout.defaults(),
        layout.schema(cluster),
        layout.desired(cluster),
        layout.rollout(cluster),
        layout.nodes(cluster),
        layout.members(cluster),
        layout.observed(cluster),
    ]
}

impl Fleet {
    /// Reads the cluster's fleet in one call to the store.
    pub fn read(
        store: &dyn Store,
        layout: &Layout,
        cluster: &str,
        member_ttl: Duration,
        now: SystemTime,
    ) -> Result<Fleet> {
        check_name(NameKind::Cluster, cluster).map_err(Error::BadName)?;
        let snapshot = store.read_trees(&fleet_roots(layout, cluster))?;
        let [defaults, schema, desired, rollout, nodes, members, observed]: [Vec<Entry>; 7] =
            snapshot.trees.try_into().map_err(|_| Error::Unavailable {
                store: store.describe(),
                reason: "the store answered a different number of trees than asked".into(),
            })?;
        let inputs =
            ClusterInputs::from_trees(layout, cluster, &defaults, &schema, &desired, &rollout)?;
        let rollout_doc = fold(&layout.rollout(cluster), &rollout)?.map(|s| s.doc);
        let mut problems = Vec::new();

        let overrides = Fleet::by_node(&layout.nodes(cluster), &nodes, &mut problems)?;
        let reports = Fleet::reports_by_node(&layout.observed(cluster), &observed, &mut problems)?;
        let static_members = Fleet::static_members(layout, cluster, &members, &mut problems)?;

        let names: BTreeSet<&String> = reports.keys().chain(static_members.iter()).collect();
        let mut resolved = SharedResolutions::default();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let override_layer = match overrides.get(name) {
                Some(doc) if doc.doc.is_object() => Some(Layer {
                    kind: LayerKind::NodeOverride,
                    key: layout.node_override(cluster, name),
                    doc: doc.clone(),
                }),
                Some(_) => {
                    problems.push(format!(
                        "{}: a node override must be a map",
                        layout.node_override(cluster, name)
                    ));
                    continue;
                }
                None => None,
            };
            let released = inputs.rollout_decision(name).map(|d| d.released);
            let desired = match resolved.get(&inputs, name, override_layer.as_ref(), released) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            let report = match reports.get(name).cloned() {
                Some(Ok(report)) => Some(report),
                Some(Err(why)) => {
                    problems.push(format!("{}: {why}", layout.observed_node(cluster, name)));
                    None
                }
                None => None,
            };
            out.push(Member::new(
                name,
                desired,
                released,
                report,
                static_members.contains(name),
                member_ttl,
                now,
            ));
        }
        Ok(Fleet {
            inputs,
            members: out,
            problems,
            rollout_doc,
            revision: snapshot.revision,
        })
    }

    /// Splits a tree of per-node documents (`…/nodes/N`, `…/observed/C/N`)
    /// into one document per valid node name. Each node's keys are folded on
    /// their own: a fleet of 10,000 is 10,000 small folds, not one big fold
    /// split again (which cost more than everything else `status` does).
    fn by_node(
        root: &str,
        entries: &[Entry],
        problems: &mut Vec<String>,
    ) -> Result<BTreeMap<String, Sourced<String>>> {
        let Some(groups) = Fleet::node_groups(root, entries, problems) else {
            return Fleet::by_node_of_tree(root, entries, problems);
        };
        let mut out = BTreeMap::new();
        for (name, group) in groups {
            if let Some(doc) = fold(&format!("{root}/{name}"), group)? {
                out.insert(name, doc);
            }
        }
        Ok(out)
    }

    /// The nodes' reports under `root`, each read straight from its JSON when
    /// it is one value (the way `report` writes it), else folded first.
    /// Every node's report under `root` (`P/observed/C`), by node name;
    /// one that does not parse is kept as the reason why.
    pub fn reports_by_node(
        root: &str,
        entries: &[Entry],
        problems: &mut Vec<String>,
    ) -> Result<BTreeMap<String, std::result::Result<ObservedReport, String>>> {
        let read_doc = |doc: &Sourced<String>| ObservedReport::from_document(&doc.doc);
        let Some(groups) = Fleet::node_groups(root, entries, problems) else {
            let docs = Fleet::by_node_of_tree(root, entries, problems)?;
            return Ok(docs.into_iter().map(|(n, d)| (n, read_doc(&d))).collect());
        };
        let mut out = BTreeMap::new();
        for (name, group) in groups {
            let key = format!("{root}/{name}");
            let report = match group.as_slice() {
                [only] if only.key == key => ObservedReport::from_json(&only.value),
                _ => match fold(&key, group)? {
                    Some(doc) => read_doc(&doc),
                    None => continue,
                },
            };
            out.insert(name, report);
        }
        Ok(out)
    }

    /// The entries under `root`, grouped by the node name after `root/`;
    /// `None` when a document sits at `root` itself (every node in one
    /// value), which only a fold of the whole tree can split.
    fn node_groups<'e>(
        root: &str,
        entries: &'e [Entry],
        problems: &mut Vec<String>,
    ) -> Option<BTreeMap<String, Vec<&'e Entry>>> {
        if entries.iter().any(|e| e.key == root) {
            return None;
        }
        let mut groups: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        for entry in entries {
            let Some(rest) = entry
                .key
                .strip_prefix(root)
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            let name = rest.split('/').next().unwrap_or_default();
            groups.entry(name).or_default().push(entry);
        }
        let mut out = BTreeMap::new();
        for (name, group) in groups {
            // A folder marker (`root/`, as Consul's UI writes) holds nothing.
            let marker = group
                .iter()
                .all(|e| e.value.iter().all(u8::is_ascii_whitespace));
            if name.is_empty() && marker {
                continue;
            }
            match check_name(NameKind::Node, name) {
                Ok(()) => {
                    out.insert(name.to_string(), group);
                }
                Err(e) => problems.push(format!("{root}: {e}")),
            }
        }
        Some(out)
    }

    fn by_node_of_tree(
        root: &str,
        entries: &[Entry],
        problems: &mut Vec<String>,
    ) -> Result<BTreeMap<String, Sourced<String>>> {
        let Some(tree) = fold(root, entries)? else {
            return Ok(BTreeMap::new());
        };
        let Value::Object(map) = &tree.doc else {
            return Err(Error::bad_key(root, "expected a map of node names"));
        };
        let mut out = BTreeMap::new();
        for name in map.keys() {
            match check_name(NameKind::Node, name) {
                Ok(()) => {
                    if let Some(doc) = tree.child(name) {
                        out.insert(name.clone(), doc);
                    }
                }
                Err(e) => problems.push(format!("{root}: {e}")),
            }
        }
        Ok(out)
    }

    fn static_members(
        layout: &Layout,
        cluster: &str,
        entries: &[Entry],
        problems: &mut Vec<String>,
    ) -> Result<BTreeSet<String>> {
        let key = layout.members(cluster);
        let Some(list) = fold(&key, entries)? else {
            return Ok(BTreeSet::new());
        };
        let Value::Array(names) = list.doc else {
            return Err(Error::bad_key(
                &key,
                "the members must be a list of node names",
            ));
        };
        let mut out = BTreeSet::new();
        for name in names {
            match name.as_str() {
                Some(n) => match check_name(NameKind::Node, n) {
                    Ok(()) => {
                        out.insert(n.to_string());
                    }
                    Err(e) => problems.push(format!("{key}: {e}")),
                },
                None => problems.push(format!("{key}: {name} is not a node name")),
            }
        }
        Ok(out)
    }

    /// The members a rollout batches: present ones and static ones.
    pub fn batch_members(&self) -> Vec<&Member> {
        self.members
            .iter()
            .filter(|m| m.state != MemberState::Absent || m.static_member)
            .collect()
    }

    /// Counts of members by state.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for m in &self.members {
            match m.state {
                MemberState::Converged => c.converged += 1,
                MemberState::Pending => c.pending += 1,
                MemberState::Failed => c.failed += 1,
                MemberState::Absent => c.absent += 1,
            }
        }
        c
    }

    /// Counts of present members by health.
    pub fn health_counts(&self) -> HealthCounts {
        let mut c = HealthCounts::default();
        for m in self
            .members
            .iter()
            .filter(|m| m.state != MemberState::Absent)
        {
            match m.health_state() {
                HealthState::Healthy => c.healthy += 1,
                HealthState::Unhealthy => c.unhealthy += 1,
                HealthState::Unknown => c.unknown += 1,
            }
        }
        c
    }
}

impl Member {
    fn new(
        node: &str,
        desired: Desired,
        released: Option<bool>,
        report: Option<ObservedReport>,
        static_member: bool,
        member_ttl: Duration,
        now: SystemTime,
    ) -> Member {
        let age = report
            .as_ref()
            .and_then(|r| r.reported_time().ok())
            .map(|t| age_seconds(t, now));
        let state = match (&report, age) {
            (Some(r), Some(age)) if age <= member_ttl.as_secs() => match r.status {
                ReportStatus::Failure => MemberState::Failed,
                ReportStatus::Success if r.generation == desired.generation => {
                    MemberState::Converged
                }
                ReportStatus::Success => MemberState::Pending,
            },
            _ => MemberState::Absent,
        };
        Member {
            node: node.to_string(),
            state,
            desired_state: desired.state,
            desired_generation: desired.generation,
            observed_generation: report.as_ref().map(|r| r.generation.clone()),
            observed_status: report.as_ref().map(|r| r.status),
            checkin_age_s: age,
            reported_at: report.as_ref().map(|r| r.reported_at.clone()),
            released,
            static_member,
            observed_state: report.as_ref().and_then(|r| r.state.clone()),
            observed_version: report.as_ref().and_then(|r| r.version.clone()),
            health: report
                .as_ref()
                .filter(|r| r.status == ReportStatus::Success)
                .and_then(|r| r.health.clone()),
            message: report.and_then(|r| r.message),
        }
    }
}

/// What a member should converge to.
#[derive(Clone, Debug)]
struct Desired {
    generation: String,
    state: Option<String>,
}

impl From<Resolution> for Desired {
    fn from(r: Resolution) -> Desired {
        Desired {
            generation: r.generation,
            state: r.state,
        }
    }
}

/// Nodes without an override resolve alike, except for whether the rollout
/// released them: two resolutions serve them all.
#[derive(Default)]
struct SharedResolutions {
    by_release: [Option<Desired>; 2],
}

impl SharedResolutions {
    fn get(
        &mut self,
        inputs: &ClusterInputs,
        node: &str,
        node_override: Option<&Layer>,
        released: Option<bool>,
    ) -> Result<Desired> {
        if node_override.is_some() {
            return inputs.resolve(node, node_override).map(Desired::from);
        }
        let slot = &mut self.by_release[usize::from(released == Some(true))];
        if let Some(d) = slot {
            return Ok(d.clone());
        }
        let d = Desired::from(inputs.resolve(node, None)?);
        *slot = Some(d.clone());
        Ok(d)
    }
}
