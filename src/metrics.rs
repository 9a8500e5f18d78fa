//! Metrics: per-shard counters and histograms, and their Prometheus text rendering.
//!
//! Each shard counts into its own [`ShardMetrics`] (plain `Cell`s: no atomics, no locks on
//! the request path). A scrape of `--metrics-listen` (served by
//! [`crate::server::metrics_http`] on shard 0) asks every shard for a [`Snapshot`] over the
//! mesh and [`render`]s them together, one series per shard.
//! Histograms have fixed buckets, as Prometheus expects (cumulative `le` buckets, `_sum`,
//! `_count`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// Latency bucket bounds, in seconds.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Size bucket bounds, in bytes.
pub const SIZE_BUCKETS_BYTES: &[f64] = &[
    512.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

/// Fixed-bucket histogram (counts per bucket, not cumulative, plus overflow).
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.counts[i] += 1;
        self.count += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// A latency histogram.
impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(LATENCY_BUCKETS_S)
    }
}

/// Request outcome counters of one API.
#[derive(Clone, Debug)]
pub struct ApiCounts {
    pub requests: u64,
    /// Error code → count (partition-level codes for Produce and Fetch; -2 for a request
    /// that closed the connection).
    pub errors: BTreeMap<i16, u64>,
    /// Time from decoded to answered, every request of the API.
    pub latency: Histogram,
}

impl Default for ApiCounts {
    fn default() -> Self {
        ApiCounts {
            requests: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new(LATENCY_BUCKETS_S),
        }
    }
}

/// Error "code" counted for a request that closed its connection.
pub const CLOSED: i16 = -2;

/// Slots of the per-API table, indexed by API key (Kafka's keys are below 100).
pub const API_SLOTS: usize = 128;

/// One API's request count and latency, in the shard's fixed table.
#[derive(Clone, Debug)]
struct ApiSlot {
    requests: u64,
    latency: Histogram,
}

/// One shard's counters.
pub struct ShardMetrics {
    /// Requests and latency per API, indexed by API key: no map lookup per request.
    api_slots: RefCell<Vec<ApiSlot>>,
    /// Error code counts per API (touched only when a response carries an error).
    api_errors: RefCell<BTreeMap<i16, BTreeMap<i16, u64>>>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    produce_latency: RefCell<Histogram>,
    fetch_latency: RefCell<Histogram>,
    flush_latency: RefCell<Histogram>,
    flush_bytes: RefCell<Histogram>,
    accept_errors: Cell<u64>,
    /// Connections closed at accept by `--max-connections-per-ip`.
    rejected_per_ip: Cell<u64>,
    leader_elections: Cell<u64>,
    /// SASL logins that succeeded and failed.
    authentications: Cell<u64>,
    failed_authentications: Cell<u64>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            api_slots: RefCell::new(vec![
                ApiSlot {
                    requests: 0,
                    latency: Histogram::new(LATENCY_BUCKETS_S),
                };
                API_SLOTS
            ]),
            api_errors: RefCell::new(BTreeMap::new()),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            produce_latency: RefCell::new(Histogram::new(LATENCY_BUCKETS_S)),
            fetch_latency: RefCell::new(Histogram::new(LATENCY_BUCKETS_S)),
            flush_latency: RefCell::new(Histogram::new(LATENCY_BUCKETS_S)),
            flush_bytes: RefCell::new(Histogram::new(SIZE_BUCKETS_BYTES)),
            accept_errors: Cell::new(0),
            rejected_per_ip: Cell::new(0),
            leader_elections: Cell::new(0),
            authentications: Cell::new(0),
            failed_authentications: Cell::new(0),
        }
    }
}

impl ShardMetrics {
    /// A request answered (or closed), its frame and response sizes, its time.
    pub fn request(
        &self,
        api: ApiKey,
        bytes_in: usize,
        bytes_out: usize,
        took: Duration,
        closed: bool,
    ) {
        let secs = took.as_secs_f64();
        if let Some(slot) = self.api_slots.borrow_mut().get_mut(api as i16 as usize) {
            slot.requests += 1;
            slot.latency.observe(secs);
        }
        if closed {
            self.error(api, CLOSED);
        }
        self.bytes_in.set(self.bytes_in.get() + bytes_in as u64);
        self.bytes_out.set(self.bytes_out.get() + bytes_out as u64);
        match api {
            ApiKey::Produce => self.produce_latency.borrow_mut().observe(secs),
            ApiKey::Fetch => self.fetch_latency.borrow_mut().observe(secs),
            _ => {}
        }
    }

