//! The admin commands of the `strand` binary (`strand topic …`, `strand cluster …`,
//! `strand group …`, `strand produce`, `strand consume`): they talk the Kafka protocol to
//! any broker of a cluster, Strand or not, like Kafka's `kafka-topics.sh`,
//! `kafka-consumer-groups.sh` and console producer and consumer. Human tables by default,
//! `--format json` for scripts; a failure is one line naming Kafka's error, and a non-zero
//! exit.

pub mod client;
mod consume;
mod group;
mod produce;
pub mod progress;
pub mod security;
pub mod user;

pub use consume::{consume, ConsumeArgs};
pub use group::{group, GroupCommand, ResetOffsets};
pub use produce::{produce, ProduceArgs};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use client::{describe_error, Conn, Failure};

/// The brokers a command starts from.
#[derive(Args, Clone, Debug)]
pub struct Bootstrap {
    /// Brokers to start from (`host:port`, comma-separated; any one that answers will do).
    #[arg(
        short = 'b',
        long = "brokers",
        default_value = "127.0.0.1:9092",
        env = "STRAND_BROKERS"
    )]
    pub brokers: String,
    /// Client settings for a secured listener, librdkafka's names (`security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`,
    /// `ssl.certificate.location`, `ssl.key.location`), one `key=value` per line.
    #[arg(long, value_name = "FILE", env = "STRAND_COMMAND_CONFIG")]
    pub command_config: Option<std::path::PathBuf>,
    /// A client setting as in `--command-config`, overriding it; repeatable (kcat's -X).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub client_settings: Vec<String>,
}

/// How long a connection or a request may take unless `--timeout-ms` says otherwise.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Where the commands connect, and how they print.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    #[command(flatten)]
    pub bootstrap: Bootstrap,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// How long a connection or a request may take, in milliseconds.
    #[arg(long, default_value_t = REQUEST_TIMEOUT_MS)]
    pub timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// List the topics: partitions, replication factor.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// A topic's partitions (leader, replicas, ISR, offline replicas, log start and end
    /// offsets, size on its leader) and the configs set on it.
    Describe {
        #[command(flatten)]
        connection: Connection,
        name: String,
    },
    /// Create a topic (CreateTopics, sent to the controller).
    Create {
        #[command(flatten)]
        connection: Connection,
        name: String,
        /// Partitions; -1: the broker's `num.partitions`.
        #[arg(short = 'p', long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replicas per partition; -1: the broker's `default.replication.factor`.
        #[arg(short = 'r', long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic config, `name=value` (repeatable).
        #[arg(short = 'c', long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
    },
    /// Delete a topic (DeleteTopics, sent to the controller).
    Delete {
        #[command(flatten)]
        connection: Connection,
        name: String,
    },
    /// Set or remove topic configs (IncrementalAlterConfigs): the others stay as they are.
    AlterConfig {
        #[command(flatten)]
        connection: Connection,
        name: String,
        /// A config to set, `name=value` (repeatable).
        #[arg(short = 's', long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A config to remove, back to the broker default (repeatable).
        #[arg(short = 'd', long = "delete", value_name = "NAME")]
        delete: Vec<String>,
    },
    /// Grow a topic to `--total` partitions (CreatePartitions, sent to the controller).
    AddPartitions {
        #[command(flatten)]
        connection: Connection,
        name: String,
        /// The partition count wanted (more than the topic has).
        #[arg(long)]
        total: i32,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Brokers, controller, cluster id, topic and partition counts.
    Info {
        #[command(flatten)]
        connection: Connection,
    },
    /// Exit 1 if a partition has no leader or fewer in-sync replicas than replicas
    /// (listing them), 2 if no broker answered, else 0: for scripts and probes.
    Health {
        #[command(flatten)]
        connection: Connection,
    },
}

