//! Settings, layered: command-line flag > environment variable > config
//! file > default. A bad environment variable or config file is exit 78,
//! naming the variable or the file and field.

use crate::local_file::{self, ReadError};
use crate::yaml_text;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

use crate::clock::HumanDuration;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::layout::Prefix;
use crate::output::Format;
use crate::store::StoreUrl;

/// The config file read when none is named and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/convergent/config.yml";
/// The store used when none is configured.
pub const DEFAULT_STORE: &str = "file:/etc/convergent/view.yml";
/// The default `--max-stale`.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// The default member TTL: a node silent for longer is absent.
pub const DEFAULT_MEMBER_TTL: Duration = Duration::from_secs(3600);
/// The default `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings given on the command line, before layering; `None` where a
/// flag was not given. The command line fills it in.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--store`, still text: parsed here so an error never echoes it whole.
    pub store: Option<String>,
    /// `--prefix`.
    pub prefix: Option<Prefix>,
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--format`.
    pub format: Option<Format>,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--max-stale`.
    pub max_stale: Option<HumanDuration>,
    /// `--on-unreachable`.
    pub on_unreachable: Option<OnUnreachable>,
    /// `--timeout`.
    pub timeout: Option<HumanDuration>,
}

/// What `attributes` does when the store cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnUnreachable {
    /// Serve the last-known-good result, marked stale, within --max-stale.
    Cache,
    /// Fail with exit 69.
    Fail,
}

/// The effective settings of one run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the view lives.
    pub store: StoreUrl,
    /// Root of all keys.
    pub prefix: Prefix,
    /// Output format, when one was asked for.
    pub format: Option<Format>,
    /// The format given as a flag: a command that cannot honour it refuses
    /// it, while one from the environment or config file is only a default.
    pub format_flag: Option<Format>,
    /// Cache folder, when one was configured (else the default search).
    pub cache_dir: Option<PathBuf>,
    /// Oldest cached result to serve.
    pub max_stale: Duration,
    /// Serve the cache or fail when the store is unreachable.
    pub on_unreachable: OnUnreachable,
    /// Bound on each store request.
    pub timeout: Duration,
    /// Default cluster for node commands.
    pub cluster: Option<String>,
    /// Default node for node commands.
    pub node: Option<String>,
    /// A member silent for longer is absent.
    pub member_ttl: Duration,
}

/// The config file's fields; all optional, unknown ones refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    store: Option<String>,
    prefix: Option<String>,
    format: Option<String>,
    cache_dir: Option<PathBuf>,
    max_stale: Option<String>,
    on_unreachable: Option<String>,
    timeout: Option<String>,
    cluster: Option<String>,
    node: Option<String>,
    member_ttl: Option<String>,
}

