//! `explain`: every resolved value with the layer and store key that set it,
//! what it overrides, what was removed, why the node is or is not released in
//! a rollout, and who last changed the cluster.

use serde::Serialize;
use serde_json::Value;

use crate::cli::ExplainArgs;
use crate::clock::now_rfc3339;
use crate::commands::Context;
use crate::compatible::resolve_compatible;
use crate::constraints::ConstraintStatus;
use crate::document::{display_path, fold, get_path, leaves, parse_path, Path};
use crate::error::{Error, Result};
use crate::fleet::{Fleet, Member};
use crate::health::{one_line, CheckSource};
use crate::history::{self, Change};
use crate::output::{self, columns, Format};
use crate::resolve::{read_node_inputs, Layer, LayerKind, NodeInputs, Resolution};
use crate::rollout::rank::rank;
use crate::rollout::standing::{gate_state, hold_reason, HealthGate};
use crate::rollout::state::RolloutState;
use crate::store::Store;
use std::time::SystemTime;

/// How many recent changes `explain` shows.
const RECENT_CHANGES: usize = 5;

#[derive(Serialize)]
struct Explanation {
    cluster: String,
    node: String,
    state: Option<String>,
    generation: String,
    store: String,
    revision: Option<u64>,
    fetched_at: String,
    rollout: Option<RolloutExplanation>,
    constraints: Option<ConstraintStatus>,
    values: Vec<ValueExplanation>,
    removed: Vec<Removal>,
    recent_changes: Vec<Change>,
    check_in: Option<CheckIn>,
    /// Why the check-in could not be shown: it reads the whole fleet, so
    /// another node's broken document must not hide this node's explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    check_in_unreadable: Option<String>,
}

/// What the node last reported, and whether that holds a rollout's batch.
#[derive(Serialize)]
struct CheckIn {
    member: Member,
    /// Its last report is for the generation resolved above.
    at_desired_generation: bool,
    /// Why it holds (or failed) the latest batch of the rollout, if it does.
    holds_batch: Option<String>,
}

#[derive(Serialize)]
struct RolloutExplanation {
    id: String,
    status: String,
    rank: f64,
    threshold: f64,
    released: bool,
    reason: String,
    /// The patch, applied to this node or waiting for it.
    patch: Value,
}

#[derive(Serialize)]
struct ValueExplanation {
    key: String,
    value: Value,
    layer: LayerKind,
    store_key: String,
    overrides: Vec<Shadowed>,
}

#[derive(Serialize)]
struct Shadowed {
    layer: LayerKind,
    store_key: String,
    value: Value,
}

#[derive(Serialize)]
struct Removal {
    key: String,
    removed_by: LayerKind,
    store_key: String,
    was: Shadowed,
}

/// Runs `explain`.
pub fn run(ctx: &Context, args: &ExplainArgs) -> Result<()> {
    let format = ctx.format("explain", &[Format::Table, Format::Json, Format::Yaml])?;
    let (cluster, node) = ctx.node_target(&args.target)?;
    let filter = args
        .key
        .as_deref()
        .map(parse_path)
        .transpose()
        .map_err(Error::Usage)?;
    let store = ctx.open_store()?;
    let layout = ctx.layout();
    let fetched_at = now_rfc3339();
    let inputs = read_node_inputs(store.as_ref(), &layout, &cluster, &node)?;
    let resolution = inputs
        .cluster
        .resolve(&node, inputs.node_override.as_ref())?;
    // What the node applies, which differs from its desired state while
    // the constraints of that state are not met.
    let gated = resolve_compatible(
        store.as_ref(),
        &layout,
        &inputs,
        &node,
        ctx.settings.member_ttl,
        SystemTime::now(),
    )?;
    // A second read, for people only: attributes never reads the history.
    let history_key = layout.history(&cluster);
    let (entries, _) = store.read_tree(&history_key)?;
    let history = fold(&history_key, &entries)?.map(|s| s.doc);
    let watched = [
        layout.desired(&cluster),
        layout.node_override(&cluster, &node),
    ];
    let recent_changes: Vec<Change> = history::entries(history.as_ref())
        .into_iter()
        .rev()
        .filter(|c| watched.contains(&c.key))
        .take(RECENT_CHANGES)
        .collect();

    let (cluster_name, node_name) = (cluster.clone(), node.clone());
    let (check_in, check_in_unreadable) =
        match check_in(ctx, store.as_ref(), &cluster_name, &node_name) {
            Ok(c) => (c, None),
            Err(e) => (None, Some(e.to_string())),
        };
    let explanation = Explanation {
        cluster,
        node,
        state: gated.resolution.state.clone(),
        generation: gated.resolution.generation.clone(),
        store: store.describe(),
        revision: inputs.revision,
        fetched_at,
        rollout: rollout_explanation(&inputs, &resolution),
        constraints: gated.constraints,
        values: values(&inputs, &resolution, filter.as_deref()),
        removed: removals(&inputs, &resolution, filter.as_deref()),
        recent_changes,
        check_in,
        check_in_unreadable,
    };
    match format {
        Format::Table => output::print_text(&explanation.to_text(filter.as_deref())),
        format => output::print(&output::render(&explanation, format)),
    }
}

