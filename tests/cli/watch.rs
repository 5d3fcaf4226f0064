//! `watch`: the node agent runs its program once per real change.

use std::time::Duration;

use crate::support::agent::WatchProcess;
use crate::support::{assert_refused, eventually, store_suite, Backend, Harness};

store_suite! {
    runs_once_per_change_and_not_for_changes_that_do_not_touch_the_node,
    a_burst_of_changes_during_a_run_gives_one_more_run,
    a_failing_program_is_logged_and_watch_goes_on,
    a_restart_does_not_run_again_for_the_same_generation,
}

/// A program that records each run's generation, then takes `seconds`.
fn recorder(h: &Harness, seconds: &str, exit: i32) -> String {
    let script = h.path("record.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$CONVERGENT_GENERATION $CONVERGENT_STATE $(test -s \"$CONVERGENT_ATTRIBUTES\" && echo file-ok)\" >> {}\nsleep {seconds}\nexit {exit}\n",
            h.path("runs").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script.display().to_string()
}

fn runs(h: &Harness) -> Vec<String> {
    std::fs::read_to_string(h.path("runs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn generation(h: &Harness, node: &str) -> String {
    h.attributes("web", node)["convergent"]["generation"]
        .as_str()
        .unwrap()
        .to_string()
}

const WAIT: Duration = Duration::from_secs(20);

fn runs_once_per_change_and_not_for_changes_that_do_not_touch_the_node(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let program = recorder(&h, "0", 0);
    let mut agent = WatchProcess::start(
        &h,
        &["--cluster", "web", "--node", "web-01", "--exec", &program],
    );
    let first = generation(&h, "web-01");
    assert!(
        eventually(WAIT, || runs(&h).len() == 1),
        "first run; log:\n{}",
        agent.log()
    );
    assert_eq!(runs(&h)[0], format!("{first} converged file-ok"));

    // Changes that resolve to the same generation for web-01: another
    // cluster, another node's override. The agent does not follow those keys
    // (the file store wakes it for any change of the file, and it finds
    // nothing to do); either way they run nothing.
    h.ok(&["set", "--cluster", "db", "version=5.1"]);
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-02",
        "state=off",
        "--create",
    ]);
    // Then one that does; the runs file shows nothing happened in between.
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-01",
        "state=off",
        "--create",
    ]);
    let second = generation(&h, "web-01");
    assert!(
        eventually(WAIT, || runs(&h).len() == 2),
        "second run; log:\n{}",
        agent.log()
    );
    assert_eq!(
        runs(&h),
        [
            format!("{first} converged file-ok"),
            format!("{second} off file-ok")
        ]
    );

    let status = agent.terminate().expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}; log:\n{}", agent.log());
    assert!(agent.log().contains("stopping on signal"));
}

fn a_burst_of_changes_during_a_run_gives_one_more_run(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let program = recorder(&h, "2", 0);
    let agent = WatchProcess::start(
        &h,
        &["--cluster", "web", "--node", "web-01", "--exec", &program],
    );
    assert!(
        eventually(WAIT, || runs(&h).len() == 1),
        "log:\n{}",
        agent.log()
    );
    // Five changes while the first run is still going.
    for i in 1..=5 {
        h.ok(&["set", "--cluster", "web", &format!("build={i}")]);
    }
    let last = generation(&h, "web-01");
    assert!(
        eventually(WAIT, || runs(&h).len() == 2),
        "log:\n{}",
        agent.log()
    );
    assert!(
        runs(&h)[1].starts_with(&last),
        "the one more run is for the newest state: {:?}",
        runs(&h)
    );
    // A sentinel change shows that no third run for the burst came before it.
    h.ok(&["set", "--cluster", "web", "build=6"]);
    let sentinel = generation(&h, "web-01");
    assert!(
        eventually(WAIT, || runs(&h).len() == 3),
        "log:\n{}",
        agent.log()
    );
    assert!(runs(&h)[2].starts_with(&sentinel), "{:?}", runs(&h));
}

