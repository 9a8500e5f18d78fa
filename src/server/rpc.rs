//! Links between the shards of cluster nodes: the transport of the inter-node protocol
//! (`protocol::rpc`, docs/protocol.md "Inter-node protocol") for one shard.
//!
//! Replicas of a partition live on the same shard index of every node, so shard k of a
//! node talks only to shard k of the others. Each shard has a [`PeerLinks`]:
//!
//! - **Outbound**: one TCP connection per peer node, to the peer's rpc base port + k
//!   (`TCP_NODELAY`), opened by a task that reconnects after 100 ms, doubling to 1 s, and
//!   sends HELLO first. Everything this shard sends to a peer goes on that connection;
//!   what the peer sends comes on the peer's own outbound connection, which we accept.
//!   The connection is watched for end of stream, so a peer that goes away marks the link
//!   down even when there is nothing to send.
//! - **Outbox**: per peer, queued Raft messages (bounded by `outbox_bytes_max`; past it,
//!   and whenever the link is down, a message is dropped, counted, and the caller told:
//!   Raft retries, and the owner reports the peer unreachable to its group) and queued
//!   REQUEST/LEADERSHIP frames (never dropped while the link is up, bounded by a count;
//!   past it, or while the link is down, the caller gets an error; those queued when the
//!   link goes down are lost, and the owner fails its requests on `on_link(false)`).
//!   REPLY frames wait for a link that is down (up to a count), because the requester's
//!   own link may be fine all along. One writer task per peer coalesces what is
//!   queued into RAFT frames ([`RaftBatch`], cut below `frame_bytes_max`) and writes them
//!   with vectored sends: entry data goes from the caller's `Bytes` to the kernel uncopied.
//! - **Inbound**: an accept loop on base port + k. A connection must open with a HELLO
//!   naming this node, this shard index and shard count, the cluster id (when both sides
//!   know one) and a known peer; otherwise it is logged and closed. Frames are read under
//!   `frame_bytes_max`, their memory reserved from one per-shard budget as the bytes
//!   arrive (a length prefix alone reserves a small first chunk, as on the client side);
//!   a frame over the limit, one that stalls half way, or one that does not decode closes
//!   the connection with a log line. A newer connection from the same peer replaces the
//!   older one.
//! - **Sequence numbers**: each frame to a peer carries the next `seq` of that link (never
//!   reused while this `PeerLinks` lives, across reconnections) and `ack`, the highest
//!   `seq` received from the peer (reset when the peer's incarnation changes). A later
//!   read lease compares [`LinkStats::acked`] with the `seq` a message went out in.
//!
//! The owner registers a [`LinkHandler`]. Raft messages are handed over synchronously
//! (stepping a RawNode is synchronous); a request is answered by a future, because the
//! answer to a forwarded metadata change exists only once the change commits. All of it
//! lives on the shard's thread: `Rc`, `Cell`, no locks.
//!
//! Not used by the broker yet: the cluster work wires it to flags and to the Raft groups.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::net::{TcpListener, TcpStream};
use glommio::Task;
use raft::eraftpb::Message;

use super::budget::{RequestBudget, Reservation};
use super::socket::{Inbound, Socket};
use crate::protocol::pieces::{total_len, Piece};
use crate::protocol::rpc::{
    self, Body, Hello, Leadership, Link, RaftBatch, Reply, Request, FRAME_BYTES_MAX_DEFAULT,
    PREFIX_BYTES,
};
use crate::util::{one_line, timeout, Notify};

/// The first wait before reconnecting; it doubles up to [`RECONNECT_BACKOFF_MAX_MS`].
pub const RECONNECT_BACKOFF_MIN_MS: u64 = 100;
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 1_000;
/// A connect that takes longer than this is abandoned (and retried after the back-off).
const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// An accepted connection must send its HELLO within this.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;
/// Once a frame has begun, the longest its sender may send nothing more of it.
pub const FRAME_STALL_TIMEOUT_MS: u64 = 30_000;
/// Stall timeouts are checked with re-armed short timers (see `connection.rs`).
const STALL_CHECK_MS: u64 = 1_000;
/// Default of [`RpcLimits::outbox_bytes_max`].
pub const OUTBOX_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Default of [`RpcLimits::requests_queued_max`].
pub const REQUESTS_QUEUED_MAX_DEFAULT: usize = 1024;
/// Requests of one peer being answered at once; past it its connection is not read.
const INBOUND_REQUESTS_MAX: usize = 1024;
/// Replies queued for one peer (they wait while the link is down); past it, dropped.
const REPLIES_QUEUED_MAX: usize = 1024;
/// A length prefix alone reserves this much of the budget (or the whole frame if smaller).
const FRAME_FIRST_CHUNK_BYTES: usize = 16 * 1024;
/// Memory for a frame is reserved as its bytes arrive, at most this much ahead of them.
const FRAME_RESERVE_AHEAD_BYTES: usize = 1024 * 1024;
/// Frames up to this size get their buffer allocated (address space, not memory) at once.
const FRAME_ALLOCATE_AHEAD_MAX: usize = 16 * 1024 * 1024;
/// The most a RAFT frame's header (kind, seq, ack, message count) can take.
const RAFT_FRAME_HEAD_MAX: usize = 1 + 10 + 10 + 10;

