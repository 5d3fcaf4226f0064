//! Compatibility constraints between clusters, as data.
//!
//! A cluster's desired document (or a rollout patch) may say what it needs
//! of other clusters, and what it offers them:
//!
//! ```yaml
//! desired:
//!   version: "2.5.0"
//!   requires:
//!     db: { version: ">=5.1, <6", min: 100% }   # semver range; min: share or count
//!   offers: { api: "3.2" }                       # optional; `version` is offered anyway
//! ```
//!
//! A constraint is evaluated against what the other cluster's nodes checked
//! in (`P/observed/OTHER/N`, the `offers` of each success report within the
//! member TTL), never against what is desired: a db that is *asked* to run
//! 5.1 does not satisfy web until its nodes *report* 5.1.
//!
//! Every key of a constraint other than `min` names a value the other nodes
//! offer: a string is a semver range (`">=5.1, <6"`), any other scalar must
//! be equal. An offered version may be short (`"5.1"` reads as `5.1.0`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::layout::{check_name, NameKind};
use crate::report::{ObservedReport, ReportStatus};

/// The key of a desired document that declares constraints.
pub const REQUIRES: &str = "requires";
/// The key of a desired document that declares what a node offers.
pub const OFFERS: &str = "offers";
/// Most clusters one state may require: each is one more tree a node
/// reads, so a document cannot make every node read the whole view.
pub const MAX_REQUIRED: usize = 16;

/// How much of the other cluster must match.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Share {
    /// This percentage of the live nodes (rounded up), at least one node.
    Percent(f64),
    /// At least this many live nodes.
    Count(u64),
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Share::Percent(p) => write!(f, "{p}% of nodes"),
            Share::Count(n) => write!(f, "{n} node(s)"),
        }
    }
}

impl Share {
    /// How many of `live` nodes must match (never fewer than one: a cluster
    /// nobody reported from satisfies nothing).
    pub fn needed(self, live: usize) -> usize {
        let n = match self {
            Share::Percent(p) => ((p / 100.0) * live as f64 - 1e-9).ceil().max(0.0) as usize,
            Share::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        n.max(1)
    }
}

/// What one key of a constraint accepts.
#[derive(Clone, Debug, PartialEq)]
pub enum Matcher {
    /// A semver range, with its text as written.
    Range(VersionReq, String),
    /// Any other scalar: the offered value must be equal.
    Exact(Value),
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Range(_, text) => f.write_str(text),
            Matcher::Exact(v) => write!(f, "= {v}"),
        }
    }
}

impl Matcher {
    /// Whether an offered value is accepted.
    pub fn accepts(&self, offered: Option<&Value>) -> bool {
        match (self, offered) {
            (Matcher::Range(req, _), Some(v)) => {
                lenient_version(v).is_some_and(|v| req.matches(&v))
            }
            (Matcher::Exact(want), Some(v)) => want == v,
            (_, None) => false,
        }
    }
}

/// A version as nodes offer it: `"5.1"` is `5.1.0`, `5` is `5.0.0`.
pub fn lenient_version(v: &Value) -> Option<Version> {
    let text = match v {
        Value::String(s) => s.trim().trim_start_matches('v').to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if let Ok(v) = Version::parse(&text) {
        return Some(v);
    }
    // Pad the numeric core to three parts, keeping any pre-release or build.
    let split = text.find(['-', '+']).unwrap_or(text.len());
    let (core, rest) = text.split_at(split);
    let parts = core.split('.').count();
    if parts == 0 || parts >= 3 {
        return None;
    }
    let padded = format!("{core}{}{rest}", ".0".repeat(3 - parts));
    Version::parse(&padded).ok()
}

/// One cluster's requirement on another.
#[derive(Clone, Debug, PartialEq)]
pub struct Requirement {
    /// The cluster required.
    pub cluster: String,
    /// What its nodes must offer, by key.
    pub keys: BTreeMap<String, Matcher>,
    /// How many of its live nodes must.
    pub min: Share,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|(k, m)| format!("{k} {m}")).collect();
        write!(f, "{}: {} on {}", self.cluster, keys.join(", "), self.min)
    }
}

