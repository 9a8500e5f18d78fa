//! The transaction coordinator's driver: everything that moves a transaction along once
//! its handler has decoded the request — registering and fencing producers (InitProducerId),
//! adding partitions and groups, ending transactions, and the timer that aborts
//! transactions past their timeout and finishes those left half done.
//!
//! A transactional id is coordinated by the shard its hash names (FindCoordinator key type
//! 1); its state and log are [`crate::coordinator::txn`]. Ending a transaction is two
//! durable steps: the decision (PrepareCommit/PrepareAbort in the transaction log), then a
//! marker in every partition of the transaction — written by the shard owning the
//! partition ([`Shard::write_txn_markers`], over the mesh when that is another shard) —
//! and the group's pending offsets committed or dropped on the group's shard; then
//! CompleteCommit/CompleteAbort. A coordinator that stops between the steps finishes them
//! when it starts again.
//!
//! This sits in the shard layer because ending a transaction is cross-shard work on the
//! shard's own state, like publishing metadata: handlers call into it, the mesh server
//! calls the partition side, and nothing here calls a handler.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::mesh::{MeshReply, MeshRequest, TxnMarkers};
use super::Shard;
use crate::cluster::controller::{ControlReply, ControlRequest};
use crate::coordinator::shard_of_group;
use crate::coordinator::txn::{fenced_for_version, TxnMeta, TxnState};
use crate::protocol::batch::Marker;
use crate::protocol::errors::*;
use crate::util::now_ms;

/// Pause between attempts to write markers that failed (a partition not open yet, a full
/// disk).
const MARKER_RETRY_MS: u64 = 200;
/// How long EndTxn waits for its markers before answering; the decision is durable by
/// then, and the coordinator goes on writing them.
pub const END_TXN_WAIT_MS: u64 = 30_000;
/// How long a marker waits to become durable before the attempt counts as failed.
const MARKER_DURABLE_WAIT_MS: u64 = 30_000;
/// How often the coordinator looks for timed-out transactions and unfinished ones.
const TIMER_PERIOD_MS: u64 = 500;

/// An InitProducerId request naming a transactional id.
pub struct InitTxnProducer<'a> {
    pub transactional_id: &'a str,
    pub transaction_timeout_ms: i32,
    /// The producer id and epoch the client had (KIP-360), or -1.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The request's version: which fencing code the client understands.
    pub version: i16,
}

/// A producer id and the epoch it may write with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub epoch: i16,
}

