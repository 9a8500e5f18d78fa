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
    /// Producer state as of the next segment's base offset.
    pub(super) snapshot: Vec<u8>,
    pub(super) snapshot_offset: i64,
}

#[derive(Debug)]
pub(super) struct Segment {
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
    pub(super) fn new(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Segment {
        Segment {
            base_offset,
            path: segment_file(dir, base_offset, LOG_SUFFIX),
            file: None,
            durable_len: 0,
            tail_block: Vec::new(),
            issued_len: 0,
            unsynced: false,
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

    pub(super) fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            len: self.len,
            next_offset: self.next_offset,
            max_timestamp: self.index_builder.max_timestamp,
        }
    }
}
