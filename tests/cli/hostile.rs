//! Hostile input (issue 14): names that would become options, shell words or
//! placeholders, look-alike names, and the limits every read and write keeps.
//! Each refusal has its documented exit code and changes nothing.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::support::{assert_refused, eventually, stderr, store_suite, Backend, Harness, Spawned};

store_suite! {
    hostile_names_are_refused_at_every_entry_point,
    hostile_names_in_the_store_are_never_kicked,
}

/// The names the issue reports: each became an option, a command or a
/// placeholder somewhere downstream (`ssh {node} …`).
pub const HOSTILE_NAMES: [&str; 7] = [
    "-oProxyCommand=touch${IFS}PWNED",
    "$(id)",
    ";id",
    "--help",
    "{cluster}",
    "we\u{200B}b",
    "web\u{202E}10-",
];

fn hostile_names_are_refused_at_every_entry_point(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    for name in HOSTILE_NAMES {
        let node = format!("--node={name}");
        let cluster = format!("--cluster={name}");
        for args in [
            vec!["attributes", "--cluster", "web", &node],
            vec!["attributes", &cluster, "--node", "web-01"],
            vec!["set", "--cluster", "web", &node, "state=off"],
            vec!["set", &cluster, "state=off"],
            vec![
                "report",
                "--cluster",
                "web",
                &node,
                "--status",
                "success",
                "--generation",
                "0123456789abcdef",
            ],
        ] {
            let out = h.run(&args);
            assert_refused(&out, 65, &["invalid", "name"]);
            let err = stderr(&out);
            assert!(
                err.contains("ASCII") || err.contains("invisible"),
                "{args:?}: the rule is named: {err}"
            );
        }
        // A report from an attributes file naming such a node.
        let file = h.path("hostile.json");
        let mut doc: serde_json::Value = serde_json::from_slice(
            &h.ok(&["attributes", "--cluster", "web", "--node", "web-01"])
                .stdout,
        )
        .unwrap();
        doc["convergent"]["node"] = json!(name);
        std::fs::write(&file, doc.to_string()).unwrap();
        let out = h.run(&[
            "report",
            "--status",
            "success",
            "--attributes",
            file.to_str().unwrap(),
        ]);
        assert_refused(&out, 65, &["invalid node name"]);
    }
    assert_eq!(h.export(), before, "nothing was written");
}

fn hostile_names_in_the_store_are_never_kicked(backend: Backend) {
    let h = Harness::with_fixture(backend);
    // Hand-written into the store past every check: a static member list
    // and a check-in under hostile names.
    h.put_document(
        "convergent/clusters/db/members",
        json!(["db-01", HOSTILE_NAMES[0], HOSTILE_NAMES[4]]),
    );
    let kicked = h.path("kicked");
    let pwned = h.path("PWNED");
    let plan = h.path("plan.yml");
    std::fs::write(
        &plan,
        format!(
            "name: db-5.1\nsteps:\n  - cluster: db\n    set: {{version: '5.1'}}\n    strategy: {{batch: 100%}}\n    kick: {{command: [sh, -c, 'echo \"$0\" >> {}', '{{node}}'], timeout: 5s}}\n",
            kicked.display()
        ),
    )
    .unwrap();
    let status = h.run(&["status", "--cluster", "db", "--format", "json"]);
    let err = stderr(&status);
    assert!(
        err.contains("invalid node name"),
        "the bad member is reported: {err}"
    );
    let mut orchestrator = Spawned::new(
        h.process()
            .args(["rollout", "run", plan.to_str().unwrap(), "--poll", "50ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(30), || kicked.exists()),
        "db-01 is kicked"
    );
    orchestrator.kill();
    let was_kicked = std::fs::read_to_string(&kicked).unwrap();
    assert_eq!(was_kicked, "db-01\n", "only host-like names are kicked");
    assert!(!pwned.exists());
    assert!(!h.dir.path().join("PWNED").exists());
}
