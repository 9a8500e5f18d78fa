//! One replica of a replicated partition: a raft-rs `RawNode` over the partition log.
//!
//! Everything here is synchronous except persistence: [`Replica::drive`] takes raft-rs's
//! Readies and places their entries in the log (memory; a conflicting suffix is truncated
//! first), notes hard-state changes, applies commits (the high watermark moves), queues the
//! leader's messages at once and keeps the messages that must wait for durability (votes,
//! append acknowledgements) with their Ready's number. [`Replica::persist`] makes what was
//! placed durable (the log's flush jobs, then the hard state, `raft.state`) and releases
//! them: raft-rs is told with `on_persist_ready`, so a leader counts its own entries only
//! once they are on its disk, and a follower acknowledges only what is on its disk.
//!
//! An entry with no data (raft-rs's first entry of a new leader) is stored as the leader
//! change control batch, the same bytes on every replica.
//!
//! The cluster's metadata group runs on it ([`super::meta`]); partitions are not
//! replicated yet.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType};
use raft::{RawNode, StateRole};

use crate::protocol::batch::leader_change_batch;
use crate::storage::log::{InstallJob, LogConfig, PartitionLog, RaftStart, ReadPlan};
use crate::storage::raft_state::{HardState, RaftStateFile};
use crate::storage::raft_store::{LogStore, StoreState};

/// Raft timing of a replica, in ticks of the shard's Raft clock.
#[derive(Clone, Debug)]
pub struct ReplicaTiming {
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
}

impl Default for ReplicaTiming {
    fn default() -> Self {
        ReplicaTiming {
            election_ticks: 10,
            heartbeat_ticks: 1,
        }
    }
}

/// Why a proposal was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This replica does not lead the partition.
    NotLeader,
    /// raft-rs dropped it (e.g. a leadership transfer is under way).
    Dropped,
    /// The producer state refuses the batch (Kafka's error code).
    Refused(i16),
}

/// A batch the leader took: where it is, and whether it was there already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposed {
    pub index: u64,
    pub term: u64,
    /// An idempotent retry of a batch already in the log (not proposed again): it is
    /// answered once that entry is committed with its term, like a new one.
    pub duplicate: bool,
}

pub struct Replica {
    id: u64,
    raw: RawNode<LogStore>,
    log: Rc<RefCell<PartitionLog>>,
    store: Rc<RefCell<StoreState>>,
    /// Written only by a persist round (one at a time).
    state_file: Rc<RaftStateFile>,
    /// Messages that may leave only once the Ready they came with is durable, by number.
    unpersisted: VecDeque<(u64, Vec<Message>)>,
    /// Something placed or changed since the last persist started.
    dirty: bool,
    /// The hard state changed since it was last written.
    hard_state_dirty: bool,
    outbox: Vec<Message>,
    /// A snapshot installed in memory, to make durable first in the next persist round.
    install: Option<InstallJob>,
    /// The Ready number and index of the last snapshot installed: once that Ready is
    /// persisted, raft-rs is told the snapshot is applied.
    snapshot_applied: Option<(u64, u64)>,
    /// The read lease: the term and send time of the latest heartbeat a majority
    /// answered (raft-rs's ReadIndex, its context being the term and the time).
    lease: Option<(u64, std::time::Instant)>,
    /// What lease contexts count time from.
    clock_base: std::time::Instant,
}