impl Settings {
    /// Layers flags over the environment over the config file over defaults.
    pub fn load(args: &Flags, env: Env) -> Result<Settings> {
        let (file, file_path) = read_config_file(args.config.as_deref(), env)?;
        let file_origin = |field: &str| {
            format!(
                "config file {}, field `{field}`",
                file_path.as_deref().unwrap_or(Path::new("?")).display()
            )
        };

        // One option: the flag, else the variable, else the file's field, each
        // parsed by the same FromStr so the rules never differ by source.
        fn layer<T, E: ToString>(
            flag: Option<T>,
            var: &str,
            env: Env,
            file_value: Option<&str>,
            file_origin: &dyn Fn(&str) -> String,
            field: &str,
            parse: fn(&str) -> std::result::Result<T, E>,
        ) -> Result<Option<T>> {
            if flag.is_some() {
                return Ok(flag);
            }
            if let Some(text) = env(var) {
                return parse(&text).map(Some).map_err(|e| {
                    Error::config(format!("environment variable {var}"), e.to_string())
                });
            }
            match file_value {
                Some(text) => parse(text)
                    .map(Some)
                    .map_err(|e| Error::config(file_origin(field), e.to_string())),
                None => Ok(None),
            }
        }
        fn enum_value<T: ValueEnum>(text: &str) -> std::result::Result<T, String> {
            T::from_str(text, true).map_err(|_| {
                let allowed: Vec<String> = T::value_variants()
                    .iter()
                    .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                    .collect();
                format!("{text:?} is not one of {}", allowed.join(", "))
            })
        }
        fn text(s: &str) -> std::result::Result<String, String> {
            Ok(s.to_string())
        }

        let flag_store = args
            .store
            .as_deref()
            .map(StoreUrl::from_str)
            .transpose()
            .map_err(|e| Error::Usage(format!("--store: {e}")))?;
        let store = layer(
            flag_store,
            "CONVERGENT_STORE",
            env,
            file.store.as_deref(),
            &file_origin,
            "store",
            StoreUrl::from_str,
        )?
        .unwrap_or_else(|| DEFAULT_STORE.parse().expect("the default store URL parses"));
        let prefix = layer(
            args.prefix.clone(),
            "CONVERGENT_PREFIX",
            env,
            file.prefix.as_deref(),
            &file_origin,
            "prefix",
            Prefix::from_str,
        )?
        .unwrap_or_default();
        let format = layer(
            args.format,
            "CONVERGENT_FORMAT",
            env,
            file.format.as_deref(),
            &file_origin,
            "format",
            enum_value::<Format>,
        )?;
        let cache_dir = match &args.cache_dir {
            Some(dir) => Some(dir.clone()),
            None => env("CONVERGENT_CACHE_DIR")
                .map(PathBuf::from)
                .or(file.cache_dir),
        };
        let max_stale = layer(
            args.max_stale,
            "CONVERGENT_MAX_STALE",
            env,
            file.max_stale.as_deref(),
            &file_origin,
            "max_stale",
            HumanDuration::from_str,
        )?
        .map_or(DEFAULT_MAX_STALE, |d| d.0);
        let on_unreachable = layer(
            args.on_unreachable,
            "CONVERGENT_ON_UNREACHABLE",
            env,
            file.on_unreachable.as_deref(),
            &file_origin,
            "on_unreachable",
            enum_value::<OnUnreachable>,
        )?
        .unwrap_or(OnUnreachable::Cache);
        let timeout = layer(
            args.timeout,
            "CONVERGENT_TIMEOUT",
            env,
            file.timeout.as_deref(),
            &file_origin,
            "timeout",
            HumanDuration::from_str,
        )?
        .map_or(DEFAULT_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            return Err(Error::config("timeout", "must be more than zero"));
        }
        let cluster = layer(
            None,
            "CONVERGENT_CLUSTER",
            env,
            file.cluster.as_deref(),
            &file_origin,
            "cluster",
            text,
        )?;
        let node = layer(
            None,
            "CONVERGENT_NODE",
            env,
            file.node.as_deref(),
            &file_origin,
            "node",
            text,
        )?;
        let member_ttl = layer(
            None,
            "CONVERGENT_MEMBER_TTL",
            env,
            file.member_ttl.as_deref(),
            &file_origin,
            "member_ttl",
            HumanDuration::from_str,
        )?
        .map_or(DEFAULT_MEMBER_TTL, |d| d.0);

        Ok(Settings {
            store,
            prefix,
            format,
            format_flag: args.format,
            cache_dir,
            max_stale,
            on_unreachable,
            timeout,
            cluster,
            node,
            member_ttl,
        })
    }
}

