//! Node health: checks declared in the view and by the recipe run with the
//! check-in; `health` re-runs them between runs; `status` shows them.

use std::net::TcpListener;

use serde_json::Value;

use crate::support::agent::WatchProcess;
use crate::support::{assert_refused, eventually, stderr, stdout, store_suite, Backend, Harness};

store_suite! {
    a_node_converged_but_unhealthy_shows_in_status,
    health_between_runs_keeps_its_since_until_a_flap,
    bad_checks_are_refused_and_nothing_is_written,
    watch_re_reports_health_between_runs,
}

fn member<'a>(status: &'a Value, node: &str) -> &'a Value {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == node)
        .unwrap_or_else(|| panic!("no member {node} in {status}"))
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The recipe's checks file: one command check that passes while `flag` exists.
fn recipe_checks(h: &Harness, flag: &std::path::Path) -> std::path::PathBuf {
    let file = h.path("checks.json");
    let doc = serde_json::json!({"checks": {"app-ready": {
        "command": ["test", "-e", flag.to_str().unwrap()], "timeout": "2s"}}});
    std::fs::write(&file, doc.to_string()).unwrap();
    file
}

fn report_with(h: &Harness, node: &str, checks: &std::path::Path) -> String {
    let file = h.attributes_file("web", node);
    stdout(&h.ok(&[
        "report",
        "--status",
        "success",
        "--attributes",
        file.to_str().unwrap(),
        "--checks",
        checks.to_str().unwrap(),
    ]))
}

fn a_node_converged_but_unhealthy_shows_in_status(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let port = closed_port();
    h.ok(&[
        "set",
        "--cluster",
        "web",
        &format!("health.checks.port.tcp=127.0.0.1:{port}"),
        "health.checks.port.timeout=1s",
    ]);
    let flag = h.path("ready");
    std::fs::write(&flag, "").unwrap();
    let checks = recipe_checks(&h, &flag);
    let said = report_with(&h, "web-01", &checks);
    assert!(said.contains("UNHEALTHY: port (cannot connect"), "{said}");
    h.converge("web", "web-03", "success"); // no recipe checks; the view's still run

    let status = h.status("web", &[]);
    let m = member(&status, "web-01");
    assert_eq!(
        m["state"], "converged",
        "it converged: chef-client succeeded"
    );
    assert_eq!(m["observed_version"], "2.4.0");
    assert_eq!(m["observed_state"], "converged");
    assert_eq!(m["health"]["healthy"], false);
    let results = m["health"]["checks"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["name"], "port");
    assert_eq!(results[0]["source"], "view");
    assert_eq!(results[0]["passed"], false);
    assert_eq!(results[1]["name"], "app-ready");
    assert_eq!(results[1]["source"], "recipe");
    assert_eq!(results[1]["passed"], true);
    assert!(m["health"].get("healthy_since").is_none());
    assert_eq!(status["health"]["unhealthy"], 2);

    let out = h.run(&["status", "--cluster", "web"]);
    let text = stdout(&out);
    assert!(
        text.contains("CONVERGED-TO") && text.contains("HEALTH"),
        "{text}"
    );
    let row = text.lines().find(|l| l.starts_with("web-01")).unwrap();
    assert!(
        row.contains("converged 2.4.0") && row.contains("UNHEALTHY: port"),
        "{row}"
    );
    assert!(
        text.contains("health: 0 healthy, 2 unhealthy, 0 unknown"),
        "{text}"
    );
    let out = h.run(&["status", "--cluster", "web", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 of 2 present members are unhealthy"),
        "{}",
        stderr(&out)
    );

    // The service comes up: the next check-in is healthy since then.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let said = report_with(&h, "web-01", &checks);
    assert!(said.contains("healthy (2 checks)"), "{said}");
    let m = member(&h.status("web", &[]), "web-01").clone();
    assert_eq!(m["health"]["healthy"], true);
    assert_eq!(m["health"]["healthy_since"], m["health"]["checked_at"]);
    drop(listener);
}

fn health_between_runs_keeps_its_since_until_a_flap(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let flag = h.path("ready");
    std::fs::write(&flag, "").unwrap();
    let checks = recipe_checks(&h, &flag);
    let health = |attributes: Option<&std::path::Path>| {
        let mut args = vec![
            "health",
            "--cluster",
            "web",
            "--node",
            "web-01",
            "--checks",
            checks.to_str().unwrap(),
        ];
        if let Some(a) = attributes {
            args.extend(["--attributes", a.to_str().unwrap()]);
        }
        stdout(&h.ok(&args))
    };
    let out = h.run(&["health", "--cluster", "web", "--node", "web-01"]);
    assert_refused(&out, 75, &["web-01 has not checked in yet"]);

    report_with(&h, "web-01", &checks);
    let since = |h: &Harness| member(&h.status("web", &[]), "web-01")["health"].clone();
    let first = since(&h);
    assert_eq!(first["healthy"], true);
    // Checked again a second later (the since is whole seconds): still
    // healthy, since the same time, checked later.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let said = health(None);
    assert!(said.contains("healthy (1 check)"), "{said}");
    let second = since(&h);
    assert_eq!(second["healthy_since"], first["healthy_since"]);
    assert_ne!(second["checked_at"], first["checked_at"]);

    // A flap: unhealthy, then healthy again from a new since.
    std::fs::remove_file(&flag).unwrap();
    let said = health(Some(&h.attributes_file("web", "web-01")));
    assert!(said.contains("UNHEALTHY: app-ready"), "{said}");
    assert!(since(&h).get("healthy_since").is_none());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&flag, "").unwrap();
    health(None);
    let after = since(&h);
    assert_eq!(after["healthy"], true);
    assert_ne!(
        after["healthy_since"], first["healthy_since"],
        "the timer started again"
    );

    // A new generation the node has not converged to: the view's checks do
    // not run (they are the new state's), the recipe's do.
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "health.checks.never.tcp=127.0.0.1:1",
    ]);
    let said = health(None);
    assert!(said.contains("the view's checks were not run"), "{said}");
    assert!(said.contains("healthy (1 check)"), "{said}");
    // A failed run: nothing to check.
    h.converge("web", "web-01", "failure");
    let said = health(None);
    assert!(said.contains("the last run failed"), "{said}");
}

