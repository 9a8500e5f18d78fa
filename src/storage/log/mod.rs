//! The log of one partition: segments of verbatim record batches.
//!
//! Appends are synchronous and touch only memory: the batch is checked against producer
//! state, given its offsets (patched into the header, outside the CRC), copied once into a
//! `Bytes` that both the pending-write list and the recent-batch cache hold, and indexed.
//! Durability is the shard flusher's job: [`PartitionLog::take_flush`] hands it everything
//! pending as a [`FlushJob`] that owns what it needs (file handles, bytes), so the flusher
//! can run many partitions' jobs concurrently without borrowing any log across an `.await`.
//! A job writes each dirty segment's new bytes in one aligned direct-I/O write — the
//! segment's last partial block is rewritten with them — and `fdatasync`s once; then
//! [`PartitionLog::complete_flush`] moves the high watermark. Readers see nothing past the
//! high watermark, so nothing a crash could take back is ever served.
//!
//! A segment rolls when the next batch would take it past `segment_bytes`. The old segment
//! is sealed by the next flush: trimmed to its logical length, its index files written, and
//! a producer-state snapshot taken as of the new segment's base offset.

mod files;
mod flush;
pub mod raft_start;
mod readahead;
mod reader;
mod replica;
mod retention;
mod segment;

pub use files::{SegmentFiles, SEGMENT_FILES_DEFAULT};
pub use flush::{
    CloseJob, FlushDone, FlushJob, FlushLink, FlushResult, FlushedSegment, FLUSHES_IN_FLIGHT_MAX,
};
pub use raft_start::{RaftStart, RAFT_START_FILE};
pub use readahead::{
    held_bytes as read_ahead_held_bytes, ReadAhead, READ_AHEAD_BYTES_PER_SHARD_MAX,
    READ_AHEAD_EXPIRY,
};
pub use reader::{DiskRead, ReadData, ReadPlan, TimestampPlan};
pub use replica::{
    EntryKind, InstallJob, RaftTail, RetentionScan, TruncateError, COMMITTED_ROWS_KEPT,
};
pub use retention::{RemovalJob, Retention, LOG_START_FILE};

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::io::OpenOptions;

use crate::protocol::batch::{self, BatchInfo, Marker};
use crate::protocol::errors;
use crate::storage::cache::{BatchCache, CachedBatch, PlacedBatch};
use crate::storage::index::IndexBuilder;
use crate::storage::producer_state::{AbortedTxn, ProducerState, SequenceCheck};
use crate::storage::recovery::recover;
use files::{FileKey, FileRef};
use retention::read_log_start;
use segment::{Seal, Segment};

/// Kafka's default `index.interval.bytes`.
pub const INDEX_INTERVAL_BYTES: u64 = 4096;
/// Smallest and largest read a fetch issues against a segment file.
const READ_CHUNK_BYTES_MIN: usize = 64 * 1024;
const READ_CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest segment: index positions are 32-bit.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;
/// The partition leader epoch written into every batch of a single-node log (leadership
/// never moves); a replicated log writes the Raft term of each entry instead.
pub const LEADER_EPOCH: i32 = 0;

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// A segment rolls when a batch would take it past this size.
    pub segment_bytes: u64,
    /// Bytes of recent batches kept in memory for tailing readers.
    pub cache_bytes: usize,
    /// Largest batch accepted (checked by the produce handler; kept for reference).
    pub max_message_bytes: usize,
    pub index_interval_bytes: u64,
    /// A non-empty active segment older than this (ms) is rolled at the next append.
    pub segment_ms: i64,
    /// Closed segments whose newest timestamp is older than this (ms) are deleted; -1 never.
    pub retention_ms: i64,
    /// Oldest closed segments are deleted while the log is larger than this; -1 no limit.
    pub retention_bytes: i64,
    /// `cleanup.policy` contains `delete`: retention applies.
    pub delete: bool,
    /// `cleanup.policy` contains `compact`.
    pub compact: bool,
    pub min_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
    /// Stamp batches with the append time (`message.timestamp.type=LogAppendTime`).
    pub log_append_time: bool,
    /// Producers idle this long are forgotten (Kafka's `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// `flush.messages`: written messages are synced once this many wait for it. 1 (the
    /// default) syncs every batch before it is acknowledged; above 1 a batch is
    /// acknowledged once written and synced on this schedule or `flush_ms`'s, as in Kafka.
    pub flush_messages: i64,
    /// `flush.ms`: written messages are synced once the oldest has waited this long
    /// (0 syncs every batch before it is acknowledged; `i64::MAX` never by age).
    pub flush_ms: i64,
    /// The log is a Raft log (see [`RaftTail`]): each batch is an entry stamped with its
    /// term, the high watermark is the committed end, a suffix above it can be truncated,
    /// and a rolled segment is sealed only once committed.
    pub replicated: bool,
}

