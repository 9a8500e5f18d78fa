//! A zero-copy view of the Kafka record batch (magic 2) header, and batch validation.
//!
//! Strand stores client batches verbatim, so this is the only place that looks inside
//! them on the hot path: a produce request's records blob is checked here once (length,
//! magic, CRC32C, offset/count consistency, codec, idempotence fields) before the log
//! accepts it, and the same checks run again on bytes read back from disk, so corrupt data
//! is neither stored nor served. Records themselves stay opaque; only ListOffsets by
//! timestamp decodes the record framing, and only for uncompressed batches.
//!
//! Layout of the 61-byte header (big endian):
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32        | 21 attributes i16 | 23 lastOffsetDelta i32      | 27 baseTimestamp i64
//! 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16      | 53 baseSequence i32
//! 57 recordsCount i32
//! ```
//!
//! The CRC covers `attributes` to the end of the batch, so the broker can patch
//! `baseOffset` and `partitionLeaderEpoch` without recomputing it.

use std::fmt;

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use crate::protocol::{errors, records};

/// Size of the magic-2 batch header.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: `baseOffset` and `batchLength` themselves.
pub const BATCH_LENGTH_PREFIX_LEN: usize = 12;
/// The smallest legal `batchLength`: a header with no records.
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_LEN - BATCH_LENGTH_PREFIX_LEN) as i32;
/// The only record format Strand stores.
pub const MAGIC_V2: i8 = 2;
/// First byte covered by the CRC32C (`attributes`).
pub const CRC_START: usize = 21;
/// Highest known compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub const COMPRESSION_CODEC_MAX: u8 = 4;
/// Sequence numbers wrap from `i32::MAX` to 0 (Kafka's `DefaultRecordBatch.incrementSequence`).
const SEQUENCE_MODULUS: i64 = 1 << 31;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;

const OFFSET_BASE_OFFSET: usize = 0;
const OFFSET_LEADER_EPOCH: usize = 12;

/// The 61-byte header of a magic-2 record batch, as it lies in the buffer.
#[repr(C)]
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Debug)]
pub struct BatchHeader {
    pub base_offset: I64,
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub records_count: I32,
}

const _: () = assert!(std::mem::size_of::<BatchHeader>() == BATCH_HEADER_LEN);

impl BatchHeader {
    /// The header at the start of `buf`, or `None` if `buf` is shorter than a header.
    pub fn view(buf: &[u8]) -> Option<&BatchHeader> {
        BatchHeader::ref_from_prefix(buf)
            .ok()
            .map(|(header, _)| header)
    }
}

/// The fields of a validated batch that the log needs, copied out of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Total size in bytes (`12 + batchLength`).
    pub len: usize,
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub record_count: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub attributes: i16,
}

