//! Producer state of one partition: per producer id, its epoch, its last five batches (as
//! Kafka keeps them, for idempotence) and its open transaction; plus the partition's
//! aborted transactions.
//!
//! A batch from a known producer is either a retry of one of those five (acknowledged with
//! its original offsets, not written again), the next in sequence (appended), or refused:
//! a lower epoch is INVALID_PRODUCER_EPOCH, a gap or an old sequence is
//! OUT_OF_ORDER_SEQUENCE_NUMBER. A new epoch must start at sequence 0.
//!
//! A transactional batch opens its producer's transaction at its base offset, if none is
//! open; a control batch (a commit or abort marker written by the transaction coordinator)
//! closes it, and an abort is remembered as `(producer, first offset, marker offset)` so
//! `read_committed` fetches can tell clients which records to drop. The first offset of
//! the oldest open transaction bounds the last stable offset.
//!
//! The state is rebuilt on start from a snapshot plus the batches after it: a snapshot is
//! written when a segment rolls (as of the new segment's base offset) and on clean close
//! (as of the log end), so after a crash only the active segment is replayed. Snapshot
//! format: `STPS` magic, version, producer count, per producer `(id, epoch, last append
//! ms, open transaction's first offset, coordinator epoch, batch count, batches (first
//! seq, last seq, base offset, last offset delta))`, aborted transaction count, per
//! aborted transaction `(producer id, first offset, marker offset)`, and a trailing
//! CRC32C. Version 1 (no transaction fields) is still read.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::protocol::batch::{increment_sequence, BatchInfo, Marker};

/// Batches remembered per producer for duplicate detection (Kafka's limit, and the
/// in-flight request limit of idempotent clients).
pub const PRODUCER_BATCHES_MAX: usize = 5;
/// Producers idle longer than this are forgotten when a snapshot is taken (Kafka's
/// `producer.id.expiration.ms` default: one day). A producer with an open transaction is
/// kept.
pub const PRODUCER_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

const SNAPSHOT_MAGIC: &[u8; 4] = b"STPS";
const SNAPSHOT_VERSION: u16 = 2;

/// An aborted transaction of one producer: its records lie in `[first_offset,
/// last_offset]`, `last_offset` being the abort marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset_delta: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    pub last_append_ms: i64,
    /// First offset of the producer's open transaction, -1 if none.
    pub txn_first_offset: i64,
    /// Coordinator epoch of the last marker (-1: none).
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    fn new(epoch: i16, now_ms: i64) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(PRODUCER_BATCHES_MAX),
            last_append_ms: now_ms,
            txn_first_offset: -1,
            coordinator_epoch: -1,
        }
    }
}

/// The verdict on an idempotent batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Accept,
    /// A retry of a batch already in the log at these offsets.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
    OutOfOrder {
        expected: i32,
        got: i32,
    },
    StaleEpoch {
        current: i16,
        got: i16,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: (first offset, producer id).
    ongoing: BTreeSet<(i64, i64)>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
}