/// Limits of one shard's links.
#[derive(Clone, Debug)]
pub struct RpcLimits {
    /// Largest frame sent or accepted (the `len` of the prefix).
    pub frame_bytes_max: usize,
    /// Raft message bytes queued for one peer; past it, messages to it are dropped.
    pub outbox_bytes_max: usize,
    /// REQUEST and LEADERSHIP frames queued for one peer; past it, sending them fails.
    pub requests_queued_max: usize,
    /// Bytes of inbound frames being read at once, over all of the shard's connections.
    pub inbound_budget_bytes: usize,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            outbox_bytes_max: OUTBOX_BYTES_MAX_DEFAULT,
            requests_queued_max: REQUESTS_QUEUED_MAX_DEFAULT,
            inbound_budget_bytes: 2 * FRAME_BYTES_MAX_DEFAULT,
        }
    }
}

/// Who this shard is and whom it talks to.
#[derive(Clone, Debug)]
pub struct LinksConfig {
    pub node_id: u64,
    pub shard: u16,
    pub shard_count: u16,
    /// This process's start time (ns): peers see a restart as a new value.
    pub incarnation: u64,
    /// Empty until known; checked against a peer's only when both are set.
    pub cluster_id: String,
    /// Every other node: its id and its rpc base address (shard k listens on port + k).
    pub peers: Vec<(u64, SocketAddr)>,
    pub limits: RpcLimits,
}

/// The answer to a request, computed by the owner.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Bytes>>>;

/// What the owner of the links does with what arrives. Called on the shard's thread, with
/// no borrow of the links held: a handler may send from inside a call.
pub trait LinkHandler {
    /// Raft messages from `peer`, in the order it sent them, `from`/`to` filled in.
    fn on_raft(&self, peer: u64, messages: Vec<(u64, Message)>);
    /// A request from `peer`; the reply goes back on our link to `peer` when the future
    /// completes, or when that link is up again. A requester must still time out: either
    /// node may restart in between.
    fn on_request(&self, peer: u64, req_id: u64, op: u8, payload: Bytes) -> ReplyFuture;
    /// The reply to a request this shard sent to `peer`.
    fn on_reply(&self, peer: u64, req_id: u64, payload: Bytes);
    /// Leadership news from `peer`.
    fn on_leadership(&self, _peer: u64, _leadership: Leadership) {}
    /// The outbound link to `peer` came up or went down. Down means: Raft messages for it
    /// were and will be dropped until it is up again (report the peer unreachable to its
    /// groups), and requests sent on it will get no reply.
    fn on_link(&self, peer: u64, up: bool);
}

/// Why a message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    UnknownPeer,
    /// The link is not connected.
    LinkDown,
    /// The peer's outbox is over `outbox_bytes_max` (Raft) or `requests_queued_max`.
    OutboxFull,
    /// The message alone would not fit in a frame of `frame_bytes_max`.
    TooLarge,
    Stopped,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::UnknownPeer => "unknown peer",
            SendError::LinkDown => "link down",
            SendError::OutboxFull => "outbox full",
            SendError::TooLarge => "message larger than a frame",
            SendError::Stopped => "links stopped",
        })
    }
}

impl std::error::Error for SendError {}

/// Counters of one link (both directions of the traffic with one peer).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub up: bool,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Raft messages dropped because the outbox was full.
    pub raft_dropped_full: u64,
    /// Raft messages dropped because the link was down (queued or new).
    pub raft_dropped_down: u64,
    /// Raft messages dropped because one alone exceeds a frame.
    pub raft_dropped_too_large: u64,
    /// Requests, replies and leadership frames lost with a link that went down.
    pub control_dropped: u64,
    /// Outbound connections opened after the first one.
    pub reconnects: u64,
    pub connect_failures: u64,
    /// Raft message bytes queued now.
    pub outbox_bytes: u64,
    /// The `seq` of the last frame sent to the peer.
    pub last_seq_sent: u64,
    /// The highest `ack` the peer sent: it had received our frames up to this `seq`.
    pub acked: u64,
    /// The highest `seq` received from the peer (what we ack).
    pub received_seq: u64,
    /// The peer's incarnation, from its last HELLO.
    pub peer_incarnation: Option<u64>,
}

/// Counters of the shard's inbound side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// Connections closed for a bad HELLO or a bad frame.
    pub refused: u64,
    /// Why the last one was closed.
    pub last_refusal: Option<String>,
    /// Inbound connections open now.
    pub open: usize,
    /// Bytes of the inbound budget that frames being read hold now.
    pub budget_bytes_used: usize,
}

#[derive(Default)]
struct Counters {
    frames_sent: Cell<u64>,
    bytes_sent: Cell<u64>,
    frames_received: Cell<u64>,
    bytes_received: Cell<u64>,
    raft_dropped_full: Cell<u64>,
    raft_dropped_down: Cell<u64>,
    raft_dropped_too_large: Cell<u64>,
    control_dropped: Cell<u64>,
    connects: Cell<u64>,
    connect_failures: Cell<u64>,
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get() + by);
}