impl LogConfig {
    /// Every batch is synced before it is acknowledged (the default).
    pub fn sync_every_batch(&self) -> bool {
        self.flush_messages <= 1 || self.flush_ms <= 0
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            cache_bytes: 8 * 1024 * 1024,
            max_message_bytes: 1024 * 1024 + 12,
            index_interval_bytes: INDEX_INTERVAL_BYTES,
            segment_ms: i64::MAX,
            retention_ms: -1,
            retention_bytes: -1,
            delete: true,
            compact: false,
            min_compaction_lag_ms: 0,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            log_append_time: false,
            producer_id_expiration_ms: crate::storage::producer_state::PRODUCER_EXPIRATION_MS,
            flush_messages: 1,
            flush_ms: i64::MAX,
            replicated: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        base_offset: i64,
        last_offset: i64,
    },
    /// An idempotent retry of a batch already in the log.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The partition cannot take writes (a write failed, or the log is closed).
    Offline(String),
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    /// A replicated entry that is not one valid batch.
    InvalidBatch(String),
}

impl AppendError {
    pub fn error_code(&self) -> i16 {
        match self {
            AppendError::Offline(_) => errors::KAFKA_STORAGE_ERROR,
            AppendError::OutOfOrderSequence { .. } => errors::OUT_OF_ORDER_SEQUENCE_NUMBER,
            AppendError::InvalidProducerEpoch { .. } => errors::INVALID_PRODUCER_EPOCH,
            AppendError::InvalidBatch(_) => errors::CORRUPT_MESSAGE,
        }
    }
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Offline(why) => write!(f, "partition is offline: {why}"),
            AppendError::OutOfOrderSequence {
                producer_id,
                expected,
                got,
            } => write!(
                f,
                "out of order sequence for producer {producer_id}: expected {expected}, got {got}"
            ),
            AppendError::InvalidProducerEpoch {
                producer_id,
                current,
                got,
            } => write!(
                f,
                "producer {producer_id} epoch {got} is older than the current epoch {current}"
            ),
            AppendError::InvalidBatch(why) => write!(f, "invalid entry: {why}"),
        }
    }
}

