//! Opening a partition directory after a clean stop or a crash.
//!
//! Recovery never trusts a file's length: a direct-I/O tail is padded to the block size,
//! and a crash can leave a torn batch behind the last acknowledged one. A segment is
//! trusted only if its index trailer records exactly the segment's current length (the
//! index is written after the segment was made durable, when it is sealed or closed
//! cleanly); every other segment is scanned batch by batch — length, magic, CRC32C,
//! offsets increasing — and truncated at the first invalid byte, and its index rebuilt.
//! Corruption inside an older segment ends the log there: later segments are removed,
//! because offsets after a hole cannot be trusted to be contiguous.
//!
//! Producer state comes from the newest valid snapshot at or below the recovered log end,
//! replayed forward with every idempotent batch after it.
//!
//! Everything here is blocking `std::fs` I/O: it runs on a blocking thread at open time
//! (see [`super::log::PartitionLog::open`]) and directly in unit tests.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::index::{IndexBuilder, SegmentIndex, SegmentSummary};
use super::producer_state::ProducerState;
use super::segment_walk::SegmentWalker;
use super::{parse_segment_name, segment_file, LOG_SUFFIX, SNAPSHOT_SUFFIX, TMP_SUFFIX};
use crate::protocol::batch::{
    control_marker, BatchInfo, Marker, BATCH_HEADER_LEN, BATCH_LENGTH_PREFIX_LEN,
};

/// A batch larger than this in a segment is treated as corruption, whatever its CRC.
pub const BATCH_BYTES_MAX_ON_DISK: usize = 256 * 1024 * 1024;

/// A recovered segment, ready to be opened for reads (and, if last, appends).
#[derive(Debug)]
pub struct RecoveredSegment {
    pub base_offset: i64,
    pub path: PathBuf,
    pub summary: SegmentSummary,
    pub index: SegmentIndex,
    /// Index files are missing or stale (the active segment after a crash).
    pub index_dirty: bool,
}

#[derive(Debug)]
pub struct Recovered {
    pub segments: Vec<RecoveredSegment>,
    pub producers: ProducerState,
    /// Offset of the snapshot the producer state was loaded from (-1: none).
    pub snapshot_offset: i64,
    /// Bytes cut from torn or corrupt tails (0 after a clean stop).
    pub truncated_bytes: u64,
    /// The last partial block of the active segment, for rewriting on the next flush.
    pub tail_block: Vec<u8>,
}

impl Recovered {
    pub fn next_offset(&self) -> i64 {
        self.segments
            .last()
            .map(|s| s.summary.next_offset)
            .unwrap_or(0)
    }
}

/// A batch found by a scan: where it starts and its header.
#[derive(Clone, Copy, Debug)]
pub struct ScannedBatch {
    pub position: u64,
    pub info: BatchInfo,
    /// For a control batch: the transaction marker it carries.
    pub marker: Option<Marker>,
}

/// The result of scanning one segment file.
#[derive(Debug)]
pub struct Scan {
    pub valid_len: u64,
    pub file_len: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub index: SegmentIndex,
    /// Batches with a producer id (for replaying producer state).
    pub idempotent: Vec<ScannedBatch>,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

/// Scans a segment from the start, validating each batch; stops at the first invalid one.
pub fn scan_segment(path: &Path, base_offset: i64, index_interval_bytes: u64) -> io::Result<Scan> {
    let file_len = std::fs::metadata(path)?.len();
    let mut walker = SegmentWalker::open(path, file_len, BATCH_BYTES_MAX_ON_DISK)?;
    let mut index = SegmentIndex::new();
    let mut builder = IndexBuilder::new(index_interval_bytes);
    let mut idempotent = Vec::new();
    let mut next_offset = base_offset;
    // The end of the last batch accepted: a batch can be whole and valid and still be
    // refused (offsets going backwards), so this is not always the walker's position.
    let mut valid_len = 0u64;
    let stopped = loop {
        let (position, info) = match walker.next_batch() {
            Ok(Some(batch)) => batch,
            Ok(None) => break None,
            Err(stop) => break Some(stop.to_string()),
        };
        if info.base_offset < next_offset {
            break Some(format!(
                "batch at byte {position} has base offset {} below the expected {next_offset}",
                info.base_offset
            ));
        }
        if info.producer_id >= 0 {
            let marker = if info.is_control() {
                control_marker(walker.batch())
            } else {
                None
            };
            idempotent.push(ScannedBatch {
                position,
                info,
                marker,
            });
        }
        builder.add(&mut index, base_offset, position, &info);
        next_offset = info.last_offset() + 1;
        valid_len = walker.position();
    };
    Ok(Scan {
        valid_len,
        file_len,
        next_offset,
        max_timestamp: builder.max_timestamp,
        index,
        idempotent,
        stopped,
    })
}

/// Reads the headers of every batch of a trusted segment from `from_position` on (for
/// replaying producer state); does not check CRCs, which were checked before the segment
/// was sealed.
fn read_idempotent_headers(
    path: &Path,
    from_position: u64,
    len: u64,
) -> io::Result<Vec<ScannedBatch>> {
    let mut file = File::open(path)?;
    let mut out = Vec::new();
    let mut position = from_position;
    let mut header = [0u8; BATCH_HEADER_LEN];
    while position + BATCH_HEADER_LEN as u64 <= len {
        file.seek(SeekFrom::Start(position))?;
        file.read_exact(&mut header)?;
        let view = crate::protocol::batch::BatchHeader::view(&header).expect("header-sized buffer");
        let batch_len = BATCH_LENGTH_PREFIX_LEN as u64 + view.batch_length.get().max(0) as u64;
        if batch_len < BATCH_HEADER_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad batch length at byte {position} of {}", path.display()),
            ));
        }
        let info = BatchInfo {
            len: batch_len as usize,
            base_offset: view.base_offset.get(),
            last_offset_delta: view.last_offset_delta.get(),
            record_count: view.records_count.get(),
            base_timestamp: view.base_timestamp.get(),
            max_timestamp: view.max_timestamp.get(),
            producer_id: view.producer_id.get(),
            producer_epoch: view.producer_epoch.get(),
            base_sequence: view.base_sequence.get(),
            attributes: view.attributes.get(),
        };
        if info.producer_id >= 0 {
            let marker = if info.is_control() {
                // A control batch is one small record: read it whole for its marker.
                let mut whole = vec![0u8; (batch_len as usize).min(1 << 16)];
                file.seek(SeekFrom::Start(position))?;
                file.read_exact(&mut whole)?;
                control_marker(&whole)
            } else {
                None
            };
            out.push(ScannedBatch {
                position,
                info,
                marker,
            });
        }
        position += batch_len;
    }
    Ok(out)
}

