//! Consul's HTTP endpoints as the double answers them: `/v1/kv`,
//! `/v1/txn`, `/v1/session`, `/v1/event` and `/v1/status/leader`. Wording,
//! status codes and headers follow `fixtures/consul-api/` and the notes in
//! the reference (Consul's `agent/http.go`, `kvs_endpoint.go`,
//! `txn_endpoint.go`, `session_endpoint.go`, `state/txn.go`).

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::thread;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use super::duration;
use super::state::{uuid, Access, Behavior, Datacenter, Event, Identity, Resource, Session};
use super::wire::{Request, Response};
use super::{Shared, State};

/// Consul's hard-coded `maxTxnOps`.
const MAX_TXN_OPS: usize = 64;
/// `default_query_time` and `max_query_time`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Blocking waits get up to wait/16 of jitter.
const JITTER_FRACTION: u32 = 16;
/// The 24h cap on session TTLs.
const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Events an agent remembers.
const MAX_EVENTS: usize = 256;

type Answer = Result<Response, Response>;

/// The token a request carries, in Consul's order of precedence.
pub fn token_of(r: &Request) -> Option<&str> {
    r.param("token")
        .filter(|t| !t.is_empty())
        .or_else(|| r.header("x-consul-token").filter(|t| !t.is_empty()))
        .or_else(|| {
            let (scheme, rest) = r.header("authorization")?.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.split_whitespace().next())
                .flatten()
        })
}

/// Answers one request.
pub fn handle(shared: &Shared, r: &Request) -> Response {
    let acl_on = shared.state.lock().unwrap().config.acl.is_some();
    let response = route(shared, r).unwrap_or_else(|e| e);
    response.with(
        "X-Consul-Default-Acl-Policy",
        if acl_on { "deny" } else { "allow" },
    )
}

fn route(shared: &Shared, r: &Request) -> Answer {
    let Some(rest) = r.path.strip_prefix("/v1/") else {
        return Err(Response::text(
            404,
            "Invalid URL path: must begin with /v1/",
        ));
    };
    let allow = |methods: &[&str], allowed: &str| -> Result<(), Response> {
        if methods.contains(&r.method.as_str()) {
            Ok(())
        } else {
            Err(
                Response::text(405, &format!("method {} not allowed", r.method))
                    .with("Allow", allowed),
            )
        }
    };
    if let Some(key) = rest.strip_prefix("kv/").or((rest == "kv").then_some("")) {
        allow(&["GET", "PUT", "DELETE"], "OPTIONS,GET,PUT,DELETE")?;
        let ctx = Ctx::new(shared, r)?;
        return match r.method.as_str() {
            "GET" => kv_get(&ctx, key),
            "PUT" => kv_put(&ctx, key),
            _ => kv_delete(&ctx, key),
        };
    }
    if rest == "txn" {
        allow(&["PUT"], "OPTIONS,PUT")?;
        return txn(&Ctx::new(shared, r)?);
    }
    if let Some(what) = rest.strip_prefix("session/") {
        let (verb, id) = what.split_once('/').unwrap_or((what, ""));
        let ctx = Ctx::new(shared, r)?;
        return match verb {
            "create" => allow(&["PUT"], "OPTIONS,PUT").and_then(|()| session_create(&ctx)),
            "destroy" => allow(&["PUT"], "OPTIONS,PUT").and_then(|()| session_destroy(&ctx, id)),
            "renew" => allow(&["PUT"], "OPTIONS,PUT").and_then(|()| session_renew(&ctx, id)),
            "info" => allow(&["GET"], "OPTIONS,GET").and_then(|()| session_read(&ctx, Some(id))),
            "list" => allow(&["GET"], "OPTIONS,GET").and_then(|()| session_read(&ctx, None)),
            _ => Err(Response::text(404, "404 page not found\n")),
        };
    }
    if let Some(name) = rest.strip_prefix("event/fire/") {
        allow(&["PUT"], "OPTIONS,PUT")?;
        return event_fire(&Ctx::new(shared, r)?, name);
    }
    if rest == "event/list" {
        allow(&["GET"], "OPTIONS,GET")?;
        return event_list(&Ctx::new(shared, r)?);
    }
    if rest == "status/leader" {
        let state = shared.state.lock().unwrap();
        let leader = if state.leader_lost.is_some() {
            String::new()
        } else {
            "127.0.0.1:8300".into()
        };
        return Ok(Response::json(200, &json!(leader)));
    }
    Err(Response::text(404, "404 page not found\n"))
}

