//! Tests of the partition log on real files, inside a glommio executor: appends, flushes,
//! reads from memory and disk, segment rolls, recovery from torn and corrupt tails, and a
//! seeded random sequence of operations (append, flush, roll, crash, torn write, clean
//! restart) checked against an in-memory model after every step.

use std::cell::RefCell;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::log::{AppendError, AppendOutcome, LogConfig, PartitionLog};
use super::LOG_SUFFIX;
use crate::protocol::batch::testing::{fix_crc, TestBatch, TestRecord};
use crate::protocol::batch::{iter_batches, parse_batch, validate_produce_records, BatchInfo};

pub(super) use super::testing::run_in_partition_dir as run;
pub(super) use super::testing::Rng;

pub(super) fn config(segment_bytes: u64, cache_bytes: usize) -> LogConfig {
    LogConfig {
        segment_bytes,
        cache_bytes,
        ..LogConfig::default()
    }
}

/// A batch of `count` records whose values encode `tag`, so every batch is distinct.
pub(super) fn make_batch(tag: u64, count: usize, value_len: usize, timestamp: i64) -> Vec<u8> {
    TestBatch {
        base_timestamp: timestamp,
        records: (0..count)
            .map(|i| TestRecord {
                key: Some(format!("k{tag}-{i}").into_bytes()),
                value: Some(format!("{tag}:{i}:{}", "v".repeat(value_len)).into_bytes()),
                headers: vec![(b"h".to_vec(), Some(tag.to_be_bytes().to_vec()))],
                timestamp_delta: i as i64,
            })
            .collect(),
        ..Default::default()
    }
    .encode()
}

pub(super) fn idempotent_batch(tag: u64, producer_id: i64, sequence: i32, count: usize) -> Vec<u8> {
    TestBatch {
        producer_id,
        producer_epoch: 0,
        base_sequence: sequence,
        records: (0..count)
            .map(|i| TestRecord::value(format!("p{producer_id}-{tag}-{i}").as_bytes()))
            .collect(),
        ..Default::default()
    }
    .encode()
}

pub(super) fn info(batch: &[u8]) -> BatchInfo {
    validate_produce_records(batch, 64 << 20).unwrap()
}

async fn flush(log: &RefCell<PartitionLog>) {
    let job = log.borrow_mut().take_flush(crate::util::now_ms());
    if let Some(job) = job {
        let result = job.run().await;
        log.borrow_mut().complete_flush(result);
    }
}

/// Takes a flush job, appends `batches`, takes a second job while the first is in flight
/// (a third is refused), and runs them as the shard does: concurrently, each applied when
/// it returns. Checks the high watermark moves in order.
async fn flush_pipelined(log: &RefCell<PartitionLog>, batches: &[Vec<u8>]) {
    let first = log.borrow_mut().take_flush(0);
    for batch in batches {
        log.borrow_mut().append(batch, &info(batch), 0).unwrap();
    }
    let second = log.borrow_mut().take_flush(0);
    assert!(first.is_none() || second.is_none() || log.borrow_mut().take_flush(0).is_none());
    let end = log.borrow().next_offset();
    let second = second.map(|job| glommio::spawn_local(job.run()));
    if let Some(job) = first {
        let result = job.run().await;
        log.borrow_mut().complete_flush(result);
    }
    if let Some(task) = second {
        let result = task.await;
        let before = log.borrow().high_watermark();
        log.borrow_mut().complete_flush(result);
        assert!(log.borrow().high_watermark() >= before);
    }
    flush(log).await;
    assert_eq!(log.borrow().high_watermark(), end);
}

pub(super) async fn close(log: RefCell<PartitionLog>) {
    let job = log.borrow_mut().close_job();
    job.unwrap().run().await.unwrap();
}

/// Reads every batch from `offset` to the high watermark, in several fetches.
pub(super) async fn read_all(
    log: &RefCell<PartitionLog>,
    mut offset: i64,
    bytes_max: usize,
) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    loop {
        let plan = log.borrow().read_plan(offset, bytes_max).unwrap();
        let data = plan.read().await.unwrap();
        if data.is_empty() {
            return out;
        }
        let records = data.to_bytes();
        let mut last = offset;
        for item in iter_batches(&records) {
            let (at, info) = item.expect("served batches are valid");
            let bytes = records.slice(at..at + info.len);
            last = info.last_offset();
            out.push((info.base_offset, bytes));
        }
        offset = last + 1;
    }
}

/// The batch as the log stores it: base offset and leader epoch patched.
fn placed(batch: &[u8], base_offset: i64) -> Vec<u8> {
    let mut b = batch.to_vec();
    crate::protocol::batch::patch_base_offset(&mut b, base_offset);
    crate::protocol::batch::patch_leader_epoch(&mut b, super::log::LEADER_EPOCH);
    b
}

