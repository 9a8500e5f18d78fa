//! The controller: the single writer of cluster metadata, running on shard 0.
//!
//! Requests (create/delete topics, reserve a producer id) reach it from any shard over
//! the shard mesh and are handled one at a time, in arrival order, by one task: no lock
//! is needed because nothing else mutates this state. Every change is made durable in the
//! [`MetadataLog`] first, then applied, then published to all shards as a new
//! [`ClusterSnapshot`]; the caller answers the client only once every shard has applied it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use super::metadata_log::{MetaRecord, MetadataLog};
use super::{assign_partitions, validate_topic_name, ClusterSnapshot, ShardId, TopicMeta};
use super::{PARTITIONS_PER_TOPIC_MAX, TOPIC_NAME_LEN_MAX};
use crate::protocol::errors::*;

/// Producer ids are reserved durably in blocks of this size; a restart skips the rest of
/// the block, so an id is never handed out twice.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    /// -1: the broker default.
    pub partitions: i32,
    /// -1 or 1 on a single node.
    pub replication_factor: i16,
    /// Manual assignment (one shard per partition), if the client gave one.
    pub assignment: Option<Vec<ShardId>>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

#[derive(Debug)]
pub enum ControlRequest {
    CreateTopics {
        topics: Vec<TopicSpec>,
        validate_only: bool,
    },
    DeleteTopics {
        topics: Vec<TopicRef>,
    },
    AllocateProducerId,
}

/// The outcome for one topic of a create or delete.
#[derive(Debug, Clone)]
pub struct TopicOutcome {
    pub name: Option<String>,
    pub id: Uuid,
    pub error_code: i16,
    pub message: Option<String>,
    pub partitions: i32,
}

#[derive(Debug)]
pub enum ControlReply {
    Topics(Vec<TopicOutcome>),
    ProducerId(Result<i64, i16>),
}

struct State {
    cluster_id: String,
    topics: BTreeMap<String, Arc<TopicMeta>>,
    version: u64,
    next_producer_id: i64,
    producer_id_block_end: i64,
}

pub struct Controller {
    log: MetadataLog,
    shard_count: usize,
    default_partitions: i32,
    state: RefCell<State>,
}

