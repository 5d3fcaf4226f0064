//! The one error type of `convergent`, and the exit code each failure maps to.
//!
//! Every variant names what it is about (a store key, a file, a URL) so that a
//! message read at 3 a.m. says where to look. Exit codes follow sysexits and
//! are part of the public contract (see README "Exit codes").

use std::path::PathBuf;

/// Exit codes, as documented in the README and the design.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// `status --check`: some present member has not converged.
    pub const NOT_CONVERGED: i32 = 1;
    /// The command line was used incorrectly.
    pub const USAGE: i32 = 64;
    /// Bad data in the store or in a file.
    pub const DATA: i32 = 65;
    /// The store is unavailable and no usable cache could stand in.
    pub const UNAVAILABLE: i32 = 69;
    /// Output or cache could not be written.
    pub const CANT_CREATE: i32 = 73;
    /// Temporary failure: compare-and-set conflict after retries, lock held.
    pub const TEMP_FAIL: i32 = 75;
    /// The store denied permission (ACL).
    pub const NO_PERMISSION: i32 = 77;
    /// Bad configuration.
    pub const CONFIG: i32 = 78;
}

/// Every failure `convergent` reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `status --check` found present members that have not converged (exit 1).
    #[error("{0}")]
    NotConverged(String),

    /// The command line was used incorrectly (exit 64).
    #[error("{0}")]
    Usage(String),

    /// A value in the store is invalid; `key` is the full store key (exit 65).
    #[error("bad data at key {key}: {problem}")]
    BadKey { key: String, problem: String },

    /// A cluster or node name (or rollout id) is not acceptable (exit 65).
    #[error("{0}")]
    BadName(String),

    /// A file we were given is invalid (exit 65).
    #[error("bad data in {}: {problem}", path.display())]
    BadFile { path: PathBuf, problem: String },

    /// Validation found one or more problems in `subject` (exit 65).
    #[error("{subject} is invalid:{}", bullet_list(problems))]
    Invalid {
        subject: String,
        problems: Vec<String>,
    },

    /// The store could not be reached or read (exit 69).
    #[error("store {store} is unavailable: {reason}")]
    Unavailable { store: String, reason: String },

    /// The store could not be reached and the cache could not stand in (exit 69).
    #[error("store {store} is unavailable ({reason}) and no cached result can be used: {cache}")]
    UnavailableNoCache {
        store: String,
        reason: String,
        cache: String,
    },

    /// A file (output, cache, store file) could not be written (exit 73).
    #[error("cannot write {}: {reason}", path.display())]
    CannotWrite {
        path: PathBuf,
        reason: std::io::Error,
    },

    /// A compare-and-set write kept losing to other writers (exit 75).
    #[error("could not update {key}: {reason}")]
    Conflict { key: String, reason: String },

    /// A rollout stopped before its end: paused, aborted, taken over (exit 75).
    #[error("rollout stopped: {0}")]
    Stopped(String),

    /// A lock is held by somebody else (exit 75).
    #[error("lock {name} is held by {holder}")]
    LockHeld { name: String, holder: String },

    /// The store refused access (exit 77). Never carries a token.
    #[error("permission denied by store {store} for key {key}: {reason}")]
    PermissionDenied {
        store: String,
        key: String,
        reason: String,
    },

    /// The node's desired state waits for other clusters and nothing
    /// compatible can be given meanwhile (exit 75).
    #[error("{0}")]
    Held(String),

    /// The configuration is wrong; `origin` names the file, variable or flag (exit 78).
    #[error("bad configuration in {origin}: {problem}")]
    Config { origin: String, problem: String },
}

/// The crate-wide result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The documented process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotConverged(_) => exit::NOT_CONVERGED,
            Error::Usage(_) => exit::USAGE,
            Error::BadKey { .. }
            | Error::BadName(_)
            | Error::BadFile { .. }
            | Error::Invalid { .. } => exit::DATA,
            Error::Unavailable { .. } | Error::UnavailableNoCache { .. } => exit::UNAVAILABLE,
            Error::CannotWrite { .. } => exit::CANT_CREATE,
            Error::Conflict { .. }
            | Error::LockHeld { .. }
            | Error::Stopped(_)
            | Error::Held(_) => exit::TEMP_FAIL,
            Error::PermissionDenied { .. } => exit::NO_PERMISSION,
            Error::Config { .. } => exit::CONFIG,
        }
    }

    /// A short stable name for the kind of failure, for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotConverged(_) => "not_converged",
            Error::Usage(_) => "usage",
            Error::BadKey { .. } => "bad_data",
            Error::BadName(_) => "bad_name",
            Error::BadFile { .. } => "bad_file",
            Error::Invalid { .. } => "invalid",
            Error::Unavailable { .. } | Error::UnavailableNoCache { .. } => "unavailable",
            Error::CannotWrite { .. } => "cannot_write",
            Error::Conflict { .. } => "conflict",
            Error::Stopped(_) => "stopped",
            Error::Held(_) => "held",
            Error::LockHeld { .. } => "lock_held",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::Config { .. } => "config",
        }
    }

    /// The error as one JSON object, for `--format json`: `code`,
    /// `exit_status`, `message`, and the store `key`, `file` and `problems`
    /// where the error has them.
    pub fn to_json(&self) -> String {
        let mut object = serde_json::json!({
            "code": self.code(),
            "exit_status": self.exit_code(),
            "message": self.to_string(),
        });
        match self {
            Error::BadKey { key, .. }
            | Error::Conflict { key, .. }
            | Error::PermissionDenied { key, .. } => object["key"] = key.as_str().into(),
            Error::BadFile { path, .. } | Error::CannotWrite { path, .. } => {
                object["file"] = path.display().to_string().into()
            }
            Error::Invalid { problems, .. } => object["problems"] = problems.clone().into(),
            _ => {}
        }
        object.to_string()
    }

    /// Shorthand for [`Error::BadKey`].
    pub fn bad_key(key: impl Into<String>, problem: impl Into<String>) -> Error {
        Error::BadKey {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// A held lock that was lost (lease or session gone): a conflict on the
    /// lock, saying `how` it was lost, for the holder to stop acting on it.
    pub fn lock_lost(name: &str, how: impl std::fmt::Display) -> Error {
        Error::Conflict {
            key: name.to_string(),
            reason: format!("the lock was lost: {how}"),
        }
    }

    /// Shorthand for [`Error::Config`].
    pub fn config(origin: impl Into<String>, problem: impl Into<String>) -> Error {
        Error::Config {
            origin: origin.into(),
            problem: problem.into(),
        }
    }

    /// True when the store could not be reached (as opposed to refusing or
    /// holding bad data): the cases where a cached result may stand in.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

fn bullet_list(items: &[String]) -> String {
    items.iter().map(|p| format!("\n  - {p}")).collect()
}