/// The layers applied to this node, lowest first.
fn applied<'a>(inputs: &'a NodeInputs, resolution: &Resolution) -> Vec<&'a Layer> {
    let released = resolution.rollout.as_ref().is_some_and(|d| d.released);
    inputs
        .cluster
        .layers(inputs.node_override.as_ref())
        .into_iter()
        .filter(|l| l.kind != LayerKind::RolloutPatch || released)
        .collect()
}

fn within(path: &[String], filter: Option<&[String]>) -> bool {
    filter.is_none_or(|f| path.starts_with(f))
}

fn source_key(layer: &Layer, path: &Path) -> String {
    layer
        .doc
        .sources
        .get(path)
        .cloned()
        .unwrap_or_else(|| layer.key.clone())
}

fn values(
    inputs: &NodeInputs,
    resolution: &Resolution,
    filter: Option<&[String]>,
) -> Vec<ValueExplanation> {
    let layers = applied(inputs, resolution);
    resolution
        .leaves()
        .into_iter()
        .filter(|(path, _, _)| within(path, filter))
        .map(|(path, value, origin)| {
            let (layer, store_key) = origin.map_or((LayerKind::Defaults, String::new()), |o| {
                (o.layer, o.key.clone())
            });
            let overrides = layers
                .iter()
                .filter(|l| l.kind < layer)
                .filter_map(|l| {
                    let below = get_path(&l.doc.doc, &path)?;
                    let is_leaf = below.as_object().is_none_or(|m| m.is_empty());
                    (is_leaf && !below.is_null()).then(|| Shadowed {
                        layer: l.kind,
                        store_key: source_key(l, &path),
                        value: below.clone(),
                    })
                })
                .collect();
            ValueExplanation {
                key: display_path(&path),
                value: value.clone(),
                layer,
                store_key,
                overrides,
            }
        })
        .collect()
}

fn removals(
    inputs: &NodeInputs,
    resolution: &Resolution,
    filter: Option<&[String]>,
) -> Vec<Removal> {
    let layers = applied(inputs, resolution);
    let mut out = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        for (path, value) in leaves(&layer.doc.doc) {
            if !value.is_null()
                || !within(&path, filter)
                || get_path(&resolution.desired, &path).is_some()
            {
                continue;
            }
            let was = layers[..i].iter().rev().find_map(|below| {
                let v = get_path(&below.doc.doc, &path).filter(|v| !v.is_null())?;
                Some(Shadowed {
                    layer: below.kind,
                    store_key: source_key(below, &path),
                    value: v.clone(),
                })
            });
            if let Some(was) = was {
                out.push(Removal {
                    key: display_path(&path),
                    removed_by: layer.kind,
                    store_key: source_key(layer, &path),
                    was,
                });
            }
        }
    }
    out
}

