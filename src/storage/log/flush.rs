//! Group commit, the log's side: [`PartitionLog::take_flush`] hands the shard's flusher
//! everything pending as a [`FlushJob`] that owns what it needs (file handles, bytes), so
//! the flusher runs many partitions' jobs concurrently without borrowing a log across an
//! `.await`. A job writes each dirty segment's new bytes in one aligned direct-I/O write —
//! the segment's last partial block is rewritten with them — `fdatasync`s once, and seals a
//! rolled segment (trimmed, indexed, producer snapshot). [`PartitionLog::complete_flush`]
//! then moves the high watermark. Closing a log ([`CloseJob`]) is the last such write.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use super::segment::Seal;
use super::*;
use crate::protocol::batch::parse_batch;
use crate::storage::cache::PlacedBatch;
use crate::storage::index::{SegmentIndex, SegmentSummary};
use crate::storage::{align_down, align_up, segment_file, BLOCK_BYTES, SNAPSHOT_SUFFIX};

impl PartitionLog {
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
                    segment.durable_len = flushed.durable_len;
                    segment.settled |= flushed.sealed;
                    if segment.settled {
                        // Sealed and on disk: the file joins the shard's bounded cache,
                        // which may close it; reads reopen it on demand.
                        segment.file = None;
                        self.files
                            .insert((self.file_id, flushed.base_offset), flushed.file);
                    } else {
                        segment.file = Some(flushed.file);
                    }
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
            files: {
                let mut segments = std::mem::take(&mut self.segments);
                let files = segments
                    .iter_mut()
                    .filter_map(|s| self.take_file(s))
                    .collect();
                self.segments = segments;
                files
            },
        })
    }
}

/// One segment's share of a flush job.
pub(super) struct SegmentWrite {
    pub(super) base_offset: i64,
    pub(super) path: PathBuf,
    pub(super) file: Option<Rc<DmaFile>>,
    /// Aligned position the write starts at.
    pub(super) position: u64,
    /// Durable bytes of the partial block at `position`.
    pub(super) prefix: Vec<u8>,
    pub(super) chunks: Vec<PlacedBatch>,
    /// Logical segment length once written.
    pub(super) new_len: u64,
    pub(super) seal: Option<(Seal, SegmentIndex, SegmentSummary)>,
}

/// Everything pending in one partition, to be made durable. Owns its data and handles.
pub struct FlushJob {
    pub(super) dir: PathBuf,
    pub(super) writes: Vec<SegmentWrite>,
    pub(super) high_watermark: i64,
}

pub struct FlushedSegment {
    pub(super) base_offset: i64,
    /// The job sealed this segment.
    pub(super) sealed: bool,
    pub(super) file: Rc<DmaFile>,
    pub(super) durable_len: u64,
    pub(super) tail_block: Vec<u8>,
}

pub struct FlushDone {
    pub(super) segments: Vec<FlushedSegment>,
    pub(super) high_watermark: i64,
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
                    // The one copy of a produced batch's bytes, into the aligned buffer.
                    let dst = &mut bytes[at..at + chunk.len()];
                    chunk.copy_to(dst);
                    // Pair assertion: what goes to disk is a valid batch.
                    debug_assert!(parse_batch(dst).is_ok_and(|i| i.len == chunk.len()));
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
                    .spawn_blocking(move || crate::storage::record_file::sync_dir(&dir))
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
pub(super) fn write_snapshot(dir: &Path, offset: i64, bytes: &[u8]) -> io::Result<()> {
    crate::storage::record_file::write_atomically(
        &segment_file(dir, offset, SNAPSHOT_SUFFIX),
        bytes,
    )?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(older) =
            crate::storage::parse_segment_name(&name.to_string_lossy(), SNAPSHOT_SUFFIX)
        {
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
    pub(super) dir: PathBuf,
    pub(super) clean: Option<(i64, SegmentIndex, SegmentSummary, Vec<u8>, i64)>,
    pub(super) active: Option<Rc<DmaFile>>,
    pub(super) files: Vec<Rc<DmaFile>>,
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