/// InitProducerId with a transactional id: the id's producer id with a bumped epoch (a new
/// one the first time), after aborting or finishing what its previous instance left open.
pub async fn init_producer(
    shard: &Rc<Shard>,
    request: InitTxnProducer<'_>,
) -> Result<ProducerIdAndEpoch, i16> {
    let id = request.transactional_id;
    let fail = Err;
    if id.is_empty() {
        return fail(INVALID_REQUEST);
    }
    if !shard.coordinates(id) {
        return fail(NOT_COORDINATOR);
    }
    let timeout_ms = request.transaction_timeout_ms;
    if timeout_ms <= 0 || timeout_ms > shard.config.transaction_max_timeout_ms {
        return fail(INVALID_TRANSACTION_TIMEOUT);
    }
    let Some(_busy) = shard.txns.try_busy(id) else {
        return fail(CONCURRENT_TRANSACTIONS);
    };
    let now = now_ms();
    let Some(mut meta) = shard.txns.get(id) else {
        let producer_id = match allocate_producer_id(shard).await {
            Ok(pid) => pid,
            Err(code) => return fail(code),
        };
        let meta = TxnMeta {
            id: id.to_string(),
            producer_id,
            epoch: 0,
            last_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            start_ms: -1,
            update_ms: now,
        };
        if let Err(err) = shard.txns.put(meta.clone()).await {
            tracing::error!(transactional_id = id, %err, "cannot persist transaction state");
            return fail(COORDINATOR_NOT_AVAILABLE);
        }
        tracing::info!(
            transactional_id = id,
            producer_id,
            "transactional producer registered"
        );
        return Ok(ProducerIdAndEpoch {
            producer_id,
            epoch: 0,
        });
    };
    // KIP-360/KIP-588: a producer re-initialising names the id and epoch it had; only the
    // current epoch (or the one a timeout abort replaced) may.
    let given_id = request.producer_id;
    if given_id >= 0
        && (given_id != meta.producer_id
            || (request.producer_epoch != meta.epoch && request.producer_epoch != meta.last_epoch))
    {
        return fail(fenced_for_version(PRODUCER_FENCED, request.version, 4));
    }
    let mut bumped = false;
    if meta.state == TxnState::Ongoing {
        // The previous instance's transaction is aborted under a new epoch, which fences
        // it in the coordinator and, through the markers, in every partition it wrote.
        meta = match bump_epoch(shard, meta).await {
            Ok(meta) => meta,
            Err(code) => return fail(code),
        };
        bumped = true;
        meta.state = TxnState::PrepareAbort;
        meta.update_ms = now;
        if shard.txns.put(meta.clone()).await.is_err() {
            return fail(COORDINATOR_NOT_AVAILABLE);
        }
        tracing::info!(
            transactional_id = id,
            epoch = meta.epoch,
            "aborting the open transaction of a fenced producer"
        );
    }
    if meta.state.is_prepare() {
        match crate::util::timeout(
            Duration::from_millis(END_TXN_WAIT_MS),
            finish(shard, meta.clone()),
        )
        .await
        {
            Some(Ok(done)) => meta = done,
            Some(Err(_)) | None => return fail(CONCURRENT_TRANSACTIONS),
        }
    }
    if !bumped {
        meta = match bump_epoch(shard, meta).await {
            Ok(meta) => meta,
            Err(code) => return fail(code),
        };
    }
    meta.state = TxnState::Empty;
    meta.timeout_ms = timeout_ms;
    meta.last_epoch = -1;
    meta.partitions.clear();
    meta.groups.clear();
    meta.start_ms = -1;
    meta.update_ms = now_ms();
    if shard.txns.put(meta.clone()).await.is_err() {
        return fail(COORDINATOR_NOT_AVAILABLE);
    }
    Ok(ProducerIdAndEpoch {
        producer_id: meta.producer_id,
        epoch: meta.epoch,
    })
}

async fn allocate_producer_id(shard: &Rc<Shard>) -> Result<i64, i16> {
    match shard.control(ControlRequest::AllocateProducerId).await {
        Ok(ControlReply::ProducerId(Ok(id))) => Ok(id),
        Ok(ControlReply::ProducerId(Err(code))) => Err(code),
        Ok(_) | Err(_) => Err(COORDINATOR_NOT_AVAILABLE),
    }
}

/// The next epoch; when epochs run out, a new producer id at epoch 0.
async fn bump_epoch(shard: &Rc<Shard>, mut meta: TxnMeta) -> Result<TxnMeta, i16> {
    if meta.epoch >= i16::MAX - 1 {
        meta.producer_id = allocate_producer_id(shard).await?;
        meta.epoch = 0;
        meta.last_epoch = -1;
    } else {
        meta.epoch += 1;
    }
    Ok(meta)
}

/// The checks every request from a transactional producer to its coordinator passes.
pub fn check_txn_request(
    shard: &Shard,
    id: &str,
    producer_id: i64,
    epoch: i16,
    version: i16,
    fenced_since: i16,
) -> i16 {
    if id.is_empty() {
        return INVALID_REQUEST;
    }
    if !shard.coordinates(id) {
        return NOT_COORDINATOR;
    }
    let Some(meta) = shard.txns.get(id) else {
        return INVALID_PRODUCER_ID_MAPPING;
    };
    if let Err(code) = meta.check_producer(producer_id, epoch) {
        return fenced_for_version(code, version, fenced_since);
    }
    if shard.txns.is_busy(id) || meta.state.is_prepare() {
        return CONCURRENT_TRANSACTIONS;
    }
    NONE
}

/// The shard coordinating transactional id `id`.
pub fn coordinator_of(shard: &Shard, id: &str) -> crate::cluster::ShardId {
    shard_of_group(id, shard.snapshot().shard_count)
}

