//! Consumer-group coordination, on the shard that owns each group.
//!
//! A group belongs to the shard `hash(group id) % shards`; FindCoordinator names that
//! shard's broker, so a group's connections land on the core that holds its state and no
//! lock or cross-shard hop is needed. A request for a group another shard owns gets
//! NOT_COORDINATOR, and the client looks the coordinator up again.
//!
//! [`group`] is Kafka's classic group state machine (Empty, PreparingRebalance,
//! CompletingRebalance, Stable, Dead). Rebalances complete when every member has rejoined
//! or the rebalance timeout passes; members expire after their session timeout — both
//! driven by timers and notifications, not polling loops.
//!
//! Committed offsets are durable before an OffsetCommit is answered: each shard appends
//! them to `<data-dir>/groups/shard-<k>.log` (length + CRC32C + JSON records, `fdatasync`ed)
//! and replays it on start, then rewrites it with only the live state (compaction).

pub mod group;
pub mod txn;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::cluster::ShardId;
use crate::storage::record_file::RecordFile;
use crate::util::Notify;
use group::Group;

/// A committed offset as stored and served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

/// One record of a shard's group log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GroupRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        committed: Option<Committed>,
    },
    /// The group and all its offsets are gone.
    DeleteGroup { group: String },
    /// An offset committed inside a transaction (TxnOffsetCommit): pending until the
    /// transaction ends.
    TxnOffset {
        group: String,
        producer_id: i64,
        topic: String,
        partition: i32,
        committed: Committed,
    },
    /// The producer's transaction ended: its pending offsets become committed (`commit`)
    /// or are dropped.
    TxnEnd {
        group: String,
        producer_id: i64,
        commit: bool,
    },
}

/// Offsets per (topic, partition).
pub type OffsetMap = BTreeMap<(String, i32), Committed>;

/// The logs of `data_dir/<kind>` (`shard-<k>.log`, one per shard) to replay for `shard`:
/// its own path, and every log with its own last (it is the newest word on what it owns).
pub fn shard_logs(
    data_dir: &Path,
    kind: &str,
    shard: ShardId,
) -> std::io::Result<(PathBuf, Vec<PathBuf>)> {
    let dir = data_dir.join(kind);
    std::fs::create_dir_all(&dir)?;
    let own = dir.join(format!("shard-{}.log", shard.0));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log") && *p != own)
        .collect();
    files.sort();
    files.push(own.clone());
    Ok((own, files))
}

/// The shard owning `group`: FNV-1a of the id, stable across restarts and platforms.
pub fn shard_of_group(group: &str, shard_count: usize) -> ShardId {
    let mut hash: u32 = 0x811c_9dc5;
    for b in group.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    ShardId((hash as usize % shard_count.max(1)) as u16)
}

/// Every group this shard coordinates.
pub struct GroupCoordinator {
    pub groups: RefCell<HashMap<String, Rc<Group>>>,
    /// This shard's group log; refuses appends after a write it could not roll back, so
    /// commits then fail (COORDINATOR_NOT_AVAILABLE) until a restart recovers it.
    log: RecordFile,
    /// Woken when any group changes state (joins complete, syncs, members leave).
    pub changed: Rc<Notify>,
    /// (group, member) pairs whose session a timer task is watching.
    pub watched: RefCell<HashSet<(String, String)>>,
}

impl GroupCoordinator {
    /// Loads the committed offsets of the groups `shard` owns, from every shard's group
    /// log, and compacts this shard's log ([`redistribute`] does this for every shard at
    /// start-up).
    #[cfg(test)]
    pub fn load(
        data_dir: &Path,
        shard: ShardId,
        shard_count: usize,
    ) -> std::io::Result<LoadedGroups> {
        let loaded = Self::read(data_dir, shard, shard_count)?;
        loaded.rewrite()?;
        Ok(loaded)
    }

