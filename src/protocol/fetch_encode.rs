//! The Fetch response, encoded as pieces: the response and partition headers are encoded
//! here (field for field what `kafka-protocol` writes, checked against it byte for byte in
//! the tests), and each partition's record bytes are spliced in between as they lie, never
//! copied into the response.

use bytes::BufMut;
use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::pieces::{total_len, ChainWriter, Piece};

type Result<T> = std::result::Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `[size][header][FetchResponse]` at `version`, with `records[i]` as the record bytes of the
/// i-th partition in response order (topics, then their partitions). Each partition's
/// `records` field in `response` is ignored.
pub fn encode_fetch_response(
    correlation_id: i32,
    version: i16,
    response: &FetchResponse,
    records: &[Vec<Piece>],
) -> Result<Vec<Piece>> {
    if !(4..=18).contains(&version) {
        return Err(format!("Fetch v{version} is not supported"));
    }
    let flexible = version >= 12;
    let mut w = ChainWriter::new();
    let header_version = ApiKey::Fetch.response_header_version(version);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(w.buf(), header_version)
        .map_err(err)?;
    let buf = w.buf();
    buf.put_i32(response.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(response.error_code);
        buf.put_i32(response.session_id);
    } else if response.session_id != 0 {
        return Err("session_id is not available before Fetch v7".into());
    }
    array_len(buf, response.responses.len(), flexible)?;
    let mut next = records.iter();
    for topic in &response.responses {
        let buf = w.buf();
        if version <= 12 {
            string(buf, &topic.topic.0, flexible)?;
        }
        if version >= 13 {
            buf.put_slice(topic.topic_id.as_bytes());
        }
        array_len(buf, topic.partitions.len(), flexible)?;
        for partition in &topic.partitions {
            let buf = w.buf();
            buf.put_i32(partition.partition_index);
            buf.put_i16(partition.error_code);
            buf.put_i64(partition.high_watermark);
            buf.put_i64(partition.last_stable_offset);
            if version >= 5 {
                buf.put_i64(partition.log_start_offset);
            }
            nullable_array(buf, partition.aborted_transactions.as_deref(), version)?;
            if version >= 11 {
                buf.put_i32(partition.preferred_read_replica.0);
            } else if partition.preferred_read_replica.0 != -1 {
                return Err("preferred_read_replica is not available before Fetch v11".into());
            }
            let pieces = next.next().ok_or("fewer record lists than partitions")?;
            let len = total_len(pieces);
            if flexible {
                varint(buf, len + 1)?;
            } else {
                buf.put_i32(i32::try_from(len).map_err(err)?);
            }
            w.splice(pieces);
            if flexible {
                let buf = w.buf();
                if !partition.unknown_tagged_fields.is_empty() {
                    return Err("unknown tagged fields in a fetch partition".into());
                }
                let diverging = partition.diverging_epoch != Default::default();
                let leader = partition.current_leader != Default::default();
                let snapshot = partition.snapshot_id != Default::default();
                let count = u32::from(diverging) + u32::from(leader) + u32::from(snapshot);
                varint(buf, count as usize)?;
                if diverging {
                    tagged(buf, 0, &partition.diverging_epoch, version)?;
                }
                if leader {
                    tagged(buf, 1, &partition.current_leader, version)?;
                }
                if snapshot {
                    tagged(buf, 2, &partition.snapshot_id, version)?;
                }
            }
        }
        if flexible {
            if !topic.unknown_tagged_fields.is_empty() {
                return Err("unknown tagged fields in a fetch topic".into());
            }
            varint(w.buf(), 0)?;
        }
    }
    if next.next().is_some() {
        return Err("more record lists than partitions".into());
    }
    if flexible {
        let buf = w.buf();
        if !response.unknown_tagged_fields.is_empty() {
            return Err("unknown tagged fields in a fetch response".into());
        }
        let endpoints = version >= 16 && !response.node_endpoints.is_empty();
        varint(buf, usize::from(endpoints))?;
        if endpoints {
            let mut field = BytesMut::new();
            nullable_array(&mut field, Some(&response.node_endpoints), version)?;
            varint(buf, 0)?;
            varint(buf, field.len())?;
            buf.put_slice(&field);
        }
    }
    Ok(w.finish_frame())
}

fn varint(buf: &mut BytesMut, value: usize) -> Result<()> {
    let mut value = u32::try_from(value).map_err(err)?;
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
    Ok(())
}

fn array_len(buf: &mut BytesMut, len: usize, flexible: bool) -> Result<()> {
    if flexible {
        varint(buf, len + 1)
    } else {
        buf.put_i32(i32::try_from(len).map_err(err)?);
        Ok(())
    }
}

fn string(buf: &mut BytesMut, value: &StrBytes, flexible: bool) -> Result<()> {
    if flexible {
        varint(buf, value.len() + 1)?;
    } else {
        buf.put_i16(i16::try_from(value.len()).map_err(err)?);
    }
    buf.put_slice(value.as_bytes());
    Ok(())
}

