//! Cluster metadata: which topics exist, their partitions, and which shard owns each.
//!
//! Shard 0 runs the [`controller`], the only writer of this state: it appends every change
//! to the durable [`metadata_log`] and then pushes an immutable [`PublishedSnapshot`] to every
//! shard, which copies it into its own [`ClusterSnapshot`]. Shards answer Metadata and route
//! produce/fetch from their copy without asking anyone, exactly as brokers of a Kafka cluster
//! answer from their metadata cache.
//!
//! Node ids and shard ids are different types from day one: today there is one node and a
//! shard is advertised as broker `shard index`; a cluster of many nodes will fold the node
//! into the broker id without changing the partition→shard bookkeeping.

pub mod controller;
pub mod metadata_log;
pub mod topic_config;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A core-pinned executor within one node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardId(pub u16);

/// A machine of a cluster (`--node-id`); 0 for a node running alone.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct NodeId(pub i32);

/// Upper bound of shards per node; it spaces broker ids of different nodes apart.
pub const SHARDS_PER_NODE_MAX: i32 = 1024;

/// The Kafka broker id under which a shard is advertised.
pub fn broker_id(node: NodeId, shard: ShardId) -> i32 {
    node.0 * SHARDS_PER_NODE_MAX + shard.0 as i32
}

/// The node and shard behind a Kafka broker id (no check that they exist).
pub fn node_and_shard(broker: i32) -> Option<(NodeId, ShardId)> {
    (broker >= 0).then_some((
        NodeId(broker / SHARDS_PER_NODE_MAX),
        ShardId((broker % SHARDS_PER_NODE_MAX) as u16),
    ))
}

/// A partition's replicas as a client assigns them (CreateTopics, CreatePartitions): the
/// node and shard of each broker id, in order. Refuses an empty list, a negative id and
/// a node named twice; the controller checks the rest.
pub fn parse_replica_brokers(brokers: &[i32]) -> Result<Vec<(NodeId, ShardId)>, String> {
    if brokers.is_empty() {
        return Err("a partition needs at least one broker".into());
    }
    let mut out: Vec<(NodeId, ShardId)> = Vec::with_capacity(brokers.len());
    for &broker in brokers {
        let (node, shard) =
            node_and_shard(broker).ok_or_else(|| format!("broker {broker} does not exist"))?;
        if out.iter().any(|(n, _)| *n == node) {
            return Err(format!(
                "broker {broker}: node {} holds a replica of the partition already",
                node.0
            ));
        }
        out.push((node, shard));
    }
    Ok(out)
}

/// The shard behind a Kafka broker id on this node, if any.
pub fn shard_of_broker(node: NodeId, broker: i32, shard_count: usize) -> Option<ShardId> {
    let local = broker - node.0 * SHARDS_PER_NODE_MAX;
    (0..shard_count as i32)
        .contains(&local)
        .then_some(ShardId(local as u16))
}

/// Kafka's longest legal topic name.
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Partitions per topic accepted by CreateTopics (each partition holds open files).
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, not "." or "..".
/// Kafka's name for the internal topic holding a cluster's consumer group state (see
/// `coordinator`): created by the cluster itself, never deleted or grown by a client.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_LEN_MAX {
        return Err(format!(
            "topic name must be 1 to {TOPIC_NAME_LEN_MAX} characters long"
        ));
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "topic name {name:?} has characters other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// One topic as the controller created it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    /// The shard each partition was assigned to when created (index = partition).
    pub partitions: Vec<ShardId>,
    pub configs: BTreeMap<String, String>,
    /// The nodes holding each partition (index = partition), in a cluster; empty on a
    /// node running alone (every partition is its own). Its replicas live on the same
    /// shard index of each of these nodes.
    #[serde(default)]
    pub replicas: Vec<Vec<NodeId>>,
    /// The leader each replicated partition last reported, with its Raft term (the
    /// partition's leader epoch), by partition; empty slots until one is known.
    #[serde(default)]
    pub leaders: Vec<Option<(NodeId, u64)>>,
    /// The in-sync replicas each replicated partition's leader last reported, by
    /// partition (empty slots: none reported in the leader's epoch).
    #[serde(default)]
    pub isr: Vec<Option<Vec<NodeId>>>,
    /// The forwarded request that created it, if one did.
    #[serde(default)]
    pub token: Option<String>,
}

/// The Raft group id of a replicated partition: a hash of its topic id and index
/// (never 0, the metadata group's), the same on every node.
pub fn partition_group(topic: &Uuid, partition: i32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_bytes().iter().chain(&partition.to_be_bytes()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

impl TopicMeta {
    /// Whether the partition has more than one replica (a Raft group of its own).
    pub fn is_replicated(&self, partition: i32) -> bool {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.replicas.get(p))
            .is_some_and(|r| r.len() > 1)
    }

    /// The nodes holding the partition (empty on a node alone).
    pub fn replicas_of(&self, partition: i32) -> &[NodeId] {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.replicas.get(p))
            .map_or(&[], |r| r.as_slice())
    }

    /// The replicas of each partition (1 on a node alone).
    pub fn replication_factor(&self) -> i16 {
        self.replicas
            .first()
            .map_or(1, |r| i16::try_from(r.len().max(1)).unwrap_or(i16::MAX))
    }

    /// The in-sync replicas a replicated partition's leader last reported.
    pub fn reported_isr(&self, partition: i32) -> Option<&[NodeId]> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.isr.get(p))?
            .as_deref()
    }

    /// The leader a replicated partition last reported, and its epoch.
    pub fn reported_leader(&self, partition: i32) -> Option<(NodeId, u64)> {
        *usize::try_from(partition)
            .ok()
            .and_then(|p| self.leaders.get(p))?
    }
}

