//! The sparse offset and time index of one segment.
//!
//! An entry is added at a batch boundary whenever at least `index_interval_bytes` were
//! appended since the previous entry (the first batch of a segment always gets one). Each
//! entry knows the batch's offset relative to the segment base, its byte position, and the
//! largest timestamp of every batch *before* it, so one in-memory table answers both
//! "where does offset X start" and "from where must a search for timestamp T scan".
//!
//! On disk the table is split the way Kafka splits it — `.index` holds (relative offset,
//! position) pairs, `.timeindex` holds (max timestamp before, relative offset) — and each
//! file ends in a trailer with a CRC32C and the segment length it describes. A file whose
//! CRC fails, or whose recorded segment length differs from the segment file's length, is
//! stale: recovery ignores it and rebuilds the index by scanning the segment.

use std::io;
use std::path::Path;

use super::record_file::write_atomically;
use crate::protocol::batch::BatchInfo;

/// One index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the batch, relative to the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
    /// Largest timestamp of all batches before this one in the segment (-1 if none).
    pub max_timestamp_before: i64,
}

/// What the index trailer records about the segment it was written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Logical length of the segment file in bytes.
    pub len: u64,
    /// Offset after the segment's last batch.
    pub next_offset: i64,
    /// Largest batch timestamp in the segment (-1 if empty).
    pub max_timestamp: i64,
}

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;
const INDEX_MAGIC: &[u8; 4] = b"STIX";
const TIME_INDEX_MAGIC: &[u8; 4] = b"STTI";
const FORMAT_VERSION: u16 = 1;
/// magic(4) version(2) len(8) next_offset(8) max_timestamp(8) entries(4) crc(4)
const TRAILER_BYTES: usize = 38;

#[derive(Clone, Debug, Default)]
pub struct SegmentIndex {
    entries: Vec<IndexEntry>,
}

