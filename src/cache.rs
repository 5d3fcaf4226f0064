//! The last-known-good cache: every successful `attributes` result, kept so a
//! node can still converge to what it last knew when the store is down.
//!
//! One file per cluster and node, `DIR/CLUSTER/NODE.json`, written atomically
//! with mode 0600 in folders of mode 0700. It records which store, prefix,
//! cluster and node it came from, and a checksum of all that and the
//! document; it is served only when all of them match the request (a file
//! copied or renamed into place, or damaged, is no usable cache). It never
//! holds credentials: store URLs carry none.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic_file;
use crate::clock::{age_seconds, format_rfc3339, parse_rfc3339};
use crate::document::{canonical_json, generation};
use crate::env::Env;
use crate::error::{Error, Result};
use crate::local_file::{self, ReadError};
use crate::node_attributes::AttributesDocument;

/// The system-wide cache folder.
pub const SYSTEM_CACHE_DIR: &str = "/var/cache/convergent";

/// Which result a cache file holds.
#[derive(Clone, Copy, Debug)]
pub struct CacheKey<'a> {
    /// The store URL (without credentials).
    pub store: &'a str,
    /// The key prefix.
    pub prefix: &'a str,
    /// The cluster.
    pub cluster: &'a str,
    /// The node.
    pub node: &'a str,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    store: String,
    prefix: String,
    attributes: AttributesDocument,
    /// SHA-256 of the canonical JSON of the rest; absent in entries written
    /// before it existed, which are therefore never served.
    #[serde(default)]
    checksum: Option<String>,
}

impl CacheFile {
    fn new(key: &CacheKey, attributes: &AttributesDocument) -> CacheFile {
        let mut file = CacheFile {
            store: key.store.to_string(),
            prefix: key.prefix.to_string(),
            attributes: attributes.clone(),
            checksum: None,
        };
        file.checksum = Some(file.digest());
        file
    }

    fn digest(&self) -> String {
        let body = serde_json::json!({
            "store": self.store,
            "prefix": self.prefix,
            "attributes": self.attributes,
        });
        Sha256::digest(canonical_json(&body).as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Why this entry cannot stand for `key`, if it cannot: another store,
    /// prefix, cluster or node, a checksum or generation that does not match.
    fn mismatch(&self, key: &CacheKey) -> Option<String> {
        let doc = &self.attributes.convergent;
        if self.store != key.store || self.prefix != key.prefix {
            return Some(format!(
                "was written for store {} prefix {}",
                self.store, self.prefix
            ));
        }
        if doc.cluster != key.cluster || doc.node != key.node {
            return Some(format!(
                "holds cluster {:?} node {:?}, not {:?} {:?}",
                doc.cluster, doc.node, key.cluster, key.node
            ));
        }
        if self.checksum.as_deref() != Some(self.digest().as_str()) {
            return Some("is damaged: its checksum does not match its content".into());
        }
        if doc.generation != generation(&doc.desired) {
            return Some("is damaged: its generation does not match its desired state".into());
        }
        None
    }
}

/// How far in the future a cache time may be (clock jitter, a file system's
/// coarse timestamps) before the entry's age is unknowable.
const FUTURE_TOLERANCE: Duration = Duration::from_secs(60);

/// A result read back from the cache.
#[derive(Debug)]
pub struct CachedResult {
    /// The file it came from.
    pub path: PathBuf,
    /// The document as it was fetched (not yet marked stale), its
    /// `fetched_at` the last time the store confirmed it.
    pub attributes: AttributesDocument,
    /// Seconds since the store last confirmed it.
    pub age_s: u64,
}

/// Where cached results live.
#[derive(Clone, Debug)]
pub struct Cache {
    /// Folders tried in order.
    dirs: Vec<PathBuf>,
}

impl Cache {
    /// The configured folder, or else the system folder with a per-user
    /// fallback (`$XDG_CACHE_HOME/convergent` or `~/.cache/convergent`) for
    /// users who cannot write it.
    pub fn new(configured: Option<PathBuf>, env: Env) -> Cache {
        let dirs = match configured {
            Some(dir) => vec![dir],
            None => {
                let user = env("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cache")))
                    .map(|d| d.join("convergent"));
                std::iter::once(PathBuf::from(SYSTEM_CACHE_DIR))
                    .chain(user)
                    .collect()
            }
        };
        Cache { dirs }
    }

    fn file_in(dir: &Path, key: &CacheKey) -> PathBuf {
        dir.join(key.cluster).join(format!("{}.json", key.node))
    }

