//! The Consul lock: a session with a TTL that acquires the lock key, the
//! thread that renews it, and the session calls both make.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;

use super::client::{Client, Kind, Method};
use super::keys::{encode, entry_of, kv_path};
use super::ConsulStore;
use crate::clock::HumanDuration;
use crate::error::{Error, Result};
use crate::store::HeldLock;

/// Consul's default `session_ttl_min`: shorter lock TTLs are raised to it.
const MIN_SESSION_TTL: Duration = Duration::from_secs(10);

impl ConsulStore {
    /// A session (TTL at least Consul's 10 s minimum, behavior `delete`, no
    /// lock-delay) and `?acquire=` of `name` with `holder` as its value. A
    /// thread renews the session every third of its TTL; dropping the lock
    /// destroys the session, which deletes the key. A crashed holder stops
    /// renewing, and Consul deletes the key when the session expires.
    pub(super) fn session_lock(
        &self,
        name: &str,
        ttl: Duration,
        holder: &str,
    ) -> Result<Box<dyn HeldLock>> {
        let client = &self.client;
        let ttl = Duration::from_secs(ttl.max(MIN_SESSION_TTL).as_secs_f64().ceil() as u64);
        let create = json!({
            "Name": format!("convergent {name}"),
            "TTL": format!("{}s", ttl.as_secs()),
            "Behavior": "delete",
            "LockDelay": "0s",
        });
        let url = client.url("/v1/session/create", &[], false);
        let body = create.to_string();
        let reply = client.call(Method::Put, &url, Some(body.as_bytes()), Kind::Write, name)?;
        if reply.status != 200 {
            return Err(client.refused(&reply, name));
        }
        let id = client.json(&reply)?["ID"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| client.unavailable("Consul created a session without an ID"))?
            .to_string();
        let fail = |e: Error| {
            client.destroy_session(&id);
            Err(e)
        };
        let url = client.url(
            &kv_path(name)?,
            &[format!("acquire={}", encode(&id, false))],
            false,
        );
        let acquired = match client.call(
            Method::Put,
            &url,
            Some(holder.as_bytes()),
            Kind::Write,
            name,
        ) {
            Ok(reply) if reply.status == 200 => reply.body.trim() == "true",
            Ok(reply) => return fail(client.refused(&reply, name)),
            // The outcome is unknown: whether the key carries our session says.
            Err(e) if e.is_unavailable() => match client.lock_state(name) {
                Ok(Some((_, Some(session)))) if session == id => true,
                Ok(_) => return fail(e),
                Err(other) => return fail(other),
            },
            Err(e) => return fail(e),
        };
        if !acquired {
            let holder = match client.lock_state(name) {
                Ok(Some((value, Some(_)))) if !value.is_empty() => value,
                Ok(Some((_, Some(session)))) => format!("Consul session {session}"),
                Ok(_) => "nobody any more (it was released meanwhile); try again".into(),
                Err(e) => return fail(e),
            };
            return fail(Error::LockHeld {
                name: name.to_string(),
                holder,
            });
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let (client, id, lost) = (Arc::clone(client), id.clone(), Arc::clone(&lost));
            thread::spawn(move || {
                let mut period = ttl / 3;
                let mut renewed = Instant::now();
                loop {
                    match stopped.recv_timeout(period) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    match client.renew(&id) {
                        Ok(Some(granted)) => {
                            renewed = Instant::now();
                            // Consul may grant more than asked (load shedding).
                            period = granted.max(ttl) / 3;
                        }
                        Ok(None) => break,
                        Err(_) if renewed.elapsed() >= ttl => break,
                        Err(_) => period = Duration::from_secs(1),
                    }
                }
                lost.store(true, Ordering::SeqCst);
            })
        };
        Ok(Box::new(ConsulLock {
            name: name.to_string(),
            client: Arc::clone(client),
            session: id,
            lost,
            stop: Some(stop),
            renewer: Some(renewer),
        }))
    }
}

/// A held lock: a key acquired by a session this process keeps renewing.
struct ConsulLock {
    name: String,
    client: Arc<Client>,
    session: String,
    lost: Arc<AtomicBool>,
    /// Dropped to wake and stop the renewer.
    stop: Option<Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl HeldLock for ConsulLock {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::lock_lost(
                &self.name,
                "its Consul session expired or was destroyed before it could be renewed",
            ));
        }
        Ok(())
    }
}

impl Drop for ConsulLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        self.client.destroy_session(&self.session);
    }
}

impl Client {
    /// The lock key as it is now: its value and the session holding it.
    fn lock_state(&self, name: &str) -> Result<Option<(String, Option<String>)>> {
        let url = self.url(&kv_path(name)?, &[], true);
        let reply = self.call(Method::Get, &url, None, Kind::Read, name)?;
        match reply.status {
            404 => Ok(None),
            200 => {
                let body = self.json(&reply)?;
                let kv = &body[0];
                let entry = entry_of(kv)?;
                Ok(Some((
                    String::from_utf8_lossy(&entry.value).into_owned(),
                    kv["Session"].as_str().map(str::to_string),
                )))
            }
            _ => Err(self.refused(&reply, name)),
        }
    }

    /// Renews a session: the TTL Consul granted, or `None` when the session
    /// is gone.
    fn renew(&self, id: &str) -> Result<Option<Duration>> {
        let url = self.url(
            &format!("/v1/session/renew/{}", encode(id, false)),
            &[],
            false,
        );
        let reply = self.call(Method::Put, &url, None, Kind::Idempotent, "(lock session)")?;
        match reply.status {
            404 => Ok(None),
            200 => {
                let body = self.json(&reply)?;
                let granted = body[0]["TTL"]
                    .as_str()
                    .and_then(|t| t.parse::<HumanDuration>().ok())
                    .map(|d| d.0)
                    .unwrap_or(Duration::ZERO);
                Ok(Some(granted))
            }
            _ => Err(self.refused(&reply, "(lock session)")),
        }
    }

    /// Destroys a session; with behavior `delete`, Consul deletes the keys
    /// it holds. Idempotent: an unknown session is fine.
    fn destroy_session(&self, id: &str) {
        let url = self.url(
            &format!("/v1/session/destroy/{}", encode(id, false)),
            &[],
            false,
        );
        let _ = self.call(Method::Put, &url, None, Kind::Idempotent, "(lock session)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_from_renewals_parse() {
        for (text, secs) in [("10s", 10), ("1m0s", 60), ("1h0m0s", 3600)] {
            assert_eq!(text.parse::<HumanDuration>().unwrap().0.as_secs(), secs);
        }
    }
}
