//! The Raft library's view of a replicated partition log ([`raft::Storage`]).
//!
//! raft-rs reads its log through this trait, synchronously. Terms and indexes come from
//! the log's [`RaftTail`](crate::storage::log::RaftTail) (memory only). Entry data is only
//! needed to send entries to followers: it comes from the recent-batch cache, or, on a
//! miss, the call answers `LogTemporarilyUnavailable` and records the request; the driver
//! reads the batches from disk into [`StoreState::fetched`] and tells raft-rs to try again
//! (`on_entries_fetched`). Where raft-rs cannot take "later" (contexts that are not async:
//! building a Ready's committed entries, elections) it gets the entries without their data,
//! which it never looks at there — the log itself is the state machine.
//!
//! A follower whose next entry retention removed gets a snapshot that only says where the
//! log starts (see [`crate::storage::log::RaftStart`]); it drops its log and takes entries
//! from there.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::storage::log::PartitionLog;

/// What the store keeps beside the log: the Raft state raft-rs starts from, and entries
/// read from disk for a send that missed the cache.
#[derive(Default)]
pub struct StoreState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Batches read back for entries the cache no longer had, by index.
    pub fetched: BTreeMap<u64, Bytes>,
    /// Sends that missed the cache: entries `[low, high)`, and the context to hand back to
    /// raft-rs once they are in `fetched`.
    pub wanted: Vec<(u64, u64, GetEntriesContext)>,
}

/// [`raft::Storage`] over a replicated partition log.
pub struct LogStore {
    pub log: Rc<RefCell<PartitionLog>>,
    pub state: Rc<RefCell<StoreState>>,
}

fn unavailable() -> raft::Error {
    raft::Error::Store(StorageError::Unavailable)
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let state = self.state.borrow();
        Ok(RaftState::new(
            state.hard_state.clone(),
            state.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let log = self.log.borrow();
        let tail = log.raft().ok_or_else(unavailable)?;
        if low < tail.log_first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > tail.last_index() + 1 || low > high {
            return Err(unavailable());
        }
        let with_data = context.can_async();
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        for index in low..high {
            let term = tail.term_any(index).ok_or_else(unavailable)?;
            let mut entry = Entry {
                index,
                term,
                ..Default::default()
            };
            if with_data {
                // Below the rows only what was read back from disk is at hand.
                let data = match self.state.borrow().fetched.get(&index) {
                    Some(data) => Some(data.clone()),
                    None => tail
                        .offsets(index)
                        .and_then(|(base, next)| log.cached_batch(base, next)),
                };
                match data {
                    Some(data) => entry.data = data,
                    // What was found so far goes now; the rest is asked for again.
                    None if !out.is_empty() => break,
                    None => {
                        drop(log);
                        self.state.borrow_mut().wanted.push((low, high, context));
                        return Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable));
                    }
                }
            }
            size += entry.data.len() as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let log = self.log.borrow();
        let tail = log.raft().ok_or_else(unavailable)?;
        if index + 1 < tail.log_first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > tail.last_index() {
            return Err(unavailable());
        }
        // Entry 0 is the empty start of every log (term 0).
        tail.term_any(index)
            .or_else(|| (index == 0).then_some(0))
            .ok_or(raft::Error::Store(StorageError::Compacted))
    }

    fn first_index(&self) -> raft::Result<u64> {
        let log = self.log.borrow();
        Ok(log.raft().ok_or_else(unavailable)?.log_first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        let log = self.log.borrow();
        Ok(log.raft().ok_or_else(unavailable)?.last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let log = self.log.borrow();
        let tail = log.raft().ok_or_else(unavailable)?;
        let start = tail.start();
        if start.index == 0 || start.index < request_index {
            tracing::warn!(
                follower = to,
                first = tail.log_first_index(),
                "a follower is behind the entries this replica can send, and the log has no start to send it"
            );
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        tracing::info!(
            follower = to,
            ?start,
            "a follower needs entries retention removed: sending where the log starts"
        );
        let mut snapshot = Snapshot {
            data: start.encode().into(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = start.index;
        meta.term = start.term;
        meta.set_conf_state(self.state.borrow().conf_state.clone());
        Ok(snapshot)
    }
}