/// One peer: the outbox the writer drains, and what the inbound side learned.
struct Peer {
    node: u64,
    /// Where this shard dials: the peer's base port + shard (None if that overflows).
    addr: Option<SocketAddr>,
    up: Cell<bool>,
    raft: RefCell<Vec<(u64, Message)>>,
    raft_bytes: Cell<usize>,
    control: RefCell<VecDeque<Body>>,
    /// REQUEST and LEADERSHIP frames in `control` (replies are not limited here).
    requests_queued: Cell<usize>,
    /// Something was queued, or the link changed.
    wake: Notify,
    next_seq: Cell<u64>,
    acked: Cell<u64>,
    received_seq: Cell<u64>,
    incarnation: Cell<Option<u64>>,
    /// The id of the newest inbound connection from this peer; older ones close.
    inbound_conn: Cell<u64>,
    inbound_changed: Notify,
    requests_answering: Cell<usize>,
    requests_answered: Notify,
    counters: Counters,
    /// How long the peer took to answer this shard's Raft heartbeats (see
    /// [`PeerLinks::heartbeat_answered`]).
    heartbeat_rtt: RefCell<crate::metrics::Histogram>,
}

impl Peer {
    fn stats(&self) -> LinkStats {
        let c = &self.counters;
        LinkStats {
            up: self.up.get(),
            frames_sent: c.frames_sent.get(),
            bytes_sent: c.bytes_sent.get(),
            frames_received: c.frames_received.get(),
            bytes_received: c.bytes_received.get(),
            raft_dropped_full: c.raft_dropped_full.get(),
            raft_dropped_down: c.raft_dropped_down.get(),
            raft_dropped_too_large: c.raft_dropped_too_large.get(),
            control_dropped: c.control_dropped.get(),
            reconnects: c.connects.get().saturating_sub(1),
            connect_failures: c.connect_failures.get(),
            outbox_bytes: self.raft_bytes.get() as u64,
            last_seq_sent: self.next_seq.get() - 1,
            acked: self.acked.get(),
            received_seq: self.received_seq.get(),
            peer_incarnation: self.incarnation.get(),
        }
    }

    /// Drops everything queued but replies (the link went down). Replies wait for the
    /// link to come back: the requester's own link to us may be fine all along.
    fn clear_outbox(&self) {
        let raft = std::mem::take(&mut *self.raft.borrow_mut());
        bump(&self.counters.raft_dropped_down, raft.len() as u64);
        self.raft_bytes.set(0);
        let mut control = self.control.borrow_mut();
        let before = control.len();
        control.retain(|body| matches!(body, Body::Reply(_)));
        bump(
            &self.counters.control_dropped,
            (before - control.len()) as u64,
        );
        self.requests_queued.set(0);
    }

    fn replies_queued(&self) -> usize {
        self.control.borrow().len() - self.requests_queued.get()
    }

    fn take_seq(&self) -> u64 {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        seq
    }
}

/// What the tasks share.
struct Shared {
    config: LinksConfig,
    peers: HashMap<u64, Rc<Peer>>,
    handler: Rc<dyn LinkHandler>,
    budget: Rc<RequestBudget>,
    stopped: Cell<bool>,
    stop: Notify,
    inbound_open: Cell<usize>,
    inbound_changed: Notify,
    next_conn: Cell<u64>,
    refused: Cell<u64>,
    last_refusal: RefCell<Option<String>>,
}

impl Shared {
    async fn wait_stop(&self) {
        loop {
            let seen = self.stop.generation();
            if self.stopped.get() {
                return;
            }
            self.stop.wait(seen).await;
        }
    }

    /// `fut`, or `None` once the links stop.
    async fn or_stop<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        futures_lite::future::or(async { Some(fut.await) }, async {
            self.wait_stop().await;
            None
        })
        .await
    }

    fn refuse(&self, addr: &SocketAddr, reason: &str) {
        tracing::warn!(
            shard = self.config.shard,
            peer = %addr,
            "closing inter-node connection: {}",
            one_line(reason)
        );
        bump(&self.refused, 1);
        *self.last_refusal.borrow_mut() = Some(reason.to_string());
    }

    /// Queues a REQUEST or LEADERSHIP frame (`limited`: counted against
    /// `requests_queued_max`, only while the link is up) or a REPLY (queued even while the
    /// link is down, up to [`REPLIES_QUEUED_MAX`]).
    fn queue_control(&self, peer: &Peer, body: Body, limited: bool) -> Result<(), SendError> {
        if self.stopped.get() {
            return Err(SendError::Stopped);
        }
        if limited && !peer.up.get() {
            return Err(SendError::LinkDown);
        }
        if !limited && peer.replies_queued() >= REPLIES_QUEUED_MAX {
            return Err(SendError::OutboxFull);
        }
        if limited {
            if peer.requests_queued.get() >= self.config.limits.requests_queued_max {
                return Err(SendError::OutboxFull);
            }
            peer.requests_queued.set(peer.requests_queued.get() + 1);
        }
        peer.control.borrow_mut().push_back(body);
        peer.wake.notify_all();
        Ok(())
    }
}

/// One shard's links to the same shard of every peer node. Dropping it stops its tasks.
pub struct PeerLinks {
    shared: Rc<Shared>,
    tasks: RefCell<Vec<Task<()>>>,
}

