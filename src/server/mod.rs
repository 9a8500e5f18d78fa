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
//! Every request frame, on every connection of a shard, reserves its bytes from the
//! shard's one [`budget::RequestBudget`] (`--queued-max-request-bytes`) until it is answered.
//!
//! A failing accept (out of file descriptors, say) is retried with a growing back-off,
//! counted (`strand_accept_errors_total`) and logged once per
//! [`ACCEPT_ERROR_LOG_INTERVAL_MS`], never in a tight loop.
//!
//! [`rpc`]: a shard's links to the same shard of the other nodes of a cluster; [`cluster`]
//! connects shard 0's links to the cluster's metadata group.
//!
//! Frames are read into memory that is not zero-filled first, large ones straight from the
//! socket, and responses are written as pieces with vectored sends ([`socket`]), so Fetch
//! responses reach the kernel with no copy of their records.
//!
//! Handlers do their state changes (appends) synchronously before their first `.await`,
//! and glommio polls newly spawned tasks in FIFO order, so appends from pipelined requests
//! land in the order the client sent them — which idempotent producers rely on.

mod budget;
pub mod cluster;
mod connection;
pub mod ip_quota;
pub mod metrics_http;
pub mod rpc;
#[cfg(test)]
mod rpc_tests;
mod socket;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};

use crate::config::SecurityProtocol;
use crate::security::sasl::Mechanism;
use crate::security::users::UserStore;
use crate::shard::Shard;

/// The longest a TLS handshake may take before the connection is closed (a plaintext
/// client on a TLS port fails at once; a silent one is closed after this).
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// What one client listener of a shard hands its connections.
pub struct ListenerCtx {
    /// Its index among the listeners in force (the endpoints it advertises).
    pub index: usize,
    pub protocol: SecurityProtocol,
    /// The TLS configuration of an SSL or SASL_SSL listener (replaced on SIGHUP).
    pub tls: Option<std::sync::Arc<crate::security::tls::ServerTls>>,
    pub security: Rc<ShardSecurity>,
}

/// A shard's SASL set-up, shared by its listeners.
pub struct ShardSecurity {
    /// `--sasl-enabled-mechanisms`.
    pub mechanisms: Vec<Mechanism>,
    /// The users file, reloaded when it changes.
    pub users: RefCell<UserStore>,
    /// `--max-connections-per-ip`: the node's count of connections per client address.
    pub ip_quota: std::sync::Arc<ip_quota::IpQuota>,
}

/// The wait after a first failed accept; it doubles with each failure in a row.
const ACCEPT_BACKOFF_MIN_MS: u64 = 10;
/// The longest wait between accepts that keep failing: a listener out of file descriptors
/// tries again about once a second, and serves within a second of one being freed.
const ACCEPT_BACKOFF_MAX_MS: u64 = 1_000;
/// Failed accepts are logged at most once per interval, with the count since the last line.
pub const ACCEPT_ERROR_LOG_INTERVAL_MS: u64 = 10_000;

