//! `strand consume TOPIC`: records to stdout, as kcat and kafka-console-consumer print
//! them. A simple assign-mode consumer: it fetches the partitions asked for (all by
//! default) from their leaders, following leader changes; with `--group` it starts from
//! the group's committed offsets and commits as it goes (OffsetCommit with generation -1
//! and no member id, as an admin commits), without joining the group — which the
//! coordinator accepts only while the group has no active members.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::AbortedTransaction;
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};

use super::client::{describe_error, Failure};
use super::group::{commit, committed_offsets};
use super::progress::{self, Progress};
use super::{finish, text, Bootstrap, Leaders, Session, REQUEST_TIMEOUT_MS};
use crate::protocol::batch::{control_marker, iter_batches, BatchError, Marker, BATCH_HEADER_LEN};
use crate::protocol::records::{decompress, read_records, Header, DECOMPRESSED_BYTES_MAX};

/// How long a Fetch waits at the leader for records to arrive, at most.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Bytes per partition a Fetch asks for at first (doubled for a larger batch).
const PARTITION_BYTES: i32 = 1024 * 1024;
/// Bytes per partition a Fetch asks for at most.
const PARTITION_BYTES_MAX: i32 = 32 * 1024 * 1024;
/// Bytes per Fetch response.
const FETCH_BYTES_MAX: i32 = 48 * 1024 * 1024;
/// Least time between two commits of `--group` (and one at the end).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    bootstrap: Bootstrap,
    /// The topic to read.
    topic: String,
    /// Start at each partition's log start offset (default: at its end, for new records
    /// only). With `--group`: for partitions the group has no offset for.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Read only this partition (repeatable; default: all).
    #[arg(short = 'p', long = "partition", value_name = "N")]
    partitions: Vec<i32>,
    /// Start at this offset (`earliest`, `latest` or a number) of the one `--partition`
    /// given; overrides the group's offset.
    #[arg(short = 'o', long)]
    offset: Option<String>,
    /// Exit after this many records.
    #[arg(short = 'c', long, value_name = "N")]
    count: Option<u64>,
    /// Start from this group's committed offsets and commit the offsets read (without
    /// joining the group).
    #[arg(short = 'g', long)]
    group: Option<String>,
    /// Exit when no record came for this long, in milliseconds (default: wait forever).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// How each record prints: %t topic, %p partition, %o offset, %k key, %v value,
    /// %T timestamp (ms), %h headers (k=v,k=v), %% a percent sign; \n \t \r \\ escapes.
    #[arg(short = 'f', long, default_value = "%v\\n")]
    format: String,
    /// read_uncommitted shows the records of open and aborted transactions too (as
    /// kafka-console-consumer by default); read_committed only committed ones.
    #[arg(long, value_enum, default_value_t = Isolation::ReadUncommitted)]
    isolation_level: Isolation,
    /// No summary on stderr at the end.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
    #[value(name = "read_committed")]
    ReadCommitted,
}

/// Runs `strand consume`; returns the process exit code.
pub fn consume(args: ConsumeArgs) -> i32 {
    finish(run(&args))
}

/// A piece of `--format`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
}

/// Parses a kcat-style format string.
fn parse_format(format: &str) -> Result<Vec<Piece>, Failure> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut chars = format.chars();
    let mut utf8 = [0u8; 4];
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('v') => Piece::Value,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('%') => {
                    literal.push(b'%');
                    continue;
                }
                other => {
                    return Err(Failure::new(format!(
                        "--format: unknown token %{} (known: %t %p %o %k %v %T %h %%)",
                        other.map(String::from).unwrap_or_default()
                    )))
                }
            },
            '\\' => {
                literal.push(match chars.next() {
                    Some('n') => b'\n',
                    Some('t') => b'\t',
                    Some('r') => b'\r',
                    Some('\\') => b'\\',
                    other => {
                        return Err(Failure::new(format!(
                            "--format: unknown escape \\{} (known: \\n \\t \\r \\\\)",
                            other.map(String::from).unwrap_or_default()
                        )))
                    }
                });
                continue;
            }
            c => {
                literal.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
        };
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// One record as it prints.
struct Printed<'a> {
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [Header<'a>],
}

