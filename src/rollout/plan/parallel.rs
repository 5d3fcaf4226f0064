//! `parallel:` in a plan's steps: sugar for `after:`, expanded when the
//! plan is read, so the orchestrator and its records only ever see steps.
//!
//! ```yaml
//! steps:
//!   - { name: off, cluster: web, set: { state: "off" } }
//!   - parallel:
//!       - { name: db, cluster: db, set: { version: "5.1" } }
//!       - { name: cache, cluster: cache, set: { version: "7" } }
//!   - { cluster: web, set: { state: converged } }
//! ```
//!
//! The group's steps start together once the entry before the group is
//! done (`after: [off]`), and the entry after the group waits for all of
//! them (`after: [db, cache]`). Steps are numbered in file order, a
//! group's steps one by one; messages name a group's step by where it is
//! (`steps[1].parallel[0]`).

use serde_yaml::{Mapping, Value};

use super::{Plan, Step};
use crate::yaml_text;

/// What the entry before the one being expanded was.
enum Before {
    /// Nothing: the entry starts with the plan.
    Start,
    /// A step, with its name if it has one and its place in the file.
    Step { name: Option<String>, at: String },
    /// A `parallel:` group, with its steps' names.
    Group(Vec<String>),
}

/// The plan in `text` with its `parallel:` groups expanded into steps with
/// `after:`, or `None` when it has no group (then serde reads the text
/// itself, and its errors keep their line numbers). Errors name the entry.
pub fn expand(text: &str) -> Result<Option<Plan>, String> {
    let mut doc: Value =
        serde_yaml::from_str(text).map_err(|e| yaml_text::redact(&e.to_string()))?;
    let Some(entries) = doc.get("steps").and_then(Value::as_sequence) else {
        return Ok(None);
    };
    if !entries.iter().any(is_group) {
        return Ok(None);
    }
    let entries = entries.clone();
    let mut steps = Vec::new();
    let mut before = Before::Start;
    for (i, entry) in entries.into_iter().enumerate() {
        let Value::Mapping(mut map) = entry else {
            return Err(format!("steps[{i}]: a step must be a map"));
        };
        if !is_group_map(&map) {
            let at = format!("steps[{i}]");
            // The step after a group waits for all of its steps.
            if let (Before::Group(names), false) = (&before, map.contains_key("after")) {
                map.insert("after".into(), names_value(names));
            }
            let name = map.get("name").and_then(Value::as_str).map(String::from);
            steps.push(step(&at, map)?);
            before = Before::Step { name, at };
            continue;
        }
        if let Some(other) = map.keys().find(|k| k.as_str() != Some("parallel")) {
            return Err(format!(
                "steps[{i}]: a parallel: entry holds only `parallel:` (a list of steps), not `{}`",
                serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim_end()
                    .escape_default()
            ));
        }
        let members = match map.remove("parallel") {
            Some(Value::Sequence(members)) if !members.is_empty() => members,
            Some(Value::Sequence(_)) => {
                return Err(format!("steps[{i}].parallel: the group has no step"))
            }
            _ => return Err(format!("steps[{i}].parallel: must be a list of steps")),
        };
        let after = match &before {
            Before::Start => Vec::new(),
            Before::Step { name: Some(n), .. } => vec![n.clone()],
            Before::Step { name: None, at } => {
                return Err(format!(
                    "{at}: the step before the parallel: group at steps[{i}] needs a name: \
                     (the group's steps wait for it by name)"
                ))
            }
            Before::Group(names) => names.clone(),
        };
        let mut names = Vec::new();
        for (j, member) in members.into_iter().enumerate() {
            let at = format!("steps[{i}].parallel[{j}]");
            let Value::Mapping(mut member) = member else {
                return Err(format!("{at}: a step must be a map"));
            };
            if member.contains_key("parallel") {
                return Err(format!("{at}: parallel: groups do not nest"));
            }
            if member.contains_key("after") {
                return Err(format!(
                    "{at}.after: a step of a parallel: group starts when the entry before the group is done; \
                     it takes no after: of its own (use after: on plain steps instead)"
                ));
            }
            let Some(name) = member.get("name").and_then(Value::as_str) else {
                return Err(format!(
                    "{at}: a step of a parallel: group needs a name: (the entry after the group waits for it by name)"
                ));
            };
            names.push(name.to_string());
            member.insert("after".into(), names_value(&after));
            steps.push(step(&at, member)?);
        }
        before = Before::Group(names);
    }
    // The rest of the plan (its name, a key that has no business there) as
    // serde reads it.
    if let Some(map) = doc.as_mapping_mut() {
        map.insert("steps".into(), Value::Sequence(Vec::new()));
    }
    let mut plan: Plan =
        serde_yaml::from_value(doc).map_err(|e| yaml_text::redact(&e.to_string()))?;
    plan.steps = steps;
    Ok(Some(plan))
}

fn is_group(entry: &Value) -> bool {
    entry.as_mapping().is_some_and(is_group_map)
}

fn is_group_map(map: &Mapping) -> bool {
    map.contains_key("parallel")
}

fn names_value(names: &[String]) -> Value {
    Value::Sequence(names.iter().map(|n| Value::String(n.clone())).collect())
}

