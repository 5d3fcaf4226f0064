//! The file store: the whole view in one YAML (or `.json`) file whose nesting
//! mirrors the keys, prefix included.
//!
//! Any node of the file's tree is a key: reading `P/clusters/web/desired`
//! returns that subtree as one entry, versioned by a hash of its content, so
//! a compare-and-set on a document sees every change inside it. Writes take
//! an exclusive lock on the side file `PATH.lock`, re-read the file, check the
//! compares, and replace the file atomically (temporary file, fsync, rename).
//! Readers never lock: a rename is atomic.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{
    ChangeFeed, Compare, Entry, HeldLock, Op, Snapshot, Store, StoreKind, Txn, TxnOutcome,
};
use crate::atomic_file;
use crate::document::{decode_value, encode_value};
use crate::error::{Error, Result};
use crate::local_file;
use crate::view_file;

/// How often a file change feed looks at the file.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A view kept in a local YAML or JSON file.
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
    /// How long a writer waits for another writer's lock.
    lock_wait: Duration,
}

impl FileStore {
    /// The store in `path`; a writer waits at most `lock_wait` for another.
    pub fn new(path: PathBuf, lock_wait: Duration) -> Self {
        FileStore { path, lock_wait }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn unavailable(&self, reason: impl Into<String>) -> Error {
        Error::Unavailable {
            store: self.describe(),
            reason: reason.into(),
        }
    }

    /// Reads and parses the whole file. A missing or unreadable file is
    /// "unavailable" (a cached result may stand in); a malformed one — not
    /// UTF-8, too large, not a regular file, not our YAML — is bad data,
    /// which no cache may mask.
    pub fn load(&self) -> Result<Value> {
        let text = local_file::read_text(&self.path, local_file::MAX_VIEW_BYTES).map_err(|e| {
            if e.is_bad_content() {
                Error::BadFile {
                    path: self.path.clone(),
                    problem: format!("the file {e}"),
                }
            } else {
                self.unavailable(format!("file {} {e}", self.path.display()))
            }
        })?;
        view_file::parse(&self.path, &text)
    }

    /// Like [`FileStore::load`], but a file that does not exist yet is an
    /// empty view: writing creates it.
    fn load_for_write(&self) -> Result<Value> {
        match fs::metadata(&self.path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Value::Object(Map::new())),
            _ => self.load(),
        }
    }

    fn save(&self, tree: &Value) -> Result<()> {
        atomic_file::write(
            &self.path,
            &view_file::render(tree, view_file::is_json(&self.path)),
            None,
        )
        .map_err(|e| match e {
            Error::CannotWrite { reason, .. } if reason.kind() == ErrorKind::PermissionDenied => {
                Error::PermissionDenied {
                    store: self.describe(),
                    key: self.path.display().to_string(),
                    reason: "the file cannot be written (permission denied)".into(),
                }
            }
            other => other,
        })
    }

    /// The file writes replace and lock: the view, or the final target of
    /// the symlinks it names, so that writers through a link and through
    /// its target share one lock and one file.
    fn target(&self) -> Result<PathBuf> {
        atomic_file::target(&self.path)
    }

    /// Takes the writers' lock on `TARGET.lock`, waiting up to `lock_wait`.
    fn lock_writers(&self, target: &Path) -> Result<LockFile> {
        let lock_path = side_path(target, ".lock");
        let deadline = Instant::now() + self.lock_wait;
        loop {
            match LockFile::try_take(&lock_path) {
                Ok(Some(lock)) => return Ok(lock),
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    return Err(Error::LockHeld {
                        name: lock_path.display().to_string(),
                        holder: format!(
                            "another writer, for more than {}s",
                            self.lock_wait.as_secs_f32()
                        ),
                    })
                }
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(Error::PermissionDenied {
                        store: self.describe(),
                        key: lock_path.display().to_string(),
                        reason: "cannot open the writers' lock file (permission denied)".into(),
                    })
                }
                Err(e) => {
                    return Err(Error::CannotWrite {
                        path: lock_path,
                        reason: e,
                    })
                }
            }
        }
    }

    /// What identifies one version of the file without reading it. Every
    /// write renames a new file into place, so the inode changes even when
    /// size and (coarse) mtime do not.
    fn stamp(&self) -> Option<(u64, SystemTime, u64)> {
        let meta = fs::metadata(&self.path).ok()?;
        Some((meta.ino(), meta.modified().ok()?, meta.len()))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn side_path(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn node<'t>(tree: &'t Value, key: &str) -> Option<&'t Value> {
    key.split('/')
        .try_fold(tree, |n, segment| n.as_object()?.get(segment))
}

