//! The consumer-group membership APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, and the group admin APIs ListGroups, DescribeGroups, DeleteGroups. The
//! committed-offset APIs are in [`super::offsets`].
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
use kafka_protocol::messages::*;

use super::{s, Ctx, Response};
use crate::cluster::broker_id;
use crate::coordinator::group::{
    Group, GroupConfig, JoinArgs, JoinResult, JoinStep, Poll, State, SyncStep,
};
use crate::coordinator::{offsets_partition, shard_of_group, GroupRecord, OFFSETS_TOPIC};
use crate::protocol::errors::*;
use crate::shard::Shard;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

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
    let replicated_groups = request.key_type == KEY_TYPE_GROUP && shard.groups.is_replicated();
    if replicated_groups && shard.snapshot().topic(OFFSETS_TOPIC).is_none() {
        create_offsets_topic(shard).await;
    }
    let snapshot = shard.snapshot();
    let shard_count = snapshot.shard_count;
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
            // A cluster's groups: the leader of the group's offsets partition. Otherwise
            // groups and transactional ids hash to nodes and shards alike.
            let placed = if replicated_groups {
                snapshot.topic(OFFSETS_TOPIC).and_then(|topic| {
                    let p = offsets_partition(key, topic.partitions.len());
                    Some((snapshot.leader_node(topic, p)?, snapshot.owner(topic, p)?))
                })
            } else {
                Some((
                    snapshot.coordinator_node(crate::coordinator::group_hash(key)),
                    shard_of_group(key, shard_count),
                ))
            };
            let address = placed.and_then(|(node, owner)| {
                shard
                    .broker_address_on(&snapshot, node, owner.0 as usize, ctx.listener)
                    .map(|a| (node, owner, a))
            });
            match address {
                Some((node, owner, (host, port))) => {
                    c.node_id = BrokerId(broker_id(node, owner));
                    c.host = s(host);
                    c.port = port;
                }
                None => {
                    c.error_code = COORDINATOR_NOT_AVAILABLE;
                    c.error_message = Some(s(if replicated_groups {
                        "the group's offsets partition has no leader yet"
                    } else {
                        "the coordinating node has not registered yet"
                    }));
                }
            }
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