fn render(out: &mut Vec<u8>, pieces: &[Piece], topic: &str, record: &Printed) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(record.partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
            Piece::Key => out.extend_from_slice(record.key.unwrap_or_default()),
            Piece::Value => out.extend_from_slice(record.value.unwrap_or_default()),
            Piece::Timestamp => out.extend_from_slice(record.timestamp.to_string().as_bytes()),
            Piece::Headers => {
                for (i, (key, value)) in record.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(key);
                    out.push(b'=');
                    out.extend_from_slice(value.unwrap_or_default());
                }
            }
        }
    }
}

/// What [`read_batches`] found in one partition's records.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    /// The offset to fetch next.
    next: i64,
    /// Whether a whole batch was there (else the first batch is larger than was asked).
    whole_batch: bool,
    /// Whether `emit` asked to stop.
    stopped: bool,
}

/// Walks the batches of a Fetch answer from offset `from`, decompressing them, skipping
/// control batches (and with `aborted` — read_committed — the batches of aborted
/// transactions), and hands each record to `emit`, which returns false to stop.
fn read_batches(
    records: &[u8],
    from: i64,
    aborted: Option<&[AbortedTransaction]>,
    mut emit: impl FnMut(&Printed) -> bool,
    partition: i32,
) -> Result<Read, String> {
    let mut read = Read {
        next: from,
        whole_batch: false,
        stopped: false,
    };
    let read_committed = aborted.is_some();
    let mut aborted_list: Vec<(i64, i64)> = aborted
        .unwrap_or_default()
        .iter()
        .map(|a| (a.first_offset, a.producer_id.0))
        .collect();
    aborted_list.sort_unstable();
    let mut upcoming = aborted_list.into_iter().peekable();
    let mut aborting = BTreeSet::new();
    for item in iter_batches(records) {
        let (at, info) = match item {
            Ok(found) => found,
            // The answer ends within a batch: the rest comes with the next Fetch.
            Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(format!("a bad batch at offset {}: {e}", read.next)),
        };
        read.whole_batch = true;
        let batch = &records[at..at + info.len];
        let last = info.last_offset();
        if last < read.next {
            continue;
        }
        if read_committed && info.producer_id >= 0 {
            while let Some(&(first, producer)) = upcoming.peek() {
                if first > last {
                    break;
                }
                aborting.insert(producer);
                upcoming.next();
            }
            if control_marker(batch) == Some(Marker::Abort) {
                aborting.remove(&info.producer_id);
            } else if info.is_transactional() && aborting.contains(&info.producer_id) {
                read.next = last + 1;
                continue;
            }
        }
        if info.is_control() {
            read.next = last + 1;
            continue;
        }
        let area = decompress(
            info.compression(),
            &batch[BATCH_HEADER_LEN..],
            DECOMPRESSED_BYTES_MAX,
        )
        .map_err(|e| {
            format!(
                "cannot decompress the batch at offset {}: {e}",
                info.base_offset
            )
        })?;
        let list = read_records(&area, info.record_count)
            .ok_or_else(|| format!("bad records in the batch at offset {}", info.base_offset))?;
        for record in &list {
            let offset = info.base_offset + i64::from(record.offset_delta);
            if offset < read.next {
                continue;
            }
            let timestamp = if info.timestamp_type_log_append() {
                info.max_timestamp
            } else {
                info.base_timestamp + record.timestamp_delta
            };
            read.next = offset + 1;
            let more = emit(&Printed {
                partition,
                offset,
                timestamp,
                key: record.key,
                value: record.value,
                headers: &record.headers,
            });
            if !more {
                read.stopped = true;
                return Ok(read);
            }
        }
        read.next = last + 1;
    }
    Ok(read)
}

