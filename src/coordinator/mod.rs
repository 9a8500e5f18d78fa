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

pub mod consumer_group;
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
use group::{Group, GroupMeta};

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
    /// The group's membership as of a generation (Kafka's GroupMetadata record): a
    /// coordinator that loads the group takes it up (see [`GroupMeta`]).
    Membership { group: String, meta: GroupMeta },
    /// Part of a checkpoint of a cluster's offsets partition: the whole live state of
    /// its groups, restated so that the records before it may go (see [`Replay`]).
    Checkpoint {
        id: u64,
        /// Parts are numbered from 0; a part whose predecessors were not read is ignored.
        part: u32,
        /// The checkpoint's last part: the state it restates replaces what was before.
        last: bool,
        records: Vec<GroupRecord>,
    },
}

/// Offsets per (topic, partition).
pub type OffsetMap = BTreeMap<(String, i32), Committed>;

impl GroupRecord {
    /// The group the record is about (empty for a checkpoint, which is about many).
    pub fn group(&self) -> &str {
        match self {
            GroupRecord::Offset { group, .. }
            | GroupRecord::DeleteGroup { group }
            | GroupRecord::TxnOffset { group, .. }
            | GroupRecord::TxnEnd { group, .. }
            | GroupRecord::Membership { group, .. } => group,
            GroupRecord::Checkpoint { .. } => "",
        }
    }
}

/// Committed and pending offsets of groups, as a log's records leave them.
#[derive(Default)]
pub struct GroupState {
    offsets: BTreeMap<String, OffsetMap>,
    /// Transactional offsets not yet committed or aborted: group → producer → offsets.
    pending: BTreeMap<String, BTreeMap<i64, OffsetMap>>,
    /// The latest durable membership of each group.
    memberships: BTreeMap<String, GroupMeta>,
}

impl GroupState {
    /// Applies one record (a checkpoint's records one by one).
    fn apply(&mut self, record: GroupRecord) {
        match record {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                committed,
            } => {
                let entry = self.offsets.entry(group).or_default();
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
                self.offsets.remove(&group);
                self.pending.remove(&group);
                self.memberships.remove(&group);
            }
            GroupRecord::Membership { group, meta } => {
                // Generations only grow: a record of an older one (written late) is stale.
                let newer = self
                    .memberships
                    .get(&group)
                    .is_none_or(|m| m.generation <= meta.generation);
                if newer {
                    self.memberships.insert(group, meta);
                }
            }
            GroupRecord::TxnOffset {
                group,
                producer_id,
                topic,
                partition,
                committed,
            } => {
                self.pending
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
                let Some(by_producer) = self.pending.get_mut(&group) else {
                    return;
                };
                let Some(done) = by_producer.remove(&producer_id) else {
                    return;
                };
                if commit {
                    self.offsets.entry(group).or_default().extend(done);
                }
            }
            GroupRecord::Checkpoint { records, .. } => {
                for record in records {
                    self.apply(record);
                }
            }
        }
    }

    /// Without the groups left with nothing.
    fn finish(mut self) -> GroupState {
        self.offsets.retain(|_, o| !o.is_empty());
        self.pending.retain(|_, p| !p.is_empty());
        // An Empty group with nothing committed is gone (its generation with it).
        let (offsets, pending) = (&self.offsets, &self.pending);
        self.memberships.retain(|group, m| {
            !m.members.is_empty() || offsets.contains_key(group) || pending.contains_key(group)
        });
        self
    }

    /// The coordinator's groups for this state, loaded at `now_ms`.
    fn into_groups(self, changed: &Rc<Notify>, now_ms: i64) -> HashMap<String, Rc<Group>> {
        let GroupState {
            offsets,
            mut pending,
            mut memberships,
        } = self.finish();
        let mut ids: HashSet<String> = offsets.keys().cloned().collect();
        ids.extend(pending.keys().cloned());
        ids.extend(memberships.keys().cloned());
        let mut offsets = offsets;
        ids.into_iter()
            .map(|id| {
                let group = Rc::new(Group::new(id.clone(), changed.clone()));
                // When a loaded group became empty is not known: it counts as empty since
                // now.
                group.inner.borrow_mut().empty_since_ms = Some(now_ms);
                if let Some(o) = offsets.remove(&id) {
                    *group.offsets.borrow_mut() = o;
                }
                if let Some(p) = pending.remove(&id) {
                    *group.txn_offsets.borrow_mut() = p;
                }
                if let Some(meta) = memberships.remove(&id) {
                    group.restore(meta, now_ms);
                }
                (id, group)
            })
            .collect()
    }
}