/// How a read asks for consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Leader,
    Consistent,
    Stale,
}

/// What every endpoint works out first: the datacenter and who is asking.
struct Ctx<'a> {
    shared: &'a Shared,
    r: &'a Request,
    dc: String,
    who: Identity,
}

impl<'a> Ctx<'a> {
    fn new(shared: &'a Shared, r: &'a Request) -> Result<Ctx<'a>, Response> {
        // Consul CE refuses the Enterprise parameters, whatever their value.
        if r.has("ns") || r.header("x-consul-namespace").is_some() {
            return Err(Response::text(
                400,
                "Bad request: Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature",
            ));
        }
        if r.has("partition") || r.header("x-consul-partition").is_some() {
            return Err(Response::text(
                400,
                "Bad request: Invalid query parameter: \"partition\" - Partitions are a Consul Enterprise feature",
            ));
        }
        let state = shared.state.lock().unwrap();
        let dc = match r.param("dc").filter(|d| !d.is_empty()) {
            Some(dc) if state.dcs.contains_key(dc) => dc.to_string(),
            Some(_) => return Err(Response::text(500, "No path to datacenter")),
            None => state.local_dc(),
        };
        let who = match &state.config.acl {
            None => Identity::Anyone,
            Some(acl) => match token_of(r) {
                None => Identity::Anonymous,
                Some(secret) => match acl.tokens.iter().find(|t| t.secret == secret) {
                    Some(token) => Identity::Token(token.clone()),
                    None => return Err(Response::text(403, "ACL not found")),
                },
            },
        };
        Ok(Ctx { shared, r, dc, who })
    }

    /// The state, with expired sessions reaped first.
    fn lock(&self) -> MutexGuard<'a, State> {
        let mut state = self.shared.state.lock().unwrap();
        let now = Instant::now();
        let mut any = false;
        for dc in state.dcs.values_mut() {
            any |= dc.reap_sessions(now);
        }
        if any {
            self.shared.changed.notify_all();
        }
        state
    }

    fn mode(&self) -> Result<Mode, Response> {
        match (self.r.has("stale"), self.r.has("consistent")) {
            (true, true) => Err(Response::text(
                400,
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            )),
            (true, false) => Ok(Mode::Stale),
            (false, true) => Ok(Mode::Consistent),
            (false, false) => Ok(Mode::Leader),
        }
    }

    /// Without a leader, everything but a stale read is held for
    /// `rpc_hold_timeout` and then fails.
    fn need_leader(&self, mode: Mode) -> Result<(), Response> {
        if mode == Mode::Stale {
            return Ok(());
        }
        let hold = {
            let state = self.shared.state.lock().unwrap();
            match state.leader_lost {
                None => return Ok(()),
                Some(_) => state.config.no_leader_hold,
            }
        };
        thread::sleep(hold);
        Err(Response::text(500, "No cluster leader"))
    }

    /// `?index=&wait=`: the index to block past and for how long, with
    /// Consul's jitter; `None` when the request does not block.
    fn blocking(&self) -> Result<Option<(u64, Duration)>, Response> {
        let wait = match self.r.param("wait") {
            None => DEFAULT_WAIT,
            Some(text) => duration::parse(text)
                .ok_or_else(|| Response::text(400, "Invalid wait time"))?
                .min(MAX_WAIT),
        };
        let index = match self.r.param("index") {
            None => return Ok(None),
            Some(text) => text
                .parse::<u64>()
                .map_err(|_| Response::text(400, "Invalid index"))?,
        };
        if index == 0 {
            return Ok(None);
        }
        let jitter = wait.mul_f64(random_fraction() / f64::from(JITTER_FRACTION));
        Ok(Some((index, wait + jitter)))
    }

    /// Holds the request until `index_of` moves past `min`, the wait runs
    /// out, a snapshot is restored or the double stops.
    fn block(
        &self,
        mut state: MutexGuard<'a, State>,
        min: u64,
        wait: Duration,
        index_of: impl Fn(&Datacenter) -> u64,
    ) -> MutexGuard<'a, State> {
        let deadline = Instant::now() + wait;
        let abandon = state.abandon;
        self.shared
            .blocked
            .lock()
            .unwrap()
            .push(self.r.path.clone());
        while index_of(&state.dcs[&self.dc]) <= min
            && state.abandon == abandon
            && !self.shared.stop.load(Ordering::SeqCst)
        {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap()
                .0;
        }
        let mut blocked = self.shared.blocked.lock().unwrap();
        if let Some(i) = blocked.iter().position(|p| *p == self.r.path) {
            blocked.remove(i);
        }
        drop(blocked);
        state
    }

    /// The query meta headers of a read.
    fn meta(&self, state: &State, response: Response, index: u64, mode: Mode) -> Response {
        let (known, last) = match state.leader_lost {
            None => (true, 0),
            Some(since) => (false, since.elapsed().as_millis()),
        };
        response
            .with("X-Consul-Index", index.max(1))
            .with("X-Consul-Knownleader", known)
            .with("X-Consul-Lastcontact", last)
            .with(
                "X-Consul-Effective-Consistency",
                match mode {
                    Mode::Leader => "leader",
                    Mode::Consistent => "consistent",
                    Mode::Stale => "stale",
                },
            )
            .with("X-Consul-Query-Backend", "blocking-query")
    }

    /// A KV write: with a leader, the state locked and the Raft index the
    /// write is applied at.
    fn begin_write(&self) -> Result<(MutexGuard<'a, State>, u64), Response> {
        self.need_leader(Mode::Leader)?;
        let mut state = self.lock();
        let index = state.dcs.get_mut(&self.dc).unwrap().next_index();
        Ok((state, index))
    }

    fn notify(&self) {
        self.shared.changed.notify_all();
    }
}

