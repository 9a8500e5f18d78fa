//! The metrics listener (`--metrics-listen`, off unless set): a minimal HTTP server on
//! shard 0 answering `GET /metrics` with every shard's counters in Prometheus' text format.
//! Each scrape gathers a [`Snapshot`] from every shard over the mesh.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::ShardId;
use crate::metrics::{render, Snapshot};
use crate::shard::mesh::{MeshReply, MeshRequest};
use crate::shard::Shard;

/// Largest HTTP request head a scrape may send.
const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A scrape that has not sent its request by then is dropped.
const HTTP_READ_TIMEOUT_MS: u64 = 5_000;

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
            let head = crate::util::timeout(Duration::from_millis(HTTP_READ_TIMEOUT_MS), read_head(&mut stream)).await;
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
