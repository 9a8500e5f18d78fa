//! strand-bench: a Kafka-protocol load generator, thread-per-core on glommio like the
//! broker, usable against any Kafka-compatible broker.
//!
//! Three modes: `produce`, `consume` (from the earliest offset), and `e2e` (producers and
//! consumers at once, latency from intended send to receipt). Sends follow an open-loop
//! schedule (`--rate`): latency is measured from when a message was *meant* to be sent,
//! so a slow broker cannot hide behind a slowed client (no coordinated omission).
//! Results: a live progress line on stderr, then throughput and hdrhistogram latency
//! percentiles as a table, optionally as JSON (`--json`) and as an SVG percentile chart
//! (`--svg`). `--compare ADDR` runs the same workload against a second broker and prints
//! both side by side with ratios.
//!
//! - [`client`]: framing, version negotiation, setup requests.
//! - [`producer`] / [`consumer`]: the workers, one glommio task group each.
//! - [`batch`]: building and reading record batches (stamps, codecs).
//! - [`rate`]: the open-loop schedule.
//! - [`report`]: table, JSON, SVG.

mod batch;
mod client;
mod consumer;
mod producer;
mod rate;
mod report;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::json;

use batch::Codec;
use client::{ClusterMap, Conn};
use consumer::ConsumerConfig;
use producer::ProducerConfig;
use rate::Schedule;
use report::{new_histogram, RunReport, Throughput};

/// glommio registers this much memory per executor for io_uring buffers; the bench does no
/// file I/O, so the minimum is plenty and keeps it within `ulimit -l`.
const IO_MEMORY_BYTES: usize = 512 * 1024;
/// Extra time given after the schedule's end for the last acks and fetches.
const DRAIN_GRACE_MS: u64 = 30_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Produce only; latency is intended send → acknowledgement.
    Produce,
    /// Consume the topic from its earliest offset (to its end at start, or --count).
    Consume,
    /// Produce and consume at once; latency is intended send → received.
    E2e,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "strand-bench",
    version,
    about = "Kafka-protocol load generator (open loop, hdrhistogram latencies)"
)]
struct Args {
    /// What to run.
    #[arg(value_enum)]
    mode: Mode,

    /// Bootstrap broker (host:port).
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092")]
    bootstrap: String,

    /// Run the same workload against this broker too, and print both side by side.
    #[arg(long)]
    compare: Option<String>,

    /// Name of the --bootstrap broker in the report (default: its address).
    #[arg(long)]
    label: Option<String>,

    /// Name of the --compare broker in the report (default: its address).
    #[arg(long)]
    compare_label: Option<String>,

    /// Topic; created with --partitions if it does not exist.
    #[arg(long, short = 't', default_value = "strand-bench")]
    topic: String,

    /// Partitions of the topic when the bench creates it.
    #[arg(long, default_value_t = 1)]
    partitions: i32,

    /// Message value size in bytes (the first 8 carry the intended send time).
    #[arg(long, short = 's', default_value_t = 100)]
    message_bytes: usize,

    /// Messages to produce (or consume) in total.
    #[arg(long, short = 'c')]
    count: Option<u64>,

    /// Length of the run's schedule in seconds (with --count: whichever ends first).
    #[arg(long, short = 'd')]
    duration_s: Option<f64>,

    /// Target rate in messages per second over all producers; 0 = as fast as possible.
    #[arg(long, short = 'r', default_value_t = 0.0)]
    rate: f64,

    /// Producer acks: 0, 1 or -1 (all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    acks: i16,

    /// Idempotent producers (InitProducerId, sequence numbers; at most 5 in flight).
    #[arg(long)]
    idempotent: bool,

    /// Producer count (each with its own connections).
    #[arg(long, default_value_t = 1)]
    producers: usize,

    /// Consumer count (partitions are split between them).
    #[arg(long, default_value_t = 1)]
    consumers: usize,

