//! The committed-offset APIs of consumer groups: OffsetCommit, OffsetFetch, OffsetDelete.
//!
//! Each request is answered by the shard that coordinates the group; any other shard
//! answers NOT_COORDINATOR. Offsets are durable (appended to the shard's group log and
//! `fdatasync`ed) before a commit or a deletion is answered. TxnOffsetCommit shares the
//! per-partition checks ([`commit_check`]) and lives with the transaction APIs.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{s, Ctx, Response};
use crate::coordinator::group::{Group, State};
use crate::coordinator::{Committed, GroupRecord};
use crate::protocol::errors::*;
use crate::shard::Shard;
use crate::util::now_ms;

/// Kafka's `offset.metadata.max.bytes`.
const OFFSET_METADATA_BYTES_MAX: usize = 4096;

pub async fn offset_commit(shard: &Rc<Shard>, ctx: &Ctx, request: OffsetCommitRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
    let generation = request.generation_id_or_member_epoch;
    let group_code = if group_id.is_empty() {
        INVALID_GROUP_ID
    } else if let Err(code) = shard.coordinates_group(&group_id) {
        code
    } else if let Some(code) =
        shard
            .consumer_groups
            .check_member_epoch(&group_id, &request.member_id, generation, false)
    {
        // A consumer-protocol group (KIP-848): the member's epoch must be current.
        code
    } else {
        let group = shard.groups.get_or_create(&group_id);
        group.check_commit(&request.member_id, instance.as_deref(), generation, false)
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
    let mut codes = commit_offsets(shard, &group_id, group_code, None, wanted.collect())
        .await
        .into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().unwrap_or(UNKNOWN_SERVER_ERROR))
                        })
                        .collect(),
                )
        })
        .collect();
    ctx.respond(&OffsetCommitResponse::default().with_topics(topics))
}

/// One partition's offset in an OffsetCommit or a TxnOffsetCommit.
pub(super) struct OffsetToCommit<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<&'a str>,
}

/// Checks the offsets of one commit request and makes the accepted ones durable: the
/// shared body of OffsetCommit and TxnOffsetCommit. `group_code` is the group-level
/// verdict (NONE: the member may commit); with a `producer_id` the offsets are a
/// transaction's, pending until its marker commits or drops them. Returns an error code
/// per offset, in order.
pub(super) async fn commit_offsets(
    shard: &Shard,
    group_id: &str,
    group_code: i16,
    producer_id: Option<i64>,
    offsets: Vec<OffsetToCommit<'_>>,
) -> Vec<i16> {
    let snapshot = shard.snapshot();
    let now = now_ms();
    let mut records = Vec::new();
    let mut codes = Vec::with_capacity(offsets.len());
    for o in &offsets {
        let code = commit_check(
            group_code,
            snapshot.topic(o.topic).map(|m| &**m),
            o.partition,
            o.metadata,
        );
        if code == NONE {
            let committed = Committed {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata.map(str::to_string),
                commit_ms: now,
            };
            records.push(match producer_id {
                None => GroupRecord::Offset {
                    group: group_id.to_string(),
                    topic: o.topic.to_string(),
                    partition: o.partition,
                    committed: Some(committed),
                },
                Some(producer_id) => GroupRecord::TxnOffset {
                    group: group_id.to_string(),
                    producer_id,
                    topic: o.topic.to_string(),
                    partition: o.partition,
                    committed,
                },
            });
        }
        codes.push(code);
    }
    if records.is_empty() {
        return codes;
    }
    if let Err(err) = shard.groups.persist(records.clone()).await {
        let failed = crate::coordinator::persist_failed(&err, group_id, "committed offsets");
        for code in codes.iter_mut().filter(|c| **c == NONE) {
            *code = failed;
        }
        return codes;
    }
    if shard.coordinates_group(group_id).is_err() {
        // Committed, but the partition's leadership moved meanwhile: the new coordinator
        // reads the commit back; this shard keeps no group for it.
        return codes;
    }
    let group = shard.groups.get_or_create(group_id);
    match producer_id {
        None => apply_records(&group, records),
        Some(producer_id) => {
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
    }
    codes
}

/// The error for one partition of an OffsetCommit or TxnOffsetCommit (NONE: commit it).
pub(super) fn commit_check(
    group_code: i16,
    topic: Option<&crate::cluster::TopicMeta>,
    partition: i32,
    metadata: Option<&str>,
) -> i16 {
    if group_code != NONE {
        group_code
    } else if topic.is_none_or(|m| partition < 0 || partition as usize >= m.partitions.len()) {
        UNKNOWN_TOPIC_OR_PARTITION
    } else if metadata.is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX) {
        OFFSET_METADATA_TOO_LARGE
    } else {
        NONE
    }
}