impl SegmentIndex {
    pub fn new() -> Self {
        SegmentIndex::default()
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an entry; entries must grow in offset and position.
    pub fn push(&mut self, entry: IndexEntry) {
        if let Some(last) = self.entries.last() {
            assert!(
                entry.relative_offset > last.relative_offset && entry.position > last.position,
                "index entries must be strictly increasing: {last:?} then {entry:?}"
            );
        }
        self.entries.push(entry);
    }

    /// Drops every entry at or after `position` (the segment was truncated there).
    pub fn truncate_to_position(&mut self, position: u64) {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        self.entries.truncate(keep);
    }

    /// The last entry whose batch starts at or before `relative_offset`: the position from
    /// which a scan for that offset must start. `None`: scan from the segment start.
    pub fn lookup_offset(&self, relative_offset: u32) -> Option<IndexEntry> {
        let i = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry before which every batch has a timestamp below `timestamp`: a search
    /// for the first record at or after `timestamp` can start there.
    pub fn lookup_timestamp(&self, timestamp: i64) -> Option<IndexEntry> {
        // max_timestamp_before is non-decreasing, so this is a binary search.
        let i = self
            .entries
            .partition_point(|e| e.max_timestamp_before < timestamp);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// Writes `<stem>.index` and `<stem>.timeindex` (temp file, fsync, rename).
    pub fn write_files(
        &self,
        dir: &Path,
        base_offset: i64,
        summary: SegmentSummary,
    ) -> io::Result<()> {
        let mut offsets =
            Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES + TRAILER_BYTES);
        let mut times = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES + TRAILER_BYTES);
        for e in &self.entries {
            offsets.extend_from_slice(&e.relative_offset.to_be_bytes());
            offsets.extend_from_slice(&e.position.to_be_bytes());
            times.extend_from_slice(&e.max_timestamp_before.to_be_bytes());
            times.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        let count = self.entries.len() as u32;
        append_trailer(&mut offsets, INDEX_MAGIC, summary, count);
        append_trailer(&mut times, TIME_INDEX_MAGIC, summary, count);
        write_atomically(
            &super::segment_file(dir, base_offset, super::INDEX_SUFFIX),
            &offsets,
        )?;
        write_atomically(
            &super::segment_file(dir, base_offset, super::TIME_INDEX_SUFFIX),
            &times,
        )?;
        Ok(())
    }

    /// Reads both index files of a segment; `None` if either is missing, corrupt, or
    /// written for a segment of a different length than `segment_len`.
    pub fn read_files(
        dir: &Path,
        base_offset: i64,
        segment_len: u64,
    ) -> Option<(SegmentIndex, SegmentSummary)> {
        let offsets =
            std::fs::read(super::segment_file(dir, base_offset, super::INDEX_SUFFIX)).ok()?;
        let times = std::fs::read(super::segment_file(
            dir,
            base_offset,
            super::TIME_INDEX_SUFFIX,
        ))
        .ok()?;
        let (offset_body, summary, count) = split_trailer(&offsets, INDEX_MAGIC)?;
        let (time_body, time_summary, time_count) = split_trailer(&times, TIME_INDEX_MAGIC)?;
        if summary != time_summary || count != time_count || summary.len != segment_len {
            return None;
        }
        if offset_body.len() != count as usize * OFFSET_ENTRY_BYTES
            || time_body.len() != count as usize * TIME_ENTRY_BYTES
        {
            return None;
        }
        let mut index = SegmentIndex::new();
        for (o, t) in offset_body
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .zip(time_body.chunks_exact(TIME_ENTRY_BYTES))
        {
            let relative_offset = u32::from_be_bytes(o[0..4].try_into().ok()?);
            let position = u32::from_be_bytes(o[4..8].try_into().ok()?);
            let max_timestamp_before = i64::from_be_bytes(t[0..8].try_into().ok()?);
            if u32::from_be_bytes(t[8..12].try_into().ok()?) != relative_offset {
                return None;
            }
            if u64::from(position) >= segment_len.max(1) {
                return None;
            }
            if let Some(last) = index.entries.last() {
                if relative_offset <= last.relative_offset
                    || position <= last.position
                    || max_timestamp_before < last.max_timestamp_before
                {
                    return None;
                }
            }
            index.entries.push(IndexEntry {
                relative_offset,
                position,
                max_timestamp_before,
            });
        }
        Some((index, summary))
    }
}

fn append_trailer(buf: &mut Vec<u8>, magic: &[u8; 4], summary: SegmentSummary, count: u32) {
    buf.extend_from_slice(magic);
    buf.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    buf.extend_from_slice(&summary.len.to_be_bytes());
    buf.extend_from_slice(&summary.next_offset.to_be_bytes());
    buf.extend_from_slice(&summary.max_timestamp.to_be_bytes());
    buf.extend_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(buf);
    buf.extend_from_slice(&crc.to_be_bytes());
}

fn split_trailer<'a>(buf: &'a [u8], magic: &[u8; 4]) -> Option<(&'a [u8], SegmentSummary, u32)> {
    if buf.len() < TRAILER_BYTES {
        return None;
    }
    let (covered, crc) = buf.split_at(buf.len() - 4);
    if crc32c::crc32c(covered) != u32::from_be_bytes(crc.try_into().ok()?) {
        return None;
    }
    let trailer = &buf[buf.len() - TRAILER_BYTES..];
    if &trailer[0..4] != magic
        || u16::from_be_bytes(trailer[4..6].try_into().ok()?) != FORMAT_VERSION
    {
        return None;
    }
    let summary = SegmentSummary {
        len: u64::from_be_bytes(trailer[6..14].try_into().ok()?),
        next_offset: i64::from_be_bytes(trailer[14..22].try_into().ok()?),
        max_timestamp: i64::from_be_bytes(trailer[22..30].try_into().ok()?),
    };
    let count = u32::from_be_bytes(trailer[30..34].try_into().ok()?);
    Some((&buf[..buf.len() - TRAILER_BYTES], summary, count))
}

/// Adds index entries while batches are appended or scanned.
#[derive(Clone, Debug)]
pub struct IndexBuilder {
    pub interval_bytes: u64,
    bytes_since_entry: u64,
    pub max_timestamp: i64,
}

impl IndexBuilder {
    pub fn new(interval_bytes: u64) -> Self {
        IndexBuilder {
            interval_bytes,
            bytes_since_entry: u64::MAX,
            max_timestamp: -1,
        }
    }