fn version_of(encoded: &[u8]) -> u64 {
    let digest = Sha256::digest(encoded);
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn entry_at(tree: &Value, key: &str) -> Option<Entry> {
    let value = node(tree, key)?;
    let encoded = encode_value(value);
    Some(Entry {
        key: key.to_string(),
        version: version_of(&encoded),
        value: encoded,
    })
}

/// Removes the node at `key`, then each map the removal leaves empty (a key
/// store has no empty "folders"); the file's root map itself stays.
fn remove_node(tree: &mut Value, key: &str) {
    let segments: Vec<&str> = key.split('/').collect();
    for depth in (1..=segments.len()).rev() {
        let (last, parents) = segments[..depth].split_last().expect("depth >= 1");
        let Some(Value::Object(map)) = parents
            .iter()
            .try_fold(&mut *tree, |n, s| n.as_object_mut()?.get_mut(*s))
        else {
            return;
        };
        let is_target = depth == segments.len();
        let emptied = map
            .get(*last)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        if !(is_target || emptied) {
            return;
        }
        map.remove(*last);
    }
}

fn put_node(tree: &mut Value, key: &str, value: Value) -> std::result::Result<(), String> {
    let mut n = tree;
    let segments: Vec<&str> = key.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if n.is_null() {
            *n = Value::Object(Map::new());
        }
        n = match n {
            Value::Object(map) => map.entry(segment.to_string()).or_insert(Value::Null),
            other => {
                return Err(format!(
                    "{} holds {}, not a map",
                    segments[..i].join("/"),
                    type_name(other)
                ))
            }
        };
    }
    *n = value;
    Ok(())
}

impl Store for FileStore {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn read_trees(&self, roots: &[String]) -> Result<Snapshot> {
        let tree = self.load()?;
        Ok(Snapshot {
            trees: roots
                .iter()
                .map(|root| entry_at(&tree, root).into_iter().collect())
                .collect(),
            revision: None,
        })
    }

    fn commit(&self, txn: &Txn) -> Result<TxnOutcome> {
        let target = self.target()?;
        let _lock = self.lock_writers(&target)?;
        // Holding the writers' lock, no other write is under way: any
        // temporary of the view is a killed writer's leftover.
        atomic_file::remove_leftovers(&target, Duration::ZERO);
        let mut tree = self.load_for_write()?;
        for compare in &txn.compares {
            let holds = match compare {
                Compare::Version { key, version } => {
                    entry_at(&tree, key).is_some_and(|e| e.version == *version)
                }
                Compare::Absent { key } => node(&tree, key).is_none(),
            };
            if !holds {
                return Ok(TxnOutcome::Conflict);
            }
        }
        for op in &txn.ops {
            if let Op::Delete { key } = op {
                remove_node(&mut tree, key);
            }
        }
        for op in &txn.ops {
            if let Op::Put { key, value } = op {
                let value = decode_value(key, value)?;
                put_node(&mut tree, key, value).map_err(|why| {
                    Error::bad_key(key, format!("cannot store a value here: {why}"))
                })?;
            }
        }
        self.save(&tree)?;
        Ok(TxnOutcome::Committed { revision: None })
    }

    fn lock(&self, name: &str, _ttl: Duration, holder: &str) -> Result<Box<dyn HeldLock>> {
        // A flock dies with its process, so a crashed holder never blocks
        // anyone: no TTL is needed on a local file.
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = side_path(&self.target()?, &format!(".lock.{safe}"));
        let mut lock = match LockFile::try_take(&path) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                let holder =
                    local_file::read_text(&path, local_file::MAX_SECRET_BYTES).unwrap_or_default();
                let holder = holder.trim();
                return Err(Error::LockHeld {
                    name: name.to_string(),
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(e) => return Err(Error::CannotWrite { path, reason: e }),
        };
        let write_holder = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.write_all(holder.as_bytes())?;
            file.sync_data()
        };
        write_holder(&mut lock.file).map_err(|e| Error::CannotWrite {
            path: path.clone(),
            reason: e,
        })?;
        Ok(Box::new(FileLock {
            name: name.to_string(),
            _lock: lock,
        }))
    }

