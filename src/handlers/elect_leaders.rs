//! ElectLeaders (kafka-leader-election.sh, `Admin.electLeaders`).
//!
//! A preferred election moves a replicated partition's leadership to its preferred
//! replica (the first of its replicas) by Raft's leader transfer, asked on the preferred
//! replica's node (see [`crate::shard::leaders`]); the answer comes once the metadata
//! names the new leader, or with REQUEST_TIMED_OUT after the request's `timeout_ms`.
//! As in Kafka: ELECTION_NOT_NEEDED when the preferred replica already leads,
//! PREFERRED_LEADER_NOT_AVAILABLE when it is down or out of sync, and partitions needing
//! no election are left out of the answer when the request names none (all partitions).
//!
//! An unclean election is never needed while a majority of the replicas is up (Raft
//! elects a leader by itself) and never done otherwise: a leader from a minority could
//! miss acknowledged records, so it answers ELIGIBLE_LEADERS_NOT_AVAILABLE.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Response};
use crate::cluster::{partition_group, NodeId, ShardId};
use crate::protocol::errors::*;
use crate::shard::Shard;
use crate::util::timeout;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;
/// The longest a request waits for its elections, whatever `timeout_ms` says.
const WAIT_MAX: Duration = Duration::from_secs(300);

type Outcome = (i16, Option<String>);

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, request: ElectLeadersRequest) -> Response {
    let snapshot = shard.snapshot();
    // v0 has no election type: preferred.
    let election = if ctx.version >= 1 {
        request.election_type
    } else {
        PREFERRED
    };
    let all = request.topic_partitions.is_none();
    let asked: Vec<(String, Vec<i32>)> = match request.topic_partitions {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        None => snapshot
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.partitions.len() as i32).collect()))
            .collect(),
    };
    let mut results: BTreeMap<(String, i32), Outcome> = BTreeMap::new();
    let mut claims: BTreeMap<NodeId, Vec<(ShardId, u64)>> = BTreeMap::new();
    let mut waiting: Vec<(String, i32, NodeId)> = Vec::new();
    for (name, partitions) in asked {
        for p in partitions {
            let key = (name.clone(), p);
            let topic = snapshot
                .topic(&name)
                .filter(|t| usize::try_from(p).is_ok_and(|i| i < t.partitions.len()));
            let Some(topic) = topic else {
                results.insert(key, (UNKNOWN_TOPIC_OR_PARTITION, None));
                continue;
            };
            let replicas = topic.replicas_of(p);
            let leader = snapshot.leader_node(topic, p);
            let outcome = match election {
                _ if !topic.is_replicated(p) => (
                    ELECTION_NOT_NEEDED,
                    Some("the partition has one replica, which leads".into()),
                ),
                UNCLEAN if leader.is_some() => (
                    ELECTION_NOT_NEEDED,
                    Some("the partition has a leader".into()),
                ),
                UNCLEAN => (
                    ELIGIBLE_LEADERS_NOT_AVAILABLE,
                    Some(
                        "a replicated partition elects its leader from a majority of its \
                         replicas, by itself once one is up; a leader from fewer could miss \
                         acknowledged records, so none is forced"
                            .into(),
                    ),
                ),
                PREFERRED => {
                    let preferred = replicas[0];
                    let owner = snapshot.owner(topic, p).unwrap_or(ShardId(0));
                    let live = shard
                        .broker_address(&snapshot, preferred, owner.0 as usize)
                        .is_some();
                    let in_sync = topic
                        .reported_isr(p)
                        .is_some_and(|isr| isr.contains(&preferred));
                    if leader == Some(preferred) {
                        (
                            ELECTION_NOT_NEEDED,
                            Some("the preferred replica leads".into()),
                        )
                    } else if !live || !in_sync {
                        (
                            PREFERRED_LEADER_NOT_AVAILABLE,
                            Some(format!(
                                "the preferred replica (node {}) is {}",
                                preferred.0,
                                if live { "not in sync" } else { "not reachable" }
                            )),
                        )
                    } else {
                        claims
                            .entry(preferred)
                            .or_default()
                            .push((owner, partition_group(&topic.id, p)));
                        waiting.push((name.clone(), p, preferred));
                        continue;
                    }
                }
                other => (
                    INVALID_REQUEST,
                    Some(format!("unknown election type {other}")),
                ),
            };
            results.insert(key, outcome);
        }
    }
    for (node, groups) in claims {
        if !shard.claim_leadership_on(node, groups).await {
            for (topic, p, preferred) in &waiting {
                if *preferred == node {
                    results.insert(
                        (topic.clone(), *p),
                        (
                            PREFERRED_LEADER_NOT_AVAILABLE,
                            Some(format!("node {} cannot be reached", node.0)),
                        ),
                    );
                }
            }
        }
    }
    waiting.retain(|(topic, p, _)| !results.contains_key(&(topic.clone(), *p)));
    let wait = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0)).min(WAIT_MAX);
    let deadline = Instant::now() + wait;
    loop {
        let seen = shard.snapshot_changed.generation();
        let snapshot = shard.snapshot();
        waiting.retain(|(topic, p, preferred)| {
            let elected = snapshot
                .topic(topic)
                .and_then(|t| snapshot.leader_node(t, *p))
                == Some(*preferred);
            if elected {
                results.insert((topic.clone(), *p), (NONE, None));
            }
            !elected
        });
        let left = deadline.saturating_duration_since(Instant::now());
        if waiting.is_empty() || left.is_zero() || shard.shutting_down.get() {
            break;
        }
        let _ = timeout(left, shard.snapshot_changed.wait(seen)).await;
    }
    for (topic, p, _) in waiting {
        results.insert(
            (topic, p),
            (
                REQUEST_TIMED_OUT,
                Some("the preferred replica did not take the leadership in time".into()),
            ),
        );
    }
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for ((topic, p), (code, message)) in results {
        if all && code == ELECTION_NOT_NEEDED {
            continue;
        }
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(p)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    let response = ElectLeadersResponse::default().with_replica_election_results(
        by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(partitions)
            })
            .collect(),
    );
    ctx.respond(&response)
}