/// Replays a cluster's offsets partition from any point at or before its latest complete
/// checkpoint: a checkpoint's parts build a fresh state, which replaces everything before
/// once its last part is read. A checkpoint left unfinished (its leader lost the
/// leadership while writing it) is dropped at the next other record, so it never counts.
#[derive(Default)]
pub struct Replay {
    state: GroupState,
    /// A checkpoint being read: its id, the part expected next, the state so far.
    checkpoint: Option<(u64, u32, GroupState)>,
    /// Records read since the latest complete checkpoint.
    since_checkpoint: usize,
}

impl Replay {
    pub fn apply(&mut self, record: GroupRecord) {
        match record {
            GroupRecord::Checkpoint {
                id,
                part,
                last,
                records,
            } => {
                let mut fresh = match (self.checkpoint.take(), part) {
                    (Some((open, next, state)), _) if open == id && next == part => state,
                    (_, 0) => GroupState::default(),
                    // Its earlier parts were not read (or were dropped): it cannot count.
                    _ => return,
                };
                for record in records {
                    fresh.apply(record);
                }
                if last {
                    self.state = fresh;
                    self.since_checkpoint = 0;
                } else {
                    self.checkpoint = Some((id, part + 1, fresh));
                }
            }
            other => {
                self.checkpoint = None;
                self.since_checkpoint += 1;
                self.state.apply(other);
            }
        }
    }

    /// The records read since the latest complete checkpoint.
    pub fn since_checkpoint(&self) -> usize {
        self.since_checkpoint
    }
}

/// A cluster's group `g` lives in partition `hash(g) % partitions` of this topic, and the
/// leader of that partition coordinates it.
pub use crate::cluster::OFFSETS_TOPIC;

/// The offsets-topic partition of a group.
pub fn offsets_partition(group: &str, partitions: usize) -> i32 {
    (group_hash(group) as usize % partitions.max(1)) as i32
}

/// Group records as one record batch of the offsets topic: each record's key is its group
/// (so `kcat` shows whose it is), its value the record as JSON.
pub fn encode_group_batch(records: &[GroupRecord], now_ms: i64) -> bytes::Bytes {
    fn key(record: &GroupRecord) -> Option<&[u8]> {
        Some(record.group().as_bytes()).filter(|k| !k.is_empty())
    }
    bytes::Bytes::from(crate::protocol::records::encode_json_batch(
        records, key, now_ms,
    ))
}

/// The group records of a batch read back from the offsets topic; a control batch (a new
/// leader's first entry) holds none.
pub fn decode_group_batch(batch: &[u8]) -> std::io::Result<Vec<GroupRecord>> {
    crate::protocol::records::decode_json_batch(batch, "group")
}

/// Where a cluster's group coordinator writes: the offsets-topic partitions this shard
/// leads (implemented by the shard, which owns them).
pub trait OffsetsLog {
    /// Partitions of the offsets topic; 0 while it does not exist.
    fn partition_count(&self) -> usize;
    /// Appends `batch` to `partition`, led here in `term`: Ok once it is committed, or the
    /// error code for the client (NOT_COORDINATOR once the leadership moved,
    /// COORDINATOR_NOT_AVAILABLE when it could not be committed in time).
    fn append(
        &self,
        partition: i32,
        term: u64,
        batch: bytes::Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), i16>>>>;
}

/// Where a cluster's offsets partition stands on this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Led here in this term; its groups are being read back.
    Loading(u64),
    /// Led here in this term, its groups in memory.
    Loaded(u64),
}

struct PartitionLoad {
    load: Load,
    /// Records appended since the latest complete checkpoint.
    since_checkpoint: usize,
    /// When the latest checkpoint was written (or the partition loaded).
    checkpoint_ms: i64,
}

/// A checkpoint of an offsets partition is written once it holds more than this many
/// records since the last and more than twice as many as are live.
pub const CHECKPOINT_RECORDS_MIN: usize = LOG_COMPACT_RECORDS_MIN;

