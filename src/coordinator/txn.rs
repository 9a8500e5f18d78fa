//! The transaction coordinator's state: one [`TxnMeta`] per transactional id this shard
//! coordinates, and the durable log it is kept in.
//!
//! A transactional id belongs to the shard `hash(id) % shards` (the group hash), which
//! FindCoordinator (key type 1) names. Every state change is appended to
//! `<data-dir>/transactions/shard-<k>.log` (length + CRC32C + JSON records, `fdatasync`ed)
//! before it is acted on or answered, and the log is replayed and compacted on start, like
//! the group log.
//!
//! States follow Kafka's: `Empty` → `Ongoing` (partitions or a group added) →
//! `PrepareCommit`/`PrepareAbort` (the decision, durable before any marker is written) →
//! `CompleteCommit`/`CompleteAbort` (every marker written) → `Ongoing` again with the next
//! transaction. A transaction found in a Prepare state on start is completed again
//! (markers are idempotent: a partition writes a marker only if it still needs it).
//!
//! This module holds the state and the rules that check a request against it; the
//! handlers in `crate::handlers::txn` drive the markers.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::ShardId;
use crate::protocol::errors::*;
use crate::storage::record_file::RecordFile;

/// Kafka's `transaction.max.timeout.ms` default: the longest timeout a producer may ask for.
pub const TRANSACTION_TIMEOUT_MS_MAX: i32 = 900_000;
/// Kafka's `transactional.id.expiration.ms` default: idle ids are forgotten after a week.
pub const TRANSACTIONAL_ID_EXPIRATION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// One transactional id's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub id: String,
    pub producer_id: i64,
    pub epoch: i16,
    /// The epoch before the coordinator last bumped it on its own (a timeout abort), so
    /// the producer may still re-initialise with it (KIP-588); -1 if none.
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions in the current (or last) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the current (or last) transaction commits.
    pub groups: BTreeSet<String>,
    /// When the current transaction started (-1: none).
    pub start_ms: i64,
    pub update_ms: i64,
}

impl TxnMeta {
    /// Checks a producer's (id, epoch) in AddPartitionsToTxn, AddOffsetsToTxn and EndTxn.
    /// The error is PRODUCER_FENCED; callers map it for old request versions.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), i16> {
        if producer_id != self.producer_id {
            Err(INVALID_PRODUCER_ID_MAPPING)
        } else if epoch != self.epoch {
            Err(PRODUCER_FENCED)
        } else {
            Ok(())
        }
    }

    /// Whether a transaction's timeout has passed. The timeout is capped by
    /// `transaction.max.timeout.ms` as it is now, which may be lower than when the
    /// producer registered.
    pub fn expired(&self, now_ms: i64, timeout_ms_max: i32) -> bool {
        let timeout_ms = self.timeout_ms.min(timeout_ms_max);
        self.state == TxnState::Ongoing
            && self.start_ms >= 0
            && now_ms > self.start_ms.saturating_add(i64::from(timeout_ms))
    }

    /// KIP-890: whether producer `(producer_id, epoch)` has a transaction open here that
    /// includes `(topic, partition)`, so the partition may accept its transactional
    /// batches. The error is what the partition leader answers the produce with.
    pub fn check_partition_in_txn(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), i16> {
        if producer_id != self.producer_id {
            return Err(INVALID_TXN_STATE);
        }
        if epoch < self.epoch {
            return Err(INVALID_PRODUCER_EPOCH);
        }
        if epoch != self.epoch {
            return Err(INVALID_TXN_STATE);
        }
        if self.state.is_prepare() {
            // Ending; a retry sees the outcome.
            return Err(CONCURRENT_TRANSACTIONS);
        }
        if self.state != TxnState::Ongoing
            || !self.partitions.contains(&(topic.to_string(), partition))
        {
            return Err(INVALID_TXN_STATE);
        }
        Ok(())
    }
}

/// One record of a shard's transaction log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TxnRecord {
    Put(TxnMeta),
    Remove { id: String },
}

