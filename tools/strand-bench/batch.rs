//! Record batches as the load generator builds and reads them.
//!
//! A producer appends records to an open [`BatchBuilder`] as the schedule makes them due
//! and seals it into one magic-2 batch (optionally compressed with Kafka's own framings,
//! through the `kafka-protocol` codecs) when it is full or has lingered long enough.
//! Every value starts with an 8-byte stamp: the nanoseconds from the run's start at which
//! the message was *meant* to be sent, so a consumer in the same process can measure
//! end-to-end latency from the intended send time. Reading is the mirror: walk the
//! fetched batches (validated by the broker library's own batch parser), count records at
//! or after the fetch position, and, when latency is wanted, pull each record's stamp.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
use strand::protocol::batch::{
    iter_batches, BatchError, BatchInfo, BATCH_HEADER_LEN, BATCH_LENGTH_PREFIX_LEN, CRC_START,
    MAGIC_V2,
};

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

    pub fn from_id(id: u8) -> Option<Codec> {
        Some(match id {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            _ => return None,
        })
    }
}

/// The idempotence fields of a batch; `NONE` for a plain producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerFields {
    pub const NONE: ProducerFields = ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
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

/// Records of one batch being filled.
pub struct BatchBuilder {
    records: BytesMut,
    count: i32,
    base_timestamp_ms: i64,
    max_timestamp_delta_ms: i64,
}

impl BatchBuilder {
    pub fn new(base_timestamp_ms: i64, capacity_bytes: usize) -> BatchBuilder {
        BatchBuilder {
            records: BytesMut::with_capacity(capacity_bytes),
            count: 0,
            base_timestamp_ms,
            max_timestamp_delta_ms: 0,
        }
    }

    pub fn count(&self) -> i32 {
        self.count
    }

    /// Uncompressed record bytes so far.
    pub fn records_bytes(&self) -> usize {
        self.records.len()
    }

    /// Bytes one record with a value of `value_len` takes (for deciding when a batch is full).
    pub fn record_bytes(value_len: usize, offset_delta: i32) -> usize {
        let body = record_body_len(value_len, offset_delta, 0);
        varint_len(zigzag(body as i64)) + body
    }

    /// Appends a record with no key and no headers whose value is `stamp_ns` followed by
    /// `filler` (the value is `STAMP_BYTES + filler.len()` long).
    pub fn push(&mut self, stamp_ns: u64, filler: &[u8], timestamp_ms: i64) {
        let delta_ms = (timestamp_ms - self.base_timestamp_ms).max(0);
        self.max_timestamp_delta_ms = self.max_timestamp_delta_ms.max(delta_ms);
        let value_len = STAMP_BYTES + filler.len();
        let body = record_body_len(value_len, self.count, delta_ms);
        let out = &mut self.records;
        put_varint(out, body as i64);
        out.put_u8(0); // attributes
        put_varint(out, delta_ms);
        put_varint(out, i64::from(self.count));
        put_varint(out, -1); // null key
        put_varint(out, value_len as i64);
        out.put_u64_le(stamp_ns);
        out.put_slice(filler);
        put_varint(out, 0); // no headers
        self.count += 1;
    }

