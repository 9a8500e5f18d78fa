//! CreateTopics and DeleteTopics: validated here, carried out by the controller on shard 0,
//! answered once every shard has applied the change (so a client that creates a topic and
//! then produces to it never sees it missing).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Response};
use crate::cluster::controller::{ControlReply, ControlRequest, TopicOutcome, TopicRef, TopicSpec};
use crate::cluster::{topic_config, ShardId};
use crate::protocol::errors::*;
use crate::shard::Shard;

pub async fn create(shard: &Rc<Shard>, ctx: &Ctx, request: CreateTopicsRequest) -> Response {
    let mut results: Vec<Option<CreatableTopicResult>> = Vec::new();
    let mut specs = Vec::new();
    // The overrides asked for each valid topic: a v5+ answer lists the configs it got.
    let mut requested: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    use crate::security::acl::{op, resource};
    let may_create_all = super::acls::cluster(shard, ctx, op::CREATE);
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let mut error = None;
        let assignment = if topic.assignments.is_empty() {
            None
        } else {
            let mut shards = vec![None; topic.assignments.len()];
            for a in &topic.assignments {
                let slot = usize::try_from(a.partition_index)
                    .ok()
                    .and_then(|i| shards.get_mut(i));
                let brokers: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
                match slot {
                    Some(slot) => match crate::cluster::parse_replica_brokers(&brokers) {
                        Ok(set) => *slot = Some(set),
                        Err(message) => error = Some((INVALID_REPLICA_ASSIGNMENT, message)),
                    },
                    None => {
                        error = Some((
                            INVALID_REPLICA_ASSIGNMENT,
                            "partitions must be numbered from 0, each once".to_string(),
                        ))
                    }
                }
            }
            if shards.iter().any(|s| s.is_none()) && error.is_none() {
                error = Some((
                    INVALID_REPLICA_ASSIGNMENT,
                    "assignment leaves a partition without a broker".into(),
                ));
            }
            Some(
                shards
                    .into_iter()
                    .map(|s| s.unwrap_or_else(|| vec![(shard.node, ShardId(0))]))
                    .collect(),
            )
        };
        let mut configs = BTreeMap::new();
        for c in &topic.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => {
                    error = Some((
                        INVALID_CONFIG,
                        format!("config {} has no value", c.name.as_str()),
                    ))
                }
            }
        }
        // Kafka: CREATE on the cluster or on the topic.
        if !may_create_all && !super::acls::allowed(shard, ctx, op::CREATE, resource::TOPIC, &name)
        {
            error = Some((
                TOPIC_AUTHORIZATION_FAILED,
                "Authorization failed.".to_string(),
            ));
        }
        match error {
            Some((code, message)) => results.push(Some(
                CreatableTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message))),
            )),
            None => {
                results.push(None);
                requested.insert(name.clone(), configs.clone());
                specs.push(TopicSpec {
                    name,
                    partitions: topic.num_partitions,
                    replication_factor: topic.replication_factor,
                    assignment,
                    configs,
                    token: None,
                });
            }
        }
    }
    let outcomes = if specs.is_empty() {
        Vec::new()
    } else {
        match shard
            .control(ControlRequest::CreateTopics {
                topics: specs,
                validate_only: request.validate_only,
            })
            .await
        {
            Ok(ControlReply::Topics(outcomes)) => outcomes,
            _ => {
                return Response::Close("controller unavailable".into());
            }
        }
    };
    let mut outcomes = outcomes.into_iter();
    let with_configs = ctx.version >= 5;
    let topics = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                let Some(outcome) = outcomes.next() else {
                    return CreatableTopicResult::default();
                };
                let configs = outcome
                    .name
                    .as_ref()
                    .and_then(|n| requested.get(n))
                    .filter(|_| with_configs && outcome.error_code == NONE)
                    .map(|overrides| topic_configs(&shard.config, overrides));
                created_result(outcome).with_configs(configs)
            })
        })
        .collect();
    let mut response = CreateTopicsResponse::default();
    response.topics = topics;
    ctx.respond(&response)
}

/// Every config of a new topic as CreateTopics v5+ reports it (KIP-525): DescribeConfigs'
/// values and sources, without synonyms or documentation; as in Kafka, an override shows
/// the value exactly as the request gave it (DescribeConfigs shows it canonical).
fn topic_configs(
    config: &crate::config::Config,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    topic_config::describe(config, overrides)
        .into_iter()
        .map(|d| {
            let value = overrides.get(d.def.name).cloned().unwrap_or(d.value);
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(d.def.name))
                .with_value(Some(StrBytes::from_string(value)))
                .with_read_only(false)
                .with_config_source(d.source)
                .with_is_sensitive(false)
        })
        .collect()
}

fn created_result(o: TopicOutcome) -> CreatableTopicResult {
    let mut r = CreatableTopicResult::default()
        .with_name(TopicName(StrBytes::from_string(o.name.unwrap_or_default())))
        .with_topic_id(o.id)
        .with_error_code(o.error_code)
        .with_error_message(o.message.map(StrBytes::from_string));
    if o.error_code == NONE {
        r.num_partitions = o.partitions;
        r.replication_factor = o.replication_factor.max(1);
    }
    r
}

pub async fn delete(shard: &Rc<Shard>, ctx: &Ctx, request: DeleteTopicsRequest) -> Response {
    let refs: Vec<TopicRef> = if ctx.version >= 6 {
        request
            .topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => TopicRef::Name(name.0.to_string()),
                None => TopicRef::Id(t.topic_id),
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| TopicRef::Name(n.0.to_string()))
            .collect()
    };
    // Kafka: DELETE on each topic; a denied one is answered here, not deleted.
    let snapshot = shard.snapshot();
    let mut denied = Vec::new();
    let refs: Vec<TopicRef> = refs
        .into_iter()
        .filter(|r| {
            let name = match r {
                TopicRef::Name(n) => Some(n.clone()),
                TopicRef::Id(id) => snapshot.topic_by_id(id).map(|t| t.name.clone()),
            };
            let Some(name) = name else { return true };
            let ok = super::acls::allowed(
                shard,
                ctx,
                crate::security::acl::op::DELETE,
                crate::security::acl::resource::TOPIC,
                &name,
            );
            if !ok {
                let id = match r {
                    TopicRef::Id(id) => *id,
                    TopicRef::Name(_) => Default::default(),
                };
                denied.push(
                    DeletableTopicResult::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name))))
                        .with_topic_id(id)
                        .with_error_code(TOPIC_AUTHORIZATION_FAILED),
                );
            }
            ok
        })
        .collect();
    let outcomes = match shard
        .control(ControlRequest::DeleteTopics { topics: refs })
        .await
    {
        Ok(ControlReply::Topics(outcomes)) => outcomes,
        _ => return Response::Close("controller unavailable".into()),
    };
    let mut response = DeleteTopicsResponse::default();
    response.responses = outcomes
        .into_iter()
        .map(|o| {
            DeletableTopicResult::default()
                .with_name(o.name.map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(o.id)
                .with_error_code(o.error_code)
                .with_error_message(o.message.map(StrBytes::from_string))
        })
        .chain(denied)
        .collect();
    ctx.respond(&response)
}
