//! Group commit, the log's side: [`PartitionLog::take_flush`] hands the shard's flusher
//! everything pending as a [`FlushJob`] that owns what it needs (file handles, bytes), so
//! the flusher runs many partitions' jobs concurrently without borrowing a log across an
//! `.await`. A job writes each dirty segment's new bytes in one aligned direct-I/O write —
//! the segment's last partial block is rewritten with them — `fdatasync`s once, and seals a
//! rolled segment (trimmed, indexed, producer snapshot). [`PartitionLog::complete_flush`]
//! then moves the high watermark. Closing a log ([`CloseJob`]) is the last such write.

use std::cell::{Cell, RefCell};
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
use crate::util::Notify;

impl PartitionLog {
    /// Everything pending, as one job for the flusher; `None` if nothing is, or if
    /// [`FLUSHES_IN_FLIGHT_MAX`] jobs already are in flight. A job taken while another is
    /// in flight continues that one's writes once they are issued (see [`FlushLink`]).
    /// The job syncs when the topic's schedule says so (`flush.messages`, `flush.ms`;
    /// by default always), and its batches are acknowledged only when it completes.
    pub fn take_flush(&mut self, now_ms: i64) -> Option<FlushJob> {
        if self.links.len() >= FLUSHES_IN_FLIGHT_MAX || self.offline.is_some() {
            return None;
        }
        let sync = self.sync_due(now_ms);
        let unsynced = |s: &Segment| sync && (s.unsynced || s.rewrite_from.is_some());
        // Without pending batches or seals only the active segment can hold unsynced
        // writes: a rolled segment's seal, pending until a job takes it, syncs it.
        let active = self
            .segments
            .last()
            .expect("a log always has an active segment");
        if !self.has_pending() && !unsynced(active) {
            return None;
        }
        // Only the last few segments can have pending data, seals or unsynced writes.
        let mut first = self.segments.len() - 1;
        while first > 0 && {
            let s = &self.segments[first - 1];
            !s.pending.is_empty() || s.seal.is_some() || unsynced(s) || s.rewrite_from.is_some()
        } {
            first -= 1;
        }
        // A replicated log seals a segment only once all of it is committed: until then a
        // truncation may cut into it (and make it the active segment again).
        let sealable_before = self.sealable_before();
        let mut writes = Vec::new();
        for segment in &mut self.segments[first..] {
            let chunks = std::mem::take(&mut segment.pending);
            let seal = if segment.next_offset <= sealable_before {
                segment.seal.take()
            } else {
                None
            };
            if seal.is_some() {
                self.seals_pending -= 1;
            }
            let rewrite = segment.rewrite_from.take();
            // Cutting a segment is always made durable before anything after it.
            let sync_segment =
                rewrite.is_some() || (sync && (segment.unsynced || !chunks.is_empty()));
            // A rolled segment whose seal waits is cut to its length at once: recovery
            // takes a padded segment before the last for a torn one.
            let trim = seal.is_none() && segment.seal.is_some() && !segment.trimmed;
            if chunks.is_empty() && seal.is_none() && !sync_segment && !trim {
                continue;
            }
            if trim || seal.is_some() {
                segment.trimmed = true;
            }
            // A job in flight wrote to this segment: this one starts where that one ends.
            let continues = rewrite.is_none() && segment.issued_len != segment.durable_len;
            let new_len = segment.len;
            let from_len = rewrite.unwrap_or(segment.issued_len);
            writes.push(SegmentWrite {
                segment_id: segment.id,
                base_offset: segment.base_offset,
                path: segment.path.clone(),
                file: segment.file.clone(),
                continues,
                rewrite: rewrite.is_some(),
                from_len,
                position: align_down(if rewrite.is_some() {
                    from_len
                } else {
                    segment.durable_len
                }),
                prefix: if continues || rewrite.is_some() {
                    Vec::new()
                } else {
                    segment.tail_block.clone()
                },
                chunks,
                new_len,
                sync: sync_segment,
                trim,
                seal: seal.map(|s| (s, segment.index.clone(), segment.summary())),
            });
            segment.issued_len = new_len;
            let w = writes.last().expect("just pushed");
            // Sealing syncs the segment too.
            if sync_segment || w.seal.is_some() {
                segment.unsynced = false;
            } else if !w.chunks.is_empty() {
                segment.unsynced = true;
            }
        }
        if writes.is_empty() && self.doomed.is_empty() {
            // Only seals a replicated log may not take yet.
            return None;
        }
        if sync {
            self.unsynced_messages = 0;
            self.unsynced_since_ms = None;
        }
        self.pending_bytes = 0;
        let doomed = std::mem::take(&mut self.doomed);
        let previous = self.links.back().cloned();
        // A job that cuts or removes files is a barrier: the next one writes only after it
        // has (it may create a file at a path this one removes).
        let barrier = !doomed.is_empty() || writes.iter().any(|w| w.rewrite);
        let link = Rc::new(FlushLink::new(barrier));
        self.links.push_back(link.clone());
        let seq = self.next_job_seq;
        self.next_job_seq += 1;
        let epochs = self.raft.as_mut().and_then(|r| r.take_dirty_epochs());
        Some(FlushJob {
            dir: self.dir.clone(),
            writes,
            doomed,
            epochs,
            high_watermark: self.next_offset,
            seq,
            link,
            previous,
        })
    }