/// Finds and parses the config file: the one named by flag or environment
/// (which must exist), else the default one if present, else none.
fn read_config_file(flag: Option<&Path>, env: Env) -> Result<(ConfigFile, Option<PathBuf>)> {
    let (path, named) = match (flag, env("CONVERGENT_CONFIG")) {
        (Some(p), _) => (p.to_path_buf(), true),
        (None, Some(p)) => (PathBuf::from(p), true),
        (None, None) => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let origin = || format!("config file {}", path.display());
    let text = match local_file::read_text(&path, local_file::MAX_DOCUMENT_BYTES) {
        Ok(text) => text,
        Err(ReadError::Missing) if !named => return Ok((ConfigFile::default(), None)),
        Err(e) => return Err(Error::config(origin(), format!("the file {e}"))),
    };
    if text.trim().is_empty() {
        return Ok((ConfigFile::default(), Some(path)));
    }
    yaml_text::check_nesting(&text).map_err(|e| Error::config(origin(), e))?;
    let file: ConfigFile = serde_yaml::from_str(&text)
        .map_err(|e| Error::config(origin(), yaml_text::redact(&e.to_string())))?;
    Ok((file, Some(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::env_of;

    fn load(args: Flags, vars: &[(&str, &str)]) -> Result<Settings> {
        Settings::load(&args, &env_of(vars))
    }

    fn config_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yml");
        std::fs::write(&path, text).unwrap();
        let path = path.display().to_string();
        (dir, path)
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let (_d, path) = config_file("");
        let s = load(Flags::default(), &[("CONVERGENT_CONFIG", &path)]).unwrap();
        assert_eq!(s.store.to_string(), DEFAULT_STORE);
        assert_eq!(s.prefix.to_string(), "convergent");
        assert_eq!(s.max_stale, DEFAULT_MAX_STALE);
        assert_eq!(s.on_unreachable, OnUnreachable::Cache);
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let (_d, path) = config_file("store: file:/from/file.yml\nprefix: fromfile\ntimeout: 9s\n");
        let s = load(
            Flags::default(),
            &[
                ("CONVERGENT_CONFIG", &path),
                ("CONVERGENT_PREFIX", "fromenv"),
            ],
        )
        .unwrap();
        assert_eq!(s.store.to_string(), "file:/from/file.yml");
        assert_eq!(s.prefix.to_string(), "fromenv");
        assert_eq!(s.timeout, Duration::from_secs(9));

        let args = Flags {
            prefix: Some("fromflag".parse().unwrap()),
            ..Flags::default()
        };
        let s = load(
            args,
            &[
                ("CONVERGENT_CONFIG", &path),
                ("CONVERGENT_PREFIX", "fromenv"),
            ],
        )
        .unwrap();
        assert_eq!(s.prefix.to_string(), "fromflag");
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_file_and_field() {
        let (_d, path) = config_file("store: file:/x.yml\nstroe: typo\n");
        let err = load(Flags::default(), &[("CONVERGENT_CONFIG", &path)]).unwrap_err();
        assert_eq!(err.exit_code(), 78);
        let text = err.to_string();
        assert!(text.contains(&path) && text.contains("stroe"), "{text}");

        let (_d, path) = config_file("max_stale: [1, 2]\n");
        let text = load(Flags::default(), &[("CONVERGENT_CONFIG", &path)])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("max_stale") && text.contains("line 1"),
            "{text}"
        );

        let (_d, path) = config_file("max_stale: forever\n");
        let text = load(Flags::default(), &[("CONVERGENT_CONFIG", &path)])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("field `max_stale`") && text.contains("forever"),
            "{text}"
        );

        let (_d, path) = config_file("store: redis://h:1\n");
        let text = load(Flags::default(), &[("CONVERGENT_CONFIG", &path)])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("field `store`") && text.contains("redis"),
            "{text}"
        );
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let err = load(
            Flags::default(),
            &[("CONVERGENT_CONFIG", "/nonexistent/c.yml")],
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(err.to_string().contains("/nonexistent/c.yml"));

        let (_d, path) = config_file("");
        let err = load(
            Flags::default(),
            &[
                ("CONVERGENT_CONFIG", &path),
                ("CONVERGENT_ON_UNREACHABLE", "maybe"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 78);
        let text = err.to_string();
        assert!(
            text.contains("CONVERGENT_ON_UNREACHABLE") && text.contains("cache, fail"),
            "{text}"
        );
    }
}
