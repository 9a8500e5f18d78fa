//! Produce: validate each partition's batch, append it, answer once it is durable.
//!
//! Appends happen synchronously, before the handler's first `.await` (see
//! [`crate::server`] on ordering), except where a check must wait: a transactional batch
//! whose coordinator is on another shard (KIP-890 verification), or a large batch for a
//! compacted topic whose keys are read off the event loop. Those take a ticket in the
//! partition's [`AppendGate`](crate::shard::append_gate) and append when their turn comes;
//! later produces to that partition queue behind them, so appends keep arrival order.
//!
//! The batch is checked through its header view only — CRC32C, counts, size, producer
//! fields — and stored verbatim; a compacted topic also needs every record keyed, and the
//! keyless ones are named in `record_errors` (KIP-467). A transactional batch is accepted
//! only if the producer's ongoing transaction includes the partition (asked of the
//! coordinator once per transaction and partition; the open transaction in the
//! partition's producer state is the remembered answer), so a stray transactional batch
//! cannot open a transaction nothing will close. On a node alone, acks=1 and acks=-1 are
//! both answered after the flusher's `fdatasync` covers the batch (no followers to wait
//! for, and acknowledged means durable). A replicated partition answers acks=-1 once the
//! batch is committed (durable on a majority of its replicas) and acks=1 once it is
//! durable on the leader. acks=-1 is refused with NOT_ENOUGH_REPLICAS while fewer
//! replicas than `min.insync.replicas` are in sync, or no majority is reachable; acks=0
//! is never answered.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Response};
use crate::protocol::batch::{self, BatchInfo};
use crate::protocol::errors::*;
use crate::shard::append_gate::Ticket;
use crate::shard::{txn, Partition, Shard};
use crate::storage::AppendOutcome;
use crate::util::now_ms;

/// The longest a produce waits for durability, whatever timeout the client sends.
const PRODUCE_TIMEOUT_MS_MAX: u64 = 300_000;
/// Compressed batches larger than this have their keys checked off the event loop: they
/// may inflate to hundreds of MB.
const KEY_CHECK_INLINE_COMPRESSED_BYTES_MAX: usize = 64 * 1024;
/// Uncompressed batches larger than this too (the check copies and walks every record).
const KEY_CHECK_INLINE_BYTES_MAX: usize = 1024 * 1024;
/// Threads per shard reading keys off the event loop at once; more checks wait their turn.
const KEY_CHECK_THREADS_MAX: u64 = 2;
/// Record errors that carry a message; the rest list only their index (a batch of
/// millions of keyless records must not make a response of hundreds of MB).
const RECORD_ERROR_MESSAGES_MAX: usize = 100;
/// Test hook: while the file this names exists, off-loop key checks wait (bounded), so
/// a test can observe the shard serving other requests meanwhile.
const KEY_CHECK_HOLD_ENV: &str = "STRAND_TEST_HOLD_KEY_CHECK";
/// The longest the test hook holds a check.
const KEY_CHECK_HOLD_MS_MAX: u64 = 60_000;

struct Pending {
    topic: usize,
    partition: usize,
    log: Rc<Partition>,
    last_offset: i64,
    /// The log incarnation the batch was appended to (see [`Partition::incarnation`]).
    incarnation: u64,
    /// A replicated partition's entry (Raft index and term): answered once committed.
    raft: Option<(u64, u64)>,
}

/// A batch waiting for its turn in the partition's append gate.
struct Deferred {
    topic: usize,
    partition: usize,
    name: String,
    log: Rc<Partition>,
    records: Bytes,
    info: BatchInfo,
    log_append_time: bool,
    /// Read the keys off the event loop before appending.
    check_keys: bool,
    ticket: Ticket,
}