/// The requirements a desired document declares under `requires`; the
/// error names the path (`requires.db.version`) and what is wrong.
pub fn requirements(desired: &Value) -> Result<Vec<Requirement>, String> {
    let Some(requires) = desired.get(REQUIRES) else {
        return Ok(Vec::new());
    };
    let Some(map) = requires.as_object() else {
        return Err(format!(
            "`{REQUIRES}` must be a map of cluster names to constraints, found {requires}"
        ));
    };
    if map.len() > MAX_REQUIRED {
        return Err(format!(
            "`{REQUIRES}` names {} clusters; at most {MAX_REQUIRED} may be required",
            map.len()
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (cluster, constraint) in map {
        let at = format!("{REQUIRES}.{cluster}");
        check_name(NameKind::Cluster, cluster).map_err(|e| format!("`{at}`: {e}"))?;
        let Some(fields) = constraint.as_object() else {
            return Err(format!(
                "`{at}` must be a map such as {{version: \">=5.1, <6\"}}, found {constraint}"
            ));
        };
        let mut keys = BTreeMap::new();
        let mut min = Share::Percent(100.0);
        for (key, value) in fields {
            let at = format!("{at}.{key}");
            if key == "min" {
                min = parse_share(value).map_err(|e| format!("`{at}`: {e}"))?;
                continue;
            }
            let matcher = match value {
                Value::String(text) => VersionReq::parse(text)
                    .map(|req| Matcher::Range(req, text.clone()))
                    .map_err(|e| format!("`{at}`: {text:?} is not a semver range: {e}"))?,
                Value::Number(_) | Value::Bool(_) => Matcher::Exact(value.clone()),
                other => {
                    return Err(format!(
                        "`{at}` must be a semver range (a string) or a scalar, found {other}"
                    ))
                }
            };
            keys.insert(key.clone(), matcher);
        }
        if keys.is_empty() {
            return Err(format!(
                "`{at}` names no key to check (such as `version: \">=5.1\"`)"
            ));
        }
        out.push(Requirement {
            cluster: cluster.clone(),
            keys,
            min,
        });
    }
    Ok(out)
}

fn parse_share(v: &Value) -> Result<Share, String> {
    match v {
        Value::String(s) => {
            let Some(p) = s.trim().strip_suffix('%') else {
                return Err(format!(
                    "{s:?} is neither a percentage (\"80%\") nor a count (3)"
                ));
            };
            match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Share::Percent(p)),
                _ => Err(format!("{s:?} is not a percentage between 0% and 100%")),
            }
        }
        Value::Number(n) => n
            .as_u64()
            .map(Share::Count)
            .ok_or_else(|| format!("{n} is not a whole number of nodes")),
        other => Err(format!(
            "must be a percentage (\"80%\") or a count (3), found {other}"
        )),
    }
}

/// What a node offers other clusters, from its desired document: the map
/// under `offers`, plus `version` when the document has a scalar one and
/// `offers` does not name it.
pub fn offers(desired: &Value) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = desired
        .get(OFFERS)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_object() && !v.is_array())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(v) = desired
        .get("version")
        .filter(|v| v.is_string() || v.is_number())
    {
        out.entry("version".into()).or_insert_with(|| v.clone());
    }
    out
}

/// How one requirement fares against the other cluster's reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The cluster required.
    pub cluster: String,
    /// The requirement, as text (`db: version >=5.1, <6 on 100% of nodes`).
    pub requires: String,
    /// Nodes of that cluster that reported within the member TTL.
    pub live: usize,
    /// Of those, how many reported success with matching offers.
    pub matching: usize,
    /// How many must match.
    pub needed: usize,
    /// Whether it holds.
    pub met: bool,
    /// The offered values of the required keys, with how many live nodes
    /// offer each (`version=5.0.0: 3`).
    pub observed: BTreeMap<String, usize>,
}

impl Check {
    /// One line for people: what is awaited, when not met.
    pub fn waiting_for(&self) -> String {
        format!(
            "{} ({} of {} live node(s) match, {} needed)",
            self.requires, self.matching, self.live, self.needed
        )
    }
}

