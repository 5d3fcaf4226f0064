//! Settings: flag > environment > config file > default; bad configuration
//! is exit 78 naming the file and field.

use crate::support::{assert_refused, fixture, stderr, stdout, Backend, Harness};

#[test]
fn config_file_supplies_settings_and_flags_win() {
    let h = Harness::with_fixture(Backend::File);
    std::fs::write(
        h.path("config.yml"),
        format!("store: {}\nprefix: elsewhere\n", h.store_url),
    )
    .unwrap();
    // The config's prefix has no view: attributes fails naming it...
    let out = h
        .cmd()
        .env_remove("CONVERGENT_STORE")
        .args(["attributes", "--cluster", "web", "--node", "web-01"])
        .output()
        .unwrap();
    assert_refused(&out, 65, &["elsewhere/clusters/web/desired"]);
    // ...the environment beats the file...
    let out = h
        .cmd()
        .env_remove("CONVERGENT_STORE")
        .env("CONVERGENT_PREFIX", "convergent")
        .args(["attributes", "--cluster", "web", "--node", "web-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // ...and the flag beats the environment.
    let out = h
        .cmd()
        .env_remove("CONVERGENT_STORE")
        .env("CONVERGENT_PREFIX", "nowhere")
        .args([
            "--prefix",
            "convergent",
            "attributes",
            "--cluster",
            "web",
            "--node",
            "web-01",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_config_file_with_an_unknown_field_is_exit_78() {
    let h = Harness::new(Backend::File);
    let file = fixture("config/unknown-field.yml");
    let out = h.run(&["--config", file.to_str().unwrap(), "export"]);
    assert_refused(&out, 78, &["config/unknown-field.yml", "max_stael"]);
}

#[test]
fn a_config_file_with_a_wrong_type_is_exit_78() {
    let h = Harness::new(Backend::File);
    let file = fixture("config/wrong-type.yml");
    let out = h.run(&["--config", file.to_str().unwrap(), "export"]);
    assert_refused(&out, 78, &["config/wrong-type.yml", "timeout"]);
}

#[test]
fn an_unknown_store_scheme_is_refused() {
    let h = Harness::new(Backend::File);
    let file = fixture("config/bad-store.yml");
    let out = h
        .cmd()
        .env_remove("CONVERGENT_STORE")
        .args(["--config", file.to_str().unwrap(), "export"])
        .output()
        .unwrap();
    assert_refused(
        &out,
        78,
        &["field `store`", "unknown store scheme \"redis\""],
    );
    let out = h
        .cmd()
        .env("CONVERGENT_STORE", "redis://h:1")
        .arg("export")
        .output()
        .unwrap();
    assert_refused(&out, 78, &["CONVERGENT_STORE", "redis"]);
    let out = h.run(&["--store", "redis://h:1", "export"]);
    assert_refused(&out, 64, &["redis"]);
}

#[test]
fn credentials_in_a_store_url_are_refused_without_echoing_them() {
    let h = Harness::new(Backend::File);
    for url in [
        "etcd://root:s3cret@127.0.0.1:2379",
        "redis://u:s3cret@h:1",
        "zk://u:s3cret@h:2181/x",
    ] {
        let out = h.run(&["--store", url, "export"]);
        assert_refused(&out, 64, &["credentials"]);
        assert!(
            !stderr(&out).contains("s3cret"),
            "the password was echoed: {}",
            stderr(&out)
        );
        let out = h
            .cmd()
            .env("CONVERGENT_STORE", url)
            .arg("export")
            .output()
            .unwrap();
        assert_refused(&out, 78, &["credentials"]);
        assert!(
            !stderr(&out).contains("s3cret"),
            "the password was echoed: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_named_config_file_must_exist() {
    let h = Harness::new(Backend::File);
    let out = h
        .cmd()
        .env("CONVERGENT_CONFIG", h.path("nope.yml"))
        .arg("export")
        .output()
        .unwrap();
    assert_refused(&out, 78, &["nope.yml"]);
}

#[test]
fn bad_environment_values_are_exit_78_naming_the_variable() {
    let h = Harness::with_fixture(Backend::File);
    let out = h
        .cmd()
        .env("CONVERGENT_MAX_STALE", "forever")
        .args(["attributes", "--cluster", "web", "--node", "web-01"])
        .output()
        .unwrap();
    assert_refused(&out, 78, &["CONVERGENT_MAX_STALE", "forever"]);
}

#[test]
fn bad_flags_are_usage_errors() {
    let h = Harness::new(Backend::File);
    assert_refused(&h.run(&["--max-stale", "soon", "export"]), 64, &["soon"]);
    assert_refused(&h.run(&["--format", "xml", "export"]), 64, &["xml"]);
    assert_refused(&h.run(&["frobnicate"]), 64, &["frobnicate"]);
}

#[test]
fn version_names_the_commit_date_target_and_backends() {
    let h = Harness::new(Backend::File);
    let expected = format!(
        "convergent {} (commit {}, built {})\ntarget: {}\nbackends: file, consul, etcd, zookeeper\n",
        env!("CARGO_PKG_VERSION"),
        env!("CONVERGENT_COMMIT"),
        env!("CONVERGENT_BUILD_DATE"),
        env!("CONVERGENT_TARGET"),
    );
    // In a git checkout the commit is known; "unknown" only from a tarball.
    assert_ne!(env!("CONVERGENT_COMMIT"), "unknown");
    for args in [&["version"][..], &["--version"], &["-V"]] {
        assert_eq!(stdout(&h.ok(args)), expected, "{args:?}");
    }
    // Neither the config file nor the store is read: a broken config file
    // does not stop `version`.
    let out = h
        .cmd()
        .env("CONVERGENT_CONFIG", "/nonexistent/config.yml")
        .arg("version")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), expected);
}

#[test]
fn completions_for_each_shell() {
    let h = Harness::new(Backend::File);
    for shell in ["bash", "zsh", "fish"] {
        let out = h.ok(&["completions", shell]);
        let script = stdout(&out);
        assert!(
            script.contains("convergent") && script.contains("attributes"),
            "{shell}: {script}"
        );
    }
}

#[test]
fn man_pages_for_the_binary_and_each_command() {
    let h = Harness::new(Backend::File);
    let page = stdout(&h.ok(&["man"]));
    assert!(
        page.contains(&format!(
            ".TH convergent 1 {} \"convergent {}\"",
            env!("CONVERGENT_BUILD_DATE"),
            env!("CARGO_PKG_VERSION")
        )),
        "{page}"
    );
    assert!(page.contains("convergent\\-attributes(1)"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    h.ok(&["man", "--dir", dir.path().to_str().unwrap()]);
    for name in [
        "convergent",
        "convergent-attributes",
        "convergent-rollout-run",
    ] {
        let text = std::fs::read_to_string(dir.path().join(format!("{name}.1"))).unwrap();
        assert!(text.contains(&format!(".TH {name} 1 ")), "{name}: {text}");
    }
    // The hidden `man` command documents nothing about itself.
    assert!(!dir.path().join("convergent-man.1").exists());
    let out = h.run(&["man", "--dir", "/nonexistent/dir"]);
    assert_refused(&out, 73, &["/nonexistent/dir"]);
}

#[test]
fn the_bundled_example_config_works_from_the_repository_root() {
    let h = Harness::new(Backend::File);
    let out = h
        .cmd()
        .env_remove("CONVERGENT_STORE")
        .env_remove("CONVERGENT_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "--config",
            "fixtures/config/good.yml",
            "attributes",
            "--cluster",
            "web",
            "--node",
            "web-02",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["convergent"]["desired"]["version"], "2.4.1");
}
