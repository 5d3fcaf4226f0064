//! A real `consul agent -dev` for the suite, when `CONVERGENT_TEST_CONSUL_BIN`
//! names a consul binary: on free loopback ports (HTTP, Serf LAN and WAN,
//! server RPC; DNS and gRPC off), its config and log in a temporary folder
//! (a dev agent keeps its data in memory), ready once it has a leader, and
//! stopped (SIGTERM, then SIGKILL) when dropped — also when the test fails.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use super::consul_double::Rule;
use super::etcd::free_port;

/// How long an agent may take to elect itself leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `CONVERGENT_TEST_CONSUL_BIN` names a consul binary to test against.
pub fn configured() -> bool {
    std::env::var_os("CONVERGENT_TEST_CONSUL_BIN").is_some_and(|b| !b.is_empty())
}

/// Says why a test that needs a real agent does nothing; true when it should.
pub fn skip(test: &str) -> bool {
    if configured() {
        return false;
    }
    eprintln!("{test}: skipped: set CONVERGENT_TEST_CONSUL_BIN to a consul binary to run it");
    true
}

fn consul_bin() -> String {
    std::env::var("CONVERGENT_TEST_CONSUL_BIN").expect("CONVERGENT_TEST_CONSUL_BIN is set")
}

/// The binary's minor version (`Consul v1.17.0` → 17), for config keys
/// that were renamed.
fn minor_version() -> u32 {
    let out = Command::new(consul_bin())
        .arg("version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", consul_bin()));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// A running dev agent.
pub struct ConsulAgent {
    pub http_port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// The management token, when ACLs are on.
    management: Option<String>,
    /// A single server keeping its data in `dir` (not `-dev`): it survives
    /// [`ConsulAgent::restart`].
    persistent: bool,
}

impl ConsulAgent {
    /// An agent without ACLs.
    pub fn start() -> ConsulAgent {
        ConsulAgent::start_with(None)
    }

    /// An agent with ACLs on (default policy deny) and `management` as its
    /// management token.
    pub fn start_with_acl(management: &str) -> ConsulAgent {
        ConsulAgent::start_with(Some(management.to_string()))
    }

    /// A single server (`-server -bootstrap-expect=1`) keeping its data on
    /// disk, so that it can be killed and restarted with its data.
    pub fn start_persistent() -> ConsulAgent {
        ConsulAgent::start_as(None, true)
    }

    fn start_with(management: Option<String>) -> ConsulAgent {
        ConsulAgent::start_as(management, false)
    }

    fn start_as(management: Option<String>, persistent: bool) -> ConsulAgent {
        for attempt in 0.. {
            let mut agent = ConsulAgent::spawn(management.clone(), persistent);
            match agent.wait_ready() {
                Ok(()) => return agent,
                // Another test may have taken a port between pick and bind.
                Err(e) if attempt < 3 => {
                    eprintln!("consul did not start ({e}); retrying on other ports")
                }
                Err(e) => panic!("consul did not start: {e}"),
            }
        }
        unreachable!()
    }

    fn spawn(management: Option<String>, persistent: bool) -> ConsulAgent {
        let dir = tempfile::tempdir().unwrap();
        let minor = minor_version();
        let http_port = free_port();
        let mut ports = json!({
            "http": http_port,
            "dns": -1,
            "grpc": -1,
            "serf_lan": free_port(),
            "serf_wan": free_port(),
            "server": free_port(),
        });
        if minor >= 14 {
            ports["grpc_tls"] = json!(-1);
        }
        let mut config = json!({
            "node_name": "convergent-test",
            "bind_addr": "127.0.0.1",
            "client_addr": "127.0.0.1",
            "advertise_addr": "127.0.0.1",
            "ports": ports,
            // Short session TTLs, so lock-expiry tests do not wait 20s.
            "session_ttl_min": "1s",
            "disable_update_check": true,
            "log_level": "warn",
        });
        if let Some(token) = &management {
            let key = if minor >= 11 {
                "initial_management"
            } else {
                "master"
            };
            config["acl"] = json!({
                "enabled": true,
                "default_policy": "deny",
                "enable_token_persistence": false,
                "tokens": { key: token },
            });
        }
        let config_file = dir.path().join("agent.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let mut agent = ConsulAgent {
            http_port,
            dir,
            child: None,
            management,
            persistent,
        };
        agent.launch();
        agent
    }

