//! A plan's steps as a graph: which steps each one waits for, and so which
//! run at the same time.
//!
//! A step waits for the step before it, unless it names the steps it waits
//! for with `after:` (`after: []`: none, it starts with the plan). So a plan
//! without `after:` means what it always meant — a strict sequence — and
//!
//! ```yaml
//! steps:
//!   - { name: db,  cluster: db,  set: { version: "5.1" }, after: [] }
//!   - { name: web, cluster: web, set: { version: "2.5" }, after: [] }
//!   - { cluster: cache, set: { version: "7" }, after: [db, web] }
//! ```
//!
//! rolls db and web at once, then cache. Two steps that could run at the
//! same time must be on different clusters (one rollout per cluster).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::plan::Plan;

/// The indices of the steps each step waits for. An `after:` name that no
/// step has is left out here and reported by [`problems`].
pub fn dependencies(plan: &Plan) -> Vec<Vec<usize>> {
    plan.steps
        .iter()
        .enumerate()
        .map(|(i, step)| match &step.after {
            None => i.checked_sub(1).into_iter().collect(),
            Some(names) => names
                .iter()
                .filter_map(|n| index_of(plan, n))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        })
        .collect()
}

fn index_of(plan: &Plan, name: &str) -> Option<usize> {
    plan.steps
        .iter()
        .position(|s| s.name.as_deref() == Some(name))
}

/// Whether the plan is a plain sequence (no step says `after:`).
pub fn is_sequence(plan: &Plan) -> bool {
    plan.steps.iter().all(|s| s.after.is_none())
}

/// `step 2 "db-5.1" (db)`: how messages name a step.
pub fn label(plan: &Plan, index: usize) -> String {
    let step = &plan.steps[index];
    match &step.name {
        Some(name) => format!("step {} \"{name}\" ({})", index + 1, step.cluster),
        None => format!("step {} ({})", index + 1, step.cluster),
    }
}

/// The steps in an order that runs every step after those it waits for,
/// the lower index first among those ready together. Steps caught in a
/// cycle (refused by [`problems`]) come last, in plan order.
pub fn order(plan: &Plan) -> Vec<usize> {
    let deps = dependencies(plan);
    let mut placed = vec![false; deps.len()];
    let mut out = Vec::with_capacity(deps.len());
    while out.len() < deps.len() {
        let next = (0..deps.len()).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]));
        match next {
            Some(i) => {
                placed[i] = true;
                out.push(i);
            }
            None => {
                out.extend((0..deps.len()).filter(|&i| !placed[i]));
                break;
            }
        }
    }
    out
}

/// The steps not in `done` whose every dependency is in `done`.
pub fn ready(plan: &Plan, done: &BTreeSet<usize>) -> Vec<usize> {
    dependencies(plan)
        .iter()
        .enumerate()
        .filter(|(i, deps)| !done.contains(i) && deps.iter().all(|d| done.contains(d)))
        .map(|(i, _)| i)
        .collect()
}

/// The steps by stage: a step's stage is the length of the longest chain
/// of waits before it, so the steps of one stage never wait for each
/// other and may run at the same time. A sequence has one step a stage.
pub fn stages(plan: &Plan) -> Vec<Vec<usize>> {
    let deps = dependencies(plan);
    let mut depth = vec![0usize; deps.len()];
    for i in order(plan) {
        depth[i] = deps[i].iter().map(|&d| depth[d] + 1).max().unwrap_or(0);
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, &d) in depth.iter().enumerate() {
        if out.len() <= d {
            out.resize(d + 1, Vec::new());
        }
        out[d].push(i);
    }
    out
}