/// Evaluates `req` against the reports of its cluster's nodes (as
/// [`crate::fleet::Fleet::reports_by_node`] reads them); reports older than
/// `member_ttl` are of absent nodes and count for nothing.
pub fn evaluate(
    req: &Requirement,
    reports: &BTreeMap<String, Result<ObservedReport, String>>,
    member_ttl: Duration,
    now: SystemTime,
) -> Check {
    let mut live = 0;
    let mut matching = 0;
    let mut observed: BTreeMap<String, usize> = BTreeMap::new();
    for report in reports.values().filter_map(|r| r.as_ref().ok()) {
        let age = report
            .reported_time()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        if age > member_ttl {
            continue;
        }
        live += 1;
        let label: Vec<String> = req
            .keys
            .keys()
            .map(|k| {
                let v = offered(report, k);
                format!("{k}={}", v.as_ref().map_or("?".to_string(), plain))
            })
            .collect();
        let status = if report.status == ReportStatus::Success {
            ""
        } else {
            " (failed)"
        };
        *observed
            .entry(format!("{}{status}", label.join(",")))
            .or_default() += 1;
        if report.status == ReportStatus::Success
            && req
                .keys
                .iter()
                .all(|(k, m)| m.accepts(offered(report, k).as_ref()))
        {
            matching += 1;
        }
    }
    let needed = req.min.needed(live);
    Check {
        cluster: req.cluster.clone(),
        requires: req.to_string(),
        live,
        matching,
        needed,
        met: matching >= needed,
        observed,
    }
}

/// What a report offers under `key`: its `offers`, else, for `version`,
/// the version the report names (check-ins record it on their own).
pub fn offered(report: &ObservedReport, key: &str) -> Option<Value> {
    report.offers.get(key).cloned().or_else(|| {
        (key == "version")
            .then(|| report.version.clone().map(Value::String))
            .flatten()
    })
}

/// An offered value as people read it, escaped.
pub fn plain(v: &Value) -> String {
    match v {
        // Offered values come from nodes' reports: escaped, so a control
        // character in one cannot rewrite a terminal line.
        Value::String(s) => s.escape_default().to_string(),
        other => other.to_string(),
    }
}

/// What `attributes` says about a node's constraints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintStatus {
    /// Whether the constraints of the node's desired state hold.
    pub met: bool,
    /// What is awaited, one line per unmet constraint.
    #[serde(default)]
    pub waiting_for: Vec<String>,
    /// When not met, what the node resolved to instead: `previous` (the
    /// cluster's desired state without the rollout patch), `earlier` (an
    /// earlier desired state of the cluster, from its history) or `hold`
    /// (the schema's hold state).
    #[serde(default)]
    pub held_to: Option<String>,
    /// Generation of the desired state that was held back.
    #[serde(default)]
    pub held_generation: Option<String>,
    /// Every constraint checked, of the state held back (or applied).
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// Whether the `requires` of a desired state allow it: cycles of clusters
/// whose constraints each wait for the other to move first.
///
/// `edges` maps each cluster to the clusters its desired state requires; a
/// cycle among them can never be satisfied from a cold start, because every
/// member waits for a report the other can only give after moving. Returns
/// each cycle found, as the list of its clusters.
pub fn cycles(edges: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut done: Vec<String> = Vec::new();
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        walk(edges, &mut path, &mut found, &done);
        done.push(start.clone());
    }
    found
}

fn walk(
    edges: &BTreeMap<String, Vec<String>>,
    path: &mut Vec<String>,
    found: &mut Vec<Vec<String>>,
    done: &[String],
) {
    let here = path.last().expect("the path starts with a cluster").clone();
    for next in edges.get(&here).into_iter().flatten() {
        if done.contains(next) {
            continue;
        }
        if next == &path[0] {
            found.push(path.clone());
        } else if !path.contains(next) {
            path.push(next.clone());
            walk(edges, path, found, done);
            path.pop();
        }
    }
}

/// One cluster's desired state as a view declares it: the standing
/// document, and the one its active rollout moves nodes to.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredCluster {
    /// Key of the desired document, for messages.
    pub key: String,
    /// `P/clusters/C/desired` (defaults merged under it).
    pub standing: Value,
    /// The standing document with the rollout patch over it, when a rollout
    /// is active.
    pub next: Option<Value>,
}

impl DeclaredCluster {
    /// The state the cluster ends in.
    fn end(&self) -> &Value {
        self.next.as_ref().unwrap_or(&self.standing)
    }
}

