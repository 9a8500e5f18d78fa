//! A request frame as the broker decodes it: the header (api key, version, correlation
//! id, client id, tagged fields) by `protocol::codec::parse_request`, then — for an API and
//! version the broker serves — the body with `kafka-protocol`, as `handlers::dispatch` does,
//! and for Produce each partition's records through batch validation. Any input must give
//! a value or an error, never a panic or an out-of-bounds read.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;
use strand::protocol::batch;
use strand::protocol::codec::{decode_body, parse_request};
use strand::protocol::versions;

/// The broker's default `--max-message-bytes`.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024 + 12;

fn decode<T: Decodable>(body: &mut Bytes, version: i16) -> Option<T> {
    decode_body::<T>(body, version).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = parse_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    let (api, version, mut body) = (frame.api_key, frame.version, frame.body);
    if api != ApiKey::ApiVersions && !versions::is_supported(api, version) {
        return; // the broker closes the connection without decoding
    }
    match api {
        ApiKey::Produce if version >= versions::PRODUCE_MIN_ACCEPTED => {
            if let Some(request) = decode::<ProduceRequest>(&mut body, version) {
                for topic in request.topic_data {
                    for partition in topic.partition_data {
                        let records = partition.records.unwrap_or_default();
                        if let Ok(info) =
                            batch::validate_produce_records(&records, MAX_MESSAGE_BYTES)
                        {
                            assert_eq!(info.len, records.len());
                            assert!(info.record_count > 0);
                        }
                    }
                }
            }
        }
        ApiKey::Produce => {}
        ApiKey::Fetch => drop(decode::<FetchRequest>(&mut body, version)),
        ApiKey::ListOffsets => drop(decode::<ListOffsetsRequest>(&mut body, version)),
        ApiKey::Metadata => drop(decode::<MetadataRequest>(&mut body, version)),
        ApiKey::ApiVersions => {
            if versions::is_supported(api, version) {
                drop(decode::<ApiVersionsRequest>(&mut body, version))
            }
        }
        ApiKey::CreateTopics => drop(decode::<CreateTopicsRequest>(&mut body, version)),
        ApiKey::DeleteTopics => drop(decode::<DeleteTopicsRequest>(&mut body, version)),
        ApiKey::InitProducerId => drop(decode::<InitProducerIdRequest>(&mut body, version)),
        ApiKey::FindCoordinator => drop(decode::<FindCoordinatorRequest>(&mut body, version)),
        ApiKey::JoinGroup => drop(decode::<JoinGroupRequest>(&mut body, version)),
        ApiKey::SyncGroup => drop(decode::<SyncGroupRequest>(&mut body, version)),
        ApiKey::Heartbeat => drop(decode::<HeartbeatRequest>(&mut body, version)),
        ApiKey::LeaveGroup => drop(decode::<LeaveGroupRequest>(&mut body, version)),
        ApiKey::OffsetCommit => drop(decode::<OffsetCommitRequest>(&mut body, version)),
        ApiKey::OffsetFetch => drop(decode::<OffsetFetchRequest>(&mut body, version)),
        ApiKey::ListGroups => drop(decode::<ListGroupsRequest>(&mut body, version)),
        ApiKey::DescribeGroups => drop(decode::<DescribeGroupsRequest>(&mut body, version)),
        ApiKey::DeleteGroups => drop(decode::<DeleteGroupsRequest>(&mut body, version)),
        ApiKey::OffsetDelete => drop(decode::<OffsetDeleteRequest>(&mut body, version)),
        _ => {}
    }
});
