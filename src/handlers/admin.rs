//! Topic and cluster administration: DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, CreatePartitions, DeleteRecords, DescribeLogDirs,
//! DescribeCluster and OffsetForLeaderEpoch.
//!
//! Config and partition changes go to the controller like CreateTopics and are answered
//! once every shard applied them. DeleteRecords and DescribeLogDirs act on the partitions
//! of the shard they reach, as a Kafka broker acts on its own replicas: clients send them
//! to each partition's leader.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Response};
use crate::cluster::controller::{
    ConfigAlteration, ConfigOp, ControlReply, ControlRequest, PartitionGrowth,
};
use crate::cluster::topic_config::{self, source, DEFS};
use crate::cluster::{shard_of_broker, NodeId, ShardId};
use crate::protocol::errors::*;
use crate::security::acl;
use crate::shard::Shard;
use crate::storage::ReadError;

/// DescribeConfigs / AlterConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
/// The only leader epoch a single node has.
const LEADER_EPOCH: i32 = crate::storage::log::LEADER_EPOCH;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Whether a BROKER resource name designates a broker of this node ("" means any).
fn is_local_broker(shard: &Shard, name: &str) -> bool {
    name.is_empty()
        || name
            .parse::<i32>()
            .is_ok_and(|id| shard_of_broker(shard.node, id, shard.snapshot().shard_count).is_some())
}

pub async fn describe_configs(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: DescribeConfigsRequest,
) -> Response {
    let snapshot = shard.snapshot();
    let with_synonyms = request.include_synonyms;
    let with_docs = request.include_documentation && ctx.version >= 3;
    let mut results = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        // As Kafka: no keys, or an empty list, asks for every config.
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
        };
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        if let Some(code) = config_denied(
            shard,
            ctx,
            resource.resource_type,
            &resource.resource_name,
            acl::op::DESCRIBE_CONFIGS,
        ) {
            result.error_code = code;
            results.push(result);
            continue;
        }
        match resource.resource_type {
            RESOURCE_TOPIC => match snapshot.topic(resource.resource_name.as_str()) {
                None => {
                    result.error_code = UNKNOWN_TOPIC_OR_PARTITION;
                    result.error_message = Some(text(format!(
                        "topic {:?} does not exist",
                        resource.resource_name.as_str()
                    )));
                }
                Some(topic) => {
                    for described in topic_config::describe(&shard.config, &topic.configs) {
                        let def = described.def;
                        if !wanted(def.name) {
                            continue;
                        }
                        let mut entry = DescribeConfigsResourceResult::default()
                            .with_name(text(def.name))
                            .with_value(Some(text(described.value)))
                            .with_read_only(false)
                            .with_config_source(described.source)
                            .with_config_type(def.type_code);
                        if with_synonyms {
                            entry.synonyms = described
                                .synonyms
                                .into_iter()
                                .map(|(name, value, source)| {
                                    DescribeConfigsSynonym::default()
                                        .with_name(text(name))
                                        .with_value(Some(text(value)))
                                        .with_source(source)
                                })
                                .collect();
                        }
                        if with_docs {
                            entry.documentation = Some(text(def.doc));
                        }
                        result.configs.push(entry);
                    }
                }
            },
            RESOURCE_BROKER if is_local_broker(shard, resource.resource_name.as_str()) => {
                for (name, value, type_code) in topic_config::broker_configs(&shard.config) {
                    if !wanted(name) {
                        continue;
                    }
                    let source = DEFS
                        .iter()
                        .find(|d| d.broker_name == name)
                        .map(|d| topic_config::broker_source(&shard.config, d.name))
                        .unwrap_or(source::STATIC_BROKER_CONFIG);
                    let mut entry = DescribeConfigsResourceResult::default()
                        .with_name(text(name))
                        .with_value(Some(text(value.clone())))
                        .with_read_only(true)
                        .with_config_source(source)
                        .with_config_type(type_code);
                    if with_synonyms {
                        entry.synonyms.push(
                            DescribeConfigsSynonym::default()
                                .with_name(text(name))
                                .with_value(Some(text(value)))
                                .with_source(source),
                        );
                    }
                    result.configs.push(entry);
                }
            }
            RESOURCE_BROKER => {
                result.error_code = INVALID_REQUEST;
                result.error_message = Some(text(format!(
                    "broker {:?} is not on this node",
                    resource.resource_name.as_str()
                )));
            }
            other => {
                result.error_code = INVALID_REQUEST;
                result.error_message = Some(text(format!(
                    "resource type {other} is not supported (topics and brokers are)"
                )));
            }
        }
        results.push(result);
    }
    let mut response = DescribeConfigsResponse::default();
    response.results = results;
    ctx.respond(&response)
}