/// A nullable array of structs (null is -1, or 0 in the compact form).
fn nullable_array<T: Encodable>(
    buf: &mut BytesMut,
    items: Option<&[T]>,
    version: i16,
) -> Result<()> {
    let flexible = version >= 12;
    match items {
        None if flexible => varint(buf, 0)?,
        None => buf.put_i32(-1),
        Some(items) => {
            array_len(buf, items.len(), flexible)?;
            for item in items {
                item.encode(buf, version).map_err(err)?;
            }
        }
    }
    Ok(())
}

fn tagged<T: Encodable>(buf: &mut BytesMut, tag: usize, field: &T, version: i16) -> Result<()> {
    let size = field.compute_size(version).map_err(err)?;
    varint(buf, tag)?;
    varint(buf, size)?;
    field.encode(buf, version).map_err(err)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
        PartitionData, SnapshotId,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::protocol::codec::encode_response;
    use crate::protocol::pieces::concat;

    /// A response with what a fetch can carry: errors, aborted lists, tagged fields, and
    /// records of every shape (none, empty, one small piece, several pieces of both kinds).
    fn response(version: i16, rich: bool) -> (FetchResponse, Vec<Vec<Piece>>) {
        let big = Bytes::from((0..3000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let shapes: Vec<Vec<Piece>> = vec![
            vec![],
            vec![Piece::from(Bytes::from_static(b"small batch"))],
            vec![
                Piece::from(Bytes::from_static(b"0123456789abcdef")),
                Piece::from(big.clone()),
                Piece::shared(Rc::new(big.to_vec())),
                Piece::from(big.slice(10..300)),
            ],
        ];
        let mut response = FetchResponse::default()
            .with_throttle_time_ms(7)
            .with_session_id(0);
        let mut records = Vec::new();
        for t in 0..3 {
            let mut topic = FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(format!("topic-{t}"))))
                .with_topic_id(uuid::Uuid::from_u128(t as u128 + 1));
            if version > 12 {
                topic.topic = TopicName::default();
            }
            if version < 13 {
                topic.topic_id = Default::default();
            }
            for p in 0..3 {
                let mut partition = PartitionData::default()
                    .with_partition_index(p)
                    .with_error_code(if p == 0 { 6 } else { 0 })
                    .with_high_watermark(1000 + i64::from(p))
                    .with_last_stable_offset(900)
                    .with_log_start_offset(if version >= 5 { 3 } else { -1 })
                    .with_aborted_transactions(match p {
                        0 => None,
                        1 => Some(vec![]),
                        _ => Some(vec![AbortedTransaction::default()
                            .with_producer_id(ProducerId(42))
                            .with_first_offset(17)]),
                    });
                if version >= 11 && rich {
                    partition.preferred_read_replica = BrokerId(2);
                }
                if version >= 12 && rich {
                    partition.current_leader = LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(3))
                        .with_leader_epoch(9);
                    if p == 2 {
                        partition.diverging_epoch =
                            EpochEndOffset::default().with_epoch(4).with_end_offset(55);
                        partition.snapshot_id =
                            SnapshotId::default().with_end_offset(5).with_epoch(1);
                    }
                }
                topic.partitions.push(partition);
                records.push(shapes[((t + p) % 3) as usize].clone());
            }
            response.responses.push(topic);
        }
        if version >= 16 && rich {
            response.node_endpoints = vec![NodeEndpoint::default()
                .with_node_id(BrokerId(3))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(9093)
                .with_rack(Some(StrBytes::from_static_str("r1")))];
        }
        (response, records)
    }

    #[test]
    fn matches_kafka_protocol_byte_for_byte_at_every_version() {
        for version in 4..=18 {
            for rich in [false, true] {
                let (mut response, records) = response(version, rich);
                let pieces = encode_fetch_response(99, version, &response, &records).unwrap();
                let mut at = 0;
                for topic in &mut response.responses {
                    for partition in &mut topic.partitions {
                        partition.records = Some(concat(&records[at]));
                        at += 1;
                    }
                }
                let expected = encode_response(99, ApiKey::Fetch, version, &response).unwrap();
                assert_eq!(
                    concat(&pieces),
                    expected,
                    "Fetch v{version} (rich: {rich}) differs"
                );
            }
        }
    }

    #[test]
    fn large_records_are_spliced_not_copied() {
        let (response, records) = response(16, true);
        let pieces = encode_fetch_response(1, 16, &response, &records).unwrap();
        let shared: Vec<*const u8> = records
            .iter()
            .flatten()
            .filter(|p| p.len() >= crate::protocol::pieces::SPLICE_BYTES_MIN)
            .map(|p| p.as_ptr())
            .collect();
        assert!(!shared.is_empty());
        for ptr in shared {
            assert!(
                pieces.iter().any(|p| p.as_ptr() == ptr),
                "a large piece was copied"
            );
        }
    }

    #[test]
    fn a_record_list_per_partition_is_required() {
        let (fewer, mut records) = response(12, false);
        records.pop();
        assert!(encode_fetch_response(1, 12, &fewer, &records).is_err());
        let (more, mut records) = response(12, false);
        records.push(vec![]);
        assert!(encode_fetch_response(1, 12, &more, &records).is_err());
    }
}
