//! A replicated partition's log is its Raft log: each batch is one entry, the entry's term
//! is the batch's `partitionLeaderEpoch`, and entry indexes are the batches' ordinals
//! (dense, from 1), which Kafka offsets are not (a batch spans many). [`RaftTail`] keeps
//! the index ↔ offset map of the entries Raft may still ask about or cut: every entry not
//! yet committed and the last [`COMMITTED_ROWS_KEPT`] committed ones.
//!
//! What Raft needs of the log beyond appending:
//! - [`PartitionLog::place`]: append an entry as the leader sent it (a follower), with
//!   its term; producer state is applied, not checked (the leader checked it);
//! - [`PartitionLog::commit_to`]: the high watermark becomes the committed end;
//! - [`PartitionLog::truncate_after`]: drop a conflicting uncommitted suffix. Memory is
//!   cut at once; the disk by the next flush job, which deletes removed segments' files,
//!   cuts the file and syncs before it writes anything after the cut, so a crash can
//!   never bring a cut suffix back behind newer entries. Jobs already in flight complete
//!   with what they wrote clamped to the cut ([`Cut`]).
//!
//! A rolled segment is sealed only once committed, so a truncation never reaches a sealed
//! segment. Producer state is kept twice: as of the last entry (what the leader checks
//! against) and as of the committed entry, from which a truncation replays what it keeps.

use std::collections::VecDeque;
use std::io;

use bytes::Bytes;

use super::raft_start::RaftStart;
use super::segment::Segment;
use super::*;
use crate::protocol::batch::{control_marker, parse_batch, BatchInfo, Marker};
use crate::storage::epochs::EpochCache;
use crate::storage::index::IndexBuilder;
use crate::storage::producer_state::ProducerState;
use crate::storage::{align_down, BLOCK_BYTES};

/// Committed entries whose index ↔ offset row is kept (beyond the uncommitted ones).
pub const COMMITTED_ROWS_KEPT: usize = 1024;

/// What an entry's batch does to producer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Records (idempotent or transactional ones advance their producer).
    Data,
    /// A transaction marker.
    Marker {
        marker: Marker,
        coordinator_epoch: i32,
    },
    /// Another control batch: no producer state.
    Control,
}

/// One entry: where its batch is and what it did.
#[derive(Clone, Debug)]
pub(super) struct EntryRow {
    pub(super) index: u64,
    pub(super) term: u64,
    pub(super) base_offset: i64,
    pub(super) next_offset: i64,
    /// The segment (its id) and position the batch starts at.
    pub(super) segment: u64,
    pub(super) position: u64,
    /// The segment's index builder before the batch: a truncation here restores it.
    pub(super) builder_before: IndexBuilder,
    pub(super) info: BatchInfo,
    pub(super) kind: EntryKind,
}

/// A truncation the flush jobs taken before it (sequence numbers below `seq_after`) did
/// not know of: what they wrote to `segment` from `position` on, and at `offset` and
/// after, is stale.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cut {
    pub(super) seq_after: u64,
    pub(super) segment: u64,
    pub(super) position: u64,
    pub(super) offset: i64,
}

/// The Raft view of a replicated log's tail.
#[derive(Debug)]
pub struct RaftTail {
    /// Consecutive entries, up to the last one.
    rows: VecDeque<EntryRow>,
    /// The last position a reader of entries below the rows noted (see
    /// [`RaftTail::position_before`]); forgotten on truncation.
    noted: std::cell::Cell<Option<(u64, i64)>>,
    /// Index and term of the entry before `rows[0]` ((0, Some(0)): the log's first entry
    /// is 1); the term is unknown after a reopen (rows then start at the committed entry).
    before: (u64, Option<u64>),
    /// Where the log starts: the entries up to `start.index` are gone (retention, or a
    /// snapshot installed); (0, 0) if none ever went.
    start: RaftStart,
    committed: u64,
    /// Offset after the committed entry.
    committed_offset: i64,
    /// Producer state as of the committed entry.
    committed_producers: ProducerState,
    /// First index and offset of every term (`leader-epoch.checkpoint`).
    epochs: EpochCache,
    /// `epochs` changed since a flush job last took it to write.
    epochs_dirty: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TruncateError {
    /// Committed entries are never cut.
    Committed { index: u64, committed: u64 },
    /// The log has no entry at `index`.
    NoEntry { index: u64, last: u64 },
}

impl std::fmt::Display for TruncateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TruncateError::Committed { index, committed } => write!(
                f,
                "cannot truncate after entry {index}: entries up to {committed} are committed"
            ),
            TruncateError::NoEntry { index, last } => {
                write!(f, "no entry {index} to truncate after (last is {last})")
            }
        }
    }
}