#[test]
fn append_flush_read_from_memory_and_disk() {
    run(|dir| async move {
        let log = RefCell::new(
            PartitionLog::open(&dir, config(1 << 30, 2048))
                .await
                .unwrap(),
        );
        let mut expected = Vec::new();
        for tag in 0..50u64 {
            let batch = make_batch(tag, 1 + (tag % 4) as usize, 100, 1_000 + tag as i64);
            let outcome = log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
            let AppendOutcome::Appended { base_offset, .. } = outcome else {
                panic!("{outcome:?}")
            };
            expected.push((base_offset, placed(&batch, base_offset)));
            // Nothing is readable before it is durable.
            assert!(log.borrow().high_watermark() <= base_offset);
            if tag % 7 == 0 {
                flush(&log).await;
            }
        }
        flush(&log).await;
        assert_eq!(log.borrow().high_watermark(), log.borrow().next_offset());
        assert!(!log.borrow().is_dirty());
        // From the start: most of it is past the 2 KiB cache, so it comes from disk.
        for bytes_max in [1, 1000, 1 << 20] {
            let got = read_all(&log, 0, bytes_max).await;
            let got: Vec<_> = got.into_iter().map(|(o, b)| (o, b.to_vec())).collect();
            assert_eq!(got, expected, "bytes_max {bytes_max}");
        }
        // From inside a batch: that batch comes back whole.
        let (base, ref bytes) = expected[10];
        let inside = base + i64::from(parse_batch(bytes).unwrap().last_offset_delta);
        let got = read_all(&log, inside, 1).await;
        assert_eq!(got[0].0, base);
        // Past the end is out of range; at the end is empty.
        let hw = log.borrow().high_watermark();
        assert!(log.borrow().read_plan(hw + 1, 100).is_err());
        assert!(read_all(&log, hw, 100).await.is_empty());
        close(log).await;
    });
}

#[test]
fn segments_roll_seal_and_reopen_without_scanning() {
    run(|dir| async move {
        let log = RefCell::new(PartitionLog::open(&dir, config(4096, 0)).await.unwrap());
        let mut expected = Vec::new();
        for tag in 0..40u64 {
            let batch = make_batch(tag, 3, 200, 10_000 + tag as i64 * 10);
            let AppendOutcome::Appended { base_offset, .. } =
                log.borrow_mut().append(&batch, &info(&batch), 0).unwrap()
            else {
                unreachable!()
            };
            expected.push((base_offset, placed(&batch, base_offset)));
            if tag % 3 == 0 {
                flush(&log).await;
            }
        }
        flush(&log).await;
        let segments = log.borrow().segment_count();
        assert!(segments > 5, "{segments} segments");
        // Sealed segments are trimmed to their logical length and have index files.
        let logs = segment_files(&dir);
        assert_eq!(logs.len(), segments);
        for path in &logs[..logs.len() - 1] {
            let len = std::fs::metadata(path).unwrap().len();
            assert!(len <= 4096 + 1000, "{}: {len}", path.display());
            assert!(
                path.with_extension("index").exists(),
                "{} has no index",
                path.display()
            );
        }
        let got: Vec<_> = read_all(&log, 0, 1 << 20)
            .await
            .into_iter()
            .map(|(o, b)| (o, b.to_vec()))
            .collect();
        assert_eq!(got, expected);
        // By timestamp: the first record at or after it.
        let plan = log.borrow().timestamp_plan(10_000 + 25 * 10 + 1);
        assert_eq!(
            plan.resolve().await.unwrap(),
            Some((25 * 3 + 1, 10_000 + 25 * 10 + 1))
        );
        let plan = log.borrow().timestamp_plan(1_000_000);
        assert_eq!(plan.resolve().await.unwrap(), None);
        close(log).await;

        // A clean reopen trusts every index and truncates nothing.
        let log = RefCell::new(PartitionLog::open(&dir, config(4096, 0)).await.unwrap());
        assert_eq!(log.borrow().segment_count(), segments);
        assert_eq!(
            log.borrow().high_watermark(),
            expected.last().map(|(o, _)| o + 3).unwrap()
        );
        let got: Vec<_> = read_all(&log, 0, 1 << 20)
            .await
            .into_iter()
            .map(|(o, b)| (o, b.to_vec()))
            .collect();
        assert_eq!(got, expected);
        close(log).await;
    });
}

/// Reopens after a simulated crash: the log is dropped without closing.
async fn crash_and_reopen(
    log: RefCell<PartitionLog>,
    dir: &Path,
    config: LogConfig,
) -> RefCell<PartitionLog> {
    drop(log);
    RefCell::new(PartitionLog::open(dir, config).await.unwrap())
}

/// The segment files in `dir`, by base offset.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(LOG_SUFFIX))
        .collect();
    logs.sort();
    logs
}

fn active_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().unwrap()
}