    fn watch(&self, roots: &[String]) -> Result<Box<dyn ChangeFeed>> {
        let mut feed = FilePoller {
            store: self.clone(),
            roots: roots.to_vec(),
            stamp: None,
            seen: None,
        };
        feed.seen = Some(feed.fingerprint()?);
        Ok(Box::new(feed))
    }
}

/// A lock held as an exclusive flock on `PATH.lock.NAME`.
struct FileLock {
    name: String,
    _lock: LockFile,
}

/// An exclusive flock on a side file, whose file is removed on release so
/// that lock files do not pile up beside the view. The removal is safe
/// because a taker checks, once it holds the flock, that the path still
/// names the file it locked (the holder before it may have removed it).
struct LockFile {
    path: PathBuf,
    file: File,
}

impl LockFile {
    /// Takes the lock at `path` if it is free; `Ok(None)` when it is held.
    fn try_take(path: &Path) -> std::io::Result<Option<LockFile>> {
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
            let mine = file.metadata()?;
            let named = fs::metadata(path);
            if named.is_ok_and(|n| n.dev() == mine.dev() && n.ino() == mine.ino()) {
                return Ok(Some(LockFile {
                    path: path.to_path_buf(),
                    file,
                }));
            }
            // We locked a file its holder has just removed: take the new one.
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Still holding the flock (the file closes after this), so nobody
        // can have taken the lock on this file in between.
        let _ = fs::remove_file(&self.path);
    }
}

impl HeldLock for FileLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// A change feed that polls the file: cheap metadata first, content only
/// when the file was replaced.
struct FilePoller {
    store: FileStore,
    roots: Vec<String>,
    stamp: Option<(u64, SystemTime, u64)>,
    seen: Option<Vec<Option<u64>>>,
}

impl FilePoller {
    fn fingerprint(&mut self) -> Result<Vec<Option<u64>>> {
        self.stamp = self.store.stamp();
        let snapshot = self.store.read_trees(&self.roots)?;
        Ok(snapshot
            .trees
            .iter()
            .map(|t| t.first().map(|e| e.version))
            .collect())
    }
}