/// A partition that changed since its last checkpoint, or holds any live group, gets a
/// checkpoint at least this often, so that the latest one is always well inside the
/// offsets topic's retention ([`OFFSETS_TOPIC_RETENTION_MS`]).
pub const CHECKPOINT_INTERVAL_MS: i64 = 24 * 3600 * 1000;

/// The offsets topic's `retention.ms`: whole segments older than this go, and only
/// records before a later complete checkpoint can be in them.
pub const OFFSETS_TOPIC_RETENTION_MS: i64 = 7 * CHECKPOINT_INTERVAL_MS;

/// Records per checkpoint part (one batch each).
const CHECKPOINT_PART_RECORDS: usize = 500;

/// An error with the Kafka error code a coordinator answers it with.
#[derive(Debug)]
pub struct CoordinatorError(pub i16);

impl std::fmt::Display for CoordinatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kafka error code {}", self.0)
    }
}

impl std::error::Error for CoordinatorError {}

fn coordinator_error(code: i16) -> std::io::Error {
    std::io::Error::other(CoordinatorError(code))
}

/// Logs a failure to persist group records (`what` they were) and returns the error code
/// for the client: a cluster's coordinator losing its partition's leadership is routine
/// (the client finds the new coordinator), a file that cannot be written is not.
pub fn persist_failed(err: &std::io::Error, group: &str, what: &str) -> i16 {
    let code = error_code(err);
    if err
        .get_ref()
        .is_some_and(|e| e.downcast_ref::<CoordinatorError>().is_some())
    {
        tracing::info!(
            group,
            code,
            "{what} not persisted: the offsets partition answered {err}"
        );
    } else {
        tracing::error!(group, %err, "cannot persist {what}");
    }
    code
}

/// The error code for a client whose group records could not be persisted: the one the
/// offsets partition gave, COORDINATOR_NOT_AVAILABLE for a file that could not be written.
pub fn error_code(err: &std::io::Error) -> i16 {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<CoordinatorError>())
        .map_or(crate::protocol::errors::COORDINATOR_NOT_AVAILABLE, |e| e.0)
}

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

/// Where a shard's group records are kept.
enum Store {
    /// A node alone: this shard's group log, which refuses appends after a write it
    /// could not roll back, so commits then fail (COORDINATOR_NOT_AVAILABLE) until a
    /// restart recovers it.
    File(RecordFile),
    /// A cluster member: the offsets-topic partitions this shard leads.
    Partitions {
        log: RefCell<Option<Rc<dyn OffsetsLog>>>,
        loads: RefCell<HashMap<i32, PartitionLoad>>,
    },
}

