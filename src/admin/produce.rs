//! `strand produce TOPIC`: lines of stdin become records, as kafka-console-producer and
//! kcat write them. Records are gathered into batches (at most [`BATCH_RECORDS_MAX`]
//! records or [`BATCH_BYTES_MAX`] bytes per Produce, or what arrived within
//! [`LINGER`]), one batch per partition, each sent to its partition's leader (Metadata);
//! retriable errors are retried after a metadata refresh until `--timeout-ms` passes. No
//! idempotence: a retried batch may be written twice (at least once).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use serde_json::json;

use super::client::{describe_error, Failure};
use super::progress::{self, Progress};
use super::{finish, print_json, text, Connection, Format, Session};
use crate::protocol::records::{BatchBuilder, Header, ProducerFields};

/// Records per Produce request, at most.
pub const BATCH_RECORDS_MAX: usize = 1000;
/// Uncompressed record bytes per Produce request, at most (a bit under 1 MiB, so that a
/// full batch stays within the default `max.message.bytes`).
pub const BATCH_BYTES_MAX: usize = 1_000_000;
/// How long a record read waits for more before its batch goes out.
pub const LINGER: Duration = Duration::from_millis(50);

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    connection: Connection,
    /// The topic to write to (it must exist).
    topic: String,
    /// Split each line into key and value at the first SEP; a line without SEP is an
    /// error, as with kafka-console-producer's `parse.key`. Without it: null keys.
    #[arg(short = 'K', long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record, `KEY=VALUE` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Write every record to this partition. Default: a keyed record to Kafka's murmur2
    /// partition of its key, as the Java client; records without a key to one partition
    /// per batch, the next one for the next batch.
    #[arg(short = 'p', long)]
    partition: Option<i32>,
    /// Acknowledgements awaited: all in-sync replicas, the leader only, none.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    acks: Acks,
    /// Compression of the batches.
    #[arg(short = 'z', long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// No summary on stderr at the end.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    All,
    #[value(name = "1")]
    Leader,
    #[value(name = "0")]
    None,
}

impl Acks {
    fn code(self) -> i16 {
        match self {
            Acks::All => -1,
            Acks::Leader => 1,
            Acks::None => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec bits of a batch's attributes.
    fn codec(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Runs `strand produce`; returns the process exit code.
pub fn produce(args: ProduceArgs) -> i32 {
    finish(run(&args))
}

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        if rest.len() == 3 {
            h ^= u32::from(rest[2]) << 16;
        }
        if rest.len() >= 2 {
            h ^= u32::from(rest[1]) << 8;
        }
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner gives a key.
pub fn key_partition(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % partitions) as i32
}

/// A `KEY=VALUE` header argument.
fn parse_header(spec: &str) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let (key, value) = spec
        .split_once('=')
        .ok_or_else(|| Failure::new(format!("--header {spec:?}: expected KEY=VALUE")))?;
    Ok((key.as_bytes().to_vec(), value.as_bytes().to_vec()))
}

/// Splits a line into key and value at the first `separator`.
fn split_key<'a>(line: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    if separator.is_empty() || line.len() < separator.len() {
        return None;
    }
    let at = line.windows(separator.len()).position(|w| w == separator)?;
    Some((&line[..at], &line[at + separator.len()..]))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the reader thread hands over: a line (its end of line removed), or a read error.
type Line = std::io::Result<Vec<u8>>;

/// Reads stdin line by line into `lines`, until its end or until nobody listens.
fn read_lines(lines: mpsc::SyncSender<Line>) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if lines.send(Ok(line)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = lines.send(Err(e));
                return;
            }
        }
    }
}

