//! The consumer group protocol of KIP-848: ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe. The group logic is in [`crate::coordinator::consumer_group`];
//! this module decodes, checks the coordinator and the group's type, and watches member
//! sessions.
//!
//! A group id is either a classic group (JoinGroup) or a consumer group: a heartbeat for
//! an id whose classic group has members gets GROUP_ID_NOT_FOUND, and ConsumerGroupDescribe
//! of a classic group answers GROUP_ID_NOT_FOUND so that admin clients fall back to
//! DescribeGroups.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member as DescribedMember,
    TopicPartitions as DescribedPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as HeartbeatAssignment, TopicPartitions,
};
use kafka_protocol::messages::*;

use super::{s, Ctx, Response};
use crate::cluster::ClusterSnapshot;
use crate::coordinator::consumer_group::{self as cg, Assignment, ConsumerGroup, Heartbeat};
use crate::coordinator::group::State;
use crate::protocol::errors::*;
use crate::shard::Shard;

/// Consumer groups one shard coordinates at most (a group without members is dropped).
const CONSUMER_GROUPS_MAX: usize = 100_000;

fn config(shard: &Shard) -> cg::Config {
    cg::Config {
        session_timeout: Duration::from_millis(
            shard.config.group_consumer_session_timeout_ms.max(1) as u64,
        ),
        members_max: shard.config.group_consumer_max_size,
    }
}

/// Whether `group_id` is a classic group in use (members, or a rebalance under way).
fn classic_in_use(shard: &Shard, group_id: &str) -> bool {
    shard
        .groups
        .get(group_id)
        .is_some_and(|g| !matches!(g.state(), State::Empty | State::Dead))
}

pub async fn heartbeat(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: ConsumerGroupHeartbeatRequest,
) -> Response {
    let interval = shard.config.group_consumer_heartbeat_interval_ms;
    let fail = |code: i16, message: String| {
        ctx.respond(
            &ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code)
                .with_error_message(Some(s(message)))
                .with_member_epoch(-1)
                .with_heartbeat_interval_ms(interval),
        )
    };
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        return fail(INVALID_REQUEST, "GroupId can't be empty.".into());
    }
    if let Err(code) = shard.coordinates_group(&group_id) {
        return fail(code, format!("this broker does not coordinate {group_id}"));
    }
    let hb = Heartbeat {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|i| i.to_string()),
        rack_id: request.rack_id.as_ref().map(|i| i.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_names: request
            .subscribed_topic_names
            .as_ref()
            .map(|n| n.iter().map(|t| t.0.to_string()).collect()),
        subscribed_regex: request
            .subscribed_topic_regex
            .as_ref()
            .map(|r| r.to_string()),
        assignor: request.server_assignor.as_ref().map(|a| a.to_string()),
        owned: request.topic_partitions.as_ref().map(|tps| {
            let mut owned = Assignment::new();
            for tp in tps {
                owned
                    .entry(tp.topic_id)
                    .or_default()
                    .extend(tp.partitions.iter().copied());
            }
            owned
        }),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.to_string(),
    };
    if ctx.version == 0 && hb.subscribed_regex.is_some() {
        return fail(INVALID_REQUEST, "SubscribedTopicRegex needs v1.".into());
    }
    if let Err((code, message)) = cg::validate(&hb) {
        return fail(code, message);
    }
    let joining = hb.member_epoch == 0;
    let snapshot = shard.snapshot();
    let result = {
        let mut groups = shard.consumer_groups.groups.borrow_mut();
        if !groups.contains_key(&group_id) {
            if !joining {
                // Unknown here (never joined, or the coordinator restarted): the member
                // rejoins with epoch 0.
                drop(groups);
                return fail(
                    UNKNOWN_MEMBER_ID,
                    format!("group {group_id} has no member {}", hb.member_id),
                );
            }
            if classic_in_use(shard, &group_id) {
                drop(groups);
                return fail(
                    GROUP_ID_NOT_FOUND,
                    format!("Group {group_id} is not a consumer group."),
                );
            }
            if groups.len() >= CONSUMER_GROUPS_MAX {
                drop(groups);
                return fail(
                    GROUP_MAX_SIZE_REACHED,
                    "this coordinator holds its maximum of consumer groups".into(),
                );
            }
            groups.insert(group_id.clone(), ConsumerGroup::new(&group_id));
        }
        let group = groups.get_mut(&group_id).expect("present");
        let result = group.heartbeat(hb, &config(shard), &snapshot, Instant::now());
        if group.members.is_empty() {
            groups.remove(&group_id);
        }
        result
    };
    match result {
        Err((code, message)) => fail(code, message),
        Ok(result) => {
            if result.member_epoch >= 0 || result.member_epoch == cg::LEAVE_STATIC_EPOCH {
                watch_member(shard, &group_id, &result.member_id);
            }
            let assignment = result.assignment.map(|a| {
                HeartbeatAssignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(topic, parts)| {
                            TopicPartitions::default()
                                .with_topic_id(topic)
                                .with_partitions(parts.into_iter().collect())
                        })
                        .collect(),
                )
            });
            ctx.respond(
                &ConsumerGroupHeartbeatResponse::default()
                    .with_member_id(Some(s(result.member_id)))
                    .with_member_epoch(result.member_epoch)
                    .with_heartbeat_interval_ms(interval)
                    .with_assignment(assignment),
            )
        }
    }
}

