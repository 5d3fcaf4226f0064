//! Plan files: the orchestrator's input.
//!
//! ```yaml
//! name: web-2.4.1
//! steps:
//!   - cluster: web
//!     set: { state: "off" }
//!     wait: { timeout: 10m }
//!   - cluster: web
//!     set: { state: converged, version: "2.4.1" }
//!     strategy: { canary: 1, batch: 25%, pause: 30s, max_failed: 1 }
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::clock::HumanDuration;
use crate::error::{Error, Result};
use crate::layout::{check_name, NameKind};
use crate::local_file;
use crate::schema::state_of;
use crate::yaml_text;

/// A rollout plan: ordered steps, each changing one cluster's desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan's name; rollout ids derive from it.
    pub name: String,
    /// The steps, run in order.
    pub steps: Vec<Step>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The cluster whose desired document changes.
    pub cluster: String,
    /// The patch laid over the cluster's desired document.
    pub set: Map<String, Value>,
    /// How nodes are released.
    #[serde(default)]
    pub strategy: Strategy,
    /// When the step counts as done.
    #[serde(default)]
    pub wait: Wait,
    /// How newly released nodes are told to converge now.
    #[serde(default)]
    pub kick: Option<Kick>,
}

/// How a step releases nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// Nodes released first, on their own.
    #[serde(default)]
    pub canary: u32,
    /// Nodes per batch after the canary; default: all at once.
    #[serde(default = "Amount::all")]
    pub batch: Amount,
    /// Pause between batches.
    #[serde(default)]
    pub pause: HumanDuration,
    /// Failed reports tolerated before the rollout pauses.
    #[serde(default = "Amount::none")]
    pub max_failed: Amount,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            canary: 0,
            batch: Amount::all(),
            pause: HumanDuration::default(),
            max_failed: Amount::none(),
        }
    }
}

/// When a step is done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// Give up waiting (and pause the rollout) after this long.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Share of present members that must have converged; default 100%.
    #[serde(default)]
    pub min_converged: Option<Amount>,
}

/// How newly released nodes are kicked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kick {
    /// Command template run per node; `{node}` and `{cluster}` are replaced
    /// inside single arguments, no shell involved.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Name of a Consul event to fire instead.
    #[serde(default)]
    pub consul_event: Option<String>,
    /// Commands run at once, at most.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Bound on each command.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

/// A count of nodes, absolute (`3`) or relative (`25%`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// That many nodes.
    Count(u32),
    /// That share of the nodes, in percent (0–100].
    Percent(f64),
}

impl Amount {
    fn all() -> Amount {
        Amount::Percent(100.0)
    }

    fn none() -> Amount {
        Amount::Count(0)
    }

    /// The amount out of `total` nodes; a percentage rounds up.
    pub fn of(self, total: usize) -> usize {
        match self {
            Amount::Count(n) => n as usize,
            Amount::Percent(p) => ((p / 100.0) * total as f64).ceil() as usize,
        }
    }
}