impl BatchInfo {
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & ATTR_COMPRESSION_MASK) as u8
    }

    pub fn timestamp_type_log_append(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE_LOG_APPEND != 0
    }

    /// Offset of the last record, given the batch's current base offset.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Sequence number of the last record (wraps from `i32::MAX` to 0, as in Kafka).
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `sequence + increment`, wrapping from `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    (i64::from(sequence) + i64::from(increment)).rem_euclid(SEQUENCE_MODULUS) as i32
}

/// Why a batch was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or the batch length claims.
    Truncated {
        needed: usize,
        available: usize,
    },
    /// `batchLength` smaller than an empty batch.
    BadLength(i32),
    BadCrc {
        stored: u32,
        computed: u32,
    },
    UnsupportedMagic(i8),
    /// `lastOffsetDelta + 1 != recordsCount`.
    CountMismatch {
        last_offset_delta: i32,
        record_count: i32,
    },
    Empty,
    BadCompression(u8),
    /// A produce request's records held more than one batch (or trailing bytes).
    MultipleBatches,
    ControlBatch,
    NegativeSequence(i32),
    TooLarge {
        len: usize,
        max: usize,
    },
}

impl BatchError {
    /// The Kafka error code a produce response carries for this rejection.
    pub fn error_code(&self) -> i16 {
        match self {
            BatchError::Truncated { .. } | BatchError::BadLength(_) | BatchError::BadCrc { .. } => {
                errors::CORRUPT_MESSAGE
            }
            BatchError::TooLarge { .. } => errors::MESSAGE_TOO_LARGE,
            BatchError::UnsupportedMagic(_) => errors::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            BatchError::CountMismatch { .. }
            | BatchError::Empty
            | BatchError::BadCompression(_)
            | BatchError::MultipleBatches
            | BatchError::ControlBatch
            | BatchError::NegativeSequence(_) => errors::INVALID_RECORD,
        }
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { needed, available } => {
                write!(
                    f,
                    "truncated record batch: needs {needed} bytes, {available} available"
                )
            }
            BatchError::BadLength(len) => write!(f, "record batch length {len} is too small"),
            BatchError::BadCrc { stored, computed } => {
                write!(
                    f,
                    "record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            BatchError::UnsupportedMagic(magic) => {
                write!(f, "record batch magic {magic} is not supported (only 2)")
            }
            BatchError::CountMismatch {
                last_offset_delta,
                record_count,
            } => write!(
                f,
                "lastOffsetDelta {last_offset_delta} does not match recordsCount {record_count}"
            ),
            BatchError::Empty => write!(f, "record batch has no records"),
            BatchError::BadCompression(codec) => write!(f, "unknown compression codec {codec}"),
            BatchError::MultipleBatches => {
                write!(f, "produce records must hold exactly one record batch")
            }
            BatchError::ControlBatch => write!(f, "clients may not produce control batches"),
            BatchError::NegativeSequence(seq) => {
                write!(f, "idempotent batch has negative base sequence {seq}")
            }
            BatchError::TooLarge { len, max } => {
                write!(
                    f,
                    "record batch of {len} bytes exceeds the limit of {max} bytes"
                )
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// Validates the batch at the start of `buf` (bytes after it are ignored) and returns its
/// header fields.
pub fn parse_batch(buf: &[u8]) -> Result<BatchInfo, BatchError> {
    let header = BatchHeader::view(buf).ok_or(BatchError::Truncated {
        needed: BATCH_HEADER_LEN,
        available: buf.len(),
    })?;
    let batch_length = header.batch_length.get();
    if batch_length < BATCH_LENGTH_MIN {
        return Err(BatchError::BadLength(batch_length));
    }
    let len = BATCH_LENGTH_PREFIX_LEN + batch_length as usize;
    if len > buf.len() {
        return Err(BatchError::Truncated {
            needed: len,
            available: buf.len(),
        });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic(header.magic));
    }
    let stored = header.crc.get();
    let computed = crc32c::crc32c(&buf[CRC_START..len]);
    if stored != computed {
        return Err(BatchError::BadCrc { stored, computed });
    }
    let info = BatchInfo {
        len,
        base_offset: header.base_offset.get(),
        last_offset_delta: header.last_offset_delta.get(),
        record_count: header.records_count.get(),
        base_timestamp: header.base_timestamp.get(),
        max_timestamp: header.max_timestamp.get(),
        producer_id: header.producer_id.get(),
        producer_epoch: header.producer_epoch.get(),
        base_sequence: header.base_sequence.get(),
        attributes: header.attributes.get(),
    };
    if info.record_count <= 0 {
        return Err(BatchError::Empty);
    }
    // A compacted batch keeps its lastOffsetDelta with fewer records; a produced batch
    // must have exactly one record per offset (checked in `validate_produce_records`).
    if i64::from(info.last_offset_delta) + 1 < i64::from(info.record_count) {
        return Err(BatchError::CountMismatch {
            last_offset_delta: info.last_offset_delta,
            record_count: info.record_count,
        });
    }
    if info.compression() > COMPRESSION_CODEC_MAX {
        return Err(BatchError::BadCompression(info.compression()));
    }
    Ok(info)
}

/// Validates the records of one partition in a Produce request (v3+): exactly one valid,
/// non-control batch of at most `max_message_bytes`, with a sequence when it has a
/// producer id.
pub fn validate_produce_records(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<BatchInfo, BatchError> {
    let info = parse_batch(records)?;
    if info.len != records.len() {
        return Err(BatchError::MultipleBatches);
    }
    if i64::from(info.last_offset_delta) + 1 != i64::from(info.record_count) {
        return Err(BatchError::CountMismatch {
            last_offset_delta: info.last_offset_delta,
            record_count: info.record_count,
        });
    }
    if info.is_control() {
        return Err(BatchError::ControlBatch);
    }
    if info.len > max_message_bytes {
        return Err(BatchError::TooLarge {
            len: info.len,
            max: max_message_bytes,
        });
    }
    if info.producer_id >= 0 && info.base_sequence < 0 {
        return Err(BatchError::NegativeSequence(info.base_sequence));
    }
    Ok(info)
}

/// Walks consecutive batches in `buf`, yielding each batch's position and header fields.
/// Stops after the first invalid batch (yielded as `Err`, with [`BatchIter::position`]
/// pointing at it); a region ending in zero padding ends with an error there.
pub fn iter_batches(buf: &[u8]) -> BatchIter<'_> {
    BatchIter {
        buf,
        position: 0,
        failed: false,
    }
}

pub struct BatchIter<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

impl BatchIter<'_> {
    /// Where the next batch starts (after an `Err`: where the invalid bytes start).
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(usize, BatchInfo), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.buf.len() {
            return None;
        }
        match parse_batch(&self.buf[self.position..]) {
            Ok(info) => {
                let at = self.position;
                self.position += info.len;
                Some(Ok((at, info)))
            }
            Err(err) => {
                self.failed = true;
                Some(Err(err))
            }
        }
    }
}

/// Sets the batch's base offset. Not covered by the CRC.
pub fn patch_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(
        batch.len() >= BATCH_HEADER_LEN,
        "patching a buffer shorter than a batch header"
    );
    batch[OFFSET_BASE_OFFSET..OFFSET_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// The bytes of a batch that the log patches when it places it: `baseOffset`,
/// `batchLength` and `partitionLeaderEpoch`, all before the CRC-covered part.
pub const PATCHED_HEAD_LEN: usize = 16;

/// The first [`PATCHED_HEAD_LEN`] bytes of `batch` with its base offset and leader epoch
/// set, for a log that keeps the rest of the batch as it arrived.
pub fn patched_head(batch: &[u8], base_offset: i64, leader_epoch: i32) -> [u8; PATCHED_HEAD_LEN] {
    let mut head = [0u8; PATCHED_HEAD_LEN];
    head.copy_from_slice(&batch[..PATCHED_HEAD_LEN]);
    head[OFFSET_BASE_OFFSET..OFFSET_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    head[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    head
}

/// Sets the batch's partition leader epoch. Not covered by the CRC.
pub fn patch_leader_epoch(batch: &mut [u8], leader_epoch: i32) {
    assert!(
        batch.len() >= BATCH_HEADER_LEN,
        "patching a buffer shorter than a batch header"
    );
    batch[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks the batch's timestamps as the broker's append time (`message.timestamp.type =
