//! Wire-level tests against the real binary with kafka-protocol's encoders: the edges real
//! clients rarely exercise (version fallbacks, steering errors, sequence checks, bad frames,
//! long polls, the refuse-to-start cases). Real-client round trips live in tests/compat and
//! tests/rdkafka_compat.rs.

mod common;

use std::time::{Duration, Instant};

use common::{batches, record_batch, Broker, Client};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_topic(client: &mut Client, name: &str, partitions: i32) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(10_000);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(
        response.topics[0].error_code, 0,
        "{:?}",
        response.topics[0].error_message
    );
}

/// partition -> leader broker id
fn leaders(client: &mut Client, name: &str) -> Vec<i32> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(name)))
        ]))
        .with_allow_auto_topic_creation(false);
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &request);
    let mut parts: Vec<(i32, i32)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, l)| l).collect()
}

fn produce(
    client: &mut Client,
    topic: &str,
    partition: i32,
    acks: i16,
    records: bytes::Bytes,
) -> Option<(i16, i64)> {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let cid = client.send(ApiKey::Produce, 9, &request);
    if acks == 0 {
        return None;
    }
    let response: ProduceResponse = client.recv(ApiKey::Produce, 9, cid);
    let p = &response.responses[0].partition_responses[0];
    Some((p.error_code, p.base_offset))
}

fn fetch(
    client: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> (i16, i64, bytes::Bytes) {
    let request = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
    let p = &response.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

fn list_offset(client: &mut Client, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
    let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name(topic))
        .with_partitions(vec![ListOffsetsPartition::default()
            .with_partition_index(partition)
            .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 6, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// A fresh idempotent producer id (no transactional id).
fn init_producer_id(client: &mut Client) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    client.call(ApiKey::InitProducerId, 4, &request)
}

/// The partition of `topic` led by broker `leader`.
fn partition_led_by(client: &mut Client, topic: &str, leader: i32) -> i32 {
    leaders(client, topic)
        .iter()
        .position(|&l| l == leader)
        .unwrap_or_else(|| panic!("no partition of {topic} led by {leader}")) as i32
}

#[test]
fn api_versions_unknown_version_answers_v0_with_error() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.connect(0);
    let cid = client.send(ApiKey::ApiVersions, 4, &ApiVersionsRequest::default());
    // The reply is in the v0 format whatever the request version was.
    let response: ApiVersionsResponse = client.recv(ApiKey::ApiVersions, 0, cid);
    assert_eq!(response.error_code, 35);
    let produce = response.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!(produce.min_version, 0);
    // And the connection is still usable.
    let response: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
}

#[test]
fn partitions_are_spread_over_shards_and_steered() {
    let broker = Broker::start(2, &[]);
    let mut c0 = broker.connect(0);
    create_topic(&mut c0, "spread", 4);
    let leaders = leaders(&mut c0, "spread");
    assert_eq!(
        leaders.iter().filter(|&&l| l == 0).count(),
        2,
        "{leaders:?}"
    );
    assert_eq!(
        leaders.iter().filter(|&&l| l == 1).count(),
        2,
        "{leaders:?}"
    );

    let on_1 = partition_led_by(&mut c0, "spread", 1);
    // Shard 0 refuses a partition owned by shard 1, like a broker with stale metadata.
    let (code, _) = produce(
        &mut c0,
        "spread",
        on_1,
        -1,
        record_batch(1, -1, -1, -1, 1000),
    )
    .unwrap();
    assert_eq!(code, 6);
    let mut c1 = broker.connect(1);
    let (code, offset) = produce(
        &mut c1,
        "spread",
        on_1,
        -1,
        record_batch(3, -1, -1, -1, 1000),
    )
    .unwrap();
    assert_eq!((code, offset), (0, 0));
    let (code, hw, records) = fetch(&mut c1, "spread", on_1, 0, 0);
    assert_eq!((code, hw), (0, 3));
    assert_eq!(batches(records), vec![(0, 3)]);
}

#[test]
fn idempotent_sequences_are_checked() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "idem", 1);
    let init = init_producer_id(&mut client);
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);

    let first = record_batch(2, pid, 0, 0, 1000);
    assert_eq!(
        produce(&mut client, "idem", 0, -1, first.clone()),
        Some((0, 0))
    );
    // A retry of the same batch is acknowledged with its original offset, not written again.
    assert_eq!(produce(&mut client, "idem", 0, -1, first), Some((0, 0)));
    // A gap is refused.
    let (code, _) = produce(&mut client, "idem", 0, -1, record_batch(1, pid, 0, 5, 1000)).unwrap();
    assert_eq!(code, 45);
    // The next in sequence is accepted.
    assert_eq!(
        produce(&mut client, "idem", 0, -1, record_batch(1, pid, 0, 2, 1000)),
        Some((0, 2))
    );
    let (_, hw, records) = fetch(&mut client, "idem", 0, 0, 0);
    assert_eq!(hw, 3);
    assert_eq!(batches(records), vec![(0, 2), (2, 1)]);

    // A second InitProducerId gives a different producer id.
    let again = init_producer_id(&mut client);
    assert_ne!(again.producer_id.0, pid);
}