    /// Saves a fresh result. Tries each folder in turn; fails (exit 73) only
    /// when none can be written.
    ///
    /// Most runs resolve what the previous run did: then the file is not
    /// rewritten (no write, no fsync on every chef run of every node), only
    /// its modification time is set to now, which is what [`Cache::load`]
    /// takes as the last time the store confirmed the result.
    pub fn save(&self, key: &CacheKey, attributes: &AttributesDocument) -> Result<PathBuf> {
        let file = CacheFile::new(key, attributes);
        let bytes = serde_json::to_vec_pretty(&file).expect("cache file serializes");
        let mut last_error = None;
        for dir in &self.dirs {
            let path = Cache::file_in(dir, key);
            if Cache::confirm(&path, &file) {
                return Ok(path);
            }
            let parent = path.parent().expect("cache file has a folder");
            let written = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|reason| Error::CannotWrite {
                    path: parent.to_path_buf(),
                    reason,
                })
                .and_then(|()| atomic_file::write(&path, &bytes, Some(0o600)));
            match written {
                Ok(()) => return Ok(path),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one cache folder"))
    }

    /// When `path` already holds the same result for the same store, marks
    /// it confirmed now (its modification time) and says so.
    fn confirm(path: &Path, fresh: &CacheFile) -> bool {
        let Ok(text) = local_file::read_bytes(path, local_file::MAX_DOCUMENT_BYTES) else {
            return false;
        };
        let Ok(cached) = serde_json::from_slice::<CacheFile>(&text) else {
            return false;
        };
        // An entry that would not be served is rewritten, not confirmed.
        if cached.checksum.as_deref() != Some(cached.digest().as_str()) {
            return false;
        }
        let (old, new) = (&cached.attributes.convergent, &fresh.attributes.convergent);
        // Everything but `source` (the fetch time and the store's revision,
        // which moves with any write anywhere in the store).
        let same = cached.store == fresh.store
            && cached.prefix == fresh.prefix
            && old.cluster == new.cluster
            && old.node == new.node
            && old.state == new.state
            && old.generation == new.generation
            && old.desired == new.desired
            && old.rollout == new.rollout
            && old.source.store == new.source.store
            // A lower revision accepted (a restore, or on Consul the newest
            // key deleted) is recorded, so the next run compares with it.
            && new.source.revision >= old.source.revision;
        same && fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .is_ok()
    }

    /// Loads the cached result for `key`, or says why there is none usable.
    pub fn load(
        &self,
        key: &CacheKey,
        now: SystemTime,
    ) -> std::result::Result<CachedResult, String> {
        let mut why = Vec::new();
        for dir in &self.dirs {
            let path = Cache::file_in(dir, key);
            let text = match local_file::read_text(&path, local_file::MAX_DOCUMENT_BYTES) {
                Ok(t) => t,
                Err(ReadError::Missing) => {
                    why.push(format!("no cache file {}", path.display()));
                    continue;
                }
                Err(e) => {
                    why.push(format!("cache file {} {e}", path.display()));
                    continue;
                }
            };
            let file: CacheFile = match serde_json::from_str(&text) {
                Ok(f) => f,
                Err(e) => {
                    // The position only: never echo what a file holds.
                    why.push(format!(
                        "{} is damaged (not a cache entry, at line {} column {})",
                        path.display(),
                        e.line(),
                        e.column()
                    ));
                    continue;
                }
            };
            if let Some(problem) = file.mismatch(key) {
                why.push(format!("{} {problem}", path.display()));
                continue;
            }
            let fetched = match parse_rfc3339(&file.attributes.convergent.source.fetched_at) {
                Ok(t) => t,
                Err(e) => {
                    why.push(format!("{} is damaged: {e}", path.display()));
                    continue;
                }
            };
            // The store last confirmed the result when the file was last
            // touched by a run that resolved the same (see `save`).
            let confirmed = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_or(fetched, |touched| touched.max(fetched));
            // A time in the future (a clock stepped back, a tampered file)
            // leaves the entry's age unknown: it must not pass as young.
            if confirmed > now + FUTURE_TOLERANCE {
                why.push(format!(
                    "{} was confirmed at {}, in the future: its age is unknown",
                    path.display(),
                    format_rfc3339(confirmed)
                ));
                continue;
            }
            let confirmed = confirmed.min(now);
            let mut attributes = file.attributes;
            attributes.convergent.source.fetched_at = format_rfc3339(confirmed);
            return Ok(CachedResult {
                path,
                age_s: age_seconds(confirmed, now),
                attributes,
            });
        }
        Err(why.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_attributes::{NodeAttributes, Source};
    use serde_json::json;

    fn document() -> AttributesDocument {
        AttributesDocument {
            convergent: NodeAttributes {
                cluster: "web".into(),
                node: "web-01".into(),
                state: Some("off".into()),
                desired: json!({"state": "off"}),
                generation: generation(&json!({"state": "off"})),
                rollout: None,
                constraints: None,
                source: Source {
                    store: "file".into(),
                    revision: None,
                    fetched_at: crate::clock::now_rfc3339(),
                    stale: false,
                    cache_age_s: None,
                },
            },
        }
    }

    const KEY: CacheKey = CacheKey {
        store: "file:/v.yml",
        prefix: "convergent",
        cluster: "web",
        node: "web-01",
    };

    #[test]
    fn falls_back_to_the_next_folder_when_one_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-folder");
        fs::write(&blocker, "").unwrap();
        let user = dir.path().join("user-cache");
        let cache = Cache {
            dirs: vec![blocker.join("convergent"), user.clone()],
        };
        let path = cache.save(&KEY, &document()).unwrap();
        assert_eq!(path, user.join("web/web-01.json"));
        let loaded = cache.load(&KEY, SystemTime::now()).unwrap();
        assert_eq!(loaded.attributes, document());
        assert!(loaded.age_s < 60);
    }

    #[test]
    fn an_unchanged_result_is_confirmed_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            dirs: vec![dir.path().to_path_buf()],
        };
        let mut old = document();
        old.convergent.source.fetched_at = "2026-01-01T00:00:00Z".into();
        old.convergent.source.revision = Some(40);
        let path = cache.save(&KEY, &old).unwrap();
        let written = fs::read(&path).unwrap();
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        // The same result fetched again (later, at another revision).
        let mut again = document();
        again.convergent.source.revision = Some(42);
        cache.save(&KEY, &again).unwrap();
        assert_eq!(fs::read(&path).unwrap(), written, "not rewritten");
        assert!(fs::metadata(&path).unwrap().modified().unwrap() >= before);
        let loaded = cache.load(&KEY, SystemTime::now()).unwrap();
        assert!(
            loaded.age_s < 60,
            "aged from the confirmation, not the first fetch"
        );
        assert_ne!(
            loaded.attributes.convergent.source.fetched_at,
            "2026-01-01T00:00:00Z"
        );
        // The same result at a lower revision than recorded (accepted after
        // a consistent read) is recorded: the next run compares with it.
        let mut lower = document();
        lower.convergent.source.revision = Some(5);
        cache.save(&KEY, &lower).unwrap();
        let loaded = cache.load(&KEY, SystemTime::now()).unwrap();
        assert_eq!(loaded.attributes.convergent.source.revision, Some(5));
        let written = fs::read(&path).unwrap();
        // Another result is written.
        let mut changed = document();
        changed.convergent.desired = json!({"state": "on"});
        changed.convergent.generation = generation(&changed.convergent.desired);
        cache.save(&KEY, &changed).unwrap();
        assert_ne!(fs::read(&path).unwrap(), written);
        assert_eq!(
            cache
                .load(&KEY, SystemTime::now())
                .unwrap()
                .attributes
                .convergent
                .generation,
            generation(&json!({"state": "on"}))
        );
    }