/// LogAppendTime`): sets the timestamp-type attribute and `maxTimestamp`, and recomputes
/// the CRC, which covers both. `batch` must hold one whole, valid batch.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    assert!(
        batch.len() >= BATCH_HEADER_LEN,
        "patching a buffer shorter than a batch header"
    );
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) | ATTR_TIMESTAMP_TYPE_LOG_APPEND;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Per-record `(offset delta, timestamp)` of an uncompressed batch, decoded from the record
/// framing. `None` for compressed or malformed batches. `batch` must hold the whole batch.
pub fn record_timestamps(batch: &[u8]) -> Option<Vec<(i64, i64)>> {
    let info = parse_batch(batch).ok()?;
    if info.compression() != 0 {
        return None;
    }
    let body = &batch[BATCH_HEADER_LEN..info.len];
    // Every record takes at least 7 bytes, so the claimed count cannot inflate the allocation.
    let capacity = (info.record_count as usize).min(body.len());
    let mut out = Vec::with_capacity(capacity);
    let mut at = 0;
    for _ in 0..info.record_count {
        let length = usize::try_from(records::varint(body, &mut at)?).ok()?;
        let end = at.checked_add(length)?;
        if end > body.len() {
            return None;
        }
        let record = &body[..end];
        let mut r = at + 1; // attributes
        let timestamp_delta = records::varlong(record, &mut r)?;
        let offset_delta = records::varint(record, &mut r)?;
        let timestamp = if info.timestamp_type_log_append() {
            // Every record of a LogAppendTime batch has the batch's append time.
            info.max_timestamp
        } else {
            info.base_timestamp.wrapping_add(timestamp_delta)
        };
        out.push((i64::from(offset_delta), timestamp));
        at = end;
    }
    if at != body.len() {
        return None;
    }
    Some(out)
}