/// What the partition leader knows without awaiting about a transactional batch.
enum TxnVerdict {
    Accepted,
    Refused(i16),
    /// The coordinator is on another shard.
    AskRemote,
}

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, request: ProduceRequest) -> Response {
    let acks = request.acks;
    let now = now_ms();
    let txn_id: Option<String> = request
        .transactional_id
        .as_ref()
        .map(|id| id.0.to_string())
        .filter(|id| !id.is_empty());
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut pending = Vec::new();
    let mut deferred = Vec::new();
    // Where the leaders of partitions answered NOT_LEADER_OR_FOLLOWER are (KIP-951).
    let mut hints: Vec<crate::shard::LeaderHint> = Vec::new();

    // Kafka: a transactional producer needs WRITE on its transactional id, and every
    // topic WRITE (checked before the topic's existence, so a denied client learns nothing).
    let txn_denied = txn_id.as_deref().is_some_and(|id| {
        !super::acls::allowed(
            shard,
            ctx,
            crate::security::acl::op::WRITE,
            crate::security::acl::resource::TRANSACTIONAL_ID,
            id,
        )
    });
    for (t, topic) in request.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let denied = if txn_denied {
            Some(crate::protocol::errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        } else {
            (!super::acls::allowed(
                shard,
                ctx,
                crate::security::acl::op::WRITE,
                crate::security::acl::resource::TOPIC,
                &name,
            ))
            .then_some(crate::protocol::errors::TOPIC_AUTHORIZATION_FAILED)
        };
        let internal = name == crate::cluster::OFFSETS_TOPIC && shard.groups.is_replicated();
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for (p, data) in topic.partition_data.into_iter().enumerate() {
            let mut out = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            if acks != 0 && acks != 1 && acks != -1 {
                out.error_code = INVALID_REQUIRED_ACKS;
                partition_responses.push(out);
                continue;
            }
            if let Some(code) = denied {
                out.error_code = code;
                partition_responses.push(out);
                continue;
            }
            if internal {
                // Kafka's answer: only the group coordinator writes it.
                out.error_code = INVALID_TOPIC_EXCEPTION;
                out.error_message = Some(StrBytes::from_static_str(
                    "Cannot append to internal topic __consumer_offsets",
                ));
                partition_responses.push(out);
                continue;
            }
            let partition = match shard.owned_partition(&name, data.index) {
                Ok(partition) => partition,
                Err(code) => {
                    out.error_code = refusal(shard, &name, data.index, code);
                    if out.error_code == NOT_LEADER_OR_FOLLOWER && ctx.version >= 10 {
                        if let Some(hint) = shard.leader_hint(&name, data.index, ctx.listener) {
                            out.current_leader = LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(hint.broker))
                                .with_leader_epoch(hint.epoch);
                            hints.push(hint);
                        }
                    }
                    partition_responses.push(out);
                    continue;
                }
            };
            let records = data.records.unwrap_or_default();
            let (max_message_bytes, compacted, log_append_time) = {
                let log = partition.log.borrow();
                let c = log.config();
                (c.max_message_bytes, c.compact, c.log_append_time)
            };
            let info = match batch::validate_produce_records(&records, max_message_bytes) {
                Ok(info) => info,
                Err(err) => {
                    crate::util::warn_about_client(&ctx.client_host, |more| {
                        tracing::warn!(client = %ctx.client_host, client_id = %ctx.client_id, principal = %ctx.principal, topic = %name, partition = data.index, %err, "produce rejected{more}");
                    });
                    out.error_code = err.error_code();
                    out.error_message = Some(StrBytes::from_string(err.to_string()));
                    partition_responses.push(out);
                    continue;
                }
            };
            let check_keys_off_loop = compacted && key_check_off_loop(&info);
            if compacted && !check_keys_off_loop {
                let keyless = crate::storage::compaction::keyless_records(&records, &info);
                if refuse_keyless(keyless, ctx, &name, data.index, &mut out) {
                    partition_responses.push(out);
                    continue;
                }
            }
            let verdict = if info.is_transactional() {
                txn_verdict(shard, txn_id.as_deref(), &partition, &name, &info)
            } else {
                TxnVerdict::Accepted
            };
            if let TxnVerdict::Refused(code) = verdict {
                refuse_txn(&mut out, code, &name, data.index, &info);
                partition_responses.push(out);
                continue;
            }
            let must_wait = check_keys_off_loop
                || matches!(verdict, TxnVerdict::AskRemote)
                || !partition.append_gate.is_idle();
            if must_wait {
                // Filled in when its turn comes.
                partition_responses.push(out);
                deferred.push(Deferred {
                    topic: t,
                    partition: p,
                    name: name.clone(),
                    ticket: partition.append_gate.ticket(),
                    log: partition,
                    records,
                    info,
                    log_append_time,
                    check_keys: check_keys_off_loop,
                });
                continue;
            }
            if let Some(wait) = append(
                shard,
                &partition,
                &records,
                ctx.body_bytes,
                &info,
                (now, acks),
                log_append_time,
                &mut out,
            ) {
                pending.push(Pending {
                    topic: t,
                    partition: p,
                    ..wait
                });
            }
            partition_responses.push(out);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partition_responses),
        );
    }

    // Every ticket is taken: from here the handler may await.
    for d in deferred {
        d.ticket.turn().await;
        let out = &mut responses[d.topic].partition_responses[d.partition];
        let index = out.index;
        if d.check_keys {
            let keyless = keyless_records_off_loop(d.records.clone(), d.info).await;
            if refuse_keyless(keyless, ctx, &d.name, index, out) {
                continue;
            }
        }
        if d.info.is_transactional() {
            let code = verify_txn(shard, txn_id.as_deref(), &d.log, &d.name, &d.info).await;
            if code != NONE {
                refuse_txn(out, code, &d.name, index, &d.info);
                continue;
            }
        }
        if d.log.removed.get() {
            out.error_code = UNKNOWN_TOPIC_OR_PARTITION;
            continue;
        }
        let appended = append(
            shard,
            &d.log,
            &d.records,
            ctx.body_bytes,
            &d.info,
            (now_ms(), acks),
            d.log_append_time,
            out,
        );
        if let Some(wait) = appended {
            pending.push(Pending {
                topic: d.topic,
                partition: d.partition,
                ..wait
            });
        }
        drop(d.ticket);
    }

    if acks == 0 {
        return Response::None;
    }
    let timeout =
        Duration::from_millis((request.timeout_ms.max(0) as u64).min(PRODUCE_TIMEOUT_MS_MAX));
    let deadline = Instant::now() + timeout;
    for wait in pending {
        let code = match wait.raft {
            Some((index, term)) => {
                shard
                    .wait_committed(&wait.log, index, term, acks == 1, deadline)
                    .await
            }
            None => {
                shard
                    .wait_durable(&wait.log, wait.last_offset, wait.incarnation, deadline)
                    .await
            }
        };
        if code != NONE {
            let out = &mut responses[wait.topic].partition_responses[wait.partition];
            out.error_code = code;
            out.base_offset = -1;
            if code == NOT_LEADER_OR_FOLLOWER && ctx.version >= 10 {
                let p = &wait.log;
                if let Some(hint) = shard.leader_hint(&p.topic.name, p.index, ctx.listener) {
                    out.current_leader = LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(hint.broker))
                        .with_leader_epoch(hint.epoch);
                    hints.push(hint);
                }
            }
        }
    }
    for p in responses.iter().flat_map(|t| &t.partition_responses) {
        if p.error_code != 0 {
            shard.metrics.error(ctx.api, p.error_code);
        }
    }
    let mut response = ProduceResponse::default();
    response.responses = responses;
    if ctx.version >= 10 {
        hints.sort_by_key(|h| h.broker);
        hints.dedup_by_key(|h| h.broker);
        response.node_endpoints = hints
            .into_iter()
            .map(|h| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(h.broker))
                    .with_host(StrBytes::from_string(h.host))
                    .with_port(h.port)
            })
            .collect();
    }
    ctx.respond(&response)
}

