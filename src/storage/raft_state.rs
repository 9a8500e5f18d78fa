//! The Raft hard state of a replicated partition: `raft.state` in its directory.
//!
//! Raft must not forget its term and vote across a crash (a node that votes twice in a term
//! can elect two leaders), so they are made durable before any message that depends on them
//! is sent. The commit index and its offset (the high watermark) ride along as hints: after
//! a restart the commit is [clamped](HardState::clamped) to the log, which may have lost an
//! unsynced tail.
//!
//! The file is two 4096-byte slots, A (offset 0) and B (offset 4096). Write number `seq`
//! goes to slot `seq % 2` in one aligned direct-I/O write followed by `fdatasync`, so it
//! never overwrites the newest durable state: a crash in the middle of a write can only
//! tear the slot being written, and a load takes the valid slot with the highest `seq`.
//! Each slot, big-endian:
//!
//! ```text
//!  0 magic [4] "STRS" | 4 version u16 (1) | 6 seq u64 | 14 term u64 | 22 vote u64
//! 30 commit u64 | 38 commit_offset i64 | 46 crc32c u32 (of bytes 0–45) | 50 zeros to 4096
//! ```
//!
//! The file is created whole (temp file, `fdatasync`, rename, directory sync) with slot A
//! holding `seq` 0 and the initial state (term 0, no vote, commit 0) and slot B zeroed, so
//! a torn first write still leaves a valid slot. `seq` 0 means "nothing recorded yet": a
//! load returns no state. A file whose two slots are both invalid, or whose length is not
//! exactly two slots, is an error naming the file: the partition cannot safely take part in
//! elections until an operator looks.

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use super::BLOCK_BYTES;

/// The hard-state file's name in a partition directory.
pub const RAFT_STATE_FILE: &str = "raft.state";

const SLOT_BYTES: usize = BLOCK_BYTES as usize;
const FILE_BYTES: usize = 2 * SLOT_BYTES;
const MAGIC: [u8; 4] = *b"STRS";
const VERSION: u16 = 1;
/// Bytes covered by the CRC: everything before it.
const CRC_AT: usize = 46;
const HEADER_BYTES: usize = CRC_AT + 4;

/// What Raft must remember across restarts (raft-rs `HardState`), and the Kafka offset
/// that ends the committed entries (the high watermark as of `commit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    /// The node voted for in `term`; 0 for none (raft-rs `INVALID_ID`).
    pub vote: u64,
    pub commit: u64,
    pub commit_offset: i64,
}

impl HardState {
    /// This state with the commit no higher than the log: `commit ≤ last_index` (raft-rs
    /// panics when told to commit past its last index) and `commit_offset ≤
    /// log_end_offset`, the next offset after `last_index`. The commit is written without a
    /// sync of the log, so after a crash it may point past the log's recovered end.
    pub fn clamped(self, last_index: u64, log_end_offset: i64) -> HardState {
        HardState {
            commit: self.commit.min(last_index),
            commit_offset: self.commit_offset.min(log_end_offset),
            ..self
        }
    }
}

impl HardState {
    /// This state with the commit no lower than a log start: the entry before the first
    /// one in the log is committed (retention removes only committed entries, a snapshot
    /// is of committed ones), though the commit written last may be older.
    /// `index` and `offset`: the log's start (the entry before its first one, and where
    /// the first one starts).
    pub fn at_least(self, index: u64, offset: i64) -> HardState {
        if self.commit >= index {
            return self;
        }
        HardState {
            commit: index,
            commit_offset: offset,
            ..self
        }
    }
}

/// An open `raft.state`; writes alternate between its slots.
pub struct RaftStateFile {
    path: PathBuf,
    file: DmaFile,
    /// `seq` of the newest valid slot.
    seq: std::cell::Cell<u64>,
}

