//! A shard: one pinned glommio executor and everything it owns — the per-core context
//! every handler works through.
//!
//! A shard owns a disjoint set of partitions (their logs, producer state and caches), its
//! listener on `base port + shard index`, its connections, the consumer groups and
//! transactional ids it coordinates, and the tasks that keep them: the [`flusher`]
//! (group commit), [`maintenance`] (retention, compaction), the [`mesh`] server (requests
//! from other shards) and the transaction driver ([`txn`]). State is `Rc` and `RefCell`,
//! never borrowed across an `.await`; other shards are reached only through the mesh.
//! Shard 0 additionally runs the [`Controller`], whose metadata every shard applies
//! ([`snapshot`]).
//!
//! Layering: a shard sits above storage, cluster metadata and the coordinators' state, and
//! below the handlers; nothing here calls a handler. The process that starts the shards is
//! [`crate::broker`].

pub mod append_gate;
mod flusher;
pub mod leaders;
mod maintenance;
pub mod mesh;
pub mod meta;
pub mod offsets;
pub mod raft_group;
pub mod replica;
#[cfg(test)]
mod replica_tests;
mod snapshot;
pub mod txn;

pub use snapshot::{DELETE_SUFFIX, PARTITION_MARKER};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::local_channel::{self, LocalSender};

use crate::cluster::controller::{ControlReply, ControlRequest, Controller};
use crate::cluster::topic_config::TopicConfig;
use crate::cluster::{broker_id, ClusterSnapshot, NodeId, ShardId, TopicMeta};
use crate::config::Config;
use crate::coordinator::txn::TxnCoordinator;
use crate::coordinator::GroupCoordinator;
use crate::storage::log::{SegmentFiles, SEGMENT_FILES_DEFAULT};
use crate::storage::{LogConfig, PartitionLog};
use crate::util::Notify;
use mesh::{Mesh, MeshError, MeshReply, MeshRequest};

/// Control requests the controller queues before callers wait.
const CONTROLLER_QUEUE_CAPACITY: usize = 1024;

/// A partition owned by this shard.
pub struct Partition {
    pub topic: Rc<TopicMeta>,
    pub index: i32,
    /// Shared with the partition's Raft group when it is replicated.
    pub log: Rc<RefCell<PartitionLog>>,
    /// The partition's Raft group, if it is replicated: appends are its proposals, and
    /// only its leader serves.
    pub group: Option<Rc<raft_group::RaftGroup>>,
    /// Queued in the shard's dirty list, waiting for the flusher.
    queued_for_flush: Cell<bool>,
    /// Set when the topic is deleted; waiters stop waiting.
    pub removed: Cell<bool>,
    /// Bumped each time the log is reopened after a write failure: a produce waiting on
    /// an older incarnation's batch must not take a newer batch's offsets for its own.
    pub incarnation: Cell<u64>,
    /// A reopen is scheduled.
    reviving: Cell<bool>,
    /// Keeps produce appends in order when one must wait (see [`append_gate`]).
    pub append_gate: Rc<append_gate::AppendGate>,
    /// The high watermark moved (or the partition failed, was reopened or removed):
    /// produce requests waiting for their acknowledgement re-check.
    pub durable: Notify,
    /// A timer will queue the partition for its `flush.ms` sync.
    sync_timer: Cell<bool>,
    /// The topic's `min.insync.replicas` in force (kept current by config changes).
    pub min_insync: Cell<usize>,
    /// Record bytes produced and fetched here, for the per-topic metrics.
    pub traffic: crate::metrics::PartitionTraffic,
}

impl Partition {
    pub fn new(topic: Rc<TopicMeta>, index: i32, log: PartitionLog) -> Partition {
        Self::with_log(topic, index, Rc::new(RefCell::new(log)), None)
    }

    /// A replicated partition over its Raft group's log.
    pub fn replicated(
        topic: Rc<TopicMeta>,
        index: i32,
        group: Rc<raft_group::RaftGroup>,
    ) -> Partition {
        Self::with_log(topic, index, group.log().clone(), Some(group))
    }

