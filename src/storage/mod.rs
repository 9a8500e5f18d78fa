//! Storage: one append-only log per partition, of Kafka record batches stored verbatim.
//!
//! - [`log`]: the partition log — appends (offsets assigned, batch bytes patched and kept
//!   as they arrived) in `log/mod.rs`, its segments (`segment`), group-commit flush jobs
//!   run by the shard's flusher and clean close (`flush`), read plans for Fetch and
//!   ListOffsets (`reader`), retention, DeleteRecords and compaction passes (`retention`),
//!   and the shard's bounded cache of open sealed-segment files (`files`): only a
//!   partition's active segment stays open, older ones are opened on demand.
//! - [`recovery`]: opening a directory after a clean stop or a crash: validate, truncate
//!   torn tails, rebuild indexes, reload producer state.
//! - [`index`]: the sparse offset/time index of a segment, its files, and the builder that
//!   adds entries as batches are appended, scanned or rewritten.
//! - [`segment_walk`]: walking a segment file's batches in order (recovery, compaction and
//!   cold reads share it).
//! - [`compaction`]: rewriting sealed segments with only the last record of each key.
//! - [`producer_state`]: idempotent producers' sequences and their snapshots.
//! - [`cache`]: recent batches in memory for tailing consumers.
//! - [`epochs`]: the leader-epoch cache of a replicated partition (term → first index and
//!   offset) and its checkpoint file.
//! - [`raft_state`]: the Raft hard state (term, vote, commit) of a replicated partition.
//! - [`record_file`]: small durable logs of JSON records (cluster metadata, group offsets,
//!   transactions), atomic file writes and directory syncs.
//!
//! Layout of a partition directory (`<data-dir>/<topic>-<partition>/`), every name the
//! 20-digit base offset of what it describes:
//!
//! ```text
//! 00000000000000000000.log        record batches, direct I/O, 4 KiB-aligned writes
//! 00000000000000000000.index      (relative offset, position) every 4 KiB, + trailer
//! 00000000000000000000.timeindex  (max timestamp before, relative offset), + trailer
//! 00000000000000012345.snapshot   producer state as of offset 12345
//! partition.metadata              the topic id this directory belongs to
//! ```
//!
//! docs/storage-format.md describes the formats byte by byte.

pub mod cache;
pub mod compaction;
pub mod epochs;
pub mod index;
#[cfg(test)]
mod lifecycle_tests;
pub mod log;
#[cfg(test)]
mod log_tests;
pub mod producer_state;
pub mod raft_state;
pub mod raft_store;
pub mod record_file;
pub mod recovery;
#[cfg(test)]
mod replica_tests;
pub mod segment_walk;
#[cfg(test)]
pub mod testing;

use std::path::{Path, PathBuf};

pub use log::{
    AppendError, AppendOutcome, CloseJob, FlushJob, FlushResult, LogConfig, PartitionLog, ReadData,
    ReadError, ReadPlan, TimestampPlan,
};

/// Direct-I/O block size: write positions and lengths are multiples of it. The device here
/// reports 512 bytes; 4096 is what NVMe drives want and is a multiple of every smaller one.
pub const BLOCK_BYTES: u64 = 4096;

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Files being written before a rename; removed at recovery.
pub const TMP_SUFFIX: &str = ".tmp";
/// A compaction pass's new segment before it replaces the old one; removed at recovery.
pub const CLEANED_SUFFIX: &str = ".log.cleaned";

/// `<dir>/<20-digit offset><suffix>`.
pub fn segment_file(dir: &Path, offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{offset:020}{suffix}"))
}

/// The offset in a file name made by [`segment_file`], if `name` is one with `suffix`.
pub fn parse_segment_name(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub fn align_down(value: u64) -> u64 {
    value - value % BLOCK_BYTES
}

pub fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_BYTES - 1)
}

/// Name of the file each shard opens first (see [`warm_up_io`]).
const WARM_UP_FILE: &str = ".io-warm-up";

/// Works around glommio's polled-I/O detection (upstream issues 605/670): the first
/// `DmaFile` a thread opens decides whether polled I/O is used, and a fresh empty file
/// makes glommio choose it wrongly, after which every read fails with EOPNOTSUPP. So before
/// any other file I/O, every shard opens and reads an existing non-empty file, created by
/// write-to-temp-then-rename, and closes it.
pub async fn warm_up_io(data_dir: &Path) -> std::io::Result<()> {
    let path = data_dir.join(WARM_UP_FILE);
    let needs_file = std::fs::metadata(&path)
        .map(|m| m.len() < BLOCK_BYTES)
        .unwrap_or(true);
    if needs_file {
        let tmp = data_dir.join(format!(
            "{WARM_UP_FILE}.{}{TMP_SUFFIX}",
            std::process::id() as u64 * 1000 + thread_tag()
        ));
        std::fs::write(&tmp, vec![b'S'; BLOCK_BYTES as usize])?;
        std::fs::rename(&tmp, &path)?;
    }
    let file = glommio::io::DmaFile::open(&path).await?;
    let read = file.read_at_aligned(0, BLOCK_BYTES as usize).await;
    file.close().await?;
    let read = read?;
    if read.len() != BLOCK_BYTES as usize || read[0] != b'S' {
        return Err(std::io::Error::other(format!(
            "direct-I/O read of {} returned {} bytes",
            path.display(),
            read.len()
        )));
    }
    Ok(())
}

/// A small per-thread number, so concurrent shards use different temp names.
fn thread_tag() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() % 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let dir = Path::new("/d");
        let path = segment_file(dir, 12345, LOG_SUFFIX);
        assert_eq!(path, Path::new("/d/00000000000000012345.log"));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_segment_name(name, LOG_SUFFIX), Some(12345));
        assert_eq!(parse_segment_name(name, INDEX_SUFFIX), None);
        assert_eq!(parse_segment_name("123.log", LOG_SUFFIX), None);
        assert_eq!(
            parse_segment_name("0000000000000000001x.log", LOG_SUFFIX),
            None
        );
    }

    #[test]
    fn alignment() {
        assert_eq!(align_down(4095), 0);
        assert_eq!(align_down(4096), 4096);
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(align_up(4097), 8192);
    }
}
