//! Test support: a store per test, the binary with a clean environment, and
//! the `store_suite!` macro that runs one test body against every backend.

#![allow(dead_code)]

pub mod agent;
pub mod consul_agent;
pub mod consul_double;
pub mod etcd;
pub mod proxy;
pub mod simulation;
pub mod zookeeper;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

/// The repository's fixtures folder.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A kind of store the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A YAML file in the test's temporary folder.
    File,
    /// A real etcd started for the test.
    Etcd,
    /// The in-process HTTP double of Consul's API.
    ConsulDouble,
    /// A real `consul agent -dev`, when `CONVERGENT_TEST_CONSUL_BIN` names one.
    Consul,
    /// A real standalone ZooKeeper started for the test.
    ZooKeeper,
}

impl Backend {
    /// The `source.store` name `attributes` reports.
    pub fn store_name(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Etcd => "etcd",
            Backend::ConsulDouble | Backend::Consul => "consul",
            Backend::ZooKeeper => "zookeeper",
        }
    }
}

/// One test's own store, cache folder and config file, all in a temporary
/// folder that disappears with it. A server started for the test is stopped
/// when the harness is dropped, also when the test fails.
pub struct Harness {
    pub dir: TempDir,
    pub backend: Backend,
    pub store_url: String,
    /// The server behind the store, if any; dropped (stopped) with the harness.
    server: Option<Box<dyn Any>>,
}

