//! Who changed the desired state: a bounded list of changes kept per cluster
//! at `P/clusters/C/history`, newest last, written in the same transaction as
//! the change itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::now_rfc3339;
use crate::document::{display_path, leaves};
use crate::env::Env;
use crate::error::{Error, Result};

/// How many changes a cluster's history keeps.
pub const LIMIT: usize = 100;

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// Who: `user@host`, or `$CONVERGENT_ACTOR`.
    pub actor: String,
    /// The command that made it (`set`, `unset`, `rollout`, …).
    pub command: String,
    /// The document changed.
    pub key: String,
    /// What changed in it.
    pub changes: Vec<FieldChange>,
    /// Why, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Made with `--force`, past what the cluster schema's transitions allow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// One value that changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Dotted path in the document.
    pub path: String,
    /// The value before; absent when the key is new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// The value after; absent when the key was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

impl Change {
    /// A change made now by this process's actor.
    pub fn now(
        env: Env,
        command: &str,
        key: &str,
        changes: Vec<FieldChange>,
        reason: Option<String>,
    ) -> Change {
        Change::by(&actor(env), command, key, changes, reason)
    }

    /// A change made now by `actor`, already known (the orchestrator's).
    pub fn by(
        actor: &str,
        command: &str,
        key: &str,
        changes: Vec<FieldChange>,
        reason: Option<String>,
    ) -> Change {
        Change {
            time: now_rfc3339(),
            actor: actor.to_string(),
            command: command.to_string(),
            key: key.to_string(),
            changes,
            reason,
            forced: false,
        }
    }
}

/// Who is acting: `$CONVERGENT_ACTOR`, else the user (the one behind `sudo`
/// when there is one) at this host.
pub fn actor(env: Env) -> String {
    if let Some(actor) = env("CONVERGENT_ACTOR") {
        return actor;
    }
    let user = env("SUDO_USER")
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
        .or_else(login_name)
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{}", hostname(env))
}

/// The name of this process's user from `/etc/passwd`, for shells and
/// services that set no `$USER`.
fn login_name() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&uid.as_str()))
        .map(|f| f[0].to_string())
        .or(Some(format!("uid-{uid}")))
}

/// This machine's host name.
pub fn hostname(env: Env) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| "unknown-host".into())
}

/// The leaf-level differences between two documents.
pub fn diff(old: Option<&Value>, new: Option<&Value>) -> Vec<FieldChange> {
    let flat = |doc: Option<&Value>| -> BTreeMap<Vec<String>, Value> {
        doc.map(|d| leaves(d).into_iter().map(|(p, v)| (p, v.clone())).collect())
            .unwrap_or_default()
    };
    let (before, after) = (flat(old), flat(new));
    let mut paths: Vec<&Vec<String>> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| FieldChange {
            path: display_path(p),
            from: before.get(p).cloned(),
            to: after.get(p).cloned(),
        })
        .collect()
}

/// A document's changes as `-`/`+` lines under its key, for `--diff`.
pub fn diff_text(key: &str, changes: &[FieldChange]) -> String {
    let mut out = format!("{key}\n");
    for f in changes {
        if let Some(from) = &f.from {
            out.push_str(&format!("-   {}: {from}\n", f.path));
        }
        if let Some(to) = &f.to {
            out.push_str(&format!("+   {}: {to}\n", f.path));
        }
    }
    out
}

/// The history document with `change` appended, oldest entries dropped past
/// [`LIMIT`]. `key` names the history key in errors.
pub fn append(history: Option<&Value>, key: &str, change: Change) -> Result<Value> {
    let mut entries = match history {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries.clone(),
        Some(other) => {
            return Err(Error::bad_key(
                key,
                format!("the history must be a list, found {other}"),
            ))
        }
    };
    entries.push(serde_json::to_value(change).expect("a change serializes"));
    let excess = entries.len().saturating_sub(LIMIT);
    entries.drain(..excess);
    Ok(Value::Array(entries))
}

/// Reads a history document; entries that do not parse are skipped.
pub fn entries(history: Option<&Value>) -> Vec<Change> {
    match history {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_lists_changed_added_and_removed_leaves() {
        let d = diff(
            Some(&json!({"state": "converged", "a": 1, "gone": true})),
            Some(&json!({"state": "off", "a": 1, "new": [1]})),
        );
        let paths: Vec<&str> = d.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["gone", "new", "state"]);
        assert_eq!(d[0].to, None);
        assert_eq!(d[1].from, None);
        assert_eq!(d[2].from, Some(json!("converged")));
    }

    #[test]
    fn history_is_bounded_and_refuses_non_lists() {
        let env = |_: &str| None;
        let mut h = None;
        for i in 0..(LIMIT + 5) {
            let c = Change::now(&env, "set", "k", vec![], Some(format!("{i}")));
            h = Some(append(h.as_ref(), "p/clusters/web/history", c).unwrap());
        }
        let list = entries(h.as_ref());
        assert_eq!(list.len(), LIMIT);
        assert_eq!(list.last().unwrap().reason.as_deref(), Some("104"));
        let err = append(
            Some(&json!({"x": 1})),
            "p/clusters/web/history",
            Change::now(&env, "set", "k", vec![], None),
        )
        .unwrap_err();
        assert!(err.to_string().contains("p/clusters/web/history"));
    }

    #[test]
    fn actor_prefers_the_explicit_then_the_sudo_user() {
        let env = |name: &str| match name {
            "SUDO_USER" => Some("alice".to_string()),
            "USER" => Some("root".to_string()),
            _ => None,
        };
        assert!(actor(&env).starts_with("alice@"));
        let env = |name: &str| (name == "CONVERGENT_ACTOR").then(|| "ci-job-42".to_string());
        assert_eq!(actor(&env), "ci-job-42");
    }
}
