//! A [`Txn`] in Consul's transaction verbs, and the limits Consul puts on
//! one transaction: pure, so it is tested without a server.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::store::{Compare, Op, Txn};

/// Consul's hard-coded `maxTxnOps`.
pub(super) const MAX_TXN_OPS: usize = 64;
/// Consul's default `limits.kv_max_value_size`, per value.
pub(super) const MAX_VALUE_BYTES: usize = 512 * 1024;
/// Consul's default `txn_max_req_len`, for a transaction's whole body.
pub(super) const MAX_TXN_BODY: usize = 512 * 1024;
/// Raw bytes of keys and values per bulk transaction: base64 makes values a
/// third larger and each operation adds some JSON; this keeps a full
/// transaction of 64 operations under [`MAX_TXN_BODY`].
pub(super) const TXN_SPLIT_BYTES: usize = 380_000;

/// The ops of a [`Txn`] in Consul's verbs, and the key each is about. A
/// compare and a write on the same key become one op (`cas`, `delete-cas`),
/// so that rewriting a document folded from many sub-keys stays within 64.
pub(super) fn txn_ops(txn: &Txn) -> (Vec<Value>, Vec<String>) {
    let mut unused: Vec<Option<&Compare>> = txn.compares.iter().map(Some).collect();
    let mut take = |key: &str| -> Option<Compare> {
        unused
            .iter_mut()
            .find(|c| {
                c.is_some_and(|c| match c {
                    // A version 0 cannot exist: `cas` with Index 0 would mean
                    // "absent", so it stays a separate check.
                    Compare::Version { key: k, version } => k == key && *version > 0,
                    Compare::Absent { key: k } => k == key,
                })
            })
            .and_then(Option::take)
            .cloned()
    };
    let deletes = txn.ops.iter().filter(|o| matches!(o, Op::Delete { .. }));
    let puts = txn.ops.iter().filter(|o| matches!(o, Op::Put { .. }));
    let mut writes = Vec::new();
    for op in deletes.chain(puts) {
        let key = op.key().to_string();
        let kv = match (op, take(&key)) {
            (Op::Delete { .. }, None) => json!({"Verb": "delete", "Key": key}),
            (Op::Delete { .. }, Some(Compare::Version { version, .. })) => {
                json!({"Verb": "delete-cas", "Key": key, "Index": version})
            }
            // Deleting a key that must be absent is checking that it is.
            (Op::Delete { .. }, Some(Compare::Absent { .. })) => {
                json!({"Verb": "check-not-exists", "Key": key})
            }
            (Op::Put { value, .. }, None) => {
                json!({"Verb": "set", "Key": key, "Value": B64.encode(value)})
            }
            (Op::Put { value, .. }, Some(Compare::Version { version, .. })) => {
                json!({"Verb": "cas", "Key": key, "Value": B64.encode(value), "Index": version})
            }
            (Op::Put { value, .. }, Some(Compare::Absent { .. })) => {
                json!({"Verb": "cas", "Key": key, "Value": B64.encode(value), "Index": 0})
            }
        };
        writes.push((json!({ "KV": kv }), key));
    }
    let checks = unused.into_iter().flatten().map(|c| match c {
        Compare::Version { key, version } => (
            json!({"KV": {"Verb": "check-index", "Key": key, "Index": version}}),
            key.clone(),
        ),
        Compare::Absent { key } => (
            json!({"KV": {"Verb": "check-not-exists", "Key": key}}),
            key.clone(),
        ),
    });
    checks.chain(writes).unzip()
}

pub(super) fn is_write(op: &Value) -> bool {
    !matches!(
        op["KV"]["Verb"].as_str(),
        Some("get" | "get-tree" | "check-index" | "check-session" | "check-not-exists")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_merge_into_the_write_of_their_key() {
        let txn = Txn {
            compares: vec![
                Compare::Version {
                    key: "d/a".into(),
                    version: 5,
                },
                Compare::Version {
                    key: "x".into(),
                    version: 9,
                },
                Compare::Absent { key: "d".into() },
                Compare::Absent { key: "y".into() },
            ],
            ops: vec![
                Op::Put {
                    key: "d".into(),
                    value: b"{}".to_vec(),
                },
                Op::Delete { key: "d/a".into() },
            ],
        };
        let (ops, keys) = txn_ops(&txn);
        let verbs: Vec<(&str, &str)> = ops
            .iter()
            .map(|o| {
                (
                    o["KV"]["Verb"].as_str().unwrap(),
                    o["KV"]["Key"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            verbs,
            [
                ("check-index", "x"),
                ("check-not-exists", "y"),
                ("delete-cas", "d/a"),
                ("cas", "d")
            ]
        );
        assert_eq!(keys, ["x", "y", "d/a", "d"]);
        assert_eq!(ops[2]["KV"]["Index"], 5);
        assert_eq!(ops[3]["KV"]["Index"], 0);
        assert_eq!(ops[3]["KV"]["Value"], "e30=");
        assert!(!is_write(&ops[0]) && is_write(&ops[2]));
    }

    #[test]
    fn a_bulk_transaction_within_the_split_limit_fits_consul() {
        let put = |key: String, size: usize| Op::Put {
            key,
            value: vec![0xff; size],
        };
        let one = Txn {
            compares: vec![],
            ops: vec![put(
                "convergent/clusters/web/nodes/big".into(),
                TXN_SPLIT_BYTES - 40,
            )],
        };
        let many = Txn {
            compares: vec![],
            ops: (0..MAX_TXN_OPS)
                .map(|i| {
                    put(
                        format!("convergent/clusters/web/nodes/n{i:02}"),
                        TXN_SPLIT_BYTES / 64 - 40,
                    )
                })
                .collect(),
        };
        for txn in [one, many] {
            assert!(txn.ops.iter().map(Op::size).sum::<usize>() <= TXN_SPLIT_BYTES);
            let body = serde_json::to_vec(&txn_ops(&txn).0).unwrap();
            assert!(body.len() <= MAX_TXN_BODY, "{} bytes", body.len());
        }
    }
}
