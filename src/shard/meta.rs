//! The cluster's metadata: one Raft group (group 0) over shard 0 of every member node,
//! whose log holds the controller's records (KRaft's `__cluster_metadata` in spirit).
//!
//! - **The log** is a replicated partition log in `data/cluster/raft/`: one entry per
//!   change, a Kafka record batch whose records are the [`MetaRecord`]s in JSON
//!   ([`metadata_log::encode_batch`]). Its high watermark is the commit.
//! - **The driver** ([`MetaGroup::spawn_driver`]) is the only task touching the group's
//!   [`Replica`]: it ticks the Raft clock (every `--raft-tick-ms`; a late timer — after a
//!   stall or SIGSTOP — counts every tick that passed, up to two election timeouts, so a
//!   paused leader does not believe itself current), steps what peers sent, takes
//!   proposals, sends, and makes placed entries durable before what waits on them leaves.
//! - **The applier** ([`apply_loop`]) reads what is committed, in order, applies it to the
//!   [`Controller`] and publishes the new snapshot to every shard of the node; so every
//!   node serves the same metadata, each at its own pace.
//! - **Changes** (CreateTopics, …) are planned by the leader's controller against fully
//!   applied state, proposed, and answered once applied here. Another node's shard 0
//!   forwards the request to the leader (a REQUEST frame) and answers its client once its
//!   own applier has reached the leader's applied offset, so a client that creates a
//!   topic through any node sees it there at once. With no leader, or no answer within
//!   `--metadata-request-timeout-ms`, the client gets NOT_CONTROLLER (retriable).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::raft_group::{Clock, PeerTransport, RaftGroup};
use super::replica::{Replica, ReplicaTiming};
use super::Shard;
use crate::cluster::controller::MetaCommit;
use crate::cluster::controller::{CommitResult, ControlReply, ControlRequest, Controller};
use crate::cluster::metadata_log::{self, MetaRecord};
use crate::cluster::NodeId;
use crate::config::Config;
use crate::protocol::errors::NOT_CONTROLLER;
use crate::storage::log::LogConfig;
use crate::util::{timeout, Notify};

/// The Raft clock of a node's groups, from its flags.
pub fn raft_clock(config: &Config) -> Clock {
    Clock {
        tick: Duration::from_millis(config.raft_tick_ms),
        election_ticks: config.raft_election_ticks,
        lag_max: Duration::from_millis(config.replica_lag_time_max_ms),
    }
}

/// The metadata group's id on the inter-node links.
pub const METADATA_GROUP: u64 = 0;
/// REQUEST op: a metadata change forwarded to the leader (JSON [`ControlRequest`]).
pub const OP_CONTROL_FORWARD: u8 = 1;
/// Segment size of the metadata log (it holds small records; never deleted).
const META_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Recent metadata entries kept in memory (followers catching up read from here).
const META_CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Bytes the applier reads at once.
const APPLY_READ_BYTES: usize = 1024 * 1024;

/// The leader's answer to a forwarded change: the reply, and how far its applier had
/// got (the forwarding node answers once its own applier is there too).
#[derive(Serialize, Deserialize)]
pub struct ForwardReply {
    pub reply: ControlReply,
    pub applied: i64,
}

pub struct MetaGroup {
    node: u64,
    config: Arc<Config>,
    group: Rc<RaftGroup>,
    /// Peers whose link is up.
    live: RefCell<BTreeSet<u64>>,
    /// The offset up to which the controller has applied the log.
    applied: Cell<i64>,
    applied_changed: Notify,
    transport: RefCell<Option<Rc<dyn PeerTransport>>>,
    /// Forwarded requests waiting for the leader's reply: id → (peer, reply slot).
    pending: RefCell<HashMap<u64, (u64, futures_channel::oneshot::Sender<Bytes>)>>,
    next_req: Cell<u64>,
    /// The leader handles one change at a time.
    turn: glommio::sync::Semaphore,
    /// This process's start (ns): tokens of requests stay unique across restarts.
    incarnation: u128,
}