impl PeerLinks {
    /// Starts the accept loop on `listener` (bound to the rpc base port + this shard, by
    /// [`bind`]) and one dialing task per peer. Must run on the shard's executor.
    pub fn start(
        config: LinksConfig,
        listener: std::net::TcpListener,
        handler: Rc<dyn LinkHandler>,
    ) -> io::Result<Rc<PeerLinks>> {
        listener.set_nonblocking(true)?;
        let fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
        // SAFETY: `fd` is a bound, listening TCP socket whose ownership we just took.
        let listener = unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut peers = HashMap::new();
        for &(node, base) in &config.peers {
            let addr = base.port().checked_add(config.shard).map(|port| {
                let mut addr = base;
                addr.set_port(port);
                addr
            });
            if addr.is_none() {
                tracing::error!(
                    shard = config.shard,
                    peer = node,
                    %base,
                    "the peer's rpc port + shard is past 65535; not dialing it"
                );
            }
            peers.insert(
                node,
                Rc::new(Peer {
                    node,
                    addr,
                    up: Cell::new(false),
                    raft: RefCell::new(Vec::new()),
                    raft_bytes: Cell::new(0),
                    control: RefCell::new(VecDeque::new()),
                    requests_queued: Cell::new(0),
                    wake: Notify::default(),
                    next_seq: Cell::new(1),
                    acked: Cell::new(0),
                    received_seq: Cell::new(0),
                    incarnation: Cell::new(None),
                    inbound_conn: Cell::new(0),
                    inbound_changed: Notify::default(),
                    requests_answering: Cell::new(0),
                    requests_answered: Notify::default(),
                    counters: Counters::default(),
                    heartbeat_rtt: RefCell::new(crate::metrics::Histogram::new(
                        crate::metrics::LATENCY_BUCKETS_S,
                    )),
                }),
            );
        }
        let budget = RequestBudget::new(
            config
                .limits
                .inbound_budget_bytes
                .max(config.limits.frame_bytes_max),
        );
        let shared = Rc::new(Shared {
            config,
            peers,
            handler,
            budget,
            stopped: Cell::new(false),
            stop: Notify::default(),
            inbound_open: Cell::new(0),
            inbound_changed: Notify::default(),
            next_conn: Cell::new(1),
            refused: Cell::new(0),
            last_refusal: RefCell::new(None),
        });
        let listener = Listening { listener, fd };
        let mut tasks = vec![glommio::spawn_local(accept_loop(shared.clone(), listener))];
        for peer in shared.peers.values() {
            tasks.push(glommio::spawn_local(dial_loop(
                shared.clone(),
                peer.clone(),
            )));
        }
        Ok(Rc::new(PeerLinks {
            shared,
            tasks: RefCell::new(tasks),
        }))
    }

    pub fn node_id(&self) -> u64 {
        self.shared.config.node_id
    }

    /// Queues `message` of `group` for `peer`. On an error the message is dropped (and
    /// counted): Raft retries; the owner may report the peer unreachable to the group.
    pub fn send_raft(&self, peer: u64, group: u64, message: Message) -> Result<(), SendError> {
        let shared = &self.shared;
        let p = shared.peers.get(&peer).ok_or(SendError::UnknownPeer)?;
        if shared.stopped.get() {
            return Err(SendError::Stopped);
        }
        let bytes = message_bytes_max(&message);
        let limits = &shared.config.limits;
        if RAFT_FRAME_HEAD_MAX + bytes > limits.frame_bytes_max {
            bump(&p.counters.raft_dropped_too_large, 1);
            return Err(SendError::TooLarge);
        }
        if !p.up.get() {
            bump(&p.counters.raft_dropped_down, 1);
            return Err(SendError::LinkDown);
        }
        if p.raft_bytes.get() + bytes > limits.outbox_bytes_max {
            bump(&p.counters.raft_dropped_full, 1);
            return Err(SendError::OutboxFull);
        }
        p.raft_bytes.set(p.raft_bytes.get() + bytes);
        p.raft.borrow_mut().push((group, message));
        p.wake.notify_all();
        Ok(())
    }

    /// Queues a request for `peer`; its reply comes to [`LinkHandler::on_reply`]. Not
    /// dropped while the link stays up.
    pub fn send_request(
        &self,
        peer: u64,
        req_id: u64,
        op: u8,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let p = self.peer(peer)?;
        let body = Body::Request(Request {
            req_id,
            op,
            payload,
        });
        self.shared.queue_control(p, body, true)
    }

    /// Queues leadership news for `peer` (limited like requests).
    pub fn send_leadership(&self, peer: u64, leadership: Leadership) -> Result<(), SendError> {
        let p = self.peer(peer)?;
        self.shared
            .queue_control(p, Body::Leadership(leadership), true)
    }

    fn peer(&self, peer: u64) -> Result<&Rc<Peer>, SendError> {
        self.shared.peers.get(&peer).ok_or(SendError::UnknownPeer)
    }

    pub fn is_up(&self, peer: u64) -> bool {
        self.shared.peers.get(&peer).is_some_and(|p| p.up.get())
    }

    /// The peers this shard links to, by node id.
    pub fn peer_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.shared.peers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn stats(&self, peer: u64) -> Option<LinkStats> {
        self.shared.peers.get(&peer).map(|p| p.stats())
    }

    /// A Raft heartbeat this shard sent to `peer` was answered after `rtt`.
    pub fn heartbeat_answered(&self, peer: u64, rtt: Duration) {
        if let Some(p) = self.shared.peers.get(&peer) {
            p.heartbeat_rtt.borrow_mut().observe(rtt.as_secs_f64());
        }
    }

