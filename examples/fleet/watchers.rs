//! `fleet watchers`: many `watch` agents in one process, each running the
//! agent's own loop ([`convergent::commands::watch::follow`]) with its own
//! store connection(s), on a small thread stack; and `fleet mark`, the
//! program they run, which appends `NODE GENERATION UNIX_NS` to a file so
//! that the time from a change to each agent starting its command can be
//! measured.
//!
//! ```text
//! fleet watchers --store URL --first I --count N --program PATH --marks FILE
//!                --dir DIR [--interval 5m] [--timeout 5s] (--until FILE | --duration DUR)
//! fleet mark FILE
//! ```
//!
//! Node `web-I` … `web-(I+N-1)`; each agent's attributes file and cache go
//! under DIR. Agents log to this process's stderr, as `watch` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use convergent::cli::SplayFrom;
use convergent::commands::watch::{follow, AgentSpec};
use convergent::commands::Context;
use convergent::config::{OnUnreachable, Settings};
use convergent::env::process_env;
use convergent::layout::Prefix;
use convergent::store::{self, StoreOptions, StoreUrl};

use super::{node_name, Options};

/// Enough for the loop, the HTTP client and the JSON of one node's keys.
const AGENT_STACK: usize = 256 * 1024;

/// Runs `fleet watchers`.
pub fn run(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args, &[])?;
    let url: StoreUrl = options.required("store")?.parse()?;
    let first: usize = options.parsed("first", 1)?;
    let count: usize = options.parsed("count", 100)?;
    let program = PathBuf::from(options.required("program")?);
    let marks = options.required("marks")?.to_string();
    let dir = PathBuf::from(options.required("dir")?);
    let interval = options.duration("interval", Duration::from_secs(300))?;
    let timeout = options.duration("timeout", Duration::from_secs(5))?;
    let until = options.get("until").map(PathBuf::from);
    let deadline = options
        .get("duration")
        .map(|_| options.duration("duration", Duration::ZERO))
        .transpose()?
        .map(|d| Instant::now() + d);
    if until.is_none() && deadline.is_none() {
        return Err("fleet watchers needs --until FILE or --duration DUR".into());
    }
    std::fs::create_dir_all(dir.join("out")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let settings = Settings {
        store: url.clone(),
        prefix: Prefix::default(),
        format: None,
        format_flag: None,
        cache_dir: Some(dir.join("cache")),
        max_stale: Duration::from_secs(3600),
        on_unreachable: OnUnreachable::Fail,
        timeout,
        cluster: None,
        node: None,
        member_ttl: Duration::from_secs(3600),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut agents = Vec::with_capacity(count);
    for i in first..first + count {
        let spec = AgentSpec {
            cluster: "web".into(),
            node: node_name(i),
            program: program.clone(),
            args: vec!["mark".into(), marks.clone()],
            splay: Duration::ZERO,
            splay_from: SplayFrom::Random,
            interval,
            output: Some(dir.join("out").join(format!("{}.json", node_name(i)))),
            health_interval: Duration::ZERO,
            checks: None,
        };
        let (settings, url, stop) = (settings.clone(), url.clone(), Arc::clone(&stop));
        let agent = thread::Builder::new()
            .stack_size(AGENT_STACK)
            .spawn(move || {
                let env = process_env;
                let ctx = Context {
                    settings,
                    env: &env,
                };
                // Its own store: its own connections, as a separate agent has.
                match store::open(&url, &StoreOptions { timeout }, &process_env) {
                    Ok(store) => {
                        if let Err(e) = follow(&ctx, store, spec, stop) {
                            eprintln!("fleet watchers: agent stopped: {e}");
                        }
                    }
                    Err(e) => eprintln!("fleet watchers: cannot open the store: {e}"),
                }
            })
            .map_err(|e| format!("cannot start agent {i}: {e}"))?;
        agents.push(agent);
    }
    loop {
        let done = until.as_deref().is_some_and(Path::exists)
            || deadline.is_some_and(|d| Instant::now() >= d);
        if done {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    for agent in agents {
        let _ = agent.join();
    }
    Ok(())
}

/// Runs `fleet mark FILE`: one line per start, written in one append.
pub fn mark(args: &[String]) -> Result<(), String> {
    let [file] = args else {
        return Err("usage: fleet mark FILE".into());
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let line = format!(
        "{} {} {}\n",
        std::env::var("CONVERGENT_NODE").unwrap_or_default(),
        std::env::var("CONVERGENT_GENERATION").unwrap_or_default(),
        now.as_nanos()
    );
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| format!("{file}: {e}"))
}