/// Runs a topic command; returns the process exit code.
pub fn topic(command: TopicCommand) -> i32 {
    finish(match command {
        TopicCommand::List { connection } => topic_list(&connection),
        TopicCommand::Describe { connection, name } => topic_describe(&connection, &name),
        TopicCommand::Create {
            connection,
            name,
            partitions,
            replication_factor,
            configs,
        } => topic_create(&connection, &name, partitions, replication_factor, &configs),
        TopicCommand::Delete { connection, name } => topic_delete(&connection, &name),
        TopicCommand::AlterConfig {
            connection,
            name,
            set,
            delete,
        } => topic_alter_config(&connection, &name, &set, &delete),
        TopicCommand::AddPartitions {
            connection,
            name,
            total,
        } => topic_add_partitions(&connection, &name, total),
    })
}

/// Runs a cluster command; returns the process exit code.
pub fn cluster(command: ClusterCommand) -> i32 {
    match command {
        ClusterCommand::Info { connection } => finish(cluster_info(&connection)),
        // A probe tells "the cluster answered: unhealthy" (1) from "no answer" (2).
        ClusterCommand::Health { connection } => match cluster_health(&connection) {
            Ok(code) => code,
            Err(failure) => {
                report(&failure);
                HEALTH_UNREACHABLE
            }
        },
    }
}

/// `strand cluster health`'s exit code when no broker answered.
const HEALTH_UNREACHABLE: i32 = 2;

fn finish(result: Result<i32, Failure>) -> i32 {
    match result {
        Ok(code) => code,
        Err(failure) => {
            report(&failure);
            1
        }
    }
}

/// Prints a failure: one line on stderr.
fn report(failure: &Failure) {
    eprintln!("strand: {failure}");
}

/// An error code and the broker's message, as [`describe_error`] prints them.
/// What to do about an error a command naming a topic got, if something obvious.
pub(super) fn topic_hint(code: i16) -> &'static str {
    match code {
        3 => " (strand topic list shows the topics; strand topic create makes one)",
        5 => " (it is being created or has no leader yet; try again)",
        41 => " (the controller moved; try again)",
        _ => "",
    }
}

