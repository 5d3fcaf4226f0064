//! Node health: checks a node runs on the service it converged (an HTTP
//! answer, a TCP port, a command), and what its check-in says of them.
//!
//! Checks are declared in two places, both with the same shape:
//!
//! ```yaml
//! health:
//!   checks:
//!     http:  { http: "http://127.0.0.1:8080/health", timeout: 2s }
//!     port:  { tcp: "127.0.0.1:8080" }
//!     ready: { command: [/usr/local/bin/ready, --quiet], timeout: 10s }
//! ```
//!
//! - in the cluster's desired document (`desired.health.checks`), so an
//!   operator can require them of every node;
//! - in a file the recipe writes (`convergent_health_check` resources), passed
//!   with `--checks FILE` to `report`, `health` and `watch`.
//!
//! The check-in carries the results (bounded output), when they were taken,
//! and since when the node has been healthy *at this generation*: a failed
//! check or a new generation starts that clock again, so "healthy for 5
//! minutes" means continuously, on the desired state it converged to. Both
//! times are the node's own, so their difference does not depend on clocks
//! agreeing across the fleet.

mod probe;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::{parse_rfc3339, HumanDuration};
use crate::error::{Error, Result};
use crate::layout::{check_name, NameKind};

pub use probe::run_checks;

/// Most checks one node runs (view and recipe together).
pub const MAX_CHECKS: usize = 32;
/// Longest output kept of one check.
pub const MAX_OUTPUT: usize = 512;
/// A check's bound when it names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest bound a check may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Where a check was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckSource {
    /// `desired.health.checks` in the view.
    View,
    /// The recipe's checks file.
    Recipe,
}

/// What a check probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP GET answered with a 2xx status (or `expect_status`).
    Http {
        url: String,
        expect_status: Option<u16>,
    },
    /// A TCP connection accepted.
    Tcp { address: String },
    /// A command exiting 0 (argument array, no shell).
    Command { argv: Vec<String> },
}

/// One declared check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Its name (unique per node).
    pub name: String,
    /// Where it was declared.
    pub source: CheckSource,
    /// What it probes.
    pub probe: Probe,
    /// Its bound.
    pub timeout: Duration,
}

/// A check as written in the view or the recipe's file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckSpec {
    #[serde(default)]
    http: Option<String>,
    #[serde(default)]
    expect_status: Option<u16>,
    #[serde(default)]
    tcp: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<HumanDuration>,
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Where it was declared.
    pub source: CheckSource,
    /// Whether it passed.
    pub passed: bool,
    /// What it said, bounded to [`MAX_OUTPUT`] characters.
    #[serde(default)]
    pub output: String,
    /// How long it took, in milliseconds.
    #[serde(default)]
    pub elapsed_ms: u64,
}

/// The health part of a check-in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Every check passed (true when none is declared).
    pub healthy: bool,
    /// When the checks ran (the node's clock, RFC 3339).
    pub checked_at: String,
    /// Since when the node has been healthy without a break at the
    /// report's generation; absent while unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<String>,
    /// Since when it has been unhealthy without a break at the report's
    /// generation; absent while healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_since: Option<String>,
    /// Each check's result.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
}

impl Health {
    /// The health after checks taken at `checked_at`, given the node's
    /// previous health at the same generation (`None` after a new
    /// generation): a healthy node keeps its `healthy_since`, anything else
    /// starts it again.
    pub fn after(
        previous_same_generation: Option<&Health>,
        checks: Vec<CheckResult>,
        checked_at: String,
    ) -> Health {
        let healthy = checks.iter().all(|c| c.passed);
        let since = |was_healthy: bool, field: fn(&Health) -> &Option<String>| {
            previous_same_generation
                .filter(|p| p.healthy == was_healthy)
                .and_then(|p| field(p).clone())
                .unwrap_or_else(|| checked_at.clone())
        };
        let healthy_since = healthy.then(|| since(true, |h| &h.healthy_since));
        let unhealthy_since = (!healthy).then(|| since(false, |h| &h.unhealthy_since));
        Health {
            healthy,
            checked_at,
            healthy_since,
            unhealthy_since,
            checks,
        }
    }

    /// How long the node has been healthy without a break, as its own clock
    /// measured at its last check; `None` while unhealthy.
    pub fn healthy_for(&self) -> Option<Duration> {
        let since = parse_rfc3339(self.healthy_since.as_deref()?).ok()?;
        let at = parse_rfc3339(&self.checked_at).ok()?;
        Some(at.duration_since(since).unwrap_or_default())
    }

