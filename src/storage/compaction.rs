//! Log compaction (`cleanup.policy=compact`): keep the latest record of every key.
//!
//! A pass works on the closed, sealed segments at the head of the log whose newest record
//! is older than `min.compaction.lag.ms` (never the active segment). It reads them twice,
//! streaming batch by batch on a blocking thread: first to map every key to the offset of
//! its latest record, then to rewrite each segment keeping only those records. Tombstones
//! (null values) are kept until their timestamp is `delete.retention.ms` old, so consumers
//! catching up still see the delete. Records without a key are dropped.
//!
//! A batch whose records all survive is copied byte for byte. One that loses some is
//! rebuilt around the survivors, which are copied verbatim: same base offset, same
//! `lastOffsetDelta`, timestamps and producer fields (so offsets, producer sequences and
//! the time index stay true), recompressed with the batch's own codec, with a new CRC. A
//! batch that loses every record is dropped; a segment left with no batch is removed.
//!
//! A rewritten segment is written to `<base>.log.cleaned` and synced; then the old index
//! files are removed, the cleaned file renamed over the segment and its new index written.
//! A crash at any point leaves either the old or the new segment whole, and recovery
//! rebuilds a missing index. Readers holding the old file keep reading the old bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::index::{IndexBuilder, SegmentIndex, SegmentSummary};
use super::segment_walk::SegmentWalker;
use super::{segment_file, CLEANED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::protocol::batch::{self, parse_batch, BatchInfo, BATCH_HEADER_LEN};
pub use crate::protocol::records::{compress, decompress, DECOMPRESSED_BYTES_MAX};
use crate::protocol::records::{varint, varlong, XERIAL_MAGIC};

/// Distinct keys one pass maps; past it the pass stops at the segment that filled it
/// (the rest is compacted by the next pass). Bounds the pass's memory.
pub const COMPACTION_KEYS_MAX: usize = 4_000_000;

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// One record of a batch, as a slice of its (decompressed) records area.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The whole record, length prefix included: copied verbatim when kept.
    pub bytes: &'a [u8],
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The value is null: a delete marker.
    pub tombstone: bool,
}

/// Splits a records area into its `count` records; `None` if the framing is malformed.
pub fn split_records(body: &[u8], count: i32) -> Option<Vec<RawRecord<'_>>> {
    let count = usize::try_from(count).ok()?;
    // Every record takes at least 7 bytes, so the count cannot inflate the allocation.
    let mut out = Vec::with_capacity(count.min(body.len() / 7 + 1));
    let mut at = 0usize;
    for _ in 0..count {
        let start = at;
        let length = usize::try_from(varint(body, &mut at)?).ok()?;
        let end = at.checked_add(length)?;
        if end > body.len() {
            return None;
        }
        let record = &body[..end];
        let mut r = at;
        r += 1; // attributes
        let timestamp_delta = varlong(record, &mut r)?;
        let offset_delta = varint(record, &mut r)?;
        let key_len = varint(record, &mut r)?;
        let key = if key_len < 0 {
            None
        } else {
            let key_end = r.checked_add(key_len as usize)?;
            let key = record.get(r..key_end)?;
            r = key_end;
            Some(key)
        };
        let value_len = varint(record, &mut r)?;
        let value = if value_len < 0 {
            None
        } else {
            record.get(r..r.checked_add(value_len as usize)?)
        };
        if value_len >= 0 && value.is_none() {
            return None;
        }
        out.push(RawRecord {
            bytes: &body[start..end],
            offset_delta,
            timestamp_delta,
            key,
            value,
            tombstone: value_len < 0,
        });
        at = end;
    }
    (at == body.len()).then_some(out)
}

/// The decompressed records area of a batch.
pub fn batch_records(batch: &[u8], info: &BatchInfo) -> io::Result<Vec<u8>> {
    let body = &batch[BATCH_HEADER_LEN..info.len];
    decompress(info.compression(), body, DECOMPRESSED_BYTES_MAX)
}

/// Whether every record of a batch has a key (what a compacted topic requires).
pub fn all_records_keyed(batch: &[u8], info: &BatchInfo) -> io::Result<bool> {
    let body = batch_records(batch, info)?;
    let records = split_records(&body, info.record_count)
        .ok_or_else(|| invalid("malformed records in batch"))?;
    Ok(records.iter().all(|r| r.key.is_some()))
}

/// The indexes in the batch of its records without a key, which a compacted topic
/// refuses (KIP-467 names them in the produce response). Decompresses the batch: for a
/// large one, call it off the event loop.
pub fn keyless_records(batch: &[u8], info: &BatchInfo) -> io::Result<Vec<i32>> {
    let body = batch_records(batch, info)?;
    let records = split_records(&body, info.record_count)
        .ok_or_else(|| invalid("malformed records in batch"))?;
    Ok((0..)
        .zip(&records)
        .filter(|(_, r)| r.key.is_none())
        .map(|(i, _)| i)
        .collect())
}

