//! One producer: an open-loop generator, an accumulator of per-partition batches, and per
//! broker a sender and a receiver task.
//!
//! The shape is the Kafka producer's. The generator appends each message when the
//! schedule makes it due to the open batch of the current partition (sticky: the next
//! partition takes over when a batch is sealed), and seals a batch when it is full. A
//! broker's sender takes a sealed batch — or an open one that has lingered long enough —
//! whenever the connection has fewer than `max_in_flight` requests outstanding, and
//! writes a Produce request; the receiver pairs responses with requests in order and
//! records, for every message, the time from its *intended* send to the acknowledgement.
//! When the buffer of unacknowledged bytes is full the generator waits, but the schedule
//! does not: messages that fall due meanwhile keep their intended times, so a stall shows
//! up in the latencies instead of being hidden (no coordinated omission).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use strand::util::Notify;

use crate::batch::{BatchBuilder, Codec, ProducerFields, STAMP_BYTES};
use crate::client::{decode_response, ClusterMap, Conn, ConnReader, ConnWriter, Error};
use crate::rate::Schedule;
use crate::report::new_histogram;
use crate::Progress;

/// Messages the generator appends before it lets the other tasks run.
const GENERATE_CHUNK: u64 = 512;

#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub topic: String,
    pub map: ClusterMap,
    /// Partitions this producer writes to, in sticky rotation order.
    pub partitions: Vec<i32>,
    pub message_bytes: usize,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub acks: i16,
    pub max_in_flight: usize,
    pub codec: Codec,
    /// Producer id and epoch when idempotent.
    pub idempotence: Option<(i64, i16)>,
    pub buffer_bytes: usize,
    pub schedule: Schedule,
    pub start: Instant,
    pub timeout_ms: i32,
}

pub struct ProducerResult {
    pub acked: u64,
    /// Time of the last acknowledgement, from the start.
    pub last_ack: Duration,
    pub latency: Histogram<u64>,
    pub errors: Vec<String>,
}

struct OpenBatch {
    builder: BatchBuilder,
    stamps: Vec<u64>,
    opened: Instant,
}

struct Lane {
    partition: i32,
    /// Index of the partition leader's connection.
    conn: usize,
    open: Option<OpenBatch>,
    next_sequence: i32,
}

struct Sealed {
    partition: i32,
    batch: Bytes,
    stamps: Vec<u64>,
}

struct InFlight {
    correlation_id: i32,
    sealed: Sealed,
}

struct State {
    config: ProducerConfig,
    progress: Arc<Progress>,
    filler: Vec<u8>,
    lanes: RefCell<Vec<Lane>>,
    /// Sealed batches waiting for a send slot, per connection.
    ready: RefCell<Vec<VecDeque<Sealed>>>,
    in_flight: Vec<RefCell<VecDeque<InFlight>>>,
    /// Value bytes appended and not yet acknowledged.
    unacked_bytes: Cell<usize>,
    generating: Cell<bool>,
    /// A batch was sealed or opened, a request was answered, or the run is ending.
    changed: Notify,
    failed: Cell<bool>,
    acked: Cell<u64>,
    last_ack: Cell<Duration>,
    latency: RefCell<Histogram<u64>>,
    errors: RefCell<Vec<String>>,
}

impl State {
    fn fail(&self, err: String) {
        if self.errors.borrow().len() < 20 {
            self.errors.borrow_mut().push(err);
        }
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        self.failed.set(true);
        self.generating.set(false);
        self.changed.notify_all();
    }

    fn now_ns(&self) -> u64 {
        self.config.start.elapsed().as_nanos() as u64
    }

    fn seal(&self, lane: &mut Lane) {
        let Some(open) = lane.open.take() else {
            return;
        };
        let count = open.builder.count();
        let producer = match self.config.idempotence {
            Some((producer_id, producer_epoch)) => ProducerFields {
                producer_id,
                producer_epoch,
                base_sequence: lane.next_sequence,
            },
            None => ProducerFields::NONE,
        };
        lane.next_sequence = strand::protocol::batch::increment_sequence(lane.next_sequence, count);
        let batch = open.builder.finish(self.config.codec, producer);
        self.ready.borrow_mut()[lane.conn].push_back(Sealed {
            partition: lane.partition,
            batch,
            stamps: open.stamps,
        });
    }

    /// A batch for connection `conn` that may be sent now, sealing a lingering one.
    fn take_ready(&self, conn: usize) -> Option<Sealed> {
        if let Some(sealed) = self.ready.borrow_mut()[conn].pop_front() {
            return Some(sealed);
        }
        let mut lanes = self.lanes.borrow_mut();
        let closing = !self.generating.get();
        let lane = lanes.iter_mut().find(|l| {
            l.conn == conn
                && l.open
                    .as_ref()
                    .is_some_and(|o| closing || o.opened.elapsed() >= self.config.linger)
        })?;
        self.seal(lane);
        drop(lanes);
        self.ready.borrow_mut()[conn].pop_front()
    }

