//! WriteTxnMarkers (key 27): writes commit or abort markers for a producer to partitions.
//!
//! In Kafka the transaction coordinator sends it to partition leaders, and an operator
//! sends it to abort a hanging transaction (`kafka-transactions.sh abort`,
//! `Admin.abortTransaction`): a transaction left open in a partition with no coordinator
//! to end it holds back the last stable offset, and read_committed consumers, for ever.
//! Strand's coordinator writes its markers over the mesh; this API is the operator's path.
//! Each partition's marker is written by the shard that owns it (over the mesh when that
//! is not this one), and the answer waits until it is durable. A marker the partition does
//! not need (no open transaction of that producer and epoch) is a no-op, as a repeated
//! marker is.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::{Ctx, Response};
use crate::cluster::ShardId;
use crate::protocol::errors::*;
use crate::shard::mesh::{MeshReply, MeshRequest, TxnMarkers};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, request: WriteTxnMarkersRequest) -> Response {
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in &request.markers {
        let snapshot = shard.snapshot();
        // (topic, partition) -> code, in request order; unknown ones answered at once.
        let mut codes: Vec<Vec<i16>> = Vec::with_capacity(marker.topics.len());
        let mut by_shard: BTreeMap<u16, Vec<(usize, usize, String, i32)>> = BTreeMap::new();
        for (t, topic) in marker.topics.iter().enumerate() {
            let name = topic.name.0.to_string();
            let mut topic_codes = vec![NONE; topic.partition_indexes.len()];
            for (i, &p) in topic.partition_indexes.iter().enumerate() {
                match snapshot.topic(&name).and_then(|m| snapshot.owner(m, p)) {
                    Some(owner) => {
                        by_shard
                            .entry(owner.0)
                            .or_default()
                            .push((t, i, name.clone(), p))
                    }
                    None => topic_codes[i] = UNKNOWN_TOPIC_OR_PARTITION,
                }
            }
            codes.push(topic_codes);
        }
        let producer_id = marker.producer_id.0;
        if producer_id < 0 || marker.producer_epoch < 0 {
            for c in codes.iter_mut().flatten() {
                *c = INVALID_REQUEST;
            }
            by_shard.clear();
        }
        let sends: Vec<_> = by_shard
            .into_iter()
            .map(|(to, list)| {
                let markers = TxnMarkers {
                    producer_id,
                    producer_epoch: marker.producer_epoch,
                    commit: marker.transaction_result,
                    partitions: list.iter().map(|(_, _, t, p)| (t.clone(), *p)).collect(),
                };
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let written = if to == shard.id.0 {
                        shard.write_txn_markers(&markers).await
                    } else {
                        let request = MeshRequest::WriteTxnMarkers(markers.clone());
                        match shard.mesh.request(ShardId(to), request).await {
                            Ok(MeshReply::TxnMarkers(codes)) => codes,
                            _ => vec![COORDINATOR_NOT_AVAILABLE; markers.partitions.len()],
                        }
                    };
                    (list, written)
                })
            })
            .collect();
        for task in sends {
            let (list, written) = task.await;
            for ((t, i, topic, p), code) in list.into_iter().zip(written) {
                if code != NONE {
                    tracing::warn!(topic = %topic, partition = p, producer_id, code, "transaction marker not written");
                }
                codes[t][i] = code;
            }
        }
        let commit = marker.transaction_result;
        tracing::info!(
            producer_id,
            epoch = marker.producer_epoch,
            commit,
            "WriteTxnMarkers served"
        );
        let topics = marker
            .topics
            .iter()
            .zip(codes)
            .map(|(topic, codes)| {
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_partitions(
                        topic
                            .partition_indexes
                            .iter()
                            .zip(codes)
                            .map(|(&p, code)| {
                                WritableTxnMarkerPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    ctx.respond(&WriteTxnMarkersResponse::default().with_markers(results))
}
