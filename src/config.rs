//! Broker configuration: every limit is a named flag with a default an operator can rely
//! on. The parsed [`Config`] is immutable and shared by all shards.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args};

/// The largest node id: broker ids (node × 1024 + shard) stay positive `i32`s.
pub const NODE_ID_MAX: i32 = 1_000_000;

/// `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A listener's security protocol (Kafka's names; a listener is named by its protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL first.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// One client listener: where shard 0 binds it and what it is advertised as (shard k:
/// both ports + k).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: i32,
}

/// Splits `NAME://HOST:PORT,…` into (protocol, host, port) in order; hosts may be empty
/// (every interface) and IPv6 hosts bracketed.
pub fn parse_listener_list(list: &str) -> Result<Vec<(SecurityProtocol, String, u16)>, String> {
    let mut out: Vec<(SecurityProtocol, String, u16)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, address) = item
            .split_once("://")
            .ok_or_else(|| format!("{item:?} is not a listener: NAME://HOST:PORT"))?;
        let protocol = SecurityProtocol::parse(name).ok_or_else(|| {
            format!(
                "listener {item:?}: the name must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            )
        })?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("{item:?} is not a listener: NAME://HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("listener {item:?}: bad port {port:?}"))?;
        if out.iter().any(|(p, _, _)| *p == protocol) {
            return Err(format!("listener {} is given twice", protocol.name()));
        }
        out.push((protocol, host.trim_matches(['[', ']']).to_string(), port));
    }
    if out.is_empty() {
        return Err("no listener given".into());
    }
    Ok(out)
}