    /// A partition-level error code in a response.
    pub fn error(&self, api: ApiKey, code: i16) {
        *self
            .api_errors
            .borrow_mut()
            .entry(api as i16)
            .or_default()
            .entry(code)
            .or_default() += 1;
    }

    /// One partition's flush job: its write and `fdatasync` time and its bytes.
    pub fn flush(&self, took: Duration, bytes: usize) {
        self.flush_latency.borrow_mut().observe(took.as_secs_f64());
        self.flush_bytes.borrow_mut().observe(bytes as f64);
    }

    /// An accept failed on one of the shard's listeners.
    pub fn accept_error(&self) {
        self.accept_errors.set(self.accept_errors.get() + 1);
    }

    /// A connection closed at accept: its address had `--max-connections-per-ip`.
    pub fn rejected_per_ip(&self) {
        self.rejected_per_ip.set(self.rejected_per_ip.get() + 1);
    }

    /// A SASL login ended: it succeeded or failed.
    pub fn authentication(&self, ok: bool) {
        let counter = if ok {
            &self.authentications
        } else {
            &self.failed_authentications
        };
        counter.set(counter.get() + 1);
    }

    /// A replica on this shard became its partition's leader.
    pub fn leader_elected(&self) {
        self.leader_elections.set(self.leader_elections.get() + 1);
    }
}

/// One inter-node link of a shard, as its counters stand.
#[derive(Clone, Debug, Default)]
pub struct PeerTraffic {
    pub peer: u64,
    pub up: bool,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Outbound connections opened after the first.
    pub reconnects: u64,
    /// Raft messages dropped (link down, outbox full, too large).
    pub raft_dropped: u64,
    /// How long the peer took to answer the Raft heartbeats of partitions led here.
    pub heartbeat_rtt: Histogram,
}

/// The replicated partitions of a shard, as they stand.
#[derive(Clone, Debug, Default)]
pub struct Replication {
    /// Partitions whose replica here leads.
    pub leaders: u64,
    /// Of those, the ones with fewer in-sync replicas than replicas.
    pub under_replicated: u64,
    /// Replicas here that know no leader.
    pub leaderless: u64,
    /// The furthest a follower of a partition led here is behind, in entries (batches).
    pub max_lag_batches: u64,
    /// The longest a follower of a partition led here has not been caught up.
    pub max_lag_seconds: f64,
    pub peers: Vec<PeerTraffic>,
}

/// Record traffic of one partition, counted on the partition itself (plain `Cell`s, no
/// lookup on the request path); a scrape sums them per topic, so a deleted topic's
/// series go with its partitions.
#[derive(Debug, Default)]
pub struct PartitionTraffic {
    bytes_in: Cell<u64>,
    messages_in: Cell<u64>,
    bytes_out: Cell<u64>,
}

impl PartitionTraffic {
    /// A produced batch the log took: its bytes and records.
    pub fn produced(&self, bytes: usize, records: i32) {
        self.bytes_in.set(self.bytes_in.get() + bytes as u64);
        self.messages_in
            .set(self.messages_in.get() + records.max(0) as u64);
    }

    /// Record bytes a fetch response carried.
    pub fn fetched(&self, bytes: usize) {
        self.bytes_out.set(self.bytes_out.get() + bytes as u64);
    }

    /// Adds this partition's counters to its topic's.
    pub fn add_to(&self, topic: &mut TopicTraffic) {
        topic.bytes_in += self.bytes_in.get();
        topic.messages_in += self.messages_in.get();
        topic.bytes_out += self.bytes_out.get();
    }
}