#[test]
fn producer_state_survives_restart() {
    let mut broker = Broker::start(1, &[]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "idem-restart", 1);
    let init = init_producer_id(&mut client);
    let pid = init.producer_id.0;
    let batch = record_batch(1, pid, 0, 0, 1000);
    assert_eq!(
        produce(&mut client, "idem-restart", 0, -1, batch.clone()),
        Some((0, 0))
    );
    drop(client);
    broker.kill9();
    broker.spawn();
    let mut client = broker.connect(0);
    // The retry after the crash is still recognised as a duplicate.
    assert_eq!(
        produce(&mut client, "idem-restart", 0, -1, batch),
        Some((0, 0))
    );
    let (code, _) = produce(
        &mut client,
        "idem-restart",
        0,
        -1,
        record_batch(1, pid, 0, 3, 1000),
    )
    .unwrap();
    assert_eq!(code, 45);
    let (_, hw, _) = fetch(&mut client, "idem-restart", 0, 0, 0);
    assert_eq!(hw, 1);
    // Producer ids are not reused after a restart either.
    let init = init_producer_id(&mut client);
    assert!(init.producer_id.0 > pid);
}

#[test]
fn fetch_long_poll_is_woken_by_produce() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "poll", 1);
    let mut consumer = broker.connect(0);
    let started = Instant::now();
    let fetcher = std::thread::spawn(move || {
        let (code, hw, records) = fetch(&mut consumer, "poll", 0, 0, 20_000);
        (code, hw, batches(records), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        produce(&mut client, "poll", 0, 1, record_batch(1, -1, -1, -1, 1000)),
        Some((0, 0))
    );
    let (code, hw, got, elapsed) = fetcher.join().unwrap();
    assert_eq!((code, hw, got), (0, 1, vec![(0, 1)]));
    assert!(
        elapsed < Duration::from_secs(10),
        "long poll was not woken: {elapsed:?}"
    );

    // With nothing to read, the fetch returns empty when max_wait_ms runs out.
    let (code, hw, records) = fetch(&mut client, "poll", 0, 1, 200);
    assert_eq!((code, hw, records.len()), (0, 1, 0));
    // Past the end: OFFSET_OUT_OF_RANGE.
    let (code, _, _) = fetch(&mut client, "poll", 0, 50, 0);
    assert_eq!(code, 1);
}

#[test]
fn list_offsets_earliest_latest_and_by_time() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "times", 1);
    for (i, ts) in [1_000i64, 2_000, 3_000].iter().enumerate() {
        assert_eq!(
            produce(
                &mut client,
                "times",
                0,
                -1,
                record_batch(2, -1, -1, -1, *ts)
            ),
            Some((0, 2 * i as i64))
        );
    }
    assert_eq!(list_offset(&mut client, "times", 0, -2), (0, 0));
    assert_eq!(list_offset(&mut client, "times", 0, -1), (0, 6));
    assert_eq!(list_offset(&mut client, "times", 0, 1_500), (0, 2));
    assert_eq!(list_offset(&mut client, "times", 0, 3_000), (0, 4));
    assert_eq!(list_offset(&mut client, "times", 0, 9_000), (0, -1));

    // (error, offset, timestamp, leader epoch) as Kafka 4.1 answers them: epoch 0 where an
    // offset is found, all -1 where none is, UNSUPPORTED_VERSION for an unknown negative
    // timestamp; no epoch field before v4.
    let mut raw = |version: i16, topic: &str, timestamp: i64| {
        let request = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)])]);
        let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, version, &request);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp, p.leader_epoch)
    };
    assert_eq!(raw(7, "times", 1_500), (0, 2, 2_000, 0));
    assert_eq!(raw(7, "times", 9_000), (0, -1, -1, -1));
    assert_eq!(raw(7, "times", -1), (0, 6, -1, 0));
    assert_eq!(raw(7, "times", -3), (0, 4, 3_000, 0));
    assert_eq!(raw(6, "times", -3), (35, -1, -1, -1));
    assert_eq!(raw(7, "times", -7), (35, -1, -1, -1));
    assert_eq!(raw(1, "times", 1_500), (0, 2, 2_000, -1));
    assert_eq!(raw(1, "times", 9_000), (0, -1, -1, -1));
    assert_eq!(raw(7, "missing", -1), (3, -1, -1, -1));
}

