//! Reading the local files `convergent` is given — the file store's view,
//! view files to import or validate, the config, plans, attributes files,
//! cache entries, credential files — with limits: only regular files (a FIFO
//! would block past `--timeout`, `/dev/zero` would never end), never more
//! than a cap per kind of file, and text must be UTF-8.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Cap on a view (the file store, `import`, `validate`): far above any
/// fleet's view, far below what hurts a node.
pub const MAX_VIEW_BYTES: u64 = 64 << 20;
/// Cap on small documents: the config, a plan, an attributes file, a cache entry.
pub const MAX_DOCUMENT_BYTES: u64 = 16 << 20;
/// Cap on a credential file (password, token, auth, CA bundle).
pub const MAX_SECRET_BYTES: u64 = 1 << 20;

/// Why a local file could not be read. The message completes "file X …".
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// There is no such file.
    #[error("cannot be read: it does not exist")]
    Missing,
    /// We may not read it.
    #[error("cannot be read (permission denied)")]
    Denied,
    /// A FIFO, device, socket or folder.
    #[error("is not a regular file (it is a {0})")]
    NotRegular(&'static str),
    /// Larger than the cap for its kind.
    #[error("is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// Not UTF-8 text.
    #[error("is not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
    /// Any other I/O failure.
    #[error("cannot be read: {0}")]
    Io(std::io::Error),
}

impl ReadError {
    /// True when the file is there but its content is not acceptable: bad
    /// data (exit 65), as opposed to a file that could not be read at all
    /// (missing, denied, a folder in its place, an I/O error).
    pub fn is_bad_content(&self) -> bool {
        match self {
            ReadError::NotRegular(kind) => *kind != "folder",
            ReadError::TooLarge { .. } | ReadError::NotUtf8(_) => true,
            ReadError::Missing | ReadError::Denied | ReadError::Io(_) => false,
        }
    }
}

/// Reads at most `limit` bytes of the regular file at `path` (following
/// symlinks). `/dev/null` reads as empty, as the usual "no file" idiom.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    if path == Path::new("/dev/null") {
        return Ok(Vec::new());
    }
    let file = open(path)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular(if kind.is_dir() {
            "folder"
        } else if kind.is_fifo() {
            "FIFO"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "device"
        } else {
            "special file"
        }));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while we read it: never take more than the cap.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// [`read_bytes`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bytes(path, limit)?)
        .map_err(|e| ReadError::NotUtf8(e.utf8_error().valid_up_to()))
}

fn open(path: &Path) -> Result<File, ReadError> {
    // Non-blocking, so that opening a FIFO returns at once (and is then
    // refused as not a regular file) instead of waiting for a writer.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => ReadError::Missing,
            ErrorKind::PermissionDenied => ReadError::Denied,
            _ => ReadError::Io(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "hello").unwrap();
        assert_eq!(read_text(&path, 5).unwrap(), "hello");
        assert!(matches!(
            read_text(&path, 4),
            Err(ReadError::TooLarge { limit: 4 })
        ));
        assert!(matches!(
            read_text(&dir.path().join("none"), 5),
            Err(ReadError::Missing)
        ));
        assert_eq!(read_text(Path::new("/dev/null"), 5).unwrap(), "");
    }

    #[test]
    fn special_files_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_text(&fifo, 100).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular("FIFO")), "{err}");
        assert!(err.is_bad_content());
        let err = read_text(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular("device")), "{err}");
        let err = read_text(dir.path(), 100).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular("folder")), "{err}");
        assert!(!err.is_bad_content(), "a folder in its place: unreadable");
    }

    #[test]
    fn non_utf8_text_is_bad_content_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"ab\xffc").unwrap();
        let err = read_text(&path, 100).unwrap_err();
        assert!(matches!(err, ReadError::NotUtf8(2)), "{err}");
        assert!(err.is_bad_content());
    }
}
