//! `status`: the fleet at a glance — every member's desired generation next
//! to what it last reported, with a summary line; `--check` for monitoring.

use std::io::IsTerminal;
use std::time::SystemTime;

use serde::Serialize;

use crate::cli::StatusArgs;
use crate::clock::format_age;
use crate::commands::Context;
use crate::error::{Error, Result};
use crate::fleet::{Counts, Fleet, HealthCounts, HealthState, Member, MemberState};
use crate::output::{self, columns, Format};
use crate::skew::{self, Skew};

#[derive(Serialize)]
struct StatusReport<'a> {
    cluster: &'a str,
    revision: Option<u64>,
    rollout: Option<RolloutLine>,
    summary: Counts,
    health: HealthCounts,
    members: &'a [Member],
    problems: &'a [String],
    /// Versions live per tier and the constraints between tiers, when
    /// any constraint involves this cluster.
    #[serde(skip_serializing_if = "skew_is_empty")]
    skew: Skew,
}

fn skew_is_empty(s: &Skew) -> bool {
    s.constraints.is_empty()
}

#[derive(Serialize)]
struct RolloutLine {
    id: String,
    status: String,
    threshold: f64,
}

/// Runs `status`.
pub fn run(ctx: &Context, args: &StatusArgs) -> Result<()> {
    let format = ctx.format("status", &[Format::Table, Format::Json, Format::Yaml])?;
    let cluster = args
        .cluster
        .clone()
        .or_else(|| ctx.settings.cluster.clone())
        .ok_or_else(|| {
            Error::Usage(
                "missing --cluster (or CONVERGENT_CLUSTER, or cluster: in the config file)".into(),
            )
        })?;
    let member_ttl = args.member_ttl.map_or(ctx.settings.member_ttl, |d| d.0);
    let store = ctx.open_store()?;
    let fleet = Fleet::read(
        store.as_ref(),
        &ctx.layout(),
        &cluster,
        member_ttl,
        SystemTime::now(),
    )?;
    for problem in &fleet.problems {
        crate::output::warn(&format!("convergent: warning: {problem}"));
    }
    // The skew matrix needs every cluster's declarations: a second request,
    // made only when this cluster declares `requires` or it is asked for
    // (`--skew`), so a plain `status` stays one request.
    let declares =
        |doc: Option<&serde_json::Value>| doc.is_some_and(|d| d.get("requires").is_some());
    let skew = if args.skew
        || declares(fleet.inputs.desired.as_ref().map(|l| &l.doc.doc))
        || declares(fleet.inputs.rollout.as_ref().map(|r| &r.patch.doc.doc))
    {
        skew::read(
            store.as_ref(),
            &ctx.layout(),
            &cluster,
            member_ttl,
            SystemTime::now(),
        )?
    } else {
        Skew::default()
    };
    let report = StatusReport {
        cluster: &cluster,
        revision: fleet.revision,
        rollout: fleet.inputs.rollout.as_ref().map(|r| RolloutLine {
            id: r.record.id.clone(),
            status: r.record.status.clone(),
            threshold: r.record.threshold,
        }),
        summary: fleet.counts(),
        health: fleet.health_counts(),
        members: &fleet.members,
        problems: &fleet.problems,
        skew,
    };
    match format {
        Format::Table => output::print(&table(&report, use_colour(ctx))),
        format => output::print(&output::render(&report, format)),
    }?;
    let c = report.summary;
    if !args.check {
        return Ok(());
    }
    if c.total() == 0 {
        return Err(Error::NotConverged(format!(
            "check failed for {cluster}: it has no members (no node has reported, and it lists no static members)"
        )));
    }
    let statics = report.members.iter().filter(|m| m.static_member).count();
    let expected = args.expect.unwrap_or(0).max(statics);
    if c.present() < expected {
        let absent: Vec<&str> = report
            .members
            .iter()
            .filter(|m| m.state == MemberState::Absent)
            .map(|m| m.node.as_str())
            .collect();
        return Err(Error::NotConverged(format!(
            "check failed for {cluster}: {} present, {expected} expected ({}); absent: {}",
            c.present(),
            if args.expect.unwrap_or(0) >= statics {
                "--expect"
            } else {
                "its static members"
            },
            if absent.is_empty() {
                "none".to_string()
            } else {
                absent.join(", ")
            }
        )));
    }
    if report.health.unhealthy > 0 && c.present() == c.converged {
        return Err(Error::NotConverged(format!(
            "check failed for {cluster}: {} of {} present members are unhealthy",
            report.health.unhealthy,
            c.present()
        )));
    }
    if c.present() > c.converged {
        return Err(Error::NotConverged(format!(
            "check failed for {cluster}: {} of {} present members have not converged ({} pending, {} failed)",
            c.present() - c.converged,
            c.present(),
            c.pending,
            c.failed
        )));
    }
    Ok(())
}

