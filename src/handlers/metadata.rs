//! Metadata: brokers (one per shard), topics, and the shard that leads each partition.
//!
//! This is what steers clients: a partition's leader is the broker id of the shard that
//! owns it, so the client opens its produce/fetch connection to that shard's port.
//! Unknown topics are created on the fly when both the broker (`--auto-create-topics`) and
//! the client (`allow_auto_topic_creation`) allow it.
//!
//! The response stays bounded: all topics are at most the partition cap
//! (`--max-partitions-per-shard` × shards) entries, and a request naming topics gets one
//! entry per distinct name or id (Kafka answers a set too), so naming one topic 100,000
//! times cannot make the broker build 100,000 copies of it; distinct unknown names get an
//! entry each no larger than the name the request carried.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{Ctx, Response};
use crate::cluster::controller::{ControlReply, ControlRequest, TopicSpec};
use crate::cluster::{broker_id, validate_topic_name, ClusterSnapshot, NodeId, ShardId, TopicMeta};
use crate::protocol::errors::*;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, request: MetadataRequest) -> Response {
    let mut snapshot = shard.snapshot();
    // v0: an empty list means all topics; v1+: null means all topics.
    let wanted: Option<Vec<(Option<String>, Uuid)>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && ctx.version == 0 => None,
        Some(topics) => {
            let mut seen = std::collections::HashSet::with_capacity(topics.len());
            Some(
                topics
                    .into_iter()
                    // The Java client names a topic by id with an empty name, not a null one.
                    .map(|t| {
                        let name = t.name.map(|n| n.0.to_string());
                        let by_id =
                            !t.topic_id.is_nil() && name.as_deref().is_none_or(str::is_empty);
                        (if by_id { None } else { name }, t.topic_id)
                    })
                    .filter(|key| seen.insert(key.clone()))
                    .collect(),
            )
        }
    };
    let allow_create =
        shard.config.auto_create_topics && (ctx.version < 4 || request.allow_auto_topic_creation);
    use crate::security::acl::{op, resource};
    let describable =
        |name: &str| super::acls::allowed(shard, ctx, op::DESCRIBE, resource::TOPIC, name);
    // Kafka: auto-creation needs CREATE on the cluster or the topic; a missing topic the
    // client may not create is answered TOPIC_AUTHORIZATION_FAILED.
    let may_create_all = super::acls::cluster(shard, ctx, op::CREATE);
    let may_create = |name: &str| {
        may_create_all || super::acls::allowed(shard, ctx, op::CREATE, resource::TOPIC, name)
    };

    if let (Some(wanted), true) = (&wanted, allow_create) {
        let missing: Vec<TopicSpec> = wanted
            .iter()
            .filter_map(|(name, _)| name.as_ref())
            .filter(|name| snapshot.topic(name).is_none() && validate_topic_name(name).is_ok())
            .filter(|name| describable(name) && may_create(name))
            .map(|name| TopicSpec {
                name: name.clone(),
                partitions: -1,
                replication_factor: -1,
                assignment: None,
                token: None,
                configs: Default::default(),
            })
            .collect();
        if !missing.is_empty() {
            match shard
                .control(ControlRequest::CreateTopics {
                    topics: missing,
                    validate_only: false,
                })
                .await
            {
                Ok(ControlReply::Topics(outcomes)) => {
                    let failed: Vec<_> = outcomes
                        .iter()
                        .filter(|o| o.error_code != NONE && o.error_code != TOPIC_ALREADY_EXISTS)
                        .collect();
                    // One line per request, rate-limited per client: a client naming
                    // many new topics past the partition cap must not flood the log.
                    if let Some(first) = failed.first() {
                        let count = failed.len();
                        crate::util::warn_about_client(&ctx.client_host, |more| {
                            tracing::warn!(client = %ctx.client_host, client_id = %ctx.client_id, principal = %ctx.principal, topic = ?first.name, code = first.error_code, message = ?first.message, count, "auto topic creation failed{more}");
                        });
                    }
                }
                Ok(other) => tracing::error!(?other, "unexpected controller reply"),
                Err(err) => tracing::error!(?err, "auto topic creation failed"),
            }
            snapshot = shard.snapshot();
        }
    }

    let mut response = MetadataResponse::default();
    response.brokers = brokers(shard, &snapshot, ctx.listener);
    response.cluster_id = Some(StrBytes::from_string(snapshot.cluster_id.clone()));
    response.controller_id = BrokerId(shard.controller_broker(&snapshot));
    response.cluster_authorized_operations = if request.include_cluster_authorized_operations {
        super::acls::operations(
            shard,
            ctx,
            super::authorized::CLUSTER,
            resource::CLUSTER,
            crate::security::acl::CLUSTER_NAME,
        )
    } else {
        super::authorized::AUTHORIZED_OPERATIONS_OMITTED
    };
    let topic_operations = |name: &str| {
        if request.include_topic_authorized_operations {
            super::acls::operations(shard, ctx, super::authorized::TOPIC, resource::TOPIC, name)
        } else {
            super::authorized::AUTHORIZED_OPERATIONS_OMITTED
        }
    };
    response.topics = match wanted {
        // Topics the principal may not describe are left out, as Kafka does.
        None => snapshot
            .topics
            .values()
            .filter(|t| describable(&t.name))
            .map(|t| topic_entry(shard, &snapshot, t, topic_operations(&t.name)))
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|(name, id)| {
                let found = match &name {
                    Some(name) => snapshot.topic(name),
                    None => snapshot.topic_by_id(&id),
                };
                let denied = match (&name, found) {
                    (_, Some(topic)) => !describable(&topic.name),
                    (Some(name), None) => {
                        !describable(name)
                            || (allow_create
                                && validate_topic_name(name).is_ok()
                                && !may_create(name))
                    }
                    (None, None) => false,
                };
                match found {
                    _ if denied => {
                        let mut entry = MetadataResponseTopic::default();
                        entry.error_code = TOPIC_AUTHORIZATION_FAILED;
                        entry.name = name.map(|n| TopicName(StrBytes::from_string(n)));
                        entry.topic_id = id;
                        entry.topic_authorized_operations =
                            super::authorized::AUTHORIZED_OPERATIONS_OMITTED;
                        entry
                    }
                    Some(topic) => {
                        topic_entry(shard, &snapshot, topic, topic_operations(&topic.name))
                    }
                    None => {
                        let code = match &name {
                            Some(n) if validate_topic_name(n).is_err() => INVALID_TOPIC_EXCEPTION,
                            Some(_) => UNKNOWN_TOPIC_OR_PARTITION,
                            None => UNKNOWN_TOPIC_ID,
                        };
                        let mut entry = MetadataResponseTopic::default();
                        entry.error_code = code;
                        entry.name = name.map(|n| TopicName(StrBytes::from_string(n)));
                        entry.topic_id = id;
                        entry
                    }
                }
            })
            .collect(),
    };
    ctx.respond(&response)
}