/// Where a partition is read.
struct Position {
    offset: i64,
    leader: i32,
    epoch: i32,
    max_bytes: i32,
}

/// Errors after which the partition is read again once the metadata is fresh.
fn refresh_on(code: i16) -> bool {
    matches!(
        code,
        3   // UNKNOWN_TOPIC_OR_PARTITION
        | 5   // LEADER_NOT_AVAILABLE
        | 6   // NOT_LEADER_OR_FOLLOWER
        | 7   // REQUEST_TIMED_OUT
        | 13  // NETWORK_EXCEPTION
        | 56  // KAFKA_STORAGE_ERROR
        | 74  // FENCED_LEADER_EPOCH
        | 75  // UNKNOWN_LEADER_EPOCH
        | 100 // UNKNOWN_TOPIC_ID
    )
}

/// The start offset of each partition from ListOffsets (-2 earliest, -1 latest).
fn list_start(
    session: &mut Session,
    topic: &str,
    positions: &BTreeMap<i32, Position>,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, Failure> {
    let leaders: Leaders = partitions
        .iter()
        .map(|p| ((topic.to_string(), *p), positions[p].leader))
        .collect();
    let mut out = BTreeMap::new();
    for ((_, partition), answer) in session.list_offsets(&leaders, timestamp) {
        match answer {
            Ok(offset) => out.insert(partition, offset),
            Err(why) => {
                return Err(Failure::new(format!(
                    "cannot find where to start {topic}/{partition}: {why}"
                )))
            }
        };
    }
    Ok(out)
}

fn run(args: &ConsumeArgs) -> Result<i32, Failure> {
    let pieces = parse_format(&args.format)?;
    let topic = args.topic.as_str();
    let explicit = match args.offset.as_deref() {
        None => None,
        Some("earliest") => Some(-2),
        Some("latest") => Some(-1),
        Some(n) => match n.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return Err(Failure::new(format!(
                    "--offset {n:?}: expected earliest, latest or an offset (0 or more)"
                )))
            }
        },
    };
    if explicit.is_some() && args.partitions.len() != 1 {
        return Err(Failure::new("--offset needs exactly one --partition"));
    }
    let mut session = Session::connect(&args.bootstrap, REQUEST_TIMEOUT_MS)?;
    let metadata = session.partitions(topic)?;
    let wanted: Vec<i32> = if args.partitions.is_empty() {
        metadata.keys().copied().collect()
    } else {
        let set: BTreeSet<i32> = args.partitions.iter().copied().collect();
        if let Some(p) = set.iter().find(|p| !metadata.contains_key(p)) {
            return Err(Failure::new(format!(
                "topic {topic} has no partition {p} (it has {})",
                metadata.len()
            )));
        }
        set.into_iter().collect()
    };
    let mut positions: BTreeMap<i32, Position> = wanted
        .iter()
        .map(|&p| {
            let (leader, epoch) = metadata[&p];
            (
                p,
                Position {
                    offset: -1,
                    leader,
                    epoch,
                    max_bytes: PARTITION_BYTES,
                },
            )
        })
        .collect();

    // Where to start: --offset, else the group's offsets, else the start or the end.
    let reset_to = if args.from_beginning { -2 } else { -1 };
    let mut starts: BTreeMap<i32, i64> = BTreeMap::new();
    if let Some(group) = &args.group {
        let conn = session.coordinator(group)?;
        for ((t, p), offset) in committed_offsets(conn, group)? {
            if t == topic && positions.contains_key(&p) {
                starts.insert(p, offset);
            }
        }
    }
    if let Some(offset) = explicit {
        starts.insert(wanted[0], offset);
    }
    let mut by_spec: BTreeMap<i64, Vec<i32>> = BTreeMap::new();
    for &p in &wanted {
        match starts.get(&p) {
            Some(&o) if o >= 0 => {}
            Some(&o) => by_spec.entry(o).or_default().push(p),
            None => by_spec.entry(reset_to).or_default().push(p),
        }
    }
    for (spec, partitions) in by_spec {
        starts.extend(list_start(
            &mut session,
            topic,
            &positions,
            &partitions,
            spec,
        )?);
    }
    for (p, position) in &mut positions {
        position.offset = starts[p];
    }

    let idle = args.timeout_ms.map(Duration::from_millis);
    let leaders: BTreeSet<i32> = positions.values().map(|p| p.leader).collect();
    let mut wait = FETCH_WAIT / leaders.len().max(1) as u32;
    if let Some(idle) = idle {
        wait = wait.min(idle);
    }
    let isolation = match args.isolation_level {
        Isolation::ReadUncommitted => 0,
        Isolation::ReadCommitted => 1,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let mut last_answer = Instant::now();
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut closed = false;
    let request_timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    // With a --count, how far along on a terminal; not when the records themselves go to
    // the terminal (they show the progress, and the line would get in their way).
    let mut progress = Progress::new(
        args.count.is_some()
            && !args.quiet
            && std::io::stderr().is_terminal()
            && !std::io::stdout().is_terminal(),
    );
    let outcome: Result<(), Failure> = 'consume: loop {
        if args.count.is_some_and(|n| printed >= n) || closed {
            break Ok(());
        }
        if idle.is_some_and(|idle| last_record.elapsed() >= idle) {
            break Ok(());
        }
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let mut refresh = false;
        let mut why = String::new();
        for (&p, position) in &positions {
            if position.leader >= 0 {
                by_leader.entry(position.leader).or_default().push(p);
            } else {
                refresh = true;
                why = format!("{topic}/{p}: {}", describe_error(5, None));
            }
        }
        for (leader, partitions) in by_leader {
            let request = FetchRequest::default()
                .with_max_wait_ms(wait.as_millis() as i32)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_BYTES_MAX)
                .with_isolation_level(isolation)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(text(topic)))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|p| {
                                let position = &positions[p];
                                FetchPartition::default()
                                    .with_partition(*p)
                                    .with_current_leader_epoch(position.epoch)
                                    .with_fetch_offset(position.offset)
                                    .with_partition_max_bytes(position.max_bytes)
                            })
                            .collect(),
                    )]);
            let answer = session.broker(leader).and_then(|conn| {
                let version = conn.version(ApiKey::Fetch, 4, 12)?;
                conn.call::<_, FetchResponse>(ApiKey::Fetch, version, &request)
            });
            let response = match answer {
                Ok(response) if response.error_code != 0 => {
                    break 'consume Err(Failure::new(format!(
                        "cannot fetch from broker {leader}: {}",
                        describe_error(response.error_code, None)
                    )));
                }
                Ok(response) => response,
                Err(failure) => {
                    session.forget(leader);
                    refresh = true;
                    why = failure.message;
                    continue;
                }
            };
            last_answer = Instant::now();
            let mut reset = Vec::new();
            for t in response
                .responses
                .iter()
                .filter(|t| t.topic.0.as_str() == topic)
            {
                for answer in &t.partitions {
                    let p = answer.partition_index;
                    let Some(position) = positions.get_mut(&p) else {
                        continue;
                    };
                    match answer.error_code {
                        0 => {}
                        1 => {
                            // OFFSET_OUT_OF_RANGE: where auto.offset.reset would go.
                            reset.push(p);
                            continue;
                        }
                        code if refresh_on(code) => {
                            refresh = true;
                            why = format!("{topic}/{p}: {}", describe_error(code, None));
                            continue;
                        }
                        code => {
                            break 'consume Err(Failure::new(format!(
                                "cannot fetch {topic}/{p}: {}",
                                describe_error(code, None)
                            )));
                        }
                    }
                    let Some(records) = answer.records.as_ref().filter(|r| !r.is_empty()) else {
                        continue;
                    };
                    let aborted = (isolation == 1)
                        .then(|| answer.aborted_transactions.as_deref().unwrap_or_default());
                    let mut write_failed = None;
                    let read = read_batches(
                        records,
                        position.offset,
                        aborted,
                        |record| {
                            line.clear();
                            render(&mut line, &pieces, topic, record);
                            if let Err(e) = out.write_all(&line) {
                                write_failed = Some(e);
                                return false;
                            }
                            printed += 1;
                            args.count.is_none_or(|n| printed < n)
                        },
                        p,
                    )
                    .map_err(|why| Failure::new(format!("cannot read {topic}/{p}: {why}")));
                    let read = match read {
                        Ok(read) => read,
                        Err(failure) => break 'consume Err(failure),
                    };
                    if let Some(e) = write_failed {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            closed = true;
                            break;
                        }
                        break 'consume Err(Failure::new(format!("cannot write stdout: {e}")));
                    }
                    if read.next > position.offset {
                        last_record = Instant::now();
                    }
                    position.offset = read.next;
                    if !read.whole_batch {
                        if position.max_bytes >= PARTITION_BYTES_MAX {
                            break 'consume Err(Failure::new(format!(
                                "cannot read {topic}/{p}: a batch larger than {} bytes",
                                PARTITION_BYTES_MAX
                            )));
                        }
                        position.max_bytes *= 2;
                    }
                    if read.stopped {
                        break;
                    }
                }
            }
            if !reset.is_empty() {
                match list_start(&mut session, topic, &positions, &reset, reset_to) {
                    Ok(starts) => {
                        for (p, offset) in starts {
                            positions.get_mut(&p).expect("a partition").offset = offset;
                        }
                    }
                    Err(failure) => break 'consume Err(failure),
                }
            }
            if closed || args.count.is_some_and(|n| printed >= n) {
                break;
            }
        }
        if let Err(e) = out.flush() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break Ok(());
            }
            break Err(Failure::new(format!("cannot write stdout: {e}")));
        }
        progress.update(|| progress::counted(printed, args.count, "records consumed"));
        if let Some(group) = &args.group {
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                if let Err(failure) =
                    commit_read(&mut session, group, topic, &positions, &mut committed)
                {
                    break Err(failure);
                }
                last_commit = Instant::now();
            }
        }
        if refresh {
            // Waits for a leader as long as the cluster answers Metadata; gives up once
            // nothing answered for the request timeout.
            std::thread::sleep(Duration::from_millis(200));
            match session.partitions(topic) {
                Ok(fresh) => {
                    last_answer = Instant::now();
                    for (p, position) in &mut positions {
                        if let Some(&(leader, epoch)) = fresh.get(p) {
                            position.leader = leader;
                            position.epoch = epoch;
                        }
                    }
                }
                Err(failure) => why = failure.message,
            }
            if last_answer.elapsed() >= request_timeout {
                break Err(Failure::new(format!(
                    "cannot fetch {topic}: {why} (no answer for {REQUEST_TIMEOUT_MS} ms; is \
                     the cluster up?)"
                )));
            }
        }
    };
    let _ = out.flush();
    drop(out);
    progress.clear();
    if let (Some(group), true) = (&args.group, outcome.is_ok()) {
        commit_read(&mut session, group, topic, &positions, &mut committed)?;
    }
    outcome?;
    if !args.quiet {
        eprintln!("consumed {printed} record(s)");
    }
    Ok(0)
}

