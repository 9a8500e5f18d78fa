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

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::io::{DmaFile, OpenOptions};

use super::cache::{BatchCache, CachedBatch};
use super::compaction::{CleanInput, CleanOutput, CompactionDone, CompactionJob};
use super::index::{SegmentIndex, SegmentSummary};
use super::producer_state::{AbortedTxn, ProducerState, SequenceCheck};
use super::recovery::{recover, IndexBuilder};
use super::{align_down, align_up, segment_file, BLOCK_BYTES, LOG_SUFFIX, SNAPSHOT_SUFFIX};
use crate::protocol::batch::{self, parse_batch, record_timestamps, BatchInfo, Marker};
use crate::protocol::errors;

/// Kafka's default `index.interval.bytes`.
pub const INDEX_INTERVAL_BYTES: u64 = 4096;
/// Smallest and largest read a fetch issues against a segment file.
const READ_CHUNK_BYTES_MIN: usize = 64 * 1024;
const READ_CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest segment: index positions are 32-bit.
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;
/// The partition leader epoch written into every batch (single node: leadership never moves).
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
}

impl AppendError {
    pub fn error_code(&self) -> i16 {
        match self {
            AppendError::Offline(_) => errors::KAFKA_STORAGE_ERROR,
            AppendError::OutOfOrderSequence { .. } => errors::OUT_OF_ORDER_SEQUENCE_NUMBER,
            AppendError::InvalidProducerEpoch { .. } => errors::INVALID_PRODUCER_EPOCH,
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

/// A segment waiting to be sealed by the next flush.
#[derive(Debug)]
struct Seal {
    /// Producer state as of the next segment's base offset.
    snapshot: Vec<u8>,
    snapshot_offset: i64,
}

#[derive(Debug)]
struct Segment {
    base_offset: i64,
    path: PathBuf,
    /// `None` until the first flush creates the file.
    file: Option<Rc<DmaFile>>,
    /// Bytes known to be on disk (written and synced).
    durable_len: u64,
    /// Durable bytes from `align_down(durable_len)`: rewritten with the next write.
    tail_block: Vec<u8>,
    /// Length including bytes not yet flushed.
    len: u64,
    /// Offset after the last appended batch (flushed or not).
    next_offset: i64,
    index: SegmentIndex,
    index_builder: IndexBuilder,
    /// Appended, not yet handed to a flush job.
    pending: Vec<Bytes>,
    seal: Option<Seal>,
    sealed: bool,
    /// Sealed and the seal is on disk (trimmed, indexed): no flush job will touch the
    /// segment again, so retention and compaction may.
    settled: bool,
    /// Wall-clock ms of the first append (or of opening, for a recovered segment): the
    /// age `segment.ms` is measured from.
    created_ms: i64,
}

impl Segment {
    fn new(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Segment {
        Segment {
            base_offset,
            path: segment_file(dir, base_offset, LOG_SUFFIX),
            file: None,
            durable_len: 0,
            tail_block: Vec::new(),
            len: 0,
            next_offset: base_offset,
            index: SegmentIndex::new(),
            index_builder: IndexBuilder::new(index_interval_bytes),
            pending: Vec::new(),
            seal: None,
            sealed: false,
            settled: false,
            created_ms: 0,
        }
    }

    fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            len: self.len,
            next_offset: self.next_offset,
            max_timestamp: self.index_builder.max_timestamp,
        }
    }
}

pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Ordered by base offset; the last one takes appends.
    segments: Vec<Segment>,
    next_offset: i64,
    high_watermark: i64,
    log_start_offset: i64,
    pending_bytes: usize,
    seals_pending: usize,
    flushing: bool,
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
}

/// One segment's share of a flush job.
struct SegmentWrite {
    base_offset: i64,
    path: PathBuf,
    file: Option<Rc<DmaFile>>,
    /// Aligned position the write starts at.
    position: u64,
    /// Durable bytes of the partial block at `position`.
    prefix: Vec<u8>,
    chunks: Vec<Bytes>,
    /// Logical segment length once written.
    new_len: u64,
    seal: Option<(Seal, SegmentIndex, SegmentSummary)>,
}

/// Everything pending in one partition, to be made durable. Owns its data and handles.
pub struct FlushJob {
    dir: PathBuf,
    writes: Vec<SegmentWrite>,
    high_watermark: i64,
}

pub struct FlushedSegment {
    base_offset: i64,
    /// The job sealed this segment.
    sealed: bool,
    file: Rc<DmaFile>,
    durable_len: u64,
    tail_block: Vec<u8>,
}

pub struct FlushDone {
    segments: Vec<FlushedSegment>,
    high_watermark: i64,
}

pub type FlushResult = io::Result<FlushDone>;

impl FlushJob {
    /// Bytes of batch data the job writes.
    pub fn bytes(&self) -> usize {
        self.writes
            .iter()
            .flat_map(|w| &w.chunks)
            .map(|c| c.len())
            .sum()
    }