fn random_fraction() -> f64 {
    let hex: String = uuid()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(13)
        .collect();
    u64::from_str_radix(&hex, 16).unwrap_or(0) as f64 / (1u64 << 52) as f64
}

fn forbidden(text: String) -> Response {
    Response::text(403, &text)
}

fn kv_get(ctx: &Ctx, key: &str) -> Answer {
    let mode = ctx.mode()?;
    let blocking = ctx.blocking()?;
    let list = ctx.r.has("recurse") || ctx.r.has("keys");
    if !list {
        ctx.who
            .allow(Resource::Key, key, Access::Read)
            .map_err(forbidden)?;
    }
    ctx.need_leader(mode)?;
    let mut state = ctx.lock();
    if let Some((min, wait)) = blocking {
        state = ctx.block(state, min, wait, |dc| dc.kv_read_index(key, list));
    }
    let dc = &state.dcs[&ctx.dc];
    let index = dc.kv_read_index(key, list);
    let readable = |k: &str| ctx.who.allow(Resource::Key, k, Access::Read).is_ok();
    let all = dc.list(key);
    let filtered = list && all.iter().any(|(k, _)| !readable(k));
    let found = |response: Response| {
        let response = ctx.meta(&state, response, index, mode);
        if filtered && !ctx.who.is_anonymous() {
            response.with("X-Consul-Results-Filtered-By-Acls", "true")
        } else {
            response
        }
    };
    if ctx.r.has("keys") {
        let separator = ctx.r.param("separator").filter(|s| !s.is_empty());
        let mut keys: Vec<String> = Vec::new();
        for (k, _) in all.iter().filter(|(k, _)| readable(k)) {
            let cut = match separator {
                Some(sep) => match k[key.len()..].find(sep) {
                    Some(i) => k[..key.len() + i + sep.len()].to_string(),
                    None => k.to_string(),
                },
                None => k.to_string(),
            };
            if keys.last() != Some(&cut) {
                keys.push(cut);
            }
        }
        if keys.is_empty() && !key.is_empty() {
            return Err(found(Response::empty(404)));
        }
        return Ok(found(Response::json(200, &json!(keys))));
    }
    if ctx.r.has("recurse") {
        let entries: Vec<Value> = all
            .iter()
            .filter(|(k, _)| readable(k))
            .map(|(k, e)| e.to_json(k, true))
            .collect();
        if entries.is_empty() {
            return Err(found(Response::empty(404)));
        }
        return Ok(found(Response::json(200, &Value::Array(entries))));
    }
    let Some(entry) = dc.kv.get(key) else {
        return Err(found(Response::empty(404)));
    };
    if ctx.r.has("raw") {
        let raw = Response {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("X-Content-Type-Options".into(), "nosniff".into()),
                ("Content-Security-Policy".into(), "sandbox".into()),
            ],
            body: entry.value.clone().unwrap_or_default(),
        };
        return Ok(found(raw));
    }
    Ok(found(Response::json(
        200,
        &json!([entry.to_json(key, true)]),
    )))
}