#[derive(Debug)]
pub enum ReadError {
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },
    /// The data should be on disk but the log has no file for it (a bug or lost file).
    Unavailable(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::OffsetOutOfRange {
                offset,
                log_start_offset,
                high_watermark,
            } => write!(
                f,
                "offset {offset} is outside [{log_start_offset}, {high_watermark}]"
            ),
            ReadError::Unavailable(why) => write!(f, "data unavailable: {why}"),
        }
    }
}
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Ordered by base offset; the last one takes appends.
    segments: Vec<Segment>,
    next_offset: i64,
    /// What consumers may read: `durable_end` on a single node; a replicated log's
    /// committed end (never past `durable_end`).
    high_watermark: i64,
    /// Offset after the last batch written (and synced, by the topic's schedule).
    durable_end: i64,
    log_start_offset: i64,
    /// The epoch stamped into appended batches: 0 on a single node, the Raft term of the
    /// entry in a replicated log.
    epoch: i32,
    /// A replicated log's Raft view of its entries (`None` on a single node).
    raft: Option<RaftTail>,
    /// Truncations the flush jobs in flight did not know of (see [`replica::Cut`]).
    cuts: Vec<replica::Cut>,
    /// Files of segments a truncation removed, for the next flush job to delete.
    doomed: Vec<PathBuf>,
    /// Sequence number of the next flush job taken.
    next_job_seq: u64,
    next_segment_id: u64,
    pending_bytes: usize,
    seals_pending: usize,
    /// The flush jobs taken and not yet completed, oldest first (at most
    /// [`FLUSHES_IN_FLIGHT_MAX`]): the next job continues the last one's writes.
    links: std::collections::VecDeque<Rc<FlushLink>>,
    /// Messages appended since the last job that syncs was taken, and when the first of
    /// them was appended (ms): the `flush.messages` / `flush.ms` schedule.
    unsynced_messages: i64,
    unsynced_since_ms: Option<i64>,
    offline: Option<String>,
    closed: bool,
    producers: ProducerState,
    cache: BatchCache,
    /// Compaction bookkeeping: the head of the log up to this offset is clean.
    compacted_through: i64,
    /// A kept tombstone may be removed from this time on (i64::MAX: none kept).
    tombstone_expiry_ms: i64,
    /// A compaction pass is running (at most one per log).
    compacting: bool,
    /// Transaction markers appended but not yet durable: (marker offset, first offset of
    /// the transaction it closes). Until the marker is durable the transaction still
    /// bounds the last stable offset.
    unstable_markers: Vec<(i64, i64)>,
    /// The shard's cache of open sealed-segment files, and this log's id in it.
    files: SegmentFiles,
    /// The next chunk of a segment a consumer is reading in order (see [`ReadAhead`]).
    read_ahead: Rc<ReadAhead>,
    file_id: u64,
}

/// The bytes of `path`'s partial last block, for a segment `len` bytes long.
fn read_tail_block(path: &Path, len: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let aligned = crate::storage::align_down(len);
    let mut block = vec![0; (len - aligned) as usize];
    if !block.is_empty() {
        std::fs::File::open(path)?.read_exact_at(&mut block, aligned)?;
    }
    Ok(block)
}

impl PartitionLog {
    /// Opens (recovering) the log in `dir`, which must exist, with a cache of its own for
    /// sealed segments' files (see [`Self::open_in`]).
    pub async fn open(dir: &Path, config: LogConfig) -> io::Result<PartitionLog> {
        Self::open_in(dir, config, SegmentFiles::new(SEGMENT_FILES_DEFAULT)).await
    }