impl MetaGroup {
    /// Opens the group's log and Raft state in `dir` (creating them on first start).
    pub async fn open(
        dir: &Path,
        config: Arc<Config>,
        node: u64,
        members: &[u64],
    ) -> io::Result<Rc<MetaGroup>> {
        std::fs::create_dir_all(dir)?;
        let log_config = LogConfig {
            segment_bytes: META_SEGMENT_BYTES,
            cache_bytes: META_CACHE_BYTES,
            ..LogConfig::default()
        };
        let timing = ReplicaTiming {
            election_ticks: config.raft_election_ticks as usize,
            heartbeat_ticks: 1,
        };
        let replica = Replica::open(dir, log_config, node, members, &timing).await?;
        let group = RaftGroup::new(METADATA_GROUP, node, raft_clock(&config), replica);
        Ok(Rc::new(MetaGroup {
            node,
            config,
            group,
            live: RefCell::new(BTreeSet::new()),
            applied: Cell::new(0),
            applied_changed: Notify::default(),
            transport: RefCell::new(None),
            pending: RefCell::new(HashMap::new()),
            next_req: Cell::new(1),
            turn: glommio::sync::Semaphore::new(1),
            incarnation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        }))
    }

    pub fn raft(&self) -> &Rc<RaftGroup> {
        &self.group
    }

    pub fn set_transport(&self, transport: Rc<dyn PeerTransport>) {
        self.group.set_transport(transport.clone());
        *self.transport.borrow_mut() = Some(transport);
    }

    /// The leader's node id as last seen, if any.
    pub fn leader(&self) -> Option<NodeId> {
        match self.group.leader() {
            0 => None,
            id => i32::try_from(id).ok().map(NodeId),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.group.leader() == self.node && self.group.is_leader()
    }

    pub fn applied(&self) -> i64 {
        self.applied.get()
    }

    fn log(&self) -> &Rc<RefCell<crate::storage::log::PartitionLog>> {
        self.group.log()
    }

    /// The link to `peer` is up: it counts as live.
    pub fn peer_up(&self, peer: u64) {
        if self.live.borrow_mut().insert(peer) {
            self.group.changed.notify_all();
        }
    }

    /// The peers this node reaches now (its links to them are up), itself included.
    pub fn live(&self) -> BTreeSet<NodeId> {
        let mut live: BTreeSet<NodeId> = self
            .live
            .borrow()
            .iter()
            .filter_map(|&id| i32::try_from(id).ok().map(NodeId))
            .collect();
        if let Ok(node) = i32::try_from(self.node) {
            live.insert(NodeId(node));
        }
        live
    }

    /// The link to `peer` went down: it no longer counts as live, and the replies to
    /// what was forwarded to it are lost.
    pub fn peer_down(&self, peer: u64) {
        if self.live.borrow_mut().remove(&peer) {
            self.group.changed.notify_all();
        }
        self.pending.borrow_mut().retain(|_, (to, _)| *to != peer);
    }

    /// The leader's reply to a forwarded request.
    pub fn reply(&self, req_id: u64, payload: Bytes) {
        if let Some((_, slot)) = self.pending.borrow_mut().remove(&req_id) {
            let _ = slot.send(payload);
        }
    }

    fn stopping(&self) -> bool {
        self.group.is_stopping()
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.metadata_request_timeout_ms)
    }

    /// Proposes records and waits until they are committed and applied here.
    async fn commit_records(&self, records: Vec<MetaRecord>) -> CommitResult {
        let not_controller = |why: &str| Err((NOT_CONTROLLER, why.to_string()));
        if !self.is_leader() {
            return not_controller("this node no longer leads the metadata group");
        }
        let data = Bytes::from(metadata_log::encode_batch(&records, crate::util::now_ms()));
        let (index, term) = match self.group.propose(data) {
            Ok(placed) => placed,
            Err(_) => return not_controller("the metadata group did not take the change"),
        };
        let deadline = Instant::now() + self.request_timeout();
        loop {
            let seen_changed = self.group.changed.generation();
            let seen_applied = self.applied_changed.generation();
            let state = {
                let log = self.log().borrow();
                log.raft().map(|tail| {
                    (
                        tail.committed() >= index,
                        tail.term(index),
                        tail.offsets(index).map(|(_, next)| next),
                    )
                })
            };
            match state {
                Some((true, Some(t), Some(next))) if t == term && self.applied.get() >= next => {
                    return Ok(());
                }
                Some((true, Some(t), Some(_))) if t == term => {}
                Some((_, Some(t), _)) if t != term => {
                    return not_controller("leadership changed before the change committed")
                }
                Some((_, None, _)) if self.group.term() != term => {
                    return not_controller("leadership changed before the change committed")
                }
                _ => {}
            }
            if self.stopping() {
                return not_controller("the node is stopping");
            }
            if !self
                .wait_progress(seen_changed, seen_applied, deadline)
                .await
            {
                return not_controller("the metadata group did not commit the change in time");
            }
        }
    }