/// What reopening a replicated log needs of a segment (sendable to a blocking thread).
struct ScanSegment {
    id: u64,
    base_offset: i64,
    path: std::path::PathBuf,
    len: u64,
    index: crate::storage::index::SegmentIndex,
}

impl RaftTail {
    /// The Raft view of a log reopened with `segments`, whose hard state (written by the
    /// Raft driver) says entry `commit` ends at `commit_offset`: the entries from the
    /// committed one on are read back from the files into rows. `producers` is the
    /// producer state as of `commit_offset` (see [`crate::storage::recovery::recover`]).
    pub(super) async fn open(
        dir: &std::path::Path,
        segments: &[Segment],
        state: Option<crate::storage::raft_state::HardState>,
        log_start: RaftStart,
        interval: u64,
        producers: ProducerState,
    ) -> io::Result<RaftTail> {
        let start = segments.first().map(|s| s.base_offset).unwrap_or(0);
        let end = segments.last().map(|s| s.next_offset).unwrap_or(0);
        let (commit, commit_offset) = match state {
            Some(s) => (s.commit, s.commit_offset),
            None if log_start.index > 0 => (log_start.index, log_start.offset),
            None if end == start => (0, start),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: a replicated log with entries has no Raft state ({})",
                        dir.display(),
                        crate::storage::raft_state::RAFT_STATE_FILE
                    ),
                ))
            }
        };
        if commit_offset > end || commit_offset < start && commit > log_start.index {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: the committed end {commit_offset} (entry {commit}) is outside the log [{start}, {end}]",
                    dir.display()
                ),
            ));
        }
        let scan: Vec<ScanSegment> = segments
            .iter()
            .filter(|s| s.len > 0)
            .map(|s| ScanSegment {
                id: s.id,
                base_offset: s.base_offset,
                path: s.path.clone(),
                len: s.len,
                index: s.index.clone(),
            })
            .collect();
        let dir_name = dir.display().to_string();
        let epochs_dir = dir.to_path_buf();
        let (rows, read) = glommio::executor()
            .spawn_blocking(move || {
                let rows = scan_rows(&dir_name, scan, commit, commit_offset, log_start, interval)?;
                Ok::<_, io::Error>((rows, EpochCache::read(&epochs_dir)))
            })
            .await?;
        // The checkpoint is a cache of the batches' epochs: rows past the log end go, the
        // terms read back are assigned again, and a file that does not parse is rebuilt.
        let mut epochs = read.unwrap_or_else(|e| {
            tracing::warn!(%e, "leader-epoch checkpoint unreadable; rebuilding it from the log");
            EpochCache::new()
        });
        let before_fix = epochs.clone();
        epochs.truncate_from_end(end);
        if log_start.index > 0 {
            // Retention may have removed entries after the checkpoint was last written.
            epochs.truncate_from_start(log_start.offset, log_start.index + 1);
        }
        for row in &rows {
            epochs.assign(row.term, row.index, row.base_offset);
        }
        let epochs_dirty = epochs != before_fix;
        let mut tail = RaftTail {
            rows,
            before: (log_start.index, Some(log_start.term)),
            start: log_start,
            noted: std::cell::Cell::new(None),
            committed: commit,
            committed_offset: commit_offset,
            committed_producers: producers,
            epochs,
            epochs_dirty,
        };
        tail.before = match tail.rows.front() {
            Some(first) if first.index == log_start.index + 1 => {
                (log_start.index, Some(log_start.term))
            }
            Some(first) if first.index > 1 => {
                let index = first.index - 1;
                let known = tail
                    .epochs
                    .earliest()
                    .is_some_and(|e| e.first_index <= index);
                (
                    index,
                    known.then(|| tail.epochs.term_of_index(index)).flatten(),
                )
            }
            Some(_) => (0, Some(0)),
            None => (log_start.index, Some(log_start.term)),
        };
        if commit > 0 && tail.term(commit).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: no batch ends at the committed end {commit_offset}",
                    dir.display()
                ),
            ));
        }
        Ok(tail)
    }

    /// The first entry whose term and batch the tail can give (Raft's `first_index`): the
    /// term of the one before it is known too.
    pub fn first_index(&self) -> u64 {
        match self.before.1 {
            Some(_) => self.before.0 + 1,
            None => self.before.0 + 2,
        }
    }

    pub fn last_index(&self) -> u64 {
        self.rows.back().map(|r| r.index).unwrap_or(self.before.0)
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Offset after the committed entry: the high watermark, once durable here.
    pub fn committed_offset(&self) -> i64 {
        self.committed_offset
    }

    /// The first entry still in the log, whether or not the tail keeps its row: the
    /// leader-epoch cache knows the term (and an exact offset) of every entry from its
    /// earliest term on, so an entry below the rows can be found by reading forward
    /// from the nearest known position (see [`Self::position_before`]).
    pub fn log_first_index(&self) -> u64 {
        let rows_first = self.first_index();
        match self.epochs.earliest() {
            Some(e) if e.first_index >= 1 && e.first_index < rows_first => e.first_index,
            _ => rows_first,
        }
        .max(self.start.index + 1)
    }

    /// Where the log starts (the entries retention removed or a snapshot replaced end at
    /// `start().index`).
    pub fn start(&self) -> RaftStart {
        self.start
    }

    /// The term of entry `index` from the rows, or below them from the epoch cache.
    pub fn term_any(&self, index: u64) -> Option<u64> {
        if index == self.start.index {
            return Some(self.start.term);
        }
        match self.term(index) {
            Some(term) => Some(term),
            None if index >= self.log_first_index() && index < self.first_index() => {
                self.epochs.term_of_index(index)
            }
            None => None,
        }
    }

    /// A known (index, base offset) at or before `index`: its row, a term's first
    /// entry, or the last position a reader noted; reading batches forward from it
    /// reaches `index`.
    pub fn position_before(&self, index: u64) -> Option<(u64, i64)> {
        if let Some((base, _)) = self.offsets(index) {
            return Some((index, base));
        }
        let epoch = self
            .epochs
            .entries()
            .iter()
            .rev()
            .find(|e| e.first_index <= index)
            .map(|e| (e.first_index, e.start_offset));
        let noted = self.noted.get().filter(|(i, _)| *i <= index);
        match (epoch, noted) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Notes where entry `index` starts (after reading forward to it).
    pub fn note_position(&self, index: u64, base_offset: i64) {
        if index <= self.last_index() {
            self.noted.set(Some((index, base_offset)));
        }
    }

    /// The term of entry `index`, if the tail knows it (`index` 0: term 0).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.before.0 {
            return self.before.1;
        }
        self.row(index).map(|r| r.term)
    }

    /// The index and term of the entry whose batch starts at `base_offset`, if the tail
    /// knows it.
    pub fn entry_at(&self, base_offset: i64) -> Option<(u64, u64)> {
        let i = self.rows.partition_point(|r| r.base_offset < base_offset);
        let row = self.rows.get(i)?;
        (row.base_offset == base_offset).then_some((row.index, row.term))
    }

    /// The offsets `[base, next)` of entry `index`'s batch, if the tail knows it.
    pub fn offsets(&self, index: u64) -> Option<(i64, i64)> {
        self.row(index).map(|r| (r.base_offset, r.next_offset))
    }

    fn row(&self, index: u64) -> Option<&EntryRow> {
        let first = self.rows.front()?.index;
        let i = usize::try_from(index.checked_sub(first)?).ok()?;
        self.rows.get(i)
    }

    /// Applies the entries after the committed one to `producers` (producer state as of
    /// the committed entry), and records the transactions their markers close.
    pub(super) fn replay_uncommitted(
        &self,
        producers: &mut ProducerState,
        unstable_markers: &mut Vec<(i64, i64)>,
    ) {
        for row in self.rows.iter().filter(|r| r.index > self.committed) {
            apply_entry(
                producers,
                &row.info,
                row.kind,
                row.info.max_timestamp,
                |offset, first| unstable_markers.push((offset, first)),
            );
        }
    }

    pub(super) fn push(&mut self, row: EntryRow) {
        debug_assert_eq!(row.index, self.last_index() + 1);
        if self
            .epochs
            .assign(row.term, row.index, row.base_offset)
            .changed()
        {
            self.epochs_dirty = true;
        }
        self.rows.push_back(row);
    }

    /// The epochs (first index and offset of each term).
    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }

    /// The epochs to write, if they changed since last taken.
    pub(super) fn take_dirty_epochs(&mut self) -> Option<EpochCache> {
        std::mem::take(&mut self.epochs_dirty).then(|| self.epochs.clone())
    }
}

