//! Real-client tests with the Rust `rdkafka` crate (librdkafka 2.12), against the real
//! binary with two shards: round trips with every compression codec, keys and headers;
//! reads from the beginning, the end and a timestamp; the idempotent producer; and a
//! `kill -9` in the middle of an acks=all produce that must lose no acknowledged record;
//! consumer groups; and transactions seen by read_committed and read_uncommitted consumers.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn bootstrap(broker: &Broker) -> String {
    format!("127.0.0.1:{}", broker.port)
}

async fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(broker))
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

fn producer(broker: &Broker, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap(broker))
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().unwrap()
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Reads every record of `topic` (all partitions) from `start` until `expected` records
/// arrived or the deadline passed; returns them per partition, in order.
fn consume(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    start: Offset,
    expected: usize,
) -> BTreeMap<i32, Vec<(i64, Record)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(broker))
        .set("group.id", "rdkafka-compat-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, start).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out: BTreeMap<i32, Vec<(i64, Record)>> = BTreeMap::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count < expected && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                    .collect()
            })
            .unwrap_or_default();
        out.entry(message.partition()).or_default().push((
            message.offset(),
            Record {
                key: message.key().map(|k| k.to_vec()),
                value: message.payload().map(|v| v.to_vec()),
                headers,
            },
        ));
        count += 1;
    }
    // Anything more than expected would show up here too.
    while let Some(message) = consumer.poll(Duration::from_millis(500)) {
        let message = message.unwrap();
        out.entry(message.partition()).or_default().push((
            message.offset(),
            Record {
                key: message.key().map(|k| k.to_vec()),
                value: message.payload().map(|v| v.to_vec()),
                headers: Vec::new(),
            },
        ));
    }
    out
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    record: &Record,
) -> (i32, i64) {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &record.headers {
        headers = headers.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    let mut future = FutureRecord::<Vec<u8>, Vec<u8>>::to(topic).headers(headers);
    if let Some(key) = &record.key {
        future = future.key(key);
    }
    if let Some(value) = &record.value {
        future = future.payload(value);
    }
    if let Some(p) = partition {
        future = future.partition(p);
    }
    let delivery = producer
        .send(future, Duration::from_secs(30))
        .await
        .unwrap();
    (delivery.partition, delivery.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_every_codec_keys_headers_on_both_shards() {
    let broker = Broker::start(2, &[]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("rt-{codec}");
        create_topic(&broker, &topic, 4).await;
        let producer = producer(&broker, &[("compression.type", codec), ("acks", "all")]);
        let mut sent: BTreeMap<i32, Vec<(i64, Record)>> = BTreeMap::new();
        for i in 0..200u32 {
            let record = Record {
                key: (i % 3 != 0).then(|| format!("key-{}", i % 17).into_bytes()),
                value: match i % 50 {
                    0 => None,
                    1 => Some(Vec::new()),
                    2 => Some((0..100_000u32).map(|b| (b * 7 + i) as u8).collect()),
                    _ => Some(
                        format!("{codec}-value-{i}-{}", "x".repeat((i % 40) as usize)).into_bytes(),
                    ),
                },
                headers: if i % 2 == 0 {
                    vec![
                        ("h1".into(), Some(vec![i as u8, 0, 255])),
                        ("empty".into(), None),
                    ]
                } else {
                    Vec::new()
                },
            };
            let partition = if record.key.is_none() {
                Some((i % 4) as i32)
            } else {
                None
            };
            let (p, offset) = send(&producer, &topic, partition, &record).await;
            sent.entry(p).or_default().push((offset, record));
        }
        assert_eq!(sent.len(), 4, "{codec}: every partition got records");
        let got = consume(&broker, &topic, 4, Offset::Beginning, 200);
        assert_eq!(got, sent, "{codec}: records differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_end_and_from_timestamp() {
    let broker = Broker::start(2, &[]);
    create_topic(&broker, "positions", 2).await;
    let producer = producer(&broker, &[]);
    let record = |i: u32| Record {
        key: None,
        value: Some(format!("v{i}").into_bytes()),
        headers: Vec::new(),
    };
    for i in 0..10 {
        send(&producer, "positions", Some((i % 2) as i32), &record(i)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 10..16 {
        send(&producer, "positions", Some((i % 2) as i32), &record(i)).await;
    }
    // From a timestamp: only what was produced after it.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(&broker))
        .set("group.id", "rdkafka-compat-assign-only")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    for p in 0..2 {
        wanted
            .add_partition_offset("positions", p, Offset::Offset(middle))
            .unwrap();
    }
    let found = consumer
        .offsets_for_times(wanted, Duration::from_secs(10))
        .unwrap();
    for element in found.elements() {
        assert_eq!(
            element.offset(),
            Offset::Offset(5),
            "partition {}",
            element.partition()
        );
    }
    let got = consume(&broker, "positions", 2, Offset::Offset(5), 6);
    let values: HashSet<Vec<u8>> = got
        .values()
        .flatten()
        .map(|(_, r)| r.value.clone().unwrap())
        .collect();
    let expected: HashSet<Vec<u8>> = (10..16).map(|i| format!("v{i}").into_bytes()).collect();
    assert_eq!(values, expected);

    // From the end: only what is produced after the consumer starts.
    let tail = Arc::new(AtomicBool::new(false));
    let tail_done = tail.clone();
    let port = broker.port;
    let reader = std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", format!("127.0.0.1:{port}"))
            .set("group.id", "rdkafka-compat-assign-only")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset("positions", 0, Offset::End)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.is_empty() && Instant::now() < deadline {
            tail_done.store(true, Ordering::SeqCst);
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                got.push(m.unwrap().payload().unwrap().to_vec());
            }
        }
        got
    });
    while !tail.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give the consumer time to resolve the end offset before producing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&producer, "positions", Some(0), &record(99)).await;
    assert_eq!(reader.join().unwrap(), vec![b"v99".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_writes_each_record_once() {
    let broker = Broker::start(2, &[]);
    create_topic(&broker, "idem", 4).await;
    let producer = producer(
        &broker,
        &[("enable.idempotence", "true"), ("linger.ms", "1")],
    );
    // Enqueued in order (send_result does not wait), acknowledged concurrently.
    let mut futures = Vec::new();
    for i in 0..5_000u32 {
        let value = format!("idem-{i}");
        let record = FutureRecord::<(), String>::to("idem")
            .payload(&value)
            .partition((i % 4) as i32);
        futures.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    let mut acked = HashSet::new();
    for f in futures {
        let delivery = f.await.unwrap().map_err(|(e, _)| e).unwrap();
        assert!(
            acked.insert((delivery.partition, delivery.offset)),
            "two records acknowledged at one offset"
        );
    }
    let got = consume(&broker, "idem", 4, Offset::Beginning, 5_000);
    let values: Vec<Vec<u8>> = got
        .values()
        .flatten()
        .map(|(_, r)| r.value.clone().unwrap())
        .collect();
    assert_eq!(values.len(), 5_000);
    assert_eq!(values.iter().collect::<HashSet<_>>().len(), 5_000);
    // Per partition, in the order sent.
    for (p, records) in &got {
        let numbers: Vec<u32> = records
            .iter()
            .map(|(_, r)| {
                String::from_utf8(r.value.clone().unwrap()).unwrap()[5..]
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut sorted = numbers.clone();
        sorted.sort();
        assert_eq!(numbers, sorted, "partition {p} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_acks_all_produce_loses_no_acknowledged_record() {
    let mut broker = Broker::start(2, &[]);
    create_topic(&broker, "crash", 4).await;
    let producer = producer(
        &broker,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "60000"),
        ],
    );
    let acked: Arc<Mutex<HashMap<String, (i32, i64)>>> = Arc::default();
    let total = 20_000u32;
    let mut tasks = Vec::new();
    for i in 0..total {
        let producer = producer.clone();
        let acked_by_task = acked.clone();
        tasks.push(tokio::spawn(async move {
            let value = format!("crash-{i}");
            let record = FutureRecord::<(), String>::to("crash")
                .payload(&value)
                .partition((i % 4) as i32);
            if let Ok(d) = producer.send(record, Duration::from_secs(60)).await {
                acked_by_task
                    .lock()
                    .unwrap()
                    .insert(value, (d.partition, d.offset));
            }
        }));
        if i == total / 3 {
            // Let some of it be acknowledged, then kill the broker mid-stream.
            while acked.lock().unwrap().len() < 1000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            broker.kill9();
            let log = broker.log_text();
            assert!(!log.contains("panicked"), "{log}");
            broker.spawn();
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 1000, "only {} acknowledged", acked.len());
    let got = consume(&broker, "crash", 4, Offset::Beginning, acked.len());
    let mut seen: HashMap<String, (i32, i64)> = HashMap::new();
    for (p, records) in &got {
        for (offset, r) in records {
            let value = String::from_utf8(r.value.clone().unwrap()).unwrap();
            assert!(
                seen.insert(value.clone(), (*p, *offset)).is_none(),
                "{value} is in the log twice"
            );
        }
    }
    for (value, position) in &acked {
        assert_eq!(
            seen.get(value),
            Some(position),
            "acknowledged {value} is missing or moved"
        );
    }
}

/// Subscribes with a group, reads until `expected` records arrived, commits, closes.
fn group_read(broker: &Broker, group: &str, topic: &str, expected: usize) -> Vec<(i32, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(broker))
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < expected && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            got.push((m.partition(), m.offset()));
        }
    }
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    got.sort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_consumer_commits_and_resumes_across_a_broker_restart() {
    let mut broker = Broker::start(2, &[]);
    create_topic(&broker, "grouped", 4).await;
    let producer = producer(&broker, &[]);
    let record = |i: u32| Record {
        key: None,
        value: Some(format!("g{i}").into_bytes()),
        headers: Vec::new(),
    };
    for i in 0..40 {
        send(&producer, "grouped", Some((i % 4) as i32), &record(i)).await;
    }
    let all: Vec<(i32, i64)> = (0..4).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    let broker_ref = &broker;
    let got = tokio::task::block_in_place(|| group_read(broker_ref, "rd-group", "grouped", 40));
    assert_eq!(got, all);
    broker.kill9();
    broker.spawn();
    let producer = self::producer(&broker, &[]);
    send(&producer, "grouped", Some(2), &record(99)).await;
    let broker_ref = &broker;
    let got = tokio::task::block_in_place(|| group_read(broker_ref, "rd-group", "grouped", 1));
    assert_eq!(got, vec![(2, 10)]);
}

/// Every value in `topic` readable at `isolation`, sorted; reads until nothing new came for
/// a second.
fn values_at(broker: &Broker, topic: &str, partitions: i32, isolation: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap(broker))
        .set("group.id", "rdkafka-compat-isolation")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while quiet_since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            out.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
            quiet_since = Instant::now();
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_abort_across_shards() {
    use rdkafka::producer::Producer;
    let broker = Broker::start(2, &[]);
    create_topic(&broker, "txn", 4).await;
    let producer = producer(&broker, &[("transactional.id", "rd-txn")]);
    let timeout = Duration::from_secs(10);
    tokio::task::block_in_place(|| producer.init_transactions(timeout)).unwrap();
    let round = |tag: &'static str| {
        let producer = &producer;
        async move {
            producer.begin_transaction().unwrap();
            for p in 0..4 {
                let record = Record {
                    key: None,
                    value: Some(format!("{tag}-{p}").into_bytes()),
                    headers: Vec::new(),
                };
                send(producer, "txn", Some(p), &record).await;
            }
        }
    };
    round("committed").await;
    tokio::task::block_in_place(|| producer.commit_transaction(timeout)).unwrap();
    // Every record is acknowledged (so written) before the abort.
    round("aborted").await;
    tokio::task::block_in_place(|| producer.abort_transaction(timeout)).unwrap();
    round("again").await;
    tokio::task::block_in_place(|| producer.commit_transaction(timeout)).unwrap();
    let broker_ref = &broker;
    let committed =
        tokio::task::block_in_place(|| values_at(broker_ref, "txn", 4, "read_committed"));
    let all = tokio::task::block_in_place(|| values_at(broker_ref, "txn", 4, "read_uncommitted"));
    let expect = |tags: &[&str]| {
        let mut v: Vec<String> = tags
            .iter()
            .flat_map(|t| (0..4).map(move |p| format!("{t}-{p}")))
            .collect();
        v.sort();
        v
    };
    assert_eq!(committed, expect(&["committed", "again"]));
    assert_eq!(all, expect(&["committed", "aborted", "again"]));
}
