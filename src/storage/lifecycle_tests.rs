//! Tests of a log's life after the append: retention by size and time, DeleteRecords,
//! LogAppendTime, and compaction (with tombstones and every codec) checked against a model
//! of "the latest record per key", before and after a reopen.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use super::compaction::{batch_records, compress, split_records};
use super::log::{LogConfig, PartitionLog};
use super::LOG_SUFFIX;
use crate::protocol::batch::testing::{fix_crc, TestBatch, TestRecord};
use crate::protocol::batch::{iter_batches, validate_produce_records, BATCH_HEADER_LEN};
use crate::storage::ReadError;

use super::testing::run_in_partition_dir as run;

/// A deterministic xorshift generator: failures replay from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One record as the model sees it.
#[derive(Clone, Debug, PartialEq)]
struct Rec {
    offset: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    timestamp: i64,
}

/// Encodes records as one batch, compressed with `codec` (0..=4).
fn batch_of(records: &[(Vec<u8>, Option<Vec<u8>>)], timestamp: i64, codec: u8) -> Vec<u8> {
    let plain = TestBatch {
        base_timestamp: timestamp,
        records: records
            .iter()
            .map(|(k, v)| TestRecord {
                key: Some(k.clone()),
                value: v.clone(),
                headers: vec![
                    (b"h".to_vec(), None),
                    (b"h".to_vec(), Some(b"dup".to_vec())),
                ],
                timestamp_delta: 0,
            })
            .collect(),
        ..Default::default()
    }
    .encode();
    if codec == 0 {
        return plain;
    }
    let area = compress(codec, codec == 2, &plain[BATCH_HEADER_LEN..]).unwrap();
    let mut out = plain[..BATCH_HEADER_LEN].to_vec();
    out.extend_from_slice(&area);
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) | i16::from(codec);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    fix_crc(&mut out);
    out
}

async fn append(log: &RefCell<PartitionLog>, batch: &[u8], now_ms: i64) -> i64 {
    let info = validate_produce_records(batch, 64 << 20).unwrap();
    match log.borrow_mut().append(batch, &info, now_ms).unwrap() {
        super::AppendOutcome::Appended { base_offset, .. } => base_offset,
        other => panic!("unexpected {other:?}"),
    }
}

async fn flush(log: &RefCell<PartitionLog>) {
    let job = log.borrow_mut().take_flush(crate::util::now_ms());
    if let Some(job) = job {
        let result = job.run().await;
        log.borrow_mut().complete_flush(result);
    }
}

async fn close(log: RefCell<PartitionLog>) {
    let job = log.borrow_mut().close_job();
    job.unwrap().run().await.unwrap();
}

/// Every record served from `from` to the high watermark, decoded.
async fn read_records(log: &RefCell<PartitionLog>, from: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let plan = log.borrow().read_plan(offset, 64 * 1024).unwrap();
        let data = plan.read().await.unwrap();
        if data.is_empty() {
            return out;
        }
        let records = data.to_bytes();
        for item in iter_batches(&records) {
            let (at, info) = item.expect("served batches are valid");
            let bytes = &records[at..at + info.len];
            let body = batch_records(bytes, &info).unwrap();
            for r in split_records(&body, info.record_count).unwrap() {
                let rec_offset = info.base_offset + i64::from(r.offset_delta);
                if rec_offset >= offset {
                    out.push(Rec {
                        offset: rec_offset,
                        key: r.key.unwrap().to_vec(),
                        value: r.value.map(|v| v.to_vec()),
                        timestamp: info.base_timestamp + r.timestamp_delta,
                    });
                }
            }
            offset = info.last_offset() + 1;
        }
    }
}

fn segment_count_on_disk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(LOG_SUFFIX)
        })
        .count()
}

fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        cache_bytes: 4096,
        ..LogConfig::default()
    }
}

