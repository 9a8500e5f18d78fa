//! Request decode and response encode: a Produce request frame split into header and body
//! and decoded by `kafka-protocol` (records stay a `Bytes` slice of the frame), and a
//! Fetch response carrying cached batches encoded with its size prefix.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchResponse, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use std::hint::black_box;
use strand::protocol::codec::{decode_body, encode_response, parse_request};

mod common;

use common::batch;

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("bench"))
}

/// A Produce request frame (without the size prefix), one batch for each of `partitions`.
fn produce_frame(partitions: i32, records: &Bytes) -> Bytes {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(
                (0..partitions)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(records.clone()))
                    })
                    .collect(),
            )]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let mut buf = BytesMut::new();
    header
        .encode(
            &mut buf,
            ApiKey::Produce.request_header_version(PRODUCE_VERSION),
        )
        .unwrap();
    request.encode(&mut buf, PRODUCE_VERSION).unwrap();
    buf.freeze()
}

fn request_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce_request_decode");
    for (name, partitions, count) in [
        ("1x16KiB", 1, 150),
        ("1x1MB", 1, 9_000),
        ("8x16KiB", 8, 150),
    ] {
        let frame = produce_frame(partitions, &batch(count, 100));
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = parse_request(black_box(frame.clone())).unwrap();
                let mut body = request.body;
                let produce: ProduceRequest = decode_body(&mut body, request.version).unwrap();
                produce
            })
        });
    }
    group.finish();
}

fn response_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_response_encode");
    for (name, count) in [("16KiB", 150), ("1MB", 9_000)] {
        let records = batch(count, 100);
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(topic())
                .with_partitions(vec![PartitionData::default()
                    .with_partition_index(0)
                    .with_high_watermark(1_000_000)
                    .with_records(Some(records.clone()))])]);
        group.throughput(Throughput::Bytes(records.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                encode_response(7, ApiKey::Fetch, FETCH_VERSION, black_box(&response)).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, request_decode, response_encode);
criterion_main!(benches);
