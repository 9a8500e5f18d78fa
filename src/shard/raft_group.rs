//! One Raft group on a shard — the cluster's metadata group or a replicated partition —
//! and the task that drives it.
//!
//! The group's [`Replica`] sits in a `RefCell` that is borrowed only synchronously: the
//! produce path proposes a batch straight away (so pipelined requests keep their order),
//! and the driver task does everything else — ticks the Raft clock every
//! `--raft-tick-ms` (a late timer, after a stall or SIGSTOP, counts every tick that
//! passed, up to two election timeouts, so a paused leader does not think itself
//! current), steps what peers sent, sends, and runs persist rounds and disk reads without
//! holding the borrow across an await.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::Message;

use super::replica::{read_entries, ProposeError, Proposed, Replica};
use crate::protocol::batch::BatchInfo;
use crate::storage::log::PartitionLog;
use crate::util::{timeout, Notify};

/// How a shard reaches the same shard of its peers (its inter-node links).
pub trait PeerTransport {
    /// Queues a Raft message; false if it was dropped (the link is down or full).
    fn send_raft(&self, peer: u64, group: u64, message: Message) -> bool;
    /// Queues a request; false if it could not be queued.
    fn send_request(&self, peer: u64, req_id: u64, op: u8, payload: Bytes) -> bool;
    /// Whether the link to `peer` is up now.
    fn is_up(&self, peer: u64) -> bool;
    /// A Raft heartbeat sent to `peer` was answered after `rtt` (for metrics).
    fn heartbeat_answered(&self, _peer: u64, _rtt: Duration) {}
    /// Each peer's link as its counters stand (for metrics).
    fn traffic(&self) -> Vec<crate::metrics::PeerTraffic> {
        Vec::new()
    }
}

/// The Raft clock of a shard's groups.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub tick: Duration,
    pub election_ticks: u64,
    /// A follower not caught up within this long is out of sync (`replica.lag.time.max.ms`).
    pub lag_max: Duration,
}

/// The leader's record of its followers' replication, Kafka's way: a follower is in sync
/// while its link is up and it had, within `lag_max`, everything the leader had one tick
/// before.
#[derive(Default)]
struct InSync {
    /// The term this record is for (0: not leading).
    term: u64,
    /// The leader's last index at the previous tick.
    mark: u64,
    /// When each voter was last caught up with `mark`.
    caught_up: HashMap<u64, Instant>,
}

pub struct RaftGroup {
    pub id: u64,
    node: u64,
    clock: Clock,
    replica: RefCell<Replica>,
    /// The group's log (the replica's).
    log: Rc<RefCell<PartitionLog>>,
    inbox: RefCell<Vec<Message>>,
    unreachable: RefCell<Vec<u64>>,
    /// Wakes the driver.
    wake: Notify,
    /// The leader as the driver last saw it (0: none), and the term.
    leader: Cell<u64>,
    term: Cell<u64>,
    /// Leadership or the high watermark moved.
    pub changed: Notify,
    transport: RefCell<Option<Rc<dyn PeerTransport>>>,
    stopping: Cell<bool>,
    stopped: Notify,
    running: Cell<bool>,
    in_sync: RefCell<InSync>,
    /// The in-sync replicas as last computed by the driver (it signals `changed` when
    /// they change).
    last_in_sync: RefCell<Vec<u64>>,
    /// When a read last asked for the read lease (see [`Self::read_lease`]): the driver
    /// renews it every tick for [`LEASE_WANTED_FOR`] after.
    lease_wanted: Cell<Option<Instant>>,
    /// When the oldest unanswered heartbeat to each peer left (inter-node latency).
    heartbeats: RefCell<HashMap<u64, Instant>>,
    last_renewal: Cell<Option<Instant>>,
    /// Ticks withheld from the replica until a leader is known (see
    /// [`Self::hold_first_election`]).
    held_ticks: Cell<u64>,
}

/// How long after the last read that wanted it the driver keeps renewing the read lease.
const LEASE_WANTED_FOR: Duration = Duration::from_secs(10);

impl RaftGroup {
    pub fn new(id: u64, node: u64, clock: Clock, replica: Replica) -> Rc<RaftGroup> {
        Rc::new(RaftGroup {
            id,
            node,
            clock,
            log: replica.log().clone(),
            leader: Cell::new(0),
            term: Cell::new(replica.term()),
            replica: RefCell::new(replica),
            inbox: RefCell::new(Vec::new()),
            unreachable: RefCell::new(Vec::new()),
            wake: Notify::default(),
            changed: Notify::default(),
            transport: RefCell::new(None),
            stopping: Cell::new(false),
            stopped: Notify::default(),
            running: Cell::new(false),
            in_sync: RefCell::new(InSync::default()),
            last_in_sync: RefCell::new(Vec::new()),
            lease_wanted: Cell::new(None),
            heartbeats: RefCell::new(HashMap::new()),
            last_renewal: Cell::new(None),
            held_ticks: Cell::new(0),
        })
    }