#[test]
fn retention_by_size_deletes_oldest_segments_and_advances_the_start() {
    run(|dir| async move {
        let mut config = small_segments(2048);
        config.retention_bytes = 6000;
        let log = RefCell::new(PartitionLog::open(&dir, config.clone()).await.unwrap());
        let now = crate::util::now_ms();
        for i in 0..40u8 {
            let value = vec![i; 300];
            append(&log, &batch_of(&[(vec![i], Some(value))], now, 0), now).await;
            flush(&log).await;
        }
        let before = log.borrow().segment_count();
        assert!(before > 5, "{before} segments");
        let outcome = log.borrow_mut().enforce_retention(now);
        assert!(!outcome.rolled);
        outcome
            .removal
            .expect("segments to delete")
            .run()
            .await
            .unwrap();
        let start = log.borrow().log_start_offset();
        assert!(start > 0);
        assert!(log.borrow().size_bytes() < 6000 + 2048);
        assert_eq!(segment_count_on_disk(&dir), log.borrow().segment_count());
        assert!(matches!(
            log.borrow().read_plan(start - 1, 1024),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        let records = read_records(&log, start).await;
        assert_eq!(records.first().unwrap().offset, start);
        assert_eq!(records.last().unwrap().offset, 39);
        close(log).await;
        let log = RefCell::new(PartitionLog::open(&dir, config).await.unwrap());
        assert_eq!(log.borrow().log_start_offset(), start);
        assert_eq!(log.borrow().high_watermark(), 40);
    });
}

#[test]
fn retention_by_time_rolls_and_deletes_everything_expired() {
    run(|dir| async move {
        let mut config = small_segments(1 << 20);
        config.retention_ms = 60_000;
        let log = RefCell::new(PartitionLog::open(&dir, config.clone()).await.unwrap());
        let now = crate::util::now_ms();
        let old = now - 3_600_000;
        for i in 0..10u8 {
            append(&log, &batch_of(&[(vec![i], Some(vec![i]))], old, 0), now).await;
        }
        flush(&log).await;
        // Everything is in the active segment: the first run rolls it...
        let outcome = log.borrow_mut().enforce_retention(now);
        assert!(outcome.rolled && outcome.removal.is_none());
        flush(&log).await;
        // ...and the next deletes it.
        let outcome = log.borrow_mut().enforce_retention(now);
        outcome
            .removal
            .expect("expired segment")
            .run()
            .await
            .unwrap();
        assert_eq!(log.borrow().log_start_offset(), 10);
        assert!(read_records(&log, 10).await.is_empty());
        // New data is kept.
        append(
            &log,
            &batch_of(&[(b"new".to_vec(), Some(b"v".to_vec()))], now, 0),
            now,
        )
        .await;
        flush(&log).await;
        let outcome = log.borrow_mut().enforce_retention(now);
        assert!(outcome.removal.is_none() && !outcome.rolled);
        assert_eq!(read_records(&log, 10).await.len(), 1);
        close(log).await;
        let log = RefCell::new(PartitionLog::open(&dir, config).await.unwrap());
        assert_eq!(log.borrow().log_start_offset(), 10);
        assert_eq!(log.borrow().high_watermark(), 11);
    });
}

#[test]
fn delete_records_moves_the_start_inside_a_segment_durably() {
    run(|dir| async move {
        let config = small_segments(1 << 20);
        let log = RefCell::new(PartitionLog::open(&dir, config.clone()).await.unwrap());
        let now = crate::util::now_ms();
        for i in 0..20u8 {
            append(&log, &batch_of(&[(vec![i], Some(vec![i]))], now, 0), now).await;
        }
        flush(&log).await;
        assert!(matches!(
            log.borrow_mut().delete_records(21),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        let (low, job) = log.borrow_mut().delete_records(7).unwrap();
        job.run().await.unwrap();
        assert_eq!(low, 7);
        assert_eq!(read_records(&log, 7).await.first().unwrap().offset, 7);
        assert!(log.borrow().read_plan(6, 1024).is_err());
        // Going back is a no-op; -1 means the high watermark.
        let (low, job) = log.borrow_mut().delete_records(3).unwrap();
        job.run().await.unwrap();
        assert_eq!(low, 7);
        // A crash (no clean close) keeps the start: it was recorded before the answer.
        drop(log);
        let log = RefCell::new(PartitionLog::open(&dir, config).await.unwrap());
        assert_eq!(log.borrow().log_start_offset(), 7);
        let (low, job) = log.borrow_mut().delete_records(-1).unwrap();
        job.run().await.unwrap();
        assert_eq!(low, 20);
    });
}

#[test]
fn log_append_time_stamps_batches_with_the_broker_clock() {
    run(|dir| async move {
        let mut config = small_segments(1 << 20);
        config.log_append_time = true;
        let log = RefCell::new(PartitionLog::open(&dir, config).await.unwrap());
        let now = 1_800_000_000_000;
        append(
            &log,
            &batch_of(&[(b"k".to_vec(), Some(b"v".to_vec()))], 5, 0),
            now,
        )
        .await;
        flush(&log).await;
        let plan = log.borrow().read_plan(0, 1024).unwrap();
        let data = plan.read().await.unwrap();
        let info = validate_produce_records(&data.to_bytes(), 1 << 20).expect("CRC still valid");
        assert!(info.timestamp_type_log_append());
        assert_eq!(info.max_timestamp, now);
        let plan = log.borrow().timestamp_plan(now);
        assert_eq!(plan.resolve().await.unwrap(), Some((0, now)));
    });
}

/// Compares record lists, reporting the first difference briefly.
fn same(got: &[Rec], want: &[Rec], what: &str) {
    let brief = |r: &Rec| {
        format!(
            "offset {} key {:?} value {:?}",
            r.offset,
            String::from_utf8_lossy(&r.key),
            r.value
                .as_ref()
                .map(|v| String::from_utf8_lossy(&v[..v.len().min(12)]).into_owned())
        )
    };
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "{what}: record {i} is {} but should be {}",
            brief(g),
            brief(w)
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: record count");
}

/// What compaction must leave of `records` (all in closed segments): the latest record of
/// each key, tombstones only while younger than the horizon.
fn model_compact(records: &[Rec], tombstone_horizon: i64) -> Vec<Rec> {
    let mut latest: HashMap<&[u8], i64> = HashMap::new();
    for r in records {
        latest.insert(&r.key, r.offset);
    }
    records
        .iter()
        .filter(|r| latest[r.key.as_slice()] == r.offset)
        .filter(|r| r.value.is_some() || r.timestamp >= tombstone_horizon)
        .cloned()
        .collect()
}

fn compaction_case(seed: u64) {
    run(move |dir| async move {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut config = small_segments(4096);
        config.compact = true;
        config.delete = false;
        config.delete_retention_ms = 600_000;
        let log = RefCell::new(PartitionLog::open(&dir, config.clone()).await.unwrap());
        let now = crate::util::now_ms();
        let mut written: Vec<Rec> = Vec::new();
        for b in 0..120 {
            let codec = rng.below(5) as u8;
            // Old tombstones expire, recent ones must stay.
            let timestamp = if rng.below(2) == 0 {
                now - 3_600_000
            } else {
                now - 1000
            };
            let count = 1 + rng.below(6) as usize;
            let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..count)
                .map(|i| {
                    let key = format!("key-{}", rng.below(25)).into_bytes();
                    let value = (rng.below(6) != 0).then(|| {
                        format!("{b}-{i}-{}", "x".repeat(rng.below(200) as usize)).into_bytes()
                    });
                    (key, value)
                })
                .collect();
            let base = append(&log, &batch_of(&records, timestamp, codec), now).await;
            for (i, (key, value)) in records.into_iter().enumerate() {
                written.push(Rec {
                    offset: base + i as i64,
                    key,
                    value,
                    timestamp,
                });
            }
            if rng.below(3) == 0 {
                flush(&log).await;
            }
        }
        flush(&log).await;
        let active_base = {
            let all = read_records(&log, 0).await;
            same(
                &all,
                &written,
                &format!("seed {seed}: log before compaction"),
            );
            // The active segment is the last one; find its base from the files.
            let mut bases: Vec<i64> = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| {
                    super::parse_segment_name(&e.unwrap().file_name().to_string_lossy(), LOG_SUFFIX)
                })
                .collect();
            bases.sort_unstable();
            *bases.last().unwrap()
        };
        assert!(
            log.borrow().segment_count() > 3,
            "seed {seed}: too few segments"
        );
        // A small read from a closed segment leaves the next chunk read ahead for the
        // offset after it; compaction rewrites that segment, and the read ahead of the old
        // bytes must not be served afterwards.
        let read_ahead_for = {
            let plan = log.borrow().read_plan(0, 1).unwrap();
            let data = plan.read().await.unwrap();
            data.end_offset.expect("a batch at offset 0")
        };
        let hits = log.borrow().read_ahead_hits();
        assert_eq!(log.borrow().read_ahead_armed_for(), Some(read_ahead_for));
        let job = log
            .borrow_mut()
            .compaction_plan(now)
            .expect("a pass to run");
        let result = job.run().await;
        let removal = log.borrow_mut().complete_compaction(result);
        if let Some(removal) = removal {
            removal.run().await.unwrap();
        }
        assert_eq!(
            log.borrow().read_ahead_armed_for(),
            None,
            "compaction clears it"
        );
        let plan = log.borrow().read_plan(read_ahead_for, 64 * 1024);
        if let Ok(plan) = plan {
            plan.read().await.unwrap();
        }
        assert_eq!(
            log.borrow().read_ahead_hits(),
            hits,
            "read ahead of replaced bytes"
        );
        let (closed, active): (Vec<Rec>, Vec<Rec>) = written
            .iter()
            .cloned()
            .partition(|r| r.offset < active_base);
        let mut expected = model_compact(&closed, now - config.delete_retention_ms);
        expected.extend(active);
        let start = log.borrow().log_start_offset();
        same(
            &read_records(&log, start).await,
            &expected,
            &format!("seed {seed}: after compaction"),
        );
        // Every offset, even a removed one, reads from the next record on.
        for probe in [read_ahead_for, 1, 17, 55, active_base - 1] {
            let from = read_records(&log, probe).await;
            let want: Vec<Rec> = expected
                .iter()
                .filter(|r| r.offset >= probe)
                .cloned()
                .collect();
            same(&from, &want, &format!("seed {seed}: reading from {probe}"));
        }
        // Nothing new: no second pass.
        assert!(log.borrow_mut().compaction_plan(now).is_none());
        // The compacted log survives a crash and a reopen.
        drop(log);
        let log = RefCell::new(PartitionLog::open(&dir, config).await.unwrap());
        assert_eq!(log.borrow().log_start_offset(), start);
        same(
            &read_records(&log, start).await,
            &expected,
            &format!("seed {seed}: after reopen"),
        );
        assert_eq!(
            log.borrow().high_watermark(),
            written.last().unwrap().offset + 1
        );
    });
}

#[test]
fn compaction_keeps_the_latest_record_per_key() {
    let seeds: Vec<u64> = match std::env::var("STRAND_COMPACTION_SEED") {
        Ok(seed) => vec![seed.parse().expect("STRAND_COMPACTION_SEED is a number")],
        Err(_) => (1..=6).collect(),
    };
    for seed in seeds {
        compaction_case(seed);
    }
}

#[test]
fn a_segment_whose_seal_is_in_flight_is_left_alone() {
    run(|dir| async move {
        let mut config = small_segments(1024);
        config.compact = true;
        config.retention_bytes = 0;
        let log = RefCell::new(PartitionLog::open(&dir, config).await.unwrap());
        let now = crate::util::now_ms();
        for i in 0..6u8 {
            append(
                &log,
                &batch_of(&[(vec![i % 2], Some(vec![i; 300]))], now, 0),
                now,
            )
            .await;
        }
        // The rolled segments' seals are in this job, not yet on disk.
        let job = log.borrow_mut().take_flush(now).expect("pending data");
        assert!(log.borrow_mut().compaction_plan(now).is_none());
        let outcome = log.borrow_mut().enforce_retention(now);
        assert!(outcome.removal.is_none());
        let result = job.run().await;
        log.borrow_mut().complete_flush(result);
        // Sealed on disk: now both may act.
        assert!(log.borrow_mut().compaction_plan(now).is_some());
    });
}