impl ChangeFeed for FilePoller {
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.store.stamp() != self.stamp || self.stamp.is_none() {
                let now = self.fingerprint()?;
                if self.seen.as_ref() != Some(&now) {
                    self.seen = Some(now);
                    return Ok(true);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            thread::sleep(left.min(POLL_INTERVAL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store_with(content: &str) -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.yml");
        fs::write(&path, content).unwrap();
        (dir, FileStore::new(path, Duration::from_secs(5)))
    }

    fn put(key: &str, value: Value) -> Op {
        Op::Put {
            key: key.into(),
            value: encode_value(&value),
        }
    }

    #[test]
    fn reads_subtrees_as_single_entries() {
        let (_d, store) = store_with("p:\n  clusters:\n    web:\n      desired: {state: 'off'}\n");
        let snap = store
            .read_trees(&["p/clusters/web/desired".into(), "p/defaults".into()])
            .unwrap();
        assert_eq!(snap.trees[0].len(), 1);
        assert_eq!(snap.trees[0][0].value, br#"{"state":"off"}"#);
        assert!(snap.trees[1].is_empty());
        assert_eq!(snap.revision, None);
    }

    #[test]
    fn compare_and_set_detects_any_change_inside_the_document() {
        let (_d, store) = store_with("p:\n  d: {a: 1, b: {c: 2}}\n");
        let (entries, _) = store.read_tree("p/d").unwrap();
        let version = entries[0].version;
        let cas = |v| Txn {
            compares: vec![Compare::Version {
                key: "p/d".into(),
                version,
            }],
            ops: vec![put("p/d", v)],
        };
        // Someone else changes a nested value.
        let other = Txn {
            compares: vec![],
            ops: vec![put("p/d/b/c", json!(3))],
        };
        assert_eq!(
            store.commit(&other).unwrap(),
            TxnOutcome::Committed { revision: None }
        );
        assert_eq!(
            store.commit(&cas(json!({"a": 9}))).unwrap(),
            TxnOutcome::Conflict
        );
        assert_eq!(
            store.load().unwrap(),
            json!({"p": {"d": {"a": 1, "b": {"c": 3}}}})
        );
    }

    #[test]
    fn absent_compare_creates_once() {
        let (_d, store) = store_with("");
        let create = Txn {
            compares: vec![Compare::Absent {
                key: "p/rollouts/web".into(),
            }],
            ops: vec![put("p/rollouts/web", json!({"id": "r1"}))],
        };
        assert!(matches!(
            store.commit(&create).unwrap(),
            TxnOutcome::Committed { .. }
        ));
        assert_eq!(store.commit(&create).unwrap(), TxnOutcome::Conflict);
    }

    #[test]
    fn compare_and_put_and_delete_follow_versions() {
        let (_d, store) = store_with("p:\n  k: 1\n");
        let v1 = store.get("p/k").unwrap().unwrap().version;
        assert_eq!(
            store.compare_and_put("p/k", None, b"2".to_vec()).unwrap(),
            TxnOutcome::Conflict
        );
        assert!(matches!(
            store
                .compare_and_put("p/k", Some(v1), b"2".to_vec())
                .unwrap(),
            TxnOutcome::Committed { .. }
        ));
        assert_eq!(
            store.compare_and_delete("p/k", v1).unwrap(),
            TxnOutcome::Conflict,
            "stale version"
        );
        let v2 = store.get("p/k").unwrap().unwrap().version;
        assert!(matches!(
            store.compare_and_delete("p/k", v2).unwrap(),
            TxnOutcome::Committed { .. }
        ));
        assert_eq!(store.get("p/k").unwrap(), None);
    }

    #[test]
    fn delete_prunes_emptied_maps_but_not_the_top() {
        let (_d, store) =
            store_with("p:\n  clusters:\n    web:\n      nodes: {n1: {state: 'off'}}\n");
        store
            .commit(&Txn {
                compares: vec![],
                ops: vec![Op::Delete {
                    key: "p/clusters/web/nodes/n1".into(),
                }],
            })
            .unwrap();
        assert_eq!(store.load().unwrap(), json!({}));
    }

    #[test]
    fn missing_file_is_unavailable_and_bad_yaml_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("nope.yml"), Duration::from_secs(1));
        let err = store.read_trees(&["p".into()]).unwrap_err();
        assert!(
            err.is_unavailable() && err.to_string().contains("does not exist"),
            "{err}"
        );

        let (_d, store) = store_with("p:\n  defaults: {a: 1\n  b: 2\n");
        let err = store.read_trees(&["p".into()]).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.exit_code(), 65);
        assert!(text.contains("view.yml") && text.contains("line"), "{text}");
    }

    #[test]
    fn second_lock_is_refused_naming_the_holder() {
        let (_d, store) = store_with("");
        let held = store
            .lock(
                "rollout/web",
                Duration::from_secs(10),
                "orchestrator on host-a",
            )
            .unwrap();
        assert_eq!(held.name(), "rollout/web");
        let err = store
            .lock("rollout/web", Duration::from_secs(10), "b")
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 75);
        assert!(err.to_string().contains("orchestrator on host-a"), "{err}");
        drop(held);
        assert!(store
            .lock("rollout/web", Duration::from_secs(10), "b")
            .is_ok());
    }

    #[test]
    fn change_feed_reports_changes_to_watched_trees_only() {
        let (_d, store) = store_with("p:\n  a: 1\n  b: 1\n");
        let mut feed = store.watch(&["p/a".into()]).unwrap();
        assert!(!feed.wait(Duration::from_millis(50)).unwrap());
        store
            .commit(&Txn {
                compares: vec![],
                ops: vec![put("p/b", json!(2))],
            })
            .unwrap();
        assert!(
            !feed.wait(Duration::from_millis(300)).unwrap(),
            "b is not watched"
        );
        store
            .commit(&Txn {
                compares: vec![],
                ops: vec![put("p/a", json!(2))],
            })
            .unwrap();
        assert!(feed.wait(Duration::from_secs(5)).unwrap());
    }
}
