//! `rollout`: run a plan, show, pause, resume, abort and roll back rollouts.

use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cli::{
    OrchestratorArgs, RolloutArgs, RolloutCommand, RolloutControlArgs, RolloutResumeArgs,
    RolloutRunArgs, RolloutStatusArgs,
};
use crate::clock::now_rfc3339;
use crate::commands::Context;
use crate::error::{Error, Result};
use crate::history::actor;
use crate::layout::{check_name, NameKind};
use crate::output::{self, columns, count, Format};
use crate::rollout::control::resume_plan;
use crate::rollout::graph;
use crate::rollout::orchestrator::{self, Control, Observer, Orchestrator, Progress, RunOptions};
use crate::rollout::plan::Plan;
use crate::rollout::preflight::preflight;
use crate::rollout::state::Direction;
use crate::store::Store;

/// Runs `rollout …`.
pub fn run(ctx: &Context, args: &RolloutArgs) -> Result<()> {
    match &args.command {
        RolloutCommand::Run(a) => run_plan(ctx, a),
        RolloutCommand::Status(a) => status(ctx, a),
        RolloutCommand::Pause(a) => control(ctx, a, Control::Pause),
        RolloutCommand::Resume(a) => resume(ctx, a),
        RolloutCommand::Abort(a) => control(ctx, a, Control::Abort),
        RolloutCommand::Promote(a) => control(ctx, a, Control::Promote),
        RolloutCommand::Rollback(a) => {
            ctx.format("rollout rollback", &[Format::Table, Format::Json])?;
            if let Some(cluster) = &a.cluster {
                check_name(NameKind::Cluster, cluster).map_err(Error::BadName)?;
            }
            let store = ctx.open_store_consistent()?;
            // A forward orchestrator still running needs a turn to see the
            // rollback and let go of the plan's lock.
            let options = run_options(ctx, &a.options, true);
            orchestrate(ctx, store.as_ref(), options, |o| {
                match (&a.plan, &a.cluster) {
                    (Some(plan), _) => o.rollback_plan(plan, a.all_at_once),
                    (None, Some(cluster)) => o.rollback(cluster, a.all_at_once),
                    (None, None) => Err(Error::Usage("name a CLUSTER or --plan NAME".into())),
                }
            })
        }
    }
}

fn run_options(ctx: &Context, args: &OrchestratorArgs, wait_for_lock: bool) -> RunOptions {
    let lock_ttl = args.lock_ttl.0.max(std::time::Duration::from_secs(1));
    RunOptions {
        member_ttl: args.member_ttl.map_or(ctx.settings.member_ttl, |d| d.0),
        poll: args.poll.0.max(std::time::Duration::from_millis(10)),
        lock_ttl,
        lock_wait: if wait_for_lock {
            args.lock_wait.0.max(lock_ttl + args.poll.0 * 2)
        } else {
            args.lock_wait.0
        },
    }
}

fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Error::Usage(format!("cannot handle signals: {e}")))?;
    }
    Ok(stop)
}