    /// Largest batch of uncompressed record bytes (librdkafka's batch.size).
    #[arg(long, default_value_t = 1_000_000)]
    batch_bytes: usize,

    /// How long an open batch may wait for more messages while a send slot is free.
    #[arg(long, default_value_t = 5.0)]
    linger_ms: f64,

    /// Compression codec of produced batches.
    #[arg(long, value_enum, default_value = "none")]
    compression: Codec,

    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,

    /// Unacknowledged value bytes a producer may hold before its generator waits.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    buffer_bytes: usize,

    /// Fetch max_bytes.
    #[arg(long, default_value_t = 52_428_800)]
    fetch_max_bytes: i32,

    /// Fetch partition_max_bytes.
    #[arg(long, default_value_t = 1_048_576)]
    fetch_partition_bytes: i32,

    /// Fetch max_wait_ms (long poll).
    #[arg(long, default_value_t = 500)]
    fetch_wait_ms: i32,

    /// Executors (threads, one per core); default: one per online core, at most one per
    /// producer and consumer.
    #[arg(long)]
    threads: Option<usize>,

    /// Pin executor k to CPU k (default: let the kernel place them).
    #[arg(long)]
    pin: bool,

    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,

    /// Write an SVG chart of the latency percentile distribution to this file.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,

    /// No progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Counters shared by every executor and the progress line.
#[derive(Default)]
pub struct Progress {
    /// Messages handed to producers by the schedule.
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub consumed: AtomicU64,
    pub errors: AtomicU64,
    pub producers_done: AtomicBool,
}

fn main() {
    let args = Args::parse();
    if let Err(err) = run(args) {
        eprintln!("strand-bench: {err}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    validate(&args)?;
    raise_memlock_limit();
    let mut runs = Vec::new();
    let primary_label = args.label.clone().unwrap_or_else(|| args.bootstrap.clone());
    runs.push(run_workload(&args, &args.bootstrap, &primary_label)?);
    if let Some(other) = &args.compare {
        let label = args.compare_label.clone().unwrap_or_else(|| other.clone());
        runs.push(run_workload(&args, other, &label)?);
    }
    let refs: Vec<&RunReport> = runs.iter().collect();
    println!("{}", describe(&args));
    print!("{}", report::table(&refs));
    if let Some(path) = &args.json {
        let doc = json!({
            "workload": workload_json(&args),
            "runs": runs.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).expect("json");
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        let mut series = Vec::new();
        for run in &runs {
            for (name, h) in [("ack", &run.ack_latency), ("end-to-end", &run.e2e_latency)] {
                if let Some(h) = h.as_ref().filter(|h| !h.is_empty()) {
                    series.push((format!("{} {name}", run.label), h));
                }
            }
        }
        std::fs::write(path, report::svg(&describe(&args), &series))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if runs.iter().any(|r| !r.errors.is_empty()) {
        return Err("the run had errors (see above)".into());
    }
    Ok(())
}

fn validate(args: &Args) -> Result<(), String> {
    if ![-1, 0, 1].contains(&args.acks) {
        return Err(format!("--acks {} must be -1, 0 or 1", args.acks));
    }
    if args.message_bytes < batch::STAMP_BYTES {
        return Err(format!(
            "--message-bytes must be at least {} (the send-time stamp)",
            batch::STAMP_BYTES
        ));
    }
    if args.idempotent && (args.max_in_flight > 5 || args.acks != -1) {
        return Err("--idempotent needs --acks -1 and --max-in-flight ≤ 5".into());
    }
    if args.mode != Mode::Consume && args.count.is_none() && args.duration_s.is_none() {
        return Err("give --count or --duration-s".into());
    }
    if args.producers == 0 || args.consumers == 0 || args.max_in_flight == 0 {
        return Err("--producers, --consumers and --max-in-flight must be positive".into());
    }
    if args.partitions <= 0 {
        return Err("--partitions must be positive".into());
    }
    if args.rate < 0.0 || !args.rate.is_finite() {
        return Err("--rate must be ≥ 0".into());
    }
    Ok(())
}

fn describe(args: &Args) -> String {
    let mut s = format!("{:?} topic={}", args.mode, args.topic).to_lowercase();
    if args.mode != Mode::Consume {
        s += &format!(" partitions={}", args.partitions);
    }
    s += &format!(" message={}B", args.message_bytes);
    if let Some(c) = args.count {
        s += &format!(" count={c}");
    }
    if let Some(d) = args.duration_s {
        s += &format!(" duration={d}s");
    }
    if args.mode != Mode::Consume {
        s += &format!(
            " rate={} acks={} producers={} batch={}B linger={}ms compression={:?}{}",
            if args.rate > 0.0 {
                format!("{}/s", args.rate)
            } else {
                "max".into()
            },
            args.acks,
            args.producers,
            args.batch_bytes,
            args.linger_ms,
            args.compression,
            if args.idempotent { " idempotent" } else { "" }
        )
        .to_lowercase();
    }
    if args.mode != Mode::Produce {
        s += &format!(" consumers={}", args.consumers);
    }
    s
}

fn workload_json(args: &Args) -> serde_json::Value {
    json!({
        "mode": args.mode,
        "topic": args.topic,
        "partitions": args.partitions,
        "message_bytes": args.message_bytes,
        "count": args.count,
        "duration_s": args.duration_s,
        "rate": args.rate,
        "acks": args.acks,
        "idempotent": args.idempotent,
        "producers": args.producers,
        "consumers": args.consumers,
        "batch_bytes": args.batch_bytes,
        "linger_ms": args.linger_ms,
        "compression": args.compression,
        "max_in_flight": args.max_in_flight,
    })
}

/// What the setup learned before the workers start.
struct Setup {
    map: ClusterMap,
    producer_ids: Vec<Option<(i64, i16)>>,
    /// Per partition: where consumers start, and where they stop (consume mode).
    starts: Vec<i64>,
    ends: Vec<i64>,
}

async fn setup(args: &Args, addr: &str) -> Result<Setup, String> {
    let mut conn = Conn::connect(addr).await?;
    let versions = conn.negotiate().await?;
    let map = client::discover(&mut conn, versions, &args.topic, args.partitions).await?;
    let mut producer_ids = vec![None; args.producers];
    if args.idempotent && args.mode != Mode::Consume {
        for id in &mut producer_ids {
            *id = Some(client::init_producer_id(&mut conn, versions).await?);
        }
    }
    let (starts, ends) = match args.mode {
        Mode::Produce => (Vec::new(), Vec::new()),
        Mode::Consume => (
            client::list_offsets(&map, &args.topic, -2).await?,
            client::list_offsets(&map, &args.topic, -1).await?,
        ),
        Mode::E2e => {
            let latest = client::list_offsets(&map, &args.topic, -1).await?;
            (latest.clone(), latest)
        }
    };
    Ok(Setup {
        map,
        producer_ids,
        starts,
        ends,
    })
}

enum Job {
    Produce(Box<ProducerConfig>),
    Consume(Box<ConsumerConfig>),
}

enum Outcome {
    Produced(producer::ProducerResult),
    Consumed(consumer::ConsumerResult),
}

fn run_workload(args: &Args, addr: &str, label: &str) -> Result<RunReport, String> {
    let setup = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES)
        .make()
        .map_err(|e| format!("cannot start an executor: {e}"))?
        .run(setup(args, addr))?;
    let partitions = setup.map.leaders.len();
    let start = Instant::now();
    let schedule_ns = args
        .duration_s
        .map(|s| (s * 1e9) as u64)
        .unwrap_or(u64::MAX);
    let deadline = Duration::from_nanos(schedule_ns.min(3_600_000_000_000))
        + Duration::from_millis(DRAIN_GRACE_MS);

    let mut jobs = Vec::new();
    if args.mode != Mode::Consume {
        let count = args.count.unwrap_or(u64::MAX);
        for (i, producer_id) in setup.producer_ids.iter().enumerate() {
            // Split the count and the rate evenly; the first producers take the remainder.
            let n = args.producers as u64;
            let my_count = if count == u64::MAX {
                u64::MAX
            } else {
                count / n + u64::from((i as u64) < count % n)
            };
            let rate = (args.rate > 0.0).then(|| args.rate / args.producers as f64);
            // Producers start on different partitions so they spread from the first batch.
            let mut order: Vec<i32> = (0..partitions as i32).collect();
            order.rotate_left(i % partitions);
            jobs.push(Job::Produce(Box::new(ProducerConfig {
                topic: args.topic.clone(),
                map: setup.map.clone(),
                partitions: order,
                message_bytes: args.message_bytes,
                batch_bytes: args.batch_bytes,
                linger: Duration::from_secs_f64(args.linger_ms / 1e3),
                acks: args.acks,
                max_in_flight: args.max_in_flight,
                codec: args.compression,
                idempotence: *producer_id,
                buffer_bytes: args.buffer_bytes,
                schedule: Schedule::new(rate, my_count, schedule_ns),
                start,
                timeout_ms: 30_000,
            })));
        }
    }
    if args.mode != Mode::Produce {
        let consumers = args.consumers.min(partitions);
        for c in 0..consumers {
            let mine = (0..partitions)
                .filter(|p| p % consumers == c)
                .map(|p| {
                    let end = (args.mode == Mode::Consume).then_some(setup.ends[p]);
                    (p as i32, setup.starts[p], end)
                })
                .collect();
            let available: i64 = (0..partitions)
                .map(|p| setup.ends[p] - setup.starts[p])
                .sum();
            let count_max = match args.mode {
                Mode::Consume => args.count.unwrap_or(u64::MAX).min(available.max(0) as u64),
                _ => args.count.unwrap_or(u64::MAX),
            };
            jobs.push(Job::Consume(Box::new(ConsumerConfig {
                topic: args.topic.clone(),
                map: setup.map.clone(),
                partitions: mine,
                count_max,
                measure_latency: args.mode == Mode::E2e,
                fetch_max_bytes: args.fetch_max_bytes,
                partition_max_bytes: args.fetch_partition_bytes,
                max_wait_ms: args.fetch_wait_ms,
                start,
                deadline,
            })));
        }
    }

    let producers = jobs.iter().filter(|j| matches!(j, Job::Produce(_))).count();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores).clamp(1, jobs.len().max(1));
    let mut per_thread: Vec<Vec<Job>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        per_thread[i % threads].push(job);
    }

    let progress = Arc::new(Progress::default());
    let producers_left = Arc::new(AtomicU64::new(producers as u64));
    if producers == 0 {
        progress.producers_done.store(true, Ordering::SeqCst);
    }
    let stop_line = Arc::new(AtomicBool::new(false));
    let line = (!args.quiet).then(|| {
        let progress = progress.clone();
        let stop = stop_line.clone();
        let label = label.to_string();
        std::thread::spawn(move || progress_line(&label, start, &progress, &stop))
    });

    let mut handles = Vec::new();
    for (k, jobs) in per_thread.into_iter().enumerate() {
        let placement = if args.pin {
            Placement::Fixed(k % cores)
        } else {
            Placement::Unbound
        };
        let progress = progress.clone();
        let producers_left = producers_left.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("bench-{k}"))
            .io_memory(IO_MEMORY_BYTES)
            .spawn(move || async move {
                let mut tasks = Vec::new();
                for job in jobs {
                    let progress = progress.clone();
                    let producers_left = producers_left.clone();
                    tasks.push(glommio::spawn_local(async move {
                        match job {
                            Job::Produce(config) => {
                                let result = producer::run(*config, progress.clone()).await;
                                if producers_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                                    progress.producers_done.store(true, Ordering::SeqCst);
                                }
                                Outcome::Produced(result)
                            }
                            Job::Consume(config) => {
                                Outcome::Consumed(consumer::run(*config, progress).await)
                            }
                        }
                    }));
                }
                let mut outcomes = Vec::new();
                for task in tasks {
                    outcomes.push(task.await);
                }
                outcomes
            })
            .map_err(|e| format!("cannot start executor {k}: {e}"))?;
        handles.push(handle);
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.extend(handle.join().map_err(|e| format!("executor failed: {e}"))?);
    }
    stop_line.store(true, Ordering::SeqCst);
    if let Some(line) = line {
        let _ = line.join();
    }

