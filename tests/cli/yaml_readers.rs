//! Every YAML `convergent` writes reads back the same in Ruby's
//! `YAML.safe_load` (Psych, YAML 1.1, what Chef uses) and Python's
//! `yaml.safe_load` (PyYAML, YAML 1.1) as in a YAML 1.2 reader: no `off`
//! turning into `false`, no timestamp turning into a `Time`.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{fixture, stdout, Backend, Harness};

/// What a reader makes of `yaml`, as JSON; `program` prints it.
fn read_with(program: &str, args: &[&str], yaml: &str) -> Value {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/test installs it): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} cannot read:\n{yaml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}

fn ruby(yaml: &str) -> Value {
    read_with(
        "ruby",
        &[
            "-ryaml",
            "-rjson",
            "-e",
            "print JSON.generate(YAML.safe_load($stdin.read))",
        ],
        yaml,
    )
}

fn python(yaml: &str) -> Value {
    read_with(
        "python3",
        &[
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))",
        ],
        yaml,
    )
}

/// The same YAML read by a YAML 1.2 reader (serde_yaml), Ruby and Python.
#[track_caller]
fn reads_the_same_everywhere(what: &str, yaml: &str) {
    let reference: Value = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        ruby(yaml),
        reference,
        "Ruby reads {what} differently:\n{yaml}"
    );
    assert_eq!(
        python(yaml),
        reference,
        "Python reads {what} differently:\n{yaml}"
    );
}

#[test]
fn every_yaml_output_reads_the_same_in_ruby_and_python() {
    let h = Harness::with_fixture(Backend::File);
    // Reports give status and explain timestamps to print.
    for node in ["web-01", "web-02", "web-07"] {
        h.converge("web", node, "success");
    }
    // A plan web's active rollout does not block (a dry run refuses what
    // the run would).
    let plan = h.path("db.yml");
    std::fs::write(
        &plan,
        "name: db-5.1\nsteps:\n  - cluster: db\n    set: {version: \"5.1\", state: \"off\"}\n",
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let view = fixture("view.yml");
    let view = view.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["get", "clusters/web/nodes/web-07"],
        vec!["get", "clusters/web"],
        vec!["get", "observed/web"],
        vec!["export"],
        vec!["status", "--cluster", "web"],
        vec!["explain", "--cluster", "web", "--node", "web-07"],
        vec!["rollout", "status"],
        vec!["rollout", "run", "--dry-run", plan],
        vec![
            "set",
            "--cluster",
            "db",
            "version=5.0.1",
            "replication.mode=off",
        ],
        vec!["validate", view],
        vec!["validate", plan],
        vec!["attributes", "--cluster", "web", "--node", "web-07"],
        vec!["import", view, "--dry-run", "--force"],
        vec![
            "unset",
            "--cluster",
            "web",
            "--node",
            "web-07",
            "state",
            "--dry-run",
        ],
        vec!["rollout", "pause", "web"],
    ];
    for args in commands {
        let mut full = vec!["--format", "yaml"];
        full.extend_from_slice(&args);
        let yaml = stdout(&h.ok(&full));
        assert!(!yaml.trim().is_empty(), "{args:?} printed nothing");
        reads_the_same_everywhere(&args.join(" "), &yaml);
    }
    // The file store's own file is YAML too.
    let written = std::fs::read_to_string(h.store_file()).unwrap();
    reads_the_same_everywhere("the store file", &written);
}