    fn with_log(
        topic: Rc<TopicMeta>,
        index: i32,
        log: Rc<RefCell<PartitionLog>>,
        group: Option<Rc<raft_group::RaftGroup>>,
    ) -> Partition {
        Partition {
            topic,
            index,
            log,
            group,
            queued_for_flush: Cell::new(false),
            removed: Cell::new(false),
            incarnation: Cell::new(0),
            reviving: Cell::new(false),
            append_gate: Default::default(),
            durable: Notify::default(),
            sync_timer: Cell::new(false),
            min_insync: Cell::new(1),
            traffic: Default::default(),
        }
    }
}

impl Partition {
    /// The partition's leader epoch: the Raft term of a replicated partition, 0 on a
    /// node alone (leadership never moves).
    pub fn leader_epoch(&self) -> i32 {
        self.group
            .as_ref()
            .map_or(0, |g| i32::try_from(g.current_term()).unwrap_or(i32::MAX))
    }

    /// Kafka's check of a request's `current_leader_epoch` (-1: none given): older than
    /// this leader's is FENCED_LEADER_EPOCH (the client's metadata is stale), newer is
    /// UNKNOWN_LEADER_EPOCH (this broker's is).
    pub fn check_leader_epoch(&self, current: i32) -> Result<(), i16> {
        use crate::protocol::errors::{FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH};
        if current < 0 {
            return Ok(());
        }
        let epoch = self.leader_epoch();
        match current.cmp(&epoch) {
            std::cmp::Ordering::Less => Err(FENCED_LEADER_EPOCH),
            std::cmp::Ordering::Greater => Err(UNKNOWN_LEADER_EPOCH),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }
}

/// Where a partition's leader is, as this shard knows it: what KIP-951 puts in a
/// NOT_LEADER_OR_FOLLOWER answer so the client goes there without a metadata round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub broker: i32,
    pub epoch: i32,
    pub host: String,
    pub port: i32,
}

/// The sealed-segment file budget of a shard: the flag, which the broker resolves from
/// the open-file limit at start (0 only when a shard is built without that step).
fn segment_files_capacity(config: &Config) -> usize {
    match config.max_open_segment_files_per_shard {
        0 => SEGMENT_FILES_DEFAULT,
        n => n,
    }
}

/// A metadata change for the controller task: the request, whether another node
/// forwarded it, where the reply goes.
type ControlJob = (
    ControlRequest,
    bool,
    futures_channel::oneshot::Sender<ControlReply>,
);

