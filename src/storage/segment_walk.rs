//! Walking the record batches of a segment file in order.
//!
//! A segment is a plain sequence of Kafka batches, each announcing its own length in
//! bytes 8..12 of its header. Recovery (validating a segment after a crash), compaction
//! (reading sealed segments to rewrite them) and cold reads (Fetch and ListOffsets from
//! disk) all walk it the same way, and this is the one place that decodes those length
//! prefixes: [`frame_len`] checks one against the bytes the segment has left, and
//! [`SegmentWalker`] is the blocking walker over a file. The async read path applies
//! [`frame_len`] to the chunks it reads through direct I/O.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::protocol::batch::{parse_batch, BatchInfo, BATCH_HEADER_LEN, BATCH_LENGTH_PREFIX_LEN};

/// Read-ahead of the blocking walker.
const WALK_BUFFER_BYTES: usize = 1 << 20;

/// Why a batch's length prefix cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadFrame {
    /// The batch length field is below a header's size or above the allowed maximum.
    Length(i32),
    /// The batch claims more bytes than the segment has left.
    Torn { claimed: usize, room: u64 },
}

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadFrame::Length(length) => write!(f, "invalid batch length {length}"),
            BadFrame::Torn { claimed, room } => {
                write!(f, "{claimed} bytes claimed, {room} in the segment")
            }
        }
    }
}

/// The total length (length prefix included) of the batch whose first bytes are `prefix`,
/// given `room` bytes left in the segment from its start and a per-batch maximum of
/// `bytes_max`. `None`: `prefix` is shorter than a length prefix.
pub fn frame_len(prefix: &[u8], room: u64, bytes_max: usize) -> Option<Result<usize, BadFrame>> {
    if prefix.len() < BATCH_LENGTH_PREFIX_LEN {
        return None;
    }
    let batch_length = i32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    let len = BATCH_LENGTH_PREFIX_LEN as i64 + i64::from(batch_length);
    if len < BATCH_HEADER_LEN as i64 || len as u64 > bytes_max as u64 {
        return Some(Err(BadFrame::Length(batch_length)));
    }
    let len = len as usize;
    if len as u64 > room {
        return Some(Err(BadFrame::Torn { claimed: len, room }));
    }
    Some(Ok(len))
}

/// Why a walk stopped before the end it was given.
#[derive(Debug)]
pub enum WalkStop {
    /// Fewer bytes than a length prefix were left, or the file could not be read.
    Io { position: u64, error: io::Error },
    /// The length prefix at `position` is not believable.
    Frame { position: u64, bad: BadFrame },
    /// The batch at `position` failed validation (CRC, header fields).
    Invalid { position: u64, why: String },
}

impl std::fmt::Display for WalkStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkStop::Io { position, error } => {
                write!(f, "cannot read at byte {position}: {error}")
            }
            WalkStop::Frame { position, bad } => write!(f, "at byte {position}: {bad}"),
            WalkStop::Invalid { position, why } => {
                write!(f, "invalid batch at byte {position}: {why}")
            }
        }
    }
}

impl From<WalkStop> for io::Error {
    fn from(stop: WalkStop) -> io::Error {
        match stop {
            WalkStop::Io { error, .. } => error,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// Reads the batches of a segment file in order, validating each (lengths, CRC, header).
pub struct SegmentWalker {
    reader: BufReader<io::Take<File>>,
    position: u64,
    end: u64,
    bytes_max: usize,
    batch: Vec<u8>,
}

impl SegmentWalker {
    /// Walks `path` from its start up to byte `end`; batches over `bytes_max` are invalid.
    pub fn open(path: &Path, end: u64, bytes_max: usize) -> io::Result<SegmentWalker> {
        let file = File::open(path)?;
        Ok(SegmentWalker {
            reader: BufReader::with_capacity(WALK_BUFFER_BYTES, file.take(end)),
            position: 0,
            end,
            bytes_max,
            batch: Vec::new(),
        })
    }

    /// Walks `path` from byte `from` (a batch boundary) up to byte `end`.
    pub fn open_at(
        path: &Path,
        from: u64,
        end: u64,
        bytes_max: usize,
    ) -> io::Result<SegmentWalker> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(from))?;
        Ok(SegmentWalker {
            reader: BufReader::with_capacity(
                WALK_BUFFER_BYTES,
                file.take(end.saturating_sub(from)),
            ),
            position: from,
            end: end.max(from),
            bytes_max,
            batch: Vec::new(),
        })
    }

    /// Where the next batch starts (after a stop: where the bad one starts).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next batch and its header: `Ok(None)` at `end`, `Err` at the first byte that
    /// is not a whole valid batch. The batch's bytes are [`batch`](Self::batch) until the
    /// next call.
    pub fn next_batch(&mut self) -> Result<Option<(u64, BatchInfo)>, WalkStop> {
        let position = self.position;
        if position == self.end {
            return Ok(None);
        }
        let mut prefix = [0u8; BATCH_LENGTH_PREFIX_LEN];
        if let Err(error) = self.reader.read_exact(&mut prefix) {
            return Err(WalkStop::Io { position, error });
        }
        let len = match frame_len(&prefix, self.end - position, self.bytes_max) {
            Some(Ok(len)) => len,
            Some(Err(bad)) => return Err(WalkStop::Frame { position, bad }),
            None => unreachable!("a whole prefix was read"),
        };
        self.batch.clear();
        self.batch.extend_from_slice(&prefix);
        self.batch.resize(len, 0);
        if let Err(error) = self
            .reader
            .read_exact(&mut self.batch[BATCH_LENGTH_PREFIX_LEN..])
        {
            return Err(WalkStop::Io { position, error });
        }
        let info = parse_batch(&self.batch).map_err(|e| WalkStop::Invalid {
            position,
            why: e.to_string(),
        })?;
        self.position += len as u64;
        Ok(Some((position, info)))
    }

    /// The bytes of the batch the last [`next_batch`](Self::next_batch) returned.
    pub fn batch(&self) -> &[u8] {
        &self.batch
    }
}
