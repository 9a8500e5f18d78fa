//! The record level of Kafka's magic-2 format, in one place: zigzag varints, the record
//! framing (length, attributes, timestamp and offset deltas, key, value, headers), the
//! compression codecs with Kafka's framings, and a batch builder.
//!
//! [`batch`](super::batch) validates and patches batch headers without looking at
//! records; whatever has to read or write the records themselves goes through here: the
//! broker for control batches, ListOffsets by timestamp and log compaction (which must
//! bound decompressed size against hostile batches: [`decompress`] never yields more than
//! the limit it is given, [`DECOMPRESSED_BYTES_MAX`] on the broker's paths); the unit and
//! integration tests, the benches and strand-bench to build batches and read them back.
//!
//! The builder ([`BatchBuilder`], [`encode_batch`]) is compiled in every build rather than
//! behind a feature: strand-bench is a binary of this package whose normal release build
//! needs it, and a feature required by a binary would have to be named on every build of
//! that binary; the broker itself writes its control batches with [`encode_batch`], so
//! the builder adds no code the broker does not already carry.

use std::io::{self, Read, Write};

use crate::protocol::batch::{BATCH_HEADER_LEN, BATCH_LENGTH_PREFIX_LEN, CRC_START, MAGIC_V2};

/// Largest decompressed size of one batch's records the broker accepts.
pub const DECOMPRESSED_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The bits of a batch's attributes that name its compression codec.
pub const CODEC_MASK: i16 = 0x07;
/// Start of a snappy records area in xerial framing (what the Java client writes).
pub const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

// ---------------------------------------------------------------------------------------
// Varints

/// Zigzag encoding: small magnitudes, negative or not, become small unsigned numbers.
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Bytes the zigzag varint of `value` takes.
pub fn varint_len(value: i64) -> usize {
    let mut raw = zigzag(value);
    let mut len = 1;
    while raw >= 0x80 {
        raw >>= 7;
        len += 1;
    }
    len
}

