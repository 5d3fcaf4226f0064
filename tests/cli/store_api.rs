//! The store interface itself, below the commands: compare-and-set,
//! chunked imports, and the change feed of the network stores.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use convergent::store::{ChangeFeed, Store, TxnOutcome};

use crate::support::{fixture, open_store, store_suite, Backend, Harness};

store_suite! {
    compare_and_set_at_the_store_level,
    a_large_view_is_imported_in_several_transactions_and_exported_whole,
}

fn compare_and_set_at_the_store_level(backend: Backend) {
    let h = Harness::with_fixture(backend);
    let store = open_store(&h.store_url);
    assert!(matches!(
        store.compare_and_put("p/k", None, b"1".to_vec()).unwrap(),
        TxnOutcome::Committed { .. }
    ));
    assert_eq!(
        store.compare_and_put("p/k", None, b"2".to_vec()).unwrap(),
        TxnOutcome::Conflict
    );
    let v = store.get("p/k").unwrap().unwrap().version;
    assert!(matches!(
        store
            .compare_and_put("p/k", Some(v), b"2".to_vec())
            .unwrap(),
        TxnOutcome::Committed { .. }
    ));
    assert_eq!(
        store.compare_and_delete("p/k", v).unwrap(),
        TxnOutcome::Conflict
    );
    let v = store.get("p/k").unwrap().unwrap().version;
    assert!(matches!(
        store.compare_and_delete("p/k", v).unwrap(),
        TxnOutcome::Committed { .. }
    ));
    assert_eq!(store.get("p/k").unwrap(), None);
}

fn a_large_view_is_imported_in_several_transactions_and_exported_whole(backend: Backend) {
    let h = Harness::new(backend);
    let mut view: Value =
        serde_yaml::from_str(&std::fs::read_to_string(fixture("view.yml")).unwrap()).unwrap();
    for i in 0..300 {
        view["convergent"]["clusters"]["web"]["nodes"][format!("big-{i:03}")] =
            json!({"app": {"workers": i}});
    }
    let file = h.path("big.yml");
    std::fs::write(&file, serde_yaml::to_string(&view).unwrap()).unwrap();
    h.import(&file);
    assert_eq!(h.export(), view);
    assert_eq!(
        h.attributes("web", "big-123")["convergent"]["desired"]["app"]["workers"],
        123
    );
    if backend == Backend::ConsulDouble {
        let writes = h
            .consul_double()
            .requests()
            .iter()
            .filter(|r| r.is_write_txn())
            .count();
        assert!(
            writes >= 5,
            "{writes} transactions of at most 64 for 300+ documents"
        );
    }
}

/// What every network store's change feed does (the file store's wakes on
/// any change of the file): it follows a node's trees, wakes for changes
/// to them, not for other clusters, and a burst is one wake-up. Returns the
/// store and the feed for backend-specific checks.
pub fn the_feed_sees_watched_changes_only(h: &Harness) -> (Box<dyn Store>, Box<dyn ChangeFeed>) {
    the_feed_sees_watched_changes_only_at(h, &h.store_url)
}

/// The same, through a store opened at `store_url` (the harness's store
/// with options of the test's own).
pub fn the_feed_sees_watched_changes_only_at(
    h: &Harness,
    store_url: &str,
) -> (Box<dyn Store>, Box<dyn ChangeFeed>) {
    let store = open_store(store_url);
    let mut feed = store
        .watch(&[
            "convergent/clusters/web/desired".into(),
            "convergent/clusters/web/nodes/web-01".into(),
        ])
        .unwrap();
    assert!(
        !feed.wait(Duration::from_millis(200)).unwrap(),
        "nothing changed yet"
    );
    h.ok(&["set", "--cluster", "db", "version=5.1"]);
    assert!(
        !feed.wait(Duration::from_millis(500)).unwrap(),
        "db is not watched"
    );
    h.ok(&[
        "set",
        "--cluster",
        "web",
        "--node",
        "web-01",
        "app.workers=3",
        "--create",
    ]);
    assert!(
        feed.wait(Duration::from_secs(5)).unwrap(),
        "a node override is watched"
    );
    // A burst of changes is one wake-up.
    for i in 0..5 {
        h.ok(&["set", "--cluster", "web", &format!("build={i}")]);
    }
    assert!(feed.wait(Duration::from_secs(5)).unwrap());
    let deadline = Instant::now() + Duration::from_millis(300);
    let mut extra = 0;
    while Instant::now() < deadline {
        if feed.wait(Duration::from_millis(50)).unwrap() {
            extra += 1;
        }
    }
    assert!(extra <= 4, "bursts coalesce ({extra} extra wake-ups)");
    // Scalar keys under a watched document count too.
    h.put_raw("convergent/clusters/web/desired/flag", b"true");
    assert!(feed.wait(Duration::from_secs(5)).unwrap());
    (store, feed)
}