/// Partitions with offsets pending in an open transaction, when the client asked for stable
/// offsets only (OffsetFetch v7+ `require_stable`, sent by read_committed consumers): they
/// get UNSTABLE_OFFSET_COMMIT and the client asks again.
fn unstable_offsets(
    shard: &Shard,
    group_id: &str,
    require_stable: bool,
) -> std::collections::HashSet<(String, i32)> {
    if !require_stable || shard.coordinates_group(group_id).is_err() {
        return Default::default();
    }
    let Some(group) = shard.groups.get(group_id) else {
        return Default::default();
    };
    let pending = group.txn_offsets.borrow();
    pending.values().flat_map(|o| o.keys().cloned()).collect()
}

pub(super) fn apply_records(group: &Group, records: Vec<GroupRecord>) {
    let mut offsets = group.offsets.borrow_mut();
    for record in records {
        if let GroupRecord::Offset {
            topic,
            partition,
            committed,
            ..
        } = record
        {
            match committed {
                Some(c) => {
                    offsets.insert((topic, partition), c);
                }
                None => {
                    offsets.remove(&(topic, partition));
                }
            }
        }
    }
}

/// A topic and its partitions' committed offsets (`None`: nothing committed).
type TopicOffsets = (String, Vec<(i32, Option<Committed>)>);

/// Committed offsets of one group: (topic, [(partition, committed)]), for the requested
/// topics/partitions or all of them.
fn fetch_offsets(
    shard: &Shard,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<TopicOffsets>, i16> {
    shard.coordinates_group(group_id)?;
    let group = shard.groups.get(group_id);
    let offsets = group
        .as_ref()
        .map(|g| g.offsets.borrow().clone())
        .unwrap_or_default();
    Ok(match wanted {
        Some(wanted) => wanted
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|p| (p, offsets.get(&(topic.clone(), p)).cloned()))
                    .collect();
                (topic, found)
            })
            .collect(),
        None => {
            let mut by_topic: Vec<TopicOffsets> = Vec::new();
            for ((topic, p), c) in offsets {
                match by_topic.last_mut() {
                    Some((t, list)) if *t == topic => list.push((p, Some(c))),
                    _ => by_topic.push((topic, vec![(p, Some(c))])),
                }
            }
            by_topic
        }
    })
}