/// Creates a cluster's `__consumer_offsets` topic (at the first FindCoordinator for a
/// group, as Kafka does): `--offsets-topic-num-partitions` partitions,
/// `--offsets-topic-replication-factor` replicas (at most the members), retention by time
/// only, which never reaches a partition's latest checkpoint (see
/// [`crate::coordinator::CHECKPOINT_INTERVAL_MS`]).
async fn create_offsets_topic(shard: &Rc<Shard>) {
    use crate::cluster::controller::{ControlReply, ControlRequest, TopicSpec};
    let snapshot = shard.snapshot();
    let members = snapshot.members.len().max(1) as i16;
    let day_ms = crate::coordinator::CHECKPOINT_INTERVAL_MS;
    let configs = [
        ("cleanup.policy", "delete".to_string()),
        (
            "retention.ms",
            crate::coordinator::OFFSETS_TOPIC_RETENTION_MS.to_string(),
        ),
        ("retention.bytes", "-1".to_string()),
        ("segment.ms", day_ms.to_string()),
        ("segment.bytes", (100 * 1024 * 1024).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let spec = TopicSpec {
        name: OFFSETS_TOPIC.to_string(),
        partitions: shard.config.offsets_topic_num_partitions,
        replication_factor: shard.config.offsets_topic_replication_factor.min(members),
        assignment: None,
        token: None,
        configs,
    };
    match shard
        .control(ControlRequest::CreateTopics {
            topics: vec![spec],
            validate_only: false,
        })
        .await
    {
        Ok(ControlReply::Topics(outcomes)) => {
            for o in outcomes {
                if o.error_code == NONE {
                    tracing::info!(topic = OFFSETS_TOPIC, "created the consumer offsets topic");
                } else if o.error_code != TOPIC_ALREADY_EXISTS {
                    tracing::warn!(topic = OFFSETS_TOPIC, code = o.error_code, message = ?o.message, "cannot create the consumer offsets topic yet");
                }
            }
        }
        other => tracing::warn!(?other, "cannot create the consumer offsets topic yet"),
    }
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
    if let Err(code) = shard.serves_group(&group_id).await {
        return join_response(ctx, JoinResult::error(code, &member_id));
    }
    // The id of a consumer-protocol group with members (KIP-848).
    if !shard.consumer_groups.remove_if_empty(&group_id) {
        return join_response(
            ctx,
            JoinResult::error(INCONSISTENT_GROUP_PROTOCOL, &member_id),
        );
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
            shard.watch_member(&group, &member_id);
            let failed = JoinResult::error(REBALANCE_IN_PROGRESS, &member_id);
            wait_for(shard, || group.poll_join(&member_id), failed).await
        }
    };
    if result.error_code == NONE {
        shard.watch_member(&group, &result.member_id);
    }
    join_response(ctx, result)
}

pub async fn sync_group(shard: &Rc<Shard>, ctx: &Ctx, request: SyncGroupRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let result = match (
        shard.serves_group(&group_id).await,
        shard.groups.get(&group_id),
    ) {
        (Err(code), _) => Err(code),
        (Ok(()), None) => Err(UNKNOWN_MEMBER_ID),
        (Ok(()), Some(group)) => {
            let instance = request.group_instance_id.as_ref().map(|i| i.to_string());
            let assignments = request
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect();
            let generation = request.generation_id;
            match group.sync(&member_id, instance.as_deref(), generation, assignments) {
                SyncStep::Done(result) => result,
                SyncStep::Store(meta) => {
                    // Durable before anyone is given it: a coordinator taking the group
                    // over starts from this generation and its assignment.
                    match shard.groups.store_membership(&group, meta).await {
                        Ok(()) => sync_wait(shard, &group, &member_id, generation).await,
                        Err(code) => Err(code),
                    }
                }
                SyncStep::Wait => sync_wait(shard, &group, &member_id, generation).await,
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

/// Waits until `member_id`'s assignment of `generation` is in place.
async fn sync_wait(
    shard: &Shard,
    group: &Group,
    member_id: &str,
    generation: i32,
) -> Result<Bytes, i16> {
    wait_for(
        shard,
        || group.poll_sync(member_id, generation),
        Err(REBALANCE_IN_PROGRESS),
    )
    .await
}

pub async fn heartbeat(shard: &Rc<Shard>, ctx: &Ctx, request: HeartbeatRequest) -> Response {
    let group_id = request.group_id.0.to_string();
    let code = match (
        shard.serves_group(&group_id).await,
        shard.groups.get(&group_id),
    ) {
        (Err(code), _) => code,
        (Ok(()), None) => UNKNOWN_MEMBER_ID,
        (Ok(()), Some(group)) => {
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
    let codes = match (
        shard.serves_group(&group_id).await,
        shard.groups.get(&group_id),
    ) {
        (Err(code), _) => {
            response.error_code = code;
            Vec::new()
        }
        (Ok(()), None) => {
            response.error_code = if ctx.version >= 3 {
                NONE
            } else {
                UNKNOWN_MEMBER_ID
            };
            vec![UNKNOWN_MEMBER_ID; leaving.len()]
        }
        (Ok(()), Some(group)) => {
            let codes = group.leave(&leaving);
            shard.groups.store_if_emptied(&group).await;
            codes
        }
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

/// ListGroups v5's type of every group: Strand runs the classic group protocol only.
const GROUP_TYPE: &str = "classic";

pub async fn list_groups(shard: &Rc<Shard>, ctx: &Ctx, request: ListGroupsRequest) -> Response {
    let groups: Vec<Rc<Group>> = shard.groups.groups.borrow().values().cloned().collect();
    let mut listed = super::consumer_group::listed(shard, &request);
    for group in groups {
        if shard.consumer_groups.exists(&group.id) {
            continue;
        }
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
        // v5 (KIP-848): every group here is a classic one; a filter without "classic"
        // (e.g. only "consumer" or "share") lists none of them, as Kafka does.
        if !request.types_filter.is_empty()
            && !request
                .types_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(GROUP_TYPE))
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
                .with_group_type(s(GROUP_TYPE)),
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
            if let Err(code) = shard.coordinates_group(id) {
                out.error_code = code;
                return out;
            }
            if shard.consumer_groups.exists(id) {
                // As Kafka: a consumer-protocol group is described by ConsumerGroupDescribe.
                out.error_code = GROUP_ID_NOT_FOUND;
                out.error_message = Some(s(format!("Group {} is not a classic group.", id.0)));
                return out;
            }
            let Some(group) = shard.groups.get(id) else {
                out.group_state = s("Dead");
                return out;
            };
            let inner = group.inner.borrow();
            out.group_state = s(inner.state.name());
            out.protocol_type = s(inner.protocol_type.clone().unwrap_or_default());
            // As Kafka 4.x: the protocol and each member's subscription metadata are shown
            // only once the group is Stable; during a rebalance they are empty, while each
            // member's current assignment stays visible.
            let stable = inner.state == State::Stable;
            let protocol = if stable {
                inner.protocol_name.clone().unwrap_or_default()
            } else {
                String::new()
            };
            out.protocol_data = s(protocol.clone());
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
                        .with_member_metadata(if stable { metadata } else { Bytes::new() })
                        .with_member_assignment(m.assignment.clone())
                })
                .collect();
            out.authorized_operations = super::authorized::when(
                request.include_authorized_operations,
                super::authorized::GROUP,
            );
            out
        })
        .collect();
    ctx.respond(&DescribeGroupsResponse::default().with_groups(groups))
}

pub async fn delete_groups(shard: &Rc<Shard>, ctx: &Ctx, request: DeleteGroupsRequest) -> Response {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in &request.groups_names {
        let code = if let Err(code) = shard.coordinates_group(id) {
            code
        } else {
            match shard.groups.get(id) {
                _ if !shard.consumer_groups.remove_if_empty(id) => NON_EMPTY_GROUP,
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
                    Err(err) => crate::coordinator::persist_failed(&err, id, "a group deletion"),
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