    /// Continues after existing entries (the last one at `last_entry_position`).
    pub fn resume(
        interval_bytes: u64,
        segment_len: u64,
        last_entry_position: Option<u64>,
        max_timestamp: i64,
    ) -> Self {
        IndexBuilder {
            interval_bytes,
            bytes_since_entry: match last_entry_position {
                Some(p) => segment_len - p,
                None => u64::MAX,
            },
            max_timestamp,
        }
    }

    /// Records a batch at `position`; adds an index entry when one is due.
    pub fn add(
        &mut self,
        index: &mut SegmentIndex,
        segment_base: i64,
        position: u64,
        info: &BatchInfo,
    ) {
        if self.bytes_since_entry >= self.interval_bytes {
            if let (Ok(relative_offset), Ok(position32)) = (
                u32::try_from(info.base_offset - segment_base),
                u32::try_from(position),
            ) {
                index.push(IndexEntry {
                    relative_offset,
                    position: position32,
                    max_timestamp_before: self.max_timestamp,
                });
                self.bytes_since_entry = 0;
            }
        }
        self.bytes_since_entry = self.bytes_since_entry.saturating_add(info.len as u64);
        self.max_timestamp = self.max_timestamp.max(info.max_timestamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(relative_offset: u32, position: u32, max_timestamp_before: i64) -> IndexEntry {
        IndexEntry {
            relative_offset,
            position,
            max_timestamp_before,
        }
    }

    fn sample() -> SegmentIndex {
        let mut index = SegmentIndex::new();
        index.push(entry(0, 0, -1));
        index.push(entry(10, 4100, 1_000));
        index.push(entry(25, 8300, 1_000));
        index.push(entry(40, 12500, 3_000));
        index
    }

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let index = sample();
        assert_eq!(index.lookup_offset(0).unwrap().position, 0);
        assert_eq!(index.lookup_offset(9).unwrap().position, 0);
        assert_eq!(index.lookup_offset(10).unwrap().position, 4100);
        assert_eq!(index.lookup_offset(39).unwrap().position, 8300);
        assert_eq!(index.lookup_offset(1_000).unwrap().position, 12500);
        assert!(SegmentIndex::new().lookup_offset(5).is_none());
    }

    #[test]
    fn timestamp_lookup_finds_safe_start() {
        let index = sample();
        // Everything before position 0 is below any timestamp.
        assert_eq!(index.lookup_timestamp(500).unwrap().position, 0);
        // Batches before 4100 are below 1_000, but not strictly below... 1_000 itself.
        assert_eq!(index.lookup_timestamp(1_000).unwrap().position, 0);
        assert_eq!(index.lookup_timestamp(1_001).unwrap().position, 8300);
        assert_eq!(index.lookup_timestamp(3_001).unwrap().position, 12500);
        assert!(SegmentIndex::new().lookup_timestamp(5).is_none());
    }

    #[test]
    fn truncation_drops_entries_past_position() {
        let mut index = sample();
        index.truncate_to_position(8300);
        assert_eq!(index.len(), 2);
        index.truncate_to_position(0);
        assert!(index.is_empty());
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn out_of_order_entry_is_a_bug() {
        let mut index = sample();
        index.push(entry(5, 20_000, 0));
    }

    #[test]
    fn files_round_trip_and_detect_staleness() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample();
        let summary = SegmentSummary {
            len: 16_000,
            next_offset: 57,
            max_timestamp: 4_000,
        };
        index.write_files(dir.path(), 100, summary).unwrap();
        let (read, read_summary) = SegmentIndex::read_files(dir.path(), 100, 16_000).unwrap();
        assert_eq!(read.entries(), index.entries());
        assert_eq!(read_summary, summary);
        // Written for a different segment length: stale.
        assert!(SegmentIndex::read_files(dir.path(), 100, 16_001).is_none());
        // A flipped byte: corrupt.
        let path = super::super::segment_file(dir.path(), 100, super::super::TIME_INDEX_SUFFIX);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(SegmentIndex::read_files(dir.path(), 100, 16_000).is_none());
        // Missing: none.
        assert!(SegmentIndex::read_files(dir.path(), 7, 16_000).is_none());
    }
}