impl PartitionLog {
    /// The Raft view of a replicated log; `None` on a single node.
    pub fn raft(&self) -> Option<&RaftTail> {
        self.raft.as_ref()
    }

    /// The stored bytes of the batch `[base_offset, next_offset)` if the recent-batch cache
    /// still has it (a replicated log's leader sends entries from it).
    pub fn cached_batch(&self, base_offset: i64, next_offset: i64) -> Option<Bytes> {
        let batches = self.cache.read(base_offset, next_offset, 0)?;
        let batch = batches.first()?;
        (batch.base_offset == base_offset).then(|| batch.batch.to_bytes())
    }

    /// Kafka's `OffsetForLeaderEpoch` answer of a replicated log: the largest epoch at or
    /// below `epoch` and the offset where the next epoch starts (the log end for the
    /// latest); `None` on a single node.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let raft = self.raft.as_ref()?;
        Some(raft.epochs.end_offset_for(epoch, self.next_offset))
    }

    /// The epoch (Raft term) stamped into batches appended from now on.
    pub fn set_epoch(&mut self, epoch: i32) {
        self.epoch = epoch;
    }

    /// The epoch stamped into appended batches.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Appends a batch as the leader stored it (a follower placing a Raft entry of
    /// `term`): offsets are given here (they are the leader's, as entries are placed in
    /// the same order), producer state is applied without checks. Returns the entry's
    /// index.
    pub fn place(&mut self, records: Bytes, term: u64, now_ms: i64) -> Result<u64, AppendError> {
        if let Some(why) = &self.offline {
            return Err(AppendError::Offline(why.clone()));
        }
        if self.closed {
            return Err(AppendError::Offline("the log is closed".into()));
        }
        if self.raft.is_none() {
            return Err(AppendError::Offline("the log is not replicated".into()));
        }
        let epoch = i32::try_from(term)
            .map_err(|_| AppendError::InvalidBatch(format!("term {term} is too large")))?;
        let info = parse_batch(&records).map_err(|e| AppendError::InvalidBatch(e.to_string()))?;
        if info.len != records.len() {
            return Err(AppendError::InvalidBatch(format!(
                "entry of {} bytes holds a batch of {}",
                records.len(),
                info.len
            )));
        }
        let kind = if !info.is_control() {
            EntryKind::Data
        } else {
            match control_marker(&records) {
                Some(marker) => EntryKind::Marker {
                    marker,
                    coordinator_epoch: -1,
                },
                None => EntryKind::Control,
            }
        };
        let previous = std::mem::replace(&mut self.epoch, epoch);
        let placed = self.push_batch(records, &info, now_ms, kind);
        self.epoch = previous.max(epoch);
        apply_entry(
            &mut self.producers,
            &placed,
            kind,
            now_ms,
            |offset, first| self.unstable_markers.push((offset, first)),
        );
        Ok(self.raft.as_ref().map(|r| r.last_index()).unwrap_or(0))
    }

    /// Raft committed the entries up to `index` (clamped to the last one): the high
    /// watermark moves to their end as far as it is durable here. Returns whether the log
    /// now has work for the flusher (a rolled segment became sealable).
    pub fn commit_to(&mut self, index: u64) -> bool {
        let Some(raft) = &mut self.raft else {
            return false;
        };
        let index = index.min(raft.last_index());
        if index <= raft.committed {
            return false;
        }
        for row in raft.rows.iter().filter(|r| r.index > raft.committed) {
            if row.index > index {
                break;
            }
            apply_entry(
                &mut raft.committed_producers,
                &row.info,
                row.kind,
                row.info.max_timestamp,
                |_, _| {},
            );
            raft.committed_offset = row.next_offset;
        }
        raft.committed = index;
        let keep_from = index.saturating_sub(COMMITTED_ROWS_KEPT as u64);
        while raft.rows.front().is_some_and(|r| r.index <= keep_from) {
            let row = raft.rows.pop_front().expect("checked");
            raft.before = (row.index, Some(row.term));
        }
        self.advance_high_watermark();
        self.has_pending()
    }

    /// Drops every entry after `index` (a suffix conflicting with the leader's log).
    /// Committed entries are never dropped.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), TruncateError> {
        let Some(raft) = &mut self.raft else {
            return Err(TruncateError::NoEntry { index, last: 0 });
        };
        let last = raft.last_index();
        if index < raft.committed {
            return Err(TruncateError::Committed {
                index,
                committed: raft.committed,
            });
        }
        if index > last {
            return Err(TruncateError::NoEntry { index, last });
        }
        if index == last {
            return Ok(());
        }
        let first_cut = raft.row(index + 1).cloned().ok_or(TruncateError::NoEntry {
            index: index + 1,
            last,
        })?;
        let cut = first_cut.base_offset;
        let kept = usize::try_from(index + 1 - raft.rows.front().map(|r| r.index).unwrap_or(1))
            .expect("rows cover the uncommitted entries");
        raft.rows.truncate(kept);
        if raft.noted.get().is_some_and(|(i, _)| i > index) {
            raft.noted.set(None);
        }
        if raft.epochs.truncate_from_end(cut) > 0 {
            raft.epochs_dirty = true;
        }

        // Segments starting after the cut go; the last one starting at or before it is
        // cut and becomes the active segment.
        let keep = self
            .segments
            .partition_point(|s| s.base_offset <= cut)
            .max(1);
        let removed: Vec<Segment> = self.segments.drain(keep..).collect();
        for mut segment in removed {
            self.pending_bytes -= segment.pending.iter().map(|c| c.len()).sum::<usize>();
            if segment.seal.is_some() {
                self.seals_pending -= 1;
            }
            debug_assert!(!segment.settled, "a committed segment was truncated");
            // Its file may exist even if no job completed on it yet (one in flight may be
            // creating it): always deleted (a missing file is fine).
            self.take_file(&mut segment);
            self.doomed.push(segment.path.clone());
        }
        let in_flight = !self.links.is_empty();
        let seq_after = self.next_job_seq;
        let segment = self.segments.last_mut().expect("a log keeps a segment");
        let position = if first_cut.segment == segment.id {
            segment.index_builder = first_cut.builder_before.clone();
            first_cut.position
        } else {
            segment.len
        };
        if segment.seal.take().is_some() {
            self.seals_pending -= 1;
        }
        debug_assert!(!segment.settled, "a committed segment was truncated");
        segment.sealed = false;
        segment.trimmed = false;
        let from = segment.pending_from();
        if position < from {
            self.pending_bytes -= segment.pending.iter().map(|c| c.len()).sum::<usize>();
            segment.pending.clear();
            segment.rewrite_from = Some(position);
        } else {
            let mut at = from;
            let keep = segment
                .pending
                .iter()
                .take_while(|c| {
                    let kept = at < position;
                    at += c.len() as u64;
                    kept
                })
                .count();
            self.pending_bytes -= segment.pending[keep..]
                .iter()
                .map(|c| c.len())
                .sum::<usize>();
            segment.pending.truncate(keep);
        }
        if position < segment.durable_len {
            if align_down(position) == align_down(segment.durable_len) {
                segment
                    .tail_block
                    .truncate((position % BLOCK_BYTES) as usize);
            } else {
                // The job that cuts the file reads the partial block back.
                segment.tail_block.clear();
            }
            segment.durable_len = position;
        }
        segment.len = position;
        segment.next_offset = cut;
        segment.index.truncate_to_position(position);
        if in_flight {
            self.cuts.push(Cut {
                seq_after,
                segment: segment.id,
                position,
                offset: cut,
            });
        }

        self.next_offset = cut;
        self.durable_end = self.durable_end.min(cut);
        self.cache.truncate_from(cut);
        self.read_ahead.invalidate();
        self.unstable_markers.retain(|&(marker, _)| marker < cut);
        let raft = self.raft.as_ref().expect("checked");
        let mut producers = raft.committed_producers.clone();
        // Markers kept are already in `unstable_markers`.
        raft.replay_uncommitted(&mut producers, &mut Vec::new());
        self.producers = producers;
        tracing::debug!(dir = %self.dir.display(), index, offset = cut, "log truncated");
        Ok(())
    }
}

