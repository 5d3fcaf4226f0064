//! An HTTP double of Consul's API, in the test process, on a free loopback
//! port: the KV, transaction, session, event and status endpoints with
//! the status codes, plain-text errors, headers, base64 values, indexes,
//! blocking queries, sessions and ACLs that Consul documents (see
//! `fixtures/consul-api/` and the tests in `consul_fixtures.rs`, which hold
//! the double to them). Stopped when dropped.
//!
//! Beyond Consul's API it lets a test stop it (the port then refuses
//! connections), lose the leader, restore an older snapshot (indexes go
//! backwards), seed keys at given indexes, and see every request it got.

mod api;
mod duration;
mod state;
mod wire;

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use state::{Access, Acl, Resource, Rule, Token};
use state::{Datacenter, KvEntry};
pub use wire::Request;

/// How the double behaves where Consul can be configured.
#[derive(Clone, Debug)]
pub struct Config {
    /// Datacenters it knows, its own first; each has its own KV store.
    pub datacenters: Vec<String>,
    /// ACLs (default policy deny), or none.
    pub acl: Option<Acl>,
    /// `session_ttl_min` (Consul's default is 10s; the test agent uses 1s).
    pub session_ttl_min: Duration,
    /// `limits.kv_max_value_size`.
    pub kv_max_value_size: usize,
    /// `txn_max_req_len` (the effective limit is the larger of the two).
    pub txn_max_req_len: usize,
    /// How long a read is held without a leader (`rpc_hold_timeout`, 7s).
    pub no_leader_hold: Duration,
    /// The agent's node name.
    pub node: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            datacenters: vec!["dc1".into()],
            acl: None,
            session_ttl_min: Duration::from_secs(1),
            kv_max_value_size: 512 * 1024,
            txn_max_req_len: 512 * 1024,
            no_leader_hold: Duration::from_millis(200),
            node: "consul-double".into(),
        }
    }
}

/// A request the double got, for tests to look at (its method, path,
/// query, headers and body through `Deref`).
#[derive(Clone, Debug)]
pub struct Logged {
    pub request: Request,
    /// The token it carried (`X-Consul-Token`, `Bearer` or `?token=`).
    pub token: Option<String>,
}

/// What [`ConsulDouble::lose_next_write_answer`] matches.
const WRITE_TXN: &str = "/v1/txn (a write)";

impl std::ops::Deref for Logged {
    type Target = Request;

    fn deref(&self) -> &Request {
        &self.request
    }
}

impl Logged {
    /// Whether this was a transaction that writes (not only reads or checks).
    pub fn is_write_txn(&self) -> bool {
        is_write_txn(&self.request)
    }
}

/// Whether `request` is a transaction that writes (not only reads or checks).
fn is_write_txn(request: &Request) -> bool {
    let body = String::from_utf8_lossy(&request.body);
    request.path == "/v1/txn"
        && [
            "set",
            "cas",
            "delete",
            "delete-cas",
            "delete-tree",
            "lock",
            "unlock",
        ]
        .iter()
        .any(|verb| body.contains(&format!("\"Verb\":\"{verb}\"")))
}

/// A copy of one datacenter's state, to restore later (indexes included).
#[derive(Clone, Debug)]
pub struct Snapshot(Datacenter);

/// What the connection threads share.
struct Shared {
    state: Mutex<State>,
    /// Notified on every change, for blocking queries.
    changed: Condvar,
    stop: AtomicBool,
    log: Mutex<Vec<Logged>>,
    /// Open connections, to cut when stopping.
    connections: Mutex<BTreeMap<u64, TcpStream>>,
    /// Requests (method, path) whose successful answer is to be lost.
    lose: Mutex<Vec<(String, String)>>,
    /// The paths of the blocking queries waiting right now.
    blocked: Mutex<Vec<String>>,
}

struct State {
    config: Config,
    dcs: BTreeMap<String, Datacenter>,
    /// When the leader was lost, while there is none.
    leader_lost: Option<Instant>,
    /// Bumped when a snapshot is restored: blocked queries return at once.
    abandon: u64,
    /// An older state the next default or stale reads are answered from, as
    /// a server restarted and not yet caught up answers them (`?consistent`
    /// reads wait for it to catch up, so see the real state), and how many.
    lagging: Option<(Datacenter, usize)>,
    /// Consistent reads fail with Consul's 500 "Not ready to serve
    /// consistent reads", as they do until a restarted leader caught up.
    consistent_not_ready: bool,
}

impl State {
    fn local_dc(&self) -> String {
        self.config.datacenters[0].clone()
    }
}

/// A Consul double listening on a loopback port; stopped when dropped.
pub struct ConsulDouble {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    reaper: Option<JoinHandle<()>>,
}

impl ConsulDouble {
    /// A double with the default configuration.
    pub fn start() -> ConsulDouble {
        ConsulDouble::start_with(Config::default())
    }