    /// The peer's heartbeat answer times so far.
    pub fn heartbeat_rtt(&self, peer: u64) -> Option<crate::metrics::Histogram> {
        self.shared
            .peers
            .get(&peer)
            .map(|p| p.heartbeat_rtt.borrow().clone())
    }

    pub fn inbound_stats(&self) -> InboundStats {
        InboundStats {
            refused: self.shared.refused.get(),
            last_refusal: self.shared.last_refusal.borrow().clone(),
            open: self.shared.inbound_open.get(),
            budget_bytes_used: self.shared.budget.used_bytes(),
        }
    }

    /// Stops every task and closes every socket (listener included) before returning.
    pub async fn shutdown(&self) {
        self.shared.stopped.set(true);
        self.shared.stop.notify_all();
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        for task in tasks {
            task.await;
        }
        loop {
            let seen = self.shared.inbound_changed.generation();
            if self.shared.inbound_open.get() == 0 {
                break;
            }
            self.shared.inbound_changed.wait(seen).await;
        }
    }
}

impl Drop for PeerLinks {
    fn drop(&mut self) {
        self.shared.stopped.set(true);
        self.shared.stop.notify_all();
    }
}

/// Binds the listener of `shard`: `base` with port + shard. Waits a little for a port that
/// a previous process still holds, as the client listener does.
pub fn bind(base: SocketAddr, shard: u16) -> io::Result<std::net::TcpListener> {
    let port = base.port().checked_add(shard).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("rpc port {} + shard {shard} is past 65535", base.port()),
        )
    })?;
    let mut addr = base;
    addr.set_port(port);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(err) if err.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// At least the bytes `m` takes in a RAFT frame (every varint counted at its longest).
fn message_bytes_max(m: &Message) -> usize {
    let mut n = 10 + 2 + 9 * 10 + 10 + 10 + m.context.len() + 10;
    for e in m.entries.iter() {
        n += 1 + 10 + 10 + 10 + e.context.len() + 10 + e.data.len();
    }
    if m.has_snapshot() {
        let s = m.get_snapshot();
        let cs = s.get_metadata().get_conf_state();
        let ids = cs.voters.len() + cs.learners.len() + cs.voters_outgoing.len();
        n += 10 + 10 + 4 * 10 + (ids + cs.learners_next.len()) * 10 + 1 + 10 + s.data.len();
    }
    n
}

// ---------------------------------------------------------------------------------------
// Outbound

/// Keeps the connection to `peer` open: dial, HELLO, write what is queued; on loss, mark
/// the link down, drop what is queued, back off and dial again.
async fn dial_loop(shared: Rc<Shared>, peer: Rc<Peer>) {
    let Some(addr) = peer.addr else {
        return;
    };
    let shard = shared.config.shard;
    let mut backoff = Duration::from_millis(RECONNECT_BACKOFF_MIN_MS);
    let mut failures_in_a_row = 0u64;
    while !shared.stopped.get() {
        let connect = timeout(
            Duration::from_millis(CONNECT_TIMEOUT_MS),
            TcpStream::connect(addr),
        );
        let Some(connected) = shared.or_stop(connect).await else {
            return;
        };
        match connected {
            Some(Ok(stream)) => {
                failures_in_a_row = 0;
                backoff = Duration::from_millis(RECONNECT_BACKOFF_MIN_MS);
                let _ = stream.set_nodelay(true);
                bump(&peer.counters.connects, 1);
                let end = serve_outbound(&shared, &peer, stream).await;
                let was_up = peer.up.replace(false);
                peer.clear_outbox();
                peer.wake.notify_all();
                if shared.stopped.get() {
                    return;
                }
                match end {
                    Ok(()) => {}
                    Err(err) => tracing::info!(
                        shard,
                        peer = peer.node,
                        %addr,
                        "link down: {}",
                        one_line(&err.to_string())
                    ),
                }
                if was_up {
                    shared.handler.on_link(peer.node, false);
                }
            }
            failed => {
                bump(&peer.counters.connect_failures, 1);
                failures_in_a_row += 1;
                let why = match failed {
                    Some(Err(err)) => err.to_string(),
                    _ => format!("no answer within {CONNECT_TIMEOUT_MS} ms"),
                };
                // A peer that is down stays quiet in the log after the first lines.
                if failures_in_a_row <= 3 || failures_in_a_row.is_power_of_two() {
                    tracing::debug!(shard, peer = peer.node, %addr, failures_in_a_row, "connect failed: {why}");
                }
            }
        }
        if shared
            .or_stop(glommio::timer::sleep(backoff))
            .await
            .is_none()
        {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_millis(RECONNECT_BACKOFF_MAX_MS));
    }
}

