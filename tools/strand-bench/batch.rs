//! Record batches as the load generator builds and reads them.
//!
//! A producer appends records to an open [`BatchBuilder`] as the schedule makes them due
//! and seals it into one magic-2 batch (optionally compressed with Kafka's own framings)
//! when it is full or has lingered long enough; the encoding, compression and record
//! decoding are the broker library's own (`strand::protocol::records`), so this file only
//! adds what is particular to the load generator.
//! Every value starts with an 8-byte stamp: the nanoseconds from the run's start at which
//! the message was *meant* to be sent, so a consumer in the same process can measure
//! end-to-end latency from the intended send time. Reading is the mirror: walk the
//! fetched batches (validated by the broker library's own batch parser), count records at
//! or after the fetch position, and, when latency is wanted, pull each record's stamp.

use std::borrow::Cow;

use bytes::Bytes;
use strand::protocol::batch::{iter_batches, BatchError, BatchInfo, BATCH_HEADER_LEN};
pub use strand::protocol::records::ProducerFields;
use strand::protocol::records::{self, Record, DECOMPRESSED_BYTES_MAX};

/// Bytes at the start of every value that carry the intended send time (u64, little endian).
pub const STAMP_BYTES: usize = 8;

/// Compression codec of produced batches (the codec numbers of the batch attributes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn id(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

/// Value bytes after the stamp: a fixed pseudo-random lowercase text, so compressed
/// workloads compress like text does rather than like a run of one byte.
pub fn filler(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect()
}

/// Records of one batch being filled: the library's builder, fed stamped values.
pub struct BatchBuilder {
    inner: records::BatchBuilder,
    base_timestamp_ms: i64,
    value: Vec<u8>,
}

impl BatchBuilder {
    pub fn new(base_timestamp_ms: i64, capacity_bytes: usize) -> BatchBuilder {
        BatchBuilder {
            inner: records::BatchBuilder::new(base_timestamp_ms, capacity_bytes),
            base_timestamp_ms,
            value: Vec::new(),
        }
    }

    pub fn count(&self) -> i32 {
        self.inner.count()
    }

    /// Uncompressed record bytes so far.
    pub fn records_bytes(&self) -> usize {
        self.inner.records_bytes()
    }

    /// Bytes one record with a value of `value_len` takes (for deciding when a batch is full).
    pub fn record_bytes(value_len: usize, offset_delta: i32) -> usize {
        records::record_len(0, offset_delta, None, Some(value_len))
    }

    /// Appends a record with no key and no headers whose value is `stamp_ns` followed by
    /// `filler` (the value is `STAMP_BYTES + filler.len()` long).
    pub fn push(&mut self, stamp_ns: u64, filler: &[u8], timestamp_ms: i64) {
        let delta_ms = (timestamp_ms - self.base_timestamp_ms).max(0);
        self.value.clear();
        self.value.extend_from_slice(&stamp_ns.to_le_bytes());
        self.value.extend_from_slice(filler);
        self.inner
            .push(delta_ms, None, Some(&self.value), Vec::new());
    }

    /// Seals the batch: the 61-byte header, the (compressed) records, the CRC32C.
    pub fn finish(self, codec: Codec, producer: ProducerFields) -> Bytes {
        assert!(self.count() > 0, "sealing an empty batch");
        let batch = self
            .inner
            .finish(0, i16::from(codec.id()), producer)
            .expect("compressing into memory cannot fail");
        Bytes::from(batch)
    }
}

/// What a fetched records blob held from the fetch position on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Records at or after the fetch position.
    pub records: u64,
    /// Bytes of the batches that held them (as fetched, compressed or not).
    pub bytes: u64,
    /// Offset after the last whole batch, if there was one.
    pub next_offset: Option<i64>,
}

/// Why a fetched blob could not be read.
#[derive(Debug)]
pub enum ReadError {
    Batch(BatchError),
    Codec(u8, String),
    Record(&'static str),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Batch(err) => write!(f, "bad batch: {err}"),
            ReadError::Codec(codec, why) => write!(f, "cannot decompress codec {codec}: {why}"),
            ReadError::Record(why) => write!(f, "bad record: {why}"),
        }
    }
}

/// Walks the whole batches of `blob` (a partial batch at the end is a fetch cut short, not
/// an error), counting records at or after `position`. With `stamps`, every such record's
/// stamp is passed to it.
pub fn read_fetched(
    blob: &[u8],
    position: i64,
    mut stamps: Option<&mut dyn FnMut(u64)>,
) -> Result<Fetched, ReadError> {
    let mut out = Fetched::default();
    let mut iter = iter_batches(blob);
    for item in iter.by_ref() {
        let (at, info) = match item {
            Ok(batch) => batch,
            Err(BatchError::Truncated { .. }) => break,
            Err(err) => return Err(ReadError::Batch(err)),
        };
        if info.is_control() {
            out.next_offset = Some(info.last_offset() + 1);
            continue;
        }
        let batch = &blob[at..at + info.len];
        let skip = (position - info.base_offset).max(0);
        let taken = i64::from(info.record_count) - skip;
        if taken > 0 {
            out.records += taken as u64;
            out.bytes += info.len as u64;
            if let Some(f) = stamps.as_deref_mut() {
                for_each_stamp(batch, &info, skip, f)?;
            }
        }
        out.next_offset = Some(info.last_offset() + 1);
    }
    Ok(out)
}

