//! Tests of a replicated partition log (the log as a Raft log): entries placed with their
//! terms, commits moving the high watermark, conflicting suffixes truncated in memory and
//! on disk while flush jobs are in flight — checked against a model after every step, and
//! what reaches the disk checked by reopening the files.

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::Bytes;

use super::log::{
    AppendError, AppendOutcome, FlushResult, LogConfig, PartitionLog, TruncateError,
    FLUSHES_IN_FLIGHT_MAX,
};
use super::log_tests::{close, idempotent_batch, info, make_batch, read_all, run, Rng};
use crate::protocol::batch::parse_batch;
use crate::storage::epochs::{EpochCache, EpochEntry};

fn replicated(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        cache_bytes: 2048,
        replicated: true,
        ..LogConfig::default()
    }
}

/// One entry the log must hold: the batch as sent (before offsets are given) and its term.
#[derive(Clone)]
struct Entry {
    term: u64,
    batch: Vec<u8>,
    /// An idempotent batch of the test's producer with this first sequence.
    sequence: Option<i32>,
}

impl Entry {
    fn records(&self) -> i64 {
        i64::from(parse_batch(&self.batch).unwrap().last_offset_delta) + 1
    }
}

/// The batch as a replica stores it: base offset and term patched.
fn stored(entry: &Entry, base_offset: i64) -> Vec<u8> {
    let mut b = entry.batch.clone();
    crate::protocol::batch::patch_base_offset(&mut b, base_offset);
    crate::protocol::batch::patch_leader_epoch(&mut b, entry.term as i32);
    b
}

const PRODUCER: i64 = 7;

#[derive(Default)]
struct Model {
    entries: Vec<Entry>,
    committed: u64,
    high_watermark: i64,
}

impl Model {
    fn end_of(&self, index: u64) -> i64 {
        self.entries[..index as usize]
            .iter()
            .map(Entry::records)
            .sum()
    }

    fn next_sequence(&self) -> i32 {
        self.entries
            .iter()
            .rev()
            .find_map(|e| e.sequence.map(|s| s + e.records() as i32))
            .unwrap_or(0)
    }

    fn check(&mut self, log: &PartitionLog) {
        let raft = log.raft().expect("replicated");
        assert_eq!(raft.last_index(), self.entries.len() as u64);
        assert_eq!(raft.committed(), self.committed);
        assert_eq!(log.next_offset(), self.end_of(self.entries.len() as u64));
        let hw = log.high_watermark();
        assert!(hw >= self.high_watermark, "the high watermark moved back");
        assert!(
            hw <= self.end_of(self.committed),
            "uncommitted data is visible"
        );
        self.high_watermark = hw;
        // The epochs: one row per term, at the term's first entry.
        let mut expected_rows = Vec::new();
        let mut base = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            if expected_rows
                .last()
                .is_none_or(|r: &EpochEntry| r.term != entry.term)
            {
                expected_rows.push(EpochEntry {
                    term: entry.term,
                    first_index: i as u64 + 1,
                    start_offset: base,
                });
            }
            base += entry.records();
        }
        assert_eq!(raft.epochs().entries(), &expected_rows[..], "epochs");
        // Every entry from the committed one on is known (a reopened log knows no more);
        // what is known of earlier ones must be right.
        for (i, entry) in self.entries.iter().enumerate().rev() {
            let index = i as u64 + 1;
            let base = self.end_of(i as u64);
            let must = index >= self.committed;
            if !must && raft.term(index).is_none() {
                break;
            }
            assert_eq!(raft.term(index), Some(entry.term), "term of {index}");
            assert_eq!(raft.offsets(index), Some((base, base + entry.records())));
            if !must && index + 8 < self.committed {
                break;
            }
        }
    }

    fn assert_on_disk(&self, found: &[(i64, Vec<u8>)], seed: u64) {
        let expected = self.expected();
        assert_eq!(found.len(), expected.len(), "seed {seed}: entries on disk");
        for (f, e) in found.iter().zip(&expected) {
            assert_eq!(f.0, e.0, "seed {seed}: offset");
            assert!(f.1 == e.1, "seed {seed}: batch at {} differs", e.0);
        }
    }

    /// Every entry, as the files must hold them once all is flushed.
    fn expected(&self) -> Vec<(i64, Vec<u8>)> {
        let mut base = 0;
        self.entries
            .iter()
            .map(|e| {
                let out = (base, stored(e, base));
                base += e.records();
                out
            })
            .collect()
    }
}

