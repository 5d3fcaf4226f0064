//! Writing a file so that readers see the old content or the new, never a mix:
//! a temporary file in the same folder, fsync, rename, fsync of the folder.
//!
//! A symlink is written through: its final target is replaced, the link
//! stays (two writers, one through the link and one through the target,
//! replace and lock the same file). The replaced file's owner, group and
//! mode are kept. Temporaries are named after their target
//! (`.view.yml.convergent-XXXXXX`), so that leftovers of a killed writer can
//! be recognised and removed.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// Temporaries older than this are leftovers of a killed writer: no write
/// takes anywhere near as long.
pub const STALE_TEMPORARY_AGE: Duration = Duration::from_secs(600);

/// Symlinks followed before giving up (as the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// The file a write to `path` replaces: `path` itself, or the final target
/// of the symlinks it names (which may not exist yet).
pub fn target(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = fs::read_link(&current).map_err(|reason| Error::CannotWrite {
                    path: current.clone(),
                    reason,
                })?;
                current = match current.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(Error::CannotWrite {
        path: path.to_path_buf(),
        reason: std::io::Error::other(format!("more than {MAX_SYMLINKS} symlinks")),
    })
}

/// Replaces `path` (or the final target of its symlinks) with `bytes`
/// atomically.
///
/// `mode` sets the permissions of the result; `None` keeps those of the file
/// being replaced, or 0644 for a new file. The owner and group of a replaced
/// file are kept where the process may set them. A failure leaves the file
/// as it was.
pub fn write(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    let path = &target(path)?;
    let cannot = |reason| Error::CannotWrite {
        path: path.to_path_buf(),
        reason,
    };
    let dir = folder_of(path);
    remove_leftovers(path, STALE_TEMPORARY_AGE);
    let existing = fs::metadata(path).ok();
    let mode = match (mode, &existing) {
        (Some(m), _) => m,
        (None, Some(meta)) => meta.permissions().mode() & 0o7777,
        (None, None) => 0o644,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .tempfile_in(dir)
        .map_err(cannot)?;
    if let Some(meta) = &existing {
        keep_owner(temp.as_file(), meta);
    }
    // After the owner: a chown may clear set-id bits.
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(cannot)?;
    temp.write_all(bytes).map_err(cannot)?;
    temp.as_file().sync_all().map_err(cannot)?;
    temp.persist(path).map_err(|e| cannot(e.error))?;
    // The rename is durable only once the folder is synced; not every
    // filesystem allows opening a folder, so a failure here is not fatal.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes the temporaries of writes to `path` older than `age`, left by
/// writers that were killed mid-write. A caller that holds the writers'
/// lock of `path` may pass zero: no other write can be under way.
pub fn remove_leftovers(path: &Path, age: Duration) {
    let prefix = temp_prefix(path);
    let Ok(entries) = fs::read_dir(folder_of(path)) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        // Only regular files we could have written; never follow a link.
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|elapsed| elapsed >= age);
        if meta.is_file() && old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn temp_prefix(path: &Path) -> String {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".convergent-");
    name.to_string_lossy().into_owned()
}

/// Gives `file` the owner and group of `like`, as far as allowed: root may
/// set both; others may set a group they belong to; otherwise the new file
/// is theirs, as any editor's would be.
fn keep_owner(file: &fs::File, like: &fs::Metadata) {
    use std::os::fd::AsFd;
    let mine = file.metadata().ok();
    if mine
        .as_ref()
        .is_some_and(|m| m.uid() == like.uid() && m.gid() == like.gid())
    {
        return;
    }
    let fd = file.as_fd();
    if std::os::unix::fs::fchown(fd, Some(like.uid()), Some(like.gid())).is_err() {
        let _ = std::os::unix::fs::fchown(fd, None, Some(like.gid()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_keeps_mode_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write(&path, b"one", None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write(&path, b"two", None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        write(&path, b"three", Some(0o600)).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporaries_of_the_same_file_are_removed_young_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let stale = dir.path().join(".out.json.convergent-aaaaaa");
        let young = dir.path().join(".out.json.convergent-bbbbbb");
        let other = dir.path().join(".other.json.convergent-cccccc");
        for p in [&stale, &young, &other] {
            fs::write(p, "partial").unwrap();
        }
        let long_ago = SystemTime::now() - 2 * STALE_TEMPORARY_AGE;
        for p in [&stale, &other] {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        write(&path, b"x", None).unwrap();
        assert!(!stale.exists());
        assert!(young.exists(), "maybe another writer's, under way");
        assert!(other.exists(), "another file's");
    }

    #[test]
    fn a_symlink_is_written_through_keeping_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        fs::write(&real, "old").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write(&link, b"new", None).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(target(&link).unwrap(), real);
    }

    #[test]
    fn unwritable_folder_is_a_cannot_write_error_naming_the_file() {
        let err = write(Path::new("/nonexistent-dir/out.json"), b"x", None).unwrap_err();
        assert_eq!(err.exit_code(), 73);
        assert!(err.to_string().contains("/nonexistent-dir/out.json"));
    }
}