#[test]
fn recovery_truncates_a_torn_tail() {
    run(|dir| async move {
        let log = RefCell::new(
            PartitionLog::open(&dir, config(1 << 30, 1 << 20))
                .await
                .unwrap(),
        );
        for tag in 0..10u64 {
            let batch = make_batch(tag, 2, 50, 1_000);
            log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
        }
        flush(&log).await;
        let hw = log.borrow().high_watermark();
        let segment = active_segment(&dir);
        let durable: u64 = read_all(&log, 0, 1 << 20)
            .await
            .iter()
            .map(|(_, b)| b.len() as u64)
            .sum();
        // After a flush the file is padded to the block size: recovery must not trust it.
        assert_eq!(std::fs::metadata(&segment).unwrap().len() % 4096, 0);
        // Half of a next batch made it to disk before the crash.
        let torn = placed(&make_batch(99, 5, 500, 2_000), hw);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .write_all_at(&torn[..torn.len() / 2], durable)
            .unwrap();
        let log = crash_and_reopen(log, &dir, config(1 << 30, 1 << 20)).await;
        assert_eq!(log.borrow().high_watermark(), hw);
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), durable);
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 10);
        // And the log goes on from there.
        let batch = make_batch(100, 1, 10, 3_000);
        let outcome = log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
        assert_eq!(
            outcome,
            AppendOutcome::Appended {
                base_offset: hw,
                last_offset: hw
            }
        );
        flush(&log).await;
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 11);
        close(log).await;
    });
}

#[test]
fn recovery_drops_a_corrupt_last_batch_and_never_serves_it() {
    run(|dir| async move {
        let log = RefCell::new(PartitionLog::open(&dir, config(1 << 30, 0)).await.unwrap());
        let mut sizes = Vec::new();
        for tag in 0..6u64 {
            let batch = make_batch(tag, 1, 300, 1_000);
            sizes.push(batch.len() as u64);
            log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
        }
        flush(&log).await;
        let segment = active_segment(&dir);
        let last_start: u64 = sizes[..5].iter().sum();
        // A flipped byte in the last batch's records.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment)
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, last_start + 100).unwrap();
        file.write_all_at(&[byte[0] ^ 0x10], last_start + 100)
            .unwrap();
        // The running log validates what it reads from disk (the cache holds only the
        // newest batch, so these reads go to disk). A read that reaches the bad batch
        // serves the intact ones before it, byte for byte, and stops there...
        let plan = log.borrow().read_plan(0, 1 << 20).unwrap();
        let data = plan.read().await.unwrap();
        let mut on_disk = vec![0u8; last_start as usize];
        file.read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(&data.to_bytes()[..], &on_disk[..]);
        // ...and a read that starts at it is an error, not data. (One more batch, not
        // flushed, takes offset 5 out of the cache.)
        let batch = make_batch(6, 1, 300, 1_000);
        log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
        let plan = log.borrow().read_plan(5, 1 << 20).unwrap();
        let err = plan.read().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        let log = crash_and_reopen(log, &dir, config(1 << 30, 0)).await;
        assert_eq!(log.borrow().high_watermark(), 5);
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), last_start);
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 5);
        close(log).await;
    });
}

#[test]
fn stale_index_is_rebuilt_and_corrupt_sealed_segment_cuts_the_log() {
    run(|dir| async move {
        let cfg = config(2048, 0);
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        for tag in 0..20u64 {
            let batch = make_batch(tag, 2, 300, 1_000);
            log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
            flush(&log).await;
        }
        let hw = log.borrow().high_watermark();
        close(log).await;
        let logs = segment_files(&dir);
        assert!(logs.len() >= 4);
        // A missing index is rebuilt by a scan; nothing is lost.
        let second = logs[1].with_extension("index");
        std::fs::remove_file(&second).unwrap();
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        assert_eq!(log.borrow().high_watermark(), hw);
        assert!(second.exists(), "index was not rebuilt");
        close(log).await;
        // A corrupt byte in a sealed segment whose index is stale: the log ends there.
        std::fs::remove_file(&second).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&logs[1])
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, 200).unwrap();
        file.write_all_at(&[byte[0] ^ 1], 200).unwrap();
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        let base_1: i64 = logs[1]
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // The corrupt batch was the segment's first, so the segment is gone too.
        assert_eq!(log.borrow().high_watermark(), base_1);
        assert_eq!(log.borrow().segment_count(), 1);
        assert!(!logs[1].exists() && !logs[2].exists());
        close(log).await;
    });
}

#[test]
fn producer_state_is_recovered_after_crash_and_clean_close() {
    run(|dir| async move {
        let cfg = config(256, 1 << 20);
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        let mut batches = Vec::new();
        for seq in 0..12 {
            let batch = idempotent_batch(seq as u64, 42, seq * 2, 2);
            let outcome = log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
            assert!(matches!(outcome, AppendOutcome::Appended { .. }));
            batches.push(batch);
            flush(&log).await;
        }
        assert!(log.borrow().segment_count() > 2);
        let check = |log: &RefCell<PartitionLog>| {
            let last = &batches[11];
            assert_eq!(
                log.borrow_mut().append(last, &info(last), 0),
                Ok(AppendOutcome::Duplicate {
                    base_offset: 22,
                    last_offset: 23
                })
            );
            let gap = idempotent_batch(99, 42, 30, 1);
            assert!(matches!(
                log.borrow_mut().append(&gap, &info(&gap), 0),
                Err(AppendError::OutOfOrderSequence {
                    expected: 24,
                    got: 30,
                    ..
                })
            ));
        };
        check(&log);
        let log = crash_and_reopen(log, &dir, cfg.clone()).await;
        check(&log);
        close(log).await;
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        check(&log);
        close(log).await;
    });
}

