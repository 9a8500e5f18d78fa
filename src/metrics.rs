//! Metrics: per-shard counters and histograms, served in Prometheus' text format on
//! `--metrics-listen` (off unless set).
//!
//! Each shard counts into its own [`ShardMetrics`] (plain `Cell`s: no atomics, no locks on
//! the request path). A scrape reaches the listener on shard 0, which asks every other
//! shard for a [`Snapshot`] over the mesh and renders them together, one series per shard.
//! Histograms have fixed buckets, as Prometheus expects (cumulative `le` buckets, `_sum`,
//! `_count`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::ApiKey;

use crate::cluster::ShardId;
use crate::shard::mesh::{MeshReply, MeshRequest};
use crate::shard::Shard;

/// Latency bucket bounds, in seconds.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Size bucket bounds, in bytes.
pub const SIZE_BUCKETS_BYTES: &[f64] = &[
    512.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];
/// Largest HTTP request head a scrape may send.
const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A scrape that has not sent its request by then is dropped.
const HTTP_READ_TIMEOUT: Duration = Duration::from_secs(5);

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
    pub connections: u64,
    pub partitions: u64,
    pub log_bytes: u64,
}

/// This shard's metrics now.
pub fn snapshot(shard: &Shard) -> Snapshot {
    let m = &shard.metrics;
    Snapshot {
        shard: shard.id.0,
        apis: m.apis.borrow().clone(),
        bytes_in: m.bytes_in.get(),
        bytes_out: m.bytes_out.get(),
        produce_latency: m.produce_latency.borrow().clone(),
        fetch_latency: m.fetch_latency.borrow().clone(),
        flush_latency: m.flush_latency.borrow().clone(),
        flush_bytes: m.flush_bytes.borrow().clone(),
        connections: shard.connections.get() as u64,
        partitions: shard.partition_count() as u64,
        log_bytes: shard
            .all_partitions()
            .iter()
            .map(|p| p.log.borrow().size_bytes())
            .sum(),
    }
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
    let simple: [Simple; 5] = [
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
    ];
    for (name, kind, help, get) in simple {
        family(&mut out, name, kind, help);
        for s in snaps {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
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

/// Every shard's snapshot (asked over the mesh), in shard order.
async fn gather(shard: &Rc<Shard>) -> Vec<Snapshot> {
    let mut snaps = vec![snapshot(shard)];
    for k in 0..shard.snapshot().shard_count {
        let to = ShardId(k as u16);
        if to == shard.id {
            continue;
        }
        match shard.mesh.request(to, MeshRequest::Metrics).await {
            Ok(MeshReply::Metrics(s)) => snaps.push(*s),
            Ok(_) => tracing::warn!(shard = k, "unexpected mesh reply to a metrics request"),
            Err(err) => tracing::warn!(shard = k, ?err, "no metrics from shard"),
        }
    }
    snaps.sort_by_key(|s| s.shard);
    snaps
}

/// Serves `GET /metrics` on `addr` from shard 0 until shutdown.
pub async fn serve(shard: Rc<Shard>, addr: SocketAddr) {
    let listener = match glommio::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(%addr, %err, "cannot listen for metrics");
            return;
        }
    };
    tracing::info!(%addr, "metrics listening");
    loop {
        let seen = shard.shutdown.generation();
        if shard.shutting_down.get() {
            return;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown.wait(seen).await;
            None
        })
        .await;
        let mut stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(err)) => {
                tracing::warn!(%err, "metrics accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let head = crate::util::timeout(HTTP_READ_TIMEOUT, read_head(&mut stream)).await;
            let response = match head.flatten() {
                Some(head) if head.starts_with("GET /metrics ") || head.starts_with("GET / ") => {
                    let body = render(&gather(&shard).await);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                Some(_) => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                None => return,
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.close().await;
        })
        .detach();
    }
}

/// Reads an HTTP request head (up to the blank line), at most HTTP_REQUEST_BYTES_MAX.
async fn read_head(stream: &mut glommio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > HTTP_REQUEST_BYTES_MAX {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
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
            connections: 4,
            partitions: 5,
            log_bytes: 6,
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
    }
}
