//! Store URLs: `file:PATH`, `consul://H:P`, `etcd://H:P,H:P`, `zk://H:P/chroot`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::StoreKind;

/// Where the shared view lives, parsed from `--store` / `CONVERGENT_STORE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:PATH` — a YAML (or `.json`) file.
    File { path: PathBuf },
    /// `consul://H:P`, `consul+https://H:P`; no address means `CONSUL_HTTP_ADDR`.
    Consul {
        https: bool,
        address: Option<String>,
    },
    /// `etcd://H:P[,H:P…]`, `etcd+https://…`; no endpoints means `ETCDCTL_ENDPOINTS`.
    Etcd { https: bool, endpoints: Vec<String> },
    /// `zk://H:P[,H:P…][/chroot]`.
    ZooKeeper {
        servers: Vec<String>,
        chroot: Option<String>,
    },
}

impl StoreUrl {
    /// The kind of store this URL names.
    pub fn kind(&self) -> StoreKind {
        match self {
            StoreUrl::File { .. } => StoreKind::File,
            StoreUrl::Consul { .. } => StoreKind::Consul,
            StoreUrl::Etcd { .. } => StoreKind::Etcd,
            StoreUrl::ZooKeeper { .. } => StoreKind::ZooKeeper,
        }
    }
}

const SCHEMES: &str = "file:PATH, consul://HOST:PORT, consul+https://HOST:PORT, etcd://HOST:PORT[,HOST:PORT…], etcd+https://…, zk://HOST:PORT[,HOST:PORT…][/chroot]";

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Checked first, so that no message below can echo a password.
        if !s.starts_with("file:")
            && s.split('/')
                .nth(2)
                .is_some_and(|authority| authority.contains('@'))
        {
            return Err(credentials_refused(s));
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(format!(
                "store URL {s:?} has no scheme; expected one of {SCHEMES}"
            ));
        };
        match scheme {
            "file" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(format!("store URL {s:?} names no file"));
                }
                Ok(StoreUrl::File {
                    path: PathBuf::from(path),
                })
            }
            "consul" | "consul+http" | "consul+https" => {
                let authority = authority(s, rest)?;
                let address = match authority {
                    "" => None,
                    a => Some(host_port(s, a)?.to_string()),
                };
                Ok(StoreUrl::Consul {
                    https: scheme == "consul+https",
                    address,
                })
            }
            "etcd" | "etcd+http" | "etcd+https" => {
                let authority = authority(s, rest)?;
                let endpoints = host_list(s, authority)?;
                Ok(StoreUrl::Etcd {
                    https: scheme == "etcd+https",
                    endpoints,
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
                if hosts.contains('@') {
                    return Err(credentials_refused(s));
                }
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
                }
                Ok(StoreUrl::ZooKeeper {
                    servers,
                    chroot: chroot.filter(|c| c != "/"),
                })
            }
            other => Err(format!(
                "unknown store scheme {other:?} in {s:?}; expected one of {SCHEMES}"
            )),
        }
    }
}

fn credentials_refused(url: &str) -> String {
    let scheme = url.split(':').next().unwrap_or_default();
    format!(
        "store URL for {scheme} carries credentials (`user@`); they would show in `ps`. \
         Use the store's environment variables (CONSUL_HTTP_TOKEN_FILE, ETCDCTL_USER, …) instead"
    )
}

fn authority<'a>(url: &str, rest: &'a str) -> Result<&'a str, String> {
    let body = rest
        .strip_prefix("//")
        .ok_or_else(|| format!("store URL {url:?} must have the form scheme://HOST:PORT"))?;
    let authority = body.strip_suffix('/').unwrap_or(body);
    if authority.contains('@') {
        return Err(credentials_refused(url));
    }
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

fn host_port<'a>(url: &str, hp: &'a str) -> Result<&'a str, String> {
    let Some((host, port)) = hp.rsplit_once(':') else {
        return Err(format!("store URL {url:?}: {hp:?} is not HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("store URL {url:?}: {hp:?} is not HOST:PORT"));
    }
    Ok(hp)
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::File { path } => write!(f, "file:{}", path.display()),
            StoreUrl::Consul { https, address } => write!(
                f,
                "consul{}://{}",
                if *https { "+https" } else { "" },
                address.as_deref().unwrap_or("")
            ),
            StoreUrl::Etcd { https, endpoints } => write!(
                f,
                "etcd{}://{}",
                if *https { "+https" } else { "" },
                endpoints.join(",")
            ),
            StoreUrl::ZooKeeper { servers, chroot } => {
                write!(
                    f,
                    "zk://{}{}",
                    servers.join(","),
                    chroot.as_deref().unwrap_or("")
                )
            }
        }
    }
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
            "etcd://127.0.0.1:2379,127.0.0.1:22379",
            "etcd+https://e1:2379",
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
        let err = "etcd://root:secret@h:2379".parse::<StoreUrl>().unwrap_err();
        assert!(
            err.contains("credentials") && !err.contains("secret"),
            "{err}"
        );
        assert!("etcd://h:port".parse::<StoreUrl>().is_err());
        assert!("consul://h".parse::<StoreUrl>().is_err());
        assert!("file:".parse::<StoreUrl>().is_err());
        assert!("nonsense".parse::<StoreUrl>().is_err());
    }
}