    /// Reads what `shard` owns from every shard's group log, without writing anything.
    pub fn read(
        data_dir: &Path,
        shard: ShardId,
        shard_count: usize,
    ) -> std::io::Result<LoadedGroups> {
        let (own, files) = shard_logs(data_dir, "groups", shard)?;
        let mut offsets: BTreeMap<String, OffsetMap> = BTreeMap::new();
        let mut pending: BTreeMap<String, BTreeMap<i64, OffsetMap>> = BTreeMap::new();
        for path in &files {
            let records: Vec<GroupRecord> = crate::storage::record_file::read_records(path)?;
            for record in records {
                let group = match &record {
                    GroupRecord::Offset { group, .. }
                    | GroupRecord::DeleteGroup { group }
                    | GroupRecord::TxnOffset { group, .. }
                    | GroupRecord::TxnEnd { group, .. } => group,
                };
                if shard_of_group(group, shard_count) != shard {
                    continue;
                }
                match record {
                    GroupRecord::Offset {
                        group,
                        topic,
                        partition,
                        committed,
                    } => {
                        let entry = offsets.entry(group).or_default();
                        match committed {
                            Some(c) => {
                                entry.insert((topic, partition), c);
                            }
                            None => {
                                entry.remove(&(topic, partition));
                            }
                        }
                    }
                    GroupRecord::DeleteGroup { group } => {
                        offsets.remove(&group);
                        pending.remove(&group);
                    }
                    GroupRecord::TxnOffset {
                        group,
                        producer_id,
                        topic,
                        partition,
                        committed,
                    } => {
                        pending
                            .entry(group)
                            .or_default()
                            .entry(producer_id)
                            .or_default()
                            .insert((topic, partition), committed);
                    }
                    GroupRecord::TxnEnd {
                        group,
                        producer_id,
                        commit,
                    } => {
                        let Some(by_producer) = pending.get_mut(&group) else {
                            continue;
                        };
                        let Some(done) = by_producer.remove(&producer_id) else {
                            continue;
                        };
                        if commit {
                            offsets.entry(group).or_default().extend(done);
                        }
                    }
                }
            }
        }
        offsets.retain(|_, o| !o.is_empty());
        pending.retain(|_, p| !p.is_empty());
        Ok(LoadedGroups {
            offsets,
            pending,
            log_path: own,
        })
    }

    pub fn new(loaded: LoadedGroups) -> GroupCoordinator {
        let changed = Rc::new(Notify::default());
        let mut pending = loaded.pending;
        let mut groups: HashMap<String, Rc<Group>> = loaded
            .offsets
            .into_iter()
            .map(|(id, offsets)| {
                let group = Rc::new(Group::new(id.clone(), changed.clone()));
                *group.offsets.borrow_mut() = offsets;
                (id, group)
            })
            .collect();
        for (id, by_producer) in std::mem::take(&mut pending) {
            let group = groups
                .entry(id.clone())
                .or_insert_with(|| Rc::new(Group::new(id, changed.clone())));
            *group.txn_offsets.borrow_mut() = by_producer;
        }
        GroupCoordinator {
            groups: RefCell::new(groups),
            log: RecordFile::new(loaded.log_path),
            changed,
            watched: RefCell::new(HashSet::new()),
        }
    }

    pub fn get(&self, id: &str) -> Option<Rc<Group>> {
        self.groups.borrow().get(id).cloned()
    }

    pub fn get_or_create(&self, id: &str) -> Rc<Group> {
        self.groups
            .borrow_mut()
            .entry(id.to_string())
            .or_insert_with(|| Rc::new(Group::new(id.to_string(), self.changed.clone())))
            .clone()
    }

    pub fn remove(&self, id: &str) {
        self.groups.borrow_mut().remove(id);
    }

    /// Makes records durable (appended and `fdatasync`ed) before the caller applies them.
    pub async fn persist(&self, records: Vec<GroupRecord>) -> std::io::Result<()> {
        self.log.append(records).await
    }

