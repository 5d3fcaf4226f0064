//! Running checks: all at once, each within its own timeout, so a node's
//! health takes as long as its slowest check and never longer than its
//! longest timeout.

use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{bounded_output, Check, CheckResult, Probe, MAX_OUTPUT};
use crate::store::http::{agent, Bound, TlsSettings};

/// Runs every check at once and returns their results in the order given.
pub fn run_checks(checks: &[Check]) -> Vec<CheckResult> {
    let (tx, rx) = mpsc::channel();
    for (i, check) in checks.iter().enumerate() {
        let (tx, check) = (tx.clone(), check.clone());
        thread::spawn(move || {
            let started = Instant::now();
            let (passed, output) = match probe(&check) {
                Ok(out) => (true, out),
                Err(out) => (false, out),
            };
            let _ = tx.send((
                i,
                CheckResult {
                    name: check.name.clone(),
                    source: check.source,
                    passed,
                    output: bounded_output(&output),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                },
            ));
        });
    }
    drop(tx);
    let mut results: Vec<(usize, CheckResult)> = rx.iter().collect();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Ok with what the check said, or Err with why it failed.
fn probe(check: &Check) -> Result<String, String> {
    match &check.probe {
        Probe::Http { url, expect_status } => http(url, *expect_status, check.timeout),
        Probe::Tcp { address } => tcp(address, check.timeout),
        Probe::Command { argv } => command(argv, check.timeout),
    }
}

fn http(url: &str, expect: Option<u16>, timeout: Duration) -> Result<String, String> {
    let tls = TlsSettings {
        verify: true,
        ..TlsSettings::default()
    };
    let agent = agent(Bound::Whole(timeout), &tls).map_err(|e| e.to_string())?;
    let response = agent
        .get(url)
        .call()
        .map_err(|e| format!("GET failed: {e}"))?;
    let status = response.status().as_u16();
    let ok = match expect {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    // The status only: a body may hold anything, and it would be stored.
    let said = format!("HTTP {status}");
    if ok {
        Ok(said)
    } else {
        Err(match expect {
            Some(want) => format!("{said}, expected {want}"),
            None => format!("{said}, expected 2xx"),
        })
    }
}

fn tcp(address: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .collect();
    let mut last = format!("{address} resolves to no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "timed out after {}s connecting to {address}",
                timeout.as_secs_f32()
            ));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(_) => return Ok(format!("connected to {addr}")),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// Runs the command with its output in a temporary file (read back bounded),
/// killed at its timeout.
fn command(argv: &[String], timeout: Duration) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("the command is empty")?;
    let mut out =
        tempfile::tempfile().map_err(|e| format!("no temporary file for the output: {e}"))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let stdout = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{program} timed out after {}",
                    crate::clock::HumanDuration(timeout)
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(format!("{program}: {e}")),
        }
    };
    let mut said = Vec::new();
    let _ = out.seek(SeekFrom::Start(0));
    let _ = out.take(4 * MAX_OUTPUT as u64).read_to_end(&mut said);
    let said = String::from_utf8_lossy(&said).trim().to_string();
    match status {
        Ok(s) if s.success() => Ok(said),
        Ok(s) => Err(if said.is_empty() {
            format!("{program} exited with {s}")
        } else {
            format!("{program} exited with {s}: {said}")
        }),
        Err(why) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckSource;
    use std::io::Write;
    use std::net::TcpListener;

    fn check(name: &str, probe: Probe, timeout_ms: u64) -> Check {
        Check {
            name: name.into(),
            source: CheckSource::Recipe,
            probe,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn argv(a: &[&str]) -> Probe {
        Probe::Command {
            argv: a.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn commands_pass_fail_time_out_and_their_output_is_bounded() {
        let started = Instant::now();
        let r = run_checks(&[
            check("ok", argv(&["sh", "-c", "echo fine"]), 2000),
            check("bad", argv(&["sh", "-c", "echo broken >&2; exit 3"]), 2000),
            check("slow", argv(&["sleep", "10"]), 300),
            check("loud", argv(&["sh", "-c", "yes | head -c 100000"]), 2000),
            check("missing", argv(&["no-such-program-xyz"]), 2000),
        ]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "checks run at once, bounded"
        );
        assert!(r[0].passed && r[0].output == "fine", "{:?}", r[0]);
        assert!(!r[1].passed && r[1].output.contains("broken"), "{:?}", r[1]);
        assert!(
            !r[2].passed && r[2].output.contains("timed out"),
            "{:?}",
            r[2]
        );
        assert!(r[3].passed && r[3].output.chars().count() <= MAX_OUTPUT + 1);
        assert!(
            !r[4].passed && r[4].output.contains("cannot start"),
            "{:?}",
            r[4]
        );
    }

    #[test]
    fn tcp_and_http_checks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            for (i, stream) in listener.incoming().take(3).enumerate() {
                let mut s = stream.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let status = if i == 1 {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret"
                );
            }
        });
        let url = format!("http://127.0.0.1:{port}/health");
        let r = run_checks(&[check(
            "port",
            Probe::Tcp {
                address: format!("127.0.0.1:{port}"),
            },
            2000,
        )]);
        assert!(r[0].passed, "{:?}", r[0]);
        let http = |expect| {
            check(
                "web",
                Probe::Http {
                    url: url.clone(),
                    expect_status: expect,
                },
                2000,
            )
        };
        let r = run_checks(&[http(None)]);
        assert!(r[0].passed && r[0].output == "HTTP 200", "{:?}", r[0]);
        let r = run_checks(&[http(None)]);
        assert!(
            !r[0].passed && r[0].output.contains("503") && !r[0].output.contains("secret"),
            "{:?}",
            r[0]
        );
        server.join().unwrap();
        // Nothing listens any more.
        let r = run_checks(&[check(
            "port",
            Probe::Tcp {
                address: format!("127.0.0.1:{port}"),
            },
            500,
        )]);
        assert!(!r[0].passed, "{:?}", r[0]);
    }
}