pub enum Filtered {
    /// Every record kept: the batch is copied as is.
    Unchanged,
    /// No record kept.
    Dropped,
    /// The batch rebuilt around the kept records.
    Rewritten(Vec<u8>),
}

/// Keeps the records of one batch for which `keep(record, offset, timestamp)` is true.
pub fn filter_batch(
    batch: &[u8],
    info: &BatchInfo,
    mut keep: impl FnMut(&RawRecord<'_>, i64, i64) -> bool,
) -> io::Result<Filtered> {
    let body = batch_records(batch, info)?;
    let records = split_records(&body, info.record_count)
        .ok_or_else(|| invalid("malformed records in batch"))?;
    let mut kept = Vec::with_capacity(records.len());
    for record in &records {
        let offset = info.base_offset + i64::from(record.offset_delta);
        let timestamp = if info.timestamp_type_log_append() {
            info.max_timestamp
        } else {
            info.base_timestamp.wrapping_add(record.timestamp_delta)
        };
        if keep(record, offset, timestamp) {
            kept.push(record.bytes);
        }
    }
    if kept.len() == records.len() {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return Ok(Filtered::Dropped);
    }
    let plain: Vec<u8> = kept.concat();
    let xerial = batch[BATCH_HEADER_LEN..info.len].starts_with(XERIAL_MAGIC);
    let records_area = compress(info.compression(), xerial, &plain)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records_area.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(&records_area);
    let batch_length = (out.len() - batch::BATCH_LENGTH_PREFIX_LEN) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[batch::CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(parse_batch(&out).is_ok_and(|i| i.len == out.len()));
    Ok(Filtered::Rewritten(out))
}

/// Reads the batches of a segment file in order, validating each.
fn for_each_batch(
    path: &Path,
    len: u64,
    mut visit: impl FnMut(&[u8], &BatchInfo) -> io::Result<()>,
) -> io::Result<()> {
    let mut walker = SegmentWalker::open(path, len, usize::MAX)?;
    loop {
        match walker.next_batch() {
            Ok(Some((_, info))) => visit(walker.batch(), &info)?,
            Ok(None) => return Ok(()),
            Err(stop) => return Err(invalid(format!("{}: {stop}", path.display()))),
        }
    }
}

/// One closed segment a compaction pass reads.
#[derive(Debug, Clone)]
pub struct CleanInput {
    pub base_offset: i64,
    pub path: PathBuf,
    pub len: u64,
}

/// What a pass did to one segment.
pub enum CleanOutput {
    Unchanged,
    /// Nothing left: the segment is to be removed.
    Emptied,
    /// The segment's file was replaced (renamed over); the log drops its old handle and
    /// opens the new file on demand.
    Rewritten {
        index: SegmentIndex,
        summary: SegmentSummary,
    },
}

/// A compaction pass over the head of one log; owns what it needs.
pub struct CompactionJob {
    pub dir: PathBuf,
    pub inputs: Vec<CleanInput>,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    pub index_interval_bytes: u64,
}

pub struct CompactionDone {
    /// One per segment the pass covered, in order (a prefix of the job's inputs).
    pub outputs: Vec<(i64, CleanOutput)>,
    /// When the oldest kept tombstone may be removed (i64::MAX: none kept).
    pub next_tombstone_expiry_ms: i64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// CPU priority (nice) of a compaction pass: under contention for its core the kernel
/// gives it about a tenth of what the shard's reactor gets (CFS weights 110 vs 1024), so
/// requests win and the pass still moves when the core is busy (at nice 19 it would get
/// about 1.5%).
const COMPACTION_NICE: libc::c_int = 10;

/// Runs `work` on a thread of its own at [`COMPACTION_NICE`]. The thread inherits the
/// shard's core pinning, so it competes with that shard only.
async fn run_at_low_priority<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = futures_channel::oneshot::channel();
    std::thread::Builder::new()
        .name("strand-compact".into())
        .spawn(move || {
            // SAFETY: plain syscalls on the calling thread; no memory is shared.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, COMPACTION_NICE);
            }
            let _ = tx.send(work());
        })?;
    rx.await
        .map_err(|_| io::Error::other("the compaction thread stopped without an answer"))?
}

/// A segment rewritten on disk.
struct Written {
    base: i64,
    result: Option<(SegmentIndex, SegmentSummary)>,
}

impl CompactionJob {
    pub async fn run(self) -> io::Result<CompactionDone> {
        let (written, expiry, before, after) =
            run_at_low_priority(move || self.clean_blocking()).await?;
        let mut outputs = Vec::with_capacity(written.len());
        for w in written {
            let output = match w.result {
                None => CleanOutput::Unchanged,
                Some((_, summary)) if summary.len == 0 => CleanOutput::Emptied,
                Some((index, summary)) => CleanOutput::Rewritten { index, summary },
            };
            outputs.push((w.base, output));
        }
        Ok(CompactionDone {
            outputs,
            next_tombstone_expiry_ms: expiry,
            bytes_before: before,
            bytes_after: after,
        })
    }

    fn clean_blocking(self) -> io::Result<(Vec<Written>, i64, u64, u64)> {
        // Pass 1: the latest offset of every key, segment by segment, within the key cap.
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut covered = 0usize;
        for input in &self.inputs {
            for_each_batch(&input.path, input.len, |bytes, info| {
                // Transactional batches (and markers) are neither cleaned nor counted as a
                // key's latest value: an aborted record must not displace a committed one.
                // They stay as written; read_committed consumers skip the aborted ones.
                if info.is_control() || info.is_transactional() {
                    return Ok(());
                }
                let body = batch_records(bytes, info)?;
                let records = split_records(&body, info.record_count)
                    .ok_or_else(|| invalid("malformed records in batch"))?;
                for r in records {
                    if let Some(key) = r.key {
                        let offset = info.base_offset + i64::from(r.offset_delta);
                        match latest.get_mut(key) {
                            Some(o) => *o = offset,
                            None => {
                                latest.insert(key.to_vec(), offset);
                            }
                        }
                    }
                }
                Ok(())
            })?;
            covered += 1;
            if latest.len() > COMPACTION_KEYS_MAX {
                break;
            }
        }
        let inputs = &self.inputs[..covered];
        let horizon = self.now_ms.saturating_sub(self.delete_retention_ms);
        let mut expiry = i64::MAX;
        let mut written = Vec::with_capacity(inputs.len());
        let (mut before, mut after) = (0u64, 0u64);
        // Pass 2: rewrite each segment that loses anything.
        for input in inputs {
            before += input.len;
            let cleaned = segment_file(&self.dir, input.base_offset, CLEANED_SUFFIX);
            let mut out = BufWriter::with_capacity(1 << 20, File::create(&cleaned)?);
            let mut builder = IndexBuilder::new(self.index_interval_bytes);
            let mut index = SegmentIndex::new();
            let mut len = 0u64;
            let mut next_offset = input.base_offset;
            let mut changed = false;
            for_each_batch(&input.path, input.len, |bytes, info| {
                let filtered = if info.is_control() || info.is_transactional() {
                    Filtered::Unchanged
                } else {
                    filter_batch(bytes, info, |record, offset, timestamp| {
                        let Some(key) = record.key else {
                            return false;
                        };
                        if latest.get(key) != Some(&offset) {
                            return false;
                        }
                        if record.tombstone {
                            if timestamp < horizon {
                                return false;
                            }
                            expiry = expiry.min(timestamp.saturating_add(self.delete_retention_ms));
                        }
                        true
                    })?
                };
                let kept: &[u8] = match &filtered {
                    Filtered::Unchanged => bytes,
                    Filtered::Dropped => {
                        changed = true;
                        return Ok(());
                    }
                    Filtered::Rewritten(b) => {
                        changed = true;
                        b
                    }
                };
                let mut placed = parse_batch(kept).map_err(|e| invalid(e.to_string()))?;
                placed.base_offset = info.base_offset;
                builder.add(&mut index, input.base_offset, len, &placed);
                out.write_all(kept)?;
                len += kept.len() as u64;
                next_offset = info.last_offset() + 1;
                Ok(())
            })?;
            after += if changed { len } else { input.len };
            if !changed {
                drop(out);
                std::fs::remove_file(&cleaned)?;
                written.push(Written {
                    base: input.base_offset,
                    result: None,
                });
                continue;
            }
            out.flush()?;
            out.get_ref().sync_data()?;
            drop(out);
            let summary = SegmentSummary {
                len,
                next_offset: if len == 0 {
                    input.base_offset
                } else {
                    next_offset
                },
                max_timestamp: builder.max_timestamp,
            };
            if len == 0 {
                std::fs::remove_file(&cleaned)?;
            } else {
                // Old index first: a crash after the rename then finds no index to
                // mistrust and rebuilds it from the new segment.
                for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    match std::fs::remove_file(segment_file(&self.dir, input.base_offset, suffix)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                crate::storage::record_file::sync_dir(&self.dir)?;
                std::fs::rename(
                    &cleaned,
                    segment_file(&self.dir, input.base_offset, LOG_SUFFIX),
                )?;
                crate::storage::record_file::sync_dir(&self.dir)?;
                index.write_files(&self.dir, input.base_offset, summary)?;
            }
            written.push(Written {
                base: input.base_offset,
                result: Some((index, summary)),
            });
        }
        Ok((written, expiry, before, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in 0..=4u8 {
            for xerial in [false, true] {
                let c = compress(codec, xerial, &data).unwrap();
                let d = decompress(codec, &c, DECOMPRESSED_BYTES_MAX).unwrap();
                assert_eq!(d, data, "codec {codec} xerial {xerial}");
            }
        }
        assert!(decompress(5, b"x", 10).is_err());
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![0u8; 1 << 20];
        for codec in 1..=4u8 {
            let c = compress(codec, codec == 2, &data).unwrap();
            assert!(decompress(codec, &c, 1000).is_err(), "codec {codec}");
        }
    }
}
