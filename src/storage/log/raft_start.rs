//! Where a replicated log starts in Raft's terms, once retention has removed its first
//! entries or a follower installed the leader's snapshot: `raft-start.checkpoint` in the
//! partition directory.
//!
//! A replicated partition's "snapshot" holds no data: the log is the state machine, and a
//! follower whose next entry the leader no longer has is told where the leader's log
//! starts (offset, and the index and term of the entry before it). It drops its whole log
//! and fetches entries from there, as a Kafka follower does after `OFFSET_OUT_OF_RANGE`.
//!
//! The file is one line, `OFFSET INDEX TERM`, written atomically (temp file, sync,
//! rename, directory sync): the log's first entry is `INDEX + 1`, its batch starts at
//! `OFFSET`, and entry `INDEX` (gone) had `TERM`. Retention writes it before deleting the
//! segments below `OFFSET`; reopening deletes any left behind by a crash. Installing a
//! snapshot writes it with a fourth word, `installing`, before deleting every segment,
//! and again without it once they are gone: a crash in between finds the word and
//! deletes what is left, so a stale entry never survives below or beside the new start.

use std::io;
use std::path::Path;

use crate::storage::{parse_segment_name, LOG_SUFFIX, SNAPSHOT_SUFFIX};

/// The start record's file name in a partition directory.
pub const RAFT_START_FILE: &str = "raft-start.checkpoint";

/// Where a replicated log starts: its first entry is `index + 1`, at `offset`; entry
/// `index` had `term`. The default (0, 0, 0) is a log that never lost an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftStart {
    pub offset: i64,
    pub index: u64,
    pub term: u64,
}

impl RaftStart {
    /// The snapshot data raft-rs carries to a follower: a magic, a version and the start.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SNAPSHOT_DATA_BYTES);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out
    }

    /// The start a snapshot names: its offset from `data`, index and term from its
    /// metadata.
    pub fn decode(data: &[u8], index: u64, term: u64) -> Result<RaftStart, String> {
        if data.len() != SNAPSHOT_DATA_BYTES || &data[..4] != SNAPSHOT_MAGIC {
            return Err(format!(
                "snapshot data of {} bytes is not a log start",
                data.len()
            ));
        }
        let version = u16::from_be_bytes([data[4], data[5]]);
        if version != 1 {
            return Err(format!("snapshot data version {version} is unknown"));
        }
        let offset = i64::from_be_bytes(data[6..14].try_into().expect("checked length"));
        if offset < 0 || index == 0 {
            return Err(format!(
                "snapshot at index {index} starts at offset {offset}"
            ));
        }
        Ok(RaftStart {
            offset,
            index,
            term,
        })
    }
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"STLS";
const SNAPSHOT_DATA_BYTES: usize = 4 + 2 + 8;

/// Reads `dir`'s start record: the start and whether an install was under way. `None`
/// if there is none. Blocking.
pub fn read(dir: &Path) -> io::Result<Option<(RaftStart, bool)>> {
    let path = dir.join(RAFT_START_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not `OFFSET INDEX TERM [installing]`", path.display()),
        )
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let (offset, index, term, installing) = match words.as_slice() {
        [o, i, t] => (o, i, t, false),
        [o, i, t, "installing"] => (o, i, t, true),
        _ => return Err(invalid()),
    };
    let start = RaftStart {
        offset: offset.parse().map_err(|_| invalid())?,
        index: index.parse().map_err(|_| invalid())?,
        term: term.parse().map_err(|_| invalid())?,
    };
    if start.offset < 0 {
        return Err(invalid());
    }
    Ok(Some((start, installing)))
}

/// Writes `dir`'s start record atomically. Blocking.
pub fn write(dir: &Path, start: &RaftStart, installing: bool) -> io::Result<()> {
    let line = format!(
        "{} {} {}{}\n",
        start.offset,
        start.index,
        start.term,
        if installing { " installing" } else { "" }
    );
    crate::storage::record_file::write_atomically(&dir.join(RAFT_START_FILE), line.as_bytes())
}

/// Removes every segment of `dir` (and its producer snapshots) whose base is below
/// `below`, then syncs `dir`. Returns how many segments went. Blocking.
fn remove_segments_below(dir: &Path, below: i64) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = parse_segment_name(&name, LOG_SUFFIX).filter(|&b| b < below) {
            crate::storage::recovery::remove_segment_files(dir, base)?;
            removed += 1;
        } else if parse_segment_name(&name, SNAPSHOT_SUFFIX).is_some_and(|o| o < below) {
            std::fs::remove_file(entry.path())?;
        }
    }
    crate::storage::record_file::sync_dir(dir)?;
    Ok(removed)
}

/// Makes `dir` agree with its start record before the log is recovered: an install a
/// crash interrupted is finished (every segment goes), and segments retention meant to
/// delete below the start go. Returns the start, if the log has one. Blocking.
pub fn settle(dir: &Path) -> io::Result<Option<RaftStart>> {
    let Some((start, installing)) = read(dir)? else {
        return Ok(None);
    };
    if installing {
        let removed = remove_segments_below(dir, i64::MAX)?;
        tracing::warn!(dir = %dir.display(), removed, ?start, "finished installing a snapshot a crash interrupted");
        write(dir, &start, false)?;
    } else {
        let removed = remove_segments_below(dir, start.offset)?;
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, ?start, "removed segments below the log start");
        }
    }
    Ok(Some(start))
}

/// Installs a snapshot on disk: the start record marked `installing`, every segment
/// removed, the record again without the mark. Blocking.
pub fn install(dir: &Path, start: &RaftStart) -> io::Result<()> {
    write(dir, start, true)?;
    remove_segments_below(dir, i64::MAX)?;
    write(dir, start, false)
}