/// [`Shard::check_partition_in_txn`] asked of `id`'s coordinator, over the mesh when that is
/// another shard.
pub async fn verify_partition_in_txn(
    shard: &Rc<Shard>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> i16 {
    let owner = coordinator_of(shard, id);
    if owner == shard.id {
        return shard.check_partition_in_txn(id, producer_id, epoch, topic, partition);
    }
    let request = MeshRequest::VerifyTxnPartition {
        transactional_id: id.to_string(),
        producer_id,
        producer_epoch: epoch,
        topic: topic.to_string(),
        partition,
    };
    match shard.mesh.request(owner, request).await {
        Ok(MeshReply::TxnPartitionVerified(code)) => code,
        _ => COORDINATOR_NOT_AVAILABLE,
    }
}

/// Adds partitions and/or a group to the id's transaction, starting one if none is open.
pub async fn add_to_txn(
    shard: &Rc<Shard>,
    id: &str,
    partitions: Vec<(String, i32)>,
    group: Option<String>,
) -> i16 {
    let Some(_busy) = shard.txns.try_busy(id) else {
        return CONCURRENT_TRANSACTIONS;
    };
    let Some(mut meta) = shard.txns.get(id) else {
        return INVALID_PRODUCER_ID_MAPPING;
    };
    let now = now_ms();
    let mut changed = false;
    if meta.state != TxnState::Ongoing {
        meta.state = TxnState::Ongoing;
        meta.partitions.clear();
        meta.groups.clear();
        meta.start_ms = now;
        changed = true;
    }
    for p in partitions {
        changed |= meta.partitions.insert(p);
    }
    if let Some(group) = group {
        changed |= meta.groups.insert(group);
    }
    if !changed {
        return NONE;
    }
    meta.update_ms = now;
    match shard.txns.put(meta).await {
        Ok(()) => NONE,
        Err(err) => {
            tracing::error!(transactional_id = id, %err, "cannot persist transaction state");
            COORDINATOR_NOT_AVAILABLE
        }
    }
}

/// EndTxn: makes the decision durable, then writes the markers and ends the groups'
/// pending offsets (waiting up to [`END_TXN_WAIT_MS`] for them; the coordinator goes on after).
pub async fn end_txn(
    shard: &Rc<Shard>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    version: i16,
) -> i16 {
    if id.is_empty() {
        return INVALID_REQUEST;
    }
    if !shard.coordinates(id) {
        return NOT_COORDINATOR;
    }
    let Some(_busy) = shard.txns.try_busy(id) else {
        return CONCURRENT_TRANSACTIONS;
    };
    let Some(mut meta) = shard.txns.get(id) else {
        return INVALID_PRODUCER_ID_MAPPING;
    };
    if let Err(code) = meta.check_producer(producer_id, epoch) {
        return fenced_for_version(code, version, 2);
    }
    match (meta.state, commit) {
        (TxnState::Ongoing, _) => {}
        // A retry of an EndTxn that already went through.
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => return NONE,
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            return CONCURRENT_TRANSACTIONS
        }
        _ => return INVALID_TXN_STATE,
    }
    meta.state = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    meta.update_ms = now_ms();
    if let Err(err) = shard.txns.put(meta.clone()).await {
        tracing::error!(transactional_id = id, %err, "cannot persist transaction state");
        return COORDINATOR_NOT_AVAILABLE;
    }
    // The decision is durable: from here the transaction ends this way whatever happens.
    match crate::util::timeout(Duration::from_millis(END_TXN_WAIT_MS), finish(shard, meta)).await {
        Some(Ok(_)) => {}
        Some(Err(why)) => {
            tracing::warn!(transactional_id = id, %why, "transaction markers not all written yet; the coordinator goes on")
        }
        None => {
            tracing::warn!(
                transactional_id = id,
                "transaction markers still pending after {END_TXN_WAIT_MS} ms; the coordinator goes on"
            )
        }
    }
    NONE
}