fn parse_u64(ctx: &Ctx, name: &str) -> Result<Option<u64>, Response> {
    match ctx.r.param(name) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| Response::text(400, &format!("Invalid {name} index: {text:?}"))),
    }
}

/// At most one of `flags`, or 400 `Conflicting flags: <query>`.
fn exclusive(ctx: &Ctx, flags: &[&str]) -> Result<(), Response> {
    if flags.iter().filter(|f| ctx.r.has(f)).count() > 1 {
        return Err(Response::text(
            400,
            &format!("Conflicting flags: {}", ctx.r.encoded_query()),
        ));
    }
    Ok(())
}

fn kv_put(ctx: &Ctx, key: &str) -> Answer {
    if key.is_empty() {
        return Err(Response::text(400, "Missing key name"));
    }
    let max = ctx.shared.state.lock().unwrap().config.kv_max_value_size;
    if ctx.r.body.len() > max {
        return Err(Response::text(
            413,
            &format!(
                "Request body({} bytes) too large, max size: {max} bytes. See \
                 https://www.consul.io/docs/agent/config/config-files#kv_max_value_size.",
                ctx.r.body.len()
            ),
        ));
    }
    let flags = match ctx.r.param("flags") {
        None => 0,
        Some(text) => text
            .parse()
            .map_err(|_| Response::text(400, "Invalid flags"))?,
    };
    exclusive(ctx, &["cas", "acquire", "release"])?;
    let cas = parse_u64(ctx, "cas")?;
    ctx.who
        .allow(Resource::Key, key, Access::Write)
        .map_err(forbidden)?;
    let (mut state, index) = ctx.begin_write()?;
    let dc = state.dcs.get_mut(&ctx.dc).unwrap();
    let value = ctx.r.body.clone();
    let done = if let Some(cas) = cas {
        let current = dc.kv.get(key).map_or(0, |e| e.modify_index);
        current == cas && {
            dc.set(key, value, flags, index);
            true
        }
    } else if let Some(session) = ctx.r.param("acquire") {
        acquire(dc, key, session, value, flags, index).map_err(|e| Response::text(500, &e))?
    } else if let Some(session) = ctx.r.param("release") {
        match dc.kv.get(key) {
            Some(e) if e.session.as_deref() == Some(session) => {
                dc.set(key, value, flags, index);
                dc.kv.get_mut(key).unwrap().session = None;
                true
            }
            _ => false,
        }
    } else {
        dc.set(key, value, flags, index);
        true
    };
    ctx.notify();
    Ok(Response::json(200, &json!(done)))
}

/// `?acquire=` and the txn `lock` verb: `Ok(false)` when held elsewhere or
/// during a lock-delay; `Err` for an unknown session.
fn acquire(
    dc: &mut Datacenter,
    key: &str,
    session: &str,
    value: Vec<u8>,
    flags: u64,
    index: u64,
) -> Result<bool, String> {
    if !dc.sessions.contains_key(session) {
        return Err(format!("invalid session {session:?}"));
    }
    if dc
        .lock_delays
        .get(key)
        .is_some_and(|until| *until > Instant::now())
    {
        return Ok(false);
    }
    let held_by = dc.kv.get(key).and_then(|e| e.session.clone());
    match held_by.as_deref() {
        Some(other) if other != session => Ok(false),
        Some(_) => {
            dc.set(key, value, flags, index);
            Ok(true)
        }
        None => {
            dc.set(key, value, flags, index);
            let entry = dc.kv.get_mut(key).unwrap();
            entry.lock_index += 1;
            entry.session = Some(session.to_string());
            Ok(true)
        }
    }
}

