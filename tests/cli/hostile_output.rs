//! Hostile input, continued (issue 14, items 15–17, 19, 20): what reaches an
//! operator's terminal, cache file names, files a command must not write or
//! run, credentials echoed by a server, and an unwritable stderr.

use std::time::Duration;

use crate::support::{assert_refused, stderr, stdout, Backend, Harness, STRICT_ATTRIBUTES_WEB_01};

/// OSC 52 (set the clipboard) and "clear the screen".
const OSC52: &str = "\x1b]52;c;SGVsbG8=\x07";
const CLEAR: &str = "\x1b[2J";

/// Runs the binary in `h` with extra environment.
fn run_env(h: &Harness, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = h.cmd();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap()
}

#[track_caller]
fn assert_no_escape(what: &str, out: &std::process::Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.iter().any(|b| *b == 0x1b || *b == 0x07),
            "{what}: a raw control byte reached {stream}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn escape_sequences_never_reach_the_terminal_in_text_output() {
    let h = Harness::with_fixture(Backend::File);
    let actor = format!("mallory{OSC52}{CLEAR}");
    let reason = format!("because{OSC52}{CLEAR}");
    let key = format!("k{CLEAR}x");
    let env = [("CONVERGENT_ACTOR", actor.as_str())];
    let set = format!("{key}={OSC52}");
    let out = run_env(
        &h,
        &env,
        &["set", "--cluster", "web", "--reason", &reason, &set],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_escape("set", &out);
    assert!(stdout(&out).contains("\\u{1b}[2J"), "{}", stdout(&out));
    let out = run_env(&h, &env, &["rollout", "pause", "web", "--reason", &reason]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reports: Vec<Vec<&str>> = vec![
        vec!["explain", "--cluster", "web", "--node", "web-01"],
        vec!["history", "web"],
        vec!["rollout", "status"],
        vec!["unset", "--cluster", "web", "--reason", &reason, &key],
    ];
    for args in &reports {
        let out = run_env(&h, &env, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_no_escape(&args.join(" "), &out);
        assert!(
            stdout(&out).contains("\\u{1b}"),
            "{args:?}: shown escaped: {}",
            stdout(&out)
        );
    }
    let out = run_env(&h, &env, &["status", "--cluster", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_escape("status", &out);
    // An error naming a hostile key, on stderr.
    let out = run_env(&h, &env, &["unset", "--cluster", "nope", &key]);
    assert!(!out.status.success());
    assert_no_escape("error", &out);
    // JSON stays exact: the escape is JSON's own.
    let out = run_env(&h, &env, &["--format", "json", "history", "web"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json
        .to_string()
        .contains(&actor.replace('\x1b', "\\u001b").replace('\x07', "\\u0007")));
}

#[test]
fn an_unwritable_stderr_gives_the_documented_code_not_a_panic() {
    let h = Harness::with_fixture(Backend::File);
    let bin = assert_cmd::cargo::cargo_bin("convergent");
    for args in [
        "attributes --cluster web --node bad..name",
        "set --cluster web no-equals-sign",
        "--format json attributes --cluster web --node bad..name",
        "--no-such-flag",
        "--format json --no-such-flag",
    ] {
        let sh = |redirect: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("\"$BIN\" {args} {redirect}"))
                .env("BIN", &bin)
                .envs(h.process().get_envs().filter_map(|(k, v)| Some((k, v?))))
                .current_dir(h.dir.path())
                .output()
                .unwrap();
            out.status.code()
        };
        let code = sh("");
        assert!(
            matches!(code, Some(64 | 65)),
            "{args}: a documented failure: {code:?}"
        );
        for redirect in ["2>&-", "2>/dev/full"] {
            assert_eq!(sh(redirect), code, "{args} {redirect}");
        }
    }
}

#[test]
fn a_nodes_cache_entry_never_takes_the_name_of_another_file() {
    let h = Harness::with_fixture(Backend::File);
    let marker = h.path("ran");
    let program = h.path("program.sh");
    std::fs::write(&program, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut agent = crate::support::agent::WatchProcess::start(
        &h,
        &[
            "--cluster",
            "web",
            "--node",
            "web-01",
            "--exec",
            program.to_str().unwrap(),
        ],
    );
    assert!(
        crate::support::eventually(Duration::from_secs(20), || marker.exists()),
        "watch ran its program; log:\n{}",
        agent.log()
    );
    let log = agent.log();
    agent.terminate();
    let file = log
        .split("writes the attributes file to ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("the log names the file: {log}"))
        .to_string();
    // A node whose name is web-01's attributes file name, cached beside it.
    h.ok(&[
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-01.attributes",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        doc["convergent"]["node"], "web-01",
        "{file} is still web-01's"
    );
    h.ok(&["report", "--status", "success", "--attributes", &file]);
    // And the cache of both still serves its own node.
    for node in ["web-01", "web-01.attributes"] {
        let cached = h.cache_dir().join(format!("web/{node}.json"));
        assert!(cached.exists(), "{}", cached.display());
        assert_ne!(cached.display().to_string(), file);
    }
}

/// A loopback HTTP server that answers every request with `status` and the
/// request's own body, wrapped by `wrap` (`{}` is the body): a proxy or WAF
/// that echoes what it refused.
fn echoing_server(status: u16, wrap: &'static str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let text = wrap.replace("{}", &String::from_utf8_lossy(&body));
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 {status} Refused\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    address
}

#[test]
fn the_etcd_password_never_reaches_an_error_even_when_echoed() {
    let h = Harness::new(Backend::File);
    let password = "hunter2\"s3cr\\et";
    let escaped = r#"hunter2\"s3cr\\et"#;
    for (status, wrap) in [
        (400, "request refused: {}"),
        (500, "{}"),
        (403, r#"{"code": 7, "message": "refused {}"}"#),
        (500, r#"{"code": 2, "error": "refused {}"}"#),
    ] {
        let store = format!("etcd://{}", echoing_server(status, wrap));
        let out = run_env(
            &h,
            &[("ETCDCTL_USER", "root"), ("ETCDCTL_PASSWORD", password)],
            &[&["--store", &store][..], &STRICT_ATTRIBUTES_WEB_01].concat(),
        );
        assert!(!out.status.success(), "{wrap}");
        let err = stderr(&out);
        assert!(
            !err.contains("s3cr") && !err.contains(escaped),
            "{status} {wrap}: the password is in the error: {err}"
        );
    }
}

#[test]
fn outputs_programs_splays_and_states_that_cannot_be_right_are_refused_at_start() {
    let h = Harness::with_fixture(Backend::File);
    let view = h.store_file();
    let link = h.path("link.yml");
    std::os::unix::fs::symlink(&view, &link).unwrap();
    let before = std::fs::read(&view).unwrap();
    let lock = format!("{}.lock", view.display());
    let (view_s, link_s) = (view.to_str().unwrap(), link.to_str().unwrap());
    let watch = |extra: &[&str]| {
        let mut args = vec!["watch", "--cluster", "web", "--node", "web-01"];
        args.extend_from_slice(extra);
        run_env(&h, &[], &args)
    };
    for output in [view_s, link_s, "view.yml", lock.as_str()] {
        let out = run_env(
            &h,
            &[],
            &[
                "attributes",
                "--cluster",
                "web",
                "--node",
                "web-01",
                "--output",
                output,
            ],
        );
        assert_refused(&out, 64, &["--output", "file of the store"]);
        let out = watch(&["--exec", "/bin/true", "--output", output]);
        assert_refused(&out, 64, &["--output", "file of the store"]);
    }
    let out = watch(&["--exec", "/bin/true", "--splay", "632254y"]);
    assert_refused(&out, 64, &["--splay", "1h"]);
    let out = watch(&["--exec", "/bin/true", "--splay", "61m"]);
    assert_refused(&out, 64, &["--splay"]);
    for program in ["/etc/passwd", "/no/such/program"] {
        let out = watch(&["--exec", program]);
        assert_refused(&out, 64, &["--exec", program, "executable"]);
    }
    let out = run_env(
        &h,
        &[],
        &[
            "report",
            "--cluster",
            "web",
            "--node",
            "web-01",
            "--status",
            "success",
            "--generation",
            "0123456789abcdef",
            "--state",
            "bogus",
        ],
    );
    assert_refused(&out, 65, &["bogus", "not allowed", "not written"]);
    let out = run_env(
        &h,
        &[],
        &["report", "--status", "success", "--attributes", "/dev/zero"],
    );
    assert_refused(&out, 65, &["/dev/zero", "not a regular file"]);
    assert_eq!(
        std::fs::read(&view).unwrap(),
        before,
        "the view is untouched"
    );
}
