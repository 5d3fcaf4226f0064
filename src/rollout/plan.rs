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
//!   - cluster: api
//!     set: { version: "3.0" }
//!     strategy: { batch: [1, 5, 25%], max_failed: 0, on_failure: rollback, promote: manual }
//!     wait: { healthy: true, min_healthy: 5m, healthy_deadline: 15m, timeout: 30m }
//! ```
//!
//! A step runs after the step before it, unless it says `after:` — the
//! names of the steps it waits for (`after: []`: from the start). Steps
//! whose `after:` steps are done run at the same time (see [`super::graph`]).

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

mod parallel;

/// A rollout plan: steps, each changing one cluster's desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan's name; rollout ids derive from it.
    pub name: String,
    /// The steps: each after the one before it, unless it says `after:`.
    pub steps: Vec<Step>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step's name, for `after:` (host-like, unique in the plan).
    // Skipped when absent: a plan without names keeps the digest it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The steps this one waits for; absent: the step before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
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
    /// Where the step is in the file, for messages, when that is not
    /// `steps[N]` (a step inside a `parallel:` group).
    #[serde(skip)]
    pub place: Option<String>,
}

impl Step {
    /// Where the step is in its plan file: `steps[2]`, or
    /// `steps[1].parallel[0]` for a step of a `parallel:` group.
    pub fn place(&self, index: usize) -> String {
        self.place
            .clone()
            .unwrap_or_else(|| format!("steps[{index}]"))
    }
}

/// How a step releases nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// Nodes released first, on their own.
    #[serde(default)]
    pub canary: u32,
    /// Nodes per batch after the canary: one size, or a list of sizes
    /// whose last one repeats (`[1, 5, 25%]`); default: all at once.
    #[serde(default = "BatchSizes::all")]
    pub batch: BatchSizes,
    /// Pause between batches.
    #[serde(default)]
    pub pause: HumanDuration,
    /// Failed (or, with `wait.healthy`, unhealthy) nodes tolerated before the
    /// rollout stops.
    #[serde(default = "Amount::none")]
    pub max_failed: Amount,
    /// What too many failures do: pause, or roll the step back batch by batch.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_failure: OnFailure,
    /// Whether the batches after the first wait for `rollout promote`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub promote: Promote,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            canary: 0,
            batch: BatchSizes::all(),
            pause: HumanDuration::default(),
            max_failed: Amount::none(),
            on_failure: OnFailure::default(),
            promote: Promote::default(),
        }
    }
}

/// What a step does when more nodes fail than `max_failed` allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop releasing; an operator resumes or rolls back.
    #[default]
    Pause,
    /// Take the step back batch by batch, highest ranks first, without a person.
    Rollback,
}

/// Whether the rest of a step waits for an operator after its first batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promote {
    /// The first batch (the canary) promotes itself once it passes its gate
    /// (with `wait.min_healthy`: once healthy that long).
    #[default]
    Auto,
    /// After the first batch passes its gate, nothing more is released until
    /// `convergent rollout promote CLUSTER`.
    Manual,
}

/// Batch sizes: one for every batch, or a list whose last size repeats.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSizes(pub Vec<Amount>);

impl BatchSizes {
    fn all() -> BatchSizes {
        BatchSizes(vec![Amount::all()])
    }

    /// The size of batch `index` (from 0, the canary not counted).
    pub fn at(&self, index: usize) -> Amount {
        self.0
            .get(index)
            .or(self.0.last())
            .copied()
            .unwrap_or(Amount::all())
    }
}

impl fmt::Display for BatchSizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                let shown: Vec<String> = many.iter().map(Amount::to_string).collect();
                write!(f, "[{}]", shown.join(", "))
            }
        }
    }
}