impl Replica {
    /// Opens (recovering) the replica in `dir`: its log, with `config.replicated` set, and
    /// its Raft state. `voters` are the replica set's Raft ids (this one among them).
    pub async fn open(
        dir: &Path,
        mut config: LogConfig,
        id: u64,
        voters: &[u64],
        timing: &ReplicaTiming,
    ) -> io::Result<Replica> {
        config.replicated = true;
        let log = Rc::new(RefCell::new(PartitionLog::open(dir, config).await?));
        let (state_file, hard) = RaftStateFile::open_or_create(dir).await?;
        let start = log.borrow().raft().map(|t| t.start()).unwrap_or_default();
        let hard = hard.unwrap_or_default().at_least(start.index, start.offset);
        let store = Rc::new(RefCell::new(StoreState {
            hard_state: raft::eraftpb::HardState {
                term: hard.term,
                vote: hard.vote,
                commit: hard.commit,
                ..Default::default()
            },
            conf_state: ConfState {
                voters: voters.to_vec(),
                ..Default::default()
            },
            ..Default::default()
        }));
        let raft_config = raft::Config {
            id,
            election_tick: timing.election_ticks,
            heartbeat_tick: timing.heartbeat_ticks,
            applied: hard.commit,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 32,
            // Unlimited: raft-rs counts proposal bytes out of committed entries' data,
            // which it is given without data (see `LogStore`); the shard bounds memory.
            max_uncommitted_size: u64::MAX,
            max_committed_size_per_ready: 64 * 1024,
            ..Default::default()
        };
        raft_config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let raw = RawNode::new(
            &raft_config,
            LogStore {
                log: log.clone(),
                state: store.clone(),
            },
            &crate::util::raft_log::logger(),
        )
        .map_err(|e| io::Error::other(format!("{}: {e}", dir.display())))?;
        let mut replica = Replica {
            id,
            raw,
            log: log.clone(),
            store,
            state_file: Rc::new(state_file),
            unpersisted: VecDeque::new(),
            dirty: false,
            hard_state_dirty: false,
            outbox: Vec::new(),
            install: None,
            snapshot_applied: None,
            lease: None,
            clock_base: std::time::Instant::now(),
        };
        log.borrow_mut().set_epoch(epoch(replica.raw.raft.term));
        replica.drive()?;
        Ok(replica)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn log(&self) -> &Rc<RefCell<PartitionLog>> {
        &self.log
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this replica knows of (0: none).
    pub fn leader(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The committed index as raft-rs knows it.
    pub fn commit(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Starts an election now (the preferred replica of a new partition).
    pub fn campaign(&mut self) -> io::Result<()> {
        self.raw
            .campaign()
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.drive()
    }

    /// Raft's leader transfer to `to`: the leader hands over (MsgTimeoutNow) once `to`'s
    /// log has caught up with its own. On a follower `to` must be this replica (the
    /// request goes to the leader from here); nothing happens without a leader.
    pub fn transfer_leadership(&mut self, to: u64) -> io::Result<()> {
        self.raw.transfer_leader(to);
        self.drive()
    }

    /// One tick of the Raft clock.
    pub fn tick(&mut self) -> io::Result<()> {
        self.raw.tick();
        self.drive()
    }

    /// A message from a peer.
    pub fn step(&mut self, mut message: Message) -> io::Result<()> {
        if message.msg_type == MessageType::MsgHeartbeat {
            // raft-rs stops the process on a commit past the log; a follower that lost
            // unsynced entries (relaxed flush settings) would otherwise crash on the next
            // heartbeat.
            message.commit = message.commit.min(self.raw.raft.raft_log.last_index());
        }
        match self.raw.step(message) {
            Ok(()) => {}
            Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => {}
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
        self.drive()
    }

    /// Proposes a batch (its bytes as the producer sent them; checked by the caller):
    /// placed in the log at once. Returns its index and term: it is committed once the
    /// commit reaches the index while the entry there still has this term.
    pub fn propose(&mut self, records: Bytes) -> Result<(u64, u64), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader);
        }
        let term = self.raw.raft.term;
        let message = Message {
            msg_type: MessageType::MsgPropose,
            from: self.id,
            entries: vec![Entry {
                entry_type: EntryType::EntryNormal,
                data: records,
                ..Default::default()
            }]
            .into(),
            ..Default::default()
        };
        match self.raw.step(message) {
            Ok(()) => {}
            Err(raft::Error::ProposalDropped) => return Err(ProposeError::Dropped),
            Err(_) => return Err(ProposeError::NotLeader),
        }
        let index = self.raw.raft.raft_log.last_index();
        if self.drive().is_err() {
            return Err(ProposeError::Dropped);
        }
        Ok((index, term))
    }

    /// Proposes a produced batch as Kafka's leader appends one: checked against the
    /// producer state of every entry in the log (committed or not) first, so an
    /// idempotent retry — also one sent to a new leader that has the batch from the old
    /// one — is answered with the entry already there instead of being written twice.
    pub fn propose_checked(
        &mut self,
        records: Bytes,
        info: &crate::protocol::batch::BatchInfo,
    ) -> Result<Proposed, ProposeError> {
        use crate::storage::producer_state::SequenceCheck;
        if !self.is_leader() {
            return Err(ProposeError::NotLeader);
        }
        if info.producer_id >= 0 {
            let log = self.log.borrow();
            match log.producers().check(info) {
                SequenceCheck::Accept => {}
                SequenceCheck::Duplicate { base_offset, .. } => {
                    let tail = log.raft().ok_or(ProposeError::NotLeader)?;
                    // Older than the tail's rows: committed long ago; answered as of the
                    // committed entry.
                    let (index, term) = tail.entry_at(base_offset).unwrap_or_else(|| {
                        let index = tail.committed();
                        (index, tail.term(index).unwrap_or(0))
                    });
                    return Ok(Proposed {
                        index,
                        term,
                        duplicate: true,
                    });
                }
                SequenceCheck::OutOfOrder { .. } => {
                    return Err(ProposeError::Refused(
                        crate::protocol::errors::OUT_OF_ORDER_SEQUENCE_NUMBER,
                    ))
                }
                SequenceCheck::StaleEpoch { .. } => {
                    return Err(ProposeError::Refused(
                        crate::protocol::errors::INVALID_PRODUCER_EPOCH,
                    ))
                }
            }
        }
        let (index, term) = self.propose(records)?;
        Ok(Proposed {
            index,
            term,
            duplicate: false,
        })
    }

    /// Whether the entry at `index` is committed with `term` (a proposal's answer).
    pub fn committed_with(&self, index: u64, term: u64) -> Option<bool> {
        let log = self.log.borrow();
        let tail = log.raft()?;
        if tail.committed() < index {
            return None;
        }
        Some(tail.term(index) == Some(term))
    }

    /// Whether the entry at `index` is durable in this replica's own log with `term`
    /// (`None`: not yet); an acks=1 answer.
    pub fn persisted_with(&self, index: u64, term: u64) -> Option<bool> {
        let raft_log = &self.raw.raft.raft_log;
        let same_term = raft_log.term(index).is_ok_and(|t| t == term);
        if raft_log.persisted < index {
            // Not durable yet, unless a later leader replaced it.
            return if same_term || raft_log.last_index() < index {
                None
            } else {
                Some(false)
            };
        }
        Some(same_term)
    }

    /// How far the log is durable here (raft-rs's persisted index).
    pub fn persisted(&self) -> u64 {
        self.raw.raft.raft_log.persisted
    }

    /// The index of the last entry in the log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The leader's view of its voters, itself included: each one's id and the last
    /// index known to be in its log (raft-rs's `matched`). Meaningful on the leader only.
    pub fn progress(&self) -> Vec<(u64, u64)> {
        self.raw
            .raft
            .prs()
            .iter()
            .map(|(id, p)| (*id, p.matched))
            .collect()
    }

    /// The voters of the group.
    pub fn voters(&self) -> Vec<u64> {
        self.raw.raft.prs().iter().map(|(id, _)| *id).collect()
    }

    /// How many voters the group has (without collecting them).
    pub fn voter_count(&self) -> usize {
        self.raw.raft.prs().iter().count()
    }

    /// Messages to `peer` were lost (its link went down): raft-rs probes it again.
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// Messages to send, in order.
    pub fn take_outbox(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.outbox)
    }

    /// Something placed or changed waits to be made durable ([`Self::persist`]).
    pub fn needs_persist(&self) -> bool {
        self.dirty
    }

    /// Handles every Ready raft-rs has.
    pub fn drive(&mut self) -> io::Result<()> {
        while self.raw.has_ready() {
            let mut rd = self.raw.ready();
            if let Some(ss) = rd.ss() {
                if ss.raft_state == StateRole::Leader {
                    self.log.borrow_mut().set_epoch(epoch(self.raw.raft.term));
                }
            }
            if !rd.snapshot().is_empty() {
                let meta = rd.snapshot().get_metadata();
                let start = RaftStart::decode(rd.snapshot().get_data(), meta.index, meta.term)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let job = self
                    .log
                    .borrow_mut()
                    .install_snapshot(start)
                    .map_err(|e| io::Error::other(format!("cannot install a snapshot: {e}")))?;
                if let Some(earlier) = self.install.replace(job) {
                    // Never run: this one deletes everything that one would have.
                    tracing::debug!(start = ?earlier.start(), "a later snapshot replaces one not yet durable");
                }
                self.snapshot_applied = Some((rd.number(), start.index));
                self.dirty = true;
            }
            let entries = rd.take_entries();
            if !entries.is_empty() {
                self.place(entries)?;
                self.dirty = true;
            }
            if let Some(hs) = rd.hs() {
                self.store.borrow_mut().hard_state = hs.clone();
                self.hard_state_dirty = true;
                self.dirty = true;
            }
            for state in rd.take_read_states() {
                self.lease_confirmed(&state.request_ctx);
            }
            self.outbox.extend(rd.take_messages());
            let persisted = rd.take_persisted_messages();
            let applied = rd.take_committed_entries().last().map(|e| e.index);
            if let Some(last) = applied {
                if self.log.borrow_mut().commit_to(last) {
                    // A rolled segment became sealable.
                    self.dirty = true;
                }
            }
            let number = rd.number();
            self.raw.advance_append_async(rd);
            if let Some(applied) = applied.filter(|&a| a > self.raw.raft.raft_log.applied()) {
                // The log is the state machine: committed is applied. raft-rs reads the
                // entries after `applied` when it campaigns, so it must follow the log's
                // start up.
                self.raw.advance_apply_to(applied);
            }
            if self.dirty || !self.unpersisted.is_empty() {
                self.unpersisted.push_back((number, persisted));
            } else {
                self.raw.on_persist_ready(number);
                self.outbox.extend(persisted);
            }
        }
        Ok(())
    }

    fn place(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        let mut log = self.log.borrow_mut();
        let now = crate::util::now_ms();
        let first = entries[0].index;
        let last = log.raft().map(|t| t.last_index()).unwrap_or(0);
        if first <= last {
            log.truncate_after(first - 1)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        }
        for entry in entries {
            if entry.entry_type != EntryType::EntryNormal {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("entry {} is a configuration change", entry.index),
                ));
            }
            let data = if entry.data.is_empty() {
                Bytes::from(leader_change_batch())
            } else {
                entry.data
            };
            let index = log
                .place(data, entry.term, now)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            debug_assert_eq!(index, entry.index);
        }
        Ok(())
    }

    /// Makes everything placed so far durable, then lets the messages waiting for it go
    /// and tells raft-rs.
    pub async fn persist(&mut self) -> io::Result<()> {
        let Some(round) = self.begin_persist() else {
            return Ok(());
        };
        round.run().await?;
        self.end_persist(round.number)
    }

    /// Starts a persist round (see [`PersistRound`]); `None` if nothing waits for one.
    /// Entries placed while the round runs wait for the next.
    pub fn begin_persist(&mut self) -> Option<PersistRound> {
        let &(number, _) = self.unpersisted.back()?;
        self.dirty = false;
        let hard_state = if std::mem::take(&mut self.hard_state_dirty) {
            let hs = self.store.borrow().hard_state.clone();
            // The commit is written as far as this replica's log goes, with its end
            // (reopening finds the committed entry by it).
            let log = self.log.borrow();
            let tail = log.raft().expect("a replica's log is replicated");
            let commit = hs.commit.min(tail.last_index());
            let (commit, commit_offset) = match tail.offsets(commit) {
                Some((_, next)) => (commit, next),
                None => (tail.committed(), tail.committed_offset()),
            };
            Some(HardState {
                term: hs.term,
                vote: hs.vote,
                commit,
                commit_offset,
            })
        } else {
            None
        };
        Some(PersistRound {
            number,
            install: RefCell::new(self.install.take()),
            hard_state,
            log: self.log.clone(),
            state_file: self.state_file.clone(),
        })
    }

    /// Ends a persist round that succeeded: the messages of Readies up to its number
    /// leave, and raft-rs is told.
    pub fn end_persist(&mut self, number: u64) -> io::Result<()> {
        while self.unpersisted.front().is_some_and(|(n, _)| *n <= number) {
            let (_, messages) = self.unpersisted.pop_front().expect("checked");
            self.outbox.extend(messages);
        }
        self.raw.on_persist_ready(number);
        if let Some((ready, index)) = self.snapshot_applied {
            if ready <= number {
                self.snapshot_applied = None;
                if index > self.raw.raft.raft_log.applied() {
                    self.raw.advance_apply_to(index);
                }
            }
        }
        self.drive()
    }

    /// Asks a majority to confirm this leader now (a heartbeat carrying the term and the
    /// time it left); once they have, [`Self::lease`] is that time.
    pub fn renew_lease(&mut self) -> io::Result<()> {
        let mut context = Vec::with_capacity(16);
        context.extend_from_slice(&self.raw.raft.term.to_be_bytes());
        let nanos = self.clock_base.elapsed().as_nanos() as u64;
        context.extend_from_slice(&nanos.to_be_bytes());
        self.raw.read_index(context);
        self.drive()
    }

    /// The term and send time of the latest heartbeat a majority answered.
    pub fn lease(&self) -> Option<(u64, std::time::Instant)> {
        self.lease
    }

    fn lease_confirmed(&mut self, context: &[u8]) {
        let (Some(term), Some(nanos)) = (
            context
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))),
            context
                .get(8..16)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))),
        ) else {
            return;
        };
        if term != self.raw.raft.term || !self.is_leader() {
            return;
        }
        let sent = self.clock_base + std::time::Duration::from_nanos(nanos);
        if self.lease.is_none_or(|(t, at)| t != term || at < sent) {
            self.lease = Some((term, sent));
        }
    }

    /// Tells raft-rs whether a snapshot it queued for `peer` went out: either way the
    /// follower is probed again (a lost one is sent again).
    pub fn report_snapshot(&mut self, peer: u64, sent: bool) {
        let status = if sent {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(peer, status);
    }

    /// Reads from disk the entries a send missed in the cache, then lets raft-rs send.
    pub async fn fetch_wanted(&mut self) -> io::Result<()> {
        let wanted = self.take_wanted();
        if wanted.is_empty() {
            return Ok(());
        }
        let log = self.log.clone();
        let mut fetched = Vec::with_capacity(wanted.len());
        for (low, high, context) in wanted {
            fetched.push((read_entries(&log, low, high).await?, context));
        }
        self.entries_fetched(fetched)
    }

    /// The sends that missed the cache, to read with [`read_entries`].
    pub fn take_wanted(&mut self) -> Vec<(u64, u64, raft::GetEntriesContext)> {
        std::mem::take(&mut self.store.borrow_mut().wanted)
    }

    /// Hands entries read from disk to raft-rs, which sends them.
    pub fn entries_fetched(
        &mut self,
        fetched: Vec<(Vec<(u64, Bytes)>, raft::GetEntriesContext)>,
    ) -> io::Result<()> {
        self.store.borrow_mut().fetched.clear();
        for (entries, context) in fetched {
            self.store.borrow_mut().fetched.extend(entries);
            self.raw.on_entries_fetched(context);
        }
        self.drive()
    }
}