type Running = glommio::task::JoinHandle<FlushResult>;

async fn complete_oldest(log: &RefCell<PartitionLog>, running: &mut VecDeque<Running>) {
    if let Some(task) = running.pop_front() {
        let result = task.await.expect("flush task ran");
        assert!(result.is_ok(), "flush failed: {:?}", result.as_ref().err());
        log.borrow_mut().complete_flush(result);
    }
}

async fn drain(log: &RefCell<PartitionLog>, running: &mut VecDeque<Running>) {
    while !running.is_empty() {
        complete_oldest(log, running).await;
    }
    loop {
        let job = log.borrow_mut().take_flush(0);
        let Some(job) = job else { break };
        let result = job.run().await;
        assert!(result.is_ok(), "flush failed: {:?}", result.as_ref().err());
        log.borrow_mut().complete_flush(result);
    }
}

/// Reads the partition's files back as a single-node log (the format is the same).
async fn on_disk(dir: &std::path::Path) -> Vec<(i64, Vec<u8>)> {
    let log = RefCell::new(
        PartitionLog::open(dir, super::log_tests::config(1 << 20, 0))
            .await
            .unwrap(),
    );
    let all = read_all(&log, 0, 4096).await;
    close(log).await;
    all.into_iter().map(|(o, b)| (o, b.to_vec())).collect()
}