/// `db + web -> cache`: the clusters by stage, for one line.
pub fn summary(plan: &Plan) -> String {
    stages(plan)
        .iter()
        .map(|stage| {
            stage
                .iter()
                .map(|&i| plan.steps[i].cluster.as_str())
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Every step each step waits for, directly or not.
fn ancestors(plan: &Plan) -> Vec<BTreeSet<usize>> {
    let deps = dependencies(plan);
    let mut out: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); deps.len()];
    // In dependency order each step's ancestors are complete before it is
    // reached (a cycle leaves some sets short; it is refused anyway).
    for i in order(plan) {
        let mut all = BTreeSet::new();
        for &d in &deps[i] {
            all.insert(d);
            all.extend(out[d].iter().copied());
        }
        out[i] = all;
    }
    out
}

/// For each step, the steps that may run at the same time as it (neither
/// waits for the other, directly or not).
pub fn concurrent(plan: &Plan) -> Vec<Vec<usize>> {
    let anc = ancestors(plan);
    (0..anc.len())
        .map(|i| {
            (0..anc.len())
                .filter(|&j| j != i && !anc[i].contains(&j) && !anc[j].contains(&i))
                .collect()
        })
        .collect()
}

/// A cycle of `after:` waits, if there is one: the shortest through the
/// first step caught in one, that step first, each waiting for the next.
fn cycle(plan: &Plan) -> Option<Vec<usize>> {
    let deps = dependencies(plan);
    let start = (0..deps.len()).find(|&i| in_cycle(&deps, i))?;
    // Breadth first through the waits; `waited_by[d] = s`: s waits for d.
    let mut waited_by: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &d in &deps[at] {
            if d == start {
                let mut path = vec![at];
                while let Some(&s) = path.last().and_then(|x| waited_by.get(x)) {
                    path.push(s);
                }
                path.reverse();
                return Some(path);
            }
            if d != start && !waited_by.contains_key(&d) {
                waited_by.insert(d, at);
                queue.push_back(d);
            }
        }
    }
    None
}

/// Whether step `i` can reach itself through its waits.
fn in_cycle(deps: &[Vec<usize>], i: usize) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<usize> = deps[i].clone();
    while let Some(j) = todo.pop() {
        if j == i {
            return true;
        }
        if seen.insert(j) {
            todo.extend(deps[j].iter().copied());
        }
    }
    false
}

/// Everything wrong with the plan's graph: duplicate names, `after:` names
/// no step has, a step waiting for itself, cycles, and two steps on the same
/// cluster that could run at the same time.
pub fn problems(plan: &Plan) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if let Some(name) = &step.name {
            if !seen.insert(name.as_str()) {
                problems.push(format!(
                    "{}.name: \"{}\" is the name of an earlier step too; step names must be unique",
                    step.place(i),
                    name.escape_default()
                ));
            }
        }
    }
    for (i, step) in plan.steps.iter().enumerate() {
        for name in step.after.iter().flatten() {
            match index_of(plan, name) {
                None => problems.push(format!(
                    "{}.after: no step is named \"{}\" (names: {})",
                    step.place(i),
                    name.escape_default(),
                    known_names(plan)
                )),
                Some(j) if j == i => problems.push(format!(
                    "{}.after: the step waits for itself (\"{}\")",
                    step.place(i),
                    name.escape_default()
                )),
                Some(_) => {}
            }
        }
    }
    if let Some(c) = cycle(plan) {
        let shown: Vec<String> = c.iter().chain(c.first()).map(|&i| label(plan, i)).collect();
        problems.push(format!(
            "steps: the after: waits form a cycle, so none of these steps could ever start: {}",
            shown.join(" waits for ")
        ));
        return problems; // concurrency below assumes no cycle
    }
    let together = concurrent(plan);
    for (i, others) in together.iter().enumerate() {
        for &j in others.iter().filter(|&&j| j > i) {
            if plan.steps[i].cluster == plan.steps[j].cluster {
                problems.push(format!(
                    "{}: {} could run at the same time as {}, on the same cluster; \
                     a cluster has one rollout at a time: make one of them wait for the other with after:",
                    plan.steps[j].place(j),
                    label(plan, j),
                    label(plan, i)
                ));
            }
        }
    }
    problems
}