fn result_error(code: i16, message: &Option<StrBytes>) -> String {
    describe_error(code, message.as_ref().map(|m| m.as_str()))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A session with a cluster: the bootstrap connection and one per broker as needed.
struct Session {
    timeout: Duration,
    /// The `-b` addresses, to start over from when the bootstrap connection fails.
    seeds: Vec<String>,
    /// TLS and SASL settings of every connection.
    security: security::ClientSecurity,
    bootstrap: Conn,
    /// Broker id → `host:port`, from the last Metadata.
    brokers: BTreeMap<i32, String>,
    conns: BTreeMap<i32, Conn>,
}

impl Session {
    fn open(connection: &Connection) -> Result<Session, Failure> {
        Session::connect(&connection.bootstrap, connection.timeout_ms)
    }

    /// Connects to the first of the `-b` brokers that answers.
    fn connect(bootstrap: &Bootstrap, timeout_ms: u64) -> Result<Session, Failure> {
        let timeout = Duration::from_millis(timeout_ms.max(1));
        let seeds: Vec<String> = bootstrap
            .brokers
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect();
        let security = security::ClientSecurity::load(
            bootstrap.command_config.as_deref(),
            &bootstrap.client_settings,
        )
        .map_err(Failure::new)?;
        let mut failures = Vec::new();
        for address in &seeds {
            match Conn::connect(address, timeout, &security) {
                Ok(conn) => {
                    return Ok(Session {
                        timeout,
                        seeds,
                        security,
                        bootstrap: conn,
                        brokers: BTreeMap::new(),
                        conns: BTreeMap::new(),
                    })
                }
                Err(failure) => failures.push(failure.message),
            }
        }
        Err(Failure::new(if failures.is_empty() {
            "no broker given (-b host:port)".to_string()
        } else {
            format!(
                "{} (is a broker running there? -b names others)",
                failures.join("; ")
            )
        }))
    }

    /// Metadata of the given topics (all if `None`); remembers the brokers.
    fn metadata(&mut self, topics: Option<&[&str]>) -> Result<MetadataResponse, Failure> {
        let version = self.bootstrap.version(ApiKey::Metadata, 1, 12)?;
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(text(n)))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response: MetadataResponse =
            match self.bootstrap.call(ApiKey::Metadata, version, &request) {
                Ok(response) => response,
                Err(failure) => {
                    // The broker went away: ask another one it or `-b` named.
                    self.reconnect(failure)?;
                    let version = self.bootstrap.version(ApiKey::Metadata, 1, 12)?;
                    self.bootstrap.call(ApiKey::Metadata, version, &request)?
                }
            };
        self.brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        Ok(response)
    }

    /// Replaces a failed bootstrap connection by one to any other broker known (from the
    /// last Metadata, then `-b`); `failure` if none answers.
    fn reconnect(&mut self, failure: Failure) -> Result<(), Failure> {
        let failed = self.bootstrap.address().to_string();
        let mut candidates: Vec<String> = self.brokers.values().cloned().collect();
        candidates.extend(self.seeds.iter().cloned());
        candidates.retain(|a| *a != failed);
        candidates.dedup();
        for address in candidates {
            if let Ok(conn) = Conn::connect(&address, self.timeout, &self.security) {
                self.bootstrap = conn;
                self.conns.retain(|_, c| c.address() != failed);
                return Ok(());
            }
        }
        Err(failure)
    }

    /// Drops the connection to broker `id` after it failed; the next use reopens it.
    fn forget(&mut self, id: i32) {
        self.conns.remove(&id);
    }

    /// The partitions of `topic`: index → (leader id, -1 if none; leader epoch). Fails
    /// with the topic's error if the metadata has none.
    fn partitions(&mut self, topic: &str) -> Result<BTreeMap<i32, (i32, i32)>, Failure> {
        let metadata = self.metadata(Some(&[topic]))?;
        let found = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .ok_or_else(|| Failure::new(format!("topic {topic}: not in the metadata answer")))?;
        if found.error_code != 0 {
            return Err(Failure::new(format!(
                "topic {topic}: {}{}",
                describe_error(found.error_code, None),
                topic_hint(found.error_code)
            )));
        }
        Ok(found
            .partitions
            .iter()
            .map(|p| (p.partition_index, (p.leader_id.0, p.leader_epoch)))
            .collect())
    }

    /// The connection to broker `id` (opened on first use).
    fn broker(&mut self, id: i32) -> Result<&mut Conn, Failure> {
        if !self.conns.contains_key(&id) {
            let address = self
                .brokers
                .get(&id)
                .ok_or_else(|| Failure::new(format!("broker {id} is not in the metadata")))?
                .clone();
            let conn = Conn::connect(&address, self.timeout, &self.security)?;
            self.conns.insert(id, conn);
        }
        Ok(self.conns.get_mut(&id).expect("inserted"))
    }

    /// The controller's connection (CreateTopics and DeleteTopics go there).
    fn controller(&mut self) -> Result<&mut Conn, Failure> {
        let metadata = self.metadata(Some(&[]))?;
        let id = metadata.controller_id.0;
        if id < 0 {
            return Err(Failure::new(
                "the cluster has no controller now (no metadata leader); try again",
            ));
        }
        self.broker(id)
    }

    /// Each partition's leader (-1: none) of the given topics, from Metadata, and the
    /// error of each topic the metadata could not give.
    fn leaders(&mut self, topics: &[&str]) -> Result<(Leaders, BTreeMap<String, i16>), Failure> {
        let metadata = self.metadata(Some(topics))?;
        let mut leaders = Leaders::new();
        let mut errors = BTreeMap::new();
        for t in &metadata.topics {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            if t.error_code != 0 {
                errors.insert(name, t.error_code);
                continue;
            }
            for p in &t.partitions {
                leaders.insert((name.clone(), p.partition_index), p.leader_id.0);
            }
        }
        Ok((leaders, errors))
    }

    /// The offsets at `timestamp` of the partitions in `leaders`, asked of each one's
    /// leader (ListOffsets): -2 the log start offset, -1 the log end offset, else the
    /// first offset whose record's timestamp is at or after it (-1 if there is none). A
    /// partition the leader could not answer gets the reason instead.
    fn list_offsets(
        &mut self,
        leaders: &Leaders,
        timestamp: i64,
    ) -> BTreeMap<(String, i32), Result<i64, String>> {
        let mut out = BTreeMap::new();
        let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
        for ((topic, partition), &leader) in leaders {
            if leader < 0 {
                out.insert((topic.clone(), *partition), Err("no leader".to_string()));
            } else {
                by_leader
                    .entry(leader)
                    .or_default()
                    .entry(topic)
                    .or_default()
                    .push(*partition);
            }
        }
        for (leader, topics) in &by_leader {
            let request = ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_topics(
                    topics
                        .iter()
                        .map(|(topic, partitions)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(text(topic)))
                                .with_partitions(
                                    partitions
                                        .iter()
                                        .map(|&i| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(i)
                                                .with_timestamp(timestamp)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            let answer = self.broker(*leader).and_then(|conn| {
                let version = conn.version(ApiKey::ListOffsets, 1, 7)?;
                conn.call::<_, ListOffsetsResponse>(ApiKey::ListOffsets, version, &request)
            });
            match answer {
                Ok(response) => {
                    for t in &response.topics {
                        for p in &t.partitions {
                            out.insert(
                                (t.name.0.to_string(), p.partition_index),
                                if p.error_code == 0 {
                                    Ok(p.offset)
                                } else {
                                    Err(describe_error(p.error_code, None))
                                },
                            );
                        }
                    }
                }
                Err(failure) => {
                    for (topic, partitions) in topics {
                        for &p in partitions {
                            out.insert((topic.to_string(), p), Err(failure.message.clone()));
                        }
                    }
                }
            }
        }
        for key in leaders.keys() {
            out.entry(key.clone())
                .or_insert_with(|| Err("the leader did not answer for it".to_string()));
        }
        out
    }

    /// The connection to the coordinator of `group` (FindCoordinator), asked again while
    /// the cluster answers that it is loading or moving, until the timeout.
    fn coordinator(&mut self, group: &str) -> Result<&mut Conn, Failure> {
        use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
        let deadline = Instant::now() + self.timeout;
        loop {
            let conn = &mut self.bootstrap;
            let version = conn.version(ApiKey::FindCoordinator, 1, 4)?;
            let mut request = FindCoordinatorRequest::default().with_key_type(0);
            if version >= 4 {
                request.coordinator_keys = vec![text(group)];
            } else {
                request.key = text(group);
            }
            let response: FindCoordinatorResponse =
                conn.call(ApiKey::FindCoordinator, version, &request)?;
            let (code, message, id, host, port) = match response.coordinators.first() {
                Some(c) if version >= 4 => (
                    c.error_code,
                    c.error_message.clone(),
                    c.node_id.0,
                    c.host.to_string(),
                    c.port,
                ),
                None if version >= 4 => {
                    return Err(Failure::new("FindCoordinator answered no coordinator"))
                }
                _ => (
                    response.error_code,
                    response.error_message.clone(),
                    response.node_id.0,
                    response.host.to_string(),
                    response.port,
                ),
            };
            match code {
                0 => {
                    self.brokers.insert(id, format!("{host}:{port}"));
                    return self.broker(id);
                }
                // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR.
                14..=16 if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                _ => {
                    return Err(Failure::new(format!(
                        "no coordinator for group {group}: {}",
                        result_error(code, &message)
                    )))
                }
            }
        }
    }
}

/// (topic, partition) → its leader's broker id (-1: none).
type Leaders = BTreeMap<(String, i32), i32>;

fn topic_list(connection: &Connection) -> Result<i32, Failure> {
    let mut session = Session::open(connection)?;
    let metadata = session.metadata(None)?;
    let mut rows: Vec<(String, usize, usize, bool)> = metadata
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| {
            let rf = t
                .partitions
                .iter()
                .map(|p| p.replica_nodes.len())
                .max()
                .unwrap_or(0);
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.partitions.len(),
                rf,
                t.is_internal,
            )
        })
        .collect();
    rows.sort();
    match connection.format {
        Format::Json => print_json(&json!(rows
            .iter()
            .map(|(name, partitions, rf, internal)| json!({
                "name": name, "partitions": partitions, "replication_factor": rf,
                "internal": internal,
            }))
            .collect::<Vec<_>>())),
        Format::Table => print_table(
            &["TOPIC", "PARTITIONS", "REPLICATION"],
            rows.iter()
                .map(|(name, partitions, rf, _)| {
                    vec![name.clone(), partitions.to_string(), rf.to_string()]
                })
                .collect(),
        ),
    }
    Ok(0)
}

/// One partition as `topic describe` shows it.
struct PartitionView {
    index: i32,
    leader: i32,
    epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline: Vec<i32>,
    start: Option<i64>,
    end: Option<i64>,
    size: Option<i64>,
}

fn topic_describe(connection: &Connection, name: &str) -> Result<i32, Failure> {
    let mut session = Session::open(connection)?;
    let metadata = session.metadata(Some(&[name]))?;
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
        .ok_or_else(|| Failure::new(format!("topic {name}: not in the metadata answer")))?;
    if topic.error_code != 0 {
        return Err(Failure::new(format!(
            "topic {name}: {}{}",
            describe_error(topic.error_code, None),
            topic_hint(topic.error_code)
        )));
    }
    let mut partitions: Vec<PartitionView> = topic
        .partitions
        .iter()
        .map(|p| PartitionView {
            index: p.partition_index,
            leader: p.leader_id.0,
            epoch: p.leader_epoch,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            offline: p.offline_replicas.iter().map(|b| b.0).collect(),
            start: None,
            end: None,
            size: None,
        })
        .collect();
    partitions.sort_by_key(|p| p.index);
    let topic_id = topic.topic_id.to_string();
    let internal = topic.is_internal;

    // Offsets and sizes, from each partition's leader (a leader that cannot be reached
    // leaves them blank).
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in partitions.iter().filter(|p| p.leader >= 0) {
        by_leader.entry(p.leader).or_default().push(p.index);
    }
    let leaders: Leaders = partitions
        .iter()
        .map(|p| ((name.to_string(), p.index), p.leader))
        .collect();
    let starts = session.list_offsets(&leaders, -2);
    let ends = session.list_offsets(&leaders, -1);
    for p in &mut partitions {
        let key = (name.to_string(), p.index);
        p.start = starts.get(&key).and_then(|o| o.as_ref().ok().copied());
        p.end = ends.get(&key).and_then(|o| o.as_ref().ok().copied());
    }
    for (leader, indexes) in &by_leader {
        let Ok(conn) = session.broker(*leader) else {
            continue;
        };
        if let Ok(version) = conn.version(ApiKey::DescribeLogDirs, 1, 4) {
            let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
                DescribableLogDirTopic::default()
                    .with_topic(TopicName(text(name)))
                    .with_partitions(indexes.clone()),
            ]));
            if let Ok(response) =
                conn.call::<_, DescribeLogDirsResponse>(ApiKey::DescribeLogDirs, version, &request)
            {
                for dir in response.results.iter().filter(|d| d.error_code == 0) {
                    for t in dir.topics.iter().filter(|t| t.name.0.as_str() == name) {
                        for answer in &t.partitions {
                            if let Some(p) = partitions
                                .iter_mut()
                                .find(|p| p.index == answer.partition_index)
                            {
                                *p.size.get_or_insert(0) += answer.partition_size;
                            }
                        }
                    }
                }
            }
        }
    }

    // The configs set on the topic (not defaults).
    let mut configs: Vec<(String, String)> = Vec::new();
    let version = session.bootstrap.version(ApiKey::DescribeConfigs, 1, 4)?;
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text(name))]);
    let response: DescribeConfigsResponse =
        session
            .bootstrap
            .call(ApiKey::DescribeConfigs, version, &request)?;
    for result in &response.results {
        if result.error_code != 0 {
            return Err(Failure::new(format!(
                "configs of {name}: {}",
                result_error(result.error_code, &result.error_message)
            )));
        }
        for config in result.configs.iter().filter(|c| c.config_source == 1) {
            configs.push((
                config.name.to_string(),
                if config.is_sensitive {
                    "(sensitive)".to_string()
                } else {
                    config
                        .value
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                },
            ));
        }
    }
    configs.sort();

    let blank = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let ids = |v: &[i32]| {
        v.iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match connection.format {
        Format::Json => print_json(&json!({
            "name": name,
            "topic_id": topic_id,
            "internal": internal,
            "partitions": partitions.iter().map(|p| json!({
                "partition": p.index, "leader": p.leader, "leader_epoch": p.epoch,
                "replicas": p.replicas, "isr": p.isr, "offline_replicas": p.offline,
                "log_start_offset": p.start, "log_end_offset": p.end, "size_bytes": p.size,
            })).collect::<Vec<_>>(),
            "configs": configs.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })),
        Format::Table => {
            println!(
                "Topic: {name}  Id: {topic_id}  Partitions: {}  Replication: {}",
                partitions.len(),
                partitions
                    .iter()
                    .map(|p| p.replicas.len())
                    .max()
                    .unwrap_or(0)
            );
            if configs.is_empty() {
                println!("Configs: (defaults)");
            } else {
                let set: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("Configs: {}", set.join(", "));
            }
            print_table(
                &[
                    "PARTITION",
                    "LEADER",
                    "EPOCH",
                    "REPLICAS",
                    "ISR",
                    "OFFLINE",
                    "START",
                    "END",
                    "SIZE",
                ],
                partitions
                    .iter()
                    .map(|p| {
                        vec![
                            p.index.to_string(),
                            if p.leader >= 0 {
                                p.leader.to_string()
                            } else {
                                "none".into()
                            },
                            p.epoch.to_string(),
                            ids(&p.replicas),
                            ids(&p.isr),
                            ids(&p.offline),
                            blank(p.start),
                            blank(p.end),
                            blank(p.size),
                        ]
                    })
                    .collect(),
            );
        }
    }
    Ok(0)
}

