//! Fetch: whole batches from each partition's log, up to the durable end, as a long poll.
//! A read_committed fetch stops at the last stable offset and lists the aborted
//! transactions in the range it read, which clients use to drop their records.
//!
//! A fetch first plans every partition synchronously (errors, empty partitions, read plans
//! over the recent-batch cache or the segment files), then runs the reads. If fewer than
//! `min_bytes` came back it waits — woken by the shard's flush cycle, not by a timer — and
//! tries again until `max_wait_ms` (capped by `--fetch-max-wait-ms`) runs out. Fetch
//! sessions (KIP-227) are not kept: the response carries session id 0, which tells
//! clients to send full requests.

use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Response};
use crate::protocol::errors::*;
use crate::protocol::fetch_encode::encode_fetch_response;
use crate::protocol::pieces::Piece;
use crate::shard::{Partition, Shard};
use crate::storage::{ReadError, ReadPlan};

/// (topic index, partition index, plan, the partition, for read_committed: the fetch
/// offset, to list the aborted transactions of what was read).
type PlannedRead = (usize, usize, ReadPlan, Rc<Partition>, Option<i64>);

/// Record bytes read from each partition by one pass, for the per-topic metrics.
type Served = Vec<(Rc<Partition>, usize)>;

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, request: FetchRequest) -> Response {
    let wait_ms = (request.max_wait_ms.max(0) as u64).min(shard.config.fetch_max_wait_ms);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = request.min_bytes.max(0) as usize;
    loop {
        let seen = shard.flushed.generation();
        let (response, records, served, must_answer) = fetch_once(shard, ctx, &request).await;
        let bytes: usize = served.iter().map(|(_, n)| n).sum();
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || must_answer || now >= deadline || shard.shutting_down.get()
        {
            for (partition, n) in &served {
                partition.traffic.fetched(*n);
            }
            for p in response.responses.iter().flat_map(|t| &t.partitions) {
                if p.error_code != 0 {
                    shard.metrics.error(ctx.api, p.error_code);
                }
            }
            return respond(ctx, &response, &records);
        }
        if bytes > 0 && shard.flushed.generation() != seen {
            continue;
        }
        let _ = crate::util::timeout(deadline - now, shard.flushed.wait(seen)).await;
    }
}

/// The response with each partition's records spliced in as they lie (not copied).
fn respond(ctx: &Ctx, response: &FetchResponse, records: &[Vec<Piece>]) -> Response {
    match encode_fetch_response(ctx.correlation_id, ctx.version, response, records) {
        Ok(pieces) => Response::Pieces(pieces),
        Err(err) => Response::Close(format!(
            "cannot encode Fetch v{} response: {err}",
            ctx.version
        )),
    }
}

