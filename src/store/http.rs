//! HTTP plumbing shared by the network backends (etcd, Consul): an agent per
//! store with a bound on every call, TLS from the store's own environment
//! variables, and the distinction that matters for writes: whether a failed
//! request may have reached the server.

use std::path::PathBuf;
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
// ureq's resolver and connector interfaces are outside its semver promise
// (`unversioned`): Cargo.lock pins the version they were written against.
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::Agent;

use crate::env::Env;
use crate::error::{Error, Result};
use crate::local_file;

/// Bytes buffered each way on a connection.
const IO_BUFFER: usize = 16 * 1024;

/// Largest response body read (a whole-view export of a big fleet).
pub const MAX_BODY: u64 = 256 * 1024 * 1024;

/// TLS settings for one store, each file named with the variable it came from
/// so that a bad file is a configuration error naming both.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// CA bundle to trust instead of the built-in public roots.
    pub ca_file: Option<(String, PathBuf)>,
    /// Client certificate and key for mutual TLS.
    pub client_cert: Option<((String, PathBuf), (String, PathBuf))>,
    /// Verify the server's certificate (on unless explicitly turned off).
    pub verify: bool,
}

/// The variables a store reads its TLS files from, as its own CLI names them.
pub struct TlsVariables {
    pub ca_file: &'static str,
    pub client_cert: &'static str,
    pub client_key: &'static str,
}

impl TlsSettings {
    /// The files the variables name (an empty value is unset); the client
    /// certificate and key come both or neither. Verification is the
    /// caller's to decide.
    pub fn from_env(env: Env, vars: &TlsVariables, verify: bool) -> Result<TlsSettings> {
        let named = |var: &str| {
            env(var)
                .filter(|p| !p.is_empty())
                .map(|path| (var.to_string(), PathBuf::from(path)))
        };
        let client_cert = match (named(vars.client_cert), named(vars.client_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    format!("{}/{}", vars.client_cert, vars.client_key),
                    "both client cert and client key must be provided, or neither",
                ))
            }
        };
        Ok(TlsSettings {
            ca_file: named(vars.ca_file),
            client_cert,
            verify,
        })
    }
}

/// A boolean environment variable read the way Go's `ParseBool` does (the
/// consul and etcd CLIs use it); exit 78 naming the variable otherwise.
pub fn env_bool(env: Env, var: &str) -> Result<Option<bool>> {
    match env(var) {
        None => Ok(None),
        Some(text) => parse_bool(&text)
            .map(Some)
            .ok_or_else(|| Error::config(var, format!("{text:?} is not true or false"))),
    }
}

/// How long calls may take.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// The whole call, body included.
    Whole(Duration),
    /// Connecting and the response headers only; each later read of a
    /// streamed body may wait up to the idle time (watch streams, blocking
    /// queries).
    Stream {
        connect: Duration,
        idle: Option<Duration>,
    },
}

/// An agent with the given bound and TLS settings. Status codes are returned
/// as responses, not errors, so that error bodies can be read.
pub fn agent(bound: Bound, tls: &TlsSettings) -> Result<Agent> {
    let builder = Agent::config_builder()
        .http_status_as_error(false)
        // ureq zeroes 128 KiB each way per connection by default; a node's
        // one small request is quicker with less (bodies stream through).
        .input_buffer_size(IO_BUFFER)
        .output_buffer_size(IO_BUFFER)
        .user_agent(concat!("convergent/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls_config(tls)?);
    let builder = match bound {
        Bound::Whole(d) => builder.timeout_global(Some(d)),
        Bound::Stream { connect, idle } => builder
            .timeout_connect(Some(connect))
            .timeout_recv_response(Some(connect))
            .timeout_per_read(idle),
    };
    Ok(Agent::with_parts(
        builder.build(),
        DefaultConnector::default(),
        LiteralFirstResolver,
    ))
}

/// Takes an IP address in a URL as it is and asks the system resolver only
/// for names: ureq's resolver starts a thread per lookup to bound it, which a
/// node's one request to `127.0.0.1` or `10.0.0.5` does not need.
#[derive(Debug)]
struct LiteralFirstResolver;

impl Resolver for LiteralFirstResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        let literal = uri.authority().and_then(|authority| {
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let ip: std::net::IpAddr = host.parse().ok()?;
            let port = authority.port_u16().or_else(|| match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })?;
            Some(std::net::SocketAddr::new(ip, port))
        });
        match literal {
            Some(addr) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            None => DefaultResolver::default().resolve(uri, config, timeout),
        }
    }
}

