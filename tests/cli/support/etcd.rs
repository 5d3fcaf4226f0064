//! Real etcd servers for tests: one member or a cluster of three, each on
//! free loopback ports with a temporary data dir, ready when `/health` says
//! so, and stopped (SIGTERM, then SIGKILL) when dropped — also when the test
//! fails.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;

/// How long a member may take to become healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The etcd binary: `CONVERGENT_TEST_ETCD_BIN`, else `etcd` on the PATH
/// (Debian's `etcd-server`, installed by `scripts/test`).
fn etcd_bin() -> String {
    std::env::var("CONVERGENT_TEST_ETCD_BIN").unwrap_or_else(|_| "etcd".into())
}

/// A free loopback port (the kernel's pick; released for etcd to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd member.
pub struct EtcdServer {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    dir: TempDir,
    args: Vec<String>,
    child: Option<Child>,
    /// TLS material when the client API is served over https.
    tls: Option<TestCerts>,
}

/// A throwaway CA with a server certificate for 127.0.0.1 and a client
/// certificate, made with `openssl` in a temporary folder. The server
/// certificate also allows client use: etcd 3.4's gateway presents it to its
/// own gRPC server when client certificates are required.
pub struct TestCerts {
    pub dir: TempDir,
}

impl TestCerts {
    /// Makes the CA and certificates.
    pub fn new() -> TestCerts {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=convergent test CA",
            ],
        ]
        .concat());
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for who in ["server", "client"] {
            let (key, csr, pem, ext) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
                format!("{who}.ext"),
            );
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        TestCerts { dir }
    }

    /// A file of the set: `ca.pem`, `server.pem`, `client.key`, …
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl EtcdServer {
    /// A single-member etcd, ready to serve.
    pub fn start() -> EtcdServer {
        EtcdServer::start_with(&[])
    }

    /// A single-member etcd with extra command-line flags.
    pub fn start_with(extra: &[&str]) -> EtcdServer {
        for attempt in 0.. {
            let (client, peer) = (free_port(), free_port());
            let cluster = format!("solo=http://127.0.0.1:{peer}");
            let mut server = EtcdServer::spawn("solo", client, peer, &cluster, None);
            if !extra.is_empty() {
                server.kill();
                server.args.extend(extra.iter().map(|a| a.to_string()));
                server.launch();
            }
            match server.wait_ready() {
                Ok(()) => return server,
                // Another test may have taken the port between pick and bind.
                Err(e) if attempt < 3 => {
                    eprintln!("etcd did not start ({e}); retrying on other ports")
                }
                Err(e) => panic!("etcd did not start: {e}"),
            }
        }
        unreachable!()
    }

    /// A single member serving clients over https only, requiring client
    /// certificates signed by the test CA.
    pub fn start_tls() -> EtcdServer {
        let certs = TestCerts::new();
        let (client, peer) = (free_port(), free_port());
        let cluster = format!("solo=http://127.0.0.1:{peer}");
        let mut server = EtcdServer::spawn("solo", client, peer, &cluster, Some(certs));
        server
            .wait_ready()
            .unwrap_or_else(|e| panic!("etcd with TLS did not start: {e}"));
        server
    }

    fn spawn(
        name: &str,
        client_port: u16,
        peer_port: u16,
        initial_cluster: &str,
        tls: Option<TestCerts>,
    ) -> EtcdServer {
        let dir = tempfile::tempdir().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut args = vec![
            "--name".to_string(),
            name.to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--listen-client-urls".into(),
            format!("{scheme}://127.0.0.1:{client_port}"),
            "--advertise-client-urls".into(),
            format!("{scheme}://127.0.0.1:{client_port}"),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{peer_port}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{peer_port}"),
            "--initial-cluster".into(),
            initial_cluster.to_string(),
            // One token per cluster: members with different tokens refuse each other.
            "--initial-cluster-token".into(),
            format!(
                "ct-{}",
                initial_cluster.replace([':', '/', '=', ',', '.'], "")
            ),
            "--initial-cluster-state".into(),
            "new".into(),
            // Fast elections, so fault tests do not wait long.
            "--heartbeat-interval".into(),
            "50".into(),
            "--election-timeout".into(),
            "500".into(),
        ];
        if let Some(certs) = &tls {
            for (flag, file) in [
                ("--cert-file", "server.pem"),
                ("--key-file", "server.key"),
                ("--trusted-ca-file", "ca.pem"),
            ] {
                args.push(flag.into());
                args.push(certs.path(file));
            }
            args.push("--client-cert-auth".into());
        }
        let mut server = EtcdServer {
            name: name.to_string(),
            client_port,
            peer_port,
            dir,
            args,
            child: None,
            tls,
        };
        server.launch();
        server
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(etcd_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run scripts/test, which installs etcd-server",
                    etcd_bin()
                )
            });
        self.child = Some(child);
    }

    /// `127.0.0.1:PORT` of the client API.
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The TLS material of a TLS member.
    pub fn certs(&self) -> &TestCerts {
        self.tls.as_ref().expect("a TLS member")
    }

    /// Whether `/health` answers true.
    pub fn healthy(&self) -> bool {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(1)))
            .http_status_as_error(false);
        let scheme = match &self.tls {
            None => "http",
            Some(certs) => {
                let read = |name: &str| std::fs::read(certs.path(name)).unwrap();
                let ca = Certificate::from_pem(&read("ca.pem")).unwrap();
                let cert = Certificate::from_pem(&read("client.pem")).unwrap();
                let key = PrivateKey::from_pem(&read("client.key")).unwrap();
                config = config.tls_config(
                    TlsConfig::builder()
                        .root_certs(RootCerts::new_with_certs(&[ca]))
                        .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
                        .build(),
                );
                "https"
            }
        };
        let agent: ureq::Agent = config.build().into();
        agent
            .get(&format!("{scheme}://{}/health", self.client_addr()))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|body| body.contains("\"true\""))
    }

    /// Polls `/health` until the member (and its cluster) is ready.
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                return Err(format!(
                    "etcd {} exited with {status}; log:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            if self.healthy() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "etcd {} not healthy after {READY_TIMEOUT:?}; log:\n{}",
            self.name,
            self.log_tail()
        ))
    }

    fn log_tail(&self) -> String {
        super::log_tail(&self.log_path())
    }

    /// Kills the member at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        super::kill_now(&mut self.child);
    }

    /// Starts a killed member again on the same ports and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running member");
        // A restarted member joins an existing cluster.
        if let Some(i) = self
            .args
            .iter()
            .position(|a| a == "--initial-cluster-state")
        {
            self.args[i + 1] = "existing".into();
        }
        self.launch();
    }

    /// Stops the member: SIGTERM, then SIGKILL after five seconds.
    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            super::terminate(child, Duration::from_secs(5));
        }
    }

    /// Turns authentication on at `addr`, with `root` and a user `name` whose
    /// role may read and write everything under `prefix`.
    pub fn enable_auth_at(
        addr: &str,
        root_password: &str,
        name: &str,
        password: &str,
        prefix: &str,
    ) {
        let addr = addr.to_string();
        let range_end = {
            let mut end = prefix.as_bytes().to_vec();
            *end.last_mut().unwrap() += 1;
            end
        };
        for (path, body) in [
            (
                "auth/user/add",
                json!({"name": "root", "password": root_password}),
            ),
            ("auth/role/add", json!({"name": "root"})),
            ("auth/user/grant", json!({"user": "root", "role": "root"})),
            ("auth/role/add", json!({"name": "convergent"})),
            (
                "auth/role/grant",
                json!({"name": "convergent", "perm": {"permType": "READWRITE", "key": B64.encode(prefix), "range_end": B64.encode(range_end)}}),
            ),
            ("auth/user/add", json!({"name": name, "password": password})),
            (
                "auth/user/grant",
                json!({"user": name, "role": "convergent"}),
            ),
            ("auth/enable", json!({})),
        ] {
            post(&addr, path, &body, None);
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cluster of members on loopback.
pub struct EtcdCluster {
    pub members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// `n` members, all healthy.
    pub fn start(n: usize) -> EtcdCluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                EtcdServer::spawn(&format!("m{i}"), *client, *peer, &initial, None)
            })
            .collect();
        for m in &mut members {
            m.wait_ready()
                .unwrap_or_else(|e| panic!("cluster did not start: {e}"));
        }
        EtcdCluster { members }
    }

    /// The store URL naming every member.
    pub fn store_url(&self) -> String {
        let endpoints: Vec<String> = self.members.iter().map(EtcdServer::client_addr).collect();
        format!("etcd://{}", endpoints.join(","))
    }

    /// Waits until every running member is healthy again.
    pub fn wait_healthy(&mut self) {
        for m in self.members.iter_mut().filter(|m| m.child.is_some()) {
            m.wait_ready().unwrap();
        }
    }
}

/// POSTs to the v3 gateway of `addr`; panics unless it answers 200.
pub fn post(addr: &str, path: &str, body: &Value, token: Option<&str>) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.post(&format!("http://{addr}/v3/{path}"));
    if let Some(token) = token {
        request = request.header("Authorization", token);
    }
    let mut response = request
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    assert_eq!(status, 200, "POST {path} {body}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Puts raw bytes at a key, as `etcdctl put` would.
pub fn put(addr: &str, key: &str, value: &[u8]) {
    post(
        addr,
        "kv/put",
        &json!({"key": B64.encode(key), "value": B64.encode(value)}),
        None,
    );
}

/// The raw value at a key, if any.
pub fn get(addr: &str, key: &str) -> Option<Vec<u8>> {
    let reply = post(addr, "kv/range", &json!({"key": B64.encode(key)}), None);
    reply["kvs"][0]["value"]
        .as_str()
        .map(|v| B64.decode(v).unwrap())
}
