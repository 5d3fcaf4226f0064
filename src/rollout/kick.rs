//! Kicking newly released nodes, so they converge now rather than on their
//! own chef-client schedule: a command per node (`ssh {node} chef-client`),
//! or a Consul event. Best effort: failures are reported, never fatal.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::plan::Kick;
use crate::store::Store;

/// Commands run at once when the plan does not say.
const DEFAULT_CONCURRENCY: u32 = 10;
/// Bound on each command when the plan does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Kicks `nodes` of `cluster`; returns one line per failure.
pub fn kick(store: &dyn Store, kick: &Kick, cluster: &str, nodes: &[String]) -> Vec<String> {
    if nodes.is_empty() {
        return Vec::new();
    }
    if let Some(event) = &kick.consul_event {
        // One event per batch; agents that listen re-read the view.
        return match store.fire_event(event, cluster.as_bytes()) {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!("event {event}: {e}")],
        };
    }
    let Some(template) = &kick.command else {
        return Vec::new();
    };
    let concurrency = kick.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1) as usize;
    let timeout = kick.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
    let mut failures = Vec::new();
    for chunk in nodes.chunks(concurrency) {
        let (tx, rx) = mpsc::channel();
        for node in chunk {
            let argv = command_for(template, cluster, node);
            let (tx, node) = (tx.clone(), node.clone());
            thread::spawn(move || {
                let _ = tx.send(
                    run(&argv, timeout)
                        .err()
                        .map(|why| format!("{node}: {why}")),
                );
            });
        }
        drop(tx);
        failures.extend(rx.iter().flatten());
    }
    failures.sort();
    failures
}

/// The command for one node: `{node}` and `{cluster}` replaced inside each
/// argument, each argument staying one argument (no shell unless the
/// template asks for one, e.g. `[sh, -c, "..."]`). One pass over the
/// template: a substituted value is never searched for placeholders again.
pub fn command_for(template: &[String], cluster: &str, node: &str) -> Vec<String> {
    template
        .iter()
        .map(|arg| substitute(arg, cluster, node))
        .collect()
}

fn substitute(arg: &str, cluster: &str, node: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("{node}") {
            out.push_str(node);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{cluster}") {
            out.push_str(cluster);
            rest = after;
        } else {
            out.push('{');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

fn run(argv: &[String], timeout: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("the command is empty")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{program} exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} timed out after {}s", timeout.as_secs()));
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{program}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileStore;

    fn kick_of(command: &[&str], timeout: Option<&str>) -> Kick {
        Kick {
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            consul_event: None,
            concurrency: Some(2),
            timeout: timeout.map(|t| t.parse().unwrap()),
        }
    }

    #[test]
    fn placeholders_stay_inside_their_argument() {
        let template: Vec<String> = ["ssh", "{node}", "chef-client -o 'role[{cluster}]'"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            command_for(&template, "web", "web 01; rm -rf /"),
            ["ssh", "web 01; rm -rf /", "chef-client -o 'role[web]'"]
        );
    }

    #[test]
    fn placeholders_are_substituted_once() {
        let template: Vec<String> = ["echo", "{node}@{cluster}", "{{node}}", "{x}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // A value holding a placeholder stays as it is (names cannot hold
        // braces any more, but the template must not rely on that).
        assert_eq!(
            command_for(&template, "{node}", "{cluster}"),
            ["echo", "{cluster}@{node}", "{{cluster}}", "{x}"]
        );
    }

    #[test]
    fn failures_and_timeouts_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("v.yml"), Duration::from_secs(1));
        let nodes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert!(kick(&store, &kick_of(&["true"], None), "web", &nodes).is_empty());
        let failures = kick(
            &store,
            &kick_of(&["sh", "-c", "test {node} != b"], None),
            "web",
            &nodes,
        );
        assert_eq!(failures.len(), 1);
        assert!(failures[0].starts_with("b: sh exited"), "{failures:?}");
        let failures = kick(
            &store,
            &kick_of(&["sleep", "5"], Some("200ms")),
            "web",
            &nodes[..1],
        );
        assert!(failures[0].contains("timed out"), "{failures:?}");
        let failures = kick(
            &store,
            &kick_of(&["no-such-command-xyz"], None),
            "web",
            &nodes[..1],
        );
        assert!(failures[0].contains("cannot start"), "{failures:?}");
    }

    #[test]
    fn an_event_needs_a_consul_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("v.yml"), Duration::from_secs(1));
        let event = Kick {
            command: None,
            consul_event: Some("converge".into()),
            concurrency: None,
            timeout: None,
        };
        let failures = kick(&store, &event, "web", &["a".to_string()]);
        assert!(failures[0].contains("needs a Consul store"), "{failures:?}");
    }
}