/// Commits the next offset of each partition read further since the last commit.
fn commit_read(
    session: &mut Session,
    group: &str,
    topic: &str,
    positions: &BTreeMap<i32, Position>,
    committed: &mut BTreeMap<i32, i64>,
) -> Result<(), Failure> {
    let plan: Vec<((String, i32), Option<i64>, i64)> = positions
        .iter()
        .filter(|(p, position)| committed.get(p) != Some(&position.offset))
        .map(|(p, position)| ((topic.to_string(), *p), None, position.offset))
        .collect();
    if plan.is_empty() {
        return Ok(());
    }
    commit(session, group, &plan)?;
    for ((_, p), _, offset) in plan {
        committed.insert(p, offset);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{control_batch, patch_base_offset};
    use crate::protocol::records::{BatchBuilder, ProducerFields};

    #[test]
    fn formats_read_as_kcat_reads_them() {
        let pieces = parse_format("%t/%p@%o %k=%v %T [%h] 100%%\\t\\n").unwrap();
        let mut out = Vec::new();
        render(
            &mut out,
            &pieces,
            "demo",
            &Printed {
                partition: 2,
                offset: 7,
                timestamp: 1234,
                key: Some(b"k"),
                value: None,
                headers: &[(b"a", Some(b"1")), (b"b", None)],
            },
        );
        assert_eq!(out, b"demo/2@7 k= 1234 [a=1,b=] 100%\t\n");
        assert!(parse_format("%x").is_err());
        assert!(parse_format("%").is_err());
        assert!(parse_format("\\q").is_err());
        assert_eq!(parse_format("é").unwrap(), vec![Piece::Text("é".into())]);
    }

    fn batch(base: i64, values: &[&str], codec: i16, producer: ProducerFields) -> Vec<u8> {
        let mut builder = BatchBuilder::new(1_000, 0);
        for (i, v) in values.iter().enumerate() {
            builder.push(i as i64, None, Some(v.as_bytes()), vec![]);
        }
        let attributes = codec | if producer.producer_id >= 0 { 0x10 } else { 0 };
        builder.finish(base, attributes, producer).unwrap()
    }

    fn values(
        records: &[u8],
        from: i64,
        aborted: Option<&[AbortedTransaction]>,
    ) -> (Vec<(i64, String)>, Read) {
        let mut seen = Vec::new();
        let read = read_batches(
            records,
            from,
            aborted,
            |r| {
                seen.push((
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
                true
            },
            0,
        )
        .unwrap();
        (seen, read)
    }

    #[test]
    fn batches_of_every_codec_read_from_the_offset_asked() {
        let mut records = Vec::new();
        for codec in 0..=4i16 {
            records.extend(batch(
                codec as i64 * 2,
                &["a", "b"],
                codec,
                ProducerFields::NONE,
            ));
        }
        let (seen, read) = values(&records, 3, None);
        assert_eq!(
            seen.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![3, 4, 5, 6, 7, 8, 9]
        );
        assert_eq!(read.next, 10);
        // A batch cut short at the end waits for the next fetch.
        let (seen, read) = values(&records[..records.len() - 3], 0, None);
        assert_eq!((seen.len(), read.next, read.whole_batch), (8, 8, true));
        let (seen, read) = values(&records[..20], 0, None);
        assert_eq!((seen.len(), read.next, read.whole_batch), (0, 0, false));
    }

    #[test]
    fn read_committed_skips_aborted_transactions_and_markers() {
        let txn = |id| ProducerFields {
            producer_id: id,
            producer_epoch: 0,
            base_sequence: 0,
        };
        let mut records = batch(0, &["a1", "a2"], 0, txn(7));
        records.extend(batch(2, &["c1"], 0, txn(8)));
        let mut abort = control_batch(7, 0, Marker::Abort, 0, 0);
        patch_base_offset(&mut abort, 3);
        records.extend(abort);
        let mut commit = control_batch(8, 0, Marker::Commit, 0, 0);
        patch_base_offset(&mut commit, 4);
        records.extend(commit);
        records.extend(batch(5, &["plain"], 0, ProducerFields::NONE));
        let aborted = [AbortedTransaction::default()
            .with_producer_id(kafka_protocol::messages::ProducerId(7))
            .with_first_offset(0)];
        let (seen, read) = values(&records, 0, Some(&aborted));
        assert_eq!(seen, vec![(2, "c1".to_string()), (5, "plain".to_string())]);
        assert_eq!(read.next, 6);
        let (seen, _) = values(&records, 0, None);
        assert_eq!(seen.len(), 4, "read_uncommitted: all but the markers");
    }
}