/// One broker per shard of every node clients can reach, at its advertised address on
/// `listener` (the one the request arrived on).
pub fn brokers(
    shard: &Shard,
    snapshot: &ClusterSnapshot,
    listener: usize,
) -> Vec<MetadataResponseBroker> {
    let mut brokers = Vec::new();
    for node in snapshot.advertised_nodes() {
        for k in 0..snapshot.shard_count.max(1) {
            if let Some((host, port)) = shard.broker_address_on(snapshot, node, k, listener) {
                brokers.push(
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(broker_id(node, ShardId(k as u16))))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port),
                );
            }
        }
    }
    brokers
}

fn topic_entry(
    shard: &Shard,
    snapshot: &ClusterSnapshot,
    topic: &TopicMeta,
    authorized_operations: i32,
) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default();
    entry.topic_authorized_operations = authorized_operations;
    entry.name = Some(TopicName(StrBytes::from_string(topic.name.clone())));
    entry.topic_id = topic.id;
    entry.is_internal = topic.name == crate::cluster::OFFSETS_TOPIC;
    entry.partitions = (0..topic.partitions.len() as i32)
        .map(|p| {
            if topic.is_replicated(p) {
                return replicated_partition(shard, snapshot, topic, p);
            }
            let owner = snapshot.owner(topic, p);
            let node = snapshot.leader_node(topic, p);
            let placed = owner.zip(node);
            let leader = placed
                .filter(|(s, n)| shard.broker_address(snapshot, *n, s.0 as usize).is_some())
                .map(|(s, n)| BrokerId(broker_id(n, s)));
            let replica = placed.map(|(s, n)| BrokerId(broker_id(n, s)));
            let mut entry = MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(leader.unwrap_or(BrokerId(-1)))
                .with_leader_epoch(0)
                .with_replica_nodes(replica.into_iter().collect())
                .with_isr_nodes(leader.into_iter().collect());
            if leader.is_none() {
                // The partition's node has not registered (yet): clients retry.
                entry.error_code = LEADER_NOT_AVAILABLE;
                entry.offline_replicas = replica.into_iter().collect();
            }
            entry
        })
        .collect();
    entry
}

