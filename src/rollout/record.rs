//! The rollout record at `P/rollouts/C`, as nodes read it.
//!
//! ```yaml
//! rollouts:
//!   web:
//!     id: web-2.4.1          # the rollout id: the seed of every node's rank
//!     status: running        # running, paused, aborted, rolling_back, …
//!     threshold: 0.25        # node N is released iff rank(id, N) <= threshold
//!     patch: {version: "2.4.1"}
//! ```
//!
//! The orchestrator keeps more fields in the same document (its step,
//! history, …); nodes ignore them.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::layout::{check_name, NameKind};

/// What a node needs to know of a cluster's active rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutRecord {
    /// The rollout id; seeds every node's rank.
    pub id: String,
    /// The orchestrator's status, passed through to the node.
    pub status: String,
    /// Release threshold `t` in [0, 1].
    pub threshold: f64,
    /// The patch laid over the cluster's desired document for released nodes.
    pub patch: Map<String, Value>,
}

impl RolloutRecord {
    /// Reads and checks the record stored at `key`.
    pub fn from_document(key: &str, doc: &Value) -> Result<RolloutRecord> {
        let bad = |problem: String| Error::bad_key(key, problem);
        let Value::Object(map) = doc else {
            return Err(bad("a rollout record must be a map".into()));
        };
        let id = match map.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(other) => return Err(bad(format!("`id` must be a string, found {other}"))),
            None => return Err(bad("the rollout record has no `id`".into())),
        };
        check_name(NameKind::Rollout, &id).map_err(bad)?;
        let status = match map.get("status") {
            None | Some(Value::Null) => "running".to_string(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "`status` must be a non-empty string, found {other}"
                )))
            }
        };
        // Absent is "nobody released yet"; an explicit `null` (an empty
        // `threshold:` line) is a mistake, not a number.
        let threshold = match map.get("threshold") {
            None => 0.0,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(t) if (0.0..=1.0).contains(&t) => t,
                _ => {
                    return Err(bad(format!(
                        "`threshold` must be a number from 0 to 1, found {n}"
                    )))
                }
            },
            Some(other) => {
                return Err(bad(format!(
                    "`threshold` must be a number from 0 to 1, found {other}"
                )))
            }
        };
        let patch = match map.get("patch") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(other) => return Err(bad(format!("`patch` must be a map, found {other}"))),
        };
        Ok(RolloutRecord {
            id,
            status,
            threshold,
            patch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_record_and_ignores_orchestrator_fields() {
        let r = RolloutRecord::from_document(
            "p/rollouts/web",
            &json!({"id": "web-2.4.1", "threshold": 0.5, "patch": {"version": "2.4.1"}, "step": 2, "history": []}),
        )
        .unwrap();
        assert_eq!(r.id, "web-2.4.1");
        assert_eq!(r.status, "running");
        assert_eq!(r.threshold, 0.5);
        assert_eq!(Value::Object(r.patch), json!({"version": "2.4.1"}));
    }

    #[test]
    fn refuses_bad_records_naming_the_key() {
        for bad in [
            json!("r1"),
            json!({"threshold": 0.5}),
            json!({"id": "a/b"}),
            json!({"id": "r", "threshold": 1.5}),
            json!({"id": "r", "threshold": "half"}),
            json!({"id": "r", "patch": [1]}),
            json!({"id": "r", "status": 3}),
        ] {
            let err = RolloutRecord::from_document("p/rollouts/web", &bad).unwrap_err();
            assert!(err.to_string().contains("p/rollouts/web"), "{bad}: {err}");
            assert_eq!(err.exit_code(), 65);
        }
    }
}