    /// Writes and syncs every segment of the job, then seals the rolled ones.
    pub async fn run(self) -> FlushResult {
        let mut done = FlushDone {
            segments: Vec::with_capacity(self.writes.len()),
            high_watermark: self.high_watermark,
        };
        for write in self.writes {
            let (file, created) = match write.file {
                Some(file) => (file, false),
                None => {
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .dma_open(&write.path)
                        .await?;
                    (Rc::new(file), true)
                }
            };
            let mut tail_block = write.prefix.clone();
            if !write.chunks.is_empty() {
                let total =
                    write.prefix.len() + write.chunks.iter().map(|c| c.len()).sum::<usize>();
                debug_assert_eq!(write.position + total as u64, write.new_len);
                let aligned = align_up(total as u64) as usize;
                let mut buf = file.alloc_dma_buffer(aligned);
                let bytes = buf.as_bytes_mut();
                let mut at = write.prefix.len();
                bytes[..at].copy_from_slice(&write.prefix);
                for chunk in &write.chunks {
                    // Pair assertion: what goes to disk is a valid batch.
                    debug_assert!(parse_batch(chunk).is_ok_and(|i| i.len == chunk.len()));
                    bytes[at..at + chunk.len()].copy_from_slice(chunk);
                    at += chunk.len();
                }
                bytes[at..].fill(0);
                let tail_start = (align_down(write.new_len) - write.position) as usize;
                tail_block = bytes[tail_start..total].to_vec();
                let written = file.write_at(buf, write.position).await?;
                if written != aligned {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!(
                            "short write to {}: {written} of {aligned} bytes",
                            write.path.display()
                        ),
                    ));
                }
            }
            file.fdatasync().await?;
            if created {
                let dir = self.dir.clone();
                glommio::executor()
                    .spawn_blocking(move || crate::cluster::metadata_log::sync_dir(&dir))
                    .await?;
            }
            let sealed = write.seal.is_some();
            if let Some((seal, index, summary)) = write.seal {
                debug_assert_eq!(summary.len, write.new_len);
                // Trim the block padding so the file length is the logical length the index
                // trailer records; recovery then trusts the segment without a scan.
                file.truncate(write.new_len).await?;
                file.fdatasync().await?;
                let dir = self.dir.clone();
                let base = write.base_offset;
                glommio::executor()
                    .spawn_blocking(move || {
                        index.write_files(&dir, base, summary)?;
                        write_snapshot(&dir, seal.snapshot_offset, &seal.snapshot)
                    })
                    .await?;
            }
            done.segments.push(FlushedSegment {
                base_offset: write.base_offset,
                sealed,
                file,
                durable_len: write.new_len,
                tail_block,
            });
        }
        Ok(done)
    }
}