fn random_ops(seed: u64, steps: usize, crash: bool) {
    // Shown with a failure (STRAND_REPLICA_FIRST_SEED=<seed> STRAND_REPLICA_SEEDS=1
    // replays it).
    println!("model seed {seed}");
    run(move |dir| async move {
        let mut rng = Rng(seed);
        let log = RefCell::new(PartitionLog::open(&dir, replicated(1500)).await.unwrap());
        let mut model = Model::default();
        let mut running: VecDeque<Running> = VecDeque::new();
        let mut term = 1u64;
        let mut tag = 0u64;
        for _ in 0..steps {
            match rng.below(100) {
                0..=29 => {
                    // The leader appends (producer state checked).
                    tag += 1;
                    log.borrow_mut().set_epoch(term as i32);
                    let (batch, sequence) = if rng.below(3) == 0 {
                        let sequence = model.next_sequence();
                        let count = 1 + rng.below(3) as usize;
                        (
                            idempotent_batch(tag, PRODUCER, sequence, count),
                            Some(sequence),
                        )
                    } else {
                        let count = 1 + rng.below(3) as usize;
                        (make_batch(tag, count, rng.below(200) as usize, 1_000), None)
                    };
                    let outcome = log.borrow_mut().append(&batch, &info(&batch), 1_000);
                    assert!(
                        matches!(outcome, Ok(AppendOutcome::Appended { .. })),
                        "{outcome:?}"
                    );
                    model.entries.push(Entry {
                        term,
                        batch,
                        sequence,
                    });
                }
                30..=44 => {
                    // A follower places the leader's entry.
                    tag += 1;
                    let count = 1 + rng.below(3) as usize;
                    let batch = make_batch(tag, count, rng.below(200) as usize, 1_000);
                    let index = log
                        .borrow_mut()
                        .place(Bytes::from(batch.clone()), term, 1_000)
                        .unwrap();
                    model.entries.push(Entry {
                        term,
                        batch,
                        sequence: None,
                    });
                    assert_eq!(index, model.entries.len() as u64);
                }
                45..=59 => {
                    if running.len() < FLUSHES_IN_FLIGHT_MAX {
                        let job = log.borrow_mut().take_flush(0);
                        if let Some(job) = job {
                            running.push_back(glommio::spawn_local(job.run()).detach());
                        }
                    }
                }
                60..=71 => complete_oldest(&log, &mut running).await,
                72..=81 => {
                    let last = model.entries.len() as u64;
                    let to = model.committed + rng.below(last - model.committed + 1);
                    let _ = log.borrow_mut().commit_to(to);
                    model.committed = model.committed.max(to);
                }
                82..=93 => {
                    let last = model.entries.len() as u64;
                    let after = model.committed + rng.below(last - model.committed + 1);
                    log.borrow_mut().truncate_after(after).unwrap();
                    model.entries.truncate(after as usize);
                    // A new leader's entries follow.
                    term += 1;
                }
                _ => term += 1,
            }
            model.check(&log.borrow());
        }
        drain(&log, &mut running).await;
        model.check(&log.borrow());
        assert_eq!(
            &EpochCache::read(&dir).unwrap(),
            log.borrow().raft().unwrap().epochs(),
            "the checkpoint holds the epochs once flushed"
        );
        if crash {
            // Everything is written; nothing is sealed past the commit. Recovery scans
            // the unsealed segments and must find exactly the entries, none cut.
            drop(log);
        } else {
            let last = model.entries.len() as u64;
            log.borrow_mut().commit_to(last);
            model.committed = last;
            drain(&log, &mut running).await;
            model.check(&log.borrow());
            assert_eq!(log.borrow().high_watermark(), log.borrow().next_offset());
            close(log).await;
        }
        model.assert_on_disk(&on_disk(&dir).await, seed);

        // Reopened as a Raft log with the hard state the driver would have written: the
        // same entries, terms and commit, and producer state that a truncation of the
        // uncommitted entries restores exactly.
        write_hard_state(&dir, &model).await;
        let log = RefCell::new(PartitionLog::open(&dir, replicated(1500)).await.unwrap());
        model.high_watermark = 0;
        model.check(&log.borrow());
        let uncommitted = model.entries.len() as u64 - model.committed;
        let after = model.committed + rng.below(uncommitted + 1);
        log.borrow_mut().truncate_after(after).unwrap();
        model.entries.truncate(after as usize);
        model.check(&log.borrow());
        let sequence = model.next_sequence();
        let batch = idempotent_batch(tag + 1, PRODUCER, sequence, 2);
        log.borrow_mut().set_epoch(term as i32 + 1);
        let outcome = log.borrow_mut().append(&batch, &info(&batch), 1_000);
        assert!(
            matches!(outcome, Ok(AppendOutcome::Appended { .. })),
            "seed {seed}: {outcome:?}"
        );
        model.entries.push(Entry {
            term: term + 1,
            batch,
            sequence: Some(sequence),
        });
        model.check(&log.borrow());
        drain(&log, &mut running).await;
        close(log).await;
        model.assert_on_disk(&on_disk(&dir).await, seed);
    });
}