    /// A double with `config`.
    pub fn start_with(config: Config) -> ConsulDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().unwrap().port();
        let dcs = config
            .datacenters
            .iter()
            .map(|dc| (dc.clone(), Datacenter::default()))
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                config,
                dcs,
                leader_lost: None,
                abandon: 0,
                lagging: None,
                consistent_not_ready: false,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            connections: Mutex::new(BTreeMap::new()),
            lose: Mutex::new(Vec::new()),
            blocked: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for (id, stream) in (0u64..).zip(listener.incoming()) {
                    if shared.stop.load(Ordering::SeqCst) {
                        return; // drops the listener: the port refuses from now on
                    }
                    let Ok(stream) = stream else { continue };
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    shared.connections.lock().unwrap().insert(id, clone);
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || {
                        serve(&shared, stream);
                        if let Some(s) = shared.connections.lock().unwrap().remove(&id) {
                            let _ = s.shutdown(Shutdown::Both);
                        }
                    });
                }
            })
        };
        // Session TTLs run out on their own, waking blocking queries.
        let reaper = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                while !shared.stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(50));
                    let mut state = shared.state.lock().unwrap();
                    let now = Instant::now();
                    let mut any = false;
                    for dc in state.dcs.values_mut() {
                        any |= dc.reap_sessions(now);
                    }
                    if any {
                        shared.changed.notify_all();
                    }
                }
            })
        };
        ConsulDouble {
            port,
            shared,
            accept: Some(accept),
            reaper: Some(reaper),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops serving, as a crashed server would: open connections are cut
    /// and the port refuses new ones.
    pub fn stop(&mut self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.changed.notify_all();
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
        for stream in std::mem::take(&mut *self.shared.connections.lock().unwrap()).into_values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Loses the leader (`false`) or gets one back: without one, reads
    /// other than `?stale` and all writes are held, then fail with 500
    /// `No cluster leader`.
    pub fn set_leader(&self, present: bool) {
        let mut state = self.state();
        state.leader_lost = match (present, state.leader_lost) {
            (true, _) => None,
            (false, Some(since)) => Some(since),
            (false, None) => Some(Instant::now()),
        };
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Requests so far to paths starting with `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(path))
            .collect()
    }

    /// How many blocking queries on `path` are waiting right now.
    pub fn blocked_on(&self, path: &str) -> usize {
        let blocked = self.shared.blocked.lock().unwrap();
        blocked.iter().filter(|p| *p == path).count()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Puts a key straight into the local datacenter at the given indexes.
    pub fn seed(&self, key: &str, value: &[u8], create_index: u64, modify_index: u64) {
        let mut state = self.state();
        let dc = state.local_dc();
        let dc = state.dcs.get_mut(&dc).unwrap();
        dc.kv.insert(
            key.to_string(),
            KvEntry {
                value: (!value.is_empty()).then(|| value.to_vec()),
                flags: 0,
                create_index,
                modify_index,
                lock_index: 0,
                session: None,
            },
        );
        dc.index = dc.index.max(modify_index);
        dc.kv_index = dc.kv_index.max(modify_index);
        self.shared.changed.notify_all();
    }

    /// Applies the next `method` request to `path` but cuts the connection
    /// instead of answering, as a network failure after the write would:
    /// the client cannot know whether it was applied.
    pub fn lose_next_answer(&self, method: &str, path: &str) {
        self.shared
            .lose
            .lock()
            .unwrap()
            .push((method.to_string(), path.to_string()));
    }

    /// Like [`ConsulDouble::lose_next_answer`] for the next transaction
    /// that writes (reads go through `/v1/txn` too).
    pub fn lose_next_write_answer(&self) {
        self.lose_next_answer("PUT", WRITE_TXN);
    }

    /// Moves the local datacenter's Raft index (and KV table index) to `index`.
    pub fn set_index(&self, index: u64) {
        let mut state = self.state();
        let dc = state.local_dc();
        let dc = state.dcs.get_mut(&dc).unwrap();
        dc.index = index;
        dc.kv_index = index;
    }

    /// A copy of the local datacenter's state.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.state();
        Snapshot(state.dcs[&state.local_dc()].clone())
    }

    /// Restores a snapshot, as `consul snapshot restore` does: its data and
    /// its (lower) indexes come back, and blocked queries return at once.
    pub fn restore(&self, snapshot: &Snapshot) {
        let mut state = self.state();
        let dc = state.local_dc();
        state.dcs.insert(dc, snapshot.0.clone());
        state.abandon += 1;
        self.shared.changed.notify_all();
    }

    /// Answers the next `reads` transactions that read without
    /// `?consistent` from `snapshot`, as a Consul server SIGKILLed and
    /// restarted does while it replays its log: an older index and older
    /// data, with no sign that they are old. Consistent reads see the
    /// current state.
    pub fn lag_reads(&self, snapshot: &Snapshot, reads: usize) {
        self.state().lagging = (reads > 0).then(|| (snapshot.0.clone(), reads));
    }

    /// Makes consistent reads fail (`ready: false`) as a restarted leader's
    /// do until it has caught up, or answer again.
    pub fn set_consistent_ready(&self, ready: bool) {
        self.state().consistent_not_ready = !ready;
    }

    /// Adds an ACL token (ACLs must be on).
    pub fn add_token(&self, token: Token) {
        self.state()
            .config
            .acl
            .as_mut()
            .expect("a double with ACLs")
            .tokens
            .push(token);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one connection until the client closes it or the double stops.
fn serve(shared: &Shared, stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !shared.stop.load(Ordering::SeqCst) {
        let request = match wire::read_request(&mut reader) {
            Ok(Some(r)) => r,
            _ => return,
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        shared.log.lock().unwrap().push(Logged {
            token: api::token_of(&request).map(str::to_string),
            request: request.clone(),
        });
        let response = api::handle(shared, &request);
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        {
            let mut lose = shared.lose.lock().unwrap();
            let matches = |(m, p): &(String, String)| {
                *m == request.method
                    && (*p == request.path || (p == WRITE_TXN && is_write_txn(&request)))
            };
            if response.status == 200 && lose.first().is_some_and(matches) {
                lose.remove(0);
                return; // applied, but the answer never arrives
            }
        }
        let gzip = request
            .header("accept-encoding")
            .is_some_and(|e| e.contains("gzip"));
        let close = request
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if wire::write_response(&mut writer, response, gzip, close).is_err() || close {
            return;
        }
    }
}
