//! The consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//!
//! Each request is answered by the shard that owns the group ([`crate::coordinator`]);
//! any other shard answers NOT_COORDINATOR. Waiting calls (JoinGroup, SyncGroup) wait on
//! the coordinator's notification with a timeout at the group's next deadline.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
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

use super::{Ctx, Response};
use crate::cluster::broker_id;
use crate::coordinator::group::{Group, GroupConfig, JoinArgs, JoinResult, JoinStep, Poll, State};
use crate::coordinator::{shard_of_group, Committed, GroupRecord};
use crate::protocol::errors::*;
use crate::shard::Shard;
use crate::util::now_ms;

/// Kafka's `offset.metadata.max.bytes`.
const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

fn group_config(shard: &Shard) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::from_millis(
            shard.config.group_initial_rebalance_delay_ms,
        ),
        session_timeout_ms_min: shard.config.group_min_session_timeout_ms,
        session_timeout_ms_max: shard.config.group_max_session_timeout_ms,
        members_max: shard.config.group_max_size,
    }
}

pub async fn find_coordinator(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: FindCoordinatorRequest,
) -> Response {
    let shard_count = shard.snapshot().shard_count;
    let lookup = |key: &str| -> Coordinator {
        let mut c = Coordinator::default()
            .with_key(s(key))
            .with_node_id(BrokerId(-1))
            .with_host(s(""))
            .with_port(-1);
        if request.key_type != KEY_TYPE_GROUP && request.key_type != KEY_TYPE_TRANSACTION {
            c.error_code = INVALID_REQUEST;
            c.error_message = Some(s(format!("unknown key type {}", request.key_type)));
        } else if key.is_empty() {
            c.error_code = if request.key_type == KEY_TYPE_GROUP {
                INVALID_GROUP_ID
            } else {
                INVALID_REQUEST
            };
        } else {
            // Groups and transactional ids hash to shards alike.
            let owner = shard_of_group(key, shard_count);
            let (host, port) = shard.config.shard_advertised(owner.0 as usize);
            c.node_id = BrokerId(broker_id(shard.node, owner));
            c.host = s(host);
            c.port = port;
        }
        c
    };
    let mut response = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        response.coordinators = request.coordinator_keys.iter().map(|k| lookup(k)).collect();
    } else {
        let c = lookup(&request.key);
        response.error_code = c.error_code;
        response.error_message = c.error_message;
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    ctx.respond(&response)
}

/// Watches a member's session: removes it once it stops heartbeating.
fn watch_member(shard: &Rc<Shard>, group: &Rc<Group>, member_id: &str) {
    let key = (group.id.clone(), member_id.to_string());
    if !shard.groups.watched.borrow_mut().insert(key.clone()) {
        return;
    }
    let group = group.clone();
    let shard = shard.clone();
    glommio::spawn_local(async move {
        while let Some(deadline) = group.member_deadline(&key.1) {
            let now = Instant::now();
            if deadline > now {
                glommio::timer::sleep(deadline - now).await;
            }
            if group.expire_member(&key.1) {
                break;
            }
        }
        shard.groups.watched.borrow_mut().remove(&key);
    })
    .detach();
}

/// Waits on the coordinator until `poll` is done or the shard shuts down.
async fn wait_for<T>(shard: &Shard, mut poll: impl FnMut() -> Poll<T>, on_shutdown: T) -> T {
    loop {
        let seen = shard.groups.changed.generation();
        match poll() {
            Poll::Done(value) => return value,
            Poll::Wait(deadline) => {
                if shard.shutting_down.get() {
                    return on_shutdown;
                }
                let timeout = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                let shutdown = shard.shutdown.generation();
                let _ = crate::util::timeout(
                    timeout,
                    futures_lite::future::or(
                        shard.groups.changed.wait(seen),
                        shard.shutdown.wait(shutdown),
                    ),
                )
                .await;
            }
        }
    }
}