/// What the log must hold: every durable batch, in order, as stored.
#[derive(Default)]
struct Model {
    durable: Vec<(i64, Vec<u8>)>,
    /// Appended but not yet durable (lost by a crash).
    pending: Vec<(i64, Vec<u8>)>,
    next_sequence: i32,
    durable_sequence: i32,
}

impl Model {
    fn end(&self) -> i64 {
        self.durable
            .last()
            .map(|(o, b)| o + i64::from(parse_batch(b).unwrap().last_offset_delta) + 1)
            .unwrap_or(0)
    }
}

async fn check_against_model(
    log: &RefCell<PartitionLog>,
    model: &Model,
    rng: &mut Rng,
    seed: u64,
    step: usize,
) {
    assert_eq!(
        log.borrow().high_watermark(),
        model.end(),
        "seed {seed} step {step}: high watermark"
    );
    if model.durable.is_empty() {
        return;
    }
    let i = rng.below(model.durable.len() as u64) as usize;
    let bytes_max = [1, 5_000, 1 << 20][rng.below(3) as usize];
    let got = read_all(log, model.durable[i].0, bytes_max).await;
    let got: Vec<_> = got.into_iter().map(|(o, b)| (o, b.to_vec())).collect();
    assert_eq!(
        got.as_slice(),
        &model.durable[i..],
        "seed {seed} step {step}: read from batch {i}"
    );
}

