//! `report`: a node's check-in — what it converged to — written to
//! `P/observed/C/N`. Bounded by `--timeout` in all, so a store that is down
//! never holds up a chef run for long.

use std::path::Path;
use std::time::Duration;

use crate::cli::ReportArgs;
use crate::clock::now_rfc3339;
use crate::commands::Context;
use crate::document::{encode_value, is_generation};
use crate::error::{Error, Result};
use crate::layout::{check_name, NameKind};
use crate::node_attributes::AttributesDocument;
use crate::output;
use crate::report::{bounded_message, ObservedReport};
use crate::store::{self, Op, StoreOptions, Txn};

/// What a report says the node converged to.
struct Applied {
    cluster: String,
    node: String,
    generation: String,
    state: Option<String>,
    stale: bool,
}

/// Runs `report`.
pub fn run(ctx: &Context, args: &ReportArgs) -> Result<()> {
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
    let report = ObservedReport {
        generation: applied.generation.clone(),
        status: args.status,
        state: applied.state.clone(),
        reported_at: now_rfc3339(),
        duration_s: args.duration,
        message: args.message.as_deref().map(bounded_message),
        convergent_version: env!("CARGO_PKG_VERSION").to_string(),
        stale: applied.stale,
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
    let snapshot = store.read_trees(&[
        layout.desired(&applied.cluster),
        layout.schema(&applied.cluster),
    ])?;
    if snapshot.trees.iter().all(Vec::is_empty) {
        return Err(Error::bad_key(
            layout.desired(&applied.cluster),
            format!(
                "unknown cluster {:?}: nothing is stored for it; the report was not written",
                applied.cluster
            ),
        ));
    }
    let key = layout.observed_node(&applied.cluster, &applied.node);
    let value = serde_json::to_value(&report).expect("a report serializes");
    store.commit(&Txn {
        compares: Vec::new(),
        ops: vec![Op::Put {
            key: key.clone(),
            value: encode_value(&value),
        }],
    })?;
    output::print(&format!(
        "{key}: {} at generation {}{}\n",
        report.status,
        report.generation,
        report
            .state
            .as_deref()
            .map(|s| format!(" (state {s})"))
            .unwrap_or_default()
    ))
}

fn from_attributes_file(ctx: &Context, args: &ReportArgs, path: &Path) -> Result<Applied> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::BadFile {
        path: path.to_path_buf(),
        problem: format!("cannot be read: {e}"),
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
    })
}