    pub fn log(&self) -> &Rc<RefCell<PartitionLog>> {
        &self.log
    }

    pub fn set_transport(&self, transport: Rc<dyn PeerTransport>) {
        *self.transport.borrow_mut() = Some(transport);
    }

    /// The leader's node id as last seen (0: none).
    pub fn leader(&self) -> u64 {
        self.leader.get()
    }

    pub fn term(&self) -> u64 {
        self.term.get()
    }

    /// The current Raft term as raft-rs has it (the partition's leader epoch).
    pub fn current_term(&self) -> u64 {
        self.replica.borrow().term()
    }

    /// Whether this replica leads now (asked of raft-rs, not of the last driver pass).
    pub fn is_leader(&self) -> bool {
        self.replica.borrow().is_leader()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// How long a read lease lasts from the moment its heartbeat left: half an election
    /// timeout. A follower that answered that heartbeat votes for no one else for a
    /// whole election timeout after it arrived (raft-rs's leader lease, `check_quorum`),
    /// so no other leader can be elected, nor anything committed without this replica,
    /// until then.
    fn lease_duration(&self) -> Duration {
        self.election_timeout() / 2
    }

    /// Whether this replica leads and holds the read lease: a majority of the voters
    /// answered a heartbeat it sent, in its current term, less than a lease duration ago.
    pub fn holds_read_lease(&self) -> bool {
        let replica = self.replica.borrow();
        if !replica.is_leader() {
            return false;
        }
        if replica.voter_count() <= 1 {
            return true;
        }
        replica.lease().is_some_and(|(term, sent)| {
            term == replica.term() && sent.elapsed() < self.lease_duration()
        })
    }

    /// Whether this replica may serve a read as the leader: it holds the read lease, or
    /// renews it within three ticks (a heartbeat round trip to a majority). A leader cut
    /// off from the others serves nothing once its lease ran out, before it steps down.
    pub async fn read_lease(&self) -> bool {
        let wait = self.clock.tick * 3;
        self.lease_wanted.set(Some(Instant::now()));
        if self.holds_read_lease() {
            return true;
        }
        if !self.is_leader() {
            return false;
        }
        self.wake.notify_all();
        let deadline = Instant::now() + wait;
        loop {
            let seen = self.changed.generation();
            if self.holds_read_lease() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.is_leader() || self.stopping.get() {
                return false;
            }
            let _ = timeout(left, self.changed.wait(seen)).await;
        }
    }

    /// Starts a lease renewal if a read wanted the lease lately and none started this
    /// tick.
    fn renew_lease(&self) {
        let now = Instant::now();
        let wanted = self
            .lease_wanted
            .get()
            .is_some_and(|at| now.duration_since(at) < LEASE_WANTED_FOR);
        let due = self
            .last_renewal
            .get()
            .is_none_or(|at| now.duration_since(at) >= self.clock.tick);
        if !wanted || !due {
            return;
        }
        let mut replica = self.replica.borrow_mut();
        if !replica.is_leader() || replica.voter_count() <= 1 {
            return;
        }
        self.last_renewal.set(Some(now));
        if let Err(err) = replica.renew_lease() {
            tracing::warn!(group = self.id, %err, "cannot renew the read lease");
        }
    }

    /// Raft messages from a peer, stepped by the driver.
    pub fn deliver(&self, messages: impl IntoIterator<Item = Message>) {
        self.inbox.borrow_mut().extend(messages);
        self.wake.notify_all();
    }

    /// Messages to `peer` were lost (its link went down).
    pub fn unreachable(&self, peer: u64) {
        self.unreachable.borrow_mut().push(peer);
        self.wake.notify_all();
    }

    /// Delays this replica's first election timeout by `ticks` (released as soon as a
    /// leader is known): the other replicas of a new partition leave its preferred
    /// replica, which stands at once and again after its own timeout, time to win.
    pub fn hold_first_election(&self, ticks: u64) {
        self.held_ticks.set(ticks);
    }

    /// Starts an election now (the preferred replica of a new partition).
    pub fn campaign(&self) {
        if let Err(err) = self.replica.borrow_mut().campaign() {
            tracing::warn!(group = self.id, %err, "cannot start an election");
        }
        self.wake.notify_all();
    }

    /// Asks for the leadership to move to this replica (see
    /// [`Replica::transfer_leadership`]); see [`Self::leader`] for the outcome.
    pub fn request_leadership(&self) {
        let mut replica = self.replica.borrow_mut();
        if replica.is_leader() {
            return;
        }
        if let Err(err) = replica.transfer_leadership(self.node) {
            tracing::warn!(group = self.id, %err, "cannot ask for the leadership");
        }
        drop(replica);
        self.wake.notify_all();
    }

    /// A leader hands its leadership to the in-sync follower furthest along; false if
    /// this replica does not lead or has no such follower.
    pub fn hand_over(&self) -> bool {
        let in_sync = self.in_sync();
        let mut replica = self.replica.borrow_mut();
        if !replica.is_leader() {
            return false;
        }
        let to = replica
            .progress()
            .into_iter()
            .filter(|(id, _)| *id != self.node && in_sync.contains(id))
            .max_by_key(|(_, matched)| *matched)
            .map(|(id, _)| id);
        let Some(to) = to else { return false };
        if let Err(err) = replica.transfer_leadership(to) {
            tracing::warn!(group = self.id, %err, "cannot hand the leadership over");
            return false;
        }
        drop(replica);
        self.wake.notify_all();
        true
    }

    /// Waits until this replica leads (true) or `within` passed.
    pub async fn wait_leading(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.changed.generation();
            if self.leader.get() == self.node {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stopping.get() {
                return false;
            }
            let _ = timeout(left, self.changed.wait(seen)).await;
        }
    }

    /// Waits until some leader is known (its node id) or `within` passed (0).
    pub async fn wait_for_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.changed.generation();
            if self.leader.get() != 0 {
                return self.leader.get();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stopping.get() {
                return 0;
            }
            let _ = timeout(left, self.changed.wait(seen)).await;
        }
    }