/// Appends the zigzag varint of `value`.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = zigzag(value);
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Reads an unsigned base-128 varint of at most `bytes_max` bytes at `*at`, advancing it.
pub fn unsigned_varint(buf: &[u8], at: &mut usize, bytes_max: usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..bytes_max {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads a zigzag varint that must fit an `i32` (at most 5 bytes).
pub fn varint(buf: &[u8], at: &mut usize) -> Option<i32> {
    let raw = u32::try_from(unsigned_varint(buf, at, 5)?).ok()?;
    Some(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Reads a zigzag varlong (at most 10 bytes).
pub fn varlong(buf: &[u8], at: &mut usize) -> Option<i64> {
    let raw = unsigned_varint(buf, at, 10)?;
    Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// Reads a varint length and the bytes it counts; a negative length is null.
fn nullable_bytes<'a>(buf: &'a [u8], at: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = varint(buf, at)?;
    if len < 0 {
        return Some(None);
    }
    let end = at.checked_add(len as usize)?;
    let bytes = buf.get(*at..end)?;
    *at = end;
    Some(Some(bytes))
}

fn put_nullable_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    nullable_len_of(bytes.map(<[u8]>::len))
}

fn nullable_len_of(len: Option<usize>) -> usize {
    len.map_or(varint_len(-1), |len| varint_len(len as i64) + len)
}

fn body_len_without_headers(
    timestamp_delta: i64,
    offset_delta: i32,
    key_len: Option<usize>,
    value_len: Option<usize>,
) -> usize {
    1 + varint_len(timestamp_delta)
        + varint_len(i64::from(offset_delta))
        + nullable_len_of(key_len)
        + nullable_len_of(value_len)
}

/// Bytes a record without headers takes, length prefix included, from the sizes of its
/// key and value (`None`: null), without building it.
pub fn record_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key_len: Option<usize>,
    value_len: Option<usize>,
) -> usize {
    let body =
        body_len_without_headers(timestamp_delta, offset_delta, key_len, value_len) + varint_len(0);
    varint_len(body as i64) + body
}

// ---------------------------------------------------------------------------------------
// Records

/// A record header: key and nullable value.
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// One record of a batch, borrowing its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<Header<'a>>,
}

impl<'a> Record<'a> {
    /// Bytes of the record after its length prefix.
    pub fn body_len(&self) -> usize {
        body_len_without_headers(
            self.timestamp_delta,
            self.offset_delta,
            self.key.map(<[u8]>::len),
            self.value.map(<[u8]>::len),
        ) + varint_len(self.headers.len() as i64)
            + self
                .headers
                .iter()
                .map(|(key, value)| nullable_len(Some(key)) + nullable_len(*value))
                .sum::<usize>()
    }

    /// Bytes of the whole record, length prefix included.
    pub fn encoded_len(&self) -> usize {
        let body = self.body_len();
        varint_len(body as i64) + body
    }

    /// Appends the record, length prefix included (attributes are always 0).
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.body_len() as i64);
        out.push(0); // attributes
        put_varint(out, self.timestamp_delta);
        put_varint(out, i64::from(self.offset_delta));
        put_nullable_bytes(out, self.key);
        put_nullable_bytes(out, self.value);
        put_varint(out, self.headers.len() as i64);
        for (key, value) in &self.headers {
            put_nullable_bytes(out, Some(key));
            put_nullable_bytes(out, *value);
        }
    }

    /// Reads the record at `*at` of a records area and moves past it; `None` if its
    /// framing is malformed or it runs past the end of `area`.
    pub fn read(area: &'a [u8], at: &mut usize) -> Option<Record<'a>> {
        let len = usize::try_from(varint(area, at)?).ok()?;
        let end = at.checked_add(len)?;
        let body = area.get(..end)?;
        let mut r = *at + 1; // attributes
        let timestamp_delta = varlong(body, &mut r)?;
        let offset_delta = varint(body, &mut r)?;
        let key = nullable_bytes(body, &mut r)?;
        let value = nullable_bytes(body, &mut r)?;
        let count = varint(body, &mut r)?;
        // A header takes at least 2 bytes, so the count cannot inflate the allocation.
        let mut headers = Vec::with_capacity((count.max(0) as usize).min(len / 2));
        for _ in 0..count {
            let header_key = nullable_bytes(body, &mut r)??;
            headers.push((header_key, nullable_bytes(body, &mut r)?));
        }
        if r != end {
            return None;
        }
        *at = end;
        Some(Record {
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        })
    }
}

/// The `count` records of an (uncompressed) records area; `None` if the framing is
/// malformed or bytes are left over.
pub fn read_records(area: &[u8], count: i32) -> Option<Vec<Record<'_>>> {
    let count = usize::try_from(count).ok()?;
    // Every record takes at least 7 bytes, so the count cannot inflate the allocation.
    let mut out = Vec::with_capacity(count.min(area.len() / 7 + 1));
    let mut at = 0;
    for _ in 0..count {
        out.push(Record::read(area, &mut at)?);
    }
    (at == area.len()).then_some(out)
}

// ---------------------------------------------------------------------------------------
// Compression

/// Decompresses a batch's records (codec 1 gzip, 2 snappy raw or xerial-framed, 3 lz4
/// frame, 4 zstd), refusing more than `limit` bytes of output.
pub fn decompress(codec: u8, data: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    fn read_limited(reader: impl Read, limit: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        reader.take(limit as u64 + 1).read_to_end(&mut out)?;
        if out.len() > limit {
            return Err(invalid(format!("decompresses to more than {limit} bytes")));
        }
        Ok(out)
    }
    match codec {
        0 => Ok(data.to_vec()),
        1 => read_limited(flate2::read::MultiGzDecoder::new(data), limit),
        2 if data.starts_with(XERIAL_MAGIC) => {
            let mut out = Vec::new();
            let mut at = XERIAL_HEADER_LEN.min(data.len());
            while at < data.len() {
                let len_bytes = data
                    .get(at..at + 4)
                    .ok_or_else(|| invalid("truncated snappy block length"))?;
                let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
                at += 4;
                let block = data
                    .get(at..at + len)
                    .ok_or_else(|| invalid("truncated snappy block"))?;
                at += len;
                let size = snap::raw::decompress_len(block).map_err(|e| invalid(e.to_string()))?;
                if out.len() + size > limit {
                    return Err(invalid(format!("decompresses to more than {limit} bytes")));
                }
                let start = out.len();
                out.resize(start + size, 0);
                snap::raw::Decoder::new()
                    .decompress(block, &mut out[start..])
                    .map_err(|e| invalid(e.to_string()))?;
            }
            Ok(out)
        }
        2 => {
            let size = snap::raw::decompress_len(data).map_err(|e| invalid(e.to_string()))?;
            if size > limit {
                return Err(invalid(format!("decompresses to more than {limit} bytes")));
            }
            snap::raw::Decoder::new()
                .decompress_vec(data)
                .map_err(|e| invalid(e.to_string()))
        }
        3 => read_limited(lz4_flex::frame::FrameDecoder::new(data), limit),
        4 => read_limited(zstd::stream::read::Decoder::new(data)?, limit),
        other => Err(invalid(format!("unknown compression codec {other}"))),
    }
}