pub struct Shard {
    pub id: ShardId,
    pub node: NodeId,
    pub config: Arc<Config>,
    pub mesh: Mesh,
    /// This shard's copy of the cluster metadata (see [`ClusterSnapshot`]).
    snapshot: RefCell<Rc<ClusterSnapshot>>,
    partitions: RefCell<HashMap<String, HashMap<i32, Rc<Partition>>>>,
    dirty: RefCell<Vec<Rc<Partition>>>,
    controller_queue: RefCell<Option<Rc<LocalSender<ControlJob>>>>,
    /// Appends are waiting for the flusher.
    pub flush_wanted: Notify,
    /// A flush cycle completed: durable offsets moved (produce acks, long-polling fetches).
    pub flushed: Notify,
    /// A new metadata snapshot was applied.
    pub snapshot_changed: Notify,
    pub shutting_down: Cell<bool>,
    pub shutdown: Notify,
    pub connections: Cell<usize>,
    /// Open client connections by listener (its security protocol's name), for metrics;
    /// a listener is listed once it accepts.
    pub listener_connections: RefCell<Vec<(&'static str, usize)>>,
    pub connections_changed: Notify,
    /// Bytes appended and not yet handed back by a flush (see `--max-unflushed-bytes`).
    unflushed_bytes: Cell<usize>,
    /// The consumer groups this shard coordinates.
    pub groups: GroupCoordinator,
    /// The consumer-protocol groups (KIP-848) this shard coordinates.
    pub consumer_groups: crate::coordinator::consumer_group::ConsumerGroups,
    /// The transactional ids this shard coordinates.
    pub txns: TxnCoordinator,
    pub metrics: crate::metrics::ShardMetrics,
    /// Open files of sealed segments, bounded (`--max-open-segment-files-per-shard`);
    /// every log of the shard opens its sealed segments through it.
    pub segment_files: SegmentFiles,
    /// A cluster member's links to the same shard of its peers.
    pub peers: RefCell<Option<Rc<dyn raft_group::PeerTransport>>>,
    /// The Raft groups of this shard (replicated partitions; the metadata group on
    /// shard 0), by group id.
    pub raft_groups: RefCell<HashMap<u64, Rc<raft_group::RaftGroup>>>,
    /// Shard 0 of a cluster member: the metadata group.
    pub meta: RefCell<Option<Rc<meta::MetaGroup>>>,
    /// A cluster member stopping: its Raft groups and links stopped (signals
    /// `connections_changed`).
    pub cluster_stopped: Cell<bool>,
    /// The authorizer's view of the node's ACLs (off without `--authorizer`).
    pub acls: crate::security::acl::ShardAcls,
}

impl Shard {
    pub fn new(
        id: ShardId,
        config: Arc<Config>,
        mesh: Mesh,
        groups: GroupCoordinator,
        txns: TxnCoordinator,
        acls: crate::security::acl::ShardAcls,
    ) -> Rc<Shard> {
        Rc::new(Shard {
            id,
            node: NodeId(config.node()),
            config: config.clone(),
            mesh,
            snapshot: RefCell::new(Rc::new(ClusterSnapshot::default())),
            partitions: RefCell::new(HashMap::new()),
            dirty: RefCell::new(Vec::new()),
            controller_queue: RefCell::new(None),
            flush_wanted: Notify::default(),
            flushed: Notify::default(),
            snapshot_changed: Notify::default(),
            shutting_down: Cell::new(false),
            shutdown: Notify::default(),
            connections: Cell::new(0),
            listener_connections: RefCell::new(Vec::new()),
            connections_changed: Notify::default(),
            unflushed_bytes: Cell::new(0),
            groups,
            consumer_groups: Default::default(),
            txns,
            metrics: crate::metrics::ShardMetrics::default(),
            segment_files: SegmentFiles::new(segment_files_capacity(&config)),
            peers: RefCell::new(None),
            raft_groups: RefCell::new(HashMap::new()),
            meta: RefCell::new(None),
            cluster_stopped: Cell::new(false),
            acls,
        })
    }

    /// Waits until every client connection closed, at most `--shutdown-grace-ms`; false
    /// if some are still open.
    pub async fn wait_connections_drained(&self) -> bool {
        self.wait_stopping_until(|s| s.connections.get() == 0).await
    }

    /// Waits until a stopping cluster member's Raft groups and links stopped, at most
    /// `--shutdown-grace-ms`.
    pub async fn wait_cluster_stopped(&self) -> bool {
        self.wait_stopping_until(|s| s.cluster_stopped.get()).await
    }

    async fn wait_stopping_until(&self, done: impl Fn(&Self) -> bool) -> bool {
        let grace = std::time::Duration::from_millis(self.config.shutdown_grace_ms);
        crate::util::timeout(grace, async {
            loop {
                let seen = self.connections_changed.generation();
                if done(self) {
                    return;
                }
                self.connections_changed.wait(seen).await;
            }
        })
        .await
        .is_some()
    }

    /// This shard's copy of the cluster metadata; cloning it touches only this core's memory.
    pub fn snapshot(&self) -> Rc<ClusterSnapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn broker_id(&self) -> i32 {
        broker_id(self.node, self.id)
    }

    /// Where clients reach shard `k` of `node`: this node's own advertised address, or
    /// the one a peer registered. `None` for a node that has not registered or that
    /// this node does not reach now (clients are not sent to a node that is down).
    pub fn broker_address(
        &self,
        snapshot: &ClusterSnapshot,
        node: NodeId,
        k: usize,
    ) -> Option<(String, i32)> {
        if node == self.node {
            return Some(self.config.shard_advertised(k));
        }
        let info = snapshot.nodes.get(&node)?;
        (k < info.shards && snapshot.live.contains(&node))
            .then(|| (info.host.clone(), info.port + k as i32))
    }

