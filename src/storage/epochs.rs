//! The leader-epoch cache of a replicated partition: for every Raft term that has entries in
//! the log, the Raft index and the Kafka offset of its first entry (Kafka's
//! `LeaderEpochFileCache`, plus the index column Raft needs).
//!
//! In a replicated partition one Raft entry is one record batch, the entry's term is the
//! batch's `partitionLeaderEpoch` and its index is the batch's ordinal in the partition
//! (dense, from 1). Terms only grow along a Raft log, so the terms present in it form a few
//! runs; a row per run answers, without I/O:
//! - [`EpochCache::term_of_index`]: Raft's `Storage::term` (which must never fail for an
//!   index in the log: raft-rs treats a term error as fatal);
//! - [`EpochCache::end_offset_for`]: OffsetForLeaderEpoch, with Kafka's exact rule;
//! - [`EpochCache::term_of_offset`]: the leader epoch of a fetched or listed offset.
//!
//! Rows are strictly increasing in all three columns. A row is added when the first entry of
//! a new term is placed ([`EpochCache::assign`]), rows are cut when the log's suffix is
//! truncated ([`EpochCache::truncate_from_end`]) and the first row is moved up when retention
//! or DeleteRecords moves the log start ([`EpochCache::truncate_from_start`]).
//!
//! **Terms are `u64`**, as raft-rs has them (`Entry.term`, `Storage::term`, `HardState.term`),
//! so the Raft paths, which are the frequent callers, convert nothing. A term is also stored
//! in each batch's 32-bit `partitionLeaderEpoch`, so a term above `i32::MAX` cannot be placed
//! at all; [`EpochCache::assign`] refuses it and reading a file with one is an error. Every
//! stored term therefore converts losslessly to Kafka's `int32` epoch, which only
//! [`EpochCache::end_offset_for`] (the Kafka-facing answer, with its `-1` sentinels) does.
//!
//! **Persistence**: `leader-epoch.checkpoint` in the partition directory ([`EPOCH_FILE`]),
//! Kafka's checkpoint text format (a version line, a count line, one line per row) with a
//! third column:
//!
//! ```text
//! 1                    version
//! 2                    row count
//! 1 0 1                term start_offset first_index
//! 4 1500 37
//! ```
//!
//! It is not Kafka's file: not its name (`leader-epoch-checkpoint`) and not its version (0,
//! two columns). A Kafka tool pointed at a Strand data directory finds no file it would
//! misread, and if the file is copied under Kafka's name, Kafka's reader stops at the version
//! line ("Unrecognised version") instead of at the first row. The name's `.checkpoint`
//! suffix matches `log-start-offset.checkpoint`, and its temp file during a write,
//! `leader-epoch.checkpoint.tmp`, is removed by recovery like every `*.tmp`.
//!
//! The file is a cache: it is written after the data it describes is durable, and the log
//! (each batch carries its epoch) is the truth. So a missing file reads as empty, and a
//! corrupt one is an error naming the path and line, on which the caller rebuilds the rows
//! from the log. Writes are rare (a new term, a truncation, retention) and blocking
//! ([`EpochCache::write_blocking`], or [`EpochCache::write`] on a blocking thread); the
//! caller orders them (one partition's writes are issued one after the other, as its flush
//! jobs complete).

use std::io;
use std::path::Path;

/// The checkpoint file's name in a partition directory.
pub const EPOCH_FILE: &str = "leader-epoch.checkpoint";

/// The version line of [`EPOCH_FILE`]: Kafka's version 0 has two columns, this has three.
const FILE_VERSION: u32 = 1;

/// Kafka's `OffsetsForLeaderEpochResponse.UNDEFINED_EPOCH`.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `OffsetsForLeaderEpochResponse.UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The largest term a batch header can carry (`partitionLeaderEpoch` is an `int32`).
pub const TERM_MAX: u64 = i32::MAX as u64;

/// One row: `term`'s first entry is at `first_index`, its first offset is `start_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub term: u64,
    pub first_index: u64,
    pub start_offset: i64,
}

/// What [`EpochCache::assign`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assigned {
    /// A new row at the end.
    Appended,
    /// Nothing: the entry continues the latest row's term.
    Unchanged,
    /// `removed` rows at or past the entry's position were dropped (as if the log's suffix
    /// had been truncated there) and a row for the entry was appended, unless the row left
    /// before it already has its term.
    Rewrote { removed: usize },
    /// Nothing: the arguments are invalid or the entry's term is below the term of an
    /// earlier entry. Logged at error level; Raft never places such an entry.
    Refused,
}