impl RaftStateFile {
    /// Opens `dir`'s hard-state file, creating it (and syncing `dir`) if there is none.
    /// Returns the recorded state, `None` if nothing was written yet.
    pub async fn open_or_create(dir: &Path) -> io::Result<(RaftStateFile, Option<HardState>)> {
        let path = dir.join(RAFT_STATE_FILE);
        let create = path.clone();
        glommio::executor()
            .spawn_blocking(move || create_if_missing(&create))
            .await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&path)
            .await
            .map_err(|e| with_path(e.into(), &path))?;
        match load(&file, &path).await {
            Ok((seq, state)) => {
                let state = (seq > 0).then_some(state);
                Ok((
                    RaftStateFile {
                        path,
                        file,
                        seq: std::cell::Cell::new(seq),
                    },
                    state,
                ))
            }
            Err(e) => {
                let _ = file.close().await;
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `state` durably: one aligned write of the slot after the newest, then
    /// `fdatasync`. On error the previous state is still whole in the other slot, and the
    /// next write goes to the same slot again.
    /// Writes are not concurrent: the caller awaits one before starting the next.
    pub async fn write(&self, state: &HardState) -> io::Result<()> {
        let seq = self.seq.get() + 1;
        let mut buf = self.file.alloc_dma_buffer(SLOT_BYTES);
        let bytes = buf.as_bytes_mut();
        bytes.fill(0);
        encode_slot(seq, state, &mut bytes[..HEADER_BYTES]);
        let position = (seq % 2) * SLOT_BYTES as u64;
        let written = self
            .file
            .write_at(buf, position)
            .await
            .map_err(|e| with_path(e.into(), &self.path))?;
        if written != SLOT_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to {}: {written} of {SLOT_BYTES} bytes",
                    self.path.display()
                ),
            ));
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| with_path(e.into(), &self.path))?;
        self.seq.set(seq);
        Ok(())
    }

    pub async fn close(self) -> io::Result<()> {
        Ok(self.file.close().await?)
    }
}

/// Creates the file with its initial state unless it exists. Blocking.
fn create_if_missing(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(e, path)),
    }
    let mut bytes = vec![0u8; FILE_BYTES];
    encode_slot(0, &HardState::default(), &mut bytes[..HEADER_BYTES]);
    // Temp file, fdatasync, rename, directory sync.
    super::record_file::write_atomically(path, &bytes).map_err(|e| with_path(e, path))
}

/// Reads both slots; the newest valid one's `(seq, state)`.
async fn load(file: &DmaFile, path: &Path) -> io::Result<(u64, HardState)> {
    let len = file
        .file_size()
        .await
        .map_err(|e| with_path(e.into(), path))?;
    if len != FILE_BYTES as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: {len} bytes, a hard-state file has {FILE_BYTES}",
                path.display()
            ),
        ));
    }
    let read = file
        .read_at_aligned(0, FILE_BYTES)
        .await
        .map_err(|e| with_path(e.into(), path))?;
    if read.len() != FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{}: read {} of {FILE_BYTES} bytes",
                path.display(),
                read.len()
            ),
        ));
    }
    newest(&read[..SLOT_BYTES], &read[SLOT_BYTES..], path)
}

/// The valid slot with the highest `seq`, or an error naming both slots' faults.
fn newest(a: &[u8], b: &[u8], path: &Path) -> io::Result<(u64, HardState)> {
    match (decode_slot(a), decode_slot(b)) {
        (Ok(a), Ok(b)) => Ok(if b.0 > a.0 { b } else { a }),
        (Ok(a), Err(b)) => {
            tracing::warn!(path = %path.display(), slot = "B", fault = b, "hard-state slot invalid; using the other");
            Ok(a)
        }
        (Err(a), Ok(b)) => {
            tracing::warn!(path = %path.display(), slot = "A", fault = a, "hard-state slot invalid; using the other");
            Ok(b)
        }
        (Err(a), Err(b)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: no valid hard-state slot (A: {a}; B: {b})",
                path.display()
            ),
        )),
    }
}

fn encode_slot(seq: u64, state: &HardState, out: &mut [u8]) {
    out[0..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_be_bytes());
    out[6..14].copy_from_slice(&seq.to_be_bytes());
    out[14..22].copy_from_slice(&state.term.to_be_bytes());
    out[22..30].copy_from_slice(&state.vote.to_be_bytes());
    out[30..38].copy_from_slice(&state.commit.to_be_bytes());
    out[38..46].copy_from_slice(&state.commit_offset.to_be_bytes());
    let crc = crc32c::crc32c(&out[..CRC_AT]);
    out[CRC_AT..HEADER_BYTES].copy_from_slice(&crc.to_be_bytes());
}