fn known_names(plan: &Plan) -> String {
    let names: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| {
            s.name
                .as_ref()
                .map(|n| format!("\"{}\"", n.escape_default()))
        })
        .collect();
    if names.is_empty() {
        "no step has a name; give the step to wait for a name:".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(steps: &str) -> Plan {
        let text = format!("name: p\nsteps:\n{steps}");
        serde_yaml::from_str(&text).unwrap()
    }

    const TIERS: &str = "  - {name: db, cluster: db, set: {v: 1}, after: []}\n  - {name: web, cluster: web, set: {v: 2}, after: []}\n  - {cluster: cache, set: {v: 3}, after: [db, web]}\n  - {cluster: web, set: {v: 4}}\n";

    #[test]
    fn without_after_a_plan_is_a_sequence() {
        let p = plan("  - {cluster: a, set: {v: 1}}\n  - {cluster: b, set: {v: 1}}\n  - {cluster: a, set: {v: 2}}\n");
        assert!(is_sequence(&p));
        assert_eq!(dependencies(&p), vec![vec![], vec![0], vec![1]]);
        assert_eq!(order(&p), vec![0, 1, 2]);
        assert!(concurrent(&p).iter().all(Vec::is_empty));
        assert_eq!(summary(&p), "a -> b -> a");
        assert!(problems(&p).is_empty());
    }

    #[test]
    fn after_runs_steps_together() {
        let p = plan(TIERS);
        assert!(!is_sequence(&p));
        assert_eq!(dependencies(&p), vec![vec![], vec![], vec![0, 1], vec![2]]);
        assert_eq!(concurrent(&p), vec![vec![1], vec![0], vec![], vec![]]);
        assert_eq!(ready(&p, &BTreeSet::new()), vec![0, 1]);
        assert_eq!(ready(&p, &BTreeSet::from([1])), vec![0]);
        assert_eq!(ready(&p, &BTreeSet::from([0, 1])), vec![2]);
        assert!(problems(&p).is_empty(), "{:?}", problems(&p));
        assert_eq!(label(&p, 1), "step 2 \"web\" (web)");
        assert_eq!(label(&p, 2), "step 3 (cache)");
        assert_eq!(stages(&p), vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(summary(&p), "db + web -> cache -> web");
    }

    #[test]
    fn bad_graphs_are_refused_naming_the_step() {
        for (steps, needle) in [
            (
                "  - {name: a, cluster: a, set: {v: 1}}\n  - {name: a, cluster: b, set: {v: 1}}\n",
                "steps[1].name: \"a\" is the name of an earlier step too",
            ),
            (
                "  - {name: a, cluster: a, set: {v: 1}}\n  - {cluster: b, set: {v: 1}, after: [dbb]}\n",
                "steps[1].after: no step is named \"dbb\" (names: \"a\")",
            ),
            (
                "  - {name: a, cluster: a, set: {v: 1}, after: [a]}\n",
                "steps[0].after: the step waits for itself",
            ),
            (
                "  - {name: a, cluster: a, set: {v: 1}, after: [b]}\n  - {name: b, cluster: b, set: {v: 1}, after: [a]}\n",
                "the after: waits form a cycle",
            ),
            (
                "  - {name: a, cluster: web, set: {v: 1}, after: []}\n  - {name: b, cluster: web, set: {v: 2}, after: []}\n",
                "steps[1]: step 2 \"b\" (web) could run at the same time as step 1 \"a\" (web), on the same cluster",
            ),
        ] {
            let p = plan(steps);
            let all = problems(&p).join("\n");
            assert!(all.contains(needle), "{needle:?} not in {all}");
        }
        // Through the parser too: exit 65 material, every problem listed.
        let err = Plan::parse(
            Path::new("plan.yml"),
            "name: p\nsteps:\n  - {name: 'a b', cluster: a, set: {v: 1}, after: [x]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("steps[0].name") && err.contains("steps[0].after"),
            "{err}"
        );
    }

    #[test]
    fn a_cycle_is_named_step_by_step() {
        let p = plan("  - {name: a, cluster: a, set: {v: 1}, after: [c]}\n  - {name: b, cluster: b, set: {v: 1}, after: [a]}\n  - {name: c, cluster: c, set: {v: 1}, after: [b]}\n  - {cluster: d, set: {v: 1}, after: []}\n");
        let all = problems(&p).join("\n");
        assert!(
            all.contains("step 1 \"a\" (a)")
                && all.contains("step 2 \"b\" (b)")
                && all.contains("step 3 \"c\" (c)"),
            "{all}"
        );
        assert!(!all.contains("step 4"), "{all}");
        assert_eq!(order(&p), vec![3, 0, 1, 2]);
    }
}