/// Writes a producer snapshot and removes older ones.
fn write_snapshot(dir: &Path, offset: i64, bytes: &[u8]) -> io::Result<()> {
    super::index::write_atomically(&segment_file(dir, offset, SNAPSHOT_SUFFIX), bytes)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(older) = super::parse_segment_name(&name.to_string_lossy(), SNAPSHOT_SUFFIX) {
            if older < offset {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

/// Closing a log: trims the active segment, writes its index and a producer snapshot (when
/// nothing was left pending), closes the files.
pub struct CloseJob {
    dir: PathBuf,
    clean: Option<(i64, SegmentIndex, SegmentSummary, Vec<u8>, i64)>,
    active: Option<Rc<DmaFile>>,
    files: Vec<Rc<DmaFile>>,
}

impl CloseJob {
    pub async fn run(self) -> io::Result<()> {
        if let (Some((base, index, summary, snapshot, snapshot_offset)), Some(file)) =
            (self.clean, &self.active)
        {
            file.truncate(summary.len).await?;
            file.fdatasync().await?;
            let dir = self.dir.clone();
            glommio::executor()
                .spawn_blocking(move || {
                    index.write_files(&dir, base, summary)?;
                    write_snapshot(&dir, snapshot_offset, &snapshot)
                })
                .await?;
        }
        drop(self.active);
        for file in self.files {
            file.close_rc().await?;
        }
        Ok(())
    }
}

impl PartitionLog {
    /// Opens (recovering) the log in `dir`, which must exist.
    pub async fn open(dir: &Path, config: LogConfig) -> io::Result<PartitionLog> {
        assert!(config.segment_bytes > 0 && config.segment_bytes <= SEGMENT_BYTES_MAX);
        let scan_dir = dir.to_path_buf();
        let interval = config.index_interval_bytes;
        let recovered = glommio::executor()
            .spawn_blocking(move || recover(&scan_dir, interval))
            .await?;
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
        for (i, r) in recovered.segments.into_iter().enumerate() {
            let last = i + 1 == count;
            let file = OpenOptions::new()
                .read(true)
                .write(last)
                .dma_open(&r.path)
                .await?;
            let last_entry = r.index.entries().last().map(|e| u64::from(e.position));
            segments.push(Segment {
                base_offset: r.base_offset,
                path: r.path,
                file: Some(Rc::new(file)),
                durable_len: r.summary.len,
                tail_block: Vec::new(),
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
            None => segments.push(Segment::new(dir, 0, interval)),
        }
        let next_offset = segments.last().map(|s| s.next_offset).unwrap_or(0);
        let first_base = segments.first().map(|s| s.base_offset).unwrap_or(0);
        let log_start_offset = match read_log_start(dir) {
            Some(start) => start.clamp(0, next_offset),
            None => first_base,
        };
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            cache: BatchCache::new(config.cache_bytes),
            config,
            segments,
            next_offset,
            high_watermark: next_offset,
            log_start_offset,
            pending_bytes: 0,
            seals_pending: 0,
            flushing: false,
            offline: None,
            closed: false,
            producers: {
                let mut producers = recovered.producers;
                producers.trim_aborted(log_start_offset);
                producers
            },
            compacted_through: 0,
            tombstone_expiry_ms: i64::MAX,
            compacting: false,
            unstable_markers: Vec::new(),
        })
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
        self.flushing || self.pending_bytes > 0 || self.seals_pending > 0
    }

    /// Appends a validated batch (see [`batch::validate_produce_records`]).
    pub fn append(
        &mut self,
        records: &[u8],
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
        let placed = self.push_batch(records, info, now_ms);
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
        let placed = self.push_batch(&records, &info, now_ms);
        let offset = placed.base_offset;
        if let Some(first) =
            self.producers
                .apply_marker(&placed, offset, marker, coordinator_epoch, now_ms)
        {
            self.unstable_markers.push((offset, first));
        }
        Ok(Some((offset, records.len())))
    }

    /// Places a batch at the log end: offsets patched, queued for the flusher, cached.
    /// Returns its header as placed.
    fn push_batch(&mut self, records: &[u8], info: &BatchInfo, now_ms: i64) -> BatchInfo {
        let base_offset = self.next_offset;
        let last_offset = base_offset + i64::from(info.last_offset_delta);
        if self.must_roll(info.len as u64, last_offset, now_ms) {
            self.roll(now_ms);
        }
        let mut placed = *info;
        placed.base_offset = base_offset;
        let mut bytes = BytesMut::from(records);
        batch::patch_base_offset(&mut bytes, base_offset);
        batch::patch_leader_epoch(&mut bytes, LEADER_EPOCH);
        if self.config.log_append_time {
            batch::set_log_append_time(&mut bytes, now_ms);
            placed.max_timestamp = now_ms;
            placed.attributes |= batch::ATTR_TIMESTAMP_TYPE_LOG_APPEND;
        }
        let bytes = bytes.freeze();

        let segment = self
            .segments
            .last_mut()
            .expect("a log always has an active segment");
        debug_assert!(!segment.sealed);
        if segment.len == 0 {
            segment.created_ms = now_ms;
        }
        segment.index_builder.add(
            &mut segment.index,
            segment.base_offset,
            segment.len,
            &placed,
        );
        segment.len += info.len as u64;
        segment.next_offset = last_offset + 1;
        segment.pending.push(bytes.clone());
        self.pending_bytes += info.len;
        self.cache.push(CachedBatch {
            base_offset,
            last_offset,
            bytes,
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

    /// Starts a new segment at the next offset; the old one is sealed by the next flush.
    fn roll(&mut self, now_ms: i64) {
        self.producers.expire(now_ms);
        let snapshot = self.producers.encode_snapshot();
        let base = self.next_offset;
        let active = self.segments.last_mut().expect("active segment");
        active.seal = Some(Seal {
            snapshot,
            snapshot_offset: base,
        });
        active.sealed = true;
        self.seals_pending += 1;
        let segment = Segment::new(&self.dir, base, self.config.index_interval_bytes);
        self.segments.push(segment);
        tracing::debug!(dir = %self.dir.display(), base, "segment rolled");
    }

    /// Everything pending, as one job for the flusher; `None` if nothing is (or a job is
    /// already running: one at a time per partition keeps writes in order).
    pub fn take_flush(&mut self) -> Option<FlushJob> {
        if self.flushing
            || self.offline.is_some()
            || (self.pending_bytes == 0 && self.seals_pending == 0)
        {
            return None;
        }
        // Only the last few segments can have pending data or seals.
        let mut first = self.segments.len() - 1;
        while first > 0 && {
            let s = &self.segments[first - 1];
            !s.pending.is_empty() || s.seal.is_some()
        } {
            first -= 1;
        }
        let mut writes = Vec::new();
        for segment in &mut self.segments[first..] {
            let chunks = std::mem::take(&mut segment.pending);
            let seal = segment.seal.take();
            if chunks.is_empty() && seal.is_none() {
                continue;
            }
            let new_len = segment.len;
            let seal = seal.map(|s| (s, segment.index.clone(), segment.summary()));
            writes.push(SegmentWrite {
                base_offset: segment.base_offset,
                path: segment.path.clone(),
                file: segment.file.clone(),
                position: align_down(segment.durable_len),
                prefix: segment.tail_block.clone(),
                chunks,
                new_len,
                seal,
            });
        }
        self.pending_bytes = 0;
        self.seals_pending = 0;
        self.flushing = true;
        Some(FlushJob {
            dir: self.dir.clone(),
            writes,
            high_watermark: self.next_offset,
        })
    }

    /// Applies a finished flush: the high watermark moves, or the partition goes offline
    /// for writes (reads of durable data go on). Returns the bytes of appended batches
    /// that were dropped because a write failed (never acknowledged).
    pub fn complete_flush(&mut self, result: FlushResult) -> usize {
        debug_assert!(self.flushing);
        self.flushing = false;
        match result {
            Ok(done) => {
                for flushed in done.segments {
                    let Some(segment) = self
                        .segments
                        .iter_mut()
                        .rev()
                        .find(|s| s.base_offset == flushed.base_offset)
                    else {
                        continue;
                    };
                    debug_assert!(flushed.durable_len >= segment.durable_len);
                    debug_assert_eq!(
                        flushed.tail_block.len() as u64,
                        flushed.durable_len % BLOCK_BYTES
                    );
                    segment.file = Some(flushed.file);
                    segment.durable_len = flushed.durable_len;
                    segment.settled |= flushed.sealed;
                    segment.tail_block = flushed.tail_block;
                }
                debug_assert!(done.high_watermark >= self.high_watermark);
                self.high_watermark = done.high_watermark;
                let hw = self.high_watermark;
                self.unstable_markers.retain(|&(marker, _)| marker >= hw);
                0
            }
            Err(err) => {
                tracing::error!(dir = %self.dir.display(), %err, "log write failed; partition is offline for writes");
                self.offline = Some(err.to_string());
                // What was not made durable is gone: it was never acknowledged. The shard
                // reopens the log from disk to take writes again (see `Shard::revive`).
                let dropped = self.pending_bytes;
                for segment in &mut self.segments {
                    segment.pending.clear();
                    segment.seal = None;
                }
                self.pending_bytes = 0;
                self.seals_pending = 0;
                self.cache.truncate_from(self.high_watermark);
                dropped
            }
        }
    }

    /// Plans a read of whole batches from the one containing `offset`, up to the high
    /// watermark, within `bytes_max` (the first batch is always whole, KIP-74).
    pub fn read_plan(&self, offset: i64, bytes_max: usize) -> Result<ReadPlan, ReadError> {
        self.read_plan_to(offset, bytes_max, self.high_watermark)
    }

    /// [`Self::read_plan`] that stops at `end` (at most the high watermark): the last
    /// stable offset for read_committed fetches. An offset in `[end, high watermark]` is
    /// in range and reads nothing.
    pub fn read_plan_to(
        &self,
        offset: i64,
        bytes_max: usize,
        end: i64,
    ) -> Result<ReadPlan, ReadError> {
        let end = end.min(self.high_watermark);
        if offset < self.log_start_offset || offset > self.high_watermark {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                high_watermark: self.high_watermark,
            });
        }
        if offset >= end {
            return Ok(ReadPlan::Empty);
        }
        if let Some(batches) = self.cache.read(offset, end, bytes_max) {
            return Ok(ReadPlan::Memory(batches));
        }
        // The segment holding `offset`; after compaction or DeleteRecords the offset may
        // fall in a gap (removed records), and then the read starts at the next segment
        // that has anything at or after it.
        let i = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let segment = self.segments[i..]
            .iter()
            .find(|s| s.next_offset > offset)
            .ok_or_else(|| ReadError::Unavailable(format!("no segment holds offset {offset}")))?;
        let file = segment.file.clone().ok_or_else(|| {
            ReadError::Unavailable(format!("segment {} has no file", segment.path.display()))
        })?;
        let relative = u32::try_from(offset - segment.base_offset).unwrap_or(u32::MAX);
        let position = segment
            .index
            .lookup_offset(relative)
            .map(|e| u64::from(e.position))
            .unwrap_or(0);
        Ok(ReadPlan::Disk(DiskRead {
            file,
            path: segment.path.clone(),
            position,
            end: segment.durable_len,
            offset,
            high_watermark: end,
            bytes_max,
        }))
    }

    /// The configuration in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies a topic config change. Segment size and age apply from the next append,
    /// retention and compaction from their next run. The cache keeps its size.
    pub fn set_config(&mut self, mut config: LogConfig) {
        config.cache_bytes = self.config.cache_bytes;
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

    /// Closed segments that are completely on disk, sealed and indexed: the ones
    /// retention and compaction may remove or rewrite. Always leaves the active segment.
    fn settled_prefix(&self) -> usize {
        let closed = self.segments.len() - 1;
        self.segments[..closed]
            .iter()
            .take_while(|s| {
                s.settled && s.seal.is_none() && s.pending.is_empty() && s.file.is_some()
            })
            .count()
    }

    /// Applies `retention.ms` and `retention.bytes` (when `cleanup.policy` has `delete`)
    /// and removes segments wholly below the log start offset. Deletes whole closed
    /// segments only; if every record has expired by time, the active segment is rolled so
    /// the next run can delete it (`rolled`: the caller queues the log for a flush).
    pub fn enforce_retention(&mut self, now_ms: i64) -> Retention {
        let settled = self.settled_prefix();
        let mut total: u64 = self.size_bytes();
        let mut remove = 0usize;
        let mut rolled = false;
        for segment in &self.segments[..settled] {
            let below_start = segment.next_offset <= self.log_start_offset;
            let expired = self.config.delete
                && self.config.retention_ms >= 0
                && segment.index_builder.max_timestamp
                    < now_ms.saturating_sub(self.config.retention_ms);
            let oversized = self.config.delete
                && self.config.retention_bytes >= 0
                && total.saturating_sub(segment.len) >= self.config.retention_bytes as u64;
            if !(below_start || expired || oversized) {
                break;
            }
            total -= segment.len;
            remove += 1;
        }
        if remove == settled && self.config.delete && self.config.retention_ms >= 0 {
            let active = self.segments.last().expect("active segment");
            let expired = active.index_builder.max_timestamp
                < now_ms.saturating_sub(self.config.retention_ms);
            if active.len > 0 && expired && !self.closed && self.offline.is_none() {
                self.roll(now_ms);
                rolled = true;
            }
        }
        Retention {
            removal: self.remove_prefix(remove),
            rolled,
        }
    }

    /// Takes the first `count` segments out of the log and returns the job that deletes
    /// their files (after making the new log start offset durable).
    fn remove_prefix(&mut self, count: usize) -> Option<RemovalJob> {
        if count == 0 {
            return None;
        }
        let removed: Vec<Segment> = self.segments.drain(..count).collect();
        let first_base = self.segments[0].base_offset;
        self.log_start_offset = self.log_start_offset.max(first_base);
        self.producers.trim_aborted(self.log_start_offset);
        tracing::info!(
            dir = %self.dir.display(),
            segments = removed.len(),
            log_start_offset = self.log_start_offset,
            "deleted old segments"
        );
        Some(RemovalJob {
            dir: self.dir.clone(),
            log_start_offset: self.log_start_offset,
            bases: removed.iter().map(|s| s.base_offset).collect(),
            files: removed.into_iter().filter_map(|s| s.file).collect(),
        })
    }

    /// A compaction pass over the closed segments old enough to clean
    /// (`min.compaction.lag.ms`), if the topic is compacted and something there is new since
    /// the last pass (or a kept tombstone has expired).
    pub fn compaction_plan(&mut self, now_ms: i64) -> Option<CompactionJob> {
        if !self.config.compact || self.compacting || self.closed || self.offline.is_some() {
            return None;
        }
        let lag_horizon = now_ms.saturating_sub(self.config.min_compaction_lag_ms);
        let settled = self.settled_prefix();
        let cleanable = self.segments[..settled]
            .iter()
            .take_while(|s| s.index_builder.max_timestamp <= lag_horizon)
            .count();
        if cleanable == 0 {
            return None;
        }
        let end = self.segments[cleanable].base_offset;
        if end <= self.compacted_through && now_ms < self.tombstone_expiry_ms {
            return None;
        }
        self.compacting = true;
        tracing::debug!(dir = %self.dir.display(), segments = cleanable, "compaction pass started");
        Some(CompactionJob {
            dir: self.dir.clone(),
            inputs: self.segments[..cleanable]
                .iter()
                .map(|s| CleanInput {
                    base_offset: s.base_offset,
                    path: s.path.clone(),
                    len: s.durable_len,
                })
                .collect(),
            now_ms,
            delete_retention_ms: self.config.delete_retention_ms,
            index_interval_bytes: self.config.index_interval_bytes,
        })
    }

    /// Applies a finished compaction pass: rewritten segments take their new files and
    /// indexes, emptied ones leave the log. Returns the job deleting emptied segments'
    /// files, if any.
    pub fn complete_compaction(
        &mut self,
        result: io::Result<CompactionDone>,
    ) -> Option<RemovalJob> {
        self.compacting = false;
        let done = match result {
            Ok(done) => done,
            Err(err) => {
                tracing::error!(dir = %self.dir.display(), %err, "compaction failed; the log is unchanged");
                return None;
            }
        };
        let mut emptied = Vec::new();
        let mut last_base = None;
        for (base, output) in done.outputs {
            last_base = Some(base);
            let Some(i) = self.segments.iter().position(|s| s.base_offset == base) else {
                // Removed meanwhile (DeleteRecords): its rewritten file must go too.
                if !matches!(output, CleanOutput::Unchanged) {
                    emptied.push((base, None));
                }
                continue;
            };
            match output {
                CleanOutput::Unchanged => {}
                CleanOutput::Emptied => {
                    let segment = self.segments.remove(i);
                    emptied.push((base, segment.file));
                }
                CleanOutput::Rewritten {
                    file,
                    index,
                    summary,
                } => {
                    let segment = &mut self.segments[i];
                    let last_entry = index.entries().last().map(|e| u64::from(e.position));
                    segment.index_builder = IndexBuilder::resume(
                        self.config.index_interval_bytes,
                        summary.len,
                        last_entry,
                        summary.max_timestamp,
                    );
                    segment.index = index;
                    segment.file = Some(file);
                    segment.len = summary.len;
                    segment.durable_len = summary.len;
                    segment.next_offset = summary.next_offset;
                }
            }
        }
        if let Some(base) = last_base {
            self.compacted_through = self
                .segments
                .iter()
                .find(|s| s.base_offset > base)
                .map(|s| s.base_offset)
                .unwrap_or(self.next_offset);
        }
        self.tombstone_expiry_ms = done.next_tombstone_expiry_ms;
        // Batches of closed segments may have changed: tailing reads come from the active one.
        let active_base = self.segments.last().expect("active segment").base_offset;
        self.cache.forget_before(active_base);
        tracing::info!(
            dir = %self.dir.display(),
            bytes_before = done.bytes_before,
            bytes_after = done.bytes_after,
            removed_segments = emptied.len(),
            "compacted"
        );
        if emptied.is_empty() {
            return None;
        }
        Some(RemovalJob {
            dir: self.dir.clone(),
            log_start_offset: self.log_start_offset,
            bases: emptied.iter().map(|(b, _)| *b).collect(),
            files: emptied.into_iter().filter_map(|(_, f)| f).collect(),
        })
    }

    /// DeleteRecords: moves the log start offset up to `offset` (-1: the high watermark)
    /// and removes the segments wholly below it. Returns the new log start offset and the
    /// job that makes it durable; the caller answers after the job ran.
    pub fn delete_records(&mut self, offset: i64) -> Result<(i64, RemovalJob), ReadError> {
        let offset = if offset == -1 {
            self.high_watermark
        } else {
            offset
        };
        if offset < 0 || offset > self.high_watermark {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                high_watermark: self.high_watermark,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            self.producers.trim_aborted(offset);
        }
        let settled = self.settled_prefix();
        let below = self.segments[..settled]
            .iter()
            .take_while(|s| s.next_offset <= self.log_start_offset)
            .count();
        let job = self.remove_prefix(below).unwrap_or_else(|| RemovalJob {
            dir: self.dir.clone(),
            log_start_offset: self.log_start_offset,
            bases: Vec::new(),
            files: Vec::new(),
        });
        Ok((self.log_start_offset, job))
    }

    /// Plans a search for the first record with a timestamp at or after `timestamp`.
    pub fn timestamp_plan(&self, timestamp: i64) -> TimestampPlan {
        let mut segments = Vec::new();
        for segment in &self.segments {
            if !segments.is_empty() {
                if let Some(file) = &segment.file {
                    segments.push((file.clone(), segment.path.clone(), 0, segment.durable_len));
                }
                continue;
            }
            if segment.index_builder.max_timestamp < timestamp {
                continue;
            }
            if let Some(file) = &segment.file {
                let start = segment
                    .index
                    .lookup_timestamp(timestamp)
                    .map(|e| u64::from(e.position))
                    .unwrap_or(0);
                segments.push((
                    file.clone(),
                    segment.path.clone(),
                    start,
                    segment.durable_len,
                ));
            }
        }
        TimestampPlan {
            segments,
            timestamp,
            high_watermark: self.high_watermark,
        }
    }

    /// Stops the log taking writes and returns the job that closes it; `None` if already
    /// closed. Index files and a producer snapshot are written only if nothing is pending,
    /// so that they describe exactly what is on disk.
    pub fn close_job(&mut self) -> Option<CloseJob> {
        if self.closed {
            return None;
        }
        self.closed = true;
        let clean = !self.is_dirty() && self.offline.is_none();
        let active = self.segments.last().expect("active segment");
        let clean = (clean && active.file.is_some()).then(|| {
            (
                active.base_offset,
                active.index.clone(),
                active.summary(),
                self.producers.encode_snapshot(),
                self.high_watermark,
            )
        });
        Some(CloseJob {
            dir: self.dir.clone(),
            clean,
            active: active.file.clone(),
            files: self
                .segments
                .iter_mut()
                .filter_map(|s| s.file.take())
                .collect(),
        })
    }
}

/// What a retention run did to the log.
pub struct Retention {
    /// Files to delete (and the log start offset to record first).
    pub removal: Option<RemovalJob>,
    /// The active segment was rolled; the log needs a flush to seal it.
    pub rolled: bool,
}

/// Deletes removed segments' files, after writing the new log start offset.
pub struct RemovalJob {
    dir: PathBuf,
    log_start_offset: i64,
    bases: Vec<i64>,
    files: Vec<Rc<DmaFile>>,
}

/// The file recording a partition's log start offset when it is above the first
/// segment's base (DeleteRecords, or segments removed).
pub const LOG_START_FILE: &str = "log-start-offset.checkpoint";

impl RemovalJob {
    pub async fn run(self) -> io::Result<()> {
        for file in self.files {
            // A fetch still reading an old segment keeps its own handle; this one closes.
            let _ = file.close_rc().await;
        }
        let dir = self.dir;
        let start = self.log_start_offset;
        let bases = self.bases;
        glommio::executor()
            .spawn_blocking(move || {
                super::index::write_atomically(
                    &dir.join(LOG_START_FILE),
                    format!("{start}\n").as_bytes(),
                )?;
                for base in bases {
                    super::recovery::remove_segment_files(&dir, base)?;
                }
                crate::cluster::metadata_log::sync_dir(&dir)
            })
            .await
    }
}

/// The recorded log start offset of a partition directory, if any.
fn read_log_start(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(LOG_START_FILE)).ok()?;
    match text.trim().parse::<i64>() {
        Ok(offset) if offset >= 0 => Some(offset),
        _ => {
            tracing::warn!(dir = %dir.display(), "unreadable {LOG_START_FILE}; using the first segment's base");
            None
        }
    }
}

/// Records read for a fetch.
#[derive(Debug)]
pub struct ReadData {
    pub records: Bytes,
}

pub enum ReadPlan {
    Empty,
    Memory(Vec<Bytes>),
    Disk(DiskRead),
}

pub struct DiskRead {
    file: Rc<DmaFile>,
    path: PathBuf,
    position: u64,
    end: u64,
    offset: i64,
    high_watermark: i64,
    bytes_max: usize,
}

impl ReadPlan {
    pub async fn read(self) -> io::Result<ReadData> {
        let records = match self {
            ReadPlan::Empty => Bytes::new(),
            ReadPlan::Memory(mut batches) if batches.len() == 1 => {
                batches.pop().expect("one batch")
            }
            ReadPlan::Memory(batches) => {
                let mut out = BytesMut::with_capacity(batches.iter().map(|b| b.len()).sum());
                for b in batches {
                    out.extend_from_slice(&b);
                }
                out.freeze()
            }
            ReadPlan::Disk(read) => read.read().await?,
        };
        Ok(ReadData { records })
    }
}

fn corrupt(path: &Path, position: u64, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "corrupt batch in {} at byte {position}: {why}",
            path.display()
        ),
    )
}

/// Walks the batches of a segment from `position` to `end`, reading in chunks. `visit`
/// gets each batch (validated: CRC, lengths) and returns whether to go on.
async fn walk_batches(
    file: &DmaFile,
    path: &Path,
    mut position: u64,
    end: u64,
    chunk_bytes: usize,
    mut visit: impl FnMut(&[u8], &BatchInfo) -> bool,
) -> io::Result<()> {
    let mut want = chunk_bytes.clamp(READ_CHUNK_BYTES_MIN, READ_CHUNK_BYTES_MAX);
    while position < end {
        let size = (end - position).min(want as u64) as usize;
        let chunk = file.read_at(position, size).await?;
        if chunk.is_empty() {
            return Err(corrupt(
                path,
                position,
                "segment file is shorter than its durable length",
            ));
        }
        let want_before = want;
        let mut at = 0usize;
        while at < chunk.len() {
            let rest = &chunk[at..];
            if rest.len() < batch::BATCH_LENGTH_PREFIX_LEN {
                break;
            }
            let batch_length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
            let len = batch::BATCH_LENGTH_PREFIX_LEN as i64 + i64::from(batch_length);
            if len < batch::BATCH_HEADER_LEN as i64 || len as u64 > end - (position + at as u64) {
                return Err(corrupt(
                    path,
                    position + at as u64,
                    format!("batch length {batch_length}"),
                ));
            }
            let len = len as usize;
            if len > rest.len() {
                // Read again from this batch, enough to hold it whole.
                want = want.max(len);
                break;
            }
            let info =
                parse_batch(&rest[..len]).map_err(|e| corrupt(path, position + at as u64, e))?;
            if !visit(&rest[..len], &info) {
                return Ok(());
            }
            at += len;
        }
        if at == 0 && want == want_before {
            return Err(corrupt(
                path,
                position,
                "no whole batch before the durable end",
            ));
        }
        position += at as u64;
    }
    Ok(())
}

impl DiskRead {
    /// The batches from `offset` on, each checked. A corrupt (or unreadable) batch is an
    /// error only when nothing before it was taken: otherwise the read ends before it, and
    /// the next read, starting there, reports it. So intact batches in front of a corrupt
    /// one are served, and the corrupt one never is.
    async fn read(self) -> io::Result<Bytes> {
        let mut out = BytesMut::new();
        let result = self.read_into(&mut out).await;
        match result {
            Err(_) if !out.is_empty() => Ok(out.freeze()),
            Err(err) => Err(err),
            Ok(()) => Ok(out.freeze()),
        }
    }

    async fn read_into(&self, out: &mut BytesMut) -> io::Result<()> {
        let mut last_base = i64::MIN;
        let mut bad_order = None;
        walk_batches(
            &self.file,
            &self.path,
            self.position,
            self.end,
            self.bytes_max.saturating_add(READ_CHUNK_BYTES_MIN),
            |bytes, info| {
                if info.base_offset <= last_base {
                    bad_order = Some(info.base_offset);
                    return false;
                }
                last_base = info.base_offset;
                if info.last_offset() < self.offset {
                    return true;
                }
                if info.base_offset >= self.high_watermark {
                    return false;
                }
                if !out.is_empty() && out.len() + bytes.len() > self.bytes_max {
                    return false;
                }
                out.extend_from_slice(bytes);
                true
            },
        )
        .await?;
        if let Some(offset) = bad_order {
            return Err(corrupt(
                &self.path,
                self.position,
                format!("base offset {offset} out of order"),
            ));
        }
        Ok(())
    }
}

/// A ListOffsets search by timestamp; owns its file handles.
pub struct TimestampPlan {
    segments: Vec<(Rc<DmaFile>, PathBuf, u64, u64)>,
    timestamp: i64,
    high_watermark: i64,
}

impl TimestampPlan {
    /// `(offset, timestamp)` of the first record at or after the timestamp, if any. For
    /// compressed batches the answer is the batch's base offset and max timestamp: finding
    /// the exact record would mean decompressing, and a consumer starting at the batch gets
    /// the record it asked for (with a few earlier ones).
    pub async fn resolve(self) -> io::Result<Option<(i64, i64)>> {
        for (file, path, start, end) in &self.segments {
            let mut found = None;
            walk_batches(
                file,
                path,
                *start,
                *end,
                READ_CHUNK_BYTES_MIN,
                |bytes, info| {
                    if info.base_offset >= self.high_watermark {
                        return false;
                    }
                    if info.max_timestamp < self.timestamp {
                        return true;
                    }
                    found = Some(match record_timestamps(bytes) {
                        Some(records) => records
                            .into_iter()
                            .find(|&(_, ts)| ts >= self.timestamp)
                            .map(|(delta, ts)| (info.base_offset + delta, ts))
                            .unwrap_or((info.base_offset, info.max_timestamp)),
                        None => (info.base_offset, info.max_timestamp),
                    });
                    false
                },
            )
            .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}
