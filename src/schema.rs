//! A cluster's schema (`P/clusters/C/schema`): the states its desired
//! document may be in, and optionally which transitions between them are
//! allowed.
//!
//! ```yaml
//! schema:
//!   states: ["off", waiting, converged]
//!   transitions:            # optional; without it any change is allowed
//!     "off": [waiting]
//!     waiting: ["off", converged]
//!     converged: ["off", waiting]
//!   hold: waiting           # optional; taken while `requires` are not met
//!   strings: [version]      # optional; dotted keys `set` always takes as text
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The validated schema of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Allowed values of `state`.
    pub states: Vec<String>,
    /// For each state, the states it may change to; `None` allows any change.
    #[serde(default)]
    pub transitions: Option<BTreeMap<String, Vec<String>>>,
    /// The state a node takes while the constraints of its desired state
    /// are not met and no earlier state is compatible (`waiting`).
    #[serde(default)]
    pub hold: Option<String>,
    /// Dotted keys whose values are strings: `set version=5.10` stores the
    /// text "5.10", not the number 5.1. `state` always is one.
    #[serde(default)]
    pub strings: Vec<String>,
}

impl Schema {
    /// Parses and checks the schema document stored at `key`.
    pub fn from_document(key: &str, doc: &Value) -> Result<Schema> {
        let schema: Schema = serde_json::from_value(doc.clone())
            .map_err(|e| Error::bad_key(key, format!("not a valid schema: {e}")))?;
        schema
            .check_consistent()
            .map_err(|problem| Error::bad_key(key, problem))?;
        Ok(schema)
    }

    fn check_consistent(&self) -> std::result::Result<(), String> {
        if self.states.is_empty() {
            return Err("`states` must list at least one state".into());
        }
        let mut seen = BTreeSet::new();
        for s in &self.states {
            if s.is_empty() {
                return Err("`states` has an empty state name".into());
            }
            if !seen.insert(s) {
                return Err(format!("`states` lists {s:?} twice"));
            }
        }
        if let Some(hold) = self.hold.as_ref().filter(|h| !seen.contains(h)) {
            return Err(format!(
                "`hold` is {hold:?}, which is not one of the states ({})",
                self.states.join(", ")
            ));
        }
        for (from, targets) in self.transitions.iter().flatten() {
            for s in std::iter::once(from).chain(targets) {
                if !seen.contains(s) {
                    return Err(format!(
                        "`transitions` mentions {s:?}, which is not one of the states ({})",
                        self.states.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether the value at the dotted `path` is always a string.
    pub fn is_string(&self, path: &str) -> bool {
        path == "state" || self.strings.iter().any(|s| s == path)
    }

    /// Checks that `state` is one of the schema's states.
    pub fn check_state(&self, state: &str) -> std::result::Result<(), String> {
        if self.states.iter().any(|s| s == state) {
            Ok(())
        } else {
            Err(format!(
                "state {state:?} is not allowed by the cluster schema (allowed: {}){}",
                self.states.join(", "),
                crate::suggest::hint(state, self.states.iter().map(String::as_str))
            ))
        }
    }

    /// Checks that a document may go from state `from` (none: it had none)
    /// to state `to`.
    pub fn check_transition(
        &self,
        from: Option<&str>,
        to: &str,
    ) -> std::result::Result<(), String> {
        self.check_state(to)?;
        let (Some(from), Some(transitions)) = (from, &self.transitions) else {
            return Ok(());
        };
        if from == to {
            return Ok(());
        }
        let allowed = transitions.get(from).map(Vec::as_slice).unwrap_or_default();
        if allowed.iter().any(|s| s == to) {
            Ok(())
        } else {
            Err(format!(
                "the transition {from:?} -> {to:?} is not allowed by the cluster schema (from {from:?} it allows: {})",
                if allowed.is_empty() { "nothing".to_string() } else { allowed.join(", ") }
            ))
        }
    }
}

/// The `state` of a desired document: must be a string when present.
pub fn state_of(doc: &Value) -> std::result::Result<Option<&str>, String> {
    match doc.get("state") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("`state` must be a string, found {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(doc: Value) -> Result<Schema> {
        Schema::from_document("p/clusters/web/schema", &doc)
    }

    #[test]
    fn states_are_enforced() {
        let s = schema(json!({"states": ["off", "waiting", "converged"]})).unwrap();
        assert!(s.check_state("off").is_ok());
        let err = s.check_state("of").unwrap_err();
        assert!(
            err.contains("\"of\"") && err.contains("off, waiting, converged"),
            "{err}"
        );
        assert!(
            s.check_transition(Some("converged"), "off").is_ok(),
            "no transitions: anything goes"
        );
    }

    #[test]
    fn transitions_are_enforced_when_given() {
        let s = schema(json!({
            "states": ["off", "waiting", "converged"],
            "transitions": {"off": ["waiting"], "waiting": ["converged", "off"], "converged": ["off"]}
        }))
        .unwrap();
        assert!(s.check_transition(Some("off"), "waiting").is_ok());
        assert!(
            s.check_transition(Some("off"), "off").is_ok(),
            "staying is always allowed"
        );
        assert!(
            s.check_transition(None, "converged").is_ok(),
            "a first state is not a transition"
        );
        let err = s.check_transition(Some("off"), "converged").unwrap_err();
        assert!(
            err.contains("\"off\" -> \"converged\"") && err.contains("waiting"),
            "{err}"
        );
        assert!(s.check_transition(Some("off"), "bogus").is_err());
    }

    #[test]
    fn malformed_schemas_are_refused_naming_the_key() {
        for bad in [
            json!({"states": []}),
            json!({"states": ["a", "a"]}),
            json!({"states": "off"}),
            json!({"states": ["a"], "transitions": {"a": ["b"]}}),
            json!({"states": ["a"], "stats": 1}),
        ] {
            let err = schema(bad.clone()).unwrap_err();
            assert!(
                err.to_string().contains("p/clusters/web/schema"),
                "{bad}: {err}"
            );
            assert_eq!(err.exit_code(), 65);
        }
    }

    #[test]
    fn state_must_be_a_string() {
        assert_eq!(state_of(&json!({"state": "off"})), Ok(Some("off")));
        assert_eq!(state_of(&json!({})), Ok(None));
        assert!(state_of(&json!({"state": 3})).is_err());
    }
}
