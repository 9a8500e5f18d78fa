//! The controller: the single writer of cluster metadata, running on shard 0.
//!
//! Requests (create/delete topics, reserve a producer id) reach it from any shard over
//! the shard mesh and are handled one at a time, in arrival order, by one task: no lock
//! is needed because nothing else mutates this state. Every change is made durable in the
//! [`MetadataLog`] first, then applied, then published to all shards as a new
//! [`PublishedSnapshot`]; the caller answers the client only once every shard has applied it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::metadata_log::{MetaRecord, MetadataLog};
use super::{assign_partitions, validate_topic_name, PublishedSnapshot, ShardId, TopicMeta};
use super::{topic_config, PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_LEN_MAX};
use super::{NodeId, NodeInfo};
use crate::protocol::errors::*;

/// Producer ids are reserved durably in blocks of this size; a restart skips the rest of
/// the block, so an id is never handed out twice.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    /// -1: the broker default.
    pub partitions: i32,
    /// -1 or 1 on a single node.
    pub replication_factor: i16,
    /// Manual assignment (the node and shard of each replica of each partition, the
    /// preferred leader first), if the client gave one.
    pub assignment: Option<Vec<Vec<(NodeId, ShardId)>>>,
    /// Set by a node forwarding the request to the metadata leader, the same on every
    /// attempt: a topic created by an earlier attempt of the same request (whose reply was
    /// lost with the leader) is this request's success, not TOPIC_ALREADY_EXISTS.
    #[serde(default)]
    pub token: Option<String>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ControlRequest {
    CreateTopics {
        topics: Vec<TopicSpec>,
        validate_only: bool,
    },
    DeleteTopics {
        topics: Vec<TopicRef>,
    },
    AllocateProducerId,
    /// AlterConfigs (`replace`: the ops are the whole new set) and IncrementalAlterConfigs.
    AlterTopicConfigs {
        alterations: Vec<ConfigAlteration>,
        validate_only: bool,
    },
    /// CreatePartitions: grow each topic to `count` partitions.
    CreatePartitions {
        topics: Vec<PartitionGrowth>,
        validate_only: bool,
    },
    /// A node (re)registers where clients and peers reach it (cluster only).
    RegisterNode(NodeInfo),
    /// A replicated partition's new leader reports itself (cluster only).
    PartitionLeader {
        topic: String,
        id: Uuid,
        partition: i32,
        leader: NodeId,
        epoch: u64,
        /// The leader's in-sync replicas (None: not reported).
        #[serde(default)]
        isr: Option<Vec<NodeId>>,
    },
}

impl ControlRequest {
    /// The reply failing every part of this request with `code`.
    pub fn failed(&self, code: i16, message: &str) -> ControlReply {
        let message = Some(message.to_string());
        match self {
            ControlRequest::CreateTopics { topics, .. } => ControlReply::Topics(
                topics
                    .iter()
                    .map(|t| TopicOutcome {
                        name: Some(t.name.clone()),
                        id: Uuid::nil(),
                        error_code: code,
                        message: message.clone(),
                        partitions: -1,
                        replication_factor: -1,
                    })
                    .collect(),
            ),
            ControlRequest::DeleteTopics { topics } => ControlReply::Topics(
                topics
                    .iter()
                    .map(|t| {
                        let (name, id) = match t {
                            TopicRef::Name(n) => (Some(n.clone()), Uuid::nil()),
                            TopicRef::Id(id) => (None, *id),
                        };
                        TopicOutcome {
                            name,
                            id,
                            error_code: code,
                            message: message.clone(),
                            partitions: -1,
                            replication_factor: -1,
                        }
                    })
                    .collect(),
            ),
            ControlRequest::AllocateProducerId => ControlReply::ProducerId(Err(code)),
            ControlRequest::AlterTopicConfigs { alterations, .. } => {
                ControlReply::Results(vec![(code, message); alterations.len()])
            }
            ControlRequest::CreatePartitions { topics, .. } => {
                ControlReply::Results(vec![(code, message); topics.len()])
            }
            ControlRequest::RegisterNode(_) | ControlRequest::PartitionLeader { .. } => {
                ControlReply::Results(vec![(code, message)])
            }
        }
    }
}

/// How a cluster's controller makes changes durable: proposes them to the metadata Raft
/// group and resolves once they are committed and applied to the controller (through
/// [`Controller::apply_committed`]) and published to this node's shards; or fails with a
/// Kafka error code (NOT_CONTROLLER when the group has no leader here or took too long).
pub trait MetaCommit {
    fn commit(&self, records: Vec<MetaRecord>) -> Pin<Box<dyn Future<Output = CommitResult>>>;
}

pub type CommitResult = Result<(), (i16, String)>;