/// Flags of `strand serve`.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Directory holding the partition logs and the cluster metadata log.
    #[arg(long, help_heading = "Network and limits", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address of shard 0; shard k listens on the same host at port + k.
    #[arg(
        long,
        help_heading = "Network and limits",
        default_value = "127.0.0.1:9092"
    )]
    pub listen: SocketAddr,

    /// HOST:PORT given to clients for shard 0 (shard k: port + k), behind NAT or in
    /// containers. Default: the listen address.
    #[arg(long, help_heading = "Network and limits")]
    pub advertise: Option<String>,

    /// Client listeners, Kafka-style: `NAME://HOST:PORT,…` with NAME one of PLAINTEXT,
    /// SSL, SASL_PLAINTEXT, SASL_SSL (each at most once). Shard k serves every listener on
    /// its port + k. Overrides `--listen`, which is the one-PLAINTEXT-listener shorthand.
    #[arg(long, help_heading = "Network and limits")]
    pub listeners: Option<String>,

    /// What each listener of `--listeners` is advertised as, `NAME://HOST:PORT,…` (shard
    /// k: port + k), for NAT or containers; a listener not named here is advertised as it
    /// is bound. With `--listen`, `--advertise` does the same.
    #[arg(long, help_heading = "Network and limits")]
    pub advertised_listeners: Option<String>,

    /// PEM certificate chain of the SSL and SASL_SSL listeners (the server's certificate
    /// first). This file, `--tls-key-file` and `--tls-ca-file` are read again on SIGHUP:
    /// new connections use them, open ones keep theirs, a bad file keeps the old ones
    /// (logged).
    #[arg(long, help_heading = "Security")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert-file`.
    #[arg(long, help_heading = "Security")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificates: when set, clients of the TLS listeners must present a
    /// certificate signed by one of them (mTLS), and its subject becomes the principal
    /// (`User:CN=…`) on SSL listeners.
    #[arg(long, help_heading = "Security")]
    pub tls_ca_file: Option<PathBuf>,

    /// SASL mechanisms the SASL listeners offer (Kafka's `sasl.enabled.mechanisms`):
    /// any of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, comma-separated.
    #[arg(
        long,
        help_heading = "Security",
        default_value = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    )]
    pub sasl_enabled_mechanisms: String,

    /// A failed SASL authentication is answered this long after it failed, then the
    /// connection is closed (Kafka's `connection.failed.authentication.delay.ms`).
    #[arg(long, help_heading = "Security", default_value_t = 100)]
    pub connection_failed_authentication_delay_ms: u64,

    /// The authorizer (Kafka's `authorizer.class.name`): `standard` (or Kafka's
    /// `org.apache.kafka.metadata.authorizer.StandardAuthorizer`) checks every request
    /// against the ACLs (docs/security.md); empty: no authorization.
    #[arg(
        long,
        help_heading = "Security",
        default_value = "",
        num_args = 0..=1,
        default_missing_value = "standard"
    )]
    pub authorizer: String,

    /// Principals the authorizer lets do everything, `User:admin;User:ops` (Kafka's
    /// `super.users`).
    #[arg(long, help_heading = "Security", default_value = "")]
    pub super_users: String,

    /// With `--authorizer`: a resource no ACL names is open to everyone (Kafka's
    /// `allow.everyone.if.no.acl.found`); by default it is closed to all but super users.
    #[arg(long, help_heading = "Security")]
    pub allow_everyone_if_no_acl_found: bool,

    /// The listeners in force (resolved at start from `--listeners` or `--listen`, not a
    /// flag); empty before, when `--listen`/`--advertise` describe the one listener.
    #[arg(skip)]
    pub listener_set: Vec<Listener>,

    /// This node's id (1 to 1000000), one of `--peers`. Shard k of node N is Kafka broker N
    /// × 1024 + k. Needs `--peers`; without it the node is alone and its shards are brokers
    /// 0, 1, ….
    #[arg(long, help_heading = "Cluster")]
    pub node_id: Option<i32>,

    /// Where peers reach this node: shard 0's inter-node address (shard k: port + k). Needs
    /// `--peers`.
    #[arg(long, help_heading = "Cluster")]
    pub rpc_listen: Option<SocketAddr>,

    /// The cluster's voting members, `ID@HOST:PORT,…` (each node's id and `--rpc-listen`
    /// address, this node included), the same on every node. Without it Strand runs as a
    /// single node.
    #[arg(long, help_heading = "Cluster")]
    pub peers: Option<String>,

    /// Period of the Raft clock: leaders send heartbeats every tick.
    #[arg(long, help_heading = "Cluster", default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..))]
    pub raft_tick_ms: u64,

    /// Ticks without a leader's heartbeat before a follower stands for election (randomized
    /// between this and twice this): 1–2 s by default.
    #[arg(long, help_heading = "Cluster", default_value_t = 10, value_parser = clap::value_parser!(u64).range(3..1000))]
    pub raft_election_ticks: u64,

    /// How long a metadata change (CreateTopics, DeleteTopics, CreatePartitions,
    /// AlterConfigs, a producer-id block) waits for the metadata group to commit it, or for
    /// the leader to answer a forwarded one; past it the client gets NOT_CONTROLLER
    /// (retriable).
    #[arg(long, help_heading = "Cluster", default_value_t = 15_000)]
    pub metadata_request_timeout_ms: u64,

    /// Replication factor of topics created automatically or with replication_factor = -1
    /// (Kafka's `default.replication.factor`). In a cluster, at most the live node count; a
    /// node alone keeps 1 whatever this says.
    #[arg(long, help_heading = "Cluster", default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..))]
    pub default_replication_factor: i16,

    /// The broker default of the topic config `min.insync.replicas` (Kafka's broker setting
    /// of the same name): an acks=all produce is refused with NOT_ENOUGH_REPLICAS while
    /// fewer replicas than this are in sync.
    #[arg(long, help_heading = "Cluster", default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=i32::MAX as i64))]
    pub min_insync_replicas: i64,

    /// Kafka's `replica.lag.time.max.ms`: a follower that has not had everything its leader
    /// had (as of one Raft tick earlier) within this long, or whose node is unreachable,
    /// leaves the partition's in-sync replicas.
    #[arg(long, help_heading = "Cluster", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub replica_lag_time_max_ms: u64,

    /// Kafka's `auto.leader.rebalance.enable`: each broker (shard) checks its leader
    /// imbalance periodically and moves leadership back to the preferred replica (the first
    /// of a partition's replicas) of the partitions led elsewhere, by Raft leader transfer
    /// (see docs/replication.md, Preferred leaders).
    #[arg(long, help_heading = "Cluster", default_value_t = true, action = ArgAction::Set)]
    pub auto_leader_rebalance_enable: bool,

    /// Kafka's `controlled.shutdown.enable`: on SIGTERM, every partition (and the metadata
    /// group) this node leads hands its leadership to the in-sync follower furthest along
    /// before the node stops (two attempts of an election timeout each), so clients move on
    /// at once; the log says `controlled shutdown: leadership handed over` with the counts.
    #[arg(long, help_heading = "Cluster", default_value_t = true, action = ArgAction::Set)]
    pub controlled_shutdown_enable: bool,

    /// How often each broker (shard) checks its leader imbalance (Kafka's
    /// `leader.imbalance.check.interval.seconds`).
    #[arg(long, help_heading = "Cluster", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub leader_imbalance_check_interval_seconds: u64,

    /// The share of a broker's preferred partitions that may be led elsewhere before it
    /// claims them back (Kafka's `leader.imbalance.per.broker.percentage`).
    #[arg(long, help_heading = "Cluster", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub leader_imbalance_per_broker_percentage: u64,

    /// Shards (pinned executors, one per core). Default: all online cores. A partition
    /// keeps its shard across restarts; with fewer shards it wraps around.
    #[arg(long, help_heading = "Network and limits")]
    pub shards: Option<usize>,

    /// Log filter: error, warn, info, debug, trace, or a tracing-subscriber directive.
    #[arg(long, help_heading = "Network and limits", default_value = "info")]
    pub log_level: String,

    /// `text`: one line per event for people; `json`: one JSON object per line
    /// (`timestamp`, `level`, `target`, `fields` with `message` and the event's fields) for
    /// log shippers. A line about a client names its address (`peer` or `client`) and, once
    /// a request of the connection carried one, its `client_id`, and its `principal`
    /// (`User:NAME` once it authenticated with SASL or a TLS certificate, Kafka's
    /// `User:ANONYMOUS` before or without).
    #[arg(long, help_heading = "Network and limits", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Create a topic when a client asks for its metadata and it does not exist.
    #[arg(long, help_heading = "Topics", default_value_t = true, action = ArgAction::Set)]
    pub auto_create_topics: bool,

    /// Partitions of auto-created topics and of CreateTopics with `num_partitions = -1`.
    #[arg(long, help_heading = "Topics", default_value_t = 1)]
    pub default_partitions: i32,

    /// Largest request frame accepted; a larger length prefix closes the connection.
    #[arg(long, help_heading = "Network and limits", default_value_t = 100 * 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Default `max.message.bytes`: largest record batch accepted in a produce request.
    #[arg(long, help_heading = "Topics", default_value_t = 1024 * 1024 + 12)]
    pub max_message_bytes: usize,

    /// Requests a connection may have in flight before the broker stops reading from it.
    #[arg(long, help_heading = "Network and limits", default_value_t = 64)]
    pub max_inflight_requests: usize,

    /// Bytes a shard may hold appended but not yet written to disk (acks=0 producers do not
    /// wait for the disk). Past it, the shard stops reading requests until the flusher
    /// catches up, which pushes back on clients through TCP.
    #[arg(long, help_heading = "Network and limits", default_value_t = 256 * 1024 * 1024)]
    pub max_unflushed_bytes: usize,

    /// Connections a shard accepts at once; further connections are closed on accept.
    #[arg(long, help_heading = "Network and limits", default_value_t = 10_000)]
    pub max_connections_per_shard: usize,

    /// Connections one client IP address may hold open on this node, all listeners and
    /// shards together (Kafka's `max.connections.per.ip`; default: no limit). A connection
    /// over it is closed at accept, logged and counted
    /// (`strand_connections_rejected_per_ip_total`).
    #[arg(long, help_heading = "Network and limits", default_value_t = i32::MAX as u32)]
    pub max_connections_per_ip: u32,

    /// Per-address limits that replace `--max-connections-per-ip`: `HOST:COUNT,…` with HOST
    /// an IP address or a name resolved at start (Kafka's `max.connections.per.ip.overrides`).
    #[arg(long, help_heading = "Network and limits", default_value = "")]
    pub max_connections_per_ip_overrides: String,

    /// Partitions (of all topics together) a shard may hold; the broker holds this many
    /// times its shard count. Creating topics or partitions past it (also by auto-creation)
    /// is refused with INVALID_PARTITIONS. Each partition costs memory (its recent-batch
    /// cache, producer state) and open files.
    #[arg(long, help_heading = "Network and limits", default_value_t = 1_000)]
    pub max_partitions_per_shard: usize,

    /// Sealed-segment files a shard keeps open at once, least recently used closed first;
    /// the active segment of every partition stays open outside it. 0: computed at start
    /// from the open-file limit (an eighth of what the reserve leaves, per shard, between 8
    /// and 1024); see File descriptors in docs/operations.md.
    #[arg(long, help_heading = "Network and limits", default_value_t = 0)]
    pub max_open_segment_files_per_shard: usize,

    /// Partitions the open-file limit covers (resolved at start, not a flag): the
    /// partition cap is the smaller of this and `--max-partitions-per-shard` × shards.
    #[arg(skip)]
    pub descriptor_partitions_max: Option<usize>,

    /// Kafka's `producer.id.expiration.ms`: a partition forgets the idempotence state of a
    /// producer idle this long (checked at every segment roll and retention check;
    /// producers with an open transaction are kept).
    #[arg(long, help_heading = "Network and limits", default_value_t = 24 * 60 * 60 * 1000)]
    pub producer_id_expiration_ms: i64,

    /// Default `segment.bytes`: size at which a partition's active segment is rolled.
    #[arg(long, help_heading = "Topics", default_value_t = 1024 * 1024 * 1024)]
    pub segment_bytes: u64,

    /// Default `flush.messages`: written messages are synced once this many wait. 1 syncs
    /// every batch before acknowledging it (durable); above 1 a batch is acknowledged once
    /// written and synced on this schedule or `flush.ms`'s, as in Kafka (whose default is
    /// 9223372036854775807: syncing left to the operating system).
    #[arg(long, help_heading = "Topics", default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..))]
    pub log_flush_interval_messages: i64,

    /// Default `flush.ms`: written messages are synced once the oldest has waited this long
    /// (ms). Matters only where `flush.messages` is above 1; 0 syncs every batch.
    #[arg(long, help_heading = "Topics", default_value_t = i64::MAX, value_parser = clap::value_parser!(i64).range(0..))]
    pub log_flush_interval_ms: i64,

    /// Default `segment.ms`: age at which a non-empty active segment is rolled.
    #[arg(long, help_heading = "Topics", default_value_t = 7 * 24 * 60 * 60 * 1000)]
    pub log_roll_ms: i64,

    /// Default `retention.ms`: segments whose newest record is older are deleted; -1 keeps
    /// them for ever.
    #[arg(long, help_heading = "Topics", default_value_t = 7 * 24 * 60 * 60 * 1000, allow_negative_numbers = true)]
    pub log_retention_ms: i64,

    /// Default `retention.bytes`: oldest segments are deleted while a partition is larger;
    /// -1 for no limit.
    #[arg(long, help_heading = "Topics", default_value_t = -1, allow_negative_numbers = true)]
    pub log_retention_bytes: i64,

    /// Default `cleanup.policy`: delete, compact, or compact,delete.
    #[arg(long, help_heading = "Topics", default_value = "delete")]
    pub log_cleanup_policy: String,

    /// Default `min.compaction.lag.ms`.
    #[arg(long, help_heading = "Topics", default_value_t = 0)]
    pub log_cleaner_min_compaction_lag_ms: i64,

    /// Default `delete.retention.ms`: how long tombstones of compacted topics are kept.
    #[arg(long, help_heading = "Topics", default_value_t = 24 * 60 * 60 * 1000)]
    pub log_cleaner_delete_retention_ms: i64,

    /// Default `message.timestamp.type`: CreateTime or LogAppendTime.
    #[arg(long, help_heading = "Topics", default_value = "CreateTime")]
    pub log_message_timestamp_type: String,

    /// How often each shard applies retention (time and size) to its partitions.
    #[arg(long, help_heading = "Topics", default_value_t = 300_000)]
    pub log_retention_check_interval_ms: u64,

    /// How often each shard looks for compacted topics with closed segments to clean.
    #[arg(long, help_heading = "Topics", default_value_t = 15_000)]
    pub log_cleaner_backoff_ms: u64,

    /// Recent batches each partition keeps in memory for tailing consumers.
    #[arg(long, help_heading = "Network and limits", default_value_t = 8 * 1024 * 1024)]
    pub partition_cache_bytes: usize,

    /// How long a new group waits for more members before its first rebalance completes
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    #[arg(long, help_heading = "Consumer groups", default_value_t = 3_000)]
    pub group_initial_rebalance_delay_ms: u64,

    /// Smallest session timeout a group member may ask for.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 6_000)]
    pub group_min_session_timeout_ms: i32,

    /// Largest session timeout a group member may ask for.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 1_800_000)]
    pub group_max_session_timeout_ms: i32,

    /// Members (including ones being admitted) a consumer group may have.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 1_000)]
    pub group_max_size: usize,

    /// How long a member of a consumer-protocol group (KIP-848, `group.protocol=consumer`)
    /// may go without a heartbeat before it is removed and its partitions move.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 45_000)]
    pub group_consumer_session_timeout_ms: i32,

    /// How often members of a consumer-protocol group are told to heartbeat.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 5_000)]
    pub group_consumer_heartbeat_interval_ms: i32,

    /// Members a consumer-protocol group may have.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 1_000)]
    pub group_consumer_max_size: usize,

    /// Upper bound on the record bytes of one fetch response, whatever the client asks
    /// (Kafka's broker `fetch.max.bytes`); the first batch is still returned whole.
    #[arg(long, help_heading = "Network and limits", default_value_t = 55 * 1024 * 1024)]
    pub fetch_max_bytes: usize,

    /// Upper bound on a fetch's max_wait_ms (long poll), whatever the client asks.
    #[arg(long, help_heading = "Network and limits", default_value_t = 30_000)]
    pub fetch_max_wait_ms: u64,

    /// Address of the Prometheus endpoint (`GET /metrics`, text format), served by shard 0
    /// for every shard (see Metrics in docs/operations.md). Off unless set.
    #[arg(long, help_heading = "Network and limits")]
    pub metrics_listen: Option<SocketAddr>,

    /// Most `strand_group_lag` series a scrape reports (committed offsets of the groups
    /// this node coordinates, in group, topic, partition order); the rest are counted in
    /// `strand_group_lag_omitted_partitions{reason="cap"}`.
    #[arg(long, help_heading = "Network and limits", default_value_t = 10_000)]
    pub metrics_group_lag_partitions_max: usize,

    /// Most topics one scrape reports `strand_topic_*` series for, the first by name; the
    /// rest are counted in `strand_topic_series_omitted`.
    #[arg(long, help_heading = "Network and limits", default_value_t = 1_000)]
    pub metrics_topics_max: usize,

    /// Grace period for in-flight requests when draining on SIGTERM.
    #[arg(long, help_heading = "Network and limits", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,

    /// io_uring registered buffer memory per shard (glommio io_memory).
    #[arg(long, help_heading = "Network and limits", default_value_t = 2 * 1024 * 1024)]
    pub io_memory_bytes: usize,

    // Request memory and connection time (docs/reliability.md, "Hostile input").
    /// Kafka's `queued.max.request.bytes`, per shard: request bytes held across all the
    /// shard's connections, from a frame's first byte until its response. A frame reserves
    /// as its bytes arrive (a bare length prefix 16 KiB); a connection that cannot reserve
    /// stops reading (TCP back-pressure); a frame larger than this is refused and its
    /// connection closed. When the budget is full the oldest waiting frame may go past it,
    /// one frame at a time, so memory is bounded by the budget plus one frame. The default
    /// equals `--max-frame-bytes`, so the largest frame still fits alone, and holds a
    /// hundred 1 MB requests (the Java and librdkafka request cap) at once.
    #[arg(long, help_heading = "Request memory and connection time", default_value_t = 100 * 1024 * 1024)]
    pub queued_max_request_bytes: usize,

    /// A request frame must be complete this long after its first byte (time waiting for
    /// the budget included), however slowly its bytes arrive; otherwise the connection is
    /// closed. Twice librdkafka's `socket.timeout.ms`: a client has given up on such a
    /// request anyway. Independently, a frame that sends nothing for 30 s is closed.
    #[arg(
        long,
        help_heading = "Request memory and connection time",
        default_value_t = 120_000
    )]
    pub frame_read_timeout_ms: u64,

    /// Kafka's `connections.max.idle.ms`: a connection with no request in progress and
    /// nothing read or written for this long is closed, so idle sockets cannot hold
    /// `--max-connections-per-shard` slots for ever.
    #[arg(
        long,
        help_heading = "Request memory and connection time",
        default_value_t = 600_000
    )]
    pub connections_max_idle_ms: u64,

    /// Kafka's `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a
    /// producer may ask for; InitProducerId asking more gets INVALID_TRANSACTION_TIMEOUT.
    /// Transactions open longer than their timeout are aborted by the coordinator.
    #[arg(long, help_heading = "Transactions", default_value_t = 900_000, value_parser = clap::value_parser!(i32).range(1..))]
    pub transaction_max_timeout_ms: i32,

    // Expiry of consumer groups, committed offsets and transactional ids.
    /// Kafka's `offsets.retention.minutes`: committed offsets of a group without members
    /// expire this long after it became empty (after their commit, for a group that never
    /// had members); a Stable consumer group's offsets of topics it no longer subscribes to
    /// expire this long after their commit; an empty group with no offsets left is removed.
    /// Groups read at start-up count as empty since start-up.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 7 * 24 * 60)]
    pub offsets_retention_minutes: i64,

    /// Strand's own: the offsets retention in milliseconds, overriding
    /// `--offsets-retention-minutes` when set (for tests and short-lived clusters).
    #[arg(long, help_heading = "Consumer groups")]
    pub offsets_retention_ms: Option<i64>,

    /// Partitions of a cluster's `__consumer_offsets` topic, created at the first
    /// FindCoordinator for a group (Kafka's `offsets.topic.num.partitions`): each group
    /// lives in one, coordinated by its leader. Fixed once the topic exists.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 16, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub offsets_topic_num_partitions: i32,

    /// Replication factor of `__consumer_offsets` (Kafka's
    /// `offsets.topic.replication.factor`), at most the cluster's member count.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 3, value_parser = clap::value_parser!(i16).range(1..))]
    pub offsets_topic_replication_factor: i16,

    /// How long a cluster's offset commit may wait for its offsets partition to commit
    /// it (Kafka's `offsets.commit.timeout.ms`); past it the client gets
    /// COORDINATOR_NOT_AVAILABLE.
    #[arg(long, help_heading = "Consumer groups", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub offsets_commit_timeout_ms: u64,

    /// How often each shard looks for expired offsets and groups (Kafka's
    /// `offsets.retention.check.interval.ms`).
    #[arg(long, help_heading = "Consumer groups", default_value_t = 600_000)]
    pub offsets_retention_check_interval_ms: u64,

    /// Kafka's `transactional.id.expiration.ms`: transactional ids idle this long with no
    /// transaction open are forgotten, checked every 500 ms while running. At start-up, ids
    /// idle for the 7-day default are dropped whatever this is set to.
    #[arg(long, help_heading = "Transactions", default_value_t = 7 * 24 * 60 * 60 * 1000)]
    pub transactional_id_expiration_ms: i64,
}