fn kv_delete(ctx: &Ctx, key: &str) -> Answer {
    exclusive(ctx, &["recurse", "cas"])?;
    let recurse = ctx.r.has("recurse");
    let cas = parse_u64(ctx, "cas")?;
    if recurse {
        ctx.who.allow_write_prefix(key).map_err(forbidden)?;
    } else {
        ctx.who
            .allow(Resource::Key, key, Access::Write)
            .map_err(forbidden)?;
    }
    let (mut state, index) = ctx.begin_write()?;
    let dc = state.dcs.get_mut(&ctx.dc).unwrap();
    let done = if recurse {
        dc.delete_tree(key, index);
        true
    } else if let Some(cas) = cas {
        let matches = cas > 0 && dc.kv.get(key).is_some_and(|e| e.modify_index == cas);
        if matches {
            dc.delete(key, index);
        }
        matches
    } else {
        dc.delete(key, index);
        true
    };
    ctx.notify();
    Ok(Response::json(200, &json!(done)))
}

/// One KV operation of a transaction, decoded.
struct TxnOp {
    verb: String,
    key: String,
    value: Vec<u8>,
    flags: u64,
    index: u64,
    session: String,
}

impl TxnOp {
    fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "set" | "delete" | "delete-cas" | "delete-tree" | "cas" | "lock" | "unlock"
        )
    }
}

