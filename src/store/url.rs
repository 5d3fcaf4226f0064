//! Store URLs: `file:PATH`, `consul://H:P`, `etcd://H:P,H:P`, `zk://H:P/chroot`,
//! network ones optionally with backend options as a query
//! (`consul://h:8500?dc=dc2&consistency=stale`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::StoreKind;
use crate::error::Error;

/// Backend options given as a query; each backend says which it accepts.
pub type Options = BTreeMap<String, String>;

/// Where the shared view lives, parsed from `--store` / `CONVERGENT_STORE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:PATH` — a YAML (or `.json`) file.
    File { path: PathBuf },
    /// `consul://H:P`, `consul+https://H:P`; no address means `CONSUL_HTTP_ADDR`.
    Consul {
        https: bool,
        address: Option<String>,
        options: Options,
    },
    /// `etcd://H:P[,H:P…]`, `etcd+https://…`; no endpoints means `ETCDCTL_ENDPOINTS`.
    Etcd {
        https: bool,
        endpoints: Vec<String>,
        options: Options,
    },
    /// `zk://H:P[,H:P…][/chroot]`.
    ZooKeeper {
        servers: Vec<String>,
        chroot: Option<String>,
        options: Options,
    },
}

impl StoreUrl {
    /// Whether writing `path` would write one of this store's own files:
    /// the view (through symlinks, as a write follows them), its lock files
    /// or its temporaries. An `--output` must never be one of them.
    pub fn owns_file(&self, path: &Path) -> bool {
        let StoreUrl::File { path: view } = self else {
            return false;
        };
        let (Some(view), Some(target)) = (resolved(view), resolved(path)) else {
            return false;
        };
        if target == view {
            return true;
        }
        let (Some(name), Some(target_name)) = (view.file_name(), target.file_name()) else {
            return false;
        };
        let (name, target_name) = (name.to_string_lossy(), target_name.to_string_lossy());
        target.parent() == view.parent()
            && (target_name.starts_with(&format!("{name}.lock"))
                || target_name.starts_with(&format!(".{name}.convergent-")))
    }

    /// The kind of store this URL names.
    pub fn kind(&self) -> StoreKind {
        match self {
            StoreUrl::File { .. } => StoreKind::File,
            StoreUrl::Consul { .. } => StoreKind::Consul,
            StoreUrl::Etcd { .. } => StoreKind::Etcd,
            StoreUrl::ZooKeeper { .. } => StoreKind::ZooKeeper,
        }
    }

    /// The URL's options (none for a file).
    pub fn options(&self) -> Option<&Options> {
        match self {
            StoreUrl::File { .. } => None,
            StoreUrl::Consul { options, .. }
            | StoreUrl::Etcd { options, .. }
            | StoreUrl::ZooKeeper { options, .. } => Some(options),
        }
    }

    /// The options, after checking each is one the backend knows (exit 78
    /// naming it otherwise).
    pub fn check_options(&self, known: &[&str]) -> Result<Options, Error> {
        let options = self.options().cloned().unwrap_or_default();
        if let Some(unknown) = options.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(Error::config(
                format!("store URL {self}"),
                format!(
                    "unknown option {unknown:?}; the {} backend knows: {}",
                    self.kind(),
                    known.join(", ")
                ),
            ));
        }
        Ok(options)
    }
}

