//! Reading a partition log: a [`ReadPlan`] for Fetch (batches from the recent-batch cache,
//! or a [`DiskRead`] of the segment holding the offset) and a [`TimestampPlan`] for
//! ListOffsets by timestamp. Plans own their file handles, so the `.await`s that run them
//! borrow no log; every batch read back is validated again before it is served.

use std::io;
use std::path::{Path, PathBuf};

use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, ReadResult};

use super::readahead::ReadAhead;
use super::*;
use crate::protocol::batch::{parse_batch, record_timestamps, BatchInfo};
use crate::protocol::pieces::Piece;
use crate::storage::segment_walk::frame_len;

impl PartitionLog {
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
        // A replicated log's entries past the high watermark exist but are not committed:
        // an offset up to the log end is in range and reads nothing past the watermark.
        let limit = match self.raft {
            Some(_) => self.next_offset,
            None => self.high_watermark,
        };
        if offset < self.log_start_offset || offset > limit {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                high_watermark: self.high_watermark,
            });
        }
        self.plan_range(offset, bytes_max, end)
    }

    /// A replicated log's read of written entries, past the high watermark too (what a
    /// leader sends its followers when the cache no longer has it).
    pub fn read_plan_written(&self, offset: i64, bytes_max: usize) -> Result<ReadPlan, ReadError> {
        if offset < self.log_start_offset || offset > self.durable_end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                high_watermark: self.durable_end,
            });
        }
        self.plan_range(offset, bytes_max, self.durable_end)
    }

    fn plan_range(&self, offset: i64, bytes_max: usize, end: i64) -> Result<ReadPlan, ReadError> {
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
        let file = self.file_ref(segment).ok_or_else(|| {
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
            ahead: self.read_ahead.clone(),
        }))
    }

    /// Plans a search for the first record with a timestamp at or after `timestamp`.
    pub fn timestamp_plan(&self, timestamp: i64) -> TimestampPlan {
        let mut segments = Vec::new();
        for segment in &self.segments {
            if !segments.is_empty() {
                if let Some(file) = self.file_ref(segment) {
                    segments.push(SegmentRange {
                        file,
                        path: segment.path.clone(),
                        start: 0,
                        end: segment.durable_len,
                    });
                }
                continue;
            }
            if segment.index_builder.max_timestamp < timestamp {
                continue;
            }
            if let Some(file) = self.file_ref(segment) {
                let start = segment
                    .index
                    .lookup_timestamp(timestamp)
                    .map(|e| u64::from(e.position))
                    .unwrap_or(0);
                segments.push(SegmentRange {
                    file,
                    path: segment.path.clone(),
                    start,
                    end: segment.durable_len,
                });
            }
        }
        TimestampPlan {
            segments,
            timestamp,
            high_watermark: self.high_watermark,
        }
    }
}

/// Records read for a fetch: whole batches, as pieces of the memory they lie in (the
/// recent-batch cache, or the direct-I/O buffer they were read into), not copied.
#[derive(Debug, Default)]
pub struct ReadData {
    pub pieces: Vec<Piece>,
    /// Bytes in all.
    pub len: usize,
    /// The offset after the last batch read, if any.
    pub end_offset: Option<i64>,
}