    /// One election timeout of this group's clock.
    pub fn election_timeout(&self) -> Duration {
        self.clock.tick * (self.clock.election_ticks as u32)
    }

    /// Proposes a batch, placed in the log at once (see [`Replica::propose`]).
    pub fn propose(&self, records: Bytes) -> Result<(u64, u64), ProposeError> {
        let placed = self.replica.borrow_mut().propose(records);
        self.wake.notify_all();
        placed
    }

    /// Proposes a produced batch after the producer-state check (see
    /// [`Replica::propose_checked`]).
    pub fn propose_checked(
        &self,
        records: Bytes,
        info: &BatchInfo,
    ) -> Result<Proposed, ProposeError> {
        let placed = self.replica.borrow_mut().propose_checked(records, info);
        self.wake.notify_all();
        placed
    }

    /// Whether the entry at `index` is durable in this replica's log with `term`
    /// (`None`: not yet).
    pub fn persisted_with(&self, index: u64, term: u64) -> Option<bool> {
        self.replica.borrow().persisted_with(index, term)
    }

    /// The voters in sync (this leader and the followers that keep up; see [`InSync`]);
    /// empty unless this replica leads.
    pub fn in_sync(&self) -> Vec<u64> {
        if !self.is_leader() {
            return Vec::new();
        }
        let now = Instant::now();
        let transport = self.transport.borrow().clone();
        let record = self.in_sync.borrow();
        let mut ids: Vec<u64> = record
            .caught_up
            .iter()
            .filter(|(id, at)| {
                **id == self.node
                    || (now.saturating_duration_since(**at) <= self.clock.lag_max
                        && transport.as_ref().is_some_and(|t| t.is_up(**id)))
            })
            .map(|(id, _)| *id)
            .collect();
        if !ids.contains(&self.node) {
            ids.push(self.node);
        }
        ids.sort_unstable();
        ids
    }

    /// On a leader with followers: how far the furthest-behind follower is, in entries
    /// (batches) behind the leader's last one, and the longest time since a follower was
    /// last caught up (see [`InSync`]). `None` elsewhere.
    pub fn follower_lag(&self) -> Option<(u64, Duration)> {
        let replica = self.replica.borrow();
        if !replica.is_leader() || replica.voter_count() <= 1 {
            return None;
        }
        let last = replica.last_index();
        let entries = replica
            .progress()
            .into_iter()
            .filter(|(id, _)| *id != self.node)
            .map(|(_, matched)| last.saturating_sub(matched))
            .max()
            .unwrap_or(0);
        let now = Instant::now();
        let time = self
            .in_sync
            .borrow()
            .caught_up
            .iter()
            .filter(|(id, _)| **id != self.node)
            .map(|(_, at)| now.saturating_duration_since(*at))
            .max()
            .unwrap_or_default();
        Some((entries, time))
    }