/// A node of the cluster as it registered itself in the metadata log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: NodeId,
    /// Advertised host and port of its shard 0 (shard k: port + k).
    pub host: String,
    pub port: i32,
    /// Its inter-node address (shard 0).
    pub rpc: String,
    pub shards: usize,
    /// Its client listeners as advertised (shard 0's ports); empty in registrations
    /// written before listeners were recorded, which had only `host`/`port` (PLAINTEXT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<NodeListener>,
}

/// One client listener of a registered node: its security protocol's name (PLAINTEXT,
/// SSL, SASL_PLAINTEXT, SASL_SSL) and shard 0's advertised host and port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeListener {
    pub name: String,
    pub host: String,
    pub port: i32,
}

/// The cluster metadata at one version as the controller publishes it: built once per
/// change and sent to every shard behind an `Arc`, never read by requests. Each shard
/// copies it into its own [`ClusterSnapshot`] when it applies it.
#[derive(Debug, Clone, Default)]
pub struct PublishedSnapshot {
    pub version: u64,
    pub cluster_id: String,
    pub shard_count: usize,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    /// This node.
    pub node: NodeId,
    /// Registered nodes (empty on a node running alone).
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// The voting members (`--peers`), sorted; empty on a node running alone.
    pub members: Vec<NodeId>,
    /// The node whose shard 0 leads the metadata group, as this node last heard.
    pub controller: Option<NodeId>,
    /// The nodes this node reaches now (itself included); empty on a node alone.
    pub live: BTreeSet<NodeId>,
}

/// A shard's own immutable copy of the cluster metadata. Requests read (and clone) it all
/// the time, so it is kept in the shard's memory behind `Rc`s: its reference counts are
/// plain integers that no other core ever touches, unlike an `Arc` shared by all shards,
/// whose count every request would bounce between cores.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    pub version: u64,
    pub cluster_id: String,
    pub shard_count: usize,
    pub topics: BTreeMap<String, Rc<TopicMeta>>,
    pub topic_ids: HashMap<Uuid, String>,
    pub node: NodeId,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub members: Vec<NodeId>,
    pub controller: Option<NodeId>,
    pub live: BTreeSet<NodeId>,
}

impl ClusterSnapshot {
    /// A deep copy of `published`, owned by the calling thread. Topics unchanged since
    /// `previous` (this shard's copy of an older version) keep their allocation.
    pub fn copy_of(published: &PublishedSnapshot, previous: &ClusterSnapshot) -> ClusterSnapshot {
        let topics: BTreeMap<String, Rc<TopicMeta>> = published
            .topics
            .iter()
            .map(|(name, meta)| {
                let meta = match previous.topics.get(name) {
                    Some(kept) if **kept == **meta => kept.clone(),
                    _ => Rc::new(TopicMeta::clone(meta)),
                };
                (name.clone(), meta)
            })
            .collect();
        ClusterSnapshot {
            version: published.version,
            cluster_id: published.cluster_id.clone(),
            shard_count: published.shard_count,
            topic_ids: topics.values().map(|t| (t.id, t.name.clone())).collect(),
            topics,
            node: published.node,
            nodes: published.nodes.clone(),
            members: published.members.clone(),
            controller: published.controller,
            live: published.live.clone(),
        }
    }

    pub fn topic(&self, name: &str) -> Option<&Rc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Rc<TopicMeta>> {
        self.topic_ids
            .get(id)
            .and_then(|name| self.topics.get(name))
    }

    /// The shard that owns a partition now. A partition keeps its assigned shard across
    /// restarts; if the broker restarts with fewer shards, the assignment wraps around.
    pub fn owner(&self, topic: &TopicMeta, partition: i32) -> Option<ShardId> {
        let assigned = topic.partitions.get(usize::try_from(partition).ok()?)?;
        Some(ShardId(
            (assigned.0 as usize % self.shard_count.max(1)) as u16,
        ))
    }

    /// The node leading a partition: its only replica, the leader a replicated one last
    /// reported, or this node when alone.
    pub fn leader_node(&self, topic: &TopicMeta, partition: i32) -> Option<NodeId> {
        let index = usize::try_from(partition).ok()?;
        match topic.replicas.get(index) {
            Some(replicas) if replicas.len() > 1 => topic.reported_leader(partition).map(|l| l.0),
            Some(replicas) => replicas.first().copied(),
            None => (index < topic.partitions.len()).then_some(self.node),
        }
    }

