//! The metrics listener (`--metrics-listen`, off unless set): a minimal HTTP server on
//! shard 0 answering `GET /metrics` with every shard's counters in Prometheus' text format.
//! Each scrape gathers a [`Snapshot`] from every shard over the mesh.
//!
//! A scrape client may be broken or hostile like any other: at most
//! [`HTTP_CONNECTIONS_MAX`] scrapes are served at once (further connections are closed on
//! accept), a request head must arrive within [`HTTP_READ_TIMEOUT_MS`], and a response the
//! client does not read within [`HTTP_WRITE_TIMEOUT_MS`] is dropped, so a client that never
//! reads pins neither memory nor tasks.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::ShardId;
use crate::metrics::{cap_offsets, merge_topics, render, GroupLag, NodeView, Snapshot};
use crate::shard::mesh::{MeshReply, MeshRequest};
use crate::shard::Shard;

/// Largest HTTP request head a scrape may send.
const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A scrape that has not sent its request by then is dropped.
pub const HTTP_READ_TIMEOUT_MS: u64 = 5_000;
/// A response not written by then (a client that does not read) is dropped.
pub const HTTP_WRITE_TIMEOUT_MS: u64 = 10_000;
/// Scrapes served at once; Prometheus needs one per scraping server.
pub const HTTP_CONNECTIONS_MAX: usize = 16;
/// How often a stalled write checks its deadline (short timers re-armed; see
/// `connection::STALL_CHECK_MS`).
const WRITE_CHECK_MS: u64 = 1_000;

/// Every shard's snapshot (asked over the mesh), in shard order.
async fn gather(shard: &Rc<Shard>) -> Vec<Snapshot> {
    let mut snaps = vec![shard.metrics_snapshot()];
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

/// The node-wide series of a scrape: traffic per topic summed over the shards, and the lag
/// of every committed offset the shards of this node coordinate (up to the cap) whose
/// partition has a replica on this node, asking each owning shard for its high watermarks.
async fn node_view(shard: &Rc<Shard>, snaps: &mut [Snapshot]) -> NodeView {
    let config = &shard.config;
    let (topics, topics_omitted) = merge_topics(snaps, config.metrics_topics_max);
    let mut offsets = Vec::new();
    let mut omitted = 0;
    for s in snaps.iter_mut() {
        offsets.append(&mut s.group_offsets);
        omitted += s.group_offsets_omitted;
    }
    let (offsets, cut) = cap_offsets(offsets, config.metrics_group_lag_partitions_max);
    // Each committed offset's partition, asked of the shard owning it on this node.
    let snapshot = shard.snapshot();
    let shard_count = snapshot.shard_count.max(1);
    let mut asked: Vec<Vec<(String, i32)>> = vec![Vec::new(); shard_count];
    let mut slot: Vec<Option<(usize, usize)>> = Vec::with_capacity(offsets.len());
    for o in &offsets {
        let owner = snapshot
            .topic(&o.topic)
            .and_then(|meta| snapshot.owner(meta, o.partition));
        slot.push(owner.map(|k| {
            let list = &mut asked[k.0 as usize];
            list.push((o.topic.clone(), o.partition));
            (k.0 as usize, list.len() - 1)
        }));
    }
    let mut watermarks: Vec<Vec<Option<i64>>> = Vec::with_capacity(shard_count);
    for (k, partitions) in asked.into_iter().enumerate() {
        let to = ShardId(k as u16);
        let got = if partitions.is_empty() {
            Vec::new()
        } else if to == shard.id {
            shard.high_watermarks(&partitions)
        } else {
            match shard
                .mesh
                .request(to, MeshRequest::HighWatermarks(partitions))
                .await
            {
                Ok(MeshReply::HighWatermarks(hw)) => hw,
                Ok(_) => {
                    tracing::warn!(
                        shard = k,
                        "unexpected mesh reply to a high watermark request"
                    );
                    Vec::new()
                }
                Err(err) => {
                    tracing::warn!(shard = k, ?err, "no high watermarks from shard");
                    Vec::new()
                }
            }
        };
        watermarks.push(got);
    }
    let mut lag = Vec::with_capacity(offsets.len());
    let mut unknown = 0;
    for (o, at) in offsets.into_iter().zip(slot) {
        match at.and_then(|(k, i)| watermarks[k].get(i).copied().flatten()) {
            Some(hw) => lag.push(GroupLag {
                group: o.group,
                topic: o.topic,
                partition: o.partition,
                lag: hw - o.committed,
            }),
            None => unknown += 1,
        }
    }
    NodeView {
        topics,
        topics_omitted,
        lag,
        lag_omitted_cap: omitted + cut,
        lag_omitted_unknown: unknown,
    }
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
    let open = Rc::new(Cell::new(0usize));
    let mut errors = super::AcceptErrors::new("metrics");
    while let Some(mut stream) = errors.accept(&shard, &listener).await {
        if open.get() >= HTTP_CONNECTIONS_MAX {
            tracing::debug!(
                limit = HTTP_CONNECTIONS_MAX,
                "metrics connection limit reached; closing new connection"
            );
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let open = OpenScrape(open.clone());
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let _open = open;
            let head = crate::util::timeout(Duration::from_millis(HTTP_READ_TIMEOUT_MS), read_head(&mut stream)).await;
            let response = match head.flatten() {
                Some(head) if head.starts_with("GET /metrics ") || head.starts_with("GET / ") => {
                    let mut snaps = gather(&shard).await;
                    let node = node_view(&shard, &mut snaps).await;
                    let body = render(&snaps, &node);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                Some(_) => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                None => return,
            };
            let limit = Duration::from_millis(HTTP_WRITE_TIMEOUT_MS);
            if write_within(&mut stream, response.as_bytes(), limit).await {
                let _ = stream.close().await;
            }
        })
        .detach();
    }
}

/// One scrape being served; counted in the listener's open connections until it ends.
struct OpenScrape(Rc<Cell<usize>>);

impl Drop for OpenScrape {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Writes `bytes` within `limit`; false if the client did not take them (or the write
/// failed).
async fn write_within(
    stream: &mut glommio::net::TcpStream,
    mut bytes: &[u8],
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::debug!(?limit, "metrics client did not read its response; dropped");
            return false;
        }
        let check = left.min(Duration::from_millis(WRITE_CHECK_MS));
        match crate::util::timeout(check, stream.write(bytes)).await {
            None => continue,
            Some(Ok(0)) | Some(Err(_)) => return false,
            Some(Ok(n)) => bytes = &bytes[n..],
        }
    }
    true
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
    use glommio::{LocalExecutorBuilder, Placement};

    /// A client that never reads cannot hold a response write (and its task) for ever.
    #[test]
    fn a_response_the_client_never_reads_is_given_up() {
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let client = std::net::TcpStream::connect(addr).unwrap();
                let mut server = listener.accept().await.unwrap();
                // Far more than the socket buffers of both ends hold.
                let response = vec![b'x'; 64 * 1024 * 1024];
                let started = Instant::now();
                let written =
                    write_within(&mut server, &response, Duration::from_millis(500)).await;
                assert!(!written, "the write should have been given up");
                assert!(started.elapsed() < Duration::from_secs(10));
                drop(client);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