/// Calls `f` with the stamp of each record of `batch` from index `skip` on.
fn for_each_stamp(
    batch: &[u8],
    info: &BatchInfo,
    skip: i64,
    f: &mut dyn FnMut(u64),
) -> Result<(), ReadError> {
    let body = &batch[BATCH_HEADER_LEN..info.len];
    let codec = info.compression();
    let records: Cow<'_, [u8]> = if codec == 0 {
        Cow::Borrowed(body)
    } else {
        records::decompress(codec, body, DECOMPRESSED_BYTES_MAX)
            .map_err(|e| ReadError::Codec(codec, e.to_string()))?
            .into()
    };
    let mut at = 0;
    for index in 0..i64::from(info.record_count) {
        let record =
            Record::read(&records[..], &mut at).ok_or(ReadError::Record("malformed record"))?;
        if index >= skip {
            if let Some(stamp) = record.value.and_then(|v| v.get(..STAMP_BYTES)) {
                f(u64::from_le_bytes(stamp.try_into().expect("8 bytes")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strand::protocol::batch::{parse_batch, patch_base_offset, validate_produce_records};

    fn build(count: u64, filler_len: usize, codec: Codec, producer: ProducerFields) -> Bytes {
        let fill = filler(filler_len);
        let mut builder = BatchBuilder::new(1_700_000_000_000, 4096);
        for i in 0..count {
            builder.push(1000 + i, &fill, 1_700_000_000_000 + i as i64);
        }
        builder.finish(codec, producer)
    }

    #[test]
    fn batches_pass_the_broker_validator_with_every_codec() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let producer = ProducerFields {
                producer_id: 7,
                producer_epoch: 0,
                base_sequence: 40,
            };
            let batch = build(50, 92, codec, producer);
            let info = validate_produce_records(&batch, 1 << 20)
                .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
            assert_eq!(info.record_count, 50);
            assert_eq!(info.compression(), codec.id());
            assert_eq!(info.producer_id, 7);
            assert_eq!(info.base_sequence, 40);
            assert_eq!(info.last_sequence(), 89);
            assert_eq!(info.max_timestamp, info.base_timestamp + 49);

            let mut stamps = Vec::new();
            let fetched = read_fetched(&batch, 0, Some(&mut |s| stamps.push(s))).unwrap();
            assert_eq!(fetched.records, 50, "{codec:?}");
            assert_eq!(fetched.next_offset, Some(50));
            assert_eq!(stamps, (1000..1050).collect::<Vec<_>>(), "{codec:?}");
        }
    }

    #[test]
    fn record_size_estimate_is_exact() {
        let fill = filler(92);
        let mut builder = BatchBuilder::new(0, 0);
        let mut expected = 0;
        for i in 0..300 {
            expected += BatchBuilder::record_bytes(STAMP_BYTES + fill.len(), i);
            builder.push(0, &fill, 0);
            assert_eq!(builder.records_bytes(), expected);
        }
        let batch = builder.finish(Codec::None, ProducerFields::NONE);
        assert_eq!(batch.len(), BATCH_HEADER_LEN + expected);
    }

    #[test]
    fn reading_skips_records_before_the_position_and_stops_at_a_cut() {
        let mut first = build(10, 8, Codec::None, ProducerFields::NONE).to_vec();
        patch_base_offset(&mut first, 100);
        let mut second = build(5, 8, Codec::Lz4, ProducerFields::NONE).to_vec();
        patch_base_offset(&mut second, 110);
        let mut blob = first.to_vec();
        blob.extend_from_slice(&second);
        let whole = blob.len();
        blob.extend_from_slice(&second[..30]); // a batch cut short by max_bytes

        let mut stamps = Vec::new();
        let fetched = read_fetched(&blob, 104, Some(&mut |s| stamps.push(s))).unwrap();
        assert_eq!(fetched.records, 6 + 5);
        assert_eq!(fetched.bytes as usize, whole);
        assert_eq!(fetched.next_offset, Some(115));
        assert_eq!(stamps.len(), 11);
        assert_eq!(stamps[0], 1004);

        let counted = read_fetched(&blob, 0, None).unwrap();
        assert_eq!(counted.records, 15);
        assert!(parse_batch(&blob).is_ok());

        let mut corrupt = blob.clone();
        corrupt[70] ^= 1;
        assert!(matches!(
            read_fetched(&corrupt, 0, None),
            Err(ReadError::Batch(BatchError::BadCrc { .. }))
        ));
        assert_eq!(read_fetched(&[], 0, None).unwrap(), Fetched::default());
    }
}