/// Every group this shard coordinates.
pub struct GroupCoordinator {
    pub groups: RefCell<HashMap<String, Rc<Group>>>,
    /// Where the groups' records go.
    store: Store,
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
        let mut state = GroupState::default();
        for path in &files {
            let records: Vec<GroupRecord> = crate::storage::record_file::read_records(path)?;
            for record in records {
                if shard_of_group(record.group(), shard_count) == shard {
                    state.apply(record);
                }
            }
        }
        Ok(LoadedGroups {
            state: state.finish(),
            log_path: own,
        })
    }

    pub fn new(loaded: LoadedGroups) -> GroupCoordinator {
        let gate = LogGate::new(loaded.live_records().len());
        let changed = Rc::new(Notify::default());
        let groups = loaded.state.into_groups(&changed, crate::util::now_ms());
        GroupCoordinator {
            groups: RefCell::new(groups),
            store: Store::File(RecordFile::new(loaded.log_path)),
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
        match &self.store {
            Store::File(log) => {
                log.append(records).await?;
                self.gate.appended(count);
            }
            Store::Partitions { .. } => self.append_to_partitions(records).await?,
        }
        Ok(())
    }

    /// Makes a generation's membership durable (the leader's SyncGroup, before any member
    /// gets its assignment) and reports the outcome to the group: Ok, or the error code
    /// for the leader (the group rebalances again).
    pub async fn store_membership(&self, group: &Group, meta: GroupMeta) -> Result<(), i16> {
        let record = GroupRecord::Membership {
            group: group.id.clone(),
            meta: meta.clone(),
        };
        let result = self
            .persist(vec![record])
            .await
            .map_err(|err| persist_failed(&err, &group.id, "group membership"));
        group.stored(meta, result);
        result
    }

    /// Makes a group's Empty membership durable if it became Empty since its last stored
    /// one, as Kafka stores a group that empties: a coordinator taking it over must not
    /// wait for members long gone. A failure is logged; the next change tries again.
    pub async fn store_if_emptied(&self, group: &Group) {
        let Some(meta) = group.empty_to_store() else {
            return;
        };
        let record = GroupRecord::Membership {
            group: group.id.clone(),
            meta: meta.clone(),
        };
        match self.persist(vec![record]).await {
            Ok(()) => group.stored(meta, Ok(())),
            Err(err) => {
                persist_failed(&err, &group.id, "an emptied group");
            }
        }
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
            if self.owns(id).is_err() {
                continue;
            }
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
            .filter(|g| g.removable() && self.owns(&g.id).is_ok())
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
        let log = match &self.store {
            Store::File(log) => log,
            Store::Partitions { .. } => {
                return Ok(self.checkpoint_due(crate::util::now_ms()).await? > 0);
            }
        };
        if !self.gate.worth_looking() {
            return Ok(false);
        }
        let _alone = self.gate.exclusive().await?;
        let live = self.live_records();
        if !self.gate.rewrite_due(live.len()) {
            return Ok(false);
        }
        let (path, count, before) = (log.path().to_path_buf(), live.len(), self.gate.records());
        glommio::executor()
            .spawn_blocking(move || crate::storage::record_file::rewrite_records(&path, &live))
            .await?;
        self.gate.rewritten(count);
        tracing::info!(records = before, live = count, "compacted the group log");
        Ok(true)
    }

    /// What a rewritten log holds: every committed and pending offset in memory.
    fn live_records(&self) -> Vec<GroupRecord> {
        self.live_records_where(|_| true)
    }

    /// [`Self::live_records`] of the groups `keep` says, in group order.
    fn live_records_where(&self, keep: impl Fn(&str) -> bool) -> Vec<GroupRecord> {
        let groups = self.groups.borrow();
        let mut ids: Vec<&String> = groups.keys().filter(|id| keep(id)).collect();
        ids.sort();
        let mut live = Vec::new();
        for id in ids {
            let group = &groups[id];
            live.extend(offset_records(id, &group.offsets.borrow()));
            live.extend(pending_records(id, &group.txn_offsets.borrow()));
            if let Some(meta) = group.stored.borrow().clone() {
                live.push(GroupRecord::Membership {
                    group: id.clone(),
                    meta,
                });
            }
        }
        live
    }
}

/// A cluster member's coordinator: its groups live in the offsets-topic partitions this
/// shard leads, loaded when it becomes their leader and dropped when it stops leading.
impl GroupCoordinator {
    /// A coordinator with no group until it leads offsets partitions.
    pub fn replicated() -> GroupCoordinator {
        GroupCoordinator {
            groups: RefCell::new(HashMap::new()),
            store: Store::Partitions {
                log: RefCell::new(None),
                loads: RefCell::new(HashMap::new()),
            },
            changed: Rc::new(Notify::default()),
            watched: RefCell::new(HashSet::new()),
            gate: LogGate::new(0),
        }
    }

    /// Whether groups live in the offsets topic (a cluster member).
    pub fn is_replicated(&self) -> bool {
        matches!(self.store, Store::Partitions { .. })
    }

    /// Connects a cluster member's coordinator to its shard's offsets partitions.
    pub fn set_offsets_log(&self, offsets: Rc<dyn OffsetsLog>) {
        if let Store::Partitions { log, .. } = &self.store {
            *log.borrow_mut() = Some(offsets);
        }
    }

    /// Whether this shard coordinates `group` now: always on a node alone (the caller
    /// checks the shard); in a cluster, the error code for a group whose offsets
    /// partition is not led here (NOT_COORDINATOR) or not read back yet
    /// (COORDINATOR_LOAD_IN_PROGRESS).
    pub fn owns(&self, group: &str) -> Result<(), i16> {
        let Store::Partitions { log, .. } = &self.store else {
            return Ok(());
        };
        let count = log.borrow().as_ref().map_or(0, |l| l.partition_count());
        if count == 0 {
            return Err(crate::protocol::errors::NOT_COORDINATOR);
        }
        self.loaded_term(offsets_partition(group, count))
            .map(|_| ())
    }

