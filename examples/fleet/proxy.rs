//! `fleet proxy`: a counting HTTP proxy on loopback, to measure what a
//! command costs the store: requests, the writes among them, and bytes each
//! way. Requests are parsed (headers, `Content-Length` body) so that each is
//! counted once and classified; responses are passed through as bytes.
//!
//! ```text
//! fleet proxy --listen 127.0.0.1:PORT --to 127.0.0.1:2379 --stats FILE
//! ```
//!
//! A request is a write when it changes the store: an etcd transaction with a
//! put or a delete, or any Consul `PUT`/`DELETE` (KV, transaction, session).
//! The counts are written to `--stats` as JSON whenever they change.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::json;

use super::Options;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    writes: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// Runs `fleet proxy` until killed.
pub fn run(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args, &[])?;
    let listen = options.get("listen").unwrap_or("127.0.0.1:0");
    let target = options.required("to")?.to_string();
    let stats = PathBuf::from(options.required("stats")?);
    let listener = TcpListener::bind(listen).map_err(|e| format!("{listen}: {e}"))?;
    let counts = Arc::new(Counts::default());
    {
        let counts = Arc::clone(&counts);
        thread::spawn(move || write_stats_forever(&stats, &counts));
    }
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(&target) else {
            continue;
        };
        let (c, s) = (client.try_clone(), server.try_clone());
        let (Ok(client_reader), Ok(server_writer)) = (c, s) else {
            continue;
        };
        let up = Arc::clone(&counts);
        thread::spawn(move || forward_requests(client_reader, server_writer, &up));
        let down = Arc::clone(&counts);
        thread::spawn(move || forward_bytes(server, client, &down));
    }
    Ok(())
}

fn write_stats_forever(path: &Path, counts: &Counts) {
    let mut last = String::new();
    loop {
        let doc = json!({
            "requests": counts.requests.load(Ordering::SeqCst),
            "writes": counts.writes.load(Ordering::SeqCst),
            "bytes_up": counts.bytes_up.load(Ordering::SeqCst),
            "bytes_down": counts.bytes_down.load(Ordering::SeqCst),
        })
        .to_string();
        if doc != last {
            let _ = convergent::atomic_file::write(path, doc.as_bytes(), None);
            last = doc;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Forwards the client's requests one by one, counting and classifying each.
fn forward_requests(client: TcpStream, mut server: TcpStream, counts: &Counts) {
    let mut reader = BufReader::new(client);
    loop {
        let mut head = Vec::new();
        let mut content_length = 0usize;
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    let _ = server.shutdown(Shutdown::Write);
                    return;
                }
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if let Some(v) = text.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request_line =
            String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default())
                .to_string();
        counts.requests.fetch_add(1, Ordering::SeqCst);
        if is_write(&request_line, &body) {
            counts.writes.fetch_add(1, Ordering::SeqCst);
        }
        counts
            .bytes_up
            .fetch_add((head.len() + body.len()) as u64, Ordering::SeqCst);
        if server
            .write_all(&head)
            .and_then(|()| server.write_all(&body))
            .is_err()
        {
            return;
        }
    }
}

fn is_write(request_line: &str, body: &[u8]) -> bool {
    let body = String::from_utf8_lossy(body);
    let method = request_line.split(' ').next().unwrap_or_default();
    if request_line.contains(" /v3/kv/txn") {
        body.contains("request_put") || body.contains("request_delete_range")
    } else if request_line.contains(" /v3/kv/put") || request_line.contains(" /v3/kv/deleterange") {
        true
    } else if request_line.contains(" /v1/txn") {
        ["\"set\"", "\"delete", "\"cas\"", "\"lock\"", "\"unlock\""]
            .iter()
            .any(|verb| body.contains(verb))
    } else {
        request_line.contains(" /v1/") && matches!(method, "PUT" | "DELETE")
    }
}

fn forward_bytes(mut from: TcpStream, mut to: TcpStream, counts: &Counts) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                counts.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