/// One resource's answer before the controller is asked: an error, or a topic alteration.
enum Planned {
    Failed(i16, String),
    Topic(ConfigAlteration),
}

fn broker_refusal(shard: &Shard, name: &str) -> Planned {
    if is_local_broker(shard, name) {
        Planned::Failed(
            INVALID_REQUEST,
            "broker configs are static: set them with `strand serve` flags and restart".into(),
        )
    } else {
        Planned::Failed(
            INVALID_REQUEST,
            format!("broker {name:?} is not on this node"),
        )
    }
}

/// Kafka's check of a config resource: `operation` on the topic, or on the cluster for a
/// broker; the error code if denied.
fn config_denied(shard: &Shard, ctx: &Ctx, kind: i8, name: &str, operation: i8) -> Option<i16> {
    match kind {
        RESOURCE_TOPIC => {
            (!super::acls::allowed(shard, ctx, operation, acl::resource::TOPIC, name))
                .then_some(TOPIC_AUTHORIZATION_FAILED)
        }
        _ => (!super::acls::cluster(shard, ctx, operation)).then_some(CLUSTER_AUTHORIZATION_FAILED),
    }
}

/// The alterations the principal may not make, failed before they are sent.
fn authorize_alter(
    shard: &Shard,
    ctx: &Ctx,
    resources: Vec<(i8, StrBytes, Planned)>,
) -> Vec<(i8, StrBytes, Planned)> {
    resources
        .into_iter()
        .map(|(kind, name, planned)| {
            match config_denied(shard, ctx, kind, &name, acl::op::ALTER_CONFIGS) {
                Some(code) => (
                    kind,
                    name,
                    Planned::Failed(code, "Authorization failed.".into()),
                ),
                None => (kind, name, planned),
            }
        })
        .collect()
}

/// Sends the planned alterations to the controller and builds the per-resource answers.
async fn alter(
    shard: &Rc<Shard>,
    resources: Vec<(i8, StrBytes, Planned)>,
    validate_only: bool,
) -> Result<Vec<AlterConfigsResourceResponse>, Response> {
    let alterations: Vec<ConfigAlteration> = resources
        .iter()
        .filter_map(|(_, _, p)| match p {
            Planned::Topic(a) => Some(a.clone()),
            Planned::Failed(..) => None,
        })
        .collect();
    let mut outcomes = if alterations.is_empty() {
        Vec::new()
    } else {
        match shard
            .control(ControlRequest::AlterTopicConfigs {
                alterations,
                validate_only,
            })
            .await
        {
            Ok(ControlReply::Results(results)) => results,
            _ => return Err(Response::Close("controller unavailable".into())),
        }
    }
    .into_iter();
    Ok(resources
        .into_iter()
        .map(|(kind, name, planned)| {
            let (code, message) = match planned {
                Planned::Failed(code, message) => (code, Some(message)),
                Planned::Topic(_) => outcomes
                    .next()
                    .unwrap_or((UNKNOWN_SERVER_ERROR, Some("no answer".into()))),
            };
            AlterConfigsResourceResponse::default()
                .with_resource_type(kind)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message.map(text))
        })
        .collect())
}