#[test]
fn random_operations_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("STRAND_LOG_SEED") {
        Ok(seed) => vec![seed.parse().expect("STRAND_LOG_SEED is a number")],
        Err(_) => (1..=6).collect(),
    };
    for seed in seeds {
        run(move |dir| async move {
            let mut rng = Rng(seed);
            let cfg = config(1024 * (1 + rng.below(16)), rng.below(3) as usize * 4096);
            let mut log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
            let mut model = Model::default();
            let mut tag = 0u64;
            for step in 0..300 {
                match rng.below(100) {
                    // Append: plain or idempotent.
                    0..=54 => {
                        tag += 1;
                        let next = model.pending.last().or(model.durable.last());
                        let offset = next
                            .map(|(o, b)| {
                                o + i64::from(parse_batch(b).unwrap().last_offset_delta) + 1
                            })
                            .unwrap_or(0);
                        let count = 1 + rng.below(5) as usize;
                        let batch = if rng.below(3) == 0 {
                            let b = idempotent_batch(tag, 7, model.next_sequence, count);
                            model.next_sequence += count as i32;
                            b
                        } else {
                            make_batch(tag, count, rng.below(700) as usize, 1_000 + tag as i64)
                        };
                        let outcome = log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
                        assert_eq!(
                            outcome,
                            AppendOutcome::Appended {
                                base_offset: offset,
                                last_offset: offset + count as i64 - 1
                            },
                            "seed {seed} step {step}"
                        );
                        model.pending.push((offset, placed(&batch, offset)));
                    }
                    // Flush: everything pending becomes durable.
                    55..=69 => {
                        flush(&log).await;
                        model.durable.append(&mut model.pending);
                        model.durable_sequence = model.next_sequence;
                    }
                    // Two flushes in flight: batches appended while the first runs go in a
                    // second that continues its writes (and may seal a segment it wrote).
                    70..=79 => {
                        let extra: Vec<Vec<u8>> = (0..1 + rng.below(3))
                            .map(|_| {
                                tag += 1;
                                make_batch(
                                    tag,
                                    1 + rng.below(3) as usize,
                                    rng.below(900) as usize,
                                    1_000 + tag as i64,
                                )
                            })
                            .collect();
                        let mut end = model
                            .pending
                            .last()
                            .or(model.durable.last())
                            .map(|(o, b)| {
                                o + i64::from(parse_batch(b).unwrap().last_offset_delta) + 1
                            })
                            .unwrap_or(0);
                        let mut appended = Vec::new();
                        for batch in &extra {
                            appended.push((end, placed(batch, end)));
                            end += i64::from(parse_batch(batch).unwrap().last_offset_delta) + 1;
                        }
                        flush_pipelined(&log, &extra).await;
                        model.pending.extend(appended);
                        model.durable.append(&mut model.pending);
                        model.durable_sequence = model.next_sequence;
                    }
                    // Crash: pending is lost.
                    80..=87 => {
                        log = crash_and_reopen(log, &dir, cfg.clone()).await;
                        model.pending.clear();
                        model.next_sequence = model.durable_sequence;
                    }
                    // Crash in the middle of a write: part of the pending bytes reached the
                    // disk. Whole valid batches among them may survive; nothing else.
                    88..=93 if !segment_files(&dir).is_empty() => {
                        let durable_len: u64 = {
                            let segment = active_segment(&dir);
                            let bytes = std::fs::read(&segment).unwrap();
                            iter_batches(&bytes)
                                .take_while(|b| b.is_ok())
                                .map(|b| b.unwrap().1.len as u64)
                                .sum()
                        };
                        let mut torn = Vec::new();
                        for (_, b) in &model.pending {
                            torn.extend_from_slice(b);
                        }
                        let cut = if torn.is_empty() {
                            0
                        } else {
                            rng.below(torn.len() as u64) as usize
                        };
                        let same_segment = model.pending.first().is_some_and(|(o, _)| {
                            let active = active_segment(&dir);
                            let base: i64 = active
                                .file_stem()
                                .unwrap()
                                .to_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            *o >= base
                        });
                        if same_segment && cut > 0 {
                            let mut garbage = torn[..cut].to_vec();
                            if rng.below(2) == 0 {
                                // A torn block: the last bytes are garbage.
                                let n = garbage.len();
                                for b in &mut garbage[n.saturating_sub(50)..] {
                                    *b = rng.next_u64() as u8;
                                }
                            }
                            std::fs::OpenOptions::new()
                                .write(true)
                                .open(active_segment(&dir))
                                .unwrap()
                                .write_all_at(&garbage, durable_len)
                                .unwrap();
                        }
                        log = crash_and_reopen(log, &dir, cfg.clone()).await;
                        // Whole batches that made it are now part of the log.
                        let recovered_end = log.borrow().high_watermark();
                        let mut pending = std::mem::take(&mut model.pending);
                        pending.retain(|(o, b)| {
                            o + i64::from(parse_batch(b).unwrap().last_offset_delta) < recovered_end
                        });
                        for (_, b) in &pending {
                            let i = parse_batch(b).unwrap();
                            if i.producer_id >= 0 {
                                model.durable_sequence = i.last_sequence() + 1;
                            }
                        }
                        model.durable.extend(pending);
                        model.next_sequence = model.durable_sequence;
                    }
                    // Clean restart (and a torn write before any file exists).
                    88..=96 => {
                        flush(&log).await;
                        model.durable.append(&mut model.pending);
                        model.durable_sequence = model.next_sequence;
                        close(log).await;
                        log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
                    }
                    // A retried idempotent batch is a duplicate with its original offsets
                    // (while it is among the producer's last five batches).
                    _ if model.next_sequence == model.durable_sequence => {
                        let last = model
                            .durable
                            .iter()
                            .rev()
                            .find(|(_, b)| parse_batch(b).unwrap().producer_id >= 0);
                        if let Some((offset, bytes)) = last {
                            let mut retry = bytes.clone();
                            crate::protocol::batch::patch_base_offset(&mut retry, 0);
                            fix_crc(&mut retry);
                            let i = info(&retry);
                            assert_eq!(
                                log.borrow_mut().append(&retry, &i, 0).unwrap(),
                                AppendOutcome::Duplicate {
                                    base_offset: *offset,
                                    last_offset: offset + i64::from(i.last_offset_delta)
                                },
                                "seed {seed} step {step}"
                            );
                        }
                    }
                    _ => {}
                }
                check_against_model(&log, &model, &mut rng, seed, step).await;
            }
            flush(&log).await;
            close(log).await;
        });
    }
}

fn txn_batch(tag: u64, producer_id: i64, epoch: i16, sequence: i32, count: usize) -> Vec<u8> {
    TestBatch {
        producer_id,
        producer_epoch: epoch,
        base_sequence: sequence,
        attributes: crate::protocol::batch::ATTR_TRANSACTIONAL,
        records: (0..count)
            .map(|i| TestRecord::value(format!("t{producer_id}-{tag}-{i}").as_bytes()))
            .collect(),
        ..Default::default()
    }
    .encode()
}

