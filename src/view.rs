//! The view as a whole, as a view file holds it: what it may contain, and how
//! it splits into the documents a key store keeps.
//!
//! ```yaml
//! convergent:                  # the prefix (several levels for a/b)
//!   defaults: {...}
//!   clusters:
//!     web:
//!       schema: {...}
//!       desired: {...}
//!       nodes: {web-07: {...}}
//!       history: [...]
//!   rollouts: {web: {...}}
//!   observed: {web: {web-01: {...}}}
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::constraints::{check_declared, DeclaredCluster};
use crate::document::{merged, Nulls};
use crate::error::Error;
use crate::layout::{check_name, Layout, NameKind, Prefix};
use crate::rollout::record::RolloutRecord;
use crate::rollout::state::{PlanProgress, RolloutState};
use crate::schema::{state_of, Schema};
use crate::yaml_text;

/// A view split into documents, with everything found wrong on the way.
#[derive(Debug, Default)]
pub struct ViewDocuments {
    /// Every document, by full key, in key order.
    pub documents: Vec<(String, Value)>,
    /// Problems, each naming its key; empty when the view is valid.
    pub problems: Vec<String>,
    /// Counts for a summary line.
    pub clusters: usize,
    /// Node overrides.
    pub node_overrides: usize,
    /// Rollouts.
    pub rollouts: usize,
}

/// Splits a whole view tree (top level = the prefix) into documents and
/// checks it: structure, names, schemas, states and rollout records.
pub fn split(tree: &Value, prefix: &Prefix) -> ViewDocuments {
    let layout = Layout::new(prefix);
    let mut out = ViewDocuments::default();
    let Some(root) = find_root(tree, prefix, &mut out.problems) else {
        return out;
    };

    // Clusters first: rollouts are checked against their schemas.
    let mut schemas: BTreeMap<String, Schema> = BTreeMap::new();
    let mut known_clusters = BTreeSet::new();
    if let Some(clusters) = root.get("clusters") {
        for (cluster, body) in out.children(&layout.clusters(), clusters, NameKind::Cluster) {
            known_clusters.insert(cluster.clone());
            out.cluster(&layout, &cluster, body, &mut schemas);
        }
    }
    for (key, value) in root {
        match key.as_str() {
            "clusters" => {}
            "defaults" => {
                out.document_map(&layout.defaults(), value);
            }
            "rollouts" => {
                for (cluster, record) in
                    out.children(&layout.key("rollouts"), value, NameKind::Cluster)
                {
                    out.rollout(&layout, &cluster, record, &schemas, &known_clusters);
                }
            }
            "observed" => {
                for (cluster, nodes) in
                    out.children(&layout.key("observed"), value, NameKind::Cluster)
                {
                    let at = layout.observed(&cluster);
                    for (node, report) in out.children(&at, nodes, NameKind::Node) {
                        out.document_map(&layout.observed_node(&cluster, &node), report);
                    }
                }
            }
            "plans" => {
                for (name, progress) in out.children(&layout.key("plans"), value, NameKind::Rollout) {
                    let key = layout.plan(&name);
                    if let Some(doc) = out.document_map(&key, progress) {
                        if let Err(e) = PlanProgress::from_document(&key, &doc) {
                            out.problems.push(keyed(e));
                        }
                    }
                }
            }
            "locks" => {} // held by running orchestrators; never imported or exported
            other => out.problems.push(format!(
                "{}: unknown key `{other}` (a view has defaults, clusters, rollouts, observed, plans){}",
                layout.key(other),
                crate::suggest::hint(other, ["defaults", "clusters", "rollouts", "observed", "plans"])
            )),
        }
    }
    out.problems
        .extend(check_declared(&declared_clusters(root, &layout)));
    out.documents.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Each cluster's standing and next desired document, as the view file
/// declares them, for the constraint checks.
fn declared_clusters(
    root: &serde_json::Map<String, Value>,
    layout: &Layout,
) -> BTreeMap<String, DeclaredCluster> {
    let defaults = root
        .get("defaults")
        .filter(|d| d.is_object())
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let mut out = BTreeMap::new();
    for (name, body) in root
        .get("clusters")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let desired = body.get("desired").filter(|d| d.is_object());
        if desired.is_none() && body.get("schema").is_none() {
            continue;
        }
        let standing = match desired {
            Some(d) => merged(&defaults, d, Nulls::Remove),
            None => defaults.clone(),
        };
        let next = root
            .get("rollouts")
            .and_then(|r| r.get(name))
            .and_then(|r| r.get("patch"))
            .filter(|p| p.is_object())
            .map(|patch| merged(&standing, patch, Nulls::Remove));
        out.insert(
            name.clone(),
            DeclaredCluster {
                key: layout.desired(name),
                standing,
                next,
            },
        );
    }
    out
}

