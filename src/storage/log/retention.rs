//! Removing and rewriting sealed segments: retention by time and size (`retention.ms`,
//! `retention.bytes`), DeleteRecords, and compaction passes (`cleanup.policy=compact`,
//! whose byte work lives in [`crate::storage::compaction`]). The log decides synchronously
//! what goes; a [`RemovalJob`] records the new log start offset and deletes the files.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use super::segment::Segment;
use super::*;
use crate::storage::compaction::{CleanInput, CleanOutput, CompactionDone, CompactionJob};
use crate::storage::index::IndexBuilder;

impl PartitionLog {
    /// Closed segments that are completely on disk, sealed and indexed: the ones
    /// retention and compaction may remove or rewrite. Always leaves the active segment.
    fn settled_prefix(&self) -> usize {
        let closed = self.segments.len() - 1;
        self.segments[..closed]
            .iter()
            .take_while(|s| s.settled && s.seal.is_none() && s.pending.is_empty())
            .count()
    }

    /// Applies `retention.ms` and `retention.bytes` (when `cleanup.policy` has `delete`)
    /// and removes segments wholly below the log start offset. Deletes whole closed
    /// segments only; if every record has expired by time, the active segment is rolled so
    /// the next run can delete it (`rolled`: the caller queues the log for a flush).
    pub fn enforce_retention(&mut self, now_ms: i64) -> Retention {
        let settled = self.settled_prefix();
        let remove = self.expired_prefix(now_ms);
        let mut rolled = false;
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

    /// How many of the first settled segments retention removes: those below the log
    /// start offset, expired (`retention.ms`) or beyond `retention.bytes`.
    pub(super) fn expired_prefix(&self, now_ms: i64) -> usize {
        let settled = self.settled_prefix();
        let mut total: u64 = self.size_bytes();
        let mut remove = 0usize;
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
        remove
    }

    /// Takes the first `count` segments out of the log and returns the job that deletes
    /// their files (after making the new log start offset durable).
    pub(super) fn remove_prefix(&mut self, count: usize) -> Option<RemovalJob> {
        if count == 0 {
            return None;
        }
        self.read_ahead.invalidate();
        let mut removed: Vec<Segment> = self.segments.drain(..count).collect();
        let files = removed
            .iter_mut()
            .filter_map(|s| self.take_file(s))
            .collect();
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
            files,
            raft_start: None,
        })
    }

    /// A compaction pass over the closed segments old enough to clean
    /// (`min.compaction.lag.ms`), if the topic is compacted and something there is new since
    /// the last pass (or a kept tombstone has expired).
    pub fn compaction_plan(&mut self, now_ms: i64) -> Option<CompactionJob> {
        if !self.config.compact || self.compacting || self.closed || self.offline.is_some() {
            return None;
        }
        if self.raft.is_some() {
            // Compaction drops batches with no survivor, which would renumber a Raft
            // log's entries (an index is a batch's ordinal): replicated logs are not
            // compacted until it keeps an empty batch in their place.
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
        // Rewritten segments hold other bytes at the same positions.
        self.read_ahead.invalidate();
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
                    let mut segment = self.segments.remove(i);
                    emptied.push((base, self.take_file(&mut segment)));
                }
                CleanOutput::Rewritten { index, summary } => {
                    // The old file's handle goes; reads open the rewritten file on demand.
                    let cached = self.files.remove((self.file_id, base));
                    let segment = &mut self.segments[i];
                    drop(segment.file.take().or(cached));
                    let last_entry = index.entries().last().map(|e| u64::from(e.position));
                    segment.index_builder = IndexBuilder::resume(
                        self.config.index_interval_bytes,
                        summary.len,
                        last_entry,
                        summary.max_timestamp,
                    );
                    segment.index = index;
                    segment.len = summary.len;
                    segment.durable_len = summary.len;
                    segment.issued_len = summary.len;
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
            raft_start: None,
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
        self.read_ahead.invalidate();
        let settled = self.settled_prefix();
        // A replicated log's segments go by retention, which moves its Raft start too.
        let below = if self.raft.is_some() {
            0
        } else {
            self.segments[..settled]
                .iter()
                .take_while(|s| s.next_offset <= self.log_start_offset)
                .count()
        };
        let job = self.remove_prefix(below).unwrap_or_else(|| RemovalJob {
            dir: self.dir.clone(),
            log_start_offset: self.log_start_offset,
            bases: Vec::new(),
            files: Vec::new(),
            raft_start: None,
        });
        Ok((self.log_start_offset, job))
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
    pub(super) dir: PathBuf,
    pub(super) log_start_offset: i64,
    pub(super) bases: Vec<i64>,
    pub(super) files: Vec<Rc<DmaFile>>,
    /// A replicated log's new start, recorded before the files go.
    pub(super) raft_start: Option<super::RaftStart>,
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
        let raft_start = self.raft_start;
        glommio::executor()
            .spawn_blocking(move || {
                if let Some(raft_start) = raft_start {
                    super::raft_start::write(&dir, &raft_start, false)?;
                }
                crate::storage::record_file::write_atomically(
                    &dir.join(LOG_START_FILE),
                    format!("{start}\n").as_bytes(),
                )?;
                for base in bases {
                    crate::storage::recovery::remove_segment_files(&dir, base)?;
                }
                crate::storage::record_file::sync_dir(&dir)
            })
            .await
    }
}

/// The recorded log start offset of a partition directory, if any.
pub(super) fn read_log_start(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(LOG_START_FILE)).ok()?;
    match text.trim().parse::<i64>() {
        Ok(offset) if offset >= 0 => Some(offset),
        _ => {
            tracing::warn!(dir = %dir.display(), "unreadable {LOG_START_FILE}; using the first segment's base");
            None
        }
    }
}