fn run_plan(ctx: &Context, args: &RolloutRunArgs) -> Result<()> {
    let format = if args.dry_run {
        ctx.format(
            "rollout run --dry-run",
            &[Format::Table, Format::Json, Format::Yaml],
        )?
    } else {
        ctx.format("rollout run", &[Format::Table, Format::Json])?
    };
    let plan = Plan::from_file(&args.plan)?;
    let store = ctx.open_store_consistent()?;
    let options = run_options(ctx, &args.options, false);
    if args.dry_run {
        // What the real start would refuse, the dry run refuses too.
        preflight(store.as_ref(), &ctx.layout(), &plan)?;
        let previews =
            orchestrator::preview(store.as_ref(), &ctx.layout(), &plan, options.member_ttl)?;
        return match format {
            Format::Table => {
                let mut text = format!(
                    "plan {}: {} (dry run: nothing is written)\n",
                    plan.name,
                    count(plan.steps.len(), "step")
                );
                if !graph::is_sequence(&plan) {
                    text.push_str(&format!(
                        "runs as: {} (clusters joined by + run at the same time)\n",
                        graph::summary(&plan)
                    ));
                }
                for (p, step) in previews.iter().zip(&plan.steps) {
                    text.push_str(&format!(
                        "step {}: cluster {}, rollout {}, set {}\n  strategy: canary {}, batch {}, pause {}, max_failed {}\n",
                        p.step, p.cluster, p.rollout, p.patch, step.strategy.canary, step.strategy.batch, step.strategy.pause, step.strategy.max_failed
                    ));
                    if let (Some(after), Some(with)) = (&p.after, &p.runs_with) {
                        text.push_str(&step_graph_text(&plan, after, with));
                    }
                    if p.batches.is_empty() {
                        text.push_str("  no members yet: every node is released at once\n");
                    }
                    for (i, batch) in p.batches.iter().enumerate() {
                        let label = if i == 0 && step.strategy.canary > 0 {
                            "canary".to_string()
                        } else {
                            format!("batch {}", i + 1)
                        };
                        text.push_str(&format!(
                            "  {label:<9} ({}): {}\n",
                            batch.len(),
                            batch.join(" ")
                        ));
                    }
                }
                output::print_text(&text)
            }
            format => output::print(&output::render(&previews, format)),
        };
    }
    orchestrate(ctx, store.as_ref(), options, |o| o.run(&plan))
}