/// What one persist round makes durable: the log's pending writes (its flush jobs), then
/// the hard state if it changed. Runs without borrowing the replica, so proposals can be
/// placed meanwhile; [`Replica::end_persist`] then releases what waited for it.
pub struct PersistRound {
    pub number: u64,
    /// A snapshot installed since the last round: made durable before anything else.
    install: RefCell<Option<InstallJob>>,
    hard_state: Option<HardState>,
    log: Rc<RefCell<PartitionLog>>,
    state_file: Rc<RaftStateFile>,
}

impl PersistRound {
    pub async fn run(&self) -> io::Result<()> {
        let install = self.install.borrow_mut().take();
        if let Some(job) = install {
            let start = job.start();
            job.run().await?;
            tracing::info!(?start, "installed the leader's snapshot");
        }
        loop {
            let job = self.log.borrow_mut().take_flush(crate::util::now_ms());
            let Some(job) = job else { break };
            let result = job.run().await;
            let failed = result.as_ref().err().map(|e| e.to_string());
            self.log.borrow_mut().complete_flush(result);
            if let Some(why) = failed {
                return Err(io::Error::other(why));
            }
        }
        if let Some(hard_state) = &self.hard_state {
            // Only persist rounds write it, one at a time.
            self.state_file.write(hard_state).await?;
        }
        Ok(())
    }
}

