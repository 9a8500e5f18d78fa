//! The transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit, and
//! the inspection APIs DescribeTransactions, ListTransactions and DescribeProducers.
//!
//! Each decodes its request, asks the transaction coordinator's driver
//! ([`crate::shard::txn`]) or state ([`crate::coordinator::txn`]), and encodes the answer;
//! InitProducerId with a transactional id is in [`super::init_producer_id`].

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

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

use super::offsets::{commit_offsets, OffsetToCommit};
use super::{s, Ctx, Response};
use crate::coordinator::txn::TxnState;
use crate::protocol::errors::*;
use crate::shard::{txn, Shard};
use crate::util::now_ms;

// --------------------------------------------------------------------- InitProducerId

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
    let code = txn::check_txn_request(
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
    // A cluster's transaction markers are written by the coordinator's node only: a
    // transaction may span the partitions this node leads, not another node's.
    let elsewhere: BTreeSet<(String, i32)> = wanted
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
        .filter(|(t, p)| {
            snapshot.topic(t).is_some_and(|m| {
                m.is_replicated(*p) || snapshot.leader_node(m, *p) != Some(shard.node)
            })
        })
        .collect();
    if !elsewhere.is_empty() {
        tracing::warn!(partitions = ?elsewhere, "a transaction asked for partitions another node leads; refused (cluster transactions span one node)");
        return answer(&|t, p| {
            if elsewhere.contains(&(t.to_string(), p)) {
                INVALID_TXN_STATE
            } else {
                OPERATION_NOT_ATTEMPTED
            }
        });
    }
    let added = wanted
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)));
    let code = txn::add_to_txn(shard, &id, added.collect(), None).await;
    answer(&|_, _| code)
}

pub async fn add_offsets_to_txn(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: AddOffsetsToTxnRequest,
) -> Response {
    let id = request.transactional_id.0.to_string();
    let mut code = txn::check_txn_request(
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
            txn::add_to_txn(shard, &id, Vec::new(), Some(group)).await
        };
    }
    ctx.respond(&AddOffsetsToTxnResponse::default().with_error_code(code))
}

// ----------------------------------------------------------------------------- EndTxn

pub async fn end_txn(shard: &Rc<Shard>, ctx: &Ctx, request: EndTxnRequest) -> Response {
    let id = request.transactional_id.0.to_string();
    let code = txn::end_txn(
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
    } else if let Err(code) = shard.coordinates_group(&group_id) {
        code
    } else if producer_id < 0 {
        INVALID_PRODUCER_ID_MAPPING
    } else {
        let group = shard.groups.get_or_create(&group_id);
        let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
        group.check_commit(
            &request.member_id,
            instance.as_deref(),
            request.generation_id,
            true,
        )
    };
    let wanted = request.topics.iter().flat_map(|t| {
        t.partitions.iter().map(|p| OffsetToCommit {
            topic: t.name.0.as_str(),
            partition: p.partition_index,
            offset: p.committed_offset,
            leader_epoch: p.committed_leader_epoch,
            metadata: p.committed_metadata.as_deref(),
        })
    });
    let pid = Some(producer_id);
    let mut codes = commit_offsets(shard, &group_id, group_code, pid, wanted.collect())
        .await
        .into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().unwrap_or(UNKNOWN_SERVER_ERROR))
                        })
                        .collect(),
                )
        })
        .collect();
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
            if !shard.coordinates(&id_str) {
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
                    match shard.owned_partition(&name, p) {
                        Err(code) => out.error_code = code,
                        Ok(partition) => {
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
