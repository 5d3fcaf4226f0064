//! Where the etcd store's settings come from: endpoints, TLS files and
//! credentials, read from the store URL and the etcdctl variables.

use std::path::PathBuf;

use crate::env::Env;
use crate::error::{Error, Result};
use crate::local_file;
use crate::store::http::{self, TlsSettings, TlsVariables};

/// Credentials for etcd's auth; the password never leaves this struct.
pub(super) struct Credentials {
    pub(super) user: String,
    pub(super) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <redacted> }}",
            self.user
        )
    }
}

/// Base URLs of the endpoints: the URL's, else `ETCDCTL_ENDPOINTS`, else
/// etcd's default `127.0.0.1:2379`.
pub(super) fn endpoint_urls(from_url: &[String], scheme: &str, env: Env) -> Result<Vec<String>> {
    let listed: Vec<String> = if from_url.is_empty() {
        env("ETCDCTL_ENDPOINTS")
            .map(|e| {
                e.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_else(|| vec!["127.0.0.1:2379".to_string()])
    } else {
        from_url.to_vec()
    };
    listed
        .into_iter()
        .map(|e| {
            let e = e.trim_end_matches('/');
            if e.starts_with("http://") || e.starts_with("https://") {
                Ok(e.to_string())
            } else if e.contains("://") {
                Err(Error::config(
                    "ETCDCTL_ENDPOINTS",
                    format!("endpoint {e:?} is neither http:// nor https://"),
                ))
            } else {
                Ok(format!("{scheme}://{e}"))
            }
        })
        .collect()
}

pub(super) fn tls_settings(env: Env) -> Result<TlsSettings> {
    let skip = http::env_bool(env, "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")?.unwrap_or(false);
    let vars = TlsVariables {
        ca_file: "ETCDCTL_CACERT",
        client_cert: "ETCDCTL_CERT",
        client_key: "ETCDCTL_KEY",
    };
    TlsSettings::from_env(env, &vars, !skip)
}

/// `ETCDCTL_USER` is `user` or `user:password`; the password may instead
/// come from `ETCDCTL_PASSWORD` or the URL's `password_file`.
pub(super) fn credentials(env: Env, password_file: Option<PathBuf>) -> Result<Option<Credentials>> {
    let Some(user_spec) = env("ETCDCTL_USER") else {
        return Ok(None);
    };
    let (user, inline) = match user_spec.split_once(':') {
        Some((user, password)) => (user.to_string(), Some(password.to_string())),
        None => (user_spec, None),
    };
    let password = match (inline, env("ETCDCTL_PASSWORD"), password_file) {
        (Some(p), _, _) | (None, Some(p), _) => p,
        (None, None, Some(file)) => local_file::read_text(&file, local_file::MAX_SECRET_BYTES)
            .map_err(|e| {
                Error::config(
                    format!("password_file {}", file.display()),
                    format!("the file {e}"),
                )
            })?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, None, None) => {
            return Err(Error::config(
                "ETCDCTL_USER",
                format!(
                    "user {user:?} has no password: set ETCDCTL_PASSWORD, use user:password, \
                     or add ?password_file=PATH to the store URL"
                ),
            ))
        }
    };
    if user.is_empty() {
        return Err(Error::config("ETCDCTL_USER", "the user name is empty"));
    }
    Ok(Some(Credentials { user, password }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::env_of;

    #[test]
    fn endpoints_come_from_the_url_else_etcdctl_endpoints() {
        let env = env_of(&[("ETCDCTL_ENDPOINTS", "https://a:1, b:2")]);
        assert_eq!(
            endpoint_urls(&[], "http", &env).unwrap(),
            ["https://a:1", "http://b:2"]
        );
        assert_eq!(
            endpoint_urls(&["c:3".into()], "https", &env).unwrap(),
            ["https://c:3"]
        );
        assert_eq!(
            endpoint_urls(&[], "http", &env_of(&[])).unwrap(),
            ["http://127.0.0.1:2379"]
        );
        assert!(endpoint_urls(&[], "http", &env_of(&[("ETCDCTL_ENDPOINTS", "unix://x")])).is_err());
    }

    #[test]
    fn credentials_take_the_password_from_user_variable_or_file() {
        let c = credentials(&env_of(&[("ETCDCTL_USER", "alice:pw:with:colons")]), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("alice", "pw:with:colons")
        );
        let c = credentials(
            &env_of(&[("ETCDCTL_USER", "bob"), ("ETCDCTL_PASSWORD", "s3")]),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.password, "s3");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let c = credentials(&env_of(&[("ETCDCTL_USER", "carol")]), Some(file))
            .unwrap()
            .unwrap();
        assert_eq!(c.password, "from-file");
        let err = credentials(&env_of(&[("ETCDCTL_USER", "dave")]), None).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(credentials(&env_of(&[]), None).unwrap().is_none());
        assert!(
            !format!("{c:?}").contains("from-file"),
            "Debug must redact the password"
        );
    }

    #[test]
    fn tls_needs_cert_and_key_together() {
        let err = tls_settings(&env_of(&[("ETCDCTL_CERT", "/c.pem")])).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        let tls = tls_settings(&env_of(&[("ETCDCTL_INSECURE_SKIP_TLS_VERIFY", "true")])).unwrap();
        assert!(!tls.verify);
        assert!(tls_settings(&env_of(&[])).unwrap().verify);
    }
}
