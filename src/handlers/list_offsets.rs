//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, v7+) and the first offset at
//! or after a timestamp.
//!
//! "Latest" is the durable end of the log (the high watermark): a consumer never learns of
//! an offset that a crash could take back.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{Ctx, Response};
use crate::protocol::errors::*;
use crate::shard::Shard;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// v7+ (KIP-734): the record with the largest timestamp.
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, request: ListOffsetsRequest) -> Response {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let denied = !super::acls::allowed(
            shard,
            ctx,
            crate::security::acl::op::DESCRIBE,
            crate::security::acl::resource::TOPIC,
            &name,
        );
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            // As Kafka: offset, timestamp and leader epoch are -1 unless an offset is found.
            let mut out = ListOffsetsPartitionResponse::default()
                .with_partition_index(wanted.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            if denied {
                out.error_code = crate::protocol::errors::TOPIC_AUTHORIZATION_FAILED;
                partitions.push(out);
                continue;
            }
            let owned = shard
                .owned_partition(&name, wanted.partition_index)
                .and_then(|p| {
                    p.check_leader_epoch(wanted.current_leader_epoch)
                        .map(|()| p)
                });
            let owned = match owned {
                Ok(p) => Shard::readable(p).await,
                Err(code) => Err(code),
            };
            let partition = match owned {
                Ok(p) => p,
                Err(code) => {
                    out.error_code = code;
                    partitions.push(out);
                    continue;
                }
            };
            match wanted.timestamp {
                LATEST if request.isolation_level == 1 => {
                    out.offset = partition.log.borrow().last_stable_offset();
                    out.leader_epoch = partition.leader_epoch();
                }
                LATEST => {
                    out.offset = partition.log.borrow().high_watermark();
                    out.leader_epoch = partition.leader_epoch();
                }
                EARLIEST => {
                    out.offset = partition.log.borrow().log_start_offset();
                    out.leader_epoch = partition.leader_epoch();
                }
                ts if ts >= 0 || (ts == MAX_TIMESTAMP && ctx.version >= 7) => {
                    // -3: the first record with the largest timestamp in the log.
                    let plan = {
                        let log = partition.log.borrow();
                        if ts == MAX_TIMESTAMP {
                            log.max_timestamp().map(|max| log.timestamp_plan(max))
                        } else {
                            Some(log.timestamp_plan(ts))
                        }
                    };
                    if let Some(plan) = plan {
                        match plan.resolve().await {
                            Ok(Some((offset, timestamp))) => {
                                out.offset = offset;
                                out.timestamp = timestamp;
                                out.leader_epoch = partition.leader_epoch();
                            }
                            Ok(None) => {}
                            Err(err) => {
                                tracing::error!(topic = %name, timestamp = ts, %err, "timestamp lookup failed");
                                out.error_code = KAFKA_STORAGE_ERROR;
                            }
                        }
                    }
                }
                // Kafka answers any other negative timestamp (-3 before v7, the tiered-storage
                // ones of v8+) with UNSUPPORTED_VERSION.
                _ => out.error_code = UNSUPPORTED_VERSION,
            }
            if ctx.version < 4 {
                // No leader epoch field before v4.
                out.leader_epoch = -1;
            }
            partitions.push(out);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let mut response = ListOffsetsResponse::default();
    response.topics = topics;
    ctx.respond(&response)
}
