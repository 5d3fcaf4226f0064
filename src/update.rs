//! Read-modify-write of documents with compare-and-set, retried on conflict.
//!
//! One read of all the documents involved, a change computed from them, and
//! one transaction that applies only if none of what was read has changed.
//! A conflict re-reads and tries again. So does a write whose answer was lost
//! (its outcome is unknown): the re-read shows whether it landed, and then the
//! change computes to "nothing to do". An unavailable store is not waited out
//! here — the store already retried within `--timeout`.

use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::clock::random_fraction;
use crate::document::{encode_value, fold_each};
use crate::error::{Error, Result};
use crate::store::{Compare, Entry, Op, Store, Txn, TxnOutcome};

/// How many times a write is tried before giving up with exit 75.
pub const MAX_ATTEMPTS: u32 = 10;

/// What one read gave: each document folded, and the raw entries behind it.
#[derive(Debug)]
pub struct Current {
    /// The documents, in the order of the keys asked for.
    pub docs: Vec<Option<Value>>,
    /// The entries each document was folded from.
    pub trees: Vec<Vec<Entry>>,
    /// True when the previous attempt's write got no answer (it may or may
    /// not have landed): this read is what tells.
    pub after_lost_answer: bool,
}

/// Reads the documents at `keys`, lets `change` compute their new values
/// (`None`: nothing to do), and writes them with compare-and-set on every
/// entry read. Returns the documents as they are after the call.
pub fn update<F>(store: &dyn Store, keys: &[String], mut change: F) -> Result<Vec<Option<Value>>>
where
    F: FnMut(&Current) -> Result<Option<Vec<Option<Value>>>>,
{
    // What is written is computed from what is read: only what a quorum
    // confirmed (a Consul server just restarted answers default reads from
    // an old state).
    let consistent = store.consistent();
    let reader = consistent.as_deref().unwrap_or(store);
    let mut last_problem = String::new();
    // A write whose answer was lost: the next read tells whether it landed.
    let mut unknown_outcome: Option<Error> = None;
    // The highest revision read so far, and whether a lower one was already
    // read again once.
    let mut seen: Option<u64> = None;
    let mut reread_lower = false;
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            thread::sleep(backoff(attempt));
        }
        // The store already retried within --timeout: an unavailable store
        // is final here, not something to wait out ten times over.
        let snapshot = match reader.read_trees(keys) {
            Ok(s) => s,
            Err(e) if e.is_unavailable() => return Err(unknown_outcome.unwrap_or(e)),
            Err(e) => return Err(e),
        };
        // Behind what this call already read: read once more before acting
        // on it. A second lower answer is the store's word (on Consul the
        // revision falls when another writer deletes the newest key).
        if let (Some(before), Some(now)) = (seen, snapshot.revision) {
            if now < before && !reread_lower {
                reread_lower = true;
                last_problem = format!("a read went back from revision {before} to {now}");
                continue;
            }
        }
        seen = seen.max(snapshot.revision);
        let after_lost_answer = unknown_outcome.take().is_some();
        let docs = fold_each(keys, &snapshot.trees)?;
        let current = Current {
            docs,
            trees: snapshot.trees,
            after_lost_answer,
        };
        let Some(new_docs) = change(&current)? else {
            return Ok(current.docs);
        };
        let txn = transaction(keys, &current, &new_docs);
        match store.commit(&txn) {
            Ok(TxnOutcome::Committed { .. }) => return Ok(new_docs),
            Ok(TxnOutcome::Conflict) => {
                last_problem = "another writer changed it first".into();
            }
            // Applied or not, the compare-and-set makes a second try safe:
            // if it landed, the re-read finds nothing left to do.
            Err(e) if e.is_unavailable() => unknown_outcome = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(unknown_outcome.unwrap_or_else(|| Error::Conflict {
        key: keys.first().cloned().unwrap_or_default(),
        reason: format!(
            "gave up after {MAX_ATTEMPTS} attempts ({last_problem}); nothing else was changed, try again"
        ),
    }))
}

/// The transaction that writes `new` where `current` was read: every entry
/// read must be unchanged (and a document key that was absent must still be
/// absent); a changed document is written whole at its key, replacing any
/// sub-keys it was folded from.
fn transaction(keys: &[String], current: &Current, new: &[Option<Value>]) -> Txn {
    let mut txn = Txn::default();
    for ((key, entries), (old, new)) in keys
        .iter()
        .zip(&current.trees)
        .zip(current.docs.iter().zip(new))
    {
        for e in entries {
            txn.compares.push(Compare::Version {
                key: e.key.clone(),
                version: e.version,
            });
        }
        let has_own_entry = entries.iter().any(|e| &e.key == key);
        if !has_own_entry {
            txn.compares.push(Compare::Absent { key: key.clone() });
        }
        if old == new {
            continue;
        }
        for e in entries.iter().filter(|e| &e.key != key) {
            txn.ops.push(Op::Delete { key: e.key.clone() });
        }
        match new {
            Some(doc) => txn.ops.push(Op::Put {
                key: key.clone(),
                value: encode_value(doc),
            }),
            None if has_own_entry => txn.ops.push(Op::Delete { key: key.clone() }),
            None => {}
        }
    }
    txn
}