/// Bytes read back before the committed entry at reopen, for rows of committed entries a
/// lagging follower may still need.
pub const REOPEN_SCAN_BYTES: u64 = 8 << 20;

/// Reads the rows of a reopened log: up to [`COMMITTED_ROWS_KEPT`] entries before the
/// committed one (within [`REOPEN_SCAN_BYTES`]), the committed entry (ending at
/// `commit_offset`) and every entry after it. Indexes are counted back from the committed
/// entry. Runs on a blocking thread.
fn scan_rows(
    dir: &str,
    segments: Vec<ScanSegment>,
    commit: u64,
    commit_offset: i64,
    log_start: RaftStart,
    interval: u64,
) -> io::Result<VecDeque<EntryRow>> {
    use crate::storage::recovery::BATCH_BYTES_MAX_ON_DISK;
    use crate::storage::segment_walk::SegmentWalker;
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{dir}: {why}"));
    if segments.is_empty() {
        return Ok(VecDeque::new());
    }
    // Where to start: a batch boundary (an index entry, or a segment start) far enough
    // back, or the log start when nothing is committed.
    // Nothing committed in the log: the committed entry is the one before its start.
    let from_start = commit == log_start.index;
    let (first_segment, first_position) = if from_start {
        (0, 0)
    } else {
        let c = segments
            .partition_point(|s| s.base_offset < commit_offset)
            .saturating_sub(1);
        let relative =
            u32::try_from((commit_offset - 1 - segments[c].base_offset).max(0)).unwrap_or(u32::MAX);
        let at = segments[c]
            .index
            .lookup_offset(relative)
            .map_or(0, |e| u64::from(e.position));
        let boundary_from = |segment: &ScanSegment, from: u64| {
            segment
                .index
                .entries()
                .iter()
                .map(|e| u64::from(e.position))
                .find(|&p| p >= from)
        };
        if at >= REOPEN_SCAN_BYTES {
            (
                c,
                boundary_from(&segments[c], at - REOPEN_SCAN_BYTES).unwrap_or(at),
            )
        } else {
            let mut left = REOPEN_SCAN_BYTES - at;
            let mut start = (c, 0);
            while start.0 > 0 && left > 0 {
                let previous = &segments[start.0 - 1];
                if previous.len <= left {
                    left -= previous.len;
                    start = (start.0 - 1, 0);
                } else {
                    if let Some(p) = boundary_from(previous, previous.len - left) {
                        start = (start.0 - 1, p);
                    }
                    break;
                }
            }
            start
        }
    };

    let mut rows: Vec<EntryRow> = Vec::new();
    // Position in `rows` of the committed entry, once found.
    let mut committed_at: Option<usize> = if from_start { Some(usize::MAX) } else { None };
    for (i, segment) in segments.iter().enumerate().skip(first_segment) {
        let from = if i == first_segment {
            first_position
        } else {
            0
        };
        let entry = segment
            .index
            .entries()
            .iter()
            .find(|e| u64::from(e.position) == from)
            .copied();
        let mut builder = match entry {
            Some(e) => IndexBuilder::resume(interval, from, None, e.max_timestamp_before),
            None => IndexBuilder::new(interval),
        };
        if from > 0 && entry.is_none() {
            return Err(invalid(format!(
                "no index entry at {from} in {}",
                segment.path.display()
            )));
        }
        let mut scratch = crate::storage::index::SegmentIndex::new();
        let mut walker =
            SegmentWalker::open_at(&segment.path, from, segment.len, BATCH_BYTES_MAX_ON_DISK)?;
        loop {
            let (position, info) = match walker.next_batch() {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(stop) => {
                    return Err(invalid(format!(
                        "{}: {}",
                        segment.path.display(),
                        io::Error::from(stop)
                    )))
                }
            };
            let before = builder.clone();
            builder.add(&mut scratch, segment.base_offset, position, &info);
            let next_offset = info.last_offset() + 1;
            if committed_at.is_none() {
                if next_offset == commit_offset {
                    committed_at = Some(rows.len());
                } else if next_offset > commit_offset {
                    return Err(invalid(format!(
                        "the committed end {commit_offset} falls inside the batch at {}",
                        info.base_offset
                    )));
                }
            }
            let bytes = walker.batch();
            let term = i32::from_be_bytes(bytes[12..16].try_into().expect("a batch header"));
            let kind = if !info.is_control() {
                EntryKind::Data
            } else {
                match control_marker(bytes) {
                    Some(marker) => EntryKind::Marker {
                        marker,
                        coordinator_epoch: -1,
                    },
                    None => EntryKind::Control,
                }
            };
            rows.push(EntryRow {
                index: 0,
                term: u64::try_from(term).unwrap_or(0),
                base_offset: info.base_offset,
                next_offset,
                segment: segment.id,
                position,
                builder_before: before,
                info,
                kind,
            });
        }
    }
    // Number the rows: the committed one is `commit` (with nothing committed, the first
    // is 1), and keep no more than the rows Raft may ask about.
    let (first_index, keep_from) = match committed_at {
        Some(usize::MAX) => (log_start.index + 1, 0),
        Some(at) => {
            let first = commit
                .checked_sub(at as u64)
                .filter(|&f| f > log_start.index)
                .ok_or_else(|| invalid(format!("entry {commit} is preceded by {at} batches")))?;
            (first, at.saturating_sub(COMMITTED_ROWS_KEPT))
        }
        None => {
            return Err(invalid(format!(
                "no batch ends at the committed end {commit_offset}"
            )))
        }
    };
    let mut out = VecDeque::with_capacity(rows.len() - keep_from);
    for (i, mut row) in rows.into_iter().enumerate().skip(keep_from) {
        row.index = first_index + i as u64;
        out.push_back(row);
    }
    Ok(out)
}