/// A transaction marker: what a control batch says about its producer's transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

/// A control batch closing `producer_id`'s transaction (Kafka's `EndTransactionMarker`):
/// one record whose key is `(version 0, type)` and whose value is `(version 0,
/// coordinator epoch)`. Base offset 0 (the log patches it), CRC correct.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let kind: i16 = match marker {
        Marker::Abort => 0,
        Marker::Commit => 1,
    };
    let mut value = 0i16.to_be_bytes().to_vec();
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    control_record_batch(
        kind,
        Some(&value),
        ATTR_TRANSACTIONAL | ATTR_CONTROL,
        (producer_id, producer_epoch),
        timestamp,
    )
}

/// A control batch of one record: key `(version 0, control_type)`, `value`; base offset
/// and leader epoch 0 (the log patches them), no sequence, CRC correct.
fn control_record_batch(
    control_type: i16,
    value: Option<&[u8]>,
    attributes: i16,
    (producer_id, producer_epoch): (i64, i16),
    timestamp: i64,
) -> Vec<u8> {
    let mut key = 0i16.to_be_bytes().to_vec();
    key.extend_from_slice(&control_type.to_be_bytes());
    let mut area = Vec::new();
    records::Record {
        key: Some(&key),
        value,
        ..Default::default()
    }
    .encode(&mut area);
    records::encode_batch(
        &records::BatchFields {
            base_offset: 0,
            partition_leader_epoch: 0,
            attributes,
            last_offset_delta: 0,
            base_timestamp: timestamp,
            max_timestamp: timestamp,
            producer: records::ProducerFields {
                producer_id,
                producer_epoch,
                base_sequence: -1,
            },
            record_count: 1,
        },
        &area,
    )
}

/// The control batch a replicated partition's new leader writes as its first entry (Kafka's
/// `LEADER_CHANGE` control type, as KRaft writes it): one record, key `(version 0, type
/// 2)`, no value; no producer; timestamps -1. Every replica stores these same bytes (the
/// base offset and leader epoch, patched in, are outside the CRC). Consumers skip control
/// batches; clients that read control keys ignore a type they do not use.
pub fn leader_change_batch() -> Vec<u8> {
    control_record_batch(CONTROL_TYPE_LEADER_CHANGE, None, ATTR_CONTROL, (-1, -1), -1)
}

/// Kafka's control record type of a leader change (`ControlRecordType.LEADER_CHANGE`).
pub const CONTROL_TYPE_LEADER_CHANGE: i16 = 2;

/// The marker of a control batch (`batch` holds the whole batch), from its first record's
/// key; `None` if the batch is not a control batch or its key is not a transaction marker.
pub fn control_marker(batch: &[u8]) -> Option<Marker> {
    let header = BatchHeader::view(batch)?;
    if header.attributes.get() & ATTR_CONTROL == 0 {
        return None;
    }
    let body = batch.get(BATCH_HEADER_LEN..)?;
    let mut at = 0;
    records::varint(body, &mut at)?; // record length
    at += 1; // attributes
    records::varlong(body, &mut at)?; // timestamp delta
    records::varint(body, &mut at)?; // offset delta
    let key_len = usize::try_from(records::varint(body, &mut at)?).ok()?;
    if key_len < 4 {
        return None;
    }
    let key = body.get(at..at + 4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(Marker::Abort),
        1 => Some(Marker::Commit),
        _ => None,
    }
}

