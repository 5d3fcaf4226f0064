//! `report` and `status`: nodes check in, operators see the fleet.

use serde_json::{json, Value};

use crate::support::{assert_refused, fixture, stderr, stdout, store_suite, Backend, Harness};

store_suite! {
    reported_nodes_show_converged,
    a_desired_change_makes_nodes_pending_until_they_report,
    failures_count_and_check_fails,
    an_old_report_is_absent_and_check_ignores_it,
    static_members_that_never_reported_are_absent,
    bad_reports_are_refused_and_nothing_is_written,
    the_table_reads_well,
}

fn member<'a>(status: &'a Value, node: &str) -> &'a Value {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == node)
        .unwrap_or_else(|| panic!("no member {node} in {status}"))
}

fn reported_nodes_show_converged(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.converge("web", "web-01", "success");
    h.converge("web", "web-02", "success");
    let status = h.status("web", &[]);
    assert_eq!(
        status["summary"],
        json!({"converged": 2, "pending": 0, "failed": 0, "absent": 0})
    );
    let m = member(&status, "web-02");
    assert_eq!(m["state"], "converged");
    assert_eq!(m["released"], true);
    assert_eq!(
        m["desired_generation"],
        h.attributes("web", "web-02")["convergent"]["generation"]
    );
    assert_eq!(member(&status, "web-01")["released"], false);
    assert!(m["checkin_age_s"].as_u64().unwrap() < 60);
    assert_eq!(
        h.run(&["status", "--cluster", "web", "--check"])
            .status
            .code(),
        Some(0)
    );
}

fn a_desired_change_makes_nodes_pending_until_they_report(backend: Backend) {
    let h = Harness::with_fixture(backend);
    for n in ["web-01", "web-02", "web-05"] {
        h.converge("web", n, "success");
    }
    h.ok(&["set", "--cluster", "web", "version=2.5.0"]);
    let status = h.status("web", &[]);
    // web-02 is released: the rollout's patch still pins its version.
    assert_eq!(status["summary"]["pending"], 2);
    assert_eq!(member(&status, "web-01")["state"], "pending");
    assert_eq!(member(&status, "web-05")["state"], "pending");
    assert_eq!(member(&status, "web-02")["state"], "converged");
    h.converge("web", "web-01", "success");
    let status = h.status("web", &[]);
    assert_eq!(member(&status, "web-01")["state"], "converged");
    assert_eq!(member(&status, "web-05")["state"], "pending");
}

