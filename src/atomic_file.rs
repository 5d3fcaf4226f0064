//! Writing a file so that readers see the old content or the new, never a mix:
//! a temporary file in the same folder, fsync, rename, fsync of the folder.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Replaces `path` with `bytes` atomically.
///
/// `mode` sets the permissions of the result; `None` keeps those of the file
/// being replaced, or 0644 for a new file. A failure leaves `path` as it was.
pub fn write(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    let cannot = |reason| Error::CannotWrite {
        path: path.to_path_buf(),
        reason,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mode = match mode {
        Some(m) => m,
        None => fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".convergent-")
        .tempfile_in(dir)
        .map_err(cannot)?;
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
    fn unwritable_folder_is_a_cannot_write_error_naming_the_file() {
        let err = write(Path::new("/nonexistent-dir/out.json"), b"x", None).unwrap_err();
        assert_eq!(err.exit_code(), 73);
        assert!(err.to_string().contains("/nonexistent-dir/out.json"));
    }
}