impl Controller {
    /// Replays the metadata log in `data_dir/cluster`. Blocking; called once at start-up.
    pub fn load(data_dir: &Path, shard_count: usize, default_partitions: i32) -> io::Result<Self> {
        let (log, records) = MetadataLog::open(&data_dir.join("cluster"))?;
        let mut state = State {
            cluster_id: String::new(),
            topics: BTreeMap::new(),
            version: 1,
            next_producer_id: 0,
            producer_id_block_end: 0,
        };
        for record in records {
            apply_record(&mut state, record);
        }
        if state.cluster_id.is_empty() {
            let id = MetaRecord::ClusterId {
                id: format!("strand-{}", Uuid::new_v4().simple()),
            };
            MetadataLog::append_blocking(log.path(), std::slice::from_ref(&id))?;
            apply_record(&mut state, id);
        }
        // Ids of the last block may have been handed out before a crash: start past it.
        state.next_producer_id = state.producer_id_block_end;
        Ok(Controller {
            log,
            shard_count,
            default_partitions,
            state: RefCell::new(state),
        })
    }

    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        let state = self.state.borrow();
        Arc::new(ClusterSnapshot {
            version: state.version,
            cluster_id: state.cluster_id.clone(),
            shard_count: self.shard_count,
            topic_ids: state
                .topics
                .values()
                .map(|t| (t.id, t.name.clone()))
                .collect(),
            topics: state.topics.clone(),
        })
    }

    /// Handles one request. Returns the reply and, if metadata changed, the snapshot that
    /// must reach every shard before the reply is sent.
    pub async fn handle(
        &self,
        request: ControlRequest,
    ) -> (ControlReply, Option<Arc<ClusterSnapshot>>) {
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
        }
    }

    async fn create_topics(
        &self,
        specs: Vec<TopicSpec>,
        validate_only: bool,
    ) -> (ControlReply, Option<Arc<ClusterSnapshot>>) {
        let mut outcomes = Vec::with_capacity(specs.len());
        let mut records = Vec::new();
        {
            let state = self.state.borrow();
            // Topics created earlier in this same request count for balance and duplicates.
            let mut planned = state.topics.clone();
            for spec in specs {
                match self.plan_topic(&planned, &spec) {
                    Err((code, message)) => outcomes.push(TopicOutcome {
                        name: Some(spec.name),
                        id: Uuid::nil(),
                        error_code: code,
                        message: Some(message),
                        partitions: -1,
                    }),
                    Ok(meta) => {
                        outcomes.push(TopicOutcome {
                            name: Some(meta.name.clone()),
                            id: meta.id,
                            error_code: NONE,
                            message: None,
                            partitions: meta.partitions.len() as i32,
                        });
                        records.push(MetaRecord::CreateTopic {
                            name: meta.name.clone(),
                            id: meta.id,
                            partitions: meta.partitions.clone(),
                            configs: meta.configs.clone(),
                        });
                        planned.insert(meta.name.clone(), Arc::new(meta));
                    }
                }
            }
        }
        if validate_only || records.is_empty() {
            return (ControlReply::Topics(outcomes), None);
        }
        if let Err(err) = self.log.append(records.clone()).await {
            tracing::error!(%err, "metadata log append failed; topics not created");
            for outcome in outcomes.iter_mut().filter(|o| o.error_code == NONE) {
                outcome.error_code = KAFKA_STORAGE_ERROR;
                outcome.message = Some(format!("metadata log write failed: {err}"));
            }
            return (ControlReply::Topics(outcomes), None);
        }
        self.apply(records);
        (ControlReply::Topics(outcomes), Some(self.snapshot()))
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
        if spec.replication_factor != -1 && spec.replication_factor != 1 {
            return Err((
                INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {} is not available: this is a single-node cluster",
                    spec.replication_factor
                ),
            ));
        }
        let partitions = match (&spec.assignment, spec.partitions) {
            (Some(assignment), -1) => {
                if assignment.is_empty() {
                    return Err((INVALID_REPLICA_ASSIGNMENT, "empty assignment".into()));
                }
                assignment.clone()
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
                assign_partitions(existing, self.shard_count, &spec.name, count as usize)
            }
        };
        debug_assert!(spec.name.len() <= TOPIC_NAME_LEN_MAX);
        Ok(TopicMeta {
            name: spec.name.clone(),
            id: new_topic_id(),
            partitions,
            configs: spec.configs.clone(),
        })
    }

    async fn delete_topics(
        &self,
        refs: Vec<TopicRef>,
    ) -> (ControlReply, Option<Arc<ClusterSnapshot>>) {
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
                    Some(meta) if !already(meta) => {
                        outcomes.push(TopicOutcome {
                            name: Some(meta.name.clone()),
                            id: meta.id,
                            error_code: NONE,
                            message: None,
                            partitions: meta.partitions.len() as i32,
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
                        });
                    }
                }
            }
        }
        if records.is_empty() {
            return (ControlReply::Topics(outcomes), None);
        }
        if let Err(err) = self.log.append(records.clone()).await {
            tracing::error!(%err, "metadata log append failed; topics not deleted");
            for outcome in outcomes.iter_mut().filter(|o| o.error_code == NONE) {
                outcome.error_code = KAFKA_STORAGE_ERROR;
                outcome.message = Some(format!("metadata log write failed: {err}"));
            }
            return (ControlReply::Topics(outcomes), None);
        }
        self.apply(records);
        (ControlReply::Topics(outcomes), Some(self.snapshot()))
    }

    async fn allocate_producer_id(&self) -> Result<i64, i16> {
        let need_block = {
            let state = self.state.borrow();
            state.next_producer_id >= state.producer_id_block_end
        };
        if need_block {
            let end = self.state.borrow().producer_id_block_end + PRODUCER_ID_BLOCK;
            let record = MetaRecord::ProducerIdBlock { end };
            if let Err(err) = self.log.append(vec![record.clone()]).await {
                tracing::error!(%err, "metadata log append failed; no producer id");
                return Err(KAFKA_STORAGE_ERROR);
            }
            self.apply(vec![record]);
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
        } => {
            state.topics.insert(
                name.clone(),
                Arc::new(TopicMeta {
                    name,
                    id,
                    partitions,
                    configs,
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
        MetaRecord::ProducerIdBlock { end } => {
            state.producer_id_block_end = state.producer_id_block_end.max(end);
        }
    }
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