    /// [`Self::broker_address`] on listener `listener` of this node (an index into the
    /// listeners in force): a peer is reached on its listener of the same security
    /// protocol (`None` if it has none); a peer that registered before listeners were
    /// recorded has only its first (PLAINTEXT) one.
    pub fn broker_address_on(
        &self,
        snapshot: &ClusterSnapshot,
        node: NodeId,
        k: usize,
        listener: usize,
    ) -> Option<(String, i32)> {
        if node == self.node {
            return Some(self.config.shard_advertised_on(k, listener));
        }
        let (host, port) = self.broker_address(snapshot, node, k)?;
        let listeners = self.config.listeners_in_force();
        let Some(wanted) = listeners.get(listener).or(listeners.first()) else {
            return Some((host, port));
        };
        let info = snapshot.nodes.get(&node)?;
        if info.listeners.is_empty() {
            return (wanted.protocol == crate::config::SecurityProtocol::Plaintext)
                .then_some((host, port));
        }
        info.listeners
            .iter()
            .find(|l| l.name == wanted.protocol.name())
            .map(|l| (l.host.clone(), l.port + k as i32))
    }

    /// The leader of a partition this shard does not lead, for a KIP-951 hint: the one
    /// this node's replica has heard from if it is newer than the metadata's, else the
    /// metadata's; `None` if unknown or unreachable.
    pub fn leader_hint(&self, topic: &str, partition: i32, listener: usize) -> Option<LeaderHint> {
        let snapshot = self.snapshot.borrow();
        let meta = snapshot.topic(topic)?;
        let owner = snapshot.owner(meta, partition)?;
        let mut leader = snapshot
            .leader_node(meta, partition)
            .map(|n| (n, meta.reported_leader(partition).map_or(0, |(_, e)| e)));
        if owner == self.id {
            if let Some(group) = self
                .partition(topic, partition)
                .and_then(|p| p.group.clone())
            {
                let heard = group.leader();
                if heard != 0 && leader.is_none_or(|(_, e)| group.term() > e) {
                    leader = Some((NodeId(heard as i32), group.term()));
                }
            }
        }
        let (node, epoch) = leader?;
        let (host, port) = self.broker_address_on(&snapshot, node, owner.0 as usize, listener)?;
        Some(LeaderHint {
            broker: broker_id(node, owner),
            epoch: i32::try_from(epoch).unwrap_or(i32::MAX),
            host,
            port,
        })
    }

    /// The broker id clients see as the controller: shard 0 of the metadata leader (-1
    /// when a cluster has none), or this node's shard 0 when alone.
    pub fn controller_broker(&self, snapshot: &ClusterSnapshot) -> i32 {
        if !self.config.clustered() {
            return broker_id(self.node, ShardId(0));
        }
        snapshot
            .controller
            .filter(|n| self.broker_address(snapshot, *n, 0).is_some())
            .map_or(-1, |n| broker_id(n, ShardId(0)))
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(topic)?.get(&index).cloned()
    }

    /// This shard's metrics now, for a scrape.
    pub fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let (group_offsets, group_offsets_omitted) = self.group_offsets();
        self.metrics.snapshot(
            self.id.0,
            crate::metrics::ShardGauges {
                connections: self
                    .listener_connections
                    .borrow()
                    .iter()
                    .map(|&(name, n)| (name, n as u64))
                    .collect(),
                partitions: self.partition_count() as u64,
                log_bytes: self
                    .all_partitions()
                    .iter()
                    .map(|p| p.log.borrow().size_bytes())
                    .sum(),
                replication: self.replication_gauges(),
                topics: self.topic_traffic(),
                group_offsets,
                group_offsets_omitted,
            },
        )
    }

