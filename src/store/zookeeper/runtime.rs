//! The thread the async ZooKeeper client runs on: a single-threaded
//! executor (`futures`' `LocalPool`), started when a `zk://` store is
//! opened and stopped when the last of the store, its locks and its feeds
//! is dropped. Callers stay blocking: they hand it jobs and wait, bounded.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::executor::{LocalPool, LocalSpawner};
use futures::future::FutureObj;
use futures::task::Spawn as _;
use futures::StreamExt;
use zookeeper_client as zk;

/// How long closing sessions may take when the store is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A job for the runtime thread.
type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The thread that runs the client's tasks (its sessions, our watch and
/// lock tasks) on a single-threaded executor.
pub(super) struct Runtime {
    jobs: mpsc::UnboundedSender<Job>,
    thread: Option<JoinHandle<()>>,
    /// Every session opened, to let each close when the runtime stops.
    pub(super) sessions: Arc<Mutex<Vec<zk::StateWatcher>>>,
}

/// Puts the client's own tasks (`asyncs::spawn`) on our executor.
struct PoolSpawner(LocalSpawner);

impl spawns_core::Spawn for PoolSpawner {
    fn spawn(&self, task: spawns_core::Task) {
        // Fails only while the executor shuts down, when the task is moot.
        let _ = self.0.spawn_obj(FutureObj::new(task.future));
    }
}

impl Runtime {
    pub(super) fn start() -> std::io::Result<Runtime> {
        let (jobs, mut incoming) = mpsc::unbounded::<Job>();
        let thread = thread::Builder::new()
            .name("zookeeper".into())
            .spawn(move || {
                let mut pool = LocalPool::new();
                let spawner = PoolSpawner(pool.spawner());
                let _scope = spawns_core::enter(&spawner);
                pool.run_until(async {
                    while let Some(job) = incoming.next().await {
                        let _ = spawner.0.spawn_obj(FutureObj::new(job));
                    }
                });
            })?;
        Ok(Runtime {
            jobs,
            thread: Some(thread),
            sessions: Arc::default(),
        })
    }

    /// Runs `job` on the runtime thread and waits for its result until
    /// `deadline`; `None` when it is not done by then (it goes on, unheard).
    pub(super) fn run<T: Send + 'static>(
        &self,
        deadline: Instant,
        job: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.spawn(async move {
            let _ = tx.send(job.await);
        });
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }

    /// Starts `job` on the runtime thread.
    pub(super) fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let _ = self.jobs.unbounded_send(Box::pin(job));
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Sessions whose clients are gone send their close now: give them a
        // moment, so the server forgets them (and their ephemeral znodes)
        // at once rather than at session expiry.
        let sessions = std::mem::take(&mut *self.sessions.lock().expect("sessions lock"));
        if !sessions.is_empty() {
            self.run(Instant::now() + CLOSE_WAIT, async move {
                for mut session in sessions {
                    while matches!(
                        session.peek_state(),
                        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
                    ) {
                        session.changed().await;
                    }
                }
            });
        }
        self.jobs.close_channel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