    /// Starts the process on the agent's config (and data, if persistent).
    fn launch(&mut self) {
        let dir = self.dir.path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("consul.log"))
            .unwrap();
        let mut command = Command::new(consul_bin());
        command.arg("agent");
        if self.persistent {
            command
                .args(["-server", "-bootstrap-expect=1", "-data-dir"])
                .arg(dir.join("data"));
        } else {
            command.arg("-dev");
        }
        let child = command
            .arg("-config-file")
            .arg(dir.join("agent.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e})", consul_bin()));
        self.child = Some(child);
    }

    /// SIGKILLs a persistent agent and starts it again on the same ports
    /// and data, without waiting for it to be ready: what a crashed and
    /// restarted server answers first is what a test wants to see.
    pub fn restart(&mut self) {
        assert!(self.persistent, "only a persistent agent keeps its data");
        self.kill();
        self.launch();
    }

    /// `127.0.0.1:PORT` of its HTTP API.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("consul.log")
    }

    fn log_tail(&self) -> String {
        super::log_tail(&self.log_path())
    }

    /// Polls until the agent has a leader (and, with ACLs, takes the
    /// management token: ACLs come up with the leader).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                return Err(format!(
                    "consul exited with {status}; log:\n{}",
                    self.log_tail()
                ));
            }
            let leader = request(&self.address(), "GET", "/v1/status/leader", None, None)
                .ok()
                .filter(|(status, _)| *status == 200)
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                .is_some_and(|v| v.as_str().is_some_and(|l| !l.is_empty()));
            // A 404 for a key nobody wrote: the KV store (and the token) work.
            let usable = leader
                && request(
                    &self.address(),
                    "GET",
                    "/v1/kv/convergent-test-ready",
                    None,
                    self.management.as_deref(),
                )
                .is_ok_and(|(status, _)| status == 404);
            if usable {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "consul not ready after {READY_TIMEOUT:?}; log:\n{}",
            self.log_tail()
        ))
    }

    /// Creates a token with `secret` and a policy of `rules`.
    pub fn add_token(&self, secret: &str, rules: &[Rule]) {
        let management = self.management.as_deref().expect("an agent with ACLs");
        let name = format!("convergent-test-{}", &secret[..secret.len().min(8)]);
        let hcl: Vec<String> = rules.iter().map(Rule::hcl).collect();
        let policy = json!({"Name": name, "Rules": hcl.join("\n")});
        let (status, body) = request(
            &self.address(),
            "PUT",
            "/v1/acl/policy",
            Some(policy.to_string().as_bytes()),
            Some(management),
        )
        .unwrap();
        assert_eq!(status, 200, "creating policy {name}: {body}");
        let token = json!({"SecretID": secret, "Policies": [{"Name": name}]});
        let (status, body) = request(
            &self.address(),
            "PUT",
            "/v1/acl/token",
            Some(token.to_string().as_bytes()),
            Some(management),
        )
        .unwrap();
        assert_eq!(status, 200, "creating token: {body}");
    }

    /// Kills the agent at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        super::kill_now(&mut self.child);
    }

    /// SIGTERM (a graceful leave), then SIGKILL after five seconds.
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child, Duration::from_secs(5));
        }
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP request to a Consul address: status and body.
pub fn request(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    token: Option<&str>,
) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{address}{path}");
    let token = token.unwrap_or_default();
    let mut response = match method {
        "GET" => agent.get(&url).header("X-Consul-Token", token).call()?,
        "DELETE" => agent.delete(&url).header("X-Consul-Token", token).call()?,
        _ => agent
            .put(&url)
            .header("X-Consul-Token", token)
            .send(body.unwrap_or_default())?,
    };
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}