/// Bytes of entries one disk read for a follower gathers at most (one message's worth).
const READ_ENTRIES_BYTES_MAX: usize = 1 << 20;

/// Reads entries `[low, high)` back from the log's files, as far as they go and up to
/// about a message's worth: from the nearest position known at or before `low` (the
/// entry's row, the first entry of its term, or where the last such read stopped),
/// counting batches forward.
pub async fn read_entries(
    log: &Rc<RefCell<PartitionLog>>,
    low: u64,
    high: u64,
) -> io::Result<Vec<(u64, Bytes)>> {
    let mut out = Vec::new();
    let start = log.borrow().raft().and_then(|t| t.position_before(low));
    let Some((mut index, mut offset)) = start else {
        return Ok(out);
    };
    let mut gathered = 0;
    while index < high && gathered < READ_ENTRIES_BYTES_MAX {
        let plan = log
            .borrow()
            .read_plan_written(offset, READ_ENTRIES_BYTES_MAX);
        let data = match plan {
            Ok(ReadPlan::Empty) | Err(_) => break,
            Ok(plan) => plan
                .read()
                .await
                .map_err(|e| io::Error::other(e.to_string()))?,
        };
        let bytes = data.to_bytes();
        let before = index;
        for item in crate::protocol::batch::iter_batches(&bytes) {
            let Ok((at, info)) = item else { break };
            if info.base_offset < offset {
                continue;
            }
            if index >= low {
                out.push((index, bytes.slice(at..at + info.len)));
                gathered += info.len;
            }
            index += 1;
            offset = info.last_offset() + 1;
            if index >= high || gathered >= READ_ENTRIES_BYTES_MAX {
                break;
            }
        }
        if index == before {
            break;
        }
    }
    if let Some(tail) = log.borrow().raft() {
        tail.note_position(index, offset);
    }
    Ok(out)
}

/// A Raft term as the batch's partition leader epoch (terms stay far below 2³¹).
fn epoch(term: u64) -> i32 {
    i32::try_from(term).unwrap_or(i32::MAX)
}
