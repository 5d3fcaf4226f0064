//! The last-known-good cache: a node converges to what it last knew when the
//! store is down, marked stale, within --max-stale.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::support::{assert_refused, stderr, store_suite, Backend, Harness};

store_suite! {
    a_successful_result_is_cached_privately,
}

fn a_successful_result_is_cached_privately(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let fresh = h.attributes("web", "web-01");
    let file = h.cache_dir().join("web/web-01.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(h.cache_dir().join("web"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(cached["attributes"], fresh);
    assert_eq!(cached["store"], h.store_url.as_str());
}

/// Runs attributes once (caching), then takes the store file away.
fn cached_then_store_gone() -> Harness {
    let h = Harness::with_fixture(Backend::File);
    h.attributes("web", "web-02");
    std::fs::remove_file(h.store_file()).unwrap();
    h
}

#[test]
fn a_missing_store_file_serves_the_cache_marked_stale() {
    let h = cached_then_store_gone();
    let out = h.ok(&["attributes", "--cluster", "web", "--node", "web-02"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["convergent"]["source"]["stale"], true);
    assert!(doc["convergent"]["source"]["cache_age_s"].as_u64().unwrap() < 60);
    assert_eq!(doc["convergent"]["desired"]["version"], "2.4.1");
    let warning = stderr(&out);
    assert!(
        warning.contains("warning")
            && warning.contains("does not exist")
            && warning.contains("cache"),
        "{warning}"
    );
}

#[test]
fn an_unreadable_store_serves_the_cache_too() {
    let h = Harness::with_fixture(Backend::File);
    h.attributes("web", "web-02");
    // A folder where the file should be: unreadable as a file, even for root.
    std::fs::remove_file(h.store_file()).unwrap();
    std::fs::create_dir(h.store_file()).unwrap();
    let out = h.ok(&["attributes", "--cluster", "web", "--node", "web-02"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["convergent"]["source"]["stale"], true);
}

#[test]
fn on_unreachable_fail_disables_the_fallback() {
    let h = cached_then_store_gone();
    let out = h.run(&[
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-02",
        "--on-unreachable",
        "fail",
    ]);
    assert_refused(&out, 69, &["view.yml", "does not exist"]);
}

#[test]
fn no_cache_means_exit_69_naming_what_was_looked_for() {
    let h = cached_then_store_gone();
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-03"]);
    assert_refused(&out, 69, &["unavailable", "web/web-03.json"]);
}

#[test]
fn a_cache_older_than_max_stale_is_refused() {
    let h = cached_then_store_gone();
    let file = h.cache_dir().join("web/web-02.json");
    let mut cached: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 3600);
    let old = humantime::format_rfc3339_seconds(then);
    cached["attributes"]["convergent"]["source"]["fetched_at"] = Value::String(old.to_string());
    reseal(&mut cached);
    std::fs::write(&file, serde_json::to_vec(&cached).unwrap()).unwrap();
    // The age counts from the last run that confirmed the result: the
    // file's modification time.
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(then)
        .unwrap();

    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-02"]);
    assert_refused(&out, 69, &["max-stale", "1d06h old"]);

    let out = h.run(&[
        "attributes",
        "--cluster",
        "web",
        "--node",
        "web-02",
        "--max-stale",
        "48h",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let age = doc["convergent"]["source"]["cache_age_s"].as_u64().unwrap();
    assert!((30 * 3600..30 * 3600 + 60).contains(&age), "age {age}");
}

/// Recomputes a cache entry's checksum after a test changed it, as a
/// careful forger would: SHA-256 of the canonical JSON of the rest.
fn reseal(entry: &mut Value) {
    use sha2::{Digest, Sha256};
    let map = entry.as_object_mut().unwrap();
    map.remove("checksum");
    let canonical = serde_json::to_string(&Value::Object(map.clone())).unwrap();
    let digest: String = Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    map.insert("checksum".into(), Value::String(digest));
}

fn write_entry(file: &std::path::Path, entry: &Value) {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, serde_json::to_vec(entry).unwrap()).unwrap();
}

fn entry_of(h: &Harness, cluster: &str, node: &str) -> Value {
    let file = h.cache_dir().join(format!("{cluster}/{node}.json"));
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

#[test]
fn a_cache_entry_for_another_node_is_not_served() {
    let h = Harness::with_fixture(Backend::File);
    h.attributes("db", "db-09");
    h.attributes("web", "web-02");
    std::fs::remove_file(h.store_file()).unwrap();
    // db-09's entry, intact and correctly sealed, put where web-01's goes.
    let db = entry_of(&h, "db", "db-09");
    let target = h.cache_dir().join("web/web-01.json");
    write_entry(&target, &db);
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-01"]);
    assert_refused(&out, 69, &["holds cluster \"db\" node \"db-09\""]);
    // Relabelled as web-01 but not resealed: the checksum gives it away.
    let mut relabelled = db.clone();
    relabelled["attributes"]["convergent"]["cluster"] = "web".into();
    relabelled["attributes"]["convergent"]["node"] = "web-01".into();
    write_entry(&target, &relabelled);
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-01"]);
    assert_refused(&out, 69, &["checksum does not match"]);
    // A changed desired state, resealed: its generation gives it away.
    let mut tampered = entry_of(&h, "web", "web-02");
    tampered["attributes"]["convergent"]["desired"]["version"] = "6.6.6".into();
    reseal(&mut tampered);
    write_entry(&h.cache_dir().join("web/web-02.json"), &tampered);
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-02"]);
    assert_refused(&out, 69, &["generation does not match"]);
    // An entry without a checksum (or not JSON at all) is not served either.
    let mut unsealed = entry_of(&h, "db", "db-09");
    unsealed.as_object_mut().unwrap().remove("checksum");
    write_entry(&h.cache_dir().join("db/db-09.json"), &unsealed);
    let out = h.run(&["attributes", "--cluster", "db", "--node", "db-09"]);
    assert_refused(&out, 69, &["checksum does not match"]);
}

#[test]
fn a_cache_entry_from_the_future_is_not_young() {
    let h = cached_then_store_gone();
    let file = h.cache_dir().join("web/web-02.json");
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(30 * 86400);
    // A modification time in the future (the clock was stepped back).
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(future)
        .unwrap();
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-02"]);
    assert_refused(&out, 69, &["in the future", "age is unknown"]);
    // A `fetched_at` in the future, sealed, with a sane modification time.
    let mut entry = entry_of(&h, "web", "web-02");
    entry["attributes"]["convergent"]["source"]["fetched_at"] =
        humantime::format_rfc3339_seconds(future).to_string().into();
    reseal(&mut entry);
    write_entry(&file, &entry);
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-02"]);
    assert_refused(&out, 69, &["in the future"]);
}

#[test]
fn a_cache_from_another_store_is_not_used() {
    let h = cached_then_store_gone();
    let out = h
        .cmd()
        .args(["attributes", "--cluster", "web", "--node", "web-02"])
        .env(
            "CONVERGENT_STORE",
            format!("file:{}", h.path("other.yml").display()),
        )
        .output()
        .unwrap();
    assert_refused(&out, 69, &["was written for store"]);
}

#[test]
fn bad_data_is_never_masked_by_the_cache() {
    let h = Harness::with_fixture(Backend::File);
    h.attributes("web", "web-02");
    std::fs::copy(
        crate::support::fixture("broken/invalid-yaml.yml"),
        h.store_file(),
    )
    .unwrap();
    let out = h.run(&["attributes", "--cluster", "web", "--node", "web-02"]);
    assert_refused(&out, 65, &["invalid YAML"]);
}

#[test]
fn an_unwritable_cache_still_prints_the_fresh_result_and_warns() {
    let h = Harness::with_fixture(Backend::File);
    std::fs::write(h.path("blocker"), "a file, not a folder").unwrap();
    let fresh = h.attributes("web", "web-01");
    // `attributes` for web-01 with the cache under a file (unwritable).
    let blocked = |extra: &[&std::ffi::OsStr]| {
        h.cmd()
            .args(["attributes", "--cluster", "web", "--node", "web-01"])
            .args(extra)
            .env("CONVERGENT_CACHE_DIR", h.path("blocker/cache"))
            .output()
            .unwrap()
    };
    let out = blocked(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["convergent"]["desired"],
        fresh["convergent"]["desired"]
    );
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains("could not be cached") && err.contains("blocker"),
        "{err}"
    );
    // --output is still written; only its own failure is 73.
    let output = h.path("out.json");
    let out = blocked(&["--output".as_ref(), output.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(output.exists());
    let out = blocked(&["--output".as_ref(), h.path("blocker/out.json").as_os_str()]);
    assert_refused(&out, 73, &["blocker"]);
}