fn join_response(ctx: &Ctx, result: JoinResult) -> Response {
    let mut response = JoinGroupResponse::default()
        .with_error_code(result.error_code)
        .with_generation_id(result.generation)
        .with_protocol_type(result.protocol_type.map(s))
        .with_leader(s(result.leader))
        .with_member_id(s(result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.map(s))
                        .with_metadata(metadata)
                })
                .collect(),
        );
    // v0-v6 have a non-nullable protocol name.
    response.protocol_name = Some(s(result.protocol_name.unwrap_or_default()));
    if ctx.version >= 7 && response.error_code != NONE {
        response.protocol_name = None;
    }
    ctx.respond(&response)
}

pub async fn join_group(shard: &Rc<Shard>, ctx: &Ctx, request: JoinGroupRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    if group_id.is_empty() {
        return join_response(ctx, JoinResult::error(INVALID_GROUP_ID, &member_id));
    }
    if !shard.coordinates(&group_id) {
        return join_response(ctx, JoinResult::error(NOT_COORDINATOR, &member_id));
    }
    let group = shard.groups.get_or_create(&group_id);
    let client_id = ctx.client_id.clone();
    let args = JoinArgs {
        member_id,
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client_id.clone(),
        client_host: ctx.client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: it equals the session timeout.
        rebalance_timeout_ms: if ctx.version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: ctx.version >= 4,
    };
    let new_member_id = || {
        format!(
            "{}-{}",
            if client_id.is_empty() {
                "member"
            } else {
                &client_id
            },
            uuid::Uuid::new_v4()
        )
    };
    let result = match group.join(args, &group_config(shard), new_member_id) {
        JoinStep::Done(result) => result,
        JoinStep::Wait(member_id) => {
            watch_member(shard, &group, &member_id);
            let failed = JoinResult::error(REBALANCE_IN_PROGRESS, &member_id);
            wait_for(shard, || group.poll_join(&member_id), failed).await
        }
    };
    if result.error_code == NONE {
        watch_member(shard, &group, &result.member_id);
    }
    join_response(ctx, result)
}

pub async fn sync_group(shard: &Rc<Shard>, ctx: &Ctx, request: SyncGroupRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let result = match (shard.coordinates(&group_id), shard.groups.get(&group_id)) {
        (false, _) => Err(NOT_COORDINATOR),
        (true, None) => Err(UNKNOWN_MEMBER_ID),
        (true, Some(group)) => {
            let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
            let assignments = request
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect();
            match group.sync(
                &member_id,
                instance.as_deref(),
                request.generation_id,
                assignments,
            ) {
                Poll::Done(result) => result,
                Poll::Wait(_) => {
                    let generation = request.generation_id;
                    wait_for(
                        shard,
                        || group.poll_sync(&member_id, generation),
                        Err(REBALANCE_IN_PROGRESS),
                    )
                    .await
                }
            }
        }
    };
    let group = shard.groups.get(&group_id);
    let (protocol_type, protocol_name) = group
        .map(|g| {
            let inner = g.inner.borrow();
            (inner.protocol_type.clone(), inner.protocol_name.clone())
        })
        .unwrap_or_default();
    let mut response = SyncGroupResponse::default();
    match result {
        Ok(assignment) => {
            response.assignment = assignment;
            response.protocol_type = protocol_type.map(s);
            response.protocol_name = protocol_name.map(s);
        }
        Err(code) => {
            response.error_code = code;
            response.assignment = Bytes::new();
        }
    }
    ctx.respond(&response)
}

pub async fn heartbeat(shard: &Rc<Shard>, ctx: &Ctx, request: HeartbeatRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let code = match (shard.coordinates(&group_id), shard.groups.get(&group_id)) {
        (false, _) => NOT_COORDINATOR,
        (true, None) => UNKNOWN_MEMBER_ID,
        (true, Some(group)) => {
            let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
            group.heartbeat(
                &request.member_id,
                instance.as_deref(),
                request.generation_id,
            )
        }
    };
    ctx.respond(&HeartbeatResponse::default().with_error_code(code))
}

