//! Who the client is and what the znodes it creates allow: digest
//! credentials (from the environment or a file) and the ACL mode. Kept apart
//! so the handling of the secret stands on its own.

use std::path::PathBuf;

use crate::env::Env;
use crate::error::{Error, Result};
use crate::local_file;

/// The environment variable holding digest credentials, `user:password`.
pub(super) const AUTH_VAR: &str = "CONVERGENT_ZK_AUTH";

/// Who may do what with the znodes `convergent` creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AclMode {
    /// `world:anyone` may do everything (ZooKeeper's usual open ACL).
    Open,
    /// Only the authenticated creator (its digest identity) may.
    Creator,
}

/// Digest credentials; the secret never leaves this struct.
pub(super) struct Digest {
    pub(super) user: String,
    /// `user:password`, as ZooKeeper's digest scheme takes it.
    pub(super) secret: String,
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Digest {{ user: {:?}, password: <redacted> }}",
            self.user
        )
    }
}

/// Digest credentials from `CONVERGENT_ZK_AUTH`, else from the file the
/// URL's `auth_file` names; both hold `user:password`.
pub(super) fn digest(env: Env, auth_file: Option<PathBuf>) -> Result<Option<Digest>> {
    let (origin, text) = match (env(AUTH_VAR), auth_file) {
        (Some(text), _) => (AUTH_VAR.to_string(), text),
        (None, Some(file)) => {
            let origin = format!("auth_file {}", file.display());
            let text = local_file::read_text(&file, local_file::MAX_SECRET_BYTES)
                .map_err(|e| Error::config(&origin, format!("the file {e}")))?;
            (origin, text.trim_end_matches(['\n', '\r']).to_string())
        }
        (None, None) => return Ok(None),
    };
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Some(Digest {
            user: user.to_string(),
            secret: text.clone(),
        })),
        _ => Err(Error::config(
            origin,
            "must hold user:password (digest credentials), with neither part empty",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::env_of;

    #[test]
    fn digest_credentials_come_from_the_environment_or_a_file() {
        let d = digest(&env_of(&[(AUTH_VAR, "ops:s3:cret")]), None)
            .unwrap()
            .unwrap();
        assert_eq!((d.user.as_str(), d.secret.as_str()), ("ops", "ops:s3:cret"));
        assert!(!format!("{d:?}").contains("s3"), "Debug must redact");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("zk.auth");
        std::fs::write(&file, "ops:from-file\n").unwrap();
        let d = digest(&env_of(&[]), Some(file.clone())).unwrap().unwrap();
        assert_eq!(d.secret, "ops:from-file");
        for bad in ["nocolon-secret", ":pw-secret", "user-secret:"] {
            let err = digest(&env_of(&[(AUTH_VAR, bad)]), None).unwrap_err();
            assert_eq!(err.exit_code(), 78);
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let err = digest(&env_of(&[]), Some(dir.path().join("missing"))).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(digest(&env_of(&[]), None).unwrap().is_none());
    }
}