impl ReadData {
    /// The records in one buffer (a copy).
    pub fn to_bytes(&self) -> Bytes {
        crate::protocol::pieces::concat(&self.pieces)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub enum ReadPlan {
    Empty,
    Memory(Vec<CachedBatch>),
    Disk(DiskRead),
}

/// Part of a direct-I/O read buffer, shared by the response that serves it.
struct DiskSlice(ReadResult);

impl AsRef<[u8]> for DiskSlice {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

pub struct DiskRead {
    /// Held (or opened when the read runs) for the whole read: the cache closing its
    /// handle meanwhile does not close the file under the read.
    pub(super) file: FileRef,
    pub(super) path: PathBuf,
    pub(super) position: u64,
    pub(super) end: u64,
    pub(super) offset: i64,
    pub(super) high_watermark: i64,
    pub(super) bytes_max: usize,
    pub(super) ahead: Rc<ReadAhead>,
}

impl ReadPlan {
    pub async fn read(self) -> io::Result<ReadData> {
        match self {
            ReadPlan::Empty => Ok(ReadData::default()),
            ReadPlan::Memory(batches) => {
                let mut data = ReadData {
                    pieces: Vec::with_capacity(2 * batches.len()),
                    ..ReadData::default()
                };
                for cached in batches {
                    data.len += cached.batch.len();
                    data.end_offset = Some(cached.last_offset + 1);
                    data.pieces.extend(cached.batch.pieces());
                }
                Ok(data)
            }
            ReadPlan::Disk(read) => read.read().await,
        }
    }
}

pub(super) fn corrupt(path: &Path, position: u64, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "corrupt batch in {} at byte {position}: {why}",
            path.display()
        ),
    )
}

/// Walks the batches of a segment from `position` to `end`, reading in chunks (the first
/// one may be given: bytes from `position` already read). `visit` gets each batch
/// (validated: CRC, lengths) and returns whether to go on; `wanted` is asked, with its
/// length, about a batch that lies only partly in what was read, before more is read for
/// it. Returns the position the walk stopped at: of the batch `visit` refused or
/// `wanted` did not want, or where the batches ended.
#[allow(clippy::too_many_arguments)]
pub(super) async fn walk_batches(
    file: &DmaFile,
    path: &Path,
    mut position: u64,
    end: u64,
    chunk_bytes: usize,
    mut first: Option<ReadResult>,
    wanted: impl Fn(usize) -> bool,
    mut visit: impl FnMut(&ReadResult, usize, &BatchInfo) -> bool,
) -> io::Result<u64> {
    let mut want = chunk_bytes.clamp(READ_CHUNK_BYTES_MIN, READ_CHUNK_BYTES_MAX);
    while position < end {
        let size = (end - position).min(want as u64) as usize;
        let chunk = match first.take() {
            Some(chunk) => {
                let len = chunk.len().min(size);
                ReadResult::slice(&chunk, 0, len).expect("within the chunk")
            }
            None => file.read_at(position, size).await?,
        };
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
            let room = end - (position + at as u64);
            let len = match frame_len(rest, room, usize::MAX) {
                None => break,
                Some(Ok(len)) => len,
                Some(Err(bad)) => return Err(corrupt(path, position + at as u64, bad)),
            };
            if len > rest.len() {
                if !wanted(len) {
                    return Ok(position + at as u64);
                }
                // Read again from this batch, enough to hold it whole.
                want = want.max(len);
                break;
            }
            let info =
                parse_batch(&rest[..len]).map_err(|e| corrupt(path, position + at as u64, e))?;
            if !visit(&chunk, at, &info) {
                return Ok(position + at as u64);
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
    Ok(position)
}

impl DiskRead {
    /// The batches from `offset` on, each checked. A corrupt (or unreadable) batch is an
    /// error only when nothing before it was taken: otherwise the read ends before it, and
    /// the next read, starting there, reports it. So intact batches in front of a corrupt
    /// one are served, and the corrupt one never is.
    pub(super) async fn read(self) -> io::Result<ReadData> {
        let mut out = ReadData::default();
        let result = self.read_into(&mut out).await;
        match result {
            Err(_) if !out.is_empty() => Ok(out),
            Err(err) => Err(err),
            Ok(()) => Ok(out),
        }
    }

    async fn read_into(&self, out: &mut ReadData) -> io::Result<()> {
        let mut last_base = i64::MIN;
        let mut bad_order = None;
        // Bytes taken so far, for the check of a batch not yet read whole.
        let taken = std::cell::Cell::new(0usize);
        let file = self.file.get(&self.path).await?;
        let chunk_bytes = self.bytes_max.saturating_add(READ_CHUNK_BYTES_MIN);
        // A read ahead for exactly this fetch starts where the last one stopped.
        let (position, first) = match self.ahead.take(&self.path, self.offset).await {
            Some((position, chunk)) => (position, Some(chunk)),
            None => (self.position, None),
        };
        // Batches that lie next to each other in one read buffer are served as one piece.
        let mut run: Option<(ReadResult, usize, usize)> = None;
        let flush = |run: &mut Option<(ReadResult, usize, usize)>, out: &mut ReadData| {
            if let Some((chunk, start, end)) = run.take() {
                let slice = ReadResult::slice(&chunk, start, end - start).expect("in the buffer");
                out.pieces.push(Piece::shared(Rc::new(DiskSlice(slice))));
            }
        };
        let stopped = walk_batches(
            &file,
            &self.path,
            position,
            self.end,
            chunk_bytes,
            first,
            // Not read further for a batch that will not fit (the first is always taken).
            |len| taken.get() == 0 || taken.get() + len <= self.bytes_max,
            |chunk, at, info| {
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
                if !out.is_empty() && out.len + info.len > self.bytes_max {
                    return false;
                }
                match &mut run {
                    Some((same, _, end)) if same.as_ptr() == chunk.as_ptr() && *end == at => {
                        *end = at + info.len
                    }
                    _ => {
                        flush(&mut run, out);
                        run = Some((chunk.clone(), at, at + info.len));
                    }
                }
                out.len += info.len;
                out.end_offset = Some(info.last_offset() + 1);
                taken.set(out.len);
                true
            },
        )
        .await
        .inspect_err(|_| flush(&mut run, out))?;
        flush(&mut run, out);
        if let Some(offset) = bad_order {
            return Err(corrupt(
                &self.path,
                self.position,
                format!("base offset {offset} out of order"),
            ));
        }
        if let Some(next) = out.end_offset {
            // The consumer's next fetch asks for `next`: read it while this one is sent.
            self.ahead.start(
                file,
                self.path.clone(),
                stopped,
                self.end,
                chunk_bytes.min(READ_CHUNK_BYTES_MAX),
                next,
            );
        }
        Ok(())
    }
}

/// The durable bytes `start..end` of one segment file, to be searched.
pub struct SegmentRange {
    file: FileRef,
    path: PathBuf,
    start: u64,
    end: u64,
}

/// A ListOffsets search by timestamp; owns its file handles.
pub struct TimestampPlan {
    pub(super) segments: Vec<SegmentRange>,
    pub(super) timestamp: i64,
    pub(super) high_watermark: i64,
}

impl TimestampPlan {
    /// `(offset, timestamp)` of the first record at or after the timestamp, if any. For
    /// compressed batches the answer is the batch's base offset and max timestamp: finding
    /// the exact record would mean decompressing, and a consumer starting at the batch gets
    /// the record it asked for (with a few earlier ones).
    pub async fn resolve(self) -> io::Result<Option<(i64, i64)>> {
        for range in &self.segments {
            let mut found = None;
            // One segment open at a time; its handle is dropped before the next opens.
            let file = range.file.get(&range.path).await?;
            walk_batches(
                &file,
                &range.path,
                range.start,
                range.end,
                READ_CHUNK_BYTES_MIN,
                None,
                |_| true,
                |chunk, at, info| {
                    let bytes = &chunk[at..at + info.len];
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