/// Records gathered for the next Produce, by partition: each batch's base timestamp and
/// its records.
struct Pending {
    builders: BTreeMap<i32, (i64, BatchBuilder)>,
    records: usize,
    bytes: usize,
    /// When the first of them was read.
    since: Option<Instant>,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            builders: BTreeMap::new(),
            records: 0,
            bytes: 0,
            since: None,
        }
    }

    /// Adds a record stamped now (CreateTime).
    fn push(&mut self, partition: i32, key: Option<&[u8]>, value: &[u8], headers: Vec<Header>) {
        let now = now_ms();
        let (base, builder) = self
            .builders
            .entry(partition)
            .or_insert_with(|| (now, BatchBuilder::new(now, 4096)));
        let before = builder.records_bytes();
        builder.push(now - *base, key, Some(value), headers);
        self.bytes += builder.records_bytes() - before;
        self.records += 1;
        self.since.get_or_insert_with(Instant::now);
    }

    fn full(&self) -> bool {
        self.records >= BATCH_RECORDS_MAX || self.bytes >= BATCH_BYTES_MAX
    }
}

/// A sealed batch for one partition, and how many records it holds.
struct Sealed {
    batch: Bytes,
    records: usize,
}

/// The state of one `strand produce`.
struct Producer<'a> {
    args: &'a ProduceArgs,
    session: Session,
    /// Partition → (leader, epoch).
    partitions: BTreeMap<i32, (i32, i32)>,
    /// The partition of the next batch of keyless records.
    sticky: i32,
    written: usize,
    by_partition: BTreeMap<i32, usize>,
    progress: Progress,
}

impl Producer<'_> {
    /// Seals the pending batches and sends them; `Err` if one could not be written.
    fn flush(&mut self, pending: &mut Pending) -> Result<(), Failure> {
        let codec = self.args.compression.codec();
        let mut sealed = BTreeMap::new();
        for (partition, (_, builder)) in std::mem::take(&mut pending.builders) {
            let records = builder.count() as usize;
            let batch = builder
                .finish(0, codec, ProducerFields::NONE)
                .map_err(|e| Failure::new(format!("cannot compress a batch: {e}")))?;
            sealed.insert(
                partition,
                Sealed {
                    batch: Bytes::from(batch),
                    records,
                },
            );
        }
        *pending = Pending::new();
        if sealed.is_empty() {
            return Ok(());
        }
        self.send(sealed)?;
        // The next keyless batch goes to the next partition.
        self.sticky = (self.sticky + 1).rem_euclid(self.partitions.len().max(1) as i32);
        self.show_progress(false);
        Ok(())
    }

    /// Sends `batches` to their leaders, retrying what fails with a retriable error after
    /// a metadata refresh, until `--timeout-ms` has passed.
    fn send(&mut self, mut batches: BTreeMap<i32, Sealed>) -> Result<(), Failure> {
        let timeout = Duration::from_millis(self.args.connection.timeout_ms.max(1));
        let deadline = Instant::now() + timeout;
        let topic = self.args.topic.clone();
        let timeout_ms = self.args.connection.timeout_ms.min(i32::MAX as u64) as i32;
        let mut backoff = Duration::from_millis(100);
        loop {
            // Partition → why its last attempt failed.
            let mut retry: BTreeMap<i32, String> = BTreeMap::new();
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            for &partition in batches.keys() {
                match self.partitions.get(&partition) {
                    Some(&(leader, _)) if leader >= 0 => {
                        by_leader.entry(leader).or_default().push(partition)
                    }
                    _ => {
                        retry.insert(partition, describe_error(5, None));
                    }
                }
            }
            for (leader, partitions) in by_leader {
                let request = ProduceRequest::default()
                    .with_acks(self.args.acks.code())
                    .with_timeout_ms(timeout_ms)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(text(&topic)))
                        .with_partition_data(
                            partitions
                                .iter()
                                .map(|p| {
                                    PartitionProduceData::default()
                                        .with_index(*p)
                                        .with_records(Some(batches[p].batch.clone()))
                                })
                                .collect(),
                        )]);
                let acks = self.args.acks;
                let answer = self.session.broker(leader).and_then(|conn| {
                    let version = conn.version(ApiKey::Produce, 3, 11)?;
                    if acks == Acks::None {
                        conn.send(ApiKey::Produce, version, &request).map(|()| None)
                    } else {
                        conn.call::<_, ProduceResponse>(ApiKey::Produce, version, &request)
                            .map(Some)
                    }
                });
                let response = match answer {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        for p in partitions {
                            let done = batches.remove(&p).expect("a batch");
                            self.count(p, done.records);
                        }
                        continue;
                    }
                    Err(failure) => {
                        self.session.forget(leader);
                        for p in partitions {
                            retry.insert(p, failure.message.clone());
                        }
                        continue;
                    }
                };
                for t in &response.responses {
                    for p in &t.partition_responses {
                        if !batches.contains_key(&p.index) {
                            continue;
                        }
                        match p.error_code {
                            0 => {
                                let done = batches.remove(&p.index).expect("a batch");
                                self.count(p.index, done.records);
                            }
                            code if retriable(code) => {
                                retry.insert(
                                    p.index,
                                    describe_error(code, p.error_message.as_deref()),
                                );
                            }
                            code => {
                                return Err(self.failed(
                                    p.index,
                                    &describe_error(code, p.error_message.as_deref()),
                                    hint(code),
                                ))
                            }
                        }
                    }
                }
                for p in partitions {
                    if batches.contains_key(&p) && !retry.contains_key(&p) {
                        retry.insert(p, "the leader did not answer for it".into());
                    }
                }
            }
            if batches.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let (partition, why) = retry.into_iter().next().expect("a failed partition");
                return Err(self.failed(
                    partition,
                    &why,
                    " (still failing after --timeout-ms; is the cluster up and the partition led?)",
                ));
            }
            std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
            backoff = (backoff * 2).min(Duration::from_secs(1));
            if let Ok(partitions) = self.session.partitions(&topic) {
                self.partitions = partitions;
            }
        }
    }

    fn count(&mut self, partition: i32, records: usize) {
        self.written += records;
        *self.by_partition.entry(partition).or_default() += records;
    }

    fn failed(&self, partition: i32, why: &str, hint: &str) -> Failure {
        Failure::new(format!(
            "cannot produce to {}/{partition}: {why}{hint}; {} record(s) written before",
            self.args.topic, self.written
        ))
    }

    /// On a terminal, the count so far (`last`: the command is done, the line goes).
    fn show_progress(&mut self, last: bool) {
        if last {
            self.progress.clear();
        } else {
            let written = self.written as u64;
            self.progress
                .update(|| progress::counted(written, None, "records written"));
        }
    }
}