/// One topic's record traffic (summed over partitions, then over shards).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicTraffic {
    pub topic: String,
    pub bytes_in: u64,
    pub messages_in: u64,
    pub bytes_out: u64,
}

/// A committed offset of a group a shard coordinates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
}

/// A group's lag on one partition: the partition's high watermark minus the committed
/// offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub lag: i64,
}

/// What a shard knows of itself and its counters do not.
#[derive(Default)]
pub struct ShardGauges {
    /// Open client connections by listener (its security protocol's name).
    pub connections: Vec<(&'static str, u64)>,
    pub partitions: u64,
    pub log_bytes: u64,
    pub replication: Replication,
    /// Per topic of the shard's partitions.
    pub topics: Vec<TopicTraffic>,
    /// Committed offsets of the groups the shard coordinates, the first
    /// `--metrics-group-lag-partitions-max` in (group, topic, partition) order.
    pub group_offsets: Vec<GroupOffset>,
    /// Committed offsets left out of `group_offsets` by the cap.
    pub group_offsets_omitted: u64,
}

/// The node-wide series shard 0 derives from every shard's snapshot at a scrape.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub topics: Vec<TopicTraffic>,
    /// Topics left out by `--metrics-topics-max`.
    pub topics_omitted: u64,
    pub lag: Vec<GroupLag>,
    /// Committed offsets without a lag series, by reason: past the cap, and partitions
    /// whose high watermark this node does not hold (no replica here, or deleted).
    pub lag_omitted_cap: u64,
    pub lag_omitted_unknown: u64,
}

/// Merges the shards' per-topic traffic: sums per topic, keeps the first `max` topics by
/// name; the number left out.
pub fn merge_topics(snaps: &[Snapshot], max: usize) -> (Vec<TopicTraffic>, u64) {
    let mut all: BTreeMap<&str, TopicTraffic> = BTreeMap::new();
    for s in snaps {
        for t in &s.topics {
            let e = all.entry(&t.topic).or_insert_with(|| TopicTraffic {
                topic: t.topic.clone(),
                ..TopicTraffic::default()
            });
            e.bytes_in += t.bytes_in;
            e.messages_in += t.messages_in;
            e.bytes_out += t.bytes_out;
        }
    }
    let omitted = all.len().saturating_sub(max) as u64;
    (all.into_values().take(max).collect(), omitted)
}

/// Keeps the first `max` of `offsets` in (group, topic, partition) order; the number left
/// out. A shard cuts its own list the same way, so the first `max` of the node are among
/// what the shards sent.
pub fn cap_offsets(mut offsets: Vec<GroupOffset>, max: usize) -> (Vec<GroupOffset>, u64) {
    offsets.sort_unstable();
    let omitted = offsets.len().saturating_sub(max) as u64;
    offsets.truncate(max);
    (offsets, omitted)
}