/// Writes every marker and ends every group's pending offsets of a transaction in a
/// Prepare state, retrying until all are done, then records it complete. Returns the
/// completed state; `Err` only if the shard is stopping.
async fn finish(shard: &Rc<Shard>, mut meta: TxnMeta) -> Result<TxnMeta, String> {
    debug_assert!(meta.state.is_prepare());
    let commit = meta.state == TxnState::PrepareCommit;
    let mut partitions: Vec<(String, i32)> = meta.partitions.iter().cloned().collect();
    let mut groups: Vec<String> = meta.groups.iter().cloned().collect();
    loop {
        // Markers, one message per owning shard, all shards at once.
        let snapshot = shard.snapshot();
        let mut by_shard: BTreeMap<u16, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, p) in &partitions {
            // A partition whose topic is gone needs no marker.
            if let Some(owner) = snapshot.topic(topic).and_then(|m| snapshot.owner(m, *p)) {
                by_shard
                    .entry(owner.0)
                    .or_default()
                    .push((topic.clone(), *p));
            }
        }
        let sends: Vec<_> = by_shard
            .into_iter()
            .map(|(to, list)| {
                let markers = TxnMarkers {
                    producer_id: meta.producer_id,
                    producer_epoch: meta.epoch,
                    commit,
                    partitions: list,
                };
                let shard = shard.clone();
                async move {
                    let codes = if to == shard.id.0 {
                        shard.write_txn_markers(&markers).await
                    } else {
                        match shard
                            .mesh
                            .request(
                                crate::cluster::ShardId(to),
                                MeshRequest::WriteTxnMarkers(markers.clone()),
                            )
                            .await
                        {
                            Ok(MeshReply::TxnMarkers(codes)) => codes,
                            _ => vec![UNKNOWN_SERVER_ERROR; markers.partitions.len()],
                        }
                    };
                    markers
                        .partitions
                        .into_iter()
                        .zip(codes)
                        .filter(|(_, code)| *code != NONE)
                        .collect::<Vec<_>>()
                }
            })
            .map(glommio::spawn_local)
            .collect();
        let mut failed: Vec<((String, i32), i16)> = Vec::new();
        for task in sends {
            failed.extend(task.await);
        }
        for ((topic, p), code) in &failed {
            tracing::debug!(transactional_id = %meta.id, topic = %topic, partition = p, code, "marker not written yet; retrying");
        }
        partitions = failed.into_iter().map(|(p, _)| p).collect();

        let mut pending_groups = Vec::new();
        for group in groups {
            let owner = shard_of_group(&group, snapshot.shard_count);
            let done = if owner == shard.id {
                shard
                    .groups
                    .end_txn_offsets(&group, meta.producer_id, commit)
                    .await
            } else {
                matches!(
                    shard
                        .mesh
                        .request(
                            owner,
                            MeshRequest::EndTxnOffsets {
                                group: group.clone(),
                                producer_id: meta.producer_id,
                                commit,
                            },
                        )
                        .await,
                    Ok(MeshReply::TxnOffsetsEnded(true))
                )
            };
            if !done {
                pending_groups.push(group);
            }
        }
        groups = pending_groups;
        if partitions.is_empty() && groups.is_empty() {
            break;
        }
        if shard.shutting_down.get() {
            return Err("the broker is stopping".into());
        }
        glommio::timer::sleep(Duration::from_millis(MARKER_RETRY_MS)).await;
    }
    meta.state = if commit {
        TxnState::CompleteCommit
    } else {
        TxnState::CompleteAbort
    };
    // As in Kafka, a complete transaction lists no partitions (DescribeTransactions).
    meta.partitions.clear();
    meta.groups.clear();
    meta.update_ms = now_ms();
    // Until this is durable a restart writes the markers again, which is harmless.
    loop {
        match shard.txns.put(meta.clone()).await {
            Ok(()) => break,
            Err(err) if !shard.shutting_down.get() => {
                tracing::error!(transactional_id = %meta.id, %err, "cannot persist transaction state; retrying");
                glommio::timer::sleep(Duration::from_millis(MARKER_RETRY_MS)).await;
            }
            Err(err) => return Err(err.to_string()),
        }
    }
    tracing::debug!(transactional_id = %meta.id, commit, "transaction complete");
    Ok(meta)
}

/// The coordinator's background task: aborts transactions whose timeout passed (bumping
/// the epoch, which fences the producer that let it lapse, as Kafka does) and finishes
/// transactions left in a Prepare state (by a restart, or an EndTxn that stopped
/// waiting).
pub fn spawn_txn_timer(shard: &Rc<Shard>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            if shard.shutting_down.get() {
                break;
            }
            let now = now_ms();
            for id in shard.txns.due(now, shard.config.transaction_max_timeout_ms) {
                glommio::spawn_local(act_on_due(shard.clone(), id)).detach();
            }
            let expiration_ms = shard.config.transactional_id_expiration_ms;
            shard.txns.expire_and_compact(now, expiration_ms).await;
            let seen = shard.shutdown.generation();
            let _ = crate::util::timeout(
                Duration::from_millis(TIMER_PERIOD_MS),
                shard.shutdown.wait(seen),
            )
            .await;
        }
    })
    .detach();
}