    /// Seals the batch: the 61-byte header, the (compressed) records, the CRC32C.
    pub fn finish(self, codec: Codec, producer: ProducerFields) -> Bytes {
        assert!(self.count > 0, "sealing an empty batch");
        let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + self.records.len() + 64);
        out.put_i64(0); // base offset: the broker assigns it
        out.put_i32(0); // batch length, patched below
        out.put_i32(-1); // partition leader epoch
        out.put_i8(MAGIC_V2);
        out.put_u32(0); // crc, patched below
        out.put_i16(i16::from(codec.id()));
        out.put_i32(self.count - 1);
        out.put_i64(self.base_timestamp_ms);
        out.put_i64(self.base_timestamp_ms + self.max_timestamp_delta_ms);
        out.put_i64(producer.producer_id);
        out.put_i16(producer.producer_epoch);
        out.put_i32(producer.base_sequence);
        out.put_i32(self.count);
        let records = &self.records;
        let compressed = match codec {
            Codec::None => {
                out.put_slice(records);
                Ok(())
            }
            Codec::Gzip => Gzip::compress(&mut out, |buf| {
                buf.put_slice(records);
                Ok(())
            }),
            Codec::Snappy => Snappy::compress(&mut out, |buf| {
                buf.put_slice(records);
                Ok(())
            }),
            Codec::Lz4 => Lz4::compress(&mut out, |buf| {
                buf.put_slice(records);
                Ok(())
            }),
            Codec::Zstd => Zstd::compress(&mut out, |buf| {
                buf.put_slice(records);
                Ok(())
            }),
        };
        compressed.expect("compressing into memory cannot fail");
        let batch_length = (out.len() - BATCH_LENGTH_PREFIX_LEN) as i32;
        out[8..12].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out.freeze()
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
    let decoded: Bytes;
    let records: &[u8] = match Codec::from_id(codec) {
        Some(Codec::None) => body,
        Some(c) => {
            let mut input = Bytes::copy_from_slice(body);
            let result = match c {
                Codec::Gzip => Gzip::decompress(&mut input, |buf| Ok(buf.split_off(0))),
                Codec::Snappy => Snappy::decompress(&mut input, |buf| Ok(buf.split_off(0))),
                Codec::Lz4 => Lz4::decompress(&mut input, |buf| Ok(buf.split_off(0))),
                Codec::Zstd => Zstd::decompress(&mut input, |buf| Ok(buf.split_off(0))),
                Codec::None => unreachable!("handled above"),
            };
            decoded = result.map_err(|e| ReadError::Codec(codec, e.to_string()))?;
            &decoded
        }
        None => return Err(ReadError::Codec(codec, "unknown codec".into())),
    };
    let mut reader = Reader {
        buf: records,
        at: 0,
    };
    for index in 0..i64::from(info.record_count) {
        let len = reader.varint()?;
        let len = usize::try_from(len).map_err(|_| ReadError::Record("negative length"))?;
        let end = reader.at + len;
        if end > records.len() {
            return Err(ReadError::Record("record runs past the batch"));
        }
        if index >= skip {
            let mut record = Reader {
                buf: &records[..end],
                at: reader.at,
            };
            record.byte()?; // attributes
            record.varint()?; // timestamp delta
            record.varint()?; // offset delta
            let key_len = record.varint()?;
            if key_len > 0 {
                record.at += key_len as usize;
            }
            let value_len = record.varint()?;
            if value_len >= STAMP_BYTES as i64 && record.at + STAMP_BYTES <= end {
                let stamp = &record.buf[record.at..record.at + STAMP_BYTES];
                f(u64::from_le_bytes(stamp.try_into().expect("8 bytes")));
            }
        }
        reader.at = end;
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, ReadError> {
        let b = *self
            .buf
            .get(self.at)
            .ok_or(ReadError::Record("record truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<i64, ReadError> {
        let mut raw = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(ReadError::Record("varint too long"))
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn varint_len(mut raw: u64) -> usize {
    let mut len = 1;
    while raw >= 0x80 {
        raw >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut BytesMut, value: i64) {
    let mut raw = zigzag(value);
    while raw >= 0x80 {
        out.put_u8((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.put_u8(raw as u8);
}

/// Bytes of a record after its length prefix: attributes, timestamp delta, offset delta,
/// null key, value length and value, header count.
fn record_body_len(value_len: usize, offset_delta: i32, timestamp_delta_ms: i64) -> usize {
    1 + varint_len(zigzag(timestamp_delta_ms))
        + varint_len(zigzag(i64::from(offset_delta)))
        + 1
        + varint_len(zigzag(value_len as i64))
        + value_len
        + 1
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
        let mut first = BytesMut::from(&build(10, 8, Codec::None, ProducerFields::NONE)[..]);
        patch_base_offset(&mut first, 100);
        let mut second = BytesMut::from(&build(5, 8, Codec::Lz4, ProducerFields::NONE)[..]);
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