/// Where the controller's changes go.
enum Journal {
    /// A node alone: its own metadata log file.
    Local(MetadataLog),
    /// A cluster member: the replicated metadata log.
    Raft(Rc<dyn MetaCommit>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ConfigOp {
    Set(String, String),
    /// Back to the broker default.
    Delete(String),
    /// Add items to a list config (cleanup.policy).
    Append(String, String),
    /// Remove items from a list config.
    Subtract(String, String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigAlteration {
    pub topic: String,
    /// Replace every override with the ones set here (legacy AlterConfigs).
    pub replace: bool,
    pub ops: Vec<ConfigOp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionGrowth {
    pub topic: String,
    pub count: i32,
    /// Nodes and shards of the new partitions, if the client assigned them.
    pub assignment: Option<Vec<Vec<(NodeId, ShardId)>>>,
}

/// The outcome for one topic of a create or delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicOutcome {
    pub name: Option<String>,
    pub id: Uuid,
    pub error_code: i16,
    pub message: Option<String>,
    pub partitions: i32,
    /// The replicas of each partition (-1 when failed).
    #[serde(default)]
    pub replication_factor: i16,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ControlReply {
    Topics(Vec<TopicOutcome>),
    ProducerId(Result<i64, i16>),
    /// One (error code, message) per alteration or growth, in request order.
    Results(Vec<(i16, Option<String>)>),
}

struct State {
    cluster_id: String,
    topics: BTreeMap<String, Arc<TopicMeta>>,
    version: u64,
    next_producer_id: i64,
    producer_id_block_end: i64,
    nodes: BTreeMap<NodeId, NodeInfo>,
}

impl State {
    fn empty() -> State {
        State {
            cluster_id: String::new(),
            topics: BTreeMap::new(),
            version: 1,
            next_producer_id: 0,
            producer_id_block_end: 0,
            nodes: BTreeMap::new(),
        }
    }
}

/// Where new partitions go: their shards, and in a cluster their nodes.
type Placement = (Vec<ShardId>, Vec<Vec<NodeId>>);

/// A node alone's metadata as read at start-up (see [`Controller::load`]).
pub struct LocalMetadata {
    log: MetadataLog,
    state: State,
}

impl LocalMetadata {
    /// Whether the log holds anything beyond the cluster id (a cluster member refuses to
    /// start on such a data directory).
    pub fn has_topics(&self) -> bool {
        !self.state.topics.is_empty()
    }
}

pub struct Controller {
    journal: Journal,
    /// This node, and the cluster's voting members (empty for a node alone).
    node: NodeId,
    members: Vec<NodeId>,
    /// The node leading the metadata group, as last heard (published to the shards).
    leader: Cell<Option<NodeId>>,
    /// This node became the metadata leader and has handed out no producer id since: its
    /// first allocation (which runs once everything committed before its term is
    /// applied) starts past the last block any leader reserved.
    fresh_leader: Cell<bool>,
    /// The nodes this node reaches now (itself included), as last heard.
    live: RefCell<BTreeSet<NodeId>>,
    shard_count: usize,
    default_partitions: i32,
    /// Replicas of a topic created with replication factor -1 (cluster only).
    default_replication_factor: i16,
    /// The broker default of every topic config (base of incremental list edits).
    broker_defaults: BTreeMap<String, String>,
    /// Partitions the node may hold in all (`--max-partitions-per-shard` × shards): every
    /// partition costs memory and file descriptors, and auto-creation lets any client
    /// make them.
    partitions_max: usize,
    /// What sets `partitions_max` (the flag, or the open-file limit).
    partitions_why: String,
    state: RefCell<State>,
}

impl Controller {
    /// Caps the partitions of all topics together; creations past it are refused.
    /// `why` names what sets the cap, for the error a refused creation gets.
    pub fn with_partitions_max(mut self, partitions_max: usize, why: String) -> Self {
        self.partitions_max = partitions_max;
        self.partitions_why = why;
        self
    }

    /// The replication factor of topics created with -1 (`--default-replication-factor`);
    /// a node alone keeps 1.
    pub fn with_default_replication_factor(mut self, factor: i16) -> Self {
        if !self.members.is_empty() {
            self.default_replication_factor = factor.max(1);
        }
        self
    }

    /// Replays the metadata log of a node alone in `data_dir/cluster`. Blocking; called
    /// once at start-up (then [`Self::local`] on the shard).
    pub fn load(data_dir: &Path) -> io::Result<LocalMetadata> {
        let (log, records) = MetadataLog::open(&data_dir.join("cluster"))?;
        let mut state = State::empty();
        for record in records {
            apply_record(&mut state, record);
        }
        if state.cluster_id.is_empty() {
            let id = MetaRecord::ClusterId {
                id: format!("strand-{}", Uuid::new_v4().simple()),
            };
            log.append_blocking(std::slice::from_ref(&id))?;
            apply_record(&mut state, id);
        }
        // Ids of the last block may have been handed out before a crash: start past it.
        state.next_producer_id = state.producer_id_block_end;
        Ok(LocalMetadata { log, state })
    }

    /// The controller of a node alone, over what [`Self::load`] read.
    pub fn local(
        loaded: LocalMetadata,
        shard_count: usize,
        default_partitions: i32,
        broker_defaults: BTreeMap<String, String>,
    ) -> Self {
        let LocalMetadata { log, state } = loaded;
        Controller {
            journal: Journal::Local(log),
            node: NodeId(0),
            members: Vec::new(),
            leader: Cell::new(None),
            fresh_leader: Cell::new(false),
            live: RefCell::new(BTreeSet::new()),
            shard_count,
            default_partitions,
            default_replication_factor: 1,
            broker_defaults,
            partitions_max: usize::MAX,
            partitions_why: String::new(),
            state: RefCell::new(state),
        }
    }

    /// The controller of a cluster member: its state is what the metadata group commits,
    /// applied through [`Self::apply_committed`] (from the start of the log at start-up).
    pub fn replicated(
        node: NodeId,
        members: Vec<NodeId>,
        commit: Rc<dyn MetaCommit>,
        shard_count: usize,
        default_partitions: i32,
        broker_defaults: BTreeMap<String, String>,
    ) -> Self {
        Controller {
            journal: Journal::Raft(commit),
            node,
            members,
            leader: Cell::new(None),
            fresh_leader: Cell::new(false),
            live: RefCell::new(BTreeSet::new()),
            shard_count,
            default_partitions,
            default_replication_factor: 1,
            broker_defaults,
            partitions_max: usize::MAX,
            partitions_why: String::new(),
            state: RefCell::new(State::empty()),
        }
    }

    pub fn snapshot(&self) -> Arc<PublishedSnapshot> {
        let state = self.state.borrow();
        Arc::new(PublishedSnapshot {
            version: state.version,
            cluster_id: state.cluster_id.clone(),
            shard_count: self.shard_count,
            topics: state.topics.clone(),
            node: self.node,
            nodes: state.nodes.clone(),
            members: self.members.clone(),
            controller: self.leader.get(),
            live: self.live.borrow().clone(),
        })
    }

    /// Applies records the metadata group committed (in log order); returns whether
    /// anything changed.
    pub fn apply_committed(&self, records: Vec<MetaRecord>) -> bool {
        let mut state = self.state.borrow_mut();
        let before = state.version;
        for record in records {
            apply_record(&mut state, record);
        }
        state.version != before
    }

    /// Notes the metadata group's leader; returns whether it changed (the shards are told
    /// with the next snapshot). A new leader here hands producer ids out from past the
    /// last block any leader reserved.
    pub fn set_leader(&self, leader: Option<NodeId>) -> bool {
        if self.leader.get() == leader {
            return false;
        }
        self.leader.set(leader);
        let mut state = self.state.borrow_mut();
        state.version += 1;
        if leader == Some(self.node) {
            // The blocks reserved before this term may not all be applied yet: the
            // first allocation moves past them (see `allocate_producer_id`).
            state.next_producer_id = state.producer_id_block_end;
            self.fresh_leader.set(true);
        }
        true
    }

    /// Notes which nodes this node reaches now; returns whether that changed (published
    /// with the next snapshot; new partitions go to live nodes only).
    pub fn set_live(&self, live: BTreeSet<NodeId>) -> bool {
        if *self.live.borrow() == live {
            return false;
        }
        *self.live.borrow_mut() = live;
        self.state.borrow_mut().version += 1;
        true
    }

    /// The cluster id once known (a cluster's first leader proposes one).
    pub fn cluster_id(&self) -> String {
        self.state.borrow().cluster_id.clone()
    }

    /// The node as registered, if it is.
    pub fn registered(&self, node: NodeId) -> Option<NodeInfo> {
        self.state.borrow().nodes.get(&node).cloned()
    }

    /// Makes records durable and applies them: the node's own log, or the metadata group.
    async fn commit(&self, records: Vec<MetaRecord>) -> CommitResult {
        match &self.journal {
            Journal::Local(log) => {
                if let Err(err) = log.append(records.clone()).await {
                    tracing::error!(%err, "metadata log append failed; change not made");
                    return Err((
                        KAFKA_STORAGE_ERROR,
                        format!("metadata log write failed: {err}"),
                    ));
                }
                self.apply(records);
                Ok(())
            }
            Journal::Raft(group) => group.commit(records).await,
        }
    }

    /// The snapshot the caller must publish after a change: a cluster member's changes
    /// are published as they are applied, on every node alike.
    fn to_publish(&self) -> Option<Arc<PublishedSnapshot>> {
        match self.journal {
            Journal::Local(_) => Some(self.snapshot()),
            Journal::Raft(_) => None,
        }
    }

    /// Handles one request. Returns the reply and, if metadata changed, the snapshot that
    /// must reach every shard before the reply is sent.
    pub async fn handle(
        &self,
        request: ControlRequest,
    ) -> (ControlReply, Option<Arc<PublishedSnapshot>>) {
        match request {
            ControlRequest::CreateTopics {
                topics,
                validate_only,
            } => self.create_topics(topics, validate_only).await,
            ControlRequest::DeleteTopics { topics } => self.delete_topics(topics).await,
            ControlRequest::AllocateProducerId => (
                ControlReply::ProducerId(self.allocate_producer_id().await),
                None,
            ),
            ControlRequest::PartitionLeader {
                topic,
                id,
                partition,
                leader,
                epoch,
                isr,
            } => {
                let current = {
                    let state = self.state.borrow();
                    match state.topics.get(&topic).filter(|t| t.id == id) {
                        None => Err(UNKNOWN_TOPIC_OR_PARTITION),
                        Some(t) if !t.replicas_of(partition).contains(&leader) => {
                            Err(INVALID_REQUEST)
                        }
                        Some(t) => Ok((
                            t.reported_leader(partition),
                            t.reported_isr(partition).map(<[NodeId]>::to_vec),
                        )),
                    }
                };
                let result = match current {
                    Err(code) => (code, None),
                    // A later term's leader reported first.
                    Ok((Some((_, known)), _)) if known > epoch => (NONE, None),
                    // Known already.
                    Ok((Some((_, known)), known_isr))
                        if known == epoch && (isr.is_none() || isr == known_isr) =>
                    {
                        (NONE, None)
                    }
                    Ok(_) => {
                        let record = MetaRecord::PartitionLeader {
                            name: topic,
                            id,
                            partition,
                            leader,
                            epoch,
                            isr,
                        };
                        match self.commit(vec![record]).await {
                            Ok(()) => (NONE, None),
                            Err((code, message)) => (code, Some(message)),
                        }
                    }
                };
                (ControlReply::Results(vec![result]), self.to_publish())
            }
            ControlRequest::RegisterNode(info) => {
                let mut records = Vec::new();
                if self.cluster_id().is_empty() {
                    records.push(MetaRecord::ClusterId {
                        id: format!("strand-{}", Uuid::new_v4().simple()),
                    });
                }
                if self.registered(info.node).as_ref() != Some(&info) {
                    if !self.members.contains(&info.node) {
                        let message = format!("node {} is not a member", info.node.0);
                        return (
                            ControlReply::Results(vec![(INVALID_REQUEST, Some(message))]),
                            None,
                        );
                    }
                    records.push(MetaRecord::RegisterNode(info));
                }
                let result = if records.is_empty() {
                    (NONE, None)
                } else {
                    match self.commit(records).await {
                        Ok(()) => (NONE, None),
                        Err((code, message)) => (code, Some(message)),
                    }
                };
                (ControlReply::Results(vec![result]), self.to_publish())
            }
            ControlRequest::AlterTopicConfigs {
                alterations,
                validate_only,
            } => {
                let planned = {
                    let state = self.state.borrow();
                    alterations
                        .iter()
                        .map(|a| plan_alteration(&state.topics, &self.broker_defaults, a))
                        .collect::<Vec<_>>()
                };
                self.commit_plans(planned, validate_only).await
            }
            ControlRequest::CreatePartitions {
                topics,
                validate_only,
            } => {
                let planned = {
                    let state = self.state.borrow();
                    let mut seen = std::collections::HashSet::new();
                    // Partitions added by earlier topics of this request count for the cap.
                    let mut room = self.partitions_max;
                    topics
                        .iter()
                        .map(|g| {
                            if g.topic == super::OFFSETS_TOPIC {
                                return Err((
                                    INVALID_TOPIC_EXCEPTION,
                                    format!("{} is internal: its partition count places the consumer groups", g.topic),
                                ));
                            }
                            if !seen.insert(g.topic.clone()) {
                                return Err((
                                    INVALID_REQUEST,
                                    format!("topic {:?} appears twice", g.topic),
                                ));
                            }
                            let planned =
                                self.plan_growth(&state.topics, (room, &self.partitions_why), g)?;
                            if let MetaRecord::AddPartitions { partitions, .. } = &planned {
                                room = room.saturating_sub(partitions.len());
                            }
                            Ok(planned)
                        })
                        .collect::<Vec<_>>()
                };
                self.commit_plans(planned, validate_only).await
            }
        }
    }

    async fn create_topics(
        &self,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> (ControlReply, Option<Arc<PublishedSnapshot>>) {
        let mut outcomes = Vec::with_capacity(specs.len());
        let mut records = Vec::new();
        {
            let state = self.state.borrow();
            // Topics created earlier in this same request count for balance and duplicates.
            let mut planned = state.topics.clone();
            for spec in specs {
                let made = planned
                    .get(&spec.name)
                    .filter(|t| spec.token.is_some() && t.token == spec.token);
                if let Some(made) = made {
                    outcomes.push(TopicOutcome {
                        name: Some(spec.name.clone()),
                        id: made.id,
                        error_code: NONE,
                        message: None,
                        partitions: made.partitions.len() as i32,
                        replication_factor: made.replication_factor(),
                    });
                    continue;
                }
                match self.plan_topic(&planned, &spec) {
                    Err((code, message)) => outcomes.push(TopicOutcome {
                        name: Some(spec.name),
                        id: Uuid::nil(),
                        error_code: code,
                        message: Some(message),
                        partitions: -1,
                        replication_factor: -1,
                    }),
                    Ok(meta) => {
                        outcomes.push(TopicOutcome {
                            name: Some(meta.name.clone()),
                            id: meta.id,
                            error_code: NONE,
                            message: None,
                            partitions: meta.partitions.len() as i32,
                            replication_factor: meta.replication_factor(),
                        });
                        records.push(MetaRecord::CreateTopic {
                            name: meta.name.clone(),
                            id: meta.id,
                            partitions: meta.partitions.clone(),
                            configs: meta.configs.clone(),
                            replicas: meta.replicas.clone(),
                            token: meta.token.clone(),
                        });
                        planned.insert(meta.name.clone(), Arc::new(meta));
                    }
                }
            }
        }
        if validate_only || records.is_empty() {
            return (ControlReply::Topics(outcomes), None);
        }
        if let Err((code, message)) = self.commit(records).await {
            for outcome in outcomes.iter_mut().filter(|o| o.error_code == NONE) {
                outcome.error_code = code;
                outcome.message = Some(message.clone());
            }
            return (ControlReply::Topics(outcomes), None);
        }
        (ControlReply::Topics(outcomes), self.to_publish())
    }

    fn plan_topic(
        &self,
        existing: &BTreeMap<String, Arc<TopicMeta>>,
        spec: &TopicSpec,
    ) -> Result<TopicMeta, (i16, String)> {
        validate_topic_name(&spec.name).map_err(|m| (INVALID_TOPIC_EXCEPTION, m))?;
        if existing.contains_key(&spec.name) {
            return Err((
                TOPIC_ALREADY_EXISTS,
                format!("topic {:?} already exists", spec.name),
            ));
        }
        // Kafka forbids topics whose names differ only in '.' versus '_' (metric names collide).
        let normalized = spec.name.replace('.', "_");
        if let Some(other) = existing.keys().find(|k| k.replace('.', "_") == normalized) {
            return Err((
                INVALID_TOPIC_EXCEPTION,
                format!(
                    "topic {:?} collides with existing topic {other:?}",
                    spec.name
                ),
            ));
        }
        let factor = match spec.replication_factor {
            -1 => self.default_replication_factor,
            factor => factor,
        };
        self.check_replication_factor(factor)?;
        let factor = usize::try_from(factor).unwrap_or(1).max(1);
        let (partitions, replicas) = match (&spec.assignment, spec.partitions) {
            (Some(assignment), -1) => {
                if assignment.is_empty() {
                    return Err((INVALID_REPLICA_ASSIGNMENT, "empty assignment".into()));
                }
                self.place(existing, &spec.name, assignment.len(), 1, Some(assignment))?
            }
            (Some(_), _) => {
                return Err((
                    INVALID_REQUEST,
                    "num_partitions must be -1 when an assignment is given".into(),
                ))
            }
            (None, count) => {
                let count = if count == -1 {
                    self.default_partitions
                } else {
                    count
                };
                if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&count) {
                    return Err((
                        INVALID_PARTITIONS,
                        format!("partition count must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"),
                    ));
                }
                self.place(existing, &spec.name, count as usize, factor, None)?
            }
        };
        check_partition_room(
            existing,
            (partitions.len(), &replicas),
            self.partitions_max,
            &self.partitions_why,
        )?;
        topic_config::validate_all(&spec.configs, &self.broker_defaults)
            .map_err(|m| (INVALID_CONFIG, m))?;
        let configs = spec
            .configs
            .iter()
            .map(|(name, value)| {
                let value =
                    topic_config::canonical(name, value).map_err(|m| (INVALID_CONFIG, m))?;
                Ok((name.clone(), value))
            })
            .collect::<Result<_, (i16, String)>>()?;
        debug_assert!(spec.name.len() <= TOPIC_NAME_LEN_MAX);
        Ok(TopicMeta {
            name: spec.name.clone(),
            id: new_topic_id(),
            partitions,
            configs,
            replicas,
            leaders: Vec::new(),
            isr: Vec::new(),
            token: spec.token.clone(),
        })
    }

    async fn delete_topics(
        &self,
        refs: Vec<TopicRef>,
    ) -> (ControlReply, Option<Arc<PublishedSnapshot>>) {
        let mut outcomes = Vec::with_capacity(refs.len());
        let mut records = Vec::new();
        {
            let state = self.state.borrow();
            for topic_ref in refs {
                let found = match &topic_ref {
                    TopicRef::Name(name) => state.topics.get(name),
                    TopicRef::Id(id) => state.topics.values().find(|t| t.id == *id),
                };
                let already = |m: &Arc<TopicMeta>| {
                    records
                        .iter()
                        .any(|r| matches!(r, MetaRecord::DeleteTopic { id, .. } if *id == m.id))
                };
                match found {
                    Some(meta) if meta.name == super::OFFSETS_TOPIC => {
                        outcomes.push(TopicOutcome {
                            name: Some(meta.name.clone()),
                            id: meta.id,
                            error_code: INVALID_TOPIC_EXCEPTION,
                            message: Some(format!(
                                "{} is internal: it holds the consumer groups' offsets",
                                meta.name
                            )),
                            partitions: -1,
                            replication_factor: -1,
                        });
                    }
                    Some(meta) if !already(meta) => {
                        outcomes.push(TopicOutcome {
                            name: Some(meta.name.clone()),
                            id: meta.id,
                            error_code: NONE,
                            message: None,
                            partitions: meta.partitions.len() as i32,
                            replication_factor: meta.replication_factor(),
                        });
                        records.push(MetaRecord::DeleteTopic {
                            name: meta.name.clone(),
                            id: meta.id,
                        });
                    }
                    _ => {
                        let (name, id, code) = match topic_ref {
                            TopicRef::Name(name) => {
                                (Some(name), Uuid::nil(), UNKNOWN_TOPIC_OR_PARTITION)
                            }
                            TopicRef::Id(id) => (None, id, UNKNOWN_TOPIC_ID),
                        };
                        outcomes.push(TopicOutcome {
                            name,
                            id,
                            error_code: code,
                            message: Some("topic does not exist".into()),
                            partitions: -1,
                            replication_factor: -1,
                        });
                    }
                }
            }
        }
        if records.is_empty() {
            return (ControlReply::Topics(outcomes), None);
        }
        if let Err((code, message)) = self.commit(records).await {
            for outcome in outcomes.iter_mut().filter(|o| o.error_code == NONE) {
                outcome.error_code = code;
                outcome.message = Some(message.clone());
            }
            return (ControlReply::Topics(outcomes), None);
        }
        (ControlReply::Topics(outcomes), self.to_publish())
    }

    /// Writes the records of every successful plan in one append, then applies them.
    async fn commit_plans(
        &self,
        planned: Vec<Result<MetaRecord, (i16, String)>>,
        validate_only: bool,
    ) -> (ControlReply, Option<Arc<PublishedSnapshot>>) {
        let mut results: Vec<(i16, Option<String>)> = planned
            .iter()
            .map(|p| match p {
                Ok(_) => (NONE, None),
                Err((code, message)) => (*code, Some(message.clone())),
            })
            .collect();
        let records: Vec<MetaRecord> = planned.into_iter().filter_map(Result::ok).collect();
        if validate_only || records.is_empty() {
            return (ControlReply::Results(results), None);
        }
        if let Err((code, message)) = self.commit(records).await {
            for result in results.iter_mut().filter(|r| r.0 == NONE) {
                *result = (code, Some(message.clone()));
            }
            return (ControlReply::Results(results), None);
        }
        (ControlReply::Results(results), self.to_publish())
    }

    async fn allocate_producer_id(&self) -> Result<i64, i16> {
        if self.fresh_leader.replace(false) {
            let mut state = self.state.borrow_mut();
            state.next_producer_id = state.next_producer_id.max(state.producer_id_block_end);
        }
        let need_block = {
            let state = self.state.borrow();
            state.next_producer_id >= state.producer_id_block_end
        };
        if need_block {
            let end = self.state.borrow().producer_id_block_end + PRODUCER_ID_BLOCK;
            let record = MetaRecord::ProducerIdBlock { end };
            if let Err((code, _)) = self.commit(vec![record]).await {
                return Err(code);
            }
            // A leader change while the block was committed moved the next id past it.
            if self.state.borrow().next_producer_id >= end {
                return Err(NOT_CONTROLLER);
            }
        }
        let mut state = self.state.borrow_mut();
        let id = state.next_producer_id;
        state.next_producer_id += 1;
        Ok(id)
    }

    fn apply(&self, records: Vec<MetaRecord>) {
        let mut state = self.state.borrow_mut();
        for record in records {
            apply_record(&mut state, record);
        }
    }
}

fn apply_record(state: &mut State, record: MetaRecord) {
    match record {
        MetaRecord::ClusterId { id } => state.cluster_id = id,
        MetaRecord::CreateTopic {
            name,
            id,
            partitions,
            configs,
            replicas,
            token,
        } => {
            state.topics.insert(
                name.clone(),
                Arc::new(TopicMeta {
                    name,
                    id,
                    partitions,
                    configs,
                    replicas,
                    leaders: Vec::new(),
                    isr: Vec::new(),
                    token,
                }),
            );
            state.version += 1;
        }
        MetaRecord::DeleteTopic { name, id } => {
            if state.topics.get(&name).is_some_and(|t| t.id == id) {
                state.topics.remove(&name);
                state.version += 1;
            }
        }
        MetaRecord::AlterTopicConfigs { name, id, configs } => {
            if let Some(topic) = state.topics.get_mut(&name).filter(|t| t.id == id) {
                let mut meta = (**topic).clone();
                meta.configs = configs;
                *topic = Arc::new(meta);
                state.version += 1;
            }
        }
        MetaRecord::AddPartitions {
            name,
            id,
            partitions,
            replicas,
        } => {
            if let Some(topic) = state.topics.get_mut(&name).filter(|t| t.id == id) {
                let mut meta = (**topic).clone();
                meta.partitions.extend(partitions);
                meta.replicas.extend(replicas);
                *topic = Arc::new(meta);
                state.version += 1;
            }
        }
        MetaRecord::ProducerIdBlock { end } => {
            state.producer_id_block_end = state.producer_id_block_end.max(end);
        }
        MetaRecord::RegisterNode(info) => {
            state.nodes.insert(info.node, info);
            state.version += 1;
        }
        MetaRecord::PartitionLeader {
            name,
            id,
            partition,
            leader,
            epoch,
            isr,
        } => {
            if let Some(topic) = state.topics.get_mut(&name).filter(|t| t.id == id) {
                let Ok(index) = usize::try_from(partition) else {
                    return;
                };
                let known = topic.reported_leader(partition);
                let stale = match known {
                    Some((_, e)) if e > epoch => true,
                    // The same epoch: only an ISR change of that leader.
                    Some((n, e)) if e == epoch => isr.is_none() || n != leader,
                    _ => false,
                };
                if index >= topic.partitions.len() || stale {
                    return;
                }
                let new_epoch = known.is_none_or(|(_, e)| e < epoch);
                let mut meta = (**topic).clone();
                if meta.leaders.len() <= index {
                    meta.leaders.resize(index + 1, None);
                }
                if meta.isr.len() <= index {
                    meta.isr.resize(index + 1, None);
                }
                meta.leaders[index] = Some((leader, epoch));
                if isr.is_some() || new_epoch {
                    // A new leader's ISR is unknown until it reports one.
                    meta.isr[index] = isr;
                }
                *topic = Arc::new(meta);
                state.version += 1;
            }
        }
    }
}

/// The new override set of one topic after an alteration, as a metadata record.
fn plan_alteration(
    topics: &BTreeMap<String, Arc<TopicMeta>>,
    broker_defaults: &BTreeMap<String, String>,
    alteration: &ConfigAlteration,
) -> Result<MetaRecord, (i16, String)> {
    let topic = topics.get(&alteration.topic).ok_or_else(|| {
        (
            UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic {:?} does not exist", alteration.topic),
        )
    })?;
    let mut configs = if alteration.replace {
        BTreeMap::new()
    } else {
        topic.configs.clone()
    };
    let mut touched = std::collections::HashSet::new();
    for op in &alteration.ops {
        let name = match op {
            ConfigOp::Set(n, _)
            | ConfigOp::Delete(n)
            | ConfigOp::Append(n, _)
            | ConfigOp::Subtract(n, _) => n,
        };
        if topic_config::def(name).is_none() {
            return Err((INVALID_CONFIG, format!("unknown topic config {name:?}")));
        }
        if !touched.insert(name.clone()) {
            return Err((INVALID_REQUEST, format!("config {name:?} is altered twice")));
        }
        let is_list = topic_config::def(name).is_some_and(|d| d.kind.is_list());
        match op {
            ConfigOp::Set(n, v) => {
                let v = topic_config::canonical(n, v).map_err(|m| (INVALID_CONFIG, m))?;
                configs.insert(n.clone(), v);
            }
            ConfigOp::Delete(n) => {
                configs.remove(n);
            }
            ConfigOp::Append(n, v) | ConfigOp::Subtract(n, v) => {
                if !is_list {
                    return Err((
                        INVALID_CONFIG,
                        format!("{n} is not a list: APPEND and SUBTRACT do not apply"),
                    ));
                }
                let current = configs
                    .get(n)
                    .or_else(|| broker_defaults.get(n))
                    .cloned()
                    .unwrap_or_default();
                let mut items: Vec<String> = current
                    .split(',')
                    .map(|i| i.trim().to_string())
                    .filter(|i| !i.is_empty())
                    .collect();
                for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    if matches!(op, ConfigOp::Append(..)) {
                        if !items.iter().any(|x| x == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|x| x != item);
                    }
                }
                let joined = topic_config::canonical(n, &items.join(","))
                    .map_err(|m| (INVALID_CONFIG, m))?;
                configs.insert(n.clone(), joined);
            }
        }
    }
    topic_config::validate_all(&configs, broker_defaults).map_err(|m| (INVALID_CONFIG, m))?;
    Ok(MetaRecord::AlterTopicConfigs {
        name: topic.name.clone(),
        id: topic.id,
        configs,
    })
}

impl Controller {
    /// The partitions added to one topic by CreatePartitions, as a metadata record.
    fn plan_growth(
        &self,
        topics: &BTreeMap<String, Arc<TopicMeta>>,
        (partitions_max, why): (usize, &str),
        growth: &PartitionGrowth,
    ) -> Result<MetaRecord, (i16, String)> {
        let topic = topics.get(&growth.topic).ok_or_else(|| {
            (
                UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {:?} does not exist", growth.topic),
            )
        })?;
        let current = topic.partitions.len() as i32;
        if growth.count <= current {
            return Err((
                INVALID_PARTITIONS,
                format!(
                    "topic {:?} has {current} partitions; the new count must be larger, not {}",
                    growth.topic, growth.count
                ),
            ));
        }
        if growth.count > PARTITIONS_PER_TOPIC_MAX {
            return Err((
                INVALID_PARTITIONS,
                format!("partition count must be at most {PARTITIONS_PER_TOPIC_MAX}"),
            ));
        }
        let added = (growth.count - current) as usize;
        let partitions = match &growth.assignment {
            Some(assignment) if assignment.len() != added => {
                return Err((
                    INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "{} assignments given for {added} new partitions",
                        assignment.len()
                    ),
                ))
            }
            Some(assignment) => {
                let factor = topic.replicas.first().map_or(1, Vec::len);
                if let Some(set) = assignment.iter().find(|set| set.len() != factor) {
                    return Err((
                        INVALID_REPLICA_ASSIGNMENT,
                        format!(
                            "inconsistent replication factor: {} replicas assigned, the topic has {factor}",
                            set.len()
                        ),
                    ));
                }
                self.place(topics, &topic.name, added, 1, Some(assignment))?
            }
            None => {
                let factor = topic.replicas.first().map_or(1, Vec::len);
                self.place(topics, &topic.name, added, factor, None)?
            }
        };
        let (partitions, replicas) = partitions;
        check_partition_room(topics, (added, &replicas), partitions_max, why)?;
        Ok(MetaRecord::AddPartitions {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            replicas,
        })
    }

    /// Registered nodes this node reaches now (itself always), sorted.
    fn live_registered(&self) -> Vec<NodeId> {
        let live = self.live.borrow();
        self.state
            .borrow()
            .nodes
            .keys()
            .copied()
            .filter(|n| *n == self.node || live.contains(n))
            .collect()
    }

    /// Refuses a replication factor this cluster cannot give.
    fn check_replication_factor(&self, factor: i16) -> Result<(), (i16, String)> {
        if self.members.is_empty() {
            if factor != -1 && factor != 1 {
                return Err((
                INVALID_REPLICATION_FACTOR,
                format!("replication factor {factor} is not available: this is a single-node cluster"),
            ));
            }
            return Ok(());
        }
        let nodes = self.live_registered().len();
        if factor == -1 {
            return Ok(());
        }
        if factor < 1 || factor as usize > nodes {
            return Err((
                INVALID_REPLICATION_FACTOR,
                format!("replication factor {factor} is larger than the {nodes} live nodes"),
            ));
        }
        Ok(())
    }

    /// Where `count` new partitions of `topic` go: their shards and (in a cluster) nodes,
    /// as assigned by the client (checked) or chosen here. A cluster spreads partitions over
    /// its registered nodes, the least loaded first, starting from a rotation seeded by the
    /// topic name.
    fn place(
        &self,
        existing: &BTreeMap<String, Arc<TopicMeta>>,
        topic: &str,
        count: usize,
        factor: usize,
        assignment: Option<&Vec<Vec<(NodeId, ShardId)>>>,
    ) -> Result<Placement, (i16, String)> {
        let clustered = !self.members.is_empty();
        let registered: Vec<NodeId> = self.state.borrow().nodes.keys().copied().collect();
        let live = self.live_registered();
        if let Some(assignment) = assignment {
            let mut shards = Vec::with_capacity(assignment.len());
            let mut replicas = Vec::new();
            let factor = assignment.first().map_or(0, Vec::len);
            for set in assignment {
                let Some(&(_, first_shard)) = set.first() else {
                    return Err((
                        INVALID_REPLICA_ASSIGNMENT,
                        "a partition needs at least one broker".into(),
                    ));
                };
                if set.len() != factor {
                    return Err((
                        INVALID_REPLICA_ASSIGNMENT,
                        "all partitions must have the same number of replicas".into(),
                    ));
                }
                let mut nodes = Vec::with_capacity(set.len());
                for &(node, shard) in set {
                    let known = if clustered {
                        registered.contains(&node)
                    } else {
                        node == self.node
                    };
                    if !known || shard.0 as usize >= self.shard_count {
                        return Err((
                            INVALID_REPLICA_ASSIGNMENT,
                            format!("broker {} does not exist", super::broker_id(node, shard)),
                        ));
                    }
                    if shard != first_shard {
                        // Shard k of a node talks only to shard k of the others.
                        return Err((
                            INVALID_REPLICA_ASSIGNMENT,
                            format!(
                                "the replicas of a partition must be the same shard of their nodes (brokers N*1024+{})",
                                first_shard.0
                            ),
                        ));
                    }
                    if nodes.contains(&node) {
                        return Err((
                            INVALID_REPLICA_ASSIGNMENT,
                            format!("node {} is named twice for one partition", node.0),
                        ));
                    }
                    nodes.push(node);
                }
                shards.push(first_shard);
                if clustered {
                    replicas.push(nodes);
                }
            }
            return Ok((shards, replicas));
        }
        let shards = assign_partitions(existing, self.shard_count, topic, count);
        if !clustered {
            return Ok((shards, Vec::new()));
        }
        if live.is_empty() {
            return Err((
                NOT_CONTROLLER,
                "no live node has registered with the cluster yet".to_string(),
            ));
        }
        // New partitions go to nodes that are up (as Kafka places on unfenced brokers).
        let registered = live;
        let mut load: BTreeMap<NodeId, usize> = registered.iter().map(|&n| (n, 0)).collect();
        for meta in existing.values() {
            for node in meta.replicas.iter().flatten() {
                if let Some(l) = load.get_mut(node) {
                    *l += 1;
                }
            }
        }
        let rotation = topic
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
            % registered.len();
        if factor > registered.len() {
            return Err((
                INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {factor} is larger than the {} live nodes",
                    registered.len()
                ),
            ));
        }
        // The first replica (the preferred leader) on the least loaded node, the others
        // on the nodes after it.
        let mut leading: BTreeMap<NodeId, usize> = registered.iter().map(|&n| (n, 0)).collect();
        for meta in existing.values() {
            for first in meta.replicas.iter().filter_map(|r| r.first()) {
                if let Some(l) = leading.get_mut(first) {
                    *l += 1;
                }
            }
        }
        let mut replicas = Vec::with_capacity(count);
        for _ in 0..count {
            let first = (0..registered.len())
                .map(|i| (i + rotation) % registered.len())
                .min_by_key(|&i| (leading[&registered[i]], load[&registered[i]]))
                .expect("registered nodes");
            let set: Vec<NodeId> = (0..factor)
                .map(|k| registered[(first + k) % registered.len()])
                .collect();
            for node in &set {
                *load.get_mut(node).expect("a registered node") += 1;
            }
            *leading.get_mut(&set[0]).expect("a registered node") += 1;
            replicas.push(set);
        }
        Ok((shards, replicas))
    }
}

/// Refuses `added` more partitions when the node would then hold more than
/// `partitions_max` — before the limit, with an error saying which, not after the
/// descriptors or the memory ran out.
/// In a cluster the cap is each node's: a node holds the partitions it has a replica of
/// (every node is taken to have this node's cap).
fn check_partition_room(
    topics: &BTreeMap<String, Arc<TopicMeta>>,
    (added, new_replicas): (usize, &[Vec<NodeId>]),
    partitions_max: usize,
    why: &str,
) -> Result<(), (i16, String)> {
    if !new_replicas.is_empty() {
        let mut count: BTreeMap<NodeId, (usize, usize)> = BTreeMap::new();
        for node in topics.values().flat_map(|t| t.replicas.iter().flatten()) {
            count.entry(*node).or_default().0 += 1;
        }
        for node in new_replicas.iter().flatten() {
            count.entry(*node).or_default().1 += 1;
        }
        for (node, (held, more)) in count {
            if more > 0 && held.saturating_add(more) > partitions_max {
                return Err((
                    INVALID_PARTITIONS,
                    format!(
                        "node {} holds {held} partitions and may hold at most {partitions_max} ({why}); {more} more refused",
                        node.0
                    ),
                ));
            }
        }
        return Ok(());
    }
    let held: usize = topics.values().map(|t| t.partitions.len()).sum();
    if held.saturating_add(added) > partitions_max {
        return Err((
            INVALID_PARTITIONS,
            format!(
                "the broker holds {held} partitions and may hold at most {partitions_max} ({why}); {added} more refused"
            ),
        ));
    }
    Ok(())
}

/// A random topic id that is neither nil nor Kafka's reserved "metadata topic" id.
fn new_topic_id() -> Uuid {
    loop {
        let id = Uuid::new_v4();
        // Kafka reserves ids whose most significant bits are 0 or 1.
        if id.as_u64_pair().0 > 1 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Weak;

    use super::*;

    /// A metadata group of one: commits at once, applying to the controller.
    struct Applied(RefCell<Weak<Controller>>);

    impl MetaCommit for Applied {
        fn commit(&self, records: Vec<MetaRecord>) -> Pin<Box<dyn Future<Output = CommitResult>>> {
            let controller = self.0.borrow().upgrade().expect("the controller");
            // Through the log's encoding, as the applier reads it back.
            let batch = super::super::metadata_log::encode_batch(&records, 0);
            let decoded = super::super::metadata_log::decode_batch(&batch).expect("decodes");
            assert_eq!(decoded, records);
            controller.apply_committed(decoded);
            Box::pin(async { Ok(()) })
        }
    }

    fn cluster_controller(node: i32, members: &[i32]) -> Rc<Controller> {
        let group = Rc::new(Applied(RefCell::new(Weak::new())));
        let controller = Rc::new(Controller::replicated(
            NodeId(node),
            members.iter().map(|&m| NodeId(m)).collect(),
            group.clone(),
            2,
            1,
            BTreeMap::new(),
        ));
        *group.0.borrow_mut() = Rc::downgrade(&controller);
        controller
    }

    fn register(c: &Controller, node: i32) -> (i16, Option<String>) {
        let info = NodeInfo {
            node: NodeId(node),
            host: "127.0.0.1".into(),
            port: 9092 + node * 1000,
            rpc: format!("127.0.0.1:{}", 9192 + node * 1000),
            shards: 2,
            listeners: Vec::new(),
        };
        match futures_lite::future::block_on(c.handle(ControlRequest::RegisterNode(info))).0 {
            ControlReply::Results(mut r) => r.remove(0),
            other => panic!("{other:?}"),
        }
    }

    fn create(c: &Controller, name: &str, partitions: i32, rf: i16) -> TopicOutcome {
        let request = ControlRequest::CreateTopics {
            topics: vec![TopicSpec {
                name: name.into(),
                partitions,
                replication_factor: rf,
                assignment: None,
                token: None,
                configs: BTreeMap::new(),
            }],
            validate_only: false,
        };
        match futures_lite::future::block_on(c.handle(request)).0 {
            ControlReply::Topics(mut t) => t.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cluster_places_partitions_on_live_registered_nodes() {
        let c = cluster_controller(1, &[1, 2, 3]);
        assert_eq!(register(&c, 1).0, NONE);
        assert!(
            !c.cluster_id().is_empty(),
            "the first registration commits a cluster id"
        );
        assert_eq!(register(&c, 2).0, NONE);
        assert_eq!(register(&c, 3).0, NONE);
        assert_eq!(register(&c, 4).0, INVALID_REQUEST, "not a member");
        c.set_live([1, 2, 3].map(NodeId).into());
        assert_eq!(create(&c, "a", 9, 1).error_code, NONE);
        let snapshot = c.snapshot();
        let topic = &snapshot.topics["a"];
        let mut per_node = BTreeMap::new();
        for replicas in &topic.replicas {
            assert_eq!(replicas.len(), 1);
            *per_node.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [3, 3, 3]);
        assert_eq!(topic.partitions.len(), 9);

        // Node 3 is down: new partitions avoid it, and rf counts live nodes.
        c.set_live([1, 2].map(NodeId).into());
        assert_eq!(create(&c, "b", 4, -1).error_code, NONE);
        let snapshot = c.snapshot();
        assert!(snapshot.topics["b"]
            .replicas
            .iter()
            .all(|r| r[0] != NodeId(3)));
        let refused = create(&c, "c", 1, 3);
        assert_eq!(refused.error_code, INVALID_REPLICATION_FACTOR);
        assert!(refused.message.unwrap().contains("2 live nodes"));
        // Two replicas on the two live nodes, the preferred leaders spread.
        assert_eq!(create(&c, "c", 4, 2).error_code, NONE);
        let snapshot = c.snapshot();
        let sets = &snapshot.topics["c"].replicas;
        assert!(sets
            .iter()
            .all(|r| r.len() == 2 && r[0] != r[1] && !r.contains(&NodeId(3))));
        let firsts: std::collections::BTreeSet<_> = sets.iter().map(|r| r[0]).collect();
        assert_eq!(firsts.len(), 2, "{sets:?}");

        // Explicit assignments: registered nodes and existing shards only.
        let assign = |name: &str, node: i32, shard: u16| {
            let request = ControlRequest::CreateTopics {
                topics: vec![TopicSpec {
                    name: name.into(),
                    partitions: -1,
                    replication_factor: -1,
                    assignment: Some(vec![vec![(NodeId(node), ShardId(shard))]]),
                    token: None,
                    configs: BTreeMap::new(),
                }],
                validate_only: false,
            };
            match futures_lite::future::block_on(c.handle(request)).0 {
                ControlReply::Topics(mut t) => t.remove(0).error_code,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(assign("d", 3, 1), NONE);
        assert_eq!(c.snapshot().topics["d"].replicas, vec![vec![NodeId(3)]]);
        assert_eq!(assign("e", 5, 0), INVALID_REPLICA_ASSIGNMENT);
        assert_eq!(assign("e", 2, 2), INVALID_REPLICA_ASSIGNMENT);
    }

    #[test]
    fn a_retried_forward_of_a_creation_is_its_success() {
        let c = cluster_controller(1, &[1]);
        assert_eq!(register(&c, 1).0, NONE);
        c.set_live([NodeId(1)].into());
        let create = |token: &str| {
            let request = ControlRequest::CreateTopics {
                topics: vec![TopicSpec {
                    name: "t".into(),
                    partitions: 2,
                    replication_factor: 1,
                    assignment: None,
                    configs: BTreeMap::new(),
                    token: Some(token.into()),
                }],
                validate_only: false,
            };
            match futures_lite::future::block_on(c.handle(request)).0 {
                ControlReply::Topics(mut t) => t.remove(0),
                other => panic!("{other:?}"),
            }
        };
        let first = create("1-5-7");
        assert_eq!(first.error_code, NONE);
        let again = create("1-5-7");
        assert_eq!(
            (again.error_code, again.id, again.partitions),
            (NONE, first.id, 2)
        );
        assert_eq!(create("2-9-1").error_code, TOPIC_ALREADY_EXISTS);
    }

    #[test]
    fn a_new_leader_hands_out_producer_ids_past_every_reserved_block() {
        let c = cluster_controller(1, &[1, 2]);
        c.set_leader(Some(NodeId(1)));
        let id = |c: &Controller| match futures_lite::future::block_on(
            c.handle(ControlRequest::AllocateProducerId),
        )
        .0
        {
            ControlReply::ProducerId(Ok(id)) => id,
            other => panic!("{other:?}"),
        };
        assert_eq!(id(&c), 0);
        assert_eq!(id(&c), 1);
        // Leadership moves away and back (another leader may have used the block).
        c.set_leader(Some(NodeId(2)));
        c.set_leader(Some(NodeId(1)));
        assert_eq!(id(&c), PRODUCER_ID_BLOCK);
    }

    /// A leader's reports: a new epoch replaces leader and ISR (unknown until reported),
    /// the same epoch updates the ISR only, an older epoch changes nothing.
    #[test]
    fn partition_leader_records_carry_the_isr_of_their_epoch() {
        let mut state = State::empty();
        let id = Uuid::new_v4();
        apply_record(
            &mut state,
            MetaRecord::CreateTopic {
                name: "t".into(),
                id,
                partitions: vec![ShardId(0)],
                configs: BTreeMap::new(),
                replicas: vec![vec![NodeId(1), NodeId(2), NodeId(3)]],
                token: None,
            },
        );
        let report = |leader: i32, epoch: u64, isr: Option<&[i32]>| MetaRecord::PartitionLeader {
            name: "t".into(),
            id,
            partition: 0,
            leader: NodeId(leader),
            epoch,
            isr: isr.map(|i| i.iter().map(|&n| NodeId(n)).collect()),
        };
        let seen = |state: &State| {
            let t = &state.topics["t"];
            (
                t.reported_leader(0),
                t.reported_isr(0)
                    .map(|i| i.iter().map(|n| n.0).collect::<Vec<_>>()),
            )
        };
        apply_record(&mut state, report(2, 3, Some(&[1, 2, 3])));
        assert_eq!(seen(&state), (Some((NodeId(2), 3)), Some(vec![1, 2, 3])));
        apply_record(&mut state, report(2, 3, Some(&[2, 3])));
        assert_eq!(seen(&state), (Some((NodeId(2), 3)), Some(vec![2, 3])));
        // An older epoch's report, or another node claiming the same epoch: ignored.
        apply_record(&mut state, report(1, 2, Some(&[1])));
        apply_record(&mut state, report(1, 3, Some(&[1])));
        assert_eq!(seen(&state), (Some((NodeId(2), 3)), Some(vec![2, 3])));
        // A new leader without an ISR yet.
        apply_record(&mut state, report(3, 4, None));
        assert_eq!(seen(&state), (Some((NodeId(3), 4)), None));
        // Records written before ISRs were reported still decode.
        let old = r#"{"PartitionLeader":{"name":"t","id":"00000000-0000-0000-0000-000000000001","partition":0,"leader":1,"epoch":2}}"#;
        assert!(matches!(
            serde_json::from_str::<MetaRecord>(old),
            Ok(MetaRecord::PartitionLeader { isr: None, .. })
        ));
    }
}