/// Aborts `id`'s transaction if its timeout passed, and finishes it if it is in a Prepare
/// state; nothing if a request is acting on it meanwhile.
async fn act_on_due(shard: Rc<Shard>, id: String) {
    let Some(_busy) = shard.txns.try_busy(&id) else {
        return;
    };
    // Read again: it may have changed since the scan.
    let Some(mut meta) = shard.txns.get(&id) else {
        return;
    };
    if meta.expired(now_ms(), shard.config.transaction_max_timeout_ms) {
        let old = meta.epoch;
        meta = match bump_epoch(&shard, meta).await {
            Ok(meta) => meta,
            Err(_) => return,
        };
        meta.last_epoch = old;
        meta.state = TxnState::PrepareAbort;
        meta.update_ms = now_ms();
        tracing::info!(transactional_id = %meta.id, timeout_ms = meta.timeout_ms, "transaction timed out; aborting it");
        if shard.txns.put(meta.clone()).await.is_err() {
            return;
        }
    }
    if meta.state.is_prepare() {
        if let Err(why) = finish(&shard, meta).await {
            tracing::debug!(%why, "transaction left unfinished");
        }
    }
}

impl Shard {
    /// KIP-890 on the coordinator's side: whether `id`'s producer `(producer_id, epoch)`
    /// has an ongoing transaction that includes the partition. Synchronous, so a partition
    /// leader on this shard can check and append without awaiting.
    pub fn check_partition_in_txn(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> i16 {
        if !self.coordinates(id) {
            return NOT_COORDINATOR;
        }
        // The last durable state decides, even while a request changes it: a partition is
        // listed only once its addition is durable, and an EndTxn under way writes its
        // markers only after this batch is appended, so they close it.
        match self.txns.get(id) {
            None => INVALID_TXN_STATE,
            Some(meta) => match meta.check_partition_in_txn(producer_id, epoch, topic, partition) {
                Ok(()) => NONE,
                Err(code) => code,
            },
        }
    }

    /// Writes markers to partitions this shard owns and waits until they are durable. An
    /// error code per partition: NONE when durable or not needed (already written, topic
    /// gone); anything else means "try again".
    pub async fn write_txn_markers(&self, markers: &TxnMarkers) -> Vec<i16> {
        let shard = self;
        let _snapshot = shard.snapshot();
        let now = now_ms();
        let marker = if markers.commit {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let mut codes = vec![NONE; markers.partitions.len()];
        let mut waits = Vec::new();
        for (i, (topic, p)) in markers.partitions.iter().enumerate() {
            let partition = match shard.owned_partition(topic, *p) {
                Ok(partition) => partition,
                // The topic or partition is gone: no marker needed.
                Err(UNKNOWN_TOPIC_OR_PARTITION) => continue,
                // Another shard's (NOT_LEADER_OR_FOLLOWER) or not open yet (the shard is
                // starting: KAFKA_STORAGE_ERROR): try again.
                Err(code) => {
                    codes[i] = code;
                    continue;
                }
            };
            let appended = partition.log.borrow_mut().append_marker(
                markers.producer_id,
                markers.producer_epoch,
                marker,
                0,
                now,
            );
            match appended {
                Ok(Some((offset, bytes))) => {
                    partition.append_gate.marker_written();
                    shard.add_unflushed(bytes);
                    shard.mark_dirty(&partition);
                    waits.push((i, partition.incarnation.get(), partition, offset));
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(topic = %topic, partition = p, %err, "cannot write a transaction marker");
                    codes[i] = err.error_code();
                }
            }
        }
        let deadline = Instant::now() + Duration::from_millis(MARKER_DURABLE_WAIT_MS);
        for (i, incarnation, partition, offset) in waits {
            codes[i] = shard
                .wait_durable(&partition, offset, incarnation, deadline)
                .await;
            if codes[i] == UNKNOWN_TOPIC_OR_PARTITION {
                codes[i] = NONE; // deleted meanwhile
            }
        }
        codes
    }
}