impl ShardMetrics {
    /// A copy of the counters with the shard's gauges, for a scrape.
    pub fn snapshot(&self, shard: u16, gauges: ShardGauges) -> Snapshot {
        Snapshot {
            shard,
            apis: self.api_counts(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            produce_latency: self.produce_latency.borrow().clone(),
            fetch_latency: self.fetch_latency.borrow().clone(),
            flush_latency: self.flush_latency.borrow().clone(),
            flush_bytes: self.flush_bytes.borrow().clone(),
            accept_errors: self.accept_errors.get(),
            rejected_per_ip: self.rejected_per_ip.get(),
            authentications: self.authentications.get(),
            failed_authentications: self.failed_authentications.get(),
            connections: gauges.connections,
            partitions: gauges.partitions,
            log_bytes: gauges.log_bytes,
            leader_elections: self.leader_elections.get(),
            replication: gauges.replication,
            topics: gauges.topics,
            group_offsets: gauges.group_offsets,
            group_offsets_omitted: gauges.group_offsets_omitted,
        }
    }

    /// Every API that had a request or an error, with its counts and latency.
    fn api_counts(&self) -> BTreeMap<i16, ApiCounts> {
        let mut out: BTreeMap<i16, ApiCounts> = BTreeMap::new();
        for (key, slot) in self.api_slots.borrow().iter().enumerate() {
            if slot.requests > 0 {
                out.insert(
                    key as i16,
                    ApiCounts {
                        requests: slot.requests,
                        errors: BTreeMap::new(),
                        latency: slot.latency.clone(),
                    },
                );
            }
        }
        for (key, errors) in self.api_errors.borrow().iter() {
            out.entry(*key).or_default().errors = errors.clone();
        }
        out
    }
}

/// A copy of one shard's metrics, sent to shard 0 for a scrape.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub shard: u16,
    pub apis: BTreeMap<i16, ApiCounts>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub produce_latency: Histogram,
    pub fetch_latency: Histogram,
    pub flush_latency: Histogram,
    pub flush_bytes: Histogram,
    pub accept_errors: u64,
    pub rejected_per_ip: u64,
    pub authentications: u64,
    pub failed_authentications: u64,
    pub connections: Vec<(&'static str, u64)>,
    pub partitions: u64,
    pub log_bytes: u64,
    pub leader_elections: u64,
    pub replication: Replication,
    pub topics: Vec<TopicTraffic>,
    pub group_offsets: Vec<GroupOffset>,
    pub group_offsets_omitted: u64,
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|api| format!("{api:?}"))
        .unwrap_or_else(|_| key.to_string())
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped
/// (group ids are any string a client chose).
fn escaped(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// One histogram's series, `labels` (e.g. `shard="0",api="Fetch"`) on each.
fn histogram_series(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (i, bound) in h.bounds.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    snaps: &[Snapshot],
    pick: fn(&Snapshot) -> &Histogram,
) {
    family(out, name, "histogram", help);
    for s in snaps {
        histogram_series(out, name, &format!("shard=\"{}\"", s.shard), pick(s));
    }
}

/// Prometheus text exposition (format 0.0.4) of every shard's snapshot and the node-wide
/// series derived from them.
pub fn render(snaps: &[Snapshot], node: &NodeView) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "strand_requests_total",
        "counter",
        "Requests handled, by API.",
    );
    for s in snaps {
        for (key, counts) in &s.apis {
            let _ = writeln!(
                out,
                "strand_requests_total{{shard=\"{}\",api=\"{}\"}} {}",
                s.shard,
                api_name(*key),
                counts.requests
            );
        }
    }
    family(
        &mut out,
        "strand_request_errors_total",
        "counter",
        "Errors by API and Kafka error code (partition-level codes of Produce and Fetch; code -2: the request closed its connection).",
    );
    for s in snaps {
        for (key, counts) in &s.apis {
            for (code, n) in &counts.errors {
                let _ = writeln!(
                    out,
                    "strand_request_errors_total{{shard=\"{}\",api=\"{}\",code=\"{code}\"}} {n}",
                    s.shard,
                    api_name(*key)
                );
            }
        }
    }
    type Simple = (
        &'static str,
        &'static str,
        &'static str,
        fn(&Snapshot) -> u64,
    );
    let simple: [Simple; 13] = [
        (
            "strand_bytes_in_total",
            "counter",
            "Request bytes received.",
            |s| s.bytes_in,
        ),
        (
            "strand_bytes_out_total",
            "counter",
            "Response bytes sent.",
            |s| s.bytes_out,
        ),
        ("strand_partitions", "gauge", "Partitions owned.", |s| {
            s.partitions
        }),
        (
            "strand_log_bytes",
            "gauge",
            "Bytes in the logs of the partitions owned.",
            |s| s.log_bytes,
        ),
        (
            "strand_accept_errors_total",
            "counter",
            "Failed accepts on the shard's listeners (the metrics listener's count on shard 0).",
            |s| s.accept_errors,
        ),
        (
            "strand_connections_rejected_per_ip_total",
            "counter",
            "Connections closed at accept because their client address had --max-connections-per-ip connections open on the node.",
            |s| s.rejected_per_ip,
        ),
        (
            "strand_successful_authentication_total",
            "counter",
            "SASL logins that succeeded on the shard's listeners.",
            |s| s.authentications,
        ),
        (
            "strand_failed_authentication_total",
            "counter",
            "SASL logins that failed (each answered after --connection-failed-authentication-delay-ms, then closed).",
            |s| s.failed_authentications,
        ),
        (
            "strand_leader_partitions",
            "gauge",
            "Replicated partitions whose replica on the shard leads.",
            |s| s.replication.leaders,
        ),
        (
            "strand_under_replicated_partitions",
            "gauge",
            "Partitions led on the shard with fewer in-sync replicas than replicas.",
            |s| s.replication.under_replicated,
        ),
        (
            "strand_leaderless_partitions",
            "gauge",
            "Replicas on the shard whose partition has no known leader.",
            |s| s.replication.leaderless,
        ),
        (
            "strand_leader_elections_total",
            "counter",
            "Times a replica on the shard became its partition's leader.",
            |s| s.leader_elections,
        ),
        (
            "strand_replica_max_lag_batches",
            "gauge",
            "The furthest a follower of a partition led on the shard is behind its leader, in batches.",
            |s| s.replication.max_lag_batches,
        ),
    ];
    for (name, kind, help, get) in simple {
        family(&mut out, name, kind, help);
        for s in snaps {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
    }
    family(
        &mut out,
        "strand_connections",
        "gauge",
        "Open client connections, by listener.",
    );
    for s in snaps {
        for (listener, count) in &s.connections {
            let _ = writeln!(
                out,
                "strand_connections{{shard=\"{}\",listener=\"{listener}\"}} {count}",
                s.shard
            );
        }
    }
    family(
        &mut out,
        "strand_replica_max_lag_seconds",
        "gauge",
        "The longest a follower of a partition led on the shard has not had everything its leader had a tick before.",
    );
    for s in snaps {
        let _ = writeln!(
            out,
            "strand_replica_max_lag_seconds{{shard=\"{}\"}} {:.3}",
            s.shard, s.replication.max_lag_seconds
        );
    }
    type PeerSeries = (
        &'static str,
        &'static str,
        &'static str,
        fn(&PeerTraffic) -> u64,
    );
    let peer_series: [PeerSeries; 5] = [
        ("strand_peer_up", "gauge", "Whether the shard's link to the peer node is up.", |p| u64::from(p.up)),
        ("strand_peer_bytes_sent_total", "counter", "Bytes sent to the peer node's same shard.", |p| p.bytes_sent),
        ("strand_peer_bytes_received_total", "counter", "Bytes received from the peer node's same shard.", |p| p.bytes_received),
        ("strand_peer_reconnects_total", "counter", "Connections to the peer opened after the first.", |p| p.reconnects),
        ("strand_peer_raft_dropped_total", "counter", "Raft messages to the peer dropped (link down, outbox full, too large); Raft sends them again.", |p| p.raft_dropped),
    ];
    for (name, kind, help, get) in peer_series {
        family(&mut out, name, kind, help);
        for s in snaps {
            for p in &s.replication.peers {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\",peer=\"{}\"}} {}",
                    s.shard,
                    p.peer,
                    get(p)
                );
            }
        }
    }
    family(
        &mut out,
        "strand_peer_heartbeat_rtt_seconds",
        "histogram",
        "Inter-node latency: from a Raft heartbeat of a partition led on the shard leaving for the peer node to its answer being stepped (the oldest unanswered heartbeat counts).",
    );
    for s in snaps {
        for p in &s.replication.peers {
            let labels = format!("shard=\"{}\",peer=\"{}\"", s.shard, p.peer);
            histogram_series(
                &mut out,
                "strand_peer_heartbeat_rtt_seconds",
                &labels,
                &p.heartbeat_rtt,
            );
        }
    }
    family(
        &mut out,
        "strand_request_latency_seconds",
        "histogram",
        "Requests of every API, from decoded to answered (Produce: acks=-1/1 after fdatasync; Fetch: long polls included).",
    );
    for s in snaps {
        for (key, counts) in &s.apis {
            let labels = format!("shard=\"{}\",api=\"{}\"", s.shard, api_name(*key));
            histogram_series(
                &mut out,
                "strand_request_latency_seconds",
                &labels,
                &counts.latency,
            );
        }
    }
    render_node(&mut out, node);
    histogram(
        &mut out,
        "strand_produce_latency_seconds",
        "Produce requests, from decoded to answered (acks=-1/1: after fdatasync).",
        snaps,
        |s| &s.produce_latency,
    );
    histogram(
        &mut out,
        "strand_fetch_latency_seconds",
        "Fetch requests, from decoded to answered (long polls included).",
        snaps,
        |s| &s.fetch_latency,
    );
    histogram(
        &mut out,
        "strand_flush_latency_seconds",
        "One partition's flush: its direct-I/O write and fdatasync.",
        snaps,
        |s| &s.flush_latency,
    );
    histogram(
        &mut out,
        "strand_flush_bytes",
        "Bytes written by one partition's flush (group-commit batch size).",
        snaps,
        |s| &s.flush_bytes,
    );
    out
}