/// Sends HELLO, then what is queued, until the connection fails or the links stop.
async fn serve_outbound(shared: &Shared, peer: &Peer, stream: TcpStream) -> io::Result<()> {
    let socket = Socket::Plain(Rc::new(RefCell::new(stream)));
    let _closing = Closing(socket.clone());
    let config = &shared.config;
    let hello = Body::Hello(Hello {
        cluster_id: config.cluster_id.clone(),
        from_node: config.node_id,
        from_shard: config.shard,
        shard_count: config.shard_count,
        to_node: peer.node,
        incarnation: config.incarnation,
    });
    let pieces = rpc::encode(peer.take_seq(), peer.received_seq.get(), &hello);
    let hello_bytes = total_len(&pieces) as u64;
    // HELLO goes out before the link counts as up, so it is the first frame.
    let sent = shared.or_stop(write_pieces(&socket, &pieces)).await;
    match sent {
        None => return Ok(()),
        Some(result) => result?,
    }
    bump(&peer.counters.frames_sent, 1);
    bump(&peer.counters.bytes_sent, hello_bytes);
    peer.up.set(true);
    tracing::info!(
        shard = config.shard,
        peer = peer.node,
        reconnects = peer.counters.connects.get() - 1,
        "link up"
    );
    shared.handler.on_link(peer.node, true);

    let watch = watch_end(socket.clone());
    let write = write_queued(shared, peer, &socket);
    match shared.or_stop(futures_lite::future::or(watch, write)).await {
        None => Ok(()),
        Some(end) => end,
    }
}

/// The peer never sends on our outbound connection: any read that returns is its end.
async fn watch_end(socket: Socket) -> io::Result<()> {
    let mut reader = Inbound::new(socket);
    let mut buf = [0u8; 64];
    match reader.read(&mut buf).await {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection",
        )),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the peer sent data on a connection only we write to",
        )),
        Err(err) => Err(err),
    }
}

/// Writes whatever is queued for `peer`, as it comes, forever (or until a write fails).
async fn write_queued(shared: &Shared, peer: &Peer, socket: &Socket) -> io::Result<()> {
    let frame_bytes_max = shared.config.limits.frame_bytes_max;
    loop {
        let seen = peer.wake.generation();
        let control = std::mem::take(&mut *peer.control.borrow_mut());
        let raft = std::mem::take(&mut *peer.raft.borrow_mut());
        peer.raft_bytes.set(0);
        peer.requests_queued.set(0);
        if control.is_empty() && raft.is_empty() {
            peer.wake.wait(seen).await;
            continue;
        }
        let mut pieces = Vec::new();
        let mut frames = 0u64;
        for body in &control {
            pieces.extend(rpc::encode(peer.take_seq(), peer.received_seq.get(), body));
            frames += 1;
        }
        let mut batch = RaftBatch::new();
        for (group, message) in &raft {
            let bytes = message_bytes_max(message);
            if !batch.is_empty()
                && batch.frame_bytes() - PREFIX_BYTES + bytes + 10 > frame_bytes_max
            {
                let full = std::mem::take(&mut batch);
                pieces.extend(full.into_frame(peer.take_seq(), peer.received_seq.get()));
                frames += 1;
            }
            batch.push(*group, message);
        }
        if !batch.is_empty() {
            pieces.extend(batch.into_frame(peer.take_seq(), peer.received_seq.get()));
            frames += 1;
        }
        let bytes = total_len(&pieces) as u64;
        write_pieces(socket, &pieces).await?;
        bump(&peer.counters.frames_sent, frames);
        bump(&peer.counters.bytes_sent, bytes);
    }
}