    /// Waits until leadership, the commit or the applier moves (since the generations
    /// seen); false once `deadline` has passed.
    async fn wait_progress(&self, seen_changed: u64, seen_applied: u64, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = timeout(
            left,
            futures_lite::future::or(
                self.group.changed.wait(seen_changed),
                self.applied_changed.wait(seen_applied),
            ),
        )
        .await;
        true
    }

    /// Waits until this leader has applied everything committed before its term (its
    /// first entry is committed and applied): only then does it plan changes.
    async fn wait_leader_ready(&self) -> bool {
        let deadline = Instant::now() + self.request_timeout();
        loop {
            let seen_changed = self.group.changed.generation();
            let seen_applied = self.applied_changed.generation();
            if !self.is_leader() || self.stopping() {
                return false;
            }
            let ready = {
                let log = self.log().borrow();
                let hw = log.high_watermark();
                log.raft().is_some_and(|tail| {
                    tail.term(tail.committed()) == Some(self.group.term())
                        && self.applied.get() >= hw
                })
            };
            if ready {
                return true;
            }
            if !self
                .wait_progress(seen_changed, seen_applied, deadline)
                .await
            {
                return false;
            }
        }
    }

    /// Waits for a leader to be known (true) or the deadline.
    async fn wait_for_leader(&self, deadline: Instant) -> bool {
        loop {
            let seen = self.group.changed.generation();
            if self.group.leader() != 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stopping() {
                return false;
            }
            let _ = timeout(left, self.group.changed.wait(seen)).await;
        }
    }

    /// Resolves once the group's leader is no longer `leader`.
    async fn leader_moved_from(&self, leader: u64) {
        loop {
            let seen = self.group.changed.generation();
            if self.group.leader() != leader || self.stopping() {
                return;
            }
            self.group.changed.wait(seen).await;
        }
    }

