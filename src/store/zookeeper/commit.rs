//! Committing a transaction: read the znodes it touches, check its
//! compares, and send the plan (see `plan.rs`) as one guarded multi,
//! planning again when a guard fails.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use async_io::Timer;
use zookeeper_client as zk;

use super::connection::{transient, Connection, Fault, RETRY_PAUSE};
use super::plan::{ancestors, check_size, plan, Node, Planned};
use super::read::Read;
use crate::error::Result;
use crate::store::{Compare, Op, Txn, TxnOutcome};

/// How often a commit re-plans when znodes change under it before it gives
/// the conflict back to the caller (which re-reads).
const PLAN_ATTEMPTS: u32 = 5;

impl Connection {
    /// The znodes a transaction touches (`keys`) and every directory above
    /// them (the rest of `paths`), as they are now (`None`: absent). A
    /// directory this session may not read (writes need no read access to
    /// the directories above) is taken as there, and never removed.
    async fn stat_all(
        &self,
        client: &zk::Client,
        paths: &BTreeSet<String>,
        keys: &BTreeSet<String>,
    ) -> Result<HashMap<String, Option<Node>>, Fault> {
        let ops: Vec<(Read, String)> = paths.iter().map(|p| (Read::Data, p.clone())).collect();
        let results = self.multi_read(client, &ops).await?;
        let mut nodes = HashMap::new();
        for (path, result) in paths.iter().zip(results) {
            let node = match result {
                zk::MultiReadResult::Data { data, stat } => Some(Node {
                    version: stat.version,
                    has_data: !data.is_empty(),
                    children: stat.num_children,
                }),
                zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => None,
                zk::MultiReadResult::Error {
                    err: zk::Error::NoAuth,
                } if !keys.contains(path) => Some(Node {
                    version: 0,
                    has_data: true,
                    children: i32::MAX,
                }),
                zk::MultiReadResult::Error { err } => {
                    return Err(Fault::new(err, self.key_of(path)))
                }
                _ => None,
            };
            nodes.insert(path.clone(), node);
        }
        Ok(nodes)
    }

    /// Reads what the transaction touches, checks its compares, and applies
    /// it as one multi whose checks guard everything the plan assumed. A
    /// multi failing on a guard (a znode changed in between) is planned
    /// again from a fresh read.
    pub(super) async fn commit(&self, txn: &Txn, deadline: Instant) -> Result<TxnOutcome> {
        let (mut paths, mut keys) = (BTreeSet::new(), BTreeSet::new());
        for key in txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Version { key, .. } | Compare::Absent { key } => key,
            })
            .chain(txn.ops.iter().map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            }))
        {
            let path = self.path(key);
            paths.extend(ancestors(&path).map(str::to_string));
            paths.insert(path.clone());
            keys.insert(path);
        }
        for _ in 0..PLAN_ATTEMPTS {
            let (client, nodes) = loop {
                let read = async {
                    let client = self
                        .client()
                        .await
                        .map_err(|e| Fault::new(e, "(session)"))?;
                    let nodes = self.stat_all(&client, &paths, &keys).await?;
                    Ok::<_, Fault>((client, nodes))
                };
                match read.await {
                    Ok(read) => break read,
                    Err(f) if transient(&f.err) && Instant::now() + RETRY_PAUSE < deadline => {
                        Timer::after(RETRY_PAUSE).await;
                    }
                    Err(f) => return Err(self.error(f)),
                }
            };
            let holds = txn.compares.iter().all(|c| match c {
                Compare::Version { key, version } => nodes
                    .get(&self.path(key))
                    .and_then(Option::as_ref)
                    .is_some_and(|n| n.has_data && n.version as u64 == *version),
                Compare::Absent { key } => !nodes
                    .get(&self.path(key))
                    .and_then(Option::as_ref)
                    .is_some_and(|n| n.has_data),
            });
            if !holds {
                return Ok(TxnOutcome::Conflict);
            }
            if txn.ops.is_empty() {
                return Ok(TxnOutcome::Committed { revision: None });
            }
            let plan = plan(txn, &self.chroot, &nodes);
            check_size(&plan, &self.chroot)?;
            let mut writer = client.new_multi_writer();
            let acls = self.acls();
            for op in &plan {
                let added = match op {
                    Planned::Check { path, version } => writer.add_check_version(path, *version),
                    Planned::Create { path, data } => {
                        writer.add_create(path, data, &zk::CreateMode::Persistent.with_acls(acls))
                    }
                    Planned::SetData {
                        path,
                        data,
                        version,
                    } => writer.add_set_data(path, data, Some(*version)),
                    Planned::Delete { path, version } => writer.add_delete(path, Some(*version)),
                };
                added.map_err(|e| self.error(Fault::new(e, self.key_of(op.path()))))?;
            }
            match writer.commit().await {
                Ok(results) => {
                    let revision = results
                        .iter()
                        .filter_map(|r| match r {
                            zk::MultiWriteResult::SetData { stat }
                            | zk::MultiWriteResult::Create { stat, .. } => Some(stat.mzxid),
                            _ => None,
                        })
                        .max()
                        .filter(|z| *z > 0)
                        .map(|z| z as u64);
                    return Ok(TxnOutcome::Committed { revision });
                }
                // A guard failed: something changed since the plan's read.
                Err(zk::MultiWriteError::OperationFailed {
                    source:
                        zk::Error::BadVersion
                        | zk::Error::NodeExists
                        | zk::Error::NoNode
                        | zk::Error::NotEmpty,
                    ..
                }) => continue,
                Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                    let key = plan
                        .get(index)
                        .map(|op| self.key_of(op.path()))
                        .unwrap_or_default();
                    return Err(self.error(Fault::new(source, key)));
                }
                Err(zk::MultiWriteError::RequestFailed { source }) if transient(&source) => {
                    return Err(self.unavailable(format!(
                        "{source}; the write may or may not have been applied"
                    )))
                }
                Err(zk::MultiWriteError::RequestFailed { source }) => {
                    let key = plan
                        .first()
                        .map(|op| self.key_of(op.path()))
                        .unwrap_or_default();
                    return Err(self.error(Fault::new(source, key)));
                }
            }
        }
        // The znodes kept changing under us: the caller re-reads and retries.
        Ok(TxnOutcome::Conflict)
    }
}