fn topic_create(
    connection: &Connection,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[String],
) -> Result<i32, Failure> {
    let mut parsed = Vec::with_capacity(configs.len());
    for config in configs {
        let (key, value) = config
            .split_once('=')
            .ok_or_else(|| Failure::new(format!("--config {config:?}: expected NAME=VALUE")))?;
        parsed.push(
            CreatableTopicConfig::default()
                .with_name(text(key.trim()))
                .with_value(Some(text(value.trim()))),
        );
    }
    let mut session = Session::open(connection)?;
    let timeout_ms = connection.timeout_ms.min(i32::MAX as u64) as i32;
    let conn = session.controller()?;
    let version = conn.version(ApiKey::CreateTopics, 2, 7)?;
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(text(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(parsed)]);
    let response: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, version, &request)?;
    let result = response
        .topics
        .first()
        .ok_or_else(|| Failure::new("CreateTopics answered no topic"))?;
    if result.error_code != 0 {
        let hint = match result.error_code {
            36 => " (delete it first, or pick another name)",
            38 => " (at most one replica per live node; -r -1 takes the broker's default)",
            41 => " (the controller moved; try again)",
            _ => "",
        };
        return Err(Failure::new(format!(
            "cannot create {name}: {}{hint}",
            result_error(result.error_code, &result.error_message)
        )));
    }
    match connection.format {
        Format::Json => print_json(&json!({
            "created": name,
            "topic_id": result.topic_id.to_string(),
            "partitions": result.num_partitions,
            "replication_factor": result.replication_factor,
        })),
        Format::Table => println!(
            "created {name}: {} partitions, replication factor {}",
            result.num_partitions, result.replication_factor
        ),
    }
    Ok(0)
}