    /// Whether this node holds a replica of the partition.
    pub fn is_replica_here(&self, topic: &TopicMeta, partition: i32) -> bool {
        match usize::try_from(partition)
            .ok()
            .and_then(|i| topic.replicas.get(i))
        {
            Some(replicas) => replicas.contains(&self.node),
            None => true,
        }
    }

    /// The nodes advertised to clients: every registered node this node reaches (this
    /// one always), or this node alone outside a cluster. Sorted.
    pub fn advertised_nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| self.live.contains(n))
            .collect();
        if !nodes.contains(&self.node) {
            nodes.push(self.node);
            nodes.sort();
        }
        nodes
    }

    /// The node coordinating a group or transactional id: the id's hash picks one of
    /// `members` × shards (the shard is the one [`crate::coordinator`] picks on a single
    /// node); this node when alone.
    pub fn coordinator_node(&self, hash: u32) -> NodeId {
        if self.members.is_empty() {
            return self.node;
        }
        let shards = self.shard_count.max(1);
        let slot = hash as usize % (self.members.len() * shards);
        self.members[slot / shards]
    }

    /// Every partition owned by `shard` of this node.
    pub fn partitions_of(&self, shard: ShardId) -> Vec<(Rc<TopicMeta>, i32)> {
        let mut owned = Vec::new();
        for topic in self.topics.values() {
            for partition in 0..topic.partitions.len() as i32 {
                if self.owner(topic, partition) == Some(shard)
                    && self.is_replica_here(topic, partition)
                {
                    owned.push((topic.clone(), partition));
                }
            }
        }
        owned
    }
}

/// Picks shards for `count` new partitions: each goes to the shard that owns the fewest
/// partitions so far, ties broken by a rotation seeded from the topic name so that many
/// one-partition topics do not all land on shard 0.
pub fn assign_partitions(
    existing: &BTreeMap<String, Arc<TopicMeta>>,
    shard_count: usize,
    topic: &str,
    count: usize,
) -> Vec<ShardId> {
    let shard_count = shard_count.max(1);
    let mut load = vec![0usize; shard_count];
    for meta in existing.values() {
        for shard in &meta.partitions {
            load[shard.0 as usize % shard_count] += 1;
        }
    }
    let rotation = topic
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % shard_count;
    let mut assigned = Vec::with_capacity(count);
    for _ in 0..count {
        let shard = (0..shard_count)
            .map(|i| (i + rotation) % shard_count)
            .min_by_key(|&s| load[s])
            .unwrap_or(0);
        load[shard] += 1;
        assigned.push(ShardId(shard as u16));
    }
    assigned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_a-b").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn assignment_is_balanced() {
        let mut topics = BTreeMap::new();
        for (i, n) in [(0, 3usize), (1, 1), (2, 4), (3, 2)] {
            let name = format!("t{i}");
            let partitions = assign_partitions(&topics, 2, &name, n);
            topics.insert(
                name.clone(),
                Arc::new(TopicMeta {
                    name,
                    id: Uuid::new_v4(),
                    partitions,
                    configs: BTreeMap::new(),
                    replicas: Vec::new(),
                    leaders: Vec::new(),
                    isr: Vec::new(),
                    token: None,
                }),
            );
        }
        let mut load = [0; 2];
        for t in topics.values() {
            for s in &t.partitions {
                load[s.0 as usize] += 1;
            }
        }
        assert_eq!(load, [5, 5]);
    }

    #[test]
    fn coordinators_spread_over_members_and_keep_the_single_node_shard() {
        let snap = ClusterSnapshot {
            shard_count: 2,
            node: NodeId(1),
            members: vec![NodeId(1), NodeId(2), NodeId(3)],
            ..Default::default()
        };
        let mut per_node = BTreeMap::new();
        for i in 0..3000u32 {
            let hash = crate::coordinator::group_hash(&format!("group-{i}"));
            *per_node.entry(snap.coordinator_node(hash)).or_insert(0) += 1;
        }
        assert_eq!(per_node.len(), 3);
        assert!(
            per_node.values().all(|&n| (800..1200).contains(&n)),
            "{per_node:?}"
        );
        // Alone, every id is this node's.
        let alone = ClusterSnapshot {
            node: NodeId(0),
            ..Default::default()
        };
        assert_eq!(alone.coordinator_node(12345), NodeId(0));
    }

    #[test]
    fn owner_wraps_when_shards_shrink() {
        let topic = TopicMeta {
            name: "t".into(),
            id: Uuid::nil(),
            partitions: vec![ShardId(0), ShardId(3)],
            configs: BTreeMap::new(),
            replicas: Vec::new(),
            leaders: Vec::new(),
            isr: Vec::new(),
            token: None,
        };
        let snap = ClusterSnapshot {
            shard_count: 2,
            ..Default::default()
        };
        assert_eq!(snap.owner(&topic, 1), Some(ShardId(1)));
        assert_eq!(snap.owner(&topic, 2), None);
        assert_eq!(snap.owner(&topic, -1), None);
    }
}
