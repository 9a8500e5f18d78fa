//! Preferred leaders. As in Kafka, the first replica of a partition is its preferred
//! leader, and the cluster keeps leadership there so that the load spreads as the
//! assignment spread it:
//!
//! - a new partition's preferred replica stands for election at once and, if another
//!   replica won anyway, asks for the leadership ([`stand_as_preferred`]);
//! - every shard (each is a broker) checks its leader imbalance every
//!   `--leader-imbalance-check-interval-seconds`: when more than
//!   `--leader-imbalance-per-broker-percentage` of the partitions it prefers to lead are
//!   led elsewhere, it claims those whose replica here is in sync (Kafka's
//!   `auto.leader.rebalance.enable` and its two settings);
//! - a node asked to stop hands the leadership of what it leads to in-sync followers
//!   first ([`Shard::hand_over_leadership`], Kafka's controlled shutdown);
//! - ElectLeaders (kafka-leader-election.sh) claims on demand, on the preferred replica's
//!   node: this node's shards directly or by mesh, another node's by an inter-node
//!   request ([`OP_CLAIM_LEADERSHIP`]).
//!
//! A claim is Raft's leader transfer: the preferred replica asks the leader, which hands
//! over once the replica's log has caught up with its own. Nothing acknowledged is lost;
//! produces arriving meanwhile get NOT_LEADER_OR_FOLLOWER and go to the new leader.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::mesh::MeshRequest;
use super::raft_group::RaftGroup;
use super::Shard;
use crate::cluster::{NodeId, ShardId};

/// REQUEST op: the receiving node's replicas claim the leadership of these groups (JSON
/// list of `[shard, group id]`). Answered at once and with nothing: the requester watches
/// the leadership change in the metadata.
pub const OP_CLAIM_LEADERSHIP: u8 = 2;
/// The high bit marks the request ids of claims, apart from the metadata group's (whose
/// reply table ignores them).
const CLAIM_REQUEST_ID_BIT: u64 = 1 << 63;
/// Attempts of a new partition's preferred replica to take the leadership.
const NEW_PARTITION_CLAIMS: usize = 3;
/// Attempts of a controlled shutdown to hand each group's leadership over.
const HAND_OVER_ATTEMPTS: usize = 2;
/// How often a controlled shutdown looks whether the leadership moved.
const HAND_OVER_POLL: Duration = Duration::from_millis(10);

thread_local! {
    static NEXT_CLAIM_ID: Cell<u64> = const { Cell::new(1) };
}

/// Run by a new partition's preferred replica after it stood for election: when another
/// replica won (the others had not created the partition when its votes went out, and
/// one of them stood after its own timeout), it asks for the leadership.
pub(super) async fn stand_as_preferred(group: Rc<RaftGroup>) {
    let election = group.election_timeout();
    for _ in 0..NEW_PARTITION_CLAIMS {
        let leader = group.wait_for_leader(election * 4).await;
        if group.is_leader() || group.is_stopping() {
            return;
        }
        if leader != 0 {
            tracing::info!(
                group = group.id,
                leader,
                "a new partition elected another replica than its preferred one; claiming it"
            );
            group.request_leadership();
        }
        if group.wait_leading(election * 2).await {
            return;
        }
    }
}

impl Shard {
    /// This node's replicas claim the leadership of these groups, each on its shard.
    pub async fn claim_leadership(self: &Rc<Self>, groups: Vec<(ShardId, u64)>) {
        let mut by_shard: BTreeMap<ShardId, Vec<u64>> = BTreeMap::new();
        for (shard, group) in groups {
            by_shard.entry(shard).or_default().push(group);
        }
        for (shard, groups) in by_shard {
            if shard == self.id {
                self.claim_here(&groups);
            } else if let Err(err) = self
                .mesh
                .request(shard, MeshRequest::ClaimLeadership(groups))
                .await
            {
                tracing::warn!(shard = shard.0, ?err, "cannot pass on a leadership claim");
            }
        }
    }

    /// This shard's replicas of these groups claim their leadership.
    pub(super) fn claim_here(&self, groups: &[u64]) {
        let raft_groups = self.raft_groups.borrow();
        for id in groups {
            if let Some(group) = raft_groups.get(id) {
                group.request_leadership();
            }
        }
    }