/// Batches for tests, so storage and protocol tests can build valid (and deliberately
/// broken) batches without a client library: owned records over
/// [`records::BatchBuilder`].
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    #[derive(Clone, Debug, Default)]
    pub struct TestRecord {
        pub key: Option<Vec<u8>>,
        pub value: Option<Vec<u8>>,
        pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        pub timestamp_delta: i64,
    }

    impl TestRecord {
        pub fn value(value: &[u8]) -> Self {
            TestRecord {
                value: Some(value.to_vec()),
                ..Default::default()
            }
        }
    }

    #[derive(Clone, Debug)]
    pub struct TestBatch {
        pub base_offset: i64,
        pub base_timestamp: i64,
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
        pub attributes: i16,
        pub records: Vec<TestRecord>,
    }

    impl Default for TestBatch {
        fn default() -> Self {
            TestBatch {
                base_offset: 0,
                base_timestamp: 1_700_000_000_000,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                attributes: 0,
                records: vec![TestRecord::value(b"hello")],
            }
        }
    }

    impl TestBatch {
        /// Encodes the batch with a correct CRC. The records are never compressed, whatever
        /// codec the attributes name.
        pub fn encode(&self) -> Vec<u8> {
            let mut builder = records::BatchBuilder::new(self.base_timestamp, 0);
            for record in &self.records {
                builder.push(
                    record.timestamp_delta,
                    record.key.as_deref(),
                    record.value.as_deref(),
                    record
                        .headers
                        .iter()
                        .map(|(key, value)| (&key[..], value.as_deref()))
                        .collect(),
                );
            }
            let producer = records::ProducerFields {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                base_sequence: self.base_sequence,
            };
            builder.finish_uncompressed(self.base_offset, self.attributes, producer)
        }
    }

    /// Recomputes the CRC of the batch at the start of `batch` (after a test edits it).
    pub use records::fix_crc;

    /// `count` records with values of `value_len` bytes each.
    pub fn simple_batch(count: usize, value_len: usize) -> Vec<u8> {
        TestBatch {
            records: (0..count)
                .map(|i| TestRecord {
                    value: Some(vec![b'a' + (i % 26) as u8; value_len]),
                    timestamp_delta: i as i64,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
        .encode()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn valid_batch_parses() {
        let batch = TestBatch {
            records: vec![
                TestRecord {
                    key: Some(b"k1".to_vec()),
                    value: Some(b"v1".to_vec()),
                    headers: vec![(b"h".to_vec(), Some(b"x".to_vec())), (b"n".to_vec(), None)],
                    timestamp_delta: 0,
                },
                TestRecord {
                    key: None,
                    value: None,
                    headers: vec![],
                    timestamp_delta: 5,
                },
                TestRecord::value(b"third"),
            ],
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 10,
            ..Default::default()
        }
        .encode();
        let info = validate_produce_records(&batch, MAX).unwrap();
        assert_eq!(info.len, batch.len());
        assert_eq!(info.record_count, 3);
        assert_eq!(info.last_offset_delta, 2);
        assert_eq!(info.producer_id, 7);
        assert_eq!(info.last_sequence(), 12);
        assert_eq!(info.max_timestamp, info.base_timestamp + 5);
        assert_eq!(info.compression(), 0);
        assert!(!info.is_control() && !info.is_transactional());
        assert_eq!(info.last_offset(), 2);
    }

    #[test]
    fn bad_crc_is_corrupt() {
        let mut batch = simple_batch(3, 10);
        let last = batch.len() - 1;
        batch[last] ^= 0x01;
        let err = parse_batch(&batch).unwrap_err();
        assert!(matches!(err, BatchError::BadCrc { .. }));
        assert_eq!(err.error_code(), errors::CORRUPT_MESSAGE);
    }

    #[test]
    fn truncated_and_bad_length_are_corrupt() {
        let batch = simple_batch(3, 10);
        for cut in [0, 10, 60, batch.len() - 1] {
            let err = parse_batch(&batch[..cut]).unwrap_err();
            assert!(matches!(err, BatchError::Truncated { .. }), "{cut}: {err}");
            assert_eq!(err.error_code(), errors::CORRUPT_MESSAGE);
        }
        let zeros = [0u8; 200];
        assert_eq!(parse_batch(&zeros).unwrap_err(), BatchError::BadLength(0));
        let mut short = batch.clone();
        short[8..12].copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(parse_batch(&short).unwrap_err(), BatchError::BadLength(48));
        let mut negative = batch;
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            parse_batch(&negative).unwrap_err(),
            BatchError::BadLength(-5)
        );
    }

    #[test]
    fn wrong_magic_is_unsupported() {
        let mut batch = simple_batch(1, 1);
        batch[16] = 1;
        let err = parse_batch(&batch).unwrap_err();
        assert_eq!(err, BatchError::UnsupportedMagic(1));
        assert_eq!(err.error_code(), errors::UNSUPPORTED_FOR_MESSAGE_FORMAT);
    }

    #[test]
    fn wrong_delta_is_invalid_record() {
        let mut batch = simple_batch(3, 4);
        batch[23..27].copy_from_slice(&5i32.to_be_bytes());
        fix_crc(&mut batch);
        // A gap in offsets is what compaction leaves: readable, but not producible.
        assert!(parse_batch(&batch).is_ok());
        let err = validate_produce_records(&batch, 1 << 20).unwrap_err();
        assert!(matches!(err, BatchError::CountMismatch { .. }));
        assert_eq!(err.error_code(), errors::INVALID_RECORD);
        // More records than offsets is never valid.
        batch[23..27].copy_from_slice(&1i32.to_be_bytes());
        fix_crc(&mut batch);
        assert!(matches!(
            parse_batch(&batch).unwrap_err(),
            BatchError::CountMismatch { .. }
        ));

        let mut empty = simple_batch(1, 4);
        empty[23..27].copy_from_slice(&(-1i32).to_be_bytes());
        empty[57..61].copy_from_slice(&0i32.to_be_bytes());
        fix_crc(&mut empty);
        assert_eq!(parse_batch(&empty).unwrap_err(), BatchError::Empty);
    }

    #[test]
    fn bad_codec_is_invalid_record() {
        let batch = TestBatch {
            attributes: 5,
            ..Default::default()
        }
        .encode();
        let err = parse_batch(&batch).unwrap_err();
        assert_eq!(err, BatchError::BadCompression(5));
        assert_eq!(err.error_code(), errors::INVALID_RECORD);
    }

    #[test]
    fn produce_rules() {
        let one = simple_batch(2, 8);
        let mut two = one.clone();
        two.extend_from_slice(&one);
        assert_eq!(
            validate_produce_records(&two, MAX).unwrap_err(),
            BatchError::MultipleBatches
        );
        let mut trailing = one.clone();
        trailing.push(0);
        assert_eq!(
            validate_produce_records(&trailing, MAX).unwrap_err(),
            BatchError::MultipleBatches
        );

        let control = TestBatch {
            attributes: ATTR_CONTROL,
            ..Default::default()
        }
        .encode();
        assert!(parse_batch(&control).unwrap().is_control());
        assert_eq!(
            validate_produce_records(&control, MAX).unwrap_err(),
            BatchError::ControlBatch
        );

        let err = validate_produce_records(&one, one.len() - 1).unwrap_err();
        assert!(matches!(err, BatchError::TooLarge { .. }));
        assert_eq!(err.error_code(), errors::MESSAGE_TOO_LARGE);
        assert!(validate_produce_records(&one, one.len()).is_ok());

        let negative = TestBatch {
            producer_id: 3,
            producer_epoch: 0,
            ..Default::default()
        }
        .encode();
        let err = validate_produce_records(&negative, MAX).unwrap_err();
        assert_eq!(err, BatchError::NegativeSequence(-1));
        assert_eq!(err.error_code(), errors::INVALID_RECORD);
        let no_producer = TestBatch::default().encode();
        assert!(validate_produce_records(&no_producer, MAX).is_ok());
    }

    #[test]
    fn patching_keeps_crc_valid() {
        let mut batch = simple_batch(4, 16);
        patch_base_offset(&mut batch, 1_234_567);
        patch_leader_epoch(&mut batch, 42);
        let info = parse_batch(&batch).unwrap();
        assert_eq!(info.base_offset, 1_234_567);
        assert_eq!(info.last_offset(), 1_234_570);
        let header = BatchHeader::view(&batch).unwrap();
        assert_eq!(header.partition_leader_epoch.get(), 42);
    }

    #[test]
    fn sequence_wraps_to_zero() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
        let batch = TestBatch {
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: i32::MAX,
            records: vec![TestRecord::value(b"a"), TestRecord::value(b"b")],
            ..Default::default()
        }
        .encode();
        assert_eq!(parse_batch(&batch).unwrap().last_sequence(), 0);
    }

    #[test]
    fn the_leader_change_batch_is_a_constant_valid_control_batch() {
        let batch = leader_change_batch();
        assert_eq!(
            batch,
            leader_change_batch(),
            "every replica stores the same bytes"
        );
        let info = parse_batch(&batch).unwrap();
        assert!(info.is_control() && !info.is_transactional());
        assert_eq!((info.producer_id, info.record_count), (-1, 1));
        // Not a transaction marker: nothing closes a transaction.
        assert_eq!(control_marker(&batch), None);
        // The key clients read: 4 bytes, version 0, type LEADER_CHANGE.
        let key = 0i16
            .to_be_bytes()
            .into_iter()
            .chain(CONTROL_TYPE_LEADER_CHANGE.to_be_bytes())
            .collect::<Vec<u8>>();
        assert!(batch.windows(4).any(|w| w == key.as_slice()));
    }

    #[test]
    fn control_batches_round_trip() {
        for marker in [Marker::Abort, Marker::Commit] {
            let batch = control_batch(7, 3, marker, 0, 1_000);
            let info = parse_batch(&batch).unwrap();
            assert!(info.is_control() && info.is_transactional());
            assert_eq!((info.producer_id, info.producer_epoch), (7, 3));
            assert_eq!((info.record_count, info.last_offset_delta), (1, 0));
            assert_eq!(control_marker(&batch), Some(marker));
        }
        assert_eq!(control_marker(&simple_batch(1, 10)), None);
    }

    #[test]
    fn iter_batches_stops_at_garbage() {
        let a = simple_batch(2, 10);
        let b = simple_batch(3, 20);
        let mut region = a.clone();
        region.extend_from_slice(&b);
        let clean: Vec<_> = iter_batches(&region).collect::<Result<_, _>>().unwrap();
        assert_eq!(clean.len(), 2);
        assert_eq!(clean[1].0, a.len());

        region.extend_from_slice(&[0u8; 4096 - 7]);
        let mut iter = iter_batches(&region);
        assert!(iter.next().unwrap().is_ok());
        assert!(iter.next().unwrap().is_ok());
        assert!(iter.next().unwrap().is_err());
        assert_eq!(iter.position(), a.len() + b.len());
        assert!(iter.next().is_none());

        let mut torn = a.clone();
        torn.extend_from_slice(&b[..b.len() / 2]);
        let results: Vec<_> = iter_batches(&torn).collect();
        assert_eq!(results.len(), 2);
        assert!(matches!(results[1], Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn record_timestamps_decode_framing() {
        let batch = TestBatch {
            base_timestamp: 1000,
            records: vec![
                TestRecord {
                    timestamp_delta: 0,
                    ..TestRecord::value(b"x")
                },
                TestRecord {
                    timestamp_delta: 300,
                    key: Some(vec![1; 200]),
                    headers: vec![(b"key".to_vec(), Some(vec![2; 150]))],
                    ..TestRecord::value(&[3; 1000])
                },
                TestRecord {
                    timestamp_delta: 70_000_000_000,
                    ..TestRecord::value(b"")
                },
            ],
            ..Default::default()
        }
        .encode();
        assert_eq!(
            record_timestamps(&batch).unwrap(),
            vec![(0, 1000), (1, 1300), (2, 1000 + 70_000_000_000)]
        );

        let compressed = TestBatch {
            attributes: 1,
            ..Default::default()
        }
        .encode();
        assert!(record_timestamps(&compressed).is_none());

        // A record length pointing past the batch end is malformed.
        let mut broken = simple_batch(2, 5);
        broken[BATCH_HEADER_LEN] = 0x7e;
        fix_crc(&mut broken);
        assert!(record_timestamps(&broken).is_none());
    }
}