#[test]
fn create_topics_v5_answers_with_every_config() {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let broker = Broker::start(1, &["--log-retention-ms", "3600000"]);
    let mut client = broker.connect(0);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name("configs"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("preallocate"))
                .with_value(Some(StrBytes::from_static_str("TRUE")))])])
        .with_timeout_ms(10_000);
    for (version, listed) in [(7, true), (4, false)] {
        let response: CreateTopicsResponse = client.call(
            ApiKey::CreateTopics,
            version,
            &request.clone().with_validate_only(true),
        );
        let t = &response.topics[0];
        assert_eq!(t.error_code, 0, "{:?}", t.error_message);
        let Some(configs) = t.configs.as_ref().filter(|_| listed) else {
            assert!(
                t.configs.as_ref().is_none_or(|c| c.is_empty()),
                "v{version}"
            );
            continue;
        };
        assert_eq!((t.num_partitions, t.replication_factor), (1, 1));
        let get = |name: &str| configs.iter().find(|c| c.name.as_str() == name).unwrap();
        let preallocate = get("preallocate");
        assert_eq!(preallocate.value.as_deref(), Some("TRUE"));
        assert_eq!(preallocate.config_source, 1); // DYNAMIC_TOPIC_CONFIG
        let retention = get("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("3600000"));
        assert_eq!(retention.config_source, 4); // STATIC_BROKER_CONFIG
        assert_eq!(get("max.compaction.lag.ms").config_source, 5); // DEFAULT_CONFIG
        assert!(configs.iter().all(|c| !c.read_only && !c.is_sensitive));
    }
    // A refused topic: no configs, counts -1.
    let bad = request.clone().with_topics(vec![CreatableTopic::default()
        .with_name(topic_name("refused"))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("preallocate"))
            .with_value(Some(StrBytes::from_static_str("maybe")))])]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &bad);
    let t = &response.topics[0];
    assert_eq!(
        (t.error_code, t.num_partitions, t.replication_factor),
        (40, -1, -1)
    );
    assert!(t.configs.is_none());
}