    /// Has `node`'s replicas claim the leadership of these groups: this node's at once,
    /// another's by an inter-node request. False if the request could not be sent.
    pub async fn claim_leadership_on(
        self: &Rc<Self>,
        node: NodeId,
        groups: Vec<(ShardId, u64)>,
    ) -> bool {
        if node == self.node {
            self.claim_leadership(groups).await;
            return true;
        }
        let Some(peers) = self.peers.borrow().clone() else {
            return false;
        };
        let pairs: Vec<(u16, u64)> = groups.iter().map(|(s, g)| (s.0, *g)).collect();
        let Ok(payload) = serde_json::to_vec(&pairs) else {
            return false;
        };
        let id = NEXT_CLAIM_ID.with(|next| {
            let id = next.get();
            next.set(id + 1);
            id
        });
        peers.send_request(
            node.0 as u64,
            CLAIM_REQUEST_ID_BIT | id,
            OP_CLAIM_LEADERSHIP,
            Bytes::from(payload),
        )
    }

    /// Serves an [`OP_CLAIM_LEADERSHIP`] request from `peer`.
    pub async fn claim_leadership_asked(self: &Rc<Self>, peer: u64, payload: &[u8]) {
        match serde_json::from_slice::<Vec<(u16, u64)>>(payload) {
            Ok(pairs) => {
                let shard_count = self.snapshot().shard_count.max(1);
                let groups = pairs
                    .into_iter()
                    .filter(|(s, _)| usize::from(*s) < shard_count)
                    .map(|(s, g)| (ShardId(s), g))
                    .collect();
                self.claim_leadership(groups).await;
            }
            Err(err) => tracing::warn!(peer, %err, "unreadable leadership claim"),
        }
    }

    /// Controlled shutdown (Kafka's `controlled.shutdown.enable`): before the node stops,
    /// every group this shard leads hands its leadership to an in-sync follower, so that
    /// clients move on at once rather than after an election timeout, and produces
    /// waiting here learn their fate from the new leader. Two attempts of an election
    /// timeout each (raft-rs abandons a transfer after one).
    pub async fn hand_over_leadership(&self) {
        let groups: Vec<Rc<RaftGroup>> = self.raft_groups.borrow().values().cloned().collect();
        let mut leading: Vec<Rc<RaftGroup>> =
            groups.into_iter().filter(|g| g.hand_over()).collect();
        let Some(first) = leading.first() else {
            return;
        };
        let started = std::time::Instant::now();
        let count = leading.len();
        let attempt = first.election_timeout();
        for round in 0..HAND_OVER_ATTEMPTS {
            let deadline = std::time::Instant::now() + attempt;
            while leading.iter().any(|g| g.is_leader()) && std::time::Instant::now() < deadline {
                glommio::timer::sleep(HAND_OVER_POLL).await;
            }
            leading.retain(|g| g.is_leader());
            if leading.is_empty() || round + 1 == HAND_OVER_ATTEMPTS {
                break;
            }
            leading.retain(|g| g.hand_over());
        }
        tracing::info!(
            shard = self.id.0,
            handed_over = count - leading.len(),
            still_leading = leading.len(),
            ms = started.elapsed().as_millis() as u64,
            "controlled shutdown: leadership handed over"
        );
    }

    /// Starts the periodic leader-imbalance check of this shard (cluster members with
    /// `--auto-leader-rebalance-enable`).
    pub fn spawn_leader_balancing(self: &Rc<Self>) {
        if !self.config.clustered() || !self.config.auto_leader_rebalance_enable {
            return;
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            let every = Duration::from_secs(shard.config.leader_imbalance_check_interval_seconds);
            while shard.sleep_unless_shutdown(every).await {
                let claims = shard.imbalance_claims();
                if !claims.is_empty() {
                    tracing::info!(
                        shard = shard.id.0,
                        partitions = claims.len(),
                        "leader imbalance: moving leadership back to the preferred replicas"
                    );
                    shard.claim_here(&claims);
                }
            }
        })
        .detach();
    }

    /// The groups this shard should claim now: none unless the share of the partitions
    /// it prefers to lead that are led elsewhere passes the allowed percentage; then
    /// those led elsewhere whose replica here is in sync.
    fn imbalance_claims(&self) -> Vec<u64> {
        let snapshot = self.snapshot();
        let mut preferred = 0usize;
        let mut led_elsewhere = 0usize;
        let mut claims = Vec::new();
        for partition in self.all_partitions() {
            let Some(group) = &partition.group else {
                continue;
            };
            let Some(topic) = snapshot.topic(&partition.topic.name) else {
                continue;
            };
            if topic.replicas_of(partition.index).first() != Some(&self.node) {
                continue;
            }
            preferred += 1;
            let leader = group.leader();
            if leader == self.node.0 as u64 {
                continue;
            }
            led_elsewhere += 1;
            let in_sync = topic
                .reported_isr(partition.index)
                .is_some_and(|isr| isr.contains(&self.node));
            if leader != 0 && in_sync {
                claims.push(group.id);
            }
        }
        let percentage = self.config.leader_imbalance_per_broker_percentage as usize;
        if preferred == 0 || led_elsewhere * 100 <= percentage * preferred {
            return Vec::new();
        }
        claims
    }
}