    /// Commits or drops a producer's pending offsets in a group this shard coordinates,
    /// once its transaction ended. `false` if that could not be made durable (the
    /// transaction coordinator tries again).
    pub async fn end_txn_offsets(&self, group_id: &str, producer_id: i64, commit: bool) -> bool {
        let Some(group) = self.get(group_id) else {
            return true;
        };
        if !group.txn_offsets.borrow().contains_key(&producer_id) {
            return true;
        }
        let record = GroupRecord::TxnEnd {
            group: group_id.to_string(),
            producer_id,
            commit,
        };
        if let Err(err) = self.persist(vec![record]).await {
            tracing::error!(group = group_id, %err, "cannot persist the end of transactional offsets");
            return false;
        }
        let done = group.txn_offsets.borrow_mut().remove(&producer_id);
        if let (Some(done), true) = (done, commit) {
            group.offsets.borrow_mut().extend(done);
        }
        true
    }
}

/// What [`GroupCoordinator::read`] read, to build the coordinator on the shard's thread.
pub struct LoadedGroups {
    offsets: BTreeMap<String, OffsetMap>,
    /// Transactional offsets not yet committed or aborted: group → producer → offsets.
    pending: BTreeMap<String, BTreeMap<i64, OffsetMap>>,
    log_path: PathBuf,
}

impl LoadedGroups {
    /// Rewrites the shard's group log with only this live state (compaction).
    pub fn rewrite(&self) -> std::io::Result<()> {
        let mut live: Vec<GroupRecord> = self
            .offsets
            .iter()
            .flat_map(|(group, o)| {
                o.iter().map(|((topic, partition), c)| GroupRecord::Offset {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    committed: Some(c.clone()),
                })
            })
            .collect();
        for (group, by_producer) in &self.pending {
            for (producer_id, o) in by_producer {
                for ((topic, partition), c) in o {
                    live.push(GroupRecord::TxnOffset {
                        group: group.clone(),
                        producer_id: *producer_id,
                        topic: topic.clone(),
                        partition: *partition,
                        committed: c.clone(),
                    });
                }
            }
        }
        crate::storage::record_file::rewrite_records(&self.log_path, &live)
    }
}