impl Harness {
    /// An empty store of the given kind.
    pub fn new(backend: Backend) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.yml"), "").unwrap();
        let (store_url, server): (String, Option<Box<dyn Any>>) = match backend {
            Backend::File => (
                format!("file:{}", dir.path().join("view.yml").display()),
                None,
            ),
            Backend::Etcd => {
                let server = etcd::EtcdServer::start();
                (
                    format!("etcd://{}", server.client_addr()),
                    Some(Box::new(server)),
                )
            }
            Backend::ConsulDouble => {
                let double = consul_double::ConsulDouble::start();
                (
                    format!("consul://{}", double.address()),
                    Some(Box::new(double)),
                )
            }
            Backend::Consul => {
                let agent = consul_agent::ConsulAgent::start();
                (
                    format!("consul://{}", agent.address()),
                    Some(Box::new(agent)),
                )
            }
            Backend::ZooKeeper => {
                let server = zookeeper::ZooKeeperServer::start();
                (format!("zk://{}", server.address()), Some(Box::new(server)))
            }
        };
        Harness {
            dir,
            backend,
            store_url,
            server,
        }
    }

    /// A harness on a store someone else runs (a cluster a test manages).
    pub fn on(backend: Backend, store_url: String) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.yml"), "").unwrap();
        Harness {
            dir,
            backend,
            store_url,
            server: None,
        }
    }

    /// The etcd server behind an etcd harness.
    pub fn etcd(&mut self) -> &mut etcd::EtcdServer {
        self.server
            .as_mut()
            .and_then(|s| s.downcast_mut::<etcd::EtcdServer>())
            .expect("an etcd harness")
    }

    /// The Consul double behind a Consul double harness.
    pub fn consul_double(&self) -> &consul_double::ConsulDouble {
        self.server
            .as_ref()
            .and_then(|s| s.downcast_ref::<consul_double::ConsulDouble>())
            .expect("a Consul double harness")
    }

    /// The ZooKeeper server behind a ZooKeeper harness.
    pub fn zookeeper(&mut self) -> &mut zookeeper::ZooKeeperServer {
        self.server
            .as_mut()
            .and_then(|s| s.downcast_mut::<zookeeper::ZooKeeperServer>())
            .expect("a ZooKeeper harness")
    }

    /// A store holding the bundled fixture view.
    pub fn with_fixture(backend: Backend) -> Harness {
        let h = Harness::new(backend);
        h.import(&fixture("view.yml"));
        h
    }

    /// Loads a view file into the store with `convergent import`.
    pub fn import(&self, file: &Path) {
        self.ok(&["import", file.to_str().unwrap()]);
    }

    /// Writes a document straight into the store, past every check
    /// `convergent` makes: how a hand edit or another tool would.
    pub fn put_document(&self, key: &str, doc: Value) {
        match self.backend {
            Backend::Etcd | Backend::ConsulDouble | Backend::Consul | Backend::ZooKeeper => {
                self.put_raw(key, serde_json::to_vec(&doc).unwrap().as_slice())
            }
            Backend::File => {
                let path = self.store_file();
                let mut tree: Value =
                    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let mut node = &mut tree;
                for segment in key.split('/') {
                    node = node
                        .as_object_mut()
                        .expect("a map on the way")
                        .entry(segment)
                        .or_insert(Value::Object(Default::default()));
                }
                *node = doc;
                std::fs::write(&path, serde_yaml::to_string(&tree).unwrap()).unwrap();
            }
        }
    }

    /// Writes raw bytes at a key of a network store, as `etcdctl put`,
    /// `consul kv put` or a ZooKeeper client would: no checks at all.
    pub fn put_raw(&self, key: &str, value: &[u8]) {
        let address = self
            .store_url
            .split("://")
            .nth(1)
            .unwrap()
            .split(['?', ','])
            .next()
            .unwrap();
        match self.backend {
            Backend::Etcd => etcd::put(address, key, value),
            Backend::ConsulDouble | Backend::Consul => {
                let mut response = ureq::put(&format!("http://{address}/v1/kv/{key}"))
                    .send(value)
                    .expect("consul put");
                assert_eq!(response.body_mut().read_to_string().unwrap().trim(), "true");
            }
            Backend::ZooKeeper => zookeeper::put(&self.store_url, key, value),
            Backend::File => panic!("a file store holds typed YAML, not raw bytes"),
        }
    }

    /// The store file of a file-backed harness.
    pub fn store_file(&self) -> PathBuf {
        assert_eq!(self.backend, Backend::File);
        self.dir.path().join("view.yml")
    }

    /// The cache folder this harness's commands use.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// A path inside the temporary folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary as a plain process, with an environment of nothing but
    /// this harness's settings: for processes a test spawns and controls.
    pub fn process(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("convergent"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("CONVERGENT_STORE", &self.store_url)
            .env("CONVERGENT_CACHE_DIR", self.cache_dir())
            .env("CONVERGENT_CONFIG", self.dir.path().join("config.yml"))
            .env("CONVERGENT_ACTOR", "tester@test-host")
            .current_dir(self.dir.path());
        cmd
    }

    /// The binary, with an environment of nothing but this harness's settings.
    pub fn cmd(&self) -> Command {
        Command::from_std(self.process())
    }

    /// Runs the binary with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("binary runs")
    }

    /// Runs the binary with `args`, which must succeed.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "convergent {}: {}",
            args.join(" "),
            stderr(&out)
        );
        out
    }

    /// Resolves a node into an attributes file, as a chef run would, and
    /// returns the file.
    pub fn attributes_file(&self, cluster: &str, node: &str) -> PathBuf {
        let file = self.path(&format!("{cluster}-{node}.json"));
        self.ok(&[
            "attributes",
            "--cluster",
            cluster,
            "--node",
            node,
            "--output",
            file.to_str().unwrap(),
        ]);
        file
    }

    /// Resolves a node and reports the run's outcome, as the cookbook does.
    pub fn converge(&self, cluster: &str, node: &str, status: &str) {
        let file = self.attributes_file(cluster, node);
        self.ok(&[
            "report",
            "--status",
            status,
            "--attributes",
            file.to_str().unwrap(),
        ]);
    }

    /// Runs `status --format json` and parses it.
    pub fn status(&self, cluster: &str, extra: &[&str]) -> Value {
        let mut args = vec!["status", "--cluster", cluster, "--format", "json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(1),
            "status: {}",
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).expect("status prints JSON")
    }

    /// Runs `attributes` for one node and parses the output.
    pub fn attributes(&self, cluster: &str, node: &str) -> Value {
        let out = self.run(&["attributes", "--cluster", cluster, "--node", node]);
        assert!(
            out.status.success(),
            "attributes {cluster}/{node}: {}",
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).expect("attributes prints JSON")
    }

    /// Runs `attributes` for one node while the store cannot answer within
    /// `timeout`: it must succeed from the cache. The document and stderr.
    #[track_caller]
    pub fn stale_attributes(&self, cluster: &str, node: &str, timeout: &str) -> (Value, String) {
        let out = self.run(&[
            "--timeout",
            timeout,
            "attributes",
            "--cluster",
            cluster,
            "--node",
            node,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: Value = serde_json::from_slice(&out.stdout).expect("attributes prints JSON");
        assert_eq!(
            doc["convergent"]["source"]["stale"], true,
            "served from the cache"
        );
        (doc, stderr(&out))
    }

    /// The store's view, as `export` prints it, parsed.
    pub fn export(&self) -> Value {
        let out = self.ok(&["export", "--format", "json"]);
        serde_json::from_slice(&out.stdout).expect("export prints JSON")
    }
}

/// Opens a store by URL in the test process, as the binary would (with no
/// environment), to test the store interface itself.
pub fn open_store(url: &str) -> Box<dyn convergent::store::Store> {
    let url: convergent::store::StoreUrl = url.parse().unwrap();
    let options = convergent::store::StoreOptions {
        timeout: std::time::Duration::from_secs(5),
    };
    convergent::store::open(&url, &options, &|_| None).unwrap()
}

/// Every file below `dir` (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Stops a child process: SIGTERM, then SIGKILL after `grace`. Its exit
/// status if it stopped on the SIGTERM.
pub fn terminate(
    mut child: std::process::Child,
    grace: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Kills a server process at once (SIGKILL), as a crash would, and reaps it.
pub fn kill_now(child: &mut Option<std::process::Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A process a test started (an orchestrator, say), killed when dropped
/// unless it was waited for, so that a failing test leaves none behind.
pub struct Spawned(Option<std::process::Child>);

impl Spawned {
    /// Guards `child`.
    pub fn new(child: std::process::Child) -> Spawned {
        Spawned(Some(child))
    }

    /// Waits for it to end, with what it printed.
    pub fn wait_with_output(mut self) -> Output {
        self.0
            .take()
            .expect("not waited for yet")
            .wait_with_output()
            .expect("the process can be waited for")
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("not waited for yet").id()
    }

    /// How it ended, if it has.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0
            .as_mut()?
            .try_wait()
            .expect("the process can be polled")
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        kill_now(&mut self.0);
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        kill_now(&mut self.0);
    }
}

/// The last 20 lines of a server's log, for a message saying why it failed.
pub fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Polls `condition` until it holds or `limit` passes; whether it held.
pub fn eventually(limit: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    condition()
}

/// `attributes` for web-01 that fails (69) rather than serve a cached
/// answer, giving up on the store after 2 s: how a test sees what a store
/// refused.
pub const STRICT_ATTRIBUTES_WEB_01: [&str; 9] = [
    "--timeout",
    "2s",
    "--on-unreachable",
    "fail",
    "attributes",
    "--cluster",
    "web",
    "--node",
    "web-01",
];

/// A process's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A process's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the exit code, that stdout is empty, and that stderr mentions
/// every needle: the shape of every refusal.
#[track_caller]
pub fn assert_refused(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(
        out.stdout.is_empty(),
        "stdout must be empty on failure, got: {}",
        stdout(out)
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
}

/// Instantiates test bodies `fn name(backend: Backend)` once per backend:
/// the file store, a real etcd, the Consul double, and a real Consul agent
/// (which skips, saying so, unless `CONVERGENT_TEST_CONSUL_BIN` is set),
/// and a real ZooKeeper. Each instance is `MODULE::BACKEND::NAME`, so
/// `cargo test consul_double` runs the suite on the double alone.
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod file_store {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::support::Backend::File);
                }
            )*
        }
        mod etcd_store {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::support::Backend::Etcd);
                }
            )*
        }
        mod consul_double {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::support::Backend::ConsulDouble);
                }
            )*
        }
        mod consul_agent {
            $(
                #[test]
                fn $name() {
                    if $crate::support::consul_agent::skip(concat!(
                        module_path!(),
                        "::",
                        stringify!($name)
                    )) {
                        return;
                    }
                    super::$name($crate::support::Backend::Consul);
                }
            )*
        }
        mod zookeeper_store {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::support::Backend::ZooKeeper);
                }
            )*
        }
    };
}
pub(crate) use store_suite;