/// Colour only on a terminal, and never with `NO_COLOR` set.
fn use_colour(ctx: &Context) -> bool {
    std::io::stdout().is_terminal() && (ctx.env)("NO_COLOR").is_none()
}

fn paint(text: &str, state: MemberState, colour: bool) -> String {
    if !colour {
        return text.to_string();
    }
    let code = match state {
        MemberState::Converged => "32",
        MemberState::Pending => "33",
        MemberState::Failed => "31",
        MemberState::Absent => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn table(r: &StatusReport, colour: bool) -> String {
    // Everything but our own colour codes is made visible: states, names
    // and generations come from the store.
    let mut out = match &r.rollout {
        Some(ro) => format!(
            "cluster {}: rollout {} ({}), threshold {:.6}\n",
            r.cluster, ro.id, ro.status, ro.threshold
        ),
        None => format!("cluster {}: no rollout\n", r.cluster),
    };
    out = crate::output::visible_lines(&out);
    let mut rows = vec![[
        "NODE",
        "STATE",
        "DESIRED",
        "OBSERVED",
        "STATUS",
        "CONVERGED-TO",
        "HEALTH",
        "CHECK-IN",
        "ROLLOUT",
    ]
    .map(String::from)
    .to_vec()];
    for m in r.members {
        let mut row: Vec<String> = [
            m.node.clone(),
            m.desired_state.clone().unwrap_or_else(|| "-".into()),
            m.desired_generation.clone(),
            m.observed_generation.clone().unwrap_or_else(|| "-".into()),
            m.state.to_string(),
            converged_to(m),
            health_cell(m),
            m.checkin_age_s
                .map_or_else(|| "never".into(), |a| format!("{} ago", format_age(a))),
            match m.released {
                None => "-".into(),
                Some(true) => "released".into(),
                Some(false) => "held".into(),
            },
        ]
        .iter()
        .map(|cell| crate::output::visible(cell))
        .collect();
        row[4] = paint(&row[4], m.state, colour);
        rows.push(row);
    }
    out.push_str(&columns(&rows));
    let c = r.summary;
    out.push_str(&format!(
        "{}: {} converged, {} pending, {} failed, {} absent\n",
        crate::output::count(c.total(), "member"),
        c.converged,
        c.pending,
        c.failed,
        c.absent,
    ));
    // Only where nodes run health checks: a fleet without them reads as before.
    let h = r.health;
    let checked = r
        .members
        .iter()
        .any(|m| m.health.as_ref().is_some_and(|h| !h.checks.is_empty()));
    if checked {
        out.push_str(&format!(
            "health: {} healthy, {} unhealthy, {} unknown\n",
            h.healthy, h.unhealthy, h.unknown
        ));
    }
    out.push_str(&crate::output::visible_lines(&r.skew.to_text()));
    out
}

/// What the node's last report says it converged to: `state version`.
fn converged_to(m: &Member) -> String {
    let parts: Vec<&str> = [m.observed_state.as_deref(), m.observed_version.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        escaped(&parts.join(" "))
    }
}

/// `healthy 5m00s` (how long without a break, as of its last check),
/// `UNHEALTHY: web, port` (the failing checks), or `-`.
fn health_cell(m: &Member) -> String {
    match (m.health_state(), &m.health) {
        (HealthState::Healthy, Some(h)) if h.checks.is_empty() => "no checks".into(),
        (HealthState::Healthy, Some(h)) => match h.healthy_for() {
            Some(d) => format!("healthy {}", format_age(d.as_secs())),
            None => "healthy".into(),
        },
        (HealthState::Unhealthy, Some(h)) => {
            let failing: Vec<&str> = h.failing().map(|c| c.name.as_str()).collect();
            escaped(&format!("UNHEALTHY: {}", failing.join(", ")))
        }
        _ => "-".into(),
    }
}

/// Control characters made visible: a report is the node's to write.
fn escaped(text: &str) -> String {
    crate::health::one_line(text)
}