fn decode_ops(body: &[u8], max_value: usize) -> Result<Vec<TxnOp>, Response> {
    let bad = |e: String| Response::text(400, &format!("Failed to parse body: {e}"));
    let ops: Vec<Value> = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if ops.len() > MAX_TXN_OPS {
        return Err(Response::text(
            413,
            &format!(
                "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                ops.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(ops.len());
    for op in &ops {
        let kv = op
            .get("KV")
            .filter(|kv| kv.is_object())
            .ok_or_else(|| bad("only KV operations are supported by this double".into()))?;
        let text = |name: &str| {
            kv.get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let value = match kv.get("Value") {
            Some(Value::String(v)) => B64.decode(v).map_err(|e| {
                let at = match e {
                    base64::DecodeError::InvalidByte(at, _)
                    | base64::DecodeError::InvalidLastSymbol(at, _) => at,
                    _ => v.len(),
                };
                bad(format!(
                    "failed to decode value: illegal base64 data at input byte {at}"
                ))
            })?,
            _ => Vec::new(),
        };
        let key = text("Key");
        if value.len() > max_value {
            return Err(Response::text(
                413,
                &format!(
                    "Value for key {key:?} is too large ({} > {max_value} bytes)",
                    value.len()
                ),
            ));
        }
        out.push(TxnOp {
            verb: text("Verb"),
            key,
            value,
            flags: kv.get("Flags").and_then(Value::as_u64).unwrap_or(0),
            index: kv.get("Index").and_then(Value::as_u64).unwrap_or(0),
            session: text("Session"),
        });
    }
    Ok(out)
}

/// Runs one op (`state/txn.go` `txnKVS`): the entries it yields.
fn run_op(dc: &mut Datacenter, op: &TxnOp, index: u64) -> Result<Vec<Value>, String> {
    let key = op.key.as_str();
    let entry = |dc: &Datacenter, with_value: bool| -> Vec<Value> {
        dc.kv
            .get(key)
            .map(|e| vec![e.to_json(key, with_value)])
            .unwrap_or_default()
    };
    let modify = dc.kv.get(key).map(|e| e.modify_index);
    match op.verb.as_str() {
        "set" => {
            dc.set(key, op.value.clone(), op.flags, index);
            Ok(entry(dc, false))
        }
        "cas" => {
            let ok = match op.index {
                0 => modify.is_none(),
                i => modify == Some(i),
            };
            if !ok {
                return Err(format!("failed to set key {key:?}, index is stale"));
            }
            dc.set(key, op.value.clone(), op.flags, index);
            Ok(entry(dc, false))
        }
        "lock" => match acquire(dc, key, &op.session, op.value.clone(), op.flags, index) {
            Ok(true) => Ok(entry(dc, false)),
            Ok(false) if dc.lock_delays.get(key).is_some_and(|u| *u > Instant::now()) => {
                Err(format!("failed to lock key {key:?} due to lock delay"))
            }
            Ok(false) => Err(format!("failed to lock key {key:?}, lock is already held")),
            Err(e) => Err(format!("failed to lock key {key:?}: {e}")),
        },
        "unlock" => match dc.kv.get(key) {
            Some(e) if e.session.as_deref() == Some(op.session.as_str()) => {
                dc.set(key, op.value.clone(), op.flags, index);
                dc.kv.get_mut(key).unwrap().session = None;
                Ok(entry(dc, false))
            }
            _ => Err(format!(
                "failed to unlock key {key:?}, lock isn't held, or is held by another session"
            )),
        },
        "get" => match modify {
            Some(_) => Ok(entry(dc, true)),
            None => Err(format!("key {key:?} doesn't exist")),
        },
        "get-tree" => Ok(dc
            .list(key)
            .into_iter()
            .map(|(k, e)| e.to_json(k, true))
            .collect()),
        "check-index" => match modify {
            None => Err(format!("failed to check index, key {key:?} doesn't exist")),
            Some(m) if m != op.index => Err(format!(
                "failed index check for key {key:?}, current modify index {m} != {}",
                op.index
            )),
            Some(_) => Ok(entry(dc, false)),
        },
        "check-session" => match dc.kv.get(key) {
            None => Err(format!(
                "failed session check for key {key:?}, key doesn't exist"
            )),
            Some(e) if e.session.as_deref() != Some(op.session.as_str()) => Err(format!(
                "failed session check for key {key:?}, current session {:?} != {:?}",
                e.session.clone().unwrap_or_default(),
                op.session
            )),
            Some(_) => Ok(entry(dc, false)),
        },
        "check-not-exists" => match modify {
            Some(_) => Err(format!("key {key:?} exists")),
            None => Ok(Vec::new()),
        },
        "delete" => {
            dc.delete(key, index);
            Ok(Vec::new())
        }
        "delete-cas" => {
            if op.index == 0 || modify != Some(op.index) {
                return Err(format!("failed to delete key {key:?}, index is stale"));
            }
            dc.delete(key, index);
            Ok(Vec::new())
        }
        "delete-tree" => {
            dc.delete_tree(key, index);
            Ok(Vec::new())
        }
        verb => Err(format!("unknown KV verb {verb:?}")),
    }
}

fn txn_errors(errors: &[(usize, String)]) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|(i, what)| json!({"OpIndex": i, "What": what}))
            .collect(),
    )
}

fn txn(ctx: &Ctx) -> Answer {
    let (max_value, max_len) = {
        let state = ctx.shared.state.lock().unwrap();
        let c = &state.config;
        (
            c.kv_max_value_size,
            c.txn_max_req_len.max(c.kv_max_value_size),
        )
    };
    if ctx.r.body.len() > max_len {
        return Err(Response::text(
            413,
            &format!("Request body too large, max size: {max_len} bytes"),
        ));
    }
    let ops = decode_ops(&ctx.r.body, max_value)?;
    let writes = ops.iter().filter(|o| o.is_write()).count();
    let mode = if writes > 0 {
        Mode::Leader
    } else {
        ctx.mode()?
    };
    ctx.need_leader(mode)?;
    // preCheck: writes and checks the token may not make fail as op errors.
    let denied: Vec<(usize, String)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| {
            let check = match op.verb.as_str() {
                "get" | "get-tree" => Ok(()),
                "check-index" | "check-session" => {
                    ctx.who.allow(Resource::Key, &op.key, Access::Read)
                }
                "delete-tree" => ctx.who.allow_write_prefix(&op.key),
                _ => ctx.who.allow(Resource::Key, &op.key, Access::Write),
            };
            check.err().map(|what| (i, what))
        })
        .collect();
    let mut state = ctx.lock();
    let read_meta = |state: &State, body: Value, status: u16| {
        let (known, last) = match state.leader_lost {
            None => (true, 0u128),
            Some(since) => (false, since.elapsed().as_millis()),
        };
        let mut body = body;
        body["Index"] = json!(0);
        body["LastContact"] = json!(last as u64 * 1_000_000);
        body["KnownLeader"] = json!(known);
        Response::json(status, &body)
            .with("X-Consul-Knownleader", known)
            .with("X-Consul-Lastcontact", last)
    };
    if !denied.is_empty() {
        let body = json!({"Results": null, "Errors": txn_errors(&denied)});
        return Err(if writes == 0 {
            read_meta(&state, body, 409)
        } else {
            Response::json(409, &body)
        });
    }
    let local = ctx.dc == state.local_dc();
    if writes == 0 && mode == Mode::Consistent && local && state.consistent_not_ready {
        return Err(Response::text(
            500,
            "rpc error making call: Not ready to serve consistent reads",
        ));
    }
    if writes == 0 && mode != Mode::Consistent && local {
        if let Some((old, left)) = &mut state.lagging {
            let mut scratch = old.clone();
            *left -= 1;
            if *left == 0 {
                state.lagging = None;
            }
            let index = scratch.index;
            let results: Vec<Value> = ops
                .iter()
                .flat_map(|op| run_op(&mut scratch, op, index).unwrap_or_default())
                .map(|e| json!({ "KV": e }))
                .collect();
            let body = json!({"Results": results, "Errors": null});
            return Ok(read_meta(&state, body, 200));
        }
    }
    let dc = state.dcs.get_mut(&ctx.dc).unwrap();
    let mut scratch = dc.clone();
    let index = if writes > 0 {
        dc.next_index()
    } else {
        dc.index
    };
    scratch.index = dc.index;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match run_op(&mut scratch, op, index) {
            Ok(entries) => results.extend(
                entries
                    .into_iter()
                    // Results the token may not read are left out.
                    .filter(|e| {
                        let key = e["Key"].as_str().unwrap_or("");
                        ctx.who.allow(Resource::Key, key, Access::Read).is_ok()
                    })
                    .map(|e| json!({ "KV": e })),
            ),
            Err(what) => errors.push((i, what)),
        }
    }
    let status = if errors.is_empty() { 200 } else { 409 };
    let body = if errors.is_empty() {
        json!({"Results": results, "Errors": null})
    } else {
        json!({"Results": null, "Errors": txn_errors(&errors)})
    };
    if writes == 0 {
        return Ok(read_meta(&state, body, status));
    }
    if errors.is_empty() {
        *dc = scratch;
        ctx.notify();
    }
    Ok(Response::json(status, &body))
}