/// Errors after which the same batch may succeed once the metadata is fresh.
fn retriable(code: i16) -> bool {
    matches!(
        code,
        3   // UNKNOWN_TOPIC_OR_PARTITION
        | 5   // LEADER_NOT_AVAILABLE
        | 6   // NOT_LEADER_OR_FOLLOWER
        | 7   // REQUEST_TIMED_OUT
        | 13  // NETWORK_EXCEPTION
        | 19  // NOT_ENOUGH_REPLICAS
        | 20  // NOT_ENOUGH_REPLICAS_AFTER_APPEND
        | 56  // KAFKA_STORAGE_ERROR
        | 74  // FENCED_LEADER_EPOCH
        | 75 // UNKNOWN_LEADER_EPOCH
    )
}

/// What to do about an error that is not retried.
fn hint(code: i16) -> &'static str {
    match code {
        10 => {
            " (a record is larger than the topic's max.message.bytes: shorter lines, or compression)"
        }
        29 => " (this client may not write to the topic)",
        87 => " (the broker refused a record)",
        _ => "",
    }
}

fn run(args: &ProduceArgs) -> Result<i32, Failure> {
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    if args.key_separator.as_deref() == Some("") {
        return Err(Failure::new("--key-separator must not be empty"));
    }
    let mut session = Session::open(&args.connection)?;
    let partitions = session.partitions(&args.topic)?;
    if partitions.is_empty() {
        return Err(Failure::new(format!(
            "topic {} has no partitions",
            args.topic
        )));
    }
    if let Some(p) = args.partition {
        if !partitions.contains_key(&p) {
            return Err(Failure::new(format!(
                "topic {} has no partition {p} (it has {})",
                args.topic,
                partitions.len()
            )));
        }
    }
    let sticky = (now_ms().rem_euclid(partitions.len() as i64)) as i32;
    let mut producer = Producer {
        args,
        session,
        partitions,
        sticky,
        written: 0,
        by_partition: BTreeMap::new(),
        progress: Progress::on_terminal(args.quiet),
    };

    let (sender, lines) = mpsc::sync_channel::<Line>(4 * BATCH_RECORDS_MAX);
    std::thread::spawn(move || read_lines(sender));
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let headers_len: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut pending = Pending::new();
    let mut line_number = 0usize;
    let outcome = loop {
        let next = match pending.since {
            None => lines
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(since) => {
                lines.recv_timeout((since + LINGER).saturating_duration_since(Instant::now()))
            }
        };
        let line = match next {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                break producer
                    .flush(&mut pending)
                    .and(Err(Failure::new(format!("cannot read stdin: {e}"))))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(failure) = producer.flush(&mut pending) {
                    break Err(failure);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break producer.flush(&mut pending),
        };
        line_number += 1;
        let (key, value) = match separator {
            None => (None, &line[..]),
            Some(separator) => match split_key(&line, separator) {
                Some((key, value)) => (Some(key), value),
                None => {
                    let sent = producer.flush(&mut pending);
                    break sent.and(Err(Failure::new(format!(
                        "line {line_number}: no key separator {:?} (with --key-separator every \
                         line is KEY{}VALUE); {} record(s) written before",
                        args.key_separator.as_deref().unwrap_or_default(),
                        args.key_separator.as_deref().unwrap_or_default(),
                        producer.written
                    ))));
                }
            },
        };
        // A batch stays within BATCH_BYTES_MAX unless one record alone is larger.
        let size = key.map_or(0, <[u8]>::len) + value.len() + headers_len + 32;
        if pending.records > 0 && pending.bytes + size > BATCH_BYTES_MAX {
            if let Err(failure) = producer.flush(&mut pending) {
                break Err(failure);
            }
        }
        let partition = match (args.partition, key) {
            (Some(p), _) => p,
            (None, Some(key)) => key_partition(key, producer.partitions.len()),
            (None, None) => producer.sticky,
        };
        let record_headers: Vec<Header> = headers
            .iter()
            .map(|(k, v)| (&k[..], Some(&v[..])))
            .collect();
        pending.push(partition, key, value, record_headers);
        if pending.full() {
            if let Err(failure) = producer.flush(&mut pending) {
                break Err(failure);
            }
        }
    };
    producer.show_progress(true);
    outcome?;
    let topic = &args.topic;
    match args.connection.format {
        Format::Json => print_json(&json!({
            "topic": topic,
            "records": producer.written,
            "partitions": producer
                .by_partition
                .iter()
                .map(|(p, n)| (p.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
        })),
        Format::Table => {
            if !args.quiet {
                let verb = if args.acks == Acks::None {
                    "sent"
                } else {
                    "written"
                };
                eprintln!("{} record(s) {verb} to {topic}", producer.written);
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_is_kafkas() {
        // Kafka's UtilsTest.testMurmur2.
        for (key, hash) in [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ] {
            assert_eq!(murmur2(key.as_bytes()), hash, "{key}");
        }
    }

    #[test]
    fn keys_split_at_the_first_separator() {
        assert_eq!(split_key(b"k:v:w", b":"), Some((&b"k"[..], &b"v:w"[..])));
        assert_eq!(split_key(b":v", b":"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_key(b"k::v", b"::"), Some((&b"k"[..], &b"v"[..])));
        assert_eq!(split_key(b"kv", b":"), None);
        assert_eq!(split_key(b"", b":"), None);
        assert!(parse_header("a=b=c").unwrap() == (b"a".to_vec(), b"b=c".to_vec()));
        assert!(parse_header("ab").is_err());
    }
}
