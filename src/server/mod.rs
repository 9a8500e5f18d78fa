//! Listeners and connections.
//!
//! Each shard accepts on its own port. A connection is served by two tasks: the reader
//! decodes frames and spawns one handler task per request, in arrival order; the writer
//! awaits those tasks in the same order and writes their responses. Requests on one
//! connection therefore run concurrently (a produce waiting for its fsync does not block
//! the next request) while responses keep Kafka's strict per-connection ordering. The
//! queue between them is bounded by `--max-inflight-requests`: when it is full the reader
//! stops reading, which pushes back on the client through TCP.
//!
//! Handlers do their state changes (appends) synchronously before their first `.await`,
//! and glommio polls newly spawned tasks in FIFO order, so appends from pipelined requests
//! land in the order the client sent them — which idempotent producers rely on.

mod connection;
pub mod metrics_http;

use std::rc::Rc;

use glommio::net::TcpListener;

use crate::shard::Shard;

/// Accepts connections until the shard shuts down.
pub async fn accept_loop(shard: &Rc<Shard>, listener: TcpListener) {
    loop {
        let seen = shard.shutdown.generation();
        if shard.shutting_down.get() {
            break;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown.wait(seen).await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(err)) => {
                tracing::warn!(shard = shard.id.0, %err, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        if shard.connections.get() >= shard.config.max_connections_per_shard {
            tracing::warn!(
                shard = shard.id.0,
                %peer,
                limit = shard.config.max_connections_per_shard,
                "connection limit reached; closing new connection"
            );
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        shard.connections.set(shard.connections.get() + 1);
        shard.connections_changed.notify_all();
        let shard = shard.clone();
        glommio::spawn_local(async move {
            connection::serve(&shard, stream, &peer).await;
            shard.connections.set(shard.connections.get() - 1);
            shard.connections_changed.notify_all();
        })
        .detach();
    }
    tracing::debug!(shard = shard.id.0, "stopped accepting");
}
