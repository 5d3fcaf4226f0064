//! The same view answers the same on every store.

use crate::support::{consul_agent, stdout, Backend, Harness};

/// Everything `attributes` prints before its `source` block, which names the
/// store, revision and time and so rightly differs.
fn before_source(text: &str) -> &str {
    &text[..text.find("\"source\": {").expect("a source block")]
}

#[test]
fn attributes_are_byte_identical_on_every_store() {
    let mut backends = vec![
        Backend::File,
        Backend::Etcd,
        Backend::ZooKeeper,
        Backend::ConsulDouble,
    ];
    if consul_agent::configured() {
        backends.push(Backend::Consul);
    } else {
        eprintln!("real Consul skipped: set CONVERGENT_TEST_CONSUL_BIN to a consul binary");
    }
    let stores: Vec<Harness> = backends.into_iter().map(Harness::with_fixture).collect();
    for cluster in ["web", "db", "cache"] {
        for i in 1..=10 {
            let node = format!("{cluster}-{i:02}");
            let outputs: Vec<String> = stores
                .iter()
                .map(|h| stdout(&h.ok(&["attributes", "--cluster", cluster, "--node", &node])))
                .collect();
            for (h, out) in stores.iter().zip(&outputs).skip(1) {
                assert_eq!(
                    before_source(out),
                    before_source(&outputs[0]),
                    "{cluster}/{node} differs on {:?}",
                    h.backend
                );
            }
        }
    }
}