/// Exponential backoff from 10 ms, capped at 640 ms, with full jitter so
/// that competing writers spread out.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = 10u64 << attempt.min(6);
    Duration::from_millis(cap_ms / 2 + (random_fraction() * (cap_ms / 2) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileStore;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.yml");
        std::fs::write(&path, "p:\n  d: {a: 1}\n").unwrap();
        (dir, FileStore::new(path, Duration::from_secs(5)))
    }

    #[test]
    fn writes_the_change_and_reports_nothing_to_do_when_already_done() {
        let (_d, s) = store();
        let keys = vec!["p/d".to_string(), "p/new".to_string()];
        let out = update(&s, &keys, |cur| {
            let mut doc = cur.docs[0].clone().unwrap();
            doc["a"] = json!(2);
            Ok(Some(vec![Some(doc), Some(json!({"created": true}))]))
        })
        .unwrap();
        assert_eq!(out[0], Some(json!({"a": 2})));
        assert_eq!(
            s.load().unwrap(),
            json!({"p": {"d": {"a": 2}, "new": {"created": true}}})
        );
        let mut calls = 0;
        update(&s, &keys, |_| {
            calls += 1;
            Ok(None)
        })
        .unwrap();
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_conflict_is_retried_with_a_fresh_read() {
        let (_d, s) = store();
        let keys = vec!["p/d".to_string()];
        let mut attempts = 0;
        update(&s, &keys, |cur| {
            attempts += 1;
            if attempts == 1 {
                // Someone else writes between our read and our write.
                s.commit(&Txn {
                    compares: vec![],
                    ops: vec![Op::Put {
                        key: "p/d/b".into(),
                        value: b"9".to_vec(),
                    }],
                })
                .unwrap();
            }
            let mut doc = cur.docs[0].clone().unwrap();
            doc["a"] = json!(5);
            Ok(Some(vec![Some(doc)]))
        })
        .unwrap();
        assert_eq!(attempts, 2);
        assert_eq!(s.load().unwrap(), json!({"p": {"d": {"a": 5, "b": 9}}}));
    }

    /// A file store whose reads report the given revisions in turn.
    struct Revisions {
        inner: FileStore,
        revisions: std::cell::RefCell<Vec<u64>>,
    }

    impl Store for Revisions {
        fn kind(&self) -> crate::store::StoreKind {
            self.inner.kind()
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn read_trees(&self, roots: &[String]) -> Result<crate::store::Snapshot> {
            let mut snapshot = self.inner.read_trees(roots)?;
            snapshot.revision = Some(self.revisions.borrow_mut().remove(0));
            Ok(snapshot)
        }
        fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
            self.inner.commit(txn)
        }
        fn lock(
            &self,
            name: &str,
            ttl: Duration,
            holder: &str,
        ) -> Result<Box<dyn crate::store::HeldLock>> {
            self.inner.lock(name, ttl, holder)
        }
        fn watch(&self, roots: &[String]) -> Result<Box<dyn crate::store::ChangeFeed>> {
            self.inner.watch(roots)
        }
    }

    #[test]
    fn a_read_behind_an_earlier_one_is_read_again_before_acting() {
        let (_d, inner) = store();
        let s = Revisions {
            inner,
            revisions: vec![50, 7, 7].into(),
        };
        let keys = vec!["p/d".to_string()];
        let mut seen = Vec::new();
        update(&s, &keys, |cur| {
            seen.push(cur.docs[0].clone());
            if seen.len() == 1 {
                // Another writer gets in first: a conflict, read again.
                s.inner
                    .commit(&Txn {
                        compares: vec![],
                        ops: vec![Op::Put {
                            key: "p/d/b".into(),
                            value: b"9".to_vec(),
                        }],
                    })
                    .unwrap();
            }
            Ok(Some(vec![Some(json!({"a": 5}))]))
        })
        .unwrap();
        // Revision 7 after 50 was not acted on at once; read again, it is
        // the store's word.
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(s.revisions.borrow().is_empty(), "three reads");
    }

    #[test]
    fn endless_conflicts_end_in_exit_75() {
        let (_d, s) = store();
        let keys = vec!["p/d".to_string()];
        let mut n = 0;
        let err = update(&s, &keys, |cur| {
            n += 1;
            s.commit(&Txn {
                compares: vec![],
                ops: vec![Op::Put {
                    key: "p/d/n".into(),
                    value: n.to_string().into_bytes(),
                }],
            })
            .unwrap();
            Ok(Some(vec![Some(json!({"mine": cur.docs[0].is_some()}))]))
        })
        .unwrap_err();
        assert_eq!(err.exit_code(), 75);
        assert!(err.to_string().contains("p/d"), "{err}");
    }

    #[test]
    fn a_document_folded_from_sub_keys_is_rewritten_at_its_key() {
        let entries = vec![Entry {
            key: "p/d/state".into(),
            value: b"off".to_vec(),
            version: 7,
        }];
        let current = Current {
            docs: vec![Some(json!({"state": "off"}))],
            trees: vec![entries],
            after_lost_answer: false,
        };
        let txn = transaction(
            &["p/d".to_string()],
            &current,
            &[Some(json!({"state": "on"}))],
        );
        assert_eq!(
            txn.compares,
            vec![
                Compare::Version {
                    key: "p/d/state".into(),
                    version: 7
                },
                Compare::Absent { key: "p/d".into() }
            ]
        );
        assert_eq!(
            txn.ops,
            vec![
                Op::Delete {
                    key: "p/d/state".into()
                },
                Op::Put {
                    key: "p/d".into(),
                    value: br#"{"state":"on"}"#.to_vec()
                }
            ]
        );
    }
}