/// A replicated partition: its replicas (the same shard of each replica node), the
/// leader it last reported and that leader's term as epoch, the replicas of nodes this
/// node reaches as ISR (an approximation until followers' lag is tracked), the others
/// offline.
fn replicated_partition(
    shard: &Shard,
    snapshot: &ClusterSnapshot,
    topic: &TopicMeta,
    p: i32,
) -> MetadataResponsePartition {
    let Some(owner) = snapshot.owner(topic, p) else {
        return MetadataResponsePartition::default()
            .with_partition_index(p)
            .with_error_code(LEADER_NOT_AVAILABLE)
            .with_leader_id(BrokerId(-1));
    };
    let reachable = |n: NodeId| {
        shard
            .broker_address(snapshot, n, owner.0 as usize)
            .is_some()
    };
    let replicas = topic.replicas_of(p);
    let broker = |n: &NodeId| BrokerId(broker_id(*n, owner));
    let mut reported = topic.reported_leader(p);
    if owner == shard.id {
        // This shard's replica may know better than the metadata log: a newer leader
        // not recorded yet, or that the recorded one (this node) stepped down. A
        // replica that reaches no majority of its replicas goes on naming itself, as
        // Kafka's last leader stays leader when the others are gone: clients then hear
        // NOT_ENOUGH_REPLICAS from it (see the produce handler), not a missing leader.
        if let Some(group) = shard
            .partition(&topic.name, p)
            .and_then(|q| q.group.clone())
        {
            let (heard, term) = (group.leader(), group.term());
            if reported.is_none_or(|(_, e)| term >= e) {
                let node = NodeId(heard as i32);
                if heard == 0 {
                    let (voters, reached) = group.reachable_voters();
                    if reached > voters / 2 {
                        reported = reported.filter(|(n, e)| *e > term || *n != shard.node);
                    }
                } else if reported.is_none_or(|(n, _)| n != node) {
                    reported = Some((node, term));
                }
            }
        }
    }
    let leader = reported.filter(|(n, _)| reachable(*n));
    let mut entry = MetadataResponsePartition::default()
        .with_partition_index(p)
        .with_leader_id(leader.map_or(BrokerId(-1), |(n, _)| broker(&n)))
        .with_leader_epoch(reported.map_or(0, |(_, e)| i32::try_from(e).unwrap_or(i32::MAX)))
        .with_replica_nodes(replicas.iter().map(broker).collect())
        .with_isr_nodes(
            // The leader's report (replicas that keep up), less the nodes down; the
            // replicas on nodes up until it reports.
            topic
                .reported_isr(p)
                .filter(|_| leader.is_some())
                .unwrap_or(replicas)
                .iter()
                .filter(|n| reachable(**n))
                .map(broker)
                .collect(),
        )
        .with_offline_replicas(
            replicas
                .iter()
                .filter(|n| !reachable(**n))
                .map(broker)
                .collect(),
        );
    if leader.is_none() {
        // No leader yet, or it is down: clients retry after a metadata refresh.
        entry.error_code = LEADER_NOT_AVAILABLE;
    }
    entry
}