fn tls_config(tls: &TlsSettings) -> Result<TlsConfig> {
    let mut builder = TlsConfig::builder().disable_verification(!tls.verify);
    if let Some((var, path)) = &tls.ca_file {
        let certs = read_pem(var, path)?
            .into_iter()
            .filter_map(|item| match item {
                PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect::<Vec<Certificate<'static>>>();
        if certs.is_empty() {
            return Err(bad_file(var, path, "holds no PEM certificate"));
        }
        builder = builder.root_certs(RootCerts::new_with_certs(&certs));
    }
    if let Some(((cert_var, cert_path), (key_var, key_path))) = &tls.client_cert {
        let chain: Vec<Certificate<'static>> = read_pem(cert_var, cert_path)?
            .into_iter()
            .filter_map(|item| match item {
                PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        if chain.is_empty() {
            return Err(bad_file(cert_var, cert_path, "holds no PEM certificate"));
        }
        let key = read_pem(key_var, key_path)?
            .into_iter()
            .find_map(|item| match item {
                PemItem::PrivateKey(k) => Some(k),
                _ => None,
            })
            .ok_or_else(|| bad_file(key_var, key_path, "holds no PEM private key"))?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(builder.build())
}

fn bad_file(var: &str, path: &std::path::Path, problem: &str) -> Error {
    Error::config(format!("{var}={}", path.display()), problem.to_string())
}

fn read_pem(var: &str, path: &std::path::Path) -> Result<Vec<PemItem<'static>>> {
    let bytes = local_file::read_bytes(path, local_file::MAX_SECRET_BYTES)
        .map_err(|e| bad_file(var, path, &format!("the file {e}")))?;
    ureq::tls::parse_pem(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad_file(var, path, &format!("is not valid PEM: {e}")))
}

/// True when the request cannot have reached the server (so even a write
/// may be retried elsewhere): no connection, no name, connect timeout.
pub fn nothing_sent(e: &ureq::Error) -> bool {
    use ureq::Timeout;
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(Timeout::Connect | Timeout::Resolve) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        ),
        _ => false,
    }
}

/// A short description of a transport error for messages.
pub fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t:?})"),
        ureq::Error::ConnectionFailed => "connection refused".into(),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".into()
        }
        other => other.to_string(),
    }
}

/// Reads a response body as text, up to [`MAX_BODY`].
pub fn body_text(
    response: &mut ureq::http::Response<ureq::Body>,
) -> std::result::Result<String, ureq::Error> {
    response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
}

/// Whether an environment value means "true" the way Go's `ParseBool` (used
/// by the consul and etcd CLIs) reads it; `None` for anything else.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tls_files_are_configuration_errors_naming_variable_and_file() {
        let tls = TlsSettings {
            ca_file: Some(("ETCDCTL_CACERT".into(), "/nonexistent/ca.pem".into())),
            ..TlsSettings::default()
        };
        let err = agent(Bound::Whole(Duration::from_secs(1)), &tls)
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 78);
        assert!(
            err.to_string()
                .contains("ETCDCTL_CACERT=/nonexistent/ca.pem"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let tls = TlsSettings {
            ca_file: Some(("CONSUL_CACERT".into(), junk)),
            ..TlsSettings::default()
        };
        let err = agent(Bound::Whole(Duration::from_secs(1)), &tls)
            .err()
            .unwrap();
        assert!(err.to_string().contains("CONSUL_CACERT"), "{err}");
    }

    #[test]
    fn go_booleans() {
        assert_eq!(parse_bool("false"), Some(false));
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("nope"), None);
    }

    #[test]
    fn a_refused_connection_sent_nothing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let a = agent(
            Bound::Whole(Duration::from_secs(2)),
            &TlsSettings {
                verify: true,
                ..Default::default()
            },
        )
        .unwrap();
        let err = a
            .get(&format!("http://127.0.0.1:{port}/"))
            .call()
            .unwrap_err();
        assert!(nothing_sent(&err), "{err:?}");
        assert_eq!(describe(&err), "connection refused");
    }
}