#[test]
fn bad_input_closes_only_that_connection_and_writes_nothing() {
    let broker = Broker::start(1, &["--max-frame-bytes", "1048576"]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "bad", 1);

    // Oversized frame.
    let mut c = broker.connect(0);
    use std::io::Write;
    c.stream
        .write_all(&(64 * 1024 * 1024i32).to_be_bytes())
        .unwrap();
    assert!(c.is_closed());
    // Unknown API key.
    let mut c = broker.connect(0);
    c.send_raw_frame(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
    assert!(c.is_closed());
    // Garbage that is not even a header.
    let mut c = broker.connect(0);
    c.send_raw_frame(&[1, 2, 3]);
    assert!(c.is_closed());
    // A truncated request body.
    let mut c = broker.connect(0);
    c.send_raw_frame(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 4, b't', b'e']);
    assert!(c.is_closed());
    // Produce v2 (message format v0/v1) is refused.
    let mut c = broker.connect(0);
    // api key 0, version 2, correlation id 1, null client id; acks 1, timeout, no topics.
    c.send_raw_frame(&[
        0, 0, 0, 2, 0, 0, 0, 1, 0xff, 0xff, 0, 1, 0, 0, 0x27, 0x10, 0, 0, 0, 0,
    ]);
    assert!(c.is_closed());

    // A batch with a bad CRC gets CORRUPT_MESSAGE and is not written.
    let mut corrupt = bytes::BytesMut::from(&record_batch(1, -1, -1, -1, 1000)[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let (code, _) = produce(&mut client, "bad", 0, -1, corrupt.freeze()).unwrap();
    assert_eq!(code, 2);
    // Two batches in one partition's records: INVALID_RECORD.
    let mut two = bytes::BytesMut::from(&record_batch(1, -1, -1, -1, 1000)[..]);
    two.extend_from_slice(&record_batch(1, -1, -1, -1, 1000));
    let (code, _) = produce(&mut client, "bad", 0, -1, two.freeze()).unwrap();
    assert_eq!(code, 87);
    assert_eq!(list_offset(&mut client, "bad", 0, -1), (0, 0));

    // acks=0: no response, but the data arrives.
    assert_eq!(
        produce(&mut client, "bad", 0, 0, record_batch(1, -1, -1, -1, 1000)),
        None
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while list_offset(&mut client, "bad", 0, -1).1 != 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first connection was never disturbed.
    assert_eq!(
        produce(&mut client, "bad", 0, -1, record_batch(1, -1, -1, -1, 1000)),
        Some((0, 1))
    );
}

#[test]
fn refuses_second_broker_on_same_data_dir_or_port() {
    let broker = Broker::start(1, &[]);
    let other_port = common::free_ports(1);
    let out = Broker::command(&broker.data_dir(), other_port, 1, &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked"), "{stderr}");

    let other_dir = tempfile::tempdir().unwrap();
    let out = Broker::command(other_dir.path(), broker.port, 1, &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen"), "{stderr}");
}

#[test]
fn sigterm_drains_and_restart_keeps_data() {
    let mut broker = Broker::start(2, &[]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "keep", 2);
    let mut expected = Vec::new();
    for leader in 0..2 {
        let p = partition_led_by(&mut client, "keep", leader);
        let mut c = broker.connect(leader as usize);
        for i in 0..5 {
            assert_eq!(
                produce(&mut c, "keep", p, -1, record_batch(2, -1, -1, -1, 1000)),
                Some((0, 2 * i))
            );
        }
        expected.push((p, leader));
    }
    drop(client);
    assert_eq!(broker.terminate(), Some(0));
    broker.spawn();
    for (p, leader) in expected {
        let mut c = broker.connect(leader as usize);
        let (code, hw, records) = fetch(&mut c, "keep", p, 0, 0);
        assert_eq!((code, hw), (0, 10));
        assert_eq!(batches(records).len(), 5);
    }
}

#[test]
fn deleted_topic_is_gone_and_can_be_recreated_empty() {
    let broker = Broker::start(2, &[]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "doomed", 2);
    let p = partition_led_by(&mut client, "doomed", 0);
    assert_eq!(
        produce(
            &mut client,
            "doomed",
            p,
            -1,
            record_batch(1, -1, -1, -1, 1000)
        ),
        Some((0, 0))
    );
    let response: DeleteTopicsResponse = client.call(
        ApiKey::DeleteTopics,
        4,
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name("doomed")])
            .with_timeout_ms(10_000),
    );
    assert_eq!(response.responses[0].error_code, 0);
    let (code, _) = list_offset(&mut client, "doomed", p, -1);
    assert_eq!(code, 3);
    create_topic(&mut client, "doomed", 2);
    let p = partition_led_by(&mut client, "doomed", 0);
    assert_eq!(list_offset(&mut client, "doomed", p, -1), (0, 0));
}

#[test]
fn acks_0_flood_is_held_back_by_the_unflushed_limit_and_all_lands() {
    let broker = Broker::start(1, &["--max-unflushed-bytes", "2000"]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "flood", 1);
    let mut producer = broker.connect(0);
    for _ in 0..300 {
        assert_eq!(
            produce(
                &mut producer,
                "flood",
                0,
                0,
                record_batch(10, -1, -1, -1, 1000)
            ),
            None
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while list_offset(&mut client, "flood", 0, -1).1 != 3000 {
        assert!(Instant::now() < deadline, "acks=0 data did not all land");
        std::thread::sleep(Duration::from_millis(20));
    }
    // And acknowledged produce still works on the same connection.
    assert_eq!(
        produce(
            &mut producer,
            "flood",
            0,
            -1,
            record_batch(1, -1, -1, -1, 1000)
        ),
        Some((0, 3000))
    );
}

#[test]
fn offset_for_leader_epoch_and_max_timestamp() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let broker = Broker::start(1, &[]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "epochs", 1);
    for ts in [5_000i64, 9_000, 7_000] {
        produce(
            &mut client,
            "epochs",
            0,
            -1,
            record_batch(2, -1, -1, -1, ts),
        )
        .unwrap();
    }
    // ListOffsets v7, timestamp -3: the record with the largest timestamp.
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name("epochs"))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-3)])]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 7, &request);
    let p = &response.topics[0].partitions[0];
    assert_eq!((p.error_code, p.offset, p.timestamp), (0, 2, 9_000));

    let ask = |client: &mut Client, current: i32, epoch: i32| {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic_name("epochs"))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch)])]);
        let response: OffsetForLeaderEpochResponse =
            client.call(ApiKey::OffsetForLeaderEpoch, 4, &request);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    // Epoch 0 (the only one) ends at the log end; a later epoch is unknown to us.
    assert_eq!(ask(&mut client, 0, 0), (0, 0, 6));
    assert_eq!(ask(&mut client, -1, 3), (0, -1, -1));
    assert_eq!(ask(&mut client, 2, 0).0, 75); // UNKNOWN_LEADER_EPOCH
}