/// Applies an entry's batch (as placed, with its offsets) to producer state;
/// `unstable(marker offset, first offset)` is told of a transaction a marker closed.
fn apply_entry(
    producers: &mut ProducerState,
    placed: &BatchInfo,
    kind: EntryKind,
    now_ms: i64,
    mut unstable: impl FnMut(i64, i64),
) {
    match kind {
        EntryKind::Data => producers.apply(placed, placed.base_offset, now_ms),
        EntryKind::Marker {
            marker,
            coordinator_epoch,
        } => {
            if let Some(first) = producers.apply_marker(
                placed,
                placed.base_offset,
                marker,
                coordinator_epoch,
                now_ms,
            ) {
                unstable(placed.base_offset, first);
            }
        }
        EntryKind::Control => {}
    }
}

/// A retention run on a replicated log, planned by [`PartitionLog::plan_raft_retention`]:
/// the segments to remove. Their entries' indexes are not kept (a row exists only for the
/// latest entries), so [`Self::run`] counts their batches on a blocking thread before
/// [`PartitionLog::complete_raft_retention`] removes them and moves the Raft start.
pub struct RetentionScan {
    start: RaftStart,
    /// (id, path, length) of each segment to remove, in order.
    segments: Vec<(u64, std::path::PathBuf, u64)>,
}