fn bad_checks_are_refused_and_nothing_is_written(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let bad = h.path("checks.yml");
    std::fs::write(
        &bad,
        "checks:\n  web:\n    http: \"http://admin:hunter2@127.0.0.1/\"\n",
    )
    .unwrap();
    let file = h.attributes_file("web", "web-01");
    let before = h.export();
    let out = h.run(&[
        "report",
        "--status",
        "success",
        "--attributes",
        file.to_str().unwrap(),
        "--checks",
        bad.to_str().unwrap(),
    ]);
    assert_refused(
        &out,
        65,
        &[
            "checks.yml",
            "checks.web: http: credentials in the URL are refused",
        ],
    );
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    std::fs::write(
        &bad,
        "checks:\n  web:\n    tcp: \"127.0.0.1:1\"\n    command: [x]\n",
    )
    .unwrap();
    let out = h.run(&[
        "report",
        "--status",
        "success",
        "--attributes",
        file.to_str().unwrap(),
        "--checks",
        bad.to_str().unwrap(),
    ]);
    assert_refused(&out, 65, &["checks.yml", "exactly one of"]);
    assert_eq!(h.export(), before, "nothing was written");
}

fn watch_re_reports_health_between_runs(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let flag = h.path("ready");
    std::fs::write(&flag, "").unwrap();
    let checks = recipe_checks(&h, &flag);
    // The program stands for chef-client and its report handler: it counts
    // its runs and checks in.
    let program = h.path("chef.sh");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\necho run >> {runs}\nexec {bin} report --status success --attributes \"$CONVERGENT_ATTRIBUTES\" --checks {checks}\n",
            runs = h.path("runs").display(),
            bin = assert_cmd::cargo::cargo_bin("convergent").display(),
            checks = checks.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let agent = WatchProcess::start(
        &h,
        &[
            "--cluster",
            "web",
            "--node",
            "web-01",
            "--exec",
            program.to_str().unwrap(),
            "--health-interval",
            "1s",
            "--checks",
            checks.to_str().unwrap(),
        ],
    );
    let healthy = |want: bool| {
        eventually(std::time::Duration::from_secs(30), || {
            let s = h.status("web", &[]);
            let m = s["members"]
                .as_array()
                .and_then(|all| all.iter().find(|m| m["node"] == "web-01").cloned());
            m.is_some_and(|m| m["state"] == "converged" && m["health"]["healthy"] == want)
        })
    };
    assert!(healthy(true), "first run, healthy; log:\n{}", agent.log());
    // The service breaks after the run: the agent sees it without a run.
    std::fs::remove_file(&flag).unwrap();
    assert!(
        healthy(false),
        "re-reported unhealthy; log:\n{}",
        agent.log()
    );
    assert!(
        eventually(std::time::Duration::from_secs(10), || agent
            .log()
            .contains("UNHEALTHY: app-ready")),
        "{}",
        agent.log()
    );
    std::fs::write(&flag, "").unwrap();
    assert!(healthy(true), "and healthy again; log:\n{}", agent.log());
    let runs = std::fs::read_to_string(h.path("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "no chef run for any of it");
}