pub async fn offset_fetch(shard: &Rc<Shard>, ctx: &Ctx, request: OffsetFetchRequest) -> Response {
    let mut response = OffsetFetchResponse::default();
    if ctx.version >= 8 {
        // A coordinator cut off from the others answers nothing: what it holds may be
        // older than what the new one has committed since (see `Shard::serves_group`).
        let mut served = Vec::with_capacity(request.groups.len());
        for g in &request.groups {
            served.push(shard.serves_group(&g.group_id).await);
        }
        response.groups = request
            .groups
            .iter()
            .zip(served)
            .map(|(g, served)| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                let unstable = unstable_offsets(shard, &g.group_id, request.require_stable);
                // v9 (KIP-848): a consumer-protocol member fetches at its current epoch.
                let member = g.member_id.as_deref().unwrap_or_default();
                let checked = shard
                    .consumer_groups
                    .check_member_epoch(&g.group_id, member, g.member_epoch, true)
                    .filter(|_| ctx.version >= 9 && shard.coordinates_group(&g.group_id).is_ok())
                    .filter(|code| *code != NONE);
                match checked.map_or_else(
                    || served.and_then(|()| fetch_offsets(shard, &g.group_id, wanted)),
                    Err,
                ) {
                    Err(code) => out.error_code = code,
                    Ok(topics) => {
                        out.topics = topics
                            .into_iter()
                            .map(|(topic, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(topic.clone())))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|(p, c)| {
                                                let (offset, epoch, metadata) = committed_fields(c);
                                                let part = OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(metadata);
                                                if unstable.contains(&(topic.clone(), p)) {
                                                    part.with_committed_offset(-1)
                                                        .with_error_code(UNSTABLE_OFFSET_COMMIT)
                                                } else {
                                                    part
                                                }
                                            })
                                            .collect(),
                                    )
                            })
                            .collect()
                    }
                }
                out
            })
            .collect();
        return ctx.respond(&response);
    }
    let wanted = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let unstable = unstable_offsets(shard, &request.group_id, request.require_stable);
    let served = shard.serves_group(&request.group_id).await;
    match served.and_then(|()| fetch_offsets(shard, &request.group_id, wanted)) {
        Err(code) => {
            response.error_code = code;
            // v0-v1 carry errors per partition only.
            if ctx.version < 2 {
                response.topics = request
                    .topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| {
                        OffsetFetchResponseTopic::default()
                            .with_name(t.name)
                            .with_partitions(
                                t.partition_indexes
                                    .into_iter()
                                    .map(|p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
            }
        }
        Ok(topics) => {
            response.topics = topics
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(topic.clone())))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(p, c)| {
                                    let (offset, epoch, metadata) = committed_fields(c);
                                    let part = OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(metadata);
                                    if unstable.contains(&(topic.clone(), p)) {
                                        part.with_committed_offset(-1)
                                            .with_error_code(UNSTABLE_OFFSET_COMMIT)
                                    } else {
                                        part
                                    }
                                })
                                .collect(),
                        )
                })
                .collect();
        }
    }
    ctx.respond(&response)
}

/// (offset, leader epoch, metadata) as OffsetFetch reports them; -1 when nothing is committed.
fn committed_fields(c: Option<Committed>) -> (i64, i32, Option<StrBytes>) {
    match c {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            Some(s(c.metadata.unwrap_or_default())),
        ),
        None => (-1, -1, Some(s(""))),
    }
}

pub async fn offset_delete(shard: &Rc<Shard>, ctx: &Ctx, request: OffsetDeleteRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let mut response = OffsetDeleteResponse::default();
    let group = match (
        shard.coordinates_group(&group_id),
        shard.groups.get(&group_id),
    ) {
        (Err(code), _) => {
            response.error_code = code;
            return ctx.respond(&response);
        }
        (Ok(()), None) => {
            response.error_code = GROUP_ID_NOT_FOUND;
            return ctx.respond(&response);
        }
        (Ok(()), Some(group)) => group,
    };
    // Offsets of topics the group's members subscribe to cannot be deleted (Kafka's rule):
    // their consumers would reset. Subscriptions are read from the members' consumer-
    // protocol metadata; a group whose subscriptions cannot be read counts as subscribed
    // to everything.
    let subscribed = if group.state() == State::Empty {
        Some(std::collections::HashSet::new())
    } else {
        group.subscribed_topics()
    };
    let mut records = Vec::new();
    response.topics = request
        .topics
        .iter()
        .map(|t| {
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let busy = subscribed
                                .as_ref()
                                .is_none_or(|topics| topics.contains(t.name.0.as_str()));
                            let code = if busy {
                                GROUP_SUBSCRIBED_TO_TOPIC
                            } else {
                                NONE
                            };
                            if !busy {
                                records.push(GroupRecord::Offset {
                                    group: group_id.clone(),
                                    topic: t.name.0.to_string(),
                                    partition: p.partition_index,
                                    committed: None,
                                });
                            }
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    if !records.is_empty() {
        match shard.groups.persist(records.clone()).await {
            Ok(()) => apply_records(&group, records),
            Err(err) => {
                response.error_code =
                    crate::coordinator::persist_failed(&err, &group_id, "an offset deletion");
            }
        }
    }
    ctx.respond(&response)
}