/// Legacy AlterConfigs: the configs given become the topic's whole override set.
pub async fn alter_configs(shard: &Rc<Shard>, ctx: &Ctx, request: AlterConfigsRequest) -> Response {
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let planned = match r.resource_type {
                RESOURCE_TOPIC => {
                    let mut ops = Vec::with_capacity(r.configs.len());
                    let mut failed = None;
                    for c in &r.configs {
                        match &c.value {
                            Some(v) => ops.push(ConfigOp::Set(c.name.to_string(), v.to_string())),
                            None => {
                                failed = Some(format!("config {} has no value", c.name.as_str()))
                            }
                        }
                    }
                    match failed {
                        Some(why) => Planned::Failed(INVALID_CONFIG, why),
                        None => Planned::Topic(ConfigAlteration {
                            topic: r.resource_name.to_string(),
                            replace: true,
                            ops,
                        }),
                    }
                }
                RESOURCE_BROKER => broker_refusal(shard, r.resource_name.as_str()),
                other => Planned::Failed(
                    INVALID_REQUEST,
                    format!("resource type {other} cannot be altered"),
                ),
            };
            (r.resource_type, r.resource_name, planned)
        })
        .collect();
    let resources = authorize_alter(shard, ctx, resources);
    match alter(shard, resources, request.validate_only).await {
        Ok(responses) => {
            let mut response = AlterConfigsResponse::default();
            response.responses = responses;
            ctx.respond(&response)
        }
        Err(response) => response,
    }
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: IncrementalAlterConfigsRequest,
) -> Response {
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let planned = match r.resource_type {
                RESOURCE_TOPIC => {
                    let mut ops = Vec::with_capacity(r.configs.len());
                    let mut failed = None;
                    for c in &r.configs {
                        let name = c.name.to_string();
                        let value = c.value.as_ref().map(|v| v.to_string());
                        let op = match (c.config_operation, value) {
                            (OP_DELETE, _) => Some(ConfigOp::Delete(name)),
                            (OP_SET, Some(v)) => Some(ConfigOp::Set(name, v)),
                            (OP_APPEND, Some(v)) => Some(ConfigOp::Append(name, v)),
                            (OP_SUBTRACT, Some(v)) => Some(ConfigOp::Subtract(name, v)),
                            (OP_SET | OP_APPEND | OP_SUBTRACT, None) => {
                                failed =
                                    Some((INVALID_CONFIG, format!("config {name} has no value")));
                                None
                            }
                            (other, _) => {
                                failed = Some((
                                    INVALID_REQUEST,
                                    format!("unknown config operation {other}"),
                                ));
                                None
                            }
                        };
                        ops.extend(op);
                    }
                    match failed {
                        Some((code, why)) => Planned::Failed(code, why),
                        None => Planned::Topic(ConfigAlteration {
                            topic: r.resource_name.to_string(),
                            replace: false,
                            ops,
                        }),
                    }
                }
                RESOURCE_BROKER => broker_refusal(shard, r.resource_name.as_str()),
                other => Planned::Failed(
                    INVALID_REQUEST,
                    format!("resource type {other} cannot be altered"),
                ),
            };
            (r.resource_type, r.resource_name, planned)
        })
        .collect();
    let resources = authorize_alter(shard, ctx, resources);
    match alter(shard, resources, request.validate_only).await {
        Ok(responses) => {
            let mut response = IncrementalAlterConfigsResponse::default();
            response.responses = responses
                .into_iter()
                .map(|r| {
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name)
                        .with_error_code(r.error_code)
                        .with_error_message(r.error_message)
                })
                .collect();
            ctx.respond(&response)
        }
        Err(response) => response,
    }
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: CreatePartitionsRequest,
) -> Response {
    let shard_count = shard.snapshot().shard_count;
    type Plan = Result<PartitionGrowth, (i16, String)>;
    let mut planned: Vec<(TopicName, Plan)> = Vec::new();
    for topic in request.topics {
        let assignment = match &topic.assignments {
            None => Ok(None),
            Some(assignments) => assignments
                .iter()
                .map(|a| {
                    let brokers: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
                    crate::cluster::parse_replica_brokers(&brokers)
                        .and_then(|set| {
                            match set.iter().find(|(_, s)| s.0 as usize >= shard_count) {
                                Some((n, s)) => Err(format!(
                                    "broker {} does not exist",
                                    crate::cluster::broker_id(*n, *s)
                                )),
                                None => Ok(set),
                            }
                        })
                        .map_err(|m| (INVALID_REPLICA_ASSIGNMENT, m))
                })
                .collect::<Result<Vec<Vec<(NodeId, ShardId)>>, _>>()
                .map(Some),
        };
        let denied = !super::acls::allowed(
            shard,
            ctx,
            acl::op::ALTER,
            acl::resource::TOPIC,
            &topic.name,
        );
        let growth = if denied {
            Err((
                TOPIC_AUTHORIZATION_FAILED,
                "Authorization failed.".to_string(),
            ))
        } else {
            assignment
        }
        .map(|assignment| PartitionGrowth {
            topic: topic.name.0.to_string(),
            count: topic.count,
            assignment,
        });
        planned.push((topic.name, growth));
    }
    let growths: Vec<PartitionGrowth> = planned
        .iter()
        .filter_map(|(_, g)| g.as_ref().ok().cloned())
        .collect();
    let mut outcomes = if growths.is_empty() {
        Vec::new()
    } else {
        match shard
            .control(ControlRequest::CreatePartitions {
                topics: growths,
                validate_only: request.validate_only,
            })
            .await
        {
            Ok(ControlReply::Results(results)) => results,
            _ => return Response::Close("controller unavailable".into()),
        }
    }
    .into_iter();
    let mut response = CreatePartitionsResponse::default();
    response.results = planned
        .into_iter()
        .map(|(name, growth)| {
            let (code, message) = match growth {
                Err((code, message)) => (code, Some(message)),
                Ok(_) => outcomes
                    .next()
                    .unwrap_or((UNKNOWN_SERVER_ERROR, Some("no answer".into()))),
            };
            CreatePartitionsTopicResult::default()
                .with_name(name)
                .with_error_code(code)
                .with_error_message(message.map(text))
        })
        .collect();
    ctx.respond(&response)
}