pub async fn leave_group(shard: &Rc<Shard>, ctx: &Ctx, request: LeaveGroupRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let leaving: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let mut response = LeaveGroupResponse::default();
    let codes = match (shard.coordinates(&group_id), shard.groups.get(&group_id)) {
        (false, _) => {
            response.error_code = NOT_COORDINATOR;
            Vec::new()
        }
        (true, None) => {
            response.error_code = if ctx.version >= 3 {
                NONE
            } else {
                UNKNOWN_MEMBER_ID
            };
            vec![UNKNOWN_MEMBER_ID; leaving.len()]
        }
        (true, Some(group)) => group.leave(&leaving),
    };
    if ctx.version >= 3 {
        response.members = leaving
            .into_iter()
            .zip(codes)
            .map(|((id, instance), code)| {
                MemberResponse::default()
                    .with_member_id(s(id))
                    .with_group_instance_id(instance.map(s))
                    .with_error_code(code)
            })
            .collect();
    } else if let Some(code) = codes.first() {
        response.error_code = *code;
    }
    ctx.respond(&response)
}

pub async fn offset_commit(shard: &Rc<Shard>, ctx: &Ctx, request: OffsetCommitRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
    let generation = request.generation_id_or_member_epoch;
    let group_code = if group_id.is_empty() {
        INVALID_GROUP_ID
    } else if !shard.coordinates(&group_id) {
        NOT_COORDINATOR
    } else {
        let group = shard.groups.get_or_create(&group_id);
        group.check_commit(&request.member_id, instance.as_deref(), generation)
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
                let code = commit_check(
                    group_code,
                    meta.map(|m| &**m),
                    p.partition_index,
                    p.committed_metadata.as_deref(),
                );
                if code == NONE {
                    records.push(GroupRecord::Offset {
                        group: group_id.clone(),
                        topic: name.clone(),
                        partition: p.partition_index,
                        committed: Some(Committed {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                            commit_ms: now,
                        }),
                    });
                }
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
            })
            .collect();
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    if !records.is_empty() {
        let persisted = shard.groups.persist(records.clone()).await;
        match persisted {
            Ok(()) => {
                if let Some(group) = shard.groups.get(&group_id) {
                    apply_records(&group, records);
                }
            }
            Err(err) => {
                tracing::error!(group = %group_id, %err, "cannot persist committed offsets");
                for t in &mut topics {
                    for p in &mut t.partitions {
                        if p.error_code == NONE {
                            p.error_code = COORDINATOR_NOT_AVAILABLE;
                        }
                    }
                }
            }
        }
    }
    ctx.respond(&OffsetCommitResponse::default().with_topics(topics))
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
    if !require_stable || !shard.coordinates(group_id) {
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
    if !shard.coordinates(group_id) {
        return Err(NOT_COORDINATOR);
    }
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
        response.groups = request
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                let unstable = unstable_offsets(shard, &g.group_id, request.require_stable);
                match fetch_offsets(shard, &g.group_id, wanted) {
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
    match fetch_offsets(shard, &request.group_id, wanted) {
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

pub async fn list_groups(shard: &Rc<Shard>, ctx: &Ctx, request: ListGroupsRequest) -> Response {
    let groups: Vec<Rc<Group>> = shard.groups.groups.borrow().values().cloned().collect();
    let mut listed = Vec::new();
    for group in groups {
        let inner = group.inner.borrow();
        if inner.state == State::Dead {
            continue;
        }
        let state = inner.state.name();
        if !request.states_filter.is_empty()
            && !request
                .states_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(state))
        {
            continue;
        }
        listed.push(
            ListedGroup::default()
                .with_group_id(GroupId(s(group.id.clone())))
                .with_protocol_type(s(inner
                    .protocol_type
                    .clone()
                    .unwrap_or_else(|| "consumer".into())))
                .with_group_state(s(state))
                .with_group_type(s("classic")),
        );
    }
    ctx.respond(&ListGroupsResponse::default().with_groups(listed))
}

pub async fn describe_groups(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: DescribeGroupsRequest,
) -> Response {
    let groups = request
        .groups
        .iter()
        .map(|id| {
            let mut out = DescribedGroup::default().with_group_id(id.clone());
            if !shard.coordinates(id) {
                out.error_code = NOT_COORDINATOR;
                return out;
            }
            let Some(group) = shard.groups.get(id) else {
                out.group_state = s("Dead");
                return out;
            };
            let inner = group.inner.borrow();
            out.group_state = s(inner.state.name());
            out.protocol_type = s(inner.protocol_type.clone().unwrap_or_default());
            out.protocol_data = s(inner.protocol_name.clone().unwrap_or_default());
            let protocol = inner.protocol_name.clone().unwrap_or_default();
            out.members = inner
                .members
                .values()
                .map(|m| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default();
                    DescribedGroupMember::default()
                        .with_member_id(s(m.id.clone()))
                        .with_group_instance_id(m.instance_id.clone().map(s))
                        .with_client_id(s(m.client_id.clone()))
                        .with_client_host(s(m.client_host.clone()))
                        .with_member_metadata(metadata)
                        .with_member_assignment(m.assignment.clone())
                })
                .collect();
            out.authorized_operations = i32::MIN;
            out
        })
        .collect();
    ctx.respond(&DescribeGroupsResponse::default().with_groups(groups))
}

pub async fn delete_groups(shard: &Rc<Shard>, ctx: &Ctx, request: DeleteGroupsRequest) -> Response {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in &request.groups_names {
        let code = if !shard.coordinates(id) {
            NOT_COORDINATOR
        } else {
            match shard.groups.get(id) {
                None => GROUP_ID_NOT_FOUND,
                Some(group) if group.state() != State::Empty => NON_EMPTY_GROUP,
                Some(group) => match shard
                    .groups
                    .persist(vec![GroupRecord::DeleteGroup {
                        group: id.to_string(),
                    }])
                    .await
                {
                    Ok(()) => {
                        group.kill();
                        shard.groups.remove(id);
                        NONE
                    }
                    Err(err) => {
                        tracing::error!(group = %id.as_str(), %err, "cannot persist a group deletion");
                        COORDINATOR_NOT_AVAILABLE
                    }
                },
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code),
        );
    }
    ctx.respond(&DeleteGroupsResponse::default().with_results(results))
}

/// The topics a consumer group's members subscribe to, from their consumer-protocol
/// metadata (a version, then a ConsumerProtocolSubscription); `None` if the group does not
/// use the consumer protocol or a member's metadata does not decode.
fn subscribed_topics(group: &Group) -> Option<std::collections::HashSet<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let inner = group.inner.borrow();
    if inner.protocol_type.as_deref() != Some("consumer") {
        return None;
    }
    let protocol = inner.protocol_name.clone()?;
    let mut topics = std::collections::HashSet::new();
    for member in inner.members.values() {
        let (_, metadata) = member.protocols.iter().find(|(n, _)| *n == protocol)?;
        let mut buf = metadata.clone();
        if buf.len() < 2 {
            return None;
        }
        let version = i16::from_be_bytes([buf[0], buf[1]]);
        let _ = bytes::Buf::get_i16(&mut buf);
        // Newer versions only add fields: decode at the highest version this crate knows.
        let version = version.clamp(0, 3);
        let subscription = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
        topics.extend(subscription.topics.iter().map(|t| t.to_string()));
    }
    Some(topics)
}

pub async fn offset_delete(shard: &Rc<Shard>, ctx: &Ctx, request: OffsetDeleteRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let mut response = OffsetDeleteResponse::default();
    let group = match (shard.coordinates(&group_id), shard.groups.get(&group_id)) {
        (false, _) => {
            response.error_code = NOT_COORDINATOR;
            return ctx.respond(&response);
        }
        (true, None) => {
            response.error_code = GROUP_ID_NOT_FOUND;
            return ctx.respond(&response);
        }
        (true, Some(group)) => group,
    };
    // Offsets of topics the group's members subscribe to cannot be deleted (Kafka's rule):
    // their consumers would reset. Subscriptions are read from the members' consumer-
    // protocol metadata; a group whose subscriptions cannot be read counts as subscribed
    // to everything.
    let subscribed = if group.state() == State::Empty {
        Some(std::collections::HashSet::new())
    } else {
        subscribed_topics(&group)
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
                tracing::error!(group = %group_id, %err, "cannot persist an offset deletion");
                response.error_code = COORDINATOR_NOT_AVAILABLE;
            }
        }
    }
    ctx.respond(&response)
}