/// Open transactions hold the last stable offset back until their marker is durable;
/// aborted ones are listed for read_committed reads; all of it survives a crash (replayed
/// from the active segment), a segment roll (snapshot) and a clean close.
#[test]
fn transactions_bound_the_last_stable_offset_and_survive_restarts() {
    use crate::protocol::batch::Marker;
    run(|dir| async move {
        let cfg = config(1 << 30, 1 << 20);
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        let append = |log: &RefCell<PartitionLog>, batch: Vec<u8>| {
            let outcome = log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
            assert!(matches!(outcome, AppendOutcome::Appended { .. }));
        };
        append(&log, make_batch(0, 2, 10, 1_000)); // 0-1
        append(&log, txn_batch(1, 7, 0, 0, 3)); // 2-4, producer 7 opens at 2
        append(&log, make_batch(2, 1, 10, 1_000)); // 5
        append(&log, txn_batch(3, 8, 0, 0, 2)); // 6-7, producer 8 opens at 6
        flush(&log).await;
        assert_eq!(log.borrow().high_watermark(), 8);
        assert_eq!(log.borrow().last_stable_offset(), 2);
        // read_committed reads stop at the last stable offset.
        let plan = log.borrow().read_plan_to(0, 1 << 20, 2).unwrap();
        let data = plan.read().await.unwrap();
        assert_eq!(iter_batches(&data.to_bytes()).count(), 1);
        assert!(matches!(
            log.borrow().read_plan_to(2, 1 << 20, 2).unwrap(),
            super::ReadPlan::Empty
        ));

        // Producer 7 aborts: until the marker is durable nothing moves.
        let (marker_at, _) = log
            .borrow_mut()
            .append_marker(7, 0, Marker::Abort, 0, 2_000)
            .unwrap()
            .unwrap();
        assert_eq!(marker_at, 8);
        assert_eq!(log.borrow().last_stable_offset(), 2);
        flush(&log).await;
        assert_eq!(log.borrow().last_stable_offset(), 6);
        let aborted = log.borrow().aborted_transactions(0, 6);
        assert_eq!(aborted.len(), 1);
        assert_eq!((aborted[0].producer_id, aborted[0].first_offset), (7, 2));
        assert!(log.borrow().aborted_transactions(9, 100).is_empty());
        // A repeated marker (a coordinator retrying after a restart) is not written.
        assert_eq!(
            log.borrow_mut()
                .append_marker(7, 0, Marker::Abort, 0, 2_000)
                .unwrap(),
            None
        );
        // The aborted producer's old epoch is fenced once a newer marker arrives.
        log.borrow_mut()
            .append_marker(7, 1, Marker::Abort, 0, 2_000)
            .unwrap()
            .unwrap();
        let stale = txn_batch(4, 7, 0, 3, 1);
        assert!(matches!(
            log.borrow_mut().append(&stale, &info(&stale), 0),
            Err(AppendError::InvalidProducerEpoch { .. })
        ));
        flush(&log).await;
        let hw = log.borrow().high_watermark();

        // Crash: the active segment is replayed; producer 8 is still open.
        let log = crash_and_reopen(log, &dir, cfg.clone()).await;
        assert_eq!(log.borrow().high_watermark(), hw);
        assert_eq!(log.borrow().last_stable_offset(), 6);
        assert_eq!(log.borrow().aborted_transactions(0, hw).len(), 1);
        // Producer 8 commits; then a clean close writes the state in a snapshot.
        log.borrow_mut()
            .append_marker(8, 0, Marker::Commit, 0, 3_000)
            .unwrap()
            .unwrap();
        flush(&log).await;
        let hw = log.borrow().high_watermark();
        assert_eq!(log.borrow().last_stable_offset(), hw);
        close(log).await;
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        assert_eq!(log.borrow().last_stable_offset(), hw);
        assert_eq!(log.borrow().aborted_transactions(0, hw).len(), 1);
        // Across a roll the snapshot carries an open transaction into the next segment.
        append(&log, txn_batch(5, 9, 0, 0, 1)); // producer 9 opens at `hw`
        flush(&log).await;
        close(log).await;
        let cfg_small = config(1, 1 << 20);
        let log = RefCell::new(PartitionLog::open(&dir, cfg_small.clone()).await.unwrap());
        assert_eq!(log.borrow().last_stable_offset(), hw);
        let filler = make_batch(6, 1, 10, 1_000);
        log.borrow_mut().append(&filler, &info(&filler), 0).unwrap();
        flush(&log).await;
        assert!(log.borrow().segment_count() >= 2);
        let log = crash_and_reopen(log, &dir, cfg_small).await;
        assert_eq!(log.borrow().last_stable_offset(), hw);
        assert_eq!(log.borrow().aborted_transactions(0, hw).len(), 1);
        close(log).await;
    });
}

/// An index file copied in from another segment of the same length (a restore or a hand
/// copy) names the right length but the wrong offsets: it must be rebuilt, not trusted —
/// trusting it would make the segment overlap the next one and cut the log there.
#[test]
fn an_index_copied_from_another_segment_is_rebuilt() {
    run(|dir| async move {
        let cfg = config(1, 0); // one batch per segment
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        for tag in 0..4u64 {
            let batch = make_batch(tag, 5, 100, 1_000);
            log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
            flush(&log).await;
        }
        let hw = log.borrow().high_watermark();
        close(log).await;
        let logs = segment_files(&dir);
        assert!(logs.len() >= 4);
        for suffix in [super::INDEX_SUFFIX, super::TIME_INDEX_SUFFIX] {
            let from = logs[2].with_extension(suffix.trim_start_matches('.'));
            let to = logs[1].with_extension(suffix.trim_start_matches('.'));
            std::fs::copy(&from, &to).unwrap();
        }
        let log = RefCell::new(PartitionLog::open(&dir, cfg).await.unwrap());
        assert_eq!(log.borrow().high_watermark(), hw);
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 4);
        close(log).await;
    });
}