/// Recovers the partition in `dir`. `dir` must exist.
///
/// `producers_at`: the producer state is wanted as of this offset, not the log end (a
/// replicated log's committed end; what follows is replayed by the log itself): later
/// snapshots are not used and later batches not replayed.
pub fn recover(
    dir: &Path,
    index_interval_bytes: u64,
    producers_at: Option<i64>,
) -> io::Result<Recovered> {
    let producers_at = producers_at.unwrap_or(i64::MAX);
    let mut bases = Vec::new();
    let mut snapshots = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(TMP_SUFFIX) || name.ends_with(super::CLEANED_SUFFIX) {
            // A write-then-rename (or a compaction rewrite) interrupted by a crash.
            std::fs::remove_file(entry.path())?;
        } else if let Some(base) = parse_segment_name(&name, LOG_SUFFIX) {
            bases.push(base);
        } else if let Some(offset) = parse_segment_name(&name, SNAPSHOT_SUFFIX) {
            snapshots.push(offset);
        }
    }
    bases.sort_unstable();
    snapshots.sort_unstable();

    let mut segments: Vec<RecoveredSegment> = Vec::with_capacity(bases.len());
    let mut replay: Vec<Vec<ScannedBatch>> = Vec::with_capacity(bases.len());
    let mut truncated_bytes = 0u64;
    let mut removed_from: Option<usize> = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_file(dir, base, LOG_SUFFIX);
        let last = i + 1 == bases.len();
        if let Some(previous) = segments.last() {
            if base < previous.summary.next_offset {
                tracing::error!(
                    dir = %dir.display(),
                    base,
                    previous_end = previous.summary.next_offset,
                    "segment overlaps the one before it; removing it and every later segment"
                );
                removed_from = Some(i);
                break;
            }
        }
        let file_len = std::fs::metadata(&path)?.len();
        if file_len == 0 && !last {
            // A segment created by a roll that never received data.
            remove_segment_files(dir, base)?;
            replay.push(Vec::new());
            continue;
        }
        if let Some((index, summary)) = SegmentIndex::read_files(dir, base, file_len) {
            // The trailer names the segment's length, not the segment: an index copied in
            // from another segment of the same length would pass. Its end offset must also
            // fall between this segment's base and the next one's.
            let fits = summary.next_offset >= base
                && bases
                    .get(i + 1)
                    .is_none_or(|&next| summary.next_offset <= next);
            if fits {
                segments.push(RecoveredSegment {
                    base_offset: base,
                    path,
                    summary,
                    index,
                    index_dirty: false,
                });
                replay.push(Vec::new());
                continue;
            }
        }
        if !last {
            tracing::warn!(
                dir = %dir.display(),
                segment = base,
                "index files of a sealed segment are missing, corrupt or stale; scanning the segment"
            );
        }
        let scan = scan_segment(&path, base, index_interval_bytes)?;
        if let Some(why) = &scan.stopped {
            tracing::warn!(
                dir = %dir.display(),
                segment = base,
                valid_bytes = scan.valid_len,
                file_bytes = scan.file_len,
                "{why}; truncating the segment there"
            );
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(scan.valid_len)?;
            file.sync_all()?;
            truncated_bytes += scan.file_len - scan.valid_len;
        }
        let summary = SegmentSummary {
            len: scan.valid_len,
            next_offset: scan.next_offset,
            max_timestamp: scan.max_timestamp,
        };
        let corrupt_before_end = scan.stopped.is_some() && !last;
        if !last {
            // Sealed segments get their index back now, so the next start is fast.
            scan.index.write_files(dir, base, summary)?;
        }
        segments.push(RecoveredSegment {
            base_offset: base,
            path,
            summary,
            index: scan.index,
            index_dirty: last,
        });
        replay.push(scan.idempotent);
        if corrupt_before_end {
            tracing::error!(
                dir = %dir.display(),
                segment = base,
                "corruption inside a sealed segment; removing every later segment"
            );
            removed_from = Some(i + 1);
            break;
        }
    }
    if let Some(from) = removed_from {
        for &base in &bases[from..] {
            let len = std::fs::metadata(segment_file(dir, base, LOG_SUFFIX))
                .map(|m| m.len())
                .unwrap_or(0);
            truncated_bytes += len;
            remove_segment_files(dir, base)?;
        }
    }
    // A segment left empty by truncation is dropped unless it is the only one.
    while segments.len() > 1 && segments.last().is_some_and(|s| s.summary.len == 0) {
        let empty = segments.pop().expect("non-empty");
        replay.pop();
        remove_segment_files(dir, empty.base_offset)?;
        if let Some(last) = segments.last_mut() {
            last.index_dirty = true;
        }
    }

    let log_end = segments.last().map(|s| s.summary.next_offset).unwrap_or(0);
    let log_start = segments.first().map(|s| s.base_offset).unwrap_or(0);

    // Producer state: the newest readable snapshot in [log start, log end], then replay.
    let mut producers = ProducerState::default();
    let mut snapshot_offset = -1;
    for &offset in snapshots.iter().rev() {
        let path = segment_file(dir, offset, SNAPSHOT_SUFFIX);
        if offset > log_end {
            std::fs::remove_file(&path)?;
            continue;
        }
        if offset > producers_at {
            continue;
        }
        if snapshot_offset >= 0 {
            if offset < snapshot_offset {
                // Older snapshots are no longer needed.
                std::fs::remove_file(&path)?;
            }
            continue;
        }
        if offset < log_start && !segments.is_empty() {
            continue;
        }
        match std::fs::read(&path)
            .ok()
            .and_then(|b| ProducerState::decode_snapshot(&b))
        {
            Some(state) => {
                producers = state;
                snapshot_offset = offset;
            }
            None => {
                tracing::warn!(path = %path.display(), "producer snapshot is corrupt; ignoring it")
            }
        }
    }
    let replay_from = snapshot_offset.max(log_start);
    for (segment, scanned) in segments.iter().zip(replay.iter_mut()) {
        if segment.summary.next_offset <= replay_from {
            continue;
        }
        if scanned.is_empty() && segment.summary.len > 0 && !segment.index_dirty {
            // Trusted segment: read its headers from the nearest index entry on.
            let relative =
                u32::try_from((replay_from - segment.base_offset).max(0)).unwrap_or(u32::MAX);
            let from = segment
                .index
                .lookup_offset(relative)
                .map(|e| u64::from(e.position))
                .unwrap_or(0);
            *scanned = read_idempotent_headers(&segment.path, from, segment.summary.len)?;
        }
        for batch in scanned
            .iter()
            .filter(|b| b.info.base_offset >= replay_from && b.info.base_offset < producers_at)
        {
            if batch.info.is_control() {
                if let Some(marker) = batch.marker {
                    producers.apply_marker(
                        &batch.info,
                        batch.info.base_offset,
                        marker,
                        -1,
                        batch.info.max_timestamp,
                    );
                }
            } else {
                producers.apply(
                    &batch.info,
                    batch.info.base_offset,
                    batch.info.max_timestamp,
                );
            }
        }
        producers.trim_aborted(log_start);
    }

    // The last partial block of the active segment is rewritten by the next flush.
    let mut tail_block = Vec::new();
    if let Some(last) = segments.last() {
        let aligned = super::align_down(last.summary.len);
        let partial = (last.summary.len - aligned) as usize;
        if partial > 0 {
            tail_block.resize(partial, 0);
            File::open(&last.path)?.read_exact_at(&mut tail_block, aligned)?;
        }
    }
    Ok(Recovered {
        segments,
        producers,
        snapshot_offset,
        truncated_bytes,
        tail_block,
    })
}

/// Removes a segment's log and index files.
pub fn remove_segment_files(dir: &Path, base: i64) -> io::Result<()> {
    for suffix in [LOG_SUFFIX, super::INDEX_SUFFIX, super::TIME_INDEX_SUFFIX] {
        match std::fs::remove_file(segment_file(dir, base, suffix)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
