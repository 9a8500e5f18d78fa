//! Produce: validate each partition's batch, append it, answer once it is durable.
//!
//! Everything up to the appends is synchronous (see [`crate::server`] on ordering). The
//! batch is checked through its header view only — CRC32C, counts, size, producer
//! fields — and stored verbatim. acks=1 and acks=-1 are both answered after the flusher's
//! `fdatasync` covers the batch (a single node has no followers to wait for, and
//! acknowledged means durable); acks=0 is never answered.

use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Response};
use crate::protocol::batch;
use crate::protocol::errors::*;
use crate::shard::{Partition, Shard};
use crate::storage::AppendOutcome;
use crate::util::now_ms;

/// The longest a produce waits for durability, whatever timeout the client sends.
const PRODUCE_TIMEOUT_MS_MAX: u64 = 300_000;

struct Pending {
    topic: usize,
    partition: usize,
    log: Rc<Partition>,
    last_offset: i64,
    /// The log incarnation the batch was appended to (see [`Partition::incarnation`]).
    incarnation: u64,
}

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, request: ProduceRequest) -> Response {
    let acks = request.acks;
    let now = now_ms();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut pending = Vec::new();

    for (t, topic) in request.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
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
            let partition = match shard.owned_partition(&name, data.index) {
                Ok(partition) => partition,
                Err(code) => {
                    out.error_code = code;
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
                    tracing::warn!(topic = %name, partition = data.index, %err, "produce rejected");
                    out.error_code = err.error_code();
                    out.error_message = Some(StrBytes::from_string(err.to_string()));
                    partition_responses.push(out);
                    continue;
                }
            };
            if compacted {
                // Compaction keeps the latest record per key: a record without one cannot
                // be kept, so it is refused (as Kafka does).
                let keyed = crate::storage::compaction::all_records_keyed(&records, &info);
                if !matches!(keyed, Ok(true)) {
                    let why = match keyed {
                        Err(err) => format!("cannot read the batch's records: {err}"),
                        _ => "compacted topics accept only records with a key".to_string(),
                    };
                    tracing::warn!(topic = %name, partition = data.index, %why, "produce rejected");
                    out.error_code = INVALID_RECORD;
                    out.error_message = Some(StrBytes::from_string(why));
                    partition_responses.push(out);
                    continue;
                }
            }
            let appended = partition.log.borrow_mut().append(&records, &info, now);
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
                        shard.mark_dirty(&partition);
                    }
                    pending.push(Pending {
                        topic: t,
                        partition: p,
                        incarnation: partition.incarnation.get(),
                        log: partition,
                        last_offset,
                    });
                }
                Err(err) => {
                    out.error_code = err.error_code();
                    out.error_message = Some(StrBytes::from_string(err.to_string()));
                }
            }
            partition_responses.push(out);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partition_responses),
        );
    }

    if acks == 0 {
        return Response::None;
    }
    let timeout =
        Duration::from_millis((request.timeout_ms.max(0) as u64).min(PRODUCE_TIMEOUT_MS_MAX));
    let deadline = Instant::now() + timeout;
    for wait in pending {
        let code = shard
            .wait_durable(&wait.log, wait.last_offset, wait.incarnation, deadline)
            .await;
        if code != NONE {
            let out = &mut responses[wait.topic].partition_responses[wait.partition];
            out.error_code = code;
            out.base_offset = -1;
        }
    }
    for p in responses.iter().flat_map(|t| &t.partition_responses) {
        if p.error_code != 0 {
            shard.metrics.error(ctx.api, p.error_code);
        }
    }
    let mut response = ProduceResponse::default();
    response.responses = responses;
    ctx.respond(&response)
}