/// Writes `pieces` in order, with vectored sends.
async fn write_pieces(socket: &Socket, pieces: &[Piece]) -> io::Result<()> {
    let (mut index, mut offset) = (0, 0);
    loop {
        while index < pieces.len() && offset == pieces[index].len() {
            index += 1;
            offset = 0;
        }
        if index == pieces.len() {
            return Ok(());
        }
        let mut n = socket.send(&pieces[index..], offset).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = pieces[index].len() - offset;
            if n < left {
                offset += n;
                break;
            }
            n -= left;
            index += 1;
            offset = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inbound

/// The listener, which stops listening as soon as it is dropped.
struct Listening {
    listener: TcpListener,
    fd: std::os::fd::RawFd,
}

impl Drop for Listening {
    fn drop(&mut self) {
        // An accept may still be in flight in the io_uring, holding the socket open after
        // the descriptor is closed: shut it down first, so that it stops listening now.
        // SAFETY: `fd` is the listener's descriptor, open until `self.listener` drops.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
    }
}

/// A connection, shut down (both ways) when dropped, for the same reason as [`Listening`]:
/// the peer sees the end at once, whatever reads or writes are still in flight.
struct Closing(Socket);

impl Drop for Closing {
    fn drop(&mut self) {
        let fd = self.0.fd();
        // SAFETY: the stream (kept alive by the socket we hold) owns `fd`.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

async fn accept_loop(shared: Rc<Shared>, listening: Listening) {
    let listener = &listening.listener;
    let mut backoff = Duration::from_millis(10);
    loop {
        let Some(accepted) = shared.or_stop(listener.accept()).await else {
            return;
        };
        match accepted {
            Ok(stream) => {
                backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                let addr = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                shared.inbound_open.set(shared.inbound_open.get() + 1);
                shared.inbound_changed.notify_all();
                let shared = shared.clone();
                glommio::spawn_local(async move {
                    serve_inbound(&shared, stream, addr).await;
                    shared.inbound_open.set(shared.inbound_open.get() - 1);
                    shared.inbound_changed.notify_all();
                })
                .detach();
            }
            Err(err) => {
                tracing::warn!(shard = shared.config.shard, "rpc accept failed: {err}");
                if shared
                    .or_stop(glommio::timer::sleep(backoff))
                    .await
                    .is_none()
                {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// How an inbound connection ended.
enum End {
    Closed,
    Stopped,
    Replaced,
    Refused(String),
    Io(io::Error),
}

async fn serve_inbound(shared: &Rc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let socket = Socket::Plain(Rc::new(RefCell::new(stream)));
    let _closing = Closing(socket.clone());
    let mut reader = Inbound::new(socket);
    let end = match shared.or_stop(read_inbound(shared, &mut reader)).await {
        None => End::Stopped,
        Some(end) => end,
    };
    match end {
        End::Refused(reason) => shared.refuse(&addr, &reason),
        End::Io(err) => {
            tracing::info!(shard = shared.config.shard, peer = %addr, "inter-node connection failed: {err}")
        }
        End::Replaced => tracing::debug!(
            shard = shared.config.shard,
            peer = %addr,
            "inter-node connection replaced by a newer one"
        ),
        End::Closed | End::Stopped => {}
    }
}

/// The checks of a HELLO; the peer on success.
fn check_hello(shared: &Shared, hello: &Hello) -> Result<Rc<Peer>, String> {
    let config = &shared.config;
    if hello.to_node != config.node_id {
        return Err(format!(
            "HELLO is for node {}, this is node {}",
            hello.to_node, config.node_id
        ));
    }
    if hello.shard_count != config.shard_count {
        return Err(format!(
            "HELLO from node {} says shard count {}, this node has {}",
            hello.from_node, hello.shard_count, config.shard_count
        ));
    }
    if hello.from_shard != config.shard {
        return Err(format!(
            "HELLO from shard {} of node {} reached shard {}",
            hello.from_shard, hello.from_node, config.shard
        ));
    }
    if !hello.cluster_id.is_empty()
        && !config.cluster_id.is_empty()
        && hello.cluster_id != config.cluster_id
    {
        return Err(format!(
            "HELLO from node {} is for cluster {:?}, this is cluster {:?}",
            hello.from_node, hello.cluster_id, config.cluster_id
        ));
    }
    shared
        .peers
        .get(&hello.from_node)
        .cloned()
        .ok_or_else(|| format!("HELLO from node {}, which is not a peer", hello.from_node))
}

async fn read_inbound(shared: &Rc<Shared>, reader: &mut Inbound) -> End {
    let max = shared.config.limits.frame_bytes_max;
    let hello_wait = Duration::from_millis(HELLO_TIMEOUT_MS);
    let (frame, held) = match read_frame(reader, &shared.budget, max, Some(hello_wait)).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return End::Closed,
        Err(end) => return end,
    };
    let frame_len = frame.len() as u64;
    let hello = match rpc::decode(frame, None) {
        Ok(rpc::Frame {
            seq,
            body: Body::Hello(hello),
            ..
        }) => (seq, hello),
        Ok(other) => {
            return End::Refused(format!(
                "the first frame is {:?}, not HELLO",
                other.body.kind()
            ))
        }
        Err(err) => return End::Refused(format!("undecodable HELLO: {err}")),
    };
    drop(held);
    let (seq, hello) = hello;
    let peer = match check_hello(shared, &hello) {
        Ok(peer) => peer,
        Err(reason) => return End::Refused(reason),
    };
    let conn = shared.next_conn.get();
    shared.next_conn.set(conn + 1);
    peer.inbound_conn.set(conn);
    peer.inbound_changed.notify_all();
    if peer.incarnation.get() != Some(hello.incarnation) {
        if peer.incarnation.get().is_some() {
            tracing::info!(
                shard = shared.config.shard,
                peer = peer.node,
                incarnation = hello.incarnation,
                "peer restarted"
            );
        }
        peer.incarnation.set(Some(hello.incarnation));
        // Its frames are numbered anew.
        peer.received_seq.set(0);
        peer.acked.set(0);
    }
    peer.received_seq.set(peer.received_seq.get().max(seq));
    bump(&peer.counters.frames_received, 1);
    bump(
        &peer.counters.bytes_received,
        frame_len + PREFIX_BYTES as u64,
    );
    let link = Link {
        from: peer.node,
        to: shared.config.node_id,
    };

    loop {
        let seen = peer.inbound_changed.generation();
        if peer.inbound_conn.get() != conn {
            return End::Replaced;
        }
        let next = futures_lite::future::or(
            async { Some(read_frame(reader, &shared.budget, max, None).await) },
            async {
                peer.inbound_changed.wait(seen).await;
                None
            },
        )
        .await;
        let (frame, held) = match next {
            None => continue,
            Some(Ok(Some(frame))) => frame,
            Some(Ok(None)) => return End::Closed,
            Some(Err(end)) => return end,
        };
        let frame_len = frame.len() as u64;
        let frame = match rpc::decode(frame, Some(link)) {
            Ok(frame) => frame,
            Err(err) => {
                return End::Refused(format!("undecodable frame from node {}: {err}", peer.node))
            }
        };
        bump(&peer.counters.frames_received, 1);
        bump(
            &peer.counters.bytes_received,
            frame_len + PREFIX_BYTES as u64,
        );
        peer.received_seq
            .set(peer.received_seq.get().max(frame.seq));
        peer.acked.set(peer.acked.get().max(frame.ack));
        match frame.body {
            Body::Raft(messages) => shared.handler.on_raft(peer.node, messages),
            Body::Request(request) => {
                while peer.requests_answering.get() >= INBOUND_REQUESTS_MAX {
                    let seen = peer.requests_answered.generation();
                    if peer.requests_answering.get() < INBOUND_REQUESTS_MAX {
                        break;
                    }
                    peer.requests_answered.wait(seen).await;
                }
                answer(shared, &peer, request);
            }
            Body::Reply(reply) => shared
                .handler
                .on_reply(peer.node, reply.req_id, reply.payload),
            Body::Leadership(leadership) => shared.handler.on_leadership(peer.node, leadership),
            Body::Hello(_) => {
                return End::Refused(format!("a second HELLO from node {}", peer.node))
            }
        }
        drop(held);
    }
}

/// Runs the owner's answer to `request` and queues the reply on our link to the peer.
fn answer(shared: &Rc<Shared>, peer: &Rc<Peer>, request: Request) {
    let reply = shared
        .handler
        .on_request(peer.node, request.req_id, request.op, request.payload);
    peer.requests_answering
        .set(peer.requests_answering.get() + 1);
    let shared = shared.clone();
    let peer = peer.clone();
    glommio::spawn_local(async move {
        let payload = shared.or_stop(reply).await;
        peer.requests_answering
            .set(peer.requests_answering.get() - 1);
        peer.requests_answered.notify_all();
        let Some(payload) = payload else {
            return;
        };
        let body = Body::Reply(Reply {
            req_id: request.req_id,
            payload,
        });
        if shared.queue_control(&peer, body, false).is_err() {
            // The requester fails the request when its link to us goes down.
            bump(&peer.counters.control_dropped, 1);
        }
    })
    .detach();
}

/// `fut`, given [`STALL_CHECK_MS`] at a time up to [`FRAME_STALL_TIMEOUT_MS`] in all.
async fn within_stall<T>(fut: impl Future<Output = T>) -> Option<T> {
    within(Duration::from_millis(FRAME_STALL_TIMEOUT_MS), fut).await
}

/// `fut` if it completes within `stall`, checked with re-armed short timers.
async fn within<T>(stall: Duration, fut: impl Future<Output = T>) -> Option<T> {
    let since = Instant::now();
    let mut fut = pin!(fut);
    loop {
        if let Some(done) = timeout(Duration::from_millis(STALL_CHECK_MS), fut.as_mut()).await {
            return Some(done);
        }
        if since.elapsed() >= stall {
            return None;
        }
    }
}

/// Reads one frame (without its prefix, as `rpc::decode` takes it), reserving its bytes
/// from `budget` as they arrive. `Ok(None)` on a clean end of stream between frames.
/// `first_wait` bounds the wait for the frame's first byte (HELLO); otherwise a peer may
/// be quiet between frames as long as it likes.
async fn read_frame(
    reader: &mut Inbound,
    budget: &Rc<RequestBudget>,
    frame_bytes_max: usize,
    first_wait: Option<Duration>,
) -> Result<Option<(Bytes, Reservation)>, End> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let first = match first_wait {
        None => reader.read(&mut prefix).await,
        Some(wait) => match within(wait, reader.read(&mut prefix)).await {
            Some(read) => read,
            None => {
                return Err(End::Refused(format!(
                    "no HELLO within {} ms",
                    wait.as_millis()
                )))
            }
        },
    };
    let mut filled = match first {
        Ok(0) => return Ok(None),
        Ok(n) => n,
        Err(err) => return Err(End::Io(err)),
    };
    while filled < PREFIX_BYTES {
        match within_stall(reader.read(&mut prefix[filled..])).await {
            None => return Err(End::Refused("a frame's length prefix stalled".into())),
            Some(Ok(0)) => return Err(End::Refused("closed inside a length prefix".into())),
            Some(Ok(n)) => filled += n,
            Some(Err(err)) => return Err(End::Io(err)),
        }
    }
    let len = rpc::frame_len(prefix, frame_bytes_max).map_err(|e| End::Refused(e.to_string()))?;
    if len > budget.capacity_bytes() {
        return Err(End::Refused(format!(
            "a {len}-byte frame is larger than the inbound budget of {} bytes",
            budget.capacity_bytes()
        )));
    }
    let mut held = budget.start_frame();
    // Not zero-filled first: the socket's bytes are the first ones written to it.
    let mut frame: Vec<u8> = Vec::new();
    if len <= FRAME_ALLOCATE_AHEAD_MAX {
        let _ = frame.try_reserve_exact(len);
    }
    while frame.len() < len {
        let start = frame.len();
        let step = (len - start)
            .min(start.max(FRAME_FIRST_CHUNK_BYTES))
            .min(FRAME_RESERVE_AHEAD_BYTES);
        if within_stall(budget.grow(&mut held, step)).await.is_none() {
            return Err(End::Refused(format!(
                "no inbound budget for a {len}-byte frame within {FRAME_STALL_TIMEOUT_MS} ms"
            )));
        }
        let end = start + step;
        frame.reserve_exact(end - start);
        while frame.len() < end {
            match within_stall(reader.read_into(&mut frame, end)).await {
                None => {
                    return Err(End::Refused(format!(
                        "a {len}-byte frame stalled after {} bytes",
                        frame.len()
                    )))
                }
                Some(Ok(0)) => {
                    return Err(End::Refused(format!(
                        "closed inside a {len}-byte frame, after {} bytes",
                        frame.len()
                    )))
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(End::Io(err)),
            }
        }
    }
    Ok(Some((Bytes::from(frame), held)))
}