impl Serialize for BatchSizes {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSizes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(Amount),
            Many(Vec<Amount>),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "batch: expected a number of nodes, a percentage such as 25%, or a list of them such as [1, 5, 25%]",
            )
        })? {
            Raw::One(a) => Ok(BatchSizes(vec![a])),
            Raw::Many(list) => Ok(BatchSizes(list)),
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
    /// A node counts as converged only when its health checks pass too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub healthy: bool,
    /// ... and have passed without a break for this long at the new
    /// generation (implies `healthy`); a failed check starts it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy: Option<HumanDuration>,
    /// A node still not healthy this long after its batch moved counts as
    /// failed (against `max_failed`); without it, it holds the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_deadline: Option<HumanDuration>,
    /// How long a release may wait for other tiers' check-ins to meet the
    /// step's constraints before the rollout pauses; default: `timeout`
    /// (none: it waits until they hold or an operator stops it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints_timeout: Option<HumanDuration>,
}

impl Wait {
    /// Whether the gate asks for health.
    pub fn wants_health(&self) -> bool {
        self.healthy || self.min_healthy.is_some() || self.healthy_deadline.is_some()
    }

    /// How long a release may wait for other tiers' constraints.
    pub fn constraints_limit(&self) -> Option<HumanDuration> {
        self.constraints_timeout.or(self.timeout)
    }
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
        let plan: Plan = match parallel::expand(text).map_err(&bad)? {
            // Without `parallel:`, serde reads the text itself: its errors
            // say on which line.
            None => {
                serde_yaml::from_str(text).map_err(|e| bad(yaml_text::redact(&e.to_string())))?
            }
            Some(plan) => plan,
        };
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
            let at = step.place(i);
            if let Some(Err(e)) = step.name.as_deref().map(|n| check_name(NameKind::Step, n)) {
                problems.push(format!("{at}.name: {e}"));
            }
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
            if step.strategy.batch.0.is_empty() {
                problems.push(format!(
                    "{at}.strategy.batch: the list of batch sizes is empty"
                ));
            }
            if step.strategy.batch.0.contains(&Amount::Count(0)) {
                problems.push(format!(
                    "{at}.strategy.batch: must release at least one node per batch"
                ));
            }
            if let (Some(min), Some(deadline)) = (step.wait.min_healthy, step.wait.healthy_deadline)
            {
                if deadline <= min {
                    problems.push(format!(
                        "{at}.wait.healthy_deadline: {deadline} is not longer than min_healthy {min}: no node could ever pass"
                    ));
                }
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
        problems.extend(super::graph::problems(self));
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
        assert_eq!(plan.steps[2].strategy.batch.at(0), Amount::Percent(25.0));
        assert_eq!(plan.steps[2].strategy.max_failed, Amount::Count(1));
        assert_eq!(plan.steps[0].strategy.batch.at(7), Amount::Percent(100.0));
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
    fn batch_lists_health_waits_and_failure_modes() {
        let plan = parse("name: p\nsteps:\n  - cluster: web\n    set: {v: 1}\n    strategy: {batch: [1, 5, 25%], on_failure: rollback, promote: manual}\n    wait: {healthy: true, min_healthy: 1m, healthy_deadline: 5m}\n").unwrap();
        let s = &plan.steps[0].strategy;
        assert_eq!(
            (0..5).map(|i| s.batch.at(i)).collect::<Vec<_>>(),
            [
                Amount::Count(1),
                Amount::Count(5),
                Amount::Percent(25.0),
                Amount::Percent(25.0),
                Amount::Percent(25.0)
            ]
        );
        assert_eq!(s.batch.to_string(), "[1, 5, 25%]");
        assert_eq!(
            (s.on_failure, s.promote),
            (OnFailure::Rollback, Promote::Manual)
        );
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["batch"], serde_json::json!([1, 5, "25%"]));
        assert_eq!(serde_json::from_value::<Strategy>(json).unwrap(), *s);
        assert!(plan.steps[0].wait.wants_health());
        for (bad, needle) in [
            ("strategy: {batch: []}", "list of batch sizes is empty"),
            ("strategy: {batch: [1, 0]}", "at least one node"),
            ("strategy: {batch: [1, many]}", "or a list of them"),
            ("strategy: {on_failure: explode}", "on_failure"),
            (
                "wait: {min_healthy: 5m, healthy_deadline: 1m}",
                "no node could ever pass",
            ),
        ] {
            let text = format!("name: p\nsteps:\n  - cluster: web\n    set: {{v: 1}}\n    {bad}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
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
