//! `history` and `revert`: what happened to a cluster — its recorded changes
//! and its rollout events — and undoing one change with a new, recorded,
//! compare-and-set write (like `kubectl rollout history` / `undo`).

use serde::Serialize;
use serde_json::Value;

use crate::cli::{HistoryArgs, RevertArgs};
use crate::commands::edit::{edit, Target};
use crate::commands::Context;
use crate::document::{fold_each, generation, get_path, parse_path, remove_path, set_path};
use crate::error::{Error, Result};
use crate::history::{entries, Change};
use crate::layout::{check_name, NameKind};
use crate::output::{self, columns, Format};
use crate::rollout::state::Event;

/// One line of a cluster's history.
#[derive(Serialize)]
struct Line {
    /// The change's id, for `revert`; none for a rollout event.
    entry: Option<String>,
    time: String,
    actor: String,
    /// `set`, `import`, `revert`, … or `rollout <id>` for an event.
    what: String,
    /// The document changed, relative to the prefix.
    key: Option<String>,
    /// What changed, or the event's detail.
    detail: String,
    reason: Option<String>,
    forced: bool,
}

/// A change's id: the start of the hash of its content, stable as the
/// bounded history drops older entries.
pub fn entry_id(change: &Change) -> String {
    generation(&serde_json::to_value(change).expect("a change serializes"))[..8].to_string()
}