/// Compresses records with a batch's codec; snappy in xerial framing when `xerial` (what
/// the Java client writes), raw otherwise.
pub fn compress(codec: u8, xerial: bool, data: &[u8]) -> io::Result<Vec<u8>> {
    match codec {
        0 => Ok(data.to_vec()),
        1 => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data)?;
            encoder.finish()
        }
        2 if xerial => {
            let mut out = Vec::with_capacity(data.len() / 2 + XERIAL_HEADER_LEN);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1u32.to_be_bytes()); // version
            out.extend_from_slice(&1u32.to_be_bytes()); // minimum compatible version
            let mut encoder = snap::raw::Encoder::new();
            for block in data.chunks(XERIAL_BLOCK_BYTES) {
                let compressed = encoder
                    .compress_vec(block)
                    .map_err(|e| invalid(e.to_string()))?;
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        2 => snap::raw::Encoder::new()
            .compress_vec(data)
            .map_err(|e| invalid(e.to_string())),
        3 => {
            let mut info = lz4_flex::frame::FrameInfo::new();
            info.block_mode = lz4_flex::frame::BlockMode::Independent;
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(data)?;
            encoder.finish().map_err(|e| invalid(e.to_string()))
        }
        4 => zstd::bulk::compress(data, 3),
        other => Err(invalid(format!("unknown compression codec {other}"))),
    }
}

// ---------------------------------------------------------------------------------------
// Batches

/// The idempotence fields of a batch; [`ProducerFields::NONE`] for a plain producer.
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

/// Every header field of a batch but the length and the CRC, which [`encode_batch`]
/// computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchFields {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    /// Codec (low 3 bits), timestamp type, transactional and control flags.
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer: ProducerFields,
    pub record_count: i32,
}

impl Default for BatchFields {
    fn default() -> Self {
        BatchFields {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: 0,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer: ProducerFields::NONE,
            record_count: 0,
        }
    }
}

/// A whole magic-2 batch: the header from `fields`, then `records_area` as it is (already
/// compressed if the attributes say so), with the batch length and CRC32C filled in.
pub fn encode_batch(fields: &BatchFields, records_area: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records_area.len());
    let batch_length = (BATCH_HEADER_LEN - BATCH_LENGTH_PREFIX_LEN + records_area.len()) as i32;
    out.extend_from_slice(&fields.base_offset.to_be_bytes());
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&fields.partition_leader_epoch.to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&fields.attributes.to_be_bytes());
    out.extend_from_slice(&fields.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&fields.base_timestamp.to_be_bytes());
    out.extend_from_slice(&fields.max_timestamp.to_be_bytes());
    out.extend_from_slice(&fields.producer.producer_id.to_be_bytes());
    out.extend_from_slice(&fields.producer.producer_epoch.to_be_bytes());
    out.extend_from_slice(&fields.producer.base_sequence.to_be_bytes());
    out.extend_from_slice(&fields.record_count.to_be_bytes());
    out.extend_from_slice(records_area);
    fix_crc(&mut out);
    out
}

