//! `validate`: views and plans checked without a store.

use crate::support::{assert_refused, fixture, stdout, Backend, Harness};

fn validate(file: &str) -> std::process::Output {
    // No store is touched: point at one that does not exist.
    let h = Harness::new(Backend::File);
    h.run(&[
        "--store",
        "file:/nonexistent/view.yml",
        "validate",
        fixture(file).to_str().unwrap(),
    ])
}

#[test]
fn the_bundled_view_and_plan_are_valid() {
    let out = validate("view.yml");
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("valid view: 3 clusters, 3 node overrides, 1 rollout"),
        "{}",
        stdout(&out)
    );
    let out = validate("plans/web-2.4.1.yml");
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("valid plan \"web-2.4.1\": 3 steps (web -> db -> web)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn every_broken_view_is_refused_with_a_precise_message() {
    for (file, needles) in [
        (
            "broken/invalid-yaml.yml",
            vec!["invalid-yaml.yml", "line 5 column 7"],
        ),
        (
            "broken/duplicate-key.yml",
            vec!["duplicate key \"state\"", "line"],
        ),
        (
            "broken/state-not-in-schema.yml",
            vec!["convergent/clusters/web/desired", "\"convreged\""],
        ),
        (
            "broken/node-state-not-in-schema.yml",
            vec!["convergent/clusters/web/nodes/web-07", "\"of\""],
        ),
        (
            "broken/bad-node-name.yml",
            vec!["\"web 07\"", "whitespace", "\"../etc\""],
        ),
        (
            "broken/unknown-key.yml",
            vec![
                "convergent/clusters/web/desird: unknown key",
                "did you mean \"desired\"?",
            ],
        ),
        (
            "broken/bad-rollout.yml",
            vec!["convergent/rollouts/web", "`threshold`", "1.5"],
        ),
        (
            "broken/bad-schema.yml",
            vec!["convergent/clusters/web/schema", "\"waiting\""],
        ),
        (
            "broken/desired-not-a-map.yml",
            vec!["convergent/clusters/web/desired: expected a map"],
        ),
        (
            "broken/wrong-prefix.yml",
            vec!["myapp", "no `convergent` key"],
        ),
    ] {
        assert_refused(&validate(file), 65, &needles);
    }
}

#[test]
fn broken_plans_are_refused_with_line_numbers_or_paths() {
    assert_refused(
        &validate("plans/broken-unknown-field.yml"),
        65,
        &["batchh", "line 5"],
    );
    assert_refused(
        &validate("plans/broken-semantics.yml"),
        65,
        &[
            "name: invalid rollout id",
            "steps[0].cluster",
            "steps[0].set",
            "steps[0].strategy.batch",
        ],
    );
}

#[test]
fn a_missing_file_is_refused() {
    assert_refused(&validate("nope.yml"), 65, &["nope.yml", "cannot be read"]);
}
