//! The recent-batch cache of one partition: tailing consumers are served from memory.
//!
//! Every appended batch goes in (the same [`PlacedBatch`] the flusher writes, so the cache
//! costs no copy); the oldest are evicted once the cache holds more than its byte limit. A fetch whose
//! offset the cache covers never touches the disk. Batches past the high watermark are in
//! the cache too, but readers only take those below it.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::protocol::batch::PATCHED_HEAD_LEN;
use crate::protocol::pieces::Piece;

/// A batch as the log placed it, in memory until it is written (and in the recent-batch
/// cache): `head` holds its first [`PATCHED_HEAD_LEN`] bytes with the base offset and
/// leader epoch the log gave it, `body` the rest as the producer sent it — usually shared
/// with the request frame it arrived in, not copied. The one copy of its bytes is the
/// flusher's, into the aligned write buffer.
#[derive(Clone, Debug)]
pub struct PlacedBatch {
    pub head: Bytes,
    pub body: Bytes,
}

impl PlacedBatch {
    /// A whole batch held in one buffer, split where the log patches it.
    pub fn from_bytes(bytes: Bytes) -> Self {
        PlacedBatch {
            head: bytes.slice(..PATCHED_HEAD_LEN),
            body: bytes.slice(PATCHED_HEAD_LEN..),
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the batch into `dst`, which must be exactly [`Self::len`] long.
    pub fn copy_to(&self, dst: &mut [u8]) {
        let (head, body) = dst.split_at_mut(self.head.len());
        head.copy_from_slice(&self.head);
        body.copy_from_slice(&self.body);
    }

    /// The batch in one buffer (a copy; for tests and rare paths).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::zeroed(self.len());
        self.copy_to(&mut out);
        out.freeze()
    }

    /// The batch as response pieces (the head is small: the writer copies it).
    pub fn pieces(&self) -> [Piece; 2] {
        [
            Piece::from(self.head.clone()),
            Piece::from(self.body.clone()),
        ]
    }
}

#[derive(Clone, Debug)]
pub struct CachedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub batch: PlacedBatch,
}

#[derive(Debug)]
pub struct BatchCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
    bytes_max: usize,
}

impl BatchCache {
    pub fn new(bytes_max: usize) -> Self {
        BatchCache {
            batches: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, batch: CachedBatch) {
        if let Some(last) = self.batches.back() {
            debug_assert!(batch.base_offset > last.last_offset);
        }
        self.bytes += batch.batch.len();
        self.batches.push_back(batch);
        // Keep at least the newest batch, whatever its size: tailing readers want it most.
        while self.bytes > self.bytes_max && self.batches.len() > 1 {
            let evicted = self.batches.pop_front().expect("non-empty");
            self.bytes -= evicted.batch.len();
        }
    }

    /// Forgets batches at or after `offset` (they were not made durable).
    pub fn truncate_from(&mut self, offset: i64) {
        while self.batches.back().is_some_and(|b| b.last_offset >= offset) {
            let dropped = self.batches.pop_back().expect("non-empty");
            self.bytes -= dropped.batch.len();
        }
    }

    /// Forgets batches that end before `offset` (their segment was rewritten).
    pub fn forget_before(&mut self, offset: i64) {
        while self.batches.front().is_some_and(|b| b.last_offset < offset) {
            let dropped = self.batches.pop_front().expect("non-empty");
            self.bytes -= dropped.batch.len();
        }
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// Whole batches from the one containing `offset`, below `high_watermark`, within
    /// `bytes_max` (the first batch is always whole, KIP-74). `None` if the cache does not
    /// reach back to `offset`.
    pub fn read(
        &self,
        offset: i64,
        high_watermark: i64,
        bytes_max: usize,
    ) -> Option<Vec<CachedBatch>> {
        let first = self.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = self.batches.partition_point(|b| b.last_offset < offset);
        let mut out = Vec::new();
        let mut taken = 0usize;
        for batch in self.batches.range(start..) {
            if batch.last_offset >= high_watermark {
                break;
            }
            if !out.is_empty() && taken + batch.batch.len() > bytes_max {
                break;
            }
            taken += batch.batch.len();
            out.push(batch.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, count: i64, size: usize) -> CachedBatch {
        CachedBatch {
            base_offset: base,
            last_offset: base + count - 1,
            batch: PlacedBatch::from_bytes(Bytes::from(vec![base as u8; size])),
        }
    }

    #[test]
    fn serves_covered_offsets_below_the_high_watermark() {
        let mut cache = BatchCache::new(1000);
        cache.push(batch(0, 5, 100));
        cache.push(batch(5, 5, 100));
        cache.push(batch(10, 5, 100));
        assert_eq!(cache.read(7, 15, 1000).unwrap().len(), 2);
        assert_eq!(cache.read(7, 10, 1000).unwrap().len(), 1);
        // The first batch is whole even past the byte limit; the next is not added.
        assert_eq!(cache.read(0, 15, 10).unwrap().len(), 1);
        assert_eq!(cache.read(0, 15, 250).unwrap().len(), 2);
        assert!(cache.read(15, 15, 1000).unwrap().is_empty());
    }

    #[test]
    fn evicts_oldest_and_truncates() {
        let mut cache = BatchCache::new(250);
        cache.push(batch(0, 5, 100));
        cache.push(batch(5, 5, 100));
        cache.push(batch(10, 5, 100));
        assert_eq!(cache.bytes(), 200);
        assert!(cache.read(4, 15, 1000).is_none());
        assert!(cache.read(5, 15, 1000).is_some());
        cache.truncate_from(12);
        assert_eq!(cache.bytes(), 100);
        assert_eq!(cache.read(5, 15, 1000).unwrap().len(), 1);
        cache.push(batch(10, 1, 1000));
        assert_eq!(cache.bytes(), 1000);
        assert_eq!(cache.read(10, 11, 1).unwrap().len(), 1);
    }
}