fn topic_delete(connection: &Connection, name: &str) -> Result<i32, Failure> {
    let mut session = Session::open(connection)?;
    let timeout_ms = connection.timeout_ms.min(i32::MAX as u64) as i32;
    let conn = session.controller()?;
    let version = conn.version(ApiKey::DeleteTopics, 1, 6)?;
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
    if version >= 6 {
        request.topics = vec![DeleteTopicState::default().with_name(Some(TopicName(text(name))))];
    } else {
        request.topic_names = vec![TopicName(text(name))];
    }
    let response: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, version, &request)?;
    let result = response
        .responses
        .first()
        .ok_or_else(|| Failure::new("DeleteTopics answered no topic"))?;
    if result.error_code != 0 {
        return Err(Failure::new(format!(
            "cannot delete {name}: {}{}",
            result_error(result.error_code, &result.error_message),
            match result.error_code {
                3 => " (strand topic list shows the topics)",
                code => topic_hint(code),
            }
        )));
    }
    match connection.format {
        Format::Json => print_json(&json!({ "deleted": name })),
        Format::Table => println!("deleted {name}"),
    }
    Ok(0)
}

fn topic_alter_config(
    connection: &Connection,
    name: &str,
    set: &[String],
    delete: &[String],
) -> Result<i32, Failure> {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    if set.is_empty() && delete.is_empty() {
        return Err(Failure::new(
            "nothing to change: give --set NAME=VALUE or --delete NAME",
        ));
    }
    let mut configs = Vec::with_capacity(set.len() + delete.len());
    for config in set {
        let (key, value) = config
            .split_once('=')
            .ok_or_else(|| Failure::new(format!("--set {config:?}: expected NAME=VALUE")))?;
        configs.push(
            AlterableConfig::default()
                .with_name(text(key.trim()))
                .with_config_operation(0)
                .with_value(Some(text(value.trim()))),
        );
    }
    for key in delete {
        configs.push(
            AlterableConfig::default()
                .with_name(text(key.trim()))
                .with_config_operation(1),
        );
    }
    let mut session = Session::open(connection)?;
    let conn = &mut session.bootstrap;
    let version = conn.version(ApiKey::IncrementalAlterConfigs, 0, 1)?;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text(name))
            .with_configs(configs),
    ]);
    let response: IncrementalAlterConfigsResponse =
        conn.call(ApiKey::IncrementalAlterConfigs, version, &request)?;
    let result = response
        .responses
        .first()
        .ok_or_else(|| Failure::new("IncrementalAlterConfigs answered no resource"))?;
    if result.error_code != 0 {
        return Err(Failure::new(format!(
            "cannot change the configs of {name}: {}{}",
            result_error(result.error_code, &result.error_message),
            topic_hint(result.error_code)
        )));
    }
    match connection.format {
        Format::Json => print_json(&json!({ "altered": name, "set": set, "deleted": delete })),
        Format::Table => println!(
            "altered {name}: {} set, {} removed",
            set.len(),
            delete.len()
        ),
    }
    Ok(0)
}