fn session_create(ctx: &Ctx) -> Answer {
    let body: Value = if ctx.r.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&ctx.r.body)
            .map_err(|e| Response::text(400, &format!("Request decode failed: {e}")))?
    };
    let text = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (ttl_min, node) = {
        let state = ctx.shared.state.lock().unwrap();
        (state.config.session_ttl_min, state.config.node.clone())
    };
    let node = Some(text("Node")).filter(|n| !n.is_empty()).unwrap_or(node);
    ctx.who
        .allow(Resource::Session, &node, Access::Write)
        .map_err(forbidden)?;
    let behavior = match text("Behavior").as_str() {
        "" | "release" => Behavior::Release,
        "delete" => Behavior::Delete,
        other => {
            return Err(Response::text(
                500,
                &format!("Invalid Behavior setting '{other}'"),
            ))
        }
    };
    let ttl_text = text("TTL");
    let ttl = match ttl_text.as_str() {
        "" => None,
        t => Some(duration::parse(t).ok_or_else(|| {
            Response::text(
                400,
                &format!("Request decode failed: time: invalid duration {t:?}"),
            )
        })?),
    }
    .filter(|d| !d.is_zero());
    if let Some(ttl) = ttl {
        if ttl < ttl_min || ttl > SESSION_TTL_MAX {
            return Err(Response::text(
                500,
                &format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    ttl.as_nanos(),
                    duration::format(ttl_min),
                    duration::format(SESSION_TTL_MAX)
                ),
            ));
        }
    }
    // A number below 1000 means seconds (Consul's FixupLockDelay).
    let lock_delay = match body.get("LockDelay") {
        None | Some(Value::Null) => Duration::from_secs(15),
        Some(Value::Number(n)) => match n.as_u64().unwrap_or(0) {
            n if n < 1000 => Duration::from_secs(n),
            n => Duration::from_nanos(n),
        },
        Some(Value::String(s)) => duration::parse(s).ok_or_else(|| {
            Response::text(400, &format!("Request decode failed: bad LockDelay {s:?}"))
        })?,
        Some(_) => return Err(Response::text(400, "Request decode failed: bad LockDelay")),
    };
    ctx.need_leader(Mode::Leader)?;
    let mut state = ctx.lock();
    let dc = state.dcs.get_mut(&ctx.dc).unwrap();
    let create_index = dc.next_index();
    let mut session = Session {
        id: uuid(),
        name: text("Name"),
        node,
        ttl_text,
        ttl,
        behavior,
        lock_delay,
        create_index,
        expires: None,
    };
    session.renew(Instant::now());
    let id = session.id.clone();
    dc.sessions.insert(id.clone(), session);
    Ok(Response::json(200, &json!({ "ID": id })))
}

