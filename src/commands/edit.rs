//! `set` and `unset`: change a cluster's desired document, or one node's
//! override, with compare-and-set, the cluster schema checked, and the
//! change recorded in the cluster's history in the same transaction.

use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::{PreviewArgs, SetArgs, UnsetArgs};
use crate::commands::completion::{known_node_roots, names_in};
use crate::commands::Context;
use crate::document::{decode_value, display_path, parse_path, remove_path, set_path, Path};
use crate::error::{Error, Result};
use crate::history::{self, diff, Change, FieldChange};
use crate::layout::{check_name, NameKind};
use crate::output::{self, Format};
use crate::resolve::{ClusterInputs, Layer, LayerKind};
use crate::schema::{state_of, Schema};
use crate::update::update;

/// Runs `set`.
pub fn set(ctx: &Context, args: &SetArgs) -> Result<()> {
    let assignments = args
        .assignments
        .iter()
        .map(|a| parse_assignment(a))
        .collect::<Result<Vec<_>>>()?;
    let target = Target {
        cluster: &args.cluster,
        node: args.node.as_deref(),
        create: args.create,
        reason: args.reason.clone(),
        command: "set",
        preview: &args.preview,
    };
    let (changes, before) = edit(ctx, &target, |doc, schema| {
        for (path, value, text) in &assignments {
            // Where the schema says the key holds text, the text it is.
            let value = match schema {
                Some(s) if s.is_string(&display_path(path)) && !value.is_string() => {
                    Value::String(text.clone())
                }
                _ => value.clone(),
            };
            set_path(doc, path, value).map_err(|blocker| {
                Error::Usage(format!(
                    "cannot set {}: {} holds a value that is not a map",
                    display_path(path),
                    display_path(&blocker)
                ))
            })?;
        }
        Ok(())
    })?;
    // A new key next to one spelled almost alike is probably a typo.
    // Keys numbered on purpose (`k1`, `k11`) are not typos of each other.
    for c in changes.iter().filter(|c| c.from.is_none()) {
        let (parent, leaf) = c.path.rsplit_once('.').unwrap_or(("", &c.path));
        if leaf.chars().any(|ch| ch.is_ascii_digit()) {
            continue;
        }
        let parent_path: Vec<String> = match parent {
            "" => Vec::new(),
            p => p.split('.').map(str::to_string).collect(),
        };
        let siblings = before
            .as_ref()
            .and_then(|doc| crate::document::get_path(doc, &parent_path))
            .and_then(Value::as_object);
        if let Some(siblings) = siblings {
            if let Some(near) = crate::suggest::closest(leaf, siblings.keys().map(String::as_str)) {
                let near = if parent.is_empty() {
                    near.to_string()
                } else {
                    format!("{parent}.{near}")
                };
                crate::output::warn(&format!(
                    "convergent: warning: {}: {} is a new key; did you mean {near:?}?",
                    layout_key(ctx, &target),
                    c.path
                ));
            }
        }
    }
    // A string turned into a number is usually a version losing its
    // trailing zero (5.10 -> 5.1): say so.
    for c in &changes {
        if let (Some(Value::String(from)), Some(to @ Value::Number(_))) = (&c.from, &c.to) {
            let text = assignments
                .iter()
                .find(|(path, _, _)| display_path(path) == c.path)
                .map_or(to.to_string(), |(_, _, text)| text.clone());
            crate::output::warn(&format!(
                "convergent: warning: {}: {} was the string {from:?} and is now the number {to}; \
                 to keep it a string, quote it as JSON ({}='\"{text}\"'), or list {} under the schema's `strings`",
                layout_key(ctx, &target),
                c.path,
                c.path,
                c.path
            ));
        }
    }
    Ok(())
}

/// Runs `unset`.
pub fn unset(ctx: &Context, args: &UnsetArgs) -> Result<()> {
    let paths = args
        .keys
        .iter()
        .map(|k| parse_path(k).map_err(Error::Usage))
        .collect::<Result<Vec<Path>>>()?;
    let target = Target {
        cluster: &args.cluster,
        node: args.node.as_deref(),
        create: false,
        reason: args.reason.clone(),
        command: "unset",
        preview: &args.preview,
    };
    edit(ctx, &target, |doc, _| {
        if args.all {
            *doc = json!({});
        }
        for path in &paths {
            remove_path(doc, path);
        }
        Ok(())
    })
    .map(drop)
}

/// `; did you mean "web-09"?` from the nodes the cluster knows (reported,
/// overridden or static members). Read only when a name is wrong.
fn known_nodes_hint(ctx: &Context, cluster: &str, node: &str) -> String {
    let roots = known_node_roots(&ctx.layout(), cluster);
    let Ok(snapshot) = ctx.open_store().and_then(|s| s.read_trees(&roots)) else {
        return String::new();
    };
    let mut names: Vec<String> = Vec::new();
    for (root, entries) in roots.iter().zip(&snapshot.trees) {
        // A tree that cannot be read gives no hint; the others still do.
        names.extend(names_in(root, entries).unwrap_or_default());
    }
    crate::suggest::hint(node, names.iter().map(String::as_str))
}

