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

/// Request outcome counters of one API.
#[derive(Clone, Debug, Default)]
pub struct ApiCounts {
    pub requests: u64,
    /// Error code → count (partition-level codes for Produce and Fetch; -2 for a request
    /// that closed the connection).
    pub errors: BTreeMap<i16, u64>,
}

/// Error "code" counted for a request that closed its connection.
pub const CLOSED: i16 = -2;

/// One shard's counters.
pub struct ShardMetrics {
    apis: RefCell<BTreeMap<i16, ApiCounts>>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    produce_latency: RefCell<Histogram>,
    fetch_latency: RefCell<Histogram>,
    flush_latency: RefCell<Histogram>,
    flush_bytes: RefCell<Histogram>,
    accept_errors: Cell<u64>,
    leader_elections: Cell<u64>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            apis: RefCell::new(BTreeMap::new()),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            produce_latency: RefCell::new(Histogram::new(LATENCY_BUCKETS_S)),
            fetch_latency: RefCell::new(Histogram::new(LATENCY_BUCKETS_S)),
            flush_latency: RefCell::new(Histogram::new(LATENCY_BUCKETS_S)),
            flush_bytes: RefCell::new(Histogram::new(SIZE_BUCKETS_BYTES)),
            accept_errors: Cell::new(0),
            leader_elections: Cell::new(0),
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
        {
            let mut apis = self.apis.borrow_mut();
            let counts = apis.entry(api as i16).or_default();
            counts.requests += 1;
            if closed {
                *counts.errors.entry(CLOSED).or_default() += 1;
            }
        }
        self.bytes_in.set(self.bytes_in.get() + bytes_in as u64);
        self.bytes_out.set(self.bytes_out.get() + bytes_out as u64);
        match api {
            ApiKey::Produce => self
                .produce_latency
                .borrow_mut()
                .observe(took.as_secs_f64()),
            ApiKey::Fetch => self.fetch_latency.borrow_mut().observe(took.as_secs_f64()),
            _ => {}
        }
    }

    /// A partition-level error code in a response.
    pub fn error(&self, api: ApiKey, code: i16) {
        *self
            .apis
            .borrow_mut()
            .entry(api as i16)
            .or_default()
            .errors
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

/// What a shard knows of itself and its counters do not.
pub struct ShardGauges {
    pub connections: u64,
    pub partitions: u64,
    pub log_bytes: u64,
    pub replication: Replication,
}

impl ShardMetrics {
    /// A copy of the counters with the shard's gauges, for a scrape.
    pub fn snapshot(&self, shard: u16, gauges: ShardGauges) -> Snapshot {
        Snapshot {
            shard,
            apis: self.apis.borrow().clone(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            produce_latency: self.produce_latency.borrow().clone(),
            fetch_latency: self.fetch_latency.borrow().clone(),
            flush_latency: self.flush_latency.borrow().clone(),
            flush_bytes: self.flush_bytes.borrow().clone(),
            accept_errors: self.accept_errors.get(),
            connections: gauges.connections,
            partitions: gauges.partitions,
            log_bytes: gauges.log_bytes,
            leader_elections: self.leader_elections.get(),
            replication: gauges.replication,
        }
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
    pub connections: u64,
    pub partitions: u64,
    pub log_bytes: u64,
    pub leader_elections: u64,
    pub replication: Replication,
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

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    snaps: &[Snapshot],
    pick: fn(&Snapshot) -> &Histogram,
) {
    family(out, name, "histogram", help);
    for s in snaps {
        let h = pick(s);
        let mut cumulative = 0;
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative += h.counts[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{shard=\"{}\",le=\"{bound}\"}} {cumulative}",
                s.shard
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{shard=\"{}\",le=\"+Inf\"}} {}",
            s.shard, h.count
        );
        let _ = writeln!(out, "{name}_sum{{shard=\"{}\"}} {}", s.shard, h.sum);
        let _ = writeln!(out, "{name}_count{{shard=\"{}\"}} {}", s.shard, h.count);
    }
}

/// Prometheus text exposition (format 0.0.4) of every shard's snapshot.
pub fn render(snaps: &[Snapshot]) -> String {
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
    let simple: [Simple; 11] = [
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
        (
            "strand_connections",
            "gauge",
            "Open client connections.",
            |s| s.connections,
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
            connections: 4,
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
                }],
            },
        };
        let text = render(&[snap]);
        assert!(
            text.contains("strand_produce_latency_seconds_bucket{shard=\"3\",le=\"0.00005\"} 1")
        );
        assert!(text.contains("strand_produce_latency_seconds_bucket{shard=\"3\",le=\"0.0005\"} 3"));
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
    }
}