    /// When the oldest open batch of connection `conn` will have lingered long enough.
    fn linger_deadline(&self, conn: usize) -> Option<Instant> {
        self.lanes
            .borrow()
            .iter()
            .filter(|l| l.conn == conn)
            .filter_map(|l| l.open.as_ref().map(|o| o.opened + self.config.linger))
            .min()
    }

    fn has_work(&self, conn: usize) -> bool {
        !self.ready.borrow()[conn].is_empty()
            || self
                .lanes
                .borrow()
                .iter()
                .any(|l| l.conn == conn && l.open.is_some())
    }

    fn acknowledge(&self, sealed: &Sealed) {
        let now_ns = self.now_ns();
        let mut latency = self.latency.borrow_mut();
        for &stamp in &sealed.stamps {
            latency.saturating_record(now_ns.saturating_sub(stamp).max(1));
        }
        drop(latency);
        let count = sealed.stamps.len() as u64;
        self.acked.set(self.acked.get() + count);
        self.last_ack.set(Duration::from_nanos(now_ns));
        self.progress.acked.fetch_add(count, Ordering::Relaxed);
        self.release(sealed);
    }

    fn release(&self, sealed: &Sealed) {
        let bytes = sealed.stamps.len() * self.config.message_bytes;
        self.unacked_bytes
            .set(self.unacked_bytes.get().saturating_sub(bytes));
        self.changed.notify_all();
    }
}

