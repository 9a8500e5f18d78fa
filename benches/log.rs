//! The partition log on a real file system, through glommio's direct I/O:
//!
//! - `log_append_group_commit`: append N batches, then one flush job (one aligned write
//!   and one `fdatasync`) — N = 1 shows the cost of a sync per batch, larger N the
//!   amortisation the shard's group commit buys.
//! - `log_fetch`: a fetch's read of up to 1 MB from the recent-batch cache (tailing
//!   consumer) and from disk (catch-up consumer, aligned DMA reads).
//!
//! Throughput is batch bytes appended or returned per second. The data directory is a
//! temporary directory under `$STRAND_BENCH_DIR` (default: the system temp dir), which must
//! be on a file system with O_DIRECT (not tmpfs).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use strand::protocol::batch::validate_produce_records;
use strand::storage::{LogConfig, PartitionLog, ReadPlan};

mod common;

const RECORDS_PER_BATCH: usize = 150;
const VALUE_BYTES: usize = 100;

fn batch() -> Bytes {
    common::batch(RECORDS_PER_BATCH, VALUE_BYTES)
}

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .make()
        .expect("glommio executor (is `ulimit -l` at least 2 MiB?)")
}

fn temp_dir() -> tempfile::TempDir {
    match std::env::var_os("STRAND_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory")
}

async fn open(dir: &Path, cache_bytes: usize) -> PartitionLog {
    strand::storage::warm_up_io(dir)
        .await
        .expect("warm-up read");
    let log_dir = dir.join("bench-0");
    std::fs::create_dir_all(&log_dir).unwrap();
    PartitionLog::open(
        &log_dir,
        LogConfig {
            segment_bytes: 256 * 1024 * 1024,
            cache_bytes,
            ..LogConfig::default()
        },
    )
    .await
    .expect("open log")
}

/// Appends `batches` copies of `batch` and makes them durable with one flush job.
async fn append_and_commit(log: &mut PartitionLog, batch: &Bytes, batches: usize) {
    let info = validate_produce_records(batch, 1 << 21).unwrap();
    let now_ms = 1_700_000_000_000;
    for _ in 0..batches {
        log.append(batch, &info, now_ms).expect("append");
    }
    let job = log.take_flush(0).expect("something to flush");
    let result = job.run().await;
    log.complete_flush(result);
    assert!(!log.is_offline());
}

fn group_commit(c: &mut Criterion) {
    let ex = executor();
    let dir = temp_dir();
    let batch = batch();
    let mut log = ex.run(open(dir.path(), 8 * 1024 * 1024));
    let mut group = c.benchmark_group("log_append_group_commit");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for batches in [1usize, 8, 64] {
        group.throughput(Throughput::Bytes((batch.len() * batches) as u64));
        group.bench_function(format!("{batches}x16KiB_per_fdatasync"), |b| {
            b.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        append_and_commit(&mut log, &batch, batches).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    if let Some(job) = log.close_job() {
        ex.run(job.run()).expect("close");
    }
}

fn fetch(c: &mut Criterion) {
    let ex = executor();
    let dir = temp_dir();
    let batch = batch();
    let read_bytes = 1_000_000;
    let mut log = ex.run(open(dir.path(), 8 * 1024 * 1024));
    // 32 MiB of batches: the cache holds the last 8 MiB, the rest is on disk only.
    ex.run(async {
        for _ in 0..32 {
            append_and_commit(&mut log, &batch, 64).await;
        }
    });
    let high_watermark = log.high_watermark();
    let tail = high_watermark - (64 * RECORDS_PER_BATCH) as i64;
    let mut group = c.benchmark_group("log_fetch");
    for (name, offset) in [("cache_1MB", tail), ("disk_1MB", 0)] {
        let probe = ex.run(async { log.read_plan(offset, read_bytes).unwrap().read().await });
        let bytes = probe.expect("read").len;
        assert!(bytes > read_bytes / 2, "{name}: read {bytes} bytes");
        let is_memory = matches!(log.read_plan(offset, read_bytes), Ok(ReadPlan::Memory(_)));
        assert_eq!(is_memory, name.starts_with("cache"), "{name} read path");
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let plan = log.read_plan(offset, read_bytes).unwrap();
                        std::hint::black_box(plan.read().await.unwrap());
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    if let Some(job) = log.close_job() {
        ex.run(job.run()).expect("close");
    }
}

criterion_group!(benches, group_commit, fetch);
criterion_main!(benches);