/// Recomputes the CRC32C of the batch that fills `batch` (after its covered bytes change).
pub fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Records of one batch being filled: each pushed record takes the next offset delta, and
/// the batch's timestamps follow from the deltas pushed.
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    records: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp_delta: Option<i64>,
}

impl BatchBuilder {
    pub fn new(base_timestamp: i64, capacity_bytes: usize) -> BatchBuilder {
        BatchBuilder {
            records: Vec::with_capacity(capacity_bytes),
            count: 0,
            base_timestamp,
            max_timestamp_delta: None,
        }
    }

    /// Records pushed so far (also the offset delta of the next one).
    pub fn count(&self) -> i32 {
        self.count
    }

    /// Uncompressed record bytes so far.
    pub fn records_bytes(&self) -> usize {
        self.records.len()
    }

    /// Appends a record at the next offset delta.
    pub fn push(
        &mut self,
        timestamp_delta: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Vec<Header<'_>>,
    ) {
        Record {
            timestamp_delta,
            offset_delta: self.count,
            key,
            value,
            headers,
        }
        .encode(&mut self.records);
        self.max_timestamp_delta = Some(
            self.max_timestamp_delta
                .map_or(timestamp_delta, |max| max.max(timestamp_delta)),
        );
        self.count += 1;
    }

    /// Seals the batch, compressing the records with the codec in `attributes` (snappy in
    /// xerial framing, as the Java client writes it).
    pub fn finish(
        self,
        base_offset: i64,
        attributes: i16,
        producer: ProducerFields,
    ) -> io::Result<Vec<u8>> {
        let codec = (attributes & CODEC_MASK) as u8;
        let area = compress(codec, true, &self.records)?;
        Ok(encode_batch(
            &self.fields(base_offset, attributes, producer),
            &area,
        ))
    }

    /// Seals the batch with the records as they are, whatever codec `attributes` name (for
    /// tests that need a batch whose attributes lie).
    pub fn finish_uncompressed(
        self,
        base_offset: i64,
        attributes: i16,
        producer: ProducerFields,
    ) -> Vec<u8> {
        encode_batch(
            &self.fields(base_offset, attributes, producer),
            &self.records,
        )
    }

    fn fields(&self, base_offset: i64, attributes: i16, producer: ProducerFields) -> BatchFields {
        BatchFields {
            base_offset,
            partition_leader_epoch: -1,
            attributes,
            last_offset_delta: self.count - 1,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.base_timestamp + self.max_timestamp_delta.unwrap_or(0),
            producer,
            record_count: self.count,
        }
    }
}

/// An uncompressed batch of `records`, each a record whose value is its JSON and whose key
/// is `key` of it: how Strand's internal logs (the metadata log, the offsets topic) store
/// their records, as KRaft and Kafka's coordinators do.
pub fn encode_json_batch<T: serde::Serialize>(
    records: &[T],
    key: impl Fn(&T) -> Option<&[u8]>,
    now_ms: i64,
) -> Vec<u8> {
    let mut builder = BatchBuilder::new(now_ms, 256);
    for record in records {
        let value = serde_json::to_vec(record).expect("internal records serialize");
        builder.push(0, key(record), Some(&value), Vec::new());
    }
    builder
        .finish(0, 0, ProducerFields::NONE)
        .expect("an uncompressed batch")
}