/// One pass over the requested partitions: the response, the record pieces of each of its
/// partitions (in response order), the record bytes in all, and whether it must be sent
/// now (an error the client has to act on).
async fn fetch_once(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: &FetchRequest,
) -> (FetchResponse, Vec<Vec<Piece>>, Served, bool) {
    let snapshot = shard.snapshot();
    let read_committed = request.isolation_level == 1;
    let mut must_answer = false;
    let mut budget = (request.max_bytes.max(0) as usize).min(shard.config.fetch_max_bytes);
    let mut first_data = true;
    let mut topics = Vec::with_capacity(request.topics.len());
    // (topic index, partition index, plan)
    let mut reads: Vec<PlannedRead> = Vec::new();
    // Where the leaders of partitions answered NOT_LEADER_OR_FOLLOWER are (KIP-951).
    let mut hints: Vec<crate::shard::LeaderHint> = Vec::new();

    for (t, topic) in request.topics.iter().enumerate() {
        let meta = if ctx.version >= 13 {
            snapshot.topic_by_id(&topic.topic_id)
        } else {
            snapshot.topic(&topic.topic)
        };
        let name = meta
            .map(|m| TopicName(StrBytes::from_string(m.name.clone())))
            .unwrap_or_else(|| topic.topic.clone());
        // Kafka: READ on the topic, checked before its existence (a topic id must resolve
        // first).
        let denied = (ctx.version < 13 || meta.is_some())
            && !super::acls::allowed(
                shard,
                ctx,
                crate::security::acl::op::READ,
                crate::security::acl::resource::TOPIC,
                &name,
            );
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (p, wanted) in topic.partitions.iter().enumerate() {
            let mut out = PartitionData::default()
                .with_partition_index(wanted.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            if denied {
                out.error_code = crate::protocol::errors::TOPIC_AUTHORIZATION_FAILED;
                must_answer = true;
                partitions.push(out);
                continue;
            }
            let Some(meta) = meta else {
                out.error_code = if ctx.version >= 13 {
                    UNKNOWN_TOPIC_ID
                } else {
                    UNKNOWN_TOPIC_OR_PARTITION
                };
                must_answer = true;
                partitions.push(out);
                continue;
            };
            let owned = shard
                .owned_partition(&meta.name, wanted.partition)
                .and_then(|p| {
                    p.check_leader_epoch(wanted.current_leader_epoch)
                        .map(|()| p)
                });
            let owned = match owned {
                Ok(p) => Shard::readable(p).await,
                Err(code) => Err(code),
            };
            let partition = match owned {
                Ok(partition) => partition,
                Err(code) => {
                    out.error_code = code;
                    if code == NOT_LEADER_OR_FOLLOWER && ctx.version >= 12 {
                        if let Some(hint) =
                            shard.leader_hint(&meta.name, wanted.partition, ctx.listener)
                        {
                            out.current_leader = LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(hint.broker))
                                .with_leader_epoch(hint.epoch);
                            hints.push(hint);
                        }
                    }
                    must_answer = true;
                    partitions.push(out);
                    continue;
                }
            };
            let log = partition.log.borrow();
            let lso = log.last_stable_offset();
            out.high_watermark = log.high_watermark();
            out.last_stable_offset = lso;
            out.log_start_offset = log.log_start_offset();
            // read_committed reads up to the last stable offset, and learns which
            // transactions in what it reads were aborted.
            let end = if read_committed {
                lso
            } else {
                log.high_watermark()
            };
            // A partition offline for writes (disk full, I/O error) still serves what is
            // durable.
            if wanted.fetch_offset == end || (!first_data && budget == 0) {
                // Nothing new (or the response is full): empty records.
                if read_committed {
                    out.aborted_transactions = Some(Vec::new());
                }
            } else {
                let limit = (wanted.partition_max_bytes.max(0) as usize).min(budget);
                match log.read_plan_to(wanted.fetch_offset, limit, end) {
                    Ok(plan) => {
                        let aborted_from = read_committed.then_some(wanted.fetch_offset);
                        reads.push((t, p, plan, partition.clone(), aborted_from))
                    }
                    Err(ReadError::OffsetOutOfRange { .. }) => {
                        // As Kafka: a partition error carries no offsets (-1) and no
                        // aborted list; the client asks ListOffsets where to go.
                        out.error_code = OFFSET_OUT_OF_RANGE;
                        out.high_watermark = -1;
                        out.last_stable_offset = -1;
                        out.log_start_offset = -1;
                        out.aborted_transactions = None;
                        must_answer = true;
                    }
                    Err(err) => {
                        tracing::warn!(topic = %meta.name, partition = wanted.partition, %err, "read failed");
                        out.error_code = KAFKA_STORAGE_ERROR;
                        must_answer = true;
                    }
                }
                // Assume the plan fills its limit until the read tells otherwise; the first
                // partition with data may exceed it (KIP-74), later ones may not.
                first_data = false;
                budget = budget.saturating_sub(limit);
            }
            drop(log);
            partitions.push(out);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(name)
                .with_topic_id(meta.map(|m| m.id).unwrap_or(topic.topic_id))
                .with_partitions(partitions),
        );
    }

    // Each partition's records, in response order.
    let mut first_of_topic = Vec::with_capacity(topics.len());
    let mut count = 0;
    for topic in &topics {
        first_of_topic.push(count);
        count += topic.partitions.len();
    }
    let mut records = vec![Vec::new(); count];
    let mut served = Vec::with_capacity(reads.len());
    for (t, p, plan, partition, aborted_from) in reads {
        let out = &mut topics[t].partitions[p];
        match plan.read().await {
            Ok(data) => {
                if let Some(from) = aborted_from {
                    // Only the aborted transactions overlapping what is returned.
                    let to = data.end_offset.unwrap_or(from);
                    let aborted = partition.log.borrow().aborted_transactions(from, to);
                    out.aborted_transactions = Some(
                        aborted
                            .into_iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(a.producer_id))
                                    .with_first_offset(a.first_offset)
                            })
                            .collect(),
                    );
                }
                served.push((partition, data.len));
                records[first_of_topic[t] + p] = data.pieces;
            }
            Err(err) => {
                tracing::error!(%err, "fetch read failed");
                out.error_code = KAFKA_STORAGE_ERROR;
                must_answer = true;
            }
        }
    }
    let mut response = FetchResponse::default();
    response.responses = topics;
    if ctx.version >= 16 {
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
    (response, records, served, must_answer)
}
