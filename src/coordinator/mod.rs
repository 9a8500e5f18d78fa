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
//!
//! Nothing a client creates here lives for ever: offsets of groups without members expire
//! (Kafka's `offsets.retention.minutes`), empty groups with no offsets left are removed,
//! and both record logs are rewritten from memory while running once they hold mostly
//! dead records ([`LogGate`] keeps appends and rewrites apart).

pub mod group;
pub mod txn;

use std::cell::{Cell, RefCell};
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

/// A shard's group or transaction log is rewritten from memory (compacted) once it holds
/// more than this many records and more than twice as many as are live.
pub const LOG_COMPACT_RECORDS_MIN: usize = 1000;

/// Keeps the writes of one record log apart: appends share it, while a rewrite or an
/// expiry pass holds it alone, so no append lands in a file a rewrite is replacing (it
/// would be lost with the old file) and the log's order of records is memory's order.
/// A shard-local async lock (the shard's tasks only), never a thread lock. Also counts
/// the records the file holds, to tell when compacting it is worth it.
pub struct LogGate {
    lock: glommio::sync::RwLock<()>,
    records: Cell<usize>,
    /// Records in the file at which to look at the live count again.
    next_check: Cell<usize>,
}

impl LogGate {
    /// A gate for a log that holds `records` records (all live: it was just rewritten).
    pub fn new(records: usize) -> LogGate {
        let gate = LogGate {
            lock: glommio::sync::RwLock::new(()),
            records: Cell::new(0),
            next_check: Cell::new(0),
        };
        gate.rewritten(records);
        gate
    }

    /// Waits until appends may go ahead (no rewrite running).
    pub async fn shared(&self) -> std::io::Result<glommio::sync::RwLockReadGuard<'_, ()>> {
        self.lock
            .read()
            .await
            .map_err(|err| std::io::Error::other(format!("record log closed: {err:?}")))
    }

    /// Waits until this task alone may write the log.
    pub async fn exclusive(&self) -> std::io::Result<glommio::sync::RwLockWriteGuard<'_, ()>> {
        self.lock
            .write()
            .await
            .map_err(|err| std::io::Error::other(format!("record log closed: {err:?}")))
    }

    /// Counts records appended to the file.
    pub fn appended(&self, records: usize) {
        self.records.set(self.records.get() + records);
    }

    /// Whether the file grew enough since the last look to count its live records again.
    pub fn worth_looking(&self) -> bool {
        self.records.get() >= self.next_check.get()
    }

    /// Whether a file holding `live` live records is due for a rewrite; if not, the next
    /// look waits until it grew by as many records again.
    pub fn rewrite_due(&self, live: usize) -> bool {
        let records = self.records.get();
        if records > LOG_COMPACT_RECORDS_MIN && records > live.saturating_mul(2) {
            return true;
        }
        self.next_check
            .set(records + live.max(LOG_COMPACT_RECORDS_MIN));
        false
    }

    /// The file was rewritten with `live` records.
    pub fn rewritten(&self, live: usize) {
        self.records.set(live);
        self.next_check
            .set(live.saturating_mul(2).max(LOG_COMPACT_RECORDS_MIN) + 1);
    }

    /// Records were made dead in bulk (an expiry pass): look at the live count next time,
    /// however little the file grew since the last look.
    pub fn look_again(&self) {
        self.next_check.set(0);
    }

    /// Records the file holds.
    pub fn records(&self) -> usize {
        self.records.get()
    }
}