/// Runs one producer to the end of its schedule and until every batch is answered.
pub async fn run(config: ProducerConfig, progress: Arc<Progress>) -> ProducerResult {
    let brokers: Vec<i32> = {
        let mut ids: Vec<i32> = config
            .partitions
            .iter()
            .map(|&p| config.map.leaders[p as usize])
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let lanes = config
        .partitions
        .iter()
        .map(|&p| Lane {
            partition: p,
            conn: brokers
                .iter()
                .position(|&b| b == config.map.leaders[p as usize])
                .expect("leader listed"),
            open: None,
            next_sequence: 0,
        })
        .collect();
    let state = Rc::new(State {
        filler: crate::batch::filler(config.message_bytes.saturating_sub(STAMP_BYTES)),
        lanes: RefCell::new(lanes),
        ready: RefCell::new(brokers.iter().map(|_| VecDeque::new()).collect()),
        in_flight: brokers
            .iter()
            .map(|_| RefCell::new(VecDeque::new()))
            .collect(),
        unacked_bytes: Cell::new(0),
        generating: Cell::new(true),
        changed: Notify::default(),
        failed: Cell::new(false),
        acked: Cell::new(0),
        last_ack: Cell::new(Duration::ZERO),
        latency: RefCell::new(new_histogram()),
        errors: RefCell::new(Vec::new()),
        progress,
        config,
    });

    let mut tasks = Vec::new();
    for (index, broker) in brokers.iter().enumerate() {
        let addr = state.config.map.brokers[broker].clone();
        let conn = match Conn::connect(&addr).await {
            Ok(conn) => conn,
            Err(err) => {
                state.fail(err);
                break;
            }
        };
        let Conn { writer, reader, .. } = conn;
        tasks.push(glommio::spawn_local(send_loop(
            state.clone(),
            index,
            writer,
        )));
        if state.config.acks != 0 {
            tasks.push(glommio::spawn_local(receive_loop(
                state.clone(),
                index,
                reader,
            )));
        }
    }
    if !state.failed.get() {
        generate(&state).await;
    }
    state.generating.set(false);
    state.changed.notify_all();
    for task in tasks {
        task.await;
    }
    let latency = std::mem::replace(&mut *state.latency.borrow_mut(), new_histogram());
    let errors = std::mem::take(&mut *state.errors.borrow_mut());
    ProducerResult {
        acked: state.acked.get(),
        last_ack: state.last_ack.get(),
        latency,
        errors,
    }
}

async fn generate(state: &Rc<State>) {
    let config = &state.config;
    let mut schedule = config.schedule.clone();
    let lane_count = state.lanes.borrow().len();
    let mut current = 0usize;
    let value_len = config.message_bytes.max(STAMP_BYTES);
    let filler = &state.filler[..value_len - STAMP_BYTES];
    // The schedule starts once the connections are up: connecting is the client's set-up,
    // not the broker's latency. Stamps stay relative to the run's start.
    let origin_ns = state.now_ns();
    loop {
        if state.failed.get() {
            return;
        }
        let now_ns = state.now_ns() - origin_ns;
        let Some(due_ns) = schedule.next_due_ns(now_ns) else {
            return;
        };
        if due_ns > now_ns {
            glommio::timer::sleep(Duration::from_nanos(due_ns - now_ns)).await;
            continue;
        }
        let seen = state.changed.generation();
        let room = config
            .buffer_bytes
            .saturating_sub(state.unacked_bytes.get())
            / value_len;
        if room == 0 {
            state.changed.wait(seen).await;
            continue;
        }
        let timestamp_ms = strand::util::now_ms();
        let taken = {
            let mut lanes = state.lanes.borrow_mut();
            schedule.take_due(now_ns, (room as u64).min(GENERATE_CHUNK), |stamp| {
                let lane = &mut lanes[current];
                let open = lane.open.get_or_insert_with(|| OpenBatch {
                    builder: BatchBuilder::new(timestamp_ms, config.batch_bytes.min(1 << 20)),
                    stamps: Vec::new(),
                    opened: Instant::now(),
                });
                open.builder.push(origin_ns + stamp, filler, timestamp_ms);
                open.stamps.push(origin_ns + stamp);
                let next = BatchBuilder::record_bytes(value_len, open.builder.count());
                if open.builder.records_bytes() + next > config.batch_bytes {
                    state.seal(lane);
                    current = (current + 1) % lane_count;
                }
            })
        };
        state
            .unacked_bytes
            .set(state.unacked_bytes.get() + taken as usize * value_len);
        state.progress.sent.fetch_add(taken, Ordering::Relaxed);
        state.changed.notify_all();
        futures_lite::future::yield_now().await;
    }
}

async fn send_loop(state: Rc<State>, conn: usize, mut writer: ConnWriter) {
    let config = &state.config;
    let topic = TopicName(StrBytes::from_string(config.topic.clone()));
    loop {
        let seen = state.changed.generation();
        if state.failed.get() {
            return;
        }
        if !state.generating.get() && !state.has_work(conn) {
            return;
        }
        if state.in_flight[conn].borrow().len() >= config.max_in_flight {
            state.changed.wait(seen).await;
            continue;
        }
        let Some(sealed) = state.take_ready(conn) else {
            match state.linger_deadline(conn) {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    futures_lite::future::or(state.changed.wait(seen), async {
                        glommio::timer::sleep(wait).await
                    })
                    .await
                }
                None => state.changed.wait(seen).await,
            }
            continue;
        };
        let request = ProduceRequest::default()
            .with_acks(config.acks)
            .with_timeout_ms(config.timeout_ms)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(sealed.partition)
                    .with_records(Some(sealed.batch.clone()))])]);
        let sent = writer
            .send(ApiKey::Produce, config.map.versions.produce, &request)
            .await;
        match sent {
            Err(err) => {
                state.fail(format!("produce to connection {conn}: {err}"));
                return;
            }
            Ok(_) if config.acks == 0 => state.acknowledge(&sealed),
            Ok(correlation_id) => {
                state.in_flight[conn].borrow_mut().push_back(InFlight {
                    correlation_id,
                    sealed,
                });
                state.changed.notify_all();
            }
        }
    }
}

async fn receive_loop(state: Rc<State>, conn: usize, mut reader: ConnReader) {
    let version = state.config.map.versions.produce;
    loop {
        let seen = state.changed.generation();
        if state.failed.get() {
            return;
        }
        if state.in_flight[conn].borrow().is_empty() {
            if !state.generating.get() && !state.has_work(conn) {
                return;
            }
            state.changed.wait(seen).await;
            continue;
        }
        let frame = reader.recv().await;
        let Some(request) = state.in_flight[conn].borrow_mut().pop_front() else {
            state.fail("a response arrived with no request outstanding".into());
            return;
        };
        let response = frame.and_then(|mut frame| {
            decode_response::<ProduceResponse>(
                ApiKey::Produce,
                version,
                request.correlation_id,
                &mut frame,
            )
        });
        match response.and_then(|r| check_produce(&r)) {
            Ok(()) => state.acknowledge(&request.sealed),
            Err(err) => {
                state.release(&request.sealed);
                state.fail(format!(
                    "produce to partition {}: {err}",
                    request.sealed.partition
                ));
                return;
            }
        }
    }
}

fn check_produce(response: &ProduceResponse) -> Result<(), Error> {
    let mut answered = 0;
    for topic in &response.responses {
        for p in &topic.partition_responses {
            answered += 1;
            if p.error_code != 0 {
                return Err(format!(
                    "error {} {}",
                    p.error_code,
                    p.error_message.as_deref().unwrap_or("")
                ));
            }
        }
    }
    if answered == 0 {
        return Err("empty produce response".into());
    }
    Ok(())
}