    /// Sends a change to the leader and waits for its reply, then for this node's
    /// applier to catch up with it.
    async fn forward(&self, request: &ControlRequest, deadline: Instant) -> Option<ControlReply> {
        let leader = self.group.leader();
        let transport = self.transport.borrow().clone()?;
        let payload = Bytes::from(serde_json::to_vec(request).ok()?);
        let req_id = self.next_req.get();
        self.next_req.set(req_id + 1);
        let (tx, rx) = futures_channel::oneshot::channel();
        self.pending.borrow_mut().insert(req_id, (leader, tx));
        if !transport.send_request(leader, req_id, OP_CONTROL_FORWARD, payload) {
            self.pending.borrow_mut().remove(&req_id);
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // A new leader makes the request go to it instead (the old one refuses what it
        // gets once it knows it no longer leads).
        let answer = timeout(
            left,
            futures_lite::future::or(async { rx.await.ok() }, async {
                self.leader_moved_from(leader).await;
                None
            }),
        )
        .await;
        self.pending.borrow_mut().remove(&req_id);
        let bytes = answer??;
        let forwarded: ForwardReply = match serde_json::from_slice(&bytes) {
            Ok(reply) => reply,
            Err(err) => {
                tracing::warn!(%err, leader, "metadata group: unreadable reply to a forwarded change");
                return None;
            }
        };
        // Answer once this node serves what the leader had applied.
        loop {
            let seen = self.applied_changed.generation();
            if self.applied.get() >= forwarded.applied || self.stopping() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = timeout(left, self.applied_changed.wait(seen)).await;
        }
        Some(forwarded.reply)
    }

    /// Handles a change asked on this node: planned and proposed here when this node
    /// leads, forwarded to the leader otherwise (unless it was itself forwarded: a
    /// change travels one hop at most).
    pub async fn serve(
        &self,
        controller: &Controller,
        mut request: ControlRequest,
        forwarded: bool,
    ) -> ControlReply {
        let deadline = Instant::now() + self.request_timeout();
        if !forwarded {
            // Every attempt of this request carries the same token (see TopicSpec::token).
            if let ControlRequest::CreateTopics { topics, .. } = &mut request {
                let token = format!("{}-{}-{}", self.node, self.incarnation, self.next_req.get());
                self.next_req.set(self.next_req.get() + 1);
                for spec in topics.iter_mut() {
                    spec.token = Some(token.clone());
                }
            }
        }
        loop {
            if self.is_leader() {
                if !self.wait_leader_ready().await {
                    return request.failed(NOT_CONTROLLER, "the metadata leader is not ready");
                }
                // Changes are planned and committed one at a time, in arrival order
                // (forwards to another node wait on their own, outside this turn).
                let _turn = self.turn.acquire_permit(1).await;
                if !self.is_leader() {
                    continue;
                }
                return controller.handle(request).await.0;
            }
            if forwarded {
                return request
                    .failed(NOT_CONTROLLER, "this node does not lead the metadata group");
            }
            if !self.wait_for_leader(deadline).await {
                return request.failed(NOT_CONTROLLER, "the metadata group has no leader");
            }
            if self.is_leader() {
                continue;
            }
            if let Some(reply) = self.forward(&request, deadline).await {
                return reply;
            }
            if Instant::now() >= deadline {
                return request
                    .failed(NOT_CONTROLLER, "the metadata leader did not answer in time");
            }
            // The leader went away under the request: ask the next one.
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The controller's path into the group.
pub struct MetaCommitter(pub Rc<MetaGroup>);

impl MetaCommit for MetaCommitter {
    fn commit(&self, records: Vec<MetaRecord>) -> Pin<Box<dyn Future<Output = CommitResult>>> {
        let group = self.0.clone();
        Box::pin(async move { group.commit_records(records).await })
    }
}

/// Applies what the group commits to the controller, in order, and publishes each new
/// state to the node's shards; also publishes leadership changes. Runs until shutdown.
pub(super) async fn apply_loop(shard: Rc<Shard>, group: Rc<MetaGroup>, controller: Rc<Controller>) {
    loop {
        let seen = group.group.changed.generation();
        let mut changed = controller.set_leader(group.leader());
        changed |= controller.set_live(group.live());
        let mut applied = group.applied.get();
        loop {
            let plan = group.log().borrow().read_plan(applied, APPLY_READ_BYTES);
            let data = match plan {
                Ok(plan) => match plan.read().await {
                    Ok(data) => data,
                    Err(err) => {
                        tracing::error!(%err, applied, "metadata group: cannot read the log");
                        break;
                    }
                },
                Err(err) => {
                    tracing::error!(?err, applied, "metadata group: cannot read the log");
                    break;
                }
            };
            let bytes = data.to_bytes();
            if bytes.is_empty() {
                break;
            }
            let before = applied;
            for item in crate::protocol::batch::iter_batches(&bytes) {
                let Ok((at, info)) = item else { break };
                if info.last_offset() < applied {
                    continue;
                }
                match metadata_log::decode_batch(&bytes[at..at + info.len]) {
                    Ok(records) => changed |= controller.apply_committed(records),
                    Err(err) => {
                        tracing::error!(%err, "metadata group: a committed entry is unreadable; skipped")
                    }
                }
                applied = info.last_offset() + 1;
            }
            if applied == before {
                break;
            }
        }
        if changed {
            shard.publish(controller.snapshot()).await;
        }
        if applied != group.applied.get() {
            group.applied.set(applied);
            group.applied_changed.notify_all();
        }
        if shard.shutting_down.get() || group.stopping() {
            return;
        }
        let _ = futures_lite::future::or(
            group.group.changed.wait(seen),
            shard.shutdown.wait(shard.shutdown.generation()),
        )
        .await;
    }
}