fn rollout_explanation(inputs: &NodeInputs, resolution: &Resolution) -> Option<RolloutExplanation> {
    let decision = resolution.rollout.as_ref()?;
    let rollout = inputs.cluster.rollout.as_ref()?;
    let comparison = if decision.released { "<=" } else { ">" };
    Some(RolloutExplanation {
        id: decision.id.clone(),
        status: decision.status.clone(),
        rank: decision.rank,
        threshold: decision.threshold,
        released: decision.released,
        reason: format!(
            "rank u = {:.6} {comparison} threshold t = {:.6}, where u comes from SHA-256 of \"{}/{}\"",
            decision.rank, decision.threshold, decision.id, resolution.node
        ),
        patch: rollout.patch.doc.doc.clone(),
    })
}

/// The node's check-in as the orchestrator sees it (a read of the
/// cluster's fleet: for people, never on a node's path).
fn check_in(
    ctx: &Context,
    store: &dyn Store,
    cluster: &str,
    node: &str,
) -> Result<Option<CheckIn>> {
    let now = SystemTime::now();
    let fleet = Fleet::read(store, &ctx.layout(), cluster, ctx.settings.member_ttl, now)?;
    let Some(member) = fleet.members.iter().find(|m| m.node == node) else {
        return Ok(None);
    };
    let record = fleet
        .rollout_doc
        .as_ref()
        .and_then(|doc| RolloutState::from_document(&ctx.layout().rollout(cluster), doc).ok());
    let holds_batch = record.and_then(|r| {
        if !r.watches(rank(&r.id, node)) {
            return None;
        }
        let health = HealthGate::of(&r, now);
        let state = gate_state(member, &r.forgiven, health.as_ref());
        hold_reason(state, member, health.as_ref())
            .map(|why| format!("holds batch {} of rollout {}: {why}", r.batches, r.id))
    });
    Ok(Some(CheckIn {
        at_desired_generation: member.observed_generation.as_deref()
            == Some(member.desired_generation.as_str()),
        member: member.clone(),
        holds_batch,
    }))
}

fn check_in_text(c: &CheckIn) -> String {
    let m = &c.member;
    let Some(generation) = &m.observed_generation else {
        return "check-in: none yet\n".into();
    };
    let mut out = format!(
        "check-in: {} at generation {} ({}){}{}, {}\n",
        m.observed_status.map_or("-".into(), |s| s.to_string()),
        one_line(generation),
        if c.at_desired_generation {
            "the desired one"
        } else {
            "NOT the desired one"
        },
        m.observed_state
            .as_deref()
            .map(|s| format!(", state {}", one_line(s)))
            .unwrap_or_default(),
        m.observed_version
            .as_deref()
            .map(|v| format!(", version {}", one_line(v)))
            .unwrap_or_default(),
        m.reported_at
            .as_deref()
            .map(|t| format!("reported {}", one_line(t)))
            .unwrap_or_default(),
    );
    match &m.health {
        None => out.push_str("  health: not reported\n"),
        Some(h) => {
            out.push_str(&format!(
                "  health: {} at {}{}\n",
                if h.healthy { "healthy" } else { "UNHEALTHY" },
                one_line(&h.checked_at),
                h.healthy_since
                    .as_deref()
                    .map(|t| format!(", healthy since {}", one_line(t)))
                    .or_else(|| {
                        h.unhealthy_since
                            .as_deref()
                            .map(|t| format!(", unhealthy since {}", one_line(t)))
                    })
                    .unwrap_or_default()
            ));
            for check in &h.checks {
                out.push_str(&format!(
                    "    {} {} (declared {}): {}\n",
                    if check.passed { "pass" } else { "FAIL" },
                    one_line(&check.name),
                    match check.source {
                        CheckSource::View => "in the view",
                        CheckSource::Recipe => "by the recipe",
                    },
                    one_line(&check.output)
                ));
            }
        }
    }
    if let Some(why) = &c.holds_batch {
        out.push_str(&format!("  {why}\n"));
    }
    out
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).expect("a value serializes")
}