/// Appends a checked batch and fills in its answer; returns what to wait on for
/// durability (with `topic`/`partition` for the caller to set).
#[allow(clippy::too_many_arguments)]
fn append(
    shard: &Shard,
    partition: &Rc<Partition>,
    records: &Bytes,
    body_bytes: usize,
    info: &BatchInfo,
    now_acks: (i64, i16),
    log_append_time: bool,
    out: &mut PartitionProduceResponse,
) -> Option<Pending> {
    let taken = append_batch(
        shard,
        partition,
        records,
        body_bytes,
        info,
        now_acks,
        log_append_time,
        out,
    );
    if taken.is_some() {
        partition.traffic.produced(info.len, info.record_count);
    }
    taken
}

#[allow(clippy::too_many_arguments)]
fn append_batch(
    shard: &Shard,
    partition: &Rc<Partition>,
    records: &Bytes,
    body_bytes: usize,
    info: &BatchInfo,
    (now, acks): (i64, i16),
    log_append_time: bool,
    out: &mut PartitionProduceResponse,
) -> Option<Pending> {
    if acks == -1 {
        let needed = partition.min_insync.get();
        let in_sync = partition.group.as_ref().map_or(1, |g| g.in_sync().len());
        if in_sync < needed {
            out.error_code = NOT_ENOUGH_REPLICAS;
            out.error_message = Some(StrBytes::from_string(format!(
                "{in_sync} replicas in sync, min.insync.replicas is {needed}"
            )));
            return None;
        }
    }
    if let Some(group) = &partition.group {
        if acks == -1 {
            let (voters, reached) = group.reachable_voters();
            if reached <= voters / 2 {
                // No majority to commit it: refused now rather than timed out.
                out.error_code = NOT_ENOUGH_REPLICAS;
                out.error_message = Some(StrBytes::from_string(format!(
                    "{reached} of {voters} replicas reachable: no majority to commit"
                )));
                return None;
            }
        }
        return propose(partition, group, records, body_bytes, info, out);
    }
    // The log keeps the producer's bytes rather than a copy when the batch is most of the
    // request: the frame it shares stays in memory as long as the batch is cached, so a
    // small batch must not hold a large frame (its bytes are copied instead, cheaply).
    let appended = if records.len() * 2 >= body_bytes {
        partition.log.borrow_mut().append_shared(records, info, now)
    } else {
        partition.log.borrow_mut().append(records, info, now)
    };
    match appended {
        Ok(
            outcome @ (AppendOutcome::Appended {
                base_offset,
                last_offset,
            }
            | AppendOutcome::Duplicate {
                base_offset,
                last_offset,
            }),
        ) => {
            out.base_offset = base_offset;
            if log_append_time {
                out.log_append_time_ms = now;
            }
            out.log_start_offset = partition.log.borrow().log_start_offset();
            if matches!(outcome, AppendOutcome::Appended { .. }) {
                shard.add_unflushed(info.len);
                shard.mark_dirty(partition);
            }
            Some(Pending {
                topic: 0,
                partition: 0,
                incarnation: partition.incarnation.get(),
                log: partition.clone(),
                last_offset,
                raft: None,
            })
        }
        Err(err) => {
            out.error_code = err.error_code();
            out.error_message = Some(StrBytes::from_string(err.to_string()));
            None
        }
    }
}

