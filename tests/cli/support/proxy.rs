//! A counting TCP proxy on loopback: forwards to a target and counts the
//! HTTP requests and bytes that pass, to prove what a command costs the store.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// Traffic seen by a [`CountingProxy`].
#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
}

/// Forwards `127.0.0.1:PORT` to a target; stops accepting when dropped.
pub struct CountingProxy {
    port: u16,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    /// A proxy to `target` (`host:port`) on a free loopback port.
    pub fn start(target: &str) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (target, c, s) = (target.to_string(), Arc::clone(&counts), Arc::clone(&stop));
        thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Arc::clone(&c),
                    true,
                );
                pump(server, client, Arc::clone(&c), false);
            }
        });
        CountingProxy { port, counts, stop }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// HTTP requests seen so far (request lines starting with a method).
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Bytes sent to and received from the target so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.counts.bytes_up.load(Ordering::SeqCst),
            self.counts.bytes_down.load(Ordering::SeqCst),
        )
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, counts: Arc<Counts>, upstream: bool) {
    thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if upstream {
                counts.bytes_up.fetch_add(n as u64, Ordering::SeqCst);
                // Requests are not pipelined: a chunk that starts with a
                // method is a new request.
                if [&b"POST "[..], b"GET ", b"PUT ", b"DELETE "]
                    .iter()
                    .any(|m| buf[..n].starts_with(m))
                {
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                }
            } else {
                counts.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