/// Descriptors this process holds on `dir`'s segment files.
fn open_segment_fds(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir) && target.extension().is_some_and(|x| x == "log"))
        .count()
}

/// Waits (bounded) until at most `max` segment files of `dir` are open: a dropped
/// handle's descriptor is closed by the reactor's next I/O cycle.
async fn settle_fds(dir: &Path, max: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let open = open_segment_fds(dir);
        if open <= max || std::time::Instant::now() > deadline {
            return open;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[test]
fn sealed_segment_files_are_opened_on_demand_and_bounded() {
    use super::log::SegmentFiles;
    run(|dir| async move {
        const CAPACITY: usize = 2;
        let files = SegmentFiles::new(CAPACITY);
        let log = RefCell::new(
            PartitionLog::open_in(&dir, config(1024, 0), files.clone())
                .await
                .unwrap(),
        );
        let mut expected = Vec::new();
        for tag in 0..60u64 {
            let batch = make_batch(tag, 3, 200, 10_000 + tag as i64 * 10);
            let AppendOutcome::Appended { base_offset, .. } =
                log.borrow_mut().append(&batch, &info(&batch), 0).unwrap()
            else {
                unreachable!()
            };
            expected.push((base_offset, placed(&batch, base_offset)));
            flush(&log).await;
        }
        let segments = log.borrow().segment_count();
        assert!(segments > 10 * CAPACITY, "{segments} segments");
        // The active segment, plus at most the cache's capacity of sealed ones.
        assert!(files.len() <= CAPACITY);
        let open = settle_fds(&dir, CAPACITY + 1).await;
        assert!(
            open <= CAPACITY + 1,
            "{open} of {segments} segment files open"
        );

        // Reading from the start opens every sealed segment on demand, a few at a time.
        let got: Vec<_> = read_all(&log, 0, 1 << 10)
            .await
            .into_iter()
            .map(|(o, b)| (o, b.to_vec()))
            .collect();
        assert_eq!(got, expected);
        let (opened, closed) = files.counters();
        assert!(
            opened as usize >= segments - 1 - CAPACITY,
            "opened {opened}"
        );
        assert!(closed > 0);
        assert!(files.len() <= CAPACITY);
        let open = settle_fds(&dir, CAPACITY + 1).await;
        assert!(
            open <= CAPACITY + 1,
            "{open} segment files open after a full read"
        );

        // A read planned while its segment's file is cached keeps that file: the cache
        // closing its handle (other segments read meanwhile) does not break the read.
        let first = read_all(&log, 0, 1).await;
        assert!(!first.is_empty());
        let plan = log.borrow().read_plan(0, 1).unwrap();
        let tail = expected[expected.len() / 2].0;
        read_all(&log, tail, 1 << 20).await;
        assert!(files.len() <= CAPACITY);
        let data = plan.read().await.unwrap();
        assert_eq!(data.to_bytes().to_vec(), expected[0].1);
        // A timestamp search opens what it needs too.
        let plan = log.borrow().timestamp_plan(10_000 + 25 * 10 + 1);
        assert_eq!(
            plan.resolve().await.unwrap(),
            Some((25 * 3 + 1, 10_000 + 25 * 10 + 1))
        );
        close(log).await;
        assert!(files.is_empty(), "a closed log leaves nothing in the cache");
        assert_eq!(settle_fds(&dir, 0).await, 0);

        // Reopening opens the active segment only; reads open the rest on demand.
        let log = RefCell::new(
            PartitionLog::open_in(&dir, config(1024, 0), files.clone())
                .await
                .unwrap(),
        );
        assert_eq!(open_segment_fds(&dir), 1);
        let got: Vec<_> = read_all(&log, 0, 1 << 10)
            .await
            .into_iter()
            .map(|(o, b)| (o, b.to_vec()))
            .collect();
        assert_eq!(got, expected);
        let open = settle_fds(&dir, CAPACITY + 1).await;
        assert!(
            open <= CAPACITY + 1,
            "{open} segment files open after reopening"
        );
        close(log).await;
    });
}

/// `flush.messages` above 1: batches are acknowledged (the high watermark moves) once
/// written, and the job that reaches the count syncs; `flush.ms`: a job taken once the
/// oldest unsynced message has waited that long syncs, even with nothing new to write.
/// Either way everything acknowledged is there after a crash of the process.
#[test]
fn deferred_syncs_follow_flush_messages_and_flush_ms() {
    run(|dir| async move {
        let cfg = LogConfig {
            flush_messages: 3,
            ..config(1 << 20, 0)
        };
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        let mut syncs = Vec::new();
        for tag in 0..6u64 {
            let batch = make_batch(tag, 1, 10, 1_000);
            log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
            let job = log.borrow_mut().take_flush(0).expect("pending data");
            syncs.push(job.syncs());
            let result = job.run().await;
            log.borrow_mut().complete_flush(result);
            assert_eq!(log.borrow().high_watermark(), tag as i64 + 1);
        }
        assert_eq!(syncs, [false, false, true, false, false, true]);
        assert_eq!(log.borrow().sync_due_at_ms(), None, "no flush.ms");

        let log = crash_and_reopen(log, &dir, cfg.clone()).await;
        assert_eq!(log.borrow().high_watermark(), 6);

        let cfg = LogConfig {
            flush_messages: i64::MAX,
            flush_ms: 1_000,
            ..cfg
        };
        let log = crash_and_reopen(log, &dir, cfg).await;
        let batch = make_batch(6, 2, 10, 1_000);
        log.borrow_mut()
            .append(&batch, &info(&batch), 10_000)
            .unwrap();
        let job = log.borrow_mut().take_flush(10_000).unwrap();
        assert!(!job.syncs());
        let result = job.run().await;
        log.borrow_mut().complete_flush(result);
        assert_eq!(log.borrow().high_watermark(), 8);
        assert_eq!(log.borrow().sync_due_at_ms(), Some(11_000));
        assert!(log.borrow_mut().take_flush(10_999).is_none(), "not due yet");
        let job = log.borrow_mut().take_flush(11_000).expect("a sync is due");
        assert!(job.syncs());
        assert_eq!(job.bytes(), 0);
        let result = job.run().await;
        log.borrow_mut().complete_flush(result);
        assert_eq!(log.borrow().sync_due_at_ms(), None);
        assert!(log.borrow_mut().take_flush(20_000).is_none());
        close(log).await;
    });
}

/// Two jobs in flight across a roll: the second seals the segment the first wrote and
/// starts the next; a third is refused until the first completes; the high watermark
/// moves in order; everything reads back after a clean restart.
#[test]
fn a_second_flush_continues_the_first_across_a_roll() {
    run(|dir| async move {
        let cfg = config(4096, 1 << 20);
        let log = RefCell::new(PartitionLog::open(&dir, cfg.clone()).await.unwrap());
        let mut sent = Vec::new();
        let mut next = 0i64;
        let mut append = |log: &RefCell<PartitionLog>, tag: u64| {
            let batch = make_batch(tag, 2, 900, 1_000);
            log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
            sent.push((next, placed(&batch, next)));
            next += 2;
        };
        append(&log, 0);
        append(&log, 1);
        let first = log.borrow_mut().take_flush(0).unwrap();
        for tag in 2..8 {
            append(&log, tag); // rolls past 4 KiB
        }
        assert!(log.borrow().segment_count() > 1);
        let second = log.borrow_mut().take_flush(0).unwrap();
        append(&log, 8);
        assert!(log.borrow_mut().take_flush(0).is_none(), "two in flight");
        let second = glommio::spawn_local(second.run());
        let result = first.run().await;
        log.borrow_mut().complete_flush(result);
        assert_eq!(log.borrow().high_watermark(), 4);
        let result = second.await;
        log.borrow_mut().complete_flush(result);
        assert_eq!(log.borrow().high_watermark(), 16);
        flush(&log).await;
        assert_eq!(log.borrow().high_watermark(), 18);
        close(log).await;
        let log = RefCell::new(PartitionLog::open(&dir, cfg).await.unwrap());
        let got: Vec<_> = read_all(&log, 0, 1 << 20)
            .await
            .into_iter()
            .map(|(o, b)| (o, b.to_vec()))
            .collect();
        assert_eq!(got, sent);
    });
}

/// A consumer reading a segment from disk in order gets each next chunk read ahead (the
/// fetch at exactly the offset after the last one starts from it), and what it reads is
/// what was written; a fetch elsewhere does not take it.
#[test]
fn sequential_disk_reads_are_read_ahead_and_byte_exact() {
    run(|dir| async move {
        // No recent-batch cache: every read goes to the segment file.
        let log = RefCell::new(PartitionLog::open(&dir, config(1 << 20, 0)).await.unwrap());
        let mut sent = Vec::new();
        let mut next = 0i64;
        for tag in 0..60u64 {
            let batch = make_batch(tag, 3, 700, 1_000);
            log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
            sent.push((next, placed(&batch, next)));
            next += 3;
        }
        flush(&log).await;
        let got: Vec<_> = read_all(&log, 0, 5_000)
            .await
            .into_iter()
            .map(|(o, b)| (o, b.to_vec()))
            .collect();
        assert_eq!(got, sent);
        let hits = log.borrow().read_ahead_hits();
        assert!(hits >= 10, "{hits} read-ahead hits");
        // A read at another offset than the one read ahead goes to the disk.
        let got: Vec<_> = read_all(&log, 30, 5_000)
            .await
            .into_iter()
            .map(|(o, b)| (o, b.to_vec()))
            .collect();
        assert_eq!(got, sent[10..]);
        assert!(super::log::read_ahead_held_bytes() <= super::log::READ_AHEAD_BYTES_PER_SHARD_MAX);
        close(log).await;
    });
}