fn describe(change: &Change) -> String {
    // A long value (a list of members) is cut short: the JSON has it whole.
    let show = |v: &Option<Value>| {
        let text = v.as_ref().map_or("(unset)".to_string(), |v| v.to_string());
        match text.char_indices().nth(40) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text,
        }
    };
    if change.changes.is_empty() {
        return "-".into();
    }
    change
        .changes
        .iter()
        .map(|c| format!("{} {} -> {}", c.path, show(&c.from), show(&c.to)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A rollout event and what recorded it (`rollout ID`, `plan NAME`).
type SourcedEvent = (String, Event);

/// Reads a cluster's changes and the events of its rollouts (the active
/// one's, and the step events plans recorded for the cluster).
fn read(ctx: &Context, cluster: &str) -> Result<(Vec<Change>, Vec<SourcedEvent>)> {
    let layout = ctx.layout();
    let keys = [
        layout.history(cluster),
        layout.rollout(cluster),
        layout.key("plans"),
        layout.desired(cluster),
        layout.schema(cluster),
    ];
    let store = ctx.open_store()?;
    let snapshot = store.read_trees(&keys)?;
    let docs = fold_each(&keys, &snapshot.trees)?;
    if docs[0].is_none() && docs[3].is_none() && docs[4].is_none() {
        return Err(Error::bad_key(
            &keys[3],
            format!("unknown cluster {cluster:?}: nothing is stored for it"),
        ));
    }
    let changes = entries(docs[0].as_ref());
    let mut events = Vec::new();
    let as_events = |v: Option<&Value>| -> Vec<Event> {
        v.and_then(|h| serde_json::from_value(h.clone()).ok())
            .unwrap_or_default()
    };
    if let Some(record) = &docs[1] {
        let id = record.get("id").and_then(Value::as_str).unwrap_or("?");
        for e in as_events(record.get("history")) {
            events.push((format!("rollout {id}"), e));
        }
    }
    // Plans record "step N: CLUSTER, rollout ID" when a step starts or ends.
    let marker = format!(": {cluster}, rollout ");
    if let Some(Value::Object(plans)) = &docs[2] {
        for (name, plan) in plans {
            for e in as_events(plan.get("history")) {
                if e.detail.contains(&marker) {
                    events.push((format!("plan {name}"), e));
                }
            }
        }
    }
    Ok((changes, events))
}

/// Runs `history`.
pub fn show(ctx: &Context, args: &HistoryArgs) -> Result<()> {
    let format = ctx.format("history", &[Format::Table, Format::Json, Format::Yaml])?;
    check_name(NameKind::Cluster, &args.cluster).map_err(Error::BadName)?;
    let layout = ctx.layout();
    let (changes, events) = read(ctx, &args.cluster)?;
    let mut lines: Vec<Line> = changes
        .iter()
        .map(|c| Line {
            entry: Some(entry_id(c)),
            time: c.time.clone(),
            actor: c.actor.clone(),
            what: c.command.clone(),
            key: Some(layout.relative(&c.key).unwrap_or(&c.key).to_string()),
            detail: describe(c),
            reason: c.reason.clone(),
            forced: c.forced,
        })
        .chain(events.into_iter().map(|(what, e)| Line {
            entry: None,
            time: e.time,
            actor: e.actor,
            what: format!("{what} {}", e.event),
            key: None,
            detail: e.detail,
            reason: None,
            forced: false,
        }))
        .collect();
    // Oldest first; a change before the events of the same second.
    lines.sort_by(|a, b| {
        a.time
            .cmp(&b.time)
            .then(b.entry.is_some().cmp(&a.entry.is_some()))
    });
    if let Some(limit) = args.limit {
        lines.drain(..lines.len().saturating_sub(limit));
    }
    if format != Format::Table {
        let out = serde_json::json!({"cluster": args.cluster, "history": lines});
        return output::print(&output::render(&out, format));
    }
    if lines.is_empty() {
        return output::print_text(&format!("{}: no recorded changes\n", args.cluster));
    }
    let mut rows = vec![
        ["ENTRY", "TIME", "ACTOR", "WHAT", "KEY", "CHANGE", "REASON"]
            .map(String::from)
            .to_vec(),
    ];
    for l in &lines {
        rows.push(vec![
            l.entry.clone().unwrap_or_else(|| "-".into()),
            l.time.clone(),
            output::visible(&l.actor),
            format!("{}{}", l.what, if l.forced { " (forced)" } else { "" }),
            l.key.clone().unwrap_or_else(|| "-".into()),
            output::visible(&l.detail),
            l.reason.as_deref().map(output::visible).unwrap_or_default(),
        ]);
    }
    output::print_text(&columns(&rows))
}

/// Runs `revert`: sets each value the entry changed back to what it was
/// before (or removes it where it was unset), as a `set` would — the
/// schema checked, compare-and-set, recorded with the entry it undoes.
pub fn revert(ctx: &Context, args: &RevertArgs) -> Result<()> {
    check_name(NameKind::Cluster, &args.cluster).map_err(Error::BadName)?;
    let layout = ctx.layout();
    let (changes, _) = read(ctx, &args.cluster)?;
    let matching: Vec<&Change> = changes
        .iter()
        .filter(|c| entry_id(c).starts_with(&args.entry))
        .collect();
    let change = match matching.as_slice() {
        [one] if !args.entry.is_empty() => *one,
        [] | [_] => {
            return Err(Error::Usage(format!(
                "no entry {:?} in the history of {}: `convergent history {}` lists them",
                args.entry, args.cluster, args.cluster
            )))
        }
        _ => {
            return Err(Error::Usage(format!(
                "{:?} matches {} entries of {}'s history: give more of its id",
                args.entry,
                matching.len(),
                args.cluster
            )))
        }
    };
    let relative = layout.relative(&change.key).unwrap_or_default();
    let parts: Vec<&str> = relative.split('/').collect();
    let node = match parts.as_slice() {
        ["clusters", c, "desired"] if *c == args.cluster => None,
        ["clusters", c, "nodes", n] if *c == args.cluster => Some(*n),
        _ => {
            return Err(Error::Usage(format!(
                "entry {} changed {}: only a cluster's desired document and its node overrides can be reverted",
                args.entry, change.key
            )))
        }
    };
    if change.changes.is_empty() {
        return Err(Error::Usage(format!(
            "entry {} records no value changes: nothing to revert",
            args.entry
        )));
    }
    let id = entry_id(change);
    let restore: Vec<(Vec<String>, Option<Value>)> = change
        .changes
        .iter()
        .map(|c| Ok((parse_path(&c.path).map_err(Error::Usage)?, c.from.clone())))
        .collect::<Result<_>>()?;
    let reason = match &args.reason {
        Some(why) => format!("revert of {id}: {why}"),
        None => format!(
            "revert of {id} ({} by {} at {})",
            change.command, change.actor, change.time
        ),
    };
    let target = Target {
        cluster: &args.cluster,
        node,
        create: false,
        reason: Some(reason),
        command: "revert",
        preview: &args.preview,
    };
    let (_, before) = edit(ctx, &target, |doc, _| {
        for (path, before) in &restore {
            match before {
                Some(value) => set_path(doc, path, value.clone()).map_err(|blocker| {
                    Error::Usage(format!(
                        "cannot restore {}: {} now holds a value that is not a map",
                        path.join("."),
                        blocker.join(".")
                    ))
                })?,
                None => {
                    remove_path(doc, path);
                }
            }
        }
        Ok(())
    })?;
    // Restoring over a later change: say what is being overwritten.
    for c in &change.changes {
        let path: Vec<String> = c.path.split('.').map(str::to_string).collect();
        let now = before.as_ref().and_then(|d| get_path(d, &path));
        if now != c.to.as_ref() {
            crate::output::warn(&format!(
                "convergent: warning: {} changed again after {id} (now {}); restored to {} anyway",
                c.path,
                now.map_or("unset".to_string(), Value::to_string),
                c.from
                    .as_ref()
                    .map_or("unset".to_string(), Value::to_string),
            ));
        }
    }
    Ok(())
}