/// Removes a member once its session (or its time to revoke partitions) runs out.
fn watch_member(shard: &Rc<Shard>, group_id: &str, member_id: &str) {
    let key = (group_id.to_string(), member_id.to_string());
    if !shard
        .consumer_groups
        .watched
        .borrow_mut()
        .insert(key.clone())
    {
        return;
    }
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let session = config(&shard).session_timeout;
        loop {
            let deadline = shard
                .consumer_groups
                .groups
                .borrow()
                .get(&key.0)
                .and_then(|g| g.member_deadline(&key.1, session));
            let Some(deadline) = deadline else {
                break;
            };
            let now = Instant::now();
            if deadline > now {
                let shutdown = shard.shutdown.generation();
                let _ = crate::util::timeout(deadline - now, shard.shutdown.wait(shutdown)).await;
                if shard.shutting_down.get() {
                    break;
                }
                continue;
            }
            let mut groups = shard.consumer_groups.groups.borrow_mut();
            if let Some(group) = groups.get_mut(&key.0) {
                tracing::info!(
                    group = key.0,
                    member = key.1,
                    "consumer group member expired"
                );
                group.remove_member(&key.1);
                if group.members.is_empty() {
                    groups.remove(&key.0);
                }
            }
            break;
        }
        shard.consumer_groups.watched.borrow_mut().remove(&key);
    })
    .detach();
}

fn described(snapshot: &ClusterSnapshot, a: &Assignment) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        a.iter()
            .map(|(topic, parts)| {
                DescribedPartitions::default()
                    .with_topic_id(*topic)
                    .with_topic_name(TopicName(s(snapshot
                        .topic_ids
                        .get(topic)
                        .cloned()
                        .unwrap_or_default())))
                    .with_partitions(parts.iter().copied().collect())
            })
            .collect(),
    )
}

pub async fn describe(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: ConsumerGroupDescribeRequest,
) -> Response {
    let snapshot = shard.snapshot();
    let groups = shard.consumer_groups.groups.borrow();
    let described_groups = request
        .group_ids
        .iter()
        .map(|id| {
            let mut out = DescribedGroup::default().with_group_id(id.clone());
            out.authorized_operations = super::authorized::when(
                request.include_authorized_operations,
                super::authorized::GROUP,
            );
            if let Err(code) = shard.coordinates_group(id) {
                out.error_code = code;
                return out;
            }
            let Some(group) = groups.get(id.0.as_str()) else {
                out.error_code = GROUP_ID_NOT_FOUND;
                out.error_message = Some(s(if classic_in_use(shard, id) {
                    format!("Group {} is not a consumer group.", id.0)
                } else {
                    format!("Group {} not found.", id.0)
                }));
                return out;
            };
            out.group_state = s(group.state_name());
            out.group_epoch = group.epoch;
            out.assignment_epoch = group.assignment_epoch;
            out.assignor_name = s(group.assignor.clone());
            let empty = BTreeMap::new();
            out.members = group
                .members
                .values()
                .map(|m| {
                    DescribedMember::default()
                        .with_member_id(s(m.id.clone()))
                        .with_instance_id(m.instance_id.clone().map(s))
                        .with_rack_id(m.rack_id.clone().map(s))
                        .with_member_epoch(m.epoch)
                        .with_client_id(s(m.client_id.clone()))
                        .with_client_host(s(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.subscribed_names
                                .iter()
                                .map(|n| TopicName(s(n.clone())))
                                .collect(),
                        )
                        .with_subscribed_topic_regex(m.subscribed_regex.clone().map(s))
                        .with_assignment(described(&snapshot, &m.assigned))
                        .with_target_assignment(described(
                            &snapshot,
                            group.target.get(&m.id).unwrap_or(&empty),
                        ))
                        // 1: a member of the consumer protocol (0 would be classic).
                        .with_member_type(1)
                })
                .collect();
            out
        })
        .collect();
    ctx.respond(&ConsumerGroupDescribeResponse::default().with_groups(described_groups))
}

/// ListGroups: the consumer groups that pass the request's state and type filters.
pub fn listed(
    shard: &Shard,
    request: &ListGroupsRequest,
) -> Vec<kafka_protocol::messages::list_groups_response::ListedGroup> {
    let passes = |filter: &[kafka_protocol::protocol::StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    shard
        .consumer_groups
        .groups
        .borrow()
        .values()
        .filter(|g| shard.coordinates_group(&g.id).is_ok())
        .filter(|g| passes(&request.states_filter, g.state_name()))
        .filter(|_| passes(&request.types_filter, "consumer"))
        .map(|g| {
            kafka_protocol::messages::list_groups_response::ListedGroup::default()
                .with_group_id(GroupId(s(g.id.clone())))
                .with_protocol_type(s("consumer"))
                .with_group_state(s(g.state_name()))
                .with_group_type(s("consumer"))
        })
        .collect()
}