/// One step, read by serde; its errors say where it is.
fn step(at: &str, map: Mapping) -> Result<Step, String> {
    let mut step: Step = serde_yaml::from_value(Value::Mapping(map))
        .map_err(|e| format!("{at}: {}", yaml_text::redact(&e.to_string())))?;
    step.place = Some(at.to_string());
    Ok(step)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::error::Error;
    use crate::rollout::graph;
    use crate::rollout::plan::Plan;

    fn parse(text: &str) -> Result<Plan, Error> {
        Plan::parse(Path::new("p.yml"), text)
    }

    fn problems(text: &str) -> String {
        match parse(text) {
            Err(Error::Invalid { problems, .. }) => problems.join("\n"),
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn a_group_is_after_the_entry_before_and_the_entry_after_waits_for_it() {
        let plan = parse(
            "name: p\nsteps:\n  - {name: off, cluster: web, set: {state: 'off'}}\n  - parallel:\n      - {name: db, cluster: db, set: {v: 1}}\n      - {name: cache, cluster: cache, set: {v: 1}}\n  - {cluster: web, set: {state: converged}}\n",
        )
        .unwrap();
        let after: Vec<_> = plan.steps.iter().map(|s| s.after.clone()).collect();
        assert_eq!(
            after,
            vec![
                None,
                Some(vec!["off".to_string()]),
                Some(vec!["off".to_string()]),
                Some(vec!["db".to_string(), "cache".to_string()]),
            ]
        );
        assert_eq!(graph::summary(&plan), "web -> db + cache -> web");
        assert_eq!(
            plan.steps[2].place(2),
            "steps[1].parallel[1]",
            "a group's step is named where it is"
        );
        assert_eq!(plan.steps[3].place(3), "steps[2]");
        // The same plan written with after: is the same plan (same digest).
        let spelled = parse(
            "name: p\nsteps:\n  - {name: off, cluster: web, set: {state: 'off'}}\n  - {name: db, cluster: db, set: {v: 1}, after: [off]}\n  - {name: cache, cluster: cache, set: {v: 1}, after: [off]}\n  - {cluster: web, set: {state: converged}, after: [db, cache]}\n",
        )
        .unwrap();
        assert_eq!(
            crate::rollout::preflight::plan_digest(&plan),
            crate::rollout::preflight::plan_digest(&spelled)
        );
        // A group first starts with the plan; two groups in a row chain.
        let plan = parse(
            "name: p\nsteps:\n  - parallel: [{name: a, cluster: a, set: {v: 1}}, {name: b, cluster: b, set: {v: 1}}]\n  - parallel: [{name: c, cluster: a, set: {v: 2}}]\n",
        )
        .unwrap();
        assert_eq!(plan.steps[0].after, Some(vec![]));
        assert_eq!(
            plan.steps[2].after,
            Some(vec!["a".to_string(), "b".to_string()])
        );
    }

    #[test]
    fn bad_groups_are_refused_naming_the_step() {
        for (text, expected) in [
            (
                "name: p\nsteps:\n  - parallel: [{cluster: a, set: {v: 1}}]\n",
                "steps[0].parallel[0]: a step of a parallel: group needs a name:",
            ),
            (
                "name: p\nsteps:\n  - {cluster: a, set: {v: 1}}\n  - parallel: [{name: b, cluster: b, set: {v: 1}}]\n",
                "steps[0]: the step before the parallel: group at steps[1] needs a name:",
            ),
            (
                "name: p\nsteps:\n  - parallel: []\n",
                "steps[0].parallel: the group has no step",
            ),
            (
                "name: p\nsteps:\n  - parallel: [{name: a, cluster: a, set: {v: 1}, after: []}]\n",
                "steps[0].parallel[0].after: a step of a parallel: group starts when",
            ),
            (
                "name: p\nsteps:\n  - parallel: [{name: a, cluster: a, set: {v: 1}}]\n    cluster: x\n",
                "steps[0]: a parallel: entry holds only `parallel:` (a list of steps), not `cluster`",
            ),
            (
                "name: p\nsteps:\n  - parallel: [{name: a, cluster: a}]\n",
                "steps[0].parallel[0]: missing field `set`",
            ),
            (
                "name: p\nsteps:\n  - parallel: [{name: a, cluster: a, set: {v: 1}, bogus: 1}]\n",
                "steps[0].parallel[0]: unknown field `bogus`",
            ),
            // Checks after expansion name the group's step too.
            (
                "name: p\nsteps:\n  - parallel: [{name: a, cluster: web, set: {v: 1}}, {name: b, cluster: web, set: {v: 2}}]\n",
                "steps[0].parallel[1]: step 2 \"b\" (web) could run at the same time as step 1 \"a\" (web), on the same cluster",
            ),
            (
                "name: p\nsteps:\n  - parallel: [{name: a, cluster: a, set: {}}]\n",
                "steps[0].parallel[0].set: the patch is empty",
            ),
        ] {
            let got = problems(text);
            assert!(got.contains(expected), "{text}\nwanted {expected:?}\ngot {got}");
        }
    }
}