/// A connection holds back a second fetch until the first one's response is written (so a
/// consumer that pipelines fetches and never reads cannot make the broker hold one response
/// per request). Pipelined requests must still all be answered, in order, and a produce
/// behind a long-polling fetch must still wake it.
#[test]
fn pipelined_fetches_and_produces_are_answered_in_order() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "pipe", 1);
    for i in 0..3 {
        assert_eq!(
            produce(&mut client, "pipe", 0, 1, record_batch(2, -1, -1, -1, 1000)),
            Some((0, i * 2))
        );
    }
    let fetch_request = |offset: i64, max_wait_ms: i32| {
        FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name("pipe"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])])
    };
    // Fetches at 0, 2, 4, then a long poll at 6 that the produce behind it completes.
    let mut sent = Vec::new();
    for offset in [0, 2, 4] {
        sent.push((
            ApiKey::Fetch,
            client.send(ApiKey::Fetch, 12, &fetch_request(offset, 0)),
        ));
    }
    sent.push((
        ApiKey::Fetch,
        client.send(ApiKey::Fetch, 12, &fetch_request(6, 10_000)),
    ));
    let mut producer = broker.connect(0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        produce(
            &mut producer,
            "pipe",
            0,
            1,
            record_batch(1, -1, -1, -1, 1000)
        ),
        Some((0, 6))
    );
    let mut firsts = Vec::new();
    for (api, cid) in sent {
        let response: FetchResponse = client.recv(api, 12, cid);
        let p = &response.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        firsts.push(batches(p.records.clone().unwrap_or_default())[0].0);
    }
    assert_eq!(firsts, vec![0, 2, 4, 6]);
}

/// A produce request whose frame arrives in many small TCP segments (a few bytes each
/// through the header, then ~1.5 KB) is stored whole: the batch read back is the one sent,
/// byte for byte past the offset and epoch the broker patches.
#[test]
fn a_produce_frame_in_many_small_segments_is_stored_whole() {
    use std::io::Write;
    let broker = Broker::start(1, &[]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "trickle", 1);
    // A batch of about 60 KB so the frame takes many segments.
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let keys: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
    let batch = batch_with_keys(&keys, 600, (-1, -1, -1), 0);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name("trickle"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.clone()))])]);
    let (cid, frame) = client.frame(ApiKey::Produce, 9, &request);
    let mut at = 0;
    let mut pieces = 0;
    while at < frame.len() {
        let n = if at < 200 { 7 } else { 1_500 }.min(frame.len() - at);
        client.stream.write_all(&frame[at..at + n]).unwrap();
        client.stream.flush().unwrap();
        // Let each piece leave as its own segment.
        std::thread::sleep(Duration::from_millis(1));
        at += n;
        pieces += 1;
    }
    assert!(pieces > 60, "{pieces} pieces");
    let response: ProduceResponse = client.recv(ApiKey::Produce, 9, cid);
    let p = &response.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    let (code, hw, records) = fetch(&mut client, "trickle", 0, 0, 0);
    assert_eq!((code, hw), (0, 100));
    assert_eq!(records.len(), batch.len());
    assert_eq!(&records[16..], &batch[16..]);
    assert_eq!(&records[8..12], &batch[8..12]);
}