/// Checks the constraints of a whole view: every range parses, every
/// cluster required exists, each requirement is met by the end state of
/// the cluster it names (otherwise it could never hold), and no clusters
/// wait for each other in a cycle (each one's next state needs the other's
/// next state first, so none can ever move). Problems name the key.
pub fn check_declared(clusters: &BTreeMap<String, DeclaredCluster>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut waits: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, c) in clusters {
        for doc in std::iter::once(&c.standing).chain(c.next.as_ref()) {
            let reqs = match requirements(doc) {
                Ok(reqs) => reqs,
                Err(e) => {
                    problems.push(format!("{}: {e}", c.key));
                    continue;
                }
            };
            for req in reqs {
                let Some(other) = clusters.get(&req.cluster) else {
                    problems.push(format!(
                        "{}: `{REQUIRES}.{}` names a cluster the view does not have",
                        c.key, req.cluster
                    ));
                    continue;
                };
                // Only the state the cluster ends in must be satisfiable:
                // the standing one is on its way out.
                if !std::ptr::eq(doc, c.end()) {
                    continue;
                }
                let satisfied_by =
                    |doc: &Value| req.keys.iter().all(|(k, m)| m.accepts(offers(doc).get(k)));
                if !satisfied_by(other.end()) {
                    problems.push(format!(
                        "{}: `{REQUIRES}.{}` ({req}) is not met even by {}'s own desired state ({}), so it could never hold",
                        c.key,
                        req.cluster,
                        req.cluster,
                        serde_json::to_string(&offers(other.end())).expect("offers serialize")
                    ));
                } else if !satisfied_by(&other.standing) {
                    waits
                        .entry(name.clone())
                        .or_default()
                        .push(req.cluster.clone());
                }
            }
        }
    }
    for cycle in cycles(&waits) {
        let mut shown = cycle.clone();
        shown.push(cycle[0].clone());
        problems.push(format!(
            "{}: clusters wait for each other in a cycle ({}): each one's next state needs the next one's new version reported first, so none can ever move",
            clusters[&cycle[0]].key,
            shown.join(" -> ")
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(offers: Value, status: ReportStatus, at: &str) -> ObservedReport {
        ObservedReport {
            generation: "0123456789abcdef".into(),
            status,
            state: Some("converged".into()),
            reported_at: at.into(),
            duration_s: None,
            message: None,
            convergent_version: "0.1.0".into(),
            stale: false,
            version: None,
            health: None,
            offers: serde_json::from_value(offers).unwrap(),
        }
    }

    fn now() -> SystemTime {
        crate::clock::parse_rfc3339("2026-12-06T12:00:00Z").unwrap()
    }

    #[test]
    fn parses_ranges_shares_and_exact_keys() {
        let reqs = requirements(&json!({"requires": {
            "db": {"version": ">=5.1, <6", "min": "50%", "protocol": 3}
        }}))
        .unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].min, Share::Percent(50.0));
        assert_eq!(
            reqs[0].to_string(),
            "db: protocol = 3, version >=5.1, <6 on 50% of nodes"
        );
        assert!(requirements(&json!({"version": "1"})).unwrap().is_empty());
    }

    #[test]
    fn bad_constraints_name_the_path() {
        for (doc, want) in [
            (json!({"requires": "db"}), "`requires` must be a map"),
            (
                json!({"requires": {"db": {"version": "five"}}}),
                "`requires.db.version`",
            ),
            (
                json!({"requires": {"db": {"version": ">=1", "min": "150%"}}}),
                "`requires.db.min`",
            ),
            (json!({"requires": {"db": {"min": 2}}}), "names no key"),
            (
                json!({"requires": (0..17).map(|i| (format!("c{i}"), json!({"version": "1"}))).collect::<serde_json::Map<_, _>>()}),
                "at most 16 may be required",
            ),
            (
                json!({"requires": {"$(id)": {"version": ">=1"}}}),
                "invalid cluster name",
            ),
            (
                json!({"requires": {"db": {"version": [1]}}}),
                "`requires.db.version` must be",
            ),
        ] {
            let err = requirements(&doc).unwrap_err();
            assert!(err.contains(want), "{doc}: {err}");
        }
    }

    #[test]
    fn short_versions_read_leniently() {
        assert_eq!(lenient_version(&json!("5.1")), Some(Version::new(5, 1, 0)));
        assert_eq!(lenient_version(&json!(5)), Some(Version::new(5, 0, 0)));
        assert_eq!(
            lenient_version(&json!("v2.5.1")),
            Some(Version::new(2, 5, 1))
        );
        assert!(!lenient_version(&json!("5.1-rc1")).unwrap().pre.is_empty());
        assert_eq!(lenient_version(&json!("banana")), None);
        assert_eq!(lenient_version(&json!(true)), None);
    }

    #[test]
    fn offers_include_the_version() {
        assert_eq!(
            offers(&json!({"version": "5.1", "offers": {"api": 3, "deep": {"x": 1}}})),
            BTreeMap::from([("api".into(), json!(3)), ("version".into(), json!("5.1"))])
        );
        assert!(offers(&json!({"state": "off"})).is_empty());
    }

    #[test]
    fn evaluates_live_success_reports_only() {
        let req = &requirements(&json!({"requires": {"db": {"version": ">=5.1"}}})).unwrap()[0];
        let ttl = Duration::from_secs(600);
        let fresh = "2026-12-06T11:59:00Z";
        let mut reports = BTreeMap::new();
        reports.insert(
            "db-1".to_string(),
            Ok(report(
                json!({"version": "5.1"}),
                ReportStatus::Success,
                fresh,
            )),
        );
        reports.insert(
            "db-2".to_string(),
            Ok(report(
                json!({"version": "5.0"}),
                ReportStatus::Success,
                fresh,
            )),
        );
        let check = evaluate(req, &reports, ttl, now());
        assert_eq!(
            (check.live, check.matching, check.needed, check.met),
            (2, 1, 2, false)
        );
        assert_eq!(check.observed["version=5.0"], 1);
        // db-2 went away long ago: it no longer counts.
        reports.insert(
            "db-2".to_string(),
            Ok(report(
                json!({"version": "5.0"}),
                ReportStatus::Success,
                "2026-12-01T00:00:00Z",
            )),
        );
        assert!(evaluate(req, &reports, ttl, now()).met);
        // A failed run at 5.1 does not show 5.1 running.
        reports.insert(
            "db-1".to_string(),
            Ok(report(
                json!({"version": "5.1"}),
                ReportStatus::Failure,
                fresh,
            )),
        );
        assert!(!evaluate(req, &reports, ttl, now()).met);
        // Nobody reporting satisfies nothing.
        assert!(!evaluate(req, &BTreeMap::new(), ttl, now()).met);
    }

    #[test]
    fn shares_round_up_and_need_one_node() {
        assert_eq!(Share::Percent(100.0).needed(3), 3);
        assert_eq!(Share::Percent(50.0).needed(3), 2);
        assert_eq!(Share::Percent(0.0).needed(3), 1);
        assert_eq!(Share::Count(2).needed(10), 2);
        assert_eq!(Share::Percent(100.0).needed(0), 1);
    }

    fn declared(standing: Value, next: Option<Value>) -> DeclaredCluster {
        DeclaredCluster {
            key: "k".into(),
            standing,
            next,
        }
    }

    #[test]
    fn declared_views_are_checked() {
        let ok = BTreeMap::from([
            (
                "web".to_string(),
                declared(
                    json!({"version": "2.4"}),
                    Some(json!({"version": "2.5", "requires": {"db": {"version": ">=5.1"}}})),
                ),
            ),
            (
                "db".to_string(),
                declared(json!({"version": "5.0"}), Some(json!({"version": "5.1"}))),
            ),
        ]);
        assert!(check_declared(&ok).is_empty());

        let mut never = ok.clone();
        never.get_mut("db").unwrap().next = None;
        let problems = check_declared(&never);
        assert!(problems[0].contains("could never hold"), "{problems:?}");

        let mut missing = ok.clone();
        missing.remove("db");
        assert!(check_declared(&missing)[0].contains("does not have"));

        let mut cyclic = ok.clone();
        cyclic.get_mut("db").unwrap().next =
            Some(json!({"version": "5.1", "requires": {"web": {"version": ">=2.5"}}}));
        let problems = check_declared(&cyclic);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("db -> web -> db"), "{problems:?}");
    }

    #[test]
    fn finds_cycles() {
        let edges = BTreeMap::from([
            ("web".to_string(), vec!["db".to_string()]),
            ("db".to_string(), vec!["cache".to_string()]),
            ("cache".to_string(), vec!["db".to_string()]),
        ]);
        let found = cycles(&edges);
        assert_eq!(found, vec![vec!["cache".to_string(), "db".to_string()]]);
        let acyclic = BTreeMap::from([("web".to_string(), vec!["db".to_string()])]);
        assert!(cycles(&acyclic).is_empty());
    }
}