    /// The term offsets partition `partition` is loaded in here, or the error code for a
    /// client: COORDINATOR_LOAD_IN_PROGRESS while it is read back, NOT_COORDINATOR when
    /// it is not led here.
    fn loaded_term(&self, partition: i32) -> Result<u64, i16> {
        use crate::protocol::errors::{COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR};
        match self.load_state(partition) {
            Some(Load::Loaded(term)) => Ok(term),
            Some(Load::Loading(_)) => Err(COORDINATOR_LOAD_IN_PROGRESS),
            None => Err(NOT_COORDINATOR),
        }
    }

    /// Where offsets partition `partition` stands here (`None`: not led here).
    pub fn load_state(&self, partition: i32) -> Option<Load> {
        match &self.store {
            Store::Partitions { loads, .. } => loads.borrow().get(&partition).map(|l| l.load),
            Store::File(_) => None,
        }
    }

    /// This shard leads `partition` in `term` and reads its groups back: requests for them
    /// get COORDINATOR_LOAD_IN_PROGRESS meanwhile. Groups held from an earlier term go.
    pub fn start_loading(&self, partition: i32, term: u64) {
        let Store::Partitions { loads, .. } = &self.store else {
            return;
        };
        self.drop_groups_of(partition);
        loads.borrow_mut().insert(
            partition,
            PartitionLoad {
                load: Load::Loading(term),
                since_checkpoint: 0,
                checkpoint_ms: crate::util::now_ms(),
            },
        );
    }

    /// Installs what was read back from `partition`, if it is still loading in `term`
    /// (false otherwise: the leadership moved meanwhile).
    pub fn finish_loading(&self, partition: i32, term: u64, replay: Replay) -> bool {
        let Store::Partitions { loads, .. } = &self.store else {
            return false;
        };
        let mut loads = loads.borrow_mut();
        let Some(load) = loads.get_mut(&partition) else {
            return false;
        };
        if load.load != Load::Loading(term) {
            return false;
        }
        load.load = Load::Loaded(term);
        load.since_checkpoint = replay.since_checkpoint();
        drop(loads);
        let loaded = replay
            .state
            .into_groups(&self.changed, crate::util::now_ms());
        let group_count = loaded.len();
        let offset_count: usize = loaded.values().map(|g| g.offsets.borrow().len()).sum();
        let members: usize = loaded
            .values()
            .map(|g| g.inner.borrow().members.len())
            .sum();
        self.groups.borrow_mut().extend(loaded);
        tracing::info!(
            partition,
            term,
            groups = group_count,
            offsets = offset_count,
            members,
            "now coordinating the groups of an offsets partition"
        );
        true
    }

    /// This shard no longer leads `partition`: its groups go (their members' requests get
    /// NOT_COORDINATOR and find the new coordinator).
    pub fn unload(&self, partition: i32) {
        let Store::Partitions { loads, .. } = &self.store else {
            return;
        };
        if loads.borrow_mut().remove(&partition).is_some() {
            let dropped = self.drop_groups_of(partition);
            tracing::info!(
                partition,
                groups = dropped,
                "no longer coordinating the groups of an offsets partition"
            );
        }
    }

    /// Removes (and kills) the groups held of `partition`; returns how many.
    fn drop_groups_of(&self, partition: i32) -> usize {
        let Store::Partitions { log, .. } = &self.store else {
            return 0;
        };
        let count = log.borrow().as_ref().map_or(0, |l| l.partition_count());
        let gone: Vec<Rc<Group>> = {
            let mut groups = self.groups.borrow_mut();
            let ids: Vec<String> = groups
                .keys()
                .filter(|id| count > 0 && offsets_partition(id, count) == partition)
                .cloned()
                .collect();
            ids.iter().filter_map(|id| groups.remove(id)).collect()
        };
        for group in &gone {
            group.kill();
        }
        gone.len()
    }