/// What a listener does about failed accepts: back off, count, log now and then.
pub(crate) struct AcceptErrors {
    listener: &'static str,
    in_a_row: u32,
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl AcceptErrors {
    pub(crate) fn new(listener: &'static str) -> Self {
        AcceptErrors {
            listener,
            in_a_row: 0,
            unlogged: 0,
            logged_at: None,
        }
    }

    /// Counts a failed accept, logs if a line is due, and returns how long to wait.
    pub(crate) fn failed(&mut self, shard: &Shard, err: &dyn std::fmt::Display) -> Duration {
        shard.metrics.accept_error();
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.unlogged += 1;
        let due = self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(ACCEPT_ERROR_LOG_INTERVAL_MS));
        if due {
            tracing::warn!(
                shard = shard.id.0,
                listener = self.listener,
                failed = self.unlogged,
                "accept failed: {err} (retrying with back-off; logged at most once per {ACCEPT_ERROR_LOG_INTERVAL_MS} ms)"
            );
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
        let backoff_ms = ACCEPT_BACKOFF_MIN_MS
            .saturating_mul(1 << self.in_a_row.min(16).saturating_sub(1))
            .min(ACCEPT_BACKOFF_MAX_MS);
        Duration::from_millis(backoff_ms)
    }

    /// The next connection `listener` accepts, or `None` once the shard shuts down. A
    /// failed accept is counted and retried after a back-off the shutdown cuts short.
    pub(crate) async fn accept(
        &mut self,
        shard: &Shard,
        listener: &TcpListener,
    ) -> Option<TcpStream> {
        loop {
            let seen = shard.shutdown.generation();
            if shard.shutting_down.get() {
                return None;
            }
            let accepted =
                futures_lite::future::or(async { Some(listener.accept().await) }, async {
                    shard.shutdown.wait(seen).await;
                    None
                })
                .await;
            match accepted? {
                Ok(stream) => {
                    self.succeeded(shard);
                    return Some(stream);
                }
                Err(err) => {
                    let backoff = self.failed(shard, &err);
                    futures_lite::future::or(glommio::timer::sleep(backoff), async {
                        shard.shutdown.wait(seen).await;
                    })
                    .await;
                }
            }
        }
    }

    /// An accept succeeded: the back-off starts over.
    fn succeeded(&mut self, shard: &Shard) {
        if self.in_a_row > 0 {
            tracing::info!(
                shard = shard.id.0,
                listener = self.listener,
                failed = self.unlogged,
                "accepting again"
            );
            self.in_a_row = 0;
            self.unlogged = 0;
            self.logged_at = None;
        }
    }
}

/// Accepts connections of one listener until the shard shuts down. `budget` is the
/// shard's, shared by all its listeners.
pub async fn accept_loop(
    shard: &Rc<Shard>,
    listener: TcpListener,
    ctx: Rc<ListenerCtx>,
    budget: Rc<budget::RequestBudget>,
) {
    let mut errors = AcceptErrors::new(ctx.protocol.name());
    // Listed (at 0) from the start, not from its first connection.
    shard.listener_connection(ctx.protocol.name(), 0);
    while let Some(stream) = errors.accept(shard, &listener).await {
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
        let ip_slot = match stream.peer_addr() {
            Ok(addr) => match ctx.security.ip_quota.acquire(addr.ip()) {
                Ok(slot) => slot,
                Err(limit) => {
                    // Kafka's acceptor: "Rejected connection from …, address already has
                    // the configured maximum of N connections."
                    shard.metrics.rejected_per_ip();
                    let host = addr.ip().to_string();
                    connection::log_refused(
                        shard.id.0,
                        &peer,
                        &host,
                        ("", connection::ANONYMOUS),
                        &format!("rejected: address {host} already has the configured maximum of {limit} connections (--max-connections-per-ip)"),
                    );
                    drop(stream);
                    continue;
                }
            },
            Err(_) => None,
        };
        let _ = stream.set_nodelay(true);
        shard.connections.set(shard.connections.get() + 1);
        shard.listener_connection(ctx.protocol.name(), 1);
        shard.connections_changed.notify_all();
        let shard = shard.clone();
        let budget = budget.clone();
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            if let Some(socket) = open(&shard, &ctx, stream, &peer).await {
                connection::serve(&shard, &budget, socket, &peer, &ctx).await;
            }
            drop(ip_slot);
            shard.connections.set(shard.connections.get() - 1);
            shard.listener_connection(ctx.protocol.name(), -1);
            shard.connections_changed.notify_all();
        })
        .detach();
    }
    tracing::debug!(shard = shard.id.0, "stopped accepting");
}

/// The shard's request budget, shared by all its listeners.
pub fn request_budget(shard: &Shard) -> Rc<budget::RequestBudget> {
    budget::RequestBudget::new(shard.config.queued_max_request_bytes)
}

/// The connection as the listener serves it: the socket itself, or a TLS session once its
/// handshake is done. `None` (logged) when the handshake fails or times out: a plaintext
/// client on a TLS port is closed at its first bytes.
async fn open(
    shard: &Shard,
    ctx: &ListenerCtx,
    stream: TcpStream,
    peer: &str,
) -> Option<socket::Socket> {
    let Some(tls) = &ctx.tls else {
        return Some(socket::Socket::Plain(Rc::new(RefCell::new(stream))));
    };
    let acceptor = tls.acceptor();
    let handshake = crate::util::timeout(
        Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
        acceptor.accept(stream),
    )
    .await;
    let client_host = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
    let reason = match handshake {
        Some(Ok(tls)) => {
            let principal = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(crate::security::tls::principal_of);
            if let Some(principal) = &principal {
                tracing::debug!(shard = shard.id.0, peer, %principal, "TLS client certificate");
            }
            return Some(socket::Socket::Tls(Rc::new(RefCell::new(tls))));
        }
        Some(Err(err)) => format!(
            "TLS handshake failed on the {} listener: {err} (a plaintext client on a TLS port?)",
            ctx.protocol.name()
        ),
        None => format!(
            "TLS handshake not done within {TLS_HANDSHAKE_TIMEOUT_MS} ms on the {} listener",
            ctx.protocol.name()
        ),
    };
    connection::log_refused(
        shard.id.0,
        peer,
        client_host,
        ("", connection::ANONYMOUS),
        &reason,
    );
    None
}