const SCHEMES: &str = "file:PATH, consul://HOST:PORT, consul+https://HOST:PORT, \
    etcd://HOST:PORT[,HOST:PORT…], etcd+https://…, zk://HOST:PORT[,HOST:PORT…][/chroot]";

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Checked first, so that no message below can echo a password.
        let authority = s.split('/').nth(2).unwrap_or_default();
        if !s.starts_with("file:")
            && authority
                .split('?')
                .next()
                .unwrap_or_default()
                .contains('@')
        {
            return Err(credentials_refused(s));
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(format!(
                "store URL {s:?} has no scheme; expected one of {SCHEMES}"
            ));
        };
        if scheme == "file" {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!("store URL {s:?} names no file"));
            }
            return Ok(StoreUrl::File {
                path: PathBuf::from(path),
            });
        }
        let (rest, options) = match rest.split_once('?') {
            Some((rest, query)) => (rest, parse_query(s, query)?),
            None => (rest, Options::new()),
        };
        match scheme {
            "consul" | "consul+http" | "consul+https" => {
                let authority = authority_of(s, rest)?;
                let address = match authority {
                    "" => None,
                    a => Some(host_port(s, a)?.to_string()),
                };
                Ok(StoreUrl::Consul {
                    https: scheme == "consul+https",
                    address,
                    options,
                })
            }
            "etcd" | "etcd+http" | "etcd+https" => {
                let endpoints = host_list(s, authority_of(s, rest)?)?;
                Ok(StoreUrl::Etcd {
                    https: scheme == "etcd+https",
                    endpoints,
                    options,
                })
            }
            "zk" | "zookeeper" => {
                let body = rest
                    .strip_prefix("//")
                    .ok_or_else(|| format!("store URL {s:?} must start with zk://"))?;
                let (hosts, chroot) = match body.find('/') {
                    Some(i) => (&body[..i], Some(body[i..].to_string())),
                    None => (body, None),
                };
                let servers = host_list(s, hosts)?;
                if servers.is_empty() {
                    return Err(format!("store URL {s:?} names no ZooKeeper server"));
                }
                if let Some(c) = &chroot {
                    if c.len() > 1 && (c.ends_with('/') || c.contains("//")) {
                        return Err(format!(
                            "store URL {s:?}: chroot {c:?} must not end with `/` or contain `//`"
                        ));
                    }
                    // ZooKeeper refuses relative path components (at read
                    // time, as bad data); say so now, as a bad URL.
                    if c.split('/').any(|part| part == "." || part == "..") {
                        return Err(format!(
                            "store URL {s:?}: chroot {c:?} must not contain `.` or `..` components"
                        ));
                    }
                }
                Ok(StoreUrl::ZooKeeper {
                    servers,
                    chroot: chroot.filter(|c| c != "/"),
                    options,
                })
            }
            other => Err(format!(
                "unknown store scheme {other:?} in {s:?}; expected one of {SCHEMES}"
            )),
        }
    }
}

fn parse_query(url: &str, query: &str) -> Result<Options, String> {
    let mut options = Options::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.is_empty() => {
                if options.insert(key.to_string(), value.to_string()).is_some() {
                    return Err(format!("store URL {url:?}: option {key:?} is given twice"));
                }
            }
            _ => {
                return Err(format!(
                    "store URL {url:?}: option {pair:?} is not NAME=VALUE"
                ))
            }
        }
    }
    Ok(options)
}

fn credentials_refused(url: &str) -> String {
    let scheme = url.split(':').next().unwrap_or_default();
    format!(
        "store URL for {scheme} carries credentials (`user@`); they would show in `ps`. \
         Use the store's environment variables (CONSUL_HTTP_TOKEN_FILE, ETCDCTL_USER, …) instead"
    )
}

fn authority_of<'a>(url: &str, rest: &'a str) -> Result<&'a str, String> {
    let body = rest
        .strip_prefix("//")
        .ok_or_else(|| format!("store URL {url:?} must have the form scheme://HOST:PORT"))?;
    let authority = body.strip_suffix('/').unwrap_or(body);
    if authority.contains('/') {
        return Err(format!("store URL {url:?} must not have a path"));
    }
    Ok(authority)
}

fn host_list(url: &str, hosts: &str) -> Result<Vec<String>, String> {
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    hosts
        .split(',')
        .map(|h| host_port(url, h).map(str::to_string))
        .collect()
}

/// A host name, an IPv4 address, or an IPv6 address in brackets (`[::1]`).
fn is_host(host: &str) -> bool {
    match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        }
    }
}

