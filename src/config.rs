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
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,

    /// Address of shard 0; shard k listens on the same host at port + k.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,

    /// Host:port advertised to clients for shard 0 (shard k: port + k), for NAT or
    /// containers. Defaults to the listen address.
    #[arg(long)]
    pub advertise: Option<String>,

    /// Client listeners, Kafka-style: `NAME://HOST:PORT,…` with NAME one of PLAINTEXT,
    /// SSL, SASL_PLAINTEXT, SASL_SSL (each at most once). Shard k serves every listener on
    /// its port + k. Overrides `--listen`, which is the one-PLAINTEXT-listener shorthand.
    #[arg(long)]
    pub listeners: Option<String>,

    /// What each listener of `--listeners` is advertised as, `NAME://HOST:PORT,…` (shard
    /// k: port + k), for NAT or containers; a listener not named here is advertised as it
    /// is bound. With `--listen`, `--advertise` does the same.
    #[arg(long)]
    pub advertised_listeners: Option<String>,

    /// PEM certificate chain of the SSL and SASL_SSL listeners (the server's certificate
    /// first).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert-file`.
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificates: when set, clients of the TLS listeners must present a
    /// certificate signed by one of them (mTLS), and its subject becomes the principal
    /// (`User:CN=…`) on SSL listeners.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,

    /// SASL mechanisms the SASL listeners offer (Kafka's `sasl.enabled.mechanisms`):
    /// any of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, comma-separated.
    #[arg(long, default_value = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512")]
    pub sasl_enabled_mechanisms: String,

    /// A failed SASL authentication is answered this long after it failed, then the
    /// connection is closed (Kafka's `connection.failed.authentication.delay.ms`).
    #[arg(long, default_value_t = 100)]
    pub connection_failed_authentication_delay_ms: u64,

    /// The listeners in force (resolved at start from `--listeners` or `--listen`, not a
    /// flag); empty before, when `--listen`/`--advertise` describe the one listener.
    #[arg(skip)]
    pub listener_set: Vec<Listener>,

    /// This node's id in a cluster (1 or more; with `--peers`). Shard k of node N is
    /// advertised as Kafka broker N × 1024 + k. Without `--peers` the node is alone and
    /// its shards are brokers 0, 1, ….
    #[arg(long)]
    pub node_id: Option<i32>,

    /// Address of shard 0's inter-node listener (with `--peers`); shard k uses port + k.
    #[arg(long)]
    pub rpc_listen: Option<SocketAddr>,

    /// The cluster's voting members: `ID@HOST:PORT,…`, each node's id and its
    /// `--rpc-listen` address, this node included. The same list on every node. Without
    /// it Strand runs as a single node.
    #[arg(long)]
    pub peers: Option<String>,

    /// Period of the Raft clock (ms): heartbeats go out every tick.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..))]
    pub raft_tick_ms: u64,

    /// Ticks without hearing from a leader before a follower stands for election
    /// (randomized up to twice this).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(3..1000))]
    pub raft_election_ticks: u64,

    /// How long a metadata change (CreateTopics, DeleteTopics, …) may wait for the
    /// metadata Raft group to commit it or for the leader to answer a forwarded one;
    /// past it the client gets NOT_CONTROLLER (retriable).
    #[arg(long, default_value_t = 15_000)]
    pub metadata_request_timeout_ms: u64,

    /// Replication factor of topics created automatically or with replication_factor = -1
    /// (Kafka's `default.replication.factor`). In a cluster, at most the live node count;
    /// a node alone keeps 1 whatever this says.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..))]
    pub default_replication_factor: i16,

    /// Broker default of the topic config `min.insync.replicas`: an acks=all produce is
    /// refused with NOT_ENOUGH_REPLICAS while fewer replicas than this are in sync.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=i32::MAX as i64))]
    pub min_insync_replicas: i64,

    /// A follower not caught up with its leader's log end within this long leaves the
    /// in-sync replicas (Kafka's `replica.lag.time.max.ms`).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub replica_lag_time_max_ms: u64,

    /// Move partition leadership back to the preferred replica (the first of a
    /// partition's replicas) when too many of a broker's preferred partitions are led
    /// elsewhere (Kafka's `auto.leader.rebalance.enable`).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub auto_leader_rebalance_enable: bool,

    /// On SIGTERM, hand the leadership of every partition this node leads to an in-sync
    /// follower before stopping (Kafka's `controlled.shutdown.enable`).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub controlled_shutdown_enable: bool,

    /// How often each broker (shard) checks its leader imbalance (Kafka's
    /// `leader.imbalance.check.interval.seconds`).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub leader_imbalance_check_interval_seconds: u64,

    /// The share of a broker's preferred partitions that may be led elsewhere before it
    /// claims them back (Kafka's `leader.imbalance.per.broker.percentage`).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub leader_imbalance_per_broker_percentage: u64,

    /// Number of shards (one pinned executor per shard). Default: all online cores.
    #[arg(long)]
    pub shards: Option<usize>,

    /// Log filter: error, warn, info, debug, trace, or a tracing-subscriber directive.
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Log line format: `text`, one line per event for people, or `json`, one JSON object
    /// per line (timestamp, level, target, message and fields) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Create a topic when a client asks for its metadata and it does not exist.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub auto_create_topics: bool,

    /// Partition count of topics created automatically or with num_partitions = -1.
    #[arg(long, default_value_t = 1)]
    pub default_partitions: i32,

    /// Largest request frame accepted; a larger length prefix closes the connection.
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Default `max.message.bytes`: largest record batch accepted in a produce request.
    #[arg(long, default_value_t = 1024 * 1024 + 12)]
    pub max_message_bytes: usize,

    /// Requests a connection may have in flight before the broker stops reading from it.
    #[arg(long, default_value_t = 64)]
    pub max_inflight_requests: usize,

    /// Bytes a shard may hold appended but not yet written to disk (acks=0 producers do
    /// not wait for the disk). Past it, the shard stops reading requests until the flusher
    /// catches up, which pushes back on clients through TCP.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub max_unflushed_bytes: usize,

    /// Connections a shard accepts at once; further connections are closed on accept.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections_per_shard: usize,

    /// Partitions (of all topics together) a shard may hold; the broker holds this many
    /// times its shard count. Creating topics or partitions past it (also by
    /// auto-creation) is refused with INVALID_PARTITIONS. Each partition costs memory
    /// (its recent-batch cache, producer state) and open files.
    #[arg(long, default_value_t = 1_000)]
    pub max_partitions_per_shard: usize,

    /// Sealed-segment files each shard keeps open at once (a bounded cache, least
    /// recently used closed first; the active segment of every partition stays open
    /// outside it). 0: computed at start from the open-file limit (an eighth of what the
    /// reserve leaves, per shard, between 8 and 1024). See docs/operations.md,
    /// "File descriptors".
    #[arg(long, default_value_t = 0)]
    pub max_open_segment_files_per_shard: usize,

    /// Partitions the open-file limit covers (resolved at start, not a flag): the
    /// partition cap is the smaller of this and `--max-partitions-per-shard` × shards.
    #[arg(skip)]
    pub descriptor_partitions_max: Option<usize>,

    /// Producer ids (idempotence state) idle this long are forgotten by each partition
    /// (Kafka's `producer.id.expiration.ms`), checked at every segment roll and retention
    /// check.
    #[arg(long, default_value_t = 24 * 60 * 60 * 1000)]
    pub producer_id_expiration_ms: i64,

    /// Default `segment.bytes`: size at which a partition's active segment is rolled.
    #[arg(long, default_value_t = 1024 * 1024 * 1024)]
    pub segment_bytes: u64,

    /// Default `flush.messages`: written messages are synced once this many wait. 1
    /// syncs every batch before acknowledging it (durable); above 1 a batch is
    /// acknowledged once written and synced on this schedule or `flush.ms`'s, as in Kafka
    /// (whose default is 9223372036854775807: syncing left to the operating system).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..))]
    pub log_flush_interval_messages: i64,

    /// Default `flush.ms`: written messages are synced once the oldest has waited this
    /// long (ms). Matters only where `flush.messages` is above 1; 0 syncs every batch.
    #[arg(long, default_value_t = i64::MAX, value_parser = clap::value_parser!(i64).range(0..))]
    pub log_flush_interval_ms: i64,

    /// Default `segment.ms`: age at which a non-empty active segment is rolled.
    #[arg(long, default_value_t = 7 * 24 * 60 * 60 * 1000)]
    pub log_roll_ms: i64,

    /// Default `retention.ms`: segments whose newest record is older are deleted; -1 keeps
    /// them for ever.
    #[arg(long, default_value_t = 7 * 24 * 60 * 60 * 1000, allow_negative_numbers = true)]
    pub log_retention_ms: i64,

    /// Default `retention.bytes`: oldest segments are deleted while a partition is larger;
    /// -1 for no limit.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub log_retention_bytes: i64,

    /// Default `cleanup.policy`: delete, compact, or compact,delete.
    #[arg(long, default_value = "delete")]
    pub log_cleanup_policy: String,

    /// Default `min.compaction.lag.ms`.
    #[arg(long, default_value_t = 0)]
    pub log_cleaner_min_compaction_lag_ms: i64,

    /// Default `delete.retention.ms`: how long tombstones of compacted topics are kept.
    #[arg(long, default_value_t = 24 * 60 * 60 * 1000)]
    pub log_cleaner_delete_retention_ms: i64,

    /// Default `message.timestamp.type`: CreateTime or LogAppendTime.
    #[arg(long, default_value = "CreateTime")]
    pub log_message_timestamp_type: String,

    /// How often each shard applies retention (time and size) to its partitions.
    #[arg(long, default_value_t = 300_000)]
    pub log_retention_check_interval_ms: u64,

    /// How often each shard looks for compacted topics with closed segments to clean.
    #[arg(long, default_value_t = 15_000)]
    pub log_cleaner_backoff_ms: u64,

    /// Recent batches each partition keeps in memory for tailing consumers.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub partition_cache_bytes: usize,

    /// How long a new group waits for more members before its first rebalance completes
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    #[arg(long, default_value_t = 3_000)]
    pub group_initial_rebalance_delay_ms: u64,

    /// Smallest session timeout a group member may ask for.
    #[arg(long, default_value_t = 6_000)]
    pub group_min_session_timeout_ms: i32,

    /// Largest session timeout a group member may ask for.
    #[arg(long, default_value_t = 1_800_000)]
    pub group_max_session_timeout_ms: i32,

    /// Members (including ones being admitted) a consumer group may have.
    #[arg(long, default_value_t = 1_000)]
    pub group_max_size: usize,

    /// Upper bound on the record bytes of one fetch response, whatever the client asks
    /// (Kafka's broker `fetch.max.bytes`); the first batch is still returned whole.
    #[arg(long, default_value_t = 55 * 1024 * 1024)]
    pub fetch_max_bytes: usize,

    /// Upper bound on a fetch's max_wait_ms (long poll), whatever the client asks.
    #[arg(long, default_value_t = 30_000)]
    pub fetch_max_wait_ms: u64,

    /// Serve Prometheus metrics (text format, `GET /metrics`) on this address, from shard
    /// 0, covering every shard. Off unless set.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,

    /// Most `strand_group_lag` series a scrape reports (committed offsets of the groups
    /// this node coordinates, in group, topic, partition order); the rest are counted in
    /// `strand_group_lag_omitted_partitions{reason="cap"}`.
    #[arg(long, default_value_t = 10_000)]
    pub metrics_group_lag_partitions_max: usize,

    /// Most topics a scrape reports `strand_topic_*` series for (in name order); the rest
    /// are counted in `strand_topic_series_omitted`.
    #[arg(long, default_value_t = 1_000)]
    pub metrics_topics_max: usize,

    /// Grace period for in-flight requests when draining on SIGTERM.
    #[arg(long, default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,

    /// io_uring registered buffer memory per shard (glommio io_memory).
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub io_memory_bytes: usize,

    // Request memory and connection time (docs/reliability.md, "Hostile input").
    /// Request bytes a shard holds across all its connections, from the first byte of a
    /// frame until its response (Kafka's `queued.max.request.bytes`). A connection that
    /// cannot reserve stops reading; a frame larger than this is refused.
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    pub queued_max_request_bytes: usize,

    /// A request frame must be complete this long after its first byte, however its bytes
    /// trickle in; otherwise the connection is closed.
    #[arg(long, default_value_t = 120_000)]
    pub frame_read_timeout_ms: u64,

    /// Connections with no request for this long are closed (Kafka's
    /// `connections.max.idle.ms`).
    #[arg(long, default_value_t = 600_000)]
    pub connections_max_idle_ms: u64,

    /// The longest transaction timeout a producer may ask for in InitProducerId (Kafka's
    /// `transaction.max.timeout.ms`); longer asks get INVALID_TRANSACTION_TIMEOUT.
    #[arg(long, default_value_t = 900_000, value_parser = clap::value_parser!(i32).range(1..))]
    pub transaction_max_timeout_ms: i32,

    // Expiry of consumer groups, committed offsets and transactional ids.
    /// Committed offsets of a group without members expire this long after it became
    /// empty (or after their commit, for a group that never had members); an empty group
    /// with no offsets left is removed (Kafka's `offsets.retention.minutes`).
    #[arg(long, default_value_t = 7 * 24 * 60)]
    pub offsets_retention_minutes: i64,

    /// Strand's own: the offsets retention in milliseconds, overriding
    /// `--offsets-retention-minutes` when set (for tests and short-lived clusters).
    #[arg(long)]
    pub offsets_retention_ms: Option<i64>,

    /// How often each shard looks for expired offsets and groups (Kafka's
    /// `offsets.retention.check.interval.ms`).
    #[arg(long, default_value_t = 600_000)]
    pub offsets_retention_check_interval_ms: u64,

    /// Transactional ids idle this long, with no transaction open, are forgotten (Kafka's
    /// `transactional.id.expiration.ms`), checked on the transaction coordinator's timer.
    #[arg(long, default_value_t = 7 * 24 * 60 * 60 * 1000)]
    pub transactional_id_expiration_ms: i64,
}

