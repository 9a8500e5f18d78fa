//! The recent-batch cache of one partition: tailing consumers are served from memory.
//!
//! Every appended batch goes in (the same `Bytes` the flusher writes, so the cache costs no
//! copy); the oldest are evicted once the cache holds more than its byte limit. A fetch whose
//! offset the cache covers never touches the disk. Batches past the high watermark are in
//! the cache too, but readers only take those below it.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Clone, Debug)]
pub struct CachedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub bytes: Bytes,
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
        self.bytes += batch.bytes.len();
        self.batches.push_back(batch);
        // Keep at least the newest batch, whatever its size: tailing readers want it most.
        while self.bytes > self.bytes_max && self.batches.len() > 1 {
            let evicted = self.batches.pop_front().expect("non-empty");
            self.bytes -= evicted.bytes.len();
        }
    }

    /// Forgets batches at or after `offset` (they were not made durable).
    pub fn truncate_from(&mut self, offset: i64) {
        while self.batches.back().is_some_and(|b| b.last_offset >= offset) {
            let dropped = self.batches.pop_back().expect("non-empty");
            self.bytes -= dropped.bytes.len();
        }
    }

    /// Forgets batches that end before `offset` (their segment was rewritten).
    pub fn forget_before(&mut self, offset: i64) {
        while self.batches.front().is_some_and(|b| b.last_offset < offset) {
            let dropped = self.batches.pop_front().expect("non-empty");
            self.bytes -= dropped.bytes.len();
        }
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// Whole batches from the one containing `offset`, below `high_watermark`, within
    /// `bytes_max` (the first batch is always whole, KIP-74). `None` if the cache does not
    /// reach back to `offset`.
    pub fn read(&self, offset: i64, high_watermark: i64, bytes_max: usize) -> Option<Vec<Bytes>> {
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
            if !out.is_empty() && taken + batch.bytes.len() > bytes_max {
                break;
            }
            taken += batch.bytes.len();
            out.push(batch.bytes.clone());
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
            bytes: Bytes::from(vec![base as u8; size]),
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