fn topic_add_partitions(connection: &Connection, name: &str, total: i32) -> Result<i32, Failure> {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
    let mut session = Session::open(connection)?;
    let timeout_ms = connection.timeout_ms.min(i32::MAX as u64) as i32;
    let conn = session.controller()?;
    let version = conn.version(ApiKey::CreatePartitions, 0, 3)?;
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(text(name)))
            .with_count(total)
            .with_assignments(None)]);
    let response: CreatePartitionsResponse =
        conn.call(ApiKey::CreatePartitions, version, &request)?;
    let result = response
        .results
        .first()
        .ok_or_else(|| Failure::new("CreatePartitions answered no topic"))?;
    if result.error_code != 0 {
        let hint = match result.error_code {
            37 => " (--total is the new partition count, above the current one)",
            code => topic_hint(code),
        };
        return Err(Failure::new(format!(
            "cannot add partitions to {name}: {}{hint}",
            result_error(result.error_code, &result.error_message)
        )));
    }
    match connection.format {
        Format::Json => print_json(&json!({ "topic": name, "partitions": total })),
        Format::Table => println!("{name} now has {total} partitions"),
    }
    Ok(0)
}

fn cluster_info(connection: &Connection) -> Result<i32, Failure> {
    let mut session = Session::open(connection)?;
    let metadata = session.metadata(None)?;
    let topics = metadata.topics.iter().filter(|t| t.error_code == 0).count();
    let partitions: usize = metadata
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| t.partitions.len())
        .sum();
    let mut brokers: Vec<_> = metadata
        .brokers
        .iter()
        .map(|b| {
            (
                b.node_id.0,
                format!("{}:{}", b.host, b.port),
                b.rack.as_ref().map(|r| r.to_string()),
            )
        })
        .collect();
    brokers.sort();
    let cluster_id = metadata
        .cluster_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    match connection.format {
        Format::Json => print_json(&json!({
            "cluster_id": cluster_id,
            "controller": metadata.controller_id.0,
            "brokers": brokers.iter().map(|(id, address, rack)| json!({
                "id": id, "address": address, "rack": rack,
            })).collect::<Vec<_>>(),
            "topics": topics,
            "partitions": partitions,
        })),
        Format::Table => {
            println!("Cluster: {cluster_id}");
            println!(
                "Controller: {}",
                if metadata.controller_id.0 >= 0 {
                    metadata.controller_id.0.to_string()
                } else {
                    "none".into()
                }
            );
            println!("Topics: {topics}  Partitions: {partitions}");
            print_table(
                &["BROKER", "ADDRESS", "RACK"],
                brokers
                    .iter()
                    .map(|(id, address, rack)| {
                        vec![
                            id.to_string(),
                            address.clone(),
                            rack.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect(),
            );
        }
    }
    Ok(0)
}

fn cluster_health(connection: &Connection) -> Result<i32, Failure> {
    let started = Instant::now();
    let mut session = Session::open(connection)?;
    let metadata = session.metadata(None)?;
    let mut problems: Vec<(String, i32, &'static str, String)> = Vec::new();
    let mut partitions = 0usize;
    for topic in metadata.topics.iter().filter(|t| t.error_code == 0) {
        let name = topic
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .unwrap_or_default();
        for p in &topic.partitions {
            partitions += 1;
            if p.leader_id.0 < 0 {
                problems.push((
                    name.clone(),
                    p.partition_index,
                    "leaderless",
                    format!(
                        "replicas {:?}",
                        p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>()
                    ),
                ));
            } else if p.isr_nodes.len() < p.replica_nodes.len() {
                problems.push((
                    name.clone(),
                    p.partition_index,
                    "under-replicated",
                    format!(
                        "isr {:?} of replicas {:?}",
                        p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                        p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>()
                    ),
                ));
            }
        }
    }
    problems.sort();
    let healthy = problems.is_empty() && metadata.controller_id.0 >= 0;
    match connection.format {
        Format::Json => print_json(&json!({
            "healthy": healthy,
            "controller": metadata.controller_id.0,
            "brokers": metadata.brokers.len(),
            "partitions": partitions,
            "problems": problems.iter().map(|(t, p, what, detail)| json!({
                "topic": t, "partition": p, "problem": what, "detail": detail,
            })).collect::<Vec<_>>(),
            "took_ms": started.elapsed().as_millis() as u64,
        })),
        Format::Table => {
            if metadata.controller_id.0 < 0 {
                println!("no controller");
            }
            for (topic, partition, what, detail) in &problems {
                println!("{topic}/{partition}: {what} ({detail})");
            }
            println!(
                "{}: {} brokers, {partitions} partitions, {} leaderless, {} under-replicated",
                if healthy { "healthy" } else { "unhealthy" },
                metadata.brokers.len(),
                problems.iter().filter(|p| p.2 == "leaderless").count(),
                problems
                    .iter()
                    .filter(|p| p.2 == "under-replicated")
                    .count(),
            );
        }
    }
    Ok(if healthy { 0 } else { 1 })
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values print")
    );
}

/// Left-aligned columns, two spaces apart.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