/// The records of a batch [`encode_json_batch`] wrote (`what` names the log in errors); a
/// control batch (a new leader's first entry) holds none.
pub fn decode_json_batch<T: serde::de::DeserializeOwned>(
    batch: &[u8],
    what: &str,
) -> io::Result<Vec<T>> {
    use crate::protocol::batch::parse_batch;
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let info = parse_batch(batch).map_err(|e| bad(format!("{what} batch: {e:?}")))?;
    if info.is_control() {
        return Ok(Vec::new());
    }
    if info.compression() != 0 {
        return Err(bad(format!(
            "{what} batch at {} is compressed",
            info.base_offset
        )));
    }
    let area = &batch[BATCH_HEADER_LEN..info.len];
    let records = read_records(area, info.record_count)
        .ok_or_else(|| bad(format!("{what} batch at {}: bad records", info.base_offset)))?;
    records
        .iter()
        .map(|r| {
            serde_json::from_slice(r.value.unwrap_or_default())
                .map_err(|e| bad(format!("{what} record at {}: {e}", info.base_offset)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{parse_batch, validate_produce_records};

    #[test]
    fn varints_round_trip_at_their_edges() {
        for value in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            let mut at = 0;
            assert_eq!(varint(&out, &mut at), Some(value as i32));
            assert_eq!(at, out.len());
            let mut at = 0;
            assert_eq!(varlong(&out, &mut at), Some(value));
        }
        for value in [i64::MAX, i64::MIN, 70_000_000_000] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut at = 0;
            assert_eq!(varlong(&out, &mut at), Some(value));
            let mut at = 0;
            assert_eq!(varint(&out, &mut at), None, "{value} is not an i32");
        }
        // Unterminated, or longer than its type allows.
        assert_eq!(varint(&[0x80, 0x80], &mut 0), None);
        assert_eq!(varint(&[0x80; 6], &mut 0), None);
        assert_eq!(varlong(&[0x80; 11], &mut 0), None);
    }

    #[test]
    fn records_round_trip() {
        let records = vec![
            Record {
                timestamp_delta: 0,
                offset_delta: 0,
                key: Some(b"k"),
                value: Some(b"v"),
                headers: vec![(b"h", Some(b"x")), (b"n", None)],
            },
            Record {
                timestamp_delta: -5,
                offset_delta: 1,
                key: None,
                value: None,
                headers: vec![],
            },
            Record {
                timestamp_delta: 70_000_000_000,
                offset_delta: 2,
                key: Some(&[7; 300]),
                value: Some(b""),
                headers: vec![],
            },
        ];
        let mut area = Vec::new();
        for record in &records {
            let before = area.len();
            record.encode(&mut area);
            assert_eq!(area.len() - before, record.encoded_len());
        }
        assert_eq!(read_records(&area, 3).unwrap(), records);
        assert!(read_records(&area, 2).is_none(), "bytes left over");
        assert!(read_records(&area, 4).is_none(), "too few records");
        assert!(read_records(&area[..area.len() - 1], 3).is_none());
    }

    #[test]
    fn every_codec_round_trips_within_its_bound() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for codec in 0..=4u8 {
            for xerial in [false, true] {
                let packed = compress(codec, xerial, &data).unwrap();
                assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data);
                if codec != 0 {
                    assert!(decompress(codec, &packed, data.len() - 1).is_err());
                }
            }
        }
        assert!(compress(5, false, &data).is_err());
        assert!(decompress(5, &data, usize::MAX).is_err());
    }

    #[test]
    fn built_batches_pass_the_validator() {
        for codec in 0..=4i16 {
            let mut builder = BatchBuilder::new(1_000, 0);
            builder.push(0, Some(b"a"), Some(b"1"), vec![]);
            builder.push(9, None, Some(b"2"), vec![(b"h", None)]);
            builder.push(3, Some(b"c"), None, vec![]);
            let producer = ProducerFields {
                producer_id: 4,
                producer_epoch: 1,
                base_sequence: 10,
            };
            let batch = builder.finish(0, codec, producer).unwrap();
            let info = validate_produce_records(&batch, 1 << 20).unwrap();
            assert_eq!(info.compression(), codec as u8);
            assert_eq!((info.record_count, info.last_offset_delta), (3, 2));
            assert_eq!((info.base_timestamp, info.max_timestamp), (1_000, 1_009));
            assert_eq!((info.producer_id, info.last_sequence()), (4, 12));
            let area = decompress(codec as u8, &batch[BATCH_HEADER_LEN..], 1 << 20).unwrap();
            let records = read_records(&area, 3).unwrap();
            assert_eq!(records[1].value, Some(&b"2"[..]));
            assert_eq!(records[2].offset_delta, 2);
        }
        let lying = BatchBuilder::new(0, 0).finish_uncompressed(5, 1, ProducerFields::NONE);
        assert_eq!(
            parse_batch(&lying).unwrap_err(),
            crate::protocol::batch::BatchError::Empty
        );
    }
}