    let mut report = RunReport {
        label: label.to_string(),
        produced: None,
        consumed: None,
        ack_latency: None,
        e2e_latency: None,
        errors: Vec::new(),
    };
    let message_bytes = args.message_bytes as u64;
    for outcome in outcomes {
        match outcome {
            Outcome::Produced(r) => {
                let t = report.produced.get_or_insert_with(Throughput::default);
                t.messages += r.acked;
                t.bytes += r.acked * message_bytes;
                t.seconds = t.seconds.max(r.last_ack.as_secs_f64());
                report
                    .ack_latency
                    .get_or_insert_with(new_histogram)
                    .add(&r.latency)
                    .map_err(|e| format!("histogram: {e}"))?;
                report.errors.extend(r.errors);
            }
            Outcome::Consumed(r) => {
                let t = report.consumed.get_or_insert_with(Throughput::default);
                t.messages += r.received;
                t.bytes += r.received * message_bytes;
                t.seconds = t.seconds.max(r.last_receive.as_secs_f64());
                if args.mode == Mode::E2e {
                    report
                        .e2e_latency
                        .get_or_insert_with(new_histogram)
                        .add(&r.latency)
                        .map_err(|e| format!("histogram: {e}"))?;
                }
                report.errors.extend(r.errors);
            }
        }
    }
    if let Some(produced) = report.produced {
        let sent = progress.sent.load(Ordering::SeqCst);
        if produced.messages < sent {
            report.errors.push(format!(
                "{} of {sent} messages were not acknowledged",
                sent - produced.messages
            ));
        }
    }
    if args.mode == Mode::E2e {
        let produced = report.produced.map_or(0, |t| t.messages);
        let consumed = report.consumed.map_or(0, |t| t.messages);
        if consumed != produced {
            report.errors.push(format!(
                "consumers received {consumed} of {produced} acknowledged messages"
            ));
        }
    }
    Ok(report)
}

/// Prints a progress line to stderr once a second until `stop`.
fn progress_line(label: &str, start: Instant, progress: &Progress, stop: &AtomicBool) {
    let mut last = (0u64, 0u64, start);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        if now.duration_since(last.2) < Duration::from_secs(1) {
            continue;
        }
        let acked = progress.acked.load(Ordering::Relaxed);
        let consumed = progress.consumed.load(Ordering::Relaxed);
        let dt = now.duration_since(last.2).as_secs_f64();
        let line = format!(
            "[{label}] {:6.1}s  sent {:>10}  acked {:>10} ({:>9.0}/s)  consumed {:>10} ({:>9.0}/s)  errors {}",
            now.duration_since(start).as_secs_f64(),
            progress.sent.load(Ordering::Relaxed),
            acked,
            (acked - last.0) as f64 / dt,
            consumed,
            (consumed - last.1) as f64 / dt,
            progress.errors.load(Ordering::Relaxed),
        );
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        last = (acked, consumed, now);
    }
    if tty {
        eprintln!();
    }
}

/// glommio locks memory for io_uring: raise the soft memlock limit to the hard one.
fn raise_memlock_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit syscalls on a stack value.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
}