impl Explanation {
    fn to_text(&self, filter: Option<&[String]>) -> String {
        let mut out = format!(
            "node {} of cluster {}\n  state       {}\n  generation  {}\n  read from   {} (revision {}) at {}\n",
            self.node,
            self.cluster,
            self.state.as_deref().unwrap_or("(none)"),
            self.generation,
            self.store,
            self.revision.map_or("-".into(), |r| r.to_string()),
            self.fetched_at,
        );
        out.push('\n');
        match &self.rollout {
            None => out.push_str("rollout: none active for this cluster\n"),
            Some(r) => {
                out.push_str(&format!(
                    "rollout {} ({}): this node is {}\n  {}\n  patch {}: {}\n",
                    r.id,
                    r.status,
                    if r.released {
                        "RELEASED"
                    } else {
                        "NOT RELEASED"
                    },
                    r.reason,
                    if r.released {
                        "applied"
                    } else {
                        "not applied (waits for release)"
                    },
                    compact(&r.patch)
                ));
            }
        }
        if let Some(c) = &self.check_in {
            out.push_str(&check_in_text(c));
        }
        if let Some(why) = &self.check_in_unreadable {
            // An error names keys and problems; keep it on one line.
            let why: String = why
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            out.push_str(&format!("check-in: cannot be shown: {why}\n"));
        }
        out.push('\n');
        if let Some(c) = &self.constraints {
            out.push_str(&constraints_text(c));
            out.push('\n');
        }
        if self.values.is_empty() {
            let what = filter.map_or("the desired document".into(), display_path);
            out.push_str(&format!("{what}: no layer sets it for this node\n"));
        } else {
            let mut rows = vec![vec![
                "KEY".into(),
                "VALUE".into(),
                "LAYER".into(),
                "STORE KEY".into(),
                "OVERRIDES".into(),
            ]];
            for v in &self.values {
                let overrides = v
                    .overrides
                    .iter()
                    .map(|s| format!("{}: {}", s.layer_label(), compact(&s.value)))
                    .collect::<Vec<_>>()
                    .join("; ");
                rows.push(vec![
                    v.key.clone(),
                    compact(&v.value),
                    v.layer.to_string(),
                    v.store_key.clone(),
                    overrides,
                ]);
            }
            out.push_str(&columns(&rows));
        }
        if !self.removed.is_empty() {
            out.push_str("\nremoved (set to null)\n");
            for r in &self.removed {
                out.push_str(&format!(
                    "  {} by {} {} (was {} from {})\n",
                    r.key,
                    r.removed_by,
                    r.store_key,
                    compact(&r.was.value),
                    r.was.layer_label()
                ));
            }
        }
        if !self.recent_changes.is_empty() {
            out.push_str("\nrecent changes (newest first)\n");
            for c in &self.recent_changes {
                let what = c
                    .changes
                    .iter()
                    .map(|f| {
                        format!(
                            "{} {} -> {}",
                            f.path,
                            f.from.as_ref().map_or("(unset)".into(), compact),
                            f.to.as_ref().map_or("(unset)".into(), compact)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let reason = c
                    .reason
                    .as_ref()
                    .map_or(String::new(), |r| format!(" (reason: {r})"));
                out.push_str(&format!(
                    "  {}  {}  {} {}: {what}{reason}\n",
                    c.time, c.actor, c.command, c.key
                ));
            }
        }
        out
    }
}

/// The constraints section: each one with the observed counts, and why
/// the node is held when it is.
fn constraints_text(c: &ConstraintStatus) -> String {
    let mut out = if c.met {
        "constraints: met (the desired state below is applied)\n".to_string()
    } else {
        format!(
            "constraints: NOT MET, node held to {} (desired generation {} waits)\n",
            match c.held_to.as_deref() {
                Some("previous") => "the cluster's desired state without the rollout patch",
                Some("earlier") => "an earlier desired state of the cluster (from its history)",
                Some("hold") => "the schema's hold state",
                _ => "nothing",
            },
            c.held_generation.as_deref().unwrap_or("-")
        )
    };
    for check in &c.checks {
        let observed = check
            .observed
            .iter()
            .map(|(v, n)| format!("{v}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "  {} {}: {} of {} live node(s) match, {} needed; observed {}\n",
            if check.met { "ok  " } else { "WAIT" },
            check.requires,
            check.matching,
            check.live,
            check.needed,
            if observed.is_empty() {
                "nothing".into()
            } else {
                observed
            }
        ));
    }
    if !c.met {
        out.push_str("  the values below are of the desired state held back\n");
    }
    out
}

impl Shadowed {
    fn layer_label(&self) -> String {
        self.layer.to_string()
    }
}
