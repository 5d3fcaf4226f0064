//! Real ZooKeeper servers for tests: standalone (Debian's `zookeeper`
//! package, run with the machine's Java) on a free loopback port, with a
//! temporary data dir and a generated `zoo.cfg`; ready when `srvr` reports
//! a mode; stopped (SIGTERM, then SIGKILL) when dropped — also when the test
//! fails.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use convergent::store::{self, Op, StoreOptions, Txn};

use super::etcd::free_port;

/// How long a server may take to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The class path of the server and its CLI: `CONVERGENT_TEST_ZOOKEEPER_CLASSPATH`,
/// else Debian's (`scripts/test` installs the `zookeeper` package).
fn class_path() -> String {
    std::env::var("CONVERGENT_TEST_ZOOKEEPER_CLASSPATH")
        .unwrap_or_else(|_| "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar".into())
}

/// JVM flags for a quick start and a small heap: these servers live for
/// one test.
const JVM_FLAGS: [&str; 3] = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx128m"];

/// One standalone ZooKeeper.
pub struct ZooKeeperServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl ZooKeeperServer {
    /// A server ready to serve, on a free port.
    pub fn start() -> ZooKeeperServer {
        for attempt in 0.. {
            let dir = tempfile::tempdir().unwrap();
            let mut server = ZooKeeperServer {
                port: free_port(),
                dir,
                child: None,
            };
            server.write_config();
            server.launch();
            match server.wait_ready() {
                Ok(()) => return server,
                // Another test may have taken the port between pick and bind.
                Err(e) if attempt < 3 => {
                    eprintln!("ZooKeeper did not start ({e}); retrying on another port")
                }
                Err(e) => panic!("ZooKeeper did not start: {e}"),
            }
        }
        unreachable!()
    }

    /// A short tick (500 ms) makes sessions expire fast: the server clamps
    /// session timeouts to 2..20 ticks unless told otherwise, and allows up
    /// to a minute here. Four-letter words serve the readiness check and
    /// the counters the tests read; the admin server would take port 8080.
    fn write_config(&self) {
        let config = format!(
            "tickTime=500\n\
             dataDir={}\n\
             clientPort={}\n\
             clientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=*\n\
             minSessionTimeout=1000\n\
             maxSessionTimeout=60000\n",
            self.dir.path().join("data").display(),
            self.port
        );
        std::fs::write(self.config_path(), config).unwrap();
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("zoo.cfg")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("java")
            .args(JVM_FLAGS)
            .arg("-cp")
            .arg(class_path())
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start java ({e}): run scripts/test, which installs zookeeper")
            });
        self.child = Some(child);
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends a four-letter word and returns the answer ("" when none).
    pub fn four_letter(&self, word: &str) -> String {
        let Ok(mut stream) = TcpStream::connect_timeout(
            &self.address().parse().unwrap(),
            Duration::from_millis(500),
        ) else {
            return String::new();
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut answer = String::new();
        if stream.write_all(word.as_bytes()).is_ok() {
            let _ = stream.read_to_string(&mut answer);
        }
        answer
    }

    /// A number from the `srvr` answer, e.g. `Received`, `Node count`, or
    /// `Zxid` (hexadecimal there).
    pub fn counter(&self, name: &str) -> u64 {
        let answer = self.four_letter("srvr");
        let value = answer
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name:?} in srvr answer: {answer:?}"))
            .trim();
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
            None => value.parse().unwrap(),
        }
    }

    /// Polls `srvr` until the server says it serves (`Mode: standalone`):
    /// `ruok` answers `imok` before it does.
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                return Err(format!(
                    "ZooKeeper exited with {status}; log:\n{}",
                    self.log_tail()
                ));
            }
            if self.four_letter("srvr").contains("Mode: ") {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "ZooKeeper not ready after {READY_TIMEOUT:?}; log:\n{}",
            self.log_tail()
        ))
    }

    fn log_tail(&self) -> String {
        super::log_tail(&self.log_path())
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        super::kill_now(&mut self.child);
    }

    /// Starts a killed server again on the same port and data, and waits
    /// until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        self.launch();
        self.wait_ready().unwrap();
    }

    /// Kills the server and starts it again on the same port with no data:
    /// every session it knew is gone, so its clients' sessions expire.
    pub fn restart_empty(&mut self) {
        self.kill();
        std::fs::remove_dir_all(self.dir.path().join("data")).unwrap();
        self.restart();
    }

    /// Stops the server: SIGTERM, then SIGKILL after five seconds.
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child, Duration::from_secs(5));
        }
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs one command of ZooKeeper's own CLI against `address` (a client
/// that is not `convergent`), e.g. `["get", "/convergent/defaults"]`.
pub fn cli(address: &str, command: &[&str]) -> Output {
    Command::new("java")
        .args(JVM_FLAGS)
        .arg("-cp")
        .arg(class_path())
        .arg("org.apache.zookeeper.ZooKeeperMain")
        .args(["-waitforconnection", "-server", address])
        .args(command)
        .stdin(Stdio::null())
        .output()
        .expect("java runs")
}

/// Writes raw bytes at a key as an unchecked client would, creating the
/// znodes above it: a plain put through the store interface, with none of
/// the checks the commands make.
pub fn put(store_url: &str, key: &str, value: &[u8]) {
    let store = store::open(
        &store_url.parse().unwrap(),
        &StoreOptions {
            timeout: Duration::from_secs(10),
        },
        &|_| None,
    )
    .unwrap();
    store
        .commit(&Txn {
            compares: Vec::new(),
            ops: vec![Op::Put {
                key: key.to_string(),
                value: value.to_vec(),
            }],
        })
        .unwrap();
}
