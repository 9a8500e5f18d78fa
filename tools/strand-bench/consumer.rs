//! One consumer: a fetch loop per partition leader, positions tracked by the consumer
//! itself (no group, no commits: the benchmark measures the data path, not the group
//! protocol).
//!
//! Each loop keeps one Fetch outstanding on its connection, counts the records at or
//! after each partition's position, and — for end-to-end runs — reads every record's
//! stamp and records the time from its intended send to now.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::batch::read_fetched;
use crate::client::{ClusterMap, Conn};
use crate::report::new_histogram;
use crate::Progress;

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub topic: String,
    pub map: ClusterMap,
    /// (partition, start offset, end offset or `None` to follow the producers).
    pub partitions: Vec<(i32, i64, Option<i64>)>,
    /// Stop once every consumer together has this many records.
    pub count_max: u64,
    pub measure_latency: bool,
    pub fetch_max_bytes: i32,
    pub partition_max_bytes: i32,
    pub max_wait_ms: i32,
    pub start: Instant,
    /// Give up at this time from the start.
    pub deadline: Duration,
}

pub struct ConsumerResult {
    pub received: u64,
    /// Time of the last record received, from the start.
    pub last_receive: Duration,
    pub latency: Histogram<u64>,
    pub errors: Vec<String>,
}

struct Shared {
    received: u64,
    last_receive: Duration,
    latency: Histogram<u64>,
    errors: Vec<String>,
}

pub async fn run(config: ConsumerConfig, progress: Arc<Progress>) -> ConsumerResult {
    let shared = Rc::new(RefCell::new(Shared {
        received: 0,
        last_receive: Duration::ZERO,
        latency: new_histogram(),
        errors: Vec::new(),
    }));
    let config = Rc::new(config);
    let mut tasks = Vec::new();
    for broker in config.map.brokers.keys() {
        let mine: Vec<(i32, i64, Option<i64>)> = config
            .partitions
            .iter()
            .copied()
            .filter(|(p, _, _)| config.map.leaders[*p as usize] == *broker)
            .collect();
        if mine.is_empty() {
            continue;
        }
        tasks.push(glommio::spawn_local(fetch_loop(
            config.clone(),
            *broker,
            mine,
            shared.clone(),
            progress.clone(),
        )));
    }
    for task in tasks {
        task.await;
    }
    let mut shared = shared.borrow_mut();
    ConsumerResult {
        received: shared.received,
        last_receive: shared.last_receive,
        latency: std::mem::replace(&mut shared.latency, new_histogram()),
        errors: std::mem::take(&mut shared.errors),
    }
}

fn finished(config: &ConsumerConfig, progress: &Progress) -> bool {
    let consumed = progress.consumed.load(Ordering::Relaxed);
    if consumed >= config.count_max {
        return true;
    }
    // Following producers: done once they are and everything they had acknowledged
    // (acks=0: sent) has arrived.
    progress.producers_done.load(Ordering::Relaxed)
        && consumed >= progress.acked.load(Ordering::Relaxed)
}

async fn fetch_loop(
    config: Rc<ConsumerConfig>,
    broker: i32,
    mut partitions: Vec<(i32, i64, Option<i64>)>,
    shared: Rc<RefCell<Shared>>,
    progress: Arc<Progress>,
) {
    let fail = |err: String| {
        progress.errors.fetch_add(1, Ordering::Relaxed);
        shared.borrow_mut().errors.push(err);
    };
    let mut conn = match Conn::connect(&config.map.brokers[&broker]).await {
        Ok(conn) => conn,
        Err(err) => return fail(err),
    };
    let version = config.map.versions.fetch;
    let topic = TopicName(StrBytes::from_string(config.topic.clone()));
    let follows = partitions.iter().any(|(_, _, end)| end.is_none());
    loop {
        partitions.retain(|(_, position, end)| end.is_none_or(|end| *position < end));
        if partitions.is_empty() || (follows && finished(&config, &progress)) {
            return;
        }
        if !follows && progress.consumed.load(Ordering::Relaxed) >= config.count_max {
            return;
        }
        if config.start.elapsed() >= config.deadline {
            return fail(format!(
                "consumer of broker {broker} gave up at the deadline with {} partitions unfinished",
                partitions.len()
            ));
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(config.max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(config.fetch_max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&(p, position, _)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(position)
                                .with_partition_max_bytes(config.partition_max_bytes)
                        })
                        .collect(),
                )]);
        let response = match conn
            .call::<_, FetchResponse>(ApiKey::Fetch, version, &request)
            .await
        {
            Ok(response) => response,
            Err(err) => return fail(format!("fetch from broker {broker}: {err}")),
        };
        if response.error_code != 0 {
            return fail(format!("fetch: error {}", response.error_code));
        }
        let now_ns = config.start.elapsed().as_nanos() as u64;
        let mut got = 0u64;
        for t in &response.responses {
            for data in &t.partitions {
                if data.error_code != 0 {
                    return fail(format!(
                        "fetch partition {}: error {}",
                        data.partition_index, data.error_code
                    ));
                }
                let Some(slot) = partitions
                    .iter_mut()
                    .find(|(p, _, _)| *p == data.partition_index)
                else {
                    continue;
                };
                let blob = data.records.as_deref().unwrap_or(&[]);
                let read = if config.measure_latency {
                    let latency = &mut shared.borrow_mut().latency;
                    read_fetched(
                        blob,
                        slot.1,
                        Some(&mut |stamp| {
                            latency.saturating_record(now_ns.saturating_sub(stamp).max(1));
                        }),
                    )
                } else {
                    read_fetched(blob, slot.1, None)
                };
                let fetched = match read {
                    Ok(fetched) => fetched,
                    Err(err) => return fail(format!("partition {}: {err}", data.partition_index)),
                };
                if let Some(next) = fetched.next_offset {
                    slot.1 = slot.1.max(next);
                }
                shared.borrow_mut().received += fetched.records;
                got += fetched.records;
            }
        }
        if got > 0 {
            shared.borrow_mut().last_receive = Duration::from_nanos(now_ns);
            progress.consumed.fetch_add(got, Ordering::Relaxed);
        }
    }
}
