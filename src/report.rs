//! A node's check-in: what it converged to, kept at `P/observed/C/N`.
//!
//! ```yaml
//! observed:
//!   web:
//!     web-01:
//!       generation: e19f2a67e710ae94   # of the desired state it applied
//!       status: success                 # or failure
//!       state: converged
//!       reported_at: "2026-11-25T10:00:00Z"
//!       duration_s: 42.1                # when given
//!       convergent_version: 0.1.0
//!       stale: false                    # it converged to a cached desired state
//!       health:                         # when the run succeeded (see crate::health)
//!         healthy: true
//!         checked_at: "2026-11-25T10:05:00Z"
//!         healthy_since: "2026-11-25T10:00:00Z"
//!         checks: [{ name: http, source: view, passed: true, output: HTTP 200, elapsed_ms: 3 }]
//!       offers: { version: "2.4.1" }     # for other clusters' `requires`
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::parse_rfc3339;
use crate::document::is_generation;
use crate::health::Health;

/// Longest message kept in a report.
pub const MAX_MESSAGE: usize = 1000;

/// How the node's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    /// The run converged to the generation reported.
    Success,
    /// The run failed.
    Failure,
}

impl fmt::Display for ReportStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReportStatus::Success => "success",
            ReportStatus::Failure => "failure",
        })
    }
}

/// A node's last check-in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedReport {
    /// Generation of the desired state the run applied.
    pub generation: String,
    /// How the run ended.
    pub status: ReportStatus,
    /// The desired `state` the run applied, when known.
    #[serde(default)]
    pub state: Option<String>,
    /// The desired `version` the run applied, when the desired state has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the node reported (RFC 3339, UTC).
    pub reported_at: String,
    /// How long the run took, in seconds, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// A short message (the exception class of a failed run, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `convergent` version that reported.
    #[serde(default)]
    pub convergent_version: String,
    /// The run used a cached desired state (the store was unreachable).
    #[serde(default)]
    pub stale: bool,
    /// What the node offers other clusters' constraints (its desired
    /// `version` and `offers`), when it reported from an attributes file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub offers: BTreeMap<String, Value>,
    /// The node's health checks at this generation, when it ran them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

impl ObservedReport {
    /// Reads a report document; says what is wrong otherwise.
    pub fn from_document(doc: &Value) -> Result<ObservedReport, String> {
        let report = ObservedReport::deserialize(doc).map_err(|e| format!("not a report: {e}"))?;
        report.checked()
    }

    /// Reads a report stored as one JSON value, without building a document
    /// first: how `status` reads 10,000 of them quickly.
    pub fn from_json(raw: &[u8]) -> Result<ObservedReport, String> {
        let report: ObservedReport =
            serde_json::from_slice(raw).map_err(|e| format!("not a report: {e}"))?;
        report.checked()
    }

    fn checked(self) -> Result<ObservedReport, String> {
        let report = self;
        if !is_generation(&report.generation) {
            return Err(format!(
                "generation {:?} is not 16 hex digits",
                report.generation
            ));
        }
        report.reported_time()?;
        Ok(report)
    }

    /// When it was reported.
    pub fn reported_time(&self) -> Result<SystemTime, String> {
        parse_rfc3339(&self.reported_at)
    }
}

/// Cuts a message to [`MAX_MESSAGE`] characters on a character boundary.
pub fn bounded_message(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_report_and_refuses_bad_ones() {
        let ok = json!({"generation": "0123456789abcdef", "status": "success", "state": "off",
                        "reported_at": "2026-11-25T10:00:00Z", "convergent_version": "0.1.0", "future_field": 1});
        let r = ObservedReport::from_document(&ok).unwrap();
        assert_eq!(r.status, ReportStatus::Success);
        assert!(!r.stale);
        for bad in [
            json!({"generation": "xyz", "status": "success", "reported_at": "2026-11-25T10:00:00Z"}),
            json!({"generation": "0123456789abcdef", "status": "maybe", "reported_at": "2026-11-25T10:00:00Z"}),
            json!({"generation": "0123456789abcdef", "status": "success", "reported_at": "yesterday"}),
            json!("success"),
        ] {
            assert!(ObservedReport::from_document(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_are_bounded() {
        assert_eq!(bounded_message("short"), "short");
        let long = "é".repeat(MAX_MESSAGE + 10);
        assert_eq!(bounded_message(&long).chars().count(), MAX_MESSAGE + 1);
    }
}