impl Assigned {
    /// Whether the rows changed (and the checkpoint should be written).
    pub fn changed(self) -> bool {
        matches!(self, Assigned::Appended | Assigned::Rewrote { .. })
    }
}

/// The rows of one partition, strictly increasing in every column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn new() -> EpochCache {
        EpochCache::default()
    }

    /// A cache holding `entries`, if they are valid rows (see [`EpochCache`]), e.g. the
    /// epochs carried by a snapshot.
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<EpochCache, String> {
        let mut previous = None;
        for entry in &entries {
            check_row(entry, previous)?;
            previous = Some(*entry);
        }
        Ok(EpochCache { entries })
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The row of the latest term.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The first row (the term of the log's first retained entry).
    pub fn earliest(&self) -> Option<EpochEntry> {
        self.entries.first().copied()
    }

    /// Records that the entry at `first_index`, whose first offset is `start_offset`, has
    /// `term`: called for every entry placed at the log end (it is O(1) unless it changes
    /// something), or at least for the first entry of each term.
    ///
    /// As Kafka's `LeaderEpochFileCache.assign`: nothing to do if the latest row has this
    /// term and starts at or before the entry; otherwise rows at or past the entry's
    /// position are stale (the log was cut there) and are dropped — a warning if that
    /// removed more than an empty row at the same position — and the new row appended.
    /// Two departures, both for Raft's invariant that terms never decrease along the log:
    /// Kafka also drops earlier rows whose epoch is ≥ the new one; here an earlier row with
    /// a higher term refuses the assignment (logged as an error), and an earlier row with
    /// the same term is kept (the entry continues it) where Kafka would move its start up to
    /// the entry. Kafka throws on a negative epoch or offset; here an invalid argument
    /// (negative offset, index 0, term above [`TERM_MAX`]) is refused.
    pub fn assign(&mut self, term: u64, first_index: u64, start_offset: i64) -> Assigned {
        let new = EpochEntry {
            term,
            first_index,
            start_offset,
        };
        if start_offset < 0 || first_index == 0 || term > TERM_MAX {
            tracing::error!(?new, "refused an invalid leader-epoch entry");
            return Assigned::Refused;
        }
        if let Some(last) = self.entries.last() {
            if last.term == term
                && last.first_index <= first_index
                && last.start_offset <= start_offset
            {
                return Assigned::Unchanged;
            }
        }
        // Rows wholly before the entry stay; the rest start at or past it.
        let keep = self
            .entries
            .partition_point(|e| e.first_index < first_index && e.start_offset < start_offset);
        let before = keep.checked_sub(1).map(|i| self.entries[i]);
        if before.is_some_and(|b| b.term > term) {
            tracing::error!(
                ?new,
                earlier = ?before,
                "refused a leader-epoch entry whose term is below an earlier entry's"
            );
            return Assigned::Refused;
        }
        let removed: Vec<EpochEntry> = self.entries.drain(keep..).collect();
        if before.is_none_or(|b| b.term < term) {
            self.entries.push(new);
        }
        if removed.is_empty() {
            return Assigned::Appended;
        }
        // As Kafka: replacing one row that started at the same position is expected (no
        // data had been placed in its term); anything else means the log was cut without
        // the cache being told.
        if removed.len() > 1 || removed[0].start_offset != start_offset {
            tracing::warn!(
                ?new,
                ?removed,
                rows = self.entries.len(),
                "new leader-epoch entry dropped conflicting entries"
            );
        } else {
            tracing::debug!(?new, ?removed, "leader-epoch entry replaced");
        }
        Assigned::Rewrote {
            removed: removed.len(),
        }
    }

    /// The log's suffix from `end_offset` on was removed: drops the rows that start at or
    /// after it (Kafka's `truncateFromEnd`, which ignores a negative offset). Returns how
    /// many were dropped.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> usize {
        if end_offset < 0 {
            return 0;
        }
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let removed = self.entries.len() - keep;
        self.entries.truncate(keep);
        if removed > 0 {
            tracing::debug!(
                end_offset,
                removed,
                rows = self.entries.len(),
                "leader-epoch entries truncated from the end"
            );
        }
        removed
    }

    /// The log now starts at offset `start_offset`, in the entry at `start_index`
    /// (retention, DeleteRecords, a snapshot): as Kafka's `truncateFromStart`, the rows that
    /// start at or before it are dropped and the last of them comes back starting there —
    /// so the first row always starts at the log start — and a start before the first row
    /// changes nothing. `start_offset` may be inside the entry (DeleteRecords). Refused,
    /// with an error logged, if the offset and index disagree about which rows start before
    /// them. Returns whether the rows changed.
    pub fn truncate_from_start(&mut self, start_offset: i64, start_index: u64) -> bool {
        let by_offset = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let by_index = self
            .entries
            .partition_point(|e| e.first_index <= start_index);
        if by_offset != by_index {
            tracing::error!(
                start_offset,
                start_index,
                entries = ?self.entries,
                "refused to truncate leader-epoch entries: offset and index disagree"
            );
            return false;
        }
        if by_offset == 0 {
            return false;
        }
        let term = self.entries[by_offset - 1].term;
        let first = EpochEntry {
            term,
            first_index: start_index,
            start_offset,
        };
        let changed = by_offset > 1 || self.entries[0] != first;
        self.entries.drain(..by_offset - 1);
        self.entries[0] = first;
        if changed {
            tracing::debug!(
                ?first,
                rows = self.entries.len(),
                "leader-epoch entries truncated from the start"
            );
        }
        changed
    }

    /// Whether the entry at `index` starting at `offset` is consistent with the rows: as
    /// many rows start at or before the one as the other.
    pub fn agrees(&self, offset: i64, index: u64) -> bool {
        self.entries.partition_point(|e| e.start_offset <= offset)
            == self.entries.partition_point(|e| e.first_index <= index)
    }

    /// The term of the entry at `index`: the row with the greatest `first_index` ≤ `index`.
    /// `None` below the first row. The cache does not know where the log ends: above it,
    /// the latest term is returned, and the caller checks the range first.
    pub fn term_of_index(&self, index: u64) -> Option<u64> {
        let at = self.entries.partition_point(|e| e.first_index <= index);
        at.checked_sub(1).map(|i| self.entries[i].term)
    }

    /// The term of the entry holding `offset` (Kafka's `epochForOffset`): `None` below the
    /// first row, the latest term above the last.
    pub fn term_of_offset(&self, offset: i64) -> Option<u64> {
        let at = self.entries.partition_point(|e| e.start_offset <= offset);
        at.checked_sub(1).map(|i| self.entries[i].term)
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor(requestedEpoch, logEndOffset)`, branch for
    /// branch, returning `(epoch, end offset)`:
    /// 1. `requested == UNDEFINED_EPOCH` → `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`;
    /// 2. the latest term is `requested` → `(requested, log_end_offset)`;
    /// 3. no term above `requested` (also: empty cache) → `(-1, -1)`;
    /// 4. no term at or below `requested` → `(requested, start of the first term above)`;
    /// 5. else → `(greatest term ≤ requested, start of the first term above it)`.
    ///
    /// Any other negative `requested` goes through 3–5 as in Kafka (so it is answered with
    /// itself and the first row's start when the cache is not empty).
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        let requested_wide = i64::from(requested);
        if self
            .latest()
            .is_some_and(|e| e.term as i64 == requested_wide)
        {
            return (requested, log_end_offset);
        }
        // Rows whose term is ≤ requested form a prefix (terms strictly increase).
        let higher = self
            .entries
            .partition_point(|e| e.term as i64 <= requested_wide);
        let Some(higher_entry) = self.entries.get(higher) else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        match higher.checked_sub(1) {
            None => (requested, higher_entry.start_offset),
            // Stored terms are ≤ TERM_MAX = i32::MAX, so the conversion is exact.
            Some(floor) => (self.entries[floor].term as i32, higher_entry.start_offset),
        }
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> String {
        let mut text = format!("{FILE_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!(
                "{} {} {}\n",
                e.term, e.start_offset, e.first_index
            ));
        }
        text
    }

    /// Parses a checkpoint file's text; `path` names it in errors, with the 1-based line.
    /// An empty text is an empty cache (as Kafka reads an empty file).
    pub fn decode(text: &str, path: &Path) -> io::Result<EpochCache> {
        let bad = |line: usize, what: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{line}: {what}", path.display()),
            )
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        let Some((n, version)) = lines.next() else {
            return Ok(EpochCache::new());
        };
        if version.parse::<u32>().ok() != Some(FILE_VERSION) {
            return Err(bad(
                n,
                format!("version {version:?}, expected {FILE_VERSION}"),
            ));
        }
        let (n, count) = lines
            .next()
            .ok_or_else(|| bad(n + 1, "missing the row count".into()))?;
        let count: usize = count
            .parse()
            .map_err(|_| bad(n, format!("row count {count:?} is not a number")))?;
        let mut entries: Vec<EpochEntry> = Vec::new();
        let mut last_line = n;
        for (n, line) in lines {
            last_line = n;
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let parsed = match fields[..] {
                [term, offset, index] => term
                    .parse::<u64>()
                    .ok()
                    .zip(offset.parse::<i64>().ok())
                    .zip(index.parse::<u64>().ok()),
                _ => None,
            };
            let Some(((term, start_offset), first_index)) = parsed else {
                return Err(bad(
                    n,
                    format!("{line:?} is not \"term start_offset first_index\""),
                ));
            };
            let entry = EpochEntry {
                term,
                first_index,
                start_offset,
            };
            check_row(&entry, entries.last().copied()).map_err(|what| bad(n, what))?;
            entries.push(entry);
        }
        if entries.len() != count {
            return Err(bad(
                last_line,
                format!("{} rows, the count line says {count}", entries.len()),
            ));
        }
        Ok(EpochCache { entries })
    }

    /// Reads `dir`'s checkpoint: empty if there is none. Blocking.
    pub fn read(dir: &Path) -> io::Result<EpochCache> {
        let path = dir.join(EPOCH_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => EpochCache::decode(&text, &path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(EpochCache::new()),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }

    /// Writes `dir`'s checkpoint atomically (temp file, `fdatasync`, rename, directory
    /// sync). Blocking.
    pub fn write_blocking(&self, dir: &Path) -> io::Result<()> {
        super::record_file::write_atomically(&dir.join(EPOCH_FILE), self.encode().as_bytes())
    }

    /// [`write_blocking`](Self::write_blocking) of the rows as they are now, on a blocking
    /// thread of the current glommio executor.
    pub async fn write(&self, dir: &Path) -> io::Result<()> {
        let cache = self.clone();
        let dir = dir.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || cache.write_blocking(&dir))
            .await
    }
}

/// Whether `entry` is a valid row after `previous`.
fn check_row(entry: &EpochEntry, previous: Option<EpochEntry>) -> Result<(), String> {
    if entry.term > TERM_MAX {
        return Err(format!("term {} is above {TERM_MAX}", entry.term));
    }
    if entry.start_offset < 0 || entry.first_index == 0 {
        return Err(format!(
            "offset {} or index {} out of range",
            entry.start_offset, entry.first_index
        ));
    }
    if let Some(p) = previous {
        if entry.term <= p.term
            || entry.first_index <= p.first_index
            || entry.start_offset <= p.start_offset
        {
            return Err(format!(
                "row {entry:?} does not follow {p:?} (every column must increase)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(term: u64, first_index: u64, start_offset: i64) -> EpochEntry {
        EpochEntry {
            term,
            first_index,
            start_offset,
        }
    }

    /// A cache built by assigning `(term, index, offset)` triples in order.
    fn cache_of(rows: &[(u64, u64, i64)]) -> EpochCache {
        let mut cache = EpochCache::new();
        for &(t, i, o) in rows {
            cache.assign(t, i, o);
        }
        cache
    }

    /// Kafka's tests speak of offsets only: one record per batch, so index = offset + 1.
    fn kafka_assign(cache: &mut EpochCache, epoch: u64, offset: i64) -> Assigned {
        cache.assign(epoch, offset as u64 + 1, offset)
    }

    fn rows(cache: &EpochCache) -> Vec<(u64, u64, i64)> {
        cache
            .entries()
            .iter()
            .map(|e| (e.term, e.first_index, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_appends_new_terms_and_ignores_the_same_term_later() {
        let mut cache = EpochCache::new();
        assert_eq!(cache.latest(), None);
        assert_eq!(cache.assign(1, 1, 0), Assigned::Appended);
        // Later entries of the same term change nothing (every placement may call assign).
        assert_eq!(cache.assign(1, 2, 10), Assigned::Unchanged);
        assert_eq!(cache.assign(1, 1, 0), Assigned::Unchanged);
        assert_eq!(cache.assign(3, 5, 40), Assigned::Appended);
        assert_eq!(cache.assign(3, 6, 41), Assigned::Unchanged);
        assert_eq!(rows(&cache), vec![(1, 1, 0), (3, 5, 40)]);
        assert_eq!(cache.latest(), Some(row(3, 5, 40)));
        assert_eq!(cache.earliest(), Some(row(1, 1, 0)));
        // Kafka shouldNotUpdateEpochAndStartOffsetIfItDidNotChange: (2,6) then (2,7) → (2,6).
        let mut kafka = EpochCache::new();
        kafka_assign(&mut kafka, 2, 6);
        assert_eq!(kafka_assign(&mut kafka, 2, 7), Assigned::Unchanged);
        assert_eq!(kafka.entries(), &[row(2, 7, 6)]);
        assert!(Assigned::Appended.changed());
        assert!(Assigned::Rewrote { removed: 1 }.changed());
        assert!(!Assigned::Unchanged.changed());
        assert!(!Assigned::Refused.changed());
    }

    #[test]
    fn assign_refuses_invalid_arguments() {
        let mut cache = cache_of(&[(1, 1, 0)]);
        assert_eq!(cache.assign(2, 5, -1), Assigned::Refused);
        assert_eq!(cache.assign(2, 0, 5), Assigned::Refused);
        assert_eq!(cache.assign(TERM_MAX + 1, 5, 5), Assigned::Refused);
        assert_eq!(rows(&cache), vec![(1, 1, 0)]);
        // The largest term a batch can carry is accepted.
        assert_eq!(cache.assign(TERM_MAX, 5, 5), Assigned::Appended);
        // Term 0 is a valid epoch (Kafka's first leader epoch).
        assert_eq!(EpochCache::new().assign(0, 1, 0), Assigned::Appended);
    }

    #[test]
    fn assign_at_an_earlier_position_drops_the_rows_past_it_as_kafka() {
        // Kafka shouldTruncateIfMatchingEpochButEarlierStartingOffset:
        // (5,11) (6,12) (7,13), then (7,12) → epochs 5@11, 7@12.
        let mut cache = EpochCache::new();
        for (e, o) in [(5, 11), (6, 12), (7, 13)] {
            kafka_assign(&mut cache, e, o);
        }
        assert_eq!(
            kafka_assign(&mut cache, 7, 12),
            Assigned::Rewrote { removed: 2 }
        );
        assert_eq!(rows(&cache), vec![(5, 12, 11), (7, 13, 12)]);
        assert_eq!(cache.end_offset_for(5, 0), (5, 12));
        assert_eq!(cache.end_offset_for(6, 0), (5, 12));

        // Kafka shouldEnforceOffsetsIncreaseMonotonically: (2,6) then (3,5) → [(3,5)].
        let mut cache = EpochCache::new();
        kafka_assign(&mut cache, 2, 6);
        assert_eq!(
            kafka_assign(&mut cache, 3, 5),
            Assigned::Rewrote { removed: 1 }
        );
        assert_eq!(cache.entries(), &[row(3, 6, 5)]);

        // Kafka shouldIncreaseAndTrackEpochsAsLeadersChangeManyTimes: a new epoch at the
        // same start as the latest (no data in it) replaces it.
        let mut cache = EpochCache::new();
        kafka_assign(&mut cache, 0, 0);
        assert_eq!(
            kafka_assign(&mut cache, 1, 0),
            Assigned::Rewrote { removed: 1 }
        );
        assert_eq!(cache.entries(), &[row(1, 1, 0)]);
        assert_eq!(cache.end_offset_for(1, 0), (1, 0));
        assert_eq!(cache.end_offset_for(0, 0), (0, 0));
        assert_eq!(cache.end_offset_for(1, 5), (1, 5));
        kafka_assign(&mut cache, 2, 5);
        assert_eq!(cache.end_offset_for(2, 10), (2, 10));
        assert_eq!(cache.end_offset_for(1, 10), (1, 5));
        assert_eq!(cache.end_offset_for(0, 10), (0, 0));

        // A lower term at an earlier position, after a kept row with a lower term still.
        let mut cache = cache_of(&[(3, 5, 10), (5, 20, 100)]);
        assert_eq!(cache.assign(4, 15, 50), Assigned::Rewrote { removed: 1 });
        assert_eq!(rows(&cache), vec![(3, 5, 10), (4, 15, 50)]);
    }

    #[test]
    fn assign_keeps_an_earlier_row_of_the_same_term() {
        // Rows 5@10, 6@20, then an entry of term 5 at index 15: the log was cut inside
        // term 5's run, which goes on. Kafka would drop 5@10 too (epoch ≥ 5) and start
        // epoch 5 at the entry; here 5@10 stays, so entries 10..14 keep their term.
        let mut cache = cache_of(&[(5, 10, 100), (6, 20, 200)]);
        assert_eq!(cache.assign(5, 15, 150), Assigned::Rewrote { removed: 1 });
        assert_eq!(rows(&cache), vec![(5, 10, 100)]);
        assert_eq!(cache.term_of_index(12), Some(5));
    }

    #[test]
    fn assign_refuses_a_term_below_an_earlier_entry() {
        // Kafka shouldEnforceMonotonicallyIncreasingEpochs: (1,5) (2,6) then (1,7) leaves
        // Kafka with [(1,7)]. In a Raft log a term never decreases, so this is refused and
        // the rows, which describe the log before the entry correctly, are kept.
        let mut cache = EpochCache::new();
        kafka_assign(&mut cache, 1, 5);
        kafka_assign(&mut cache, 2, 6);
        assert_eq!(kafka_assign(&mut cache, 1, 7), Assigned::Refused);
        assert_eq!(rows(&cache), vec![(1, 6, 5), (2, 7, 6)]);
    }

    #[test]
    fn rows_stay_strictly_increasing_under_any_assignments() {
        // Seeded pseudo-random assignments: whatever assign accepts, the rows stay valid.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut cache = EpochCache::new();
        let mut outcomes = std::collections::HashMap::new();
        for _ in 0..10_000 {
            let term = next(20);
            let index = 1 + next(100);
            let offset = (index as i64) * 10 + next(10) as i64;
            match next(10) {
                0 => {
                    cache.truncate_from_end(next(1000) as i64);
                }
                1 => {
                    cache.truncate_from_start(index as i64 * 10, index);
                }
                _ => {
                    let outcome = match cache.assign(term, index, offset) {
                        Assigned::Rewrote { .. } => "rewrote",
                        other => {
                            if other == Assigned::Appended {
                                "appended"
                            } else if other == Assigned::Unchanged {
                                "unchanged"
                            } else {
                                "refused"
                            }
                        }
                    };
                    *outcomes.entry(outcome).or_insert(0) += 1;
                }
            }
            EpochCache::from_entries(cache.entries().to_vec()).unwrap();
        }
        // Every kind of outcome was exercised.
        for outcome in ["appended", "unchanged", "rewrote", "refused"] {
            assert!(
                outcomes.get(outcome).copied().unwrap_or(0) > 100,
                "{outcomes:?}"
            );
        }
    }

    #[test]
    fn truncate_from_end_drops_rows_starting_at_or_after_the_end() {
        let base = cache_of(&[(1, 1, 0), (3, 5, 40), (7, 9, 100)]);
        let mut cache = base.clone();
        // Kafka truncateFromEnd ignores a negative offset, and an end past every start.
        assert_eq!(cache.truncate_from_end(-1), 0);
        assert_eq!(cache.truncate_from_end(101), 0);
        assert_eq!(cache, base);
        // An end exactly at a row's start drops that row.
        assert_eq!(cache.truncate_from_end(100), 1);
        assert_eq!(rows(&cache), vec![(1, 1, 0), (3, 5, 40)]);
        // An end inside a run keeps the run's row.
        assert_eq!(cache.truncate_from_end(41), 0);
        assert_eq!(cache.truncate_from_end(0), 2);
        assert!(cache.is_empty());
    }

    #[test]
    fn truncate_from_start_moves_the_covering_row_up() {
        let base = cache_of(&[(1, 1, 0), (3, 5, 40), (7, 9, 100)]);
        // Before the first row, or exactly at it: nothing changes.
        let mut cache = cache_of(&[(3, 5, 40), (7, 9, 100)]);
        assert!(!cache.truncate_from_start(30, 4));
        assert!(!cache.truncate_from_start(40, 5));
        assert_eq!(rows(&cache), vec![(3, 5, 40), (7, 9, 100)]);
        // Inside a run (offset 50 in the entry at index 6): the row starts there.
        let mut cache = base.clone();
        assert!(cache.truncate_from_start(50, 6));
        assert_eq!(rows(&cache), vec![(3, 6, 50), (7, 9, 100)]);
        // Exactly at a row's start (Kafka: "truncateFromStart(6) will retain an entry at 6").
        let mut cache = base.clone();
        assert!(cache.truncate_from_start(100, 9));
        assert_eq!(rows(&cache), vec![(7, 9, 100)]);
        // Mid-entry offset (DeleteRecords): the entry holding it is the new first.
        let mut cache = base.clone();
        assert!(cache.truncate_from_start(43, 5));
        assert_eq!(rows(&cache), vec![(3, 5, 43), (7, 9, 100)]);
        // Past the last row (the whole log deleted up to a later start).
        let mut cache = base.clone();
        assert!(cache.truncate_from_start(500, 40));
        assert_eq!(rows(&cache), vec![(7, 40, 500)]);
        // Offset and index that disagree are refused.
        let mut cache = base.clone();
        assert!(!cache.truncate_from_start(50, 10));
        assert!(!cache.truncate_from_start(150, 6));
        assert_eq!(cache, base);
    }

    #[test]
    fn term_of_index_and_offset_at_row_boundaries() {
        let mut cache = cache_of(&[(1, 1, 0), (3, 5, 40), (7, 9, 100)]);
        let by_index = [
            (0, None),
            (1, Some(1)),
            (4, Some(1)),
            (5, Some(3)),
            (8, Some(3)),
            (9, Some(7)),
            (1_000, Some(7)),
        ];
        for (index, term) in by_index {
            assert_eq!(cache.term_of_index(index), term, "index {index}");
        }
        // Kafka epochForOffset: exact start, inside a run, before the first.
        let by_offset = [
            (-1, None),
            (0, Some(1)),
            (39, Some(1)),
            (40, Some(3)),
            (99, Some(3)),
            (100, Some(7)),
            (5_000, Some(7)),
        ];
        for (offset, term) in by_offset {
            assert_eq!(cache.term_of_offset(offset), term, "offset {offset}");
        }
        // After retention the entries below the start have no term here (the caller's
        // anchor answers for the one just before the start).
        cache.truncate_from_start(50, 6);
        assert_eq!(cache.term_of_index(5), None);
        assert_eq!(cache.term_of_index(6), Some(3));
        assert_eq!(cache.term_of_offset(49), None);
        assert_eq!(cache.term_of_offset(50), Some(3));
        assert_eq!(EpochCache::new().term_of_index(1), None);
    }

    #[test]
    fn end_offset_for_follows_kafka_branch_by_branch() {
        // 1. UNDEFINED_EPOCH requested: (-1, -1), empty cache or not (Kafka
        //    shouldReturnUnsupportedIfNoEpochRecordedAndUndefinedEpochRequested).
        let empty = EpochCache::new();
        assert_eq!(empty.end_offset_for(UNDEFINED_EPOCH, 73), (-1, -1));
        let cache = cache_of(&[(0, 11, 10), (2, 14, 13), (4, 18, 17)]);
        assert_eq!(cache.end_offset_for(UNDEFINED_EPOCH, 73), (-1, -1));
        // 3. with an empty cache: nothing is above (shouldReturnUnsupportedIfNoEpochRecorded).
        assert_eq!(empty.end_offset_for(0, 0), (-1, -1));
        // 2. the latest epoch: the log end offset (shouldSupportEpochsThatDoNotStartFromZero).
        assert_eq!(cache.end_offset_for(4, 25), (4, 25));
        // 3. above the latest epoch: (-1, -1)
        //    (shouldReturnInvalidOffsetIfEpochIsRequestedWhichIsNotCurrentlyTracked).
        assert_eq!(cache.end_offset_for(5, 25), (-1, -1));
        assert_eq!(cache.end_offset_for(i32::MAX, 25), (-1, -1));
        // 5. floor and next (shouldReturnNextAvailableEpochIfThereIsNoExactEpochForTheOneRequested):
        //    (0,10) (2,13) (4,17) → 1 → (0,13), 2 → (2,17), 3 → (2,17).
        assert_eq!(cache.end_offset_for(0, 25), (0, 13));
        assert_eq!(cache.end_offset_for(1, 25), (0, 13));
        assert_eq!(cache.end_offset_for(2, 25), (2, 17));
        assert_eq!(cache.end_offset_for(3, 25), (2, 17));
        // 4. below the first epoch: the requested epoch and the first epoch's start
        //    (shouldReturnFirstEpochIfRequestedEpochLessThanFirstEpoch: (5,11) (6,12) (7,13),
        //    4 → (4, 11)).
        let cache = cache_of(&[(5, 12, 11), (6, 13, 12), (7, 14, 13)]);
        assert_eq!(cache.end_offset_for(4, 0), (4, 11));
        // A negative epoch other than -1 is not special-cased by Kafka: branch 4.
        assert_eq!(cache.end_offset_for(-2, 0), (-2, 11));
        assert_eq!(empty.end_offset_for(-2, 0), (-1, -1));
        // The largest term converts exactly.
        let cache = cache_of(&[(1, 1, 0), (TERM_MAX, 2, 5)]);
        assert_eq!(cache.end_offset_for(i32::MAX, 9), (i32::MAX, 9));
        assert_eq!(cache.end_offset_for(7, 9), (1, 5));
    }

    #[test]
    fn checkpoint_text_round_trips() {
        let cache = cache_of(&[(1, 1, 0), (3, 5, 40), (TERM_MAX, 9, 100)]);
        let text = cache.encode();
        assert_eq!(text, format!("1\n3\n1 0 1\n3 40 5\n{TERM_MAX} 100 9\n"));
        let path = Path::new("/d/leader-epoch.checkpoint");
        assert_eq!(EpochCache::decode(&text, path).unwrap(), cache);
        assert_eq!(EpochCache::new().encode(), "1\n0\n");
        assert!(EpochCache::decode("1\n0\n", path).unwrap().is_empty());
        assert!(EpochCache::decode("", path).unwrap().is_empty());
        // Kafka's reader splits on any whitespace; a trailing blank line is harmless.
        let loose = EpochCache::decode("1\n2\n1\t0   1\n 3 40 5 \n\n", path).unwrap();
        assert_eq!(rows(&loose), vec![(1, 1, 0), (3, 5, 40)]);
    }

    #[test]
    fn corrupt_checkpoint_text_is_an_error_with_path_and_line() {
        let path = Path::new("/d/leader-epoch.checkpoint");
        let cases: &[(&str, &str)] = &[
            // Kafka's own file (version 0, two columns).
            ("0\n1\n0 0\n", ":1: version"),
            ("x\n", ":1: version"),
            ("1\n", ":2: missing the row count"),
            ("1\nmany\n", ":2: row count"),
            ("1\n1\n1 0\n", ":3: \"1 0\" is not"),
            ("1\n1\n1 0 1 9\n", ":3:"),
            ("1\n1\n1 x 1\n", ":3:"),
            ("1\n1\n-1 0 1\n", ":3:"),
            ("1\n1\n1 0 0\n", ":3: offset 0 or index 0"),
            ("1\n1\n1 -5 1\n", ":3: offset -5"),
            ("1\n1\n2147483648 0 1\n", ":3: term 2147483648 is above"),
            ("1\n2\n1 0 1\n1 10 2\n", ":4: row"),
            ("1\n2\n1 10 2\n2 10 3\n", ":4: row"),
            ("1\n2\n1 0 2\n2 10 2\n", ":4: row"),
            ("1\n3\n1 0 1\n2 10 2\n", ":4: 2 rows, the count line says 3"),
            ("1\n1\n1 0 1\n2 10 2\n", ":4: 2 rows, the count line says 1"),
        ];
        for (text, want) in cases {
            let err = EpochCache::decode(text, path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{text:?}");
            let msg = err.to_string();
            assert!(
                msg.starts_with("/d/leader-epoch.checkpoint:") && msg.contains(want),
                "{text:?}: {msg}"
            );
        }
    }

    #[test]
    fn checkpoint_file_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        // No file: an empty cache.
        assert!(EpochCache::read(dir.path()).unwrap().is_empty());
        let mut cache = cache_of(&[(1, 1, 0), (3, 5, 40)]);
        cache.write_blocking(dir.path()).unwrap();
        assert_eq!(EpochCache::read(dir.path()).unwrap(), cache);
        cache.assign(4, 9, 100);
        cache.truncate_from_start(50, 6);
        cache.write_blocking(dir.path()).unwrap();
        assert_eq!(EpochCache::read(dir.path()).unwrap(), cache);
        // Only the file itself is left (the temp file was renamed over it).
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![EPOCH_FILE.to_string()]);
        // A corrupt file is an error naming it (the caller rebuilds from the log).
        std::fs::write(dir.path().join(EPOCH_FILE), "1\n1\n1 0\n").unwrap();
        let err = EpochCache::read(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(&format!("{EPOCH_FILE}:3:")),
            "{err}"
        );
    }

    #[test]
    fn checkpoint_written_from_a_glommio_executor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let cache = cache_of(&[(2, 1, 0), (5, 3, 7)]);
                cache.write(&path).await.unwrap();
                assert_eq!(EpochCache::read(&path).unwrap(), cache);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