impl Config {
    /// The authorizer's policy, `None` without `--authorizer`.
    pub fn acl_policy(&self) -> Result<Option<crate::security::acl::Policy>, String> {
        match self.authorizer.trim() {
            "" => Ok(None),
            "standard"
            | "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            | "kafka.security.authorizer.AclAuthorizer" => Ok(Some(crate::security::acl::Policy {
                super_users: crate::security::acl::Policy::parse_super_users(&self.super_users)?,
                allow_if_no_acl: self.allow_everyone_if_no_acl_found,
            })),
            other => Err(format!(
                "--authorizer {other:?}: Strand has Kafka's StandardAuthorizer (`standard`) only"
            )),
        }
    }

    /// The shard count in force (`serve` resolves the default before starting shards).
    pub fn shards_resolved(&self) -> usize {
        self.shards.unwrap_or(1).max(1)
    }

    /// The cluster members of `--peers` (id, rpc address), sorted by id; empty without
    /// `--peers`.
    pub fn cluster_peers(&self) -> Result<Vec<(u64, SocketAddr)>, String> {
        let Some(list) = &self.peers else {
            return Ok(Vec::new());
        };
        let mut peers: Vec<(u64, SocketAddr)> = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (id, addr) = item
                .split_once('@')
                .ok_or_else(|| format!("--peers entry {item:?} must be ID@HOST:PORT"))?;
            let id: u64 = id
                .parse()
                .ok()
                .filter(|&id| (1..=NODE_ID_MAX as u64).contains(&id))
                .ok_or_else(|| {
                    format!("--peers entry {item:?}: the node id must be 1 to {NODE_ID_MAX}")
                })?;
            let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("--peers entry {item:?}: {addr:?} is not HOST:PORT"))?;
            if peers.iter().any(|(other, _)| *other == id) {
                return Err(format!("--peers names node {id} twice"));
            }
            peers.push((id, addr));
        }
        if peers.is_empty() {
            return Err("--peers is empty".into());
        }
        peers.sort_by_key(|(id, _)| *id);
        Ok(peers)
    }

    /// Whether this node is a member of a cluster (`--peers`).
    pub fn clustered(&self) -> bool {
        self.peers.is_some()
    }

    /// This node's id (0 when alone).
    pub fn node(&self) -> i32 {
        self.node_id.unwrap_or(0)
    }

    /// The client listeners `--listeners` (or `--listen` and `--advertise`) describe, in
    /// the order given; shard 0's addresses.
    pub fn resolve_listeners(&self) -> Result<Vec<Listener>, String> {
        let Some(list) = &self.listeners else {
            if self.advertised_listeners.is_some() {
                return Err("--advertised-listeners needs --listeners".into());
            }
            let (advertised_host, advertised_port) = self.shard_advertised(0);
            return Ok(vec![Listener {
                protocol: SecurityProtocol::Plaintext,
                bind: self.listen,
                advertised_host,
                advertised_port,
            }]);
        };
        if self.advertise.is_some() {
            return Err(
                "--advertise goes with --listen; with --listeners give --advertised-listeners"
                    .into(),
            );
        }
        let advertised = match &self.advertised_listeners {
            Some(list) => {
                parse_listener_list(list).map_err(|e| format!("--advertised-listeners: {e}"))?
            }
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for (protocol, host, port) in
            parse_listener_list(list).map_err(|e| format!("--listeners: {e}"))?
        {
            // Kafka binds an empty host to every interface; a name to what it resolves to.
            let bind_host = if host.is_empty() {
                "0.0.0.0"
            } else {
                host.as_str()
            };
            let bind = std::net::ToSocketAddrs::to_socket_addrs(&(bind_host, port))
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| format!("--listeners: cannot resolve host {host:?}"))?;
            let (advertised_host, advertised_port) =
                match advertised.iter().find(|(p, _, _)| *p == protocol) {
                    Some((_, h, _)) if h.is_empty() => {
                        return Err(format!(
                            "--advertised-listeners: {} needs a host",
                            protocol.name()
                        ))
                    }
                    Some((_, h, p)) => (h.clone(), *p as i32),
                    None => (bind.ip().to_string(), port as i32),
                };
            out.push(Listener {
                protocol,
                bind,
                advertised_host,
                advertised_port,
            });
        }
        if let Some((p, _, _)) = advertised
            .iter()
            .find(|(p, _, _)| !out.iter().any(|l| l.protocol == *p))
        {
            return Err(format!(
                "--advertised-listeners names {}, which --listeners does not",
                p.name()
            ));
        }
        Ok(out)
    }

    /// The listeners in force: [`Self::listener_set`] once resolved, else `--listen`'s.
    pub fn listeners_in_force(&self) -> std::borrow::Cow<'_, [Listener]> {
        if self.listener_set.is_empty() {
            std::borrow::Cow::Owned(self.resolve_listeners().unwrap_or_default())
        } else {
            std::borrow::Cow::Borrowed(&self.listener_set)
        }
    }

    /// The host and port clients reach shard `shard` at on listener `listener` (an index
    /// into the listeners in force; the first if out of range).
    pub fn shard_advertised_on(&self, shard: usize, listener: usize) -> (String, i32) {
        match self
            .listener_set
            .get(listener)
            .or(self.listener_set.first())
        {
            Some(l) => (l.advertised_host.clone(), l.advertised_port + shard as i32),
            None => self.shard_advertised(shard),
        }
    }

    /// The listen address of a shard (on the first listener).
    pub fn shard_listen_addr(&self, shard: usize) -> SocketAddr {
        let mut addr = self.listener_set.first().map_or(self.listen, |l| l.bind);
        addr.set_port(addr.port() + shard as u16);
        addr
    }

    /// The host and port a shard is advertised as in Metadata (on the first listener).
    pub fn shard_advertised(&self, shard: usize) -> (String, i32) {
        if let Some(l) = self.listener_set.first() {
            return (l.advertised_host.clone(), l.advertised_port + shard as i32);
        }
        match &self.advertise {
            Some(adv) => {
                let (host, port) = match adv.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), p.parse::<i32>().unwrap_or(9092)),
                    None => (adv.clone(), self.listen.port() as i32),
                };
                (host, port + shard as i32)
            }
            None => {
                let addr = self.shard_listen_addr(shard);
                (addr.ip().to_string(), addr.port() as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// docs/operations.md is the operator's reference: it must name every topic config
    /// (its flags are generated, `cli::tests` checks them).
    #[test]
    fn operations_doc_covers_every_topic_config() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"),
        )
        .expect("docs/operations.md");
        use crate::cluster::topic_config::{Effect, DEFS, INTERNAL};
        // Each config sits in the table of what it does: the rows of "Stored only" are
        // exactly the configs Strand accepts and does not act on.
        let stored_section = doc
            .split("### Stored only")
            .nth(1)
            .and_then(|rest| rest.split("\n#").next())
            .expect("docs/operations.md has a \"### Stored only\" section");
        for def in DEFS.iter().chain(INTERNAL) {
            let row = format!("| `{}` |", def.name);
            assert!(doc.contains(&row), "docs/operations.md lacks {}", def.name);
            assert_eq!(
                stored_section.contains(&row),
                def.effect == Effect::Stored,
                "docs/operations.md: {} is in the wrong table",
                def.name
            );
        }
    }
}