    /// Record traffic per topic of this shard's partitions (all of them: a topic's
    /// partitions spread over the shards, so only shard 0 can tell which topics are past
    /// `--metrics-topics-max`).
    fn topic_traffic(&self) -> Vec<crate::metrics::TopicTraffic> {
        self.partitions
            .borrow()
            .iter()
            .map(|(name, partitions)| {
                let mut t = crate::metrics::TopicTraffic {
                    topic: name.clone(),
                    ..Default::default()
                };
                for p in partitions.values() {
                    p.traffic.add_to(&mut t);
                }
                t
            })
            .collect()
    }

    /// Committed offsets of the groups this shard coordinates now, the first
    /// `--metrics-group-lag-partitions-max`; and how many were left out.
    fn group_offsets(&self) -> (Vec<crate::metrics::GroupOffset>, u64) {
        let max = self.config.metrics_group_lag_partitions_max;
        let groups = self.groups.groups.borrow();
        let mut ids: Vec<&String> = groups
            .keys()
            .filter(|id| self.coordinates_group(id).is_ok())
            .collect();
        ids.sort_unstable();
        let mut out = Vec::new();
        let mut omitted = 0u64;
        for id in ids {
            let offsets = groups[id].offsets.borrow();
            let room = max - out.len().min(max);
            omitted += offsets.len().saturating_sub(room) as u64;
            out.extend(offsets.iter().take(room).map(|((topic, partition), c)| {
                crate::metrics::GroupOffset {
                    group: id.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    committed: c.offset,
                }
            }));
        }
        (out, omitted)
    }

    /// The high watermark of each of `partitions` this shard holds a replica of (the
    /// leader's, or a follower's as far as it has heard what is committed).
    pub fn high_watermarks(&self, partitions: &[(String, i32)]) -> Vec<Option<i64>> {
        partitions
            .iter()
            .map(|(topic, index)| {
                self.partition(topic, *index)
                    .filter(|p| !p.removed.get())
                    .map(|p| p.log.borrow().high_watermark())
            })
            .collect()
    }

    /// The state of this shard's replicated partitions and links, for a scrape.
    fn replication_gauges(&self) -> crate::metrics::Replication {
        let mut r = crate::metrics::Replication::default();
        for partition in self.all_partitions() {
            let Some(group) = &partition.group else {
                continue;
            };
            if group.leader() == 0 {
                r.leaderless += 1;
            }
            let Some((batches, behind)) = group.follower_lag() else {
                continue;
            };
            r.leaders += 1;
            if group.in_sync().len() < group.reachable_voters().0 {
                r.under_replicated += 1;
            }
            r.max_lag_batches = r.max_lag_batches.max(batches);
            r.max_lag_seconds = r.max_lag_seconds.max(behind.as_secs_f64());
        }
        if let Some(peers) = self.peers.borrow().as_ref() {
            r.peers = peers.traffic();
        }
        r
    }

    /// The partition `topic`/`index` if this shard owns it; otherwise the error a client
    /// that asked the wrong broker gets (UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER,
    /// or KAFKA_STORAGE_ERROR while the log is not open).
    pub fn owned_partition(&self, topic: &str, index: i32) -> Result<Rc<Partition>, i16> {
        use crate::protocol::errors::*;
        // Borrowed, not cloned: this runs for every partition of every produce and fetch.
        let snapshot = self.snapshot.borrow();
        let meta = snapshot.topic(topic).ok_or(UNKNOWN_TOPIC_OR_PARTITION)?;
        match snapshot.owner(meta, index) {
            None => Err(UNKNOWN_TOPIC_OR_PARTITION),
            Some(owner) if owner != self.id => Err(NOT_LEADER_OR_FOLLOWER),
            Some(_) if meta.is_replicated(index) => {
                // Only the Raft leader serves, whatever the metadata says.
                match self.partition(topic, index) {
                    Some(p) if p.group.as_ref().is_some_and(|g| g.is_leader()) => Ok(p),
                    _ => Err(NOT_LEADER_OR_FOLLOWER),
                }
            }
            Some(_) if snapshot.leader_node(meta, index) != Some(self.node) => {
                Err(NOT_LEADER_OR_FOLLOWER)
            }
            Some(_) => self.partition(topic, index).ok_or(KAFKA_STORAGE_ERROR),
        }
    }