/// What [`RetentionScan::run`] found: batches at or after the old start, the term of
/// the last one and the offset after it.
pub struct RetentionCount {
    batches: u64,
    last_term: u64,
    end: i64,
}

impl RetentionScan {
    pub async fn run(&self) -> io::Result<RetentionCount> {
        let from = self.start.offset;
        let segments = self.segments.clone();
        glommio::executor()
            .spawn_blocking(move || count_batches(&segments, from))
            .await
    }
}

fn count_batches(
    segments: &[(u64, std::path::PathBuf, u64)],
    from: i64,
) -> io::Result<RetentionCount> {
    use crate::storage::recovery::BATCH_BYTES_MAX_ON_DISK;
    use crate::storage::segment_walk::SegmentWalker;
    let mut count = RetentionCount {
        batches: 0,
        last_term: 0,
        end: from,
    };
    for (_, path, len) in segments {
        let mut walker = SegmentWalker::open_at(path, 0, *len, BATCH_BYTES_MAX_ON_DISK)?;
        loop {
            let info = match walker.next_batch() {
                Ok(Some((_, info))) => info,
                Ok(None) => break,
                Err(stop) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {}", path.display(), io::Error::from(stop)),
                    ))
                }
            };
            if info.base_offset < from {
                continue;
            }
            let bytes = walker.batch();
            let term = i32::from_be_bytes(bytes[12..16].try_into().expect("a batch header"));
            count.batches += 1;
            count.last_term = u64::try_from(term).unwrap_or(0);
            count.end = info.last_offset() + 1;
        }
    }
    Ok(count)
}

