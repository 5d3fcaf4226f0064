//! `report`: a node's check-in — what it converged to — written to
//! `P/observed/C/N`. Bounded by `--timeout` in all, so a store that is down
//! never holds up a chef run for long.

use std::path::Path;
use std::time::Duration;

use crate::cli::ReportArgs;
use crate::clock::now_rfc3339;
use crate::commands::Context;
use crate::constraints;
use crate::document::{encode_value, fold, is_generation};
use crate::error::{Error, Result};
use crate::health::{self, Health};
use crate::layout::{check_name, NameKind};
use crate::local_file;
use crate::node_attributes::AttributesDocument;
use crate::output::{self, Format};
use crate::report::{bounded_message, ObservedReport, ReportStatus};
use crate::schema::Schema;
use crate::store::{self, Op, StoreOptions, Txn};
use serde_json::Value;

/// What a report says the node converged to.
struct Applied {
    cluster: String,
    node: String,
    generation: String,
    state: Option<String>,
    stale: bool,
    /// The desired document the run applied, when the attributes file gives it.
    desired: Option<Value>,
}

/// Runs `report`.
pub fn run(ctx: &Context, args: &ReportArgs) -> Result<()> {
    let format = ctx.format_from_flag("report", &[Format::Table, Format::Json, Format::Yaml])?;
    let applied = match &args.attributes {
        Some(path) => from_attributes_file(ctx, args, path)?,
        None => from_flags(ctx, args)?,
    };
    check_name(NameKind::Cluster, &applied.cluster).map_err(Error::BadName)?;
    check_name(NameKind::Node, &applied.node).map_err(Error::BadName)?;
    if let Some(d) = args.duration {
        if !(d.is_finite() && d >= 0.0) {
            return Err(Error::Usage(format!(
                "--duration {d} is not a number of seconds"
            )));
        }
    }
    // The checks run first, each within its own timeout, so that the store
    // calls below keep all of --timeout.
    let checks = match args.status {
        ReportStatus::Success => Some(node_checks(
            applied.desired.as_ref(),
            args.checks.as_deref(),
            "the attributes file's desired state",
        )?),
        ReportStatus::Failure => None,
    };
    let results = checks.as_deref().map(health::run_checks);
    let mut report = ObservedReport {
        generation: applied.generation.clone(),
        status: args.status,
        state: applied.state.clone(),
        version: applied.desired.as_ref().and_then(version_of),
        reported_at: now_rfc3339(),
        duration_s: args.duration,
        message: args.message.as_deref().map(bounded_message),
        convergent_version: env!("CARGO_PKG_VERSION").to_string(),
        stale: applied.stale,
        health: None,
        offers: applied
            .desired
            .as_ref()
            .map(constraints::offers)
            .unwrap_or_default(),
    };

    // Two calls (check the cluster, then write): each gets half of --timeout.
    let store = store::open(
        &ctx.settings.store,
        &StoreOptions {
            timeout: (ctx.settings.timeout / 2).max(Duration::from_millis(100)),
        },
        ctx.env,
    )?;
    let layout = ctx.layout();
    let key = layout.observed_node(&applied.cluster, &applied.node);
    let snapshot = store.read_trees(&[
        layout.desired(&applied.cluster),
        layout.schema(&applied.cluster),
        key.clone(),
    ])?;
    if snapshot.trees[..2].iter().all(Vec::is_empty) {
        return Err(Error::bad_key(
            layout.desired(&applied.cluster),
            format!(
                "unknown cluster {:?}: nothing is stored for it; the report was not written",
                applied.cluster
            ),
        ));
    }
    // A state given by hand must be one the cluster knows (a file's state is
    // what the store gave the run, even if the schema changed since).
    if let Some(state) = &args.state {
        let schema_key = layout.schema(&applied.cluster);
        if let Some(doc) = fold(&schema_key, &snapshot.trees[1])? {
            Schema::from_document(&schema_key, &doc.doc)?
                .check_state(state)
                .map_err(|why| {
                    Error::bad_key(
                        schema_key.clone(),
                        format!("--state {state:?}: {why}; the report was not written"),
                    )
                })?;
        }
    }
    if let Some(results) = results {
        let previous = previous_report(&key, &snapshot.trees[2]);
        report.health = Some(Health::after(
            same_generation_health(previous.as_ref(), &report.generation),
            results,
            report.reported_at.clone(),
        ));
    }
    let value = serde_json::to_value(&report).expect("a report serializes");
    store.commit(&Txn {
        compares: Vec::new(),
        ops: vec![Op::Put {
            key: key.clone(),
            value: encode_value(&value),
        }],
    })?;
    if format != Format::Table {
        let result = serde_json::json!({"key": key, "report": value});
        return output::print(&output::render(&result, format));
    }
    output::print_text(&format!(
        "{key}: {} at generation {}{}{}\n",
        report.status,
        report.generation,
        report
            .state
            .as_deref()
            .map(|s| format!(" (state {s})"))
            .unwrap_or_default(),
        // Only where checks ran: a node without any reports as before.
        report
            .health
            .as_ref()
            .filter(|h| !h.checks.is_empty())
            .map(health_summary)
            .unwrap_or_default()
    ))
}