/// A dry run's lines for where a step stands in its plan's graph.
fn step_graph_text(plan: &Plan, after: &[usize], runs_with: &[usize]) -> String {
    let named = |steps: &[usize]| {
        steps
            .iter()
            .map(|n| graph::label(plan, n - 1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "  after: {}\n  runs at the same time as: {}\n",
        if after.is_empty() {
            "nothing (starts with the plan)".to_string()
        } else {
            named(after)
        },
        if runs_with.is_empty() {
            "no other step".to_string()
        } else {
            named(runs_with)
        }
    )
}

/// Runs `job` with an orchestrator that reports progress the way the
/// format and the terminal ask, and stops between turns on SIGTERM/SIGINT.
fn orchestrate(
    ctx: &Context,
    store: &dyn Store,
    options: RunOptions,
    job: impl FnOnce(&mut Orchestrator) -> Result<()>,
) -> Result<()> {
    let mut observer = observer_for(ctx);
    let stop = stop_on_signals()?;
    let mut orchestrator = Orchestrator::new(
        store,
        ctx.layout(),
        actor(ctx.env),
        options,
        observer.as_mut(),
        stop,
    );
    job(&mut orchestrator)
}

/// `rollout resume CLUSTER`, or `--plan NAME`: every paused step of the plan.
fn resume(ctx: &Context, args: &RolloutResumeArgs) -> Result<()> {
    let Some(plan) = &args.plan else {
        let cluster = args
            .cluster
            .clone()
            .ok_or_else(|| Error::Usage("name a CLUSTER or --plan NAME".into()))?;
        let one = RolloutControlArgs {
            cluster,
            reason: args.reason.clone(),
        };
        return control(ctx, &one, Control::Resume);
    };
    let format = ctx.format(
        "rollout resume --plan",
        &[Format::Table, Format::Json, Format::Yaml],
    )?;
    let store = ctx.open_store_consistent()?;
    let resumed = resume_plan(
        store.as_ref(),
        &ctx.layout(),
        plan,
        &actor(ctx.env),
        args.reason.clone(),
    )?;
    if format != Format::Table {
        let result = serde_json::json!({ "plan": plan, "resumed": resumed });
        return output::print(&output::render(&result, format));
    }
    let mut text = format!("plan {plan}: resumed {}\n", count(resumed.len(), "step"));
    for r in &resumed {
        text.push_str(&format!(
            "  step {} ({}): rollout {} is now running{}\n",
            r.step,
            r.cluster,
            r.rollout,
            if r.direction == Direction::Back {
                " (rolling back)"
            } else {
                ""
            }
        ));
    }
    // The undo of a plan rollback goes on with the plan rollback.
    let undoing = resumed
        .iter()
        .any(|r| r.rollout == format!("{plan}.undo-{}", r.step));
    text.push_str(&if undoing {
        format!("run `convergent rollout rollback --plan {plan}` again to go on\n")
    } else if resumed.iter().any(|r| r.direction == Direction::Back) {
        format!("run plan {plan} again to go on (it finishes the steps rolling back first)\n")
    } else {
        format!("run plan {plan} again to go on\n")
    });
    output::print_text(&text)
}

fn control(ctx: &Context, args: &RolloutControlArgs, action: Control) -> Result<()> {
    let verb = match action {
        Control::Pause => "pause",
        Control::Resume => "resume",
        Control::Abort => "abort",
        Control::Promote => "promote",
    };
    let format = ctx.format(
        &format!("rollout {verb}"),
        &[Format::Table, Format::Json, Format::Yaml],
    )?;
    check_name(NameKind::Cluster, &args.cluster).map_err(Error::BadName)?;
    let store = ctx.open_store_consistent()?;
    let state = orchestrator::control(
        store.as_ref(),
        &ctx.layout(),
        &args.cluster,
        action,
        &actor(ctx.env),
        args.reason.clone(),
    )?;
    let status = serde_json::to_value(state.status).expect("serializes");
    if format != Format::Table {
        let result = serde_json::json!({
            "cluster": args.cluster,
            "rollout": state.id,
            "status": status,
            "plan": state.plan,
        });
        return output::print(&output::render(&result, format));
    }
    output::print_text(&format!(
        "{}: rollout {} is now {}{}\n",
        args.cluster,
        state.id,
        status.as_str().unwrap_or_default(),
        match action {
            Control::Resume => format!("; run plan {} again to go on", state.plan),
            Control::Promote => " and promoted: the batches after the first go out".into(),
            _ => String::new(),
        }
    ))
}

fn status(ctx: &Context, args: &RolloutStatusArgs) -> Result<()> {
    let format = ctx.format(
        "rollout status",
        &[Format::Table, Format::Json, Format::Yaml],
    )?;
    if let Some(c) = &args.cluster {
        check_name(NameKind::Cluster, c).map_err(Error::BadName)?;
    }
    let store = ctx.open_store_consistent()?;
    let member_ttl = args.member_ttl.map_or(ctx.settings.member_ttl, |d| d.0);
    let (views, unreadable) = orchestrator::rollouts(
        store.as_ref(),
        &ctx.layout(),
        args.cluster.as_deref(),
        member_ttl,
    )?;
    print_rollouts(format, args, &views)?;
    // The readable ones are shown; then the others are named, exit 65.
    match unreadable.len() {
        0 => Ok(()),
        1 => Err(unreadable.into_iter().next().expect("one")),
        _ => Err(Error::Invalid {
            subject: "some rollout records".into(),
            problems: unreadable.iter().map(ToString::to_string).collect(),
        }),
    }
}

fn print_rollouts(
    format: Format,
    args: &RolloutStatusArgs,
    views: &[orchestrator::RolloutView],
) -> Result<()> {
    if format != Format::Table {
        return output::print(&output::render(&views, format));
    }
    if views.is_empty() {
        return output::print_text(&match &args.cluster {
            Some(c) => format!("{c}: no active rollout\n"),
            None => "no active rollouts\n".to_string(),
        });
    }
    let mut rows = vec![[
        "CLUSTER",
        "ROLLOUT",
        "STEP",
        "STATUS",
        "THRESHOLD",
        "RELEASED",
        "CONVERGED",
        "FAILED",
        "HELD",
        "ABSENT",
    ]
    .map(String::from)
    .to_vec()];
    for v in views {
        let r = &v.record;
        let status = serde_json::to_value(r.status)
            .expect("serializes")
            .as_str()
            .unwrap_or_default()
            .to_string();
        rows.push(vec![
            v.cluster.clone(),
            r.id.clone(),
            v.step.to_string(),
            if r.direction == Direction::Back {
                format!("{status} (rolling back)")
            } else {
                status
            },
            format!("{:.6}", r.threshold),
            v.released.to_string(),
            v.converged.to_string(),
            v.failed.to_string(),
            v.held.to_string(),
            v.absent.to_string(),
        ]);
    }
    let mut text = columns(&rows);
    text.push_str(&plan_graphs_text(views));
    for v in views {
        if let Some(reason) = &v.record.reason {
            text.push_str(&format!("\n{}: {reason}\n", v.cluster));
        }
        text.push_str(&held_text(v));
        text.push_str(&format!("\n{} history (newest last):\n", v.cluster));
        for e in v.record.history.iter().rev().take(10).rev() {
            text.push_str(&format!(
                "  {}  {}  {}: {}\n",
                e.time, e.actor, e.event, e.detail
            ));
        }
    }
    output::print_text(&text)
}

/// For each plan with `after:` among `views`: its steps, where each
/// stands and what it waits for, and which run together now.
fn plan_graphs_text(views: &[orchestrator::RolloutView]) -> String {
    let mut text = String::new();
    let mut shown = std::collections::BTreeSet::new();
    for v in views.iter().filter(|v| !v.plan_steps.is_empty()) {
        if !shown.insert(v.record.plan.as_str()) {
            continue;
        }
        let label = |n: usize| {
            v.plan_steps
                .iter()
                .find(|s| s.step.step == n)
                .map_or(format!("step {n}"), |s| match &s.step.name {
                    Some(name) => format!("step {n} \"{name}\" ({})", s.step.cluster),
                    None => format!("step {n} ({})", s.step.cluster),
                })
        };
        text.push_str(&format!(
            "\nplan {}: steps start when the steps they wait for are done\n",
            v.record.plan
        ));
        let mut rows = vec![["  STEP", "STANDING", "AFTER"].map(String::from).to_vec()];
        for s in &v.plan_steps {
            rows.push(vec![
                format!("  {}", label(s.step.step)),
                s.standing.clone(),
                if s.step.after.is_empty() {
                    "-".into()
                } else {
                    s.step
                        .after
                        .iter()
                        .map(|&n| label(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]);
        }
        text.push_str(&columns(&rows));
        // Only the steps moving now: a paused or aborted one is not running.
        let together: Vec<String> = v
            .plan_steps
            .iter()
            .filter(|s| s.standing == "running" || s.standing == "rolling back")
            .map(|s| label(s.step.step))
            .collect();
        if together.len() > 1 {
            text.push_str(&format!("  running together: {}\n", together.join(", ")));
        }
    }
    text
}

/// Why the latest batch is held: awaiting promotion, the released nodes'
/// health, and each holding node with why (which check, since when).
fn held_text(v: &orchestrator::RolloutView) -> String {
    let mut text = String::new();
    if let (Some(since), None) = (&v.record.awaiting_promotion_since, &v.record.promoted_by) {
        text.push_str(&format!(
            "\n{}: awaiting promotion since {since}: `convergent rollout promote {}` releases the rest\n",
            v.cluster, v.cluster
        ));
    }
    let h = v.health;
    if h.healthy + h.unhealthy > 0 {
        text.push_str(&format!(
            "{}: released nodes' health: {} healthy, {} unhealthy, {} unknown\n",
            v.cluster, h.healthy, h.unhealthy, h.unknown
        ));
    }
    if v.holding_count > 0 {
        text.push_str(&format!(
            "{}: batch {} is held by {}:\n",
            v.cluster,
            v.record.batches,
            count(v.holding_count, "node")
        ));
        for line in &v.holding {
            text.push_str(&format!("  {line}\n"));
        }
        if v.holding_count > v.holding.len() {
            text.push_str(&format!(
                "  … and {} more\n",
                v.holding_count - v.holding.len()
            ));
        }
    }
    text
}

/// Picks how progress is shown: JSON lines, a live line on a terminal, or
/// one log line per event.
fn observer_for(ctx: &Context) -> Box<dyn Observer> {
    match ctx.settings.format {
        Some(Format::Json) => Box::new(JsonLines),
        _ if std::io::stdout().is_terminal() => Box::new(LiveLine { open: false }),
        _ => Box::new(LogLines),
    }
}

/// One JSON object per event, for automation.
struct JsonLines;

impl Observer for JsonLines {
    fn notify(&mut self, progress: &Progress) {
        let mut value = serde_json::to_value(progress).expect("progress serializes");
        value["time"] = serde_json::json!(now_rfc3339());
        println!("{value}");
    }
}

/// One timestamped line per event.
struct LogLines;

impl Observer for LogLines {
    fn notify(&mut self, progress: &Progress) {
        println!("{} {}", now_rfc3339(), output::visible(&describe(progress)));
    }
}

/// Events on their own lines, the waiting counts on one line kept up to date.
struct LiveLine {
    open: bool,
}

impl Observer for LiveLine {
    fn notify(&mut self, progress: &Progress) {
        let mut out = std::io::stdout().lock();
        let text = output::visible(&describe(progress));
        if matches!(progress, Progress::Waiting { .. }) {
            let _ = write!(out, "\r\x1b[K{text}");
            self.open = true;
        } else {
            let _ = writeln!(
                out,
                "{}{} {text}",
                if self.open { "\r\x1b[K" } else { "" },
                now_rfc3339()
            );
            self.open = false;
        }
        let _ = out.flush();
    }
}

fn describe(progress: &Progress) -> String {
    match progress {
        Progress::StepStarted { step, steps, cluster, rollout, members } => {
            format!("step {step}/{steps}: cluster {cluster}, rollout {rollout}, {members} members")
        }
        Progress::Moved { cluster, direction, batch, nodes, threshold } => format!(
            "{cluster}: {} batch {batch} ({}, threshold {threshold:.6}): {}",
            if *direction == Direction::Forward { "released" } else { "took back" },
            count(nodes.len(), "node"),
            orchestrator::short_list(nodes, " ")
        ),
        Progress::Waiting { cluster, watched, converged, failed, pending, absent, elapsed_s } => format!(
            "{cluster}: {watched} watched: {converged} converged, {pending} pending, {failed} failed; {absent} absent; {elapsed_s}s since the last batch"
        ),
        Progress::Kicked { cluster, nodes, failures } if failures.is_empty() => {
            format!("{cluster}: kicked {}", count(*nodes, "node"))
        }
        Progress::Kicked { cluster, nodes, failures } => {
            format!("{cluster}: kicked {}, {} failed: {}", count(*nodes, "node"), failures.len(), failures.join("; "))
        }
        Progress::WaitingForConstraints { cluster, waiting_for } => format!(
            "{cluster}: the next batch waits for other tiers: {}",
            waiting_for.join("; ")
        ),
        Progress::StoreUnavailable { cluster, reason } => format!("{cluster}: the store cannot be reached, trying again: {reason}"),
        Progress::AwaitingPromotion { cluster, batches } => format!(
            "{cluster}: batch {batches} passed its gate; waiting for `convergent rollout promote {cluster}` (promote: manual)"
        ),
        Progress::Stopped { cluster, reason } => format!("{cluster}: stopped: {reason}"),
        Progress::StepDone { step, cluster } => format!("step {step} done: {cluster}'s patch is now part of its desired state"),
        Progress::PlanDone { plan } => format!("plan {plan} completed"),
        Progress::RolledBack { cluster, rollout, plan, all_at_once, earlier_steps, stay_applied, .. } => {
            let this = if *all_at_once {
                format!("{cluster}: rollout {rollout} removed at once: no node is released any more; each returns to the previous desired state on its next run (none was waited for)")
            } else {
                format!("{cluster}: rollout {rollout} rolled back batch by batch: every present node it had released has reported the previous desired state")
            };
            match earlier_steps {
                0 => this,
                1 => format!(
                    "{this}; {stay_applied} of plan {plan} stays applied (`convergent rollout rollback --plan {plan}` undoes it)"
                ),
                _ => format!(
                    "{this}; {stay_applied} of plan {plan} stay applied (`convergent rollout rollback --plan {plan}` undoes them)"
                ),
            }
        }
        Progress::PlanRolledBack { plan, undone, all_at_once } => format!(
            "plan {plan} rolled back{}: {}",
            if *all_at_once { " all at once (desired states restored; nodes return on their next run, none was waited for)" } else { "" },
            undone.join("; ")
        ),
    }
}