pub async fn delete_records(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: DeleteRecordsRequest,
) -> Response {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let denied =
            !super::acls::allowed(shard, ctx, acl::op::DELETE, acl::resource::TOPIC, &name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let mut out = DeleteRecordsPartitionResult::default()
                .with_partition_index(wanted.partition_index)
                .with_low_watermark(-1);
            let owned = if denied {
                Err(TOPIC_AUTHORIZATION_FAILED)
            } else {
                shard.owned_partition(&name, wanted.partition_index)
            };
            match owned {
                Err(code) => out.error_code = code,
                Ok(partition) => {
                    let deleted = partition.log.borrow_mut().delete_records(wanted.offset);
                    match deleted {
                        Ok((low, job)) => match job.run().await {
                            Ok(()) => {
                                tracing::info!(topic = %name, partition = wanted.partition_index, log_start_offset = low, "records deleted");
                                out.low_watermark = low;
                            }
                            Err(err) => {
                                tracing::error!(topic = %name, %err, "recording the log start offset failed");
                                out.error_code = KAFKA_STORAGE_ERROR;
                            }
                        },
                        Err(ReadError::OffsetOutOfRange { .. }) => {
                            out.error_code = OFFSET_OUT_OF_RANGE
                        }
                        Err(ReadError::Unavailable(_)) => out.error_code = KAFKA_STORAGE_ERROR,
                    }
                }
            }
            partitions.push(out);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let mut response = DeleteRecordsResponse::default();
    response.topics = topics;
    ctx.respond(&response)
}

/// Total and available bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed struct the call fills.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as i64;
    Some((stat.f_blocks as i64 * block, stat.f_bavail as i64 * block))
}