/// The error for a produce to a partition this shard does not lead (`code`): a replica
/// whose group has no leader and cannot reach a majority of its replicas answers
/// NOT_ENOUGH_REPLICAS, since no leader can be elected to take the batch (Kafka's answer
/// when too few replicas are alive); otherwise `code`.
fn refusal(shard: &Shard, topic: &str, index: i32, code: i16) -> i16 {
    if code != NOT_LEADER_OR_FOLLOWER {
        return code;
    }
    let Some(group) = shard.partition(topic, index).and_then(|p| p.group.clone()) else {
        return code;
    };
    let (voters, reached) = group.reachable_voters();
    if group.leader() == 0 && reached <= voters / 2 {
        NOT_ENOUGH_REPLICAS
    } else {
        code
    }
}

/// A replicated partition's append: the leader proposes the batch (checked against the
/// producer state of every entry it holds, so an idempotent retry gets the entry already
/// there), placed in its log at once; the answer waits for the commit.
fn propose(
    partition: &Rc<Partition>,
    group: &crate::shard::raft_group::RaftGroup,
    records: &Bytes,
    body_bytes: usize,
    info: &BatchInfo,
    out: &mut PartitionProduceResponse,
) -> Option<Pending> {
    use crate::shard::replica::ProposeError;
    // As for a single node's log: a small batch does not pin a large frame.
    let data = if records.len() * 2 >= body_bytes {
        records.clone()
    } else {
        Bytes::copy_from_slice(records)
    };
    match group.propose_checked(data, info) {
        Ok(proposed) => {
            let log = partition.log.borrow();
            let (base, next) = log.raft()?.offsets(proposed.index)?;
            out.base_offset = base;
            out.log_start_offset = log.log_start_offset();
            Some(Pending {
                topic: 0,
                partition: 0,
                incarnation: partition.incarnation.get(),
                log: partition.clone(),
                last_offset: next - 1,
                raft: Some((proposed.index, proposed.term)),
            })
        }
        Err(ProposeError::Refused(code)) => {
            out.error_code = code;
            None
        }
        Err(ProposeError::NotLeader | ProposeError::Dropped) => {
            out.error_code = NOT_LEADER_OR_FOLLOWER;
            None
        }
    }
}