    /// `partition` if this shard may serve a read of it now: a replicated partition's
    /// leader only under its read lease (NOT_LEADER_OR_FOLLOWER otherwise).
    pub async fn readable(partition: Rc<Partition>) -> Result<Rc<Partition>, i16> {
        match &partition.group {
            Some(group) if !group.read_lease().await => {
                Err(crate::protocol::errors::NOT_LEADER_OR_FOLLOWER)
            }
            _ => Ok(partition),
        }
    }

    /// Whether this shard coordinates the consumer group or transactional id `key`
    /// (FindCoordinator names the shard its hash picks).
    pub fn coordinates(&self, key: &str) -> bool {
        let snapshot = self.snapshot.borrow();
        crate::coordinator::shard_of_group(key, snapshot.shard_count) == self.id
            && snapshot.coordinator_node(crate::coordinator::group_hash(key)) == self.node
    }

    /// Whether this shard coordinates consumer group `group`: Ok, or the error code for
    /// the client. On a node alone the group's hash picks the shard; in a cluster the
    /// shard leads the group's offsets-topic partition and has read it back
    /// (COORDINATOR_LOAD_IN_PROGRESS until then).
    pub fn coordinates_group(&self, group: &str) -> Result<(), i16> {
        if self.groups.is_replicated() {
            return self.groups.owns(group);
        }
        if self.coordinates(group) {
            Ok(())
        } else {
            Err(crate::protocol::errors::NOT_COORDINATOR)
        }
    }

    /// [`Self::coordinates_group`], and in a cluster only under the read lease of the
    /// group's offsets partition (NOT_COORDINATOR otherwise): a leader cut off from the
    /// others stops answering for its groups before another replica can be elected and
    /// take them over, so members never hear from two coordinators at once.
    pub async fn serves_group(&self, group: &str) -> Result<(), i16> {
        self.coordinates_group(group)?;
        if !self.groups.is_replicated() {
            return Ok(());
        }
        let partition = {
            let snapshot = self.snapshot.borrow();
            let count = snapshot
                .topic(crate::coordinator::OFFSETS_TOPIC)
                .map_or(0, |t| t.partitions.len());
            let index = crate::coordinator::offsets_partition(group, count);
            self.partition(crate::coordinator::OFFSETS_TOPIC, index)
        };
        match partition {
            Some(p) => Shard::readable(p)
                .await
                .map(|_| ())
                .map_err(|_| crate::protocol::errors::NOT_COORDINATOR),
            None => Err(crate::protocol::errors::NOT_COORDINATOR),
        }
    }

    /// Watches a member's session: removes it once it stops heartbeating, and stores the
    /// group's membership if that emptied it.
    pub fn watch_member(
        self: &Rc<Self>,
        group: &Rc<crate::coordinator::group::Group>,
        member_id: &str,
    ) {
        let key = (group.id.clone(), member_id.to_string());
        if !self.groups.watched.borrow_mut().insert(key.clone()) {
            return;
        }
        let group = group.clone();
        let shard = self.clone();
        glommio::spawn_local(async move {
            while let Some(deadline) = group.member_deadline(&key.1) {
                let now = std::time::Instant::now();
                if deadline > now {
                    glommio::timer::sleep(deadline - now).await;
                }
                if group.expire_member(&key.1) {
                    shard.groups.store_if_emptied(&group).await;
                    break;
                }
            }
            shard.groups.watched.borrow_mut().remove(&key);
        })
        .detach();
    }

    /// Watches the session of every member of every group here: members a loaded
    /// membership brought back must heartbeat too.
    pub fn watch_members(self: &Rc<Self>) {
        let groups: Vec<Rc<crate::coordinator::group::Group>> =
            self.groups.groups.borrow().values().cloned().collect();
        for group in groups {
            let members: Vec<String> = group.inner.borrow().members.keys().cloned().collect();
            for member in members {
                self.watch_member(&group, &member);
            }
        }
    }