/// The key of the document an edit changes.
fn layout_key(ctx: &Context, target: &Target) -> String {
    match target.node {
        Some(node) => ctx.layout().node_override(target.cluster, node),
        None => ctx.layout().desired(target.cluster),
    }
}

/// `KEY=VALUE`, the value JSON where valid, else a plain string; and the
/// value's text as given.
fn parse_assignment(text: &str) -> Result<(Path, Value, String)> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| Error::Usage(format!("{text:?} is not KEY=VALUE")))?;
    let path = parse_path(key).map_err(Error::Usage)?;
    let value_text = value;
    if value.is_empty() {
        return Err(Error::Usage(format!(
            "`{key}=` has no value: use `unset {key}` to remove it, or {key}='\"\"' for an empty string"
        )));
    }
    let value = decode_value(key, value.as_bytes()).map_err(|e| match e {
        Error::BadKey { problem, .. } => Error::Usage(format!("the value of {key}: {problem}")),
        other => other,
    })?;
    Ok((path, value, value_text.to_string()))
}

/// Which document an edit changes, and how it is recorded.
pub(super) struct Target<'a> {
    pub(super) cluster: &'a str,
    pub(super) node: Option<&'a str>,
    pub(super) create: bool,
    pub(super) reason: Option<String>,
    pub(super) command: &'static str,
    pub(super) preview: &'a PreviewArgs,
}

// Positions in the one read an edit makes; the node case adds the cluster's
// desired document at the end.
const TARGET: usize = 0;
const SCHEMA: usize = 1;
const HISTORY: usize = 2;
const DEFAULTS: usize = 3;
const ROLLOUT: usize = 4;
// The node case also reads whether the node was ever seen.
const OBSERVED: usize = 5;
const MEMBERS: usize = 6;

#[derive(Serialize)]
struct EditReport {
    key: String,
    changes: Vec<FieldChange>,
    /// The store's answer to the write was lost, and a re-read found the
    /// write (its history entry) in place.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    applied_after_lost_answer: bool,
    dry_run: bool,
}

