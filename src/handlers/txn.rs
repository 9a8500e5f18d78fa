//! Transactions: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn and TxnOffsetCommit, the inspection APIs DescribeTransactions,
//! ListTransactions and DescribeProducers, and the coordinator's marker writing and
//! timeout task.
//!
//! A transactional id is coordinated by the shard its hash names (FindCoordinator key type
//! 1); its state lives in [`crate::coordinator::txn`]. Ending a transaction is two durable
//! steps: the decision (PrepareCommit/PrepareAbort in the transaction log), then a marker
//! in every partition of the transaction — written directly when the partition is on this
//! shard, over the shard mesh otherwise — and the group's pending offsets committed or
//! dropped on the group's shard; then CompleteCommit/CompleteAbort. A coordinator that
//! stops between the steps finishes them when it starts again.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState as DescribedProducer, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Response};
use crate::cluster::controller::{ControlReply, ControlRequest};
use crate::coordinator::txn::{fenced_for_version, TxnMeta, TxnState, TRANSACTION_TIMEOUT_MS_MAX};
use crate::coordinator::{shard_of_group, Committed, GroupRecord};
use crate::protocol::batch::Marker;
use crate::protocol::errors::*;
use crate::shard::mesh::{MeshReply, MeshRequest, TxnMarkers};
use crate::shard::Shard;
use crate::util::now_ms;

/// Pause between attempts to write markers that failed (a partition not open yet, a full
/// disk).
const MARKER_RETRY: Duration = Duration::from_millis(200);
/// How long EndTxn waits for its markers before answering; the decision is durable by
/// then, and the coordinator goes on writing them.
const END_TXN_WAIT: Duration = Duration::from_secs(30);
/// How long a marker waits to become durable before the attempt counts as failed.
const MARKER_DURABLE_WAIT: Duration = Duration::from_secs(30);
/// How often the coordinator looks for timed-out transactions and unfinished ones.
const TIMER_PERIOD: Duration = Duration::from_millis(500);

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

fn owns_txn(shard: &Shard, id: &str) -> bool {
    shard_of_group(id, shard.snapshot().shard_count) == shard.id
}

// --------------------------------------------------------------------- InitProducerId

/// InitProducerId with a transactional id: the id's producer id with a bumped epoch (a new
/// one the first time), after aborting or finishing what its previous instance left open.
/// Returns (error, producer id, epoch).
pub async fn init_producer_id(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: &InitProducerIdRequest,
    id: &str,
) -> (i16, i64, i16) {
    let fail = |code| (code, -1, -1);
    if id.is_empty() {
        return fail(INVALID_REQUEST);
    }
    if !owns_txn(shard, id) {
        return fail(NOT_COORDINATOR);
    }
    let timeout_ms = request.transaction_timeout_ms;
    if timeout_ms <= 0 || timeout_ms > TRANSACTION_TIMEOUT_MS_MAX {
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
        return (NONE, producer_id, 0);
    };
    // KIP-360/KIP-588: a producer re-initialising names the id and epoch it had; only the
    // current epoch (or the one a timeout abort replaced) may.
    let given_id = request.producer_id.0;
    if given_id >= 0
        && (given_id != meta.producer_id
            || (request.producer_epoch != meta.epoch && request.producer_epoch != meta.last_epoch))
    {
        return fail(fenced_for_version(PRODUCER_FENCED, ctx.version, 4));
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
        match crate::util::timeout(END_TXN_WAIT, finish(shard, meta.clone())).await {
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
    (NONE, meta.producer_id, meta.epoch)
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

// ------------------------------------------------------------- AddPartitions / AddOffsets

pub async fn add_partitions_to_txn(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: AddPartitionsToTxnRequest,
) -> Response {
    let id = request.v3_and_below_transactional_id.0.to_string();
    let wanted: Vec<(String, Vec<i32>)> = request
        .v3_and_below_topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.partitions.clone()))
        .collect();
    let answer = |codes: &dyn Fn(&str, i32) -> i16| {
        let results = wanted
            .iter()
            .map(|(topic, partitions)| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(s(topic.clone())))
                    .with_results_by_partition(
                        partitions
                            .iter()
                            .map(|&p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_partition_error_code(codes(topic, p))
                            })
                            .collect(),
                    )
            })
            .collect();
        ctx.respond(
            &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
        )
    };
    let code = check_txn_request(
        shard,
        &id,
        request.v3_and_below_producer_id.0,
        request.v3_and_below_producer_epoch,
        ctx.version,
        2,
    );
    if code != NONE {
        return answer(&|_, _| code);
    }
    let snapshot = shard.snapshot();
    let unknown: BTreeSet<(String, i32)> = wanted
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
        .filter(|(t, p)| {
            snapshot
                .topic(t)
                .is_none_or(|m| *p < 0 || *p as usize >= m.partitions.len())
        })
        .collect();
    if !unknown.is_empty() {
        return answer(&|t, p| {
            if unknown.contains(&(t.to_string(), p)) {
                UNKNOWN_TOPIC_OR_PARTITION
            } else {
                OPERATION_NOT_ATTEMPTED
            }
        });
    }
    let added = wanted
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)));
    let code = add_to_txn(shard, &id, added.collect(), None).await;
    answer(&|_, _| code)
}