fn session_destroy(ctx: &Ctx, id: &str) -> Answer {
    let node = {
        let state = ctx.shared.state.lock().unwrap();
        state.dcs[&ctx.dc]
            .sessions
            .get(id)
            .map_or_else(|| state.config.node.clone(), |s| s.node.clone())
    };
    ctx.who
        .allow(Resource::Session, &node, Access::Write)
        .map_err(forbidden)?;
    ctx.need_leader(Mode::Leader)?;
    let mut state = ctx.lock();
    let dc = state.dcs.get_mut(&ctx.dc).unwrap();
    if dc.invalidate(id, Instant::now()) {
        ctx.notify();
    }
    Ok(Response::json(200, &json!(true)))
}

fn session_renew(ctx: &Ctx, id: &str) -> Answer {
    ctx.need_leader(Mode::Leader)?;
    let mut state = ctx.lock();
    let dc = state.dcs.get_mut(&ctx.dc).unwrap();
    let Some(session) = dc.sessions.get_mut(id) else {
        return Err(Response::text(404, &format!("Session id '{id}' not found")));
    };
    ctx.who
        .allow(Resource::Session, &session.node, Access::Write)
        .map_err(forbidden)?;
    session.renew(Instant::now());
    Ok(Response::json(200, &json!([session.to_json()])))
}

fn session_read(ctx: &Ctx, id: Option<&str>) -> Answer {
    let mode = ctx.mode()?;
    ctx.need_leader(mode)?;
    let state = ctx.lock();
    let dc = &state.dcs[&ctx.dc];
    let sessions: Vec<Value> = dc
        .sessions
        .values()
        .filter(|s| id.is_none_or(|id| s.id == id))
        .filter(|s| {
            ctx.who
                .allow(Resource::Session, &s.node, Access::Read)
                .is_ok()
        })
        .map(Session::to_json)
        .collect();
    let response = Response::json(200, &Value::Array(sessions));
    Ok(ctx.meta(&state, response, dc.index, mode))
}

fn event_fire(ctx: &Ctx, name: &str) -> Answer {
    if name.is_empty() {
        return Err(Response::text(400, "Missing name"));
    }
    ctx.who
        .allow(Resource::Event, name, Access::Write)
        .map_err(forbidden)?;
    let mut state = ctx.lock();
    let dc = state.dcs.get_mut(&ctx.dc).unwrap();
    let param = |n: &str| ctx.r.param(n).unwrap_or("").to_string();
    let event = Event {
        id: uuid(),
        name: name.to_string(),
        payload: ctx.r.body.clone(),
        node_filter: param("node"),
        service_filter: param("service"),
        tag_filter: param("tag"),
        ltime: dc.events.last().map_or(1, |e| e.ltime + 1),
    };
    // The answer shows Payload null and LTime 0, as Consul's does.
    let mut answer = event.to_json(false);
    answer["LTime"] = json!(0);
    dc.events.push(event);
    if dc.events.len() > MAX_EVENTS {
        dc.events.remove(0);
    }
    Ok(Response::json(200, &answer))
}

/// Consul's `IDToIndex`: the event list's index is a hash of the newest ID.
fn id_to_index(id: &str) -> u64 {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let part = |range: std::ops::Range<usize>| u64::from_str_radix(&hex[range], 16).unwrap_or(0);
    part(0..16) ^ part(16..32)
}

fn event_list(ctx: &Ctx) -> Answer {
    let state = ctx.lock();
    let dc = &state.dcs[&ctx.dc];
    let name = ctx.r.param("name").filter(|n| !n.is_empty());
    let events: Vec<&Event> = dc
        .events
        .iter()
        .filter(|e| name.is_none_or(|n| e.name == n))
        .filter(|e| {
            ctx.who
                .allow(Resource::Event, &e.name, Access::Read)
                .is_ok()
        })
        .collect();
    let index = events.last().map_or(1, |e| id_to_index(&e.id));
    let body = Value::Array(events.iter().map(|e| e.to_json(true)).collect());
    Ok(Response::json(200, &body).with("X-Consul-Index", index))
}