    /// Opens (recovering) the log in `dir`, which must exist. Only the active segment's
    /// file is opened (and stays open); sealed segments are opened on demand through
    /// `files`, the shard's bounded cache.
    pub async fn open_in(
        dir: &Path,
        config: LogConfig,
        files: SegmentFiles,
    ) -> io::Result<PartitionLog> {
        assert!(config.segment_bytes > 0 && config.segment_bytes <= SEGMENT_BYTES_MAX);
        let scan_dir = dir.to_path_buf();
        let interval = config.index_interval_bytes;
        // A replicated log's producer state is rebuilt as of the committed end, the
        // entries after it replayed from the rows (a truncation may cut them).
        let hard_state = if config.replicated {
            let (file, state) =
                crate::storage::raft_state::RaftStateFile::open_or_create(dir).await?;
            file.close().await?;
            state
        } else {
            None
        };
        let replicated = config.replicated;
        let (raft_start, recovered) = glommio::executor()
            .spawn_blocking(move || {
                // Segments a removal or an install left behind go before the scan.
                let start = if replicated {
                    raft_start::settle(&scan_dir)?
                } else {
                    None
                };
                let hard_state = hard_state
                    .map(|s| start.map_or(s, |start| s.at_least(start.index, start.offset)));
                let producers_at = replicated.then(|| {
                    hard_state
                        .map(|s| s.commit_offset)
                        .unwrap_or(start.map_or(0, |s| s.offset))
                });
                Ok::<_, io::Error>((start, recover(&scan_dir, interval, producers_at)?))
            })
            .await?;
        let hard_state =
            hard_state.map(|s| raft_start.map_or(s, |start| s.at_least(start.index, start.offset)));
        if recovered.truncated_bytes > 0 {
            tracing::warn!(
                dir = %dir.display(),
                bytes = recovered.truncated_bytes,
                next_offset = recovered.next_offset(),
                "recovered the log after an unclean stop; unacknowledged bytes removed"
            );
        }
        let count = recovered.segments.len();
        let mut segments = Vec::with_capacity(count.max(1));
        let mut next_segment_id = 0;
        for (i, r) in recovered.segments.into_iter().enumerate() {
            let last = i + 1 == count;
            let file = if last {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .dma_open(&r.path)
                    .await?;
                Some(Rc::new(file))
            } else {
                None
            };
            let last_entry = r.index.entries().last().map(|e| u64::from(e.position));
            next_segment_id += 1;
            segments.push(Segment {
                id: next_segment_id,
                base_offset: r.base_offset,
                path: r.path,
                file,
                durable_len: r.summary.len,
                tail_block: Vec::new(),
                issued_len: r.summary.len,
                unsynced: false,
                rewrite_from: None,
                trimmed: !last,
                len: r.summary.len,
                next_offset: r.summary.next_offset,
                index_builder: IndexBuilder::resume(
                    interval,
                    r.summary.len,
                    last_entry,
                    r.summary.max_timestamp,
                ),
                index: r.index,
                pending: Vec::new(),
                seal: None,
                sealed: !last,
                settled: !last,
                created_ms: crate::util::now_ms(),
            });
        }
        match segments.last_mut() {
            Some(active) => active.tail_block = recovered.tail_block,
            None => {
                next_segment_id += 1;
                // An empty replicated log starts where its snapshot put it.
                let base = raft_start.map_or(0, |s| s.offset);
                segments.push(Segment::new(next_segment_id, dir, base, interval));
            }
        }
        let next_offset = segments.last().map(|s| s.next_offset).unwrap_or(0);
        let first_base = segments.first().map(|s| s.base_offset).unwrap_or(0);
        let log_start_offset = match read_log_start(dir) {
            Some(start) => start.clamp(0, next_offset),
            None => first_base,
        }
        .max(raft_start.map_or(0, |s| s.offset).min(next_offset));
        let mut producers = recovered.producers;
        producers.trim_aborted(log_start_offset);
        let mut unstable_markers = Vec::new();
        let mut seals_pending = 0;
        let raft = if config.replicated {
            let tail = RaftTail::open(
                dir,
                &segments,
                hard_state,
                raft_start.unwrap_or_default(),
                interval,
                producers.clone(),
            )
            .await?;
            tail.replay_uncommitted(&mut producers, &mut unstable_markers);
            // Rolled segments not wholly committed are sealed once they are, and until
            // then a truncation may cut into them: they keep their files open.
            let count = segments.len();
            for segment in &mut segments[..count - 1] {
                if segment.next_offset > tail.committed_offset() {
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .dma_open(&segment.path)
                        .await?;
                    segment.file = Some(Rc::new(file));
                    // Its seal rewrites nothing, but a segment's partial last block is
                    // always known while flush jobs may touch it.
                    let (path, len) = (segment.path.clone(), segment.len);
                    segment.tail_block = glommio::executor()
                        .spawn_blocking(move || read_tail_block(&path, len))
                        .await?;
                    segment.settled = false;
                    segment.seal = Some(Seal {
                        snapshot: None,
                        snapshot_offset: segment.next_offset,
                    });
                    seals_pending += 1;
                }
            }
            Some(tail)
        } else {
            None
        };
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            cache: BatchCache::new(config.cache_bytes),
            config,
            segments,
            next_offset,
            high_watermark: raft
                .as_ref()
                .map_or(next_offset, |r| r.committed_offset().min(next_offset)),
            durable_end: next_offset,
            log_start_offset,
            epoch: LEADER_EPOCH,
            raft,
            cuts: Vec::new(),
            doomed: Vec::new(),
            next_job_seq: 0,
            next_segment_id,
            pending_bytes: 0,
            seals_pending,
            links: Default::default(),
            unsynced_messages: 0,
            unsynced_since_ms: None,
            offline: None,
            closed: false,
            producers,
            compacted_through: 0,
            tombstone_expiry_ms: i64::MAX,
            compacting: false,
            unstable_markers,
            file_id: files.register_log(),
            files,
            read_ahead: Default::default(),
        })
    }

    fn file_key(&self, segment: &Segment) -> FileKey {
        (self.file_id, segment.base_offset)
    }

    /// How a read reaches `segment`'s file: the handle it holds (active segment, or one
    /// whose seal is not yet on disk), or through the cache for a settled one. `None`:
    /// no file yet.
    fn file_ref(&self, segment: &Segment) -> Option<FileRef> {
        if let Some(file) = &segment.file {
            return Some(FileRef::Open(file.clone()));
        }
        if !segment.settled {
            return None;
        }
        let key = self.file_key(segment);
        Some(match self.files.get(key) {
            Some(file) => FileRef::Open(file),
            None => FileRef::Cold {
                files: self.files.clone(),
                key,
            },
        })
    }

    /// Takes `segment`'s file handle, its own or the cache's (the segment leaves the log
    /// or its file is replaced).
    fn take_file(&self, segment: &mut Segment) -> Option<Rc<glommio::io::DmaFile>> {
        let cached = self.files.remove(self.file_key(segment));
        segment.file.take().or(cached)
    }

    /// Offset after the last durable batch: what consumers may read and producers have
    /// had acknowledged.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The last stable offset: below it every transaction is decided (committed or
    /// aborted, its marker durable). What `read_committed` consumers may read.
    pub fn last_stable_offset(&self) -> i64 {
        let mut lso = self.high_watermark;
        if let Some(first) = self.producers.first_unstable_offset() {
            lso = lso.min(first);
        }
        for &(marker, first) in &self.unstable_markers {
            if marker >= self.high_watermark {
                lso = lso.min(first);
            }
        }
        lso
    }

    /// Aborted transactions with records in `[from, to)`, for a read_committed fetch.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.producers.aborted_between(from, to).copied().collect()
    }

    /// The partition's producers, for DescribeProducers.
    pub fn producers(&self) -> &ProducerState {
        &self.producers
    }

    /// Offset the next appended batch gets.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn is_offline(&self) -> bool {
        self.offline.is_some()
    }

    /// Bytes appended and not yet durable.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Something is waiting for (or in) a flush.
    pub fn is_dirty(&self) -> bool {
        !self.links.is_empty() || self.has_pending()
    }

    /// Appended batches, seals or truncations not yet handed to a flush job.
    pub fn has_pending(&self) -> bool {
        if self.pending_bytes > 0 || !self.doomed.is_empty() {
            return true;
        }
        if self.seals_pending == 0 && self.raft.is_none() {
            return false;
        }
        let sealable_before = self.sealable_before();
        self.segments
            .iter()
            .rev()
            .take_while(|s| !s.settled)
            .any(|s| {
                s.rewrite_from.is_some() || (s.seal.is_some() && s.next_offset <= sealable_before)
            })
    }

    /// A rolled segment may be sealed once it ends at or before this offset: at once on a
    /// single node; once all of it is committed in a replicated log (a truncation may
    /// still reach it until then).
    fn sealable_before(&self) -> i64 {
        match &self.raft {
            Some(raft) => raft.committed_offset(),
            None => i64::MAX,
        }
    }

    /// Moves the high watermark: to the durable end on a single node; to the committed
    /// end, as far as it is durable here, in a replicated log. It never moves back.
    fn advance_high_watermark(&mut self) {
        let end = match &self.raft {
            Some(raft) => raft.committed_offset().min(self.durable_end),
            None => self.durable_end,
        };
        debug_assert!(self.raft.is_some() || end >= self.high_watermark);
        self.high_watermark = self.high_watermark.max(end);
    }

    /// Flush jobs taken and not yet completed.
    pub fn flushes_in_flight(&self) -> usize {
        self.links.len()
    }

    /// Appends a validated batch (see [`batch::validate_produce_records`]), copying it.
    pub fn append(
        &mut self,
        records: &[u8],
        info: &BatchInfo,
        now_ms: i64,
    ) -> Result<AppendOutcome, AppendError> {
        self.append_shared(&Bytes::copy_from_slice(records), info, now_ms)
    }

    /// Appends a validated batch, keeping `records` (a slice of the request frame) rather
    /// than a copy: only its first [`batch::PATCHED_HEAD_LEN`] bytes are copied, to be
    /// patched.
    pub fn append_shared(
        &mut self,
        records: &Bytes,
        info: &BatchInfo,
        now_ms: i64,
    ) -> Result<AppendOutcome, AppendError> {
        if let Some(why) = &self.offline {
            return Err(AppendError::Offline(why.clone()));
        }
        if self.closed {
            return Err(AppendError::Offline("the log is closed".into()));
        }
        debug_assert_eq!(records.len(), info.len);
        if info.producer_id >= 0 {
            match self.producers.check(info) {
                SequenceCheck::Accept => {}
                SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    return Ok(AppendOutcome::Duplicate {
                        base_offset,
                        last_offset,
                    })
                }
                SequenceCheck::OutOfOrder { expected, got } => {
                    return Err(AppendError::OutOfOrderSequence {
                        producer_id: info.producer_id,
                        expected,
                        got,
                    })
                }
                SequenceCheck::StaleEpoch { current, got } => {
                    return Err(AppendError::InvalidProducerEpoch {
                        producer_id: info.producer_id,
                        current,
                        got,
                    })
                }
            }
        }
        let placed = self.push_batch(records.clone(), info, now_ms, EntryKind::Data);
        self.producers.apply(&placed, placed.base_offset, now_ms);
        Ok(AppendOutcome::Appended {
            base_offset: placed.base_offset,
            last_offset: placed.last_offset(),
        })
    }

    /// Appends the transaction coordinator's marker for `producer_id`'s transaction, if
    /// this partition needs it (see [`ProducerState::marker_needed`]). Returns the marker's
    /// offset and size, `None` if nothing was written.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<Option<(i64, usize)>, AppendError> {
        if let Some(why) = &self.offline {
            return Err(AppendError::Offline(why.clone()));
        }
        if self.closed {
            return Err(AppendError::Offline("the log is closed".into()));
        }
        if !self.producers.marker_needed(producer_id, producer_epoch) {
            return Ok(None);
        }
        let records = batch::control_batch(
            producer_id,
            producer_epoch,
            marker,
            coordinator_epoch,
            now_ms,
        );
        let info = batch::parse_batch(&records).expect("a control batch we built parses");
        let len = records.len();
        let kind = EntryKind::Marker {
            marker,
            coordinator_epoch,
        };
        let placed = self.push_batch(Bytes::from(records), &info, now_ms, kind);
        let offset = placed.base_offset;
        if let Some(first) =
            self.producers
                .apply_marker(&placed, offset, marker, coordinator_epoch, now_ms)
        {
            self.unstable_markers.push((offset, first));
        }
        Ok(Some((offset, len)))
    }

    /// Places a batch at the log end: offsets patched, queued for the flusher, cached.
    /// Returns its header as placed. A replicated log records it as the next Raft entry,
    /// of the current epoch.
    fn push_batch(
        &mut self,
        records: Bytes,
        info: &BatchInfo,
        now_ms: i64,
        kind: EntryKind,
    ) -> BatchInfo {
        let base_offset = self.next_offset;
        let last_offset = base_offset + i64::from(info.last_offset_delta);
        if self.must_roll(info.len as u64, last_offset, now_ms) {
            self.roll(now_ms);
        }
        let mut placed = *info;
        placed.base_offset = base_offset;
        let batch = if self.config.log_append_time {
            // The timestamps are inside the CRC: the whole batch is rewritten.
            let mut bytes = BytesMut::from(&records[..]);
            batch::patch_base_offset(&mut bytes, base_offset);
            batch::patch_leader_epoch(&mut bytes, self.epoch);
            batch::set_log_append_time(&mut bytes, now_ms);
            placed.max_timestamp = now_ms;
            placed.attributes |= batch::ATTR_TIMESTAMP_TYPE_LOG_APPEND;
            PlacedBatch::from_bytes(bytes.freeze())
        } else {
            let head = batch::patched_head(&records, base_offset, self.epoch);
            PlacedBatch {
                head: Bytes::copy_from_slice(&head),
                body: records.slice(batch::PATCHED_HEAD_LEN..),
            }
        };

        let segment = self
            .segments
            .last_mut()
            .expect("a log always has an active segment");
        debug_assert!(!segment.sealed);
        if segment.len == 0 {
            segment.created_ms = now_ms;
        }
        if let Some(raft) = &mut self.raft {
            raft.push(replica::EntryRow {
                index: raft.last_index() + 1,
                term: self.epoch as u64,
                base_offset,
                next_offset: last_offset + 1,
                segment: segment.id,
                position: segment.len,
                builder_before: segment.index_builder.clone(),
                info: placed,
                kind,
            });
        }
        segment.index_builder.add(
            &mut segment.index,
            segment.base_offset,
            segment.len,
            &placed,
        );
        segment.len += info.len as u64;
        segment.next_offset = last_offset + 1;
        segment.pending.push(batch.clone());
        self.pending_bytes += info.len;
        self.unsynced_messages += i64::from(info.last_offset_delta) + 1;
        self.unsynced_since_ms.get_or_insert(now_ms);
        self.cache.push(CachedBatch {
            base_offset,
            last_offset,
            batch,
        });
        self.next_offset = last_offset + 1;
        placed
    }

    fn must_roll(&self, batch_len: u64, last_offset: i64, now_ms: i64) -> bool {
        let active = self.segments.last().expect("active segment");
        if active.len == 0 {
            return false;
        }
        active.len + batch_len > self.config.segment_bytes.min(SEGMENT_BYTES_MAX)
            || last_offset - active.base_offset > i64::from(u32::MAX)
            || now_ms.saturating_sub(active.created_ms) >= self.config.segment_ms
    }

    /// Forgets idle producers (see [`LogConfig::producer_id_expiration_ms`]); called at
    /// every roll and by the shard's retention loop, so a partition that never rolls does
    /// not keep every producer that ever wrote to it.
    pub fn expire_producers(&mut self, now_ms: i64) {
        self.producers
            .expire(now_ms, self.config.producer_id_expiration_ms);
    }

    /// Starts a new segment at the next offset; the old one is sealed by the next flush.
    fn roll(&mut self, now_ms: i64) {
        self.expire_producers(now_ms);
        let snapshot = Some(self.producers.encode_snapshot());
        let base = self.next_offset;
        let active = self.segments.last_mut().expect("active segment");
        active.seal = Some(Seal {
            snapshot,
            snapshot_offset: base,
        });
        active.sealed = true;
        self.seals_pending += 1;
        self.next_segment_id += 1;
        let segment = Segment::new(
            self.next_segment_id,
            &self.dir,
            base,
            self.config.index_interval_bytes,
        );
        self.segments.push(segment);
        tracing::debug!(dir = %self.dir.display(), base, "segment rolled");
    }

    /// Read-ahead hits of this log's fetches (see [`ReadAhead`]).
    pub fn read_ahead_hits(&self) -> u64 {
        self.read_ahead.hits()
    }

    /// The offset of the fetch a read ahead is waiting for, if any.
    pub fn read_ahead_armed_for(&self) -> Option<i64> {
        self.read_ahead.armed_for()
    }

    /// The configuration in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies a topic config change. Segment size and age apply from the next append,
    /// retention and compaction from their next run. The cache keeps its size.
    pub fn set_config(&mut self, mut config: LogConfig) {
        config.cache_bytes = self.config.cache_bytes;
        config.replicated = self.config.replicated;
        config.segment_bytes = config.segment_bytes.clamp(1, SEGMENT_BYTES_MAX);
        self.config = config;
    }

    /// Bytes of all segments (including what is not yet durable).
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// The largest timestamp in the log, if any record has one.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.segments
            .iter()
            .map(|s| s.index_builder.max_timestamp)
            .max()
            .filter(|&t| t >= 0)
    }
}