/// A slot's `(seq, state)`, or why it is not valid.
fn decode_slot(slot: &[u8]) -> Result<(u64, HardState), &'static str> {
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&slot[at..at + 8]);
        u64::from_be_bytes(b)
    };
    if slot[0..4] != MAGIC {
        return Err("bad magic");
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&slot[CRC_AT..HEADER_BYTES]);
    if crc32c::crc32c(&slot[..CRC_AT]) != u32::from_be_bytes(crc) {
        return Err("bad crc");
    }
    if u16::from_be_bytes([slot[4], slot[5]]) != VERSION {
        return Err("unknown version");
    }
    let state = HardState {
        term: u64_at(14),
        vote: u64_at(22),
        commit: u64_at(30),
        commit_offset: u64_at(38) as i64,
    };
    Ok((u64_at(6), state))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::storage::testing::run_in_partition_dir as run;

    fn state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            commit_offset: commit as i64 * 10,
        }
    }

    /// `(seq, state)` of each slot as it lies on disk.
    fn slots(dir: &Path) -> [Result<(u64, HardState), &'static str>; 2] {
        let bytes = std::fs::read(dir.join(RAFT_STATE_FILE)).unwrap();
        assert_eq!(bytes.len(), FILE_BYTES);
        [
            decode_slot(&bytes[..SLOT_BYTES]),
            decode_slot(&bytes[SLOT_BYTES..]),
        ]
    }

    fn overwrite(dir: &Path, at: u64, bytes: &[u8]) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(RAFT_STATE_FILE))
            .unwrap();
        file.write_all_at(bytes, at).unwrap();
        file.sync_all().unwrap();
    }

    async fn reopen(dir: &Path) -> io::Result<Option<HardState>> {
        let (file, state) = RaftStateFile::open_or_create(dir).await?;
        file.close().await.unwrap();
        Ok(state)
    }

    #[test]
    fn round_trip_across_reopen() {
        run(|dir| async move {
            let (file, loaded) = RaftStateFile::open_or_create(&dir).await.unwrap();
            assert_eq!(loaded, None);
            assert_eq!(file.path(), dir.join(RAFT_STATE_FILE));
            // Created whole: the initial state in slot A, slot B empty.
            assert_eq!(slots(&dir)[0], Ok((0, HardState::default())));
            assert_eq!(slots(&dir)[1], Err("bad magic"));
            file.close().await.unwrap();
            assert_eq!(reopen(&dir).await.unwrap(), None);

            let (file, _) = RaftStateFile::open_or_create(&dir).await.unwrap();
            let s1 = HardState {
                term: 7,
                vote: 3,
                commit: 41,
                commit_offset: 1_000_000_007,
            };
            file.write(&s1).await.unwrap();
            file.close().await.unwrap();
            assert_eq!(reopen(&dir).await.unwrap(), Some(s1));

            // The sequence goes on after a reopen: the next write lands in the other slot.
            let (file, _) = RaftStateFile::open_or_create(&dir).await.unwrap();
            let s2 = HardState {
                term: u64::MAX,
                vote: 0,
                commit: u64::MAX - 1,
                commit_offset: i64::MAX,
            };
            file.write(&s2).await.unwrap();
            file.close().await.unwrap();
            assert_eq!(slots(&dir), [Ok((2, s2)), Ok((1, s1))]);
            assert_eq!(reopen(&dir).await.unwrap(), Some(s2));
            // Negative offsets survive too (the field is signed).
            let (file, _) = RaftStateFile::open_or_create(&dir).await.unwrap();
            let s3 = HardState {
                commit_offset: -1,
                ..s1
            };
            file.write(&s3).await.unwrap();
            file.close().await.unwrap();
            assert_eq!(reopen(&dir).await.unwrap(), Some(s3));
        });
    }

    #[test]
    fn writes_alternate_between_slots() {
        run(|dir| async move {
            let (file, _) = RaftStateFile::open_or_create(&dir).await.unwrap();
            let states: Vec<HardState> = (1..=5).map(|t| state(t, t % 3, t * 2)).collect();
            for (i, s) in states.iter().enumerate() {
                file.write(s).await.unwrap();
                let seq = i as u64 + 1;
                let on_disk = slots(&dir);
                // The new state in slot seq % 2, the previous one untouched in the other.
                assert_eq!(on_disk[(seq % 2) as usize], Ok((seq, *s)));
                let previous = if i == 0 {
                    (0, HardState::default())
                } else {
                    (seq - 1, states[i - 1])
                };
                assert_eq!(on_disk[((seq + 1) % 2) as usize], Ok(previous));
            }
            file.close().await.unwrap();
            assert_eq!(reopen(&dir).await.unwrap(), Some(states[4]));
        });
    }

    #[test]
    fn a_corrupt_newest_slot_falls_back_to_the_older_one() {
        run(|dir| async move {
            let (file, _) = RaftStateFile::open_or_create(&dir).await.unwrap();
            let (s1, s2, s3) = (state(4, 1, 10), state(5, 2, 12), state(6, 3, 15));
            file.write(&s1).await.unwrap(); // seq 1, slot B
            file.write(&s2).await.unwrap(); // seq 2, slot A
            file.close().await.unwrap();
            // A flipped bit in a field of the newest slot: its CRC no longer holds.
            overwrite(&dir, 15, &[0xff]);
            assert_eq!(reopen(&dir).await.unwrap(), Some(s1));
            // The next write replaces the bad slot, never the good one.
            let (file, loaded) = RaftStateFile::open_or_create(&dir).await.unwrap();
            assert_eq!(loaded, Some(s1));
            file.write(&s3).await.unwrap();
            file.close().await.unwrap();
            assert_eq!(slots(&dir), [Ok((2, s3)), Ok((1, s1))]);
            assert_eq!(reopen(&dir).await.unwrap(), Some(s3));

            // A torn write (the slot's first sector zeroed, as if never written) of slot B.
            let (file, _) = RaftStateFile::open_or_create(&dir).await.unwrap();
            file.write(&s1).await.unwrap(); // seq 3, slot B
            file.close().await.unwrap();
            overwrite(&dir, SLOT_BYTES as u64, &[0u8; 512]);
            assert_eq!(reopen(&dir).await.unwrap(), Some(s3));
        });
    }

    #[test]
    fn a_torn_first_write_leaves_no_state() {
        run(|dir| async move {
            let (file, _) = RaftStateFile::open_or_create(&dir).await.unwrap();
            file.write(&state(1, 1, 0)).await.unwrap(); // seq 1, slot B
            file.close().await.unwrap();
            // Half of the header reached the disk.
            overwrite(&dir, SLOT_BYTES as u64 + 20, &[0u8; 30]);
            assert_eq!(reopen(&dir).await.unwrap(), None);
        });
    }

    #[test]
    fn both_slots_invalid_is_an_error_with_the_path() {
        run(|dir| async move {
            let (file, _) = RaftStateFile::open_or_create(&dir).await.unwrap();
            file.write(&state(2, 1, 3)).await.unwrap();
            file.close().await.unwrap();
            overwrite(&dir, 0, b"XXXX");
            overwrite(&dir, SLOT_BYTES as u64 + 30, &[1]);
            let err = reopen(&dir).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let msg = err.to_string();
            assert!(
                msg.contains(&dir.join(RAFT_STATE_FILE).display().to_string())
                    && msg.contains("A: bad magic")
                    && msg.contains("B: bad crc"),
                "{msg}"
            );
            // A version this build does not know is not trusted either.
            let mut slot = vec![0u8; HEADER_BYTES];
            encode_slot(5, &state(9, 9, 9), &mut slot);
            slot[4..6].copy_from_slice(&2u16.to_be_bytes());
            let crc = crc32c::crc32c(&slot[..CRC_AT]);
            slot[CRC_AT..].copy_from_slice(&crc.to_be_bytes());
            overwrite(&dir, 0, &slot);
            let msg = reopen(&dir).await.unwrap_err().to_string();
            assert!(msg.contains("A: unknown version"), "{msg}");
        });
    }

    #[test]
    fn a_file_of_the_wrong_size_is_an_error_with_the_path() {
        run(|dir| async move {
            let (file, _) = RaftStateFile::open_or_create(&dir).await.unwrap();
            file.close().await.unwrap();
            let path = dir.join(RAFT_STATE_FILE);
            for len in [0, SLOT_BYTES as u64, FILE_BYTES as u64 + SLOT_BYTES as u64] {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(len)
                    .unwrap();
                let err = reopen(&dir).await.unwrap_err();
                let msg = err.to_string();
                assert!(
                    msg.contains(&path.display().to_string())
                        && msg.contains(&format!("{len} bytes")),
                    "{msg}"
                );
            }
        });
    }

    #[test]
    fn clamped_keeps_the_commit_within_the_log() {
        let s = HardState {
            term: 3,
            vote: 2,
            commit: 100,
            commit_offset: 5_000,
        };
        // The log lost its unsynced tail: last index 80, next offset 4_000.
        assert_eq!(
            s.clamped(80, 4_000),
            HardState {
                term: 3,
                vote: 2,
                commit: 80,
                commit_offset: 4_000,
            }
        );
        // A commit within the log is untouched.
        assert_eq!(s.clamped(100, 5_000), s);
        assert_eq!(s.clamped(150, 9_000), s);
        // An empty log (last index 0).
        assert_eq!(s.clamped(0, 0).commit, 0);
    }
}