pub async fn describe_log_dirs(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: DescribeLogDirsRequest,
) -> Response {
    let wanted: Option<BTreeMap<String, Vec<i32>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for partition in shard.all_partitions() {
        let name = &partition.topic.name;
        let included = match &wanted {
            None => true,
            Some(w) => w.get(name).is_some_and(|ps| ps.contains(&partition.index)),
        };
        if !included {
            continue;
        }
        let size = partition.log.borrow().size_bytes() as i64;
        by_topic.entry(name.clone()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(partition.index)
                .with_partition_size(size)
                .with_offset_lag(0),
        );
    }
    let dir = std::fs::canonicalize(&shard.config.data_dir)
        .unwrap_or_else(|_| shard.config.data_dir.clone());
    let (total, usable) = disk_space(&dir).unwrap_or((-1, -1));
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(text(dir.display().to_string()))
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    result.topics = by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            DescribeLogDirsTopic::default()
                .with_name(TopicName(text(name)))
                .with_partitions(partitions)
        })
        .collect();
    let mut response = DescribeLogDirsResponse::default();
    response.results = vec![result];
    ctx.respond(&response)
}

pub async fn describe_cluster(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: DescribeClusterRequest,
) -> Response {
    let snapshot = shard.snapshot();
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(text(snapshot.cluster_id.clone()))
        .with_controller_id(BrokerId(shard.controller_broker(&snapshot)))
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            super::acls::operations(
                shard,
                ctx,
                super::authorized::CLUSTER,
                acl::resource::CLUSTER,
                acl::CLUSTER_NAME,
            )
        } else {
            super::authorized::AUTHORIZED_OPERATIONS_OMITTED
        })
        .with_endpoint_type(1);
    response.brokers = super::metadata::brokers(shard, &snapshot, ctx.listener)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(b.node_id)
                .with_host(b.host)
                .with_port(b.port)
                .with_rack(b.rack)
        })
        .collect();
    ctx.respond(&response)
}

/// A replicated partition answers from its epoch cache as Kafka's leader does (the
/// largest epoch at or below the one asked and where the next starts; the log end for the
/// current one). On a node alone leadership never moves: epoch 0 ends at the log end,
/// later epochs are unknown. The request's `current_leader_epoch` is checked first.
pub async fn offset_for_leader_epoch(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    request: OffsetForLeaderEpochRequest,
) -> Response {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        // Kafka: DESCRIBE on the topic (a consumer's READ implies it).
        let denied =
            !super::acls::allowed(shard, ctx, acl::op::DESCRIBE, acl::resource::TOPIC, &name);
        let partitions = topic
            .partitions
            .into_iter()
            .map(|p| {
                let mut out = EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1);
                let owned = if denied {
                    Err(TOPIC_AUTHORIZATION_FAILED)
                } else {
                    shard.owned_partition(&name, p.partition)
                }
                .and_then(|q| q.check_leader_epoch(p.current_leader_epoch).map(|()| q));
                match owned {
                    Err(code) => out.error_code = code,
                    Ok(partition) => {
                        let log = partition.log.borrow();
                        if let Some((epoch, end)) = log.end_offset_for_epoch(p.leader_epoch) {
                            // A replicated log: Kafka's answer from the epoch cache.
                            out.leader_epoch = epoch;
                            out.end_offset = end;
                        } else if p.leader_epoch == LEADER_EPOCH {
                            out.leader_epoch = LEADER_EPOCH;
                            out.end_offset = log.high_watermark();
                        }
                    }
                }
                out
            })
            .collect();
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    let mut response = OffsetForLeaderEpochResponse::default();
    response.topics = topics;
    ctx.respond(&response)
}
