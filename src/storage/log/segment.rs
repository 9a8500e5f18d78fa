//! One segment of a partition log as the log keeps it in memory: its file, what of it is
//! durable, its index, the batches appended but not yet handed to a flush, and its seal.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::storage::cache::PlacedBatch;
use crate::storage::index::{IndexBuilder, SegmentIndex, SegmentSummary};
use crate::storage::{segment_file, LOG_SUFFIX};

/// A segment waiting to be sealed by the next flush.
#[derive(Debug)]
pub(super) struct Seal {
    /// Producer state as of the next segment's base offset (`None`: not known, a
    /// replicated log's rolled segment found uncommitted at reopen).
    pub(super) snapshot: Option<Vec<u8>>,
    pub(super) snapshot_offset: i64,
}

#[derive(Debug)]
pub(super) struct Segment {
    /// Unique within the log: a segment dropped by a truncation and a later one with the
    /// same base offset are told apart by it (flush jobs in flight name segments by it).
    pub(super) id: u64,
    pub(super) base_offset: i64,
    pub(super) path: PathBuf,
    /// `None` until the first flush creates the file.
    pub(super) file: Option<Rc<DmaFile>>,
    /// Bytes on disk as of the last completed flush job: written, and synced unless the
    /// topic defers syncs (`flush.messages` above 1).
    pub(super) durable_len: u64,
    /// Bytes from `align_down(durable_len)`: rewritten with the next write.
    pub(super) tail_block: Vec<u8>,
    /// Bytes handed to flush jobs so far (`durable_len` plus what a job in flight writes).
    pub(super) issued_len: u64,
    /// A job that did not sync wrote to the segment: the next job that syncs includes it.
    pub(super) unsynced: bool,
    /// Replicated logs: the segment was truncated at this length below what was already
    /// handed to flush jobs; the next job cuts the file there before writing (and reads
    /// the partial block back from disk).
    pub(super) rewrite_from: Option<u64>,
    /// Replicated logs: the rolled segment's file was cut to its logical length (its seal
    /// waits for the commit; recovery must not take its padding for a torn end).
    pub(super) trimmed: bool,
    /// Length including bytes not yet flushed.
    pub(super) len: u64,
    /// Offset after the last appended batch (flushed or not).
    pub(super) next_offset: i64,
    pub(super) index: SegmentIndex,
    pub(super) index_builder: IndexBuilder,
    /// Appended, not yet handed to a flush job.
    pub(super) pending: Vec<PlacedBatch>,
    pub(super) seal: Option<Seal>,
    pub(super) sealed: bool,
    /// Sealed and the seal is on disk (trimmed, indexed): no flush job will touch the
    /// segment again, so retention and compaction may.
    pub(super) settled: bool,
    /// Wall-clock ms of the first append (or of opening, for a recovered segment): the
    /// age `segment.ms` is measured from.
    pub(super) created_ms: i64,
}

impl Segment {
    pub(super) fn new(id: u64, dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Segment {
        Segment {
            id,
            base_offset,
            path: segment_file(dir, base_offset, LOG_SUFFIX),
            file: None,
            durable_len: 0,
            tail_block: Vec::new(),
            issued_len: 0,
            unsynced: false,
            rewrite_from: None,
            trimmed: false,
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

    /// Where the bytes not yet handed to a flush job start.
    pub(super) fn pending_from(&self) -> u64 {
        self.rewrite_from.unwrap_or(self.issued_len)
    }

    pub(super) fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            len: self.len,
            next_offset: self.next_offset,
            max_timestamp: self.index_builder.max_timestamp,
        }
    }
}