#[test]
fn random_appends_commits_and_truncations_match_the_model() {
    // STRAND_REPLICA_SEEDS=N runs more seeds (a longer search by hand).
    let seeds = std::env::var("STRAND_REPLICA_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12u64);
    let first = std::env::var("STRAND_REPLICA_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0u64);
    for seed in first..first + seeds {
        random_ops(seed, 400, seed % 2 == 1);
    }
}

#[test]
fn a_truncation_keeps_committed_entries_and_restores_producer_state() {
    run(|dir| async move {
        let log = RefCell::new(PartitionLog::open(&dir, replicated(1 << 20)).await.unwrap());
        log.borrow_mut().set_epoch(1);
        for (i, seq) in [0, 2, 4].into_iter().enumerate() {
            let batch = idempotent_batch(i as u64, PRODUCER, seq, 2);
            log.borrow_mut().append(&batch, &info(&batch), 0).unwrap();
        }
        log.borrow_mut().commit_to(1);
        assert_eq!(
            log.borrow_mut().truncate_after(0),
            Err(TruncateError::Committed {
                index: 0,
                committed: 1
            })
        );
        log.borrow_mut().truncate_after(1).unwrap();
        assert_eq!(log.borrow().next_offset(), 2);
        // The producer's next sequence is the one after the kept entry: 2 again, and 4
        // (which followed the cut entry) is out of order.
        let again = idempotent_batch(9, PRODUCER, 4, 2);
        assert!(matches!(
            log.borrow_mut().append(&again, &info(&again), 0),
            Err(AppendError::OutOfOrderSequence { expected: 2, .. })
        ));
        log.borrow_mut().set_epoch(2);
        let retry = idempotent_batch(9, PRODUCER, 2, 2);
        assert!(matches!(
            log.borrow_mut().append(&retry, &info(&retry), 0),
            Ok(AppendOutcome::Appended { base_offset: 2, .. })
        ));
        assert_eq!(log.borrow().raft().unwrap().term(2), Some(2));
        assert_eq!(log.borrow().raft().unwrap().term(1), Some(1));
        // OffsetForLeaderEpoch: epoch 1 ends where epoch 2 starts, the latest at the end.
        assert_eq!(log.borrow().end_offset_for_epoch(1), Some((1, 2)));
        assert_eq!(log.borrow().end_offset_for_epoch(2), Some((2, 4)));
        // An epoch above every known one is undefined (Kafka: UNDEFINED_EPOCH, -1).
        assert_eq!(log.borrow().end_offset_for_epoch(5), Some((-1, -1)));
    });
}

#[test]
fn offsets_between_the_high_watermark_and_the_log_end_read_nothing() {
    run(|dir| async move {
        let log = RefCell::new(PartitionLog::open(&dir, replicated(1 << 20)).await.unwrap());
        for tag in 0..3 {
            let batch = make_batch(tag, 2, 10, 0);
            log.borrow_mut().place(Bytes::from(batch), 1, 0).unwrap();
        }
        let mut running = VecDeque::new();
        drain(&log, &mut running).await;
        // Written, not committed: nothing is visible, yet the offsets are in range.
        assert_eq!(log.borrow().high_watermark(), 0);
        let plan = log.borrow().read_plan(4, 1024).unwrap();
        assert!(plan.read().await.unwrap().is_empty());
        assert!(log.borrow().read_plan(7, 1024).is_err());
        log.borrow_mut().commit_to(2);
        assert_eq!(log.borrow().high_watermark(), 4);
        let read = read_all(&log, 0, 1024).await;
        assert_eq!(read.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 2]);
    });
}

#[test]
fn a_replicated_log_is_not_opened_without_its_raft_state_or_past_its_end() {
    run(|dir| async move {
        let log = RefCell::new(PartitionLog::open(&dir, replicated(1 << 20)).await.unwrap());
        log.borrow_mut()
            .place(Bytes::from(make_batch(1, 1, 1, 0)), 1, 0)
            .unwrap();
        let mut running = VecDeque::new();
        drain(&log, &mut running).await;
        close(log).await;
        std::fs::remove_file(dir.join(crate::storage::raft_state::RAFT_STATE_FILE)).unwrap();
        let err = PartitionLog::open(&dir, replicated(1 << 20)).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(std::io::ErrorKind::InvalidData));
        // A commit past the log end (data the state says is there is not).
        let mut model = Model::default();
        model.entries.push(Entry {
            term: 1,
            batch: make_batch(1, 1, 1, 0),
            sequence: None,
        });
        model.entries.push(model.entries[0].clone());
        model.committed = 2;
        write_hard_state(&dir, &model).await;
        let err = PartitionLog::open(&dir, replicated(1 << 20)).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(std::io::ErrorKind::InvalidData));
        model.committed = 1;
        write_hard_state(&dir, &model).await;
        let log = PartitionLog::open(&dir, replicated(1 << 20)).await.unwrap();
        assert_eq!(log.raft().unwrap().last_index(), 1);
        assert_eq!(log.raft().unwrap().term(1), Some(1));
        assert_eq!(log.high_watermark(), 1);
    });
}

async fn write_hard_state(dir: &std::path::Path, model: &Model) {
    use crate::storage::raft_state::{HardState, RaftStateFile};
    let (file, _) = RaftStateFile::open_or_create(dir).await.unwrap();
    let state = HardState {
        term: 1,
        vote: 0,
        commit: model.committed,
        commit_offset: model.end_of(model.committed),
    };
    file.write(&state).await.unwrap();
    file.close().await.unwrap();
}