    /// Appends records to the offsets partitions of their groups, one batch per
    /// partition; each must be loaded here. Ok once all are committed.
    async fn append_to_partitions(&self, records: Vec<GroupRecord>) -> std::io::Result<()> {
        use crate::protocol::errors::{COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR};
        let Store::Partitions { log, loads } = &self.store else {
            return Ok(());
        };
        let Some(offsets) = log.borrow().clone() else {
            return Err(coordinator_error(COORDINATOR_NOT_AVAILABLE));
        };
        let count = offsets.partition_count();
        if count == 0 {
            return Err(coordinator_error(NOT_COORDINATOR));
        }
        let mut by_partition: BTreeMap<i32, Vec<GroupRecord>> = BTreeMap::new();
        for record in records {
            by_partition
                .entry(offsets_partition(record.group(), count))
                .or_default()
                .push(record);
        }
        for (partition, records) in by_partition {
            let term = self.loaded_term(partition).map_err(coordinator_error)?;
            let batch = encode_group_batch(&records, crate::util::now_ms());
            offsets
                .append(partition, term, batch)
                .await
                .map_err(coordinator_error)?;
            if let Some(load) = loads.borrow_mut().get_mut(&partition) {
                load.since_checkpoint += records.len();
            }
        }
        Ok(())
    }

    /// Writes a checkpoint of every offsets partition due for one (see
    /// [`CHECKPOINT_RECORDS_MIN`], [`CHECKPOINT_INTERVAL_MS`]); returns how many it wrote.
    pub async fn checkpoint_due(&self, now_ms: i64) -> std::io::Result<usize> {
        let Store::Partitions { log, loads } = &self.store else {
            return Ok(0);
        };
        let Some(offsets) = log.borrow().clone() else {
            return Ok(0);
        };
        let count = offsets.partition_count();
        let candidates: Vec<(i32, u64, usize, i64)> = loads
            .borrow()
            .iter()
            .filter_map(|(&p, l)| match l.load {
                Load::Loaded(term) => Some((p, term, l.since_checkpoint, l.checkpoint_ms)),
                Load::Loading(_) => None,
            })
            .collect();
        let mut written = 0;
        for (partition, term, since, checkpoint_ms) in candidates {
            if since <= CHECKPOINT_RECORDS_MIN && now_ms - checkpoint_ms < CHECKPOINT_INTERVAL_MS {
                continue;
            }
            // Alone on the log: every commit before it is in memory, none lands inside it.
            let _alone = self.gate.exclusive().await?;
            if self.load_state(partition) != Some(Load::Loaded(term)) {
                continue;
            }
            let live = self.live_records_of(partition, count);
            let due = since > CHECKPOINT_RECORDS_MIN && since > live.len().saturating_mul(2)
                || now_ms - checkpoint_ms >= CHECKPOINT_INTERVAL_MS
                    && (since > 0 || !live.is_empty());
            if !due {
                if now_ms - checkpoint_ms >= CHECKPOINT_INTERVAL_MS {
                    if let Some(l) = loads.borrow_mut().get_mut(&partition) {
                        l.checkpoint_ms = now_ms;
                    }
                }
                continue;
            }
            let id = uuid::Uuid::new_v4().as_u64_pair().0;
            let parts: Vec<Vec<GroupRecord>> = if live.is_empty() {
                vec![Vec::new()]
            } else {
                live.chunks(CHECKPOINT_PART_RECORDS)
                    .map(|c| c.to_vec())
                    .collect()
            };
            let last_part = parts.len() - 1;
            for (n, records) in parts.into_iter().enumerate() {
                let record = GroupRecord::Checkpoint {
                    id,
                    part: n as u32,
                    last: n == last_part,
                    records,
                };
                let batch = encode_group_batch(&[record], now_ms);
                if let Err(code) = offsets.append(partition, term, batch).await {
                    tracing::warn!(partition, code, "an offsets partition's checkpoint was not written; the next try starts over");
                    return Err(coordinator_error(code));
                }
            }
            if let Some(l) = loads.borrow_mut().get_mut(&partition) {
                l.since_checkpoint = 0;
                l.checkpoint_ms = now_ms;
            }
            tracing::info!(
                partition,
                records = since,
                live = live.len(),
                "checkpointed an offsets partition"
            );
            written += 1;
        }
        Ok(written)
    }

    /// The live records of the groups of offsets partition `partition`.
    fn live_records_of(&self, partition: i32, count: usize) -> Vec<GroupRecord> {
        self.live_records_where(|id| offsets_partition(id, count) == partition)
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
    state: GroupState,
    log_path: PathBuf,
}

impl LoadedGroups {
    /// Rewrites the shard's group log with only this live state (compaction).
    pub fn rewrite(&self) -> std::io::Result<()> {
        crate::storage::record_file::rewrite_records(&self.log_path, &self.live_records())
    }