/// A view file nested under the default prefix, read for another one: the
/// same view, moved under `prefix` (files name their prefix, so a fixture
/// or an export could not otherwise be imported under `--prefix`). A file
/// that has `prefix`'s own first segment, or other top-level keys, is left
/// as it is.
pub fn rebase(tree: Value, prefix: &Prefix) -> Value {
    let default = Prefix::default();
    let first = prefix.segments().next().unwrap_or_default().to_string();
    let Value::Object(map) = &tree else {
        return tree;
    };
    if *prefix == default || map.contains_key(&first) || map.len() != 1 {
        return tree;
    }
    let Some(view) = map.get(&default.to_string()) else {
        return tree;
    };
    prefix
        .segments()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .fold(view.clone(), |inner, segment| {
            Value::Object(Map::from_iter([(segment.to_string(), inner)]))
        })
}

/// Lays a view file's tree over a store's view tree: maps above the
/// documents merge, each document of the file replaces the store's whole.
/// What results is what the store holds after importing the file.
pub fn overlay(base: &mut Value, file: &Value, prefix: &Prefix) {
    fn walk(base: &mut Value, file: &Value, path: &mut Vec<String>, depth_of_prefix: usize) {
        let (Value::Object(base_map), Value::Object(file_map)) = (&mut *base, file) else {
            *base = file.clone();
            return;
        };
        for (key, value) in file_map {
            path.push(key.clone());
            let relative = path
                .get(depth_of_prefix..)
                .map(|p| p.join("/"))
                .unwrap_or_default();
            let slot = base_map.entry(key.clone()).or_insert(Value::Null);
            if path.len() > depth_of_prefix && Layout::is_document(&relative)
                || !slot.is_object()
                || !value.is_object()
            {
                *slot = value.clone();
            } else {
                walk(slot, value, path, depth_of_prefix);
            }
            path.pop();
        }
    }
    let depth = prefix.segments().count();
    walk(base, file, &mut Vec::new(), depth);
}

/// The map under the prefix; problems when the file is not a view under it.
fn find_root<'t>(
    tree: &'t Value,
    prefix: &Prefix,
    problems: &mut Vec<String>,
) -> Option<&'t Map<String, Value>> {
    let mut node = tree;
    let mut path = Vec::new();
    for segment in prefix.segments() {
        let Value::Object(map) = node else {
            problems.push(format!("{}: expected a map of keys", display(&path)));
            return None;
        };
        let Some(next) = map.get(segment) else {
            // Maybe not a view at all (`validate /etc/shadow`): only keys
            // that are plain names are shown, never arbitrary content.
            let names: Vec<String> = map
                .keys()
                .filter(|k| yaml_text::is_plain(k))
                .map(|k| format!("`{k}`"))
                .collect();
            let others = map.len() - names.len();
            let found = match (names.is_empty(), others) {
                (true, 0) => "it is empty".to_string(),
                (true, n) => format!("it has {n} top-level keys that are not names"),
                (false, 0) => format!("its keys: {}", names.join(", ")),
                (false, n) => format!("its keys: {} and {n} that are not names", names.join(", ")),
            };
            problems.push(format!(
                "the file has no `{}` key: it holds no view under the prefix `{prefix}` (is --prefix right? {found})",
                { let mut at = path.clone(); at.push(segment); at.join("/") }
            ));
            return None;
        };
        for other in map.keys().filter(|k| *k != segment) {
            let mut at = path.clone();
            at.push(other.as_str());
            problems.push(format!(
                "{}: key outside the prefix `{prefix}`",
                display(&at)
            ));
        }
        node = next;
        path.push(segment);
    }
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match node {
        Value::Object(map) => Some(map),
        Value::Null => Some(EMPTY.get_or_init(Map::new)),
        other => {
            problems.push(format!(
                "{prefix}: the view must be a map, found {}",
                if other.is_array() {
                    "a list"
                } else {
                    "a single value"
                }
            ));
            None
        }
    }
}