#[test]
fn a_replicated_log_is_not_compacted_yet() {
    use crate::protocol::batch::testing::{TestBatch, TestRecord};
    run(|dir| async move {
        let mut config = replicated(256);
        config.compact = true;
        config.min_compaction_lag_ms = 0;
        let open = |config: LogConfig| {
            let dir = dir.clone();
            async move { RefCell::new(PartitionLog::open(&dir, config).await.unwrap()) }
        };
        let log = open(config.clone()).await;
        // One key written over and over, a segment per batch: all but the last batch are
        // garbage a compaction would remove.
        for i in 0..6u8 {
            let batch = TestBatch {
                records: vec![TestRecord {
                    key: Some(b"k".to_vec()),
                    value: Some(vec![i; 200]),
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode();
            log.borrow_mut().place(Bytes::from(batch), 1, 0).unwrap();
        }
        log.borrow_mut().commit_to(6);
        let mut running = VecDeque::new();
        drain(&log, &mut running).await;
        assert!(log.borrow().segment_count() > 3);
        assert!(log.borrow_mut().compaction_plan(i64::MAX).is_none());
        close(log).await;
        // The same files as a single-node log have work for the cleaner.
        let mut single = config;
        single.replicated = false;
        let log = open(single).await;
        assert!(log.borrow_mut().compaction_plan(i64::MAX).is_some());
    });
}

/// Places `terms.len()` entries of 2 records (term of each from `terms`), commits them
/// and flushes them.
async fn committed_entries(log: &RefCell<PartitionLog>, terms: &[u64]) {
    for (i, &term) in terms.iter().enumerate() {
        let batch = make_batch(i as u64, 2, 100, 0);
        log.borrow_mut().place(Bytes::from(batch), term, 0).unwrap();
    }
    log.borrow_mut().commit_to(terms.len() as u64);
    drain(log, &mut VecDeque::new()).await;
}

async fn run_retention(log: &RefCell<PartitionLog>, now_ms: i64) -> bool {
    let Some(scan) = log.borrow().plan_raft_retention(now_ms) else {
        return false;
    };
    let counted = scan.run().await;
    let job = log.borrow_mut().complete_raft_retention(scan, counted);
    match job {
        Some(job) => {
            job.run().await.unwrap();
            true
        }
        None => false,
    }
}

#[test]
fn retention_moves_the_raft_start_past_the_entries_it_removes() {
    use crate::storage::log::RaftStart;
    run(|dir| async move {
        let mut config = replicated(512);
        config.retention_bytes = 1200;
        let log = RefCell::new(PartitionLog::open(&dir, config.clone()).await.unwrap());
        let terms = [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3];
        committed_entries(&log, &terms).await;
        let segments = log.borrow().segment_count();
        assert!(segments > 3, "{segments} segments");
        assert!(run_retention(&log, 0).await);
        let start = log.borrow().raft().unwrap().start();
        assert!(
            start.index > 0 && start.index < terms.len() as u64,
            "{start:?}"
        );
        // Every entry is 2 records, the term is the removed last entry's.
        assert_eq!(
            start,
            RaftStart {
                offset: 2 * start.index as i64,
                index: start.index,
                term: terms[start.index as usize - 1],
            }
        );
        let check = |log: &PartitionLog| {
            let raft = log.raft().unwrap();
            assert_eq!(raft.start(), start);
            assert_eq!(raft.log_first_index(), start.index + 1);
            assert_eq!(raft.term_any(start.index), Some(start.term));
            assert_eq!(
                raft.term_any(start.index + 1),
                Some(terms[start.index as usize])
            );
            assert_eq!(raft.last_index(), terms.len() as u64);
            assert_eq!(raft.committed(), terms.len() as u64);
            let first = raft.epochs().earliest().unwrap();
            assert_eq!(
                (first.first_index, first.start_offset),
                (start.index + 1, start.offset)
            );
            assert_eq!(log.log_start_offset(), start.offset);
            assert!(log.read_plan(start.offset - 1, 1024).is_err());
        };
        check(&log.borrow());
        let read = read_all(&log, start.offset, 1 << 20).await;
        assert_eq!(read.first().map(|r| r.0), Some(start.offset));
        assert_eq!(read.len(), terms.len() - start.index as usize);
        // Nothing is due until more is written.
        assert!(!run_retention(&log, 0).await);
        close(log).await;
        let mut model = Model::default();
        for &term in &terms {
            model.entries.push(Entry {
                term,
                batch: make_batch(0, 2, 100, 0),
                sequence: None,
            });
        }
        model.committed = terms.len() as u64;
        write_hard_state(&dir, &model).await;
        let log = RefCell::new(PartitionLog::open(&dir, config).await.unwrap());
        check(&log.borrow());
        // The log goes on from its end, from the store raft-rs reads.
        let store = crate::storage::raft_store::LogStore {
            log: std::rc::Rc::new(log),
            state: Default::default(),
        };
        use raft::Storage;
        assert_eq!(store.first_index().unwrap(), start.index + 1);
        assert_eq!(store.term(start.index).unwrap(), start.term);
        assert!(store.term(start.index - 1).is_err());
        let snapshot = store.snapshot(0, 2).unwrap();
        let meta = snapshot.get_metadata();
        assert_eq!((meta.index, meta.term), (start.index, start.term));
        assert_eq!(
            RaftStart::decode(snapshot.get_data(), meta.index, meta.term),
            Ok(start)
        );
    });
}

#[test]
fn an_installed_snapshot_replaces_the_log_and_survives_a_crash_mid_install() {
    use crate::storage::log::{raft_start, RaftStart};
    run(|dir| async move {
        let config = replicated(512);
        let log = RefCell::new(PartitionLog::open(&dir, config.clone()).await.unwrap());
        committed_entries(&log, &[1, 1, 2]).await;
        // An uncommitted entry of a stale term, which the install must drop too.
        log.borrow_mut()
            .place(Bytes::from(make_batch(9, 2, 100, 0)), 2, 0)
            .unwrap();
        let start = RaftStart {
            offset: 40,
            index: 20,
            term: 4,
        };
        let job = log.borrow_mut().install_snapshot(start).unwrap();
        let check_empty = |log: &PartitionLog| {
            let raft = log.raft().unwrap();
            assert_eq!(raft.last_index(), 20);
            assert_eq!(raft.committed(), 20);
            assert_eq!(raft.term(20), Some(4));
            assert_eq!(raft.log_first_index(), 21);
            assert_eq!(log.next_offset(), 40);
            assert_eq!(log.high_watermark(), 40);
            assert_eq!(log.log_start_offset(), 40);
        };
        check_empty(&log.borrow());
        job.run().await.unwrap();
        // The next entry lands at the start.
        let index = log
            .borrow_mut()
            .place(Bytes::from(make_batch(21, 2, 100, 0)), 4, 0)
            .unwrap();
        assert_eq!(index, 21);
        log.borrow_mut().commit_to(21);
        drain(&log, &mut VecDeque::new()).await;
        let found = read_all(&log, 40, 1 << 20).await;
        assert_eq!(found.iter().map(|r| r.0).collect::<Vec<_>>(), vec![40]);
        close(log).await;
        let mut reopened = PartitionLog::open(&dir, config.clone()).await.unwrap();
        let raft = reopened.raft().unwrap();
        assert_eq!((raft.last_index(), raft.term(21)), (21, Some(4)));
        assert_eq!(raft.term_any(20), Some(4));
        assert_eq!(reopened.log_start_offset(), 40);
        assert_eq!(reopened.next_offset(), 42);
        let job = reopened.close_job();
        job.unwrap().run().await.unwrap();

        // A crash after the install was recorded and before its files went: reopening
        // finishes it, and none of the old entries survives.
        let other = dir.join("other");
        std::fs::create_dir(&other).unwrap();
        let log = RefCell::new(PartitionLog::open(&other, config.clone()).await.unwrap());
        committed_entries(&log, &[1, 1, 1, 1]).await;
        close(log).await;
        raft_start::write(&other, &start, true).unwrap();
        let log = RefCell::new(PartitionLog::open(&other, config).await.unwrap());
        check_empty(&log.borrow());
        assert!(read_all(&log, 40, 1 << 20).await.is_empty());
        assert_eq!(raft_start::read(&other).unwrap(), Some((start, false)));
        close(log).await;
    });
}