/// Whether a compacted topic's batch is large enough to have its keys read off the event
/// loop.
fn key_check_off_loop(info: &BatchInfo) -> bool {
    if info.compression() != 0 {
        info.len > KEY_CHECK_INLINE_COMPRESSED_BYTES_MAX
    } else {
        info.len > KEY_CHECK_INLINE_BYTES_MAX
    }
}

thread_local! {
    /// This shard's key-check threads.
    static KEY_CHECK_SLOTS: Rc<glommio::sync::Semaphore> =
        Rc::new(glommio::sync::Semaphore::new(KEY_CHECK_THREADS_MAX));
}

/// [`keyless_records`](crate::storage::compaction::keyless_records) on a thread of its
/// own. Not glommio's blocking pool: that is one thread per shard, which the flusher's
/// directory syncs and the coordinators' log writes need, and a long decompression there
/// would stall them.
async fn keyless_records_off_loop(records: Bytes, info: BatchInfo) -> std::io::Result<Vec<i32>> {
    let slots = KEY_CHECK_SLOTS.with(Rc::clone);
    let slot = slots
        .acquire_static_permit(1)
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    let (tx, rx) = futures_channel::oneshot::channel();
    std::thread::Builder::new()
        .name("strand-key-check".into())
        .spawn(move || {
            hold_for_tests();
            let _ = tx.send(crate::storage::compaction::keyless_records(&records, &info));
        })?;
    // The slot is held until the thread is done, even if this produce is dropped (its
    // connection closed) meanwhile: clients that hang up cannot start more threads.
    let waited = glommio::spawn_local(async move {
        let _slot = slot;
        rx.await
    })
    .detach()
    .await;
    match waited {
        Some(Ok(result)) => result,
        _ => Err(std::io::Error::other("the key check thread failed")),
    }
}

/// Fills in the refusal of a batch with keyless records for a compacted topic (or whose
/// records cannot be read); false if every record has a key.
fn refuse_keyless(
    keyless: std::io::Result<Vec<i32>>,
    ctx: &Ctx,
    topic: &str,
    partition: i32,
    out: &mut PartitionProduceResponse,
) -> bool {
    let why = match keyless {
        Ok(keyless) if keyless.is_empty() => return false,
        Ok(keyless) => {
            // Kafka's LogValidator words, one record error per keyless record (KIP-467):
            // clients fail exactly those with INVALID_RECORD.
            let message = format!(
                "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
            );
            out.record_errors = keyless
                .iter()
                .enumerate()
                .map(|(n, &batch_index)| {
                    BatchIndexAndErrorMessage::default()
                        .with_batch_index(batch_index)
                        .with_batch_index_error_message(
                            (n < RECORD_ERROR_MESSAGES_MAX)
                                .then(|| StrBytes::from_string(message.clone())),
                        )
                })
                .collect();
            format!(
                "{} record(s) of the batch have no key, which a compacted topic requires; the batch was not appended",
                keyless.len()
            )
        }
        Err(err) => format!("cannot read the batch's records: {err}"),
    };
    crate::util::warn_about_client(&ctx.client_host, |more| {
        tracing::warn!(client = %ctx.client_host, client_id = %ctx.client_id, principal = %ctx.principal, topic = %topic, partition, %why, "produce rejected{more}");
    });
    out.error_code = INVALID_RECORD;
    out.error_message = Some(StrBytes::from_string(why));
    true
}