/// FNV-1a of a group or transactional id, stable across restarts and platforms.
pub fn group_hash(group: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in group.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The shard owning `group` (on the node coordinating it).
pub fn shard_of_group(group: &str, shard_count: usize) -> ShardId {
    ShardId((group_hash(group) as usize % shard_count.max(1)) as u16)
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
    gate: LogGate,
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
        let gate = LogGate::new(loaded.live_records().len());
        // When a loaded group became empty is not known: it counts as empty since now.
        let started_ms = crate::util::now_ms();
        let changed = Rc::new(Notify::default());
        let mut pending = loaded.pending;
        let mut groups: HashMap<String, Rc<Group>> = loaded
            .offsets
            .into_iter()
            .map(|(id, offsets)| {
                let group = Rc::new(Group::new(id.clone(), changed.clone()));
                *group.offsets.borrow_mut() = offsets;
                group.inner.borrow_mut().empty_since_ms = Some(started_ms);
                (id, group)
            })
            .collect();
        for (id, by_producer) in std::mem::take(&mut pending) {
            let group = groups
                .entry(id.clone())
                .or_insert_with(|| Rc::new(Group::new(id, changed.clone())));
            group.inner.borrow_mut().empty_since_ms = Some(started_ms);
            *group.txn_offsets.borrow_mut() = by_producer;
        }
        GroupCoordinator {
            groups: RefCell::new(groups),
            log: RecordFile::new(loaded.log_path),
            changed,
            watched: RefCell::new(HashSet::new()),
            gate,
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
        let _shared = self.gate.shared().await?;
        self.append(records).await
    }

    /// Appends with the gate already held; counted once in the file (a failed append is
    /// rolled back).
    async fn append(&self, records: Vec<GroupRecord>) -> std::io::Result<()> {
        let count = records.len();
        self.log.append(records).await?;
        self.gate.appended(count);
        Ok(())
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

impl GroupCoordinator {
    /// Expires committed offsets and removes groups under Kafka's rule (see
    /// [`Group::expired_offsets`]): the expired offsets get a tombstone in the log, made
    /// durable before memory forgets them, and a group left Empty with nothing committed is
    /// removed. Returns (offsets expired, groups removed).
    pub async fn expire(&self, now_ms: i64, retention_ms: i64) -> std::io::Result<(usize, usize)> {
        // Alone on the log: a commit racing the tombstones could otherwise land before
        // them in the file but after them in memory.
        let _alone = self.gate.exclusive().await?;
        let mut records = Vec::new();
        for (id, group) in self.groups.borrow().iter() {
            for (topic, partition) in group.expired_offsets(now_ms, retention_ms) {
                records.push(GroupRecord::Offset {
                    group: id.clone(),
                    topic,
                    partition,
                    committed: None,
                });
            }
        }
        let expired = records.len();
        if !records.is_empty() {
            self.append(records.clone()).await?;
            self.gate.look_again();
            for record in records {
                if let GroupRecord::Offset {
                    group,
                    topic,
                    partition,
                    ..
                } = record
                {
                    if let Some(group) = self.get(&group) {
                        group.offsets.borrow_mut().remove(&(topic, partition));
                    }
                }
            }
        }
        let dead: Vec<Rc<Group>> = self
            .groups
            .borrow()
            .values()
            .filter(|g| g.removable())
            .cloned()
            .collect();
        for group in &dead {
            group.kill();
            self.remove(&group.id);
        }
        if expired > 0 || !dead.is_empty() {
            tracing::info!(
                offsets = expired,
                groups = dead.len(),
                "expired committed offsets and removed empty groups"
            );
        }
        Ok((expired, dead.len()))
    }

    /// Rewrites the group log from memory if it holds mostly dead records. True if it did.
    pub async fn compact_if_due(&self) -> std::io::Result<bool> {
        if !self.gate.worth_looking() {
            return Ok(false);
        }
        let _alone = self.gate.exclusive().await?;
        let live = self.live_records();
        if !self.gate.rewrite_due(live.len()) {
            return Ok(false);
        }
        let (path, count, before) = (
            self.log.path().to_path_buf(),
            live.len(),
            self.gate.records(),
        );
        glommio::executor()
            .spawn_blocking(move || crate::storage::record_file::rewrite_records(&path, &live))
            .await?;
        self.gate.rewritten(count);
        tracing::info!(records = before, live = count, "compacted the group log");
        Ok(true)
    }

    /// What a rewritten log holds: every committed and pending offset in memory.
    fn live_records(&self) -> Vec<GroupRecord> {
        let groups = self.groups.borrow();
        let mut ids: Vec<&String> = groups.keys().collect();
        ids.sort();
        let mut live = Vec::new();
        for id in ids {
            let group = &groups[id];
            live.extend(offset_records(id, &group.offsets.borrow()));
            live.extend(pending_records(id, &group.txn_offsets.borrow()));
        }
        live
    }
}

fn offset_records<'a>(
    group: &'a str,
    offsets: &'a OffsetMap,
) -> impl Iterator<Item = GroupRecord> + 'a {
    offsets
        .iter()
        .map(move |((topic, partition), c)| GroupRecord::Offset {
            group: group.to_string(),
            topic: topic.clone(),
            partition: *partition,
            committed: Some(c.clone()),
        })
}

fn pending_records<'a>(
    group: &'a str,
    by_producer: &'a BTreeMap<i64, OffsetMap>,
) -> impl Iterator<Item = GroupRecord> + 'a {
    by_producer.iter().flat_map(move |(producer_id, o)| {
        o.iter()
            .map(move |((topic, partition), c)| GroupRecord::TxnOffset {
                group: group.to_string(),
                producer_id: *producer_id,
                topic: topic.clone(),
                partition: *partition,
                committed: c.clone(),
            })
    })
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
        crate::storage::record_file::rewrite_records(&self.log_path, &self.live_records())
    }

    fn live_records(&self) -> Vec<GroupRecord> {
        let mut live: Vec<GroupRecord> = self
            .offsets
            .iter()
            .flat_map(|(group, o)| offset_records(group, o))
            .collect();
        for (group, by_producer) in &self.pending {
            live.extend(pending_records(group, by_producer));
        }
        live
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

    fn on_executor<F: std::future::Future<Output = ()> + 'static>(
        test: impl FnOnce() -> F + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move { test().await })
            .unwrap()
            .join()
            .unwrap();
    }

    fn committed(offset: i64, commit_ms: i64) -> Committed {
        Committed {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_ms,
        }
    }

    fn offset_record(group: &str, offset: i64, commit_ms: i64) -> GroupRecord {
        GroupRecord::Offset {
            group: group.into(),
            topic: "t".into(),
            partition: 0,
            committed: Some(committed(offset, commit_ms)),
        }
    }

    #[test]
    fn log_gate_asks_for_a_rewrite_only_when_mostly_dead() {
        let gate = LogGate::new(10);
        gate.appended(LOG_COMPACT_RECORDS_MIN - 20);
        assert!(!gate.worth_looking());
        gate.appended(100);
        assert!(gate.worth_looking());
        // Mostly live: not yet, and not looked at again until it grew further.
        assert!(!gate.rewrite_due(600));
        assert!(!gate.worth_looking());
        gate.appended(LOG_COMPACT_RECORDS_MIN);
        assert!(gate.worth_looking());
        assert!(gate.rewrite_due(600));
        gate.rewritten(600);
        assert_eq!(gate.records(), 600);
        assert!(!gate.worth_looking());
        // After an expiry pass it looks at once; a file of 1,100 records with 100 live is
        // rewritten then, though it did not grow past the next threshold.
        gate.appended(500);
        assert!(!gate.worth_looking());
        gate.look_again();
        assert!(gate.worth_looking());
        assert!(gate.rewrite_due(100));
    }

    #[test]
    fn expired_groups_are_forgotten_durably_and_the_log_compacts_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        on_executor(move || async move {
            let coordinator =
                GroupCoordinator::new(GroupCoordinator::load(&data, ShardId(0), 1).unwrap());
            let groups = 2_000;
            for i in 0..groups {
                let id = format!("g{i}");
                // Half commit long ago, half just now; none ever has members.
                let at = if i % 2 == 0 { 0 } else { 10_000 };
                coordinator
                    .persist(vec![offset_record(&id, i, at)])
                    .await
                    .unwrap();
                let group = coordinator.get_or_create(&id);
                group
                    .offsets
                    .borrow_mut()
                    .insert(("t".into(), 0), committed(i, at));
            }
            // An empty group without offsets (its member left) goes at the next pass.
            coordinator.get_or_create("no-offsets");
            let path = coordinator.log.path().to_path_buf();
            let full = std::fs::metadata(&path).unwrap().len();
            assert_eq!(
                coordinator.expire(10_500, 1_000).await.unwrap(),
                (1_000, 1_001)
            );
            assert_eq!(coordinator.groups.borrow().len(), 1_000);
            assert!(coordinator.get("g0").is_none());
            assert!(coordinator.get("g1").is_some());
            // 3,000 records, 1,000 live: rewritten, while a commit races the rewrite.
            // Like a commit handler: apply right after the append, with no await between.
            let racing = async {
                let result = coordinator
                    .persist(vec![offset_record("late", 7, 10_000)])
                    .await;
                let group = coordinator.get_or_create("late");
                group
                    .offsets
                    .borrow_mut()
                    .insert(("t".into(), 0), committed(7, 10_000));
                result
            };
            let (compacted, persisted) =
                futures_lite::future::zip(coordinator.compact_if_due(), racing).await;
            assert!(compacted.unwrap());
            persisted.unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() < full * 2 / 3);
            let reloaded = GroupCoordinator::read(&data, ShardId(0), 1).unwrap();
            assert_eq!(reloaded.offsets.len(), 1_001);
            assert!(!reloaded.offsets.contains_key("g0"));
            assert_eq!(reloaded.offsets["late"][&("t".to_string(), 0)].offset, 7);
            // Loaded groups count as empty since start-up: nothing expires at once.
            let again = GroupCoordinator::new(reloaded);
            let now = crate::util::now_ms();
            assert_eq!(again.expire(now, 60_000).await.unwrap(), (0, 0));
            assert_eq!(again.expire(now + 60_000, 60_000).await.unwrap().1, 1_001);
        });
    }

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