impl ProducerState {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer, for DescribeProducers.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, e)| (*id, e))
    }

    /// First offset of the oldest open transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|&(offset, _)| offset)
    }

    /// Aborted transactions with records in `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> impl Iterator<Item = &AbortedTxn> {
        // Sorted by marker offset: skip those that ended before `from`.
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(move |a| a.first_offset < to)
    }

    /// Forgets aborted transactions that ended before `log_start_offset`.
    pub fn trim_aborted(&mut self, log_start_offset: i64) {
        let cut = self
            .aborted
            .partition_point(|a| a.last_offset < log_start_offset);
        self.aborted.drain(..cut);
    }

    pub fn aborted_count(&self) -> usize {
        self.aborted.len()
    }

    /// Whether a marker from the coordinator for `producer_id` at `epoch` must be written:
    /// the producer has a transaction open here, or the marker carries a newer epoch (which
    /// fences the older one on this partition). A repeated marker is not written again.
    pub fn marker_needed(&self, producer_id: i64, epoch: i16) -> bool {
        match self.producers.get(&producer_id) {
            None => true,
            Some(entry) => {
                epoch > entry.epoch || (epoch == entry.epoch && entry.txn_first_offset >= 0)
            }
        }
    }

    /// Records an appended control batch (or one replayed from the log): closes the
    /// producer's open transaction, remembering it if it was aborted. Returns the first
    /// offset of the transaction it closed.
    pub fn apply_marker(
        &mut self,
        info: &BatchInfo,
        offset: i64,
        marker: Marker,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Option<i64> {
        let entry = self
            .producers
            .entry(info.producer_id)
            .or_insert_with(|| ProducerEntry::new(info.producer_epoch, now_ms));
        if info.producer_epoch > entry.epoch {
            entry.epoch = info.producer_epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = coordinator_epoch;
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        let first = entry.txn_first_offset;
        if first < 0 {
            return None;
        }
        entry.txn_first_offset = -1;
        self.ongoing.remove(&(first, info.producer_id));
        if marker == Marker::Abort {
            self.aborted.push(AbortedTxn {
                producer_id: info.producer_id,
                first_offset: first,
                last_offset: offset,
            });
        }
        Some(first)
    }

    /// Whether `producer_id` at `epoch` has a transaction open in this partition: its
    /// first transactional batch was verified with the transaction coordinator (KIP-890),
    /// so the rest of the transaction's batches need not ask again.
    pub fn txn_open(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.epoch == epoch && e.txn_first_offset >= 0)
    }

    /// Checks a batch with a producer id against the state, without changing it.
    pub fn check(&self, info: &BatchInfo) -> SequenceCheck {
        debug_assert!(info.producer_id >= 0);
        let Some(entry) = self.producers.get(&info.producer_id) else {
            return if info.base_sequence == 0 {
                SequenceCheck::Accept
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    got: info.base_sequence,
                }
            };
        };
        if info.producer_epoch < entry.epoch {
            return SequenceCheck::StaleEpoch {
                current: entry.epoch,
                got: info.producer_epoch,
            };
        }
        if info.producer_epoch > entry.epoch {
            return if info.base_sequence == 0 {
                SequenceCheck::Accept
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    got: info.base_sequence,
                }
            };
        }
        let last_seq = info.last_sequence();
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == info.base_sequence && b.last_seq == last_seq)
        {
            return SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
                last_offset: dup.base_offset + i64::from(dup.last_offset_delta),
            };
        }
        let expected = match entry.batches.back() {
            Some(last) => increment_sequence(last.last_seq, 1),
            None => 0,
        };
        if info.base_sequence != expected {
            return SequenceCheck::OutOfOrder {
                expected,
                got: info.base_sequence,
            };
        }
        SequenceCheck::Accept
    }

    /// Records an appended batch (after `check` accepted it, or while replaying the log).
    pub fn apply(&mut self, info: &BatchInfo, base_offset: i64, now_ms: i64) {
        if info.producer_id < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(info.producer_id)
            .or_insert_with(|| ProducerEntry::new(info.producer_epoch, now_ms));
        if info.producer_epoch != entry.epoch {
            entry.epoch = info.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: info.base_sequence,
            last_seq: info.last_sequence(),
            base_offset,
            last_offset_delta: info.last_offset_delta,
        });
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        if info.is_transactional() && entry.txn_first_offset < 0 {
            entry.txn_first_offset = base_offset;
            self.ongoing.insert((base_offset, info.producer_id));
        }
    }

    /// Forgets producers that have not appended for `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`, [`PRODUCER_EXPIRATION_MS`] by default), unless they
    /// have a transaction open.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers.retain(|_, e| {
            e.txn_first_offset >= 0 || now_ms.saturating_sub(e.last_append_ms) < expiration_ms
        });
    }

    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.producers.len() * 40);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_append_ms.to_be_bytes());
            out.extend_from_slice(&e.txn_first_offset.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset_delta.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            out.extend_from_slice(&a.producer_id.to_be_bytes());
            out.extend_from_slice(&a.first_offset.to_be_bytes());
            out.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Decodes a snapshot; `None` if it is corrupt.
    pub fn decode_snapshot(bytes: &[u8]) -> Option<ProducerState> {
        if bytes.len() < 14 {
            return None;
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader { buf: body, pos: 0 };
        if r.take(4)? != SNAPSHOT_MAGIC {
            return None;
        }
        let version = r.u16()?;
        if version != 1 && version != SNAPSHOT_VERSION {
            return None;
        }
        let count = r.u32()? as usize;
        let mut producers = HashMap::with_capacity(count.min(body.len() / 19));
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_append_ms = r.i64()?;
            let (txn_first_offset, coordinator_epoch) = if version >= 2 {
                (r.i64()?, r.i32()?)
            } else {
                (-1, -1)
            };
            let n = r.take(1)?[0] as usize;
            if n > PRODUCER_BATCHES_MAX {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset_delta: r.i32()?,
                });
            }
            producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_append_ms,
                    txn_first_offset,
                    coordinator_epoch,
                },
            );
        }
        let mut aborted = Vec::new();
        if version >= 2 {
            let count = r.u32()? as usize;
            aborted.reserve(count.min(body.len() / 24));
            for _ in 0..count {
                aborted.push(AbortedTxn {
                    producer_id: r.i64()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
        }
        let ongoing = producers
            .iter()
            .filter(|(_, e)| e.txn_first_offset >= 0)
            .map(|(id, e)| (e.txn_first_offset, *id))
            .collect();
        (r.pos == body.len()).then_some(ProducerState {
            producers,
            ongoing,
            aborted,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchInfo {
        BatchInfo {
            len: 100,
            base_offset: 0,
            last_offset_delta: count - 1,
            record_count: count,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            attributes: 0,
        }
    }

    #[test]
    fn sequences_duplicates_and_epochs() {
        let mut state = ProducerState::default();
        let b0 = batch(1, 0, 0, 3);
        assert_eq!(state.check(&b0), SequenceCheck::Accept);
        state.apply(&b0, 10, 0);
        assert_eq!(
            state.check(&b0),
            SequenceCheck::Duplicate {
                base_offset: 10,
                last_offset: 12
            }
        );
        assert_eq!(
            state.check(&batch(1, 0, 5, 1)),
            SequenceCheck::OutOfOrder {
                expected: 3,
                got: 5
            }
        );
        let b1 = batch(1, 0, 3, 2);
        assert_eq!(state.check(&b1), SequenceCheck::Accept);
        state.apply(&b1, 13, 0);
        // A new epoch restarts at 0; the old epoch is then fenced.
        assert_eq!(
            state.check(&batch(1, 1, 7, 1)),
            SequenceCheck::OutOfOrder {
                expected: 0,
                got: 7
            }
        );
        state.apply(&batch(1, 1, 0, 1), 15, 0);
        assert_eq!(
            state.check(&batch(1, 0, 5, 1)),
            SequenceCheck::StaleEpoch { current: 1, got: 0 }
        );
        // An unknown producer must start at 0.
        assert!(matches!(
            state.check(&batch(2, 0, 1, 1)),
            SequenceCheck::OutOfOrder { .. }
        ));
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut state = ProducerState::default();
        for i in 0..7 {
            state.apply(&batch(1, 0, i, 1), i64::from(i), 0);
        }
        assert_eq!(state.get(1).unwrap().batches.len(), PRODUCER_BATCHES_MAX);
        assert!(matches!(
            state.check(&batch(1, 0, 2, 1)),
            SequenceCheck::Duplicate { .. }
        ));
        assert!(matches!(
            state.check(&batch(1, 0, 1, 1)),
            SequenceCheck::OutOfOrder { .. }
        ));
    }

    #[test]
    fn sequence_wraps() {
        let mut state = ProducerState::default();
        state.apply(&batch(1, 0, 0, 1), 0, 0);
        state.producers.get_mut(&1).unwrap().batches[0].last_seq = i32::MAX;
        assert_eq!(state.check(&batch(1, 0, 0, 1)), SequenceCheck::Accept);
    }

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let mut state = ProducerState::default();
        for pid in 0..20 {
            for seq in 0..(pid % 7) {
                state.apply(
                    &batch(pid, (pid % 3) as i16, seq as i32, 2),
                    pid * 100 + seq,
                    5_000 + pid,
                );
            }
        }
        let bytes = state.encode_snapshot();
        assert_eq!(ProducerState::decode_snapshot(&bytes), Some(state.clone()));
        for i in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            let mut broken = bytes.clone();
            broken[i] ^= 0x40;
            assert_eq!(ProducerState::decode_snapshot(&broken), None, "flip at {i}");
        }
        assert_eq!(
            ProducerState::decode_snapshot(&bytes[..bytes.len() - 3]),
            None
        );
        state.expire(5_000 + PRODUCER_EXPIRATION_MS + 10, PRODUCER_EXPIRATION_MS);
        assert!(state.len() < 20);
    }

    fn txn(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchInfo {
        BatchInfo {
            attributes: crate::protocol::batch::ATTR_TRANSACTIONAL,
            ..batch(pid, epoch, seq, count)
        }
    }

    fn marker(pid: i64, epoch: i16) -> BatchInfo {
        BatchInfo {
            attributes: crate::protocol::batch::ATTR_TRANSACTIONAL
                | crate::protocol::batch::ATTR_CONTROL,
            base_sequence: -1,
            ..batch(pid, epoch, 0, 1)
        }
    }

    #[test]
    fn transactions_open_close_and_abort() {
        let mut state = ProducerState::default();
        assert!(state.marker_needed(1, 0));
        assert!(!state.txn_open(1, 0));
        state.apply(&txn(1, 0, 0, 2), 10, 0);
        // The open transaction is the remembered KIP-890 verification: for this epoch only.
        assert!(state.txn_open(1, 0));
        assert!(!state.txn_open(1, 1));
        state.apply(&txn(2, 0, 0, 1), 12, 0);
        state.apply(&txn(1, 0, 2, 1), 13, 0);
        assert_eq!(state.first_unstable_offset(), Some(10));
        assert!(state.marker_needed(1, 0));
        assert_eq!(
            state.apply_marker(&marker(1, 0), 14, Marker::Abort, 0, 0),
            Some(10)
        );
        assert_eq!(state.first_unstable_offset(), Some(12));
        // Closed: the next transaction asks the coordinator again.
        assert!(!state.txn_open(1, 0));
        // A repeated marker is not needed; a newer epoch's is (it fences).
        assert!(!state.marker_needed(1, 0));
        assert!(state.marker_needed(1, 1));
        assert_eq!(
            state.apply_marker(&marker(2, 0), 15, Marker::Commit, 0, 0),
            Some(12)
        );
        assert_eq!(state.first_unstable_offset(), None);
        let aborted: Vec<_> = state.aborted_between(0, 100).copied().collect();
        assert_eq!(
            aborted,
            vec![AbortedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 14
            }]
        );
        assert_eq!(state.aborted_between(15, 100).count(), 0);
        assert_eq!(state.aborted_between(0, 10).count(), 0);
        assert_eq!(state.aborted_between(14, 15).count(), 1);
        // A marker with a newer epoch fences the old one and resets sequences.
        state.apply(&txn(1, 0, 3, 1), 16, 0);
        state.apply_marker(&marker(1, 1), 17, Marker::Abort, 0, 0);
        assert_eq!(
            state.check(&txn(1, 0, 4, 1)),
            SequenceCheck::StaleEpoch { current: 1, got: 0 }
        );
        assert_eq!(state.check(&txn(1, 1, 0, 1)), SequenceCheck::Accept);
        // Open transactions and aborts survive a snapshot; open ones are never expired.
        state.apply(&txn(3, 0, 0, 1), 18, 0);
        let decoded = ProducerState::decode_snapshot(&state.encode_snapshot()).unwrap();
        assert_eq!(decoded, state);
        assert_eq!(decoded.first_unstable_offset(), Some(18));
        assert_eq!(decoded.aborted_count(), 2);
        let mut expired = decoded.clone();
        expired.expire(PRODUCER_EXPIRATION_MS * 2, PRODUCER_EXPIRATION_MS);
        assert_eq!(expired.len(), 1);
        expired.trim_aborted(15);
        assert_eq!(expired.aborted_count(), 1);
    }

    #[test]
    fn version_1_snapshots_are_read() {
        let mut state = ProducerState::default();
        state.apply(&batch(4, 2, 0, 3), 7, 99);
        let mut v1 = Vec::new();
        v1.extend_from_slice(SNAPSHOT_MAGIC);
        v1.extend_from_slice(&1u16.to_be_bytes());
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&4i64.to_be_bytes());
        v1.extend_from_slice(&2i16.to_be_bytes());
        v1.extend_from_slice(&99i64.to_be_bytes());
        v1.push(1);
        for field in [0i32, 2] {
            v1.extend_from_slice(&field.to_be_bytes());
        }
        v1.extend_from_slice(&7i64.to_be_bytes());
        v1.extend_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(ProducerState::decode_snapshot(&v1), Some(state));
    }
}