/// Every transactional id this shard coordinates.
pub struct TxnCoordinator {
    txns: RefCell<HashMap<String, TxnMeta>>,
    /// Ids with a state change in progress: other requests for them get
    /// CONCURRENT_TRANSACTIONS and retry.
    busy: RefCell<HashSet<String>>,
    /// This shard's transaction log; refuses appends after a write it could not roll
    /// back, so state changes then fail until a restart recovers it.
    log: RecordFile,
    /// Keeps appends and running compactions of the log apart.
    log_gate: super::LogGate,
}

/// Marks an id busy while it lives.
pub struct Busy<'a> {
    coordinator: &'a TxnCoordinator,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.coordinator.busy.borrow_mut().remove(&self.id);
    }
}

/// What [`TxnCoordinator::read`] read.
pub struct LoadedTxns {
    txns: HashMap<String, TxnMeta>,
    log_path: PathBuf,
}

impl LoadedTxns {
    /// Rewrites the shard's transaction log with only this state (compaction).
    pub fn rewrite(&self) -> std::io::Result<()> {
        let mut live: Vec<&TxnMeta> = self.txns.values().collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        let live: Vec<TxnRecord> = live.into_iter().cloned().map(TxnRecord::Put).collect();
        crate::storage::record_file::rewrite_records(&self.log_path, &live)
    }
}

impl TxnCoordinator {
    /// Loads the transactional ids `shard` owns from every shard's transaction log and
    /// compacts this shard's log ([`super::redistribute`] does this for every shard at
    /// start-up).
    #[cfg(test)]
    pub fn load(
        data_dir: &Path,
        shard: ShardId,
        shard_count: usize,
        now_ms: i64,
    ) -> std::io::Result<LoadedTxns> {
        let loaded = Self::read(data_dir, shard, shard_count, now_ms)?;
        loaded.rewrite()?;
        Ok(loaded)
    }

    /// Reads what `shard` owns from every shard's transaction log, writing nothing.
    pub fn read(
        data_dir: &Path,
        shard: ShardId,
        shard_count: usize,
        now_ms: i64,
    ) -> std::io::Result<LoadedTxns> {
        let (own, files) = super::shard_logs(data_dir, "transactions", shard)?;
        let mut txns: BTreeMap<String, TxnMeta> = BTreeMap::new();
        for path in &files {
            let records: Vec<TxnRecord> = crate::storage::record_file::read_records(path)?;
            for record in records {
                match record {
                    TxnRecord::Put(meta) => {
                        if super::shard_of_group(&meta.id, shard_count) == shard {
                            txns.insert(meta.id.clone(), meta);
                        }
                    }
                    TxnRecord::Remove { id } => {
                        txns.remove(&id);
                    }
                }
            }
        }
        // Idle ids with nothing to finish are forgotten after a week, as Kafka does.
        txns.retain(|_, m| {
            matches!(m.state, TxnState::Ongoing)
                || m.state.is_prepare()
                || now_ms.saturating_sub(m.update_ms) < TRANSACTIONAL_ID_EXPIRATION_MS
        });
        Ok(LoadedTxns {
            txns: txns.into_iter().collect(),
            log_path: own,
        })
    }

    pub fn new(loaded: LoadedTxns) -> TxnCoordinator {
        TxnCoordinator {
            log_gate: super::LogGate::new(loaded.txns.len()),
            txns: RefCell::new(loaded.txns),
            busy: RefCell::new(HashSet::new()),
            log: RecordFile::new(loaded.log_path),
        }
    }

    pub fn get(&self, id: &str) -> Option<TxnMeta> {
        self.txns.borrow().get(id).cloned()
    }