fn a_failing_program_is_logged_and_watch_goes_on(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let program = recorder(&h, "0", 3);
    let mut agent = WatchProcess::start(
        &h,
        &["--cluster", "web", "--node", "web-01", "--exec", &program],
    );
    assert!(
        eventually(WAIT, || agent.log().contains("failed: exit code 3")),
        "log:\n{}",
        agent.log()
    );
    h.ok(&["set", "--cluster", "web", "version=2.4.9"]);
    assert!(
        eventually(WAIT, || runs(&h).len() == 2),
        "it keeps going; log:\n{}",
        agent.log()
    );
    assert!(agent.exited().is_none());
}

fn a_restart_does_not_run_again_for_the_same_generation(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let program = recorder(&h, "0", 0);
    let output = h.path("attrs.json");
    let args = [
        "--cluster",
        "web",
        "--node",
        "web-01",
        "--exec",
        &program,
        "--output",
        output.to_str().unwrap(),
    ];
    let mut agent = WatchProcess::start(&h, &args);
    assert!(
        eventually(WAIT, || runs(&h).len() == 1),
        "log:\n{}",
        agent.log()
    );
    agent.terminate();
    let agent = WatchProcess::start(&h, &args);
    assert!(
        eventually(WAIT, || agent.log().contains("nothing to do")),
        "log:\n{}",
        agent.log()
    );
    assert_eq!(runs(&h).len(), 1);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&output).unwrap()).unwrap();
    assert_eq!(written["convergent"]["node"], "web-01");
}

#[test]
fn a_missing_program_is_refused_at_start() {
    let h = Harness::with_fixture(Backend::File);
    let out = h.run(&[
        "watch",
        "--cluster",
        "web",
        "--node",
        "web-01",
        "--exec",
        "no-such-program-xyz",
    ]);
    assert_refused(&out, 64, &["no-such-program-xyz", "no such executable"]);
    let out = h.run(&[
        "watch",
        "--cluster",
        "web",
        "--node",
        "web/01",
        "--exec",
        "/bin/true",
    ]);
    assert_refused(&out, 65, &["node name"]);
}

#[test]
fn sigterm_during_a_run_is_passed_on_and_watch_exits_cleanly() {
    let h = Harness::with_fixture(Backend::File);
    let program = recorder(&h, "60", 0);
    let mut agent = WatchProcess::start(
        &h,
        &["--cluster", "web", "--node", "web-01", "--exec", &program],
    );
    assert!(
        eventually(WAIT, || runs(&h).len() == 1),
        "log:\n{}",
        agent.log()
    );
    let status = agent
        .terminate()
        .expect("stops well before the program's 60s");
    assert!(status.success(), "{status:?}");
    let log = agent.log();
    assert!(
        log.contains("passing SIGTERM on") && log.contains("killed by signal 15"),
        "{log}"
    );
}

/// `--splay-from node` waits the same share of the splay every time for a
/// node (web-01's is 0.98, web-02's 0.89: see `node_splay_share`), and
/// SIGTERM during the wait stops the agent without running anything.
#[test]
fn the_node_splay_is_the_same_on_every_start_and_differs_by_node() {
    let h = Harness::with_fixture(Backend::File);
    let program = recorder(&h, "0", 0);
    for (node, wait) in [("web-01", "49s"), ("web-01", "49s"), ("web-02", "44s")] {
        let mut agent = WatchProcess::start(
            &h,
            &[
                "--cluster",
                "web",
                "--node",
                node,
                "--splay",
                "50s",
                "--splay-from",
                "node",
                "--exec",
                &program,
            ],
        );
        let line = format!("waiting {wait} first (splay)");
        assert!(
            eventually(WAIT, || agent.log().contains(&line)),
            "{node}: {line}; log:\n{}",
            agent.log()
        );
        let status = agent.terminate().expect("exits on SIGTERM");
        assert!(status.success(), "{status:?}; log:\n{}", agent.log());
    }
    assert!(runs(&h).is_empty(), "nothing ran during the splay");
}