// ------------------------------------------------- transactions, record errors, key checks

/// A magic-2 batch (uncompressed) whose records have these keys (`None`: no key) and
/// `value_len`-byte values, with the given producer fields and attributes.
fn batch_with_keys(
    keys: &[Option<&str>],
    value_len: usize,
    producer: (i64, i16, i32),
    attributes: i16,
) -> bytes::Bytes {
    use bytes::BufMut;
    fn varlong(buf: &mut bytes::BytesMut, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            buf.put_u8((z as u8) | 0x80);
            z >>= 7;
        }
        buf.put_u8(z as u8);
    }
    let value = vec![b'v'; value_len];
    let mut records = bytes::BytesMut::new();
    for (i, key) in keys.iter().enumerate() {
        let mut rec = bytes::BytesMut::new();
        rec.put_i8(0);
        varlong(&mut rec, 0);
        varlong(&mut rec, i as i64);
        match key {
            Some(k) => {
                varlong(&mut rec, k.len() as i64);
                rec.put_slice(k.as_bytes());
            }
            None => varlong(&mut rec, -1),
        }
        varlong(&mut rec, value.len() as i64);
        rec.put_slice(&value);
        varlong(&mut rec, 0);
        varlong(&mut records, rec.len() as i64);
        records.put_slice(&rec);
    }
    let count = keys.len() as i32;
    let mut batch = bytes::BytesMut::new();
    batch.put_i64(0);
    batch.put_i32((49 + records.len()) as i32);
    batch.put_i32(-1);
    batch.put_i8(2);
    batch.put_u32(0);
    batch.put_i16(attributes);
    batch.put_i32(count - 1);
    batch.put_i64(1_000);
    batch.put_i64(1_000);
    batch.put_i64(producer.0);
    batch.put_i16(producer.1);
    batch.put_i32(producer.2);
    batch.put_i32(count);
    batch.put_slice(&records);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

const ATTR_TRANSACTIONAL: i16 = 0x10;

/// A produce of one batch to one partition, v9, optionally naming a transactional id.
fn produce_request(
    topic: &str,
    partition: i32,
    transactional_id: Option<&str>,
    records: bytes::Bytes,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_transactional_id(
            transactional_id.map(|id| TransactionalId(StrBytes::from_string(id.into()))),
        )
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

fn produce_v9(
    client: &mut Client,
    request: &ProduceRequest,
) -> produce_response::PartitionProduceResponse {
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, request);
    response.responses[0].partition_responses[0].clone()
}

/// ListOffsets latest for read_committed: the last stable offset.
fn last_stable_offset(client: &mut Client, topic: &str, partition: i32) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_isolation_level(1)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 6, &request);
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

fn init_txn_producer(client: &mut Client, id: &str, timeout_ms: i32) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.into()))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    client.call(ApiKey::InitProducerId, 4, &request)
}

/// The shard coordinating transactional id `id`.
fn txn_coordinator(client: &mut Client, id: &str) -> usize {
    let request = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![StrBytes::from_string(id.into())]);
    let response: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 4, &request);
    let c = &response.coordinators[0];
    assert_eq!(c.error_code, 0);
    c.node_id.0 as usize
}

