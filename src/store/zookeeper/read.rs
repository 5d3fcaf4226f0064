//! Reading trees: level by level, one pipelined multi-read per level,
//! since ZooKeeper has no range reads.

use std::collections::BTreeSet;
use std::time::Instant;

use async_io::Timer;
use zookeeper_client as zk;

use super::connection::{transient, Connection, Fault, RETRY_PAUSE};
use super::plan::ancestors;
use crate::error::Result;
use crate::store::{Entry, Snapshot};

/// Read operations per multi-read request; a level with more is sent as
/// several requests at once (pipelined: still one round trip).
const READ_OPS_PER_REQUEST: usize = 512;

impl Connection {
    /// [`Connection::read_once`], again while the connection is being
    /// re-established, until `deadline`.
    pub(super) async fn read_trees(&self, roots: &[String], deadline: Instant) -> Result<Snapshot> {
        loop {
            match self.read_once(roots).await {
                Ok(snapshot) => return Ok(snapshot),
                Err(f) if transient(&f.err) && Instant::now() + RETRY_PAUSE < deadline => {
                    Timer::after(RETRY_PAUSE).await;
                }
                Err(f) => return Err(self.error(f)),
            }
        }
    }

    /// Reads the trees level by level: the roots' data and children (and
    /// the stat of the directories above them, for the revision) in one
    /// multi-read, then the children found, and so on. Keys stored whole
    /// take one request.
    async fn read_once(&self, roots: &[String]) -> Result<Snapshot, Fault> {
        let client = self
            .client()
            .await
            .map_err(|e| Fault::new(e, "(session)"))?;
        let mut trees: Vec<Vec<Entry>> = vec![Vec::new(); roots.len()];
        let mut revision = 0i64;
        let mut level: Vec<(usize, String)> = roots.iter().cloned().enumerate().collect();
        // The directories above the roots: a deletion below them changes
        // their pzxid, so their stats keep the revision from going back.
        let mut parents: BTreeSet<String> = roots
            .iter()
            .flat_map(|r| {
                let path = self.path(r);
                ancestors(&path).map(str::to_string).collect::<Vec<_>>()
            })
            .collect();
        while !level.is_empty() {
            let mut ops: Vec<(Read, String)> = Vec::with_capacity(level.len() * 2 + parents.len());
            for (_, key) in &level {
                ops.push((Read::Data, self.path(key)));
                ops.push((Read::Children, self.path(key)));
            }
            ops.extend(
                std::mem::take(&mut parents)
                    .into_iter()
                    .map(|p| (Read::Stat, p)),
            );
            let results = self.multi_read(&client, &ops).await?;
            let mut next = Vec::new();
            let mut owners = level.iter().flat_map(|(i, key)| [(*i, key), (*i, key)]);
            for ((read, _), result) in ops.iter().zip(results) {
                let owner = owners.next();
                match result {
                    zk::MultiReadResult::Data { data, stat } => {
                        revision = revision.max(stat.mzxid).max(stat.pzxid);
                        if let (Read::Data, Some((tree, key))) = (read, owner) {
                            if !data.is_empty() {
                                trees[tree].push(Entry {
                                    key: key.clone(),
                                    value: data,
                                    version: stat.version.max(0) as u64,
                                });
                            }
                        }
                    }
                    zk::MultiReadResult::Children { children } => {
                        if let Some((tree, key)) = owner {
                            next.extend(children.into_iter().map(|c| (tree, format!("{key}/{c}"))));
                        }
                    }
                    zk::MultiReadResult::Error { err } => match (read, err, owner) {
                        // Absent (or deleted since the level above was read).
                        (_, zk::Error::NoNode, _) | (Read::Stat, _, _) => {}
                        (_, err, owner) => {
                            let key = owner.map(|(_, k)| k.clone()).unwrap_or_default();
                            return Err(Fault::new(err, key));
                        }
                    },
                    _ => {}
                }
            }
            drop(owners);
            level = next;
        }
        for tree in &mut trees {
            tree.sort_by(|a, b| a.key.cmp(&b.key));
        }
        Ok(Snapshot {
            trees,
            revision: Some(revision.max(0) as u64),
        })
    }

    /// One multi-read per [`READ_OPS_PER_REQUEST`] operations on znode
    /// paths, all sent before the first answer is awaited; the results in
    /// order.
    pub(super) async fn multi_read(
        &self,
        client: &zk::Client,
        ops: &[(Read, String)],
    ) -> Result<Vec<zk::MultiReadResult>, Fault> {
        let mut pending = Vec::new();
        for chunk in ops.chunks(READ_OPS_PER_REQUEST) {
            let mut reader = client.new_multi_reader();
            for (read, path) in chunk {
                match read {
                    Read::Data | Read::Stat => reader.add_get_data(path),
                    Read::Children => reader.add_get_children(path),
                }
                .map_err(|e| Fault::new(e, self.key_of(path)))?;
            }
            let first = chunk
                .first()
                .map(|(_, p)| self.key_of(p))
                .unwrap_or_default();
            pending.push((first, reader.commit()));
        }
        let mut results = Vec::with_capacity(ops.len());
        for (first, answer) in pending {
            results.extend(answer.await.map_err(|e| Fault::new(e, first))?);
        }
        if results.len() != ops.len() {
            return Err(Fault::new(
                zk::Error::UnexpectedError(format!(
                    "asked {} reads, ZooKeeper answered {}",
                    ops.len(),
                    results.len()
                )),
                "(multi-read)",
            ));
        }
        Ok(results)
    }
}

/// What a read operation asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Read {
    /// A key's data and stat.
    Data,
    /// A key's children.
    Children,
    /// Only the stat (for the revision); errors are ignored.
    Stat,
}