impl Config {
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
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    /// A default as docs/operations.md writes it, as clap would: backticks and a trailing
    /// parenthesis dropped, sizes (`1 MiB + 12`) and times (`7 days`, in ms) worked out,
    /// words (`unset`, `all online cores`) meaning no default (`None`).
    fn doc_value(cell: &str) -> Option<String> {
        let cell = cell.replace('`', "");
        let cell = match cell.find(" (") {
            Some(at) if cell.ends_with(')') => cell[..at].to_string(),
            _ => cell,
        };
        if matches!(cell.as_str(), "unset" | "off") {
            return None;
        }
        if cell == "2⁶³−1" {
            return Some(i64::MAX.to_string());
        }
        if matches!(cell.as_str(), "true" | "false") || cell.parse::<f64>().is_ok() {
            return Some(cell);
        }
        let mut total: u64 = 0;
        for term in cell.split(" + ") {
            let (number, unit) = term.split_once(' ').unwrap_or((term, ""));
            let Ok(number) = number.parse::<u64>() else {
                // Not a number: a path, an address or words.
                return (!cell.contains(' ')).then_some(cell);
            };
            let scale: u64 = match unit {
                "" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "min" => 60_000,
                "h" | "hours" => 3_600_000,
                "day" | "days" => 86_400_000,
                _ => return None,
            };
            total += number * scale;
        }
        Some(total.to_string())
    }

    /// docs/operations.md is the operator's reference: it must name every flag and every
    /// topic config, and say each flag's default.
    #[test]
    fn operations_doc_covers_every_flag_and_topic_config() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"),
        )
        .expect("docs/operations.md");
        for arg in Cli::command().get_arguments() {
            if let Some(long) = arg.get_long() {
                assert!(
                    doc.contains(&format!("--{long}")),
                    "docs/operations.md lacks --{long}"
                );
            }
        }
        // Each flag has a row whose default says what clap's does (in the doc's units).
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let row = format!("| `--{long}` | ");
            let Some(rest) = doc.split(&row).nth(1) else {
                panic!("docs/operations.md has no table row for --{long}");
            };
            let cell = rest.split(" |").next().unwrap_or("").trim();
            let default = arg
                .get_default_values()
                .first()
                .map(|v| v.to_string_lossy().to_string());
            match default {
                None => assert!(
                    doc_value(cell).is_none(),
                    "docs/operations.md: --{long} has no default, the doc says {cell:?}"
                ),
                Some(value) => assert_eq!(
                    doc_value(cell),
                    Some(value.clone()),
                    "docs/operations.md: --{long} defaults to {value}, the doc says {cell:?}"
                ),
            }
        }
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