fn host_port<'a>(url: &str, hp: &'a str) -> Result<&'a str, String> {
    match hp.rsplit_once(':') {
        Some((host, port)) if is_host(host) && port.parse::<u16>().is_ok() => Ok(hp),
        _ => Err(format!("store URL {url:?}: {hp:?} is not HOST:PORT")),
    }
}

fn write_options(f: &mut fmt::Formatter<'_>, options: &Options) -> fmt::Result {
    for (i, (k, v)) in options.iter().enumerate() {
        write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
    }
    Ok(())
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = |https: bool| if https { "+https" } else { "" };
        match self {
            StoreUrl::File { path } => write!(f, "file:{}", path.display()),
            StoreUrl::Consul {
                https,
                address,
                options,
            } => {
                write!(
                    f,
                    "consul{}://{}",
                    tls(*https),
                    address.as_deref().unwrap_or("")
                )?;
                write_options(f, options)
            }
            StoreUrl::Etcd {
                https,
                endpoints,
                options,
            } => {
                write!(f, "etcd{}://{}", tls(*https), endpoints.join(","))?;
                write_options(f, options)
            }
            StoreUrl::ZooKeeper {
                servers,
                chroot,
                options,
            } => {
                write!(
                    f,
                    "zk://{}{}",
                    servers.join(","),
                    chroot.as_deref().unwrap_or("")
                )?;
                write_options(f, options)
            }
        }
    }
}

/// `path` with every symlink resolved; a file that does not exist yet is
/// resolved through its folder.
fn resolved(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok().or_else(|| {
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Some(std::fs::canonicalize(folder).ok()?.join(path.file_name()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_prints_it_back() {
        for url in [
            "file:fixtures/view.yml",
            "consul://127.0.0.1:8500",
            "consul+https://consul.example:8501",
            "consul://",
            "consul://127.0.0.1:8500?consistency=stale&dc=dc2",
            "etcd://127.0.0.1:2379,127.0.0.1:22379",
            "etcd+https://e1:2379",
            "etcd://127.0.0.1:2379?password_file=/etc/convergent/etcd.pw",
            "zk://127.0.0.1:2181,127.0.0.1:2182/convergent",
        ] {
            let parsed: StoreUrl = url.parse().unwrap();
            assert_eq!(parsed.to_string(), url);
        }
        assert_eq!(
            "file:///etc/x.yml".parse::<StoreUrl>().unwrap(),
            StoreUrl::File {
                path: "/etc/x.yml".into()
            }
        );
    }

    #[test]
    fn refuses_unknown_schemes_credentials_and_bad_ports() {
        let err = "redis://h:1".parse::<StoreUrl>().unwrap_err();
        assert!(err.contains("unknown store scheme \"redis\""), "{err}");
        for url in [
            "etcd://root:secret@h:2379",
            "redis://u:secret@h:1",
            "zk://u:secret@h:1/x",
        ] {
            let err = url.parse::<StoreUrl>().unwrap_err();
            assert!(
                err.contains("credentials") && !err.contains("secret"),
                "{err}"
            );
        }
        assert!("file:/home/me@corp/view.yml".parse::<StoreUrl>().is_ok());
        assert!("etcd://h:port".parse::<StoreUrl>().is_err());
        assert!("consul://h".parse::<StoreUrl>().is_err());
        assert!("file:".parse::<StoreUrl>().is_err());
        assert!("nonsense".parse::<StoreUrl>().is_err());
        assert!("consul://h:1?dc".parse::<StoreUrl>().is_err());
        assert!("consul://h:1?dc=a&dc=b".parse::<StoreUrl>().is_err());
    }

    #[test]
    fn unknown_options_are_named() {
        let url: StoreUrl = "consul://h:1?datacenter=x".parse().unwrap();
        let err = url
            .check_options(&["dc", "consistency"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"datacenter\"") && err.contains("dc, consistency"),
            "{err}"
        );
        assert_eq!(
            url.check_options(&["datacenter"]).unwrap()["datacenter"],
            "x"
        );
    }
}