    /// The checks that failed.
    pub fn failing(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

/// The checks declared in a desired document (`health.checks`); `key`
/// names the document in errors.
pub fn checks_of_desired(key: &str, desired: &Value) -> Result<Vec<Check>> {
    match desired.get("health") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(health) => parse_checks(health, CheckSource::View)
            .map_err(|why| Error::bad_key(key, format!("health: {why}"))),
    }
}

/// The checks of the recipe's file (JSON or YAML, `{checks: {...}}`).
pub fn checks_of_file(path: &Path) -> Result<Vec<Check>> {
    let bad = |problem: String| Error::BadFile {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let doc: Value =
        serde_yaml::from_str(&text).map_err(|e| bad(format!("not JSON or YAML: {e}")))?;
    parse_checks(&doc, CheckSource::Recipe).map_err(bad)
}

/// Every check a node runs: the view's, then the recipe's; a name declared
/// in both is an error (one would silently hide the other).
pub fn combined(view: Vec<Check>, recipe: Vec<Check>) -> std::result::Result<Vec<Check>, String> {
    let mut seen = BTreeMap::new();
    for c in view.iter().chain(&recipe) {
        if let Some(other) = seen.insert(c.name.clone(), c.source) {
            return Err(format!(
                "check {:?} is declared twice ({} and {})",
                c.name,
                source_name(other),
                source_name(c.source)
            ));
        }
    }
    let all: Vec<Check> = view.into_iter().chain(recipe).collect();
    if all.len() > MAX_CHECKS {
        return Err(format!(
            "{} checks are declared; at most {MAX_CHECKS}",
            all.len()
        ));
    }
    Ok(all)
}

fn source_name(s: CheckSource) -> &'static str {
    match s {
        CheckSource::View => "in the view",
        CheckSource::Recipe => "by the recipe",
    }
}

fn parse_checks(doc: &Value, source: CheckSource) -> std::result::Result<Vec<Check>, String> {
    let Some(map) = doc.as_object() else {
        return Err("must be a map with `checks`".into());
    };
    if let Some(other) = map.keys().find(|k| *k != "checks") {
        return Err(format!("unknown key {other:?} (only `checks`)"));
    }
    let checks = match map.get("checks") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(c)) => c,
        Some(other) => {
            return Err(format!(
                "checks: must be a map of name to check, not {other}"
            ))
        }
    };
    if checks.len() > MAX_CHECKS {
        return Err(format!(
            "checks: {} declared; at most {MAX_CHECKS}",
            checks.len()
        ));
    }
    checks
        .iter()
        .map(|(name, spec)| {
            check_name(NameKind::Check, name).map_err(|e| format!("checks: {e}"))?;
            parse_check(name, spec, source).map_err(|e| format!("checks.{name}: {e}"))
        })
        .collect()
}

fn parse_check(
    name: &str,
    spec: &Value,
    source: CheckSource,
) -> std::result::Result<Check, String> {
    let spec = CheckSpec::deserialize(spec).map_err(|e| e.to_string())?;
    let timeout = spec.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(format!(
            "timeout: must be more than 0 and at most {}",
            HumanDuration(MAX_TIMEOUT)
        ));
    }
    let probe = match (spec.http, spec.tcp, spec.command) {
        (Some(url), None, None) => {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| format!("http: {url:?} is not an http:// or https:// URL"))?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            // A password in a URL would be stored in check-ins and printed.
            if authority.contains('@') {
                return Err(
                    "http: credentials in the URL are refused (they would be stored and shown)"
                        .into(),
                );
            }
            if authority.is_empty() {
                return Err(format!("http: {url:?} names no host"));
            }
            Probe::Http {
                url,
                expect_status: spec.expect_status,
            }
        }
        (None, Some(address), None) => {
            if address
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(format!("tcp: {address:?} is not HOST:PORT"));
            }
            Probe::Tcp { address }
        }
        (None, None, Some(argv)) => {
            if argv.first().is_none_or(String::is_empty) {
                return Err("command: the command is empty".into());
            }
            Probe::Command { argv }
        }
        _ => return Err("give exactly one of `http`, `tcp` or `command`".into()),
    };
    if spec.expect_status.is_some() && !matches!(probe, Probe::Http { .. }) {
        return Err("expect_status: only for `http` checks".into());
    }
    Ok(Check {
        name: name.to_string(),
        source,
        probe,
        timeout,
    })
}