    /// Whether a job taken now syncs: always by default; with a deferred schedule, once
    /// `flush.messages` messages wait or the oldest has waited `flush.ms`.
    fn sync_due(&self, now_ms: i64) -> bool {
        self.config.sync_every_batch()
            || self.unsynced_messages >= self.config.flush_messages
            || self
                .unsynced_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= self.config.flush_ms)
    }

    /// When written but unsynced messages are due to be synced by age (`flush.ms`), if
    /// they are and that is not already the job of every next flush.
    pub fn sync_due_at_ms(&self) -> Option<i64> {
        if self.config.sync_every_batch() || self.config.flush_ms == i64::MAX {
            return None;
        }
        self.unsynced_since_ms
            .map(|since| since.saturating_add(self.config.flush_ms))
    }

    /// Applies a finished flush (jobs complete in the order they were taken): the high
    /// watermark moves, or the partition goes offline for writes (reads of durable data
    /// go on). Returns the bytes of appended batches that were dropped because a write
    /// failed (never acknowledged).
    pub fn complete_flush(&mut self, result: FlushResult) -> usize {
        let link = self.links.pop_front();
        debug_assert!(link.is_some(), "a flush completed that was not taken");
        if let Some(link) = &link {
            // The next job may complete once this call has applied this one.
            link.finish(result.is_ok());
        }
        match result {
            Ok(done) => {
                // Truncations made after this job was taken cut what it wrote.
                let cuts: Vec<replica::Cut> = self
                    .cuts
                    .iter()
                    .filter(|c| c.seq_after > done.seq)
                    .copied()
                    .collect();
                self.cuts.retain(|c| c.seq_after > done.seq + 1);
                for mut flushed in done.segments {
                    let Some(segment) = self
                        .segments
                        .iter_mut()
                        .rev()
                        .find(|s| s.id == flushed.segment_id)
                    else {
                        // Removed by a truncation.
                        continue;
                    };
                    debug_assert_eq!(
                        flushed.tail_block.len() as u64,
                        flushed.durable_len % BLOCK_BYTES
                    );
                    let cut = cuts
                        .iter()
                        .filter(|c| c.segment == segment.id)
                        .map(|c| c.position)
                        .min();
                    if let Some(cut) = cut.filter(|&cut| cut < flushed.durable_len) {
                        // The bytes past the cut are stale; the job that cuts the file
                        // (taken after the truncation) reads the partial block back.
                        if align_down(cut) == align_down(flushed.durable_len) {
                            flushed.tail_block.truncate((cut % BLOCK_BYTES) as usize);
                        } else {
                            flushed.tail_block.clear();
                        }
                        flushed.durable_len = cut;
                    } else {
                        debug_assert!(flushed.durable_len >= segment.durable_len);
                    }
                    segment.durable_len = flushed.durable_len;
                    segment.settled |= flushed.sealed;
                    if segment.settled {
                        // Sealed and on disk: the file joins the shard's bounded cache,
                        // which may close it; reads reopen it on demand.
                        segment.file = None;
                        self.files
                            .insert((self.file_id, segment.base_offset), flushed.file);
                    } else {
                        segment.file = Some(flushed.file);
                    }
                    segment.tail_block = flushed.tail_block;
                }
                let end = cuts
                    .iter()
                    .map(|c| c.offset)
                    .fold(done.high_watermark, i64::min);
                self.durable_end = end;
                self.advance_high_watermark();
                let hw = self.high_watermark;
                self.unstable_markers.retain(|&(marker, _)| marker >= hw);
                0
            }
            Err(err) => {
                if self.offline.is_none() {
                    tracing::error!(dir = %self.dir.display(), %err, "log write failed; partition is offline for writes");
                    self.offline = Some(err.to_string());
                }
                // What was not made durable is gone: it was never acknowledged. The shard
                // reopens the log from disk to take writes again (see `Shard::revive`).
                let dropped = self.pending_bytes;
                for segment in &mut self.segments {
                    segment.pending.clear();
                    segment.seal = None;
                    segment.rewrite_from = None;
                }
                self.cuts.clear();
                self.doomed.clear();
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

/// Flush jobs one log may have in flight: while one syncs, the next writes, so a batch
/// appended during a sync waits for about one more sync, not two.
pub const FLUSHES_IN_FLIGHT_MAX: usize = 2;

/// One segment's share of a flush job.
pub(super) struct SegmentWrite {
    pub(super) segment_id: u64,
    pub(super) base_offset: i64,
    pub(super) path: PathBuf,
    pub(super) file: Option<Rc<DmaFile>>,
    /// The job taken before this one (still in flight) wrote to the segment: the write
    /// starts where that one's ends, with its file and last partial block, once it is
    /// issued; `position` and `prefix` are not used.
    pub(super) continues: bool,
    /// The segment was truncated at `from_len` (a replicated log's conflicting suffix):
    /// the file is cut there, after the job before this one has written, the partial
    /// block at `position` read back from disk, then the chunks written and synced.
    pub(super) rewrite: bool,
    /// Logical segment length before this job's chunks.
    pub(super) from_len: u64,
    /// Aligned position the write starts at.
    pub(super) position: u64,
    /// Bytes of the partial block at `position` already on disk.
    pub(super) prefix: Vec<u8>,
    pub(super) chunks: Vec<PlacedBatch>,
    /// Logical segment length once written.
    pub(super) new_len: u64,
    /// `fdatasync` the file once written.
    pub(super) sync: bool,
    /// Cut the file to `new_len` (its block padding) and sync, without sealing.
    pub(super) trim: bool,
    pub(super) seal: Option<(Seal, SegmentIndex, SegmentSummary)>,
}

/// Everything pending in one partition, to be written (and synced, by its schedule).
/// Owns its data and handles.
pub struct FlushJob {
    pub(super) dir: PathBuf,
    pub(super) writes: Vec<SegmentWrite>,
    /// Files of segments a truncation removed, deleted before the job writes.
    pub(super) doomed: Vec<PathBuf>,
    /// A replicated log's epochs, changed: written once the data and the jobs before are.
    pub(super) epochs: Option<crate::storage::epochs::EpochCache>,
    /// Offset after the last batch the job writes.
    pub(super) high_watermark: i64,
    /// The job's place among its log's jobs.
    pub(super) seq: u64,
    link: Rc<FlushLink>,
    /// The job taken before this one, if it was still in flight.
    previous: Option<Rc<FlushLink>>,
}

/// What one segment looks like once a job's write to it is done.
struct Written {
    segment_id: u64,
    file: Rc<DmaFile>,
    len: u64,
    tail_block: Vec<u8>,
}

#[derive(Default)]
enum LinkState {
    #[default]
    Writing,
    /// Writes done: the segments written, for the next job to continue.
    Written(Rc<[Written]>),
    /// The job failed before its writes were done.
    Failed,
}

/// Orders two flush jobs of one log that overlap: the later one writes only after the
/// earlier one's writes are done (both rewrite the same last partial block, and the later
/// may need the file the earlier creates), and completes only after the earlier one has
/// completed (high watermarks move in order, and a later sync is not trusted after an
/// earlier one failed). Its sync may run while the earlier one's sync is in flight.
#[derive(Default)]
pub struct FlushLink {
    /// The job cuts or removes files: the next one writes only after it has.
    barrier: bool,
    state: RefCell<LinkState>,
    /// `Some(ok)` once the job was applied to the log.
    finished: Cell<Option<bool>>,
    changed: Notify,
}

impl FlushLink {
    fn new(barrier: bool) -> FlushLink {
        FlushLink {
            barrier,
            ..Default::default()
        }
    }

    /// The job was applied to the log (`ok`: it succeeded), or never will be (the log
    /// was replaced); the next job may complete. [`PartitionLog::complete_flush`] calls
    /// it; calling it again changes nothing.
    pub fn finish(&self, ok: bool) {
        if self.finished.get().is_some() {
            return;
        }
        if matches!(*self.state.borrow(), LinkState::Writing) {
            *self.state.borrow_mut() = LinkState::Failed;
        }
        self.finished.set(Some(ok));
        self.changed.notify_all();
    }

    fn written(&self, written: Rc<[Written]>) {
        *self.state.borrow_mut() = LinkState::Written(written);
        self.changed.notify_all();
    }

    /// Waits for the job's writes; `None` if it failed before they were done.
    async fn wait_written(&self) -> Option<Rc<[Written]>> {
        loop {
            let seen = self.changed.generation();
            match &*self.state.borrow() {
                LinkState::Written(w) => return Some(w.clone()),
                LinkState::Failed => return None,
                LinkState::Writing => {}
            }
            self.changed.wait(seen).await;
        }
    }

    /// Waits until the job was applied; whether it succeeded.
    async fn wait_finished(&self) -> bool {
        loop {
            let seen = self.changed.generation();
            if let Some(ok) = self.finished.get() {
                return ok;
            }
            self.changed.wait(seen).await;
        }
    }
}

pub struct FlushedSegment {
    pub(super) segment_id: u64,
    /// The job sealed this segment.
    pub(super) sealed: bool,
    pub(super) file: Rc<DmaFile>,
    pub(super) durable_len: u64,
    pub(super) tail_block: Vec<u8>,
}

pub struct FlushDone {
    pub(super) segments: Vec<FlushedSegment>,
    pub(super) high_watermark: i64,
    pub(super) seq: u64,
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

    /// Whether the job `fdatasync`s what it writes (by the topic's schedule), beyond the
    /// sync that sealing a segment always does.
    pub fn syncs(&self) -> bool {
        self.writes.iter().any(|w| w.sync)
    }

    /// The job's place in its log's order; the flusher finishes it once applied.
    pub fn link(&self) -> Rc<FlushLink> {
        self.link.clone()
    }

    /// Writes every segment of the job, syncs them (by its schedule), seals the rolled
    /// ones, and returns once the job taken before it has completed.
    pub async fn run(self) -> FlushResult {
        let FlushJob {
            dir,
            writes,
            doomed,
            epochs,
            high_watermark,
            seq,
            link,
            previous,
        } = self;
        let segments = run_writes(&dir, writes, doomed, &link, previous.as_deref()).await?;
        if let Some(previous) = previous {
            if !previous.wait_finished().await {
                return Err(io::Error::other("an earlier flush of this log failed"));
            }
        }
        if let Some(epochs) = epochs {
            // After the earlier job's own write of them: the newest rows land last.
            epochs.write(&dir).await?;
        }
        Ok(FlushDone {
            segments,
            high_watermark,
            seq,
        })
    }
}

async fn run_writes(
    dir: &Path,
    writes: Vec<SegmentWrite>,
    doomed: Vec<PathBuf>,
    link: &FlushLink,
    previous: Option<&FlushLink>,
) -> io::Result<Vec<FlushedSegment>> {
    let wait = link.barrier || writes.iter().any(|w| w.continues);
    let earlier = match previous {
        Some(previous) if wait || previous.barrier => Some(
            previous
                .wait_written()
                .await
                .ok_or_else(|| io::Error::other("an earlier flush of this log failed"))?,
        ),
        _ => None,
    };
    if !doomed.is_empty() {
        let dir = dir.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || {
                for path in &doomed {
                    match std::fs::remove_file(path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                // Durable before anything written after the truncation is acknowledged:
                // a segment brought back by a crash would bring back a cut suffix.
                crate::storage::record_file::sync_dir(&dir)
            })
            .await?;
    }
    // Writes first, all of them, so the next job can start its own while this one syncs.
    let mut opened = Vec::with_capacity(writes.len());
    let mut written = Vec::with_capacity(writes.len());
    for mut write in writes {
        if write.rewrite {
            cut_segment(&mut write, earlier.as_deref()).await?;
        } else if write.continues {
            let before = earlier
                .as_deref()
                .and_then(|e| e.iter().find(|w| w.segment_id == write.segment_id))
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "flush of {} continues a write that is not there",
                        write.path.display()
                    ))
                })?;
            debug_assert_eq!(before.len, write.from_len);
            write.position = align_down(before.len);
            write.prefix = before.tail_block.clone();
            write.file = Some(before.file.clone());
        }
        let (file, created) = match write.file.take() {
            Some(file) => (file, false),
            None if write.chunks.is_empty() && write.seal.is_none() => continue,
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
        let tail_block = write_chunks(&file, &write).await?;
        if write.trim {
            // Before the next job may write: it may cut this file (a truncation).
            file.truncate(write.new_len).await?;
        }
        written.push(Written {
            segment_id: write.segment_id,
            file: file.clone(),
            len: write.new_len,
            tail_block: tail_block.clone(),
        });
        opened.push((write, file, created, tail_block));
    }
    link.written(written.into());

    let mut done = Vec::with_capacity(opened.len());
    for (write, file, created, tail_block) in opened {
        if write.sync || write.trim {
            file.fdatasync().await?;
        }
        if created {
            let dir = dir.to_path_buf();
            glommio::executor()
                .spawn_blocking(move || crate::storage::record_file::sync_dir(&dir))
                .await?;
        }
        let sealed = write.seal.is_some();
        if let Some((seal, index, summary)) = write.seal {
            debug_assert_eq!(summary.len, write.new_len);
            // Trim the block padding so the file length is the logical length the index
            // trailer records; recovery then trusts the segment without a scan. The sync
            // also makes everything written to the segment durable.
            file.truncate(write.new_len).await?;
            file.fdatasync().await?;
            let dir = dir.to_path_buf();
            let base = write.base_offset;
            glommio::executor()
                .spawn_blocking(move || {
                    index.write_files(&dir, base, summary)?;
                    match &seal.snapshot {
                        Some(snapshot) => write_snapshot(&dir, seal.snapshot_offset, snapshot),
                        None => Ok(()),
                    }
                })
                .await?;
        }
        done.push(FlushedSegment {
            segment_id: write.segment_id,
            sealed,
            file,
            durable_len: write.new_len,
            tail_block,
        });
    }
    Ok(done)
}

/// Cuts a truncated segment's file at `write.from_len` and reads back the bytes of the
/// partial block the write starts with. Runs once the job before has written.
async fn cut_segment(write: &mut SegmentWrite, earlier: Option<&[Written]>) -> io::Result<()> {
    let file = match write.file.take() {
        Some(file) => file,
        None => earlier
            .and_then(|e| e.iter().find(|w| w.segment_id == write.segment_id))
            .map(|w| w.file.clone())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "truncated segment {} has no file",
                    write.path.display()
                ))
            })?,
    };
    let cut = write.from_len;
    write.position = align_down(cut);
    let keep = (cut - write.position) as usize;
    write.prefix = if keep > 0 {
        let block = file
            .read_at_aligned(write.position, BLOCK_BYTES as usize)
            .await?;
        if block.len() < keep {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} is shorter than its truncation point {cut}",
                    write.path.display()
                ),
            ));
        }
        block[..keep].to_vec()
    } else {
        Vec::new()
    };
    file.truncate(cut).await?;
    write.file = Some(file);
    Ok(())
}

/// Writes a segment's new batches after the bytes of its partial last block, in one
/// aligned direct-I/O write; returns the new partial last block.
async fn write_chunks(file: &DmaFile, write: &SegmentWrite) -> io::Result<Vec<u8>> {
    if write.chunks.is_empty() {
        return Ok(write.prefix.clone());
    }
    let total = write.prefix.len() + write.chunks.iter().map(|c| c.len()).sum::<usize>();
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
    let tail_block = bytes[tail_start..total].to_vec();
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
    Ok(tail_block)
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