/// Makes an installed snapshot durable (see [`super::raft_start`]): the log's files
/// closed, every segment deleted, the new start recorded.
pub struct InstallJob {
    dir: std::path::PathBuf,
    start: RaftStart,
    files: Vec<std::rc::Rc<glommio::io::DmaFile>>,
}

impl InstallJob {
    pub fn start(&self) -> RaftStart {
        self.start
    }

    pub async fn run(self) -> io::Result<()> {
        for file in self.files {
            let _ = file.close_rc().await;
        }
        let (dir, start) = (self.dir, self.start);
        glommio::executor()
            .spawn_blocking(move || super::raft_start::install(&dir, &start))
            .await
    }
}

impl PartitionLog {
    /// Plans retention (`retention.ms`, `retention.bytes`, segments below the log start)
    /// on a replicated log: whole committed segments only; the active segment is not
    /// rolled for it. `None` if nothing is due.
    pub fn plan_raft_retention(&self, now_ms: i64) -> Option<RetentionScan> {
        let raft = self.raft.as_ref()?;
        if self.closed || self.offline.is_some() || !self.links.is_empty() {
            return None;
        }
        let remove = self.expired_prefix(now_ms);
        if remove == 0 {
            return None;
        }
        Some(RetentionScan {
            start: raft.start,
            segments: self.segments[..remove]
                .iter()
                .map(|s| (s.id, s.path.clone(), s.durable_len))
                .collect(),
        })
    }