    fn live_records(&self) -> Vec<GroupRecord> {
        let state = &self.state;
        let mut live: Vec<GroupRecord> = state
            .offsets
            .iter()
            .flat_map(|(group, o)| offset_records(group, o))
            .collect();
        for (group, by_producer) in &state.pending {
            live.extend(pending_records(group, by_producer));
        }
        live.extend(
            state
                .memberships
                .iter()
                .map(|(group, meta)| GroupRecord::Membership {
                    group: group.clone(),
                    meta: meta.clone(),
                }),
        );
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

    fn offset_of(replay: Replay, group: &str) -> Option<i64> {
        let state = replay.state.finish();
        state
            .offsets
            .get(group)
            .and_then(|o| o.get(&("t".to_string(), 0)))
            .map(|c| c.offset)
    }

    fn membership(group: &str, generation: i32, members: &[&str]) -> GroupRecord {
        GroupRecord::Membership {
            group: group.to_string(),
            meta: GroupMeta {
                generation,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                leader: members.first().map(|m| m.to_string()),
                members: members
                    .iter()
                    .map(|m| group::MemberMeta {
                        id: m.to_string(),
                        instance_id: None,
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        session_timeout_ms: 10_000,
                        rebalance_timeout_ms: 30_000,
                        subscription: bytes::Bytes::from_static(b"sub"),
                        assignment: bytes::Bytes::from(format!("{m}-parts")),
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn memberships_replay_newest_generation_and_load_as_stable_groups() {
        let mut replay = Replay::default();
        replay.apply(membership("a", 2, &["m1", "m2"]));
        // Written late by an older generation: stale.
        replay.apply(membership("a", 1, &["m0"]));
        // Emptied and nothing committed: gone on load.
        replay.apply(membership("b", 1, &["x"]));
        replay.apply(membership("b", 2, &[]));
        // Deleted: gone.
        replay.apply(membership("c", 1, &["y"]));
        replay.apply(GroupRecord::DeleteGroup { group: "c".into() });
        // Emptied with offsets: kept, Empty, with its generation.
        replay.apply(offset_record("d", 5, 0));
        replay.apply(membership("d", 3, &[]));
        // Restated by a checkpoint: the checkpoint's state wins.
        replay.apply(GroupRecord::Checkpoint {
            id: 1,
            part: 0,
            last: true,
            records: vec![
                membership("a", 2, &["m1", "m2"]),
                offset_record("d", 5, 0),
                membership("d", 3, &[]),
            ],
        });
        // Round trip through a batch, as the offsets topic holds them.
        let batch = encode_group_batch(&[membership("e", 4, &["z"])], 0);
        for record in decode_group_batch(&batch).expect("decodes") {
            replay.apply(record);
        }
        let groups = replay.state.into_groups(&Rc::new(Notify::default()), 1_000);
        let mut ids: Vec<&String> = groups.keys().collect();
        ids.sort();
        assert_eq!(ids, ["a", "d", "e"]);
        let a = &groups["a"];
        assert_eq!(a.state(), group::State::Stable);
        assert_eq!(a.generation(), 2);
        assert_eq!(a.heartbeat("m2", None, 2), crate::protocol::errors::NONE);
        let inner = a.inner.borrow();
        assert_eq!(
            inner.members["m1"].assignment,
            bytes::Bytes::from("m1-parts")
        );
        assert_eq!(inner.leader.as_deref(), Some("m1"));
        drop(inner);
        let d = &groups["d"];
        assert_eq!(d.state(), group::State::Empty);
        assert_eq!(d.generation(), 3);
        assert_eq!(d.inner.borrow().empty_since_ms, Some(1_000));
        assert_eq!(groups["e"].generation(), 4);
    }

    #[test]
    fn replay_restarts_at_each_complete_checkpoint_and_ignores_an_unfinished_one() {
        let checkpoint = |id, part, last, records| GroupRecord::Checkpoint {
            id,
            part,
            last,
            records,
        };
        // Before the checkpoint: g1 at 5, g2 at 7 (g2 then deleted); the checkpoint says
        // g1 is at 5 and nothing else, in two parts.
        let mut replay = Replay::default();
        replay.apply(offset_record("g1", 5, 1));
        replay.apply(offset_record("g2", 7, 1));
        replay.apply(offset_record("gone", 1, 1));
        replay.apply(GroupRecord::DeleteGroup { group: "g2".into() });
        assert_eq!(replay.since_checkpoint(), 4);
        replay.apply(checkpoint(9, 0, false, vec![offset_record("g1", 5, 1)]));
        replay.apply(checkpoint(9, 1, true, vec![]));
        assert_eq!(replay.since_checkpoint(), 0);
        replay.apply(offset_record("g1", 6, 2));
        // A leader lost its leadership halfway through the next checkpoint: the part it
        // wrote is dropped at the next record, so g3's commit after it counts and the
        // part's stale state does not.
        replay.apply(checkpoint(10, 0, false, vec![offset_record("g1", 1, 1)]));
        replay.apply(offset_record("g3", 3, 3));
        // A later part of the abandoned checkpoint, read alone, does not count either.
        replay.apply(checkpoint(10, 1, true, vec![offset_record("g1", 1, 1)]));
        assert_eq!(replay.since_checkpoint(), 2);
        let state = replay.state.finish();
        let mut groups: Vec<&String> = state.offsets.keys().collect();
        groups.sort();
        assert_eq!(groups, ["g1", "g3"]);
        assert_eq!(state.offsets["g1"][&("t".to_string(), 0)].offset, 6);

        // Read from a point after the first checkpoint began (retention took the rest):
        // the same state.
        let mut tail = Replay::default();
        tail.apply(checkpoint(9, 1, true, vec![]));
        tail.apply(offset_record("g1", 6, 2));
        tail.apply(checkpoint(10, 0, false, vec![offset_record("g1", 1, 1)]));
        tail.apply(offset_record("g3", 3, 3));
        assert_eq!(offset_of(tail, "g1"), Some(6));
    }

    #[test]
    fn group_batches_round_trip_with_the_group_as_key() {
        let records = vec![
            offset_record("orders", 42, 7),
            GroupRecord::TxnEnd {
                group: "orders".into(),
                producer_id: 3,
                commit: true,
            },
            GroupRecord::Checkpoint {
                id: 1,
                part: 0,
                last: true,
                records: vec![offset_record("a", 1, 1)],
            },
        ];
        let batch = encode_group_batch(&records, 1_000);
        assert_eq!(decode_group_batch(&batch).unwrap(), records);
        let info = crate::protocol::batch::parse_batch(&batch).unwrap();
        let area = &batch[crate::protocol::batch::BATCH_HEADER_LEN..info.len];
        let read = crate::protocol::records::read_records(area, info.record_count).unwrap();
        assert_eq!(read[0].key, Some(&b"orders"[..]));
        assert_eq!(read[2].key, None);
        assert!(decode_group_batch(&batch[..20]).is_err());
    }

    #[test]
    fn offsets_partitions_spread_groups() {
        let mut counts = [0; 16];
        for i in 0..1600 {
            counts[offsets_partition(&format!("group-{i}"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert_eq!(offsets_partition("x", 1), 0);
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
            let Store::File(log) = &coordinator.store else {
                panic!("a node alone writes a file")
            };
            let path = log.path().to_path_buf();
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
            assert_eq!(reloaded.state.offsets.len(), 1_001);
            assert!(!reloaded.state.offsets.contains_key("g0"));
            assert_eq!(
                reloaded.state.offsets["late"][&("t".to_string(), 0)].offset,
                7
            );
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
        assert!(loaded.state.offsets.is_empty());
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
        assert_eq!(loaded.state.offsets.len(), 1);
        assert_eq!(loaded.state.offsets["g"][&("t".to_string(), 0)], commit(49));
        assert!(std::fs::metadata(&path).unwrap().len() < before / 10);
        let again = GroupCoordinator::load(dir.path(), ShardId(0), 1).unwrap();
        assert_eq!(again.state.offsets, loaded.state.offsets);
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
                    .filter(|l| l.state.offsets.contains_key(g))
                    .collect();
                assert_eq!(owner.len(), 1, "{g} must live on exactly one shard");
                let l = owner[0];
                // Producer 1 committed, 3 aborted, 2 still open.
                assert_eq!(l.state.offsets[g][&("t".to_string(), 0)].offset, 10);
                assert_eq!(
                    l.state.pending[g].keys().copied().collect::<Vec<_>>(),
                    vec![2]
                );
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