fn failures_count_and_check_fails(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.converge("web", "web-01", "success");
    let file = h.attributes_file("web", "web-03");
    h.ok(&[
        "report",
        "--status",
        "failure",
        "--attributes",
        file.to_str().unwrap(),
        "--message",
        "Chef::Exceptions::Exec",
        "--duration",
        "12.5",
    ]);
    let status = h.status("web", &[]);
    let m = member(&status, "web-03");
    assert_eq!(m["state"], "failed");
    assert_eq!(m["message"], "Chef::Exceptions::Exec");
    let out = h.run(&["status", "--cluster", "web", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 of 2 present members have not converged (0 pending, 1 failed)"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("web-03"), "the table is printed too");
}

fn an_old_report_is_absent_and_check_ignores_it(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.converge("web", "web-01", "success");
    let two_hours_ago = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() - std::time::Duration::from_secs(7200),
    );
    h.put_document(
        "convergent/observed/web/web-08",
        json!({"generation": "0123456789abcdef", "status": "failure", "state": "off",
               "reported_at": two_hours_ago.to_string(), "convergent_version": "0.1.0"}),
    );
    let status = h.status("web", &[]);
    assert_eq!(member(&status, "web-08")["state"], "absent");
    assert_eq!(
        status["summary"],
        json!({"converged": 1, "pending": 0, "failed": 0, "absent": 1})
    );
    assert_eq!(
        h.run(&["status", "--cluster", "web", "--check"])
            .status
            .code(),
        Some(0),
        "absent nodes do not fail the check"
    );
    let status = h.status("web", &["--member-ttl", "3h"]);
    assert_eq!(member(&status, "web-08")["state"], "failed");
    assert_eq!(
        h.run(&[
            "status",
            "--cluster",
            "web",
            "--check",
            "--member-ttl",
            "3h"
        ])
        .status
        .code(),
        Some(1)
    );
}

fn static_members_that_never_reported_are_absent(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let view = h.path("members.yml");
    std::fs::write(
        &view,
        "convergent:\n  clusters:\n    web:\n      members: [web-01, web-10]\n",
    )
    .unwrap();
    h.import(&view);
    h.converge("web", "web-01", "success");
    let status = h.status("web", &[]);
    let m = member(&status, "web-10");
    assert_eq!(m["state"], "absent");
    assert_eq!(m["static_member"], true);
    assert_eq!(m["checkin_age_s"], Value::Null);
    assert_eq!(member(&status, "web-01")["static_member"], true);
    assert!(stdout(&h.ok(&["status", "--cluster", "web"])).contains("never"));
}

fn bad_reports_are_refused_and_nothing_is_written(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let before = h.export();
    let good = h.attributes_file("web", "web-01");
    for (args, code, needles) in [
        (
            vec![
                "report",
                "--cluster",
                "webb",
                "--node",
                "web-01",
                "--status",
                "success",
                "--generation",
                "0123456789abcdef",
            ],
            65,
            vec!["unknown cluster \"webb\"", "not written"],
        ),
        (
            vec![
                "report",
                "--cluster",
                "web",
                "--node",
                "web/01",
                "--status",
                "success",
                "--generation",
                "0123456789abcdef",
            ],
            65,
            vec!["node name"],
        ),
        (
            vec![
                "report",
                "--cluster",
                "web",
                "--node",
                "web-01",
                "--status",
                "success",
                "--generation",
                "abc",
            ],
            65,
            vec!["not a generation"],
        ),
        (
            vec![
                "report",
                "--cluster",
                "web",
                "--node",
                "web-02",
                "--status",
                "success",
                "--attributes",
                good.to_str().unwrap(),
            ],
            65,
            vec!["not \"web-02\""],
        ),
        (
            vec![
                "report",
                "--status",
                "success",
                "--attributes",
                "/nonexistent/a.json",
            ],
            65,
            vec!["/nonexistent/a.json"],
        ),
        (
            vec![
                "report",
                "--status",
                "maybe",
                "--attributes",
                good.to_str().unwrap(),
            ],
            64,
            vec!["maybe"],
        ),
        (
            vec!["report", "--status", "success"],
            64,
            vec!["--attributes"],
        ),
    ] {
        assert_refused(&h.run(&args), code, &needles);
    }
    let not_ours = h.path("other.json");
    std::fs::write(&not_ours, r#"{"automatic": {"hostname": "web-01"}}"#).unwrap();
    let out = h.run(&[
        "report",
        "--status",
        "success",
        "--attributes",
        not_ours.to_str().unwrap(),
    ]);
    assert_refused(
        &out,
        65,
        &["other.json", "not a convergent attributes document"],
    );
    assert_eq!(h.export(), before, "nothing was written");
}

fn the_table_reads_well(backend: Backend) {
    let h = Harness::with_fixture(backend);
    h.converge("web", "web-01", "success");
    h.converge("web", "web-03", "failure");
    let text = stdout(&h.ok(&["status", "--cluster", "web"]));
    assert!(
        !text.contains('\x1b'),
        "no colour when not on a terminal: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("cluster web: rollout web-2.4.1 (running)"),
        "{text}"
    );
    let header = lines[1];
    let column = header.find("STATUS").unwrap();
    for row in &lines[2..4] {
        let word = &row[column..column + 9];
        assert!(
            word.starts_with("converged") || word.starts_with("failed"),
            "misaligned: {row:?}"
        );
    }
    assert_eq!(
        lines.last().unwrap(),
        &"2 members: 1 converged, 0 pending, 1 failed, 0 absent"
    );

    // On a terminal, the status column is coloured, unless NO_COLOR says not to.
    let bin = assert_cmd::cargo::cargo_bin("convergent");
    let on_tty = |no_colour: bool| {
        let mut cmd = std::process::Command::new("script");
        cmd.args([
            "-qec",
            &format!("{} status --cluster web", bin.display()),
            "/dev/null",
        ])
        .env("CONVERGENT_STORE", &h.store_url)
        .env("CONVERGENT_CONFIG", h.path("config.yml"));
        if no_colour {
            cmd.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    assert!(
        on_tty(false).contains("\x1b[31mfailed\x1b[0m"),
        "{:?}",
        on_tty(false)
    );
    assert!(!on_tty(true).contains('\x1b'));
}

#[test]
fn status_of_an_unknown_cluster_is_refused() {
    let h = Harness::with_fixture(Backend::File);
    assert_refused(
        &h.run(&["status", "--cluster", "webb"]),
        65,
        &["unknown cluster \"webb\""],
    );
    assert_refused(&h.run(&["status"]), 64, &["--cluster"]);
}

#[test]
fn status_is_one_request_on_etcd() {
    let h = Harness::with_fixture(Backend::Etcd);
    for n in 1..=5 {
        h.converge("web", &format!("web-{n:02}"), "success");
    }
    let proxy =
        crate::support::proxy::CountingProxy::start(h.store_url.trim_start_matches("etcd://"));
    let through = Harness::on(Backend::Etcd, format!("etcd://{}", proxy.address()));
    let status = through.status("web", &[]);
    assert_eq!(status["summary"]["converged"], 5);
    assert_eq!(
        proxy.requests(),
        1,
        "status reads the observed prefix and everything else in one request"
    );
    let _ = fixture; // (the fixture view is what with_fixture imported)
}

/// A node of several clusters reports each from its own attributes file: the
/// cluster configured for the node (config file or CONVERGENT_CLUSTER) is
/// only a default, the file says which cluster the check-in is for. A
/// `--cluster` flag that disagrees with the file is still refused.
#[test]
fn report_takes_the_cluster_from_its_attributes_file() {
    let h = Harness::with_fixture(Backend::File);
    std::fs::write(h.path("config.yml"), "cluster: web\n").unwrap();
    let db = h.attributes_file("db", "web-01");
    let db = db.to_str().unwrap();
    let out = h.ok(&["report", "--status", "success", "--attributes", db]);
    assert!(
        stdout(&out).contains("observed/db/web-01: success"),
        "{}",
        stdout(&out)
    );
    let out = h
        .cmd()
        .env("CONVERGENT_CLUSTER", "cache")
        .args(["report", "--status", "failure", "--attributes", db])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let observed: Value = serde_json::from_str(&stdout(&h.ok(&[
        "--format",
        "json",
        "get",
        "observed/db/web-01",
    ])))
    .unwrap();
    assert_eq!(observed["status"], "failure");

    let before = h.export();
    assert_refused(
        &h.run(&[
            "report",
            "--cluster",
            "web",
            "--status",
            "success",
            "--attributes",
            db,
        ]),
        65,
        &[db, "it is for cluster \"db\", not \"web\""],
    );
    assert_eq!(h.export(), before, "nothing was written");
}