    /// Removes the segments a [`RetentionScan`] counted, if the log still starts with
    /// them, and moves the Raft start past their last entry. Returns the job that records
    /// the new start and deletes their files.
    pub fn complete_raft_retention(
        &mut self,
        scan: RetentionScan,
        counted: io::Result<RetentionCount>,
    ) -> Option<RemovalJob> {
        let counted = match counted {
            Ok(counted) => counted,
            Err(err) => {
                tracing::error!(dir = %self.dir.display(), %err, "cannot count the batches retention would remove; nothing removed");
                return None;
            }
        };
        let raft = self.raft.as_ref()?;
        let n = scan.segments.len();
        let unchanged = raft.start == scan.start
            && self.segments.len() > n
            && self.links.is_empty()
            && self.segments[..n]
                .iter()
                .zip(&scan.segments)
                .all(|(s, (id, _, len))| s.id == *id && s.settled && s.durable_len == *len);
        if !unchanged || counted.batches == 0 {
            return None;
        }
        let new_offset = self.segments[n].base_offset;
        let start = RaftStart {
            offset: new_offset,
            index: scan.start.index + counted.batches,
            term: counted.last_term,
        };
        let rows_agree = raft
            .entry_at(new_offset)
            .is_none_or(|(index, _)| index == start.index + 1);
        if counted.end != new_offset
            || start.index >= raft.committed
            || !rows_agree
            || !raft.epochs.agrees(new_offset, start.index + 1)
        {
            tracing::error!(
                dir = %self.dir.display(),
                ?start,
                end = counted.end,
                committed = raft.committed,
                "retention's count of entries disagrees with the log; nothing removed"
            );
            return None;
        }
        let mut job = self.remove_prefix(n)?;
        job.raft_start = Some(start);
        let raft = self.raft.as_mut().expect("checked");
        raft.start = start;
        while raft.rows.front().is_some_and(|r| r.index <= start.index) {
            raft.rows.pop_front();
        }
        if raft.rows.front().is_none_or(|r| r.index == start.index + 1) {
            raft.before = (start.index, Some(start.term));
        }
        if raft.noted.get().is_some_and(|(i, _)| i <= start.index) {
            raft.noted.set(None);
        }
        if raft.epochs.truncate_from_start(new_offset, start.index + 1) {
            raft.epochs_dirty = true;
        }
        Some(job)
    }

    /// Installs a snapshot the leader sent (its log no longer has the entries this one
    /// needs next): the whole log goes, and it starts empty at `start`, its entries up to
    /// `start.index` committed. Returns the job that makes it durable, which must run
    /// before anything else is written. Refused while flush jobs are in flight.
    pub fn install_snapshot(&mut self, start: RaftStart) -> Result<InstallJob, String> {
        if self.raft.is_none() {
            return Err("the log is not replicated".into());
        }
        if !self.links.is_empty() {
            return Err("flush jobs are in flight".into());
        }
        if let Some(why) = &self.offline {
            return Err(why.clone());
        }
        let mut removed: Vec<Segment> = self.segments.drain(..).collect();
        let files = removed
            .iter_mut()
            .filter_map(|s| self.take_file(s))
            .collect();
        self.next_segment_id += 1;
        self.segments.push(Segment::new(
            self.next_segment_id,
            &self.dir,
            start.offset,
            self.config.index_interval_bytes,
        ));
        self.pending_bytes = 0;
        self.seals_pending = 0;
        self.cuts.clear();
        // The install deletes every segment file.
        self.doomed.clear();
        self.next_offset = start.offset;
        self.durable_end = start.offset;
        self.high_watermark = start.offset;
        self.log_start_offset = start.offset;
        self.unsynced_messages = 0;
        self.unsynced_since_ms = None;
        self.cache.clear();
        self.read_ahead.invalidate();
        self.producers = ProducerState::default();
        self.unstable_markers.clear();
        self.compacted_through = start.offset;
        let raft = self.raft.as_mut().expect("checked");
        raft.rows.clear();
        raft.before = (start.index, Some(start.term));
        raft.start = start;
        raft.noted.set(None);
        raft.committed = start.index;
        raft.committed_offset = start.offset;
        raft.committed_producers = ProducerState::default();
        raft.epochs = EpochCache::new();
        raft.epochs_dirty = true;
        tracing::info!(dir = %self.dir.display(), ?start, segments = removed.len(), "installing the leader's snapshot: the log starts again there");
        Ok(InstallJob {
            dir: self.dir.clone(),
            start,
            files,
        })
    }
}