    pub fn all(&self) -> Vec<TxnMeta> {
        let mut all: Vec<TxnMeta> = self.txns.borrow().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Ids the coordinator must act on by itself: past their timeout, or left in a Prepare
    /// state; busy ones are skipped (their request is acting on them).
    pub fn due(&self, now_ms: i64, timeout_ms_max: i32) -> Vec<String> {
        let busy = self.busy.borrow();
        self.txns
            .borrow()
            .values()
            .filter(|m| {
                (m.expired(now_ms, timeout_ms_max) || m.state.is_prepare()) && !busy.contains(&m.id)
            })
            .map(|m| m.id.clone())
            .collect()
    }

    /// Marks `id` busy, or `None` if a state change for it is already in progress.
    pub fn try_busy(&self, id: &str) -> Option<Busy<'_>> {
        if !self.busy.borrow_mut().insert(id.to_string()) {
            return None;
        }
        Some(Busy {
            coordinator: self,
            id: id.to_string(),
        })
    }

    pub fn is_busy(&self, id: &str) -> bool {
        self.busy.borrow().contains(id)
    }

    /// Makes `meta` durable, then makes it the id's state.
    pub async fn put(&self, meta: TxnMeta) -> std::io::Result<()> {
        let _shared = self.log_gate.shared().await?;
        self.log.append(vec![TxnRecord::Put(meta.clone())]).await?;
        self.log_gate.appended(1);
        self.txns.borrow_mut().insert(meta.id.clone(), meta);
        Ok(())
    }

    /// Forgets transactional ids idle for `expiration_ms` with no transaction open (Kafka's
    /// `transactional.id.expiration.ms`), durably (a `Remove` record first), then compacts
    /// the log if it holds mostly dead records. Errors are logged; the next call retries.
    pub async fn expire_and_compact(&self, now_ms: i64, expiration_ms: i64) {
        if let Err(err) = self.expire_ids(now_ms, expiration_ms).await {
            tracing::warn!(%err, "expiring transactional ids failed");
        }
        if let Err(err) = self.compact_if_due().await {
            tracing::warn!(%err, "compacting the transaction log failed");
        }
    }

    /// The ids idle past `expiration_ms` with no transaction open (not Ongoing or Prepare).
    fn idle_ids(&self, now_ms: i64, expiration_ms: i64) -> Vec<String> {
        self.txns
            .borrow()
            .values()
            .filter(|m| {
                !matches!(m.state, TxnState::Ongoing)
                    && !m.state.is_prepare()
                    && now_ms.saturating_sub(m.update_ms) >= expiration_ms
            })
            .map(|m| m.id.clone())
            .collect()
    }

    async fn expire_ids(&self, now_ms: i64, expiration_ms: i64) -> std::io::Result<usize> {
        if self.idle_ids(now_ms, expiration_ms).is_empty() {
            return Ok(0);
        }
        let _alone = self.log_gate.exclusive().await?;
        // Busy while being removed: a request for one of them retries afterwards and
        // starts afresh.
        let removing: Vec<Busy<'_>> = self
            .idle_ids(now_ms, expiration_ms)
            .iter()
            .filter_map(|id| self.try_busy(id))
            .collect();
        if removing.is_empty() {
            return Ok(0);
        }
        let records: Vec<TxnRecord> = removing
            .iter()
            .map(|b| TxnRecord::Remove { id: b.id.clone() })
            .collect();
        let count = records.len();
        self.log.append(records).await?;
        self.log_gate.appended(count);
        self.log_gate.look_again();
        let mut txns = self.txns.borrow_mut();
        for b in &removing {
            txns.remove(&b.id);
        }
        tracing::info!(
            ids = removing.len(),
            expiration_ms,
            "forgot idle transactional ids"
        );
        Ok(removing.len())
    }