pub async fn add_offsets_to_txn(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: AddOffsetsToTxnRequest,
) -> Response {
    let id = request.transactional_id.0.to_string();
    let mut code = check_txn_request(
        shard,
        &id,
        request.producer_id.0,
        request.producer_epoch,
        ctx.version,
        2,
    );
    if code == NONE {
        let group = request.group_id.0.to_string();
        code = if group.is_empty() {
            INVALID_GROUP_ID
        } else {
            add_to_txn(shard, &id, Vec::new(), Some(group)).await
        };
    }
    ctx.respond(&AddOffsetsToTxnResponse::default().with_error_code(code))
}

/// The checks every request from a transactional producer to its coordinator passes.
fn check_txn_request(
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
    if !owns_txn(shard, id) {
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

/// Adds partitions and/or a group to the id's transaction, starting one if none is open.
async fn add_to_txn(
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

// ----------------------------------------------------------------------------- EndTxn

pub async fn end_txn(shard: &Rc<Shard>, ctx: &Ctx, request: EndTxnRequest) -> Response {
    let id = request.transactional_id.0.to_string();
    let code = end_txn_inner(
        shard,
        &id,
        request.producer_id.0,
        request.producer_epoch,
        request.committed,
        ctx.version,
    )
    .await;
    ctx.respond(
        &EndTxnResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
}

async fn end_txn_inner(
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
    if !owns_txn(shard, id) {
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
    match crate::util::timeout(END_TXN_WAIT, finish(shard, meta)).await {
        Some(Ok(_)) => {}
        Some(Err(why)) => {
            tracing::warn!(transactional_id = id, %why, "transaction markers not all written yet; the coordinator goes on")
        }
        None => {
            tracing::warn!(
                transactional_id = id,
                "transaction markers still pending after {END_TXN_WAIT:?}; the coordinator goes on"
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
                        write_markers_here(&shard, &markers).await
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
                end_txn_offsets_here(shard, &group, meta.producer_id, commit).await
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
        glommio::timer::sleep(MARKER_RETRY).await;
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
                glommio::timer::sleep(MARKER_RETRY).await;
            }
            Err(err) => return Err(err.to_string()),
        }
    }
    tracing::debug!(transactional_id = %meta.id, commit, "transaction complete");
    Ok(meta)
}

/// Writes markers to partitions this shard owns and waits until they are durable. An
/// error code per partition: NONE when durable or not needed (already written, topic
/// gone); anything else means "try again".
pub async fn write_markers_here(shard: &Rc<Shard>, markers: &TxnMarkers) -> Vec<i16> {
    let snapshot = shard.snapshot();
    let now = now_ms();
    let marker = if markers.commit {
        Marker::Commit
    } else {
        Marker::Abort
    };
    let mut codes = vec![NONE; markers.partitions.len()];
    let mut waits = Vec::new();
    for (i, (topic, p)) in markers.partitions.iter().enumerate() {
        let Some(meta) = snapshot.topic(topic) else {
            continue;
        };
        match snapshot.owner(meta, *p) {
            None => continue,
            Some(owner) if owner != shard.id => {
                codes[i] = NOT_LEADER_OR_FOLLOWER;
                continue;
            }
            Some(_) => {}
        }
        let Some(partition) = shard.partition(topic, *p) else {
            // Not open yet (the shard is starting).
            codes[i] = KAFKA_STORAGE_ERROR;
            continue;
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
    let deadline = Instant::now() + MARKER_DURABLE_WAIT;
    for (i, incarnation, partition, offset) in waits {
        codes[i] =
            super::produce::wait_durable(shard, &partition, offset, incarnation, deadline).await;
        if codes[i] == UNKNOWN_TOPIC_OR_PARTITION {
            codes[i] = NONE; // deleted meanwhile
        }
    }
    codes
}

/// Commits or drops a producer's pending offsets in a group this shard coordinates.
/// `false` if that could not be made durable (the coordinator tries again).
pub async fn end_txn_offsets_here(
    shard: &Rc<Shard>,
    group_id: &str,
    producer_id: i64,
    commit: bool,
) -> bool {
    let Some(group) = shard.groups.get(group_id) else {
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
    if let Err(err) = shard.groups.persist(vec![record]).await {
        tracing::error!(group = group_id, %err, "cannot persist the end of transactional offsets");
        return false;
    }
    let done = group.txn_offsets.borrow_mut().remove(&producer_id);
    if let (Some(done), true) = (done, commit) {
        group.offsets.borrow_mut().extend(done);
    }
    true
}

// -------------------------------------------------------------------- TxnOffsetCommit

pub async fn txn_offset_commit(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: TxnOffsetCommitRequest,
) -> Response {
    let group_id = request.group_id.0.to_string();
    let producer_id = request.producer_id.0;
    let group_code = if group_id.is_empty() {
        INVALID_GROUP_ID
    } else if !super::groups::owns(shard, &group_id) {
        NOT_COORDINATOR
    } else if producer_id < 0 {
        INVALID_PRODUCER_ID_MAPPING
    } else {
        let group = shard.groups.get_or_create(&group_id);
        let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
        group.check_commit(
            &request.member_id,
            instance.as_deref(),
            request.generation_id,
        )
    };
    let snapshot = shard.snapshot();
    let now = now_ms();
    let mut records = Vec::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let meta = snapshot.topic(&name);
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let code = super::groups::commit_check(
                    group_code,
                    meta.map(|m| &**m),
                    p.partition_index,
                    p.committed_metadata.as_deref(),
                );
                if code == NONE {
                    records.push(GroupRecord::TxnOffset {
                        group: group_id.clone(),
                        producer_id,
                        topic: name.clone(),
                        partition: p.partition_index,
                        committed: Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                            commit_ms: now,
                        },
                    });
                }
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
            })
            .collect();
        topics.push(
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    if !records.is_empty() {
        match shard.groups.persist(records.clone()).await {
            Ok(()) => {
                let group = shard.groups.get_or_create(&group_id);
                let mut pending = group.txn_offsets.borrow_mut();
                let mine = pending.entry(producer_id).or_default();
                for record in records {
                    if let GroupRecord::TxnOffset {
                        topic,
                        partition,
                        committed,
                        ..
                    } = record
                    {
                        mine.insert((topic, partition), committed);
                    }
                }
            }
            Err(err) => {
                tracing::error!(group = %group_id, %err, "cannot persist transactional offsets");
                for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                    if p.error_code == NONE {
                        p.error_code = COORDINATOR_NOT_AVAILABLE;
                    }
                }
            }
        }
    }
    ctx.respond(&TxnOffsetCommitResponse::default().with_topics(topics))
}

// ------------------------------------------------------------------- inspection APIs

pub async fn describe_transactions(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: DescribeTransactionsRequest,
) -> Response {
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let id_str = id.0.to_string();
            let mut out = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_transaction_state(s(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            if !owns_txn(shard, &id_str) {
                out.error_code = NOT_COORDINATOR;
            } else if let Some(meta) = shard.txns.get(&id_str) {
                let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (t, p) in &meta.partitions {
                    topics.entry(t).or_default().push(*p);
                }
                out.transaction_state = s(meta.state.name());
                out.transaction_timeout_ms = meta.timeout_ms;
                out.transaction_start_time_ms = meta.start_ms;
                out.producer_id = ProducerId(meta.producer_id);
                out.producer_epoch = meta.epoch;
                out.topics = topics
                    .into_iter()
                    .map(|(t, ps)| {
                        TopicData::default()
                            .with_topic(TopicName(s(t)))
                            .with_partitions(ps)
                    })
                    .collect();
            } else {
                out.error_code = TRANSACTIONAL_ID_NOT_FOUND;
            }
            out
        })
        .collect();
    ctx.respond(&DescribeTransactionsResponse::default().with_transaction_states(states))
}

pub async fn list_transactions(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: ListTransactionsRequest,
) -> Response {
    let mut unknown = Vec::new();
    let mut states = BTreeSet::new();
    for name in &request.state_filters {
        match TxnState::from_name(name) {
            Some(state) => {
                states.insert(state.name());
            }
            None => unknown.push(name.clone()),
        }
    }
    let producers: BTreeSet<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let now = now_ms();
    let listed = shard
        .txns
        .all()
        .into_iter()
        .filter(|m| states.is_empty() || states.contains(m.state.name()))
        .filter(|m| producers.is_empty() || producers.contains(&m.producer_id))
        .filter(|m| {
            // v1: only transactions running longer than the duration (ms); -1: all.
            request.duration_filter < 0
                || (m.start_ms >= 0 && now.saturating_sub(m.start_ms) > request.duration_filter)
        })
        .map(|m| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(s(m.id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(s(m.state.name()))
        })
        .collect();
    ctx.respond(
        &ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(listed),
    )
}

pub async fn describe_producers(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: DescribeProducersRequest,
) -> Response {
    let snapshot = shard.snapshot();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let mut out = PartitionResponse::default().with_partition_index(p);
                    let owner = snapshot.topic(&name).and_then(|m| snapshot.owner(m, p));
                    match owner {
                        None => out.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                        Some(o) if o != shard.id => out.error_code = NOT_LEADER_OR_FOLLOWER,
                        Some(_) => match shard.partition(&name, p) {
                            None => out.error_code = KAFKA_STORAGE_ERROR,
                            Some(partition) => {
                                let log = partition.log.borrow();
                                let mut active: Vec<DescribedProducer> = log
                                    .producers()
                                    .iter()
                                    .map(|(id, e)| {
                                        DescribedProducer::default()
                                            .with_producer_id(ProducerId(id))
                                            .with_producer_epoch(i32::from(e.epoch))
                                            .with_last_sequence(
                                                e.batches.back().map(|b| b.last_seq).unwrap_or(-1),
                                            )
                                            .with_last_timestamp(e.last_append_ms)
                                            .with_coordinator_epoch(e.coordinator_epoch)
                                            .with_current_txn_start_offset(e.txn_first_offset)
                                    })
                                    .collect();
                                active.sort_by_key(|p| p.producer_id.0);
                                out.active_producers = active;
                            }
                        },
                    }
                    out
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ctx.respond(&DescribeProducersResponse::default().with_topics(topics))
}

// ------------------------------------------------------------------------------ timer

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
            for id in shard.txns.due(now) {
                glommio::spawn_local(act_on_due(shard.clone(), id)).detach();
            }
            let seen = shard.shutdown.generation();
            let _ = crate::util::timeout(TIMER_PERIOD, shard.shutdown.wait(seen)).await;
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
    if meta.expired(now_ms()) {
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