/// KIP-890 without awaiting: a transactional batch is accepted if its producer's
/// transaction is already open in the partition (verified when it opened), else the
/// transaction coordinator must confirm the partition is part of it.
fn txn_verdict(
    shard: &Shard,
    txn_id: Option<&str>,
    partition: &Partition,
    topic: &str,
    info: &BatchInfo,
) -> TxnVerdict {
    let open = partition
        .log
        .borrow()
        .producers()
        .txn_open(info.producer_id, info.producer_epoch);
    if open {
        return TxnVerdict::Accepted;
    }
    let Some(id) = txn_id else {
        // A transactional batch without a transactional id: no coordinator can end it.
        return TxnVerdict::Refused(INVALID_TXN_STATE);
    };
    if txn::coordinator_of(shard, id) != shard.id {
        return TxnVerdict::AskRemote;
    }
    let code = shard.check_partition_in_txn(
        id,
        info.producer_id,
        info.producer_epoch,
        topic,
        partition.index,
    );
    if code == NONE {
        TxnVerdict::Accepted
    } else {
        TxnVerdict::Refused(code)
    }
}

/// [`txn_verdict`] at the batch's turn, asking a remote coordinator if needed. The gate
/// holds later appends to the partition meanwhile; a marker written while the question
/// was in flight makes the answer stale, and the producer retries.
async fn verify_txn(
    shard: &Rc<Shard>,
    txn_id: Option<&str>,
    partition: &Partition,
    topic: &str,
    info: &BatchInfo,
) -> i16 {
    match txn_verdict(shard, txn_id, partition, topic, info) {
        TxnVerdict::Accepted => NONE,
        TxnVerdict::Refused(code) => code,
        TxnVerdict::AskRemote => {
            let id = txn_id.unwrap_or_default();
            let markers = partition.append_gate.markers_written();
            let code = txn::verify_partition_in_txn(
                shard,
                id,
                info.producer_id,
                info.producer_epoch,
                topic,
                partition.index,
            )
            .await;
            if code == NONE && partition.append_gate.markers_written() != markers {
                return NOT_ENOUGH_REPLICAS;
            }
            code
        }
    }
}

/// Answers a transactional batch the coordinator did not confirm. Coordinator-side
/// transient states become NOT_ENOUGH_REPLICAS, which every producer retries (Kafka maps
/// them the same way for clients that predate KIP-890).
fn refuse_txn(
    out: &mut PartitionProduceResponse,
    code: i16,
    topic: &str,
    partition: i32,
    info: &BatchInfo,
) {
    let code = match code {
        CONCURRENT_TRANSACTIONS
        | NOT_COORDINATOR
        | COORDINATOR_NOT_AVAILABLE
        | COORDINATOR_LOAD_IN_PROGRESS => NOT_ENOUGH_REPLICAS,
        code => code,
    };
    let why = match code {
        INVALID_TXN_STATE => "the producer has no ongoing transaction including this partition (AddPartitionsToTxn first)",
        INVALID_PRODUCER_EPOCH => "the producer's epoch is older than its transaction coordinator's",
        _ => "the transaction coordinator could not confirm the transaction; retry",
    };
    tracing::debug!(topic = %topic, partition, producer_id = info.producer_id, epoch = info.producer_epoch, code, why, "transactional produce refused");
    out.error_code = code;
    out.error_message = Some(StrBytes::from_string(why.to_string()));
}

/// The test hook of [`KEY_CHECK_HOLD_ENV`]; nothing unless it is set.
fn hold_for_tests() {
    static HOLD: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let Some(path) = HOLD.get_or_init(|| std::env::var_os(KEY_CHECK_HOLD_ENV).map(Into::into))
    else {
        return;
    };
    if path.exists() {
        tracing::info!("key check held by the test hook");
    }
    let deadline = Instant::now() + Duration::from_millis(KEY_CHECK_HOLD_MS_MAX);
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    tracing::info!("key check released by the test hook");
}