    /// Rewrites the transaction log from memory if it holds mostly dead records.
    async fn compact_if_due(&self) -> std::io::Result<bool> {
        if !self.log_gate.worth_looking() {
            return Ok(false);
        }
        let _alone = self.log_gate.exclusive().await?;
        let mut live: Vec<TxnMeta> = self.txns.borrow().values().cloned().collect();
        if !self.log_gate.rewrite_due(live.len()) {
            return Ok(false);
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        let live: Vec<TxnRecord> = live.into_iter().map(TxnRecord::Put).collect();
        let (path, count, before) = (
            self.log.path().to_path_buf(),
            live.len(),
            self.log_gate.records(),
        );
        glommio::executor()
            .spawn_blocking(move || crate::storage::record_file::rewrite_records(&path, &live))
            .await?;
        self.log_gate.rewritten(count);
        tracing::info!(
            records = before,
            live = count,
            "compacted the transaction log"
        );
        Ok(true)
    }
}

/// Kafka answers old request versions INVALID_PRODUCER_EPOCH where newer ones get
/// PRODUCER_FENCED (KIP-588).
pub fn fenced_for_version(code: i16, version: i16, fenced_since: i16) -> i16 {
    if code == PRODUCER_FENCED && version < fenced_since {
        INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, state: TxnState, update_ms: i64) -> TxnMeta {
        TxnMeta {
            id: id.into(),
            producer_id: 7,
            epoch: 3,
            last_epoch: -1,
            timeout_ms: 60_000,
            state,
            partitions: [("t".to_string(), 0)].into_iter().collect(),
            groups: BTreeSet::new(),
            start_ms: 1_000,
            update_ms,
        }
    }

    #[test]
    fn producer_checks_and_expiry() {
        let m = meta("a", TxnState::Ongoing, 0);
        assert_eq!(m.check_producer(7, 3), Ok(()));
        assert_eq!(m.check_producer(7, 2), Err(PRODUCER_FENCED));
        assert_eq!(m.check_producer(8, 3), Err(INVALID_PRODUCER_ID_MAPPING));
        let max = TRANSACTION_TIMEOUT_MS_MAX;
        assert!(!m.expired(61_000, max));
        assert!(m.expired(61_001, max));
        // A lower transaction.max.timeout.ms applies to a transaction already open.
        assert!(m.expired(11_001, 10_000));
        assert!(!meta("b", TxnState::CompleteCommit, 0).expired(i64::MAX, max));
        // KIP-890: only the registered producer's ongoing transaction with the partition.
        assert_eq!(m.check_partition_in_txn(7, 3, "t", 0), Ok(()));
        assert_eq!(
            m.check_partition_in_txn(7, 3, "t", 1),
            Err(INVALID_TXN_STATE)
        );
        assert_eq!(
            m.check_partition_in_txn(8, 3, "t", 0),
            Err(INVALID_TXN_STATE)
        );
        assert_eq!(
            m.check_partition_in_txn(7, 2, "t", 0),
            Err(INVALID_PRODUCER_EPOCH)
        );
        let done = meta("c", TxnState::CompleteAbort, 0);
        assert_eq!(
            done.check_partition_in_txn(7, 3, "t", 0),
            Err(INVALID_TXN_STATE)
        );
        let ending = meta("d", TxnState::PrepareCommit, 0);
        assert_eq!(
            ending.check_partition_in_txn(7, 3, "t", 0),
            Err(CONCURRENT_TRANSACTIONS)
        );
        assert_eq!(
            fenced_for_version(PRODUCER_FENCED, 1, 2),
            INVALID_PRODUCER_EPOCH
        );
        assert_eq!(fenced_for_version(PRODUCER_FENCED, 2, 2), PRODUCER_FENCED);
        for s in [
            TxnState::Empty,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
        ] {
            assert_eq!(TxnState::from_name(s.name()), Some(s));
        }
    }

    #[test]
    fn log_replays_compacts_and_expires_idle_ids() {
        let dir = tempfile::tempdir().unwrap();
        let week = TRANSACTIONAL_ID_EXPIRATION_MS;
        let loaded = TxnCoordinator::load(dir.path(), ShardId(0), 1, 0).unwrap();
        let path = loaded.log_path.clone();
        let mut records = Vec::new();
        for i in 0..20 {
            let mut m = meta("live", TxnState::Ongoing, week);
            m.epoch = i;
            records.push(TxnRecord::Put(m));
        }
        records.push(TxnRecord::Put(meta("idle", TxnState::CompleteCommit, 0)));
        records.push(TxnRecord::Put(meta("prepared", TxnState::PrepareAbort, 0)));
        records.push(TxnRecord::Put(meta("gone", TxnState::Empty, week)));
        records.push(TxnRecord::Remove { id: "gone".into() });
        RecordFile::new(path.clone())
            .append_blocking(&records)
            .unwrap();
        let loaded = TxnCoordinator::load(dir.path(), ShardId(0), 1, week + 10).unwrap();
        let mut ids: Vec<_> = loaded.txns.keys().cloned().collect();
        ids.sort();
        assert_eq!(ids, vec!["live".to_string(), "prepared".to_string()]);
        assert_eq!(loaded.txns["live"].epoch, 19);
        let again = TxnCoordinator::load(dir.path(), ShardId(0), 1, week + 10).unwrap();
        assert_eq!(again.txns, loaded.txns);
        // With two shards each id ends up on exactly one of them, whatever order they load.
        crate::coordinator::redistribute(dir.path(), 2, week + 10).unwrap();
        let b = TxnCoordinator::load(dir.path(), ShardId(1), 2, week + 10).unwrap();
        let a = TxnCoordinator::load(dir.path(), ShardId(0), 2, week + 10).unwrap();
        assert_eq!(a.txns.len() + b.txns.len(), 2);
        // And back to one shard: shard 1's log is removed once its ids moved.
        crate::coordinator::redistribute(dir.path(), 1, week + 10).unwrap();
        assert!(!dir.path().join("transactions/shard-1.log").exists());
        let one = TxnCoordinator::load(dir.path(), ShardId(0), 1, week + 10).unwrap();
        assert_eq!(one.txns, loaded.txns);
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    fn meta(id: &str, state: TxnState, update_ms: i64) -> TxnMeta {
        TxnMeta {
            id: id.into(),
            producer_id: 7,
            epoch: 0,
            last_epoch: -1,
            timeout_ms: 60_000,
            state,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            start_ms: -1,
            update_ms,
        }
    }

    #[test]
    fn idle_ids_expire_while_running_and_the_log_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let now = 10_000_000;
                let loaded = TxnCoordinator::load(&data, ShardId(0), 1, now).unwrap();
                let coordinator = TxnCoordinator::new(loaded);
                let ids = 1_500;
                for i in 0..ids {
                    let state = match i % 3 {
                        0 => TxnState::CompleteCommit,
                        1 => TxnState::Empty,
                        _ => TxnState::Ongoing,
                    };
                    coordinator
                        .put(meta(&format!("t{i}"), state, 0))
                        .await
                        .unwrap();
                }
                coordinator
                    .put(meta("recent", TxnState::Empty, now))
                    .await
                    .unwrap();
                coordinator
                    .put(meta("prepared", TxnState::PrepareAbort, 0))
                    .await
                    .unwrap();
                let busy = coordinator.try_busy("t0").unwrap();
                coordinator.expire_and_compact(now, 1_000).await;
                // Ongoing, Prepare, recently used and busy ids stay.
                assert_eq!(coordinator.all().len(), ids / 3 + 3);
                assert!(coordinator.get("t0").is_some());
                assert!(coordinator.get("t1").is_none());
                assert!(coordinator.get("t2").is_some());
                drop(busy);
                coordinator.expire_and_compact(now, 1_000).await;
                assert!(coordinator.get("t0").is_none());
                // 1,502 puts and 999 removals for 503 live ids were compacted to those,
                // then one more removal.
                assert_eq!(coordinator.log_gate.records(), ids / 3 + 4);
                let reloaded = TxnCoordinator::read(&data, ShardId(0), 1, now).unwrap();
                let mut expected = coordinator.all();
                let mut found: Vec<TxnMeta> = reloaded.txns.into_values().collect();
                expected.sort_by(|a, b| a.id.cmp(&b.id));
                found.sort_by(|a, b| a.id.cmp(&b.id));
                assert_eq!(found, expected);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