/// The node-wide series: traffic per topic, consumer group lag, what the caps left out.
fn render_node(out: &mut String, node: &NodeView) {
    type TopicSeries = (&'static str, &'static str, fn(&TopicTraffic) -> u64);
    let topic_series: [TopicSeries; 3] = [
        ("strand_topic_bytes_in_total", "Record batch bytes produced to the topic and taken by its logs on this node (all shards).", |t| t.bytes_in),
        ("strand_topic_messages_in_total", "Records produced to the topic and taken by its logs on this node (all shards).", |t| t.messages_in),
        ("strand_topic_bytes_out_total", "Record batch bytes of the topic sent in Fetch responses by this node (all shards).", |t| t.bytes_out),
    ];
    for (name, help, get) in topic_series {
        family(out, name, "counter", help);
        for t in &node.topics {
            let _ = writeln!(out, "{name}{{topic=\"{}\"}} {}", escaped(&t.topic), get(t));
        }
    }
    family(
        out,
        "strand_topic_series_omitted",
        "gauge",
        "Topics without strand_topic_* series at this scrape (past --metrics-topics-max, in name order).",
    );
    let _ = writeln!(out, "strand_topic_series_omitted {}", node.topics_omitted);
    family(
        out,
        "strand_group_lag",
        "gauge",
        "Records a consumer group is behind on a partition: the partition's high watermark minus the group's committed offset (reported by the group's coordinator node).",
    );
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for l in &node.lag {
        let _ = writeln!(
            out,
            "strand_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{}\"}} {}",
            escaped(&l.group),
            escaped(&l.topic),
            l.partition,
            l.lag
        );
        *sums.entry(&l.group).or_default() += l.lag;
    }
    family(
        out,
        "strand_group_lag_sum",
        "gauge",
        "A consumer group's lag summed over the partitions strand_group_lag reports for it.",
    );
    for (group, sum) in sums {
        let _ = writeln!(
            out,
            "strand_group_lag_sum{{group=\"{}\"}} {sum}",
            escaped(group)
        );
    }
    family(
        out,
        "strand_group_lag_omitted_partitions",
        "gauge",
        "Committed offsets without a strand_group_lag series at this scrape: past --metrics-group-lag-partitions-max (reason cap), or whose partition has no replica on this node (reason no_local_replica).",
    );
    let _ = writeln!(
        out,
        "strand_group_lag_omitted_partitions{{reason=\"cap\"}} {}",
        node.lag_omitted_cap
    );
    let _ = writeln!(
        out,
        "strand_group_lag_omitted_partitions{{reason=\"no_local_replica\"}} {}",
        node.lag_omitted_unknown
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_exposition() {
        let mut h = Histogram::new(LATENCY_BUCKETS_S);
        for v in [0.00001, 0.0003, 0.0003, 0.02, 100.0] {
            h.observe(v);
        }
        let snap = Snapshot {
            shard: 3,
            apis: BTreeMap::new(),
            bytes_in: 1,
            bytes_out: 2,
            produce_latency: h.clone(),
            fetch_latency: Histogram::new(LATENCY_BUCKETS_S),
            flush_latency: Histogram::new(LATENCY_BUCKETS_S),
            flush_bytes: Histogram::new(SIZE_BUCKETS_BYTES),
            accept_errors: 0,
            rejected_per_ip: 0,
            authentications: 8,
            failed_authentications: 9,
            connections: vec![("PLAINTEXT", 4), ("SASL_SSL", 2)],
            partitions: 5,
            log_bytes: 6,
            leader_elections: 7,
            replication: Replication {
                leaders: 2,
                under_replicated: 1,
                leaderless: 0,
                max_lag_batches: 9,
                max_lag_seconds: 1.25,
                peers: vec![PeerTraffic {
                    peer: 2,
                    up: true,
                    bytes_sent: 100,
                    bytes_received: 200,
                    reconnects: 1,
                    raft_dropped: 0,
                    heartbeat_rtt: h.clone(),
                }],
            },
            topics: Vec::new(),
            group_offsets: Vec::new(),
            group_offsets_omitted: 0,
        };
        let text = render(&[snap], &NodeView::default());
        assert!(
            text.contains("strand_produce_latency_seconds_bucket{shard=\"3\",le=\"0.00005\"} 1")
        );
        assert!(text.contains("strand_produce_latency_seconds_bucket{shard=\"3\",le=\"0.0005\"} 3"));
        assert!(text.contains(
            "strand_peer_heartbeat_rtt_seconds_bucket{shard=\"3\",peer=\"2\",le=\"0.0005\"} 3"
        ));
        assert!(text.contains("strand_peer_heartbeat_rtt_seconds_count{shard=\"3\",peer=\"2\"} 5"));
        assert!(text.contains("strand_produce_latency_seconds_bucket{shard=\"3\",le=\"30\"} 4"));
        assert!(text.contains("strand_produce_latency_seconds_bucket{shard=\"3\",le=\"+Inf\"} 5"));
        assert!(text.contains("strand_produce_latency_seconds_count{shard=\"3\"} 5"));
        assert!(text.contains("strand_partitions{shard=\"3\"} 5"));
        assert_eq!(text.matches("# TYPE strand_partitions gauge").count(), 1);
        assert!(text.contains("strand_leader_elections_total{shard=\"3\"} 7"));
        assert!(text.contains("strand_under_replicated_partitions{shard=\"3\"} 1"));
        assert!(text.contains("strand_replica_max_lag_seconds{shard=\"3\"} 1.250"));
        assert!(text.contains("strand_peer_bytes_received_total{shard=\"3\",peer=\"2\"} 200"));
        assert!(text.contains("strand_peer_up{shard=\"3\",peer=\"2\"} 1"));
        assert!(text.contains("strand_connections{shard=\"3\",listener=\"PLAINTEXT\"} 4"));
        assert!(text.contains("strand_connections{shard=\"3\",listener=\"SASL_SSL\"} 2"));
        assert!(text.contains("strand_failed_authentication_total{shard=\"3\"} 9"));
    }

    fn snap(shard: u16) -> Snapshot {
        ShardMetrics::default().snapshot(shard, ShardGauges::default())
    }

    #[test]
    fn every_api_gets_a_latency_histogram_counting_its_requests() {
        let m = ShardMetrics::default();
        for api in [ApiKey::Metadata, ApiKey::Metadata, ApiKey::OffsetCommit] {
            m.request(api, 10, 20, Duration::from_millis(3), false);
        }
        m.request(ApiKey::JoinGroup, 10, 0, Duration::from_secs(2), true);
        let s = m.snapshot(1, ShardGauges::default());
        let text = render(&[s], &NodeView::default());
        let l = "strand_request_latency_seconds";
        assert!(text.contains(&format!("{l}_count{{shard=\"1\",api=\"Metadata\"}} 2")));
        assert!(text.contains(&format!(
            "{l}_bucket{{shard=\"1\",api=\"Metadata\",le=\"0.0025\"}} 0"
        )));
        assert!(text.contains(&format!(
            "{l}_bucket{{shard=\"1\",api=\"Metadata\",le=\"0.005\"}} 2"
        )));
        assert!(text.contains(&format!("{l}_count{{shard=\"1\",api=\"OffsetCommit\"}} 1")));
        assert!(text.contains(&format!("{l}_sum{{shard=\"1\",api=\"JoinGroup\"}} 2")));
        assert!(text.contains("strand_requests_total{shard=\"1\",api=\"JoinGroup\"} 1"));
        assert!(text
            .contains("strand_request_errors_total{shard=\"1\",api=\"JoinGroup\",code=\"-2\"} 1"));
        // APIs never asked have no series.
        assert!(!text.contains("api=\"Produce\""));
        assert_eq!(text.matches(&format!("# TYPE {l} histogram")).count(), 1);
    }

    #[test]
    fn topics_sum_over_shards_and_are_capped_by_name() {
        let traffic = PartitionTraffic::default();
        traffic.produced(100, 3);
        traffic.produced(50, 2);
        traffic.fetched(70);
        let mut t = TopicTraffic {
            topic: "b".into(),
            ..Default::default()
        };
        traffic.add_to(&mut t);
        assert_eq!((t.bytes_in, t.messages_in, t.bytes_out), (150, 5, 70));
        let mut s0 = snap(0);
        let mut s1 = snap(1);
        s0.topics = vec![t.clone()];
        s1.topics = vec![
            TopicTraffic {
                topic: "a".into(),
                bytes_in: 1,
                ..Default::default()
            },
            t.clone(),
            TopicTraffic {
                topic: "c".into(),
                ..Default::default()
            },
        ];
        let snaps = [s0, s1];
        let (topics, omitted) = merge_topics(&snaps, 2);
        assert_eq!(omitted, 1);
        assert_eq!(topics.len(), 2);
        assert_eq!(topics[0].topic, "a");
        assert_eq!((topics[1].topic.as_str(), topics[1].bytes_in), ("b", 300));
        let node = NodeView {
            topics,
            topics_omitted: omitted,
            ..Default::default()
        };
        let text = render(&snaps, &node);
        assert!(text.contains("strand_topic_bytes_in_total{topic=\"b\"} 300"));
        assert!(text.contains("strand_topic_messages_in_total{topic=\"b\"} 10"));
        assert!(text.contains("strand_topic_bytes_out_total{topic=\"b\"} 140"));
        assert!(!text.contains("topic=\"c\""));
        assert!(text.contains("strand_topic_series_omitted 1"));
    }

    fn offset(group: &str, topic: &str, partition: i32, committed: i64) -> GroupOffset {
        GroupOffset {
            group: group.into(),
            topic: topic.into(),
            partition,
            committed,
        }
    }

    #[test]
    fn group_offsets_keep_the_first_in_order_past_the_cap() {
        let all = vec![
            offset("g2", "t", 0, 5),
            offset("g1", "t", 1, 5),
            offset("g1", "t", 0, 5),
        ];
        let (kept, omitted) = cap_offsets(all.clone(), 2);
        assert_eq!(omitted, 1);
        assert_eq!(kept, vec![offset("g1", "t", 0, 5), offset("g1", "t", 1, 5)]);
        let (kept, omitted) = cap_offsets(all, 10);
        assert_eq!((kept.len(), omitted), (3, 0));
    }

    #[test]
    fn group_lag_series_sum_per_group_and_escape_group_ids() {
        let lag = |group: &str, partition, lag| GroupLag {
            group: group.into(),
            topic: "t".into(),
            partition,
            lag,
        };
        let node = NodeView {
            lag: vec![lag("g", 0, 70), lag("g", 1, 15), lag("we\"ird\\\n", 0, 4)],
            lag_omitted_cap: 2,
            lag_omitted_unknown: 1,
            ..Default::default()
        };
        let text = render(&[], &node);
        assert!(text.contains("strand_group_lag{group=\"g\",topic=\"t\",partition=\"1\"} 15"));
        assert!(text.contains("strand_group_lag_sum{group=\"g\"} 85"));
        assert!(text.contains("strand_group_lag_sum{group=\"we\\\"ird\\\\\\n\"} 4"));
        assert!(text.contains("strand_group_lag_omitted_partitions{reason=\"cap\"} 2"));
        assert!(text.contains("strand_group_lag_omitted_partitions{reason=\"no_local_replica\"} 1"));
    }
}