impl FromStr for Amount {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            match p.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(Amount::Percent(p)),
                _ => Err(format!(
                    "{s:?} is not a percentage from 0% (excluded) to 100%"
                )),
            }
        } else {
            s.parse::<u32>()
                .map(Amount::Count)
                .map_err(|_| format!("{s:?} is not a number of nodes or a percentage such as 25%"))
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Amount::Count(n) => s.serialize_u32(*n),
            Amount::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => Ok(Amount::Count(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Plan {
    /// Reads, parses and checks a plan file.
    pub fn from_file(path: &Path) -> Result<Plan> {
        let text = local_file::read_text(path, local_file::MAX_DOCUMENT_BYTES).map_err(|e| {
            Error::BadFile {
                path: path.to_path_buf(),
                problem: format!("the file {e}"),
            }
        })?;
        Plan::parse(path, &text)
    }

    /// Parses and checks plan text; `path` is for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Plan> {
        let bad = |problem: String| Error::BadFile {
            path: path.to_path_buf(),
            problem: format!("not a valid plan: {problem}"),
        };
        yaml_text::check_nesting(text).map_err(bad)?;
        let plan: Plan =
            serde_yaml::from_str(text).map_err(|e| bad(yaml_text::redact(&e.to_string())))?;
        let problems = plan.problems();
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(Error::Invalid {
                subject: format!("plan {}", path.display()),
                problems,
            })
        }
    }

    /// Everything wrong with the plan that parsing alone does not catch.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = check_name(NameKind::Rollout, &self.name) {
            problems.push(format!("name: {e}"));
        }
        if self.steps.is_empty() {
            problems.push("steps: a plan needs at least one step".into());
        }
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("steps[{i}]");
            if let Err(e) = check_name(NameKind::Cluster, &step.cluster) {
                problems.push(format!("{at}.cluster: {e}"));
            }
            if step.set.is_empty() {
                problems.push(format!(
                    "{at}.set: the patch is empty; a step must change something"
                ));
            }
            if let Err(e) = state_of(&Value::Object(step.set.clone())) {
                problems.push(format!("{at}.set: {e}"));
            }
            if step.strategy.batch == Amount::Count(0) {
                problems.push(format!(
                    "{at}.strategy.batch: must release at least one node per batch"
                ));
            }
            if let Some(kick) = &step.kick {
                match (&kick.command, &kick.consul_event) {
                    (Some(c), None) if c.is_empty() => {
                        problems.push(format!("{at}.kick.command: the command is empty"))
                    }
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => problems.push(format!(
                        "{at}.kick: give exactly one of `command` or `consul_event`"
                    )),
                }
                if kick.concurrency == Some(0) {
                    problems.push(format!("{at}.kick.concurrency: must be at least 1"));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan> {
        Plan::parse(Path::new("plan.yml"), text)
    }

    #[test]
    fn parses_the_design_example() {
        let plan = parse(
            "name: web-2.4.1\nsteps:\n  - cluster: web\n    set: { state: 'off' }\n    wait: { timeout: 10m }\n  - cluster: db\n    set: { version: '5.1', state: converged }\n  - cluster: web\n    set: { state: converged, version: '2.4.1' }\n    strategy: { canary: 1, batch: 25%, pause: 30s, max_failed: 1 }\n",
        )
        .unwrap();
        assert_eq!(plan.steps.len(), 3);
        assert_eq!(plan.steps[2].strategy.batch, Amount::Percent(25.0));
        assert_eq!(plan.steps[2].strategy.max_failed, Amount::Count(1));
        assert_eq!(plan.steps[0].strategy.batch, Amount::Percent(100.0));
        assert_eq!(plan.steps[0].wait.timeout.unwrap().0.as_secs(), 600);
    }

    #[test]
    fn unknown_fields_are_reported_with_their_line() {
        let err = parse("name: x\nsteps:\n  - cluster: web\n    set: {state: 'off'}\n    strategy: {batchh: 2}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("batchh") && err.contains("line 5"), "{err}");
    }

    #[test]
    fn semantic_problems_are_all_listed() {
        let err = parse(
            "name: a/b\nsteps:\n  - cluster: 'we b'\n    set: {}\n    strategy: {batch: 0}\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "name:",
            "steps[0].cluster",
            "steps[0].set",
            "steps[0].strategy.batch",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[test]
    fn strategies_round_trip_through_json() {
        let plan = parse("name: p\nsteps:\n  - cluster: web\n    set: {v: 1}\n    strategy: {canary: 1, batch: 25%, pause: 30s, max_failed: 2}\n").unwrap();
        let json = serde_json::to_value(&plan.steps[0].strategy).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"canary": 1, "batch": "25%", "pause": "30s", "max_failed": 2})
        );
        let back: Strategy = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan.steps[0].strategy);
    }

    #[test]
    fn amounts() {
        assert_eq!("25%".parse::<Amount>().unwrap().of(10), 3);
        assert_eq!("3".parse::<Amount>().unwrap().of(10), 3);
        assert!("0%".parse::<Amount>().is_err());
        assert!("150%".parse::<Amount>().is_err());
        assert!("many".parse::<Amount>().is_err());
    }
}