    #[test]
    fn an_entry_is_served_only_for_its_own_cluster_and_node_and_intact() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            dirs: vec![dir.path().to_path_buf()],
        };
        let path = cache.save(&KEY, &document()).unwrap();
        let other = CacheKey {
            cluster: "db",
            node: "db-09",
            ..KEY
        };
        // The same file asked for as another node.
        let moved = Cache::file_in(dir.path(), &other);
        fs::create_dir_all(moved.parent().unwrap()).unwrap();
        fs::copy(&path, &moved).unwrap();
        let why = cache.load(&other, SystemTime::now()).unwrap_err();
        assert!(
            why.contains("holds cluster \"web\" node \"web-01\""),
            "{why}"
        );
        // One byte changed inside the document.
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("\"off\"", "\"of\"");
        fs::write(&path, text).unwrap();
        let why = cache.load(&KEY, SystemTime::now()).unwrap_err();
        assert!(why.contains("checksum does not match"), "{why}");
    }

    #[test]
    fn an_entry_confirmed_in_the_future_has_no_known_age() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            dirs: vec![dir.path().to_path_buf()],
        };
        cache.save(&KEY, &document()).unwrap();
        let now = SystemTime::now();
        assert!(cache.load(&KEY, now + Duration::from_secs(3600)).is_ok());
        let why = cache
            .load(&KEY, now - Duration::from_secs(3600))
            .unwrap_err();
        assert!(why.contains("in the future"), "{why}");
        // Within the tolerance, it is simply fresh.
        let loaded = cache.load(&KEY, now - Duration::from_secs(30)).unwrap();
        assert_eq!(loaded.age_s, 0);
    }

    #[test]
    fn the_default_search_is_system_then_per_user() {
        let env = |name: &str| (name == "HOME").then(|| "/home/alice".to_string());
        let cache = Cache::new(None, &env);
        assert_eq!(
            cache.dirs,
            [
                PathBuf::from(SYSTEM_CACHE_DIR),
                PathBuf::from("/home/alice/.cache/convergent")
            ]
        );
        let env = |name: &str| (name == "XDG_CACHE_HOME").then(|| "/x".to_string());
        assert_eq!(
            Cache::new(None, &env).dirs[1],
            PathBuf::from("/x/convergent")
        );
        assert_eq!(
            Cache::new(Some("/c".into()), &env).dirs,
            [PathBuf::from("/c")]
        );
    }

    #[test]
    fn nothing_usable_says_what_was_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            dirs: vec![dir.path().to_path_buf()],
        };
        let why = cache.load(&KEY, SystemTime::now()).unwrap_err();
        assert!(why.contains("web/web-01.json"), "{why}");
        fs::create_dir_all(dir.path().join("web")).unwrap();
        fs::write(dir.path().join("web/web-01.json"), "{not json").unwrap();
        let why = cache.load(&KEY, SystemTime::now()).unwrap_err();
        assert!(why.contains("damaged"), "{why}");
    }
}