pub(super) fn edit(
    ctx: &Context,
    target: &Target,
    apply: impl Fn(&mut Value, Option<&Schema>) -> Result<()>,
) -> Result<(Vec<FieldChange>, Option<Value>)> {
    let format = ctx.format(target.command, &[Format::Table, Format::Json, Format::Yaml])?;
    let cluster = target.cluster;
    check_name(NameKind::Cluster, cluster).map_err(Error::BadName)?;
    if let Some(node) = target.node {
        check_name(NameKind::Node, node).map_err(Error::BadName)?;
    }
    let layout = ctx.layout();
    let target_key = match target.node {
        Some(node) => layout.node_override(cluster, node),
        None => layout.desired(cluster),
    };
    let mut keys = vec![
        target_key.clone(),
        layout.schema(cluster),
        layout.history(cluster),
        layout.defaults(),
        layout.rollout(cluster),
    ];
    let desired = match target.node {
        Some(node) => {
            keys.push(layout.observed_node(cluster, node));
            keys.push(layout.members(cluster));
            keys.push(layout.desired(cluster));
            keys.len() - 1
        }
        None => TARGET,
    };

    let store = ctx.open_store()?;
    let mut changes = Vec::new();
    // The history entry of the last write tried, to recognise it if its
    // answer is lost and a re-read finds nothing left to do.
    let mut tried: Option<Value> = None;
    let mut applied_after_lost_answer = false;
    let mut before = None;
    update(store.as_ref(), &keys, |current| {
        let docs = &current.docs;
        if docs[desired].is_none() && docs[SCHEMA].is_none() && !target.create {
            return Err(Error::bad_key(
                layout.desired(cluster),
                format!("unknown cluster {cluster:?}: nothing is stored for it (check the name, or pass --create to start a new cluster)"),
            ));
        }
        if let (Some(node), None) = (target.node, &docs[TARGET]) {
            let reported = docs[OBSERVED].is_some();
            let member = docs[MEMBERS]
                .as_ref()
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().any(|n| n.as_str() == Some(node)));
            if !reported && !member && !target.create && target.command == "set" {
                return Err(Error::bad_key(
                    &target_key,
                    format!(
                        "node {node:?} of cluster {cluster} has never reported, is not a static member and has no override \
                         (check the name, or pass --create for a node that has not reported yet){}",
                        known_nodes_hint(ctx, cluster, node)
                    ),
                ));
            }
        }
        let old = docs[TARGET].clone();
        before = old.clone();
        let mut doc = match &old {
            None => json!({}),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(other) => {
                return Err(Error::bad_key(
                    &target_key,
                    format!("the document must be a map, found {other}"),
                ))
            }
        };
        let schema = docs[SCHEMA]
            .as_ref()
            .map(|d| Schema::from_document(&keys[SCHEMA], d))
            .transpose()?;
        apply(&mut doc, schema.as_ref())?;
        // An emptied node override is removed rather than kept as `{}`.
        let new = (target.node.is_none() || doc != json!({})).then_some(doc);
        if new == old {
            let landed = current.after_lost_answer
                && tried.as_ref().is_some_and(|entry| {
                    docs[HISTORY]
                        .as_ref()
                        .and_then(Value::as_array)
                        .is_some_and(|h| h.contains(entry))
                });
            if landed {
                applied_after_lost_answer = true;
            } else {
                changes.clear();
            }
            return Ok(None);
        }

        let new_state = match &new {
            Some(doc) => state_of(doc).map_err(|e| Error::bad_key(&target_key, e))?,
            None => None,
        };
        match (&schema, new_state) {
            (Some(schema), Some(to)) => {
                let from = match target.node {
                    None => old
                        .as_ref()
                        .and_then(|o| state_of(o).ok().flatten())
                        .map(str::to_string),
                    Some(node) => current_node_state(ctx, current, node, &keys)?,
                };
                schema
                    .check_transition(from.as_deref(), to)
                    .map_err(|e| Error::bad_key(&target_key, e))?;
            }
            (Some(_), None) if target.node.is_none() => {
                return Err(Error::bad_key(
                    &target_key,
                    "the cluster schema requires a `state`; it cannot be removed",
                ))
            }
            _ => {}
        }

        changes = diff(old.as_ref(), new.as_ref());
        if target.preview.dry_run {
            return Ok(None);
        }
        let change = Change::now(
            ctx.env,
            target.command,
            &target_key,
            changes.clone(),
            target.reason.clone(),
        );
        tried = serde_json::to_value(&change).ok();
        let history = history::append(docs[HISTORY].as_ref(), &keys[HISTORY], change)?;
        let mut written = docs.clone();
        written[TARGET] = new;
        written[HISTORY] = Some(history);
        Ok(Some(written))
    })?;

    let report = EditReport {
        key: target_key,
        changes,
        applied_after_lost_answer,
        dry_run: target.preview.dry_run,
    };
    match format {
        Format::Table if target.preview.diff => {
            let mut text = match report.changes.is_empty() {
                true => format!("{}: no change\n", report.key),
                false => history::diff_text(&report.key, &report.changes),
            };
            if report.dry_run {
                text.push_str("dry run: nothing was written\n");
            }
            output::print_text(&text)
        }
        Format::Table => output::print_text(&report.to_text()),
        format => output::print(&output::render(&report, format)),
    }?;
    Ok((report.changes, before))
}

/// The state node `node` resolves to now, before the edit.
fn current_node_state(
    ctx: &Context,
    current: &crate::update::Current,
    node: &str,
    keys: &[String],
) -> Result<Option<String>> {
    let layout = ctx.layout();
    let cluster_name = layout
        .relative(&keys[SCHEMA])
        .and_then(|r| r.split('/').nth(1))
        .unwrap_or_default()
        .to_string();
    let trees = &current.trees;
    let cluster = match ClusterInputs::from_trees(
        &layout,
        &cluster_name,
        &trees[DEFAULTS],
        &trees[SCHEMA],
        &trees[keys.len() - 1],
        &trees[ROLLOUT],
    ) {
        Ok(c) => c,
        Err(_) => return Ok(None), // a new cluster: nothing to move from
    };
    let node_override =
        Layer::from_entries(LayerKind::NodeOverride, &keys[TARGET], &trees[TARGET])?;
    Ok(cluster.resolve(node, node_override.as_ref())?.state)
}

impl EditReport {
    fn to_text(&self) -> String {
        if self.changes.is_empty() {
            return format!("{}: no change, nothing written\n", self.key);
        }
        if self.dry_run {
            let mut text = self.lines();
            text.push_str("dry run: nothing was written\n");
            return text;
        }
        self.lines()
    }

    fn lines(&self) -> String {
        let show = |v: &Option<Value>| v.as_ref().map_or("(unset)".to_string(), |v| v.to_string());
        self.changes
            .iter()
            .map(|c| {
                format!(
                    "{}: {} {} -> {}\n",
                    self.key,
                    c.path,
                    show(&c.from),
                    show(&c.to)
                )
            })
            .chain(self.applied_after_lost_answer.then(|| {
                format!(
                    "{}: applied (the store's answer was lost; a re-read shows the write in place)\n",
                    self.key
                )
            }))
            .collect()
    }
}