/// Loads group and transaction state for every shard and moves it to the shards that own it
/// under `shard_count`, so each shard's logs hold only what it owns: read what every shard
/// owns from every log first, then rewrite them all (compaction), and remove the logs of
/// shards that no longer exist. Runs once on the main thread before the shards start
/// (shards loading concurrently could compact away records another shard has yet to read);
/// element k is what shard k starts with. Blocking.
pub fn redistribute(
    data_dir: &Path,
    shard_count: usize,
    now_ms: i64,
) -> std::io::Result<Vec<(LoadedGroups, txn::LoadedTxns)>> {
    let groups = (0..shard_count)
        .map(|k| GroupCoordinator::read(data_dir, ShardId(k as u16), shard_count))
        .collect::<std::io::Result<Vec<_>>>()?;
    let txns = (0..shard_count)
        .map(|k| txn::TxnCoordinator::read(data_dir, ShardId(k as u16), shard_count, now_ms))
        .collect::<std::io::Result<Vec<_>>>()?;
    for g in &groups {
        g.rewrite()?;
    }
    for t in &txns {
        t.rewrite()?;
    }
    for dir in ["groups", "transactions"] {
        for entry in std::fs::read_dir(data_dir.join(dir))? {
            let path = entry?.path();
            let stale = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("shard-"))
                .and_then(|k| k.parse::<usize>().ok())
                .is_some_and(|k| k >= shard_count);
            if stale && path.extension().is_some_and(|e| e == "log") {
                tracing::info!(path = %path.display(), "removing the log of a shard that no longer exists; its state moved");
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(groups.into_iter().zip(txns).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_shard_is_stable_and_spread() {
        assert_eq!(shard_of_group("orders", 4), shard_of_group("orders", 4));
        let mut counts = [0; 4];
        for i in 0..400 {
            counts[shard_of_group(&format!("group-{i}"), 4).0 as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert_eq!(shard_of_group("x", 1), ShardId(0));
    }

    #[test]
    fn offsets_survive_reload_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = GroupCoordinator::load(dir.path(), ShardId(0), 1).unwrap();
        assert!(loaded.offsets.is_empty());
        let path = loaded.log_path.clone();
        let commit = |offset| Committed {
            offset,
            leader_epoch: -1,
            metadata: Some("m".into()),
            commit_ms: 1,
        };
        let mut records = Vec::new();
        for offset in 0..50 {
            records.push(GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                committed: Some(commit(offset)),
            });
        }
        records.push(GroupRecord::Offset {
            group: "gone".into(),
            topic: "t".into(),
            partition: 0,
            committed: Some(commit(1)),
        });
        records.push(GroupRecord::DeleteGroup {
            group: "gone".into(),
        });
        RecordFile::new(path.clone())
            .append_blocking(&records)
            .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let loaded = GroupCoordinator::load(dir.path(), ShardId(0), 1).unwrap();
        assert_eq!(loaded.offsets.len(), 1);
        assert_eq!(loaded.offsets["g"][&("t".to_string(), 0)], commit(49));
        assert!(std::fs::metadata(&path).unwrap().len() < before / 10);
        let again = GroupCoordinator::load(dir.path(), ShardId(0), 1).unwrap();
        assert_eq!(again.offsets, loaded.offsets);
    }

    #[test]
    fn transactional_offsets_commit_or_drop_and_move_between_shards() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = GroupCoordinator::load(dir.path(), ShardId(0), 1).unwrap();
        let commit = |offset| Committed {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_ms: 1,
        };
        let txn_offset = |group: &str, producer_id, offset| GroupRecord::TxnOffset {
            group: group.into(),
            producer_id,
            topic: "t".into(),
            partition: 0,
            committed: commit(offset),
        };
        let groups: Vec<String> = (0..8).map(|i| format!("g{i}")).collect();
        let mut records = Vec::new();
        for g in &groups {
            records.push(txn_offset(g, 1, 10));
            records.push(txn_offset(g, 2, 20));
            records.push(GroupRecord::TxnEnd {
                group: g.clone(),
                producer_id: 1,
                commit: true,
            });
            records.push(txn_offset(g, 3, 30));
            records.push(GroupRecord::TxnEnd {
                group: g.clone(),
                producer_id: 3,
                commit: false,
            });
        }
        RecordFile::new(loaded.log_path.clone())
            .append_blocking(&records)
            .unwrap();
        let check = |loaded: &[LoadedGroups]| {
            for g in &groups {
                let owner: Vec<_> = loaded
                    .iter()
                    .filter(|l| l.offsets.contains_key(g))
                    .collect();
                assert_eq!(owner.len(), 1, "{g} must live on exactly one shard");
                let l = owner[0];
                // Producer 1 committed, 3 aborted, 2 still open.
                assert_eq!(l.offsets[g][&("t".to_string(), 0)].offset, 10);
                assert_eq!(l.pending[g].keys().copied().collect::<Vec<_>>(), vec![2]);
            }
        };
        check(&[GroupCoordinator::load(dir.path(), ShardId(0), 1).unwrap()]);
        // Three shards: each group moves to its owner whichever shard loads first.
        redistribute(dir.path(), 3, 0).unwrap();
        let three: Vec<_> = [2u16, 0, 1]
            .iter()
            .map(|&k| GroupCoordinator::load(dir.path(), ShardId(k), 3).unwrap())
            .collect();
        check(&three);
        redistribute(dir.path(), 1, 0).unwrap();
        assert!(!dir.path().join("groups/shard-2.log").exists());
        check(&[GroupCoordinator::load(dir.path(), ShardId(0), 1).unwrap()]);
    }
}