/// Hole 1 (KIP-890 part 1): a transactional batch from a producer whose transaction does
/// not include the partition is refused with INVALID_TXN_STATE, so it cannot open a
/// transaction nothing will close; the last stable offset keeps moving. Both with the
/// coordinator on the partition's shard (checked in place) and on the other (asked over
/// the mesh).
#[test]
fn stray_transactional_batches_are_refused_and_the_lso_moves() {
    let broker = Broker::start(2, &[]);
    let mut c0 = broker.connect(0);
    create_topic(&mut c0, "stray", 2);
    let part_on = [
        partition_led_by(&mut c0, "stray", 0),
        partition_led_by(&mut c0, "stray", 1),
    ];
    let mut clients = [broker.connect(0), broker.connect(1)];

    // An idempotent producer id the coordinator never saw, with and without an id.
    let init = init_producer_id(&mut c0);
    let pid = init.producer_id.0;
    for (shard, txn_id) in [(0, None), (1, Some("nobody")), (0, Some("nobody"))] {
        let p = part_on[shard];
        let stray = batch_with_keys(&[Some("k")], 10, (pid, 0, 0), ATTR_TRANSACTIONAL);
        let out = produce_v9(
            &mut clients[shard],
            &produce_request("stray", p, txn_id, stray),
        );
        assert_eq!(out.error_code, 48, "stray batch on shard {shard}: {out:?}");
        let plain = batch_with_keys(&[Some("k")], 10, (-1, -1, -1), 0);
        let out = produce_v9(
            &mut clients[shard],
            &produce_request("stray", p, None, plain),
        );
        assert_eq!(out.error_code, 0);
        // read_committed sees everything written: nothing is held open.
        let (_, hw, _) = fetch(&mut clients[shard], "stray", p, 0, 0);
        assert_eq!(last_stable_offset(&mut clients[shard], "stray", p), hw);
    }

    // A registered transactional producer that added only one partition: the other
    // partition refuses its batch, the added one takes it (for both coordinator places).
    for (n, txn_id) in ["t-a", "t-b", "t-c", "t-d", "t-e", "t-f"]
        .iter()
        .enumerate()
    {
        let coordinator = txn_coordinator(&mut c0, txn_id);
        let mut cc = broker.connect(coordinator);
        let init = init_txn_producer(&mut cc, txn_id, 60_000);
        assert_eq!(init.error_code, 0);
        let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
        let added = part_on[n % 2];
        let other = part_on[(n + 1) % 2];
        let add = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
                txn_id.to_string(),
            )))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(topic_name("stray"))
                    .with_partitions(vec![added]),
            ]);
        let added_response: AddPartitionsToTxnResponse =
            cc.call(ApiKey::AddPartitionsToTxn, 3, &add);
        assert_eq!(
            added_response.results_by_topic_v3_and_below[0].results_by_partition[0]
                .partition_error_code,
            0
        );
        let other_shard = part_on.iter().position(|&p| p == other).unwrap();
        let added_shard = part_on.iter().position(|&p| p == added).unwrap();
        let batch = batch_with_keys(&[Some("k")], 10, (pid, epoch, 0), ATTR_TRANSACTIONAL);
        let out = produce_v9(
            &mut clients[other_shard],
            &produce_request("stray", other, Some(txn_id), batch.clone()),
        );
        assert_eq!(
            out.error_code, 48,
            "{txn_id} on the partition it did not add"
        );
        let out = produce_v9(
            &mut clients[added_shard],
            &produce_request("stray", added, Some(txn_id), batch),
        );
        assert_eq!(
            out.error_code, 0,
            "{txn_id} on the partition it added: {out:?}"
        );
        // The open transaction holds the LSO at its first offset there, not elsewhere.
        assert_eq!(
            last_stable_offset(&mut clients[added_shard], "stray", added),
            out.base_offset
        );
        let (_, hw, _) = fetch(&mut clients[other_shard], "stray", other, 0, 0);
        assert_eq!(
            last_stable_offset(&mut clients[other_shard], "stray", other),
            hw
        );
        // The next batch of the same transaction is accepted without asking again.
        let next = batch_with_keys(&[Some("k")], 10, (pid, epoch, 1), ATTR_TRANSACTIONAL);
        let out2 = produce_v9(
            &mut clients[added_shard],
            &produce_request("stray", added, Some(txn_id), next),
        );
        assert_eq!(out2.error_code, 0);
        let end = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(txn_id.to_string())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(false);
        let ended: EndTxnResponse = cc.call(ApiKey::EndTxn, 3, &end);
        assert_eq!(ended.error_code, 0);
        let (_, hw, _) = fetch(&mut clients[added_shard], "stray", added, 0, 0);
        assert_eq!(
            last_stable_offset(&mut clients[added_shard], "stray", added),
            hw
        );
    }
}

/// Hole 1: `transaction.max.timeout.ms` bounds what InitProducerId may ask for.
#[test]
fn transaction_timeout_above_the_max_is_refused() {
    let broker = Broker::start(1, &["--transaction-max-timeout-ms", "60000"]);
    let mut client = broker.connect(0);
    assert_eq!(
        init_txn_producer(&mut client, "slow", 60_001).error_code,
        50
    );
    assert_eq!(init_txn_producer(&mut client, "slow", 60_000).error_code, 0);
}