/// Cuts a check's output to [`MAX_OUTPUT`] characters, control characters
/// made visible, on a character boundary.
pub fn bounded_output(text: &str) -> String {
    let clean: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect();
    match clean.char_indices().nth(MAX_OUTPUT) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean,
    }
}

/// A check's output on one line, bounded and with control characters made
/// visible (a stored check-in is not trusted to be clean).
pub fn one_line(text: &str) -> String {
    bounded_output(text).replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declared_checks_parse_and_bad_ones_are_named() {
        let desired = json!({"health": {"checks": {
            "http": {"http": "http://127.0.0.1:8080/health", "timeout": "2s"},
            "port": {"tcp": "127.0.0.1:8080"},
            "ready": {"command": ["/bin/true"]}
        }}});
        let checks = checks_of_desired("p/clusters/web/desired", &desired).unwrap();
        assert_eq!(checks.len(), 3);
        assert_eq!(checks[0].timeout, Duration::from_secs(2));
        assert_eq!(checks[1].timeout, DEFAULT_TIMEOUT);
        for (bad, needle) in [
            (
                json!({"checks": {"a": {"http": "ftp://x"}}}),
                "checks.a: http",
            ),
            (
                json!({"checks": {"a": {"http": "http://u:secret@h/"}}}),
                "credentials",
            ),
            (json!({"checks": {"a": {"tcp": "nohost"}}}), "HOST:PORT"),
            (json!({"checks": {"a": {"command": []}}}), "empty"),
            (
                json!({"checks": {"a": {"tcp": "h:1", "command": ["x"]}}}),
                "exactly one",
            ),
            (
                json!({"checks": {"a": {"tcp": "h:1", "timeout": "1h"}}}),
                "timeout",
            ),
            (
                json!({"checks": {"a": {"tcp": "h:1", "expect_status": 200}}}),
                "only for `http`",
            ),
            (
                json!({"checks": {"a b": {"tcp": "h:1"}}}),
                "checks: invalid check",
            ),
            (json!({"checks": [1]}), "map of name"),
            (json!({"chekcs": {}}), "unknown key"),
        ] {
            let err = checks_of_desired("k", &json!({ "health": bad }))
                .unwrap_err()
                .to_string();
            assert!(err.contains("k") && err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn a_name_declared_twice_is_refused() {
        let view =
            checks_of_desired("k", &json!({"health": {"checks": {"a": {"tcp": "h:1"}}}})).unwrap();
        let mut recipe = view.clone();
        recipe[0].source = CheckSource::Recipe;
        let err = combined(view, recipe).unwrap_err();
        assert!(err.contains("declared twice"), "{err}");
    }

    fn result(passed: bool) -> CheckResult {
        CheckResult {
            name: "c".into(),
            source: CheckSource::View,
            passed,
            output: String::new(),
            elapsed_ms: 1,
        }
    }

    #[test]
    fn healthy_since_survives_healthy_checks_and_resets_on_a_flap() {
        let t = |s: &str| format!("2026-12-01T10:{s}Z");
        let h1 = Health::after(None, vec![result(true)], t("00:00"));
        assert_eq!(h1.healthy_since.as_deref(), Some(t("00:00").as_str()));
        let h2 = Health::after(Some(&h1), vec![result(true)], t("05:00"));
        assert_eq!(h2.healthy_for(), Some(Duration::from_secs(300)));
        let flap = Health::after(Some(&h2), vec![result(true), result(false)], t("06:00"));
        assert!(!flap.healthy && flap.healthy_since.is_none() && flap.healthy_for().is_none());
        assert_eq!(flap.unhealthy_since.as_deref(), Some(t("06:00").as_str()));
        let still = Health::after(Some(&flap), vec![result(false)], t("06:30"));
        assert_eq!(
            still.unhealthy_since, flap.unhealthy_since,
            "unhealthy since the first failure"
        );
        let back = Health::after(Some(&flap), vec![result(true)], t("07:00"));
        assert_eq!(
            back.healthy_for(),
            Some(Duration::ZERO),
            "the timer starts again"
        );
        let new_generation = Health::after(None, vec![result(true)], t("08:00"));
        assert_eq!(
            new_generation.healthy_since.as_deref(),
            Some(t("08:00").as_str())
        );
        assert!(
            Health::after(None, vec![], t("09:00")).healthy,
            "no checks: healthy"
        );
    }

    #[test]
    fn output_is_bounded_and_clean() {
        assert_eq!(bounded_output(" ok\x1b[31m \n"), "ok?[31m");
        assert_eq!(
            bounded_output(&"x".repeat(2000)).chars().count(),
            MAX_OUTPUT + 1
        );
    }
}