fn display(path: &[&str]) -> String {
    if path.is_empty() {
        "(top level)".into()
    } else {
        path.join("/")
    }
}

/// "KEY: problem" for an error about one key.
fn keyed(e: Error) -> String {
    match e {
        Error::BadKey { key, problem } => format!("{key}: {problem}"),
        other => other.to_string(),
    }
}

impl ViewDocuments {
    /// The named children of a map at `key`, names checked.
    fn children<'v>(
        &mut self,
        key: &str,
        value: &'v Value,
        kind: NameKind,
    ) -> Vec<(String, &'v Value)> {
        match value {
            Value::Null => Vec::new(),
            Value::Object(map) => map
                .iter()
                .filter(|(name, _)| match check_name(kind, name) {
                    Ok(()) => true,
                    Err(e) => {
                        self.problems.push(format!("{key}: {e}"));
                        false
                    }
                })
                .map(|(name, v)| (name.clone(), v))
                .collect(),
            other => {
                self.problems
                    .push(format!("{key}: expected a map, found {other}"));
                Vec::new()
            }
        }
    }

    /// Records a document that must be a map; `null` means absent.
    fn document_map(&mut self, key: &str, value: &Value) -> Option<Value> {
        match value {
            Value::Null => None,
            Value::Object(_) => {
                self.documents.push((key.to_string(), value.clone()));
                Some(value.clone())
            }
            other => {
                self.problems
                    .push(format!("{key}: expected a map, found {other}"));
                None
            }
        }
    }

    /// Values at the keys the schema says are strings must be strings.
    fn check_strings(&mut self, key: &str, doc: &Value, schema: Option<&Schema>) {
        for path in schema.map(|s| s.strings.as_slice()).unwrap_or_default() {
            let at: Vec<String> = path.split('.').map(str::to_string).collect();
            match crate::document::get_path(doc, &at) {
                None | Some(Value::String(_)) => {}
                Some(other) => self.problems.push(format!(
                    "{key}: {path} must be a string (the cluster schema lists it under `strings`), found {other}"
                )),
            }
        }
    }

    fn check_state(&mut self, key: &str, doc: &Value, schema: Option<&Schema>) -> Option<String> {
        match state_of(doc) {
            Err(e) => {
                self.problems.push(format!("{key}: {e}"));
                None
            }
            Ok(Some(state)) => {
                if let Some(Err(e)) = schema.map(|s| s.check_state(state)) {
                    self.problems.push(format!("{key}: {e}"));
                }
                Some(state.to_string())
            }
            Ok(None) => None,
        }
    }

    fn cluster(
        &mut self,
        layout: &Layout,
        cluster: &str,
        body: &Value,
        schemas: &mut BTreeMap<String, Schema>,
    ) {
        let at = layout.key(&format!("clusters/{cluster}"));
        let Value::Object(parts) = body else {
            self.problems.push(format!(
                "{at}: expected a map with desired, schema, nodes, found {body}"
            ));
            return;
        };
        self.clusters += 1;
        let schema = match parts.get("schema") {
            None | Some(Value::Null) => None,
            Some(doc) => {
                let key = layout.schema(cluster);
                self.documents.push((key.clone(), doc.clone()));
                match Schema::from_document(&key, doc) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.problems.push(keyed(e));
                        None
                    }
                }
            }
        };
        let desired = parts
            .get("desired")
            .and_then(|d| self.document_map(&layout.desired(cluster), d));
        match &desired {
            Some(doc) => {
                self.check_strings(&layout.desired(cluster), doc, schema.as_ref());
                let state = self.check_state(&layout.desired(cluster), doc, schema.as_ref());
                if state.is_none() && schema.is_some() {
                    self.problems.push(format!(
                        "{}: the cluster schema requires a `state`",
                        layout.desired(cluster)
                    ));
                }
            }
            None if !parts.contains_key("schema") && !parts.contains_key("desired") => {
                self.problems.push(format!(
                    "{at}: the cluster has neither a desired document nor a schema"
                ))
            }
            None => {}
        }
        if let Some(nodes) = parts.get("nodes") {
            for (node, doc) in self.children(&layout.nodes(cluster), nodes, NameKind::Node) {
                let key = layout.node_override(cluster, &node);
                if let Some(doc) = self.document_map(&key, doc) {
                    self.node_overrides += 1;
                    self.check_strings(&key, &doc, schema.as_ref());
                    self.check_state(&key, &doc, schema.as_ref());
                }
            }
        }
        match parts.get("members") {
            None | Some(Value::Null) => {}
            Some(Value::Array(names)) => {
                let key = layout.members(cluster);
                for name in names {
                    match name.as_str().map(|n| check_name(NameKind::Node, n)) {
                        Some(Ok(())) => {}
                        Some(Err(e)) => self.problems.push(format!("{key}: {e}")),
                        None => self
                            .problems
                            .push(format!("{key}: {name} is not a node name")),
                    }
                }
                self.documents.push((key, Value::Array(names.clone())));
            }
            Some(other) => self.problems.push(format!(
                "{}: the members must be a list of node names, found {other}",
                layout.members(cluster)
            )),
        }
        match parts.get("history") {
            None | Some(Value::Null) => {}
            Some(list @ Value::Array(_)) => {
                self.documents.push((layout.history(cluster), list.clone()))
            }
            Some(other) => self.problems.push(format!(
                "{}: the history must be a list, found {other}",
                layout.history(cluster)
            )),
        }
        const PARTS: [&str; 5] = ["desired", "schema", "nodes", "members", "history"];
        for other in parts.keys().filter(|k| !PARTS.contains(&k.as_str())) {
            self.problems.push(format!(
                "{at}/{other}: unknown key (a cluster has {}){}",
                PARTS.join(", "),
                crate::suggest::hint(other, PARTS)
            ));
        }
        if let Some(s) = schema {
            schemas.insert(cluster.to_string(), s);
        }
    }

    fn rollout(
        &mut self,
        layout: &Layout,
        cluster: &str,
        record: &Value,
        schemas: &BTreeMap<String, Schema>,
        known: &BTreeSet<String>,
    ) {
        let key = layout.rollout(cluster);
        if record.is_null() {
            return;
        }
        self.documents.push((key.clone(), record.clone()));
        self.rollouts += 1;
        if !known.contains(cluster) {
            self.problems
                .push(format!("{key}: a rollout of unknown cluster {cluster:?}"));
        }
        match RolloutRecord::from_document(&key, record) {
            Ok(r) => {
                self.check_state(
                    &format!("{key} (patch)"),
                    &Value::Object(r.patch),
                    schemas.get(cluster),
                );
                // Nodes would obey a record that only has what they read, but
                // `rollout status`, `pause` and `rollback` could not handle
                // it: only what the orchestrator writes gets in.
                if let Err(e) = RolloutState::from_document(&key, record) {
                    self.problems.push(format!(
                        "{} (write rollouts with `convergent rollout run PLAN`, or export one from a store where it ran)",
                        keyed(e)
                    ));
                }
            }
            Err(e) => self.problems.push(keyed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A rollout record as the orchestrator writes it.
    fn orchestrator_record() -> Value {
        json!({"id": "r1", "status": "running", "threshold": 0.5, "patch": {"state": "off"},
               "plan": "r", "step": 0, "strategy": {"canary": 0, "batch": "100%", "pause": "0s", "max_failed": 0}})
    }

    #[test]
    fn a_rollout_record_nodes_could_read_but_the_orchestrator_cannot_is_refused() {
        let v = split_default(json!({"convergent": {
            "clusters": {"web": {"desired": {"state": "on"}}},
            "rollouts": {"web": {"id": "r1", "status": "running", "threshold": 0.5, "patch": {"v": 1}}},
            "plans": {"p": {"name": "p"}},
        }}));
        let all = v.problems.join("\n");
        assert!(
            all.contains("convergent/rollouts/web: not a rollout record the orchestrator wrote: missing field `plan`")
                && all.contains("rollout run PLAN")
                && all.contains("convergent/plans/p: not a plan record"),
            "{all}"
        );
    }

    fn split_default(tree: Value) -> ViewDocuments {
        split(&tree, &Prefix::default())
    }

    #[test]
    fn a_valid_view_splits_into_documents() {
        let v = split_default(json!({"convergent": {
            "defaults": {"log_level": "info"},
            "clusters": {"web": {
                "schema": {"states": ["off", "converged"]},
                "desired": {"state": "converged"},
                "nodes": {"web-07": {"state": "off"}},
            }},
            "rollouts": {"web": orchestrator_record()},
            "locks": {"anything": 1},
        }}));
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let keys: Vec<&str> = v.documents.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "convergent/clusters/web/desired",
                "convergent/clusters/web/nodes/web-07",
                "convergent/clusters/web/schema",
                "convergent/defaults",
                "convergent/rollouts/web",
            ]
        );
        assert_eq!((v.clusters, v.node_overrides, v.rollouts), (1, 1, 1));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let v = split_default(json!({"convergent": {
            "clusters": {
                "web": {"schema": {"states": ["off"]}, "desired": {"state": "on"}, "nodes": {"bad/name": {}, "n1": {"state": "of"}}, "desird": {}},
                "db": {"nodes": {}},
            },
            "rollouts": {"cache": {"id": "r", "threshold": 2}},
            "extra": 1,
        }, "other": {}}));
        let all = v.problems.join("\n");
        for needle in [
            "other: key outside the prefix",
            "convergent/clusters/web/desired: state \"on\" is not allowed",
            "convergent/clusters/web/nodes: invalid node name \"bad/name\"",
            "convergent/clusters/web/nodes/n1: state \"of\"",
            "convergent/clusters/web/desird: unknown key",
            "convergent/clusters/db: the cluster has neither",
            "convergent/rollouts/cache: a rollout of unknown cluster",
            "convergent/rollouts/cache: `threshold`",
            "convergent/extra: unknown key",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }

    #[test]
    fn overlay_replaces_documents_and_merges_above_them() {
        let mut store = json!({"convergent": {"clusters": {"web": {"desired": {"state": "on", "v": 1}, "nodes": {"a": {"x": 1}}}}}});
        let file = json!({"convergent": {"clusters": {"web": {"desired": {"state": "off"}, "members": ["a"], "nodes": {"b": {"y": 2}}}}}});
        overlay(&mut store, &file, &Prefix::default());
        assert_eq!(
            store,
            json!({"convergent": {"clusters": {"web": {
                "desired": {"state": "off"},
                "members": ["a"],
                "nodes": {"a": {"x": 1}, "b": {"y": 2}}
            }}}})
        );
    }

    #[test]
    fn a_file_without_the_prefix_says_so() {
        let v = split_default(json!({"app": {}}));
        assert!(
            v.problems.iter().any(|p| p.contains("no `convergent` key")),
            "{:?}",
            v.problems
        );
        let v = split(
            &json!({"a": {"b": {"defaults": {}}}}),
            &"a/b".parse().unwrap(),
        );
        assert!(v.problems.is_empty());
        assert_eq!(v.documents[0].0, "a/b/defaults");
    }
}