/// The node's checks: the view's (from `desired.health`, when the desired
/// document is known) and the recipe's file. `desired_from` names where
/// the desired document came from, for errors.
pub fn node_checks(
    desired: Option<&Value>,
    checks_file: Option<&Path>,
    desired_from: &str,
) -> Result<Vec<health::Check>> {
    let view = match desired {
        Some(d) => health::checks_of_desired(desired_from, d)?,
        None => Vec::new(),
    };
    let recipe = match checks_file {
        Some(path) => health::checks_of_file(path)?,
        None => Vec::new(),
    };
    health::combined(view, recipe).map_err(|problem| Error::BadFile {
        path: checks_file.map(Path::to_path_buf).unwrap_or_default(),
        problem,
    })
}

/// The desired document's `version` as text (a string or a number), bounded.
fn version_of(desired: &Value) -> Option<String> {
    match desired.get("version")? {
        Value::String(v) => Some(bounded_message(v)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The report stored at `key`, if there is a readable one.
pub fn previous_report(key: &str, entries: &[crate::store::Entry]) -> Option<ObservedReport> {
    let doc = crate::document::fold(key, entries).ok()??;
    ObservedReport::from_document(&doc.doc).ok()
}

/// The previous health when it was taken at `generation`: a healthy node
/// stays healthy since then; a new generation starts the clock again.
pub fn same_generation_health<'r>(
    previous: Option<&'r ObservedReport>,
    generation: &str,
) -> Option<&'r Health> {
    previous
        .filter(|p| p.generation == generation && p.status == ReportStatus::Success)
        .and_then(|p| p.health.as_ref())
}

/// `, healthy (2 checks)` / `, UNHEALTHY: web (HTTP 503)`, for one line of output.
pub fn health_summary(h: &Health) -> String {
    if h.healthy {
        format!(
            ", healthy ({} check{})",
            h.checks.len(),
            if h.checks.len() == 1 { "" } else { "s" }
        )
    } else {
        let failing: Vec<String> = h
            .failing()
            .map(|c| format!("{} ({})", c.name, health::one_line(&c.output)))
            .collect();
        format!(", UNHEALTHY: {}", failing.join("; "))
    }
}

fn from_attributes_file(ctx: &Context, args: &ReportArgs, path: &Path) -> Result<Applied> {
    let text = local_file::read_text(path, local_file::MAX_DOCUMENT_BYTES).map_err(|e| {
        Error::BadFile {
            path: path.to_path_buf(),
            problem: format!("the file {e}"),
        }
    })?;
    let doc = AttributesDocument::parse(path, &text)?.convergent;
    // The file says which cluster it is for: a node of several clusters
    // reports each from its own file, so the configured cluster (config file,
    // CONVERGENT_CLUSTER) is no more than a default here. A --cluster flag, or
    // the node however named, must agree with the file.
    for (what, given, in_file) in [
        ("cluster", args.target.cluster.clone(), &doc.cluster),
        (
            "node",
            args.target
                .node
                .clone()
                .or_else(|| ctx.settings.node.clone()),
            &doc.node,
        ),
    ] {
        if let Some(given) = given.filter(|g| g != in_file) {
            return Err(Error::BadFile {
                path: path.to_path_buf(),
                problem: format!("it is for {what} {in_file:?}, not {given:?}"),
            });
        }
    }
    Ok(Applied {
        cluster: doc.cluster,
        node: doc.node,
        generation: doc.generation,
        state: doc.state,
        stale: doc.source.stale,
        desired: Some(doc.desired),
    })
}

fn from_flags(ctx: &Context, args: &ReportArgs) -> Result<Applied> {
    let (cluster, node) = ctx.node_target(&args.target)?;
    let generation = args.generation.clone().unwrap_or_default();
    if !is_generation(&generation) {
        return Err(Error::BadName(format!(
            "--generation {generation:?} is not a generation (16 hex digits, as `attributes` prints)"
        )));
    }
    Ok(Applied {
        cluster,
        node,
        generation,
        state: args.state.clone(),
        stale: false,
        desired: None,
    })
}