    /// Counts a connection of `listener` opened (`+1`) or closed (`-1`).
    pub fn listener_connection(&self, listener: &'static str, delta: isize) {
        let mut counts = self.listener_connections.borrow_mut();
        match counts.iter_mut().find(|(name, _)| *name == listener) {
            Some((_, n)) => *n = n.saturating_add_signed(delta),
            None => counts.push((listener, delta.max(0) as usize)),
        }
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().values().map(|m| m.len()).sum()
    }

    /// Counts bytes appended to a log of this shard, until the flusher writes them.
    pub fn add_unflushed(&self, bytes: usize) {
        self.unflushed_bytes.set(self.unflushed_bytes.get() + bytes);
    }

    /// Waits while the shard holds more unflushed bytes than `--max-unflushed-bytes`.
    pub async fn wait_for_flush_room(&self) {
        while self.unflushed_bytes.get() > self.config.max_unflushed_bytes
            && !self.shutting_down.get()
        {
            let seen = self.flushed.generation();
            if self.unflushed_bytes.get() <= self.config.max_unflushed_bytes {
                break;
            }
            self.flushed.wait(seen).await;
        }
    }

    /// Tells the flusher that `partition` has pending appends.
    pub fn mark_dirty(&self, partition: &Rc<Partition>) {
        if !partition.queued_for_flush.replace(true) {
            self.dirty.borrow_mut().push(partition.clone());
            self.flush_wanted.notify_all();
        }
    }

    pub fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    /// A topic's log settings: its config overrides on top of the broker defaults.
    fn log_config(&self, topic: &TopicMeta) -> LogConfig {
        let t = TopicConfig::resolve(&self.config, &topic.configs);
        LogConfig {
            segment_bytes: t.segment_bytes,
            cache_bytes: self.config.partition_cache_bytes,
            max_message_bytes: t.max_message_bytes,
            segment_ms: t.segment_ms,
            retention_ms: t.retention_ms,
            retention_bytes: t.retention_bytes,
            delete: t.delete,
            compact: t.compact,
            min_compaction_lag_ms: t.min_compaction_lag_ms,
            delete_retention_ms: t.delete_retention_ms,
            log_append_time: t.log_append_time,
            producer_id_expiration_ms: self.config.producer_id_expiration_ms,
            flush_messages: t.flush_messages,
            flush_ms: t.flush_ms,
            ..LogConfig::default()
        }
    }

    /// Every partition this shard owns.
    pub fn all_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Sends a request to the controller (locally on shard 0, over the mesh otherwise).
    pub async fn control(
        self: &Rc<Self>,
        request: ControlRequest,
    ) -> Result<ControlReply, MeshError> {
        self.control_as(request, false).await
    }

    /// A change another node forwarded to this one (shard 0).
    pub async fn control_forwarded(
        self: &Rc<Self>,
        request: ControlRequest,
    ) -> Result<ControlReply, MeshError> {
        self.control_as(request, true).await
    }

    async fn control_as(
        self: &Rc<Self>,
        request: ControlRequest,
        forwarded: bool,
    ) -> Result<ControlReply, MeshError> {
        if self.id == ShardId(0) {
            let sender = self.controller_queue.borrow().clone();
            let sender = sender.ok_or_else(|| MeshError("controller is not running".into()))?;
            let (tx, rx) = futures_channel::oneshot::channel();
            sender
                .send((request, forwarded, tx))
                .await
                .map_err(|_| MeshError("controller is gone".into()))?;
            rx.await
                .map_err(|_| MeshError("controller dropped the request".into()))
        } else {
            match self
                .mesh
                .request(ShardId(0), MeshRequest::Control(request))
                .await?
            {
                MeshReply::Control(reply) => Ok(reply),
                _ => Err(MeshError("unexpected reply from controller".into())),
            }
        }
    }

    /// Shard 0: starts the controller task, then publishes the recovered metadata.
    pub async fn start_controller(self: &Rc<Self>, controller: Controller) {
        let (tx, rx) = local_channel::new_bounded::<ControlJob>(CONTROLLER_QUEUE_CAPACITY);
        *self.controller_queue.borrow_mut() = Some(Rc::new(tx));
        let controller = Rc::new(controller);
        self.publish(controller.snapshot()).await;
        let shard = self.clone();
        glommio::spawn_local(async move {
            while let Some((request, _, reply_to)) = rx.recv().await {
                let (reply, snapshot) = controller.handle(request).await;
                if let Some(snapshot) = snapshot {
                    shard.publish(snapshot).await;
                }
                let _ = reply_to.send(reply);
            }
        })
        .detach();
    }