/// Hole 7 (KIP-467): keyless records on a compacted topic are named in `record_errors`
/// (their index in the batch and a message), with INVALID_RECORD and an error message;
/// nothing of the batch is appended.
#[test]
fn keyless_records_on_a_compacted_topic_are_listed_in_record_errors() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.connect(0);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name("compacted"))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                    .with_value(Some(StrBytes::from_static_str("compact"))),
            ])])
        .with_timeout_ms(10_000);
    let created: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(created.topics[0].error_code, 0);

    let mixed = batch_with_keys(
        &[Some("a"), None, Some("b"), None, None],
        10,
        (-1, -1, -1),
        0,
    );
    let out = produce_v9(&mut client, &produce_request("compacted", 0, None, mixed));
    assert_eq!(out.error_code, 87);
    assert!(out.error_message.is_some());
    let listed: Vec<i32> = out.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(listed, vec![1, 3, 4]);
    for e in &out.record_errors {
        let message = e
            .batch_index_error_message
            .as_ref()
            .expect("a message per record");
        assert!(message.contains("without key"), "{message}");
    }
    // Produce v7 has no record_errors field: the same refusal, without the list.
    let mixed = batch_with_keys(&[Some("a"), None], 10, (-1, -1, -1), 0);
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        7,
        &produce_request("compacted", 0, None, mixed),
    );
    assert_eq!(response.responses[0].partition_responses[0].error_code, 87);
    let keyed = batch_with_keys(&[Some("a"), Some("b")], 10, (-1, -1, -1), 0);
    let out = produce_v9(&mut client, &produce_request("compacted", 0, None, keyed));
    assert_eq!((out.error_code, out.base_offset), (0, 0));
    assert!(out.record_errors.is_empty());
}

/// Hole 5: a large batch for a compacted topic has its keys read off the event loop. With
/// the check held (a test hook that keeps it waiting while a file exists), the shard goes
/// on serving — a produce to another partition of the same shard completes — and a later
/// produce to the same partition waits its turn: it lands after the large batch.
#[test]
fn large_key_check_runs_off_the_event_loop_and_keeps_partition_order() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    std::fs::write(&hold, b"").unwrap();
    // Set only around the start: the broker (a child) keeps it; no other test here
    // produces a large batch to a compacted topic.
    std::env::set_var("STRAND_TEST_HOLD_KEY_CHECK", &hold);
    let broker = Broker::start(1, &["--max-message-bytes", "16777216"]);
    std::env::remove_var("STRAND_TEST_HOLD_KEY_CHECK");
    let mut client = broker.connect(0);
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name("big"))
            .with_num_partitions(2)
            .with_replication_factor(1)
            .with_configs(vec![
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                    .with_value(Some(StrBytes::from_static_str("compact"))),
            ])])
        .with_timeout_ms(10_000);
    let created: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(created.topics[0].error_code, 0);

    // 4 MiB of keyed records: above the inline limit.
    let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
    let keys: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
    let big = batch_with_keys(&keys, 64 * 1024, (-1, -1, -1), 0);
    let mut big_client = broker.connect(0);
    let big_cid = big_client.send(ApiKey::Produce, 9, &produce_request("big", 0, None, big));
    // Wait until the check is held: the broker logs it once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !broker
        .log_text()
        .contains("key check held by the test hook")
    {
        assert!(
            Instant::now() < deadline,
            "the key check never started:\n{}",
            broker.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Same partition, later: queued behind the big batch (its answer comes after).
    let mut after_client = broker.connect(0);
    let small = batch_with_keys(&[Some("s")], 10, (-1, -1, -1), 0);
    let after_cid = after_client.send(
        ApiKey::Produce,
        9,
        &produce_request("big", 0, None, small.clone()),
    );
    // Another partition of the same shard is served while the check is held.
    let out = produce_v9(&mut client, &produce_request("big", 1, None, small));
    assert_eq!((out.error_code, out.base_offset), (0, 0));
    let (_, hw, _) = fetch(&mut client, "big", 0, 0, 0);
    assert_eq!(hw, 0, "nothing appended to the held partition yet");

    std::fs::remove_file(&hold).unwrap();
    let response: ProduceResponse = big_client.recv(ApiKey::Produce, 9, big_cid);
    let p = &response.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0), "{p:?}");
    let response: ProduceResponse = after_client.recv(ApiKey::Produce, 9, after_cid);
    let p = &response.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 64), "{p:?}");
}
