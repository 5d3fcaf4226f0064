//! How a Consul store is set up from its URL and the consul CLI's
//! environment (address, TLS, token): read once when the store is opened,
//! before any request is sent.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::client::Client;
use super::keys::encode;
use super::ConsulStore;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::local_file;
use crate::store::http::{self, Bound, TlsSettings, TlsVariables};
use crate::store::{StoreOptions, StoreUrl};

/// Options the Consul URL accepts (`consul://h:8500?dc=dc2&consistency=stale`).
const OPTIONS: [&str; 2] = ["consistency", "dc"];
/// Where the consul CLI looks when nothing says otherwise.
const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

/// A token or password: kept out of `Debug` output and messages.
#[derive(Clone)]
pub(super) struct Secret(pub(super) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How reads ask for consistency (`?consistency=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Consistency {
    /// The leader answers without checking with a quorum.
    Default,
    /// The leader confirms its leadership first.
    Consistent,
    /// Any server answers, even without a leader.
    Stale,
}

impl Consistency {
    pub(super) fn query_flag(self) -> Option<&'static str> {
        match self {
            Consistency::Default => None,
            Consistency::Consistent => Some("consistent"),
            Consistency::Stale => Some("stale"),
        }
    }
}

impl ConsulStore {
    /// Opens the store the URL names. The address comes from the URL, else
    /// `CONSUL_HTTP_ADDR`, else `127.0.0.1:8500`; the token from
    /// `CONSUL_HTTP_TOKEN_FILE`, else `CONSUL_HTTP_TOKEN`; TLS from
    /// `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY` and
    /// `CONSUL_HTTP_SSL_VERIFY`, as the consul CLI reads them.
    pub fn open(url: &StoreUrl, options: &StoreOptions, env: Env) -> Result<ConsulStore> {
        let StoreUrl::Consul { https, address, .. } = url else {
            unreachable!("ConsulStore::open is given consul URLs only")
        };
        let opts = url.check_options(&OPTIONS)?;
        let consistency = match opts.get("consistency").map(String::as_str) {
            None | Some("default") => Consistency::Default,
            Some("consistent") => Consistency::Consistent,
            Some("stale") => Consistency::Stale,
            Some(other) => {
                return Err(Error::config(
                    format!("store URL {url}"),
                    format!("consistency {other:?} is not default, consistent or stale"),
                ))
            }
        };
        let (base, display) = base_url(url, *https, address.as_deref(), env)?;
        let mut common_query = Vec::new();
        if let Some(dc) = opts.get("dc") {
            common_query.push(format!("dc={}", encode(dc, false)));
        }
        for (var, param) in [
            ("CONSUL_NAMESPACE", "ns"),
            ("CONSUL_PARTITION", "partition"),
        ] {
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                common_query.push(format!("{param}={}", encode(&value, false)));
            }
        }
        let tls = tls_settings(env)?;
        let client = Client {
            display,
            base,
            agent: http::agent(Bound::Whole(options.timeout), &tls)?,
            timeout: options.timeout,
            token: token(env)?,
            basic_auth: env("CONSUL_HTTP_AUTH")
                .filter(|a| !a.is_empty())
                .map(|a| Secret(format!("Basic {}", B64.encode(a)))),
            common_query,
            consistency,
        };
        Ok(ConsulStore {
            client: Arc::new(client),
        })
    }
}

/// The base URL and the store's name for messages. Like the consul CLI,
/// `CONSUL_HTTP_ADDR` is `host:port`, `http://…` or `https://…` (with an
/// optional path prefix for a reverse proxy); `CONSUL_HTTP_SSL=true` turns
/// https on for a bare `host:port`.
fn base_url(
    url: &StoreUrl,
    https: bool,
    address: Option<&str>,
    env: Env,
) -> Result<(String, String)> {
    if let Some(address) = address {
        let scheme = if https { "https" } else { "http" };
        return Ok((format!("{scheme}://{address}"), url.to_string()));
    }
    let (from, address) = match env("CONSUL_HTTP_ADDR").filter(|a| !a.trim().is_empty()) {
        Some(a) => (
            "CONSUL_HTTP_ADDR",
            a.trim().trim_end_matches('/').to_string(),
        ),
        None => ("the default address", DEFAULT_ADDRESS.to_string()),
    };
    let bad = |problem: String| Error::config("CONSUL_HTTP_ADDR", problem);
    if address.contains('@') {
        return Err(bad(
            "the address carries credentials (`user@`); use CONSUL_HTTP_AUTH or a token instead"
                .into(),
        ));
    }
    let ssl = http::env_bool(env, "CONSUL_HTTP_SSL")?.unwrap_or(false);
    let base = match address.split_once("://") {
        Some(("http", _)) if https => {
            return Err(bad(format!(
                "{address:?} is plain http, but the store URL {url} asks for https"
            )))
        }
        Some(("http" | "https", rest)) if !rest.is_empty() => address.clone(),
        Some(("unix", _)) => {
            return Err(bad(format!(
                "{address:?}: unix sockets are not supported; give host:port"
            )))
        }
        Some((scheme, _)) => return Err(bad(format!("unknown protocol scheme {scheme:?}"))),
        None if https || ssl => format!("https://{address}"),
        None => format!("http://{address}"),
    };
    let shown = base
        .replacen("https://", "consul+https://", 1)
        .replacen("http://", "consul://", 1);
    let options = url.to_string();
    let options = options.find('?').map_or("", |i| &options[i..]);
    Ok((base, format!("{shown}{options} (from {from})")))
}

fn tls_settings(env: Env) -> Result<TlsSettings> {
    // Silently ignoring these would verify against the wrong roots or name.
    for (var, instead) in [
        (
            "CONSUL_CAPATH",
            "point CONSUL_CACERT at a bundle file instead",
        ),
        (
            "CONSUL_TLS_SERVER_NAME",
            "connect with the name in the server's certificate instead",
        ),
    ] {
        if env(var).is_some_and(|v| !v.is_empty()) {
            return Err(Error::config(var, format!("is not supported; {instead}")));
        }
    }
    let verify = http::env_bool(env, "CONSUL_HTTP_SSL_VERIFY")?.unwrap_or(true);
    let vars = TlsVariables {
        ca_file: "CONSUL_CACERT",
        client_cert: "CONSUL_CLIENT_CERT",
        client_key: "CONSUL_CLIENT_KEY",
    };
    TlsSettings::from_env(env, &vars, verify)
}

/// The ACL token: `CONSUL_HTTP_TOKEN_FILE` (read once, whitespace trimmed)
/// wins over `CONSUL_HTTP_TOKEN`, as in the consul CLI.
fn token(env: Env) -> Result<Option<Secret>> {
    if let Some(path) = env("CONSUL_HTTP_TOKEN_FILE").filter(|p| !p.is_empty()) {
        let text = local_file::read_text(std::path::Path::new(&path), local_file::MAX_SECRET_BYTES)
            .map_err(|e| {
                Error::config(
                    format!("CONSUL_HTTP_TOKEN_FILE={path}"),
                    format!("the file {e}"),
                )
            })?;
        let text = text.trim();
        if !text.is_empty() {
            return checked_token("CONSUL_HTTP_TOKEN_FILE", text).map(Some);
        }
    }
    env("CONSUL_HTTP_TOKEN")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .map(|t| checked_token("CONSUL_HTTP_TOKEN", &t))
        .transpose()
}

/// A token goes in an HTTP header: a line break or other control character
/// in it is bad configuration (exit 78), not a store that cannot be reached.
/// The message never shows the token.
fn checked_token(origin: &str, token: &str) -> Result<Secret> {
    if token.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(Error::config(
            origin,
            "the token holds a line break, control or non-ASCII character, which an HTTP header cannot carry",
        ));
    }
    Ok(Secret(token.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::env::env_of;

    fn base(url: &str, vars: &[(&str, &str)]) -> Result<(String, String)> {
        let url: StoreUrl = url.parse().unwrap();
        let StoreUrl::Consul { https, address, .. } = &url else {
            panic!()
        };
        base_url(&url, *https, address.as_deref(), &env_of(vars))
    }

    #[test]
    fn the_address_comes_from_the_url_else_consul_http_addr() {
        assert_eq!(
            base("consul+https://c:8501?dc=x", &[("CONSUL_HTTP_ADDR", "o:1")])
                .unwrap()
                .0,
            "https://c:8501"
        );
        let (url, shown) = base("consul://", &[]).unwrap();
        assert_eq!(url, "http://127.0.0.1:8500");
        assert!(shown.contains("default"), "{shown}");
        for (addr, want) in [
            ("h:1", "http://h:1"),
            ("http://h:1/", "http://h:1"),
            ("https://h:1/proxy/consul", "https://h:1/proxy/consul"),
        ] {
            let (url, shown) = base("consul://?dc=dc2", &[("CONSUL_HTTP_ADDR", addr)]).unwrap();
            assert_eq!(url, want);
            assert!(
                shown.ends_with("?dc=dc2 (from CONSUL_HTTP_ADDR)"),
                "{shown}"
            );
        }
        assert_eq!(
            base(
                "consul://",
                &[("CONSUL_HTTP_ADDR", "h:1"), ("CONSUL_HTTP_SSL", "true")]
            )
            .unwrap()
            .0,
            "https://h:1"
        );
        assert_eq!(
            base("consul+https://", &[("CONSUL_HTTP_ADDR", "h:1")])
                .unwrap()
                .0,
            "https://h:1"
        );
        for addr in ["unix:///run/consul.sock", "ftp://h:1", "u:pw@h:1"] {
            let err = base("consul://", &[("CONSUL_HTTP_ADDR", addr)]).unwrap_err();
            assert_eq!(err.exit_code(), 78, "{addr}: {err}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
        assert!(base("consul+https://", &[("CONSUL_HTTP_ADDR", "http://h:1")]).is_err());
    }

    #[test]
    fn the_token_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  from-file\n").unwrap();
        let path = file.to_str().unwrap();
        let t = token(&env_of(&[
            ("CONSUL_HTTP_TOKEN", "from-env"),
            ("CONSUL_HTTP_TOKEN_FILE", path),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(t.0, "from-file");
        assert_eq!(format!("{t:?}"), "<redacted>");
        let t = token(&env_of(&[("CONSUL_HTTP_TOKEN", "from-env")]))
            .unwrap()
            .unwrap();
        assert_eq!(t.0, "from-env");
        std::fs::write(&file, "\n").unwrap();
        let t = token(&env_of(&[
            ("CONSUL_HTTP_TOKEN", "from-env"),
            ("CONSUL_HTTP_TOKEN_FILE", path),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(t.0, "from-env", "an empty file falls back, as in consul");
        let err = token(&env_of(&[("CONSUL_HTTP_TOKEN_FILE", "/nonexistent/t")])).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(err.to_string().contains("CONSUL_HTTP_TOKEN_FILE"), "{err}");
        assert!(token(&env_of(&[])).unwrap().is_none());
    }

    #[test]
    fn tls_settings_follow_the_consul_cli() {
        let err = tls_settings(&env_of(&[("CONSUL_CLIENT_CERT", "/c.pem")])).unwrap_err();
        assert!(
            err.to_string().contains("both client cert and client key"),
            "{err}"
        );
        assert!(
            !tls_settings(&env_of(&[("CONSUL_HTTP_SSL_VERIFY", "false")]))
                .unwrap()
                .verify
        );
        assert!(tls_settings(&env_of(&[])).unwrap().verify);
        assert_eq!(
            tls_settings(&env_of(&[("CONSUL_HTTP_SSL_VERIFY", "nah")]))
                .unwrap_err()
                .exit_code(),
            78
        );
        assert!(tls_settings(&env_of(&[("CONSUL_CAPATH", "/etc/ssl/certs")])).is_err());
        let tls = tls_settings(&env_of(&[("CONSUL_CACERT", "/ca.pem")])).unwrap();
        assert_eq!(tls.ca_file.unwrap().0, "CONSUL_CACERT");
    }

    #[test]
    fn options_are_checked() {
        let options = StoreOptions {
            timeout: Duration::from_secs(1),
        };
        let env = env_of(&[]);
        for url in [
            "consul://h:1?consistency=eventual",
            "consul://h:1?datacenter=x",
        ] {
            let err = ConsulStore::open(&url.parse().unwrap(), &options, &env)
                .err()
                .unwrap();
            assert_eq!(err.exit_code(), 78, "{url}: {err}");
        }
        let store = ConsulStore::open(
            &"consul://h:1?consistency=stale&dc=dc 2".parse().unwrap(),
            &options,
            &env_of(&[("CONSUL_NAMESPACE", "team-a")]),
        )
        .unwrap();
        assert_eq!(
            store.client.url("/v1/txn", &[], true),
            "http://h:1/v1/txn?dc=dc%202&ns=team-a&stale"
        );
        assert_eq!(
            store.client.url("/v1/txn", &[], false),
            "http://h:1/v1/txn?dc=dc%202&ns=team-a"
        );
    }
}