    /// Starts a cluster member's controller (shard 0): the applier of the metadata
    /// group, the task answering changes (planned here when this node leads, forwarded
    /// otherwise), and this node's registration.
    pub async fn start_cluster_controller(
        self: &Rc<Self>,
        controller: Controller,
        group: Rc<meta::MetaGroup>,
    ) {
        let (tx, rx) = local_channel::new_bounded::<ControlJob>(CONTROLLER_QUEUE_CAPACITY);
        *self.controller_queue.borrow_mut() = Some(Rc::new(tx));
        let controller = Rc::new(controller);
        // Every shard serves (an empty cluster) until the log's committed state is read.
        self.publish(controller.snapshot()).await;
        glommio::spawn_local(meta::apply_loop(
            self.clone(),
            group.clone(),
            controller.clone(),
        ))
        .detach();
        let serving = controller.clone();
        let serving_group = group.clone();
        glommio::spawn_local(async move {
            // Each change is served on its own: one forwarded to another node must not
            // hold up the rest (the leader still plans one at a time).
            while let Some((request, forwarded, reply_to)) = rx.recv().await {
                let group = serving_group.clone();
                let controller = serving.clone();
                glommio::spawn_local(async move {
                    let reply = group.serve(&controller, request, forwarded).await;
                    let _ = reply_to.send(reply);
                })
                .detach();
            }
        })
        .detach();
        glommio::spawn_local(register_node(self.clone(), controller)).detach();
    }
}

/// Registers this node with the cluster (where clients and peers reach it), retrying
/// until the metadata group has applied it.
async fn register_node(shard: Rc<Shard>, controller: Rc<Controller>) {
    let (host, port) = shard.config.shard_advertised(0);
    let info = crate::cluster::NodeInfo {
        node: shard.node,
        host,
        port,
        rpc: shard
            .config
            .rpc_listen
            .map(|a| a.to_string())
            .unwrap_or_default(),
        shards: shard.config.shards_resolved(),
        listeners: shard
            .config
            .listeners_in_force()
            .iter()
            .map(|l| crate::cluster::NodeListener {
                name: l.protocol.name().to_string(),
                host: l.advertised_host.clone(),
                port: l.advertised_port,
            })
            .collect(),
    };
    let mut logged = false;
    while !shard.shutting_down.get() {
        if controller.registered(shard.node).as_ref() == Some(&info) {
            tracing::info!(node = shard.node.0, "registered with the cluster");
            return;
        }
        match shard
            .control(ControlRequest::RegisterNode(info.clone()))
            .await
        {
            Ok(ControlReply::Results(results))
                if results.first().is_some_and(|(code, _)| *code == 0) => {}
            other => {
                if !logged {
                    tracing::info!(reply = ?other, "waiting to register with the cluster");
                    logged = true;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(300)).await;
            }
        }
    }
}

/// A one-shard [`Shard`] on `data_dir` (which holds its group and transaction logs), for
/// tests that need the shard's tasks without a broker around them.
#[cfg(test)]
pub(crate) async fn test_shard(data_dir: &std::path::Path) -> Rc<Shard> {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        config: Config,
    }
    let dir = data_dir.to_str().expect("a UTF-8 path");
    let config = Args::parse_from(["strand", "--shards", "1", "--data-dir", dir]).config;
    let ends = mesh::build(1).pop().expect("one shard's ends");
    let (mesh, _) = Mesh::connect(ShardId(0), ends).await;
    let (groups, txns) = crate::coordinator::redistribute(data_dir, 1, 0)
        .expect("group and transaction logs")
        .remove(0);
    Shard::new(
        ShardId(0),
        Arc::new(config),
        mesh,
        GroupCoordinator::new(groups),
        TxnCoordinator::new(txns),
        crate::security::acl::ShardAcls::default(),
    )
}