    /// How many voters the group has, and how many of them this node reaches now
    /// (itself included).
    pub fn reachable_voters(&self) -> (usize, usize) {
        let voters = self.replica.borrow().voters();
        let transport = self.transport.borrow().clone();
        let reached = voters
            .iter()
            .filter(|id| **id == self.node || transport.as_ref().is_some_and(|t| t.is_up(**id)))
            .count();
        (voters.len(), reached)
    }

    /// Whether the entry at `index` is committed with `term` (`None`: not yet).
    pub fn committed_with(&self, index: u64, term: u64) -> Option<bool> {
        self.replica.borrow().committed_with(index, term)
    }

    /// Stops the driver and waits for it to end (no persist round is left half done).
    pub async fn stop(&self) {
        self.stopping.set(true);
        self.wake.notify_all();
        self.changed.notify_all();
        while self.running.get() {
            let seen = self.stopped.generation();
            if !self.running.get() {
                break;
            }
            self.stopped.wait(seen).await;
        }
    }

    /// Starts the task that drives the group.
    pub fn spawn_driver(self: &Rc<Self>) {
        self.running.set(true);
        glommio::spawn_local(self.clone().drive()).detach();
    }

    async fn drive(self: Rc<Self>) {
        let tick = self.clock.tick;
        let tick_ms = tick.as_millis().max(1) as u64;
        let ticks_max = 2 * self.clock.election_ticks;
        let mut next_tick = Instant::now() + tick;
        let mut last_hw = -1;
        let mut last_persisted = 0;
        while !self.stopping.get() {
            let seen = self.wake.generation();
            let idle = self.inbox.borrow().is_empty()
                && self.unreachable.borrow().is_empty()
                && !self.replica.borrow().needs_persist();
            if idle {
                let wait = next_tick.saturating_duration_since(Instant::now());
                let _ = timeout(wait, self.wake.wait(seen)).await;
            }
            if self.stopping.get() {
                break;
            }
            let now = Instant::now();
            let ticks = if now >= next_tick {
                // One tick, plus one for every period the timer fired late by.
                let late = (now - next_tick).as_millis() as u64 / tick_ms;
                next_tick = now + tick;
                Some((1 + late).min(ticks_max))
            } else {
                None
            };
            let lease_before = self.replica.borrow().lease();
            self.step_all(ticks);
            self.renew_lease();
            self.send();
            if self.replica.borrow().lease() != lease_before {
                // Reads waiting for the lease.
                self.changed.notify_all();
            }
            if let Err(err) = self.persist().await {
                // The disk refused the log: nothing more is acknowledged from here until
                // it accepts writes again.
                tracing::error!(group = self.id, %err, "cannot make the Raft log durable");
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
            if let Err(err) = self.fetch().await {
                tracing::error!(group = self.id, %err, "cannot read entries for a follower");
            }
            self.send();
            let (leader, term) = {
                let replica = self.replica.borrow();
                (replica.leader(), replica.term())
            };
            let hw = self.log.borrow().high_watermark();
            let persisted = self.track_in_sync(ticks.is_some());
            if ticks.is_some() {
                let in_sync = self.in_sync();
                if *self.last_in_sync.borrow() != in_sync {
                    *self.last_in_sync.borrow_mut() = in_sync;
                    self.changed.notify_all();
                }
            }
            if persisted != last_persisted {
                // acks=1 answers wait for this.
                last_persisted = persisted;
                self.changed.notify_all();
            }
            if leader != self.leader.get() || term != self.term.get() {
                if leader != self.leader.get() {
                    tracing::info!(group = self.id, leader, term, "new leader");
                }
                self.leader.set(leader);
                self.term.set(term);
                self.changed.notify_all();
            }
            if hw != last_hw {
                last_hw = hw;
                self.changed.notify_all();
            }
        }
        self.running.set(false);
        self.stopped.notify_all();
    }

    /// Updates the leader's in-sync record (a new term starts with every voter in sync,
    /// as Kafka keeps the ISR across an election); returns the persisted index.
    fn track_in_sync(&self, ticked: bool) -> u64 {
        let replica = self.replica.borrow();
        let mut record = self.in_sync.borrow_mut();
        if !replica.is_leader() {
            record.term = 0;
            record.caught_up.clear();
            return replica.persisted();
        }
        let now = Instant::now();
        if record.term != replica.term() {
            record.term = replica.term();
            record.mark = replica.last_index();
            record.caught_up = replica.voters().into_iter().map(|id| (id, now)).collect();
        }
        let mark = record.mark;
        for (id, matched) in replica.progress() {
            if matched >= mark {
                record.caught_up.insert(id, now);
            }
        }
        if ticked {
            record.mark = replica.last_index();
        }
        replica.persisted()
    }

    /// Ticks, reports lost peers and steps what arrived (all synchronous).
    fn step_all(&self, ticks: Option<u64>) {
        let mut replica = self.replica.borrow_mut();
        let mut ticks = ticks.unwrap_or(0);
        if self.held_ticks.get() > 0 {
            if replica.leader() != 0 {
                self.held_ticks.set(0);
            } else {
                let held = self.held_ticks.get().min(ticks);
                self.held_ticks.set(self.held_ticks.get() - held);
                ticks -= held;
            }
        }
        for _ in 0..ticks {
            if let Err(err) = replica.tick() {
                tracing::error!(group = self.id, %err, "Raft tick failed");
            }
        }
        for peer in std::mem::take(&mut *self.unreachable.borrow_mut()) {
            replica.report_unreachable(peer);
        }
        for message in std::mem::take(&mut *self.inbox.borrow_mut()) {
            if message.msg_type == raft::eraftpb::MessageType::MsgHeartbeatResponse {
                self.heartbeat_answered(message.from);
            }
            if let Err(err) = replica.step(message) {
                tracing::error!(group = self.id, %err, "a peer's Raft message failed");
            }
        }
        drop(replica);
        self.send();
    }

    async fn persist(&self) -> io::Result<()> {
        let round = {
            let mut replica = self.replica.borrow_mut();
            if !replica.needs_persist() {
                return Ok(());
            }
            replica.begin_persist()
        };
        let Some(round) = round else { return Ok(()) };
        self.send();
        round.run().await?;
        self.replica.borrow_mut().end_persist(round.number)?;
        self.send();
        Ok(())
    }

    async fn fetch(&self) -> io::Result<()> {
        let wanted = self.replica.borrow_mut().take_wanted();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut fetched = Vec::with_capacity(wanted.len());
        for (low, high, context) in wanted {
            fetched.push((read_entries(&self.log, low, high).await?, context));
        }
        self.replica.borrow_mut().entries_fetched(fetched)
    }

    /// `peer` answered a heartbeat: how long after the oldest unanswered one left goes to
    /// the link's latency histogram. One unanswered for an election timeout was lost and
    /// is not counted.
    fn heartbeat_answered(&self, peer: u64) {
        let Some(sent) = self.heartbeats.borrow_mut().remove(&peer) else {
            return;
        };
        let rtt = sent.elapsed();
        if rtt >= self.election_timeout() {
            return;
        }
        if let Some(transport) = self.transport.borrow().as_ref() {
            transport.heartbeat_answered(peer, rtt);
        }
    }

    /// Sends what the replica has queued.
    fn send(&self) {
        let outbox = self.replica.borrow_mut().take_outbox();
        if outbox.is_empty() {
            return;
        }
        let transport = self.transport.borrow().clone();
        let mut lost = Vec::new();
        let mut snapshots = Vec::new();
        for message in outbox {
            let to = message.to;
            if to == self.node {
                continue;
            }
            let snapshot = message.msg_type == raft::eraftpb::MessageType::MsgSnapshot;
            if message.msg_type == raft::eraftpb::MessageType::MsgHeartbeat {
                // The oldest unanswered one: the answer says how long the peer took.
                self.heartbeats
                    .borrow_mut()
                    .entry(to)
                    .or_insert_with(Instant::now);
            }
            let sent = transport
                .as_ref()
                .is_some_and(|t| t.send_raft(to, self.id, message));
            if !sent {
                lost.push(to);
            }
            if snapshot {
                snapshots.push((to, sent));
            }
        }
        if !lost.is_empty() || !snapshots.is_empty() {
            let mut replica = self.replica.borrow_mut();
            for peer in lost {
                replica.report_unreachable(peer);
            }
            // A snapshot is a few bytes (where the log starts): it is reported done once
            // sent, and the follower's answer, or its silence, decides what follows.
            for (peer, sent) in snapshots {
                replica.report_snapshot(peer, sent);
            }
        }
    }
}
