//! `health`: re-runs a node's health checks and re-reports its health
//! without a chef run — for a timer, or the `watch` agent between runs — so
//! that health that degrades after the run is seen.
//!
//! Only the health part of the node's check-in changes, with compare-and-set
//! on it: a report written meanwhile (a new run) is never overwritten.

use std::path::Path;

use crate::cli::HealthArgs;
use crate::clock::now_rfc3339;
use crate::commands::attributes::fetch;
use crate::commands::report::{health_summary, node_checks, same_generation_health};
use crate::commands::Context;
use crate::error::{Error, Result};
use crate::health::{self, Health};
use crate::layout::{check_name, NameKind};
use crate::node_attributes::AttributesDocument;
use crate::output;
use crate::report::{ObservedReport, ReportStatus};
use crate::store::Store;
use crate::update::update;

/// Runs `health`.
pub fn run(ctx: &Context, args: &HealthArgs) -> Result<()> {
    let (cluster, node) = ctx.node_target(&args.target)?;
    check_name(NameKind::Cluster, &cluster).map_err(Error::BadName)?;
    check_name(NameKind::Node, &node).map_err(Error::BadName)?;
    let attributes = match &args.attributes {
        Some(path) => Some(read_attributes(path)?),
        None => None,
    };
    let store = ctx.open_store()?;
    let line = check_and_report(
        ctx,
        store.as_ref(),
        &cluster,
        &node,
        attributes.as_ref(),
        args.checks.as_deref(),
    )?;
    output::print_text(&format!("{line}\n"))
}

fn read_attributes(path: &Path) -> Result<AttributesDocument> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::BadFile {
        path: path.to_path_buf(),
        problem: format!("cannot be read: {e}"),
    })?;
    AttributesDocument::parse(path, &text)
}

/// Runs the node's checks and writes its health into its check-in; returns
/// one line saying what was written (or why nothing was).
pub fn check_and_report(
    ctx: &Context,
    store: &dyn Store,
    cluster: &str,
    node: &str,
    attributes: Option<&AttributesDocument>,
    checks_file: Option<&Path>,
) -> Result<String> {
    let layout = ctx.layout();
    let key = layout.observed_node(cluster, node);
    let Some(report) = read_report(store, &key)? else {
        return Err(Error::Stopped(format!(
            "{key}: node {node} has not checked in yet; health is reported with and after its first report"
        )));
    };
    if report.status == ReportStatus::Failure {
        return Ok(format!(
            "{key}: the last run failed; health is checked after a successful run (nothing written)"
        ));
    }
    // The view's checks are those of the desired state the node converged
    // to: from its attributes file, or else the store's when it is still
    // the same generation. Otherwise only the recipe's checks run.
    let (desired, from) = match attributes {
        Some(a) if a.convergent.cluster != cluster || a.convergent.node != node => {
            return Err(Error::Usage(format!(
                "--attributes is for {}/{}, not {cluster}/{node}",
                a.convergent.cluster, a.convergent.node
            )))
        }
        Some(a) => (
            Some(a.convergent.clone()),
            "the attributes file's desired state",
        ),
        None => (
            Some(fetch(ctx, store, cluster, node)?.convergent),
            "the node's desired state",
        ),
    };
    let desired = desired.filter(|d| d.generation == report.generation);
    let mut note = String::new();
    if desired.is_none() {
        note = format!(
            " (the view's checks were not run: the node has not converged to its current desired state; it reported generation {})",
            report.generation
        );
    }
    let checks = node_checks(desired.as_ref().map(|d| &d.desired), checks_file, from)?;
    let results = health::run_checks(&checks);
    let checked_at = now_rfc3339();
    let written = write_health(store, &key, &report.generation, |previous| {
        Health::after(
            same_generation_health(Some(previous), &report.generation),
            results.clone(),
            checked_at.clone(),
        )
    })?;
    Ok(match written {
        Some(h) => format!(
            "{key}: generation {}{}{note}",
            report.generation,
            health_summary(&h)
        ),
        None => {
            format!("{key}: a new report came in meanwhile; its health stands (nothing written)")
        }
    })
}

fn read_report(store: &dyn Store, key: &str) -> Result<Option<ObservedReport>> {
    let Some(entry) = store.get(key)? else {
        return Ok(None);
    };
    ObservedReport::from_json(&entry.value)
        .map(Some)
        .map_err(|why| Error::bad_key(key, why))
}

/// Sets the health of the report at `key` if it is still at `generation`,
/// with compare-and-set on the report read. `None`: a report at another
/// generation (or a failed run) replaced it meanwhile.
fn write_health(
    store: &dyn Store,
    key: &str,
    generation: &str,
    health: impl Fn(&ObservedReport) -> Health,
) -> Result<Option<Health>> {
    let mut written = None;
    update(store, &[key.to_string()], |current| {
        written = None;
        let Some(doc) = &current.docs[0] else {
            return Ok(None);
        };
        let mut report =
            ObservedReport::from_document(doc).map_err(|why| Error::bad_key(key, why))?;
        if report.generation != generation || report.status != ReportStatus::Success {
            return Ok(None);
        }
        let h = health(&report);
        report.health = Some(h.clone());
        written = Some(h);
        Ok(Some(vec![Some(
            serde_json::to_value(&report).expect("a report serializes"),
        )]))
    })?;
    Ok(written)
}
